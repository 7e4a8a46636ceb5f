//! Storage: the configured targets (opendal operators with timeout and retry layers,
//! built from validated `settings`), whole-object puts in overwrite and create-only
//! form, the object-key `template`s, and the `catalog` that finds what is stored
//! (a stream's snapshots in a time range, the highest `{Sequence}`).
//!
//! Create-only puts never replace an object: on `fs` they are linked into place by
//! [`fs::FsCreate`] (`link(2)` fails on an existing key), on S3 they carry
//! `If-None-Match: *` (a store that ignores it is refused at start by [`probe`]).
//! Their attempts are retried here rather than by opendal's retry layer, so that a
//! retry that finds the key taken after an attempt that timed out (and may have landed)
//! reads the object back: the same bytes mean the earlier attempt stored it.
//!
//! This module knows keys and bytes, not streams or rules: callers render keys from a
//! template and hand them in.

pub mod catalog;
mod dir_cache;
pub mod fs;
pub mod image_header;
pub mod key_language;
pub mod probe;
pub mod settings;
pub mod template;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};

use settings::StorageSettings;

pub use fs::{FS_TMP_DIR, STALE_TEMP_AGE};

/// A storage failure, naming the target and key.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage {storage:?}: cannot build the {scheme} operator: {source}")]
    Build {
        storage: String,
        scheme: String,
        source: Box<opendal::Error>,
    },
    #[error("storage {storage:?}: {op} {key:?} failed: {source}")]
    Op {
        storage: String,
        op: &'static str,
        key: String,
        source: Box<opendal::Error>,
    },
    #[error("storage {storage:?}: {op} {key:?} failed: {message}")]
    Io {
        storage: String,
        op: &'static str,
        key: String,
        message: String,
    },
    #[error("storage {storage:?}: listing {path:?} failed: {message}")]
    Listing {
        storage: String,
        path: String,
        message: String,
    },
}

/// One configured target.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub op: Operator,
    /// The same backend with the timeout layer only: create-only attempts, which
    /// `put_create_only` retries itself.
    once: Operator,
    create_only: CreateOnly,
    timeout: std::time::Duration,
    retries: usize,
    /// The outcome of the create-only probe, once known (see `probe::verify`); shared
    /// by clones of the target.
    probed: Arc<tokio::sync::OnceCell<Result<(), probe::ProbeError>>>,
    /// How listings are read (see `catalog`).
    listing: Listing,
}

/// How a create-only put is done.
#[derive(Debug, Clone)]
enum CreateOnly {
    /// Linked into place from livesnap's temp folder (see `fs`).
    Fs(Arc<fs::FsCreate>),
    /// The backend's conditional write (S3 `If-None-Match: *`, OSS forbid-overwrite).
    Native,
    /// A check, then a write (memory: one process, no other writer).
    CheckFirst,
}

/// How the catalog lists a target.
#[derive(Debug, Clone)]
enum Listing {
    /// A local folder, read directly (names only), with a cache of recent listings.
    Folder {
        root: PathBuf,
        cache: Arc<dir_cache::DirCache>,
    },
    /// Keys come back in lexicographic order (S3, OSS): ranges can be cut short.
    Sorted,
    /// Anything else: a full listing of the prefix.
    Plain,
}

/// All targets by name.
pub type Targets = Arc<BTreeMap<String, Target>>;

/// Builds every configured target.
pub fn build_all(settings: &BTreeMap<String, StorageSettings>) -> Result<Targets, StorageError> {
    let mut out = BTreeMap::new();
    for (name, s) in settings {
        out.insert(name.clone(), build(s)?);
    }
    Ok(Arc::new(out))
}

