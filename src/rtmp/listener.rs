//! The RTMP accept loop: a connection permit before each accept (global cap), a
//! per-IP cap after it, back-off on accept errors, one task per connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::server::Node;

/// Connection caps: global and per source address.
#[derive(Debug)]
pub struct ConnLimits {
    global: Arc<Semaphore>,
    /// Handshakes in progress.
    pub handshakes: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_ip: usize,
}

/// Held for the life of a connection; releases its counts when dropped.
#[derive(Debug)]
pub struct ConnSlot {
    _permit: OwnedSemaphorePermit,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl ConnLimits {
    pub fn new(max: usize, max_per_ip: usize, max_handshakes: usize) -> ConnLimits {
        ConnLimits {
            global: Arc::new(Semaphore::new(max)),
            handshakes: Arc::new(Semaphore::new(max_handshakes)),
            per_ip: Default::default(),
            max_per_ip,
        }
    }

    fn admit(&self, permit: OwnedSemaphorePermit, ip: IpAddr) -> Option<ConnSlot> {
        let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(ConnSlot {
            _permit: permit,
            per_ip: self.per_ip.clone(),
            ip,
        })
    }
}

/// Accepts until the node shuts down.
pub async fn accept_loop(node: Arc<Node>, listener: TcpListener) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            _ = node.shutdown.cancelled() => break,
            p = node.conn_limits.global.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
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
        let Some(slot) = node.conn_limits.admit(permit, peer.ip()) else {
            node.metrics.rejected("per_ip_limit");
            tracing::warn!(%peer, max = node.conn_limits.max_per_ip, "connection refused: per-IP limit");
            drop(socket);
            continue;
        };
        node.metrics.connections_accepted.inc();
        let _ = socket.set_nodelay(true);
        node.tasks
            .spawn(crate::rtmp::conn::run(node.clone(), socket, peer, slot));
    }
    tracing::info!("RTMP listener stopped");
}
