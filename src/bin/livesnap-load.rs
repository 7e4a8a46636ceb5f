//! `livesnap-load`: N concurrent RTMP publishes from one process, for load tests of
//! livesnap (or any RTMP server, e.g. nginx-rtmp, for comparison).
//!
//! Each stream replays one FLV fixture in real time, in a loop, with timestamps continued
//! across loops. The fixture is framed once at start: every audio/video message is chunked
//! at 4096 bytes into one shared buffer (payload with its type-3 continuation headers), so
//! sending a message is a 12-byte type-0 header built on the stack (timestamp and message
//! stream id patched in) plus a slice of that buffer in one vectored write. Nothing is
//! allocated per frame. Connect and publish go through rml_rtmp's client session, which
//! also answers the server's pings.
//!
//! Every second it prints the throughput, connections up and connection errors; every 10 s
//! and at the end it reads the server's `/metrics` (livesnap's Prometheus text) and prints
//! snapshots taken, dropped and failed against the snapshots due, computed here with
//! livesnap's own scheduler over the keyframe timestamps sent. See `docs/performance.md`.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use livesnap::media::flv::{self, FlvReader, PacketKind};
use livesnap::snapshot::scheduler::Scheduler;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};

/// Chunk size announced by the client session and used to pre-chunk the fixture.
const CHUNK_SIZE: usize = 4096;
/// Chunk stream ids, as ffmpeg uses them.
const CSID_AUDIO: u8 = 4;
const CSID_VIDEO: u8 = 6;
/// Time allowed for connect + handshake + publish.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(
    name = "livesnap-load",
    about = "N concurrent real-time RTMP publishes of one FLV fixture, with a per-second report"
)]
struct Args {
    /// Publish URL without the stream name: rtmp://HOST[:PORT]/APP.
    #[arg(long, default_value = "rtmp://127.0.0.1:1935/live")]
    url: String,
    /// Concurrent publishes (stream names PREFIX0 … PREFIX{N-1}).
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// FLV file with H.264 video (and optionally audio), replayed in a loop.
    #[arg(long)]
    fixture: PathBuf,
    /// Seconds to publish, counted from the first stream's start (ramp included).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seconds over which the streams start, evenly spaced.
    #[arg(long, default_value_t = 0.0)]
    ramp: f64,
    /// livesnap's metrics URL; empty to skip reading it (e.g. against nginx-rtmp).
    #[arg(long, default_value = "http://127.0.0.1:8935/metrics")]
    metrics: String,
    /// Stream name prefix.
    #[arg(long, default_value = "load")]
    prefix: String,
    /// Snapshot interval of the server's rule, for the count of snapshots due.
    #[arg(long, default_value_t = 5)]
    interval: u32,
    /// Seconds to wait after the last stream stops before the final metrics read.
    #[arg(long, default_value_t = 3)]
    settle: u64,
    /// Runtime threads; 1 (the default) runs everything on the calling thread.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print only the final summary (and the 10 s metric reads), not every second.
    #[arg(long)]
    quiet: bool,
}

/// One audio or video message of the fixture.
struct Frame {
    /// Timestamp relative to the fixture's first tag, in ms.
    ts: u32,
    type_id: u8,
    csid: u8,
    /// Payload length (what the type-0 header declares).
    len: u32,
    /// The chunked payload in `Replay::wire`.
    wire: Range<usize>,
    /// An AVC coded keyframe (what livesnap's scheduler looks at).
    keyframe: bool,
}

/// The fixture, framed once and shared by every stream.
struct Replay {
    wire: Bytes,
    frames: Vec<Frame>,
    /// Timestamp offset between two loops: last timestamp + one frame interval.
    period_ms: u32,
    bytes_per_loop: u64,
}

