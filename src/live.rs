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
//!
//! The registry also keeps a bounded record of the publishes that ended on this node
//! ([`Ended`]): one entry per stream, for [`ENDED_KEEP_SECS`] and at most [`ENDED_CAP`]
//! entries (the oldest go first, counted). A stream that publishes again is live, not
//! ended, and leaves the record until it ends again.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use bytes::Bytes;

use crate::clock::{unix_of, SharedClock};
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
    /// The RTMP players of this publish, while they play.
    pub players: Players,
}

/// A keyframe and the AVC sequence header in force for it: what an on-demand snapshot
/// decodes.
pub type Keyframe = (Bytes, std::sync::Arc<AvcConfig>);

/// On-demand snapshots waiting for a stream's next keyframe, at most.
pub const MAX_KEYFRAME_WAITERS: usize = 64;

/// Video facts of a live stream (updated per sequence header and keyframe only).
#[derive(Debug, Default)]
pub struct StreamInfo {
    /// "H.264", "HEVC", "AV1", "VP9" or "other".
    pub codec: Option<&'static str>,
    pub width: u32,
    pub height: u32,
    /// Media time between the last two keyframes, in ms.
    pub keyframe_interval_ms: Option<u32>,
    /// The newest H.264 keyframe, for on-demand snapshots; kept only while the hub keeps
    /// its group of pictures (the same bytes), so a stream without the GOP cache holds
    /// no picture.
    pub last_keyframe: Option<Keyframe>,
    /// On-demand snapshots waiting for the next H.264 keyframe (without the GOP cache), at
    /// most [`MAX_KEYFRAME_WAITERS`].
    pub keyframe_waiters: Vec<tokio::sync::oneshot::Sender<Keyframe>>,
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

/// One player of a live stream, as the admin API shows it (and kicks it).
#[derive(Debug)]
pub struct Player {
    /// Numbered from 1 within its stream, in the order players joined.
    pub id: u64,
    pub peer: SocketAddr,
    pub start_unix: u64,
    /// Media bytes sent to the player.
    pub bytes: AtomicU64,
    /// Bytes it skipped when it fell behind (to the newest keyframe).
    pub skipped_bytes: AtomicU64,
    /// Its place in the stream: the stream offset ([`crate::hub::Hub::pushed_bytes`]) it
    /// has taken the stream's media up to, set after each batch it is sent.
    pub position: AtomicU64,
    /// Cancelled to disconnect the player.
    pub kick: CancellationToken,
}

/// The players of one live stream: at most the cap given to [`Players::join`], each
/// listed from its join until its [`Seat`] is dropped.
#[derive(Debug, Default)]
pub struct Players {
    list: Mutex<Vec<Arc<Player>>>,
    next_id: AtomicU64,
}

/// A player's place in [`Players`]; leaving the list when dropped.
#[derive(Debug)]
pub struct Seat {
    stream: Arc<LiveStream>,
    pub player: Arc<Player>,
}

impl Players {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Player>>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a player to `stream`, unless it already has `max` (checked and added under
    /// one lock, so concurrent plays cannot pass the cap).
    pub fn join(stream: &Arc<LiveStream>, max: usize, peer: SocketAddr, now: u64) -> Option<Seat> {
        let players = &stream.players;
        let mut list = players.lock();
        if list.len() >= max {
            return None;
        }
        let player = Arc::new(Player {
            id: players.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            peer,
            start_unix: now,
            bytes: AtomicU64::new(0),
            skipped_bytes: AtomicU64::new(0),
            position: AtomicU64::new(0),
            kick: CancellationToken::new(),
        });
        list.push(player.clone());
        Some(Seat {
            stream: stream.clone(),
            player,
        })
    }

    /// The players now, in the order they joined.
    pub fn list(&self) -> Vec<Arc<Player>> {
        self.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn get(&self, id: u64) -> Option<Arc<Player>> {
        self.lock().iter().find(|p| p.id == id).cloned()
    }
}

impl Player {
    /// Media bytes sent and bytes skipped so far.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.bytes.load(Ordering::Relaxed),
            self.skipped_bytes.load(Ordering::Relaxed),
        )
    }
}

impl Seat {
    /// The stream the player plays.
    pub fn stream(&self) -> &Arc<LiveStream> {
        &self.stream
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.stream
            .players
            .lock()
            .retain(|p| !Arc::ptr_eq(p, &self.player));
    }
}

#[derive(Debug)]
pub struct Registry {
    inner: Mutex<Inner>,
    /// Times the end of a publish (the node's clock).
    clock: SharedClock,
    /// Woken whenever a publish goes live (players waiting for their stream).
    went_live: tokio::sync::Notify,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry::with_clock(crate::clock::system())
    }
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<StreamId, Arc<LiveStream>>,
    /// The same streams by (app, stream): where a key of another domain can clash.
    by_name: HashMap<(String, String), Vec<Arc<LiveStream>>>,
    ended: EndedLog,
}

