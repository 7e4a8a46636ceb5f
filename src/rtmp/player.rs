//! The player's side of a connection: its place in the stream it plays (`Playing`, and
//! `Feed` while a publish of it is live), the play that waits for its stream's publish
//! (`Wait`), the timestamps it is sent (`Timeline`), and the batch buffers players share.
//! No socket here: `conn` reads and writes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::events::{self, ClientEvent};
use crate::hub::{Frame, FrameKind, Subscription};
use crate::live::{LiveStream, Seat};
use crate::names::StreamId;
use crate::node::{Access, Node};

/// The send buffer a player's socket gets (the kernel doubles it for its bookkeeping):
/// about 0.5 s of a 4 Mbit/s stream, above the bandwidth-delay product of most links. What
/// the kernel holds counts as sent, so a small buffer lets a stalled player show as behind
/// quickly, and keeps the memory a player costs small.
pub(super) const PLAYER_SNDBUF: usize = 128 << 10;

/// A player's read buffer (it sends commands and acknowledgements only).
pub(super) const PLAYER_READ_BUF: usize = 2048;

/// What a player's output buffer keeps between batches; a bigger one goes back to
/// `BATCH_BUFFERS` after each write, so an idle player holds no copy of a frame (the frames
/// themselves are the hub's, shared by every player).
const PLAYER_OUT_KEEP: usize = 4096;
/// Batch buffers kept for reuse, and the largest kept.
const POOL_BUFFERS: usize = 16;
const POOL_BUFFER_MAX: usize = 1 << 20;

/// A connection's play, from its start to its end: counted in `livesnap_players_active`
/// and reported as `play` and `play_done` events once each, however many publishes of the
/// stream it spans (a player waits for the next publish when `[play]
/// wait_for_publish_secs` is set).
pub(super) struct Playing {
    node: Arc<Node>,
    pub id: StreamId,
    peer: SocketAddr,
    start_unix: u64,
    /// `[access]` and `[play]` as they were when the play started (a reload applies from
    /// the next play).
    pub access: Arc<Access>,
    /// The publish being played; `None` while the player waits for the next one.
    pub feed: Option<Feed>,
    /// Since when the player has been behind (it skipped and has not caught up since).
    pub behind_since: Option<Instant>,
    /// Bytes sent and skipped in the publishes played before this one.
    carried: (u64, u64),
    pub timeline: Timeline,
}

/// The live publish a player reads: its place in the stream's fan-out and in the
/// stream's players (the admin API lists and kicks it there).
pub(super) struct Feed {
    pub sub: Subscription,
    pub seat: Seat,
}

