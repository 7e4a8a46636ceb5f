//! JPEG encoding of decoded pictures with mozjpeg.
//!
//! JPEG (JFIF) stores BT.601 Y'CbCr in full range: [`color`](super::color) converts the source's
//! planes into that coding (range expansion and, for BT.709, re-matrixing in one fixed-point
//! step) straight into this encoder's MCU-padded scratch planes, and mozjpeg takes them as raw
//! 4:2:0 data: no RGB round trip. This module must not decode video, resize or know about
//! streams; it sees one picture at a time.
//!
//! mozjpeg reports errors by panicking through C; [`JpegEncoder::encode`] catches them.
//! `Compress` is not `Send`, so it is created, used and finished within one call.

use std::panic::{catch_unwind, AssertUnwindSafe};

use mozjpeg::{ColorSpace, CompInfoExt, Compress};

use super::color::{Converter, Target};
use super::decode::YuvFrame;

pub use super::color::{ColorInfo, Matrix};

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The picture is empty or its planes do not cover its declared size.
    #[error("cannot encode a {width}x{height} picture: {reason}")]
    InvalidFrame {
        width: usize,
        height: usize,
        reason: &'static str,
    },
    /// mozjpeg reported a fatal error (it does so by panicking; the panic was caught).
    #[error("mozjpeg failed: {0}")]
    Panicked(String),
    /// mozjpeg returned an error without panicking.
    #[error("mozjpeg failed {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// mozjpeg's component layout or progress disagreed with what this module computed.
    #[error("mozjpeg raw-data input: {0}")]
    RawData(&'static str),
}

/// Encodes [`YuvFrame`]s as baseline 4:2:0 JPEG. Keeps its scratch planes between calls;
/// one per worker thread (it is `Send`, not `Sync`).
pub struct JpegEncoder {
    quality: u8,
    /// Colour-converted planes, padded as mozjpeg's raw-data input needs (strides and rows as
    /// [`Geometry`] says; `width`/`height` are the picture's).
    planes: YuvFrame,
    converter: Converter,
}

impl JpegEncoder {
    /// `quality` is libjpeg's 1–100 scale (clamped into it).
    pub fn new(quality: u8) -> Self {
        Self {
            quality: quality.clamp(1, 100),
            planes: YuvFrame::new(),
            converter: Converter::new(),
        }
    }

    pub fn quality(&self) -> u8 {
        self.quality
    }

    /// Encode with mozjpeg's fastest settings (`set_fastest_defaults`: baseline, standard
    /// Huffman tables), 4:2:0, raw Y'CbCr input converted from `frame`'s planes as `color` says.
    pub fn encode(&mut self, frame: &YuvFrame, color: ColorInfo) -> Result<Vec<u8>, EncodeError> {
        self.encode_at(frame, color, self.quality)
    }

    /// [`encode`](Self::encode) at another `quality` (1–100, clamped) than the encoder's.
    pub fn encode_at(
        &mut self,
        frame: &YuvFrame,
        color: ColorInfo,
        quality: u8,
    ) -> Result<Vec<u8>, EncodeError> {
        frame
            .check_layout()
            .map_err(|reason| EncodeError::InvalidFrame {
                width: frame.width,
                height: frame.height,
                reason,
            })?;
        let geometry = Geometry::new(frame.width, frame.height);
        self.prepare(frame, color, &geometry);
        let planes = [&self.planes.y[..], &self.planes.u[..], &self.planes.v[..]];
        let quality = quality.clamp(1, 100);
        match catch_unwind(AssertUnwindSafe(|| compress(planes, &geometry, quality))) {
            Ok(result) => result,
            Err(payload) => Err(EncodeError::Panicked(panic_message(payload.as_ref()))),
        }
    }

    /// Fills the scratch planes with full-range BT.601 samples, padded to whole MCUs.
    fn prepare(&mut self, frame: &YuvFrame, color: ColorInfo, g: &Geometry) {
        let p = &mut self.planes;
        // mozjpeg takes exactly these strides and lengths; the converter keeps them.
        p.y_stride = g.y_stride;
        p.uv_stride = g.c_stride;
        p.y.resize(g.y_stride * g.y_rows, 0);
        p.u.resize(g.c_stride * g.c_rows, 0);
        p.v.resize(g.c_stride * g.c_rows, 0);
        self.converter.convert(frame, color, Target::Jpeg, p);
        let (w, h, cw, ch) = (g.width, g.height, g.c_width, g.c_height);
        pad_plane(&mut p.y, g.y_stride, w, h);
        pad_plane(&mut p.u, g.c_stride, cw, ch);
        pad_plane(&mut p.v, g.c_stride, cw, ch);
    }
}

