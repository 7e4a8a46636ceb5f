//! The rules shared by every node (the "rule store"): the rules created through the
//! admin API, kept as one versioned JSON document in a configured storage target
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
//! This module owns the document and its I/O, and publishes the rules in force to the
//! node's [`RuleBook`]; it must not touch live streams (a publish takes its rule once,
//! at its start).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod lock;

use opendal::ErrorKind;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::relay::config::{Relay, RelayBook, StoredRelay};
use crate::rules::{Rule, RuleBook, RuleSet, RuleSpec, ANY};
use crate::storage::settings::StorageSettings;
use crate::storage::template::Template;
use crate::storage::Target;

/// The document format this node reads and writes.
pub const FORMAT: u32 = 1;
/// Retired sequence templates kept at most (the oldest are dropped beyond).
pub const MAX_HISTORY: usize = 1000;
/// How long an update waits for a lock or retries conflicts before giving up.
const UPDATE_DEADLINE: Duration = Duration::from_secs(15);
/// How long `start` waits for the first read before serving with the config rules.
const FIRST_LOAD_WAIT: Duration = Duration::from_secs(5);

/// `[rule_store]`: where the shared rules document lives.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuleStoreConfig {
    /// Storage target holding the rules document. Default "default".
    pub storage: String,
    /// Key of the rules document. Default "_livesnap/rules.json".
    pub key: String,
    /// Seconds between re-reads of the document. Default 10.
    pub reload_secs: u64,
}

impl Default for RuleStoreConfig {
    fn default() -> Self {
        RuleStoreConfig {
            storage: "default".into(),
            key: "_livesnap/rules.json".into(),
            reload_secs: 10,
        }
    }
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
    /// Who wrote this version: a token unique to one update. An update whose write
    /// timed out reads it back to learn that its write landed after all (and must not
    /// be applied a second time, which would answer "exists" to its own create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_id: Option<String>,
    /// Relay configs added through the API (`relay::config`), beside the rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<StoredRelay>,
    /// The id the next relay config gets (ids are never reused).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub next_relay_id: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn format_v1() -> u32 {
    FORMAT
}

/// A rule as stored: the rule as written, plus its times (Unix seconds). In the JSON
/// document the rule's fields sit beside the times, as they always have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRule {
    #[serde(flatten)]
    pub spec: RuleSpec,
    pub create_time: u64,
    pub update_time: u64,
}

/// A sequence template no longer used by the rule (domain, app, stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetiredTemplate {
    pub domain: String,
    pub app: String,
    /// The stream of a stream rule; absent for a rule of every stream of the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    pub storage: String,
    pub sequence_object: String,
    pub retired_time: u64,
}

impl StoredRule {
    /// Whether this is the rule for (domain, app, stream); `stream` is `None` for the
    /// rule of every stream of the app.
    pub fn is_for(&self, domain: &str, app: &str, stream: Option<&str>) -> bool {
        self.spec.domain == domain && self.spec.app == app && self.spec.stream.as_deref() == stream
    }
}

impl RulesDoc {
    /// The rule for (domain, app, stream), `stream` `None` for the app's rule.
    pub fn find(&self, domain: &str, app: &str, stream: Option<&str>) -> Option<&StoredRule> {
        self.rules.iter().find(|r| r.is_for(domain, app, stream))
    }

