//! Whole RTMP messages → chunks, no I/O: the outbound twin of `framing::ChunkReader`.
//!
//! Owns the outbound chunk layer: a type-0 header on every message's first chunk, type-3
//! continuation chunks, the 4-byte extended timestamp (on the first chunk when the timestamp
//! is ≥ 0xFFFFFF, and repeated on every continuation chunk of that message, as RTMP 1.0
//! §5.3.1.3 says and as ffmpeg and rml_rtmp do), and the outgoing chunk size together with
//! the `SetChunkSize` message that announces it. It never touches a socket and keeps no
//! per-chunk-stream state: every message starts with a full type-0 header (≈ 4 bytes more
//! than a compressed one), so a message dropped or reordered by a caller can never corrupt
//! the header compression of the next one.
//!
//! Output goes into a caller's growable buffer (`Vec<u8>`, `BytesMut`, any `BufMut`) without
//! allocating when it has the capacity, or, with [`ChunkWriter::write_shared`], into an
//! [`Outbox`] as headers around slices of the shared payload (no copy per receiver);
//! [`PreChunked`] chunks a message once so that it can be sent many times with another
//! timestamp and message stream id (only a header of at most 18 bytes is built per send,
//! on the stack).

use std::ops::Deref;

use bytes::{BufMut, Bytes};

use crate::rtmp::framing::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, TYPE_SET_CHUNK_SIZE};
use crate::rtmp::outbox::Outbox;

/// Longest payload a message header can declare (24-bit length).
pub const MAX_PAYLOAD_LEN: usize = 0x00FF_FFFF;
/// Chunk stream ids a basic header can carry (0 and 1 are escapes; 2 is protocol control).
pub const CSID_RANGE: std::ops::RangeInclusive<u32> = 2..=65599;
/// The 3-byte timestamp value that announces a 4-byte extended timestamp.
const EXTENDED: u32 = 0x00FF_FFFF;
/// Longest type-0 chunk header: 3-byte basic header, 11 bytes, extended timestamp.
pub const MAX_HEADER_LEN: usize = 18;

/// The header fields of one outbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// Chunk stream to send it on (2..=65599; 2 is for protocol control).
    pub csid: u32,
    /// Absolute timestamp in ms.
    pub timestamp: u32,
    pub type_id: u8,
    /// Message stream id (0 for protocol control and connection commands).
    pub stream_id: u32,
}

/// Why a message could not be chunked; each names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkWriteError {
    #[error("chunk stream id {csid} outside 2..=65599")]
    ChunkStreamId { csid: u32 },
    #[error("payload of {len} bytes exceeds the RTMP maximum of {MAX_PAYLOAD_LEN}")]
    PayloadTooLong { len: usize },
    #[error("chunk size {size} outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}")]
    ChunkSize { size: u32 },
    #[error("output buffer has room for {room} bytes, the message needs {needed}")]
    BufferTooSmall { needed: usize, room: usize },
}

/// Writes messages as chunks of the current outgoing chunk size.
#[derive(Debug, Clone)]
pub struct ChunkWriter {
    chunk_size: u32,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        ChunkWriter::new()
    }
}

impl ChunkWriter {
    /// A writer at the chunk size every connection starts with (128).
    pub fn new() -> Self {
        ChunkWriter {
            chunk_size: crate::rtmp::framing::DEFAULT_CHUNK_SIZE,
        }
    }

    /// A writer that follows a chunk size already announced to the peer by someone
    /// else on the same connection (our rml_rtmp session announces its own at the start).
    pub fn with_chunk_size(size: u32) -> Self {
        debug_assert!((MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size));
        ChunkWriter { chunk_size: size }
    }

