//! Measures `GET /api/v1/snapshots` for one stream with many stored snapshots.
//!
//! ```sh
//! cargo run --release --example query_bench -- [COUNT] [DIR]
//! ```
//!
//! Writes COUNT (default 100,000) small JPEGs as `live/cam/<UnixTimestamp>.jpg`, 5 s
//! apart, into an fs storage root under DIR (default: a temp dir; an existing DIR with
//! the files is reused), starts a real node on loopback over that root, and times
//! queries over HTTP: one-day and one-hour ranges at the start, middle and end, in
//! both orders, limit 100, with the folder's listing read afresh (cold) or reused
//! (warm), plus a full paging walk through one day.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use livesnap::clock::rfc3339;
use livesnap::config::Config;

const T0: u64 = 1_700_000_000;
const STEP: u64 = 5;

fn tiny_jpeg() -> Vec<u8> {
    let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
    c.set_size(16, 16);
    let mut c = c.start_compress(Vec::new()).expect("start");
    c.write_scanlines(&[90u8; 16 * 16 * 3]).expect("scanlines");
    c.finish().expect("finish")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args
        .next()
        .map_or(100_000, |a| a.parse().expect("COUNT is a number"));
    let (_tmp, dir) = match args.next() {
        Some(d) => (None, PathBuf::from(d)),
        None => {
            let t = tempfile::tempdir().expect("temp dir");
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let root = dir.join("snapshots");
    let folder = root.join("live/cam");
    std::fs::create_dir_all(&folder).expect("create folder");
    let present = std::fs::read_dir(&folder).map_or(0, |d| d.count() as u64);
    if present < count {
        let jpeg = tiny_jpeg();
        let t = Instant::now();
        for i in 0..count {
            std::fs::write(folder.join(format!("{}.jpg", T0 + i * STEP)), &jpeg).expect("write");
        }
        println!(
            "wrote {count} snapshots of {} bytes in {:.1?}",
            jpeg.len(),
            t.elapsed()
        );
    }

    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
[storage.default]
scheme = "fs"
root = "{}"
[[rules]]
domain = "*"
app = "live"
interval_secs = 5
storage = "default"
sequence_object = "{{AppName}}/{{StreamName}}/{{UnixTimestamp}}.jpg"
"#,
        root.display()
    );
    let settings = Config::parse(&text)
        .expect("parse")
        .validate()
        .expect("valid");
    let running = livesnap::server::start(settings).await.expect("start");
    let base = format!("http://{}", running.http_addr);
    let client = reqwest::Client::new();
    let last = T0 + (count - 1) * STEP;
    let url = |start: u64, end: u64, order: &str| {
        format!(
            "{base}/api/v1/snapshots?domain=bench&app=live&stream=cam&start_time={}&end_time={}&limit=100&order={order}",
            rfc3339(start),
            rfc3339(end)
        )
    };
    let ranges = [
        ("first day", T0, T0 + 86_400),
        (
            "middle day",
            T0 + (last - T0) / 2,
            T0 + (last - T0) / 2 + 86_400,
        ),
        ("last day", last + 1 - 86_400, last + 1),
        (
            "middle hour",
            T0 + (last - T0) / 2,
            T0 + (last - T0) / 2 + 3600,
        ),
    ];
    println!("{count} snapshots; each line: 30 queries, limit 100, median / p90 / max");
    println!("cold: the folder's modification time changes before each query (as while a");
    println!("stream is live), so its listing is read again; warm: the listing is reused");
    let mut touch = 0;
    for (name, start, end) in ranges {
        for (order, cold) in [
            ("asc", true),
            ("desc", true),
            ("asc", false),
            ("desc", false),
        ] {
            let mut times = Vec::new();
            let mut items = 0;
            for _ in 0..30 {
                if cold {
                    // A new modification time (old enough to be cached right away).
                    touch += 1;
                    let t = std::time::SystemTime::now() - Duration::from_secs(3600 + touch);
                    std::fs::File::open(&folder)
                        .and_then(|f| f.set_modified(t))
                        .expect("set the folder's time");
                }
                let t = Instant::now();
                let resp = client
                    .get(url(start, end, order))
                    .send()
                    .await
                    .expect("send");
                assert_eq!(resp.status().as_u16(), 200);
                let body: serde_json::Value =
                    serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
                times.push(t.elapsed());
                items = body["items"].as_array().map_or(0, |a| a.len());
            }
            times.sort();
            let mode = if cold { "cold" } else { "warm" };
            println!(
                "  {name:<12} {order:<4} {mode}: {:>7.1?} / {:>7.1?} / {:>7.1?}  ({items} items)",
                percentile(&times, 0.5),
                percentile(&times, 0.9),
                times[times.len() - 1]
            );
        }
    }
    // Paging through one whole day, 100 at a time.
    let (mut start, end) = (T0 + (last - T0) / 2, T0 + (last - T0) / 2 + 86_400);
    let t = Instant::now();
    let (mut pages, mut total) = (0, 0);
    loop {
        let resp = client
            .get(url(start, end, "asc"))
            .send()
            .await
            .expect("send");
        let body: serde_json::Value =
            serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
        pages += 1;
        total += body["items"].as_array().map_or(0, |a| a.len());
        match body["next_start_time"].as_str() {
            Some(next) => start = livesnap::api::params::parse_time("next", next).expect("time"),
            None => break,
        }
    }
    println!(
        "  paging one day: {total} items in {pages} pages, {:.2?} ({:.1?} per page)",
        t.elapsed(),
        t.elapsed() / pages
    );
    running.shutdown().await;
}
