//! Test harness: a real livesnap node on 127.0.0.1:0 writing to a temporary folder,
//! and a real RTMP publisher (rml_rtmp's client session) that replays FLV fixtures.
#![allow(dead_code)]

pub mod logs;
pub mod moto;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use livesnap::config::Config;
use livesnap::media::flv::FlvReader;
use livesnap::server::{self, Running};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Logs to the test output when RUST_LOG is set, and captures warnings about
/// connections for [`logs::about`].
pub fn init_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let output = tracing_subscriber::fmt::layer()
        .with_test_writer()
        .with_filter(tracing_subscriber::EnvFilter::from_default_env());
    let capture = logs::Capture.with_filter(tracing_subscriber::filter::filter_fn(|m| {
        m.is_span() || *m.level() <= tracing::Level::WARN
    }));
    let _ = tracing_subscriber::registry()
        .with(output)
        .with(capture)
        .try_init();
}

/// A node with its snapshot folder.
pub struct TestServer {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
}

impl TestServer {
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("snapshots")
    }

    pub fn url(&self, app: &str, stream: &str) -> String {
        format!("rtmp://{}/{app}/{stream}", self.rtmp)
    }

    pub async fn stop(&mut self) -> bool {
        match self.running.take() {
            Some(r) => r.shutdown().await,
            None => true,
        }
    }

    pub fn node(&self) -> &std::sync::Arc<livesnap::node::Node> {
        &self.running.as_ref().expect("running").node
    }
}

/// The default rules block used by most tests: every app, 5 s, both modes.
pub const DEFAULT_RULES: &str = r#"
[[rules]]
domain = "*"
app = "*"
interval_secs = 5
storage = "default"
overwrite_object = "{AppName}/{StreamName}.jpg"
sequence_object = "{AppName}/{StreamName}/{Sequence}.jpg"
"#;

/// Starts a node whose `default` storage is an fs folder in a fresh temp dir;
/// `extra` is appended to the config (rules, limits, more storage).
pub async fn start_server(extra: &str) -> TestServer {
    start_server_in(tempfile::tempdir().unwrap(), extra).await
}

pub async fn start_server_in(dir: tempfile::TempDir, extra: &str) -> TestServer {
    start_server_with(dir, 3, extra).await
}

/// [`start_server_in`] with another `server.handshake_timeout_secs`.
pub async fn start_server_with(
    dir: tempfile::TempDir,
    handshake_secs: u64,
    extra: &str,
) -> TestServer {
    init_logs();
    let root = dir.path().join("snapshots");
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
handshake_timeout_secs = {handshake_secs}
idle_timeout_secs = 5
[snapshot]
workers = 2
[storage.default]
scheme = "fs"
root = "{}"
{extra}
"#,
        root.display()
    );
    let settings = Config::parse(&text).unwrap().validate().unwrap();
    let running = server::start(settings).await.unwrap();
    TestServer {
        rtmp: running.rtmp_addr,
        http: running.http_addr,
        running: Some(running),
        dir,
    }
}

/// Every file under `root` (relative paths, sorted), leaving out the fs temp folder.
pub fn list_files(root: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.retain(|p| !p.starts_with(livesnap::storage::FS_TMP_DIR));
    out.sort();
    out
}

/// Waits until `cond` holds or the timeout passes; returns whether it held.
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// Does the RTMP client handshake on a fresh connection; returns the socket and any
/// bytes the server sent after S2.
pub async fn connect_handshake(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    handshake_on(TcpStream::connect(addr).await.unwrap()).await
}

/// A TCP connection to `addr` from the local address `from` (any port); on Linux every
/// 127.x.y.z address is the loopback, so tests can act as many peers.
pub async fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from, 0))?;
    sock.connect(addr).await
}

/// The RTMP client handshake on a connected socket.
pub async fn handshake_on(mut sock: TcpStream) -> (TcpStream, Vec<u8>) {
    let mut hs = Handshake::new(PeerType::Client);
    let p0p1 = hs.generate_outbound_p0_and_p1().unwrap();
    sock.write_all(&p0p1).await.unwrap();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0, "server closed during handshake");
        match hs.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                sock.write_all(&response_bytes).await.unwrap();
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                sock.write_all(&response_bytes).await.unwrap();
                return (sock, remaining_bytes);
            }
        }
    }
}

