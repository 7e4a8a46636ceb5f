//! The node's shared state: settings, the rules in force, storage targets, the
//! snapshot pool, the live streams, metrics, callbacks, the clock, and the shutdown
//! signal with the tasks it waits for. Cheap to share (`Arc<Node>`).
//!
//! This is the low layer every part is handed: it knows nothing of RTMP, ingest or
//! the API, and builds no listener (`server` wires those).

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::live::Registry;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::relay::config::RelayBook;
use crate::review::Reviewer;
use crate::rules::shared::{SharedRules, SharedRulesParts};
use crate::rules::{RuleBook, RuleSet};
use crate::snapshot::pool::Pool;
use crate::storage::{self, StorageError, Targets};

/// State shared by every task of the node.
pub struct Node {
    pub settings: Settings,
    /// The rules in force (the config file's, plus the shared document's).
    pub rules: Arc<RuleBook>,
    /// The rule document shared with other nodes (None when none is configured).
    pub shared_rules: Option<Arc<SharedRules>>,
    /// Where publishes are relayed: the config file's `[[relays]]` and the API's.
    pub relays: Arc<RelayBook>,
    pub targets: Targets,
    pub pool: Pool,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub notify: Arc<Notifier>,
    /// Where stored snapshots of rules with a `review_url` go to be judged.
    pub review: Reviewer,
    pub clock: SharedClock,
    /// Cancelled when the node stops accepting (first signal).
    pub shutdown: CancellationToken,
    /// Connection and writer tasks, waited for at shutdown.
    pub tasks: TaskTracker,
}

impl Node {
    /// Builds the state (storage targets, the snapshot pool, the callback queue)
    /// without listening anywhere and without reading the shared rules yet.
    pub fn build(settings: Settings, clock: SharedClock) -> Result<Arc<Node>, StorageError> {
        let targets = storage::build_all(&settings.storage)?;
        let metrics = Arc::new(Metrics::new());
        let pool = Pool::start(
            settings.workers,
            settings.quality,
            settings.limits.max_picture_pixels,
            settings.queue,
            metrics.clone(),
        );
        let notify = Notifier::new(&settings.notify, metrics.clone(), clock.clone());
        // Delivery outlives the shutdown token: the server drains it at shutdown.
        notify.start();
        let review = Reviewer::start(
            settings.notify.callback_auth_key.clone(),
            metrics.clone(),
            notify.clone(),
            clock.clone(),
        );
        let shutdown = CancellationToken::new();
        let rules = Arc::new(RuleBook::new(settings.rules.clone()));
        let relays = Arc::new(RelayBook::new(settings.relays.clone()));
        let shared_rules = settings.rule_store.as_ref().and_then(|cfg| {
            Some(SharedRules::new(SharedRulesParts {
                config: cfg.clone(),
                target: targets.get(&cfg.storage)?.clone(),
                target_settings: settings.storage.get(&cfg.storage)?.clone(),
                static_rules: settings.static_rules.clone(),
                storage_names: settings.storage.keys().cloned().collect::<BTreeSet<_>>(),
                book: rules.clone(),
                relays: relays.clone(),
                metrics: metrics.clone(),
                clock: clock.clone(),
            }))
        });
        Ok(Arc::new(Node {
            settings,
            rules,
            shared_rules,
            relays,
            targets,
            pool,
            registry: Arc::new(Registry::with_clock(clock.clone())),
            metrics,
            notify,
            review,
            clock,
            shutdown,
            tasks: TaskTracker::new(),
        }))
    }

    /// The rules in force now; a publish takes its rule once, at its start.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.get()
    }
}