impl Playing {
    pub fn new(node: &Arc<Node>, access: Arc<Access>, feed: Feed) -> Playing {
        node.metrics.players_active.inc();
        let player = &feed.seat.player;
        player
            .position
            .store(feed.sub.position(), Ordering::Relaxed);
        let id = feed.seat.stream().id.clone();
        node.notify.send(
            &events::Event::Play(ClientEvent::new(id.clone(), player.peer, player.start_unix)),
            None,
        );
        Playing {
            node: node.clone(),
            id,
            peer: player.peer,
            start_unix: player.start_unix,
            access,
            feed: Some(feed),
            behind_since: None,
            carried: (0, 0),
            timeline: Timeline::default(),
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn start_unix(&self) -> u64 {
        self.start_unix
    }

    /// A player that stays behind this long is closed (`[play] lag_close_secs`).
    pub fn lag_close(&self) -> Duration {
        self.access.play.lag_close()
    }

    /// How long the player waits for the stream's next publish when the one it plays
    /// ends (zero: its play ends with the publish).
    pub fn keep(&self) -> Duration {
        Duration::from_secs(self.access.play.wait_for_publish_secs)
    }

    /// The publish it played ended: the player leaves that stream's players and waits.
    pub fn pause(&mut self) {
        if let Some(feed) = self.feed.take() {
            self.carried = feed.seat.player.totals();
        }
        self.behind_since = None;
        self.timeline.pause();
    }

    /// The stream's next publish: the player carries on with it, its byte counts too.
    pub fn resume(&mut self, feed: Feed) {
        let player = &feed.seat.player;
        player.bytes.store(self.carried.0, Ordering::Relaxed);
        player
            .skipped_bytes
            .store(self.carried.1, Ordering::Relaxed);
        player
            .position
            .store(feed.sub.position(), Ordering::Relaxed);
        self.feed = Some(feed);
        self.timeline.resume();
    }
}

impl Drop for Playing {
    fn drop(&mut self) {
        let node = &self.node;
        node.metrics.players_active.dec();
        let now = node.clock.now_unix();
        let bytes = match &self.feed {
            Some(feed) => feed.seat.player.totals().0,
            None => self.carried.0,
        };
        node.notify.send(
            &events::Event::PlayDone {
                client: ClientEvent::new(self.id.clone(), self.peer, now),
                duration_secs: now.saturating_sub(self.start_unix),
                bytes,
            },
            None,
        );
    }
}

/// The timestamps a player is sent. Within its first publish, the publisher's own. After a
/// later publish of the stream (an encoder that reconnected, starting again from 0), they
/// are shifted to carry on from the last one sent, plus the time the player waited: a
/// player that records sees one stream whose time never goes back.
#[derive(Debug)]
pub(super) struct Timeline {
    /// Added (wrapping, as RTMP time wraps) to the publish's timestamps; `None` from a
    /// new publish until its first audio or video frame.
    shift: Option<u32>,
    /// The last timestamp sent.
    last: u32,
    /// When the previous publish ended (while waiting for the next).
    paused_at: Option<Instant>,
}

impl Default for Timeline {
    fn default() -> Timeline {
        Timeline {
            shift: Some(0),
            last: 0,
            paused_at: None,
        }
    }
}

impl Timeline {
    /// The timestamp to send `frame` with.
    pub fn stamp(&mut self, frame: &Frame) -> u32 {
        let shift = match self.shift {
            Some(shift) => shift,
            None if is_media(frame.kind) => {
                let gap = self.paused_at.take().map_or(0, |at| {
                    u32::try_from(at.elapsed().as_millis()).unwrap_or(u32::MAX)
                });
                // At least 1 ms after the last one sent.
                let shift = self
                    .last
                    .wrapping_add(gap.max(1))
                    .wrapping_sub(frame.timestamp);
                self.shift = Some(shift);
                shift
            }
            // Metadata and sequence headers ahead of the new publish's first frame: at the
            // point the player has reached.
            None => return self.last,
        };
        self.last = frame.timestamp.wrapping_add(shift);
        self.last
    }

    fn pause(&mut self) {
        self.paused_at = Some(Instant::now());
    }

    fn resume(&mut self) {
        self.shift = None;
    }
}

/// Audio or video, not a sequence header.
fn is_media(kind: FrameKind) -> bool {
    matches!(
        kind,
        FrameKind::Audio { header: false } | FrameKind::Video { header: false, .. }
    )
}

/// A play waiting for its stream's publish: before the play starts (the client has its
/// answer only then), or between two publishes. Counted in `livesnap_players_waiting`
/// while it lasts; the connection reads its socket meanwhile, so a client that leaves is
/// gone at once.
pub(super) struct Wait {
    pub id: StreamId,
    pub secs: u64,
    /// What the play was admitted under.
    pub access: Arc<Access>,
    /// Resolves with the stream once a publish of it is live, or `None` at the deadline.
    pub live: Pin<Box<dyn Future<Output = Option<Arc<LiveStream>>> + Send>>,
    node: Arc<Node>,
    /// In `livesnap_players_waiting` (a wait of zero is a look, not a wait).
    counted: bool,
}

impl Wait {
    /// A wait of `wait` for `id` to go live (zero: a look, not counted as waiting).
    pub fn new(node: &Arc<Node>, id: StreamId, access: Arc<Access>, wait: Duration) -> Wait {
        let counted = !wait.is_zero();
        if counted {
            node.metrics.players_waiting.inc();
        }
        let live = {
            let (node, id) = (node.clone(), id.clone());
            Box::pin(async move { node.registry.wait_live(&id, wait).await })
        };
        Wait {
            id,
            secs: wait.as_secs(),
            access,
            live,
            node: node.clone(),
            counted,
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if self.counted {
            self.node.metrics.players_waiting.dec();
        }
    }
}

/// Most media messages, and bytes, queued for a player before they are written out.
pub(super) const PLAYER_BATCH: usize = 64;
pub(super) const PLAYER_BATCH_BYTES: usize = 64 << 10;

/// Players' batch buffers between batches, shared by every player of the node: a player
/// takes one for a batch and gives it back once the batch is written, so only the players
/// writing at that moment hold one. Hundreds of players each keeping the capacity of their
/// largest batch (a keyframe) was most of their memory, and freeing it after each write
/// instead left the allocator's heap full of holes (`benches/players.sh`,
/// docs/performance.md "Players").
pub(super) struct BatchBuffers {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl BatchBuffers {
    const fn new() -> BatchBuffers {
        BatchBuffers {
            free: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn free(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A panic while holding it cannot leave the list inconsistent.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer, with the capacity of an earlier batch when one is free.
    fn take(&self) -> Vec<u8> {
        self.free().pop().unwrap_or_default()
    }

    /// Keeps `buf` for the next batch, unless it is small, huge, or enough are kept.
    fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() <= PLAYER_OUT_KEEP || buf.capacity() > POOL_BUFFER_MAX {
            return;
        }
        buf.clear();
        let mut free = self.free();
        if free.len() < POOL_BUFFERS {
            free.push(buf);
        }
    }
}

pub(super) static BATCH_BUFFERS: BatchBuffers = BatchBuffers::new();

/// Before a player's batch: an empty output buffer is swapped for a pooled one.
pub(super) fn batch_buffer(out: &mut Vec<u8>, pool: &BatchBuffers) {
    if out.is_empty() && out.capacity() <= PLAYER_OUT_KEEP {
        let pooled = pool.take();
        if pooled.capacity() > out.capacity() {
            *out = pooled;
        }
    }
}

/// Empties the output buffer once it is written; a player's goes back to the pool when it
/// is bigger than `PLAYER_OUT_KEEP`.
pub(super) fn written(out: &mut Vec<u8>, playing: bool, pool: &BatchBuffers) {
    out.clear();
    if playing && out.capacity() > PLAYER_OUT_KEEP {
        pool.give(std::mem::take(out));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: FrameKind, timestamp: u32) -> Frame {
        Frame {
            kind,
            timestamp,
            data: bytes::Bytes::from_static(b"x"),
        }
    }

    const KEY: FrameKind = FrameKind::Video {
        keyframe: true,
        header: false,
    };
    const AVC_HEADER: FrameKind = FrameKind::Video {
        keyframe: true,
        header: true,
    };

    #[test]
    fn the_first_publish_keeps_its_timestamps() {
        let mut t = Timeline::default();
        for ts in [0, 0, 33, 20, 66] {
            assert_eq!(t.stamp(&frame(KEY, ts)), ts);
        }
        assert_eq!(t.stamp(&frame(FrameKind::Metadata, 5)), 5);
    }

    #[test]
    fn a_later_publish_carries_on_after_the_wait() {
        let mut t = Timeline::default();
        assert_eq!(t.stamp(&frame(KEY, 9_000)), 9_000);
        t.pause();
        // The previous publish ended 1.5 s ago.
        t.paused_at = Some(Instant::now() - Duration::from_millis(1500));
        t.resume();
        // Headers ahead of the first picture: at the point reached.
        assert_eq!(t.stamp(&frame(FrameKind::Metadata, 0)), 9_000);
        assert_eq!(t.stamp(&frame(AVC_HEADER, 0)), 9_000);
        assert_eq!(t.stamp(&frame(FrameKind::Audio { header: true }, 0)), 9_000);
        // The first picture after the time waited; the rest keep their spacing.
        let first = t.stamp(&frame(KEY, 40));
        assert!((10_500..10_600).contains(&first), "{first}");
        let audio = FrameKind::Audio { header: false };
        assert_eq!(t.stamp(&frame(audio, 63)), first + 23);
        assert_eq!(t.stamp(&frame(KEY, 73)), first + 33);
    }

    #[test]
    fn the_shift_wraps_as_rtmp_time_does_and_never_stands_still() {
        let mut t = Timeline::default();
        t.stamp(&frame(KEY, u32::MAX - 10));
        t.pause();
        t.resume();
        // No time waited: still 1 ms on, across the wrap.
        assert_eq!(t.stamp(&frame(KEY, 500)), u32::MAX - 9);
        assert_eq!(t.stamp(&frame(KEY, 540)), 30);
    }

    #[test]
    fn a_player_keeps_no_batch_sized_output_buffer_between_writes() {
        let pool = BatchBuffers::new();
        // A 1080p keyframe batch: 150 KiB.
        let mut out = Vec::with_capacity(150 << 10);
        out.extend_from_slice(&[7u8; 150 << 10]);
        let at = out.as_ptr();
        written(&mut out, true, &pool);
        assert!(out.is_empty());
        assert!(
            out.capacity() <= PLAYER_OUT_KEEP,
            "a player kept {} bytes of output buffer",
            out.capacity()
        );
        // The next batch, of this player or another, reuses that memory: no allocation.
        let mut next = Vec::new();
        batch_buffer(&mut next, &pool);
        assert_eq!(next.as_ptr(), at);
        assert!(next.capacity() >= 150 << 10);
        // Nothing pooled: the buffer stays as it is.
        let mut other = Vec::new();
        batch_buffer(&mut other, &pool);
        assert_eq!(other.capacity(), 0);
        // Small batches (audio) keep their buffer: no allocation per message.
        let mut small = Vec::with_capacity(1024);
        small.extend_from_slice(&[1u8; 700]);
        written(&mut small, true, &pool);
        assert!(small.is_empty());
        assert_eq!(small.capacity(), 1024);
        // A publisher's (acknowledgements, answers) is left alone.
        let mut publisher = Vec::with_capacity(150 << 10);
        publisher.push(1);
        written(&mut publisher, false, &pool);
        assert!(publisher.is_empty());
        assert_eq!(publisher.capacity(), 150 << 10);
    }

    #[test]
    fn the_batch_pool_is_bounded() {
        let pool = BatchBuffers::new();
        for _ in 0..POOL_BUFFERS + 5 {
            pool.give(Vec::with_capacity(64 << 10));
        }
        pool.give(Vec::with_capacity(POOL_BUFFER_MAX + 1));
        pool.give(Vec::with_capacity(PLAYER_OUT_KEEP));
        let kept = pool.free();
        assert_eq!(kept.len(), POOL_BUFFERS);
        assert!(kept
            .iter()
            .all(|b| b.capacity() == 64 << 10 && b.is_empty()));
    }
}
