//! The per-stream store task: renders the rule's object keys for each finished
//! snapshot and writes them, in overwrite mode (one key, replaced) and/or sequence
//! mode (a new key each time, created only if absent, never replacing anything).
//!
//! `{Sequence}` continues after the highest number already stored for the stream,
//! found by listing once per publish; a create-only write that finds its key taken
//! (another node, or a listing that raced) moves on to the next number.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::rules::template::{Template, Vars};
use crate::rules::Rule;
use crate::snapshot::pool::Snapshot;
use crate::snapshot::stats::StreamStats;
use crate::storage::{Created, Target};

/// How many taken `{Sequence}` numbers a write steps over before giving up on a
/// snapshot (and listing again next time).
const MAX_SEQUENCE_PROBES: u32 = 16;

/// The identity of a live stream, validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamId {
    pub domain: String,
    pub app: String,
    pub stream: String,
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.domain, self.app, self.stream)
    }
}

/// Where the newest stored snapshot is published for readers (the admin API).
pub type Latest = Arc<std::sync::Mutex<Option<Snapshot>>>;

pub struct StoreTask {
    pub id: StreamId,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub notify: Arc<crate::notify::Notifier>,
    pub rule: Arc<Rule>,
    pub target: Target,
    pub stats: Arc<StreamStats>,
    pub latest: Latest,
    next_sequence: Option<u64>,
}

impl StoreTask {
    pub fn new(
        id: StreamId,
        rule: Arc<Rule>,
        target: Target,
        stats: Arc<StreamStats>,
        latest: Latest,
        metrics: Arc<crate::metrics::Metrics>,
        notify: Arc<crate::notify::Notifier>,
    ) -> StoreTask {
        StoreTask {
            id,
            metrics,
            notify,
            rule,
            target,
            stats,
            latest,
            next_sequence: None,
        }
    }

    /// Stores snapshots until the channel closes (the stream ended and the pool has
    /// handed over its last JPEG), then returns.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Snapshot>) {
        while let Some(snap) = rx.recv().await {
            self.store(snap).await;
        }
    }

    fn vars(&self, unix_timestamp: u64, sequence: u64) -> Vars<'_> {
        Vars {
            domain: &self.id.domain,
            app: &self.id.app,
            stream: &self.id.stream,
            unix_timestamp,
            sequence,
        }
    }

    /// Writes one snapshot under every template of the rule.
    pub async fn store(&mut self, snap: Snapshot) {
        let started = std::time::Instant::now();
        let mut sequence_key = None;
        let mut overwrite_key = None;
        if let Some(t) = self.rule.sequence_object.clone() {
            sequence_key = self.store_sequence(&t, &snap).await;
        }
        if let Some(t) = self.rule.overwrite_object.clone() {
            match t.render(&self.vars(snap.unix_ts, 0)) {
                Ok(key) => match self.target.put_overwrite(&key, snap.jpeg.clone()).await {
                    Ok(()) => {
                        tracing::debug!(key, "snapshot stored (overwrite)");
                        overwrite_key = Some(key);
                    }
                    Err(e) => self.failed(&e),
                },
                Err(e) => self.failed(&e),
            }
        }
        let wrote = sequence_key.is_some() || overwrite_key.is_some();
        if wrote {
            self.notify.snapshot(
                self.rule.callback.as_deref(),
                crate::notify::snapshot_event(
                    &self.id,
                    &self.rule.storage,
                    overwrite_key.as_deref(),
                    sequence_key.as_deref(),
                    snap.jpeg.len(),
                    snap.width,
                    snap.height,
                    snap.unix_ts,
                ),
            );
        }
        self.metrics
            .store_seconds
            .observe(started.elapsed().as_secs_f64());
        if wrote {
            self.metrics
                .snapshot_latency_seconds
                .observe(snap.arrived.elapsed().as_secs_f64());
            self.metrics.snapshots_taken.inc();
            self.stats.stored.fetch_add(1, Ordering::Relaxed);
            self.stats
                .last_snapshot_unix
                .store(snap.unix_ts, Ordering::Relaxed);
            *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(snap);
        }
        self.stats.finished.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self, e: &dyn std::fmt::Display) {
        self.stats.failed_store.fetch_add(1, Ordering::Relaxed);
        self.metrics.failed("storage_error");
        tracing::warn!(error = %e, "snapshot not stored");
    }

    /// Writes the sequence object; returns its key when one was created.
    async fn store_sequence(&mut self, t: &Template, snap: &Snapshot) -> Option<String> {
        let uses_seq = t.has_var(crate::rules::template::Var::Sequence);
        if uses_seq && self.next_sequence.is_none() {
            match self
                .target
                .highest_sequence(t, &self.id.domain, &self.id.app, &self.id.stream)
                .await
            {
                Ok(n) => {
                    tracing::info!(next = n + 1, "sequence continues after stored objects");
                    self.next_sequence = Some(n + 1);
                }
                Err(e) => {
                    // Without knowing what is stored we write nothing in sequence
                    // mode rather than risk a gap-filling order; retry next snapshot.
                    self.failed(&e);
                    return None;
                }
            }
        }
        for _ in 0..MAX_SEQUENCE_PROBES {
            let seq = self.next_sequence.unwrap_or(0);
            let key = match t.render(&self.vars(snap.unix_ts, seq)) {
                Ok(k) => k,
                Err(e) => {
                    self.failed(&e);
                    return None;
                }
            };
            match self.target.put_create_only(&key, snap.jpeg.clone()).await {
                Ok(Created::Yes) => {
                    if uses_seq {
                        self.next_sequence = Some(seq + 1);
                    }
                    tracing::debug!(key, "snapshot stored (sequence)");
                    return Some(key);
                }
                Ok(Created::AlreadyExists) if uses_seq => {
                    self.next_sequence = Some(seq + 1);
                }
                Ok(Created::AlreadyExists) => {
                    self.stats.skipped_existing.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(key, "object exists; not replaced");
                    return None;
                }
                Err(e) => {
                    self.failed(&e);
                    return None;
                }
            }
        }
        // Many numbers taken in a row: someone else writes this stream's sequence.
        self.stats.skipped_existing.fetch_add(1, Ordering::Relaxed);
        self.next_sequence = None;
        tracing::warn!("sequence keys keep existing; will list again");
        None
    }
}
