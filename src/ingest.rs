//! One accepted publish, from the publisher's side: holds its name in the registry,
//! looks at each video tag just enough to find keyframes and sequence headers, asks
//! the scheduler whether a snapshot is due and, if so, hands the keyframe to the pool.
//! A non-keyframe costs a two-byte look; nothing is copied. Under an exact-time rule
//! (`exact = true`) every AVC frame also goes to the stream's `ExactScheduler` (a clone
//! of the message's shared `Bytes`, counted in the `exact_gop_bytes` gauge), whose due
//! frames go to the pool the same way as keyframes. Reports the publish and its end as
//! events.
//!
//! It also tells whether the publisher runs ahead of real time ([`Pacing`]): a
//! recording pushed at full speed waits for room in the snapshot queue (the connection
//! task awaits [`Ingest::on_video`] and stops reading), a live publisher never waits.
//! The end of a publish (the `publish ended` line and the `unpublish` event) is
//! reported once the stream's queued keyframes are rendered and its writer has stored
//! them (at shutdown, at the latest shortly before the grace period ends), so its
//! counters are final.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::clock::unix_of;
use crate::events::{ClientEvent, Event};
use crate::hub::{Frame, FrameKind, Hub};
use crate::live::{LiveStream, PublishGuard};
use crate::media::avc::{self, AvcConfig};
use crate::media::flv::{self, PacketKind, VideoCodec};
use crate::media::sps;
use crate::names::StreamId;
use crate::node::Node;
use crate::relay;
use crate::rules::Rule;
use crate::snapshot::exact::{ExactDue, ExactScheduler};
use crate::snapshot::pool::{DueKeyframe, Pacing, StreamQueue};
use crate::snapshot::scheduler::{Scheduler, MAX_FORWARD_JUMP_MS};
use crate::snapshot::stats::StreamStats;
use crate::snapshot::writer::{SnapshotWriter, WriterContext};
use tokio_util::sync::{CancellationToken, DropGuard};

/// How far the media clock may run ahead of the wall clock before a publisher counts as
/// faster than real time (start-up bursts, a relay's GOP cache, jitter).
pub const PACING_SLACK: Duration = Duration::from_secs(2);

/// Media time against wall time since a publish's first video message: which
/// [`Pacing`] applies to its due keyframes.
#[derive(Debug, Default, Clone)]
pub struct PaceClock {
    start: Option<Instant>,
    last_ts: u32,
    media_ms: u64,
}

impl PaceClock {
    /// One video message's timestamp, received at `now`. Steps backwards and jumps
    /// forward by more than an hour (discontinuities) do not move the media clock.
    pub fn on_timestamp(&mut self, ts: u32, now: Instant) {
        if self.start.is_none() {
            self.start = Some(now);
        } else {
            let delta = ts.wrapping_sub(self.last_ts);
            if (delta as i32) >= 0 && delta <= MAX_FORWARD_JUMP_MS {
                self.media_ms += u64::from(delta);
            }
        }
        self.last_ts = ts;
    }

    /// Offline when the media received covers more than the wall time since the first
    /// video message plus [`PACING_SLACK`].
    pub fn pacing(&self, now: Instant) -> Pacing {
        let Some(start) = self.start else {
            return Pacing::Live;
        };
        let wall = now.saturating_duration_since(start) + PACING_SLACK;
        if Duration::from_millis(self.media_ms) > wall {
            Pacing::Offline
        } else {
            Pacing::Live
        }
    }
}

/// The snapshot side of a publish that has a rule.
struct Snapshotting {
    scheduler: Scheduler,
    /// Exact mode (the rule's `exact = true`): the GOP since the last keyframe and the
    /// choice of the due frames; `scheduler` is then unused.
    exact: Option<ExactScheduler<Arc<AvcConfig>>>,
    /// Bytes of `exact`'s GOP counted in the `exact_gop_bytes` gauge.
    gop_bytes: u64,
    queue: Arc<StreamQueue>,
    /// The writer task: it ends once the pool has handed over the last snapshot.
    writer: Option<JoinHandle<()>>,
}

