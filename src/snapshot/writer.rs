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
//!
//! A rule with `outputs` writes each output's picture under its own templates. The number
//! is settled by the rule's numbering template (`Rule::numbering_template`: output 0's
//! sequence template, else the first output's that renders `{Sequence}`) as above; every
//! other sequence template of the snapshot takes that number (and the same
//! `{UnixTimestamp}`) with one create-only write, a taken key skipped and counted
//! (`keys_taken{reason="output_taken"}`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::rfc3339;
use crate::events::{Event, OutputEvent, SnapshotEvent};
use crate::metrics::Metrics;
use crate::names::StreamId;
use crate::notify::Notifier;
use crate::review::{ReviewJob, Reviewer};
use crate::rules::output::Format;
use crate::rules::Rule;
use crate::snapshot::render::Picture;
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
    /// The pictures of the rule's `outputs`, in their order (`jpeg` is output 0).
    pub outputs: Vec<Picture>,
}

/// The bytes and format of output `out` of a snapshot (`None`: output 0, the JPEG).
fn picture(snap: &Snapshot, out: Option<usize>) -> Option<(Bytes, Format)> {
    match out {
        None => Some((snap.jpeg.clone(), Format::Jpeg)),
        Some(i) => snap.outputs.get(i).map(|p| (p.bytes.clone(), p.format)),
    }
}

impl Stored {
    fn sequence_slot(&mut self, out: Option<usize>) -> &mut Option<String> {
        match out {
            None => &mut self.sequence_key,
            Some(i) => &mut self.outputs[i].sequence_key,
        }
    }

    fn overwrite_slot(&mut self, out: Option<usize>) -> &mut Option<String> {
        match out {
            None => &mut self.overwrite_key,
            Some(i) => &mut self.outputs[i].overwrite_key,
        }
    }
}

/// Where the newest stored snapshot of a stream is kept for readers (the admin API).
pub type Latest = Arc<std::sync::Mutex<Option<LatestPicture>>>;

/// The newest stored picture of a live stream: its output 0 (the full-size JPEG, shared
/// `Bytes`; the API makes every other size and format from it on request) and its ETag.
#[derive(Debug, Clone)]
pub struct LatestPicture {
    pub jpeg: Bytes,
    pub unix_ts: u64,
    /// `"MD5 of the bytes"`, computed once here rather than by every reader.
    pub etag: String,
}

impl LatestPicture {
    pub fn new(jpeg: Bytes, unix_ts: u64) -> Self {
        let etag = format!("\"{}\"", crate::util::md5_hex(&jpeg));
        LatestPicture {
            jpeg,
            unix_ts,
            etag,
        }
    }
}

/// The keys a snapshot was stored under; `None` when nothing could be written (the
/// reason is logged and counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub overwrite_key: Option<String>,
    pub sequence_key: Option<String>,
    /// The keys of each of the rule's `outputs`, in their order.
    pub outputs: Vec<StoredOutput>,
    /// The `{Sequence}` number of this snapshot, when the rule counts with it.
    pub sequence: Option<u64>,
}

/// The keys one output was stored under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredOutput {
    pub overwrite_key: Option<String>,
    pub sequence_key: Option<String>,
}

impl Stored {
    fn any(&self) -> bool {
        self.sequence_key.is_some()
            || self.overwrite_key.is_some()
            || self
                .outputs
                .iter()
                .any(|o| o.sequence_key.is_some() || o.overwrite_key.is_some())
    }
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

