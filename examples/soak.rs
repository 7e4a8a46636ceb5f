//! Soak test (not a CI test): runs a livesnap binary, keeps a few real publishes going
//! with `ffmpeg -stream_loop -1 -re`, mixes in hostile peers, and samples the server's
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
use std::process::Stdio;
use std::time::{Duration, Instant};

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

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

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn handshake(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(&hs.generate_outbound_p0_and_p1().ok()?)
        .await
        .ok()?;
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        match hs.process_bytes(&buf[..n]).ok()? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                s.write_all(&response_bytes).await.ok()?
            }
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                s.write_all(&response_bytes).await.ok()?;
                return Some(s);
            }
        }
    }
}

/// Whether the server closes `s` within `limit` (reading and discarding what it sends).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut b = [0u8; 4096];
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_secs(1), s.read(&mut b)).await
        {
            return true;
        }
    }
    false
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
        let mut b = [0u8; 64];
        if matches!(
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        ) {
            closed += 1;
        }
    }
    // Random bytes after a valid handshake.
    if let Some(mut s) = handshake(addr).await {
        let junk: Vec<u8> = (0..4096).map(|_| rand() as u8).collect();
        let _ = s.write_all(&junk).await;
        closed += usize::from(closed_within(&mut s, Duration::from_secs(40)).await);
    }
    // A 16 MiB video message header, then silence.
    if let Some(mut s) = handshake(addr).await {
        let hdr = [0x06u8, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0];
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
    let sum = |prefix: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    (
        sum("livesnap_snapshots_taken_total"),
        sum("livesnap_snapshots_dropped_total"),
    )
}

fn publisher(fixture: &PathBuf, url: &str) -> Child {
    Command::new("ffmpeg")
        .args(["-v", "quiet", "-stream_loop", "-1", "-re", "-i"])
        .arg(fixture)
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg")
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = std::env::temp_dir().join(format!("livesnap-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (rtmp, http) = (free_addr(), free_addr());
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
    let mut pubs: Vec<Child> = (0..a.streams)
        .map(|i| publisher(&a.fixture, &format!("rtmp://{rtmp}/live/soak{i}")))
        .collect();
    let start = Instant::now();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut samples = Vec::new();
    let mut hostile_total = 0;
    let mut hostile_closed = 0;
    let mut next_sample = Instant::now();
    println!(
        "{:>8} {:>10} {:>10} {:>8} {:>10} {:>8}",
        "secs", "rss_kib", "hostile", "closed", "snapshots", "dropped"
    );
    while start.elapsed() < Duration::from_secs(a.secs) {
        hostile_total += 3;
        hostile_closed += hostile_round(rtmp, &mut seed).await;
        // Keep the publishers up (an ffmpeg that died is restarted).
        for (i, p) in pubs.iter_mut().enumerate() {
            if p.try_wait().ok().flatten().is_some() {
                *p = publisher(&a.fixture, &format!("rtmp://{rtmp}/live/soak{i}"));
            }
        }
        if Instant::now() >= next_sample {
            let rss = rss_kib(pid);
            let t = start.elapsed().as_secs();
            samples.push((t, rss));
            let (taken, dropped) = snapshot_counts(http).await;
            println!(
                "{t:>8} {rss:>10} {hostile_total:>10} {hostile_closed:>8} {taken:>10} {dropped:>8}"
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
    for p in pubs.iter_mut() {
        let _ = p.kill().await;
    }
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
