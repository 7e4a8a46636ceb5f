//! `livesnap-load`: N concurrent RTMP publishes from one process, for load tests of
//! livesnap (or any RTMP server, e.g. nginx-rtmp, for comparison).
//!
//! Each stream replays one FLV fixture in real time, in a loop, with timestamps continued
//! across loops. The RTMP side is the library's client, `rtmp::client::Publisher`
//! (handshake, connect, publish, ping answers and acknowledgements, FCUnpublish and
//! deleteStream at the end). The fixture is chunked once at start: every audio/video
//! message becomes a `PreChunked` at the client's chunk size (4096), so sending a message is
//! a type-0 header built on the stack (timestamp and message stream id patched in) plus the
//! shared body, in vectored writes. Nothing is allocated per frame. Past 0xFFFFFF ms
//! (4.6 h) a multi-chunk message needs its extended timestamp repeated on every chunk, so
//! the client re-chunks it into its write queue (a copy).
//!
//! Between frames a stream waits in `Publisher::service`, so the server's pings are
//! answered and an error status or a close shows up at once.
//!
//! Every second it prints the throughput, connections up and connection errors; every 10 s
//! and at the end it reads the server's `/metrics` (livesnap's Prometheus text) and prints
//! snapshots taken, dropped and failed against the snapshots due, computed here with
//! livesnap's own scheduler over the keyframe timestamps sent. See `docs/performance.md`.
//!
//! With `--players N` it is also a player fleet: N library clients
//! (`rtmp::client::Player`, over TCP) play one stream (`--play-url`, by default the first
//! published stream) from `--players-delay` seconds on, count what they receive, and measure
//! each video frame's lag from the moment this process started sending it (stream 0 notes
//! the send time of every video frame in a fixed ring, keyed by timestamp) to the moment a
//! player has it whole. Lags go into a fixed histogram (0.1 ms buckets up to 5 s): p50, p99
//! and max every second and at the end. Nothing is allocated per frame beyond the client's
//! own receive buffer.
//!
//! With `--play-from rtmp://ORIGIN/APP` it measures a relay end to end instead: one player
//! per published stream plays `PREFIXi` back from the origin the server relays to, and each
//! video frame's lag is taken from the moment this process sent it on stream i to the
//! moment it arrived from the origin (matched by timestamp; every stream has its own ring).
//!
//! `rtmps://` URLs (publish, play, play-from) go over TLS (rustls): the system's trust
//! store, or only `--tls-ca-file`'s CA certificates, or `--insecure` (any certificate).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use livesnap::media::flv::{self, FlvReader, PacketKind};
use livesnap::rtmp::chunk_writer::PreChunked;
use livesnap::rtmp::client::{ClientError, ClientOptions, Endpoint, MediaKind, Player, Publisher};
use livesnap::snapshot::scheduler::Scheduler;
use rml_rtmp::rml_amf0::{self, Amf0Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::TlsConnector;

/// Chunk size announced by the client and used to pre-chunk the fixture.
const CHUNK_SIZE: u32 = 4096;
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
    /// Players to attach (a player fleet over TCP); 0 for none.
    #[arg(long, default_value_t = 0)]
    players: usize,
    /// What the players play: rtmp://HOST[:PORT]/APP/STREAM. Default: `--url` and the first
    /// published stream (`PREFIX0`); frame lags are measured only for that one.
    #[arg(long, default_value = "")]
    play_url: String,
    /// Seconds after the start before the first player connects (publishes first).
    #[arg(long, default_value_t = 2.0)]
    players_delay: f64,
    /// Seconds over which the players connect, evenly spaced.
    #[arg(long, default_value_t = 2.0)]
    players_ramp: f64,
    /// Play every published stream back from this server, rtmp://HOST[:PORT]/APP (the
    /// origin a relay pushes to): one player per stream, `--players-delay` seconds after its
    /// publish started, and each video frame's lag from its send here to its arrival there
    /// (matched by timestamp). Not with `--players`.
    #[arg(long, default_value = "")]
    play_from: String,
    /// For rtmps:// URLs: trust only the CA certificates of this PEM file (default: the
    /// system's trust store).
    #[arg(long)]
    tls_ca_file: Option<PathBuf>,
    /// For rtmps:// URLs: accept any server certificate (a self-signed test certificate).
    #[arg(long)]
    insecure: bool,
}

