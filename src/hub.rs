//! Fan-out of one live publish to the consumers that want its media as it arrives
//! (RTMP players, relays to upstream origins). No I/O: the ingest side pushes
//! [`Frame`]s, each consumer reads them through its own [`Subscription`] at its own pace.
//!
//! Memory is bounded by one shared window per stream, measured in bytes: the hub keeps a
//! frame only while a consumer has still to read it or a new consumer would start at or
//! before it (the newest keyframe onward), and never more than the last `window_bytes`
//! of frames. So a stream whose consumers keep up holds about one group of pictures, and
//! the window is only filled by a consumer that lags. A consumer
//! that falls so far behind that its next frame was trimmed does not hold the window
//! back: it is told how much it lost ([`Item::Resync`]) and resumes at the newest
//! keyframe still in the window (or waits for the next one), after the stream's
//! metadata and sequence headers again, so a decoder downstream restarts cleanly. The
//! publisher is never slowed by a consumer.
//!
//! A new consumer starts at the newest keyframe in the window (the GOP cache), after
//! the metadata and sequence headers, so a player shows a picture at once. Without the
//! GOP cache ([`HubLimits::gop_cache`] false) the hub keeps only what a consumer has
//! still to read, and a new consumer starts at the next keyframe that arrives: a stream
//! whose consumers keep up then holds almost nothing.
//!
//! A stream without video (audio only, as a radio station publishes) has no keyframes:
//! until a video message arrives, every audio frame is a place to start.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// An `onMetaData` data message (AMF0 body as received).
    Metadata,
    /// An audio message; `header` for the codec's sequence header (AAC config).
    Audio { header: bool },
    /// A video message; `header` for the codec's sequence header (AVC config).
    Video { keyframe: bool, header: bool },
}

/// One RTMP media message of the publish, its payload byte-identical to what arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    /// The message's RTMP timestamp (ms) as the publisher sent it.
    pub timestamp: u32,
    pub data: Bytes,
}

impl Frame {
    /// A video message (FLV video tag body) as it arrived; keyframes and sequence
    /// headers are read off its first bytes (legacy and enhanced RTMP headers).
    pub fn video(timestamp: u32, data: Bytes) -> Frame {
        let first = data.first().copied().unwrap_or(0);
        let frame_type = (first >> 4) & 0x07;
        // Which packet carries coded pictures: AVC/HEVC packet type 1 (0 is the sequence
        // header, 2 the end of sequence), enhanced RTMP CodedFrames (1) or CodedFramesX
        // (3); other legacy codecs have no packet type.
        let (header, coded) = if first & 0x80 != 0 {
            let packet = first & 0x0f;
            (packet == 0, matches!(packet, 1 | 3))
        } else if matches!(first & 0x0f, 7 | 12) {
            (data.get(1) == Some(&0), data.get(1) == Some(&1))
        } else {
            (false, true)
        };
        Frame {
            kind: FrameKind::Video {
                keyframe: frame_type == 1 && coded,
                header,
            },
            timestamp,
            data,
        }
    }

    /// An audio message (FLV audio tag body) as it arrived; AAC's sequence header, and
    /// enhanced RTMP's (sound format 9: Opus, FLAC, AC-3…, audio packet type 0 =
    /// sequence start), are recognised.
    pub fn audio(timestamp: u32, data: Bytes) -> Frame {
        let header = match data.first().map(|b| (b >> 4, b & 0x0f)) {
            Some((10, _)) => data.get(1) == Some(&0),
            Some((9, packet)) => packet == 0,
            _ => false,
        };
        Frame {
            kind: FrameKind::Audio { header },
            timestamp,
            data,
        }
    }

    /// Metadata or a sequence header: what a consumer needs before any picture.
    pub fn is_header(&self) -> bool {
        matches!(
            self.kind,
            FrameKind::Metadata
                | FrameKind::Audio { header: true }
                | FrameKind::Video { header: true, .. }
        )
    }

