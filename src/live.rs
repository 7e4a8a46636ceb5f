//! The live streams of this node, keyed by [`StreamId`]: what the rest of the node
//! (the admin API, the dashboard) can see of a publish while it lasts. A name is held
//! from an accepted publish until its connection ends or unpublishes; a second
//! publisher on a held name is refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use bytes::Bytes;

use crate::hub::Hub;
use crate::media::avc::AvcConfig;
use crate::names::StreamId;
use crate::relay::state::RelayState;
use crate::rules::Rule;
use crate::snapshot::stats::StreamStats;
use crate::snapshot::writer::Latest;

/// What the node shows of one live publish.
#[derive(Debug)]
pub struct LiveStream {
    pub id: StreamId,
    pub peer: SocketAddr,
    pub started: SystemTime,
    pub rule: Option<Arc<Rule>>,
    pub stats: Arc<StreamStats>,
    pub latest: Latest,
    /// Cancelled to disconnect the publisher.
    pub kick: CancellationToken,
    /// What is known of the video, updated on sequence headers and keyframes.
    pub info: Mutex<StreamInfo>,
    /// The publish's media for players (and relays), as it arrives.
    pub hub: Hub,
    /// The relay targets of this publish (set once, right after the name is claimed).
    pub relays: OnceLock<Vec<Arc<RelayState>>>,
}

/// Video facts of a live stream (updated per sequence header and keyframe only).
#[derive(Debug, Default, Clone)]
pub struct StreamInfo {
    /// "H.264", "HEVC", "AV1", "VP9" or "other".
    pub codec: Option<&'static str>,
    pub width: u32,
    pub height: u32,
    /// Media time between the last two keyframes, in ms.
    pub keyframe_interval_ms: Option<u32>,
    /// The newest keyframe and the sequence header in force, for on-demand snapshots.
    pub last_keyframe: Option<(Bytes, std::sync::Arc<AvcConfig>)>,
}

impl LiveStream {
    /// The relay targets' states (none when no relay applies).
    pub fn relays(&self) -> &[Arc<RelayState>] {
        self.relays.get().map_or(&[], Vec::as_slice)
    }

    pub fn info(&self) -> std::sync::MutexGuard<'_, StreamInfo> {
        self.info.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    live: Mutex<HashMap<StreamId, Arc<LiveStream>>>,
}

/// Removes its stream from the registry when dropped (also on a panic's unwind).
#[derive(Debug)]
pub struct PublishGuard {
    registry: Arc<Registry>,
    pub stream: Arc<LiveStream>,
}

impl Drop for PublishGuard {
    fn drop(&mut self) {
        let mut live = self.registry.lock();
        if live
            .get(&self.stream.id)
            .is_some_and(|s| Arc::ptr_eq(s, &self.stream))
        {
            live.remove(&self.stream.id);
        }
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, Arc<LiveStream>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the stream's name; `None` when it is already live.
    pub fn claim(self: &Arc<Self>, stream: LiveStream) -> Option<PublishGuard> {
        let mut live = self.lock();
        if live.contains_key(&stream.id) {
            return None;
        }
        let stream = Arc::new(stream);
        live.insert(stream.id.clone(), stream.clone());
        Some(PublishGuard {
            registry: self.clone(),
            stream,
        })
    }

    pub fn get(&self, id: &StreamId) -> Option<Arc<LiveStream>> {
        self.lock().get(id).cloned()
    }

    /// Every live stream, sorted by id.
    pub fn list(&self) -> Vec<Arc<LiveStream>> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(stream: &str) -> LiveStream {
        LiveStream {
            id: StreamId::new("d", "live", stream),
            peer: "127.0.0.1:1".parse().unwrap(),
            started: SystemTime::now(),
            rule: None,
            stats: Default::default(),
            latest: Default::default(),
            kick: CancellationToken::new(),
            info: Default::default(),
            hub: Hub::new(Default::default()),
            relays: OnceLock::new(),
        }
    }

    #[test]
    fn second_claim_is_refused_until_the_first_ends() {
        let reg = Arc::new(Registry::default());
        let g = reg.claim(live("a")).unwrap();
        assert!(reg.claim(live("a")).is_none());
        let other = reg.claim(live("b")).unwrap();
        assert_eq!(reg.len(), 2);
        drop(g);
        assert_eq!(reg.len(), 1);
        let g2 = reg.claim(live("a")).unwrap();
        assert_eq!(reg.list().len(), 2);
        drop((g2, other));
        assert!(reg.is_empty());
    }
}
