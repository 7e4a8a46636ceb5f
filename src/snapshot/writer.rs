//! The per-stream snapshot writer: renders the rule's object keys for each finished
//! snapshot and writes them, in overwrite mode (one key, replaced) and/or sequence mode
//! (a new key each time, created only if absent, never replacing anything), then
//! reports the stored snapshot (event, metrics, the stream's latest picture).
//!
//! `{Sequence}` continues after the highest number already stored for the stream,
//! found by listing once per publish; a create-only write that finds its key taken
//! (another node, or a listing that raced) moves on to the next number, at most
//! `MAX_SEQUENCE_PROBES` times per snapshot (counted as `keys_taken{reason=
//! "sequence_next"}`). Without `{Sequence}` a taken key means that second is stored
//! already: skipped and counted (`already_stored`, and the stream's `skipped_existing`).
//! The arithmetic is checked: a stored `u64::MAX` ends the stream's sequence writes
//! with a logged, counted refusal (`sequence_exhausted`), never a wrap or a panic.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::rfc3339;
use crate::events::{Event, SnapshotEvent};
use crate::metrics::Metrics;
use crate::names::StreamId;
use crate::notify::Notifier;
use crate::review::{ReviewJob, Reviewer};
use crate::rules::Rule;
use crate::snapshot::stats::StreamStats;
use crate::storage::template::{Template, Vars};
use crate::storage::{Created, Target};

/// How many taken `{Sequence}` numbers a write steps over before giving up on a
/// snapshot (counted, and listing again next time). Another writer of the same stream
/// (a second node on a shared folder) writing this many snapshots while one write
/// waits is far beyond any interval (5 s at the least); each step is one create.
const MAX_SEQUENCE_PROBES: u32 = 64;

/// A finished snapshot, on its way to storage.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub jpeg: Bytes,
    pub width: u32,
    pub height: u32,
    /// Its `{UnixTimestamp}`.
    pub unix_ts: u64,
    /// When its keyframe came off the socket.
    pub arrived: Instant,
}

/// Where the newest stored snapshot of a stream is kept for readers (the admin API).
pub type Latest = Arc<std::sync::Mutex<Option<Snapshot>>>;

/// The keys a snapshot was stored under; `None` when nothing could be written (the
/// reason is logged and counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub overwrite_key: Option<String>,
    pub sequence_key: Option<String>,
}

/// Everything a writer reports to.
#[derive(Clone)]
pub struct WriterContext {
    pub metrics: Arc<Metrics>,
    pub notify: Arc<Notifier>,
    pub stats: Arc<StreamStats>,
    pub latest: Latest,
    /// Where snapshots go to be reviewed (rules with a `review_url`), and the token
    /// that stops the publish on a `review_kick` verdict.
    pub review: Option<(Reviewer, CancellationToken)>,
}

pub struct SnapshotWriter {
    id: StreamId,
    rule: Arc<Rule>,
    target: Target,
    cx: WriterContext,
    next_sequence: Option<u64>,
    /// Snapshots stored so far (for `review_every`).
    stored_count: u64,
    /// Set when the sequence has reached `u64::MAX`: no further sequence writes.
    exhausted: bool,
}

impl SnapshotWriter {
    pub fn new(id: StreamId, rule: Arc<Rule>, target: Target, cx: WriterContext) -> SnapshotWriter {
        SnapshotWriter {
            id,
            rule,
            target,
            cx,
            next_sequence: None,
            stored_count: 0,
            exhausted: false,
        }
    }

    /// Stores snapshots until the channel closes (the stream ended and the pool has
    /// handed over its last picture), then returns.
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

    /// Writes one snapshot under every template of the rule; returns the keys written,
    /// or `None` when no object could be written.
    pub async fn store(&mut self, snap: Snapshot) -> Option<Stored> {
        let started = Instant::now();
        let mut stored = Stored::default();
        if let Some(t) = self.rule.sequence_object.clone() {
            stored.sequence_key = self.store_sequence(&t, &snap).await;
        }
        if let Some(t) = self.rule.overwrite_object.clone() {
            match t.render(&self.vars(snap.unix_ts, 0)) {
                Ok(key) => match self.target.put_overwrite(&key, snap.jpeg.clone()).await {
                    Ok(()) => {
                        tracing::debug!(key, "snapshot stored (overwrite)");
                        stored.overwrite_key = Some(key);
                    }
                    Err(e) => self.failed(&e),
                },
                Err(e) => self.failed(&e),
            }
        }
        let cx = &self.cx;
        cx.metrics
            .store_seconds
            .observe(started.elapsed().as_secs_f64());
        let wrote = stored.sequence_key.is_some() || stored.overwrite_key.is_some();
        if wrote {
            let event = Event::Snapshot(SnapshotEvent {
                stream: self.id.clone(),
                storage: self.rule.storage().to_string(),
                overwrite_object: stored.overwrite_key.clone(),
                sequence_object: stored.sequence_key.clone(),
                size: snap.jpeg.len(),
                width: snap.width,
                height: snap.height,
                create_time: rfc3339(snap.unix_ts),
                timestamp: snap.unix_ts,
            });
            cx.notify.send(&event, self.rule.callback());
            cx.metrics
                .snapshot_latency_seconds
                .observe(snap.arrived.elapsed().as_secs_f64());
            cx.metrics.snapshots_taken.inc();
            cx.stats.stored.fetch_add(1, Ordering::Relaxed);
            cx.stats.store_failing.store(false, Ordering::Relaxed);
            cx.stats
                .last_snapshot_unix
                .store(snap.unix_ts, Ordering::Relaxed);
            self.review(&stored, &snap);
            let cx = &self.cx;
            *cx.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(snap);
        }
        self.cx.stats.finish();
        wrote.then_some(stored)
    }