    /// A picture a decoder can start at (not a sequence header).
    pub fn is_keyframe(&self) -> bool {
        matches!(
            self.kind,
            FrameKind::Video {
                keyframe: true,
                header: false
            }
        )
    }
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Frame(Frame),
    /// The consumer fell behind the window: `frames` frames (`bytes` bytes) were skipped.
    /// The frames that follow start with metadata and sequence headers, then a keyframe.
    Resync {
        frames: u64,
        bytes: u64,
    },
}

/// Bounds of a hub.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Bytes of frames kept for consumers (the most a consumer can lag before a resync).
    pub window_bytes: usize,
    /// Keep the newest group of pictures for new consumers (they start at once); without
    /// it, a new consumer waits for the next keyframe.
    pub gop_cache: bool,
}

impl Default for HubLimits {
    fn default() -> HubLimits {
        HubLimits {
            window_bytes: 16 << 20,
            gop_cache: true,
        }
    }
}

struct State {
    /// Frames with index `first..first + frames.len()`, each with the count of payload
    /// bytes pushed before it (its offset in the stream).
    frames: VecDeque<(u64, Frame)>,
    first: u64,
    /// Payload bytes in `frames`.
    bytes: usize,
    /// Payload bytes pushed since the start.
    pushed: u64,
    /// Index of the newest keyframe (see [`State::is_start`]), if it is still in the window.
    last_keyframe: Option<u64>,
    /// A video message was pushed: from then on only keyframes are places to start.
    video: bool,
    metadata: Option<Frame>,
    audio_header: Option<Frame>,
    video_header: Option<Frame>,
    closed: bool,
    /// Subscriptions now: the non-`FREE` entries of `cursors`, counted apart because the
    /// publishing connection asks on every read.
    subscribers: usize,
    /// Per subscription slot, the index of the next frame it reads (`FREE`: no
    /// subscription); updated under the lock whenever a subscription reads.
    cursors: Vec<u64>,
}

/// A free slot in `State::cursors`.
const FREE: u64 = u64::MAX;

impl State {
    fn next_index(&self) -> u64 {
        self.first + self.frames.len() as u64
    }

    fn headers(&self) -> impl Iterator<Item = &Frame> {
        [&self.metadata, &self.video_header, &self.audio_header]
            .into_iter()
            .flatten()
    }

    /// Whether a consumer may start (or resume) at `f`: a keyframe, or in a stream that
    /// has sent no video, any audio frame.
    fn is_start(&self, f: &Frame) -> bool {
        f.is_keyframe() || (!self.video && matches!(f.kind, FrameKind::Audio { header: false }))
    }

    fn pop_front(&mut self) {
        let (_, f) = self.frames.pop_front().expect("non-empty");
        self.bytes -= f.data.len();
        self.first += 1;
    }

    /// Drops every frame kept (their indexes stay used).
    fn clear(&mut self) {
        self.first = self.next_index();
        self.frames.clear();
        self.bytes = 0;
    }

    /// The stream offset of frame `index` (`pushed` for the next one).
    fn offset(&self, index: u64) -> u64 {
        match self.frames.get((index - self.first) as usize) {
            Some((offset, _)) => *offset,
            None => self.pushed,
        }
    }

    /// Where a new subscription starts: the newest keyframe with the GOP cache, else
    /// the next frame (it then waits for a keyframe).
    fn start(&self, gop_cache: bool) -> u64 {
        match self.last_keyframe {
            Some(k) if gop_cache => k,
            _ => self.next_index(),
        }
    }

    fn trim(&mut self, limits: HubLimits) {
        // Frames every subscription has read that lie before where a new subscription
        // starts are needed by nobody. With the GOP cache, once the previous group of
        // pictures is gone, nothing lies before the keyframe, and the subscriptions'
        // places are not looked at again until the next keyframe (or a lagging reader
        // still holds some), so a push costs no scan.
        let window = limits.window_bytes;
        let start = self.start(limits.gop_cache);
        if self.first < start {
            let slowest = self.cursors.iter().copied().min().unwrap_or(FREE);
            while self.first < start.min(slowest) {
                self.pop_front();
            }
        }
        while self.bytes > window && self.frames.len() > 1 {
            self.pop_front();
        }
        if self.last_keyframe.is_some_and(|k| k < self.first) {
            self.last_keyframe = None;
        }
    }
}