impl Replay {
    fn load(path: &PathBuf) -> Result<Replay, String> {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let reader =
            FlvReader::new(Bytes::from(data)).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut wire = Vec::new();
        let mut frames = Vec::new();
        let mut first = None;
        let mut last_video = (0u32, 0u32); // (previous video ts, smallest positive step)
        for tag in reader {
            let tag = tag.map_err(|e| format!("{}: {e}", path.display()))?;
            let (type_id, csid) = match tag.tag_type {
                8 => (8, CSID_AUDIO),
                9 => (9, CSID_VIDEO),
                _ => continue,
            };
            let t0 = *first.get_or_insert(tag.timestamp_ms);
            let ts = tag.timestamp_ms.wrapping_sub(t0);
            let keyframe = type_id == 9
                && flv::parse_video_tag(&tag.data)
                    .is_ok_and(|v| v.keyframe && v.kind == PacketKind::Nalus);
            if type_id == 9 {
                let step = ts.saturating_sub(last_video.0);
                if step > 0 && (last_video.1 == 0 || step < last_video.1) {
                    last_video.1 = step;
                }
                last_video.0 = ts;
            }
            let start = wire.len();
            for (i, piece) in tag.data.chunks(CHUNK_SIZE).enumerate() {
                if i > 0 {
                    wire.push(0xC0 | csid);
                }
                wire.extend_from_slice(piece);
            }
            frames.push(Frame {
                ts,
                type_id,
                csid,
                len: tag.data.len() as u32,
                wire: start..wire.len(),
                keyframe,
            });
        }
        let Some(last) = frames.last() else {
            return Err(format!("{}: no audio or video tags", path.display()));
        };
        if !frames.iter().any(|f| f.keyframe) {
            return Err(format!("{}: no H.264 keyframe", path.display()));
        }
        let step = if last_video.1 > 0 { last_video.1 } else { 33 };
        let period_ms = last.ts + step;
        let bytes_per_loop = frames.iter().map(|f| 12 + f.wire.len() as u64).sum();
        Ok(Replay {
            wire: Bytes::from(wire),
            frames,
            period_ms,
            bytes_per_loop,
        })
    }
}

/// Counters shared by every stream and the reporter.
#[derive(Default)]
struct Counters {
    bytes: AtomicU64,
    frames: AtomicU64,
    up: AtomicU64,
    started: AtomicU64,
    errors: AtomicU64,
    finished: AtomicU64,
    /// Snapshots due by the scheduler over the keyframes sent.
    due: AtomicU64,
    keyframes: AtomicU64,
    /// Largest delay of a frame behind its schedule in this second, µs (reset each report).
    lag_us: AtomicU64,
    /// Largest delay over the whole run, µs.
    max_lag_us: AtomicU64,
}

struct Target {
    addr: SocketAddr,
    tc_url: String,
    app: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("rtmp://")
        .ok_or_else(|| format!("--url {url:?}: must start with rtmp://"))?;
    let (host, app) = rest
        .split_once('/')
        .ok_or_else(|| format!("--url {url:?}: no app (rtmp://HOST[:PORT]/APP)"))?;
    let app = app.trim_end_matches('/');
    if app.is_empty() {
        return Err(format!("--url {url:?}: empty app"));
    }
    let host_port = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:1935")
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .map_err(|e| format!("--url {url:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {url:?}: {host_port} resolves to nothing"))?;
    Ok(Target {
        addr,
        tc_url: format!("rtmp://{host}/{app}"),
        app: app.to_string(),
    })
}

/// An established publish: the socket, the client session (for pings and the end), and
/// the message stream id the server gave.
struct Publish {
    sock: TcpStream,
    session: ClientSession,
    stream_id: u32,
}

async fn send_results(
    sock: &mut TcpStream,
    results: Vec<ClientSessionResult>,
    events: &mut Vec<ClientSessionEvent>,
) -> std::io::Result<()> {
    for r in results {
        match r {
            ClientSessionResult::OutboundResponse(p) => sock.write_all(&p.bytes).await?,
            ClientSessionResult::RaisedEvent(e) => events.push(e),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
    Ok(())
}

fn other(e: impl std::fmt::Debug) -> std::io::Error {
    std::io::Error::other(format!("{e:?}"))
}

async fn read_until(
    sock: &mut TcpStream,
    session: &mut ClientSession,
    events: &mut Vec<ClientSessionEvent>,
    want: impl Fn(&ClientSessionEvent) -> bool,
) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(i) = events.iter().position(&want) {
            events.drain(..=i);
            return Ok(());
        }
        // A refused publish arrives as an onStatus code the client session does not know
        // (NetStream.Publish.BadName, .Unauthorized, …).
        if let Some(e) = events.iter().find(|e| match e {
            ClientSessionEvent::ConnectionRequestRejected { .. } => true,
            ClientSessionEvent::UnhandleableOnStatusCode { code } => {
                code.contains(".Publish.") && code != "NetStream.Publish.Start"
            }
            _ => false,
        }) {
            return Err(other(e));
        }
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let results = session.handle_input(&buf[..n]).map_err(other)?;
        send_results(sock, results, events).await?;
    }
}

