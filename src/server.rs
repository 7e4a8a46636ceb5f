//! Wiring: builds the node's state, reads the shared rules, starts the RTMP (and RTMPS)
//! and HTTP listeners, and runs the first stage of the two-stage shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::node::Node;
use crate::rtmp::limits::ConnLimits;
use crate::storage::StorageError;

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
    /// The connection limits both RTMP listeners share (what they hold is visible to tests).
    pub conn_limits: Arc<ConnLimits>,
    pub rtmp_addr: SocketAddr,
    /// The RTMPS listener's address, when `server.rtmps_listen` is set.
    pub rtmps_addr: Option<SocketAddr>,
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
    let limits = Arc::new(ConnLimits::new(&node.settings.limits));
    tokio::spawn(crate::rtmp::listener::accept_loop(
        node.clone(),
        limits.clone(),
        rtmp,
        None,
    ));
    if let Some((listener, _, acceptor)) = rtmps {
        tokio::spawn(crate::rtmp::listener::accept_loop(
            node.clone(),
            limits.clone(),
            listener,
            Some(acceptor),
        ));
    }
    tokio::spawn(crate::api::serve(node.clone(), http));
    tracing::info!(%rtmp_addr, rtmps_addr = ?rtmps_addr, %http_addr, rules = node.rules().len(), "livesnap listening");
    Ok(Running {
        node,
        conn_limits: limits,
        rtmp_addr,
        rtmps_addr,
        http_addr,
    })
}
