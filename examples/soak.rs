//! Soak test (not a CI test): runs a livesnap binary, keeps a few real-time publishes
//! going (the library's RTMP client replaying a fixture in a loop, timestamps continued,
//! reconnecting when a publish fails), mixes in hostile peers, and samples the server's
//! RSS every interval. Memory must stay flat.
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example soak -- --bin target/release/livesnap --secs 3600
//! ```
//! Options: `--bin PATH` (default target/release/livesnap), `--secs N` (default 3600),
//! `--streams N` (default 4), `--sample N` seconds between RSS samples (default 30),
//! `--fixture PATH` (default fixtures/high_1280x720_bframes_aac.flv).
//! Everything runs on 127.0.0.1 and stops by itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use livesnap::rtmp::client::ClientOptions;
use livesnap::testing::probe::{free_addr, metric_sum, rss_bytes};
use livesnap::testing::replay::{self, Recording, ReplayOptions};
use livesnap::testing::wire::{chunk_header, handshake, read_until_closed};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::process::Command;

struct Args {
    bin: PathBuf,
    secs: u64,
    streams: usize,
    sample: u64,
    fixture: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        bin: "target/release/livesnap".into(),
        secs: 3600,
        streams: 4,
        sample: 30,
        fixture: "fixtures/high_1280x720_bframes_aac.flv".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--bin" => a.bin = v.into(),
            "--secs" => a.secs = v.parse().expect("--secs N"),
            "--streams" => a.streams = v.parse().expect("--streams N"),
            "--sample" => a.sample = v.parse().expect("--sample N"),
            "--fixture" => a.fixture = v.into(),
            _ => panic!("unknown option {k}"),
        }
    }
    a
}

/// A connection to `addr` past the RTMP handshake, ready for anything.
async fn handshaken(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    tokio::time::timeout(Duration::from_secs(10), handshake(&mut s))
        .await
        .ok()?
        .ok()?;
    Some(s)
}

/// Whether the server closes `s` within `limit` (reading and discarding what it sends).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    read_until_closed(s, limit).await.is_some()
}

/// One round of hostile peers; returns how many the server closed.
async fn hostile_round(addr: SocketAddr, seed: &mut u64) -> usize {
    let mut rand = move || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let mut closed = 0;
    // HTTP on the RTMP port.
    if let Ok(mut s) = TcpStream::connect(addr).await {
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        closed += usize::from(closed_within(&mut s, Duration::from_secs(5)).await);
    }
    // Random bytes after a valid handshake.
    if let Some(mut s) = handshaken(addr).await {
        let junk: Vec<u8> = (0..4096).map(|_| rand() as u8).collect();
        let _ = s.write_all(&junk).await;
        closed += usize::from(closed_within(&mut s, Duration::from_secs(40)).await);
    }
    // A 16 MiB video message header, then silence.
    if let Some(mut s) = handshaken(addr).await {
        let hdr = chunk_header(0, 6, 0, 0x00FF_FFFF, 9, 1);
        let _ = s.write_all(&hdr).await;
        closed += usize::from(closed_within(&mut s, Duration::from_secs(40)).await);
    }
    closed
}

/// (snapshots taken, snapshots dropped) from the node's /metrics.
async fn snapshot_counts(http: SocketAddr) -> (u64, u64) {
    let Ok(resp) = reqwest::get(format!("http://{http}/metrics")).await else {
        return (0, 0);
    };
    let text = resp.text().await.unwrap_or_default();
    (
        metric_sum(&text, "livesnap_snapshots_taken_total") as u64,
        metric_sum(&text, "livesnap_snapshots_dropped_total") as u64,
    )
}

/// Publishes `rec` under `url` in real time, in a loop, for as long as the task lives;
/// a publish that fails is started again a second later (counted in `restarts`).
async fn publisher(url: String, key: String, rec: Arc<Recording>, restarts: Arc<AtomicU64>) {
    let forever = ReplayOptions {
        loops: 0,
        ..ReplayOptions::default()
    };
    loop {
        let error = match replay::connect(&url, &key, ClientOptions::default()).await {
            Ok(mut p) => match replay::replay(&mut p, &rec, forever).await {
                Ok(sent) => format!("replay ended after {} frames", sent.frames),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        restarts.fetch_add(1, Ordering::Relaxed);
        eprintln!("{key}: {error}; publishing again in 1 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = std::env::temp_dir().join(format!("livesnap-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rec = Arc::new(Recording::load(&a.fixture).unwrap_or_else(|e| panic!("--fixture: {e}")));
    let (rtmp, http) = (free_addr().expect("bind"), free_addr().expect("bind"));
    let config = dir.join("soak.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nrtmp_listen = \"{rtmp}\"\nhttp_listen = \"{http}\"\n\
             [storage.default]\nscheme = \"fs\"\nroot = \"{}\"\n\
             [[rules]]\ndomain = \"*\"\napp = \"*\"\ninterval_secs = 5\nstorage = \"default\"\n\
             overwrite_object = \"{{AppName}}/{{StreamName}}.jpg\"\n",
            dir.join("snapshots").display()
        ),
    )
    .unwrap();
    let mut server = Command::new(&a.bin)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start livesnap");
    let pid = server.id().expect("pid");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarts = Arc::new(AtomicU64::new(0));
    let mut pubs = tokio::task::JoinSet::new();
    for i in 0..a.streams {
        pubs.spawn(publisher(
            format!("rtmp://{rtmp}/live"),
            format!("soak{i}"),
            rec.clone(),
            restarts.clone(),
        ));
    }
    let start = Instant::now();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut samples = Vec::new();
    let mut hostile_total = 0;
    let mut hostile_closed = 0;
    let mut next_sample = Instant::now();
    println!(
        "{:>8} {:>10} {:>10} {:>8} {:>10} {:>8} {:>9}",
        "secs", "rss_kib", "hostile", "closed", "snapshots", "dropped", "restarts"
    );
    while start.elapsed() < Duration::from_secs(a.secs) {
        hostile_total += 3;
        hostile_closed += hostile_round(rtmp, &mut seed).await;
        if Instant::now() >= next_sample {
            let rss = rss_bytes(pid).unwrap_or(0) / 1024;
            let t = start.elapsed().as_secs();
            samples.push((t, rss));
            let (taken, dropped) = snapshot_counts(http).await;
            let restarts = restarts.load(Ordering::Relaxed);
            println!(
                "{t:>8} {rss:>10} {hostile_total:>10} {hostile_closed:>8} {taken:>10} {dropped:>8} {restarts:>9}"
            );
            next_sample += Duration::from_secs(a.sample);
        }
        // A hostile round a second: a soak, not a flood.
        tokio::time::sleep(Duration::from_secs(1)).await;
        if server.try_wait().ok().flatten().is_some() {
            println!("livesnap exited: see {}", dir.join("server.log").display());
            std::process::exit(1);
        }
    }
    pubs.shutdown().await;
    let _ = server.kill().await;
    // Flatness: the second half's maximum against the first half's.
    let half = samples.len() / 2;
    let max = |s: &[(u64, u64)]| s.iter().map(|x| x.1).max().unwrap_or(0);
    let (first, second) = (max(&samples[..half.max(1)]), max(&samples[half..]));
    println!(
        "RSS max first half {first} KiB, second half {second} KiB ({:+.1}%); hostile peers {hostile_total}, closed by the server {hostile_closed}",
        (second as f64 - first as f64) * 100.0 / first.max(1) as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
