//! What one client connection has queued for its socket, in order: bytes of its own
//! (chunk headers, commands, control messages) and slices of shared payloads (a hub
//! frame's `Bytes`, which every relay target of a stream holds by reference).
//!
//! A media message is queued by `ChunkWriter::write_shared` (in `chunk_writer`, which
//! builds on this queue): its chunk headers go into the outbox's own buffer and its
//! payload in as slices of the shared frame, so relaying a frame copies nothing in user
//! space but ≈ 1 byte per chunk; the socket gets it in vectored writes. The queue does no
//! I/O: [`Outbox::io_slices`] and [`Outbox::advance`] are what the client connection's
//! write loop calls.
//!
//! Players do not use it: for a player's small batches one copy into a contiguous buffer
//! and a plain `send` measured cheaper than a vectored write of many small slices
//! (docs/performance.md, "Players").

use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::Range;

use bytes::{Buf, Bytes};

/// At most this many slices go to one vectored write (Linux takes up to 1024).
pub const MAX_SLICES: usize = 256;

/// Part-queue capacity kept once everything is written (a keyframe batch needs more).
const PARTS_KEEP: usize = 64;

#[derive(Debug)]
enum Part {
    /// A range of `Outbox::own`.
    Own(Range<usize>),
    Shared(Bytes),
}

/// Bytes queued for a socket: own bytes and shared slices, in order.
#[derive(Debug)]
pub struct Outbox {
    own: Vec<u8>,
    parts: VecDeque<Part>,
    len: usize,
    own_keep: usize,
}

impl Outbox {
    /// An empty outbox that keeps up to `own_keep` bytes of own-buffer capacity once
    /// everything is written (a client that copies whole messages in keeps its largest,
    /// so it does not allocate per message); a bigger buffer is given back.
    pub fn new(own_keep: usize) -> Outbox {
        Outbox {
            own: Vec::new(),
            parts: VecDeque::new(),
            len: 0,
            own_keep,
        }
    }

    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues what `f` appends to the own buffer (chunk headers, a whole small message).
    pub fn own<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let start = self.own.len();
        let r = f(&mut self.own);
        let end = self.own.len();
        if end > start {
            self.len += end - start;
            match self.parts.back_mut() {
                Some(Part::Own(last)) if last.end == start => last.end = end,
                _ => self.parts.push_back(Part::Own(start..end)),
            }
        }
        r
    }

    /// Queues `bytes` from the own buffer (a copy).
    pub fn put_own(&mut self, bytes: &[u8]) {
        self.own(|b| b.extend_from_slice(bytes));
    }

    /// Queues a shared slice (no copy: the outbox holds a reference until it is written).
    pub fn put_shared(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.parts.push_back(Part::Shared(bytes));
        }
    }

    /// The next slices to write, at most `out.len()`; returns how many were filled.
    pub fn io_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        out.iter_mut()
            .zip(&self.parts)
            .map(|(slot, part)| {
                *slot = IoSlice::new(match part {
                    Part::Own(r) => &self.own[r.clone()],
                    Part::Shared(b) => b,
                })
            })
            .count()
    }

    /// Drops the first `n` queued bytes (they were written). Once everything is written
    /// the buffers go back to their kept capacity.
    pub fn advance(&mut self, mut n: usize) {
        assert!(n <= self.len, "advance({n}) past {} queued bytes", self.len);
        self.len -= n;
        while n > 0 {
            let front = self.parts.front_mut().expect("len counts the parts");
            let here = match front {
                Part::Own(r) => r.len(),
                Part::Shared(b) => b.len(),
            };
            if n < here {
                match front {
                    Part::Own(r) => r.start += n,
                    Part::Shared(b) => b.advance(n),
                }
                return;
            }
            n -= here;
            self.parts.pop_front();
        }
        if self.parts.is_empty() {
            self.own.clear();
            self.own.shrink_to(self.own_keep);
            self.parts.shrink_to(PARTS_KEEP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: usize = 4096;

    /// Everything queued, as one buffer, through `io_slices` in windows of `max` slices
    /// and advances of at most `step` bytes (a socket that takes a little at a time).
    fn drain(o: &mut Outbox, max: usize, step: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while !o.is_empty() {
            let mut slices = vec![IoSlice::new(&[]); max];
            let k = o.io_slices(&mut slices);
            assert!(k > 0);
            let mut take = step;
            let mut n = 0;
            for s in &slices[..k] {
                let t = s.len().min(take);
                got.extend_from_slice(&s[..t]);
                take -= t;
                n += t;
                if take == 0 {
                    break;
                }
            }
            o.advance(n);
        }
        got
    }

    fn filled() -> (Outbox, Vec<u8>) {
        let mut o = Outbox::new(KEEP);
        let shared = Bytes::from((0..=255u8).cycle().take(5000).collect::<Vec<_>>());
        o.put_own(b"head");
        o.put_shared(shared.slice(0..4000));
        o.put_own(&[0xc6]);
        o.put_own(b"!");
        o.put_shared(shared.slice(4000..));
        o.put_shared(Bytes::new());
        o.own(|b| b.extend_from_slice(b"tail"));
        let mut want = b"head".to_vec();
        want.extend_from_slice(&shared[..4000]);
        want.extend_from_slice(&[0xc6, b'!']);
        want.extend_from_slice(&shared[4000..]);
        want.extend_from_slice(b"tail");
        (o, want)
    }

    #[test]
    fn writes_own_and_shared_bytes_in_order_however_the_socket_takes_them() {
        for (max, step) in [(256, usize::MAX), (1, 7), (2, 1000), (3, 3999), (256, 1)] {
            let (mut o, want) = filled();
            assert_eq!(o.len(), want.len());
            assert_eq!(drain(&mut o, max, step), want, "max {max} step {step}");
            assert!(o.is_empty());
        }
    }

    #[test]
    fn adjacent_own_bytes_are_one_slice() {
        let (o, _) = filled();
        let mut slices = [IoSlice::new(&[]); 16];
        // head, shared, [0xc6 '!'], shared, tail: the empty shared slice adds nothing.
        assert_eq!(o.io_slices(&mut slices), 5);
        assert_eq!(&*slices[2], &[0xc6, b'!']);
    }

    #[test]
    fn a_written_outbox_gives_back_big_buffers_and_can_be_filled_again() {
        let mut o = Outbox::new(KEEP);
        o.put_own(&vec![1u8; 1 << 20]);
        for _ in 0..1000 {
            o.put_shared(Bytes::from_static(b"x"));
        }
        let n = o.len();
        o.advance(n);
        assert!(o.own.capacity() <= KEEP, "{}", o.own.capacity());
        assert!(o.parts.capacity() < 1000, "{}", o.parts.capacity());
        o.put_own(b"ab");
        o.put_shared(Bytes::from_static(b"cd"));
        assert_eq!(drain(&mut o, 4, 3), b"abcd");
    }

    #[test]
    #[should_panic(expected = "past")]
    fn advancing_past_the_queue_is_a_bug() {
        let mut o = Outbox::new(KEEP);
        o.put_own(b"abc");
        o.advance(4);
    }
}
