//! The bounded decode/encode pool: a fixed set of worker threads (never the async
//! runtime) that turn due keyframes into JPEGs.
//!
//! Each stream owns a [`StreamQueue`]: its due keyframes waiting for a worker, in
//! order, bounded by count (`snapshot.queue_keyframes`, default 8) and bytes
//! (`snapshot.queue_bytes`, default 16 MiB), and all queues together by
//! `snapshot.max_queued_bytes` (default 256 MiB). A burst that fits (a file pushed
//! faster than real time, a relay catching up after a stall) loses nothing.
//!
//! When a keyframe does not fit, the publisher's [`Pacing`] decides:
//! - [`Pacing::Live`] (at or behind real time): the oldest waiting keyframe of the
//!   stream is dropped (counted as `dropped_busy`, metric reason `pool_busy`) until the
//!   new one fits; a live publisher never waits for snapshots.
//! - [`Pacing::Offline`] (media clock ahead of the wall clock): [`Pool::submit`] waits
//!   until there is room, and the caller (the connection task) stops reading meanwhile,
//!   so TCP backpressure slows the sender and it still gets every snapshot. An offline
//!   stream also waits while as many of its snapshots are in flight as its store queue
//!   holds, so that slow storage slows it too instead of dropping its pictures.
//!
//! Workers serve streams round-robin: a worker takes one keyframe from the stream at
//! the head of the run queue and, if that stream has more waiting, puts it back at the
//! tail. A stream is in the run queue or with a worker at most once, so one worker at a
//! time renders it and its snapshots come out in order.
//!
//! Memory: a stream's waiting keyframes hold at most `queue_bytes` (or one keyframe,
//! at most `limits.max_message_bytes`, when that alone is larger); all waiting
//! keyframes of the node hold at most `max_queued_bytes` (or one keyframe when that
//! alone is larger); each worker holds one more keyframe while it renders it. The run
//! queue holds at most one entry per live stream.
//!
//! Exact-time rules hand in the frames after the keyframe up to the due frame with it
//! ([`DueKeyframe::forward`]); they count in the same byte bounds, and a worker decodes
//! them forward (`snapshot::exact`), falling back to the keyframe alone when openh264
//! refuses one.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc as tmpsc;
use tokio::sync::Notify;

use crate::media::avc::AvcConfig;
use crate::metrics::Metrics;
use crate::snapshot::exact::{ExactDecoder, Fallback};
use crate::snapshot::render::{RenderError, Rendered, Renderer};
use crate::snapshot::stats::StreamStats;
use crate::snapshot::writer::Snapshot;

/// A keyframe that is due for a snapshot.
pub struct DueKeyframe {
    /// The AVCC access unit (FLV video tag body after the 5-byte AVC header).
    pub body: Bytes,
    /// The sequence header in force when the keyframe arrived.
    pub config: Arc<AvcConfig>,
    /// `{UnixTimestamp}` of this snapshot.
    pub unix_ts: u64,
    /// When the keyframe came off the socket.
    pub arrived: Instant,
    /// Exact mode: the frames after the keyframe in decode order, up to and including
    /// the due frame (shared `Bytes` of the messages); empty for the keyframe's picture.
    pub forward: Vec<Bytes>,
    /// Exact mode: the due frame's rank in presentation order (0: the keyframe).
    pub rank: usize,
}

impl std::fmt::Debug for DueKeyframe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DueKeyframe")
            .field("bytes", &self.body.len())
            .field("unix_ts", &self.unix_ts)
            .finish_non_exhaustive()
    }
}

impl DueKeyframe {
    fn size(&self) -> u64 {
        let forward: usize = self.forward.iter().map(Bytes::len).sum();
        (self.body.len() + forward) as u64
    }
}

/// Whether a publisher's media clock runs ahead of the wall clock, which decides what
/// happens when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// At or behind real time: never waits; the oldest waiting keyframe is dropped.
    Live,
    /// Ahead of real time (a recording pushed at full speed): waits for room.
    Offline,
}

