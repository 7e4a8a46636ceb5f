//! Codec benches: decoding one H.264 IDR access unit and encoding one JPEG, at 720p and 1080p.
//!
//! The IDRs are made at start with openh264's own encoder from a synthetic textured picture
//! (gradients, edges and noise, so neither codec sees a trivially flat image); fixture-based
//! benches belong beside these. Run with `cargo bench --bench codec` (needs `harness = false`).
//!
//! The encode benches differ only in the colour path, so their differences are its cost:
//! `bt601_full` passes the planes through, `bt601_limited` range-expands them with lookup
//! tables, `bt709_limited` re-matrixes them in fixed point.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use livesnap::snapshot::color::{ColorInfo, Matrix};
use livesnap::snapshot::decode::{KeyframeDecoder, YuvFrame};
use livesnap::snapshot::encode::JpegEncoder;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameType};
use openh264::formats::YUVBuffer;
use openh264::OpenH264API;

const SIZES: [(&str, usize, usize, u32); 2] = [
    // name, width, height, encoder bit rate (a typical live-stream rate for the size)
    ("720p", 1280, 720, 3_000_000),
    ("1080p", 1920, 1080, 6_000_000),
];

const JPEG_QUALITY: u8 = 80;

/// A deterministic textured I420 picture: diagonal gradients, a grid of hard-edged blocks and
/// low-amplitude noise, with slowly varying chroma.
fn synthetic_i420(width: usize, height: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_u32;
    let mut noise = move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 28) as usize // 0..16
    };
    let mut yuv = Vec::with_capacity(width * height * 3 / 2);
    for y in 0..height {
        for x in 0..width {
            let gradient = (x * 160 / width + y * 60 / height) as isize;
            let block = if (x / 96 + y / 64) % 3 == 0 { 50 } else { 0 };
            let value = 24 + gradient + block + noise() as isize;
            yuv.push(value.clamp(16, 235) as u8);
        }
    }
    let (cw, ch) = (width / 2, height / 2);
    for plane in 0..2 {
        for y in 0..ch {
            for x in 0..cw {
                let ramp = if plane == 0 { x * 96 / cw } else { y * 96 / ch };
                let block = if (x / 48 + y / 32) % 4 == plane {
                    30
                } else {
                    0
                };
                yuv.push((80 + ramp + block) as u8);
            }
        }
    }
    yuv
}

/// The first access unit openh264's encoder makes: SPS, PPS and an IDR.
fn encode_idr(width: usize, height: usize, bits_per_second: u32) -> Vec<u8> {
    let config = EncoderConfig::new().bitrate(BitRate::from_bps(bits_per_second));
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
        .expect("openh264 encoder setup");
    let picture = YUVBuffer::from_vec(synthetic_i420(width, height), width, height);
    let stream = encoder.encode(&picture).expect("openh264 encode");
    assert_eq!(stream.frame_type(), FrameType::IDR);
    stream.to_vec()
}

/// The SPS and PPS NAL units of an access unit, concatenated: the decoder's parameter key.
fn param_sets(annex_b: &[u8]) -> Vec<u8> {
    let mut key = Vec::new();
    for nal in openh264::nal_units(annex_b) {
        let header = nal.iter().position(|&b| b == 1).map_or(0, |i| i + 1);
        if matches!(nal.get(header).map(|b| b & 0x1f), Some(7 | 8)) {
            key.extend_from_slice(nal);
        }
    }
    key
}

fn codec(c: &mut Criterion) {
    for (name, width, height, rate) in SIZES {
        let idr = encode_idr(width, height, rate);
        // Constant key: the decoder persists across iterations, as across a stream's keyframes.
        let key = param_sets(&idr);
        let mut decoder = KeyframeDecoder::new((width * height) as u64);
        let mut frame = YuvFrame::new();
        decoder
            .decode(&idr, &key, &mut frame)
            .expect("decoding the synthetic IDR");

        c.bench_function(&format!("decode_idr/{name}"), |b| {
            b.iter(|| {
                decoder
                    .decode(black_box(&idr), &key, &mut frame)
                    .expect("decode")
            })
        });

        let mut jpeg = JpegEncoder::new(JPEG_QUALITY);
        for (path, matrix, full_range) in [
            ("bt601_full", Matrix::Bt601, true),
            ("bt601_limited", Matrix::Bt601, false),
            ("bt709_limited", Matrix::Bt709, false),
        ] {
            let color = ColorInfo { matrix, full_range };
            c.bench_function(&format!("encode_jpeg/{name}/{path}"), |b| {
                b.iter(|| jpeg.encode(black_box(&frame), color).expect("encode"))
            });
        }
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
