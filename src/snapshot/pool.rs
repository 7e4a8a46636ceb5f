//! The bounded decode/encode pool: a fixed set of worker threads (never the async
//! runtime) that turn a due keyframe into a JPEG.
//!
//! Each stream owns a [`StreamQueue`] holding at most one pending keyframe: a newer
//! keyframe replaces an older one that no worker has started yet ("latest keyframe
//! wins"), and the replaced one is counted as dropped. A queue is scheduled at most
//! once and served by one worker at a time, so a stream's snapshots come out in order.
//! The pool's queue thus never holds more entries than there are live streams.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc as tmpsc;

use crate::media::avc::AvcConfig;
use crate::metrics::Metrics;
use crate::snapshot::render::Renderer;
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
}

#[derive(Default)]
struct QueueState {
    pending: Option<DueKeyframe>,
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
}

/// The worker pool. Cloning shares it.
#[derive(Clone)]
pub struct Pool {
    tx: mpsc::Sender<Arc<StreamQueue>>,
    metrics: Arc<Metrics>,
}

impl Pool {
    /// Starts `workers` threads. They stop once every `Pool` clone is dropped and the
    /// queue is drained.
    pub fn start(workers: usize, quality: u8, max_pixels: u64, metrics: Arc<Metrics>) -> Pool {
        let (tx, rx) = mpsc::channel::<Arc<StreamQueue>>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("livesnap-snap-{i}"))
                .spawn(move || Worker::new(quality, max_pixels, metrics).run(&rx, i))
                .expect("spawn snapshot worker");
        }
        Pool { tx, metrics }
    }

    /// Hands a due keyframe to the pool. Never blocks on decoding: if the stream's
    /// previous keyframe is still waiting, it is replaced and counted as dropped.
    pub fn submit(&self, queue: &Arc<StreamQueue>, job: DueKeyframe) {
        let mut st = queue.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.pending.replace(job).is_some() {
            queue.stats.dropped_busy.fetch_add(1, Ordering::Relaxed);
            queue.stats.finished.fetch_add(1, Ordering::Relaxed);
            self.metrics.dropped("pool_busy");
            queue.span.in_scope(|| {
                tracing::debug!("snapshot pool busy: older pending keyframe replaced")
            });
        }
        if !st.scheduled {
            st.scheduled = true;
            let _ = self.tx.send(queue.clone());
        }
    }
}

struct Worker {
    renderer: Renderer,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn new(quality: u8, max_pixels: u64, metrics: Arc<Metrics>) -> Worker {
        Worker {
            renderer: Renderer::new(quality, max_pixels),
            metrics,
        }
    }

    fn run(mut self, rx: &Mutex<mpsc::Receiver<Arc<StreamQueue>>>, index: usize) {
        loop {
            let queue = {
                let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                match rx.recv() {
                    Ok(s) => s,
                    Err(_) => break,
                }
            };
            self.serve(&queue);
        }
        tracing::debug!(worker = index, "snapshot worker stopped");
    }

    /// Renders the queue's pending keyframes until none is left, then unschedules it.
    fn serve(&mut self, queue: &Arc<StreamQueue>) {
        loop {
            let job = {
                let mut st = queue.state.lock().unwrap_or_else(|p| p.into_inner());
                match st.pending.take() {
                    Some(j) => j,
                    None => {
                        st.scheduled = false;
                        return;
                    }
                }
            };
            let arrived = job.arrived;
            let unix_ts = job.unix_ts;
            match self.renderer.render(&job.body, &job.config) {
                Ok(pic) => {
                    self.metrics
                        .decode_seconds
                        .observe(pic.decode_time.as_secs_f64());
                    self.metrics
                        .encode_seconds
                        .observe(pic.encode_time.as_secs_f64());
                    let snap = Snapshot {
                        jpeg: pic.jpeg,
                        width: pic.width,
                        height: pic.height,
                        unix_ts,
                        arrived,
                    };
                    if queue.sink.try_send(snap).is_err() {
                        queue.stats.dropped_backlog.fetch_add(1, Ordering::Relaxed);
                        queue.stats.finished.fetch_add(1, Ordering::Relaxed);
                        self.metrics.dropped("store_backlog");
                        queue
                            .span
                            .in_scope(|| tracing::warn!("storage is behind: snapshot dropped"));
                    }
                }
                Err(e) => {
                    queue.stats.failed_decode.fetch_add(1, Ordering::Relaxed);
                    queue.stats.finished.fetch_add(1, Ordering::Relaxed);
                    self.metrics.failed("decode_error");
                    queue
                        .span
                        .in_scope(|| tracing::warn!(error = %e, "snapshot failed"));
                }
            }
        }
    }
}