/// A publisher built on rml_rtmp's client session.
pub struct Publisher {
    pub sock: TcpStream,
    session: ClientSession,
    buf: Vec<u8>,
}

/// How a publish attempt ended.
#[derive(Debug, PartialEq)]
pub enum PublishOutcome {
    Accepted,
    /// The server closed the connection; the bytes it sent (status messages) are kept.
    Closed(Vec<u8>),
}

impl Publisher {
    /// Connects, handshakes, sends connect (with `tc_url`) and publish.
    pub async fn connect(
        addr: SocketAddr,
        tc_url: &str,
        app: &str,
        stream_key: &str,
    ) -> (Publisher, PublishOutcome) {
        let sock = TcpStream::connect(addr).await.unwrap();
        Publisher::connect_on(sock, tc_url, app, stream_key).await
    }

    /// [`Publisher::connect`] on an already connected socket.
    pub async fn connect_on(
        sock: TcpStream,
        tc_url: &str,
        app: &str,
        stream_key: &str,
    ) -> (Publisher, PublishOutcome) {
        let (sock, rest) = handshake_on(sock).await;
        let mut cfg = ClientSessionConfig::new();
        cfg.tc_url = Some(tc_url.to_string());
        let (session, initial) = ClientSession::new(cfg).unwrap();
        let mut p = Publisher {
            sock,
            session,
            buf: vec![0u8; 65536],
        };
        let mut seen = Vec::new();
        for r in initial {
            p.send_result(r).await;
        }
        p.feed(&rest, &mut seen).await;
        let r = p.session.request_connection(app.to_string()).unwrap();
        p.send_result(r).await;
        if let Err(bytes) = p
            .until(&mut seen, |e| {
                matches!(e, ClientSessionEvent::ConnectionRequestAccepted)
            })
            .await
        {
            return (p, PublishOutcome::Closed(bytes));
        }
        let r = p
            .session
            .request_publishing(stream_key.to_string(), PublishRequestType::Live)
            .unwrap();
        p.send_result(r).await;
        match p
            .until(&mut seen, |e| {
                matches!(e, ClientSessionEvent::PublishRequestAccepted)
            })
            .await
        {
            Ok(()) => (p, PublishOutcome::Accepted),
            Err(bytes) => (p, PublishOutcome::Closed(bytes)),
        }
    }

    async fn send_result(&mut self, r: ClientSessionResult) {
        if let ClientSessionResult::OutboundResponse(pkt) = r {
            self.sock.write_all(&pkt.bytes).await.unwrap();
        }
    }

    async fn feed(&mut self, data: &[u8], seen: &mut Vec<ClientSessionEvent>) {
        for r in self.session.handle_input(data).unwrap() {
            match r {
                ClientSessionResult::OutboundResponse(pkt) => {
                    self.sock.write_all(&pkt.bytes).await.unwrap()
                }
                ClientSessionResult::RaisedEvent(e) => seen.push(e),
                _ => {}
            }
        }
    }

