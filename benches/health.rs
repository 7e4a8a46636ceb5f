//! Health analysis cost: the luma thumbnail, mean and spread of one decoded picture
//! (`livesnap::health::analyze`), and the comparison of two thumbnails, at 720p and
//! 1080p. The target is under 0.5 ms per snapshot at 1080p (docs/health.md records the
//! measured figure). Run with `cargo bench --bench health`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use livesnap::health::analyze;

/// A deterministic textured luma plane with a stride wider than the picture (as
/// openh264's are).
fn plane(width: usize, height: usize, stride: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_u32;
    let mut p = vec![0u8; stride * height];
    for y in 0..height {
        for x in 0..width {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let v = x * 160 / width + y * 60 / height + (state >> 28) as usize;
            p[y * stride + x] = (16 + v).min(235) as u8;
        }
    }
    p
}

fn health(c: &mut Criterion) {
    for (name, w, h) in [("720p", 1280, 720), ("1080p", 1920, 1080)] {
        let stride = w + 64;
        let p = plane(w, h, stride);
        c.bench_function(&format!("health_analyze_{name}"), |b| {
            b.iter(|| analyze(black_box(&p), stride, w, h))
        });
        let a = analyze(&p, stride, w, h).unwrap();
        let other = analyze(&plane(w, h, stride)[..], stride, w, h).unwrap();
        c.bench_function(&format!("health_diff_{name}"), |b| {
            b.iter(|| black_box(&a).diff(black_box(&other)))
        });
    }
}

criterion_group!(benches, health);
criterion_main!(benches);