    /// Writes one snapshot under every template of the rule (every output's); returns
    /// the keys written, or `None` when no object could be written.
    pub async fn store(&mut self, snap: Snapshot) -> Option<Stored> {
        let started = Instant::now();
        let mut stored = Stored {
            outputs: vec![StoredOutput::default(); self.rule.outputs.len()],
            ..Stored::default()
        };
        let rule = self.rule.clone();
        // (output, its sequence template): output 0 is `None`, output i of the list `Some(i)`.
        let sequences: Vec<(Option<usize>, &Template)> = rule
            .sequence_object
            .iter()
            .map(|t| (None, t))
            .chain(
                rule.outputs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, o)| o.sequence_object.as_ref().map(|t| (Some(i), t))),
            )
            .collect();
        let numbering = rule.numbering_template();
        // The numbering template first: it settles this snapshot's `{Sequence}`.
        if let Some(&(out, t)) = sequences.iter().find(|(_, t)| Some(*t) == numbering) {
            if let Some((bytes, format)) = picture(&snap, out) {
                if let Some((key, seq)) = self.store_sequence(t, &bytes, format, snap.unix_ts).await
                {
                    stored.sequence = Some(seq);
                    *stored.sequence_slot(out) = Some(key);
                }
            }
        }
        for &(out, t) in &sequences {
            if Some(t) == numbering {
                continue;
            }
            let Some((bytes, format)) = picture(&snap, out) else {
                continue;
            };
            let key = if numbering.is_none() {
                // No `{Sequence}` anywhere: each template on its own, as output 0 always was.
                self.store_sequence(t, &bytes, format, snap.unix_ts)
                    .await
                    .map(|(k, _)| k)
            } else if t.has_var(crate::storage::template::Var::Sequence)
                && stored.sequence.is_none()
            {
                // The number could not be settled: nothing to write under.
                None
            } else {
                let seq = stored.sequence.unwrap_or(0);
                self.store_alongside(t, &bytes, format, snap.unix_ts, seq)
                    .await
            };
            *stored.sequence_slot(out) = key;
        }
        let overwrites = rule.overwrite_object.iter().map(|t| (None, t)).chain(
            rule.outputs
                .iter()
                .enumerate()
                .filter_map(|(i, o)| o.overwrite_object.as_ref().map(|t| (Some(i), t))),
        );
        for (out, t) in overwrites {
            let Some((bytes, format)) = picture(&snap, out) else {
                continue;
            };
            let key = match t.render(&self.vars(snap.unix_ts, 0)) {
                Ok(key) => match self
                    .target
                    .put_overwrite_as(&key, bytes, format.content_type())
                    .await
                {
                    Ok(()) => {
                        tracing::debug!(key, "snapshot stored (overwrite)");
                        Some(key)
                    }
                    Err(e) => {
                        self.failed(&e);
                        None
                    }
                },
                Err(e) => {
                    self.failed(&e);
                    None
                }
            };
            *stored.overwrite_slot(out) = key;
        }
        let cx = &self.cx;
        cx.metrics
            .store_seconds
            .observe(started.elapsed().as_secs_f64());
        let wrote = stored.any();
        if wrote {
            let outputs = stored
                .outputs
                .iter()
                .zip(&snap.outputs)
                .enumerate()
                .filter(|(_, (keys, _))| {
                    keys.overwrite_key.is_some() || keys.sequence_key.is_some()
                })
                .map(|(index, (keys, pic))| OutputEvent {
                    index,
                    overwrite_object: keys.overwrite_key.clone(),
                    sequence_object: keys.sequence_key.clone(),
                    format: pic.format.as_str(),
                    size: pic.bytes.len(),
                    width: pic.width,
                    height: pic.height,
                })
                .collect();
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
                sequence: stored.sequence,
                outputs,
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
            let latest = LatestPicture::new(snap.jpeg, snap.unix_ts);
            *cx.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(latest);
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

    /// Writes another output's sequence object under the number (and timestamp) the
    /// snapshot settled on; a taken key is skipped and counted.
    async fn store_alongside(
        &mut self,
        t: &Template,
        bytes: &Bytes,
        format: Format,
        unix_ts: u64,
        seq: u64,
    ) -> Option<String> {
        let key = match t.render(&self.vars(unix_ts, seq)) {
            Ok(k) => k,
            Err(e) => {
                self.failed(&e);
                return None;
            }
        };
        match self
            .target
            .put_create_only_as(&key, bytes.clone(), format.content_type())
            .await
        {
            Ok(Created::Yes | Created::LandedEarlier) => {
                tracing::debug!(key, "snapshot output stored (sequence)");
                Some(key)
            }
            Ok(Created::AlreadyExists) => {
                self.cx.metrics.key_taken("output_taken");
                tracing::info!(key, "output object exists; not replaced");
                None
            }
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    /// Writes the sequence object; returns its key and number when one was created.
    async fn store_sequence(
        &mut self,
        t: &Template,
        bytes: &Bytes,
        format: Format,
        unix_ts: u64,
    ) -> Option<(String, u64)> {
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
            let key = match t.render(&self.vars(unix_ts, seq)) {
                Ok(k) => k,
                Err(e) => {
                    self.failed(&e);
                    return None;
                }
            };
            let created = self
                .target
                .put_create_only_as(&key, bytes.clone(), format.content_type())
                .await;
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
                    return Some((key, seq));
                }
                Ok(Created::LandedEarlier) => {
                    self.cx.metrics.creates_landed_earlier.inc();
                    tracing::debug!(
                        key,
                        "snapshot stored (sequence, by an attempt that timed out)"
                    );
                    return Some((key, seq));
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