/// Connect, handshake, `connect`, `publish`, `@setDataFrame`.
async fn publish(target: &Target, stream: &str) -> std::io::Result<Publish> {
    let mut sock = TcpStream::connect(target.addr).await?;
    sock.set_nodelay(true)?;
    let mut hs = Handshake::new(PeerType::Client);
    sock.write_all(&hs.generate_outbound_p0_and_p1().map_err(other)?)
        .await?;
    let mut buf = [0u8; 4096];
    let rest = loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match hs.process_bytes(&buf[..n]).map_err(other)? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                sock.write_all(&response_bytes).await?
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                sock.write_all(&response_bytes).await?;
                break remaining_bytes;
            }
        }
    };
    let mut config = ClientSessionConfig::new();
    config.chunk_size = CHUNK_SIZE as u32;
    config.tc_url = Some(target.tc_url.clone());
    let (mut session, initial) = ClientSession::new(config).map_err(other)?;
    let mut events = Vec::new();
    send_results(&mut sock, initial, &mut events).await?;
    let results = session.handle_input(&rest).map_err(other)?;
    send_results(&mut sock, results, &mut events).await?;
    let r = session
        .request_connection(target.app.clone())
        .map_err(other)?;
    send_results(&mut sock, vec![r], &mut events).await?;
    read_until(&mut sock, &mut session, &mut events, |e| {
        matches!(e, ClientSessionEvent::ConnectionRequestAccepted)
    })
    .await?;
    let r = session
        .request_publishing(stream.to_string(), PublishRequestType::Live)
        .map_err(other)?;
    send_results(&mut sock, vec![r], &mut events).await?;
    read_until(&mut sock, &mut session, &mut events, |e| {
        matches!(e, ClientSessionEvent::PublishRequestAccepted)
    })
    .await?;
    // The metadata message is the first on its chunk stream, so its first chunk has a
    // type-0 header carrying the message stream id the server assigned.
    let mut meta = StreamMetadata::new();
    meta.encoder = Some("livesnap-load".into());
    let stream_id = match session.publish_metadata(&meta).map_err(other)? {
        ClientSessionResult::OutboundResponse(p) => {
            let b = &p.bytes;
            let id = if b.len() >= 12 && b[0] >> 6 == 0 && (b[0] & 0x3f) >= 2 {
                u32::from_le_bytes([b[8], b[9], b[10], b[11]])
            } else {
                1
            };
            sock.write_all(b).await?;
            id
        }
        _ => 1,
    };
    Ok(Publish {
        sock,
        session,
        stream_id,
    })
}

/// Writes `head` then `body` with vectored writes, without copying either.
async fn write_two<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut head: &[u8],
    mut body: &[u8],
) -> std::io::Result<()> {
    while !head.is_empty() || !body.is_empty() {
        let n = w
            .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        body = &body[n - from_head..];
    }
    Ok(())
}

fn update_max(a: &AtomicU64, v: u64) {
    a.fetch_max(v, Ordering::Relaxed);
}

