//! The node's shared state: settings, the rules in force, storage targets, the
//! snapshot pool, the live streams, metrics, callbacks, the clock, and the shutdown
//! signal with the tasks it waits for. Cheap to share (`Arc<Node>`).
//!
//! This is the low layer every part is handed: it knows nothing of RTMP, ingest or
//! the API, and builds no listener (`server` wires those).

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::AuthPolicy;
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::live::Registry;
use crate::metrics::Metrics;
use crate::netlist::NetList;
use crate::notify::Notifier;
use crate::play::PlayConfig;
use crate::relay::config::{Relay, RelayBook};
use crate::review::Reviewer;
use crate::rules::shared::{SharedRules, SharedRulesParts};
use crate::rules::{KeyClash, Rule, RuleBook, RuleSet};
use crate::snapshot::pool::Pool;
use crate::storage::{self, StorageError, Targets};

/// Who may publish and play, and how players are served: the config file's `[access]`
/// address lists, `[[auth]]`, `[hooks]` and `[play]`, in force until a config reload
/// replaces them. A publish or a play reads them once, at its start, and keeps what it
/// read until it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub publish_from: NetList,
    pub play_from: NetList,
    pub auth: AuthPolicy,
    pub on_publish: Option<String>,
    pub on_play: Option<String>,
    pub play: PlayConfig,
}

impl Access {
    /// The access a config (as validated) gives.
    pub fn of(settings: &Settings) -> Access {
        Access {
            publish_from: settings.publish_from.clone(),
            play_from: settings.play_from.clone(),
            auth: settings.auth.clone(),
            on_publish: settings.on_publish.clone(),
            on_play: settings.on_play.clone(),
            play: settings.play.clone(),
        }
    }
}

/// State shared by every task of the node.
pub struct Node {
    /// The configuration as read at start. A config reload replaces the file's rules,
    /// relays, `[access]`, `[[auth]]`, `[hooks]` and `[play]`: read those from `rules`,
    /// `relays` and [`Node::access`], never from here.
    pub settings: Settings,
    /// The rules in force (the config file's, plus the shared document's).
    pub rules: Arc<RuleBook>,
    access: RwLock<Arc<Access>>,
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
        let rules = Arc::new(RuleBook::new(settings.static_rules.clone()));
        let relays = Arc::new(RelayBook::new(settings.relays.clone()));
        let shared_rules = settings.rule_store.as_ref().and_then(|cfg| {
            Some(SharedRules::new(SharedRulesParts {
                config: cfg.clone(),
                target: targets.get(&cfg.storage)?.clone(),
                target_settings: settings.storage.get(&cfg.storage)?.clone(),
                storage_names: settings.storage.keys().cloned().collect::<BTreeSet<_>>(),
                book: rules.clone(),
                relays: relays.clone(),
                metrics: metrics.clone(),
                clock: clock.clone(),
            }))
        });
        let access = RwLock::new(Arc::new(Access::of(&settings)));
        Ok(Arc::new(Node {
            settings,
            rules,
            access,
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

    /// Whether `rule` keeps its keys apart (`rules::keys_apart`) from every other rule
    /// live streams hold on the same storage. A stream keeps its rule until it ends, also
    /// after the rule was changed or removed (by the API or a config reload), so a new
    /// rule must stay apart from those as from the rules in force.
    pub fn keys_apart_from_live_rules(&self, rule: &Rule) -> Result<(), Box<KeyClash>> {
        let mut held: Vec<Arc<Rule>> = Vec::new();
        for r in self.registry.list().iter().filter_map(|s| s.rule.clone()) {
            if !held.iter().any(|h| Arc::ptr_eq(h, &r)) {
                held.push(r);
            }
        }
        let storage = &self.settings.storage;
        held.iter()
            .filter(|h| h.spec != rule.spec)
            .filter(|h| crate::config::same_place(storage, rule.storage(), h.storage()))
            .try_for_each(|h| crate::rules::keys_apart(rule, h))
    }

    /// Who may publish and play now.
    pub fn access(&self) -> Arc<Access> {
        self.access
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a reloaded config file's rules, relays and access in force, from the next
    /// publish (and, for access, the next play); live streams keep what they started
    /// with. The caller checked that every rule's storage target exists on this node.
    pub fn set_config(&self, rules: Vec<Rule>, relays: Vec<Relay>, access: Access) {
        match &self.shared_rules {
            Some(shared) => shared.set_config(rules, relays),
            None => {
                let set = RuleSet::new(rules.iter().cloned());
                self.rules.set_config(rules, set);
                // Without a rule store there is no stored relay to leave out.
                let _ = self.relays.set_config(relays);
            }
        }
        *self.access.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(access);
    }
}
