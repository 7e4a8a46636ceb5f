//! The moderation hook: stored snapshots of a rule with a `review_url` are POSTed (the
//! JPEG itself) to that endpoint, its verdict is stored under the reserved prefix
//! `_livesnap/review/` (which no snapshot template can render) and sent as a signed
//! `review` event; a label reaching the rule's `review_kick` score stops the publish.
//!
//! Never on the ingest path: a writer hands a job to a bounded queue and goes on; when
//! the queue is full the job is dropped and counted. A few worker tasks deliver with a
//! timeout and bounded retries, like callbacks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::{rfc3339, SharedClock};
use crate::events::{At, Event};
use crate::metrics::Metrics;
use crate::names::StreamId;
use crate::notify::{self, Notifier};
use crate::storage::Target;

/// Jobs waiting for a worker at most; beyond, new ones are dropped (counted).
pub const QUEUE: usize = 64;
/// Reviews in flight at once (a slow endpoint holds one for at most [`TIMEOUT`]).
pub const WORKERS: usize = 4;
/// One attempt's limit.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per review (connection errors, 5xx and 429 are retried 1 s apart; a
/// timeout is not: the endpoint may have judged it, and a slow one must not hold a
/// worker for several timeouts).
pub const ATTEMPTS: u32 = 3;
/// Where verdicts are stored: `_livesnap/review/{object key}.json`.
pub const PREFIX: &str = "_livesnap/review/";
/// Labels of one verdict at most, and the longest label name.
const MAX_LABELS: usize = 100;
const MAX_LABEL_LEN: usize = 64;

pub use crate::events::ReviewLabel as Label;
pub use crate::rules::spec::ReviewKick;

/// The endpoint's answer.
#[derive(Debug, Clone, Deserialize)]
struct Verdict {
    labels: Vec<Label>,
}

/// What is stored beside the snapshot (under [`PREFIX`]).
#[derive(Debug, Serialize)]
struct Stored<'a> {
    key: &'a str,
    time: String,
    labels: &'a [Label],
    kicked: bool,
}

/// One stored snapshot to review.
pub struct ReviewJob {
    pub stream: StreamId,
    /// The object reviewed (the sequence object, else the overwrite object).
    pub key: String,
    pub jpeg: Bytes,
    pub unix_ts: u64,
    pub url: String,
    pub kick: Option<ReviewKick>,
    /// Cancelled to stop the publish (the stream's kick token).
    pub stop: CancellationToken,
    pub target: Target,
    pub callback: Option<String>,
}

/// The node's review queue. Cloning shares it.
#[derive(Clone)]
pub struct Reviewer {
    tx: mpsc::Sender<ReviewJob>,
    metrics: Arc<Metrics>,
}

impl Reviewer {
    /// Starts the workers (needs a tokio runtime). `sign_key` is `[notify]
    /// callback_auth_key`: requests are signed like callbacks.
    pub fn start(
        sign_key: Option<String>,
        metrics: Arc<Metrics>,
        notify: Arc<Notifier>,
        clock: SharedClock,
    ) -> Reviewer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .expect("an HTTP client with a timeout");
        for _ in 0..WORKERS {
            let rx = rx.clone();
            let worker = Worker {
                client: client.clone(),
                sign_key: sign_key.clone(),
                metrics: metrics.clone(),
                notify: notify.clone(),
                clock: clock.clone(),
            };
            tokio::spawn(async move {
                loop {
                    let job = rx.lock().await.recv().await;
                    match job {
                        Some(job) => worker.review(job).await,
                        None => break,
                    }
                }
            });
        }
        Reviewer { tx, metrics }
    }

    /// Queues a review; never waits. A full queue drops the job (counted).
    pub fn submit(&self, job: ReviewJob) {
        if self.tx.try_send(job).is_err() {
            self.metrics.reviewed("dropped");
            tracing::warn!("review queue full: snapshot not reviewed");
        }
    }
}

struct Worker {
    client: reqwest::Client,
    sign_key: Option<String>,
    metrics: Arc<Metrics>,
    notify: Arc<Notifier>,
    clock: SharedClock,
}

