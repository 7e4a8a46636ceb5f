//! The RTMP and RTMPS accept loops: a connection permit before each accept (global cap),
//! the per-address cap after it, back-off on accept errors, one task per connection.
//! Both listeners share one [`ConnLimits`] (caps, handshake table, warning budget); an
//! RTMPS connection first finishes its TLS handshake, within the handshake deadline and
//! holding a place in the handshake table, then runs the same connection task. A
//! connection from a `server.proxy_protocol_from` address first gives its PROXY header
//! (`proxy`, same deadline and table); the per-address cap then applies to the client
//! the header names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;

use crate::node::Node;
use crate::rtmp::limits::{ConnLimits, ConnPermit};
use crate::rtmp::proxy::{self, Source};
use crate::rtmp::tls::{self, TlsAcceptError};

/// Accepts until the node shuts down; with `tls`, every connection is RTMPS.
pub async fn accept_loop(
    node: Arc<Node>,
    limits: Arc<ConnLimits>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
) {
    let what = if tls.is_some() { "RTMPS" } else { "RTMP" };
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            _ = node.shutdown.cancelled() => break,
            p = limits.acquire() => match p {
                Some(p) => p,
                None => break,
            },
        };
        let accepted = tokio::select! {
            _ = node.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (socket, peer): (_, SocketAddr) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(10);
                x
            }
            Err(e) => {
                // Usually EMFILE/ENFILE: wait rather than spin.
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, listener = what, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        if node.settings.proxy_protocol_from.allows_listed(peer.ip()) {
            node.tasks.spawn(run_proxied(
                node.clone(),
                limits.clone(),
                tls.clone(),
                socket,
                peer,
                permit,
            ));
            continue;
        }
        let Some(permit) = admit(&node, &limits, permit, peer, what) else {
            continue;
        };
        start(&node, &limits, tls.as_ref(), socket, peer, permit);
    }
    tracing::info!(listener = what, "listener stopped");
}

/// The per-address cap for `peer`; a refusal is counted and warned about (budget).
fn admit(
    node: &Node,
    limits: &ConnLimits,
    permit: OwnedSemaphorePermit,
    peer: SocketAddr,
    what: &'static str,
) -> Option<ConnPermit> {
    let admitted = limits.admit(permit, peer.ip());
    match admitted {
        Some(_) => {
            node.metrics.connections_accepted.inc();
        }
        None => {
            node.metrics.rejected("per_ip_limit");
            if let Some(suppressed) = limits.warnings.take() {
                tracing::warn!(%peer, max = limits.max_per_ip, suppressed, listener = what, "connection refused: per-IP limit");
            }
        }
    }
    admitted
}

/// Runs an admitted connection: the connection task, after the TLS handshake for RTMPS.
fn start(
    node: &Arc<Node>,
    limits: &Arc<ConnLimits>,
    tls: Option<&TlsAcceptor>,
    socket: TcpStream,
    peer: SocketAddr,
    permit: ConnPermit,
) {
    match tls {
        None => node.tasks.spawn(crate::rtmp::conn::run(
            node.clone(),
            limits.clone(),
            socket,
            peer,
            permit,
        )),
        Some(acceptor) => node.tasks.spawn(run_tls(
            node.clone(),
            limits.clone(),
            acceptor.clone(),
            socket,
            peer,
            permit,
        )),
    };
}

/// A connection from a load balancer: its PROXY header (within the handshake deadline,
/// holding a place in the handshake table), then the per-address cap for the client it
/// names, then the connection as any other.
async fn run_proxied(
    node: Arc<Node>,
    limits: Arc<ConnLimits>,
    tls: Option<TlsAcceptor>,
    mut socket: TcpStream,
    balancer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let what = if tls.is_some() { "RTMPS" } else { "RTMP" };
    let (ticket, _) = limits.handshakes.enter();
    let limit = node.settings.handshake_timeout;
    let header = tokio::select! {
        r = proxy::read_header(&mut socket, limit) => r,
        _ = ticket.evicted.cancelled() => {
            refused(&node, &limits, balancer, what, "handshake_limit", &"PROXY header evicted: limits.max_handshakes reached and this was the oldest in progress");
            return;
        }
        _ = node.shutdown.cancelled() => return,
    };
    drop(ticket);
    let peer = match header {
        Ok(Source::Client(client)) => client,
        Ok(Source::Unknown) => balancer,
        Err(e) => {
            refused(&node, &limits, balancer, what, "proxy_protocol", &e);
            return;
        }
    };
    if peer != balancer {
        tracing::debug!(%peer, %balancer, listener = what, "PROXY header read");
    }
    if let Some(permit) = admit(&node, &limits, permit, peer, what) {
        start(&node, &limits, tls.as_ref(), socket, peer, permit);
    }
}

/// An RTMPS connection: the TLS handshake (deadline, handshake table, counted failures),
/// then the connection task on the TLS stream.
async fn run_tls(
    node: Arc<Node>,
    limits: Arc<ConnLimits>,
    acceptor: TlsAcceptor,
    socket: TcpStream,
    peer: SocketAddr,
    permit: ConnPermit,
) {
    let (ticket, evicted) = limits.handshakes.enter();
    if evicted {
        tracing::debug!(%peer, "handshake table full: evicted the oldest handshake in progress");
    }
    let limit = node.settings.handshake_timeout;
    let accepted = tokio::select! {
        r = tls::accept(&acceptor, socket, limit) => r,
        _ = ticket.evicted.cancelled() => {
            refused(&node, &limits, peer, "RTMPS", "handshake_limit", &"TLS handshake evicted: limits.max_handshakes reached and this was the oldest in progress");
            return;
        }
        _ = node.shutdown.cancelled() => return,
    };
    drop(ticket);
    match accepted {
        Ok(stream) => crate::rtmp::conn::run(node, limits, stream, peer, permit).await,
        Err(e) => {
            let reason = match e {
                TlsAcceptError::Timeout(_) => "handshake_timeout",
                TlsAcceptError::Failed(_) => "tls",
            };
            refused(&node, &limits, peer, "RTMPS", reason, &e);
        }
    }
}

/// Counts a connection closed before its RTMP session and warns within the budget.
fn refused(
    node: &Node,
    limits: &ConnLimits,
    peer: SocketAddr,
    listener: &'static str,
    reason: &'static str,
    why: &dyn std::fmt::Display,
) {
    node.metrics.rejected(reason);
    if let Some(suppressed) = limits.warnings.take() {
        tracing::warn!(%peer, reason = %why, suppressed, listener, "connection closed");
    }
}
