//! `keyframe_to_jpeg`: the whole snapshot path of one keyframe, `snapshot::pool::Renderer`
//! (AVCC scan, SPS check against the pixel cap, Annex B, openh264 decode, colour
//! conversion, mozjpeg encode), on a fuzzed AVCDecoderConfigurationRecord and access unit.
//!
//! Layout: a big-endian u16 `n`, `n` bytes of decoder configuration record, then the
//! AVCC access unit. Seeds are real records and IDR access units from `fixtures/`.
//!
//! Invariants: no panic, not even one the renderer would catch (under libFuzzer a panic
//! aborts even inside `catch_unwind`; in `cargo test` a caught one is an error here);
//! memory bounded by the pixel cap [`MAX_PIXELS`] (libFuzzer's `-rss_limit_mb` and
//! `-malloc_limit_mb` watch it); an `Ok` is a JPEG (SOI … EOI) of at most `MAX_PIXELS`
//! pixels, neither dimension 0.

use bytes::Bytes;
use livesnap::media::avc;
use livesnap::snapshot::render::{RenderError, Renderer};

/// Pixel cap of the fuzzed renderer (a 1280x720 picture fits; 1080p does not).
pub const MAX_PIXELS: u64 = 1 << 20;

pub fn run(data: &[u8]) {
    let [hi, lo, ..] = *data else {
        return;
    };
    let rest = &data[2..];
    let n = usize::from(u16::from_be_bytes([hi, lo])).min(rest.len());
    let (record, au) = rest.split_at(n);
    let Ok(config) = avc::parse_decoder_config(record) else {
        return;
    };
    let mut renderer = Renderer::new(75, MAX_PIXELS);
    match renderer.render(&Bytes::copy_from_slice(au), &config) {
        Ok(pic) => {
            let (jpeg, width, height) = (pic.jpeg, pic.width, pic.height);
            assert!(width > 0 && height > 0, "{width}x{height}");
            assert!(u64::from(width) * u64::from(height) <= MAX_PIXELS);
            assert!(
                jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]),
                "not a JPEG"
            );
        }
        Err(RenderError::Panicked(message)) => panic!("the renderer caught a panic: {message}"),
        Err(_) => {}
    }
}