/// The fan-out of one publish. Cloning shares it.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state();
        f.debug_struct("Hub")
            .field("frames", &st.frames.len())
            .field("bytes", &st.bytes)
            .field("subscribers", &st.subscribers)
            .field("closed", &st.closed)
            .finish()
    }
}

struct Inner {
    state: Mutex<State>,
    notify: Notify,
    limits: HubLimits,
}

impl Hub {
    pub fn new(limits: HubLimits) -> Hub {
        Hub {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    frames: VecDeque::new(),
                    first: 0,
                    bytes: 0,
                    pushed: 0,
                    last_keyframe: None,
                    video: false,
                    metadata: None,
                    audio_header: None,
                    video_header: None,
                    closed: false,
                    subscribers: 0,
                    cursors: Vec::new(),
                }),
                notify: Notify::new(),
                limits,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Payload bytes pushed since the stream started (the offset of the next frame).
    pub fn pushed_bytes(&self) -> u64 {
        self.state().pushed
    }

    /// Consumers subscribed now.
    pub fn subscribers(&self) -> usize {
        self.state().subscribers
    }

    /// Publishes one frame to every consumer. Never waits on a consumer. Cheap when
    /// nobody is subscribed: only headers are remembered then.
    pub fn push(&self, frame: Frame) {
        let mut st = self.state();
        if st.closed {
            return;
        }
        match frame.kind {
            FrameKind::Metadata => st.metadata = Some(frame.clone()),
            FrameKind::Audio { header: true } => st.audio_header = Some(frame.clone()),
            FrameKind::Video { header: true, .. } => st.video_header = Some(frame.clone()),
            _ => {}
        }
        let limits = self.inner.limits;
        st.video |= matches!(frame.kind, FrameKind::Video { .. });
        if st.is_start(&frame) {
            if st.subscribers == 0 {
                // Nobody reads: keep only the picture a new consumer starts with.
                st.clear();
            }
            st.last_keyframe = Some(st.next_index());
        }
        if st.subscribers == 0 && (st.last_keyframe.is_none() || !limits.gop_cache) {
            // Nobody reads, and nothing is kept for a new consumer (no keyframe yet to
            // start at, or no GOP cache): keep nothing.
            st.pushed += frame.data.len() as u64;
            st.clear();
            st.last_keyframe = None;
            return;
        }
        st.bytes += frame.data.len();
        let offset = st.pushed;
        st.pushed += frame.data.len() as u64;
        st.frames.push_back((offset, frame));
        st.trim(limits);
        // Only subscriptions wait on `notify`, and one made after this sees the frame: with
        // none, ingest alone skips the notifier's lock on every message.
        let readers = st.subscribers;
        drop(st);
        if readers > 0 {
            self.inner.notify.notify_waiters();
        }
    }

    /// Whether the hub keeps the newest group of pictures ([`HubLimits::gop_cache`]).
    pub fn keeps_gop(&self) -> bool {
        self.inner.limits.gop_cache
    }

    /// Whether the stream has ended ([`Hub::close`]).
    pub fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// Ends the stream: consumers read what is left, then `None`.
    pub fn close(&self) {
        self.state().closed = true;
        self.inner.notify.notify_waiters();
    }

    /// A new consumer, starting with the headers and the newest keyframe in the window
    /// (or, without one, with the next keyframe that arrives).
    pub fn subscribe(&self) -> Subscription {
        let mut st = self.state();
        st.subscribers += 1;
        let cursor = st.start(self.inner.limits.gop_cache);
        let pending = st.headers().cloned().collect();
        let waiting_keyframe = cursor == st.next_index();
        let offset = st.offset(cursor);
        let slot = match st.cursors.iter().position(|&c| c == FREE) {
            Some(slot) => slot,
            None => {
                st.cursors.push(FREE);
                st.cursors.len() - 1
            }
        };
        st.cursors[slot] = cursor;
        Subscription {
            hub: self.clone(),
            slot,
            cursor,
            offset,
            pending,
            waiting_keyframe,
        }
    }
}

