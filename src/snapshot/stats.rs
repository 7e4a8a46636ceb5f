//! Per-stream counters, shared between the connection task, the pool and the store
//! task; read by logs, the admin API and metrics. [`StreamStats::finish`] also wakes a
//! publisher that waits for its snapshots to catch up (pacing, see `snapshot::pool`).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct StreamStats {
    /// Bytes of audio/video payload received.
    pub bytes: AtomicU64,
    /// Video messages seen.
    pub video_frames: AtomicU64,
    /// Media time covered by the video so far (last minus first timestamp), in ms.
    pub media_ms: AtomicU64,
    /// Video keyframes seen.
    pub keyframes: AtomicU64,
    /// Keyframes handed to the pool for a snapshot.
    pub due: AtomicU64,
    /// Snapshots stored (at least one object written).
    pub stored: AtomicU64,
    /// Due keyframes dropped from a full queue (the oldest waiting one goes) while the
    /// publisher ran at or behind real time.
    pub dropped_busy: AtomicU64,
    /// JPEGs dropped because the stream's store queue was full (storage slow or down).
    pub dropped_backlog: AtomicU64,
    /// Keyframes that failed to parse, decode or encode.
    pub failed_decode: AtomicU64,
    /// Object writes that failed.
    pub failed_store: AtomicU64,
    /// Sequence-mode keys that already existed and were left alone.
    pub skipped_existing: AtomicU64,
    /// Due keyframes whose handling is over, whatever the outcome (stored, dropped or
    /// failed): `due - finished` are in flight.
    pub finished: AtomicU64,
    /// Unix time of the last stored snapshot (0 = none).
    pub last_snapshot_unix: AtomicU64,
    /// Milliseconds the connection stopped reading to wait for the snapshot queue (a
    /// publisher running ahead of real time, paced by TCP backpressure).
    pub paced_ms: AtomicU64,
    /// The stream's last object write failed (storage down or failing): a publisher
    /// ahead of real time then stops waiting for its snapshots to be stored, so a
    /// storage outage paces nobody (it still waits for the pool).
    pub store_failing: std::sync::atomic::AtomicBool,
    /// What the stream's snapshots say of its health (the pool reports pictures and
    /// failed renders; the node's health check evaluates them).
    pub health: crate::health::StreamHealth,
    /// Woken each time `finished` moves on.
    progress: Notify,
}

impl StreamStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Counts one due keyframe as finished (stored, dropped or failed) and wakes a
    /// publisher waiting for its snapshots to catch up.
    pub fn finish(&self) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        self.progress.notify_waiters();
    }

    /// Due keyframes not finished yet (queued, rendering, or on their way to storage).
    pub fn in_flight(&self) -> u64 {
        Self::get(&self.due).saturating_sub(Self::get(&self.finished))
    }

    /// Resolves at the next [`StreamStats::finish`] after it is enabled or first polled.
    pub fn progressed(&self) -> tokio::sync::futures::Notified<'_> {
        self.progress.notified()
    }

    /// A one-line summary for the unpublish log.
    pub fn summary(&self) -> String {
        format!(
            "bytes={} keyframes={} due={} stored={} dropped_busy={} dropped_backlog={} failed_decode={} failed_store={} skipped_existing={} paced_ms={}",
            Self::get(&self.bytes),
            Self::get(&self.keyframes),
            Self::get(&self.due),
            Self::get(&self.stored),
            Self::get(&self.dropped_busy),
            Self::get(&self.dropped_backlog),
            Self::get(&self.failed_decode),
            Self::get(&self.failed_store),
            Self::get(&self.skipped_existing),
            Self::get(&self.paced_ms),
        )
    }
}
