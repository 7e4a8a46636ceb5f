//! Create-only publishing on a local folder, done by us rather than opendal: opendal's
//! fs writer with `atomic_write_dir` checks for the key, writes a temp file and renames
//! it into place, and `rename(2)` replaces, so two writers racing on one key both
//! "win". Here the bytes go to a temp file in livesnap's own temp folder
//! (`ROOT/.livesnap-tmp`, on the same filesystem as the objects), are fsync'ed, and are
//! published with `link(2)`, which fails with `EEXIST` when anything is at the key:
//! exactly one of any number of racing writers (threads, processes, nodes sharing the
//! folder) creates the object, and it is complete when it appears. The temp file is
//! then removed.
//!
//! Also the startup cleanup of that temp folder: it only ever looks inside it.
//!
//! Blocking: callers run these on `spawn_blocking`.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::Created;

/// The folder, under an `fs` root, where objects are written before being linked or
/// renamed into place, so that no partial object is ever visible. Its leading dot
/// keeps it apart from every key livesnap renders (names never start with '.').
pub const FS_TMP_DIR: &str = ".livesnap-tmp";

/// Temporary files older than this are left over from a killed process (a write
/// takes seconds at most) and are removed when the target is built.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(600);

/// A local folder that objects are created in, never replacing one.
#[derive(Debug, Clone)]
pub struct FsCreate {
    root: PathBuf,
    tmp: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl FsCreate {
    pub fn new(root: &Path) -> FsCreate {
        FsCreate {
            root: root.to_path_buf(),
            tmp: root.join(FS_TMP_DIR),
        }
    }

    /// The temp folder.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// The file of `key`, refusing anything that is not a plain relative path below
    /// the root (keys are checked before they get here; this is the last line).
    fn path_of(&self, key: &str) -> std::io::Result<PathBuf> {
        let rel = Path::new(key.trim_start_matches('/'));
        let plain = !key.is_empty()
            && rel
                .components()
                .all(|c| matches!(c, Component::Normal(n) if n != FS_TMP_DIR));
        if !plain {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("key {key:?} is not a plain relative path outside {FS_TMP_DIR}"),
            ));
        }
        Ok(self.root.join(rel))
    }

    /// Writes `bytes` at `key` unless something exists there; never replaces.
    pub fn create(&self, key: &str, bytes: &[u8]) -> std::io::Result<Created> {
        let path = self.path_of(key)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::create_dir_all(&self.tmp)?;
        let tmp = self.tmp.join(format!(
            "create-{}-{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            // The parent folder can vanish between its creation above and the link: another
            // node or sweep on the same folder removes folders it leaves empty (the
            // create-only probe's, retention's). Create it again and link again, a few times.
            let mut linked = std::fs::hard_link(&tmp, &path);
            for _ in 0..PARENT_RETRIES {
                match (&linked, path.parent()) {
                    (Err(e), Some(parent)) if e.kind() == std::io::ErrorKind::NotFound => {
                        std::fs::create_dir_all(parent)?;
                        linked = std::fs::hard_link(&tmp, &path);
                    }
                    _ => break,
                }
            }
            match linked {
                Ok(()) => {
                    // Make the new name durable too (best effort: not every
                    // filesystem lets a folder be opened for fsync).
                    if let Some(dir) = path.parent().and_then(|p| std::fs::File::open(p).ok()) {
                        let _ = dir.sync_all();
                    }
                    Ok(Created::Yes)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Ok(Created::AlreadyExists)
                }
                Err(e) => Err(e),
            }
        })();
        if let Err(e) = std::fs::remove_file(&tmp) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %tmp.display(), error = %e, "cannot remove a temporary file");
            }
        }
        result
    }
}

/// How many times a create-only link is tried again after its parent folder vanished.
const PARENT_RETRIES: usize = 3;

/// Removes regular files older than `age` from livesnap's temp folder under `root`
/// (`ROOT/.livesnap-tmp`), and nothing else: not the folder's neighbours, not what a
/// symbolic link in its place points to, not sub-folders. Errors are logged, not fatal.
/// Returns how many files were removed.
pub fn remove_stale_temp_files(root: &Path, age: Duration) -> usize {
    let dir = root.join(FS_TMP_DIR);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.file_type().is_dir() => {}
        Ok(_) => {
            tracing::warn!(path = %dir.display(), "the temp folder is not a plain folder; not cleaned");
            return 0;
        }
        Err(_) => return 0,
    }
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for e in entries.flatten() {
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|d| d > age);
        if meta.file_type().is_file() && old {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(path = %e.path().display(), "removed a stale temporary file")
                }
                Err(err) => {
                    tracing::warn!(path = %e.path().display(), error = %err, "cannot remove a stale temporary file")
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, secs: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn create_links_once_and_cleans_its_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsCreate::new(dir.path());
        assert_eq!(fs.create("a/b/1.jpg", b"one").unwrap(), Created::Yes);
        assert_eq!(
            fs.create("a/b/1.jpg", b"two").unwrap(),
            Created::AlreadyExists
        );
        assert_eq!(std::fs::read(dir.path().join("a/b/1.jpg")).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(fs.tmp_dir()).unwrap().count(), 0);
        for bad in ["", "../x.jpg", "a/../../x", ".livesnap-tmp/x.jpg"] {
            assert!(fs.create(bad, b"x").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cleanup_touches_only_old_files_inside_the_temp_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let tmp = root.join(FS_TMP_DIR);
        std::fs::create_dir_all(tmp.join("sub")).unwrap();
        std::fs::create_dir_all(root.join("user")).unwrap();
        let files = [
            (tmp.join("old.tmp"), false),
            (tmp.join("fresh.tmp"), true),
            (tmp.join("sub/old.tmp"), true),
            (root.join("user/old.jpg"), true),
            (root.join("old-beside.tmp"), true),
            (root.join(".livesnap-tmp-notes"), true),
        ];
        for (f, _) in &files {
            std::fs::write(f, b"x").unwrap();
            if !f.ends_with("fresh.tmp") {
                age(f, 3600);
            }
        }
        assert_eq!(remove_stale_temp_files(root, STALE_TEMP_AGE), 1);
        for (f, survives) in &files {
            assert_eq!(f.exists(), *survives, "{}", f.display());
        }
    }

    #[cfg(unix)]
    #[test]
    fn cleanup_never_follows_a_link_in_place_of_the_temp_folder() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user");
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(user.join("old.jpg"), b"x").unwrap();
        age(&user.join("old.jpg"), 3600);
        std::os::unix::fs::symlink(&user, dir.path().join(FS_TMP_DIR)).unwrap();
        assert_eq!(remove_stale_temp_files(dir.path(), STALE_TEMP_AGE), 0);
        assert!(user.join("old.jpg").exists());
    }
}
