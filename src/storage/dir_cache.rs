//! The names in recently listed folders of an `fs` target, reused while a folder's
//! modification time is unchanged: checking the time is one stat, reading a large
//! folder's names is not. One cache per target.
//!
//! A listing is kept only when it was taken at least 2 s after the folder's
//! modification time, so that a change within the same tick of a coarse clock (1 s on
//! some file systems) cannot hide behind an unchanged time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Folders kept at most (the least recently used goes first).
const CAPACITY: usize = 8;
const SETTLED: Duration = Duration::from_secs(2);

/// (name, is a folder) of each entry.
pub type Entries = Arc<Vec<(String, bool)>>;

struct Cached {
    mtime: SystemTime,
    entries: Entries,
    used: Instant,
}

#[derive(Default)]
pub struct DirCache {
    folders: Mutex<HashMap<PathBuf, Cached>>,
}

impl std::fmt::Debug for DirCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirCache").finish_non_exhaustive()
    }
}

impl DirCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Cached>> {
        self.folders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entries of `dir`; `None` when it does not exist.
    pub fn read(&self, dir: &Path) -> std::io::Result<Option<Entries>> {
        let mtime = match std::fs::metadata(dir) {
            Ok(m) => m.modified()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(c) = self.lock().get_mut(dir) {
            if c.mtime == mtime {
                c.used = Instant::now();
                return Ok(Some(c.entries.clone()));
            }
        }
        let listed_at = SystemTime::now();
        let mut entries = Vec::new();
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        for entry in rd {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let is_dir = entry.file_type()?.is_dir();
            entries.push((name, is_dir));
        }
        let entries = Arc::new(entries);
        if listed_at.duration_since(mtime).is_ok_and(|d| d >= SETTLED) {
            let mut map = self.lock();
            if map.len() >= CAPACITY && !map.contains_key(dir) {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, c)| c.used)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
            map.insert(
                dir.to_path_buf(),
                Cached {
                    mtime,
                    entries: entries.clone(),
                    used: Instant::now(),
                },
            );
        }
        Ok(Some(entries))
    }
}