/// One consumer's place in the stream.
pub struct Subscription {
    hub: Hub,
    /// Its slot in the hub's `cursors`.
    slot: usize,
    cursor: u64,
    /// Stream offset of the frame at `cursor`.
    offset: u64,
    /// Headers to hand out before the next frame from the window.
    pending: VecDeque<Frame>,
    /// Frames are skipped until a keyframe (after a resync or a start without one).
    waiting_keyframe: bool,
}

impl Subscription {
    /// The next item, or `None` once the stream has ended and everything is read.
    pub async fn next(&mut self) -> Option<Item> {
        let inner = self.hub.inner.clone();
        loop {
            let notified = inner.notify.notified();
            tokio::pin!(notified);
            // Register before looking, so a push between the look and the wait wakes us.
            notified.as_mut().enable();
            if let Some(item) = self.poll_now() {
                return item;
            }
            notified.await;
        }
    }

    /// What `next` would return without waiting: `Some(None)` at the end, `None` when
    /// nothing is there yet.
    pub fn poll_now(&mut self) -> Option<Option<Item>> {
        if let Some(f) = self.pending.pop_front() {
            return Some(Some(Item::Frame(f)));
        }
        let hub = self.hub.clone();
        let mut st = hub.state();
        let found = self.read_locked(&st);
        st.cursors[self.slot] = self.cursor;
        found
    }

    /// `poll_now` after the pending headers, under the hub's lock.
    fn read_locked(&mut self, st: &State) -> Option<Option<Item>> {
        if self.cursor < st.first {
            // Trimmed under us: skip to the newest keyframe still there, or wait for one.
            let to = st.last_keyframe.unwrap_or_else(|| st.next_index());
            let to_offset = st.offset(to);
            let item = Item::Resync {
                frames: to - self.cursor,
                bytes: to_offset - self.offset,
            };
            self.cursor = to;
            self.offset = to_offset;
            self.waiting_keyframe = true;
            self.pending = st.headers().cloned().collect();
            return Some(Some(item));
        }
        while self.cursor < st.next_index() {
            let (offset, f) = &st.frames[(self.cursor - st.first) as usize];
            self.cursor += 1;
            self.offset = offset + f.data.len() as u64;
            if self.waiting_keyframe {
                if st.is_start(f) {
                    self.waiting_keyframe = false;
                } else if !f.is_header() {
                    continue;
                }
            }
            return Some(Some(Item::Frame(f.clone())));
        }
        if st.closed {
            return Some(None);
        }
        None
    }

    /// The stream offset this consumer has read up to (see [`Hub::pushed_bytes`]).
    pub fn position(&self) -> u64 {
        self.offset
    }

