//! RTMP bytes that a real client never sends, for hostile peers and fuzz seeds.
//!
//! Owns the pieces a test needs to write the wire itself: the client handshake alone (so
//! that anything may follow it), chunk headers of every form (`rtmp::chunk_writer` writes
//! whole messages with a type-0 header and type-3 continuations only, by design; headers of
//! fmt 1–3 starting a message, interleaved chunks, chunk size changes in mid-message and
//! missing extended timestamps are written with [`chunk_header`]), and waiting for the
//! server to close. Whole well-formed messages should go through `rtmp::chunk_writer`, and
//! publishes through `rtmp::client::Publisher` (see `testing::replay`).

use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The 3-byte timestamp value that announces a 4-byte extended timestamp.
pub const EXTENDED_TIMESTAMP: u32 = 0x00FF_FFFF;

/// Performs the client side of the RTMP handshake on `io` (rml_rtmp's, with the fp9
/// digest); returns the bytes the server sent after S2. No deadline: wrap it in
/// `tokio::time::timeout`. A close during the handshake is `UnexpectedEof`, a bad answer
/// `InvalidData`.
pub async fn handshake<S>(io: &mut S) -> std::io::Result<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let invalid = |e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:?}"));
    let mut hs = Handshake::new(PeerType::Client);
    io.write_all(&hs.generate_outbound_p0_and_p1().map_err(invalid)?)
        .await?;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match hs.process_bytes(&buf[..n]).map_err(invalid)? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                io.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                io.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

/// A chunk header: the basic header (1, 2 or 3 bytes for `csid`), the message header
/// fields that `fmt` carries (fmt 0: timestamp, length, type, stream id; fmt 1: delta,
/// length, type; fmt 2: delta; fmt 3: nothing), and the 4-byte extended timestamp when
/// `ts` (absolute or delta) is ≥ 0xFFFFFF, for fmt 0–2 only: a fmt-3 chunk's repeat of it
/// is the caller's to append, or to leave out as some encoders do. Nothing is checked
/// (`fmt` is masked to 2 bits, `csid` taken modulo what fits), so that tests can write
/// chunks a server must refuse.
pub fn chunk_header(fmt: u8, csid: u32, ts: u32, len: u32, type_id: u8, stream_id: u32) -> Vec<u8> {
    let fmt = fmt & 3;
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
        b.extend_from_slice(&ts.min(EXTENDED_TIMESTAMP).to_be_bytes()[1..]);
    }
    if fmt < 2 {
        b.extend_from_slice(&len.to_be_bytes()[1..]);
        b.push(type_id);
    }
    if fmt == 0 {
        b.extend_from_slice(&stream_id.to_le_bytes());
    }
    if fmt < 3 && ts >= EXTENDED_TIMESTAMP {
        b.extend_from_slice(&ts.to_be_bytes());
    }
    b
}

/// Reads (keeping what arrives) until the peer closes — EOF or a socket error — or
/// `limit` passes. Returns the bytes received when it closed, `None` when it was still
/// open at `limit`.
pub async fn read_until_closed<R: AsyncRead + Unpin>(
    io: &mut R,
    limit: Duration,
) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk_writer::{ChunkWriter, MessageHeader};
    use crate::rtmp::framing::{ChunkReader, FramingLimits, TYPE_AUDIO, TYPE_VIDEO};

    #[test]
    fn type0_headers_agree_with_the_library_writer() {
        let w = ChunkWriter::new();
        for (csid, ts) in [
            (6, 40),
            (64, 0x00FF_FFFE),
            (320, 0x00FF_FFFF),
            (65599, u32::MAX),
        ] {
            let h = MessageHeader {
                csid,
                timestamp: ts,
                type_id: TYPE_VIDEO,
                stream_id: 0x0102_0304,
            };
            let mut expected = Vec::new();
            w.write(&h, &[7; 100], &mut expected).unwrap();
            let mut got = chunk_header(0, csid, ts, 100, TYPE_VIDEO, 0x0102_0304);
            got.extend_from_slice(&[7; 100]);
            assert_eq!(got, expected, "csid {csid} ts {ts:#x}");
        }
    }

    #[test]
    fn compressed_headers_read_back() {
        // fmt 0, then fmt 1 (new length and type), fmt 2 (new delta), fmt 3 (same again).
        let mut b = chunk_header(0, 4, 1000, 3, TYPE_AUDIO, 1);
        b.extend_from_slice(&[1, 2, 3]);
        b.extend(chunk_header(1, 4, 20, 2, TYPE_VIDEO, 0));
        b.extend_from_slice(&[4, 5]);
        b.extend(chunk_header(2, 4, 0x0100_0000, 0, 0, 0));
        b.extend_from_slice(&[6, 7]);
        b.extend(chunk_header(3, 4, 0, 0, 0, 0));
        b.extend_from_slice(&0x0100_0000u32.to_be_bytes());
        b.extend_from_slice(&[8, 9]);
        let mut reader = ChunkReader::new(FramingLimits::default());
        let mut out = Vec::new();
        reader.push(&b, &mut out).unwrap();
        let got: Vec<_> = out
            .iter()
            .map(|m| (m.timestamp, m.type_id, m.stream_id, m.payload.to_vec()))
            .collect();
        assert_eq!(
            got,
            [
                (1000, TYPE_AUDIO, 1, vec![1, 2, 3]),
                (1020, TYPE_VIDEO, 1, vec![4, 5]),
                (1020 + 0x0100_0000, TYPE_VIDEO, 1, vec![6, 7]),
                (1020 + 0x0200_0000, TYPE_VIDEO, 1, vec![8, 9]),
            ]
        );
    }
}