/// Builds one target: the scheme's options passed through, then a per-attempt
/// timeout, then retries with jittered back-off for temporary errors.
pub fn build(s: &StorageSettings) -> Result<Target, StorageError> {
    let mut options = s.options.clone();
    let fs_root =
        (s.scheme == "fs").then(|| PathBuf::from(options.get("root").cloned().unwrap_or_default()));
    if let Some(root) = &fs_root {
        // Overwrite puts go through opendal's temp-file-and-rename in our temp
        // folder (config may not set `atomic_write_dir`: see `settings`).
        fs::remove_stale_temp_files(root, STALE_TEMP_AGE);
        options.insert(
            "atomic_write_dir".into(),
            root.join(FS_TMP_DIR).to_string_lossy().into_owned(),
        );
    }
    let op = Operator::via_iter(&s.scheme, options).map_err(|source| StorageError::Build {
        storage: s.name.clone(),
        scheme: s.scheme.clone(),
        source: Box::new(source),
    })?;
    let timeout = TimeoutLayer::new()
        .with_timeout(s.timeout)
        .with_io_timeout(s.timeout);
    let once = op.clone().layer(timeout.clone());
    let op = op.layer(timeout).layer(
        RetryLayer::new()
            .with_max_times(s.retries)
            .with_min_delay(RETRY_MIN_DELAY)
            .with_max_delay(RETRY_MAX_DELAY)
            .with_jitter(),
    );
    let create_only = match &fs_root {
        Some(root) => CreateOnly::Fs(Arc::new(fs::FsCreate::new(root))),
        None if op.info().capability().write_with_if_not_exists => CreateOnly::Native,
        None => CreateOnly::CheckFirst,
    };
    let listing = match s.scheme.as_str() {
        "fs" => Listing::Folder {
            root: fs_root.unwrap_or_default(),
            cache: Arc::new(dir_cache::DirCache::default()),
        },
        "s3" | "oss" => Listing::Sorted,
        _ => Listing::Plain,
    };
    Ok(Target {
        name: s.name.clone(),
        op,
        once,
        create_only,
        timeout: s.timeout,
        retries: s.retries,
        probed: Arc::default(),
        listing,
    })
}

const RETRY_MIN_DELAY: std::time::Duration = std::time::Duration::from_millis(200);
const RETRY_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

/// How a create-only put ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Yes,
    /// An earlier attempt of this put, which timed out or failed, had stored it after
    /// all: the object at the key holds exactly these bytes.
    LandedEarlier,
    /// An object already exists at the key; nothing was written.
    AlreadyExists,
}

impl Target {
    pub(crate) fn err(&self, op: &'static str, key: &str, source: opendal::Error) -> StorageError {
        StorageError::Op {
            storage: self.name.clone(),
            op,
            key: key.to_string(),
            source: Box::new(source),
        }
    }

    /// Writes the whole object, replacing any previous one.
    pub async fn put_overwrite(&self, key: &str, jpeg: Bytes) -> Result<(), StorageError> {
        self.put_overwrite_as(key, jpeg, "image/jpeg").await
    }

    /// [`put_overwrite`](Self::put_overwrite) with the object's content type.
    pub async fn put_overwrite_as(
        &self,
        key: &str,
        jpeg: Bytes,
        content_type: &str,
    ) -> Result<(), StorageError> {
        self.op
            .write_with(key, jpeg)
            .content_type(content_type)
            .await
            .map(|_| ())
            .map_err(|e| self.err("put", key, e))
    }

    /// Writes the whole object only if nothing exists at the key; never replaces.
    /// Attempts that fail for a temporary reason (a timeout included) are retried up
    /// to the target's `retries`; when a retry finds the key taken, the object is read
    /// back, and the same bytes mean an earlier attempt landed
    /// ([`Created::LandedEarlier`]), not another writer.
    pub async fn put_create_only(&self, key: &str, jpeg: Bytes) -> Result<Created, StorageError> {
        self.put_create_only_as(key, jpeg, "image/jpeg").await
    }

    /// [`put_create_only`](Self::put_create_only) with the object's content type.
    pub async fn put_create_only_as(
        &self,
        key: &str,
        jpeg: Bytes,
        content_type: &str,
    ) -> Result<Created, StorageError> {
        let mut attempt = 0usize;
        let mut may_have_landed = false;
        loop {
            let err = match self.create_once(key, jpeg.clone(), content_type).await {
                Ok(Created::AlreadyExists) if may_have_landed => {
                    return match self.op.read(key).await {
                        Ok(b) if b.to_bytes() == jpeg => {
                            tracing::info!(storage = %self.name, key, "a create that timed out had stored the object; not written twice");
                            Ok(Created::LandedEarlier)
                        }
                        Ok(_) => Ok(Created::AlreadyExists),
                        Err(e) => Err(self.err("read back", key, e)),
                    };
                }
                Ok(c) => return Ok(c),
                Err(e) => e,
            };
            if !err.1 || attempt >= self.retries {
                return Err(err.0);
            }
            attempt += 1;
            may_have_landed = true;
            tracing::debug!(storage = %self.name, key, attempt, error = %err.0, "create-only put failed; retrying");
            tokio::time::sleep(retry_delay(attempt)).await;
        }
    }