/// The ingest side of one live publish (the connection task owns it).
pub struct Ingest {
    node: Arc<Node>,
    guard: PublishGuard,
    snap: Option<Snapshotting>,
    config: Option<Arc<AvcConfig>>,
    start_unix: u64,
    warned_codec: bool,
    warned_no_header: bool,
    warned_bad_tag: bool,
    first_video_ts: Option<u32>,
    last_keyframe_ts: Option<u32>,
    pace: PaceClock,
    /// Time the connection waited for the snapshot queue so far.
    paced: Duration,
    warned_paced: bool,
    warned_patience: bool,
    /// Stops the relay tasks' retries when the publish ends (dropped after the hub is
    /// closed, so connected relays first send what is left).
    _relay_stop: DropGuard,
}

/// Starts the relay targets of the publish (the relay config in force now).
fn start_relays(node: &Arc<Node>, live: &LiveStream, query: &str) -> DropGuard {
    let stop = CancellationToken::new();
    if let Some(relay) = node.relays.lookup(&live.id.domain, &live.id.app) {
        // A signature livesnap checked is its own; an origin's passes through untouched.
        let query = match node.access().auth.requirement(&live.id.domain) {
            crate::auth::Requirement::Signature(_) => relay::url::without_auth_key(query),
            _ => query.to_owned(),
        };
        let states = relay::task::spawn_all(node, &live.id, &query, &live.hub, &relay, &stop);
        tracing::info!(targets = states.len(), relay_domain = %relay.spec.domain, relay_app = %relay.spec.app, "relaying to upstream targets");
        let _ = live.relays.set(states);
    }
    stop.drop_guard()
}

/// Why a publish could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("stream {0} is already being published")]
    Duplicate(StreamId),
    /// Another domain's publish of the same app and stream is live and its keys would
    /// be shared (`live::Taken::SameKeys`).
    #[error("{0}")]
    SameKeys(crate::live::Taken),
}

impl Ingest {
    /// Claims the name and, when a rule applies, starts the stream's snapshot writer;
    /// relays start without the publish's query (see [`Ingest::start_with_query`]).
    pub fn start(
        node: &Arc<Node>,
        id: StreamId,
        peer: std::net::SocketAddr,
    ) -> Result<Ingest, StartError> {
        Ingest::start_with_query(node, id, "", peer)
    }

