//! RTMP chunk stream → whole messages, bounded, no I/O.
//!
//! Owns the inbound chunk layer after the handshake: basic and message headers (fmt 0–3),
//! per-chunk-stream timestamp accumulation, extended timestamps, reassembly of interleaved
//! chunk streams, and the two control messages that change how chunks are read
//! (`SetChunkSize`, `Abort`). Untrusted bytes go through here before anything reaches
//! rml_rtmp; this module never touches a socket and never hands partial messages out.
//! Also writes the few single-chunk messages the session glue feeds to rml_rtmp or sends.
//!
//! Bounds: a message longer than its type's cap is refused at its header, before any of
//! its payload is buffered; a message's assembly buffer is allocated once, at its declared
//! length, after that length was charged to the budget below (a message declared longer
//! than [`PREALLOC_MAX`] starts at that size and then grows with the bytes received, at
//! most doubling, never beyond its declared length); at most
//! `max_chunk_streams` chunk stream ids ever opened; unparsed input held between pushes is
//! at most one incomplete chunk header (≤ 18 bytes). Partial messages are also charged to
//! a [`PartialBudget`] by their *declared* length when their first chunk header arrives
//! (so a peer cannot declare many large messages and trickle their bytes): per connection,
//! and optionally against a node-wide [`PartialPool`] shared by every connection. The charge
//! is released when the message completes, when its chunk stream is aborted, when the
//! reader fails, and when the reader is dropped (also on a panic's unwind). Payload bytes are
//! copied once, from the pushed slice straight into the message's buffer, which is handed
//! out as `Bytes` without another copy. (Growing the buffer with each chunk instead cost a
//! reallocation, a copy and fresh pages per doubling: a tenth of a relaying edge's CPU.)
//!
//! Extended timestamps on fmt-3 chunks: RTMP 1.0 says a type-3 chunk carries the 4-byte
//! extended timestamp when the last type 0/1/2 header of its chunk stream did, but senders
//! differ: rml_rtmp's serializer (and, by most accounts, current encoders) repeat it on
//! every chunk, some senders omit it on continuation chunks. So when the last header used an
//! extended timestamp, the reader waits until 4 bytes follow the basic header and consumes
//! them only if they equal that header's extended value. The timestamp is the same either
//! way (a fmt-3 chunk repeats the previous field). Known ambiguity: an omitting encoder
//! whose payload chunk starts with exactly those 4 bytes loses them; and a final chunk
//! shorter than 4 bytes is delivered only once the next bytes arrive.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

/// Chunk size every connection starts with.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Smallest `SetChunkSize` accepted (the spec's "SHOULD be at least 128").
pub const MIN_CHUNK_SIZE: u32 = 128;
/// Largest `SetChunkSize` accepted: 16 MiB (a message is at most 0xFFFFFF bytes anyway).
pub const MAX_CHUNK_SIZE: u32 = 1 << 24;

pub const TYPE_SET_CHUNK_SIZE: u8 = 1;
pub const TYPE_ABORT: u8 = 2;
pub const TYPE_ACKNOWLEDGEMENT: u8 = 3;
pub const TYPE_USER_CONTROL: u8 = 4;
pub const TYPE_WINDOW_ACK_SIZE: u8 = 5;
pub const TYPE_SET_PEER_BANDWIDTH: u8 = 6;
pub const TYPE_AUDIO: u8 = 8;
pub const TYPE_VIDEO: u8 = 9;
pub const TYPE_AMF3_DATA: u8 = 15;
pub const TYPE_AMF3_COMMAND: u8 = 17;
pub const TYPE_AMF0_DATA: u8 = 18;
pub const TYPE_AMF0_COMMAND: u8 = 20;
pub const TYPE_AGGREGATE: u8 = 22;

/// The 3-byte timestamp value that announces a 4-byte extended timestamp.
const EXTENDED: u32 = 0x00FF_FFFF;
/// Longest chunk header: 3-byte basic header, 11-byte type-0 header, extended timestamp.
const MAX_HEADER_LEN: usize = 18;
/// Longest message a chunk header can declare.
const MAX_DECLARED_LEN: usize = 0x00FF_FFFF;

/// Size caps applied to every message at its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingLimits {
    /// Cap for media: audio (8), video (9) and aggregate (22) messages. Default 4 MiB.
    pub max_message_len: u32,
    /// Cap for every other type: commands and data (15, 17, 18, 20), shared objects,
    /// protocol control and unknown types. Default 64 KiB.
    pub max_command_len: u32,
    /// Distinct chunk stream ids a connection may open. Default 64.
    pub max_chunk_streams: usize,
}

impl Default for FramingLimits {
    fn default() -> Self {
        FramingLimits {
            max_message_len: 4 << 20,
            max_command_len: 64 << 10,
            max_chunk_streams: 64,
        }
    }
}

impl FramingLimits {
    fn cap_for(&self, type_id: u8) -> u32 {
        match type_id {
            TYPE_AUDIO | TYPE_VIDEO | TYPE_AGGREGATE => self.max_message_len,
            _ => self.max_command_len,
        }
    }
}

/// One whole RTMP message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Chunk stream it arrived on.
    pub csid: u32,
    /// Absolute timestamp in ms, wrapping at 2^32.
    pub timestamp: u32,
    pub type_id: u8,
    /// Message stream id (little-endian on the wire).
    pub stream_id: u32,
    pub payload: Bytes,
}

/// Why a chunk stream was refused; each names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("SetChunkSize {size} outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}")]
    ChunkSize { size: u32 },
    #[error("message of {len} bytes (type {type_id}) exceeds the cap of {cap}")]
    MessageTooLarge { len: u32, cap: u32, type_id: u8 },
    #[error("more than {cap} chunk streams opened")]
    TooManyChunkStreams { cap: usize },
    #[error("fmt {fmt} chunk on chunk stream {csid}, which no type-0 chunk opened")]
    UnknownChunkStream { csid: u32, fmt: u8 },
    #[error("fmt {fmt} header on chunk stream {csid} mid-message ({received} of {len} bytes)")]
    HeaderMidMessage {
        csid: u32,
        fmt: u8,
        received: usize,
        len: u32,
    },
    #[error("control message type {type_id} has {len} payload bytes, needs {needed}")]
    ShortControlMessage {
        type_id: u8,
        len: usize,
        needed: usize,
    },
    #[error(
        "message of {declared} bytes on chunk stream {csid} would make partial messages \
         hold {would_hold} bytes, over limits.max_partial_bytes_per_connection = {cap}"
    )]
    PartialBudget {
        csid: u32,
        declared: u32,
        would_hold: usize,
        cap: usize,
    },
    #[error(
        "message of {declared} bytes on chunk stream {csid} refused: the node's partial \
         messages already hold {held} of limits.max_partial_bytes = {cap}"
    )]
    NodePartialBudget {
        csid: u32,
        declared: u32,
        held: usize,
        cap: usize,
    },
    #[error("chunk reader used after an earlier error")]
    Poisoned,
}

/// The node-wide count of bytes declared by partial messages, shared by every connection's
/// [`PartialBudget`] (an atomic counter: no lock on the read path).
#[derive(Debug)]
pub struct PartialPool {
    max: usize,
    held: AtomicUsize,
}

impl PartialPool {
    pub fn new(max: usize) -> PartialPool {
        PartialPool {
            max,
            held: AtomicUsize::new(0),
        }
    }

