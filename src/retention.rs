//! The retention sweeper: deletes the sequence objects that fall outside their rule's
//! `retain_secs` / `retain_count`, per stream, through the same listing as the snapshot
//! query (`storage::catalog`, prefix-bounded on S3/OSS). One node task (`run`) sweeps
//! every `[retention] sweep_secs`; `livesnap sweep` runs one pass (or a dry run).
//!
//! Which streams: the live ones, those that ended on this node in the last day (the
//! registry's record of ended publishes, `live::Ended`), and those
//! found in storage under each retention rule's sequence template (listed a bounded
//! number of keys per pass, resuming where the previous pass stopped), so a bucket
//! whose streams ended before a restart is still swept.
//!
//! Several nodes on one storage: a stream with something to delete is swept by the node
//! whose create-only write of `_livesnap/sweep/<scope hash>-<slot>` succeeds (slot =
//! now / sweep_secs); the others count it as skipped. A stream with nothing to delete
//! costs a listing and no write. Deletes are idempotent, and what a sweep deletes is
//! outside the window of any later listing too (a window only moves forward), so even
//! two sweeps of one stream never delete what should stay. The newest sequence object
//! of a stream (and its highest `{Sequence}`) always stays; overwrite objects never
//! match a sequence template, and `_livesnap/` is never listed as a stream's.

pub mod policy;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use opendal::{EntryMode, ErrorKind};

use crate::names::StreamId;
use crate::node::Node;
use crate::rules::Rule;
use crate::storage::catalog::{self, Range};
use crate::storage::template::{Template, RESERVED_FOLDERS};
use crate::storage::{Created, StorageError, Target};
pub use policy::{Reason, Retain, RetentionConfig, Scope};

/// How long a stream that ended stays on the list of streams this node sweeps (as
/// long as the registry keeps it on its record of ended publishes).
pub const REMEMBER_ENDED_SECS: u64 = crate::live::ENDED_KEEP_SECS;

/// One object a pass deletes (or, dry, would delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    pub storage: String,
    pub key: String,
    /// The rule, as `domain "*", app "live"`.
    pub rule: String,
    pub reason: Reason,
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct PassReport {
    /// In deletion order: per stream, oldest first.
    pub doomed: Vec<Doomed>,
    /// Streams swept, skipped (claimed by another node this period) and failed.
    pub swept: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Keys listed: to find streams, and each swept stream's objects.
    pub examined: u64,
}

/// One stream to sweep, under one template.
#[derive(Debug, Clone)]
struct Candidate {
    scope: Scope,
    template: Template,
    domain: String,
    app: String,
    stream: String,
    retain: Retain,
    rule: String,
}

/// Where the listing that finds a rule's streams goes on at the next pass.
#[derive(Debug, Clone, Default)]
struct Cursor {
    /// The last key listed (backends that list from a key on).
    after: Option<String>,
    /// Keys to pass over first (backends that cannot).
    skip: u64,
}

/// The sweeper's memory between passes.
pub struct Sweeper {
    node: Arc<Node>,
    /// Per (storage, template, prefix): where finding streams goes on.
    cursors: Mutex<HashMap<(String, String, String), Cursor>>,
    /// The last stream found in storage that a pass reached: the next pass starts after
    /// it, so `max_streams_per_pass` never leaves the same streams out every time.
    resume: Mutex<Option<Scope>>,
}

impl Sweeper {
    pub fn new(node: Arc<Node>) -> Sweeper {
        Sweeper {
            node,
            cursors: Mutex::default(),
            resume: Mutex::default(),
        }
    }

    /// The streams this node saw live in the last day, sorted: those live now and those
    /// on the registry's record of ended publishes (the one copy of that knowledge).
    pub fn observe(&self) -> Vec<StreamId> {
        let mut seen: Vec<StreamId> = self
            .node
            .registry
            .list()
            .iter()
            .map(|s| s.id.clone())
            .collect();
        seen.extend(self.node.registry.ended(0).0.into_iter().map(|e| e.id));
        seen.sort();
        seen.dedup();
        seen
    }

