//! The rule store shared by every node: the rules created through the admin API,
//! kept as one versioned JSON document in a configured storage target
//! (`[rule_store]`, default `_livesnap/rules.json` in the "default" storage).
//!
//! Every node re-reads the document every `reload_secs` and right after its own
//! writes; the rules in force are the config file's rules (the static base, which a
//! stored rule may not shadow) plus the stored ones. A document that cannot be read
//! leaves the last good rules in force and is reported by `health()`.
//!
//! Updates are read-modify-write cycles that never lose a concurrent update:
//! - where the backend has conditional writes (S3: `If-Match` on the ETag read, or
//!   `If-None-Match: *` for the first document), a write that lost the race gets a
//!   precondition failure and the cycle is retried on the fresh document;
//! - elsewhere (fs, memory) a lock object `KEY.lock` is created exclusively (on fs
//!   with `O_EXCL`, bypassing the atomic-rename path whose existence check races)
//!   around the cycle. A lock older than 30 s is taken to be left by a crashed node
//!   and removed: that takeover is best effort (two nodes doing it at the same instant
//!   could both proceed).
//!
//! This module owns the document and its I/O; it must not touch live streams (a
//! publish takes its rule once, at its start).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod lock;

use opendal::ErrorKind;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::{self, RuleConfig, RuleStoreConfig, Settings, StorageSettings};
use crate::rules::{Rule, RuleSet};
use crate::server::Node;
use crate::storage::{Target, Targets};

/// The document format this node reads and writes.
pub const FORMAT: u32 = 1;
/// Retired sequence templates kept at most (the oldest are dropped beyond).
pub const MAX_HISTORY: usize = 1000;
/// How long an update waits for a lock or retries conflicts before giving up.
const UPDATE_DEADLINE: Duration = Duration::from_secs(15);
/// How long `start` waits for the first read before serving with the config rules.
const FIRST_LOAD_WAIT: Duration = Duration::from_secs(5);

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The stored document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RulesDoc {
    #[serde(default = "format_v1")]
    pub format: u32,
    /// Incremented by every write.
    #[serde(default)]
    pub version: u64,
    /// Unix time of the last write.
    #[serde(default)]
    pub updated_time: u64,
    #[serde(default)]
    pub rules: Vec<StoredRule>,
    /// Sequence templates that rules used before an update or a delete, so that the
    /// snapshot query still finds what was stored under them.
    #[serde(default)]
    pub history: Vec<RetiredTemplate>,
}

fn format_v1() -> u32 {
    FORMAT
}

/// A rule as stored (the config file's fields plus times, in Unix seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRule {
    pub domain: String,
    pub app: String,
    pub interval_secs: i64,
    pub storage: String,
    #[serde(default)]
    pub overwrite_object: Option<String>,
    #[serde(default)]
    pub sequence_object: Option<String>,
    #[serde(default)]
    pub callback: Option<String>,
    pub create_time: u64,
    pub update_time: u64,
}

impl StoredRule {
    pub fn to_config(&self) -> RuleConfig {
        RuleConfig {
            domain: self.domain.clone(),
            app: self.app.clone(),
            interval_secs: self.interval_secs,
            storage: self.storage.clone(),
            overwrite_object: self.overwrite_object.clone(),
            sequence_object: self.sequence_object.clone(),
            callback: self.callback.clone(),
        }
    }
}

/// A sequence template no longer used by the rule (domain, app).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetiredTemplate {
    pub domain: String,
    pub app: String,
    pub storage: String,
    pub sequence_object: String,
    pub retired_time: u64,
}

impl RulesDoc {
    pub fn find(&self, domain: &str, app: &str) -> Option<&StoredRule> {
        self.rules
            .iter()
            .find(|r| r.domain == domain && r.app == app)
    }

    pub fn position(&self, domain: &str, app: &str) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.domain == domain && r.app == app)
    }

    /// Remembers `old`'s sequence template unless `new` keeps it (same storage and
    /// template) or it is remembered already.
    pub fn retire(&mut self, old: &StoredRule, new: Option<&StoredRule>, now: u64) {
        let Some(tpl) = &old.sequence_object else {
            return;
        };
        if new.is_some_and(|n| n.storage == old.storage && n.sequence_object.as_ref() == Some(tpl))
        {
            return;
        }
        let known = self.history.iter().any(|h| {
            h.domain == old.domain
                && h.app == old.app
                && h.storage == old.storage
                && &h.sequence_object == tpl
        });
        if !known {
            self.history.push(RetiredTemplate {
                domain: old.domain.clone(),
                app: old.app.clone(),
                storage: old.storage.clone(),
                sequence_object: tpl.clone(),
                retired_time: now,
            });
        }
        if self.history.len() > MAX_HISTORY {
            let excess = self.history.len() - MAX_HISTORY;
            self.history.drain(..excess);
        }
    }
}

