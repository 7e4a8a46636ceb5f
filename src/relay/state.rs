//! What the node shows of one relay target of a live publish: counters the relay task
//! updates and the API (`/api/v1/streams`) reads. Shared by `Arc`; lock-free except the
//! last error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// The state of one target of one publish.
#[derive(Debug, Default)]
pub struct RelayState {
    /// The target URL for display: rendered for this publish, secrets redacted.
    pub target: String,
    /// An upstream publish is up now.
    pub connected: AtomicBool,
    /// Media payload bytes sent upstream, over every connection.
    pub sent_bytes: AtomicU64,
    /// Connection attempts after the first one.
    pub reconnects: AtomicU64,
    /// Media bytes skipped because the target fell a whole window behind.
    pub skipped_bytes: AtomicU64,
    /// Its place in the stream while connected: the stream offset
    /// ([`crate::hub::Hub::pushed_bytes`]) it has been sent media up to, set after each
    /// batch; its lag is read against the hub's offset when shown.
    pub position: AtomicU64,
    /// Why the last connection failed or ended, if one did.
    pub last_error: Mutex<Option<String>>,
    /// When the certificate the target presented at its last TLS handshake expires
    /// (Unix seconds; 0: no TLS handshake yet, or not readable).
    pub certificate_not_after: AtomicU64,
}

/// A snapshot of a [`RelayState`] as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelayView {
    pub target: String,
    pub connected: bool,
    pub sent_bytes: u64,
    pub reconnects: u64,
    pub skipped_bytes: u64,
    pub lag_bytes: u64,
    pub last_error: Option<String>,
    /// `rtmps://` targets: when the certificate presented at the last handshake expires
    /// (RFC 3339); absent before one, and for `rtmp://` targets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_expires: Option<String>,
}

impl RelayState {
    pub fn new(target: String) -> RelayState {
        RelayState {
            target,
            ..Default::default()
        }
    }

    /// The state as shown, `pushed` being the stream's [`crate::hub::Hub::pushed_bytes`]
    /// (a target's lag is what it has not been sent of that, while it is connected).
    pub fn view(&self, pushed: u64) -> RelayView {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let connected = self.connected.load(Ordering::Relaxed);
        RelayView {
            target: self.target.clone(),
            connected,
            sent_bytes: g(&self.sent_bytes),
            reconnects: g(&self.reconnects),
            skipped_bytes: g(&self.skipped_bytes),
            lag_bytes: if connected {
                pushed.saturating_sub(g(&self.position))
            } else {
                0
            },
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            certificate_expires: match g(&self.certificate_not_after) {
                0 => None,
                t => Some(crate::clock::rfc3339(t)),
            },
        }
    }

    pub fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_what_a_connected_target_was_not_sent() {
        let s = RelayState::new("rtmp://o/live/cam".into());
        s.position.store(700, Ordering::Relaxed);
        assert_eq!(s.view(1000).lag_bytes, 0, "not connected: no lag shown");
        s.connected.store(true, Ordering::Relaxed);
        assert_eq!(s.view(1000).lag_bytes, 300);
        assert_eq!(s.view(700).lag_bytes, 0);
    }
}
