//! Wiring: builds the node's state, reads the shared rules, starts the RTMP (and RTMPS)
//! and HTTP listeners, and runs the first stage of the two-stage shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::clock::SharedClock;
use crate::config::{Config, ConfigError, Settings};
use crate::node::{Access, Node};
use crate::rtmp::limits::ConnLimits;
use crate::storage::probe::{verify, ProbeError};
use crate::storage::StorageError;

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Probe(#[from] ProbeError),
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started node.
pub struct Running {
    pub node: Arc<Node>,
    /// The connection limits both RTMP listeners share (what they hold is visible to tests).
    pub conn_limits: Arc<ConnLimits>,
    pub rtmp_addr: SocketAddr,
    /// The RTMPS listener's address, when `server.rtmps_listen` is set.
    pub rtmps_addr: Option<SocketAddr>,
    pub http_addr: SocketAddr,
    /// The health check's end (`health_check::start`): not one of `node.tasks`, which
    /// tell when the publish work is done; awaited at shutdown for its `end` events.
    health_check: tokio::sync::oneshot::Receiver<()>,
    /// Asks the RTMPS certificate watcher to load the files now.
    tls_reloader: Option<crate::rtmp::tls::Reloader>,
}

impl Running {
    /// What SIGHUP does: the RTMPS certificate and key are loaded again at once (new
    /// connections get them if they load and match) and the rule store is read again at
    /// once. Live streams, connections and the rest of the configuration are untouched;
    /// the outcome is logged and counted as for the periodic reloads.
    pub fn reload_now(&self) {
        if let Some(r) = &self.tls_reloader {
            r.reload_now();
        }
        if let Some(shared) = &self.node.shared_rules {
            shared.wake();
        }
    }

    /// Reads the config file again and puts it in force (SIGHUP): its `[[rules]]`,
    /// `[[relays]]`, `[access]`, `[[auth]]` and `[hooks]` apply from the next publish (and
    /// play), as rule changes through the API do; live streams keep what they started
    /// with. A file that cannot be read, does not validate, whose rules name a storage
    /// target this node was not started with, or whose rules' keys could meet those of a
    /// rule live streams still use, changes nothing. Sections that differ from
    /// the file the node was started with in anything else are named in the result: they
    /// need a restart. Counted in `livesnap_config_reloads_total`.
    pub async fn reload_config(&self, file: &ConfigFile) -> Result<ConfigReload, ConfigError> {
        let path = file.path.clone();
        let read = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .unwrap_or_else(|e| {
                Err(ConfigError::Read {
                    path: file.path.display().to_string(),
                    message: e.to_string(),
                })
            });
        let result = read.and_then(|new| self.apply_config(&file.started, &new));
        self.node.metrics.config_reload(result.is_ok());
        result
    }

    fn apply_config(&self, started: &Config, new: &Config) -> Result<ConfigReload, ConfigError> {
        let settings = new.validate()?;
        for (i, r) in settings.static_rules.iter().enumerate() {
            if !self.node.targets.contains_key(r.storage()) {
                return Err(ConfigError::Invalid {
                    key: format!("rules[{i}].storage"),
                    message: format!(
                        "storage target {:?} is not one this node started with; a new [storage] target needs a restart",
                        r.storage()
                    ),
                });
            }
        }
        // A rule live streams still hold (the one a new rule replaces, say) keeps writing
        // until they end.
        for (i, r) in settings.static_rules.iter().enumerate() {
            self.node
                .keys_apart_from_live_rules(r)
                .map_err(|c| ConfigError::Invalid {
                    key: format!("rules[{i}].{}", c.field),
                    message: format!(
                        "{c}; live streams still use that rule: reload again once they have ended"
                    ),
                })?;
        }
        let report = ConfigReload {
            rules: settings.static_rules.len(),
            relays: settings.relays.len(),
            auth_entries: new.auth.len(),
            restart_only: started.restart_only_changes(new),
        };
        let access = Access::of(&settings);
        self.node
            .set_config(settings.static_rules, settings.relays, access);
        Ok(report)
    }

    /// First stage: stop accepting, end connections (their streams unpublish), let
    /// snapshots in flight be stored, then deliver the events all this produced
    /// (`unpublish`, `snapshot`, the `end` of every active health condition), everything
    /// within one grace period. Returns whether every task and every queued callback
    /// finished in time.
    pub async fn shutdown(self) -> bool {
        let deadline = tokio::time::Instant::now() + self.node.settings.shutdown_grace;
        self.node.shutdown.cancel();
        self.node.tasks.close();
        let tasks_done = tokio::time::timeout_at(deadline, self.node.tasks.wait())
            .await
            .is_ok();
        // It ends every active condition once cancelled (quickly: no I/O of its own).
        let health_done = tokio::time::timeout_at(deadline, self.health_check)
            .await
            .is_ok();
        // Only now: the tasks above are what enqueue the shutdown's events.
        let delivered = self.node.notify.drain(deadline).await;
        tasks_done && health_done && delivered
    }
}

/// The config file a node was started from: where to read it again, and what it said.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: std::path::PathBuf,
    pub started: Config,
}

