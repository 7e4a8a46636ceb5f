//! WebP (lossy, VP8) encoding with libwebp, built from source by the `webp` crate's
//! `libwebp-sys` (no system library).
//!
//! Two entry points: [`WebpEncoder::encode`] takes a decoded picture's Y'CbCr planes
//! (4:2:0), converted by [`color`](super::color) into the limited-range BT.601 libwebp codes
//! (no RGB round trip), through `libwebp-sys` (the `webp` crate has no planar input);
//! [`encode_webp_rgb`] takes packed 8-bit RGB, for pictures that are already RGB, through the
//! `webp` crate's encoder. This module must not decode video, resize or know about streams.

use std::ptr;

use libwebp_sys as sys;

use super::color::{ColorInfo, Converter, Target};
use super::decode::YuvFrame;

#[derive(Debug, thiserror::Error)]
pub enum WebpError {
    #[error("cannot encode a {width}x{height} picture as WebP: {reason}")]
    InvalidFrame {
        width: usize,
        height: usize,
        reason: &'static str,
    },
    /// libwebp refused the configuration or the picture (its `WebPEncodingError` code).
    #[error("libwebp failed {context} (error code {code})")]
    Libwebp { context: &'static str, code: i32 },
}

/// WebP's limit on each side.
const MAX_SIDE: usize = 16383;

/// Encodes packed RGB (`width × height × 3` bytes) as lossy WebP at `quality` (1–100).
pub fn encode_webp_rgb(
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Vec<u8>, WebpError> {
    let (w, h) = (width as usize, height as usize);
    let invalid = |reason| WebpError::InvalidFrame {
        width: w,
        height: h,
        reason,
    };
    check_size(w, h).map_err(invalid)?;
    if rgb.len() < w * h * 3 {
        return Err(invalid("RGB buffer shorter than width × height × 3"));
    }
    let config = config(quality)?;
    // The `webp` crate's encoder (RGB import and encode inside libwebp).
    ::webp::Encoder::from_rgb(&rgb[..w * h * 3], width, height)
        .encode_advanced(&config)
        .map(|memory| memory.to_vec())
        .map_err(|e| WebpError::Libwebp {
            context: "encoding RGB",
            code: e as i32,
        })
}

/// Encodes [`YuvFrame`]s as lossy WebP; keeps its converted planes between calls (one per
/// worker thread).
#[derive(Default)]
pub struct WebpEncoder {
    planes: YuvFrame,
    converter: Converter,
}

impl WebpEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes `frame` (coded as `color` says) at `quality` (1–100).
    pub fn encode(
        &mut self,
        frame: &YuvFrame,
        color: ColorInfo,
        quality: u8,
    ) -> Result<Vec<u8>, WebpError> {
        let invalid = |reason| WebpError::InvalidFrame {
            width: frame.width,
            height: frame.height,
            reason,
        };
        frame.check_layout().map_err(invalid)?;
        check_size(frame.width, frame.height).map_err(invalid)?;
        let p = &mut self.planes;
        p.y_stride = frame.width;
        p.uv_stride = frame.chroma_width();
        self.converter.convert(frame, color, Target::Webp, p);
        let config = config(quality)?;
        // SAFETY: the picture points at our planes (YUV420, strides and lengths as the
        // converter laid them out: `check_layout` of a converted frame holds); libwebp only
        // reads them, and the picture owns no memory of its own (`WebPPictureFree` is still
        // called for anything the encoder attached).
        unsafe {
            let mut pic: sys::WebPPicture = std::mem::zeroed();
            if !sys::WebPPictureInit(&mut pic) {
                return Err(WebpError::Libwebp {
                    context: "initialising a picture",
                    code: -1,
                });
            }
            pic.use_argb = 0;
            pic.colorspace = sys::WebPEncCSP::WEBP_YUV420;
            pic.width = p.width as i32;
            pic.height = p.height as i32;
            pic.y = p.y.as_ptr() as *mut u8;
            pic.u = p.u.as_ptr() as *mut u8;
            pic.v = p.v.as_ptr() as *mut u8;
            pic.y_stride = p.y_stride as i32;
            pic.uv_stride = p.uv_stride as i32;
            let result = encode_picture(&config, &mut pic);
            pic.y = ptr::null_mut();
            pic.u = ptr::null_mut();
            pic.v = ptr::null_mut();
            sys::WebPPictureFree(&mut pic);
            result
        }
    }
}

fn check_size(w: usize, h: usize) -> Result<(), &'static str> {
    if w == 0 || h == 0 {
        return Err("empty picture");
    }
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err("WebP allows at most 16383 pixels a side");
    }
    Ok(())
}