    /// Bytes declared by the partial messages of every connection right now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The node-wide cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes `n` bytes if they fit under the cap; `Err(held)` when they do not.
    fn try_take(&self, n: usize) -> Result<(), usize> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|&total| total <= self.max)
            })
            .map(|_| ())
    }

    fn release(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

/// What one connection's partial messages may hold: a per-connection cap and, optionally,
/// a share of a node-wide [`PartialPool`]. Whatever it holds goes back to the pool when it
/// is dropped.
#[derive(Debug)]
pub struct PartialBudget {
    per_connection: usize,
    pool: Option<Arc<PartialPool>>,
    held: usize,
}

impl PartialBudget {
    pub fn new(per_connection: usize, pool: Option<Arc<PartialPool>>) -> PartialBudget {
        PartialBudget {
            per_connection,
            pool,
            held: 0,
        }
    }

    /// No budget beyond the per-message caps of [`FramingLimits`] (what
    /// [`ChunkReader::new`] uses).
    pub fn unlimited() -> PartialBudget {
        PartialBudget::new(usize::MAX, None)
    }

    /// Bytes declared by this connection's partial messages right now.
    pub fn held(&self) -> usize {
        self.held
    }

    fn take(&mut self, csid: u32, declared: u32) -> Result<(), FramingError> {
        let n = declared as usize;
        let would_hold = self.held.saturating_add(n);
        if would_hold > self.per_connection {
            return Err(FramingError::PartialBudget {
                csid,
                declared,
                would_hold,
                cap: self.per_connection,
            });
        }
        if let Some(pool) = &self.pool {
            pool.try_take(n)
                .map_err(|held| FramingError::NodePartialBudget {
                    csid,
                    declared,
                    held,
                    cap: pool.max,
                })?;
        }
        self.held = would_hold;
        Ok(())
    }

    fn release(&mut self, declared: u32) {
        let n = (declared as usize).min(self.held);
        self.held -= n;
        if let Some(pool) = &self.pool {
            pool.release(n);
        }
    }

    fn release_all(&mut self) {
        if let Some(pool) = &self.pool {
            pool.release(self.held);
        }
        self.held = 0;
    }
}

impl Drop for PartialBudget {
    fn drop(&mut self) {
        self.release_all();
    }
}

/// State kept per chunk stream id.
#[derive(Debug)]
struct ChunkStream {
    csid: u32,
    /// Absolute timestamp of the current (or last) message.
    timestamp: u32,
    /// Last timestamp field (fmt 0: absolute, fmt 1/2: delta), extended value resolved.
    /// A fmt-3 chunk that starts a message adds it again.
    ts_field: u32,
    /// The last fmt 0/1/2 header carried an extended timestamp.
    extended: bool,
    len: u32,
    type_id: u8,
    stream_id: u32,
    /// A message is being assembled (its header was read, not all of its payload).
    partial: bool,
    /// Payload received so far, in a buffer of the declared length (see [`PREALLOC_MAX`]).
    /// A `Vec` rather than `BytesMut` for `reserve_exact`: capacity never exceeds the
    /// declared length, and `Bytes::from` takes it over without copying.
    payload: Vec<u8>,
}

/// A parsed chunk header, not yet applied to the reader's state.
#[derive(Debug)]
struct Header {
    fmt: u8,
    csid: u32,
    /// Index into `streams`; `None` only for fmt 0 on a new chunk stream.
    index: Option<usize>,
    /// Bytes of input the header took.
    consumed: usize,
    /// fmt 0/1/2: timestamp or delta (extended resolved), whether it was extended.
    ts_field: u32,
    extended: bool,
    len: u32,
    type_id: u8,
    stream_id: u32,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Expecting a chunk header.
    Header,
    /// Inside a chunk's payload: `remaining` bytes go to `streams[index]`.
    Payload { index: usize, remaining: usize },
}

/// Reassembles RTMP messages from the chunk stream of one connection.
#[derive(Debug)]
pub struct ChunkReader {
    limits: FramingLimits,
    chunk_size: u32,
    streams: Vec<ChunkStream>,
    state: State,
    /// An incomplete chunk header carried over between pushes.
    pending: [u8; MAX_HEADER_LEN],
    pending_len: usize,
    poisoned: bool,
    /// Charged with the declared length of every partial message.
    budget: PartialBudget,
}

impl ChunkReader {
    /// A reader with no partial-message budget beyond `limits` (clients, tools, tests).
    pub fn new(limits: FramingLimits) -> Self {
        ChunkReader::with_budget(limits, PartialBudget::unlimited())
    }

    /// A reader whose partial messages are charged to `budget` (the server's connections).
    pub fn with_budget(limits: FramingLimits, budget: PartialBudget) -> Self {
        ChunkReader {
            limits,
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::new(),
            state: State::Header,
            pending: [0; MAX_HEADER_LEN],
            pending_len: 0,
            poisoned: false,
            budget,
        }
    }

    /// Replaces the partial-message budget; what the old one held is released. Only
    /// before the first push: a reader mid-message keeps its budget.
    pub fn set_budget(&mut self, budget: PartialBudget) {
        debug_assert!(self.streams.iter().all(|s| !s.partial));
        self.budget = budget;
    }

    /// Bytes declared by the partial messages held right now (what the budget is charged).
    pub fn partial_declared(&self) -> usize {
        self.budget.held()
    }

    /// Chunk size in force for the next chunk.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Memory held right now: assembly buffer capacities plus carried-over header bytes.
    pub fn buffered_bytes(&self) -> usize {
        self.pending_len
            + self
                .streams
                .iter()
                .map(|s| s.payload.capacity())
                .sum::<usize>()
    }

    /// Appends bytes read from the socket and pushes every message completed by them onto
    /// `out`, in completion order. `SetChunkSize` and `Abort` are applied here and also
    /// pushed. After an error the reader is poisoned: it frees its buffers and every later
    /// call returns [`FramingError::Poisoned`].
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Message>) -> Result<(), FramingError> {
        if self.poisoned {
            return Err(FramingError::Poisoned);
        }
        let result = self.push_inner(data, out);
        if result.is_err() {
            self.poisoned = true;
            self.streams = Vec::new();
            self.pending_len = 0;
            self.budget.release_all();
        }
        result
    }

    fn push_inner(&mut self, mut input: &[u8], out: &mut Vec<Message>) -> Result<(), FramingError> {
        while !input.is_empty() {
            match self.state {
                State::Payload { index, remaining } => {
                    let n = remaining.min(input.len());
                    let (now, rest) = input.split_at(n);
                    input = rest;
                    let stream = &mut self.streams[index];
                    grow(&mut stream.payload, n, stream.len as usize);
                    stream.payload.extend_from_slice(now);
                    if n < remaining {
                        self.state = State::Payload {
                            index,
                            remaining: remaining - n,
                        };
                    } else {
                        self.state = State::Header;
                        if stream.payload.len() == stream.len as usize {
                            self.complete(index, out)?;
                        }
                    }
                }
                State::Header if self.pending_len == 0 => match self.parse_header(input)? {
                    Some(header) => {
                        input = &input[header.consumed..];
                        self.apply(header, out)?;
                    }
                    None => {
                        // Shorter than the header needs, so it fits in `pending`.
                        self.pending[..input.len()].copy_from_slice(input);
                        self.pending_len = input.len();
                        input = &[];
                    }
                },
                State::Header => {
                    let old = self.pending_len;
                    let take = (MAX_HEADER_LEN - old).min(input.len());
                    self.pending[old..old + take].copy_from_slice(&input[..take]);
                    self.pending_len = old + take;
                    let pending = self.pending;
                    match self.parse_header(&pending[..old + take])? {
                        Some(header) if header.consumed >= old => {
                            input = &input[header.consumed - old..];
                            self.pending_len = 0;
                            self.apply(header, out)?;
                        }
                        Some(header) => {
                            // A fmt-3 peek that found payload, not an extended timestamp:
                            // the carried-over bytes after the basic header are payload,
                            // and none of `input` was used.
                            self.pending_len = 0;
                            let consumed = header.consumed;
                            self.apply(header, out)?;
                            self.push_inner(&pending[consumed..old], out)?;
                        }
                        None => {
                            debug_assert_eq!(take, input.len(), "a chunk header fits in pending");
                            input = &input[take..];
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn find(&self, csid: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.csid == csid)
    }

    /// Parses a chunk header from the start of `b` without changing any state; `None`
    /// when more bytes are needed.
    fn parse_header(&self, b: &[u8]) -> Result<Option<Header>, FramingError> {
        let Some(&first) = b.first() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        let (csid, mut p) = match first & 0x3F {
            0 if b.len() >= 2 => (64 + u32::from(b[1]), 2),
            1 if b.len() >= 3 => (64 + u32::from(b[1]) + 256 * u32::from(b[2]), 3),
            0 | 1 => return Ok(None),
            id => (u32::from(id), 1),
        };
        let index = self.find(csid);
        let mut header = Header {
            fmt,
            csid,
            index,
            consumed: 0,
            ts_field: 0,
            extended: false,
            len: 0,
            type_id: 0,
            stream_id: 0,
        };
        if index.is_none() && fmt != 0 {
            return Err(FramingError::UnknownChunkStream { csid, fmt });
        }
        let fixed = match fmt {
            0 => 11,
            1 => 7,
            2 => 3,
            _ => 0,
        };
        if b.len() < p + fixed {
            return Ok(None);
        }
        if fmt < 3 {
            header.ts_field = be24(&b[p..]);
            if fmt < 2 {
                header.len = be24(&b[p + 3..]);
                header.type_id = b[p + 6];
            }
            if fmt == 0 {
                let sid = [b[p + 7], b[p + 8], b[p + 9], b[p + 10]];
                header.stream_id = u32::from_le_bytes(sid);
            }
            p += fixed;
            if header.ts_field == EXTENDED {
                let Some(ext) = b.get(p..p + 4) else {
                    return Ok(None);
                };
                header.ts_field = u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]);
                header.extended = true;
                p += 4;
            }
        } else if let Some(stream) = index.map(|i| &self.streams[i]) {
            if stream.extended {
                // The fmt-3 heuristic described in the module docs.
                let Some(ext) = b.get(p..p + 4) else {
                    return Ok(None);
                };
                if ext == stream.ts_field.to_be_bytes() {
                    p += 4;
                }
            }
        }
        header.consumed = p;
        Ok(Some(header))
    }

    /// Applies a parsed header: updates the chunk stream, checks caps, sets up the payload.
    fn apply(&mut self, h: Header, out: &mut Vec<Message>) -> Result<(), FramingError> {
        let index = match h.index {
            Some(index) => index,
            None => {
                if self.streams.len() >= self.limits.max_chunk_streams {
                    return Err(FramingError::TooManyChunkStreams {
                        cap: self.limits.max_chunk_streams,
                    });
                }
                self.streams.push(ChunkStream {
                    csid: h.csid,
                    timestamp: 0,
                    ts_field: 0,
                    extended: false,
                    len: 0,
                    type_id: 0,
                    stream_id: 0,
                    partial: false,
                    payload: Vec::new(),
                });
                self.streams.len() - 1
            }
        };
        let stream = &mut self.streams[index];
        let repeats_header = h.fmt == 0
            && stream.partial
            && (h.ts_field, h.len, h.type_id, h.stream_id)
                == (
                    stream.timestamp,
                    stream.len,
                    stream.type_id,
                    stream.stream_id,
                );
        if repeats_header {
            // rml_rtmp's own serializer, asked for uncompressed headers, repeats the
            // type-0 header on continuation chunks. Only an identical one counts as fmt 3.
            stream.ts_field = h.ts_field;
            stream.extended = h.extended;
        } else if h.fmt < 3 {
            if stream.partial {
                return Err(FramingError::HeaderMidMessage {
                    csid: h.csid,
                    fmt: h.fmt,
                    received: stream.payload.len(),
                    len: stream.len,
                });
            }
            stream.ts_field = h.ts_field;
            stream.extended = h.extended;
            stream.timestamp = if h.fmt == 0 {
                h.ts_field
            } else {
                stream.timestamp.wrapping_add(h.ts_field)
            };
            if h.fmt < 2 {
                stream.len = h.len;
                stream.type_id = h.type_id;
            }
            if h.fmt == 0 {
                stream.stream_id = h.stream_id;
            }
        } else if !stream.partial {
            // fmt 3 starting a new message: same header, the previous delta again.
            stream.timestamp = stream.timestamp.wrapping_add(stream.ts_field);
        }
        if !stream.partial {
            let cap = self.limits.cap_for(stream.type_id);
            if stream.len > cap {
                return Err(FramingError::MessageTooLarge {
                    len: stream.len,
                    cap,
                    type_id: stream.type_id,
                });
            }
            if stream.len == 0 {
                return self.complete(index, out);
            }
            // Charged by the declared length, before any payload is buffered; only then
            // is the buffer allocated, at that length (pages are touched as bytes arrive).
            self.budget.take(h.csid, stream.len)?;
            stream.partial = true;
            stream
                .payload
                .reserve_exact((stream.len as usize).min(PREALLOC_MAX));
        }
        let left = stream.len as usize - stream.payload.len();
        self.state = State::Payload {
            index,
            remaining: left.min(self.chunk_size as usize),
        };
        Ok(())
    }

    /// Hands out the finished message of `streams[index]`, applying control messages.
    fn complete(&mut self, index: usize, out: &mut Vec<Message>) -> Result<(), FramingError> {
        let stream = &mut self.streams[index];
        if std::mem::take(&mut stream.partial) {
            self.budget.release(stream.len);
        }
        let message = Message {
            csid: stream.csid,
            timestamp: stream.timestamp,
            type_id: stream.type_id,
            stream_id: stream.stream_id,
            payload: Bytes::from(std::mem::take(&mut stream.payload)),
        };
        match message.type_id {
            TYPE_SET_CHUNK_SIZE => {
                let size = control_u32(&message)?;
                if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
                    return Err(FramingError::ChunkSize { size });
                }
                self.chunk_size = size;
            }
            TYPE_ABORT => {
                let csid = control_u32(&message)?;
                if let Some(aborted) = self.streams.iter_mut().find(|s| s.csid == csid) {
                    if std::mem::take(&mut aborted.partial) {
                        self.budget.release(aborted.len);
                    }
                    aborted.payload = Vec::new();
                }
            }
            _ => {}
        }
        out.push(message);
        Ok(())
    }
}

/// The most a message's buffer is allocated at before its bytes arrive: every audio and
/// video message of a real stream fits (a 4K keyframe is a few hundred KiB).
pub const PREALLOC_MAX: usize = 1 << 20;

/// Makes room for `additional` more bytes of a message of `total` bytes: at least
/// doubling, never beyond `total` (only messages declared longer than [`PREALLOC_MAX`]
/// ever grow).
fn grow(buf: &mut Vec<u8>, additional: usize, total: usize) {
    let needed = buf.len() + additional;
    if needed > buf.capacity() {
        let target = needed.max(buf.capacity() * 2).min(total);
        buf.reserve_exact(target - buf.len());
    }
}

fn be24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

/// The big-endian u32 that starts a SetChunkSize or Abort payload.
fn control_u32(message: &Message) -> Result<u32, FramingError> {
    match message.payload.get(..4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(FramingError::ShortControlMessage {
            type_id: message.type_id,
            len: message.payload.len(),
            needed: 4,
        }),
    }
}

/// Writes a basic header; panics on a csid outside 2..=65599 (a caller bug).
fn write_basic_header(fmt: u8, csid: u32, out: &mut Vec<u8>) {
    match csid {
        2..=63 => out.push((fmt << 6) | csid as u8),
        64..=319 => out.extend_from_slice(&[fmt << 6, (csid - 64) as u8]),
        320..=65599 => {
            let id = (csid - 64) as u16;
            out.extend_from_slice(&[(fmt << 6) | 1, id as u8, (id >> 8) as u8]);
        }
        _ => panic!("chunk stream id {csid} outside 2..=65599"),
    }
}

fn write_type0_chunk(
    csid: u32,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    assert!(
        payload.len() <= MAX_DECLARED_LEN,
        "message of {} bytes cannot be framed",
        payload.len()
    );
    out.reserve(MAX_HEADER_LEN + payload.len());
    write_basic_header(0, csid, out);
    out.extend_from_slice(&timestamp.min(EXTENDED).to_be_bytes()[1..]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&stream_id.to_le_bytes());
    if timestamp >= EXTENDED {
        out.extend_from_slice(&timestamp.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Serialises one whole message as a single type-0 chunk on chunk stream `csid` (basic
/// header, 11-byte header, extended timestamp when the timestamp is ≥ 0xFFFFFF, payload);
/// `msg.csid` is ignored. The receiver must already use a chunk size ≥ the payload length:
/// feed [`set_chunk_size_chunk`] first. Panics if `csid` is outside 2..=65599 or the
/// payload is longer than 0xFFFFFF bytes; messages from [`ChunkReader`] never are.
pub fn write_single_chunk(msg: &Message, csid: u32, out: &mut Vec<u8>) {
    write_type0_chunk(
        csid,
        msg.timestamp,
        msg.type_id,
        msg.stream_id,
        &msg.payload,
        out,
    );
}

/// A `SetChunkSize` protocol control message (type 1) on chunk stream 2, stream 0. The top
/// bit of `size` is cleared, as the spec requires.
pub fn set_chunk_size_chunk(size: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    let payload = (size & 0x7FFF_FFFF).to_be_bytes();
    write_type0_chunk(2, 0, TYPE_SET_CHUNK_SIZE, 0, &payload, &mut out);
    out
}

/// An `Acknowledgement` (type 3) carrying `sequence_number`, type-0 header on chunk
/// stream 2, stream 0.
pub fn acknowledgement_chunk(sequence_number: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    let payload = sequence_number.to_be_bytes();
    write_type0_chunk(2, 0, TYPE_ACKNOWLEDGEMENT, 0, &payload, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test-side chunk writer: writes exactly the headers it is told to.
    #[derive(Default)]
    struct W(Vec<u8>);

    impl W {
        fn ts24(&mut self, v: u32) {
            self.0
                .extend_from_slice(&v.min(EXTENDED).to_be_bytes()[1..]);
        }
        fn ext(&mut self, v: u32) {
            if v >= EXTENDED {
                self.0.extend_from_slice(&v.to_be_bytes());
            }
        }
        fn h0(&mut self, csid: u32, ts: u32, len: usize, type_id: u8, sid: u32) -> &mut Self {
            write_basic_header(0, csid, &mut self.0);
            self.ts24(ts);
            self.0.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
            self.0.push(type_id);
            self.0.extend_from_slice(&sid.to_le_bytes());
            self.ext(ts);
            self
        }
        fn h1(&mut self, csid: u32, delta: u32, len: usize, type_id: u8) -> &mut Self {
            write_basic_header(1, csid, &mut self.0);
            self.ts24(delta);
            self.0.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
            self.0.push(type_id);
            self.ext(delta);
            self
        }
        fn h2(&mut self, csid: u32, delta: u32) -> &mut Self {
            write_basic_header(2, csid, &mut self.0);
            self.ts24(delta);
            self.ext(delta);
            self
        }
        fn h3(&mut self, csid: u32, ext: Option<u32>) -> &mut Self {
            write_basic_header(3, csid, &mut self.0);
            if let Some(v) = ext {
                self.0.extend_from_slice(&v.to_be_bytes());
            }
            self
        }
        fn data(&mut self, bytes: &[u8]) -> &mut Self {
            self.0.extend_from_slice(bytes);
            self
        }
        /// After a header: the payload in chunks of `chunk`, continuations as fmt 3 with
        /// `ext` repeated when given.
        fn body(&mut self, csid: u32, payload: &[u8], chunk: usize, ext: Option<u32>) -> &mut Self {
            for (i, piece) in payload.chunks(chunk).enumerate() {
                if i > 0 {
                    self.h3(csid, ext);
                }
                self.data(piece);
            }
            self
        }
        fn set_chunk_size(&mut self, size: u32) -> &mut Self {
            self.h0(2, 0, 4, TYPE_SET_CHUNK_SIZE, 0)
                .data(&size.to_be_bytes())
        }
    }

    /// Deterministic payload bytes, never starting with 0x00/0xFF (so never with an
    /// extended timestamp value used in these tests).
    fn pat(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 0x10)
            .map(|b| if b == 0xFF { 0x7F } else { b })
            .collect()
    }

    fn msg(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, payload: &[u8]) -> Message {
        Message {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn parse_with(bytes: &[u8], limits: FramingLimits) -> Result<Vec<Message>, FramingError> {
        let mut reader = ChunkReader::new(limits);
        let mut out = Vec::new();
        reader.push(bytes, &mut out).map(|()| out)
    }

    fn parse(bytes: &[u8]) -> Result<Vec<Message>, FramingError> {
        parse_with(bytes, FramingLimits::default())
    }

    /// Feeds `bytes` cut at `cuts`; returns the messages, the error if any, and the final
    /// chunk size.
    fn parse_split(bytes: &[u8], cuts: &[usize]) -> (Vec<Message>, Option<FramingError>, u32) {
        let mut reader = ChunkReader::new(FramingLimits::default());
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
            if let Err(e) = reader.push(&bytes[start..end], &mut out) {
                return (out, Some(e), reader.chunk_size());
            }
            start = end;
        }
        (out, None, reader.chunk_size())
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn single_chunk_messages_at_128_and_4096() {
        let small = pat(128, 1);
        let big = pat(4096, 2);
        let mut w = W::default();
        w.h0(4, 10, small.len(), TYPE_VIDEO, 1).data(&small);
        w.set_chunk_size(4096);
        w.h0(4, 20, big.len(), TYPE_VIDEO, 1).data(&big);
        let out = parse(&w.0).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], msg(4, 10, TYPE_VIDEO, 1, &small));
        assert_eq!(out[1].type_id, TYPE_SET_CHUNK_SIZE);
        assert_eq!(out[2], msg(4, 20, TYPE_VIDEO, 1, &big));
    }

    #[test]
    fn multi_chunk_messages_at_128_and_4096() {
        let a = pat(1000, 3);
        let b = pat(10_000, 4);
        let mut w = W::default();
        w.h0(6, 0, a.len(), TYPE_AMF0_DATA, 1)
            .body(6, &a, 128, None);
        w.set_chunk_size(4096);
        w.h0(4, 40, b.len(), TYPE_VIDEO, 1).body(4, &b, 4096, None);
        let out = parse(&w.0).unwrap();
        assert_eq!(out[0], msg(6, 0, TYPE_AMF0_DATA, 1, &a));
        assert_eq!(out[2], msg(4, 40, TYPE_VIDEO, 1, &b));
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn set_chunk_size_mid_stream_and_between_chunks_of_another_stream() {
        let a = pat(300, 5);
        let b = pat(5000, 6);
        let mut w = W::default();
        // 300 bytes at 128: the first chunk, then the chunk size changes to 200 on csid
        // 2, then the rest of `a` arrives in chunks of 200.
        w.h0(4, 0, a.len(), TYPE_VIDEO, 1).data(&a[..128]);
        w.set_chunk_size(200);
        w.h3(4, None).data(&a[128..]);
        w.set_chunk_size(4096);
        w.h0(4, 33, b.len(), TYPE_VIDEO, 1).body(4, &b, 4096, None);
        let mut reader = ChunkReader::new(FramingLimits::default());
        let mut out = Vec::new();
        reader.push(&w.0, &mut out).unwrap();
        assert_eq!(reader.chunk_size(), 4096);
        let types: Vec<u8> = out.iter().map(|m| m.type_id).collect();
        assert_eq!(types, [1, 9, 1, 9]);
        assert_eq!(&out[0].payload[..], &200u32.to_be_bytes());
        assert_eq!(out[1], msg(4, 0, TYPE_VIDEO, 1, &a));
        assert_eq!(out[3], msg(4, 33, TYPE_VIDEO, 1, &b));
    }

    #[test]
    fn interleaved_two_streams_complete_in_order() {
        let v = pat(300, 7);
        let a = pat(200, 8);
        let mut w = W::default();
        w.h0(4, 100, v.len(), TYPE_VIDEO, 1).data(&v[..128]);
        w.h0(5, 90, a.len(), TYPE_AUDIO, 1).data(&a[..128]);
        w.h3(4, None).data(&v[128..256]);
        w.h3(5, None).data(&a[128..]);
        w.h3(4, None).data(&v[256..]);
        let out = parse(&w.0).unwrap();
        assert_eq!(
            out,
            [
                msg(5, 90, TYPE_AUDIO, 1, &a),
                msg(4, 100, TYPE_VIDEO, 1, &v)
            ]
        );
    }

    #[test]
    fn interleaved_several_streams_including_long_csids() {
        let csids = [3u32, 4, 63, 64, 319, 320, 65599];
        let payloads: Vec<Vec<u8>> = csids
            .iter()
            .enumerate()
            .map(|(i, _)| pat(100 + 150 * i, i as u8))
            .collect();
        let mut w = W::default();
        for (i, (&csid, p)) in csids.iter().zip(&payloads).enumerate() {
            w.h0(csid, i as u32, p.len(), TYPE_VIDEO, 1)
                .data(&p[..p.len().min(128)]);
        }
        let mut offsets = vec![128usize; csids.len()];
        let mut expected_order = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            if p.len() <= 128 {
                expected_order.push(i);
            }
        }
        while offsets.iter().zip(&payloads).any(|(&o, p)| o < p.len()) {
            for (i, (&csid, p)) in csids.iter().zip(&payloads).enumerate() {
                if offsets[i] < p.len() {
                    let end = (offsets[i] + 128).min(p.len());
                    w.h3(csid, None).data(&p[offsets[i]..end]);
                    offsets[i] = end;
                    if end == p.len() {
                        expected_order.push(i);
                    }
                }
            }
        }
        let out = parse(&w.0).unwrap();
        let expected: Vec<Message> = expected_order
            .iter()
            .map(|&i| msg(csids[i], i as u32, TYPE_VIDEO, 1, &payloads[i]))
            .collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn fmt_1_2_3_deltas_accumulate() {
        let p = pat(10, 9);
        let q = pat(5, 10);
        let mut w = W::default();
        w.h0(4, 1000, 10, TYPE_VIDEO, 7).data(&p);
        w.h2(4, 40).data(&p); // 1040
        w.h3(4, None).data(&p); // new message, delta 40 again: 1080
        w.h1(4, 20, 5, TYPE_AUDIO).data(&q); // 1100
        w.h3(4, None).data(&q); // 1120
        w.h1(4, 0, 10, TYPE_VIDEO).data(&p); // 1120, delta 0
        w.h3(4, None).data(&p); // 1120
        let out = parse(&w.0).unwrap();
        let ts: Vec<u32> = out.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, [1000, 1040, 1080, 1100, 1120, 1120, 1120]);
        let types: Vec<u8> = out.iter().map(|m| m.type_id).collect();
        assert_eq!(types, [9, 9, 9, 8, 8, 9, 9]);
        assert!(out.iter().all(|m| m.stream_id == 7));
        assert_eq!(out[4].payload, q);
    }

    #[test]
    fn fmt3_after_fmt0_uses_the_type0_timestamp_as_delta() {
        // RTMP 1.0 §5.3.1.2.4 and ffmpeg/rml_rtmp: the "previous delta" after a type-0
        // header is its timestamp field.
        let p = pat(8, 11);
        let mut w = W::default();
        w.h0(4, 500, 8, TYPE_VIDEO, 1).data(&p);
        w.h3(4, None).data(&p);
        let out = parse(&w.0).unwrap();
        assert_eq!(out[1].timestamp, 1000);
    }

    #[test]
    fn extended_timestamps_in_both_continuation_forms() {
        let ts = 0x1234_5678;
        let p = pat(300, 12);
        for repeat in [false, true] {
            let ext = repeat.then_some(ts);
            let mut w = W::default();
            w.h0(4, ts, p.len(), TYPE_VIDEO, 1).body(4, &p, 128, ext);
            // Then a fmt-2 message with an extended delta, continued the same way.
            w.h2(4, 0x0100_0000)
                .body(4, &p, 128, repeat.then_some(0x0100_0000));
            let out = parse(&w.0).unwrap();
            assert_eq!(
                out,
                [
                    msg(4, ts, TYPE_VIDEO, 1, &p),
                    msg(4, ts + 0x0100_0000, TYPE_VIDEO, 1, &p)
                ],
                "repeat={repeat}"
            );
        }
    }

    #[test]
    fn extended_timestamp_on_fmt3_new_message_with_and_without_field() {
        let p = pat(20, 13);
        for with_field in [false, true] {
            let mut w = W::default();
            w.h0(4, 0, 20, TYPE_VIDEO, 1).data(&p);
            w.h2(4, 0x0200_0000).data(&p);
            w.h3(4, with_field.then_some(0x0200_0000)).data(&p);
            let out = parse(&w.0).unwrap();
            let ts: Vec<u32> = out.iter().map(|m| m.timestamp).collect();
            assert_eq!(ts, [0, 0x0200_0000, 0x0400_0000], "with_field={with_field}");
            assert!(out.iter().all(|m| m.payload == p));
        }
    }

    #[test]
    fn timestamps_cross_0xffffff_and_wrap_past_2_pow_32() {
        let p = pat(4, 14);
        let mut w = W::default();
        w.h0(4, 0x00FF_FFF0, 4, TYPE_AUDIO, 1).data(&p); // no extended field
        w.h2(4, 0x20).data(&p); // crosses 0xFFFFFF with a small delta
        w.h0(4, 0x00FF_FFFF, 4, TYPE_AUDIO, 1).data(&p); // exactly 0xFFFFFF: extended
        w.h0(4, 0xFFFF_FFF0, 4, TYPE_AUDIO, 1).data(&p);
        w.h2(4, 0x20).data(&p); // wraps
        w.h3(4, Some(0x20)).data(&p); // not extended: 4 payload bytes, no field
        let out = parse(&w.0);
        // The last fmt 3 must not have consumed "00 00 00 20" as an extended field: the
        // header before it was not extended, so those 4 bytes are payload.
        let out = out.unwrap();
        let ts: Vec<u32> = out.iter().map(|m| m.timestamp).collect();
        assert_eq!(
            ts,
            [
                0x00FF_FFF0,
                0x0100_0010,
                0x00FF_FFFF,
                0xFFFF_FFF0,
                0x10,
                0x30
            ]
        );
        assert_eq!(&out[5].payload[..], &0x20u32.to_be_bytes());
    }

    #[test]
    fn timestamps_going_backwards_are_delivered() {
        let p = pat(4, 15);
        let mut w = W::default();
        w.h0(4, 5000, 4, TYPE_VIDEO, 1).data(&p);
        w.h0(4, 4000, 4, TYPE_VIDEO, 1).data(&p);
        w.h0(5, 3000, 4, TYPE_AUDIO, 1).data(&p);
        let ts: Vec<u32> = parse(&w.0).unwrap().iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, [5000, 4000, 3000]);
    }

    #[test]
    fn abort_drops_the_partial_message() {
        let v = pat(300, 16);
        let n = pat(50, 17);
        let mut w = W::default();
        w.h0(4, 0, v.len(), TYPE_VIDEO, 1).data(&v[..128]);
        let mut reader = ChunkReader::new(FramingLimits::default());
        let mut out = Vec::new();
        reader.push(&w.0, &mut out).unwrap();
        assert!(reader.buffered_bytes() >= 128);

        let mut w = W::default();
        w.h0(2, 0, 4, TYPE_ABORT, 0).data(&4u32.to_be_bytes());
        reader.push(&w.0, &mut out).unwrap();
        assert_eq!(reader.buffered_bytes(), 0);

        // A fresh type-0 message on the same chunk stream, then a fmt-3 new message.
        let mut w = W::default();
        w.h0(4, 10, n.len(), TYPE_VIDEO, 1).data(&n);
        w.h3(4, None).data(&n);
        reader.push(&w.0, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].type_id, TYPE_ABORT);
        assert_eq!(out[1], msg(4, 10, TYPE_VIDEO, 1, &n));
        assert_eq!(out[2], msg(4, 20, TYPE_VIDEO, 1, &n));
    }

    #[test]
    fn invalid_chunk_sizes_are_errors() {
        for size in [
            0,
            1,
            127,
            MAX_CHUNK_SIZE + 1,
            0x7FFF_FFFF,
            0x8000_0080,
            u32::MAX,
        ] {
            let mut w = W::default();
            w.set_chunk_size(size);
            assert_eq!(parse(&w.0), Err(FramingError::ChunkSize { size }));
        }
        for size in [MIN_CHUNK_SIZE, MAX_CHUNK_SIZE] {
            let mut w = W::default();
            w.set_chunk_size(size);
            assert_eq!(parse(&w.0).unwrap().len(), 1);
        }
        let mut w = W::default();
        w.h0(2, 0, 2, TYPE_SET_CHUNK_SIZE, 0).data(&[0, 1]);
        assert_eq!(
            parse(&w.0),
            Err(FramingError::ShortControlMessage {
                type_id: 1,
                len: 2,
                needed: 4
            })
        );
    }

    #[test]
    fn oversized_messages_are_refused_at_the_header() {
        let mut w = W::default();
        w.h0(4, 0, 0x00FF_FFFF, TYPE_VIDEO, 1);
        let mut reader = ChunkReader::new(FramingLimits::default());
        let mut out = Vec::new();
        let err = reader.push(&w.0, &mut out).unwrap_err();
        assert_eq!(
            err,
            FramingError::MessageTooLarge {
                len: 0x00FF_FFFF,
                cap: 4 << 20,
                type_id: TYPE_VIDEO
            }
        );
        assert_eq!(reader.buffered_bytes(), 0);

        // Commands have the smaller cap; exactly the cap is fine.
        let mut w = W::default();
        w.h0(3, 0, (64 << 10) + 1, TYPE_AMF0_COMMAND, 0);
        assert!(matches!(
            parse(&w.0),
            Err(FramingError::MessageTooLarge {
                cap: 65536,
                type_id: 20,
                ..
            })
        ));
        let big = pat(64 << 10, 18);
        let mut w = W::default();
        w.h0(3, 0, big.len(), TYPE_AMF0_COMMAND, 0)
            .body(3, &big, 128, None);
        assert_eq!(parse(&w.0).unwrap()[0].payload, big);
    }

    #[test]
    fn a_message_is_assembled_in_one_buffer_of_its_declared_length() {
        let mut reader = ChunkReader::new(FramingLimits::default());
        let mut out = Vec::new();
        let payload: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let mut w = W::default();
        w.h0(4, 0, payload.len(), TYPE_VIDEO, 1);
        w.body(4, &payload, 128, None);
        // Header and first chunk: the whole declared length is there, and stays the
        // one buffer while the other chunks arrive.
        reader.push(&w.0[..12 + 128], &mut out).unwrap();
        assert_eq!(reader.buffered_bytes(), payload.len());
        reader.push(&w.0[12 + 128..], &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].payload, payload);
        assert_eq!(reader.buffered_bytes(), 0);
    }

    #[test]
    fn a_long_declared_length_is_not_reserved_up_front() {
        let limits = FramingLimits {
            max_message_len: 16 << 20,
            ..FramingLimits::default()
        };
        let mut reader = ChunkReader::new(limits);
        let mut out = Vec::new();
        reader
            .push(&set_chunk_size_chunk(MAX_CHUNK_SIZE), &mut out)
            .unwrap();
        let mut w = W::default();
        w.h0(4, 0, 0x00FF_FFFF, TYPE_VIDEO, 1).data(&[7; 10]);
        reader.push(&w.0, &mut out).unwrap();
        assert_eq!(reader.buffered_bytes(), PREALLOC_MAX);

        // Beyond it, growth stays within twice what was received.
        let mut received = 10;
        for _ in 0..3000 {
            reader.push(&[7; 1000], &mut out).unwrap();
            received += 1000;
            assert!(reader.buffered_bytes() <= (2 * received).max(PREALLOC_MAX));
        }
        assert!(reader.buffered_bytes() > PREALLOC_MAX);
        // Only the SetChunkSize message is complete.
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn pending_header_bytes_are_all_that_is_held() {
        let mut w = W::default();
        w.h0(4, 0x0100_0000, 1000, TYPE_VIDEO, 1);
        assert_eq!(w.0.len(), MAX_HEADER_LEN - 2);
        let mut reader = ChunkReader::new(FramingLimits::default());
        let mut out = Vec::new();
        reader.push(&w.0[..9], &mut out).unwrap();
        assert_eq!(reader.buffered_bytes(), 9);
        // The whole header: the message's buffer (its declared length) replaces them.
        reader.push(&w.0[9..], &mut out).unwrap();
        assert_eq!(reader.buffered_bytes(), 1000);
        reader.push(&[1; 50], &mut out).unwrap();
        assert_eq!(reader.buffered_bytes(), 1000);
    }

    #[test]
    fn chunks_on_unopened_streams_are_errors() {
        for fmt in 1..=3u8 {
            let mut w = W::default();
            w.h0(4, 0, 4, TYPE_AUDIO, 1).data(&[1, 2, 3, 4]);
            match fmt {
                1 => w.h1(5, 0, 4, TYPE_AUDIO),
                2 => w.h2(5, 0),
                _ => w.h3(5, None),
            };
            assert_eq!(
                parse(&w.0),
                Err(FramingError::UnknownChunkStream { csid: 5, fmt })
            );
        }
    }

    #[test]
    fn too_many_chunk_streams() {
        let limits = FramingLimits {
            max_chunk_streams: 4,
            ..FramingLimits::default()
        };
        let mut w = W::default();
        for csid in 3..7 {
            w.h0(csid, 0, 1, TYPE_AUDIO, 1).data(&[1]);
            w.h0(csid, 0, 1, TYPE_AUDIO, 1).data(&[1]); // reuse does not count
        }
        assert_eq!(parse_with(&w.0, limits).unwrap().len(), 8);
        w.h0(7, 0, 1, TYPE_AUDIO, 1).data(&[1]);
        assert_eq!(
            parse_with(&w.0, limits),
            Err(FramingError::TooManyChunkStreams { cap: 4 })
        );
    }

    fn budget_reader(per_connection: usize, pool: Option<&Arc<PartialPool>>) -> ChunkReader {
        let budget = PartialBudget::new(per_connection, pool.cloned());
        ChunkReader::with_budget(FramingLimits::default(), budget)
    }

    #[test]
    fn many_large_partial_messages_hit_the_budget_not_before() {
        // 8 MiB per connection; each chunk stream declares a 1 MiB video message and
        // sends a few bytes of it: eight fit exactly, the ninth is refused at its header.
        let mut reader = budget_reader(8 << 20, None);
        let mut out = Vec::new();
        for csid in 4..12 {
            let mut w = W::default();
            // One whole first chunk (128 bytes), so the next header is read as one.
            w.h0(csid, 0, 1 << 20, TYPE_VIDEO, 1).data(&[0x17; 128]);
            reader.push(&w.0, &mut out).unwrap();
        }
        assert_eq!(reader.partial_declared(), 8 << 20);
        // What is allocated is what the budget was charged, never more.
        assert!(reader.buffered_bytes() <= reader.partial_declared());
        let mut w = W::default();
        w.h0(12, 0, 1 << 20, TYPE_VIDEO, 1);
        assert_eq!(
            reader.push(&w.0, &mut out),
            Err(FramingError::PartialBudget {
                csid: 12,
                declared: 1 << 20,
                would_hold: 9 << 20,
                cap: 8 << 20
            })
        );
        assert_eq!(
            reader.partial_declared(),
            0,
            "a failed reader holds nothing"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn completed_and_aborted_messages_release_the_budget() {
        let mut reader = budget_reader(1000, None);
        let mut out = Vec::new();
        let (a, b) = (pat(400, 30), pat(400, 31));
        let mut w = W::default();
        w.h0(4, 0, 400, TYPE_VIDEO, 1).data(&a[..128]);
        w.h0(5, 0, 400, TYPE_AUDIO, 1).data(&b[..128]);
        reader.push(&w.0, &mut out).unwrap();
        assert_eq!(reader.partial_declared(), 800);
        // Completing csid 4 gives its 400 back: another 400 fits again.
        let mut w = W::default();
        w.h3(4, None).body(4, &a[128..], 128, None);
        reader.push(&w.0, &mut out).unwrap();
        assert_eq!(out, [msg(4, 0, TYPE_VIDEO, 1, &a)]);
        assert_eq!(reader.partial_declared(), 400);
        let mut w = W::default();
        w.h0(6, 0, 400, TYPE_VIDEO, 1).data(&a[..128]);
        reader.push(&w.0, &mut out).unwrap();
        assert_eq!(reader.partial_declared(), 800);
        // An Abort of csid 5 gives its 400 back too; empty messages cost nothing.
        let mut w = W::default();
        w.h0(2, 0, 4, TYPE_ABORT, 0).data(&5u32.to_be_bytes());
        w.h0(7, 0, 0, TYPE_AMF0_DATA, 1);
        reader.push(&w.0, &mut out).unwrap();
        assert_eq!(reader.partial_declared(), 400);
        // A message of exactly what is left fits; one byte more would not.
        let mut w = W::default();
        w.h0(8, 0, 600, TYPE_VIDEO, 1).data(&[1; 128]);
        reader.push(&w.0, &mut out).unwrap();
        assert_eq!(reader.partial_declared(), 1000);
        let mut w = W::default();
        w.h0(9, 0, 1, TYPE_VIDEO, 1);
        assert!(matches!(
            reader.push(&w.0, &mut out),
            Err(FramingError::PartialBudget {
                csid: 9,
                would_hold: 1001,
                ..
            })
        ));
    }

    #[test]
    fn the_node_wide_budget_is_shared_by_readers() {
        let pool = Arc::new(PartialPool::new(1000));
        let mut first = budget_reader(1000, Some(&pool));
        let mut second = budget_reader(1000, Some(&pool));
        let mut out = Vec::new();
        let p = pat(600, 32);
        let mut w = W::default();
        w.h0(4, 0, 600, TYPE_VIDEO, 1).data(&p[..128]);
        first.push(&w.0, &mut out).unwrap();
        assert_eq!(pool.held(), 600);
        // The second reader is within its own budget but not within the node's.
        let mut w = W::default();
        w.h0(4, 0, 500, TYPE_VIDEO, 1).data(&[1; 10]);
        assert_eq!(
            second.push(&w.0, &mut out),
            Err(FramingError::NodePartialBudget {
                csid: 4,
                declared: 500,
                held: 600,
                cap: 1000
            })
        );
        assert_eq!(pool.held(), 600, "the refused message took nothing");
        // The first one carries on and completes its message.
        let mut w = W::default();
        w.h3(4, None).body(4, &p[128..], 128, None);
        first.push(&w.0, &mut out).unwrap();
        assert_eq!(out, [msg(4, 0, TYPE_VIDEO, 1, &p)]);
        assert_eq!(pool.held(), 0);
        // A reader dropped mid-message (a closed connection, a panic) gives its share back.
        let mut third = budget_reader(1000, Some(&pool));
        let mut w = W::default();
        w.h0(4, 0, 900, TYPE_VIDEO, 1).data(&[1; 10]);
        third.push(&w.0, &mut out).unwrap();
        assert_eq!(pool.held(), 900);
        drop(third);
        assert_eq!(pool.held(), 0);
        let mut w = W::default();
        w.h0(4, 0, 1000, TYPE_VIDEO, 1).data(&[1; 10]);
        first.push(&w.0, &mut out).unwrap();
        assert_eq!(pool.held(), 1000);
    }

    #[test]
    fn new_header_in_the_middle_of_a_message_is_an_error() {
        // An identical type-0 header is a continuation (rml_rtmp writes those) ...
        let p = pat(300, 19);
        let mut w = W::default();
        w.h0(4, 9, 300, TYPE_VIDEO, 1).data(&p[..128]);
        w.h0(4, 9, 300, TYPE_VIDEO, 1).data(&p[128..256]);
        w.h3(4, None).data(&p[256..]);
        assert_eq!(parse(&w.0), Ok(vec![msg(4, 9, TYPE_VIDEO, 1, &p)]));
        // ... a different one is not.
        let mut w = W::default();
        w.h0(4, 9, 300, TYPE_VIDEO, 1).data(&p[..128]);
        w.h0(4, 10, 300, TYPE_VIDEO, 1);
        assert!(matches!(
            parse(&w.0),
            Err(FramingError::HeaderMidMessage { fmt: 0, .. })
        ));
        let mut w = W::default();
        w.h0(4, 0, 300, TYPE_VIDEO, 1).data(&pat(128, 19));
        w.h2(4, 10);
        assert_eq!(
            parse(&w.0),
            Err(FramingError::HeaderMidMessage {
                csid: 4,
                fmt: 2,
                received: 128,
                len: 300
            })
        );
    }

    #[test]
    fn reader_is_poisoned_after_an_error() {
        let mut reader = ChunkReader::new(FramingLimits::default());
        let mut out = Vec::new();
        let mut w = W::default();
        w.h0(4, 0, 300, TYPE_VIDEO, 1).data(&pat(128, 20));
        reader.push(&w.0, &mut out).unwrap();
        assert_eq!(
            reader.push(&[0x85], &mut out),
            Err(FramingError::UnknownChunkStream { csid: 5, fmt: 2 })
        );
        assert_eq!(reader.buffered_bytes(), 0);
        assert_eq!(reader.push(&[], &mut out), Err(FramingError::Poisoned));
    }

    /// A recording that exercises every path: chunk size changes, interleaving, all
    /// header formats, long csids, extended timestamps in both forms, abort, empty messages.
    fn recording() -> Vec<u8> {
        let mut w = W::default();
        let v = pat(700, 21);
        let a = pat(300, 22);
        let c = pat(90, 23);
        w.h0(3, 0, c.len(), TYPE_AMF0_COMMAND, 0).data(&c);
        w.h0(4, 0, v.len(), TYPE_VIDEO, 1).data(&v[..128]);
        w.set_chunk_size(256);
        w.h0(5, 0, a.len(), TYPE_AUDIO, 1).data(&a[..256]);
        w.h3(4, None).data(&v[128..384]);
        w.h3(5, None).data(&a[256..]);
        w.h3(4, None).data(&v[384..640]);
        w.h1(5, 23, 40, TYPE_AUDIO).data(&a[..40]);
        w.h3(4, None).data(&v[640..]);
        w.h3(5, None).data(&a[..40]);
        w.h0(4, 0x0123_4567, v.len(), TYPE_VIDEO, 1)
            .body(4, &v, 256, Some(0x0123_4567));
        w.h0(4, 0x0123_4600, v.len(), TYPE_VIDEO, 1)
            .body(4, &v, 256, None);
        w.h2(4, 33).body(4, &v, 256, None);
        w.h0(320, 5, 0, TYPE_AMF0_DATA, 1);
        w.h0(65599, 6, a.len(), TYPE_AUDIO, 1).data(&a[..256]);
        w.h0(2, 0, 4, TYPE_ABORT, 0).data(&65599u32.to_be_bytes());
        w.h0(65599, 7, 3, TYPE_AUDIO, 1).data(&a[..3]);
        w.set_chunk_size(4096);
        w.h0(64, 8, 5000, TYPE_VIDEO, 1)
            .body(64, &pat(5000, 24), 4096, None);
        w.h3(4, None).body(4, &v, 4096, None);
        w.0
    }

    #[test]
    fn output_does_not_depend_on_how_input_is_split() {
        let bytes = recording();
        let (whole, err, size) = parse_split(&bytes, &[]);
        assert_eq!(err, None);
        assert_eq!(size, 4096);
        assert_eq!(whole.len(), 15);
        assert_eq!(whole.last().unwrap().timestamp, 0x0123_4600 + 33 + 33);
        assert!(whole
            .iter()
            .any(|m| m.csid == 65599 && m.payload.len() == 3));
        assert!(!whole.iter().any(|m| m.csid == 65599 && m.payload.len() > 3));

        let every_byte: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(
            parse_split(&bytes, &every_byte),
            (whole.clone(), None, 4096)
        );

        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..300 {
            let max_piece = [3, 17, 130, 700, 5000][round % 5];
            let mut cuts = Vec::new();
            let mut at = 0;
            loop {
                at += 1 + (rng.next() % max_piece) as usize;
                if at >= bytes.len() {
                    break;
                }
                cuts.push(at);
            }
            assert_eq!(
                parse_split(&bytes, &cuts),
                (whole.clone(), None, 4096),
                "cuts {cuts:?}"
            );
        }
    }

    #[test]
    fn errors_do_not_depend_on_how_input_is_split() {
        let mut bytes = recording();
        W(Vec::new()).h2(77, 1); // keep the helper honest about fmt 2 on unknown ids
        let mut tail = W::default();
        tail.h2(77, 1);
        bytes.extend_from_slice(&tail.0);
        let (whole, err, _) = parse_split(&bytes, &[]);
        assert_eq!(
            err,
            Some(FramingError::UnknownChunkStream { csid: 77, fmt: 2 })
        );
        let every_byte: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(parse_split(&bytes, &every_byte).0, whole);
    }

    #[test]
    fn reads_what_rml_rtmp_chunk_serializer_writes() {
        use rml_rtmp::chunk_io::ChunkSerializer;
        use rml_rtmp::messages::MessagePayload;
        use rml_rtmp::time::RtmpTimestamp;

        struct Rec {
            serializer: ChunkSerializer,
            bytes: Vec<u8>,
            inputs: Vec<MessagePayload>,
        }
        impl Rec {
            fn add(&mut self, ts: u32, type_id: u8, sid: u32, data: Vec<u8>, full: bool) {
                let p = MessagePayload {
                    timestamp: RtmpTimestamp::new(ts),
                    type_id,
                    message_stream_id: sid,
                    data: Bytes::from(data),
                };
                let packet = self.serializer.serialize(&p, full, false).unwrap();
                self.bytes.extend_from_slice(&packet.bytes);
                self.inputs.push(p);
            }
        }
        let mut r = Rec {
            serializer: ChunkSerializer::new(),
            bytes: Vec::new(),
            inputs: Vec::new(),
        };
        for i in 0..6u32 {
            // Same size and spacing: rml_rtmp picks fmt 0, 1, 2 and 3.
            r.add(40 * i, 9, 1, pat(500, 1), false);
            r.add(40 * i + 3, 8, 1, pat(60, 2), false);
        }
        r.add(300, 9, 1, pat(900, 3), false);
        let set = r
            .serializer
            .set_max_chunk_size(4096, RtmpTimestamp::new(0))
            .unwrap();
        r.bytes.extend_from_slice(&set.bytes);
        r.inputs.push(MessagePayload {
            timestamp: RtmpTimestamp::new(0),
            type_id: TYPE_SET_CHUNK_SIZE,
            message_stream_id: 0,
            data: Bytes::copy_from_slice(&4096u32.to_be_bytes()),
        });
        r.add(400, 9, 1, pat(9000, 4), false);
        r.add(410, 18, 1, pat(70, 5), false);
        r.add(420, 20, 0, pat(30, 6), false);
        // Extended timestamps: rml_rtmp repeats the field on continuation chunks.
        r.add(0x0123_4567, 9, 1, pat(9000, 7), true);
        r.add(0x0123_4600, 9, 1, pat(9000, 7), false);

        let out = parse(&r.bytes).unwrap();
        assert_eq!(out.len(), r.inputs.len());
        for (m, p) in out.iter().zip(&r.inputs) {
            assert_eq!(
                (m.timestamp, m.type_id, m.stream_id, &m.payload),
                (p.timestamp.value, p.type_id, p.message_stream_id, &p.data)
            );
        }
    }

    #[test]
    fn rml_rtmp_chunk_deserializer_reads_single_chunks() {
        use rml_rtmp::chunk_io::ChunkDeserializer;
        use rml_rtmp::messages::RtmpMessage;

        let mut deserializer = ChunkDeserializer::new();
        let set = deserializer
            .get_next_message(&set_chunk_size_chunk(65536))
            .unwrap()
            .unwrap();
        match set.to_rtmp_message().unwrap() {
            RtmpMessage::SetChunkSize { size } => {
                deserializer.set_max_chunk_size(size as usize).unwrap()
            }
            other => panic!("expected SetChunkSize, got {other:?}"),
        }
        for (csid, ts, len) in [
            (3, 42, 5000),
            (6, 0x00FF_FFFF, 300),
            (64, 0xDEAD_BEEF, 1),
            (400, 7, 0),
        ] {
            let m = msg(99, ts, TYPE_AMF0_COMMAND, 1, &pat(len, 25));
            let mut bytes = Vec::new();
            write_single_chunk(&m, csid, &mut bytes);
            let p = deserializer.get_next_message(&bytes).unwrap().unwrap();
            assert_eq!(p.timestamp.value, ts);
            assert_eq!(p.type_id, TYPE_AMF0_COMMAND);
            assert_eq!(p.message_stream_id, 1);
            assert_eq!(p.data, m.payload);
            // And our own reader reads it back identically, csid included.
            let mut reader = ChunkReader::new(FramingLimits::default());
            let mut out = Vec::new();
            reader.push(&set_chunk_size_chunk(65536), &mut out).unwrap();
            reader.push(&bytes, &mut out).unwrap();
            assert_eq!(out[1], Message { csid, ..m });
        }
    }

    #[test]
    fn rml_rtmp_server_session_accepts_reserialised_connect() {
        use rml_rtmp::rml_amf0::{serialize, Amf0Value};
        use rml_rtmp::sessions::{ServerSession, ServerSessionConfig};
        use rml_rtmp::sessions::{ServerSessionEvent, ServerSessionResult};
        use std::collections::HashMap;

        let (mut session, _) = ServerSession::new(ServerSessionConfig::new()).unwrap();
        let object = HashMap::from([("app".to_owned(), Amf0Value::Utf8String("live".into()))]);
        let values = vec![
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Object(object),
        ];
        let m = msg(3, 0, TYPE_AMF0_COMMAND, 0, &serialize(&values).unwrap());
        let mut bytes = set_chunk_size_chunk(1 << 24);
        write_single_chunk(&m, 3, &mut bytes);
        let results = session.handle_input(&bytes).unwrap();
        let requested = results.iter().find_map(|r| match r {
            ServerSessionResult::RaisedEvent(ServerSessionEvent::ConnectionRequested {
                app_name,
                ..
            }) => Some(app_name.as_str()),
            _ => None,
        });
        assert_eq!(requested, Some("live"));
    }

    #[test]
    fn control_chunks_are_exact() {
        assert_eq!(
            acknowledgement_chunk(0x0102_0304),
            [2, 0, 0, 0, 0, 0, 4, 3, 0, 0, 0, 0, 1, 2, 3, 4]
        );
        assert_eq!(
            set_chunk_size_chunk(4096),
            [2, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0x10, 0]
        );
        let out = parse(&acknowledgement_chunk(9)).unwrap();
        assert_eq!(
            out,
            [msg(2, 0, TYPE_ACKNOWLEDGEMENT, 0, &9u32.to_be_bytes())]
        );
    }
}