    /// [`Ingest::start`], with the publish's query (without `?`) for relay targets that
    /// pass it on.
    pub fn start_with_query(
        node: &Arc<Node>,
        id: StreamId,
        query: &str,
        peer: std::net::SocketAddr,
    ) -> Result<Ingest, StartError> {
        let rule: Option<Arc<Rule>> = node.rules().lookup(&id.domain, &id.app, &id.stream);
        let stats = Arc::new(StreamStats::default());
        let live = LiveStream {
            id: id.clone(),
            peer,
            started: SystemTime::now(),
            rule: rule.clone(),
            stats: stats.clone(),
            latest: Default::default(),
            kick: tokio_util::sync::CancellationToken::new(),
            info: Default::default(),
            hub: Hub::new(node.access().play.hub_limits()),
            relays: Default::default(),
            players: Default::default(),
        };
        let start_unix = unix_of(live.started);
        let latest = live.latest.clone();
        let kick = live.kick.clone();
        let guard = node.registry.claim(live).map_err(|t| match t {
            crate::live::Taken::Live(id) => StartError::Duplicate(id),
            t => StartError::SameKeys(t),
        })?;
        let relay_stop = start_relays(node, &guard.stream, query);
        let snap = match rule {
            Some(rule) => match node.targets.get(rule.storage()) {
                Some(target) => {
                    let (tx, rx) = mpsc::channel(node.settings.store_queue);
                    let writer = SnapshotWriter::new(
                        id.clone(),
                        rule.clone(),
                        target.clone(),
                        WriterContext {
                            metrics: node.metrics.clone(),
                            notify: node.notify.clone(),
                            stats: stats.clone(),
                            latest,
                            review: rule
                                .spec
                                .review_url
                                .is_some()
                                .then(|| (node.review.clone(), kick.clone())),
                        },
                    );
                    let writer = node
                        .tasks
                        .spawn(writer.run(rx).instrument(tracing::Span::current()));
                    tracing::info!(interval_secs = rule.interval_secs, rule_domain = %rule.domain(), rule_app = %rule.app(), "publish started; snapshots on");
                    Some(Snapshotting {
                        scheduler: Scheduler::new(rule.interval_secs),
                        exact: rule
                            .spec
                            .exact
                            .then(|| ExactScheduler::new(rule.interval_secs, node.settings.exact)),
                        gop_bytes: 0,
                        queue: StreamQueue::with_outputs(
                            tx,
                            stats,
                            tracing::Span::current(),
                            rule.outputs.clone(),
                        ),
                        writer: Some(writer),
                    })
                }
                None => {
                    // Only possible if a rule names a target that was removed.
                    tracing::error!(storage = %rule.storage(), "rule names an unknown storage; no snapshots");
                    None
                }
            },
            None => {
                tracing::info!("publish started; no snapshot rule matches");
                None
            }
        };
        node.metrics.publishes_active.inc();
        node.notify.send(
            &Event::Publish(ClientEvent::new(id, peer, start_unix)),
            None,
        );
        Ok(Ingest {
            node: node.clone(),
            guard,
            snap,
            config: None,
            start_unix,
            warned_codec: false,
            warned_no_header: false,
            warned_bad_tag: false,
            first_video_ts: None,
            last_keyframe_ts: None,
            pace: PaceClock::default(),
            paced: Duration::ZERO,
            warned_paced: false,
            warned_patience: false,
            _relay_stop: relay_stop,
        })
    }

    pub fn live(&self) -> &Arc<LiveStream> {
        &self.guard.stream
    }

    fn stats(&self) -> &StreamStats {
        &self.guard.stream.stats
    }

    /// One audio message (an FLV audio tag body).
    pub fn on_audio(&self, timestamp: u32, data: Bytes) {
        self.stats()
            .bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.live().hub.push(Frame::audio(timestamp, data));
    }

    /// The stream's `onMetaData` (as a player receives it).
    pub fn on_metadata(&self, timestamp: u32, data: Bytes) {
        self.live().hub.push(Frame {
            kind: FrameKind::Metadata,
            timestamp,
            data,
        });
    }

    /// One video message (an FLV video tag body). Returns at once, except for a due
    /// keyframe of a publisher ahead of real time whose snapshot queue is full: then it
    /// waits for room (the caller stops reading, which paces the sender), at most
    /// `server.idle_timeout_secs`, and not past a shutdown or a kick.
    pub async fn on_video(&mut self, timestamp: u32, data: Bytes) {
        self.live().hub.push(Frame::video(timestamp, data.clone()));
        let first = *self.first_video_ts.get_or_insert(timestamp);
        if self.snap.is_some() {
            self.pace.on_timestamp(timestamp, Instant::now());
        }
        let stats = self.stats();
        stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        stats.video_frames.fetch_add(1, Ordering::Relaxed);
        stats
            .media_ms
            .store(u64::from(timestamp.wrapping_sub(first)), Ordering::Relaxed);
        let tag = match flv::parse_video_tag(&data) {
            Ok(t) => t,
            Err(e) => {
                if !std::mem::replace(&mut self.warned_bad_tag, true) {
                    tracing::warn!(error = %e, "malformed video tag ignored (further ones silently)");
                }
                return;
            }
        };
        if tag.codec != VideoCodec::Avc {
            if !std::mem::replace(&mut self.warned_codec, true) {
                self.guard.stream.info().codec = Some(match tag.codec {
                    VideoCodec::Hevc => "HEVC",
                    VideoCodec::Av1 => "AV1",
                    VideoCodec::Vp9 => "VP9",
                    _ => "other",
                });
                tracing::warn!(codec = ?tag.codec, "video codec is not H.264: ingested, not snapshotted");
            }
            if tag.keyframe && tag.kind == PacketKind::Nalus {
                self.stats().keyframes.fetch_add(1, Ordering::Relaxed);
                self.node.metrics.keyframes.inc();
                if let Some(snap) = self.snap.as_mut() {
                    if snap.scheduler.on_keyframe(timestamp).is_some() {
                        self.node.metrics.dropped("unsupported_codec");
                    }
                }
            }
            return;
        }
        match tag.kind {
            PacketKind::SequenceHeader => match avc::parse_decoder_config(&tag.body) {
                Ok(cfg) => {
                    let mut info = self.guard.stream.info();
                    info.codec = Some("H.264");
                    if let Some(sps) = cfg.sps.first().and_then(|s| sps::parse_sps(s).ok()) {
                        info.width = sps.width;
                        info.height = sps.height;
                    }
                    drop(info);
                    self.config = Some(Arc::new(cfg));
                }
                Err(e) => tracing::warn!(error = %e, "bad AVC sequence header ignored"),
            },
            PacketKind::Nalus if tag.keyframe => {
                self.on_keyframe(timestamp, tag.composition_time, tag.body)
                    .await
            }
            PacketKind::Nalus if self.snap.as_ref().is_some_and(|s| s.exact.is_some()) => {
                self.on_exact_frame(timestamp, tag.composition_time, false, tag.body)
                    .await;
            }
            _ => {}
        }
    }