/// libwebp's default lossy settings at `quality`, method 2 (its fast end: ≈ 2× method 4's
/// speed for a few percent larger files).
fn config(quality: u8) -> Result<sys::WebPConfig, WebpError> {
    let mut config = sys::WebPConfig::new().map_err(|()| WebpError::Libwebp {
        context: "initialising the configuration",
        code: -1,
    })?;
    config.quality = f32::from(quality.clamp(1, 100));
    config.method = 2;
    // SAFETY: `config` is an initialised WebPConfig.
    if unsafe { sys::WebPValidateConfig(&config) } == 0 {
        return Err(WebpError::Libwebp {
            context: "validating the configuration",
            code: -1,
        });
    }
    Ok(config)
}

/// Runs the encoder on an initialised picture, collecting its output in memory.
///
/// # Safety
/// `pic` must be an initialised picture whose planes (or ARGB buffer) are valid.
unsafe fn encode_picture(
    config: &sys::WebPConfig,
    pic: &mut sys::WebPPicture,
) -> Result<Vec<u8>, WebpError> {
    let mut writer: sys::WebPMemoryWriter = std::mem::zeroed();
    sys::WebPMemoryWriterInit(&mut writer);
    pic.writer = Some(sys::WebPMemoryWrite);
    pic.custom_ptr = (&mut writer as *mut sys::WebPMemoryWriter).cast();
    let ok = sys::WebPEncode(config, pic) != 0;
    let out = if ok && !writer.mem.is_null() {
        Ok(std::slice::from_raw_parts(writer.mem, writer.size).to_vec())
    } else {
        Err(WebpError::Libwebp {
            context: "encoding",
            code: pic.error_code as i32,
        })
    };
    sys::WebPMemoryWriterClear(&mut writer);
    pic.writer = None;
    pic.custom_ptr = ptr::null_mut();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testing::*;

    fn decode(webp: &[u8]) -> (u32, u32, Vec<u8>) {
        let image = ::webp::Decoder::new(webp).decode().expect("decodes");
        assert!(!image.is_alpha());
        (image.width(), image.height(), image.to_vec())
    }

    #[test]
    fn yuv_pictures_encode_to_webp_of_their_size_and_colours() {
        let mut encoder = WebpEncoder::new();
        for (w, h) in [(320usize, 180usize), (321, 181)] {
            for info in [LIMITED_601, LIMITED_709, FULL_601, FULL_709] {
                let webp = encoder.encode(&bars_frame(w, h, info), info, 90).unwrap();
                assert_eq!(&webp[..4], b"RIFF");
                assert_eq!(&webp[8..12], b"WEBP");
                let (dw, dh, rgb) = decode(&webp);
                assert_eq!((dw as usize, dh as usize), (w, h));
                // The catalog reads the size from the header alone.
                let header = crate::storage::image_header::dimensions(&webp[..64]);
                assert_eq!(header, Some((w as u16, h as u16)));
                // The middle of each bar, on the middle row, close to its true colour.
                let row = &rgb[(h / 2) * w * 3..(h / 2 + 1) * w * 3];
                for (bar, want) in BARS.iter().enumerate() {
                    let x = (2 * bar + 1) * w / (2 * BARS.len());
                    let got = &row[x * 3..x * 3 + 3];
                    for c in 0..3 {
                        assert!(
                            got[c].abs_diff(want[c]) <= 12,
                            "{w}x{h} {info:?} bar {bar}: {got:?} vs {want:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rgb_encodes_and_quality_matters() {
        let (w, h) = (320u32, 180u32);
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [
                    (x * 255 / w) as u8,
                    (y * 255 / h) as u8,
                    ((x ^ y) & 0xff) as u8,
                ]
            })
            .collect();
        let small = encode_webp_rgb(&rgb, w, h, 10).unwrap();
        let large = encode_webp_rgb(&rgb, w, h, 95).unwrap();
        assert_eq!(decode(&large).0, w);
        assert!(
            small.len() < large.len(),
            "{} vs {}",
            small.len(),
            large.len()
        );
        assert!(matches!(
            encode_webp_rgb(&rgb[..10], w, h, 80),
            Err(WebpError::InvalidFrame { .. })
        ));
        assert!(matches!(
            encode_webp_rgb(&[], 20000, 1, 80),
            Err(WebpError::InvalidFrame { .. })
        ));
    }
}