    /// Bytes of frames pushed but not yet read by this consumer (its lag).
    pub fn lag_bytes(&self) -> u64 {
        self.hub.state().pushed - self.offset
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut st = self.hub.state();
        st.subscribers = st.subscribers.saturating_sub(1);
        st.cursors[self.slot] = FREE;
        while st.cursors.last() == Some(&FREE) {
            st.cursors.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(ts: u32, keyframe: bool, len: usize) -> Frame {
        Frame {
            kind: FrameKind::Video {
                keyframe,
                header: false,
            },
            timestamp: ts,
            data: Bytes::from(vec![ts as u8; len]),
        }
    }

    fn header(ts: u32) -> Frame {
        Frame {
            kind: FrameKind::Video {
                keyframe: true,
                header: true,
            },
            timestamp: ts,
            data: Bytes::from_static(b"avc-config"),
        }
    }

    fn frames(sub: &mut Subscription) -> Vec<Item> {
        let mut out = Vec::new();
        while let Some(Some(item)) = sub.poll_now() {
            out.push(item);
        }
        out
    }

    fn timestamps(items: &[Item]) -> Vec<u32> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Frame(f) => Some(f.timestamp),
                Item::Resync { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_new_consumer_starts_with_headers_and_the_newest_keyframe() {
        let hub = Hub::new(HubLimits::default());
        hub.push(header(0));
        hub.push(video(0, true, 10));
        hub.push(video(40, false, 10));
        hub.push(video(80, true, 10));
        hub.push(video(120, false, 10));
        let mut sub = hub.subscribe();
        let items = frames(&mut sub);
        assert_eq!(items[0], Item::Frame(header(0)));
        assert_eq!(timestamps(&items), vec![0, 80, 120]);
        hub.push(video(160, false, 10));
        assert_eq!(timestamps(&frames(&mut sub)), vec![160]);
    }

    fn audio(ts: u32, len: usize) -> Frame {
        Frame {
            kind: FrameKind::Audio { header: false },
            timestamp: ts,
            data: Bytes::from(vec![ts as u8; len]),
        }
    }

    #[test]
    fn a_stream_without_video_starts_and_resyncs_at_any_audio_frame() {
        for gop_cache in [true, false] {
            let hub = Hub::new(HubLimits {
                window_bytes: 100,
                gop_cache,
            });
            let aac = Frame {
                kind: FrameKind::Audio { header: true },
                timestamp: 0,
                data: Bytes::from_static(b"aac-config"),
            };
            hub.push(aac.clone());
            hub.push(audio(0, 10));
            hub.push(audio(23, 10));
            let mut sub = hub.subscribe();
            // The header, then (with the GOP cache) the newest audio frame: no wait for a
            // keyframe that never comes.
            let items = frames(&mut sub);
            assert_eq!(items[0], Item::Frame(aac.clone()), "gop_cache {gop_cache}");
            let cached: &[u32] = if gop_cache { &[23] } else { &[] };
            assert_eq!(timestamps(&items[1..]), cached, "gop_cache {gop_cache}");
            hub.push(audio(46, 10));
            assert_eq!(timestamps(&frames(&mut sub)), vec![46]);
            // A consumer that falls a window behind resumes at once, after the header, at
            // the newest frame.
            for i in 0..15 {
                hub.push(audio(69 + 23 * i, 10));
            }
            let items = frames(&mut sub);
            assert!(matches!(items[0], Item::Resync { .. }), "{items:?}");
            assert_eq!(items[1], Item::Frame(aac.clone()));
            assert_eq!(timestamps(&items[2..]), vec![69 + 23 * 14]);
            hub.push(audio(500, 10));
            assert_eq!(timestamps(&frames(&mut sub)), vec![500]);
        }
        // Once video has been seen, audio alone is no place to start.
        let hub = Hub::new(HubLimits::default());
        hub.push(header(0));
        hub.push(audio(10, 10));
        let mut sub = hub.subscribe();
        hub.push(audio(33, 10));
        assert_eq!(frames(&mut sub), vec![Item::Frame(header(0))]);
        hub.push(video(40, true, 10));
        assert_eq!(timestamps(&frames(&mut sub)), vec![40]);
    }

    #[test]
    fn without_a_keyframe_a_consumer_waits_for_one() {
        let hub = Hub::new(HubLimits::default());
        hub.push(header(0));
        hub.push(video(40, false, 10));
        let mut sub = hub.subscribe();
        hub.push(video(80, false, 10));
        // The known header at once, no picture before a keyframe.
        assert_eq!(frames(&mut sub), vec![Item::Frame(header(0))]);
        // A header that changes while waiting reaches the consumer too.
        hub.push(header(100));
        hub.push(video(120, true, 10));
        hub.push(video(160, false, 10));
        assert_eq!(timestamps(&frames(&mut sub)), vec![100, 120, 160]);
    }

    #[test]
    fn a_slow_consumer_resyncs_at_a_keyframe_and_the_window_stays_bounded() {
        let hub = Hub::new(HubLimits {
            window_bytes: 100,
            ..Default::default()
        });
        hub.push(header(0));
        hub.push(video(0, true, 10));
        let mut slow = hub.subscribe();
        let mut fast = hub.subscribe();
        assert_eq!(timestamps(&frames(&mut fast)), vec![0, 0]);
        // 30 frames of 10 bytes with a keyframe every 10: the window keeps 100 bytes.
        for i in 1..=30u32 {
            hub.push(video(i * 40, i % 10 == 0, 10));
            assert_eq!(timestamps(&frames(&mut fast)), vec![i * 40]);
            assert!(hub.state().bytes <= 100);
        }
        let items = frames(&mut slow);
        // The header first (the stream's), then it lost its place: a resync naming what
        // was skipped, headers again and the newest keyframe (frame 30) onwards.
        assert_eq!(items[0], Item::Frame(header(0)));
        let Item::Resync { frames, bytes } = items[1] else {
            panic!("expected a resync, got {:?}", items[1]);
        };
        assert_eq!((frames, bytes), (30, 300));
        assert_eq!(items[2], Item::Frame(header(0)));
        assert_eq!(timestamps(&items[3..]), vec![1200]);
    }

    #[test]
    fn frames_every_consumer_read_go_at_the_next_keyframe() {
        let hub = Hub::new(HubLimits::default());
        hub.push(video(0, true, 10));
        let mut a = hub.subscribe();
        let mut b = hub.subscribe();
        // 3 GOPs of 10 frames; `a` reads everything, `b` stops after the first 15.
        for i in 1..30u32 {
            hub.push(video(i * 40, i % 10 == 0, 10));
            frames(&mut a);
            if i < 15 {
                frames(&mut b);
            }
        }
        // Kept: from `b`'s place (frame 15), the newest keyframe (20) being later.
        assert_eq!(hub.state().first, 15);
        assert_eq!(hub.state().bytes, 150);
        assert_eq!(timestamps(&frames(&mut b))[0], 15 * 40);
        hub.push(video(30 * 40, true, 10));
        // Both read everything: only the newest keyframe stays, for a new consumer.
        frames(&mut a);
        frames(&mut b);
        hub.push(video(31 * 40, false, 10));
        assert_eq!(hub.state().first, 30);
        let mut c = hub.subscribe();
        assert_eq!(timestamps(&frames(&mut c)), vec![30 * 40, 31 * 40]);
        // A dropped consumer no longer holds frames back.
        drop(b);
        drop(c);
        assert_eq!(hub.state().cursors.len(), 1);
    }

    #[test]
    fn frames_before_the_first_keyframe_are_not_kept_without_consumers() {
        let hub = Hub::new(HubLimits::default());
        hub.push(video(0, false, 1000));
        assert_eq!(hub.state().bytes, 0);
        hub.push(video(40, true, 10));
        assert_eq!(hub.state().bytes, 10);
    }

    #[test]
    fn kinds_are_read_off_the_tag_header() {
        let v = |b: &'static [u8]| Frame::video(0, Bytes::from_static(b)).kind;
        let key = |keyframe, header| FrameKind::Video { keyframe, header };
        assert_eq!(v(&[0x17, 0, 0, 0, 0]), key(false, true));
        assert_eq!(v(&[0x17, 1, 0, 0, 0]), key(true, false));
        assert_eq!(v(&[0x27, 1, 0, 0, 0]), key(false, false));
        // Enhanced RTMP: frame type in bits 4..6, packet type 0 = sequence start.
        assert_eq!(v(&[0x90, b'h', b'v', b'c', b'1']), key(false, true));
        assert_eq!(v(&[0x91, b'h', b'v', b'c', b'1']), key(true, false));
        assert_eq!(v(&[]), key(false, false));
        // The AVC end of sequence (frame type 1, packet type 2) is no picture.
        assert_eq!(v(&[0x17, 2, 0, 0, 0]), key(false, false));
        assert_eq!(v(&[0x93, b'h', b'v', b'c', b'1']), key(true, false));
        let a = |b: &'static [u8]| Frame::audio(0, Bytes::from_static(b)).kind;
        assert_eq!(a(&[0xaf, 0, 0x12]), FrameKind::Audio { header: true });
        assert_eq!(a(&[0xaf, 1, 0x21]), FrameKind::Audio { header: false });
        assert_eq!(a(&[0x2f, 0]), FrameKind::Audio { header: false });
        // Enhanced RTMP audio: sound format 9, packet type 0 = sequence start.
        assert_eq!(
            a(&[0x90, b'O', b'p', b'u', b's']),
            FrameKind::Audio { header: true }
        );
        assert_eq!(
            a(&[0x91, b'O', b'p', b'u', b's']),
            FrameKind::Audio { header: false }
        );
        assert_eq!(a(&[]), FrameKind::Audio { header: false });
    }

    #[test]
    fn without_consumers_only_the_newest_gop_is_kept() {
        let hub = Hub::new(HubLimits::default());
        for i in 0..30u32 {
            hub.push(video(i * 40, i % 10 == 0, 10));
        }
        // Frames 20..29: the newest keyframe and what followed it.
        assert_eq!(hub.state().bytes, 100);
        let mut sub = hub.subscribe();
        assert_eq!(timestamps(&frames(&mut sub))[0], 800);
    }

    #[test]
    fn without_the_gop_cache_only_unread_frames_are_kept_and_a_new_consumer_waits_for_a_keyframe() {
        let hub = Hub::new(HubLimits {
            gop_cache: false,
            ..Default::default()
        });
        hub.push(header(0));
        for i in 0..15u32 {
            hub.push(video(i * 40, i % 10 == 0, 10));
        }
        // Nobody reads: nothing is kept but the headers.
        assert_eq!(hub.state().bytes, 0);
        let mut a = hub.subscribe();
        // The headers at once, no picture before the next keyframe.
        assert_eq!(frames(&mut a), vec![Item::Frame(header(0))]);
        for i in 15..25u32 {
            hub.push(video(i * 40, i % 10 == 0, 10));
        }
        // Kept: what `a` has still to read, from frame 15 on (its keyframe is 20).
        assert_eq!(hub.state().bytes, 100);
        assert_eq!(timestamps(&frames(&mut a)), vec![800, 840, 880, 920, 960]);
        hub.push(video(25 * 40, false, 10));
        // `a` read up to frame 24: only frame 25 is left, though it follows a keyframe.
        assert_eq!(hub.state().bytes, 10);
        frames(&mut a);
        hub.push(video(26 * 40, false, 10));
        frames(&mut a);
        // Read, but trimmed only by the next push.
        assert_eq!(hub.state().bytes, 10);
        // A consumer that lags holds what it has still to read; it starts at a keyframe.
        let mut b = hub.subscribe();
        frames(&mut b);
        for i in 27..45u32 {
            hub.push(video(i * 40, i % 10 == 0, 10));
            frames(&mut a);
        }
        // Frames 27..44, which `b` has still to read; it starts at keyframe 30.
        assert_eq!(hub.state().bytes, 180);
        assert_eq!(timestamps(&frames(&mut b))[..2], [1200, 1240]);
        drop(b);
        hub.push(video(45 * 40, false, 10));
        frames(&mut a);
        drop(a);
        hub.push(video(46 * 40, false, 10));
        assert_eq!(hub.state().bytes, 0);
    }

    #[tokio::test]
    async fn next_wakes_on_push_and_ends_after_close() {
        let hub = Hub::new(HubLimits::default());
        let mut sub = hub.subscribe();
        let pusher = {
            let hub = hub.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                hub.push(video(0, true, 4));
                hub.push(video(40, false, 4));
                hub.close();
            })
        };
        let mut got = Vec::new();
        while let Some(item) = sub.next().await {
            got.push(item);
        }
        pusher.await.unwrap();
        assert_eq!(timestamps(&got), vec![0, 40]);
        assert_eq!(hub.subscribers(), 1);
        drop(sub);
        assert_eq!(hub.subscribers(), 0);
    }

    #[test]
    fn lag_counts_unread_bytes() {
        let hub = Hub::new(HubLimits::default());
        hub.push(video(0, true, 10));
        let mut sub = hub.subscribe();
        hub.push(video(40, false, 25));
        assert_eq!(sub.lag_bytes(), 35);
        frames(&mut sub);
        assert_eq!(sub.lag_bytes(), 0);
    }
}
