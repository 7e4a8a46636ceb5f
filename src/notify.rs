//! Event callbacks: an HTTP POST with a JSON body for each stored snapshot (to the
//! rule's `callback` and the node-wide `[notify] url`) and for each publish and
//! unpublish (node-wide URL only).
//!
//! Events go through one bounded queue that never blocks the caller: when it is full
//! the oldest event is dropped and counted. A few delivery tasks send them with a 5 s
//! timeout and up to 5 retries 1 s apart; a 4xx answer other than 429 is final. With
//! `callback_auth_key`, each request carries `ALI-LIVE-TIMESTAMP` and
//! `ALI-LIVE-SIGNATURE` = md5 hex of `"{callback_host}|{timestamp}|{key}"`.
//!
//! Shutdown: the delivery tasks do not stop with the node's shutdown token, because the
//! shutdown itself produces events (each closed publish's `unpublish`, the `snapshot` of
//! each write in flight). The server calls [`Notifier::drain`] once its connection and
//! writer tasks have ended: the tasks deliver what is queued and exit; whatever is still
//! queued or in flight at the grace deadline is abandoned and counted as dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use md5::{Digest, Md5};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::SharedClock;
use crate::events::Event;
use crate::metrics::Metrics;

/// Attempts per event after the first.
pub const RETRIES: u32 = 5;
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent deliveries.
const WORKERS: usize = 4;

/// `[notify]`: node-wide event callbacks.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// URL receiving snapshot, publish and unpublish events. Default: none.
    pub url: Option<String>,
    /// Key signing callback requests (ALI-LIVE-TIMESTAMP / ALI-LIVE-SIGNATURE).
    pub callback_auth_key: Option<String>,
    /// Events waiting for delivery at most; the oldest is dropped beyond. Default 1024.
    pub queue: usize,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            url: None,
            callback_auth_key: None,
            queue: 1024,
        }
    }
}

struct Delivery {
    url: String,
    body: Vec<u8>,
}

pub struct Notifier {
    queue: Mutex<VecDeque<Delivery>>,
    wake: Notify,
    cap: usize,
    node_url: Option<String>,
    auth_key: Option<String>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    /// The delivery tasks.
    workers: TaskTracker,
    /// Cancelled by [`Notifier::drain`]: the tasks exit once the queue is empty.
    closing: CancellationToken,
    /// Cancelled when the grace deadline passes: deliveries in flight are abandoned.
    abandon: CancellationToken,
    /// Deliveries being attempted right now.
    in_flight: AtomicUsize,
}

/// The signature header value for a callback URL at `timestamp`.
pub fn signature(url: &str, timestamp: u64, key: &str) -> String {
    let host = crate::names::url_host(url)
        .map(|h| match h.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => h,
        })
        .unwrap_or("");
    crate::util::hex(&Md5::digest(format!("{host}|{timestamp}|{key}").as_bytes()))
}