/// How long an ended publish stays in the registry's record (24 h).
pub const ENDED_KEEP_SECS: u64 = 86_400;

/// The most ended publishes the record holds; the oldest go first.
pub const ENDED_CAP: usize = 10_000;

/// A publish that ended on this node.
#[derive(Debug, Clone)]
pub struct Ended {
    pub id: StreamId,
    /// When the publish started and ended, Unix seconds.
    pub started: u64,
    pub ended: u64,
    /// The publish's counters: snapshots in flight at its end still count when stored.
    pub stats: Arc<StreamStats>,
}

impl Ended {
    /// Snapshots the publish stored.
    pub fn stored(&self) -> u64 {
        StreamStats::get(&self.stats.stored)
    }

    /// When its last snapshot was stored, Unix seconds (`None`: none was).
    pub fn last_snapshot(&self) -> Option<u64> {
        Some(StreamStats::get(&self.stats.last_snapshot_unix)).filter(|&t| t > 0)
    }
}

/// The record of ended publishes: at most one entry per stream (its latest end),
/// oldest first, bounded in age and count. No I/O; times come from the caller.
#[derive(Debug)]
pub struct EndedLog {
    /// By insertion number: oldest first.
    order: BTreeMap<u64, Ended>,
    /// Each stream's entry in `order`.
    by_id: HashMap<StreamId, u64>,
    next: u64,
    keep_secs: u64,
    cap: usize,
    /// Entries dropped for the cap (not for their age).
    dropped: u64,
}

impl Default for EndedLog {
    fn default() -> EndedLog {
        EndedLog::new(ENDED_KEEP_SECS, ENDED_CAP)
    }
}

impl EndedLog {
    pub fn new(keep_secs: u64, cap: usize) -> EndedLog {
        EndedLog {
            order: BTreeMap::new(),
            by_id: HashMap::new(),
            next: 0,
            keep_secs,
            cap: cap.max(1),
            dropped: 0,
        }
    }

    /// Records a publish that ended at `e.ended` (replacing an earlier end of the same
    /// stream); drops what is older than the keep time at `e.ended` and, past the cap,
    /// the oldest entries.
    pub fn push(&mut self, e: Ended) {
        let now = e.ended;
        self.remove(&e.id);
        self.by_id.insert(e.id.clone(), self.next);
        self.order.insert(self.next, e);
        self.next += 1;
        self.expire(now);
        while self.order.len() > self.cap {
            if let Some((_, old)) = self.order.pop_first() {
                self.by_id.remove(&old.id);
                self.dropped += 1;
            }
        }
    }

    /// Forgets a stream's entry (it publishes again).
    pub fn remove(&mut self, id: &StreamId) {
        if let Some(n) = self.by_id.remove(id) {
            self.order.remove(&n);
        }
    }

