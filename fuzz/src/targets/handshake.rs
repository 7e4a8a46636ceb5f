//! `handshake`: rml_rtmp's server-side `Handshake::process_bytes`, which livesnap runs on
//! every accepted socket before anything else, over arbitrary bytes pushed in arbitrary
//! pieces.
//!
//! Layout: a wide [`Split`] header, then what the client sends (C0, C1, C2, then the
//! first chunks).
//!
//! Invariants: no panic; a C0 other than 3 is refused by the push that carries it; the
//! server answers S0+S1 (1537 bytes, starting with 3) to the first push and S2 (1536
//! bytes) once C1 is complete; it completes exactly at the push that brings C0+C1+C2
//! (3073 bytes) and hands back every byte after them, unchanged; a completed handshake
//! refuses more input.

use rml_rtmp::handshake::{Handshake, HandshakeError, HandshakeProcessResult, PeerType};

use super::input::Split;

const PACKET: usize = 1536;
/// C0 and C1: what the server needs before it sends S2.
const C0_C1: usize = 1 + PACKET;
/// C0, C1 and C2: the whole client side of the handshake.
const C0_C1_C2: usize = 1 + 2 * PACKET;

pub fn run(data: &[u8]) {
    let split = Split::parse(data, true);
    let stream = split.stream;
    let mut hs = Handshake::new(PeerType::Server);
    let mut fed = 0;
    let mut responses = Vec::new();
    for piece in split.pieces() {
        let before = fed;
        fed += piece.len();
        let result = hs.process_bytes(piece);
        if stream[0] != 3 {
            assert!(
                matches!(result, Err(HandshakeError::BadVersionId)),
                "C0 {} accepted: {result:?}",
                stream[0]
            );
            return;
        }
        match result {
            Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                assert!(fed < C0_C1_C2, "not complete after {fed} bytes");
                responses.extend_from_slice(&response_bytes);
                check_responses(&responses, fed);
            }
            Ok(HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            }) => {
                assert!(
                    before < C0_C1_C2 && fed >= C0_C1_C2,
                    "completed after {fed} bytes (previous push ended at {before})"
                );
                responses.extend_from_slice(&response_bytes);
                check_responses(&responses, fed);
                assert_eq!(
                    remaining_bytes,
                    &stream[C0_C1_C2..fed],
                    "bytes after C2 not handed back unchanged"
                );
                assert!(
                    matches!(
                        hs.process_bytes(&[]),
                        Err(HandshakeError::HandshakeAlreadyCompleted)
                    ),
                    "a completed handshake took more input"
                );
                return;
            }
            Err(e) => panic!("C0 3 handshake failed after {fed} bytes: {e:?}"),
        }
    }
}

/// S0+S1 after any input, S2 as well once C0+C1 are in.
fn check_responses(responses: &[u8], fed: usize) {
    let expected = if fed >= C0_C1 { C0_C1_C2 } else { C0_C1 };
    assert_eq!(responses.len(), expected, "response after {fed} bytes");
    assert_eq!(responses[0], 3, "S0");
}