    /// One pass over every stream with a retention rule (within the `[retention]`
    /// bounds). `dry_run` claims nothing, deletes nothing and leaves where the next pass
    /// starts as it was: it reports what the next pass would delete.
    pub async fn pass(&self, dry_run: bool) -> PassReport {
        let cfg = &self.node.settings.retention;
        let now = self.node.clock.now_unix();
        let slot = now / cfg.sweep_secs;
        let mut report = PassReport::default();
        let (mut candidates, seen_live) = self.candidates(dry_run, &mut report).await;
        // Streams found in storage: from the one after where the last pass stopped.
        let resume = self
            .resume
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(last) = resume {
            let found = &mut candidates[seen_live..];
            let start = found.partition_point(|c| c.scope <= last);
            found.rotate_left(start);
        }
        let mut budget = cfg.max_deletes_per_pass;
        for (i, c) in candidates
            .iter()
            .take(cfg.max_streams_per_pass as usize)
            .enumerate()
        {
            if budget == 0 {
                break;
            }
            let result = self
                .sweep_one(c, now, slot, dry_run, &mut budget, &mut report)
                .await;
            // The next pass starts after this stream, unless the budget ran out in it.
            if i >= seen_live && budget > 0 && !dry_run {
                *self.resume.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.scope.clone());
            }
            let outcome = match result {
                Ok(true) => {
                    report.swept += 1;
                    "run"
                }
                Ok(false) => {
                    report.skipped += 1;
                    "skipped"
                }
                Err(e) => {
                    tracing::warn!(storage = %c.scope.storage, domain = %c.domain, app = %c.app, stream = %c.stream, error = %e, "retention sweep failed");
                    report.failed += 1;
                    "failed"
                }
            };
            if !dry_run {
                self.node.metrics.retention_sweep(outcome);
            }
        }
        if !dry_run {
            self.drop_old_claims(slot).await;
        }
        report
    }

    /// Deletes the claims of periods before the last one (those of streams no longer
    /// swept stay otherwise) on each storage with a retention rule: at most
    /// `max_listed_per_pass` claims listed per storage and pass, from the start of the
    /// folder (what is deleted no longer comes first).
    async fn drop_old_claims(&self, slot: u64) {
        let mut storages: Vec<String> = self
            .retention_rules()
            .iter()
            .map(|r| r.storage().to_string())
            .collect();
        storages.sort();
        storages.dedup();
        let cap = self.node.settings.retention.max_listed_per_pass;
        for name in storages {
            let Some(target) = self.node.targets.get(&name) else {
                continue;
            };
            if let Err(e) = drop_old_claims_on(target, slot, cap).await {
                tracing::warn!(storage = %name, error = %e, "retention: old sweep claims not cleaned up");
            }
        }
    }

    /// The streams to sweep: live and remembered, then those found in storage (sorted
    /// by scope); one entry per key set, with the window that keeps the most when two
    /// rules judge one. Also returns how many come first as seen live.
    async fn candidates(&self, dry_run: bool, report: &mut PassReport) -> (Vec<Candidate>, usize) {
        let book = self.node.rules();
        let mut out: Vec<Candidate> = Vec::new();
        let mut index: HashMap<Scope, usize> = HashMap::new();
        let mut add =
            |out: &mut Vec<Candidate>, rule: &Rule, domain: &str, app: &str, stream: &str| {
                let (Some(t), Some(retain)) = (
                    &rule.sequence_object,
                    Retain::of(rule.spec.retain_secs, rule.spec.retain_count),
                ) else {
                    return;
                };
                let scope = Scope::new(rule.storage(), t, domain, app, stream);
                match index.get(&scope) {
                    Some(&i) => out[i].retain = out[i].retain.keep_more(retain),
                    None => {
                        index.insert(scope.clone(), out.len());
                        out.push(Candidate {
                            scope,
                            template: t.clone(),
                            domain: domain.to_string(),
                            app: app.to_string(),
                            stream: stream.to_string(),
                            retain,
                            rule: rule.describe(),
                        });
                    }
                }
            };
        for id in &self.observe() {
            if let Some(rule) = book.lookup(&id.domain, &id.app, &id.stream) {
                add(&mut out, &rule, &id.domain, &id.app, &id.stream);
            }
        }
        let seen_live = out.len();
        for rule in self.retention_rules() {
            let Some(target) = self.node.targets.get(rule.storage()) else {
                continue;
            };
            let found = match self.discover(&rule, target, dry_run, report).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(rule = %rule.describe(), error = %e, "retention: listing the rule's streams failed");
                    continue;
                }
            };
            for (d, a, s) in found {
                // Only under the rule in force for that stream.
                let in_force = book.lookup(&d, &a, &s).is_some_and(|r| r.spec == rule.spec);
                if in_force {
                    add(&mut out, &rule, &d, &a, &s);
                }
            }
        }
        out[seen_live..].sort_by(|a, b| a.scope.cmp(&b.scope));
        (out, seen_live)
    }

    /// The rules in force with a sequence template and a retention window, each at its
    /// own (domain, app).
    fn retention_rules(&self) -> Vec<Arc<Rule>> {
        let book = self.node.rules();
        let mut scopes: Vec<(String, String, Option<String>)> = self
            .node
            .rules
            .config()
            .iter()
            .map(|r| {
                (
                    r.domain().into(),
                    r.app().into(),
                    r.stream().map(Into::into),
                )
            })
            .collect();
        if let Some(shared) = &self.node.shared_rules {
            scopes.extend(shared.doc().rules.iter().map(|r| {
                (
                    r.spec.domain.clone(),
                    r.spec.app.clone(),
                    r.spec.stream.clone(),
                )
            }));
        }
        scopes.sort();
        scopes.dedup();
        scopes
            .into_iter()
            .filter_map(|(d, a, s)| {
                match &s {
                    Some(s) => book.lookup(&d, &a, s),
                    None => book.lookup_app(&d, &a),
                }
                .filter(|r| r.domain() == d && r.app() == a && r.stream() == s.as_deref())
            })
            .filter(|r| {
                r.sequence_object.is_some()
                    && Retain::of(r.spec.retain_secs, r.spec.retain_count).is_some()
            })
            .collect()
    }

    /// Streams of `rule` found in storage: at most `max_listed_per_pass` keys under the
    /// part of its sequence template that is the same for all its streams, going on from
    /// where the previous pass stopped (a dry run lists the same and moves nothing on).
    async fn discover(
        &self,
        rule: &Rule,
        target: &Target,
        dry_run: bool,
        report: &mut PassReport,
    ) -> Result<BTreeSet<(String, String, String)>, StorageError> {
        let Some(t) = &rule.sequence_object else {
            return Ok(BTreeSet::new());
        };
        let prefix = policy::discovery_prefix(t, rule.domain(), rule.app());
        let id = (
            rule.storage().to_string(),
            t.as_str().to_string(),
            prefix.clone(),
        );
        let cursor = self
            .cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .unwrap_or_default();
        let cap = self.node.settings.retention.max_listed_per_pass;
        let (keys, listed, complete, from_key) =
            match catalog::folder_keys_after(target, &prefix, cursor.after.as_deref(), cap).await {
                Some(walked) => {
                    let (keys, complete) = walked?;
                    let n = keys.len() as u64;
                    (keys, n, complete, true)
                }
                None => list_keys(target, &prefix, &cursor, cap).await?,
            };
        let last = keys.last().cloned();
        let mut out = BTreeSet::new();
        for key in &keys {
            let ours = RESERVED_FOLDERS
                .iter()
                .any(|f| key.strip_prefix(f).is_some_and(|r| r.starts_with('/')));
            if !ours {
                if let Some(names) = policy::names_of(t, key, rule.domain(), rule.app()) {
                    out.insert(names);
                }
            }
        }
        report.examined += listed;
        if !dry_run {
            self.node.metrics.retention_examined.inc_by(listed);
        }
        let next = match (complete, from_key) {
            (true, _) => Cursor::default(),
            (false, true) => Cursor {
                after: last,
                skip: 0,
            },
            (false, false) => Cursor {
                after: None,
                skip: cursor.skip + listed,
            },
        };
        if !dry_run {
            self.cursors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, next);
        }
        Ok(out)
    }

    /// Sweeps one stream: lists its sequence objects; when some fall outside the
    /// window, claims the stream for this period (unless dry) and deletes them, oldest
    /// first, within `budget`. `Ok(false)` when another node (or an earlier pass of this
    /// one) holds the claim. A stream with nothing to delete costs one listing, no write.
    async fn sweep_one(
        &self,
        c: &Candidate,
        now: u64,
        slot: u64,
        dry_run: bool,
        budget: &mut u64,
        report: &mut PassReport,
    ) -> Result<bool, StorageError> {
        let Some(target) = self.node.targets.get(&c.scope.storage) else {
            return Ok(false);
        };
        let range = Range {
            domain: &c.domain,
            app: &c.app,
            stream: &c.stream,
            start: 0,
            end: u64::MAX,
        };
        let found = catalog::scan(target, std::slice::from_ref(&c.template), &range).await?;
        report.examined += found.len() as u64;
        if !dry_run {
            self.node
                .metrics
                .retention_examined
                .inc_by(found.len() as u64);
        }
        let items = found
            .into_iter()
            .map(|f| {
                let seq = c
                    .template
                    .match_key(&f.key, &c.domain, &c.app, &c.stream)
                    .and_then(|(_, s)| s);
                policy::Item {
                    key: f.key,
                    unix: f.unix,
                    seq,
                }
            })
            .collect();
        let doomed = policy::doomed(items, c.retain, now);
        if doomed.is_empty() {
            return Ok(true);
        }
        if !dry_run && !self.claim(target, &c.scope, now, slot).await? {
            return Ok(false);
        }
        for (item, reason) in doomed {
            if *budget == 0 {
                break;
            }
            if !dry_run {
                match target.op.delete(&item.key).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(target.err("delete", &item.key, e)),
                }
                self.node.metrics.retention_deleted.inc();
                tracing::debug!(storage = %target.name, key = %item.key, reason = reason.as_str(), "retention: deleted");
            }
            *budget -= 1;
            report.doomed.push(Doomed {
                storage: target.name.clone(),
                key: item.key,
                rule: c.rule.clone(),
                reason,
            });
        }
        Ok(true)
    }

    /// Takes the stream's claim for `slot` with a create-only write: whether it is ours.
    /// The claim of two periods ago is deleted on the way (no one sweeps in it any more).
    async fn claim(
        &self,
        target: &Target,
        scope: &Scope,
        now: u64,
        slot: u64,
    ) -> Result<bool, StorageError> {
        let key = scope.claim_key(slot);
        match target
            .put_create_only(&key, Bytes::from(format!("{now}\n")))
            .await?
        {
            Created::Yes | Created::LandedEarlier => {}
            Created::AlreadyExists => return Ok(false),
        }
        if let Some(old) = slot.checked_sub(2) {
            let old = scope.claim_key(old);
            if let Err(e) = target.op.delete(&old).await {
                tracing::debug!(storage = %target.name, key = %old, error = %e, "old sweep claim not deleted");
            }
        }
        Ok(true)
    }
}