impl Notifier {
    pub fn new(cfg: &NotifyConfig, metrics: Arc<Metrics>, clock: SharedClock) -> Arc<Notifier> {
        Arc::new(Notifier {
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            cap: cfg.queue,
            node_url: cfg.url.clone(),
            auth_key: cfg.callback_auth_key.clone(),
            client: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .unwrap_or_default(),
            metrics,
            clock,
            workers: TaskTracker::new(),
            closing: CancellationToken::new(),
            abandon: CancellationToken::new(),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Starts the delivery tasks; they run until [`Notifier::drain`].
    pub fn start(self: &Arc<Self>) {
        for _ in 0..WORKERS {
            let me = self.clone();
            self.workers.spawn(async move {
                loop {
                    let next = {
                        let mut q = me.lock();
                        let d = q.pop_front();
                        if d.is_some() {
                            me.in_flight.fetch_add(1, Ordering::SeqCst);
                        }
                        d
                    };
                    match next {
                        Some(d) => {
                            tokio::select! {
                                _ = me.deliver(d) => {}
                                _ = me.abandon.cancelled() => break,
                            }
                            me.in_flight.fetch_sub(1, Ordering::SeqCst);
                        }
                        None if me.closing.is_cancelled() => break,
                        None => tokio::select! {
                            _ = me.wake.notified() => {}
                            _ = me.closing.cancelled() => {}
                        },
                    }
                }
            });
        }
    }

    /// Shutdown: delivers what is queued (events enqueued meanwhile included) until
    /// `deadline`, then abandons the rest, counted in `callbacks_dropped`. Returns whether
    /// everything was delivered (or given up on by its retries) in time.
    pub async fn drain(&self, deadline: Instant) -> bool {
        self.closing.cancel();
        self.workers.close();
        let queued = self.queued();
        if queued > 0 {
            tracing::info!(queued, "delivering queued callbacks before exiting");
        }
        if tokio::time::timeout_at(deadline, self.workers.wait())
            .await
            .is_ok()
        {
            return true;
        }
        self.abandon.cancel();
        let left = self.queued() + self.in_flight.load(Ordering::SeqCst);
        self.metrics.callbacks_dropped.inc_by(left as u64);
        tracing::warn!(
            undelivered = left,
            "shutdown grace period over: callbacks not delivered"
        );
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Delivery>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events waiting for delivery.
    pub fn queued(&self) -> usize {
        self.lock().len()
    }

    fn enqueue(&self, url: &str, body: Vec<u8>) {
        {
            let mut q = self.lock();
            if q.len() >= self.cap {
                q.pop_front();
                self.metrics.callbacks_dropped.inc();
                tracing::warn!("callback queue full: oldest event dropped");
            }
            q.push_back(Delivery {
                url: url.to_string(),
                body,
            });
        }
        self.wake.notify_one();
    }

    /// Queues `event` for the node-wide URL and, when given, the rule's callback.
    pub fn send(&self, event: &Event, rule_callback: Option<&str>) {
        let urls: Vec<&str> = rule_callback
            .into_iter()
            .chain(self.node_url.as_deref())
            .collect();
        if urls.is_empty() {
            return;
        }
        let body = event.to_json();
        for url in urls {
            self.enqueue(url, body.clone());
        }
    }

    async fn deliver(&self, d: Delivery) {
        for attempt in 0..=RETRIES {
            if attempt > 0 {
                tokio::time::sleep(RETRY_DELAY).await;
            }
            let mut req = self
                .client
                .post(&d.url)
                .header("content-type", "application/json")
                .body(d.body.clone());
            if let Some(key) = &self.auth_key {
                let ts = self.clock.now_unix();
                req = req
                    .header("ALI-LIVE-TIMESTAMP", ts.to_string())
                    .header("ALI-LIVE-SIGNATURE", signature(&d.url, ts, key));
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    self.metrics.callbacks_delivered.inc();
                    return;
                }
                Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                    tracing::warn!(url = %crate::names::redact(&d.url), status = r.status().as_u16(), "callback refused; not retried");
                    break;
                }
                Ok(r) => {
                    tracing::debug!(url = %crate::names::redact(&d.url), status = r.status().as_u16(), attempt, "callback failed");
                }
                Err(e) => {
                    tracing::debug!(url = %crate::names::redact(&d.url), error = %e.without_url(), attempt, "callback failed")
                }
            }
        }
        self.metrics.callbacks_failed.inc();
        tracing::warn!(url = %crate::names::redact(&d.url), "callback not delivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_uses_host_without_port() {
        let a = signature("http://cb.example.com:8080/hook", 100, "k");
        let b = crate::util::hex(&Md5::digest(b"cb.example.com|100|k"));
        assert_eq!(a, b);
    }

    #[tokio::test]
    async fn full_queue_drops_the_oldest() {
        let metrics = Arc::new(Metrics::new());
        let cfg = NotifyConfig {
            url: Some("http://127.0.0.1:9/x".into()),
            callback_auth_key: None,
            queue: 2,
        };
        let n = Notifier::new(&cfg, metrics.clone(), crate::clock::system());
        for i in 0..5u64 {
            n.send(
                &Event::Publish(crate::events::ClientEvent::new(
                    crate::names::StreamId::new("d", "a", "s"),
                    "",
                    i,
                )),
                None,
            );
        }
        assert_eq!(n.queued(), 2);
        assert_eq!(metrics.callbacks_dropped.get(), 3);
        let first: serde_json::Value = serde_json::from_slice(&n.lock()[0].body).unwrap();
        assert_eq!(first["timestamp"], 3);
    }
}