    /// Hands every `review_every`th stored snapshot to the reviewer (never waits).
    fn review(&mut self, stored: &Stored, snap: &Snapshot) {
        let (Some(url), Some((reviewer, stop))) = (&self.rule.spec.review_url, &self.cx.review)
        else {
            return;
        };
        self.stored_count += 1;
        let every = u64::from(self.rule.spec.review_every.unwrap_or(1).max(1));
        if !(self.stored_count - 1).is_multiple_of(every) {
            return;
        }
        let Some(key) = stored
            .sequence_key
            .clone()
            .or_else(|| stored.overwrite_key.clone())
        else {
            return;
        };
        reviewer.submit(ReviewJob {
            stream: self.id.clone(),
            key,
            jpeg: snap.jpeg.clone(),
            unix_ts: snap.unix_ts,
            url: url.clone(),
            kick: self.rule.spec.review_kick.clone(),
            stop: stop.clone(),
            target: self.target.clone(),
            callback: self.rule.callback().map(str::to_owned),
        });
    }

    fn failed(&self, e: &dyn std::fmt::Display) {
        self.cx.stats.failed_store.fetch_add(1, Ordering::Relaxed);
        self.cx.stats.store_failing.store(true, Ordering::Relaxed);
        self.cx.metrics.failed("storage_error");
        tracing::warn!(error = %e, "snapshot not stored");
    }

    /// Refuses the sequence write of a stream whose numbers are used up.
    fn exhausted(&mut self, after: u64) {
        if !self.exhausted {
            tracing::error!(
                highest = after,
                "{{Sequence}} cannot go past {after}: this stream's sequence objects are \
                 not written any more (remove or move the stored objects numbered near \
                 u64::MAX, or change the rule's sequence_object)"
            );
        }
        self.exhausted = true;
        self.cx.stats.failed_store.fetch_add(1, Ordering::Relaxed);
        self.cx.metrics.failed("sequence_exhausted");
    }

    /// Writes the sequence object; returns its key when one was created.
    async fn store_sequence(&mut self, t: &Template, snap: &Snapshot) -> Option<String> {
        let uses_seq = self.rule.uses_sequence();
        if uses_seq && self.exhausted {
            self.exhausted(u64::MAX);
            return None;
        }
        if uses_seq && self.next_sequence.is_none() {
            match self
                .target
                .highest_sequence(t, &self.id.domain, &self.id.app, &self.id.stream)
                .await
            {
                Ok(n) => match n.checked_add(1) {
                    Some(next) => {
                        tracing::info!(next, "sequence continues after stored objects");
                        self.next_sequence = Some(next);
                    }
                    None => {
                        self.exhausted(n);
                        return None;
                    }
                },
                Err(e) => {
                    // Without knowing what is stored we write nothing in sequence
                    // mode rather than risk a gap-filling order; retry next snapshot.
                    self.failed(&e);
                    return None;
                }
            }
        }
        match crate::storage::probe::verify(&self.target, "sequence objects").await {
            Ok(()) => {}
            Err(e @ crate::storage::probe::ProbeError::Overwrites { .. }) => {
                tracing::error!(error = %e, "sequence object not written");
                self.cx.stats.failed_store.fetch_add(1, Ordering::Relaxed);
                self.cx.metrics.failed("store_ignores_conditional_writes");
                return None;
            }
            Err(e) => {
                self.failed(&e);
                return None;
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
            let created = self.target.put_create_only(&key, snap.jpeg.clone()).await;
            if matches!(created, Ok(Created::Yes | Created::LandedEarlier)) && uses_seq {
                // This number is used either way; past u64::MAX there is no next.
                self.next_sequence = seq.checked_add(1);
                if self.next_sequence.is_none() {
                    self.exhausted = true;
                }
            }
            match created {
                Ok(Created::Yes) => {
                    tracing::debug!(key, "snapshot stored (sequence)");
                    return Some(key);
                }
                Ok(Created::LandedEarlier) => {
                    self.cx.metrics.creates_landed_earlier.inc();
                    tracing::debug!(
                        key,
                        "snapshot stored (sequence, by an attempt that timed out)"
                    );
                    return Some(key);
                }
                Ok(Created::AlreadyExists) if uses_seq => {
                    self.cx.metrics.key_taken("sequence_next");
                    tracing::debug!(key, "sequence key taken; trying the next number");
                    match seq.checked_add(1) {
                        Some(next) => self.next_sequence = Some(next),
                        None => {
                            self.exhausted(seq);
                            return None;
                        }
                    }
                }
                Ok(Created::AlreadyExists) => {
                    self.cx.metrics.key_taken("already_stored");
                    self.cx
                        .stats
                        .skipped_existing
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(key, "object exists (this second is stored); not replaced");
                    return None;
                }
                Err(e) => {
                    self.failed(&e);
                    return None;
                }
            }
        }
        // Many numbers taken in a row: someone else writes this stream's sequence.
        self.cx
            .stats
            .skipped_existing
            .fetch_add(1, Ordering::Relaxed);
        self.cx.metrics.failed("sequence_keys_taken");
        self.next_sequence = None;
        tracing::warn!(
            probes = MAX_SEQUENCE_PROBES,
            "sequence keys keep existing; will list again"
        );
        None
    }
}
