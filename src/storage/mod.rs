//! Storage: the configured targets (opendal operators with timeout and retry layers,
//! built from validated `settings`), whole-object puts in overwrite and create-only
//! form, the object-key `template`s, and the `catalog` that finds what is stored
//! (a stream's snapshots in a time range, the highest `{Sequence}`).
//!
//! This module knows keys and bytes, not streams or rules: callers render keys from a
//! template and hand them in.

pub mod catalog;
mod dir_cache;
pub mod image_header;
pub mod key_language;
pub mod settings;
pub mod template;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};

use settings::StorageSettings;

/// The folder, under an `fs` root, where objects are written before being renamed into
/// place, so that no partial object is ever visible. Its leading dot keeps it apart
/// from every key livesnap renders (names never start with '.').
pub const FS_TMP_DIR: &str = ".livesnap-tmp";

/// Temporary files older than this are left over from a killed process (a write
/// takes seconds at most) and are removed when the target is built.
pub const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes files older than `age` from an fs temp folder (never objects: those live
/// outside it). Errors are logged, not fatal.
fn remove_stale_temp_files(dir: &std::path::Path, age: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|d| d > age);
        if meta.is_file() && old {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::info!(path = %e.path().display(), "removed a stale temporary file")
                }
                Err(err) => {
                    tracing::warn!(path = %e.path().display(), error = %err, "cannot remove a stale temporary file")
                }
            }
        }
    }
}

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
    create_only_native: bool,
    /// How listings are read (see `catalog`).
    listing: Listing,
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
    if s.scheme == "fs" && !options.contains_key("atomic_write_dir") {
        let root = options.get("root").cloned().unwrap_or_default();
        let root = root.trim_end_matches('/');
        options.insert("atomic_write_dir".into(), format!("{root}/{FS_TMP_DIR}"));
    }
    if let Some(dir) = options.get("atomic_write_dir").filter(|_| s.scheme == "fs") {
        remove_stale_temp_files(std::path::Path::new(dir), STALE_TEMP_AGE);
    }
    let op = Operator::via_iter(&s.scheme, options).map_err(|source| StorageError::Build {
        storage: s.name.clone(),
        scheme: s.scheme.clone(),
        source: Box::new(source),
    })?;
    let op = op
        .layer(
            TimeoutLayer::new()
                .with_timeout(s.timeout)
                .with_io_timeout(s.timeout),
        )
        .layer(
            RetryLayer::new()
                .with_max_times(s.retries)
                .with_min_delay(std::time::Duration::from_millis(200))
                .with_max_delay(std::time::Duration::from_secs(2))
                .with_jitter(),
        );
    let create_only_native = op.info().capability().write_with_if_not_exists;
    let listing = match s.scheme.as_str() {
        "fs" => Listing::Folder {
            root: PathBuf::from(s.options.get("root").cloned().unwrap_or_default()),
            cache: Arc::new(dir_cache::DirCache::default()),
        },
        "s3" | "oss" => Listing::Sorted,
        _ => Listing::Plain,
    };
    Ok(Target {
        name: s.name.clone(),
        op,
        create_only_native,
        listing,
    })
}

/// How a create-only put ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Yes,
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
        self.op
            .write_with(key, jpeg)
            .content_type("image/jpeg")
            .await
            .map(|_| ())
            .map_err(|e| self.err("put", key, e))
    }

    /// Writes the whole object only if nothing exists at the key: natively where the
    /// backend supports it (fs, S3 `If-None-Match: *`), by a check first otherwise.
    pub async fn put_create_only(&self, key: &str, jpeg: Bytes) -> Result<Created, StorageError> {
        if !self.create_only_native {
            match self.op.exists(key).await {
                Ok(true) => return Ok(Created::AlreadyExists),
                Ok(false) => {}
                Err(e) => return Err(self.err("stat", key, e)),
            }
            return self.put_overwrite(key, jpeg).await.map(|_| Created::Yes);
        }
        match self
            .op
            .write_with(key, jpeg)
            .content_type("image/jpeg")
            .if_not_exists(true)
            .await
        {
            Ok(_) => Ok(Created::Yes),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(Created::AlreadyExists),
            Err(e) => Err(self.err("create", key, e)),
        }
    }
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
