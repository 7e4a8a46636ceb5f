//! Keyframe decoding: one H.264 IDR access unit (Annex B) in, one owned I420 picture out.
//!
//! Owns a persistent openh264 decoder (one per pool worker, shared by every stream the worker
//! serves), kept across parameter-set changes and recreated only after an error. It must not parse SPS/PPS
//! (`media` does), decide when to snapshot (`scheduler`) or touch colour (`color` does).
//!
//! Behaviour of openh264 this relies on (checked by the tests below): with its default flush
//! mode a persistent decoder returns a picture for every IDR fed alone (`Flush::NoFlush` would
//! delay each picture by one call), and keeping the decoder is cheaper than a fresh one per
//! keyframe (the `decoder_switch` bench measures both).

use std::fmt;

use openh264::decoder::{DecodedYUV, Decoder};
use openh264::formats::YUVSource;

/// A decoded picture in I420 (4:2:0, three planes), owned. Rows of a plane start every
/// `*_stride` bytes (strides may exceed widths); chroma planes are `width.div_ceil(2)` wide and
/// `height.div_ceil(2)` tall. Reused across calls to avoid allocation.
#[derive(Clone, Default)]
pub struct YuvFrame {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
    pub y_stride: usize,
    pub uv_stride: usize,
}

impl YuvFrame {
    /// An empty frame, ready to be filled by [`KeyframeDecoder::decode`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Width of the chroma planes (odd widths round up).
    pub fn chroma_width(&self) -> usize {
        self.width.div_ceil(2)
    }

    /// Height of the chroma planes (odd heights round up).
    pub fn chroma_height(&self) -> usize {
        self.height.div_ceil(2)
    }

    /// Checks that the picture is non-empty and that strides and plane lengths cover the
    /// declared size (the last row of a plane need not be padded to the stride).
    pub fn check_layout(&self) -> Result<(), &'static str> {
        if self.width == 0 || self.height == 0 {
            return Err("empty picture");
        }
        if self.y_stride < self.width {
            return Err("luma stride below width");
        }
        if self.uv_stride < self.chroma_width() {
            return Err("chroma stride below chroma width");
        }
        let fits = |len: usize, stride: usize, w: usize, h: usize| {
            plane_len(stride, w, h).is_some_and(|need| len >= need)
        };
        if !fits(self.y.len(), self.y_stride, self.width, self.height) {
            return Err("luma plane too short");
        }
        let (cw, ch) = (self.chroma_width(), self.chroma_height());
        if !fits(self.u.len(), self.uv_stride, cw, ch)
            || !fits(self.v.len(), self.uv_stride, cw, ch)
        {
            return Err("chroma plane too short");
        }
        Ok(())
    }
}

impl fmt::Debug for YuvFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The planes are megabytes: show their shape, not their bytes.
        f.debug_struct("YuvFrame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("y_stride", &self.y_stride)
            .field("uv_stride", &self.uv_stride)
            .field("y_len", &self.y.len())
            .field("u_len", &self.u.len())
            .field("v_len", &self.v.len())
            .finish()
    }
}

