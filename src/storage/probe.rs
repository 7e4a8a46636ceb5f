//! The start-up probe of create-only writes: a store that ignores conditional writes
//! (some S3-compatible servers ignore `If-None-Match`; OSS ignores its forbid-overwrite
//! header on versioned buckets) would silently replace sequence objects and lose rule
//! store updates. For each target that sequence mode or the rule store relies on, a
//! scratch key under the reserved prefix `_livesnap/probe/` is created twice,
//! create-only; when the second create succeeds the node refuses to start, saying why
//! and what to do. The scratch key is deleted afterwards.
//!
//! A store that cannot be reached at start does not stop the node (an outage is
//! survived like any other, counted per snapshot): the probe is then run again before
//! the target's first sequence write ([`verify`]), and its answer is kept.

use std::sync::Arc;

use bytes::Bytes;

use super::{Created, StorageError, Target};

/// The reserved prefix of probe keys.
pub const PROBE_PREFIX: &str = "_livesnap/probe/";

/// Why a target cannot be trusted with create-only writes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "storage {storage:?} ignores create-only writes: a second create of {key:?} replaced \
         the first, so sequence objects (No-Overwrite mode) and rule store updates would be \
         silently overwritten. Use a store that honours conditional writes \
         (S3 `If-None-Match: *`; enable conditional writes if your server has a switch \
         for them), disable bucket versioning on OSS (its forbid-overwrite header is \
         ignored on versioned buckets), or point {used_by} at another storage target"
    )]
    Overwrites {
        storage: String,
        key: String,
        used_by: String,
    },
    #[error("storage {storage:?}: cannot probe create-only writes ({used_by}): {source}")]
    Storage {
        storage: String,
        used_by: String,
        source: Arc<StorageError>,
    },
}

/// The probe's answer for `target`, run at most until it gives one: a store that
/// cannot be reached gives none (`ProbeError::Storage`, asked again next time); the
/// answer of a reachable store is kept for the life of the target.
pub async fn verify(target: &Target, used_by: &str) -> Result<(), ProbeError> {
    let cell = target.probed.clone();
    let kept = cell
        .get_or_try_init(|| async {
            match check_create_only(target, used_by).await {
                Err(e @ ProbeError::Storage { .. }) => Err(e),
                answer => Ok(answer),
            }
        })
        .await?;
    kept.clone()
}

fn scratch_key() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{PROBE_PREFIX}{}-{}-{:09}",
        std::process::id(),
        now.as_secs(),
        now.subsec_nanos()
    )
}

/// Creates a scratch key twice create-only on `target` and fails when the second
/// create is not refused. `used_by` names what relies on it (for the error).
pub async fn check_create_only(target: &Target, used_by: &str) -> Result<(), ProbeError> {
    let key = scratch_key();
    let wrap = |source| ProbeError::Storage {
        storage: target.name.clone(),
        used_by: used_by.to_string(),
        source: Arc::new(source),
    };
    let first = target
        .put_create_only(&key, Bytes::from_static(b"livesnap probe 1"))
        .await
        .map_err(wrap)?;
    let second = target
        .put_create_only(&key, Bytes::from_static(b"livesnap probe 2"))
        .await;
    if let Err(e) = target.op.delete(&key).await {
        tracing::warn!(storage = %target.name, key, error = %e, "cannot delete the probe's scratch key");
    }
    if let super::Listing::Folder { root, .. } = &target.listing {
        // Leave no empty folders behind (remove_dir fails on a folder with content).
        let probe = root.join(PROBE_PREFIX);
        let _ = std::fs::remove_dir(&probe);
        if let Some(parent) = probe.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    let second = second.map_err(wrap)?;
    match (first, second) {
        (Created::Yes | Created::LandedEarlier, Created::AlreadyExists) => {
            tracing::debug!(storage = %target.name, used_by, "create-only writes are honoured");
            Ok(())
        }
        _ => Err(ProbeError::Overwrites {
            storage: target.name.clone(),
            key,
            used_by: used_by.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fs_and_memory_pass_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        for (scheme, opts) in [("fs", vec![("root", root)]), ("memory", vec![])] {
            let t = super::super::build(&super::super::settings::StorageSettings {
                name: "t".into(),
                scheme: scheme.into(),
                timeout: std::time::Duration::from_secs(5),
                retries: 1,
                options: opts
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .unwrap();
            check_create_only(&t, "test").await.unwrap();
            let left = t.op.list_with(PROBE_PREFIX).await.unwrap();
            assert!(left.iter().all(|e| e.path() == PROBE_PREFIX), "{left:?}");
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            [crate::storage::FS_TMP_DIR],
            "only the temp folder remains"
        );
    }
}