    /// Exact mode: one AVC frame (decode order) into the stream's GOP; submits the
    /// snapshots it makes final.
    async fn on_exact_frame(&mut self, timestamp: u32, cts: i32, keyframe: bool, body: Bytes) {
        let Some(snap) = self.snap.as_mut() else {
            return;
        };
        let Some(exact) = snap.exact.as_mut() else {
            return;
        };
        let config = self.config.clone();
        let dues = match &config {
            Some(c) => exact.on_frame(timestamp, cts, keyframe, body, || c.clone()),
            None => Vec::new(),
        };
        let bytes = exact.gop_bytes();
        let gauge = &self.node.metrics.exact_gop_bytes;
        gauge.inc_by(bytes as i64 - snap.gop_bytes as i64);
        snap.gop_bytes = bytes;
        for due in dues {
            self.submit_exact(due).await;
        }
    }

    async fn submit_exact(&mut self, due: ExactDue<Arc<AvcConfig>>) {
        if let Some(f) = due.fallback {
            self.node.metrics.exact_fallback(f.reason());
            tracing::debug!(
                reason = f.reason(),
                "exact-time snapshot falls back to its keyframe"
            );
        }
        self.stats().due.fetch_add(1, Ordering::Relaxed);
        let job = exact_job(due, self.start_unix);
        self.submit(job).await;
    }

    async fn on_keyframe(&mut self, timestamp: u32, cts: i32, body: Bytes) {
        self.stats().keyframes.fetch_add(1, Ordering::Relaxed);
        self.node.metrics.keyframes.inc();
        {
            let mut info = self.guard.stream.info();
            if let Some(prev) = self.last_keyframe_ts.replace(timestamp) {
                info.keyframe_interval_ms = Some(timestamp.wrapping_sub(prev));
            }
            if let Some(cfg) = &self.config {
                let keyframe = (body.clone(), cfg.clone());
                for waiter in info.keyframe_waiters.drain(..) {
                    let _ = waiter.send(keyframe.clone());
                }
                // Kept while the hub keeps the same bytes in its GOP cache; without it,
                // nothing of the stream is held and an on-demand snapshot waits.
                if self.guard.stream.hub.keeps_gop() {
                    info.last_keyframe = Some(keyframe);
                }
            }
        }
        let Some(snap) = self.snap.as_mut() else {
            return;
        };
        if snap.exact.is_some() {
            if self.config.is_none() && !std::mem::replace(&mut self.warned_no_header, true) {
                tracing::warn!("keyframe before any AVC sequence header: not snapshotted");
            }
            self.on_exact_frame(timestamp, cts, true, body).await;
            return;
        }
        let Some(config) = self.config.clone() else {
            if !std::mem::replace(&mut self.warned_no_header, true) {
                tracing::warn!("keyframe before any AVC sequence header: not snapshotted");
            }
            if snap.scheduler.on_keyframe(timestamp).is_some() {
                self.node.metrics.dropped("no_sequence_header");
            }
            return;
        };
        let Some(offset_ms) = snap.scheduler.on_keyframe(timestamp) else {
            return;
        };
        self.stats().due.fetch_add(1, Ordering::Relaxed);
        let job = DueKeyframe {
            body,
            config,
            unix_ts: self.start_unix + offset_ms / 1000,
            arrived: Instant::now(),
            forward: Vec::new(),
            rank: 0,
        };
        self.submit(job).await;
    }