    /// Chunk size used for the next message.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Writes the `SetChunkSize` message (csid 2, stream 0) and uses `size` from the next
    /// message on. The peer must see them in this order, so write nothing in between
    /// elsewhere. `size` must be within what our own reader accepts (128..=16 MiB).
    pub fn set_chunk_size<B: BufMut>(
        &mut self,
        size: u32,
        out: &mut B,
    ) -> Result<(), ChunkWriteError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
            return Err(ChunkWriteError::ChunkSize { size });
        }
        let header = MessageHeader {
            csid: 2,
            timestamp: 0,
            type_id: TYPE_SET_CHUNK_SIZE,
            stream_id: 0,
        };
        self.write(&header, &size.to_be_bytes(), out)?;
        self.chunk_size = size;
        Ok(())
    }

    /// Bytes [`ChunkWriter::write`] produces for a payload of `len` bytes.
    pub fn encoded_len(&self, header: &MessageHeader, len: usize) -> usize {
        encoded_len(header, len, self.chunk_size)
    }

    /// Appends `payload` as one message: a type-0 chunk, then type-3 continuation chunks.
    /// Checks the header and the room in `out` first, so on error nothing was written.
    pub fn write<B: BufMut>(
        &self,
        header: &MessageHeader,
        payload: &[u8],
        out: &mut B,
    ) -> Result<(), ChunkWriteError> {
        self.write_pieces(header, payload.len(), std::iter::once(payload), out)
    }

    /// [`ChunkWriter::write`] for a payload given in pieces totalling `len` bytes (pieces
    /// need not align with chunks).
    pub(crate) fn write_pieces<'a, B: BufMut>(
        &self,
        header: &MessageHeader,
        len: usize,
        pieces: impl IntoIterator<Item = &'a [u8]>,
        out: &mut B,
    ) -> Result<(), ChunkWriteError> {
        check(header, len)?;
        let needed = encoded_len(header, len, self.chunk_size);
        if out.remaining_mut() < needed {
            return Err(ChunkWriteError::BufferTooSmall {
                needed,
                room: out.remaining_mut(),
            });
        }
        let mut first = [0u8; MAX_HEADER_LEN];
        let n = type0_header(header, len, &mut first);
        out.put_slice(&first[..n]);
        let chunk = self.chunk_size as usize;
        let mut left_in_chunk = chunk;
        let mut written = 0;
        for mut piece in pieces {
            while !piece.is_empty() {
                if left_in_chunk == 0 {
                    continuation_header(header.csid, header.timestamp, out);
                    left_in_chunk = chunk;
                }
                let take = piece.len().min(left_in_chunk);
                out.put_slice(&piece[..take]);
                piece = &piece[take..];
                left_in_chunk -= take;
                written += take;
            }
        }
        debug_assert_eq!(written, len, "pieces must total the declared length");
        Ok(())
    }

    /// Queues `payload` as one message on `out` without copying it: the chunk headers
    /// go into the outbox's own buffer, the payload as slices of `payload` between them
    /// (the same bytes [`ChunkWriter::write`] produces).
    pub fn write_shared(
        &self,
        header: &MessageHeader,
        payload: &Bytes,
        out: &mut Outbox,
    ) -> Result<(), ChunkWriteError> {
        check(header, payload.len())?;
        let mut first = [0u8; MAX_HEADER_LEN];
        let n = type0_header(header, payload.len(), &mut first);
        out.put_own(&first[..n]);
        let chunk = self.chunk_size as usize;
        let mut at = 0;
        while at < payload.len() {
            if at > 0 {
                out.own(|b| continuation_header(header.csid, header.timestamp, b));
            }
            let end = payload.len().min(at + chunk);
            out.put_shared(payload.slice(at..end));
            at = end;
        }
        Ok(())
    }
}

fn check(header: &MessageHeader, len: usize) -> Result<(), ChunkWriteError> {
    if !CSID_RANGE.contains(&header.csid) {
        return Err(ChunkWriteError::ChunkStreamId { csid: header.csid });
    }
    if len > MAX_PAYLOAD_LEN {
        return Err(ChunkWriteError::PayloadTooLong { len });
    }
    Ok(())
}

fn basic_header_len(csid: u32) -> usize {
    match csid {
        0..=63 => 1,
        64..=319 => 2,
        _ => 3,
    }
}

fn encoded_len(header: &MessageHeader, len: usize, chunk_size: u32) -> usize {
    let chunks = len.div_ceil(chunk_size as usize).max(1);
    let ext = if header.timestamp >= EXTENDED { 4 } else { 0 };
    let basic = basic_header_len(header.csid);
    basic + 11 + ext + (chunks - 1) * (basic + ext) + len
}

