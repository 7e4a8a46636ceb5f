//! One accepted publish, from the publisher's side: holds its name in the registry,
//! looks at each video tag just enough to find keyframes and sequence headers, asks
//! the scheduler whether a snapshot is due and, if so, hands the keyframe to the pool.
//! A non-keyframe costs a two-byte look; nothing is copied. Reports the publish and
//! its end as events.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::clock::unix_of;
use crate::events::{At, Event};
use crate::hub::{Frame, FrameKind, Hub};
use crate::live::{LiveStream, PublishGuard};
use crate::media::avc::{self, AvcConfig};
use crate::media::flv::{self, PacketKind, VideoCodec};
use crate::media::sps;
use crate::names::StreamId;
use crate::node::Node;
use crate::relay;
use crate::rules::Rule;
use crate::snapshot::pool::{DueKeyframe, StreamQueue};
use crate::snapshot::scheduler::Scheduler;
use crate::snapshot::stats::StreamStats;
use crate::snapshot::writer::{SnapshotWriter, WriterContext};
use tokio_util::sync::{CancellationToken, DropGuard};

/// The snapshot side of a publish that has a rule.
struct Snapshotting {
    scheduler: Scheduler,
    queue: Arc<StreamQueue>,
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
    /// Stops the relay tasks' retries when the publish ends (dropped after the hub is
    /// closed, so connected relays first send what is left).
    _relay_stop: DropGuard,
}

/// Starts the relay targets of the publish (the relay config in force now).
fn start_relays(node: &Arc<Node>, live: &LiveStream, query: &str) -> DropGuard {
    let stop = CancellationToken::new();
    if let Some(relay) = node.relays.lookup(&live.id.domain, &live.id.app) {
        let states = relay::task::spawn_all(node, &live.id, query, &live.hub, &relay, &stop);
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
        let rule: Option<Arc<Rule>> = node.rules().lookup(&id.domain, &id.app);
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
            hub: Hub::new(node.settings.play.hub_limits()),
            relays: Default::default(),
        };
        let start_unix = unix_of(live.started);
        let latest = live.latest.clone();
        let guard = node
            .registry
            .claim(live)
            .ok_or_else(|| StartError::Duplicate(id.clone()))?;
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
                        },
                    );
                    node.tasks
                        .spawn(writer.run(rx).instrument(tracing::Span::current()));
                    tracing::info!(interval_secs = rule.interval_secs, rule_domain = %rule.domain(), rule_app = %rule.app(), "publish started; snapshots on");
                    Some(Snapshotting {
                        scheduler: Scheduler::new(rule.interval_secs),
                        queue: StreamQueue::new(tx, stats, tracing::Span::current()),
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
            &Event::Publish {
                stream: id,
                peer: peer.to_string(),
                at: At::unix(start_unix),
            },
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

    /// One video message (an FLV video tag body).
    pub fn on_video(&mut self, timestamp: u32, data: Bytes) {
        self.live().hub.push(Frame::video(timestamp, data.clone()));
        let first = *self.first_video_ts.get_or_insert(timestamp);
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
            PacketKind::Nalus if tag.keyframe => self.on_keyframe(timestamp, tag.body),
            _ => {}
        }
    }

    fn on_keyframe(&mut self, timestamp: u32, body: Bytes) {
        self.stats().keyframes.fetch_add(1, Ordering::Relaxed);
        self.node.metrics.keyframes.inc();
        {
            let mut info = self.guard.stream.info();
            if let Some(prev) = self.last_keyframe_ts.replace(timestamp) {
                info.keyframe_interval_ms = Some(timestamp.wrapping_sub(prev));
            }
            if let Some(cfg) = &self.config {
                info.last_keyframe = Some((body.clone(), cfg.clone()));
            }
        }
        let Some(snap) = self.snap.as_mut() else {
            return;
        };
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
        self.guard.stream.stats.due.fetch_add(1, Ordering::Relaxed);
        let job = DueKeyframe {
            body,
            config,
            unix_ts: self.start_unix + offset_ms / 1000,
            arrived: Instant::now(),
        };
        self.node.pool.submit(&snap.queue, job);
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.live().hub.close();
        self.node.metrics.publishes_active.dec();
        let live = &self.guard.stream;
        let now = self.node.clock.now_unix();
        let st = self.stats();
        let get = StreamStats::get;
        self.node.notify.send(
            &Event::Unpublish {
                stream: live.id.clone(),
                peer: live.peer.to_string(),
                at: At::unix(now),
                duration_secs: now.saturating_sub(self.start_unix),
                bytes: get(&st.bytes),
                snapshots: get(&st.stored),
                snapshots_dropped: get(&st.dropped_busy) + get(&st.dropped_backlog),
                snapshots_failed: get(&st.failed_decode) + get(&st.failed_store),
            },
            None,
        );
        tracing::info!(stats = %self.stats().summary(), "publish ended");
    }
}