/// Why the store could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("rule store {storage:?} {key:?}: {op} failed: {message}")]
    Io {
        storage: String,
        key: String,
        op: &'static str,
        message: String,
    },
    #[error("rule store {key:?} is not a valid rules document: {message}")]
    Corrupt { key: String, message: String },
    #[error("rule store {key:?} has format {found}, newer than this node's {FORMAT}")]
    TooNew { key: String, found: u32 },
    #[error("rule store {key:?} is busy: the update did not get through in {secs} s")]
    Busy { key: String, secs: u64 },
}

/// An update that was refused by its own logic (`E`) or could not reach the store.
#[derive(Debug)]
pub enum UpdateError<E> {
    Rejected(E),
    Store(StoreError),
}

/// What `/healthz` and `/readyz` report about the store.
#[derive(Debug, Clone, Serialize)]
pub struct StoreHealth {
    pub storage: String,
    pub key: String,
    /// Whether the last read succeeded.
    pub ok: bool,
    /// Version of the document in force on this node.
    pub version: u64,
    pub last_ok_unix: Option<u64>,
    pub error: Option<String>,
    pub error_since_unix: Option<u64>,
    /// Stored rules this node does not apply, with the reason.
    pub skipped: Vec<String>,
}

/// Where a document being applied comes from.
#[derive(Debug, Clone, Copy)]
enum Origin {
    OwnWrite,
    /// A read that started when `generation` documents had been applied.
    Read {
        generation: u64,
    },
}

#[derive(Debug)]
struct State {
    doc: Arc<RulesDoc>,
    /// Documents applied so far.
    generation: u64,
    last_ok: Option<u64>,
    error: Option<(String, u64)>,
    skipped: Vec<String>,
}

/// The store of one node.
pub struct RuleStore {
    target: Target,
    /// Serialises updates where there are no conditional writes.
    lock: lock::LockObject,
    if_match: bool,
    read_if_match: bool,
    pub key: String,
    reload: Duration,
    static_rules: Vec<Rule>,
    storage: BTreeMap<String, StorageSettings>,
    state: Mutex<State>,
    wake: Notify,
}