/// Writes the basic header into `buf`; returns its length. `csid` must be in `CSID_RANGE`.
fn basic_header(fmt: u8, csid: u32, buf: &mut [u8]) -> usize {
    match csid {
        0..=63 => {
            buf[0] = (fmt << 6) | csid as u8;
            1
        }
        64..=319 => {
            buf[0] = fmt << 6;
            buf[1] = (csid - 64) as u8;
            2
        }
        _ => {
            let id = (csid - 64) as u16;
            buf[0] = (fmt << 6) | 1;
            buf[1] = id as u8;
            buf[2] = (id >> 8) as u8;
            3
        }
    }
}

/// A type-0 chunk header for a message of `len` bytes into `buf`; returns its length.
fn type0_header(h: &MessageHeader, len: usize, buf: &mut [u8; MAX_HEADER_LEN]) -> usize {
    let mut n = basic_header(0, h.csid, buf);
    buf[n..n + 3].copy_from_slice(&h.timestamp.min(EXTENDED).to_be_bytes()[1..]);
    buf[n + 3..n + 6].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
    buf[n + 6] = h.type_id;
    buf[n + 7..n + 11].copy_from_slice(&h.stream_id.to_le_bytes());
    n += 11;
    if h.timestamp >= EXTENDED {
        buf[n..n + 4].copy_from_slice(&h.timestamp.to_be_bytes());
        n += 4;
    }
    n
}

fn continuation_header<B: BufMut>(csid: u32, timestamp: u32, out: &mut B) {
    let mut buf = [0u8; 7];
    let mut n = basic_header(3, csid, &mut buf);
    if timestamp >= EXTENDED {
        buf[n..n + 4].copy_from_slice(&timestamp.to_be_bytes());
        n += 4;
    }
    out.put_slice(&buf[..n]);
}

/// A chunk header built on the stack.
#[derive(Clone, Copy)]
pub struct HeaderBytes {
    buf: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl Deref for HeaderBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for HeaderBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeaderBytes({:02x?})", &**self)
    }
}

/// One message chunked once at a given chunk size, to be sent many times with another
/// timestamp and message stream id: what the load tool replays.
///
/// `body()` holds the payload with its type-3 continuation headers already in place; a send
/// is `header(ts, stream_id)` followed by `body()`, e.g. as one vectored write. That pair is
/// the exact wire form when [`PreChunked::is_direct`] holds; otherwise (a multi-chunk message
/// at an extended timestamp, whose continuation headers must repeat it, or another chunk
/// size) use [`PreChunked::write_to`], which re-chunks it into a buffer.
#[derive(Debug, Clone)]
pub struct PreChunked {
    body: Bytes,
    csid: u32,
    type_id: u8,
    len: u32,
    chunk_size: u32,
}

