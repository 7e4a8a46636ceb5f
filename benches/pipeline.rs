//! The whole offline snapshot pipeline per fixture, on the keyframes a 5 s rule picks.
//!
//! - `pipeline/render/F`: a persistent `Renderer` (what each pool worker owns) over the
//!   due keyframes: scan, Annex B, openh264 decode, colour conversion, mozjpeg encode.
//!   Throughput is in snapshots (criterion's "elem/s").
//! - `pipeline/render_cold/F`: the same with a fresh `Renderer` per keyframe, i.e. a new
//!   openh264 decoder each time: what a worker pays when consecutive jobs come from
//!   streams with different parameter sets.
//! - `pipeline/ingest/F`: the `snapshot` command's path: `IngestStream::on_video` for every
//!   video tag (`on_audio` for audio) on a node with one pool worker and a `memory` storage
//!   target, waiting for each due snapshot to be stored before going on (as the offline
//!   command does). Its time minus `render` is the overhead around the codecs.
//!
//! Before the criterion runs, each fixture's median decode and encode time per snapshot
//! (from `Renderer::last_timings`) is printed, for comparison with the server's
//! `livesnap_decode_seconds` / `livesnap_encode_seconds` histograms.
//!
//! `cargo bench --bench pipeline`; see `benches/support/mod.rs` for choosing fixtures.

mod support;

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use livesnap::config::Config;
use livesnap::ingest::IngestStream;
use livesnap::server::{self, Node};
use livesnap::snapshot::pool::Renderer;
use livesnap::snapshot::store::StreamId;

const INTERVAL_SECS: u32 = 5;
const QUALITY: u8 = 80;
const MAX_PIXELS: u64 = 4096 * 2304;

const NODE_CONFIG: &str = r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
[snapshot]
workers = 1
[storage.default]
scheme = "memory"
[[rules]]
domain = "*"
app = "*"
interval_secs = 5
storage = "default"
overwrite_object = "{AppName}/{StreamName}.jpg"
"#;

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Feeds a whole fixture through an `IngestStream`; returns the snapshots stored.
async fn ingest_once(node: &Arc<Node>, fx: &support::Fixture) -> u64 {
    let id = StreamId {
        domain: "bench".into(),
        app: "live".into(),
        stream: fx.name.clone(),
    };
    let peer = "127.0.0.1:1".parse().expect("addr");
    let mut ingest = IngestStream::start(node, id, peer).expect("stream name is free");
    let stats = ingest.live().stats.clone();
    for tag in &fx.tags {
        match tag.tag_type {
            8 => ingest.on_audio(tag.data.len()),
            9 => {
                ingest.on_video(tag.timestamp_ms, tag.data.clone());
                while stats.finished.load(Ordering::Relaxed) < stats.due.load(Ordering::Relaxed) {
                    tokio::task::yield_now().await;
                    if stats.finished.load(Ordering::Relaxed) < stats.due.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
            }
            _ => {}
        }
    }
    drop(ingest);
    stats.stored.load(Ordering::Relaxed)
}

fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let settings = Config::parse(NODE_CONFIG)
        .expect("config")
        .validate()
        .expect("valid config");
    let node = rt.block_on(async { server::build_node(settings).expect("node") });

    let mut group = c.benchmark_group("pipeline");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    for fx in support::fixtures() {
        let due = fx.due_keyframes(INTERVAL_SECS);
        assert!(!due.is_empty(), "{}: no keyframe is due", fx.name);
        let mut renderer = Renderer::new(QUALITY, MAX_PIXELS);

        // Per-snapshot split, printed once: 5 passes over the due keyframes.
        let (mut dec, mut enc, mut size) = (Vec::new(), Vec::new(), 0usize);
        let mut dims = (0, 0);
        for _ in 0..5 {
            for (body, cfg) in &due {
                let (jpeg, w, h) = renderer.render(body, cfg).expect("render");
                dec.push(renderer.last_timings.0);
                enc.push(renderer.last_timings.1);
                size = jpeg.len();
                dims = (w, h);
            }
        }
        let idr_kb = due.iter().map(|(b, _)| b.len()).sum::<usize>() / due.len() / 1024;
        eprintln!(
            "{}: {}x{}, {} due keyframes (mean IDR {idr_kb} KiB), median decode {:.2} ms, encode {:.2} ms, JPEG {} KiB",
            fx.name,
            dims.0,
            dims.1,
            due.len(),
            median(&mut dec).as_secs_f64() * 1e3,
            median(&mut enc).as_secs_f64() * 1e3,
            size / 1024
        );

        group.throughput(Throughput::Elements(due.len() as u64));
        group.bench_function(format!("render/{}", fx.name), |b| {
            b.iter(|| {
                for (body, cfg) in &due {
                    black_box(renderer.render(black_box(body), cfg).expect("render"));
                }
            })
        });
        group.bench_function(format!("render_cold/{}", fx.name), |b| {
            b.iter(|| {
                for (body, cfg) in &due {
                    let mut fresh = Renderer::new(QUALITY, MAX_PIXELS);
                    black_box(fresh.render(black_box(body), cfg).expect("render"));
                }
            })
        });
        group.bench_function(format!("ingest/{}", fx.name), |b| {
            b.iter(|| {
                let stored = rt.block_on(ingest_once(&node, &fx));
                assert_eq!(stored, due.len() as u64, "every due snapshot stored");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
