//! `framing`: our bounded chunk reader (`rtmp::framing::ChunkReader`) over an arbitrary
//! chunk stream pushed in arbitrary pieces.
//!
//! Layout: one byte choosing the limits (see [`limits`]), a narrow [`Split`] header, then
//! the chunk stream as it would follow the handshake.
//!
//! Invariants:
//! - no panic (debug assertions are on under cargo-fuzz and in `cargo test`);
//! - memory: after every push, `buffered_bytes()` is at most one chunk header (18 bytes)
//!   plus the declared lengths of the partial messages (what the budget was charged:
//!   a buffer is allocated at its message's declared length, up to
//!   `framing::PREALLOC_MAX`, and grows with bytes pushed beyond that), and at most
//!   18 + `max_chunk_streams` × the largest cap; after an error it is 0 and the reader
//!   stays poisoned;
//! - every message is within its type's cap, on a chunk stream id 2..=65599, and
//!   `chunk_size()` stays within 128..=16 MiB;
//! - the same messages, the same error and the same final chunk size whatever the split;
//! - every message written back with `write_single_chunk` (what the session feeds
//!   rml_rtmp) reads back identically.

use livesnap::rtmp::framing::{
    self, ChunkReader, FramingError, FramingLimits, Message, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE,
    TYPE_AGGREGATE, TYPE_AUDIO, TYPE_SET_CHUNK_SIZE, TYPE_VIDEO,
};

use super::input::Split;

/// Longest chunk header (basic 3 + message 11 + extended timestamp 4).
const MAX_HEADER_LEN: usize = 18;

/// Limits chosen by the first input byte: the server's defaults, or small caps so that
/// the limit paths are reached with small inputs.
pub fn limits(byte: u8) -> FramingLimits {
    if byte & 1 == 0 {
        return FramingLimits::default();
    }
    FramingLimits {
        max_message_len: [300, 1000, 5000, 4 << 20][usize::from(byte >> 1) & 3],
        max_command_len: [50, 200, 1000, 64 << 10][usize::from(byte >> 3) & 3],
        max_chunk_streams: 1 + usize::from(byte >> 5),
    }
}

fn cap_for(limits: &FramingLimits, type_id: u8) -> u32 {
    match type_id {
        TYPE_AUDIO | TYPE_VIDEO | TYPE_AGGREGATE => limits.max_message_len,
        _ => limits.max_command_len,
    }
}

/// Messages, the error if any, and the final chunk size.
type Outcome = (Vec<Message>, Option<FramingError>, u32);

/// Pushes `pieces` one by one, checking the memory bound after each.
fn read(limits: FramingLimits, pieces: &[&[u8]]) -> Outcome {
    let mut reader = ChunkReader::new(limits);
    let mut out = Vec::new();
    let mut pushed = 0usize;
    let biggest = limits.max_message_len.max(limits.max_command_len) as usize;
    for piece in pieces {
        pushed += piece.len();
        let result = reader.push(piece, &mut out);
        let held = reader.buffered_bytes();
        if let Err(e) = result {
            assert_eq!(held, 0, "buffers kept after {e}");
            assert_eq!(reader.push(&[], &mut out), Err(FramingError::Poisoned));
            return (out, Some(e), reader.chunk_size());
        }
        let declared = reader.partial_declared();
        assert!(
            held <= MAX_HEADER_LEN + declared,
            "{held} bytes held with {declared} declared by partial messages"
        );
        // Beyond the preallocation, buffers grow only with what arrived.
        assert!(
            held <= MAX_HEADER_LEN + 2 * pushed + limits.max_chunk_streams * framing::PREALLOC_MAX,
            "{held} bytes held after {pushed} pushed"
        );
        assert!(
            held <= MAX_HEADER_LEN + limits.max_chunk_streams * biggest,
            "{held} bytes held, limits {limits:?}"
        );
        let size = reader.chunk_size();
        assert!((MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size), "{size}");
    }
    (out, None, reader.chunk_size())
}

pub fn run(data: &[u8]) {
    let Some((&limits_byte, rest)) = data.split_first() else {
        return;
    };
    let limits = limits(limits_byte);
    let split = Split::parse(rest, false);
    let whole = read(limits, &[split.stream]);
    let pieces = read(limits, &split.pieces());
    assert_eq!(whole, pieces, "outcome depends on the split");

    let (messages, _, _) = whole;
    for m in &messages {
        assert!((2..=65599).contains(&m.csid), "csid {}", m.csid);
        let cap = cap_for(&limits, m.type_id) as usize;
        assert!(
            m.payload.len() <= cap,
            "{} bytes of type {} over the cap {cap}",
            m.payload.len(),
            m.type_id
        );
    }
    check_rewrite(limits, &messages);
}

/// Writes each message back as one chunk (with a big chunk size in force, as the session
/// does for rml_rtmp) and reads it back.
fn check_rewrite(limits: FramingLimits, messages: &[Message]) {
    // One more chunk stream: the SetChunkSize goes on csid 2, which the input may not use.
    let limits = FramingLimits {
        max_chunk_streams: limits.max_chunk_streams + 1,
        ..limits
    };
    let mut reader = ChunkReader::new(limits);
    let mut out = Vec::new();
    let mut bytes = framing::set_chunk_size_chunk(MAX_CHUNK_SIZE);
    reader.push(&bytes, &mut out).expect("SetChunkSize");
    for m in messages {
        out.clear();
        bytes.clear();
        framing::write_single_chunk(m, m.csid, &mut bytes);
        match reader.push(&bytes, &mut out) {
            Ok(()) => assert_eq!(out, std::slice::from_ref(m), "rewritten message"),
            Err(e) => panic!("rewritten message refused: {e}, {m:?}"),
        }
        if m.type_id == TYPE_SET_CHUNK_SIZE {
            // Restore the big chunk size for the next single-chunk message.
            bytes = framing::set_chunk_size_chunk(MAX_CHUNK_SIZE);
            out.clear();
            reader.push(&bytes, &mut out).expect("SetChunkSize");
        }
    }
}