impl std::fmt::Debug for RuleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleStore")
            .field("storage", &self.target.name)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RuleStore {
    /// The store configured in `settings`, if any (its storage target is built already).
    pub fn new(settings: &Settings, targets: &Targets) -> Option<Arc<RuleStore>> {
        let cfg: &RuleStoreConfig = settings.rule_store.as_ref()?;
        let target = targets.get(&cfg.storage)?.clone();
        let st = settings.storage.get(&cfg.storage)?;
        let lock = lock::LockObject::new(st, &target.op, &cfg.key);
        let cap = target.op.info().capability();
        Some(Arc::new(RuleStore {
            if_match: cap.write_with_if_match && cap.write_with_if_not_exists,
            read_if_match: cap.read_with_if_match,
            lock,
            target,
            key: cfg.key.clone(),
            reload: Duration::from_secs(cfg.reload_secs),
            static_rules: settings.static_rules.clone(),
            storage: settings.storage.clone(),
            state: Mutex::new(State {
                doc: Arc::new(RulesDoc::default()),
                generation: 0,
                last_ok: None,
                error: None,
                skipped: Vec::new(),
            }),
            wake: Notify::new(),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn storage_name(&self) -> &str {
        &self.target.name
    }

    /// Whether updates use the backend's conditional writes (else the lock object).
    pub fn uses_conditional_writes(&self) -> bool {
        self.if_match
    }

    /// The document in force on this node.
    pub fn doc(&self) -> Arc<RulesDoc> {
        self.state().doc.clone()
    }

    pub fn health(&self) -> StoreHealth {
        let st = self.state();
        StoreHealth {
            storage: self.target.name.clone(),
            key: self.key.clone(),
            ok: st.error.is_none() && st.last_ok.is_some(),
            version: st.doc.version,
            last_ok_unix: st.last_ok,
            error: st.error.as_ref().map(|e| e.0.clone()),
            error_since_unix: st.error.as_ref().map(|e| e.1),
            skipped: st.skipped.clone(),
        }
    }

    fn io_err(&self, op: &'static str, key: &str, e: &opendal::Error) -> StoreError {
        StoreError::Io {
            storage: self.target.name.clone(),
            key: key.to_string(),
            op,
            message: e.to_string(),
        }
    }

    /// The rules in force for a document: the config rules, then every stored rule
    /// that validates on this node and does not shadow a config rule.
    pub fn rules_in_force(&self, doc: &RulesDoc) -> (RuleSet, Vec<String>) {
        let mut rules = self.static_rules.clone();
        let mut skipped = Vec::new();
        for (i, r) in doc.rules.iter().enumerate() {
            if rules.iter().any(|s| s.domain == r.domain && s.app == r.app) {
                skipped.push(format!(
                    "domain {:?} app {:?}: a rule of the config file or an earlier stored rule has the same domain and app",
                    r.domain, r.app
                ));
                continue;
            }
            match config::validate_rule(&r.to_config(), &format!("rules[{i}]"), &self.storage) {
                Ok(rule) => rules.push(rule),
                Err(e) => skipped.push(format!("domain {:?} app {:?}: {e}", r.domain, r.app)),
            }
        }
        (RuleSet::new(rules), skipped)
    }

    /// Makes `doc` the document in force and publishes the rules to the node. A
    /// document this node wrote is applied unless a newer one already is; a document
    /// read from storage is the truth (even an older or a missing one, put back by an
    /// operator) unless another document was applied while it was being read, in
    /// which case only a newer version wins.
    fn apply(&self, node: &Node, doc: Arc<RulesDoc>, origin: Origin) {
        let mut st = self.state();
        let take = match origin {
            Origin::OwnWrite => doc.version >= st.doc.version,
            Origin::Read { generation } if generation != st.generation => {
                doc.version > st.doc.version
            }
            Origin::Read { .. } => true,
        };
        if !take || *doc == *st.doc {
            return;
        }
        let (set, skipped) = self.rules_in_force(&doc);
        for s in skipped.iter().filter(|s| !st.skipped.contains(s)) {
            tracing::warn!(rule = %s, "stored rule not applied");
        }
        tracing::info!(
            version = doc.version,
            rules = set.len(),
            "rules in force updated from the rule store"
        );
        node.set_rules(set);
        st.doc = doc;
        st.skipped = skipped;
        st.generation += 1;
    }

    fn record_ok(&self) {
        let mut st = self.state();
        if let Some((e, _)) = st.error.take() {
            tracing::info!(previous_error = %e, "rule store readable again");
        }
        st.last_ok = Some(now_unix());
    }

    fn record_error(&self, e: &StoreError) {
        let mut st = self.state();
        if st.error.is_none() {
            tracing::warn!(error = %e, "rule store unreadable; the last good rules stay in force");
        }
        let since = st.error.as_ref().map_or_else(now_unix, |e| e.1);
        st.error = Some((e.to_string(), since));
    }

    /// Reads the document now and applies it.
    pub async fn reload(&self, node: &Node) -> Result<u64, StoreError> {
        let generation = self.state().generation;
        match self.read_doc(false).await {
            Ok((doc, _, _)) => {
                let v = doc.version;
                node.metrics.reload(true);
                self.record_ok();
                self.apply(node, Arc::new(doc), Origin::Read { generation });
                Ok(v)
            }
            Err(e) => {
                node.metrics.reload(false);
                self.record_error(&e);
                Err(e)
            }
        }
    }

    /// Asks the background task to re-read the document at once.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Reads the document: (document, ETag when asked for, whether it exists).
    async fn read_doc(
        &self,
        want_etag: bool,
    ) -> Result<(RulesDoc, Option<String>, bool), StoreError> {
        let op = &self.target.op;
        for _ in 0..5 {
            let etag = if want_etag {
                match op.stat(&self.key).await {
                    Ok(m) => m.etag().map(str::to_owned),
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        return Ok((RulesDoc::default(), None, false))
                    }
                    Err(e) => return Err(self.io_err("stat", &self.key, &e)),
                }
            } else {
                None
            };
            let read = match (&etag, self.read_if_match) {
                (Some(t), true) => op.read_with(&self.key).if_match(t).await,
                _ => op.read(&self.key).await,
            };
            let buf = match read {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::NotFound && !want_etag => {
                    return Ok((RulesDoc::default(), None, false))
                }
                // Replaced or removed between the stat and the read: once more.
                Err(e)
                    if matches!(e.kind(), ErrorKind::ConditionNotMatch | ErrorKind::NotFound) =>
                {
                    continue
                }
                Err(e) => return Err(self.io_err("read", &self.key, &e)),
            };
            let doc: RulesDoc =
                serde_json::from_slice(&buf.to_vec()).map_err(|e| StoreError::Corrupt {
                    key: self.key.clone(),
                    message: e.to_string(),
                })?;
            if doc.format > FORMAT {
                return Err(StoreError::TooNew {
                    key: self.key.clone(),
                    found: doc.format,
                });
            }
            return Ok((doc, etag, true));
        }
        Err(StoreError::Io {
            storage: self.target.name.clone(),
            key: self.key.clone(),
            op: "read",
            message: "the document kept changing while being read".into(),
        })
    }

    /// Applies `change` to the freshest document and writes it back without losing a
    /// concurrent update (see the module doc); then makes it the document in force on
    /// this node. `change` may run more than once (once per attempt).
    pub async fn update<T, E>(
        &self,
        node: &Node,
        mut change: impl FnMut(&mut RulesDoc, u64) -> Result<T, E>,
    ) -> Result<T, UpdateError<E>> {
        let deadline = Instant::now() + UPDATE_DEADLINE;
        let out = if self.if_match {
            self.update_conditional(node, &mut change, deadline).await
        } else {
            self.update_locked(node, &mut change, deadline).await
        };
        self.wake();
        out
    }

    fn busy(&self) -> StoreError {
        StoreError::Busy {
            key: self.key.clone(),
            secs: UPDATE_DEADLINE.as_secs(),
        }
    }

    fn encode(&self, doc: &mut RulesDoc, now: u64) -> Vec<u8> {
        doc.format = FORMAT;
        doc.version += 1;
        doc.updated_time = now;
        serde_json::to_vec_pretty(doc).expect("the rules document serialises")
    }

    async fn update_conditional<T, E>(
        &self,
        node: &Node,
        change: &mut impl FnMut(&mut RulesDoc, u64) -> Result<T, E>,
        deadline: Instant,
    ) -> Result<T, UpdateError<E>> {
        let mut attempt = 0u32;
        loop {
            let (mut doc, etag, exists) = self.read_doc(true).await.map_err(UpdateError::Store)?;
            let now = now_unix();
            let out = change(&mut doc, now).map_err(UpdateError::Rejected)?;
            let body = self.encode(&mut doc, now);
            let w = self
                .target
                .op
                .write_with(&self.key, body)
                .content_type("application/json");
            let w = match (&etag, exists) {
                (Some(t), true) => w.if_match(t),
                _ => w.if_not_exists(true),
            };
            match w.await {
                Ok(_) => {
                    self.record_ok();
                    self.apply(node, Arc::new(doc), Origin::OwnWrite);
                    return Ok(out);
                }
                Err(e) if e.kind() == ErrorKind::ConditionNotMatch => {
                    attempt += 1;
                    tracing::debug!(attempt, "rule store: concurrent update, retrying");
                    if Instant::now() > deadline {
                        return Err(UpdateError::Store(self.busy()));
                    }
                    tokio::time::sleep(lock::backoff(attempt)).await;
                }
                Err(e) => return Err(UpdateError::Store(self.io_err("write", &self.key, &e))),
            }
        }
    }

    async fn update_locked<T, E>(
        &self,
        node: &Node,
        change: &mut impl FnMut(&mut RulesDoc, u64) -> Result<T, E>,
        deadline: Instant,
    ) -> Result<T, UpdateError<E>> {
        let token = self
            .lock
            .acquire(deadline, self.busy())
            .await
            .map_err(UpdateError::Store)?;
        let result = async {
            let (mut doc, _, _) = self.read_doc(false).await.map_err(UpdateError::Store)?;
            let now = now_unix();
            let out = change(&mut doc, now).map_err(UpdateError::Rejected)?;
            let body = self.encode(&mut doc, now);
            self.target
                .op
                .write_with(&self.key, body)
                .content_type("application/json")
                .await
                .map_err(|e| UpdateError::Store(self.io_err("write", &self.key, &e)))?;
            self.record_ok();
            self.apply(node, Arc::new(doc), Origin::OwnWrite);
            Ok(out)
        }
        .await;
        self.lock.release(&token).await;
        result
    }
}

/// Reads the store once (bounded wait) and starts its background reload, if a store
/// is configured.
pub async fn start(node: &Arc<Node>) {
    let Some(store) = node.rule_store.clone() else {
        return;
    };
    match tokio::time::timeout(FIRST_LOAD_WAIT, store.reload(node)).await {
        Ok(Ok(v)) => {
            tracing::info!(storage = %store.target.name, key = %store.key, version = v, "rule store read")
        }
        Ok(Err(_)) => {}
        Err(_) => {
            let e = StoreError::Io {
                storage: store.target.name.clone(),
                key: store.key.clone(),
                op: "read",
                message: format!("no answer in {} s", FIRST_LOAD_WAIT.as_secs()),
            };
            store.record_error(&e);
        }
    }
    let weak: Weak<Node> = Arc::downgrade(node);
    let shutdown = node.shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(store.reload) => {}
                _ = store.wake.notified() => {}
            }
            let Some(node) = weak.upgrade() else { return };
            let _ = store.reload(&node).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(domain: &str, app: &str, seq: Option<&str>) -> StoredRule {
        StoredRule {
            domain: domain.into(),
            app: app.into(),
            interval_secs: 5,
            storage: "default".into(),
            overwrite_object: None,
            sequence_object: seq.map(Into::into),
            callback: None,
            create_time: 1,
            update_time: 1,
        }
    }

    fn memory_node() -> Arc<Node> {
        let text = "[storage.default]\nscheme = \"memory\"\n";
        let settings = crate::config::Config::parse(text)
            .unwrap()
            .validate()
            .unwrap();
        crate::server::build_node(settings).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_updates_through_the_lock_are_all_kept() {
        let node = memory_node();
        let store = node.rule_store.clone().unwrap();
        assert!(!store.uses_conditional_writes());
        let adds = (0..12).map(|i| {
            let (node, store) = (node.clone(), store.clone());
            tokio::spawn(async move {
                store
                    .update(&node, |doc, now| {
                        let mut r = rule("*", &format!("app{i}"), None);
                        r.overwrite_object = Some("{AppName}/{StreamName}.jpg".into());
                        r.create_time = now;
                        doc.rules.push(r);
                        Ok::<(), ()>(())
                    })
                    .await
                    .map_err(|e| format!("{e:?}"))
            })
        });
        for r in futures::future::join_all(adds).await {
            r.unwrap().unwrap();
        }
        store.reload(&node).await.unwrap();
        let doc = store.doc();
        assert_eq!(doc.rules.len(), 12);
        assert_eq!(doc.version, 12);
        assert!(node.rules().lookup("x", "app7").is_some());
        // A refused change writes nothing.
        let r = store.update(&node, |_, _| Err::<(), &str>("no")).await;
        assert!(matches!(r, Err(UpdateError::Rejected("no"))));
        assert_eq!(store.doc().version, 12);
        assert!(!store.target.op.exists(&store.lock.key).await.unwrap());
    }

    #[test]
    fn retire_keeps_changed_templates_once() {
        let mut doc = RulesDoc::default();
        let old = rule(
            "*",
            "live",
            Some("{AppName}/{StreamName}/{UnixTimestamp}.jpg"),
        );
        doc.retire(&old, Some(&old.clone()), 5);
        assert!(doc.history.is_empty(), "unchanged template is not history");
        let new = rule("*", "live", Some("{StreamName}/{UnixTimestamp}.jpg"));
        doc.retire(&old, Some(&new), 5);
        doc.retire(&old, None, 6);
        assert_eq!(doc.history.len(), 1);
        assert_eq!(
            doc.history[0].sequence_object,
            "{AppName}/{StreamName}/{UnixTimestamp}.jpg"
        );
        doc.retire(&rule("*", "x", None), None, 7);
        assert_eq!(doc.history.len(), 1);
    }

    #[test]
    fn document_round_trips_and_tolerates_missing_fields() {
        let doc: RulesDoc = serde_json::from_str(r#"{"version": 3, "rules": []}"#).unwrap();
        assert_eq!(doc.format, FORMAT);
        assert_eq!(doc.version, 3);
        let mut d2 = doc.clone();
        d2.rules.push(rule("a.com", "live", None));
        let text = serde_json::to_string(&d2).unwrap();
        assert_eq!(serde_json::from_str::<RulesDoc>(&text).unwrap(), d2);
    }
}