    /// One attempt; an error comes with whether it is worth retrying.
    async fn create_once(
        &self,
        key: &str,
        jpeg: Bytes,
        content_type: &str,
    ) -> Result<Created, (StorageError, bool)> {
        match &self.create_only {
            CreateOnly::Fs(fs) => {
                let fs = fs.clone();
                let owned = key.to_string();
                let task = tokio::task::spawn_blocking(move || fs.create(&owned, &jpeg));
                let io = |message: String| StorageError::Io {
                    storage: self.name.clone(),
                    op: "create",
                    key: key.to_string(),
                    message,
                };
                match tokio::time::timeout(self.timeout, task).await {
                    Ok(Ok(Ok(c))) => Ok(c),
                    Ok(Ok(Err(e))) => {
                        let retry = matches!(
                            e.kind(),
                            std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut
                        );
                        Err((io(e.to_string()), retry))
                    }
                    Ok(Err(e)) => Err((io(format!("create task: {e}")), false)),
                    Err(_) => Err((
                        io(format!("no answer in {} s", self.timeout.as_secs())),
                        true,
                    )),
                }
            }
            CreateOnly::Native => match self
                .once
                .write_with(key, jpeg)
                .content_type(content_type)
                .if_not_exists(true)
                .await
            {
                Ok(_) => Ok(Created::Yes),
                Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(Created::AlreadyExists),
                Err(e) => {
                    let retry = e.is_temporary();
                    Err((self.err("create", key, e), retry))
                }
            },
            CreateOnly::CheckFirst => {
                match self.op.exists(key).await {
                    Ok(true) => return Ok(Created::AlreadyExists),
                    Ok(false) => {}
                    Err(e) => return Err((self.err("stat", key, e), false)),
                }
                self.put_overwrite_as(key, jpeg, content_type)
                    .await
                    .map(|_| Created::Yes)
                    .map_err(|e| (e, false))
            }
        }
    }

    /// Whether create-only puts rest on the backend honouring a conditional write
    /// (which [`probe`] checks at start).
    pub fn create_only_is_conditional(&self) -> bool {
        matches!(self.create_only, CreateOnly::Native)
    }
}

/// The pause before retry `attempt` (1-based): 200 ms doubling to 2 s, jittered.
fn retry_delay(attempt: usize) -> std::time::Duration {
    let doubling = 1u32 << attempt.saturating_sub(1).min(4);
    let base = RETRY_MIN_DELAY
        .saturating_mul(doubling)
        .min(RETRY_MAX_DELAY);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(scheme: &str, opts: &[(&str, &str)]) -> StorageSettings {
        StorageSettings {
            name: "t".into(),
            scheme: scheme.into(),
            timeout: Duration::from_secs(5),
            retries: 1,
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[tokio::test]
    async fn create_only_never_replaces_on_fs_and_memory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        for t in [
            build(&settings("fs", &[("root", root)])).unwrap(),
            build(&settings("memory", &[])).unwrap(),
        ] {
            let first = Bytes::from_static(b"first");
            assert_eq!(
                t.put_create_only("a/1.jpg", first.clone()).await.unwrap(),
                Created::Yes
            );
            assert_eq!(
                t.put_create_only("a/1.jpg", Bytes::from_static(b"second"))
                    .await
                    .unwrap(),
                Created::AlreadyExists
            );
            assert_eq!(t.op.read("a/1.jpg").await.unwrap().to_bytes(), first);
            t.put_overwrite("a/x.jpg", Bytes::from_static(b"1"))
                .await
                .unwrap();
            t.put_overwrite("a/x.jpg", Bytes::from_static(b"2"))
                .await
                .unwrap();
            assert_eq!(&t.op.read("a/x.jpg").await.unwrap().to_bytes()[..], b"2");
        }
        // fs writes go through the temp folder and leave nothing behind there.
        let tmp = dir.path().join(FS_TMP_DIR);
        assert!(tmp.is_dir());
        assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
    }

    #[test]
    fn unknown_scheme_fails_to_build() {
        assert!(build(&settings("nosuch", &[])).is_err());
    }
}