/// One stream: publish, then replay until `end`.
async fn run_stream(
    target: Arc<Target>,
    replay: Arc<Replay>,
    counters: Arc<Counters>,
    name: String,
    start: Instant,
    end: Instant,
    interval: u32,
) {
    sleep_until(start).await;
    counters.started.fetch_add(1, Ordering::Relaxed);
    let mut p = match timeout(SETUP_TIMEOUT, publish(&target, &name)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("{name}: publish failed: {e}");
            return;
        }
        Err(_) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("{name}: publish not accepted within {SETUP_TIMEOUT:?}");
            return;
        }
    };
    counters.up.fetch_add(1, Ordering::Relaxed);
    let result = replay_loop(&mut p, &replay, &counters, end, interval).await;
    counters.up.fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok(()) => {
            counters.finished.fetch_add(1, Ordering::Relaxed);
            if let Ok(results) = p.session.stop_publishing() {
                let mut events = Vec::new();
                let _ = send_results(&mut p.sock, results, &mut events).await;
            }
            let _ = p.sock.shutdown().await;
        }
        Err(e) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("{name}: connection lost: {e}");
        }
    }
}

async fn replay_loop(
    p: &mut Publish,
    replay: &Replay,
    counters: &Counters,
    end: Instant,
    interval: u32,
) -> std::io::Result<()> {
    let base = Instant::now();
    let mut scheduler = Scheduler::new(interval);
    let mut buf = [0u8; 2048];
    let mut events = Vec::new();
    let (mut index, mut loop_offset) = (0usize, 0u32);
    let sid = p.stream_id.to_le_bytes();
    loop {
        let frame = &replay.frames[index];
        let ts = frame.ts + loop_offset;
        if ts >= 0x00FF_FFFF {
            return Err(other("timestamps reached 0xFFFFFF (over 4.6 h): stop"));
        }
        let due = base + Duration::from_millis(u64::from(ts));
        if due >= end {
            return Ok(());
        }
        tokio::select! {
            biased;
            r = p.sock.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                // Pings, acknowledgements and status messages; answers go out in order.
                if let Ok(results) = p.session.handle_input(&buf[..n]) {
                    send_results(&mut p.sock, results, &mut events).await?;
                    events.clear();
                }
                continue;
            }
            _ = sleep_until(due) => {}
        }
        let lag = Instant::now().saturating_duration_since(due).as_micros() as u64;
        update_max(&counters.lag_us, lag);
        let ts_b = ts.to_be_bytes();
        let len_b = frame.len.to_be_bytes();
        let head = [
            frame.csid,
            ts_b[1],
            ts_b[2],
            ts_b[3],
            len_b[1],
            len_b[2],
            len_b[3],
            frame.type_id,
            sid[0],
            sid[1],
            sid[2],
            sid[3],
        ];
        write_two(&mut p.sock, &head, &replay.wire[frame.wire.clone()]).await?;
        counters
            .bytes
            .fetch_add((head.len() + frame.wire.len()) as u64, Ordering::Relaxed);
        counters.frames.fetch_add(1, Ordering::Relaxed);
        if frame.keyframe {
            counters.keyframes.fetch_add(1, Ordering::Relaxed);
            if scheduler.on_keyframe(ts).is_some() {
                counters.due.fetch_add(1, Ordering::Relaxed);
            }
        }
        index += 1;
        if index == replay.frames.len() {
            index = 0;
            loop_offset += replay.period_ms;
        }
    }
}

/// The counters of livesnap's `/metrics` this tool reports.
#[derive(Debug, Default, Clone)]
struct Scrape {
    taken: f64,
    dropped: Vec<(String, f64)>,
    failed: Vec<(String, f64)>,
    keyframes: f64,
    publishes: f64,
    decode: (f64, f64),
    encode: (f64, f64),
    store: (f64, f64),
    /// (le, cumulative count) of `livesnap_snapshot_latency_seconds`, when exposed.
    latency: Vec<(f64, f64)>,
    latency_count: f64,
}

fn label(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("{key}=\""))? + key.len() + 2;
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_string())
}