impl PreChunked {
    /// Chunks `payload` once for chunk stream `csid` at `chunk_size`.
    pub fn new(
        csid: u32,
        type_id: u8,
        payload: &[u8],
        chunk_size: u32,
    ) -> Result<PreChunked, ChunkWriteError> {
        let header = MessageHeader {
            csid,
            timestamp: 0,
            type_id,
            stream_id: 0,
        };
        check(&header, payload.len())?;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(ChunkWriteError::ChunkSize { size: chunk_size });
        }
        let head = type0_header(&header, payload.len(), &mut [0; MAX_HEADER_LEN]);
        let mut body = Vec::with_capacity(encoded_len(&header, payload.len(), chunk_size) - head);
        for (i, piece) in payload.chunks(chunk_size as usize).enumerate() {
            if i > 0 {
                continuation_header(csid, 0, &mut body);
            }
            body.extend_from_slice(piece);
        }
        Ok(PreChunked {
            // Shared from the start: every send clones it, which must only bump a count
            // (`Bytes::from(Vec)` would allocate on the first clone).
            body: Bytes::from_owner(body),
            csid,
            type_id,
            len: payload.len() as u32,
            chunk_size,
        })
    }

    pub fn csid(&self) -> u32 {
        self.csid
    }

    pub fn type_id(&self) -> u8 {
        self.type_id
    }

    /// Payload length.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Chunk size it was chunked at.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The payload with its continuation headers (a cheap clone shares it).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Whether `header(timestamp, _)` + `body()` is the message on a connection whose
    /// outgoing chunk size is `chunk_size`.
    pub fn is_direct(&self, timestamp: u32, chunk_size: u32) -> bool {
        chunk_size == self.chunk_size && (timestamp < EXTENDED || self.len <= self.chunk_size)
    }

    /// The type-0 header of this message at `timestamp` on message stream `stream_id`.
    pub fn header(&self, timestamp: u32, stream_id: u32) -> HeaderBytes {
        let h = MessageHeader {
            csid: self.csid,
            timestamp,
            type_id: self.type_id,
            stream_id,
        };
        let mut buf = [0u8; MAX_HEADER_LEN];
        let len = type0_header(&h, self.len(), &mut buf) as u8;
        HeaderBytes { buf, len }
    }

    /// The payload pieces between the continuation headers.
    pub fn payload_pieces(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let chunk = self.chunk_size as usize;
        let basic = basic_header_len(self.csid);
        let mut rest = &self.body[..];
        let mut first = true;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            if !first {
                rest = &rest[basic..];
            }
            first = false;
            let take = rest.len().min(chunk);
            let (piece, tail) = rest.split_at(take);
            rest = tail;
            Some(piece)
        })
    }

    /// Writes the message through `writer` (its chunk size, extended timestamps on every
    /// chunk): the copy path for when [`PreChunked::is_direct`] does not hold.
    pub fn write_to<B: BufMut>(
        &self,
        writer: &ChunkWriter,
        timestamp: u32,
        stream_id: u32,
        out: &mut B,
    ) -> Result<(), ChunkWriteError> {
        let h = MessageHeader {
            csid: self.csid,
            timestamp,
            type_id: self.type_id,
            stream_id,
        };
        writer.write_pieces(&h, self.len(), self.payload_pieces(), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::framing::{
        ChunkReader, FramingLimits, Message, TYPE_AMF0_DATA, TYPE_AUDIO, TYPE_VIDEO,
    };

    fn pat(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
            .collect()
    }

    fn read_all(bytes: &[u8], split: usize) -> Vec<Message> {
        let limits = FramingLimits {
            max_message_len: 16 << 20,
            max_command_len: 16 << 20,
            ..FramingLimits::default()
        };
        let mut reader = ChunkReader::new(limits);
        let mut out = Vec::new();
        for piece in bytes.chunks(split.max(1)) {
            reader.push(piece, &mut out).unwrap();
        }
        out
    }

    fn header(csid: u32, timestamp: u32, type_id: u8, stream_id: u32) -> MessageHeader {
        MessageHeader {
            csid,
            timestamp,
            type_id,
            stream_id,
        }
    }

    /// Messages covering one/many chunks, exact multiples, empty payloads, long csids and
    /// timestamps around and above the extended threshold.
    fn cases() -> Vec<(MessageHeader, Vec<u8>)> {
        let mut v = Vec::new();
        let timestamps = [0, 40, 0x00FF_FFFE, 0x00FF_FFFF, 0x0100_0000, u32::MAX];
        let lens = [0, 1, 127, 128, 129, 4096, 4097, 10_000, 70_000];
        for (i, &ts) in timestamps.iter().enumerate() {
            for (j, &len) in lens.iter().enumerate() {
                let csid = [3, 4, 6, 63, 64, 319, 320, 65599][(i + j) % 8];
                let type_id = [TYPE_VIDEO, TYPE_AUDIO, TYPE_AMF0_DATA][j % 3];
                v.push((header(csid, ts, type_id, 1 + j as u32), pat(len, i as u8)));
            }
        }
        v
    }

    #[test]
    fn chunk_reader_reads_back_every_message_at_several_chunk_sizes() {
        for size in [128, 129, 1000, 4096, 65536, MAX_CHUNK_SIZE] {
            let mut w = ChunkWriter::new();
            let mut bytes = Vec::new();
            w.set_chunk_size(size, &mut bytes).unwrap();
            let cases = cases();
            for (h, p) in &cases {
                let before = bytes.len();
                w.write(h, p, &mut bytes).unwrap();
                assert_eq!(bytes.len() - before, w.encoded_len(h, p.len()), "{h:?}");
            }
            for split in [bytes.len(), 1, 7, 1000] {
                let out = read_all(&bytes, split);
                assert_eq!(out.len(), cases.len() + 1, "size {size} split {split}");
                assert_eq!(&out[0].payload[..], &size.to_be_bytes());
                for (m, (h, p)) in out[1..].iter().zip(&cases) {
                    assert_eq!(
                        (m.csid, m.timestamp, m.type_id, m.stream_id),
                        (h.csid, h.timestamp, h.type_id, h.stream_id),
                        "size {size}"
                    );
                    assert_eq!(&m.payload[..], &p[..], "size {size} {h:?}");
                }
            }
        }
    }

    #[test]
    fn shared_writes_are_the_copied_bytes_and_copy_no_payload() {
        for size in [128, 1000, 4096, 65536] {
            let w = ChunkWriter::with_chunk_size(size);
            for (h, p) in cases() {
                let mut copied = Vec::new();
                w.write(&h, &p, &mut copied).unwrap();
                let payload = Bytes::from(p);
                let mut out = Outbox::new(0);
                w.write_shared(&h, &payload, &mut out).unwrap();
                assert_eq!(out.len(), copied.len(), "size {size} {h:?}");
                let mut slices = [std::io::IoSlice::new(&[]); 4096];
                let k = out.io_slices(&mut slices);
                let mut shared = 0;
                let mut got = Vec::new();
                for s in &slices[..k] {
                    let range = payload.as_ptr_range();
                    if range.contains(&s.as_ptr()) {
                        shared += s.len();
                    }
                    got.extend_from_slice(s);
                }
                assert_eq!(got, copied, "size {size} {h:?}");
                assert_eq!(
                    shared,
                    payload.len(),
                    "every payload byte is a shared slice"
                );
            }
        }
        let mut out = Outbox::new(0);
        let bad = header(1, 0, TYPE_VIDEO, 1);
        assert_eq!(
            ChunkWriter::new().write_shared(&bad, &Bytes::from_static(b"x"), &mut out),
            Err(ChunkWriteError::ChunkStreamId { csid: 1 })
        );
        assert!(out.is_empty(), "an error queues nothing");
    }

    #[test]
    fn extended_timestamp_is_repeated_on_every_continuation_chunk() {
        let mut w = ChunkWriter::new();
        let mut bytes = Vec::new();
        w.set_chunk_size(128, &mut bytes).unwrap();
        bytes.clear();
        let ts = 0x1234_5678;
        let p = pat(300, 9);
        w.write(&header(6, ts, TYPE_VIDEO, 1), &p, &mut bytes)
            .unwrap();
        // type 0: 1 + 11 + 4, then 128 payload bytes, then C6 + ts, 128, C6 + ts, 44.
        assert_eq!(&bytes[..4], &[0x06, 0xFF, 0xFF, 0xFF]);
        assert_eq!(&bytes[12..16], &ts.to_be_bytes());
        let c1 = 16 + 128;
        assert_eq!(&bytes[c1..c1 + 5], &[0xC6, 0x12, 0x34, 0x56, 0x78]);
        let c2 = c1 + 5 + 128;
        assert_eq!(&bytes[c2..c2 + 5], &[0xC6, 0x12, 0x34, 0x56, 0x78]);
        assert_eq!(bytes.len(), c2 + 5 + 44);
        // Below the threshold nothing is added to continuation chunks.
        bytes.clear();
        w.write(&header(6, 0x00FF_FFFE, TYPE_VIDEO, 1), &p, &mut bytes)
            .unwrap();
        assert_eq!(bytes.len(), 12 + 300 + 2);
        assert_eq!(bytes[12 + 128], 0xC6);
    }

    #[test]
    fn header_bytes_are_exact() {
        let w = ChunkWriter::new();
        let mut b = Vec::new();
        w.write(
            &header(4, 0x0001_0203, TYPE_AUDIO, 0x0A0B_0C0D),
            &[0xEE; 2],
            &mut b,
        )
        .unwrap();
        assert_eq!(
            b,
            [4, 0x01, 0x02, 0x03, 0, 0, 2, 8, 0x0D, 0x0C, 0x0B, 0x0A, 0xEE, 0xEE]
        );
        b.clear();
        w.write(&header(320, 0, TYPE_AUDIO, 1), &[], &mut b)
            .unwrap();
        assert_eq!(&b[..3], &[0x01, 0x00, 0x01]);
        assert_eq!(b.len(), 3 + 11);
    }

    #[test]
    fn errors_write_nothing() {
        let w = ChunkWriter::new();
        let mut b = Vec::new();
        assert_eq!(
            w.write(&header(1, 0, 9, 1), &[1], &mut b),
            Err(ChunkWriteError::ChunkStreamId { csid: 1 })
        );
        assert_eq!(
            w.write(&header(65600, 0, 9, 1), &[1], &mut b),
            Err(ChunkWriteError::ChunkStreamId { csid: 65600 })
        );
        let big = vec![0u8; MAX_PAYLOAD_LEN + 1];
        assert_eq!(
            w.write(&header(6, 0, 9, 1), &big, &mut b),
            Err(ChunkWriteError::PayloadTooLong {
                len: MAX_PAYLOAD_LEN + 1
            })
        );
        let mut small = [0u8; 20];
        let mut slice = &mut small[..];
        assert_eq!(
            w.write(&header(6, 0, 9, 1), &[7; 10], &mut slice),
            Err(ChunkWriteError::BufferTooSmall {
                needed: 22,
                room: 20
            })
        );
        let mut w = ChunkWriter::new();
        for size in [0, 127, MAX_CHUNK_SIZE + 1] {
            assert_eq!(
                w.set_chunk_size(size, &mut b),
                Err(ChunkWriteError::ChunkSize { size })
            );
        }
        assert!(b.is_empty());
        assert_eq!(w.chunk_size(), 128);
    }

    #[test]
    fn writes_into_bytes_mut_without_growing_it() {
        let mut w = ChunkWriter::new();
        let mut b = bytes::BytesMut::with_capacity(64 << 10);
        w.set_chunk_size(4096, &mut b).unwrap();
        let p = pat(20_000, 3);
        let ptr = b.as_ptr();
        for ts in 0..3 {
            w.write(&header(6, ts, TYPE_VIDEO, 1), &p, &mut b).unwrap();
        }
        assert_eq!(b.as_ptr(), ptr, "no reallocation with enough capacity");
        let out = read_all(&b, b.len());
        assert_eq!(out.len(), 4);
        assert!(out[1..].iter().all(|m| m.payload == p));
    }

    #[test]
    fn prechunked_sends_match_the_writer_and_read_back() {
        for size in [128, 4096] {
            let mut w = ChunkWriter::new();
            let mut expected = Vec::new();
            let mut got = Vec::new();
            w.set_chunk_size(size, &mut expected).unwrap();
            got.extend_from_slice(&expected);
            let cases = cases();
            for (h, p) in &cases {
                let pc = PreChunked::new(h.csid, h.type_id, p, size).unwrap();
                assert_eq!(pc.payload_pieces().collect::<Vec<_>>().concat(), *p);
                w.write(h, p, &mut expected).unwrap();
                if pc.is_direct(h.timestamp, size) {
                    got.extend_from_slice(&pc.header(h.timestamp, h.stream_id));
                    got.extend_from_slice(pc.body());
                } else {
                    assert!(h.timestamp >= EXTENDED && p.len() > size as usize);
                    pc.write_to(&w, h.timestamp, h.stream_id, &mut got).unwrap();
                }
            }
            assert_eq!(got, expected, "chunk size {size}");
            let out = read_all(&got, 333);
            assert_eq!(out.len(), cases.len() + 1);
        }
    }

    #[test]
    fn prechunked_at_another_chunk_size_is_rechunked() {
        let p = pat(10_000, 5);
        let pc = PreChunked::new(6, TYPE_VIDEO, &p, 4096).unwrap();
        assert!(!pc.is_direct(40, 128));
        let w = ChunkWriter::new(); // 128
        let mut got = Vec::new();
        pc.write_to(&w, 40, 1, &mut got).unwrap();
        let mut expected = Vec::new();
        w.write(&header(6, 40, TYPE_VIDEO, 1), &p, &mut expected)
            .unwrap();
        assert_eq!(got, expected);
    }
}