/// Plane sizes for mozjpeg's raw-data input at 4:2:0. Each plane's row stride must equal
/// mozjpeg's `width_in_blocks * 8` (its wrapper splits the buffer into rows of exactly that),
/// and every call consumes one MCU row: 16 luma rows and 8 chroma rows. Samples beyond the
/// picture are read by the DCT, so they are filled by edge replication (as libjpeg itself does
/// for scanline input) rather than left black, which would bleed into edge blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    width: usize,
    height: usize,
    c_width: usize,
    c_height: usize,
    y_stride: usize,
    c_stride: usize,
    y_rows: usize,
    c_rows: usize,
}

impl Geometry {
    fn new(width: usize, height: usize) -> Self {
        let mcu_rows = height.div_ceil(16);
        Self {
            width,
            height,
            c_width: width.div_ceil(2),
            c_height: height.div_ceil(2),
            y_stride: width.div_ceil(8) * 8,
            c_stride: width.div_ceil(16) * 8,
            y_rows: mcu_rows * 16,
            c_rows: mcu_rows * 8,
        }
    }
}

fn compress(planes: [&[u8]; 3], g: &Geometry, quality: u8) -> Result<Vec<u8>, EncodeError> {
    let mut c = Compress::new(ColorSpace::JCS_YCbCr);
    // Resets every parameter (`jpeg_set_defaults`), so it comes first.
    c.set_fastest_defaults();
    c.set_size(g.width, g.height);
    c.set_quality(f32::from(quality));
    c.set_chroma_sampling_pixel_sizes((2, 2), (2, 2));
    c.set_raw_data_in(true);
    let capacity = (g.width * g.height / 6).max(1024);
    let mut started = c
        .start_compress(Vec::with_capacity(capacity))
        .map_err(|source| EncodeError::Io {
            context: "starting compression",
            source,
        })?;
    let strides = started.components().iter().map(|c| c.row_stride());
    if !strides.eq([g.y_stride, g.c_stride, g.c_stride]) {
        return Err(EncodeError::RawData("component strides differ from ours"));
    }
    if !started.write_raw_data(&planes) {
        return Err(EncodeError::RawData("not all rows were accepted"));
    }
    started.finish().map_err(|source| EncodeError::Io {
        context: "finishing compression",
        source,
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "unknown panic".to_owned()
    }
}

/// Replicates the last column into the padding on the right, then the last row downwards.
fn pad_plane(plane: &mut [u8], stride: usize, w: usize, h: usize) {
    for row in plane.chunks_exact_mut(stride).take(h) {
        let edge = row[w - 1];
        row[w..].fill(edge);
    }
    let (picture, below) = plane.split_at_mut(h * stride);
    let last = &picture[(h - 1) * stride..];
    for row in below.chunks_exact_mut(stride) {
        row.copy_from_slice(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::snapshot::testing::*;
    use crate::testing::pictures::psnr;

    fn decode_rgb(jpeg: &[u8]) -> (usize, usize, Vec<[u8; 3]>) {
        let decompress = mozjpeg::Decompress::new_mem(jpeg).unwrap();
        let (w, h) = decompress.size();
        let mut started = decompress.rgb().unwrap();
        let pixels: Vec<[u8; 3]> = started.read_scanlines().unwrap();
        started.finish().unwrap();
        (w, h, pixels)
    }

    fn decode_gray(jpeg: &[u8]) -> (usize, usize, Vec<u8>) {
        let decompress = mozjpeg::Decompress::new_mem(jpeg).unwrap();
        let (w, h) = decompress.size();
        let mut started = decompress.grayscale().unwrap();
        let pixels: Vec<u8> = started.read_scanlines().unwrap();
        started.finish().unwrap();
        (w, h, pixels)
    }

    /// Mean RGB of each bar's interior (8 pixels in from its sides).
    fn bar_means(width: usize, height: usize, pixels: &[[u8; 3]]) -> Vec<[f64; 3]> {
        (0..BARS.len())
            .map(|bar| {
                let x0 = (bar * width).div_ceil(BARS.len()) + 8;
                let x1 = ((bar + 1) * width).div_ceil(BARS.len()) - 8;
                let mut sum = [0f64; 3];
                for row in pixels.chunks(width).take(height) {
                    for px in &row[x0..x1] {
                        for c in 0..3 {
                            sum[c] += f64::from(px[c]);
                        }
                    }
                }
                sum.map(|s| s / ((x1 - x0) * height) as f64)
            })
            .collect()
    }

    /// The bars whose mean is more than `tolerance` away from the true colour in some channel.
    fn wrong_bars(jpeg: &[u8], tolerance: f64) -> Vec<(usize, [f64; 3])> {
        let (w, h, pixels) = decode_rgb(jpeg);
        bar_means(w, h, &pixels)
            .into_iter()
            .enumerate()
            .filter(|(bar, mean)| {
                (0..3).any(|c| (mean[c] - f64::from(BARS[*bar][c])).abs() > tolerance)
            })
            .collect()
    }

    #[test]
    fn bars_decode_to_their_true_colours() {
        let mut encoder = JpegEncoder::new(90);
        for (w, h) in [(640, 360), (321, 181)] {
            for info in [LIMITED_601, LIMITED_709, FULL_601, FULL_709] {
                let jpeg = encoder.encode(&bars_frame(w, h, info), info).unwrap();
                let wrong = wrong_bars(&jpeg, 6.0);
                assert!(wrong.is_empty(), "{w}x{h} {info:?}: bars off: {wrong:?}");
            }
        }
    }

    #[test]
    fn wrong_colour_info_gives_wrong_colours() {
        let mut encoder = JpegEncoder::new(90);
        // BT.709 green read as BT.601: the naive interpretation, about (20, 255, 9).
        let jpeg = encoder
            .encode(&bars_frame(640, 360, LIMITED_709), LIMITED_601)
            .unwrap();
        let (w, h, pixels) = decode_rgb(&jpeg);
        let green = bar_means(w, h, &pixels)[1];
        assert!(
            green[0] > 14.0 && green[2] > 4.0,
            "green came out {green:?}"
        );
        assert!(wrong_bars(&jpeg, 6.0).iter().any(|(bar, _)| *bar == 1));
        // Limited range passed through as full: washed out (black becomes 16, 16, 16).
        let jpeg = encoder
            .encode(&bars_frame(640, 360, LIMITED_601), FULL_601)
            .unwrap();
        assert!(wrong_bars(&jpeg, 6.0).iter().any(|(bar, _)| *bar == 4));
        // Full range squeezed as if limited: crushed and oversaturated.
        let jpeg = encoder
            .encode(&bars_frame(640, 360, FULL_709), LIMITED_709)
            .unwrap();
        assert!(!wrong_bars(&jpeg, 6.0).is_empty());
    }

    #[test]
    fn any_size_encodes_to_a_faithful_jpeg_of_that_size() {
        let mut encoder = JpegEncoder::new(90);
        let sizes = [
            (640, 360),
            (1280, 720),
            (1920, 1080),
            (322, 182),
            (321, 181),
            (17, 9),
            (15, 31),
            (1, 1),
        ];
        for (w, h) in sizes {
            let frame = pattern_frame(w, h);
            let jpeg = encoder.encode(&frame, FULL_601).unwrap();
            assert_eq!(jpeg[..2], [0xFF, 0xD8], "{w}x{h}: no SOI");
            assert_eq!(jpeg[jpeg.len() - 2..], [0xFF, 0xD9], "{w}x{h}: no EOI");
            let (dw, dh, gray) = decode_gray(&jpeg);
            assert_eq!((dw, dh), (w, h));
            let source: Vec<u8> = frame
                .y
                .chunks(frame.y_stride)
                .flat_map(|row| &row[..w])
                .copied()
                .collect();
            let db = psnr(&source, &gray);
            assert!(db >= 35.0, "{w}x{h}: luma PSNR {db:.1} dB");
        }
    }

    #[test]
    fn padding_replicates_edges() {
        // A flat picture whose size is not a multiple of the MCU must decode flat: if the padding
        // were not the edge colour, the DCT would smear it into the visible edge pixels. Both the
        // copying and the converting paths, odd widths included.
        let mut encoder = JpegEncoder::new(90);
        for info in [FULL_601, LIMITED_709] {
            for (w, h) in [(321usize, 181usize), (17, 9), (24, 40)] {
                let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
                let frame = YuvFrame {
                    width: w,
                    height: h,
                    y: vec![200; w * h],
                    u: vec![90; cw * ch],
                    v: vec![160; cw * ch],
                    y_stride: w,
                    uv_stride: cw,
                };
                let jpeg = encoder.encode(&frame, info).unwrap();
                let (_, _, gray) = decode_gray(&jpeg);
                let worst = gray.iter().map(|&v| v.abs_diff(gray[0])).max().unwrap();
                assert!(worst <= 2, "{info:?} {w}x{h}: a pixel is off by {worst}");
                let (_, _, rgb) = decode_rgb(&jpeg);
                let first = rgb[0];
                let spread = rgb
                    .iter()
                    .flat_map(|px| (0..3).map(move |c| px[c].abs_diff(first[c])))
                    .max()
                    .unwrap();
                assert!(spread <= 2, "{info:?} {w}x{h}: colour varies by {spread}");
            }
        }
    }

    #[test]
    fn conversion_matches_the_reference_formulas() {
        let mut encoder = JpegEncoder::new(90);
        // One 2x2 block per colour, so every luma sample has its own colour's chroma.
        let colours: Vec<[u8; 3]> = (0..64u32)
            .map(|i| {
                [
                    (i * 37 % 256) as u8,
                    (i * 91 % 256) as u8,
                    (i * 53 % 256) as u8,
                ]
            })
            .chain(BARS)
            .collect();
        let n = colours.len();
        for info in [LIMITED_601, LIMITED_709, FULL_601, FULL_709] {
            let mut frame = YuvFrame {
                width: 2 * n,
                height: 2,
                y: vec![0; 4 * n],
                u: vec![0; n],
                v: vec![0; n],
                y_stride: 2 * n,
                uv_stride: n,
            };
            for (i, &rgb) in colours.iter().enumerate() {
                let [y, cb, cr] = ycbcr(rgb, info);
                for at in [2 * i, 2 * i + 1, 2 * n + 2 * i, 2 * n + 2 * i + 1] {
                    frame.y[at] = y;
                }
                (frame.u[i], frame.v[i]) = (cb, cr);
            }
            let g = Geometry::new(frame.width, frame.height);
            encoder.prepare(&frame, info, &g);
            for (i, &rgb) in colours.iter().enumerate() {
                let want = ycbcr(rgb, FULL_601);
                let p = &encoder.planes;
                let got = [p.y[2 * i + 1], p.u[i], p.v[i]];
                assert_eq!(p.y[g.y_stride + 2 * i], got[0]);
                // The source was rounded to 8 bits (limited range has fewer levels).
                let tolerance = if info.full_range { 1 } else { 2 };
                for c in 0..3 {
                    assert!(
                        got[c].abs_diff(want[c]) <= tolerance,
                        "{info:?} {rgb:?}: got {got:?}, want {want:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn mozjpeg_failure_is_an_error_and_the_encoder_survives() {
        let mut encoder = JpegEncoder::new(80);
        // JPEG cannot exceed 65500 pixels a side: mozjpeg fails inside jpeg_start_compress.
        let wide = YuvFrame {
            width: 65536,
            height: 2,
            y: vec![128; 65536 * 2],
            u: vec![128; 32768],
            v: vec![128; 32768],
            y_stride: 65536,
            uv_stride: 32768,
        };
        match encoder.encode(&wide, FULL_601) {
            Err(EncodeError::Panicked(message)) => {
                assert!(message.contains("65500"), "{message}")
            }
            other => panic!("expected a caught mozjpeg failure, got {other:?}"),
        }
        let jpeg = encoder.encode(&pattern_frame(64, 48), FULL_601).unwrap();
        assert_eq!(decode_gray(&jpeg).0, 64);
    }

    #[test]
    fn inconsistent_frames_are_refused() {
        let mut encoder = JpegEncoder::new(80);
        let mut frame = pattern_frame(64, 48);
        frame.v.truncate(10);
        assert!(matches!(
            encoder.encode(&frame, FULL_601),
            Err(EncodeError::InvalidFrame {
                width: 64,
                height: 48,
                reason: "chroma plane too short"
            })
        ));
        let empty = YuvFrame::default();
        assert!(matches!(
            encoder.encode(&empty, LIMITED_709),
            Err(EncodeError::InvalidFrame { .. })
        ));
    }

    #[test]
    fn codec_state_can_move_to_a_worker() {
        fn assert_send<T: Send>() {}
        assert_send::<JpegEncoder>();
        assert_send::<crate::snapshot::decode::KeyframeDecoder>();
    }
}