fn parse_metrics(text: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let metric = name.split('{').next().unwrap_or(name);
        let reason = || label(name, "reason").unwrap_or_default();
        match metric {
            "livesnap_snapshots_taken_total" => s.taken = v,
            "livesnap_snapshots_dropped_total" => s.dropped.push((reason(), v)),
            "livesnap_snapshots_failed_total" => s.failed.push((reason(), v)),
            "livesnap_keyframes_total" => s.keyframes = v,
            "livesnap_publishes_active" => s.publishes = v,
            "livesnap_decode_seconds_sum" => s.decode.0 = v,
            "livesnap_decode_seconds_count" => s.decode.1 = v,
            "livesnap_encode_seconds_sum" => s.encode.0 = v,
            "livesnap_encode_seconds_count" => s.encode.1 = v,
            "livesnap_store_seconds_sum" => s.store.0 = v,
            "livesnap_store_seconds_count" => s.store.1 = v,
            "livesnap_snapshot_latency_seconds_bucket" => {
                if let Some(le) = label(name, "le").and_then(|l| l.parse::<f64>().ok()) {
                    s.latency.push((le, v));
                }
            }
            "livesnap_snapshot_latency_seconds_count" => s.latency_count = v,
            _ => {}
        }
    }
    s
}

/// GET over plain HTTP/1.0 (no chunked encoding), body as text.
async fn http_get(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// is supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut sock = timeout(Duration::from_secs(5), TcpStream::connect(host))
        .await
        .map_err(|_| format!("{url}: connect timed out"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    sock.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut raw = Vec::new();
    timeout(Duration::from_secs(10), sock.read_to_end(&mut raw))
        .await
        .map_err(|_| format!("{url}: no answer in 10 s"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: not an HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "{url}: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(body.to_string())
}

fn sum_reason(v: &[(String, f64)], reason: &str) -> f64 {
    v.iter().filter(|(r, _)| r == reason).map(|(_, x)| x).sum()
}

fn reasons_delta(now: &[(String, f64)], base: &[(String, f64)]) -> String {
    let mut parts: Vec<String> = now
        .iter()
        .map(|(r, v)| (r, v - sum_reason(base, r)))
        .filter(|(_, d)| *d > 0.0)
        .map(|(r, d)| format!("{r}={d}"))
        .collect();
    parts.sort();
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join(",")
    }
}

fn mean_ms(now: (f64, f64), base: (f64, f64)) -> f64 {
    let n = now.1 - base.1;
    if n > 0.0 {
        (now.0 - base.0) / n * 1e3
    } else {
        f64::NAN
    }
}

/// One line about snapshots since `base`.
fn snapshot_line(now: &Scrape, base: &Scrape, due: u64) -> String {
    let taken = now.taken - base.taken;
    let dropped: f64 = now.dropped.iter().map(|(_, v)| v).sum::<f64>()
        - base.dropped.iter().map(|(_, v)| v).sum::<f64>();
    let failed: f64 = now.failed.iter().map(|(_, v)| v).sum::<f64>()
        - base.failed.iter().map(|(_, v)| v).sum::<f64>();
    let late = if now.latency_count > 0.0 {
        let within = |s: &Scrape| {
            s.latency
                .iter()
                .filter(|(le, _)| *le <= 1.0 + 0.05)
                .map(|(_, c)| *c)
                .fold(0.0, f64::max)
        };
        let count = now.latency_count - base.latency_count;
        format!("{}", count - (within(now) - within(base)))
    } else {
        "n/a (no livesnap_snapshot_latency_seconds)".into()
    };
    format!(
        "snapshots due={due} taken={taken} ({:.1}%) dropped={dropped} [{}] failed={failed} [{}] late(>1s)={late} in_flight_or_missing={} | publishes={} keyframes={} | mean decode {:.2} ms, encode {:.2} ms, store {:.2} ms",
        if due > 0 { taken / due as f64 * 100.0 } else { 0.0 },
        reasons_delta(&now.dropped, &base.dropped),
        reasons_delta(&now.failed, &base.failed),
        due as f64 - taken - dropped - failed,
        now.publishes,
        now.keyframes - base.keyframes,
        mean_ms(now.decode, base.decode),
        mean_ms(now.encode, base.encode),
        mean_ms(now.store, base.store),
    )
}

/// CPU seconds (user + system) of this process so far, from /proc (100 ticks/s).
fn own_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

async fn run(args: Args) -> Result<(), String> {
    let target = Arc::new(parse_url(&args.url)?);
    let replay = Arc::new(Replay::load(&args.fixture)?);
    let mbit = replay.bytes_per_loop as f64 * 8.0 / (f64::from(replay.period_ms) / 1000.0) / 1e6;
    println!(
        "fixture {}: {} messages, {:.1} s per loop, {:.2} Mbit/s per stream; {} streams to {} over {:.1} s ramp, {} s",
        args.fixture.display(),
        replay.frames.len(),
        f64::from(replay.period_ms) / 1000.0,
        mbit,
        args.streams,
        args.url,
        args.ramp,
        args.duration
    );
    let metrics_url = (!args.metrics.is_empty()).then_some(args.metrics.clone());
    let base_scrape = match &metrics_url {
        Some(u) => match http_get(u).await {
            Ok(t) => Some(parse_metrics(&t)),
            Err(e) => {
                eprintln!("metrics: {e} (continuing without)");
                None
            }
        },
        None => None,
    };
    let counters = Arc::new(Counters::default());
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(args.duration);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.streams {
        let offset = if args.streams > 1 {
            args.ramp * i as f64 / args.streams as f64
        } else {
            0.0
        };
        tasks.spawn(run_stream(
            target.clone(),
            replay.clone(),
            counters.clone(),
            format!("{}{i}", args.prefix),
            t0 + Duration::from_secs_f64(offset),
            end,
            args.interval,
        ));
    }
    let cpu0 = own_cpu_secs();
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    let mut last_bytes = 0u64;
    let mut second = 0u64;
    let mut rates = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            done = tasks.join_next() => {
                if done.is_none() {
                    break;
                }
                continue;
            }
        }
        second += 1;
        let bytes = counters.bytes.load(Ordering::Relaxed);
        let rate = (bytes - last_bytes) as f64 * 8.0 / 1e6;
        last_bytes = bytes;
        rates.push(rate);
        let lag = counters.lag_us.swap(0, Ordering::Relaxed);
        update_max(&counters.max_lag_us, lag);
        if !args.quiet {
            println!(
                "t={second:>4}s up={}/{} errors={} tx={rate:.1} Mbit/s frames={} lag_max={:.1} ms",
                counters.up.load(Ordering::Relaxed),
                args.streams,
                counters.errors.load(Ordering::Relaxed),
                counters.frames.load(Ordering::Relaxed),
                lag as f64 / 1000.0
            );
        }
        if second.is_multiple_of(10) {
            if let (Some(u), Some(base)) = (&metrics_url, &base_scrape) {
                match http_get(u).await {
                    Ok(t) => println!(
                        "t={second:>4}s {}",
                        snapshot_line(
                            &parse_metrics(&t),
                            base,
                            counters.due.load(Ordering::Relaxed)
                        )
                    ),
                    Err(e) => println!("t={second:>4}s metrics: {e}"),
                }
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = match (cpu0, own_cpu_secs()) {
        (Some(a), Some(b)) => format!(
            "{:.2} s ({:.1}% of one core)",
            b - a,
            (b - a) / elapsed * 100.0
        ),
        _ => "n/a".into(),
    };
    rates.sort_by(f64::total_cmp);
    let median_rate = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    println!(
        "done: {:.1} s, streams started={} finished={} errors={}, sent {:.1} MB, median {median_rate:.1} Mbit/s, max frame lag {:.1} ms, keyframes sent={}, load generator CPU {cpu}",
        elapsed,
        counters.started.load(Ordering::Relaxed),
        counters.finished.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
        counters.bytes.load(Ordering::Relaxed) as f64 / 1e6,
        counters.max_lag_us.load(Ordering::Relaxed) as f64 / 1000.0,
        counters.keyframes.load(Ordering::Relaxed),
    );
    if let (Some(u), Some(base)) = (&metrics_url, &base_scrape) {
        tokio::time::sleep(Duration::from_secs(args.settle)).await;
        match http_get(u).await {
            Ok(t) => println!(
                "final: {}",
                snapshot_line(
                    &parse_metrics(&t),
                    base,
                    counters.due.load(Ordering::Relaxed)
                )
            ),
            Err(e) => println!("final: metrics: {e}"),
        }
    }
    if counters.errors.load(Ordering::Relaxed) > 0 {
        return Err(format!(
            "{} connection errors",
            counters.errors.load(Ordering::Relaxed)
        ));
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("livesnap-load: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("livesnap-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