    /// Hands a due snapshot (counted in `stats.due`) to the pool, paced or not.
    async fn submit(&mut self, job: DueKeyframe) {
        let Some(snap) = self.snap.as_ref() else {
            return;
        };
        let stats = &self.guard.stream.stats;
        let pacing = self.pace.pacing(job.arrived);
        let node = &self.node;
        let kick = self.guard.stream.kick.clone();
        let patience = node.settings.idle_timeout;
        let give_up = async {
            tokio::select! {
                () = node.shutdown.cancelled() => {}
                () = kick.cancelled() => {}
                () = tokio::time::sleep(patience) => {}
            }
        };
        let r = node.pool.submit(&snap.queue, job, pacing, give_up).await;
        if r.waited > Duration::ZERO {
            self.paced += r.waited;
            stats
                .paced_ms
                .store(self.paced.as_millis() as u64, Ordering::Relaxed);
            node.metrics
                .publisher_paced_seconds
                .inc_by(r.waited.as_secs_f64());
            if !std::mem::replace(&mut self.warned_paced, true) {
                tracing::info!(
                    "publisher runs ahead of real time: reading paced by the snapshot queue"
                );
            }
        }
        let cancelled = node.shutdown.is_cancelled() || kick.is_cancelled();
        if r.gave_up && !cancelled && !std::mem::replace(&mut self.warned_patience, true) {
            tracing::warn!(
                waited_ms = r.waited.as_millis() as u64,
                "no room in the snapshot queue within the idle timeout: oldest keyframe dropped (further ones silently)"
            );
        }
    }
}

/// The pool's job for an exact-time snapshot.
fn exact_job(due: ExactDue<Arc<AvcConfig>>, start_unix: u64) -> DueKeyframe {
    DueKeyframe {
        body: due.keyframe,
        config: due.context,
        unix_ts: start_unix + due.offset_ms / 1000,
        arrived: Instant::now(),
        forward: due.forward,
        rank: due.rank,
    }
}

/// What is reported when a publish ends.
struct EndReport {
    node: Arc<Node>,
    stream: Arc<LiveStream>,
    start_unix: u64,
}

impl EndReport {
    /// Waits until `writer` has stored the stream's last snapshot, or until shortly
    /// before the shutdown grace period ends, then reports.
    async fn after(self, writer: JoinHandle<()>) {
        let grace = self.node.settings.shutdown_grace;
        let shutdown = self.node.shutdown.clone();
        let deadline = async move {
            shutdown.cancelled().await;
            // Leave a tenth of the grace to deliver the report itself.
            tokio::time::sleep(grace - grace / 10).await;
        };
        tokio::select! {
            _ = writer => {}
            () = deadline => tracing::warn!(
                in_flight = self.stream.stats.in_flight(),
                "shutdown grace ending: publish reported before its last snapshots were stored"
            ),
        }
        self.emit();
    }