    /// Reads until an event matches; on close returns every byte received meanwhile.
    async fn until(
        &mut self,
        seen: &mut Vec<ClientSessionEvent>,
        want: impl Fn(&ClientSessionEvent) -> bool,
    ) -> Result<(), Vec<u8>> {
        let mut raw = Vec::new();
        loop {
            if seen.iter().any(&want) {
                seen.clear();
                return Ok(());
            }
            let n =
                match tokio::time::timeout(Duration::from_secs(10), self.sock.read(&mut self.buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    Ok(Err(_)) => 0,
                    Err(_) => panic!("no answer from the server in 10 s"),
                };
            if n == 0 {
                return Err(raw);
            }
            raw.extend_from_slice(&self.buf[..n]);
            let data = self.buf[..n].to_vec();
            self.feed(&data, seen).await;
        }
    }

    pub async fn video(&mut self, ts: u32, data: Bytes) -> std::io::Result<()> {
        let r = self
            .session
            .publish_video_data(data, RtmpTimestamp::new(ts), false)
            .unwrap();
        if let ClientSessionResult::OutboundResponse(pkt) = r {
            self.sock.write_all(&pkt.bytes).await?;
        }
        Ok(())
    }

    pub async fn audio(&mut self, ts: u32, data: Bytes) -> std::io::Result<()> {
        let r = self
            .session
            .publish_audio_data(data, RtmpTimestamp::new(ts), false)
            .unwrap();
        if let ClientSessionResult::OutboundResponse(pkt) = r {
            self.sock.write_all(&pkt.bytes).await?;
        }
        Ok(())
    }

    /// Replays an FLV file's audio and video at `speed` × real time (0 = as fast as
    /// possible), with `ts_offset` added to every timestamp.
    pub async fn replay(&mut self, file: &Path, speed: f64, ts_offset: u32) -> std::io::Result<()> {
        let data = Bytes::from(std::fs::read(file).unwrap());
        let start = Instant::now();
        let mut first_ts = None;
        for tag in FlvReader::new(data).unwrap() {
            let tag = tag.unwrap();
            let t0 = *first_ts.get_or_insert(tag.timestamp_ms);
            if speed > 0.0 {
                let due =
                    Duration::from_secs_f64(f64::from(tag.timestamp_ms - t0) / 1000.0 / speed);
                let now = start.elapsed();
                if due > now {
                    tokio::time::sleep(due - now).await;
                }
            }
            let ts = tag.timestamp_ms.wrapping_add(ts_offset);
            match tag.tag_type {
                9 => self.video(ts, tag.data).await?,
                8 => self.audio(ts, tag.data).await?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Ends the publish politely (FCUnpublish/deleteStream) and closes.
    pub async fn finish(mut self) {
        if let Ok(results) = self.session.stop_publishing() {
            for r in results {
                self.send_result(r).await;
            }
        }
        let _ = self.sock.shutdown().await;
    }
}

/// Publishes a whole fixture at `speed` and finishes.
pub async fn publish_fixture(server: &TestServer, app: &str, stream: &str, file: &str, speed: f64) {
    let tc_url = format!("rtmp://{}/{app}", server.rtmp);
    let (mut p, outcome) = Publisher::connect(server.rtmp, &tc_url, app, stream).await;
    assert_eq!(outcome, PublishOutcome::Accepted);
    p.replay(&fixture(file), speed, 0).await.unwrap();
    p.finish().await;
}

/// Decodes a JPEG to RGB with mozjpeg: (width, height, pixels).
pub fn decode_jpeg(data: &[u8]) -> (usize, usize, Vec<u8>) {
    let d = mozjpeg::Decompress::new_mem(data).unwrap();
    let mut img = d.rgb().unwrap();
    let (w, h) = (img.width(), img.height());
    let pixels: Vec<[u8; 3]> = img.read_scanlines().unwrap();
    img.finish().unwrap();
    (w, h, pixels.into_iter().flatten().collect())
}

/// One hand-written HTTP/1.1 request with an empty body (`Connection: close`), for
/// health checks and for talking to the S3 test server without a client crate.
/// Returns the status code and the body (a chunked body is returned as received).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let mut sock = TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut raw))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no HTTP answer in 10 s")
        })??;
    let text = String::from_utf8_lossy(&raw);
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP response: {text:?}"),
        )
    };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

/// Publishes a whole fixture at `speed` and finishes, like [`publish_fixture`], for a
/// spawned task that cannot borrow the `TestServer`.
pub async fn publish_fixture_to(addr: SocketAddr, app: &str, stream: &str, file: &str, speed: f64) {
    let tc_url = format!("rtmp://{addr}/{app}");
    let (mut p, outcome) = Publisher::connect(addr, &tc_url, app, stream).await;
    assert_eq!(outcome, PublishOutcome::Accepted, "{app}/{stream}");
    p.replay(&fixture(file), speed, 0).await.unwrap();
    p.finish().await;
}

/// Snapshots stored so far by the first live stream (0 when none is live).
pub fn first_stream_stored(node: &livesnap::node::Node) -> u64 {
    node.registry.list().first().map_or(0, |s| {
        livesnap::snapshot::stats::StreamStats::get(&s.stats.stored)
    })
}

/// Resident set size of this process, which runs the node under test (`VmRSS` of
/// /proc/self/status), in bytes.
pub fn vm_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmRSS in kB");
    kb * 1024
}

/// A raw RTMP peer for hostile tests: chunks and AMF0 built by hand, no client session,
/// so that it can send what no real client would. What the server sends back is read
/// with livesnap's own chunk reader and rml_amf0.
pub mod raw {
    use std::collections::HashMap;
    use std::io::Cursor;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use livesnap::rtmp::framing::{ChunkReader, FramingLimits, Message, TYPE_AMF0_COMMAND};
    use rml_rtmp::rml_amf0::{self, Amf0Value};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// How long a helper waits for an answer the server owes.
    pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn s(v: &str) -> Amf0Value {
        Amf0Value::Utf8String(v.to_string())
    }