    pub fn position(&self, domain: &str, app: &str, stream: Option<&str>) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.is_for(domain, app, stream))
    }

    /// Remembers `old`'s sequence templates (its own and its outputs') that `new` does
    /// not keep (same storage and template) and that are not remembered already.
    pub fn retire(&mut self, old: &StoredRule, new: Option<&StoredRule>, now: u64) {
        fn templates(r: &RuleSpec) -> impl Iterator<Item = &String> {
            let outputs = r.outputs.iter().filter_map(|o| o.sequence_object.as_ref());
            r.sequence_object.iter().chain(outputs)
        }
        let (old, new) = (&old.spec, new.map(|n| &n.spec));
        for tpl in templates(old) {
            if new.is_some_and(|n| n.storage == old.storage && templates(n).any(|t| t == tpl)) {
                continue;
            }
            let known = self.history.iter().any(|h| {
                h.domain == old.domain
                    && h.app == old.app
                    && h.stream == old.stream
                    && h.storage == old.storage
                    && &h.sequence_object == tpl
            });
            if !known {
                self.history.push(RetiredTemplate {
                    domain: old.domain.clone(),
                    app: old.app.clone(),
                    stream: old.stream.clone(),
                    storage: old.storage.clone(),
                    sequence_object: tpl.clone(),
                    retired_time: now,
                });
            }
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

/// One node's view of the shared rules.
pub struct SharedRules {
    target: Target,
    /// Serialises updates where there are no conditional writes.
    lock: lock::LockObject,
    if_match: bool,
    read_if_match: bool,
    pub key: String,
    reload: Duration,
    /// Storage targets configured on this node (a stored rule naming another is skipped).
    storage_names: BTreeSet<String>,
    book: Arc<RuleBook>,
    relays: Arc<RelayBook>,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    state: Mutex<State>,
    wake: Notify,
}

/// What [`SharedRules::new`] needs from the node.
pub struct SharedRulesParts {
    pub config: RuleStoreConfig,
    /// The document's storage target, built, and its settings.
    pub target: Target,
    pub target_settings: StorageSettings,
    pub storage_names: BTreeSet<String>,
    pub book: Arc<RuleBook>,
    /// Where the document's relay configs are put in force.
    pub relays: Arc<RelayBook>,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
}

impl std::fmt::Debug for SharedRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRules")
            .field("storage", &self.target.name)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl SharedRules {
    pub fn new(p: SharedRulesParts) -> Arc<SharedRules> {
        let lock = lock::LockObject::new(&p.target_settings, &p.target.op, &p.config.key);
        let cap = p.target.op.info().capability();
        Arc::new(SharedRules {
            if_match: cap.write_with_if_match && cap.write_with_if_not_exists,
            read_if_match: cap.read_with_if_match,
            lock,
            target: p.target,
            key: p.config.key.clone(),
            reload: Duration::from_secs(p.config.reload_secs),
            storage_names: p.storage_names,
            book: p.book,
            relays: p.relays,
            metrics: p.metrics,
            clock: p.clock,
            state: Mutex::new(State {
                doc: Arc::new(RulesDoc::default()),
                generation: 0,
                last_ok: None,
                error: None,
                skipped: Vec::new(),
            }),
            wake: Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether updates use the backend's conditional writes (else the lock object).
    pub fn uses_conditional_writes(&self) -> bool {
        self.if_match
    }

    /// The document in force on this node.
    pub fn doc(&self) -> Arc<RulesDoc> {
        self.state().doc.clone()
    }

    /// The storage target holding the document.
    pub fn storage(&self) -> &str {
        &self.target.name
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
        self.rules_in_force_with(&self.book.config(), doc)
    }

    fn rules_in_force_with(&self, config: &[Rule], doc: &RulesDoc) -> (RuleSet, Vec<String>) {
        let mut rules = config.to_vec();
        let mut skipped = Vec::new();
        for (i, r) in doc.rules.iter().enumerate() {
            let r = &r.spec;
            let scope = (r.domain.as_str(), r.app.as_str(), r.stream.as_deref());
            let name = super::describe_scope(scope.0, scope.1, scope.2);
            if rules.iter().any(|s| s.scope_key() == scope) {
                skipped.push(format!(
                    "{name}: a rule of the config file or an earlier stored rule has the same scope"
                ));
                continue;
            }
            let valid = r
                .validate(&format!("rules[{i}]"), |s| self.storage_names.contains(s))
                .map_err(|e| e.to_string())
                .and_then(|rule| {
                    super::keys_apart_from_all(&rule, &rules, |a, b| a == b)
                        .map_err(|c| c.to_string())
                        .map(|()| rule)
                });
            match valid {
                Ok(rule) => rules.push(rule),
                Err(e) => skipped.push(format!("{name}: {e}")),
            }
        }
        (RuleSet::new(rules), skipped)
    }

    /// Logs the stored rules and relay configs newly left out and keeps the list.
    fn note_skipped(st: &mut State, skipped: Vec<String>) {
        for s in skipped.iter().filter(|s| !st.skipped.contains(s)) {
            tracing::warn!(rule = %s, "stored rule not applied");
        }
        st.skipped = skipped;
    }

    /// Makes `doc` the document in force and publishes its rules to the book. A
    /// document this node wrote is applied unless a newer one already is; a document
    /// read from storage is the truth (even an older or a missing one, put back by an
    /// operator) unless another document was applied while it was being read, in
    /// which case only a newer version wins.
    fn apply(&self, doc: Arc<RulesDoc>, origin: Origin) {
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
        let (set, mut skipped) = self.rules_in_force(&doc);
        skipped.extend(self.relays.set_stored(&doc.relays));
        Self::note_skipped(&mut st, skipped);
        tracing::info!(
            version = doc.version,
            rules = set.len(),
            "rules in force updated from the rule store"
        );
        self.book.set(set);
        tracing::info!(
            relays = doc.relays.len(),
            "relay configs in force updated from the rule store"
        );
        st.doc = doc;
        st.generation += 1;
    }

    /// Puts a reloaded config file's rules and relays in force beside the document's
    /// (from the next publish). Stored rules and relays the new ones shadow are left
    /// out and logged, as when the document changes.
    pub fn set_config(&self, rules: Vec<Rule>, relays: Vec<Relay>) {
        let mut st = self.state();
        let (set, mut skipped) = self.rules_in_force_with(&rules, &st.doc);
        skipped.extend(self.relays.set_config(relays));
        self.book.set_config(rules, set);
        Self::note_skipped(&mut st, skipped);
    }

    fn record_ok(&self) {
        let mut st = self.state();
        if let Some((e, _)) = st.error.take() {
            tracing::info!(previous_error = %e, "rule store readable again");
        }
        st.last_ok = Some(self.clock.now_unix());
    }

    fn record_error(&self, e: &StoreError) {
        let mut st = self.state();
        if st.error.is_none() {
            tracing::warn!(error = %e, "rule store unreadable; the last good rules stay in force");
        }
        let since = st
            .error
            .as_ref()
            .map_or_else(|| self.clock.now_unix(), |e| e.1);
        st.error = Some((e.to_string(), since));
    }

    /// Reads the document now and applies it.
    pub async fn reload(&self) -> Result<u64, StoreError> {
        let generation = self.state().generation;
        match self.read_doc(false).await {
            Ok((doc, _, _)) => {
                let v = doc.version;
                self.metrics.reload(true);
                self.record_ok();
                self.apply(Arc::new(doc), Origin::Read { generation });
                Ok(v)
            }
            Err(e) => {
                self.metrics.reload(false);
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
        mut change: impl FnMut(&mut RulesDoc, u64) -> Result<T, E>,
    ) -> Result<T, UpdateError<E>> {
        let deadline = Instant::now() + UPDATE_DEADLINE;
        let out = if self.if_match {
            self.update_conditional(&mut change, deadline).await
        } else {
            self.update_locked(&mut change, deadline).await
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
        change: &mut impl FnMut(&mut RulesDoc, u64) -> Result<T, E>,
        deadline: Instant,
    ) -> Result<T, UpdateError<E>> {
        let write_id = lock::unique_token();
        // The result of an attempt whose write may have landed although it was not
        // acknowledged (a timeout, or a retry of it that met its own write's ETag).
        let mut unacknowledged: Option<T> = None;
        let mut attempt = 0u32;
        loop {
            let (mut doc, etag, exists) = self.read_doc(true).await.map_err(UpdateError::Store)?;
            if let Some(out) = unacknowledged.take() {
                if doc.write_id.as_deref() == Some(write_id.as_str()) {
                    tracing::info!(key = %self.key, version = doc.version, "rule store: a write that was not acknowledged had landed; not applied twice");
                    self.record_ok();
                    self.apply(Arc::new(doc), Origin::OwnWrite);
                    return Ok(out);
                }
            }
            let now = self.clock.now_unix();
            let out = change(&mut doc, now).map_err(UpdateError::Rejected)?;
            doc.write_id = Some(write_id.clone());
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
                    self.apply(Arc::new(doc), Origin::OwnWrite);
                    return Ok(out);
                }
                Err(e) if e.kind() == ErrorKind::ConditionNotMatch || e.is_temporary() => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "rule store: write not applied, retrying on the fresh document");
                    unacknowledged = Some(out);
                    if Instant::now() > deadline {
                        return Err(UpdateError::Store(if e.is_temporary() {
                            self.io_err("write", &self.key, &e)
                        } else {
                            self.busy()
                        }));
                    }
                    tokio::time::sleep(lock::backoff(attempt)).await;
                }
                Err(e) => return Err(UpdateError::Store(self.io_err("write", &self.key, &e))),
            }
        }
    }

    async fn update_locked<T, E>(
        &self,
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
            let now = self.clock.now_unix();
            let out = change(&mut doc, now).map_err(UpdateError::Rejected)?;
            let body = self.encode(&mut doc, now);
            self.target
                .op
                .write_with(&self.key, body)
                .content_type("application/json")
                .await
                .map_err(|e| UpdateError::Store(self.io_err("write", &self.key, &e)))?;
            self.record_ok();
            self.apply(Arc::new(doc), Origin::OwnWrite);
            Ok(out)
        }
        .await;
        self.lock.release(&token).await;
        result
    }
}

impl SharedRules {
    /// Reads the document once (bounded wait) and starts the background reload, which
    /// stops at `shutdown`.
    pub async fn start(self: &Arc<Self>, shutdown: CancellationToken) {
        match tokio::time::timeout(FIRST_LOAD_WAIT, self.reload()).await {
            Ok(Ok(v)) => {
                tracing::info!(storage = %self.target.name, key = %self.key, version = v, "rule store read")
            }
            Ok(Err(_)) => {}
            Err(_) => {
                let e = StoreError::Io {
                    storage: self.target.name.clone(),
                    key: self.key.clone(),
                    op: "read",
                    message: format!("no answer in {} s", FIRST_LOAD_WAIT.as_secs()),
                };
                self.record_error(&e);
            }
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(me.reload) => {}
                    _ = me.wake.notified() => {}
                }
                let _ = me.reload().await;
            }
        });
    }

    /// The sequence templates (with their storage) under which snapshots of the stream
    /// (domain, app, stream) may have been stored: the config rules', the stored
    /// rules', and those that stored rules used before an update or a delete (the
    /// history); a stream rule's only for its stream.
    pub fn sequence_templates(
        &self,
        domain: &str,
        app: &str,
        stream: &str,
    ) -> Vec<(String, Template)> {
        sequence_templates(
            &self.book.config_with_retired(),
            Some(&self.doc()),
            domain,
            app,
            stream,
        )
    }
}