/// The queue bounds (`[snapshot]` `queue_keyframes`, `queue_bytes`, `max_queued_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Keyframes one stream may have waiting.
    pub keyframes: usize,
    /// Bytes of keyframes one stream may have waiting.
    pub bytes: u64,
    /// Bytes of keyframes waiting in all queues together.
    pub node_bytes: u64,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            keyframes: 8,
            bytes: 16 << 20,
            node_bytes: 256 << 20,
        }
    }
}

#[derive(Default)]
struct QueueState {
    waiting: VecDeque<DueKeyframe>,
    bytes: u64,
    /// In the run queue or with a worker.
    scheduled: bool,
}

/// A stream's place in the pool: its due keyframes and where its snapshots go.
pub struct StreamQueue {
    state: Mutex<QueueState>,
    sink: tmpsc::Sender<Snapshot>,
    pub stats: Arc<StreamStats>,
    /// Log context of the stream (peer, domain, app, stream).
    pub span: tracing::Span,
}

impl StreamQueue {
    pub fn new(
        sink: tmpsc::Sender<Snapshot>,
        stats: Arc<StreamStats>,
        span: tracing::Span,
    ) -> Arc<StreamQueue> {
        Arc::new(StreamQueue {
            state: Mutex::new(QueueState::default()),
            sink,
            stats,
            span,
        })
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keyframes waiting for a worker.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}

struct RunQueue {
    streams: VecDeque<Arc<StreamQueue>>,
    closed: bool,
}

/// What the workers and every `Pool` clone share.
struct Shared {
    run: Mutex<RunQueue>,
    ready: Condvar,
    limits: QueueLimits,
    /// Bytes waiting in all stream queues.
    queued_bytes: AtomicU64,
    /// Woken whenever a worker takes a keyframe (room in a stream queue and the node).
    space: Notify,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn lock_run(&self) -> MutexGuard<'_, RunQueue> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a stream at the tail of the run queue.
    fn schedule(&self, queue: Arc<StreamQueue>) {
        self.lock_run().streams.push_back(queue);
        self.ready.notify_one();
    }

    /// The stream at the head of the run queue; waits for one unless `wait` is false.
    /// None once the pool is closed and the run queue empty.
    fn next(&self, wait: bool) -> Option<Arc<StreamQueue>> {
        let mut run = self.lock_run();
        loop {
            if let Some(q) = run.streams.pop_front() {
                return Some(q);
            }
            if run.closed || !wait {
                return None;
            }
            run = self.ready.wait(run).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Reserves `len` bytes of the node's budget: always when nothing waits, else only
    /// within `node_bytes`.
    fn reserve(&self, len: u64) -> bool {
        let cap = self.limits.node_bytes;
        let ok = self
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used == 0 || used.saturating_add(len) <= cap).then(|| used + len)
            })
            .is_ok();
        if ok {
            self.metrics.snapshot_queued_bytes.inc_by(len as i64);
        }
        ok
    }

    fn release(&self, len: u64) {
        self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
        self.metrics.snapshot_queued_bytes.dec_by(len as i64);
    }

    /// Counts a due keyframe dropped from a full queue.
    fn dropped(&self, queue: &StreamQueue) {
        queue.stats.dropped_busy.fetch_add(1, Ordering::Relaxed);
        queue.stats.finish();
        self.metrics.dropped("pool_busy");
        queue
            .span
            .in_scope(|| tracing::debug!("snapshot queue full: oldest waiting keyframe dropped"));
    }
}

/// Closes the run queue when the last `Pool` clone goes.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock_run().closed = true;
        self.0.ready.notify_all();
    }
}

/// How a [`Pool::submit`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    /// How long the caller waited for room (zero for a live publisher).
    pub waited: Duration,
    /// The wait was given up (shutdown, a kick, or the patience ran out) and the
    /// keyframe went in as for a live publisher.
    pub gave_up: bool,
}

/// The worker pool. Cloning shares it.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
}

impl Pool {
    /// Starts `workers` threads. They stop once every `Pool` clone is dropped and the
    /// queues are drained.
    pub fn start(
        workers: usize,
        quality: u8,
        max_pixels: u64,
        limits: QueueLimits,
        metrics: Arc<Metrics>,
    ) -> Pool {
        let pool = Pool::without_workers(limits, metrics);
        for i in 0..workers.max(1) {
            let shared = pool.shared.clone();
            std::thread::Builder::new()
                .name(format!("livesnap-snap-{i}"))
                .spawn(move || Worker::new(quality, max_pixels).run(&shared, i))
                .expect("spawn snapshot worker");
        }
        pool
    }