    pub fn n(v: f64) -> Amf0Value {
        Amf0Value::Number(v)
    }

    pub fn obj(props: &[(&str, Amf0Value)]) -> Amf0Value {
        Amf0Value::Object(
            props
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    /// AMF0 bytes of `values` (rml_amf0's serializer).
    pub fn amf(values: &[Amf0Value]) -> Vec<u8> {
        rml_amf0::serialize(&values.to_vec()).expect("serialisable AMF0")
    }

    pub fn message(
        type_id: u8,
        stream_id: u32,
        timestamp: u32,
        payload: impl Into<Bytes>,
    ) -> Message {
        Message {
            csid: 0,
            timestamp,
            type_id,
            stream_id,
            payload: payload.into(),
        }
    }

    /// A string field of an AMF0 object.
    pub fn prop<'a>(v: &'a Amf0Value, key: &str) -> Option<&'a str> {
        match v {
            Amf0Value::Object(m) => match m.get(key) {
                Some(Amf0Value::Utf8String(s)) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    /// A basic header plus the message header fields that `fmt` carries, and the 4-byte
    /// extended timestamp when `ts` needs it (fmt 0–2 only). Nothing is checked: this is
    /// for writing chunks a server must refuse.
    pub fn chunk_header(
        fmt: u8,
        csid: u32,
        ts: u32,
        len: u32,
        type_id: u8,
        stream_id: u32,
    ) -> Vec<u8> {
        let mut b = Vec::with_capacity(18);
        match csid {
            0..=63 => b.push((fmt << 6) | csid as u8),
            64..=319 => b.extend_from_slice(&[fmt << 6, (csid - 64) as u8]),
            _ => {
                let id = (csid - 64) as u16;
                b.extend_from_slice(&[(fmt << 6) | 1, id as u8, (id >> 8) as u8]);
            }
        }
        if fmt < 3 {
            b.extend_from_slice(&ts.min(0xFF_FFFF).to_be_bytes()[1..]);
        }
        if fmt < 2 {
            b.extend_from_slice(&len.to_be_bytes()[1..]);
            b.push(type_id);
        }
        if fmt == 0 {
            b.extend_from_slice(&stream_id.to_le_bytes());
        }
        if fmt < 3 && ts >= 0xFF_FFFF {
            b.extend_from_slice(&ts.to_be_bytes());
        }
        b
    }

    #[derive(Debug, Clone, Copy)]
    struct LastHeader {
        timestamp: u32,
        /// Timestamp field of the last fmt 0/1/2 header (absolute or delta).
        field: u32,
        len: u32,
        type_id: u8,
        stream_id: u32,
    }

    /// Splits messages into chunks as encoders do: fmt 0 for a chunk stream's first
    /// message (or a new message stream id, or a timestamp going back), fmt 1 when the
    /// length or type changes, fmt 2 when only the delta does, fmt 3 when the whole header
    /// repeats; fmt 3 continuation chunks; a needed extended timestamp is repeated on
    /// every chunk of the message (unless `repeat_extended` is off, as some encoders do).
    /// With `absolute`, every message gets a fmt 0 header (absolute timestamp).
    #[derive(Debug)]
    pub struct ChunkWriter {
        pub chunk_size: usize,
        pub absolute: bool,
        pub repeat_extended: bool,
        last: HashMap<u32, LastHeader>,
    }

    impl ChunkWriter {
        pub fn new(chunk_size: usize) -> ChunkWriter {
            ChunkWriter {
                chunk_size,
                absolute: false,
                repeat_extended: true,
                last: HashMap::new(),
            }
        }

        /// The chunks of one message on `csid` (`m.csid` is ignored), each its own buffer
        /// so that callers can interleave them with other chunk streams'.
        pub fn chunks(&mut self, csid: u32, m: &Message) -> Vec<Vec<u8>> {
            let len = m.payload.len() as u32;
            let (fmt, field) = match self.last.get(&csid) {
                Some(l)
                    if !self.absolute
                        && l.stream_id == m.stream_id
                        && m.timestamp >= l.timestamp =>
                {
                    let delta = m.timestamp - l.timestamp;
                    if (l.len, l.type_id) != (len, m.type_id) {
                        (1, delta)
                    } else if delta != l.field {
                        (2, delta)
                    } else {
                        (3, delta)
                    }
                }
                _ => (0, m.timestamp),
            };
            self.last.insert(
                csid,
                LastHeader {
                    timestamp: m.timestamp,
                    field,
                    len,
                    type_id: m.type_id,
                    stream_id: m.stream_id,
                },
            );
            let extended = field >= 0xFF_FFFF;
            let mut first = chunk_header(fmt, csid, field, len, m.type_id, m.stream_id);
            if fmt == 3 && extended && self.repeat_extended {
                first.extend_from_slice(&field.to_be_bytes());
            }
            let mut parts = m.payload.chunks(self.chunk_size.max(1));
            let mut out = Vec::new();
            first.extend_from_slice(parts.next().unwrap_or(&[]));
            out.push(first);
            for part in parts {
                let mut c = chunk_header(3, csid, 0, 0, 0, 0);
                if extended && self.repeat_extended {
                    c.extend_from_slice(&field.to_be_bytes());
                }
                c.extend_from_slice(part);
                out.push(c);
            }
            out
        }

        /// The chunks of one message, concatenated.
        pub fn write(&mut self, csid: u32, m: &Message) -> Vec<u8> {
            self.chunks(csid, m).concat()
        }
    }

    /// Round-robin merge of per-chunk-stream chunk sequences (each kept in order).
    pub fn interleave(streams: Vec<Vec<Vec<u8>>>) -> Vec<u8> {
        let mut iters: Vec<_> = streams.into_iter().map(|s| s.into_iter()).collect();
        let mut out = Vec::new();
        loop {
            let mut any = false;
            for it in iters.iter_mut() {
                if let Some(c) = it.next() {
                    out.extend_from_slice(&c);
                    any = true;
                }
            }
            if !any {
                return out;
            }
        }
    }

    /// Reads until the peer closes (EOF or a socket error) or `limit` passes. Returns the
    /// bytes received when it closed, `None` when it was still open at `limit`.
    pub async fn read_until_closed<R: AsyncRead + Unpin>(
        sock: &mut R,
        limit: Duration,
    ) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// A peer past the handshake, with its own chunk writer, decoding the server's messages.
    pub struct RawClient {
        pub sock: TcpStream,
        pub writer: ChunkWriter,
        reader: ChunkReader,
        reader_failed: bool,
        /// Every whole message the server sent so far.
        pub received: Vec<Message>,
        buf: Vec<u8>,
    }

    impl RawClient {
        /// Connects and completes the handshake.
        pub async fn connect(addr: SocketAddr) -> RawClient {
            let (sock, rest) = super::connect_handshake(addr).await;
            let mut c = RawClient {
                sock,
                writer: ChunkWriter::new(128),
                reader: ChunkReader::new(FramingLimits {
                    max_message_len: 16 << 20,
                    max_command_len: 16 << 20,
                    max_chunk_streams: 1024,
                }),
                reader_failed: false,
                received: Vec::new(),
                buf: vec![0u8; 64 * 1024],
            };
            c.absorb(&rest);
            c
        }

        fn absorb(&mut self, data: &[u8]) {
            if !self.reader_failed && self.reader.push(data, &mut self.received).is_err() {
                // Output cut by a reset; what was decoded before stays.
                self.reader_failed = true;
            }
        }

        pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            self.sock.write_all(bytes).await
        }

        /// Sends one message through the chunk writer.
        pub async fn send_message(&mut self, csid: u32, m: &Message) -> std::io::Result<()> {
            let bytes = self.writer.write(csid, m);
            self.send(&bytes).await
        }

        /// Sends an AMF0 command (type 20) on `csid`.
        pub async fn command(
            &mut self,
            csid: u32,
            stream_id: u32,
            values: &[Amf0Value],
        ) -> std::io::Result<()> {
            self.send_message(csid, &message(TYPE_AMF0_COMMAND, stream_id, 0, amf(values)))
                .await
        }

        /// The AMF0 commands the server sent, decoded.
        pub fn commands(&self) -> Vec<Vec<Amf0Value>> {
            self.received
                .iter()
                .filter(|m| m.type_id == TYPE_AMF0_COMMAND)
                .filter_map(|m| rml_amf0::deserialize(&mut Cursor::new(&m.payload[..])).ok())
                .collect()
        }

        /// Reads until a command from the server satisfies `want`; `None` if the server
        /// closed first. Panics after [`ANSWER_TIMEOUT`].
        pub async fn wait_command(
            &mut self,
            want: impl Fn(&[Amf0Value]) -> bool,
        ) -> Option<Vec<Amf0Value>> {
            let deadline = Instant::now() + ANSWER_TIMEOUT;
            loop {
                if let Some(c) = self.commands().into_iter().find(|c| want(c)) {
                    return Some(c);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let n = match tokio::time::timeout(left, self.sock.read(&mut self.buf)).await {
                    Err(_) => panic!("no answer from the server in {ANSWER_TIMEOUT:?}"),
                    Ok(Ok(n)) => n,
                    Ok(Err(_)) => 0,
                };
                if n == 0 {
                    return None;
                }
                let data = self.buf[..n].to_vec();
                self.absorb(&data);
            }
        }

        /// Reads until the server closes; returns how long that took, `None` if it was still
        /// open after `limit`.
        pub async fn closed_within(&mut self, limit: Duration) -> Option<Duration> {
            let start = Instant::now();
            let got = read_until_closed(&mut self.sock, limit).await?;
            self.absorb(&got);
            Some(start.elapsed())
        }

        /// `connect` to `app` with the given tcUrl; panics unless it succeeds.
        pub async fn connect_app(&mut self, app: &str, tc_url: &str) {
            let connect = [
                s("connect"),
                n(1.0),
                obj(&[
                    ("app", s(app)),
                    ("type", s("nonprivate")),
                    ("flashVer", s("FMLE/3.0 (compatible; livesnap-hostile)")),
                    ("tcUrl", s(tc_url)),
                ]),
            ];
            self.command(3, 0, &connect).await.unwrap();
            self.wait_connected().await;
        }

        /// Waits for the `_result` of `connect`.
        pub async fn wait_connected(&mut self) {
            let ok = self
                .wait_command(|c| {
                    c.len() >= 4
                        && c[0] == s("_result")
                        && prop(&c[3], "code") == Some("NetConnection.Connect.Success")
                })
                .await;
            assert!(ok.is_some(), "connect refused");
        }

        /// `createStream` with transaction id `tid`; returns the new message stream id.
        pub async fn create_stream(&mut self, tid: f64) -> u32 {
            self.command(3, 0, &[s("createStream"), n(tid), Amf0Value::Null])
                .await
                .unwrap();
            let r = self
                .wait_command(|c| c.len() >= 4 && c[0] == s("_result") && c[1] == n(tid))
                .await
                .expect("createStream answered");
            match r[3] {
                Amf0Value::Number(id) => id as u32,
                ref other => panic!("createStream result {other:?}"),
            }
        }

        /// `publish` on message stream `sid`; returns the onStatus `(level, code)`, or `None`
        /// when the server closed without one.
        pub async fn publish(&mut self, sid: u32, name: &str) -> Option<(String, String)> {
            self.command(
                8,
                sid,
                &[s("publish"), n(5.0), Amf0Value::Null, s(name), s("live")],
            )
            .await
            .unwrap();
            let st = self
                .wait_command(|c| {
                    c.len() >= 4
                        && c[0] == s("onStatus")
                        && prop(&c[3], "code")
                            .is_some_and(|code| code.starts_with("NetStream.Publish"))
                })
                .await?;
            Some((
                prop(&st[3], "level").unwrap_or_default().to_string(),
                prop(&st[3], "code").unwrap_or_default().to_string(),
            ))
        }

        /// Connects to `app`, creates a stream and publishes `name`; panics unless the server
        /// answers `NetStream.Publish.Start` with level `status`. Returns the message stream id.
        pub async fn start_publish(addr: SocketAddr, app: &str, name: &str) -> (RawClient, u32) {
            let mut c = RawClient::connect(addr).await;
            c.connect_app(app, &format!("rtmp://{addr}/{app}")).await;
            let sid = c.create_stream(2.0).await;
            let status = c.publish(sid, name).await;
            assert_eq!(
                status,
                Some(("status".to_string(), "NetStream.Publish.Start".to_string())),
                "publish {app}/{name}"
            );
            (c, sid)
        }
    }
}
