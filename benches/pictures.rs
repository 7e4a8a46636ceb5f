//! `latest.jpg?width=320` from memory with 100 live streams: the latency of the whole
//! handler path (HTTP over loopback, auth, the picture cache, and on a new picture the
//! decode, resize and encode), as a distribution, so the number is a p99.
//!
//! A node with 100 live streams, each holding a real 1080p snapshot in memory (keyframes
//! of `high_1920x1080_gop2s.flv` rendered as the pool renders them), serves its API on
//! 127.0.0.1. Scenarios:
//!
//! - `dashboards`: 5 rounds, each one second of a wall of 100 dashboards polling every
//!   stream: every stream gets a new picture every 5 rounds (staggered: 20 new pictures
//!   a round, as a 5 s rule gives), then 100 × 100 GETs of `latest.jpg?width=320`
//!   (4 in flight). The first GET after a new picture makes it; the others are hits.
//! - `revalidate`: the same GETs with `If-None-Match` (what a browser sends for a
//!   `no-cache` image): 304s.
//! - `miss`: one GET per new picture only, one at a time: the cost of making a
//!   thumbnail from a 1080p JPEG (MD5 for the ETag, DCT-scaled decode, resize, encode).
//!
//! Target (issue 13): p99 under 5 ms with 100 live streams. `cargo bench --bench
//! pictures`; prints one line per scenario.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use livesnap::hub::Hub;
use livesnap::live::{LiveStream, PublishGuard};
use livesnap::names::StreamId;
use livesnap::snapshot::render::Renderer;
use livesnap::snapshot::writer::LatestPicture;
use tokio_util::sync::CancellationToken;

mod support;

const STREAMS: usize = 100;
const DASHBOARDS: usize = 100;
const ROUNDS: usize = 5;
const IN_FLIGHT: usize = 4;
const TOKEN: &str = "bench-token";

fn pictures() -> Vec<Bytes> {
    let path = support::fixture_paths()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("1920x1080"))
        .expect("the 1080p fixture");
    let fx = support::Fixture::load(&path);
    let mut r = Renderer::new(80, 4096 * 2304);
    let mut out: Vec<Bytes> = fx
        .due_keyframes(1)
        .iter()
        .map(|(body, config)| r.render(body, config).expect("renders").jpeg)
        .collect();
    // Every stream shows its own pictures (a picture's identity is its content).
    out.truncate(6);
    out
}

/// The same JPEG with a comment naming (stream, version) after its SOI: distinct
/// content, the same cost to decode.
fn variant(jpeg: &Bytes, stream: usize, version: usize) -> Bytes {
    let tag = format!("livesnap bench {stream} {version}");
    let mut v = Vec::with_capacity(jpeg.len() + tag.len() + 4);
    v.extend_from_slice(&jpeg[..2]); // SOI
    v.extend_from_slice(&[0xFF, 0xFE]);
    v.extend_from_slice(&((tag.len() + 2) as u16).to_be_bytes());
    v.extend_from_slice(tag.as_bytes());
    v.extend_from_slice(&jpeg[2..]);
    Bytes::from(v)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "pictures/{name}: n={} p50={:.3} ms p90={:.3} ms p99={:.3} ms max={:.3} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(0.0),
    );
}

struct Bench {
    base: String,
    client: reqwest::Client,
    latest: Vec<livesnap::snapshot::writer::Latest>,
    pictures: Vec<Bytes>,
    _guards: Vec<PublishGuard>,
}

impl Bench {
    fn set(&self, stream: usize, version: usize) {
        let jpeg = variant(
            &self.pictures[version % self.pictures.len()],
            stream,
            version,
        );
        *self.latest[stream].lock().unwrap() =
            Some(LatestPicture::new(jpeg, 1_700_000_000 + version as u64));
    }

    /// One GET; (ms, status, ETag).
    async fn get(&self, stream: usize, etag: Option<&str>) -> (f64, u16, String) {
        let url = format!(
            "{}/api/v1/streams/bench/live/cam{stream}/latest.jpg?width=320",
            self.base
        );
        let started = Instant::now();
        let mut rb = self.client.get(url).bearer_auth(TOKEN);
        if let Some(t) = etag {
            rb = rb.header("if-none-match", t);
        }
        let resp = rb.send().await.expect("GET");
        let status = resp.status().as_u16();
        let tag = resp
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = resp.bytes().await.expect("body");
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        assert!(status == 200 || status == 304, "status {status}");
        assert!(status == 304 || !body.is_empty());
        (ms, status, tag)
    }
}