/// What a config reload put in force, and what it could not.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigReload {
    /// The file's `[[rules]]`, `[[relays]]` and `[[auth]]` entries now in force.
    pub rules: usize,
    pub relays: usize,
    pub auth_entries: usize,
    /// Sections whose changes wait for a restart (`server`, `storage`, …).
    pub restart_only: Vec<&'static str>,
}

/// Connections the kernel may queue before the accept loop takes them (capped by
/// `net.core.somaxconn`). The usual default of 128 overflows under a burst of connects,
/// and with SYN cookies on an overflowed connection is lost without either side knowing.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    let bind = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bind().map_err(|source| StartError::Bind { what, addr, source })
}

/// Checks that every storage target relied on for create-only writes honours them:
/// those of rules with a sequence object (config rules and the stored rules read at
/// start) and the rule store's. A store that overwrites stops the start; one that
/// cannot be reached is logged and probed again before its first sequence write.
async fn probe_create_only(node: &Node) -> Result<(), StartError> {
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut add = |storage: &str, why: String| {
        used.entry(storage.to_string()).or_default().push(why);
    };
    for r in &node.settings.static_rules {
        if r.sequence_object.is_some() {
            add(
                r.storage(),
                format!(
                    "the sequence_object of rule ({:?}, {:?})",
                    r.domain(),
                    r.app()
                ),
            );
        }
    }
    if let Some(shared) = &node.shared_rules {
        add(
            shared.storage(),
            format!("the rule store ({:?})", shared.key),
        );
        for r in &shared.doc().rules {
            if r.spec.sequence_object.is_some() {
                add(
                    &r.spec.storage,
                    format!(
                        "the sequence_object of stored rule ({:?}, {:?})",
                        r.spec.domain, r.spec.app
                    ),
                );
            }
        }
    }
    for (storage, used_by) in used {
        if let Some(target) = node.targets.get(&storage) {
            match verify(target, &used_by.join(" and ")).await {
                Ok(()) => {}
                Err(e @ ProbeError::Overwrites { .. }) => return Err(e.into()),
                // Unreachable now: probed again before its first sequence write.
                Err(e) => tracing::warn!(error = %e, "storage not probed at start"),
            }
        }
    }
    Ok(())
}

/// Builds the node and starts its listeners (addresses may use port 0).
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    start_with_clock(settings, crate::clock::system()).await
}

/// [`start`] with another clock (tests).
pub async fn start_with_clock(
    settings: Settings,
    clock: SharedClock,
) -> Result<Running, StartError> {
    let rtmp = listen("RTMP", settings.rtmp_listen)?;
    let http = listen("HTTP", settings.http_listen)?;
    let local = |l: &TcpListener, what, addr| {
        l.local_addr()
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let rtmp_addr = local(&rtmp, "RTMP", settings.rtmp_listen)?;
    let rtmps = match &settings.rtmps {
        Some(r) => {
            let l = listen("RTMPS", r.listen)?;
            let addr = local(&l, "RTMPS", r.listen)?;
            Some((l, addr, r.tls.acceptor()))
        }
        None => None,
    };
    let rtmps_addr = rtmps.as_ref().map(|(_, a, _)| *a);
    let http_addr = local(&http, "HTTP", settings.http_listen)?;
    let node = Node::build(settings, clock)?;
    if let Some(shared) = &node.shared_rules {
        shared.start(node.shutdown.clone()).await;
    }
    if let Err(e) = probe_create_only(&node).await {
        node.shutdown.cancel();
        return Err(e);
    }
    let limits = Arc::new(ConnLimits::new(&node.settings.limits));
    tokio::spawn(crate::rtmp::listener::accept_loop(
        node.clone(),
        limits.clone(),
        rtmp,
        None,
    ));
    let tls_reloader = node.settings.rtmps.as_ref().map(|r| {
        let asked = crate::rtmp::tls::Reloader::default();
        tokio::spawn(crate::rtmp::tls::watch(
            r.tls.clone(),
            r.reload,
            asked.clone(),
            node.shutdown.clone(),
            node.metrics.clone(),
        ));
        asked
    });
    if let Some((listener, _, acceptor)) = rtmps {
        tokio::spawn(crate::rtmp::listener::accept_loop(
            node.clone(),
            limits.clone(),
            listener,
            Some(acceptor),
        ));
    }
    tokio::spawn(crate::api::serve(node.clone(), http));
    let health_check = crate::health_check::start(node.clone());
    if node.settings.retention.enabled {
        tokio::spawn(crate::retention::run(node.clone()));
    }
    tracing::info!(%rtmp_addr, rtmps_addr = ?rtmps_addr, %http_addr, rules = node.rules().len(), "livesnap listening");
    Ok(Running {
        node,
        conn_limits: limits,
        rtmp_addr,
        rtmps_addr,
        http_addr,
        health_check,
        tls_reloader,
    })
}
