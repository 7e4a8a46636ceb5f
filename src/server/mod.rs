//! The running node: shared state (settings, rules in force, storage targets, the
//! snapshot pool, live streams), startup of the RTMP and HTTP listeners, and the
//! two-stage shutdown.

pub mod registry;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::rules::RuleSet;
use crate::snapshot::pool::Pool;
use crate::storage::{self, StorageError, Targets};
use registry::Registry;

/// State shared by every task of the node.
pub struct Node {
    pub settings: Settings,
    rules: RwLock<Arc<RuleSet>>,
    pub targets: Targets,
    pub pool: Pool,
    pub registry: Arc<Registry>,
    /// Cancelled when the node stops accepting (first signal).
    pub shutdown: CancellationToken,
    /// Connection and store tasks, waited for at shutdown.
    pub tasks: TaskTracker,
    pub conn_limits: crate::rtmp::listener::ConnLimits,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub notify: Arc<crate::notify::Notifier>,
    /// The rule store shared with other nodes (None when none is configured).
    pub rule_store: Option<Arc<crate::rules::store::RuleStore>>,
}

impl Node {
    /// The rules in force now; a publish takes its rule once, at its start.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the rules; live streams keep theirs until they publish again.
    pub fn set_rules(&self, rules: RuleSet) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
    }
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Storage(#[from] StorageError),
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
    pub rtmp_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

impl Running {
    /// First stage: stop accepting, end connections (their streams unpublish), let
    /// snapshots in flight be stored within the grace period. Returns whether every
    /// task finished in time.
    pub async fn shutdown(self) -> bool {
        self.node.shutdown.cancel();
        self.node.tasks.close();
        let grace = self.node.settings.shutdown_grace;
        tokio::time::timeout(grace, self.node.tasks.wait())
            .await
            .is_ok()
    }
}

/// Builds the node's shared state (storage targets, the snapshot pool) without
/// listening anywhere; `start` adds the listeners, the offline snapshot command uses
/// it as it is.
pub fn build_node(settings: Settings) -> Result<Arc<Node>, StartError> {
    let targets = storage::build_all(&settings.storage)?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let pool = Pool::start(
        settings.workers,
        settings.quality,
        settings.limits.max_picture_pixels,
        metrics.clone(),
    );
    let conn_limits = crate::rtmp::listener::ConnLimits::new(
        settings.limits.max_connections,
        settings.limits.max_connections_per_ip,
        settings.limits.max_handshakes,
    );
    let notify = crate::notify::Notifier::new(&settings.notify, metrics.clone());
    let shutdown = CancellationToken::new();
    notify.start(shutdown.clone());
    let rule_store = crate::rules::store::RuleStore::new(&settings, &targets);
    Ok(Arc::new(Node {
        rules: RwLock::new(Arc::new(settings.rules.clone())),
        settings,
        targets,
        pool,
        registry: Arc::new(Registry::default()),
        shutdown,
        tasks: TaskTracker::new(),
        conn_limits,
        metrics,
        notify,
        rule_store,
    }))
}

/// Connections the kernel may queue before the accept loop takes them (capped by
/// `net.core.somaxconn`). The usual default of 128 overflows under a burst of connects,
/// and with SYN cookies on an overflowed connection is lost without either side knowing.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Builds the node and starts its listeners (addresses may use port 0).
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    let (rtmp_listen, http_listen) = (settings.rtmp_listen, settings.http_listen);
    let rtmp = listen(rtmp_listen).map_err(|source| StartError::Bind {
        what: "RTMP",
        addr: rtmp_listen,
        source,
    })?;
    let http = listen(http_listen).map_err(|source| StartError::Bind {
        what: "HTTP",
        addr: http_listen,
        source,
    })?;
    let rtmp_addr = rtmp.local_addr().map_err(|source| StartError::Bind {
        what: "RTMP",
        addr: rtmp_listen,
        source,
    })?;
    let http_addr = http.local_addr().map_err(|source| StartError::Bind {
        what: "HTTP",
        addr: http_listen,
        source,
    })?;
    let node = build_node(settings)?;
    crate::rules::store::start(&node).await;
    tokio::spawn(crate::rtmp::listener::accept_loop(node.clone(), rtmp));
    tokio::spawn(crate::api::serve(node.clone(), http));
    tracing::info!(%rtmp_addr, %http_addr, rules = node.rules().len(), "livesnap listening");
    Ok(Running {
        node,
        rtmp_addr,
        http_addr,
    })
}