async fn setup() -> (Bench, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
admin_token = "{TOKEN}"
[storage.default]
scheme = "fs"
root = "{}"
"#,
        dir.path().display()
    );
    let settings = livesnap::config::Config::parse(&text)
        .unwrap()
        .validate()
        .unwrap();
    let node = livesnap::node::Node::build(settings, livesnap::clock::system()).unwrap();
    let mut guards = Vec::new();
    let mut latest = Vec::new();
    for i in 0..STREAMS {
        let slot: livesnap::snapshot::writer::Latest = Arc::new(Mutex::new(None));
        latest.push(slot.clone());
        let live = LiveStream {
            id: StreamId::new("bench", "live", format!("cam{i}")),
            peer: "127.0.0.1:1".parse().unwrap(),
            started: SystemTime::now(),
            rule: None,
            stats: Default::default(),
            latest: slot,
            kick: CancellationToken::new(),
            info: Default::default(),
            hub: Hub::new(Default::default()),
            relays: OnceLock::new(),
            players: Default::default(),
        };
        guards.push(node.registry.claim(live).unwrap());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = livesnap::api::router(node, port);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let bench = Bench {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        latest,
        pictures: pictures(),
        _guards: guards,
    };
    (bench, dir)
}

async fn run() {
    let (b, _dir) = setup().await;
    let b = Arc::new(b);
    for s in 0..STREAMS {
        b.set(s, 0);
    }
    // Warm up: every stream's first thumbnail, and the connections.
    for s in 0..STREAMS {
        b.get(s, None).await;
    }

    // Misses: a new picture, then its first request.
    let mut miss = Vec::new();
    for s in 0..STREAMS {
        b.set(s, 1);
        miss.push(b.get(s, None).await.0);
    }
    report("miss (new 1080p picture → 320 px)", miss);

    let mut plain = Vec::new();
    let mut etags = vec![String::new(); STREAMS];
    let mut reval = Vec::new();
    for round in 0..ROUNDS {
        for s in 0..STREAMS {
            if (round + s) % 5 == 0 {
                b.set(s, 2 + round);
            }
        }
        let started = Instant::now();
        let jobs: Vec<usize> = (0..DASHBOARDS * STREAMS).map(|i| i % STREAMS).collect();
        let chunks: Vec<Vec<usize>> = jobs
            .chunks(jobs.len().div_ceil(IN_FLIGHT))
            .map(<[usize]>::to_vec)
            .collect();
        let mut tasks = Vec::new();
        for chunk in chunks {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for s in chunk {
                    let (ms, _, tag) = b.get(s, None).await;
                    out.push((s, ms, tag));
                }
                out
            }));
        }
        for t in tasks {
            for (s, ms, tag) in t.await.unwrap() {
                plain.push(ms);
                etags[s] = tag;
            }
        }
        let round_secs = started.elapsed().as_secs_f64();
        // Revalidation: every dashboard again, with the ETag it holds.
        let mut tasks = Vec::new();
        for k in 0..IN_FLIGHT {
            let b = b.clone();
            let etags = etags.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in (k..DASHBOARDS * STREAMS).step_by(IN_FLIGHT) {
                    let s = i % STREAMS;
                    let (ms, status, _) = b.get(s, Some(&etags[s])).await;
                    assert_eq!(status, 304);
                    out.push(ms);
                }
                out
            }));
        }
        for t in tasks {
            reval.extend(t.await.unwrap());
        }
        println!(
            "pictures/round {round}: {} GETs in {round_secs:.2} s",
            DASHBOARDS * STREAMS
        );
    }
    report(
        "dashboards (100 × 100 GETs a round, 20 new pictures)",
        plain,
    );
    report("revalidate (If-None-Match → 304)", reval);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it too (quickly
    // enough: a few seconds).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}
