//! A raw RTMP peer for hostile tests: chunks and AMF0 built by hand, no client session,
//! so that it can send what no real client would. What the server sends back is read
//! with livesnap's own chunk reader and rml_amf0.

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use livesnap::rtmp::framing::{ChunkReader, FramingLimits, Message, TYPE_AMF0_COMMAND};
use rml_rtmp::rml_amf0::{self, Amf0Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

pub fn message(type_id: u8, stream_id: u32, timestamp: u32, payload: impl Into<Bytes>) -> Message {
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

pub use livesnap::testing::wire::{chunk_header, read_until_closed};

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
                if !self.absolute && l.stream_id == m.stream_id && m.timestamp >= l.timestamp =>
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
        let (sock, rest) = super::publisher::connect_handshake(addr).await;
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
                    && prop(&c[3], "code").is_some_and(|code| code.starts_with("NetStream.Publish"))
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
