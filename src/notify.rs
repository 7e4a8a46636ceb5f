//! Event callbacks: an HTTP POST with a JSON body for each stored snapshot (to the
//! rule's `callback` and the node-wide `[notify] url`) and for each publish and
//! unpublish (node-wide URL only).
//!
//! Events go through one bounded queue that never blocks the caller: when it is full
//! the oldest event is dropped and counted. A few delivery tasks send them with a 5 s
//! timeout and up to 5 retries 1 s apart; a 4xx answer other than 429 is final. With
//! `callback_auth_key`, each request carries `ALI-LIVE-TIMESTAMP` and
//! `ALI-LIVE-SIGNATURE` = md5 hex of `"{callback_host}|{timestamp}|{key}"`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::NotifyConfig;
use crate::metrics::Metrics;

/// Attempts per event after the first.
pub const RETRIES: u32 = 5;
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent deliveries.
const WORKERS: usize = 4;

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
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Formats Unix seconds as RFC 3339 UTC (`2024-01-02T03:04:05Z`).
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The signature header value for a callback URL at `timestamp`.
pub fn signature(url: &str, timestamp: u64, key: &str) -> String {
    let host = crate::names::url_host(url)
        .map(|h| match h.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => h,
        })
        .unwrap_or("");
    crate::auth::hex(&Md5::digest(format!("{host}|{timestamp}|{key}").as_bytes()))
}

impl Notifier {
    pub fn new(cfg: &NotifyConfig, metrics: Arc<Metrics>) -> Arc<Notifier> {
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
        })
    }

    /// Starts the delivery tasks; they stop at `shutdown`.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) {
        for _ in 0..WORKERS {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    let next = me.lock().pop_front();
                    match next {
                        Some(d) => me.deliver(d).await,
                        None => tokio::select! {
                            _ = me.wake.notified() => {}
                            _ = shutdown.cancelled() => break,
                        },
                    }
                }
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Delivery>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events waiting for delivery.
    pub fn queued(&self) -> usize {
        self.lock().len()
    }

    fn enqueue(&self, url: &str, body: &Value) {
        let body = serde_json::to_vec(body).unwrap_or_default();
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

    /// A stored snapshot: to the rule's callback and the node-wide URL.
    pub fn snapshot(&self, rule_callback: Option<&str>, event: Value) {
        for url in rule_callback.into_iter().chain(self.node_url.as_deref()) {
            self.enqueue(url, &event);
        }
    }

    /// A publish or unpublish event: node-wide URL only.
    pub fn stream_event(&self, event: Value) {
        if let Some(url) = self.node_url.as_deref() {
            self.enqueue(url, &event);
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
                let ts = unix_now();
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
                    tracing::warn!(url = %d.url, status = r.status().as_u16(), "callback refused; not retried");
                    break;
                }
                Ok(r) => {
                    tracing::debug!(url = %d.url, status = r.status().as_u16(), attempt, "callback failed");
                }
                Err(e) => tracing::debug!(url = %d.url, error = %e, attempt, "callback failed"),
            }
        }
        self.metrics.callbacks_failed.inc();
        tracing::warn!(url = %d.url, "callback not delivered");
    }
}

/// The body of a `snapshot` event.
#[allow(clippy::too_many_arguments)]
pub fn snapshot_event(
    id: &crate::snapshot::store::StreamId,
    storage: &str,
    overwrite_key: Option<&str>,
    sequence_key: Option<&str>,
    size: usize,
    width: u32,
    height: u32,
    unix_ts: u64,
) -> Value {
    json!({
        "event": "snapshot",
        "domain": id.domain,
        "app": id.app,
        "stream": id.stream,
        "storage": storage,
        "overwrite_object": overwrite_key,
        "sequence_object": sequence_key,
        "size": size,
        "width": width,
        "height": height,
        "create_time": rfc3339(unix_ts),
        "timestamp": unix_ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1641311904), "2022-01-04T15:58:24Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn signature_uses_host_without_port() {
        let a = signature("http://cb.example.com:8080/hook", 100, "k");
        let b = crate::auth::hex(&Md5::digest(b"cb.example.com|100|k"));
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
        let n = Notifier::new(&cfg, metrics.clone());
        for i in 0..5 {
            n.stream_event(json!({ "i": i }));
        }
        assert_eq!(n.queued(), 2);
        assert_eq!(metrics.callbacks_dropped.get(), 3);
        let first: Value = serde_json::from_slice(&n.lock()[0].body).unwrap();
        assert_eq!(first["i"], 3);
    }
}
