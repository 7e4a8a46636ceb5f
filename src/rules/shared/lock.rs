//! The lock object that serialises rule store updates on backends without
//! conditional writes (fs, memory): `KEY.lock`, created exclusively, removed by its
//! owner, taken over when older than 30 s (a crashed node's; best effort).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opendal::layers::TimeoutLayer;
use opendal::{ErrorKind, Operator};

use super::StoreError;
use crate::storage::settings::StorageSettings;

/// A lock object older than this is taken to be left by a crashed node.
pub const LOCK_TTL: Duration = Duration::from_secs(30);

pub struct LockObject {
    op: Operator,
    storage: String,
    pub key: String,
}

impl LockObject {
    /// The lock beside `doc_key`. On fs it is written in place, so that an exclusive
    /// create is `O_EXCL` (the normal fs operator writes a temp file and renames it
    /// after a separate existence check, which races).
    pub fn new(settings: &StorageSettings, fallback: &Operator, doc_key: &str) -> LockObject {
        LockObject {
            op: exclusive_fs_operator(settings).unwrap_or_else(|| fallback.clone()),
            storage: settings.name.clone(),
            key: format!("{doc_key}.lock"),
        }
    }

    fn io_err(&self, op: &'static str, e: &opendal::Error) -> StoreError {
        StoreError::Io {
            storage: self.storage.clone(),
            key: self.key.clone(),
            op,
            message: e.to_string(),
        }
    }

    /// Creates the lock object exclusively, waiting (with back-off) while another
    /// holds it, until `deadline`; returns the owner token to release it with.
    pub async fn acquire(&self, deadline: Instant, busy: StoreError) -> Result<String, StoreError> {
        let mut attempt = 0u32;
        loop {
            let token = unique_token();
            let body = serde_json::to_vec(&serde_json::json!({
                "owner": token,
                "created_unix": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            }))
            .expect("serialises");
            match self
                .op
                .write_with(&self.key, body)
                .if_not_exists(true)
                .await
            {
                Ok(_) => return Ok(token),
                Err(e) if e.kind() == ErrorKind::ConditionNotMatch => {}
                // Racing creators on fs may see the file appear between checks.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(self.io_err("create", &e)),
            }
            // Held by someone: taken over if it is stale.
            match self.op.stat(&self.key).await {
                Ok(m) => {
                    let age = m
                        .last_modified()
                        .and_then(|t| SystemTime::now().duration_since(SystemTime::from(t)).ok())
                        .unwrap_or_default();
                    if age > LOCK_TTL {
                        tracing::warn!(key = %self.key, age_secs = age.as_secs(), "removing a stale rule store lock");
                        let _ = self.op.delete(&self.key).await;
                        continue;
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_err("stat", &e)),
            }
            attempt += 1;
            if Instant::now() > deadline {
                return Err(busy);
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// Removes the lock object if it is still ours.
    pub async fn release(&self, token: &str) {
        let ours = match self.op.read(&self.key).await {
            Ok(buf) => serde_json::from_slice::<serde_json::Value>(&buf.to_vec())
                .ok()
                .and_then(|v| v.get("owner").and_then(|o| o.as_str()).map(|o| o == token))
                .unwrap_or(false),
            Err(_) => false,
        };
        if ours {
            if let Err(e) = self.op.delete(&self.key).await {
                tracing::warn!(key = %self.key, error = %e, "cannot remove the rule store lock; it expires in 30 s");
            }
        }
    }
}

fn exclusive_fs_operator(st: &StorageSettings) -> Option<Operator> {
    if st.scheme != "fs" {
        return None;
    }
    let root = st.options.get("root")?.clone();
    let op = Operator::via_iter("fs", [("root".to_string(), root)]).ok()?;
    Some(op.layer(TimeoutLayer::new().with_timeout(st.timeout)))
}

/// 20–40 ms, doubling per attempt up to 320–640 ms, jittered so that racing nodes
/// spread out.
pub fn backoff(attempt: u32) -> Duration {
    let base = 20u64 << attempt.min(4);
    Duration::from_millis(base + jitter() % base.max(1))
}

fn jitter() -> u64 {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    // xorshift on the nanoseconds and a counter, enough to desynchronise nodes.
    let mut x = n
        ^ (COUNTER.fetch_add(0x9E37_79B9, Ordering::Relaxed) << 7)
        ^ u64::from(std::process::id());
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

static COUNTER: AtomicU64 = AtomicU64::new(1);

pub fn unique_token() -> String {
    format!(
        "{}-{}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        jitter()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            let base = 20u64 << attempt.min(4);
            assert!(
                d >= Duration::from_millis(base) && d < Duration::from_millis(2 * base),
                "{d:?}"
            );
        }
        assert_ne!(unique_token(), unique_token());
    }
}