/// One audio or video message of the fixture.
struct Frame {
    /// Timestamp relative to the fixture's first tag, in ms.
    ts: u32,
    /// The message, chunked once; every stream shares its body.
    msg: PreChunked,
    /// An AVC coded keyframe (what livesnap's scheduler looks at).
    keyframe: bool,
    /// A video message (its send time is noted for the players' lag).
    video: bool,
}

/// The fixture, chunked once and shared by every stream.
struct Replay {
    frames: Vec<Frame>,
    /// Timestamp offset between two loops: last timestamp + one frame interval.
    period_ms: u32,
    /// Bytes on the wire per loop (12-byte type-0 headers included).
    bytes_per_loop: u64,
    /// The `@setDataFrame` sent after publish.
    metadata: Vec<u8>,
}

impl Replay {
    fn load(path: &PathBuf) -> Result<Replay, String> {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let reader =
            FlvReader::new(Bytes::from(data)).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut frames = Vec::new();
        let mut first = None;
        let mut last_video = (0u32, 0u32); // (previous video ts, smallest positive step)
        for tag in reader {
            let tag = tag.map_err(|e| format!("{}: {e}", path.display()))?;
            let Some(kind) =
                MediaKind::from_type_id(tag.tag_type).filter(|k| *k != MediaKind::Data)
            else {
                continue;
            };
            let t0 = *first.get_or_insert(tag.timestamp_ms);
            let ts = tag.timestamp_ms.wrapping_sub(t0);
            let keyframe = kind == MediaKind::Video
                && flv::parse_video_tag(&tag.data)
                    .is_ok_and(|v| v.keyframe && v.kind == PacketKind::Nalus);
            if kind == MediaKind::Video {
                let step = ts.saturating_sub(last_video.0);
                if step > 0 && (last_video.1 == 0 || step < last_video.1) {
                    last_video.1 = step;
                }
                last_video.0 = ts;
            }
            let msg = PreChunked::new(kind.csid(), kind.type_id(), &tag.data, CHUNK_SIZE)
                .map_err(|e| format!("{}: tag at {} ms: {e}", path.display(), ts))?;
            frames.push(Frame {
                ts,
                msg,
                keyframe,
                video: kind == MediaKind::Video,
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
        let bytes_per_loop = frames
            .iter()
            .map(|f| (f.msg.header(0, 1).len() + f.msg.body().len()) as u64)
            .sum();
        Ok(Replay {
            frames,
            period_ms,
            bytes_per_loop,
            metadata: metadata(),
        })
    }
}

/// `@setDataFrame onMetaData {encoder: "livesnap-load"}`.
fn metadata() -> Vec<u8> {
    let props = [(
        "encoder".to_string(),
        Amf0Value::Utf8String("livesnap-load".into()),
    )];
    let values = vec![
        Amf0Value::Utf8String("@setDataFrame".into()),
        Amf0Value::Utf8String("onMetaData".into()),
        Amf0Value::Object(props.into_iter().collect()),
    ];
    rml_amf0::serialize(&values).expect("short AMF0 strings")
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

/// Slots of the send-time ring: one per timestamp millisecond modulo this, so any two
/// video frames less than 16 s apart have distinct slots.
const SENT_SLOTS: usize = 16384;
/// Lag histogram: 0.1 ms buckets up to 5 s, the last one for anything later.
const LAG_BUCKET_US: u64 = 100;
const LAG_BUCKETS: usize = 50_001;

/// When one stream sent each video frame, for the players' lag measurement.
struct SendTimes {
    t0: std::time::Instant,
    /// `timestamp << 32 | µs since t0 (mod 2^32)`; 0 when empty.
    slots: Box<[AtomicU64]>,
}

impl SendTimes {
    fn new(t0: std::time::Instant) -> SendTimes {
        SendTimes {
            t0,
            slots: (0..SENT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn now_us(&self) -> u32 {
        // Wraps after 71 min; lags are computed modulo 2^32 µs too.
        self.t0.elapsed().as_micros() as u32
    }

    fn note(&self, ts: u32) {
        let v = (u64::from(ts) << 32) | u64::from(self.now_us());
        self.slots[ts as usize % SENT_SLOTS].store(v, Ordering::Relaxed);
    }

    /// When `ts` was sent (µs since t0) and how long ago, if this stream sent it recently.
    fn lag_us(&self, ts: u32) -> Option<(u32, u64)> {
        let v = self.slots[ts as usize % SENT_SLOTS].load(Ordering::Relaxed);
        if v == 0 || (v >> 32) as u32 != ts {
            return None;
        }
        let at = v as u32;
        Some((at, u64::from(self.now_us().wrapping_sub(at))))
    }
}

/// A fixed histogram of lags (no allocation per sample).
struct LagHistogram {
    buckets: Box<[AtomicU64]>,
    max_us: AtomicU64,
}

impl LagHistogram {
    fn new() -> LagHistogram {
        LagHistogram {
            buckets: (0..LAG_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }

    fn record(&self, us: u64) {
        let i = ((us / LAG_BUCKET_US) as usize).min(LAG_BUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Moves this histogram's counts into `into` (and returns this one's summary).
    fn drain_into(&self, into: &LagHistogram) -> LagSummary {
        let mut counts = Vec::with_capacity(LAG_BUCKETS);
        for (b, to) in self.buckets.iter().zip(into.buckets.iter()) {
            let c = b.swap(0, Ordering::Relaxed);
            to.fetch_add(c, Ordering::Relaxed);
            counts.push(c);
        }
        let max = self.max_us.swap(0, Ordering::Relaxed);
        into.max_us.fetch_max(max, Ordering::Relaxed);
        LagSummary::of(&counts, max)
    }

    fn summary(&self) -> LagSummary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        LagSummary::of(&counts, self.max_us.load(Ordering::Relaxed))
    }
}

/// Count, p50, p99 (upper bucket bounds) and max of a lag histogram, in ms.
struct LagSummary {
    count: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl LagSummary {
    fn of(counts: &[u64], max_us: u64) -> LagSummary {
        let count: u64 = counts.iter().sum();
        let quantile = |q: f64| {
            if count == 0 {
                return f64::NAN;
            }
            let rank = ((count as f64 * q).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return ((i as u64 + 1) * LAG_BUCKET_US).min(max_us.max(1)) as f64 / 1000.0;
                }
            }
            max_us as f64 / 1000.0
        };
        LagSummary {
            count,
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            max_ms: max_us as f64 / 1000.0,
        }
    }
}

impl std::fmt::Display for LagSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "frame lag p50={:.1} ms p99={:.1} ms max={:.1} ms (n={})",
            self.p50_ms, self.p99_ms, self.max_ms, self.count
        )
    }
}

/// Counters of the player fleet.
struct PlayerCounters {
    up: AtomicU64,
    connected: AtomicU64,
    /// Players that could not connect, or whose play failed or ended before the end.
    failed: AtomicU64,
    closed_early: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
    video: AtomicU64,
    /// Video frames whose send time was not found (another stream, or too old).
    unmatched: AtomicU64,
    /// Video frames sent before their player's play started (the group of pictures a
    /// joining player gets at once): received, not in the lag histogram.
    backlog: AtomicU64,
    /// This second's lags; drained into `total` by the reporter.
    second: LagHistogram,
    total: LagHistogram,
}

impl PlayerCounters {
    fn new() -> PlayerCounters {
        PlayerCounters {
            up: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            closed_early: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            video: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            second: LagHistogram::new(),
            total: LagHistogram::new(),
        }
    }
}

/// What one player received, for the final spread over players.
#[derive(Debug, Default, Clone, Copy)]
struct PlayerTally {
    messages: u64,
    bytes: u64,
}

/// Where to publish: the parsed URL, the address it resolved to (once, at start) and, for
/// `rtmps://`, the TLS client.
struct Target {
    addr: SocketAddr,
    endpoint: Endpoint,
    tls: Option<TlsConnector>,
}

/// How `rtmps://` servers are trusted.
#[derive(Debug, Clone, Default)]
struct TlsOptions {
    ca_file: Option<PathBuf>,
    insecure: bool,
}

fn parse_url(url: &str, tls: &TlsOptions) -> Result<Target, String> {
    let endpoint = Endpoint::parse(url).map_err(|e| format!("--url: {e}"))?;
    let authority = endpoint.authority();
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&authority)
        .map_err(|e| format!("--url {url:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {url:?}: {authority} resolves to nothing"))?;
    let tls = if endpoint.tls {
        Some(tls_connector(tls).map_err(|e| format!("--url {url:?}: {e}"))?)
    } else {
        None
    };
    Ok(Target {
        addr,
        endpoint,
        tls,
    })
}

/// The TLS client for `rtmps://`: the system's roots, a CA file's, or (`--insecure`) none.
fn tls_connector(opts: &TlsOptions) -> Result<TlsConnector, String> {
    if opts.insecure {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        return Ok(TlsConnector::from(Arc::new(config)));
    }
    livesnap::relay::tls::connector(opts.ca_file.as_deref())
        .map_err(|e| format!("--tls-ca-file: {e}"))
}

/// `--insecure`: any certificate, any name (the handshake's signatures are still checked,
/// so the key exchange is real). For test servers only.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client connection: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Conn = Box<dyn Io>;

/// TCP (no Nagle) to the target, then TLS for `rtmps://`.
async fn connect(target: &Target) -> Result<Conn, String> {
    let io_err = |e| format!("connect to {}: {e}", target.addr);
    let sock = TcpStream::connect(target.addr).await.map_err(io_err)?;
    sock.set_nodelay(true).map_err(io_err)?;
    match &target.tls {
        None => Ok(Box::new(sock)),
        Some(c) => livesnap::relay::tls::connect(c, &target.endpoint.host, sock)
            .await
            .map(|s| Box::new(s) as Conn)
            .map_err(|e| format!("TLS to {} ({}): {e}", target.addr, target.endpoint.host)),
    }
}

/// Connect, handshake, `connect`, `publish`, `@setDataFrame`.
async fn publish(
    target: &Target,
    stream: &str,
    metadata: &[u8],
) -> Result<Publisher<Conn>, String> {
    let sock = connect(target).await?;
    let opts = ClientOptions {
        chunk_size: CHUNK_SIZE,
        ..ClientOptions::default()
    };
    let client_err = |e: ClientError| e.to_string();
    let mut p = Publisher::publish(sock, &target.endpoint, stream, opts)
        .await
        .map_err(client_err)?;
    p.send_data(0, metadata).await.map_err(client_err)?;
    Ok(p)
}

fn update_max(a: &AtomicU64, v: u64) {
    a.fetch_max(v, Ordering::Relaxed);
}

/// When one stream publishes.
struct Window {
    start: Instant,
    end: Instant,
}

/// One stream: publish, then replay until `end`; `sent` notes its video frames' send times.
async fn run_stream(
    target: Arc<Target>,
    replay: Arc<Replay>,
    counters: Arc<Counters>,
    name: String,
    Window { start, end }: Window,
    interval: u32,
    sent: Option<Arc<SendTimes>>,
) {
    sleep_until(start).await;
    counters.started.fetch_add(1, Ordering::Relaxed);
    let mut p = match timeout(SETUP_TIMEOUT, publish(&target, &name, &replay.metadata)).await {
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
    let result = replay_loop(&mut p, &replay, &counters, end, interval, sent.as_deref()).await;
    counters.up.fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok(()) => {
            counters.finished.fetch_add(1, Ordering::Relaxed);
            // FCUnpublish, deleteStream, close; a server that does not close in time
            // still counts as finished.
            if let Err(e) = p.finish().await {
                eprintln!("{name}: finish: {e}");
            }
        }
        Err(e) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("{name}: connection lost: {e}");
        }
    }
}

async fn replay_loop(
    p: &mut Publisher<Conn>,
    replay: &Replay,
    counters: &Counters,
    end: Instant,
    interval: u32,
    sent: Option<&SendTimes>,
) -> Result<(), String> {
    let base = Instant::now();
    let mut scheduler = Scheduler::new(interval);
    let (mut index, mut loop_offset) = (0usize, 0u32);
    let mut bytes_out = p.stats().bytes_out;
    loop {
        let frame = &replay.frames[index];
        let ts = frame
            .ts
            .checked_add(loop_offset)
            .ok_or("timestamps reached 2^32 ms (49 days): stop")?;
        let due = base + Duration::from_millis(u64::from(ts));
        if due >= end {
            return Ok(());
        }
        tokio::select! {
            biased;
            // Pings, acknowledgements and status messages; answers go out in order.
            r = p.service() => {
                r.map_err(|e| e.to_string())?;
                continue;
            }
            _ = sleep_until(due) => {}
        }
        let lag = Instant::now().saturating_duration_since(due).as_micros() as u64;
        update_max(&counters.lag_us, lag);
        if let Some(sent) = sent.filter(|_| frame.video) {
            sent.note(ts);
        }
        p.send_prechunked(&frame.msg, ts)
            .await
            .map_err(|e| e.to_string())?;
        let now_out = p.stats().bytes_out;
        counters
            .bytes
            .fetch_add(now_out - bytes_out, Ordering::Relaxed);
        bytes_out = now_out;
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
            loop_offset = loop_offset.saturating_add(replay.period_ms);
        }
    }
}

/// Where the players connect and what they play.
struct PlayTarget {
    target: Target,
    stream: String,
}

/// `rtmp://HOST[:PORT]/APP/STREAM`: the last path segment is the stream.
fn parse_play_url(url: &str, tls: &TlsOptions) -> Result<PlayTarget, String> {
    let (base, stream) = url
        .rsplit_once('/')
        .filter(|(b, s)| !s.is_empty() && b.matches('/').count() >= 3)
        .ok_or_else(|| format!("--play-url {url:?}: expected rtmp://HOST[:PORT]/APP/STREAM"))?;
    let target = parse_url(base, tls).map_err(|e| e.replace("--url", "--play-url"))?;
    Ok(PlayTarget {
        target,
        stream: stream.to_string(),
    })
}

async fn open_player(play: &PlayTarget) -> Result<Player<Conn>, String> {
    let sock = connect(&play.target).await?;
    Player::play(
        sock,
        &play.target.endpoint,
        &play.stream,
        ClientOptions::default(),
    )
    .await
    .map_err(|e| e.to_string())
}

/// One player: play from `start` until `end`, counting what arrives.
async fn run_player(
    play: Arc<PlayTarget>,
    counters: Arc<PlayerCounters>,
    sent: Option<Arc<SendTimes>>,
    id: usize,
    start: Instant,
    end: Instant,
) -> PlayerTally {
    let mut tally = PlayerTally::default();
    sleep_until(start).await;
    let mut p = match timeout(SETUP_TIMEOUT, open_player(&play)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            eprintln!("player {id}: play failed: {e}");
            return tally;
        }
        Err(_) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            eprintln!("player {id}: play not started within {SETUP_TIMEOUT:?}");
            return tally;
        }
    };
    counters.connected.fetch_add(1, Ordering::Relaxed);
    counters.up.fetch_add(1, Ordering::Relaxed);
    let joined_us = sent.as_ref().map_or(0, |s| s.now_us());
    let outcome = loop {
        let media = tokio::select! {
            r = p.recv() => r,
            _ = sleep_until(end) => break Ok(()),
        };
        match media {
            Ok(Some(m)) => {
                tally.messages += 1;
                tally.bytes += m.payload.len() as u64;
                counters.messages.fetch_add(1, Ordering::Relaxed);
                counters
                    .bytes
                    .fetch_add(m.payload.len() as u64, Ordering::Relaxed);
                if m.kind == MediaKind::Video {
                    counters.video.fetch_add(1, Ordering::Relaxed);
                    match sent.as_ref().and_then(|s| s.lag_us(m.timestamp)) {
                        // Sent before the play started (µs since t0, modulo 2^32).
                        Some((at, _)) if (at.wrapping_sub(joined_us) as i32) < 0 => {
                            counters.backlog.fetch_add(1, Ordering::Relaxed);
                        }
                        Some((_, lag)) => counters.second.record(lag),
                        None => {
                            counters.unmatched.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            // The stream ended (its publisher stopped) before our end.
            Ok(None) if Instant::now() + Duration::from_secs(1) < end => {
                break Err("the server ended the play".to_string())
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.to_string()),
        }
    };
    counters.up.fetch_sub(1, Ordering::Relaxed);
    match outcome {
        Ok(()) => {
            // deleteStream and close; the server may have closed first (its publisher
            // ended at the same moment), which is no failure of the play.
            let _ = p.close().await;
        }
        Err(e) => {
            counters.closed_early.fetch_add(1, Ordering::Relaxed);
            eprintln!("player {id}: closed early: {e}");
        }
    }
    tally
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
    let tls = TlsOptions {
        ca_file: args.tls_ca_file.clone(),
        insecure: args.insecure,
    };
    let target = Arc::new(parse_url(&args.url, &tls)?);
    if !args.play_from.is_empty() && args.players > 0 {
        return Err("--play-from and --players: one player fleet at a time".into());
    }
    // --play-from: one player per stream, at the other server.
    let play_from = if args.play_from.is_empty() {
        None
    } else {
        let t = parse_url(&args.play_from, &tls).map_err(|e| e.replace("--url", "--play-from"))?;
        Some(Arc::new(t))
    };
    let n_players = if play_from.is_some() {
        args.streams
    } else {
        args.players
    };
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
    let own_stream = format!("{}/{}0", args.url.trim_end_matches('/'), args.prefix);
    let play = if args.players == 0 {
        None
    } else if args.play_url.is_empty() {
        Some(parse_play_url(&own_stream, &tls)?)
    } else {
        Some(parse_play_url(&args.play_url, &tls)?)
    };
    // Send times: of stream 0 when the players play it; of every stream with --play-from.
    let sent: Vec<Arc<SendTimes>> = if play_from.is_some() {
        (0..args.streams)
            .map(|_| Arc::new(SendTimes::new(t0.into_std())))
            .collect()
    } else if play.is_some()
        && args.streams > 0
        && (args.play_url.is_empty() || args.play_url == own_stream)
    {
        vec![Arc::new(SendTimes::new(t0.into_std()))]
    } else {
        Vec::new()
    };
    let player_counters = Arc::new(PlayerCounters::new());
    let mut tasks = tokio::task::JoinSet::new();
    let mut players = tokio::task::JoinSet::new();
    if let Some(from) = &play_from {
        println!(
            "{} players of rtmp://{}/{}/{}0… ({} s after each publish starts), frame lag measured",
            args.streams,
            from.endpoint.authority(),
            from.endpoint.app,
            args.prefix,
            args.players_delay,
        );
    }
    for i in 0..args.streams {
        let offset = if args.streams > 1 {
            args.ramp * i as f64 / args.streams as f64
        } else {
            0.0
        };
        let start = t0 + Duration::from_secs_f64(offset);
        let name = format!("{}{i}", args.prefix);
        if let Some(from) = &play_from {
            let play = PlayTarget {
                target: Target {
                    addr: from.addr,
                    endpoint: from.endpoint.clone(),
                    tls: from.tls.clone(),
                },
                stream: name.clone(),
            };
            players.spawn(run_player(
                Arc::new(play),
                player_counters.clone(),
                sent.get(i).cloned(),
                i,
                start + Duration::from_secs_f64(args.players_delay),
                end,
            ));
        }
        tasks.spawn(run_stream(
            target.clone(),
            replay.clone(),
            counters.clone(),
            name,
            Window { start, end },
            args.interval,
            sent.get(i).cloned(),
        ));
    }
    if let Some(play) = play {
        let sent = sent.first().cloned();
        println!(
            "{} players of rtmp://{}/{}/{} from t={:.1}s over {:.1} s{}",
            args.players,
            play.target.endpoint.authority(),
            play.target.endpoint.app,
            play.stream,
            args.players_delay,
            args.players_ramp,
            if sent.is_some() {
                ", frame lag measured"
            } else {
                ", frame lag not measured (not this process's stream 0)"
            }
        );
        let play = Arc::new(play);
        for i in 0..args.players {
            let offset = args.players_delay + args.players_ramp * i as f64 / args.players as f64;
            players.spawn(run_player(
                play.clone(),
                player_counters.clone(),
                sent.clone(),
                i,
                t0 + Duration::from_secs_f64(offset),
                end,
            ));
        }
    }
    let mut tallies = Vec::with_capacity(n_players);
    let mut last_rx = 0u64;
    let mut last_msgs = 0u64;
    let cpu0 = own_cpu_secs();
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    let mut last_bytes = 0u64;
    let mut second = 0u64;
    let mut rates = Vec::new();
    loop {
        if tasks.is_empty() && players.is_empty() {
            break;
        }
        tokio::select! {
            _ = tick.tick() => {}
            Some(_) = tasks.join_next() => continue,
            Some(t) = players.join_next() => {
                if let Ok(t) = t {
                    tallies.push(t);
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
        let second_lags = player_counters.second.drain_into(&player_counters.total);
        if n_players > 0 && !args.quiet {
            let rx = player_counters.bytes.load(Ordering::Relaxed);
            let msgs = player_counters.messages.load(Ordering::Relaxed);
            println!(
                "t={second:>4}s players up={}/{} failed={} closed_early={} rx={:.1} Mbit/s msgs/s={} {second_lags}",
                player_counters.up.load(Ordering::Relaxed),
                n_players,
                player_counters.failed.load(Ordering::Relaxed),
                player_counters.closed_early.load(Ordering::Relaxed),
                (rx - last_rx) as f64 * 8.0 / 1e6,
                msgs - last_msgs,
            );
            last_rx = rx;
            last_msgs = msgs;
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
    if n_players > 0 {
        player_counters.second.drain_into(&player_counters.total);
        let mut per: Vec<u64> = tallies.iter().map(|t| t.messages).collect();
        per.sort_unstable();
        let at = |q: f64| {
            per.get(((per.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        let bytes: u64 = tallies.iter().map(|t| t.bytes).sum();
        println!(
            "players: {} of {} connected, failed={} closed_early={}; messages per player min={} median={} max={}; received {:.1} MB ({} video frames, {} sent before their player joined, {} without a send time); {}",
            player_counters.connected.load(Ordering::Relaxed),
            n_players,
            player_counters.failed.load(Ordering::Relaxed),
            player_counters.closed_early.load(Ordering::Relaxed),
            at(0.0),
            at(0.5),
            at(1.0),
            bytes as f64 / 1e6,
            player_counters.video.load(Ordering::Relaxed),
            player_counters.backlog.load(Ordering::Relaxed),
            player_counters.unmatched.load(Ordering::Relaxed),
            player_counters.total.summary(),
        );
    }
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
    let lost = player_counters.failed.load(Ordering::Relaxed)
        + player_counters.closed_early.load(Ordering::Relaxed);
    if lost > 0 {
        return Err(format!("{lost} players failed or closed early"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_percentiles_come_from_the_histogram() {
        let second = LagHistogram::new();
        let total = LagHistogram::new();
        // 1 ms … 100 ms, one each.
        for ms in 1..=100u64 {
            second.record(ms * 1000);
        }
        let s = second.drain_into(&total);
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.1).abs() < 0.2, "p50 {}", s.p50_ms);
        assert!((s.p99_ms - 99.1).abs() < 0.2, "p99 {}", s.p99_ms);
        assert_eq!(s.max_ms, 100.0);
        // Drained into the run's total, and this second's is empty again.
        assert_eq!(second.summary().count, 0);
        assert_eq!(total.summary().count, 100);
        // Beyond the last bucket: counted, reported as the max.
        total.record(60_000_000);
        let t = total.summary();
        assert_eq!(t.count, 101);
        assert_eq!(t.max_ms, 60_000.0);
    }

    #[test]
    fn a_send_time_is_found_only_for_its_own_timestamp() {
        let sent = SendTimes::new(std::time::Instant::now());
        sent.note(33);
        let (at, lag) = sent.lag_us(33).expect("noted");
        assert!(lag < 10_000_000, "lag {lag} µs");
        assert!(at <= sent.now_us());
        // Same slot, another timestamp (a later loop): not this frame's send time.
        assert_eq!(sent.lag_us(33 + SENT_SLOTS as u32), None);
        assert_eq!(sent.lag_us(34), None);
        // The newest note of a slot wins.
        sent.note(33 + SENT_SLOTS as u32);
        assert!(sent.lag_us(33).is_none());
        assert!(sent.lag_us(33 + SENT_SLOTS as u32).is_some());
    }

    #[test]
    fn a_play_url_names_app_and_stream() {
        let p = parse_play_url("rtmp://127.0.0.1:19450/live/s0", &TlsOptions::default()).unwrap();
        assert_eq!(p.stream, "s0");
        assert_eq!(p.target.endpoint.app, "live");
        assert_eq!(p.target.addr.port(), 19450);
        let e = parse_play_url("rtmp://127.0.0.1:19450/live", &TlsOptions::default())
            .err()
            .unwrap();
        assert!(e.contains("--play-url"), "{e}");
        assert!(parse_play_url("rtmp://127.0.0.1:19450/live/", &TlsOptions::default()).is_err());
    }
}
