//! Outputs per rule: what a second, 320-px output adds to a snapshot, and WebP at 320 px.
//!
//! - `snapshot/<fixture>/full` renders the keyframes a 5 s rule picks as today (one decode,
//!   one full-size JPEG); `+webp320` and `+jpeg320` add one 320-px output (resize in the
//!   Y'CbCr planes, then libwebp or mozjpeg) from the same decode. Target: at most +15 %
//!   at 1080p.
//! - `webp320/yuv` encodes one 320×180 picture from planes (the snapshot path);
//!   `webp320/rgb` through [`encode_webp_rgb`] (the `latest.webp` path); `resize/1080p_to_320`
//!   is the resize alone. Target: WebP at 320 px under 3 ms.
//!
//! `snapshot_cpu/...` are the `snapshot` cases measured in the worker thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`) instead of wall time: on a machine shared with other work,
//! wall times swing by tens of percent between runs, CPU time much less.
//!
//! `cargo bench --bench outputs` (`-- --quick` on a loaded machine); fixtures as in
//! `benches/support/mod.rs` (`LIVESNAP_BENCH_ONLY=1920` keeps the 1080p one).

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use livesnap::media::avc;
use livesnap::rules::output::{Fit, Format, Output};
use livesnap::snapshot::color::ColorInfo;
use livesnap::snapshot::decode::{KeyframeDecoder, YuvFrame};
use livesnap::snapshot::render::Renderer;
use livesnap::snapshot::resize::{Layout, Resizer};
use livesnap::snapshot::webp::{encode_webp_rgb, WebpEncoder};

mod support;

const MAX_PIXELS: u64 = 4096 * 2304;
const QUALITY: u8 = 80;

fn thumb(format: Format) -> Output {
    Output {
        overwrite_object: None,
        sequence_object: None,
        width: Some(320),
        height: None,
        fit: Fit::Scale,
        format,
        quality: Some(70),
    }
}

/// The calling thread's CPU time.
struct ThreadCpu;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, started: u64) -> u64 {
        thread_cpu_ns() - started
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// CPU nanoseconds, shown in ms.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
        values.iter_mut().for_each(|v| *v /= 1e6);
        "ms (cpu)"
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        _t: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        values.iter_mut().for_each(|v| *v /= 1e6);
        "ms (cpu)"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn snapshot(c: &mut Criterion) {
    snapshot_group(c, "snapshot");
}

fn snapshot_cpu(c: &mut Criterion<ThreadCpu>) {
    snapshot_group(c, "snapshot_cpu");
}

fn snapshot_group<M: Measurement>(c: &mut Criterion<M>, name: &str) {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    for fx in support::fixtures() {
        let due = fx.due_keyframes(5);
        if due.is_empty() {
            continue;
        }
        let cases: [(&str, Vec<Output>); 3] = [
            ("full", vec![]),
            ("+webp320", vec![thumb(Format::Webp)]),
            ("+jpeg320", vec![thumb(Format::Jpeg)]),
        ];
        for (name, outputs) in cases {
            let mut renderer = Renderer::new(QUALITY, MAX_PIXELS);
            group.bench_function(format!("{}/{name}", fx.name), |b| {
                b.iter(|| {
                    for (body, config) in &due {
                        let pic = renderer
                            .render_outputs(body, config, &outputs)
                            .expect("render");
                        black_box(pic);
                    }
                })
            });
        }
    }
    group.finish();
}

/// The first keyframe of the 1080p fixture, decoded.
fn decoded_1080p() -> Option<(YuvFrame, ColorInfo)> {
    let fx = support::fixtures()
        .into_iter()
        .find(|f| f.name.contains("1920x1080"))?;
    let (body, config) = fx.due_keyframes(5).into_iter().next()?;
    let mut annex_b = Vec::new();
    avc::to_annex_b(&body, config.length_size, Some(&config), &mut annex_b).ok()?;
    let mut key = config.sps[0].to_vec();
    key.extend_from_slice(&config.pps[0]);
    let mut frame = YuvFrame::new();
    KeyframeDecoder::new(MAX_PIXELS)
        .decode(&annex_b, &key, &mut frame)
        .ok()?;
    let info = livesnap::media::sps::parse_sps(&config.sps[0]).ok()?;
    Some((frame, ColorInfo::from(&info)))
}

fn webp320(c: &mut Criterion) {
    let Some((frame, color)) = decoded_1080p() else {
        return;
    };
    let mut group = c.benchmark_group("outputs");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    let layout = Layout::plan(1920, 1080, Some(320), None, Fit::Scale);
    let mut resizer = Resizer::new();
    let mut small = YuvFrame::new();
    group.bench_function("resize/1080p_to_320", |b| {
        b.iter(|| {
            resizer
                .resize(&frame, &layout, color.black(), &mut small)
                .expect("resize")
        })
    });
    let mut encoder = WebpEncoder::new();
    group.bench_function("webp320/yuv", |b| {
        b.iter(|| black_box(encoder.encode(&small, color, 70).expect("webp")))
    });
    // A 320×180 RGB picture of the same content (nearest chroma, BT.601 limited: a bench
    // input, not a reference conversion).
    let (w, h) = (small.width, small.height);
    let rgb: Vec<u8> = (0..w * h)
        .flat_map(|i| {
            let (x, y) = (i % w, i / w);
            let l = f32::from(small.y[y * small.y_stride + x]) - 16.0;
            let cb = f32::from(small.u[(y / 2) * small.uv_stride + x / 2]) - 128.0;
            let cr = f32::from(small.v[(y / 2) * small.uv_stride + x / 2]) - 128.0;
            let l = 1.164 * l;
            [
                (l + 1.596 * cr).clamp(0.0, 255.0) as u8,
                (l - 0.392 * cb - 0.813 * cr).clamp(0.0, 255.0) as u8,
                (l + 2.017 * cb).clamp(0.0, 255.0) as u8,
            ]
        })
        .collect();
    group.bench_function("webp320/rgb", |b| {
        b.iter(|| black_box(encode_webp_rgb(&rgb, w as u32, h as u32, 70).expect("webp")))
    });
    group.finish();
}

criterion_group!(benches, snapshot, webp320);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = snapshot_cpu
}
criterion_main!(benches, cpu);
