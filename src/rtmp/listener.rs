//! The RTMP accept loop: a connection permit before each accept (global cap), the
//! per-address cap after it, back-off on accept errors, one task per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::node::Node;
use crate::rtmp::limits::ConnLimits;

/// Accepts until the node shuts down.
pub async fn accept_loop(node: Arc<Node>, limits: Arc<ConnLimits>, listener: TcpListener) {
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
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Some(permit) = limits.admit(permit, peer.ip()) else {
            node.metrics.rejected("per_ip_limit");
            if let Some(suppressed) = limits.warnings.take() {
                tracing::warn!(%peer, max = limits.max_per_ip, suppressed, "connection refused: per-IP limit");
            }
            drop(socket);
            continue;
        };
        node.metrics.connections_accepted.inc();
        let _ = socket.set_nodelay(true);
        node.tasks.spawn(crate::rtmp::conn::run(
            node.clone(),
            limits.clone(),
            socket,
            peer,
            permit,
        ));
    }
    tracing::info!("RTMP listener stopped");
}