    fn emit(self) {
        let live = &self.stream;
        let now = self.node.clock.now_unix();
        let st = &live.stats;
        let get = StreamStats::get;
        self.node.notify.send(
            &Event::Unpublish {
                client: ClientEvent::new(live.id.clone(), live.peer, now),
                duration_secs: now.saturating_sub(self.start_unix),
                bytes: get(&st.bytes),
                snapshots: get(&st.stored),
                snapshots_dropped: get(&st.dropped_busy) + get(&st.dropped_backlog),
                snapshots_failed: get(&st.failed_decode) + get(&st.failed_store),
            },
            None,
        );
        tracing::info!(stats = %st.summary(), "publish ended");
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.live().hub.close();
        // On-demand snapshots waiting for a keyframe hear that none will come.
        self.live().info().keyframe_waiters.clear();
        self.node.metrics.publishes_active.dec();
        let report = EndReport {
            node: self.node.clone(),
            stream: self.guard.stream.clone(),
            start_unix: self.start_unix,
        };
        if let Some(snap) = self.snap.as_mut() {
            self.node
                .metrics
                .exact_gop_bytes
                .dec_by(snap.gop_bytes as i64);
            snap.gop_bytes = 0;
            // Exact mode: the due frame that waited for later frames goes in as live.
            if let Some(due) = snap.exact.as_mut().and_then(|e| e.finish()) {
                if let Some(f) = due.fallback {
                    self.node.metrics.exact_fallback(f.reason());
                }
                self.guard.stream.stats.due.fetch_add(1, Ordering::Relaxed);
                let job = exact_job(due, self.start_unix);
                let _ = self.node.pool.offer(&snap.queue, job, Pacing::Live);
            }
        }
        // Our handle on the queue goes now; the pool lets go of it (and so of the
        // writer's input) once its last waiting keyframe is rendered.
        let writer = self.snap.take().and_then(|s| s.writer);
        match (writer, tokio::runtime::Handle::try_current()) {
            (Some(writer), Ok(_)) => {
                self.node
                    .tasks
                    .spawn(report.after(writer).instrument(tracing::Span::current()));
            }
            _ => report.emit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_clock_tells_a_full_speed_push_from_a_live_one() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // A live publisher: media and wall time advance together, with jitter.
        let mut live = PaceClock::default();
        for i in 0..100u32 {
            let jitter = if i % 7 == 0 { 900 } else { 0 };
            live.on_timestamp(i * 100, at(u64::from(i) * 100 + jitter));
            assert_eq!(live.pacing(at(u64::from(i) * 100)), Pacing::Live, "{i}");
        }
        // A burst of up to the slack (a relay's start) is still live.
        let mut burst = PaceClock::default();
        for i in 0..=20u32 {
            burst.on_timestamp(i * 100, at(5));
        }
        assert_eq!(burst.pacing(at(5)), Pacing::Live);
        // A recording pushed at full speed: 10 s of media in 50 ms.
        let mut file = PaceClock::default();
        for i in 0..=250u32 {
            file.on_timestamp(i * 40, at(u64::from(i) / 5));
        }
        assert_eq!(file.pacing(at(50)), Pacing::Offline);
        // Once the wall clock has caught up, it is live again.
        assert_eq!(file.pacing(at(8_000)), Pacing::Live);
    }

    #[test]
    fn pace_clock_ignores_discontinuities() {
        let t0 = Instant::now();
        let mut c = PaceClock::default();
        c.on_timestamp(1_000, t0);
        // A jump back, then a jump forward by more than an hour: no media time.
        c.on_timestamp(10, t0);
        c.on_timestamp(10 + MAX_FORWARD_JUMP_MS + 1, t0);
        c.on_timestamp(20 + MAX_FORWARD_JUMP_MS + 1, t0);
        assert_eq!(c.media_ms, 10);
        assert_eq!(c.pacing(t0), Pacing::Live);
        // Timestamps wrapping past u32::MAX are a forward step.
        let mut w = PaceClock::default();
        w.on_timestamp(u32::MAX - 5, t0);
        w.on_timestamp(4_000, t0);
        assert_eq!(w.media_ms, 4_006);
        assert_eq!(w.pacing(t0), Pacing::Offline);
    }
}