    fn without_workers(limits: QueueLimits, metrics: Arc<Metrics>) -> Pool {
        let shared = Arc::new(Shared {
            run: Mutex::new(RunQueue {
                streams: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            limits,
            queued_bytes: AtomicU64::new(0),
            space: Notify::new(),
            metrics,
        });
        Pool {
            _closer: Arc::new(Closer(shared.clone())),
            shared,
        }
    }

    pub fn limits(&self) -> QueueLimits {
        self.shared.limits
    }

    /// Bytes of keyframes waiting in all queues now.
    pub fn queued_bytes(&self) -> u64 {
        self.shared.queued_bytes.load(Ordering::Acquire)
    }

    /// Hands a due keyframe (already counted in `stats.due`) to the pool without
    /// waiting. A live publisher's keyframe always goes in: the stream's oldest waiting
    /// keyframes are dropped to make room (and the new one itself when it cannot fit
    /// the node's budget even alone). An offline publisher's keyframe is handed back
    /// when there is no room.
    pub fn offer(
        &self,
        queue: &Arc<StreamQueue>,
        job: DueKeyframe,
        pacing: Pacing,
    ) -> Result<(), DueKeyframe> {
        let shared = &self.shared;
        let limits = shared.limits;
        let len = job.size();
        let mut st = queue.lock();
        let fits = |st: &QueueState| {
            st.waiting.is_empty()
                || (st.waiting.len() < limits.keyframes
                    && st.bytes.saturating_add(len) <= limits.bytes)
        };
        match pacing {
            Pacing::Offline => {
                // Also wait for storage: no more in flight than the store queue holds.
                // Wait for storage only while it works: an outage paces nobody.
                let in_flight_ok = queue.stats.in_flight() <= queue.sink.max_capacity() as u64
                    || queue.stats.store_failing.load(Ordering::Relaxed);
                if !in_flight_ok || !fits(&st) || !shared.reserve(len) {
                    return Err(job);
                }
            }
            Pacing::Live => loop {
                if fits(&st) && shared.reserve(len) {
                    break;
                }
                match st.waiting.pop_front() {
                    Some(old) => {
                        st.bytes -= old.size();
                        shared.release(old.size());
                        shared.dropped(queue);
                    }
                    None => {
                        // Alone and still over the node's budget: other streams hold it.
                        shared.dropped(queue);
                        return Ok(());
                    }
                }
            },
        }
        st.bytes += len;
        st.waiting.push_back(job);
        if !st.scheduled {
            st.scheduled = true;
            drop(st);
            shared.schedule(queue.clone());
        }
        Ok(())
    }

    /// Hands a due keyframe (already counted in `stats.due`) to the pool. A live
    /// publisher's goes in at once ([`Pool::offer`]); an offline publisher's waits for
    /// room in its queue, in the node's budget and in its store queue, without
    /// busy-waiting. When `give_up` resolves first, the keyframe goes in as a live one.
    pub async fn submit(
        &self,
        queue: &Arc<StreamQueue>,
        mut job: DueKeyframe,
        pacing: Pacing,
        give_up: impl Future<Output = ()>,
    ) -> Submitted {
        let mut submitted = Submitted {
            waited: Duration::ZERO,
            gave_up: false,
        };
        if pacing == Pacing::Live {
            let _ = self.offer(queue, job, Pacing::Live);
            return submitted;
        }
        tokio::pin!(give_up);
        let mut started: Option<Instant> = None;
        loop {
            // Registered before the check, so that no wake-up between the two is lost.
            let space = self.shared.space.notified();
            let progressed = queue.stats.progressed();
            tokio::pin!(space, progressed);
            space.as_mut().enable();
            progressed.as_mut().enable();
            match self.offer(queue, job, Pacing::Offline) {
                Ok(()) => break,
                Err(j) => job = j,
            }
            started.get_or_insert_with(Instant::now);
            tokio::select! {
                () = &mut space => {}
                () = &mut progressed => {}
                () = &mut give_up => {
                    let _ = self.offer(queue, job, Pacing::Live);
                    submitted.gave_up = true;
                    break;
                }
            }
        }
        submitted.waited = started.map_or(Duration::ZERO, |s| s.elapsed());
        submitted
    }
}

struct Worker {
    renderer: Renderer,
    /// Decodes forward from keyframes for exact-time snapshots (created on first use).
    exact: ExactDecoder,
}

impl Worker {
    fn new(quality: u8, max_pixels: u64) -> Worker {
        Worker {
            renderer: Renderer::new(quality, max_pixels),
            exact: ExactDecoder::new(max_pixels),
        }
    }

    /// The keyframe's picture, or in exact mode the due frame's; when decoding forward
    /// fails, the keyframe's (counted as an exact fallback, `decode_error`).
    fn render_job(
        &mut self,
        shared: &Shared,
        queue: &StreamQueue,
        job: &DueKeyframe,
    ) -> Result<Rendered, RenderError> {
        if job.forward.is_empty() {
            return self.renderer.render(&job.body, &job.config);
        }
        let r = self.renderer.render_exact(
            &mut self.exact,
            &job.body,
            &job.forward,
            job.rank,
            &job.config,
        );
        match r {
            Ok(pic) => {
                let frames = job.forward.len() as u64 + 1;
                shared.metrics.exact_frames_decoded.inc_by(frames);
                Ok(pic)
            }
            Err(RenderError::Exact(e)) => {
                shared
                    .metrics
                    .exact_fallback(Fallback::DecodeError.reason());
                queue.span.in_scope(|| {
                    tracing::warn!(error = %e, frames = job.forward.len() + 1, "exact-time snapshot: decoding forward failed, keyframe taken")
                });
                shared.metrics.exact_frames_decoded.inc();
                self.renderer.render(&job.body, &job.config)
            }
            Err(e) => Err(e),
        }
    }

    fn run(mut self, shared: &Shared, index: usize) {
        while let Some(queue) = shared.next(true) {
            self.serve_one(shared, &queue);
        }
        tracing::debug!(worker = index, "snapshot worker stopped");
    }

    /// Renders the oldest waiting keyframe of `queue`, then puts the stream back at the
    /// tail of the run queue if it has more, or unschedules it.
    fn serve_one(&mut self, shared: &Shared, queue: &Arc<StreamQueue>) {
        let job = {
            let mut st = queue.lock();
            match st.waiting.pop_front() {
                Some(j) => {
                    st.bytes -= j.size();
                    j
                }
                None => {
                    st.scheduled = false;
                    return;
                }
            }
        };
        shared.release(job.size());
        shared.space.notify_waiters();
        self.render(shared, queue, job);
        let mut st = queue.lock();
        if st.waiting.is_empty() {
            st.scheduled = false;
        } else {
            drop(st);
            shared.schedule(queue.clone());
        }
    }

    fn render(&mut self, shared: &Shared, queue: &StreamQueue, job: DueKeyframe) {
        let metrics = &shared.metrics;
        match self.render_job(shared, queue, &job) {
            Ok(pic) => {
                match pic.luma {
                    Some(luma) => queue.stats.health.picture(luma),
                    None => queue.stats.health.decode_failed(),
                }
                metrics
                    .decode_seconds
                    .observe(pic.decode_time.as_secs_f64());
                metrics
                    .encode_seconds
                    .observe(pic.encode_time.as_secs_f64());
                let snap = Snapshot {
                    jpeg: pic.jpeg,
                    width: pic.width,
                    height: pic.height,
                    unix_ts: job.unix_ts,
                    arrived: job.arrived,
                };
                if queue.sink.try_send(snap).is_err() {
                    queue.stats.dropped_backlog.fetch_add(1, Ordering::Relaxed);
                    queue.stats.finish();
                    metrics.dropped("store_backlog");
                    queue
                        .span
                        .in_scope(|| tracing::warn!("storage is behind: snapshot dropped"));
                }
            }
            Err(e) => {
                queue.stats.health.decode_failed();
                queue.stats.failed_decode.fetch_add(1, Ordering::Relaxed);
                queue.stats.finish();
                metrics.failed("decode_error");
                queue
                    .span
                    .in_scope(|| tracing::warn!(error = %e, "snapshot failed"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::avc;
    use crate::media::flv::{self, FlvReader, PacketKind};

    /// The keyframes of a fixture with their sequence header.
    fn keyframes(file: &str) -> (Arc<AvcConfig>, Vec<Bytes>) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(file);
        let data = Bytes::from(std::fs::read(path).unwrap());
        let mut config = None;
        let mut out = Vec::new();
        for tag in FlvReader::new(data).unwrap() {
            let tag = tag.unwrap();
            if tag.tag_type != 9 {
                continue;
            }
            let v = flv::parse_video_tag(&tag.data).unwrap();
            match v.kind {
                PacketKind::SequenceHeader if config.is_none() => {
                    config = Some(Arc::new(avc::parse_decoder_config(&v.body).unwrap()))
                }
                PacketKind::Nalus if v.keyframe => out.push(v.body),
                _ => {}
            }
        }
        (config.unwrap(), out)
    }

    struct Stream {
        queue: Arc<StreamQueue>,
        rx: tmpsc::Receiver<Snapshot>,
    }

    fn stream(store_queue: usize) -> Stream {
        let (tx, rx) = tmpsc::channel(store_queue);
        Stream {
            queue: StreamQueue::new(tx, Arc::default(), tracing::Span::none()),
            rx,
        }
    }

    fn job(config: &Arc<AvcConfig>, body: &Bytes, unix_ts: u64) -> DueKeyframe {
        DueKeyframe {
            body: body.clone(),
            config: config.clone(),
            unix_ts,
            arrived: Instant::now(),
            forward: Vec::new(),
            rank: 0,
        }
    }

    /// Offers a due keyframe as the ingest does (counted as due first).
    fn offer(pool: &Pool, s: &Stream, job: DueKeyframe, pacing: Pacing) -> Result<(), DueKeyframe> {
        s.queue.stats.due.fetch_add(1, Ordering::Relaxed);
        let r = pool.offer(&s.queue, job, pacing);
        if r.is_err() {
            s.queue.stats.due.fetch_sub(1, Ordering::Relaxed);
        }
        r
    }

    fn waiting_ts(s: &Stream) -> Vec<u64> {
        s.queue.lock().waiting.iter().map(|j| j.unix_ts).collect()
    }

    /// One worker step on the calling thread: serves one keyframe of the stream at the
    /// head of the run queue; returns which stream it was.
    fn step(pool: &Pool, worker: &mut Worker) -> Option<Arc<StreamQueue>> {
        let q = pool.shared.next(false)?;
        worker.serve_one(&pool.shared, &q);
        Some(q)
    }

    #[test]
    fn streams_are_served_round_robin_each_in_order() {
        let (config, kfs) = keyframes("bt709_bars_1280x720.flv");
        let pool = Pool::without_workers(QueueLimits::default(), Arc::default());
        let mut worker = Worker::new(80, 1 << 24);
        let mut a = stream(16);
        let mut b = stream(16);
        let mut c = stream(16);
        // A has a backlog of five, B of two, C of one, all offered before any work.
        for (ts, body) in (100..).zip(&kfs[..5]) {
            offer(&pool, &a, job(&config, body, ts), Pacing::Offline).unwrap();
        }
        for (ts, body) in (200..).zip(&kfs[..2]) {
            offer(&pool, &b, job(&config, body, ts), Pacing::Offline).unwrap();
        }
        offer(&pool, &c, job(&config, &kfs[0], 300), Pacing::Offline).unwrap();
        let mut order = Vec::new();
        while let Some(q) = step(&pool, &mut worker) {
            let name = [(&a, 'a'), (&b, 'b'), (&c, 'c')]
                .iter()
                .find(|(s, _)| Arc::ptr_eq(&s.queue, &q))
                .unwrap()
                .1;
            order.push(name);
        }
        // One keyframe per turn: B and C do not wait behind A's backlog.
        assert_eq!(order.iter().collect::<String>(), "abcabaaa");
        let stamps = |rx: &mut tmpsc::Receiver<Snapshot>| {
            std::iter::from_fn(|| rx.try_recv().ok().map(|s| s.unix_ts)).collect::<Vec<_>>()
        };
        assert_eq!(stamps(&mut a.rx), [100, 101, 102, 103, 104]);
        assert_eq!(stamps(&mut b.rx), [200, 201]);
        assert_eq!(stamps(&mut c.rx), [300]);
        assert_eq!(pool.queued_bytes(), 0);
        assert!(!a.queue.lock().scheduled && !b.queue.lock().scheduled);
    }

    #[test]
    fn an_exact_job_whose_frames_cannot_be_decoded_renders_its_keyframe() {
        let (config, kfs) = keyframes("long_gop_640x360.flv");
        let metrics = Arc::new(Metrics::new());
        let pool = Pool::without_workers(QueueLimits::default(), metrics.clone());
        let mut worker = Worker::new(80, 1 << 24);
        let mut s = stream(16);
        // A frame after the keyframe whose NAL unit length overruns it, and one that
        // carries an SPS (parameter sets reach openh264 only with a checked keyframe).
        let overrun = Bytes::from_static(&[0, 0, 0, 99, 0x41, 0x9a]);
        let sps = &config.sps[0];
        let mut with_sps = (sps.len() as u32).to_be_bytes().to_vec();
        with_sps.extend_from_slice(sps);
        for (ts, bad) in [(1, overrun), (2, Bytes::from(with_sps))] {
            let mut j = job(&config, &kfs[0], ts);
            j.forward = vec![bad];
            j.rank = 1;
            offer(&pool, &s, j, Pacing::Offline).unwrap();
        }
        while step(&pool, &mut worker).is_some() {}
        let reference = Renderer::new(80, 1 << 24).render(&kfs[0], &config).unwrap();
        for ts in [1, 2] {
            let snap = s.rx.try_recv().unwrap();
            assert_eq!(snap.unix_ts, ts);
            assert_eq!(snap.jpeg, reference.jpeg, "the keyframe's picture");
        }
        let text = metrics.render();
        assert!(
            text.contains("livesnap_exact_fallbacks_total{reason=\"decode_error\"} 2"),
            "{text}"
        );
        assert_eq!(StreamStats::get(&s.queue.stats.failed_decode), 0);
    }

    #[test]
    fn a_live_publisher_drops_the_oldest_an_offline_one_is_refused() {
        let (config, kfs) = keyframes("bt709_bars_1280x720.flv");
        let limits = QueueLimits {
            keyframes: 2,
            ..QueueLimits::default()
        };
        let metrics = Arc::new(Metrics::new());
        let pool = Pool::without_workers(limits, metrics.clone());
        let live = stream(16);
        for ts in 1..=5 {
            offer(&pool, &live, job(&config, &kfs[0], ts), Pacing::Live).unwrap();
        }
        // The two newest wait; the three oldest were dropped and counted.
        assert_eq!(waiting_ts(&live), [4, 5]);
        assert_eq!(StreamStats::get(&live.queue.stats.dropped_busy), 3);
        assert_eq!(live.queue.stats.in_flight(), 2);
        assert!(metrics
            .render()
            .contains("livesnap_snapshots_dropped_total{reason=\"pool_busy\"} 3"));

        let offline = stream(16);
        for ts in 1..=2 {
            offer(&pool, &offline, job(&config, &kfs[0], ts), Pacing::Offline).unwrap();
        }
        let back = offer(&pool, &offline, job(&config, &kfs[0], 3), Pacing::Offline);
        assert_eq!(back.map_err(|j| j.unix_ts), Err(3));
        assert_eq!(waiting_ts(&offline), [1, 2]);
        assert_eq!(StreamStats::get(&offline.queue.stats.dropped_busy), 0);
        let bytes = 4 * kfs[0].len() as u64;
        assert_eq!(pool.queued_bytes(), bytes);
    }

    #[test]
    fn the_node_budget_bounds_all_queues() {
        let (config, kfs) = keyframes("bt709_bars_1280x720.flv");
        let one = kfs[0].len() as u64;
        let limits = QueueLimits {
            keyframes: 8,
            bytes: 64 << 20,
            node_bytes: 3 * one,
        };
        let pool = Pool::without_workers(limits, Arc::default());
        let a = stream(16);
        let b = stream(16);
        for ts in 1..=2 {
            offer(&pool, &a, job(&config, &kfs[0], ts), Pacing::Offline).unwrap();
        }
        offer(&pool, &b, job(&config, &kfs[0], 10), Pacing::Offline).unwrap();
        // Full: an offline publisher waits, a live one gives up its own oldest.
        assert!(offer(&pool, &a, job(&config, &kfs[0], 3), Pacing::Offline).is_err());
        offer(&pool, &b, job(&config, &kfs[0], 11), Pacing::Live).unwrap();
        assert_eq!(waiting_ts(&b), [11]);
        assert_eq!(pool.queued_bytes(), 3 * one);
        assert!(pool.queued_bytes() <= limits.node_bytes);
    }

    #[test]
    fn an_offline_publisher_waits_for_its_store_queue() {
        let (config, kfs) = keyframes("bt709_bars_1280x720.flv");
        let pool = Pool::without_workers(QueueLimits::default(), Arc::default());
        let mut worker = Worker::new(80, 1 << 24);
        // A store queue of 2 that nobody reads: two snapshots in flight at most.
        let s = stream(2);
        for ts in 1..=2 {
            offer(&pool, &s, job(&config, &kfs[0], ts), Pacing::Offline).unwrap();
        }
        assert!(offer(&pool, &s, job(&config, &kfs[0], 3), Pacing::Offline).is_err());
        while step(&pool, &mut worker).is_some() {}
        // Rendered and waiting for storage: still in flight, still no room.
        assert_eq!(s.queue.stats.in_flight(), 2);
        assert!(offer(&pool, &s, job(&config, &kfs[0], 3), Pacing::Offline).is_err());
        assert_eq!(StreamStats::get(&s.queue.stats.dropped_backlog), 0);
        // The writer stores one: room for one more.
        s.queue.stats.finish();
        offer(&pool, &s, job(&config, &kfs[0], 3), Pacing::Offline).unwrap();
        assert!(offer(&pool, &s, job(&config, &kfs[0], 4), Pacing::Offline).is_err());
        // Storage fails: the publisher no longer waits for it (only for the pool).
        s.queue.stats.store_failing.store(true, Ordering::Relaxed);
        offer(&pool, &s, job(&config, &kfs[0], 4), Pacing::Offline).unwrap();
    }

    #[tokio::test]
    async fn submit_waits_for_room_and_gives_up_on_request() {
        let (config, kfs) = keyframes("bt709_bars_1280x720.flv");
        let limits = QueueLimits {
            keyframes: 1,
            ..QueueLimits::default()
        };
        let pool = Pool::without_workers(limits, Arc::default());
        let s = stream(16);
        s.queue.stats.due.fetch_add(2, Ordering::Relaxed);
        let first = pool
            .submit(
                &s.queue,
                job(&config, &kfs[0], 1),
                Pacing::Offline,
                std::future::pending(),
            )
            .await;
        assert_eq!(first.waited, Duration::ZERO);
        // The queue is full: the second waits until a worker takes the first.
        let queue = s.queue.clone();
        let p = pool.clone();
        let (body, cfg) = (kfs[1].clone(), config.clone());
        let waiting = tokio::spawn(async move {
            p.submit(
                &queue,
                job(&cfg, &body, 2),
                Pacing::Offline,
                std::future::pending(),
            )
            .await
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let shared = pool.shared.clone();
        let served = tokio::task::spawn_blocking(move || {
            let mut worker = Worker::new(80, 1 << 24);
            let q = shared.next(true).unwrap();
            worker.serve_one(&shared, &q);
        });
        served.await.unwrap();
        let second = waiting.await.unwrap();
        assert!(!second.gave_up);
        assert_eq!(waiting_ts(&s), [2]);
        // A third gives up when told to, and goes in as a live one (oldest dropped).
        s.queue.stats.due.fetch_add(1, Ordering::Relaxed);
        let third = pool
            .submit(&s.queue, job(&config, &kfs[2], 3), Pacing::Offline, async {
            })
            .await;
        assert!(third.gave_up);
        assert_eq!(waiting_ts(&s), [3]);
        assert_eq!(StreamStats::get(&s.queue.stats.dropped_busy), 1);
    }
}
