//! The live streams of this node, keyed by [`StreamId`]: what the rest of the node
//! (the admin API, the dashboard) can see of a publish while it lasts. A name is held
//! from an accepted publish until its connection ends or unpublishes; a second
//! publisher on a held name is refused.
//!
//! A name also holds its keys: templates that leave out `{Domain}` (the default) render
//! the same keys for one app and stream under every domain, so such publishes are one
//! stream here: a second one whose rule would render a key of a live one on the same
//! storage is refused ([`Taken::SameKeys`]). Keys are compared as languages
//! (`storage::key_language`), against the live streams of the same app and stream only.

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
use crate::storage::key_language::{Language, Scope};

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
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<StreamId, Arc<LiveStream>>,
    /// The same streams by (app, stream): where a key of another domain can clash.
    by_name: HashMap<(String, String), Vec<Arc<LiveStream>>>,
}

/// Why a publish could not claim its name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Taken {
    #[error("stream {0} is already being published")]
    Live(StreamId),
    #[error("{0}")]
    SameKeys(Box<SharedKeys>),
}

/// A publish whose rule would render a key of a live stream of another domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream {id} would write the key {key:?} of live stream {live} (its rule's templates leave out {{Domain}}, so the two are one stream)")]
pub struct SharedKeys {
    pub id: StreamId,
    pub live: StreamId,
    /// An example key both would render.
    pub key: String,
}

/// Removes its stream from the registry when dropped (also on a panic's unwind).
#[derive(Debug)]
pub struct PublishGuard {
    registry: Arc<Registry>,
    pub stream: Arc<LiveStream>,
}

impl Drop for PublishGuard {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        let id = &self.stream.id;
        if inner
            .live
            .get(id)
            .is_some_and(|s| Arc::ptr_eq(s, &self.stream))
        {
            inner.live.remove(id);
        }
        let name = (id.app.clone(), id.stream.clone());
        if let Some(v) = inner.by_name.get_mut(&name) {
            v.retain(|s| !Arc::ptr_eq(s, &self.stream));
            if v.is_empty() {
                inner.by_name.remove(&name);
            }
        }
    }
}