/// At most `cap` keys of files under `prefix` through opendal, going on from `cursor`
/// (from its key where the backend lists from a key, else after as many entries):
/// (keys, entries listed, whether the listing reached its end, whether it went on from
/// a key).
async fn list_keys(
    target: &Target,
    prefix: &str,
    cursor: &Cursor,
    cap: u64,
) -> Result<(Vec<String>, u64, bool, bool), StorageError> {
    let path = if prefix.is_empty() { "/" } else { prefix };
    let from_key = target.op.info().capability().list_with_start_after;
    let mut lister = target.op.lister_with(path).recursive(true);
    if let (true, Some(after)) = (from_key, &cursor.after) {
        lister = lister.start_after(after);
    }
    let fail = |e: opendal::Error| target.err("list", path, e);
    let mut lister = lister.await.map_err(fail)?;
    let (mut listed, mut passed) = (0u64, 0u64);
    let mut keys = Vec::new();
    while let Some(entry) = lister.try_next().await.map_err(fail)? {
        if !from_key && passed < cursor.skip {
            passed += 1;
            continue;
        }
        listed += 1;
        if entry.metadata().mode() == EntryMode::FILE {
            keys.push(entry.path().to_string());
        }
        if listed >= cap {
            return Ok((keys, listed, false, from_key));
        }
    }
    Ok((keys, listed, true, from_key))
}