    /// Drops the entries that ended more than the keep time before `now`.
    pub fn expire(&mut self, now: u64) {
        let keep = self.keep_secs;
        let old = |e: &Ended| now.saturating_sub(e.ended) > keep;
        // Mostly in end order: drop from the front, then any stragglers (a clock set back).
        while self.order.first_key_value().is_some_and(|(_, e)| old(e)) {
            if let Some((_, e)) = self.order.pop_first() {
                self.by_id.remove(&e.id);
            }
        }
        if self.order.values().any(old) {
            let by_id = &mut self.by_id;
            self.order.retain(|_, e| {
                let keep = !old(e);
                if !keep {
                    by_id.remove(&e.id);
                }
                keep
            });
        }
    }

    /// The entries that ended within the keep time before `now` and at or after
    /// `since`, newest end first (within one second, the one recorded last first).
    pub fn list(&self, now: u64, since: u64) -> Vec<Ended> {
        let mut v: Vec<Ended> = self
            .order
            .values()
            .rev()
            .filter(|e| now.saturating_sub(e.ended) <= self.keep_secs && e.ended >= since)
            .cloned()
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.ended));
        v
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Entries dropped for the cap so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
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
            inner.ended.push(Ended {
                id: id.clone(),
                started: unix_of(self.stream.started),
                ended: self.registry.clock.now_unix(),
                stats: self.stream.stats.clone(),
            });
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
    /// An empty registry whose ended publishes are timed by `clock`.
    pub fn with_clock(clock: SharedClock) -> Registry {
        Registry {
            inner: Mutex::default(),
            clock,
            went_live: tokio::sync::Notify::new(),
        }
    }

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
        inner.ended.remove(&stream.id);
        inner.live.insert(stream.id.clone(), stream.clone());
        inner.by_name.entry(name).or_default().push(stream.clone());
        drop(inner);
        self.went_live.notify_waiters();
        Ok(PublishGuard {
            registry: self.clone(),
            stream,
        })
    }

    pub fn get(&self, id: &StreamId) -> Option<Arc<LiveStream>> {
        self.lock().live.get(id).cloned()
    }

    /// The live stream `id`, waiting up to `wait` (zero: not at all) for its publish to
    /// start; `None` when it did not. A publish that has ended but is not yet out of the
    /// registry does not count.
    pub async fn wait_live(
        &self,
        id: &StreamId,
        wait: std::time::Duration,
    ) -> Option<Arc<LiveStream>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let went_live = self.went_live.notified();
            tokio::pin!(went_live);
            // Register before looking, so a publish between the look and the wait wakes us.
            went_live.as_mut().enable();
            if let Some(live) = self.get(id).filter(|l| !l.hub.is_closed()) {
                return Some(live);
            }
            if wait.is_zero() {
                return None;
            }
            tracing::debug!(secs = wait.as_secs(), "waiting for the stream's publish");
            tokio::time::timeout_at(deadline, went_live).await.ok()?;
        }
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

    /// The publishes that ended on this node in the last [`ENDED_KEEP_SECS`] (by the
    /// registry's clock), at or after `since`, newest end first; and how many the cap
    /// has dropped so far.
    pub fn ended(&self, since: u64) -> (Vec<Ended>, u64) {
        let now = self.clock.now_unix();
        let mut inner = self.lock();
        inner.ended.expire(now);
        (inner.ended.list(now, since), inner.ended.dropped())
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
            players: Default::default(),
        }
    }

    #[test]
    fn players_are_capped_numbered_and_leave_with_their_seat() {
        let stream = Arc::new(live("cam"));
        let peer = |p: u16| SocketAddr::from(([192, 0, 2, 1], p));
        let a = Players::join(&stream, 2, peer(1), 100).unwrap();
        let b = Players::join(&stream, 2, peer(2), 101).unwrap();
        assert!(
            Players::join(&stream, 2, peer(3), 102).is_none(),
            "over the cap"
        );
        assert_eq!((a.player.id, b.player.id), (1, 2));
        assert!(Arc::ptr_eq(a.stream(), &stream));
        b.player.bytes.fetch_add(7, Ordering::Relaxed);
        assert_eq!(
            stream.players.get(2).unwrap().bytes.load(Ordering::Relaxed),
            7
        );
        drop(a);
        let left: Vec<_> = stream
            .players
            .list()
            .iter()
            .map(|p| (p.id, p.peer))
            .collect();
        assert_eq!(left, [(2, peer(2))]);
        assert!(stream.players.get(1).is_none());
        // The freed place is taken by a new id, never a reused one.
        let c = Players::join(&stream, 2, peer(4), 103).unwrap();
        assert_eq!((c.player.id, c.player.start_unix), (3, 103));
        assert_eq!(stream.players.len(), 2);
        drop((b, c));
        assert!(stream.players.is_empty());
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

    fn ended(stream: &str, at: u64) -> Ended {
        Ended {
            id: StreamId::new("d", "live", stream),
            started: at.saturating_sub(10),
            ended: at,
            stats: Default::default(),
        }
    }

    fn names(v: &[Ended]) -> Vec<&str> {
        v.iter().map(|e| e.id.stream.as_str()).collect()
    }

    #[test]
    fn ended_publishes_expire_after_the_keep_time() {
        let mut log = EndedLog::new(100, 10);
        log.push(ended("a", 1_000));
        log.push(ended("b", 1_050));
        assert_eq!(names(&log.list(1_100, 0)), ["b", "a"]);
        // `since` bounds the end time.
        assert_eq!(names(&log.list(1_100, 1_001)), ["b"]);
        // 101 s after its end, "a" is gone from the list, and from the record once expired.
        assert_eq!(names(&log.list(1_101, 0)), ["b"]);
        log.expire(1_101);
        assert_eq!(log.len(), 1);
        log.expire(1_151);
        assert!(log.is_empty());
        assert_eq!(log.dropped(), 0, "expiry is not a drop");
    }

    #[test]
    fn ended_publishes_are_capped_oldest_first_and_counted() {
        let mut log = EndedLog::new(1_000_000, 3);
        for (i, s) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            log.push(ended(s, 100 + i as u64));
        }
        assert_eq!(log.len(), 3);
        assert_eq!(log.dropped(), 2);
        assert_eq!(names(&log.list(200, 0)), ["e", "d", "c"]);
        // One entry per stream: ending again replaces the earlier end, drops nothing.
        log.push(ended("c", 300));
        assert_eq!(names(&log.list(300, 0)), ["c", "e", "d"]);
        assert_eq!(log.dropped(), 2);
        assert_eq!(log.by_id.len(), log.order.len());
    }

    #[test]
    fn a_republished_stream_is_live_not_ended() {
        let clock = Arc::new(crate::clock::ManualClock::new(5_000));
        let reg = Arc::new(Registry::with_clock(clock.clone()));
        let g = reg.claim(live("a")).unwrap();
        let other = reg.claim(live("b")).unwrap();
        assert!(reg.ended(0).0.is_empty(), "live streams are not ended");
        clock.advance(30);
        let stats = g.stream.stats.clone();
        drop(g);
        let (list, dropped) = reg.ended(0);
        assert_eq!(names(&list), ["a"]);
        assert_eq!((list[0].ended, list[0].stored(), dropped), (5_030, 0, 0));
        assert_eq!(list[0].last_snapshot(), None);
        // A snapshot in flight at the end still counts once stored.
        stats
            .stored
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        stats
            .last_snapshot_unix
            .store(5_029, std::sync::atomic::Ordering::Relaxed);
        let (list, _) = reg.ended(0);
        assert_eq!(
            (list[0].stored(), list[0].last_snapshot()),
            (1, Some(5_029))
        );
        // Publishing again takes it off the record; ending again puts it back, once.
        let g = reg.claim(live("a")).unwrap();
        assert!(reg.ended(0).0.is_empty());
        clock.advance(10);
        drop(other);
        drop(g);
        let (list, _) = reg.ended(0);
        assert_eq!(names(&list), ["a", "b"], "the one that ended last first");
        assert_eq!(list[0].ended, 5_040);
        // A day later both are gone.
        clock.advance(ENDED_KEEP_SECS + 1);
        assert!(reg.ended(0).0.is_empty());
        assert!(reg.lock().ended.is_empty());
    }
}