/// [`SharedRules::sequence_templates`] for a node with or without a shared document.
pub fn sequence_templates(
    static_rules: &[Rule],
    doc: Option<&RulesDoc>,
    domain: &str,
    app: &str,
    stream: &str,
) -> Vec<(String, Template)> {
    let matches = |d: &str, a: &str, s: Option<&str>| {
        (d == ANY || d == domain) && (a == ANY || a == app) && s.is_none_or(|s| s == stream)
    };
    let mut out: Vec<(String, Template)> = Vec::new();
    let mut add = |storage: &str, t: Template| {
        if !out
            .iter()
            .any(|(s, u)| s == storage && u.as_str() == t.as_str())
        {
            out.push((storage.to_string(), t));
        }
    };
    for r in static_rules {
        if matches(r.domain(), r.app(), r.stream()) {
            // Output 0's first, then the outputs' (the snapshot query groups them).
            for t in r.sequence_templates() {
                add(r.storage(), t.clone());
            }
        }
    }
    if let Some(doc) = doc {
        let stored = doc.rules.iter().flat_map(|r| {
            let r = &r.spec;
            let outputs = r.outputs.iter().filter_map(|o| o.sequence_object.as_ref());
            r.sequence_object
                .iter()
                .chain(outputs)
                .map(move |t| (&r.domain, &r.app, &r.stream, &r.storage, t))
        });
        let retired = doc
            .history
            .iter()
            .map(|h| (&h.domain, &h.app, &h.stream, &h.storage, &h.sequence_object));
        for (d, a, s, storage, tpl) in stored.chain(retired) {
            if matches(d, a, s.as_deref()) {
                // Outputs' templates end in their format's extension.
                let ext = crate::rules::output::Format::of_key(tpl)
                    .unwrap_or_default()
                    .extension();
                if let Ok(t) = Template::parse_sequential_ending(tpl, ext) {
                    add(storage, t);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(domain: &str, app: &str, seq: Option<&str>) -> StoredRule {
        StoredRule {
            spec: RuleSpec {
                domain: domain.into(),
                app: app.into(),
                interval_secs: 5,
                storage: "default".into(),
                sequence_object: seq.map(Into::into),
                ..Default::default()
            },
            create_time: 1,
            update_time: 1,
        }
    }

    fn memory_store() -> (Arc<SharedRules>, Arc<RuleBook>) {
        let settings = crate::storage::settings::validate(
            "default",
            &toml::from_str("scheme = \"memory\"").unwrap(),
        )
        .unwrap();
        let target = crate::storage::build(&settings).unwrap();
        let book = Arc::new(RuleBook::default());
        let store = SharedRules::new(SharedRulesParts {
            config: RuleStoreConfig::default(),
            target,
            target_settings: settings,
            storage_names: ["default".to_string()].into(),
            book: book.clone(),
            relays: Default::default(),
            metrics: Arc::new(Metrics::new()),
            clock: crate::clock::system(),
        });
        (store, book)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_updates_through_the_lock_are_all_kept() {
        let (store, book) = memory_store();
        assert!(!store.uses_conditional_writes());
        let adds = (0..12).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .update(|doc, now| {
                        let mut r = rule("*", &format!("app{i}"), None);
                        r.spec.overwrite_object = Some("{AppName}/{StreamName}.jpg".into());
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
        store.reload().await.unwrap();
        let doc = store.doc();
        assert_eq!(doc.rules.len(), 12);
        assert_eq!(doc.version, 12);
        assert!(book.get().lookup("x", "app7", "cam").is_some());
        // A refused change writes nothing.
        let r = store.update(|_, _| Err::<(), &str>("no")).await;
        assert!(matches!(r, Err(UpdateError::Rejected("no"))));
        assert_eq!(store.doc().version, 12);
        assert!(!store.target.op.exists(&store.lock.key).await.unwrap());
    }

    #[test]
    fn a_document_written_before_the_restructure_still_loads() {
        // The exact form main wrote before rules were one `RuleSpec`.
        let text = r#"{
  "format": 1, "version": 4, "updated_time": 1700000000,
  "rules": [{"domain": "*", "app": "live", "interval_secs": 10, "storage": "default",
             "overwrite_object": "{AppName}/{StreamName}.jpg", "sequence_object": null,
             "callback": null, "create_time": 1700000000, "update_time": 1700000001}],
  "history": [{"domain": "*", "app": "live", "storage": "default",
               "sequence_object": "{AppName}/{StreamName}/{Sequence}.jpg", "retired_time": 5}]
}"#;
        let doc: RulesDoc = serde_json::from_str(text).unwrap();
        assert_eq!(doc.rules[0].spec.interval_secs, 10);
        assert_eq!(doc.rules[0].update_time, 1_700_000_001);
        let again: serde_json::Value =
            serde_json::from_slice(&serde_json::to_vec(&doc).unwrap()).unwrap();
        let before: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(again, before, "written back unchanged");
    }

    #[test]
    fn stream_rules_are_stored_apart_from_their_app_rule() {
        let mut doc = RulesDoc::default();
        let mut app = rule(
            "*",
            "live",
            Some("{AppName}/{StreamName}/{UnixTimestamp}.jpg"),
        );
        app.spec.overwrite_object = Some("{AppName}/{StreamName}.jpg".into());
        let mut cam7 = rule("*", "live", Some("cams/seven/{UnixTimestamp}.jpg"));
        cam7.spec.stream = Some("cam7".into());
        doc.rules = vec![app.clone(), cam7.clone()];
        assert_eq!(doc.find("*", "live", None), Some(&app));
        assert_eq!(doc.find("*", "live", Some("cam7")), Some(&cam7));
        assert_eq!(doc.position("*", "live", Some("cam8")), None);
        // The stream is written only for stream rules, and read back.
        let text = serde_json::to_string(&doc).unwrap();
        assert_eq!(text.matches("\"stream\"").count(), 1, "{text}");
        assert_eq!(serde_json::from_str::<RulesDoc>(&text).unwrap(), doc);
        // Both are in force: not one shadowing the other as a duplicate.
        let (store, _) = memory_store();
        let (set, skipped) = store.rules_in_force(&doc);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(set.lookup("x", "live", "cam7").unwrap().spec, cam7.spec);
        assert_eq!(set.lookup("x", "live", "cam8").unwrap().spec, app.spec);
        // A second rule for the same stream is skipped.
        doc.rules.push(cam7.clone());
        let (_, skipped) = store.rules_in_force(&doc);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("stream \"cam7\""), "{}", skipped[0]);
        // A stream rule's templates, current and retired, are its stream's only.
        doc.rules.pop();
        let mut changed = cam7.clone();
        changed.spec.sequence_object = Some("cams/7/{UnixTimestamp}.jpg".into());
        doc.retire(&cam7, Some(&changed), 9);
        assert_eq!(doc.history[0].stream.as_deref(), Some("cam7"));
        doc.rules[1] = changed;
        let tpls = |s| {
            sequence_templates(&[], Some(&doc), "x", "live", s)
                .into_iter()
                .map(|(_, t)| t.as_str().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            tpls("cam7"),
            [
                "{AppName}/{StreamName}/{UnixTimestamp}.jpg",
                "cams/7/{UnixTimestamp}.jpg",
                "cams/seven/{UnixTimestamp}.jpg"
            ]
        );
        assert_eq!(tpls("cam8"), ["{AppName}/{StreamName}/{UnixTimestamp}.jpg"]);
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
    fn outputs_templates_are_searched_and_retired() {
        let seq = "{AppName}/{StreamName}/{Sequence}.jpg";
        let thumb = "{AppName}/{StreamName}/thumb/{Sequence}.webp";
        let mut with = rule("*", "live", Some(seq));
        with.spec.outputs.push(crate::rules::output::OutputSpec {
            width: Some(320),
            format: Some(crate::rules::output::Format::Webp),
            sequence_object: Some(thumb.into()),
            ..Default::default()
        });
        let mut doc = RulesDoc::default();
        doc.rules.push(with.clone());
        let found = |doc: &RulesDoc| -> Vec<String> {
            sequence_templates(&[], Some(doc), "d", "live", "cam")
                .into_iter()
                .map(|(_, t)| t.as_str().to_string())
                .collect()
        };
        assert_eq!(found(&doc), [seq, thumb]);
        // The update drops the output: its template is history, still searched.
        let without = rule("*", "live", Some(seq));
        doc.retire(&with, Some(&without), 5);
        doc.rules[0] = without;
        assert_eq!(doc.history.len(), 1);
        assert_eq!(doc.history[0].sequence_object, thumb);
        assert_eq!(found(&doc), [seq, thumb]);
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