/// [`Sweeper::drop_old_claims`] on one target: returns how many were deleted.
async fn drop_old_claims_on(target: &Target, slot: u64, cap: u64) -> Result<u64, StorageError> {
    let path = policy::CLAIM_FOLDER;
    let fail = |e: opendal::Error| target.err("list", path, e);
    let mut lister = match target.op.lister_with(path).recursive(true).await {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(fail(e)),
    };
    let (mut listed, mut deleted) = (0u64, 0u64);
    while let Some(entry) = lister.try_next().await.map_err(fail)? {
        listed += 1;
        let key = entry.path();
        let old = key
            .rsplit_once('-')
            .and_then(|(_, s)| s.parse::<u64>().ok())
            .is_some_and(|s| s + 1 < slot);
        if entry.metadata().mode() == EntryMode::FILE && old {
            match target.op.delete(key).await {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(target.err("delete", key, e)),
            }
        }
        if listed >= cap {
            break;
        }
    }
    Ok(deleted)
}

/// The node task: sweeps every `[retention] sweep_secs` (the first pass one period
/// after start), until shutdown.
pub async fn run(node: Arc<Node>) {
    let period = Duration::from_secs(node.settings.retention.sweep_secs);
    let sweeper = Sweeper::new(node.clone());
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let report = tokio::select! {
            _ = node.shutdown.cancelled() => return,
            r = sweeper.pass(false) => r,
        };
        tracing::info!(
            deleted = report.doomed.len(),
            swept = report.swept,
            skipped = report.skipped,
            failed = report.failed,
            examined = report.examined,
            "retention sweep done"
        );
    }
}