impl Worker {
    async fn review(&self, job: ReviewJob) {
        let labels = match self.ask(&job).await {
            Ok(labels) => labels,
            Err(why) => {
                self.metrics.reviewed("failed");
                tracing::warn!(stream = %job.stream, key = %job.key, reason = %why, "review failed");
                return;
            }
        };
        let kicked = job.kick.as_ref().is_some_and(|k| {
            labels
                .iter()
                .any(|l| l.name == k.label && l.score >= k.score)
        });
        if kicked {
            tracing::warn!(stream = %job.stream, key = %job.key, "review verdict reached review_kick: publish stopped");
            job.stop.cancel();
        }
        let stored = Stored {
            key: &job.key,
            time: rfc3339(job.unix_ts),
            labels: &labels,
            kicked,
        };
        let body = serde_json::to_vec_pretty(&stored).unwrap_or_default();
        let review_key = format!("{PREFIX}{}.json", job.key);
        if let Err(e) = job
            .target
            .put_overwrite(&review_key, Bytes::from(body))
            .await
        {
            tracing::warn!(key = %review_key, error = %e, "review verdict not stored");
        }
        self.metrics.reviewed("done");
        self.notify.send(
            &Event::Review {
                stream: job.stream.clone(),
                object: job.key.clone(),
                review_object: review_key,
                labels,
                kicked,
                at: At::unix(self.clock.now_unix()),
            },
            job.callback.as_deref(),
        );
    }

    /// POSTs the JPEG; retries connection errors, 5xx and 429.
    async fn ask(&self, job: &ReviewJob) -> Result<Vec<Label>, String> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let mut req = self
                .client
                .post(&job.url)
                .header("content-type", "image/jpeg")
                .header("x-livesnap-domain", job.stream.domain.as_str())
                .header("x-livesnap-app", job.stream.app.as_str())
                .header("x-livesnap-stream", job.stream.stream.as_str())
                .header("x-livesnap-key", job.key.as_str())
                .header("x-livesnap-time", rfc3339(job.unix_ts))
                .body(job.jpeg.clone());
            if let Some(key) = &self.sign_key {
                let ts = self.clock.now_unix();
                req = req
                    .header("ALI-LIVE-TIMESTAMP", ts.to_string())
                    .header("ALI-LIVE-SIGNATURE", notify::signature(&job.url, ts, key));
            }
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let body = resp
                        .bytes()
                        .await
                        .map_err(|e| format!("reading the answer: {}", e.without_url()))?;
                    return parse_verdict(&body);
                }
                Ok(resp) => {
                    let status = resp.status();
                    last = format!("answered {}", status.as_u16());
                    if !(status.is_server_error() || status.as_u16() == 429) {
                        return Err(last);
                    }
                }
                Err(e) if e.is_timeout() => {
                    return Err(format!("no answer within {TIMEOUT:?}"));
                }
                Err(e) => last = e.without_url().to_string(),
            }
        }
        Err(format!("{last} ({ATTEMPTS} attempts)"))
    }
}

/// The stored verdict of snapshot `key` (`labels`, `kicked`, `time`), if any.
pub async fn stored_verdict(target: &Target, key: &str) -> Option<serde_json::Value> {
    let bytes = target.op.read(&format!("{PREFIX}{key}.json")).await.ok()?;
    serde_json::from_slice(&bytes.to_vec()).ok()
}

/// Reads `{"labels": [{"name", "score"}]}`, checked: at most 100 labels, names of at
/// most 64 bytes, scores within 0..=1.
fn parse_verdict(body: &[u8]) -> Result<Vec<Label>, String> {
    let v: Verdict =
        serde_json::from_slice(body).map_err(|e| format!("answer is not a verdict: {e}"))?;
    if v.labels.len() > MAX_LABELS {
        return Err(format!("{} labels (at most {MAX_LABELS})", v.labels.len()));
    }
    for l in &v.labels {
        if l.name.is_empty() || l.name.len() > MAX_LABEL_LEN {
            return Err(format!("label name of {} bytes", l.name.len()));
        }
        if !(0.0..=1.0).contains(&l.score) {
            return Err(format!("label {:?} scores {} (not 0..=1)", l.name, l.score));
        }
    }
    Ok(v.labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_checked() {
        let ok = parse_verdict(br#"{"labels": [{"name": "porn", "score": 0.95}]}"#).unwrap();
        assert_eq!(ok[0].name, "porn");
        assert!(parse_verdict(br#"{"labels": [{"name": "x", "score": 1.5}]}"#).is_err());
        assert!(parse_verdict(br#"{"labels": [{"name": "", "score": 0.5}]}"#).is_err());
        assert!(parse_verdict(b"not json").is_err());
        let many = format!(
            r#"{{"labels": [{}]}}"#,
            vec![r#"{"name": "a", "score": 0}"#; 101].join(",")
        );
        assert!(parse_verdict(many.as_bytes()).is_err());
    }
}