/// A key both streams' rules would render on one storage target, if any.
fn shared_key(a: &LiveStream, b: &LiveStream) -> Option<String> {
    let (Some(ra), Some(rb)) = (&a.rule, &b.rule) else {
        return None;
    };
    if ra.storage() != rb.storage() {
        return None;
    }
    let langs = |r: &Rule, id: &StreamId| -> Vec<Language> {
        let scope = Scope {
            domain: Some(&id.domain),
            app: Some(&id.app),
            stream: Some(&id.stream),
        };
        [&r.overwrite_object, &r.sequence_object]
            .into_iter()
            .flatten()
            .map(|t| Language::of(t, scope))
            .collect()
    };
    let (la, lb) = (langs(ra, &a.id), langs(rb, &b.id));
    la.iter()
        .flat_map(|x| lb.iter().map(move |y| (x, y)))
        .find_map(|(x, y)| x.common_key(y))
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the stream's name, and its keys: refused when the name is live, or when
    /// a live stream of the same app and stream (another domain) would share a key.
    pub fn claim(self: &Arc<Self>, stream: LiveStream) -> Result<PublishGuard, Taken> {
        let mut inner = self.lock();
        if inner.live.contains_key(&stream.id) {
            return Err(Taken::Live(stream.id.clone()));
        }
        let name = (stream.id.app.clone(), stream.id.stream.clone());
        if let Some(others) = inner.by_name.get(&name) {
            for other in others {
                if let Some(key) = shared_key(&stream, other) {
                    return Err(Taken::SameKeys(Box::new(SharedKeys {
                        id: stream.id.clone(),
                        live: other.id.clone(),
                        key,
                    })));
                }
            }
        }
        let stream = Arc::new(stream);
        inner.live.insert(stream.id.clone(), stream.clone());
        inner.by_name.entry(name).or_default().push(stream.clone());
        Ok(PublishGuard {
            registry: self.clone(),
            stream,
        })
    }

    pub fn get(&self, id: &StreamId) -> Option<Arc<LiveStream>> {
        self.lock().live.get(id).cloned()
    }

    /// Every live stream, sorted by id.
    pub fn list(&self) -> Vec<Arc<LiveStream>> {
        let mut v: Vec<_> = self.lock().live.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().live.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSpec;

    fn live(stream: &str) -> LiveStream {
        live_in("d", stream, None)
    }

    fn live_in(domain: &str, stream: &str, rule: Option<Arc<Rule>>) -> LiveStream {
        LiveStream {
            id: StreamId::new(domain, "live", stream),
            peer: "127.0.0.1:1".parse().unwrap(),
            started: SystemTime::now(),
            rule,
            stats: Default::default(),
            latest: Default::default(),
            kick: CancellationToken::new(),
            info: Default::default(),
            hub: Hub::new(Default::default()),
            relays: OnceLock::new(),
        }
    }

    fn rule(overwrite: &str, sequence: &str, storage: &str) -> Arc<Rule> {
        let spec = RuleSpec {
            domain: "*".into(),
            app: "*".into(),
            interval_secs: 5,
            storage: storage.into(),
            overwrite_object: Some(overwrite.into()),
            sequence_object: Some(sequence.into()),
            ..Default::default()
        };
        Arc::new(spec.validate("rule", |_| true).unwrap())
    }

    #[test]
    fn second_claim_is_refused_until_the_first_ends() {
        let reg = Arc::new(Registry::default());
        let g = reg.claim(live("a")).unwrap();
        assert_eq!(
            reg.claim(live("a")).unwrap_err(),
            Taken::Live(StreamId::new("d", "live", "a"))
        );
        let other = reg.claim(live("b")).unwrap();
        assert_eq!(reg.len(), 2);
        drop(g);
        assert_eq!(reg.len(), 1);
        let g2 = reg.claim(live("a")).unwrap();
        assert_eq!(reg.list().len(), 2);
        drop((g2, other));
        assert!(reg.is_empty());
        assert!(reg.lock().by_name.is_empty());
    }

    #[test]
    fn domainless_keys_make_two_domains_one_stream() {
        let reg = Arc::new(Registry::default());
        let plain = rule(
            "{AppName}/{StreamName}.jpg",
            "{AppName}/{StreamName}/{Sequence}.jpg",
            "default",
        );
        let a = reg
            .claim(live_in("a.example", "cam1", Some(plain.clone())))
            .unwrap();
        let refused = reg
            .claim(live_in("b.example", "cam1", Some(plain.clone())))
            .unwrap_err();
        assert_eq!(
            refused,
            Taken::SameKeys(Box::new(SharedKeys {
                id: StreamId::new("b.example", "live", "cam1"),
                live: StreamId::new("a.example", "live", "cam1"),
                key: "live/cam1.jpg".into(),
            }))
        );
        // Another stream name, no rule, or another storage: no shared key.
        let b = reg
            .claim(live_in("b.example", "cam2", Some(plain.clone())))
            .unwrap();
        let c = reg.claim(live_in("c.example", "cam1", None)).unwrap();
        let other_storage = rule(
            "{AppName}/{StreamName}.jpg",
            "{AppName}/{StreamName}/{Sequence}.jpg",
            "other",
        );
        let d = reg
            .claim(live_in("d.example", "cam1", Some(other_storage)))
            .unwrap();
        // Once the first ends, the second domain may publish.
        drop(a);
        let e = reg
            .claim(live_in("b.example", "cam1", Some(plain)))
            .unwrap();
        drop((b, c, d, e));
        assert!(reg.is_empty());
    }

    #[test]
    fn templates_with_the_domain_keep_domains_apart() {
        let reg = Arc::new(Registry::default());
        let with_domain = rule(
            "{Domain}/{AppName}/{StreamName}.jpg",
            "{Domain}/{AppName}/{StreamName}/{Sequence}.jpg",
            "default",
        );
        let _a = reg
            .claim(live_in("a.example", "cam1", Some(with_domain.clone())))
            .unwrap();
        let _b = reg
            .claim(live_in("b.example", "cam1", Some(with_domain)))
            .unwrap();
        // A domainless rule taken by a later publish still meets neither: its keys
        // have one folder less.
        let plain = rule(
            "{AppName}/{StreamName}.jpg",
            "{AppName}/{StreamName}/{Sequence}.jpg",
            "default",
        );
        let _c = reg
            .claim(live_in("c.example", "cam1", Some(plain)))
            .unwrap();
        // ...but a rule whose text spells a live stream's domain does.
        let spelled = rule(
            "a.example/{AppName}/{StreamName}.jpg",
            "a.example/{AppName}/{StreamName}/{Sequence}.jpg",
            "default",
        );
        assert!(matches!(
            reg.claim(live_in("x.example", "cam1", Some(spelled))),
            Err(Taken::SameKeys(_))
        ));
    }
}