/// Bytes needed for `h` rows of `w` samples spaced `stride` apart (`None` on overflow).
fn plane_len(stride: usize, w: usize, h: usize) -> Option<usize> {
    match h {
        0 => Some(0),
        _ => stride.checked_mul(h - 1)?.checked_add(w),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// openh264 rejected the input (corrupt bitstream, missing parameter sets, ...). The native
    /// code is openh264's decoding-state bit mask (e.g. 0x04 bitstream error, 0x10 no SPS/PPS).
    #[error("openh264 failed {context} (native code {:#x})", .source.native_code())]
    Openh264 {
        context: &'static str,
        #[source]
        source: openh264::Error,
    },
    /// The access unit decoded without error but produced no picture (e.g. it held only
    /// parameter sets, or was empty).
    #[error("the access unit produced no picture")]
    NoPicture,
    #[error("decoded picture {width}x{height} exceeds the limit of {max_pixels} pixels")]
    TooLarge {
        width: usize,
        height: usize,
        max_pixels: u64,
    },
    /// openh264 returned a picture whose planes do not cover its declared size.
    #[error("decoded picture {width}x{height} has an inconsistent plane layout")]
    BadLayout { width: usize, height: usize },
}

/// Decodes IDR access units of one stream into [`YuvFrame`]s. `Send`: move it to a worker.
pub struct KeyframeDecoder {
    max_pixels: u64,
    decoder: Option<Decoder>,
    /// The parameter sets `decoder` was created for (compared, never parsed).
    params_key: Vec<u8>,
    decoders_created: u64,
}

impl KeyframeDecoder {
    /// A decoder that refuses pictures of more than `max_pixels` luma samples. The openh264
    /// decoder itself is created lazily by the first [`decode`](Self::decode).
    pub fn new(max_pixels: u64) -> Self {
        Self {
            max_pixels,
            decoder: None,
            params_key: Vec::new(),
            decoders_created: 0,
        }
    }

    /// How many openh264 decoders this has created: one, plus one per call after a failed
    /// one. Useful as a metric.
    pub fn decoders_created(&self) -> u64 {
        self.decoders_created
    }

    /// Decode one IDR access unit in Annex B (SPS, PPS, IDR slices). `params_key` identifies
    /// the parameter sets in force (e.g. the SPS+PPS bytes), which `annex_b` must carry in front of
    /// its slices: the decoder is kept when they change (another stream, or a resolution change
    /// mid-stream), and re-created for one more try only if it then fails. Output goes into `frame`
    /// (reused; tightly packed: `y_stride == width`, `uv_stride == chroma_width()`).
    ///
    /// On error the openh264 decoder is dropped (the next call starts afresh, as its state after
    /// a corrupt unit is unknown) and `frame`'s contents are unspecified.
    pub fn decode(
        &mut self,
        annex_b: &[u8],
        params_key: &[u8],
        frame: &mut YuvFrame,
    ) -> Result<(), DecodeError> {
        let switched = self.decoder.is_some() && self.params_key != params_key;
        let mut result = self.decode_once(annex_b, params_key, frame);
        if result.is_err() && switched {
            // The kept decoder did not take the new parameter sets: one more try afresh.
            result = self.decode_once(annex_b, params_key, frame);
        }
        result
    }

    fn decode_once(
        &mut self,
        annex_b: &[u8],
        params_key: &[u8],
        frame: &mut YuvFrame,
    ) -> Result<(), DecodeError> {
        let max_pixels = self.max_pixels;
        let result = match self.decoder_for(params_key) {
            Ok(decoder) => decode_into(decoder, annex_b, max_pixels, frame),
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.decoder = None;
            self.params_key.clear();
        }
        result
    }

    fn decoder_for(&mut self, params_key: &[u8]) -> Result<&mut Decoder, DecodeError> {
        if self.decoder.is_none() {
            let decoder = Decoder::new().map_err(|source| DecodeError::Openh264 {
                context: "creating a decoder",
                source,
            })?;
            self.decoders_created += 1;
            tracing::debug!(
                decoders_created = self.decoders_created,
                params_len = params_key.len(),
                "created openh264 decoder"
            );
            self.decoder = Some(decoder);
        }
        if self.params_key != params_key {
            // The access unit carries its parameter sets in front of the slices, so the
            // kept decoder switches to them by itself (same picture, bit for bit, as a
            // fresh decoder, which would cost a decoder creation per keyframe).
            self.params_key.clear();
            self.params_key.extend_from_slice(params_key);
        }
        Ok(self.decoder.as_mut().expect("created above"))
    }
}

fn decode_into(
    decoder: &mut Decoder,
    annex_b: &[u8],
    max_pixels: u64,
    frame: &mut YuvFrame,
) -> Result<(), DecodeError> {
    if annex_b.is_empty() {
        return Err(DecodeError::NoPicture);
    }
    let picture = decoder
        .decode(annex_b)
        .map_err(|source| DecodeError::Openh264 {
            context: "decoding an IDR access unit",
            source,
        })?
        .ok_or(DecodeError::NoPicture)?;
    copy_picture(&picture, max_pixels, frame)
}

/// Copies openh264's picture (valid only until the decoder's next call) into `frame`, tightly.
pub(crate) fn copy_picture(
    picture: &DecodedYUV<'_>,
    max_pixels: u64,
    frame: &mut YuvFrame,
) -> Result<(), DecodeError> {
    let (width, height) = picture.dimensions();
    let pixels = (width as u64).saturating_mul(height as u64);
    if pixels > max_pixels {
        return Err(DecodeError::TooLarge {
            width,
            height,
            max_pixels,
        });
    }
    let bad_layout = DecodeError::BadLayout { width, height };
    if width == 0 || height == 0 {
        return Err(bad_layout);
    }
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    let (y_stride, u_stride, v_stride) = picture.strides();
    let copied = copy_plane(picture.y(), y_stride, width, height, &mut frame.y)
        && copy_plane(picture.u(), u_stride, cw, ch, &mut frame.u)
        && copy_plane(picture.v(), v_stride, cw, ch, &mut frame.v);
    if !copied {
        return Err(bad_layout);
    }
    frame.width = width;
    frame.height = height;
    frame.y_stride = width;
    frame.uv_stride = cw;
    Ok(())
}

/// Copies `h` rows of `w` bytes spaced `stride` apart into `dst`, packed. False if `src` is short.
fn copy_plane(src: &[u8], stride: usize, w: usize, h: usize, dst: &mut Vec<u8>) -> bool {
    if stride < w || plane_len(stride, w, h).is_none_or(|need| src.len() < need) {
        return false;
    }
    dst.clear();
    dst.reserve(w * h);
    for row in src.chunks(stride).take(h) {
        dst.extend_from_slice(&row[..w]);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameType};
    use openh264::formats::YUVBuffer;
    use openh264::OpenH264API;

    /// Four vertical bands, as (Y, U, V).
    const BANDS: [(u8, u8, u8); 4] = [
        (81, 90, 240),  // red (BT.601 limited)
        (145, 54, 34),  // green
        (41, 240, 110), // blue
        (180, 128, 128),
    ];

    fn band_of(x: usize, width: usize) -> usize {
        x * BANDS.len() / width
    }

    /// Encodes one synthetic picture with openh264's encoder; returns the IDR access unit.
    fn encode_idr(width: usize, height: usize) -> Vec<u8> {
        let (cw, ch) = (width / 2, height / 2);
        let mut yuv = Vec::with_capacity(width * height * 3 / 2);
        for _ in 0..height {
            yuv.extend((0..width).map(|x| BANDS[band_of(x, width)].0));
        }
        for pick in [|b: (u8, u8, u8)| b.1, |b: (u8, u8, u8)| b.2] {
            for _ in 0..ch {
                yuv.extend((0..cw).map(|cx| pick(BANDS[band_of(2 * cx, width)])));
            }
        }
        let config = EncoderConfig::new().bitrate(BitRate::from_bps(20_000_000));
        let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config).unwrap();
        let source = YUVBuffer::from_vec(yuv, width, height);
        let stream = encoder.encode(&source).unwrap();
        assert_eq!(stream.frame_type(), FrameType::IDR);
        stream.to_vec()
    }

    /// The SPS and PPS NAL units of an Annex B access unit, concatenated (the params key).
    fn param_sets(annex_b: &[u8]) -> Vec<u8> {
        let mut key = Vec::new();
        for nal in openh264::nal_units(annex_b) {
            let start = nal.iter().position(|&b| b == 1).map_or(0, |i| i + 1);
            if matches!(nal.get(start).map(|b| b & 0x1f), Some(7 | 8)) {
                key.extend_from_slice(nal);
            }
        }
        assert!(!key.is_empty(), "no SPS/PPS in the test stream");
        key
    }

    fn mean_in(plane: &[u8], stride: usize, xs: std::ops::Range<usize>, rows: usize) -> f64 {
        let mut sum = 0u64;
        for row in plane.chunks(stride).take(rows) {
            sum += row[xs.clone()].iter().map(|&v| u64::from(v)).sum::<u64>();
        }
        sum as f64 / (xs.len() * rows) as f64
    }

    fn assert_bands_match(frame: &YuvFrame) {
        let (w, h) = (frame.width, frame.height);
        for (band, &(y, u, v)) in BANDS.iter().enumerate() {
            // Interior of the band, 8 luma samples away from its edges.
            let (x0, x1) = (band * w / BANDS.len() + 8, (band + 1) * w / BANDS.len() - 8);
            let got_y = mean_in(&frame.y, frame.y_stride, x0..x1, h);
            let got_u = mean_in(&frame.u, frame.uv_stride, x0 / 2..x1 / 2, h / 2);
            let got_v = mean_in(&frame.v, frame.uv_stride, x0 / 2..x1 / 2, h / 2);
            for (name, got, want) in [("Y", got_y, y), ("U", got_u, u), ("V", got_v, v)] {
                assert!(
                    (got - f64::from(want)).abs() <= 2.0,
                    "band {band} {name}: decoded mean {got:.2}, encoded {want}"
                );
            }
            let worst = frame
                .y
                .chunks(frame.y_stride)
                .take(h)
                .flat_map(|row| row[x0..x1].iter())
                .map(|&s| s.abs_diff(y))
                .max()
                .unwrap();
            assert!(worst <= 6, "band {band}: a luma sample is off by {worst}");
        }
    }

    #[test]
    fn decodes_idr_to_the_encoded_picture() {
        let idr = encode_idr(320, 240);
        let mut decoder = KeyframeDecoder::new(1920 * 1080);
        let mut frame = YuvFrame::new();
        decoder.decode(&idr, &param_sets(&idr), &mut frame).unwrap();
        assert_eq!((frame.width, frame.height), (320, 240));
        assert_eq!((frame.y_stride, frame.uv_stride), (320, 160));
        assert_eq!(frame.check_layout(), Ok(()));
        assert_bands_match(&frame);

        // The same keyframe again reuses the decoder and still yields a picture.
        frame.y.fill(0);
        decoder.decode(&idr, &param_sets(&idr), &mut frame).unwrap();
        assert_bands_match(&frame);
        assert_eq!(decoder.decoders_created(), 1);
    }

    #[test]
    fn parameter_set_changes_keep_the_decoder() {
        let small = encode_idr(320, 240);
        let large = encode_idr(640, 360);
        let (small_key, large_key) = (param_sets(&small), param_sets(&large));
        assert_ne!(small_key, large_key);
        let mut decoder = KeyframeDecoder::new(1920 * 1080);
        let mut frame = YuvFrame::new();
        let mut fresh_frame = YuvFrame::new();

        // Alternating streams (or a resolution change) on one kept decoder give the same
        // pictures as a fresh decoder per keyframe.
        for (idr, key, size) in [
            (&small, &small_key, (320, 240)),
            (&large, &large_key, (640, 360)),
            (&small, &small_key, (320, 240)),
            (&large, &large_key, (640, 360)),
        ] {
            decoder.decode(idr, key, &mut frame).unwrap();
            assert_eq!((frame.width, frame.height), size);
            assert_bands_match(&frame);
            KeyframeDecoder::new(1920 * 1080)
                .decode(idr, key, &mut fresh_frame)
                .unwrap();
            assert!(
                frame.y == fresh_frame.y && frame.u == fresh_frame.u && frame.v == fresh_frame.v
            );
        }
        assert_eq!(decoder.decoders_created(), 1);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let idr = encode_idr(320, 240);
        let key = param_sets(&idr);
        let mut decoder = KeyframeDecoder::new(1920 * 1080);
        let mut frame = YuvFrame::new();

        // Deterministic pseudo-random bytes, with and without a start code in front.
        let mut state = 0x1234_5678_u32;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect();
        let mut with_start_code = vec![0, 0, 0, 1, 0x65];
        with_start_code.extend_from_slice(&noise);
        let truncated = &idr[..idr.len() / 3];
        for input in [&noise[..], &with_start_code, &[][..], &[0, 0, 0, 1][..]] {
            assert!(decoder.decode(input, b"junk", &mut frame).is_err());
        }
        // Parameter sets without a slice: decodes without error, but there is no picture.
        assert!(matches!(
            decoder.decode(&key, &key, &mut frame),
            Err(DecodeError::NoPicture)
        ));
        let _ = decoder.decode(truncated, &key, &mut frame);

        // After errors the decoder recovers on the next good keyframe, with a fresh decoder.
        let created = decoder.decoders_created();
        decoder.decode(&idr, &key, &mut frame).unwrap();
        assert_bands_match(&frame);
        assert_eq!(decoder.decoders_created(), created + 1);
    }

    #[test]
    fn too_large_pictures_are_refused() {
        let idr = encode_idr(320, 240);
        let mut decoder = KeyframeDecoder::new(320 * 240 - 1);
        let mut frame = YuvFrame::new();
        match decoder.decode(&idr, &param_sets(&idr), &mut frame) {
            Err(DecodeError::TooLarge {
                width: 320,
                height: 240,
                max_pixels,
            }) => assert_eq!(max_pixels, 320 * 240 - 1),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let mut decoder = KeyframeDecoder::new(320 * 240);
        decoder.decode(&idr, &param_sets(&idr), &mut frame).unwrap();
    }

    #[test]
    fn check_layout_rejects_short_planes() {
        let mut frame = YuvFrame {
            width: 5,
            height: 3,
            y: vec![0; 5 * 3],
            u: vec![0; 3 * 2],
            v: vec![0; 3 * 2],
            y_stride: 5,
            uv_stride: 3,
        };
        assert_eq!(frame.check_layout(), Ok(()));
        frame.y_stride = 6; // the last row need not be padded: 6 * 2 + 5 = 17 > 15
        assert_eq!(frame.check_layout(), Err("luma plane too short"));
        frame.y_stride = 5;
        frame.v.pop();
        assert_eq!(frame.check_layout(), Err("chroma plane too short"));
        frame.uv_stride = 2;
        assert_eq!(
            frame.check_layout(),
            Err("chroma stride below chroma width")
        );
        assert_eq!(YuvFrame::new().check_layout(), Err("empty picture"));
    }
}
