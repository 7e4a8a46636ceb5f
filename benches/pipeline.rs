//! The whole offline snapshot pipeline per fixture, on the keyframes a 5 s rule picks.
//!
//! - `pipeline/render/F`: a persistent `Renderer` (what each pool worker owns) over the
//!   due keyframes: scan, Annex B, openh264 decode, colour conversion, mozjpeg encode.
//!   Throughput is in snapshots (criterion's "elem/s").
//! - `pipeline/render_cold/F`: the same with a fresh `Renderer` per keyframe, i.e. a new
//!   openh264 decoder each time: what a worker pays when consecutive jobs come from
//!   streams with different parameter sets.
//! - `pipeline/ingest/F`: the `snapshot` command's path: `Ingest::on_video` for every
//!   video tag (`on_audio` for audio) on a node with one pool worker and a `memory` storage
//!   target, waiting for each due snapshot to be stored before going on (as the offline
//!   command does). Its time minus `render` is the overhead around the codecs.
//!
//! - `decoder_switch/{same,recreate,inband}/A+B`: openh264 decode only, of the due keyframes of
//!   fixture A (`same`: one persistent decoder, what a worker does when every job has the
//!   same parameter sets), or of A's and B's due keyframes interleaved, as a pool worker
//!   sees them when it serves two streams with different SPS/PPS: `recreate` creates a new
//!   decoder at every switch (what `KeyframeDecoder` did before it kept its decoder),
//!   `inband` is today's `KeyframeDecoder`: one decoder that takes the new SPS/PPS leading
//!   every Annex B keyframe. Before timing, the kept decoder is checked to decode the same
//!   pictures as a fresh decoder per keyframe. Per-keyframe times are criterion's time divided by the "elem" count.
//!
//! Before the criterion runs, each fixture's median decode and encode time per snapshot
//! (from `Rendered::decode_time` and `encode_time`) is printed, for comparison with the server's
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
use livesnap::ingest::Ingest;
use livesnap::media::avc;
use livesnap::names::StreamId;
use livesnap::node::Node;
use livesnap::snapshot::decode::{KeyframeDecoder, YuvFrame};
use livesnap::snapshot::render::Renderer;

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

/// Feeds a whole fixture through an `Ingest`; returns the snapshots stored.
async fn ingest_once(node: &Arc<Node>, fx: &support::Fixture) -> u64 {
    let id = StreamId::new("bench", "live", fx.name.clone());
    let peer = "127.0.0.1:1".parse().expect("addr");
    let mut ingest = Ingest::start(node, id, peer).expect("stream name is free");
    let stats = ingest.live().stats.clone();
    for tag in &fx.tags {
        match tag.tag_type {
            8 => ingest.on_audio(tag.timestamp_ms, tag.data.clone()),
            9 => {
                ingest.on_video(tag.timestamp_ms, tag.data.clone()).await;
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
    let node =
        rt.block_on(async { Node::build(settings, livesnap::clock::system()).expect("node") });

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
                let pic = renderer.render(body, cfg).expect("render");
                dec.push(pic.decode_time);
                enc.push(pic.encode_time);
                size = pic.jpeg.len();
                dims = (pic.width, pic.height);
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

/// A due keyframe as the decoder takes it: Annex B and the parameter-set key.
struct Job {
    annex_b: Vec<u8>,
    key: Vec<u8>,
}

fn jobs(fx: &support::Fixture) -> Vec<Job> {
    fx.due_keyframes(INTERVAL_SECS)
        .into_iter()
        .map(|(body, cfg)| {
            let mut annex_b = Vec::new();
            avc::to_annex_b(&body, cfg.length_size, Some(&cfg), &mut annex_b).expect("annex b");
            let mut key = cfg.sps[0].to_vec();
            key.extend_from_slice(&cfg.pps[0]);
            Job { annex_b, key }
        })
        .collect()
}

fn decoder_switch(c: &mut Criterion) {
    let fixtures = support::fixtures();
    if fixtures.len() < 2 {
        return;
    }
    let mut group = c.benchmark_group("decoder_switch");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    for (i, a) in fixtures.iter().enumerate() {
        let b = &fixtures[(i + 1) % fixtures.len()];
        let (ja, jb) = (jobs(a), jobs(b));
        if ja[0].key == jb[0].key {
            continue;
        }
        let mixed: Vec<&Job> = ja.iter().zip(&jb).flat_map(|(x, y)| [x, y]).collect();
        // The in-band path must give the same pictures as fresh decoders.
        let mut kept = KeyframeDecoder::new(MAX_PIXELS);
        let (mut f1, mut f2) = (YuvFrame::new(), YuvFrame::new());
        for job in &mixed {
            KeyframeDecoder::new(MAX_PIXELS)
                .decode(&job.annex_b, &job.key, &mut f1)
                .expect("decode");
            kept.decode(&job.annex_b, &job.key, &mut f2)
                .expect("decode in-band");
            assert!(
                (f1.width, f1.height, &f1.y, &f1.u, &f1.v)
                    == (f2.width, f2.height, &f2.y, &f2.u, &f2.v),
                "{} + {}: in-band parameter switch decoded a different picture",
                a.name,
                b.name
            );
        }
        let mut frame = YuvFrame::new();
        let mut decoder = KeyframeDecoder::new(MAX_PIXELS);
        group.throughput(Throughput::Elements(ja.len() as u64));
        group.bench_function(format!("same/{}", a.name), |bch| {
            bch.iter(|| {
                for job in &ja {
                    decoder
                        .decode(&job.annex_b, &job.key, &mut frame)
                        .expect("decode");
                }
            })
        });
        let pair = format!("{}+{}", a.name, b.name);
        group.throughput(Throughput::Elements(mixed.len() as u64));
        group.bench_function(format!("recreate/{pair}"), |bch| {
            bch.iter(|| {
                let mut last: &[u8] = &[];
                for job in &mixed {
                    if job.key[..] != *last {
                        decoder = KeyframeDecoder::new(MAX_PIXELS);
                        last = &job.key;
                    }
                    decoder
                        .decode(&job.annex_b, &job.key, &mut frame)
                        .expect("decode");
                }
            })
        });
        group.bench_function(format!("inband/{pair}"), |bch| {
            bch.iter(|| {
                for job in &mixed {
                    decoder
                        .decode(&job.annex_b, &job.key, &mut frame)
                        .expect("decode");
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pipeline, decoder_switch);
criterion_main!(benches);
