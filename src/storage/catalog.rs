//! What is stored: a stream's snapshots in a time range (from storage alone, so every
//! node gives the same answer, fast enough for a stream with 100,000 of them), their
//! sizes and picture dimensions, and the highest `{Sequence}` of a stream.
//!
//! - **fs**: the folder under the template's list prefix is read directly with
//!   `std::fs::read_dir` on a blocking thread, names only (opendal's fs lister stats
//!   every entry, which is slow on large folders; see `docs/performance.md`); only the
//!   entries of the answer are stat'ed afterwards.
//! - **S3 / OSS** (lexicographically sorted listings): a template whose first
//!   per-snapshot variable is `{UnixTimestamp}` renders keys that sort by time while
//!   timestamps have 10 digits (2001–2286), so the listing starts after
//!   `PREFIX<start>` and stops at the first key at or beyond `PREFIX<end>`: the cost is
//!   that of the range, not of everything stored.
//! - anything else: a full recursive listing of the prefix.
//!
//! Snapshot times come from `{UnixTimestamp}` in the key, or from the object's
//! modification time for `{Sequence}`-only templates.

use std::path::Path;

use futures::TryStreamExt;
use opendal::{EntryMode, ErrorKind};

use super::dir_cache::DirCache;
use super::image_header;
use super::template::{Template, Var};
use super::{Listing, StorageError, Target, FS_TMP_DIR};

/// A stored snapshot of the queried stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub storage: String,
    pub key: String,
    pub unix: u64,
    pub size: Option<u64>,
}

/// One snapshot's stored objects: its outputs, each found under its own template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The earliest time of its members.
    pub unix: u64,
    /// Its `{Sequence}`, when its templates render it.
    pub sequence: Option<u64>,
    /// Output 0 (or the first output found) first, then the others in template order.
    pub members: Vec<Found>,
}

/// Groups found objects into snapshots: objects whose keys carry the same `{Sequence}`
/// (in one storage) are one snapshot; without `{Sequence}`, objects of the same second
/// are. `templates` are the (storage, template) pairs searched, output 0's before the
/// outputs' (their order orders each group's members). Groups come out by time.
pub fn group(found: Vec<Found>, templates: &[(String, Template)], r: &Range<'_>) -> Vec<Group> {
    // (storage, sequence, or time when there is no sequence) → members with their
    // template's rank.
    type Key = (String, Option<u64>, u64);
    let mut groups: Vec<(Key, Vec<(usize, Found)>)> = Vec::new();
    let mut at: std::collections::HashMap<Key, usize> = std::collections::HashMap::new();
    for f in found {
        let matched = templates
            .iter()
            .enumerate()
            .find_map(|(rank, (storage, t))| {
                if *storage != f.storage {
                    return None;
                }
                t.match_key(&f.key, r.domain, r.app, r.stream)
                    .map(|(_, seq)| (rank, seq))
            });
        let (rank, seq) = matched.unwrap_or((usize::MAX, None));
        let key = match seq {
            Some(n) => (f.storage.clone(), Some(n), 0),
            None => (f.storage.clone(), None, f.unix),
        };
        match at.get(&key) {
            Some(&i) => groups[i].1.push((rank, f)),
            None => {
                at.insert(key.clone(), groups.len());
                groups.push((key, vec![(rank, f)]));
            }
        }
    }
    let mut out: Vec<Group> = groups
        .into_iter()
        .map(|((_, sequence, _), mut members)| {
            members.sort_by(|a, b| (a.0, &a.1.key).cmp(&(b.0, &b.1.key)));
            Group {
                unix: members.iter().map(|(_, f)| f.unix).min().unwrap_or(0),
                sequence,
                members: members.into_iter().map(|(_, f)| f).collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (a.unix, &a.members[0].storage, &a.members[0].key).cmp(&(
            b.unix,
            &b.members[0].storage,
            &b.members[0].key,
        ))
    });
    out
}

/// The stream and half-open time range `[start, end)` being searched.
#[derive(Debug, Clone)]
pub struct Range<'a> {
    pub domain: &'a str,
    pub app: &'a str,
    pub stream: &'a str,
    pub start: u64,
    pub end: u64,
}

impl Range<'_> {
    fn contains(&self, t: u64) -> bool {
        (self.start..self.end).contains(&t)
    }
}

const TEN_DIGITS: std::ops::Range<u64> = 1_000_000_000..10_000_000_000;

/// Every snapshot of `templates` (all on `target`) in the range, unsorted.
pub async fn scan(
    target: &Target,
    templates: &[Template],
    r: &Range<'_>,
) -> Result<Vec<Found>, StorageError> {
    let mut by_prefix: Vec<(String, Vec<Template>)> = Vec::new();
    for t in templates {
        let p = t.list_prefix(r.domain, r.app, r.stream);
        match by_prefix.iter_mut().find(|(q, _)| *q == p) {
            Some((_, v)) => v.push(t.clone()),
            None => by_prefix.push((p, vec![t.clone()])),
        }
    }
    let mut out = Vec::new();
    for (prefix, tpls) in by_prefix {
        match &target.listing {
            Listing::Folder { root, cache } => {
                out.extend(scan_fs(target, root, cache, &prefix, tpls, r).await?)
            }
            Listing::Sorted => {
                for t in tpls {
                    out.extend(
                        scan_listing(target, &prefix, std::slice::from_ref(&t), r, true).await?,
                    );
                }
            }
            Listing::Plain => out.extend(scan_listing(target, &prefix, &tpls, r, false).await?),
        }
    }
    Ok(out)
}

/// The time of `key` under the first template that renders it for this stream:
/// `Ok(Some(t))` from `{UnixTimestamp}`, `Err(())` when it carries no time (the
/// caller uses the modification time), `Ok(None)` when no template matches.
fn key_time(templates: &[Template], key: &str, r: &Range<'_>) -> Result<Option<u64>, ()> {
    let mut untimed = false;
    for t in templates {
        match t.match_key(key, r.domain, r.app, r.stream) {
            Some((Some(ts), _)) => return Ok(Some(ts)),
            Some((None, _)) => untimed = true,
            None => {}
        }
    }
    if untimed {
        Err(())
    } else {
        Ok(None)
    }
}

async fn scan_fs(
    target: &Target,
    root: &Path,
    cache: &std::sync::Arc<DirCache>,
    prefix: &str,
    templates: Vec<Template>,
    r: &Range<'_>,
) -> Result<Vec<Found>, StorageError> {
    let dir = root.join(prefix);
    // A cheap test on each name of the prefix folder, when every template puts a
    // 10-digit {UnixTimestamp} right after a fixed part of that name.
    let filter: Option<Vec<String>> = if TEN_DIGITS.contains(&r.start)
        && TEN_DIGITS.contains(&r.end)
    {
        templates
            .iter()
            .map(|t| match t.fixed_prefix(r.domain, r.app, r.stream) {
                (fixed, Some(Var::UnixTimestamp)) => fixed.strip_prefix(prefix).map(str::to_owned),
                _ => None,
            })
            .collect()
    } else {
        None
    };
    let owned = (
        r.domain.to_string(),
        r.app.to_string(),
        r.stream.to_string(),
        r.start,
        r.end,
    );
    let failed = {
        let (storage, path) = (target.name.clone(), dir.display().to_string());
        move |message: String| StorageError::Listing {
            storage: storage.clone(),
            path: path.clone(),
            message,
        }
    };
    let in_task = failed.clone();
    let prefix = prefix.to_string();
    let storage = target.name.clone();
    let cache = cache.clone();
    tokio::task::spawn_blocking(move || {
        let (d, a, s, start, end) = &owned;
        let r = Range {
            domain: d,
            app: a,
            stream: s,
            start: *start,
            end: *end,
        };
        let mut out = Vec::new();
        let walk = Walk {
            templates: &templates,
            range: &r,
            storage: &storage,
            cache: &cache,
        };
        walk.dir(&dir, &prefix, filter.as_deref(), &mut out)
            .map_err(|e| in_task(e.to_string()))?;
        Ok(out)
    })
    .await
    .map_err(|e| failed(format!("listing task: {e}")))?
}

/// Whether `name` is `rest` followed by a 10-digit timestamp in the range (and then
/// no further digit).
fn name_in_range(name: &str, rest: &str, r: &Range<'_>) -> bool {
    let Some(tail) = name.strip_prefix(rest) else {
        return false;
    };
    let b = tail.as_bytes();
    if b.len() < 10
        || !b[..10].iter().all(u8::is_ascii_digit)
        || b.get(10).is_some_and(u8::is_ascii_digit)
    {
        return false;
    }
    let ts: u64 = tail[..10].parse().unwrap_or(0);
    r.contains(ts)
}

struct Walk<'a> {
    templates: &'a [Template],
    range: &'a Range<'a>,
    storage: &'a str,
    cache: &'a DirCache,
}

impl Walk<'_> {
    fn dir(
        &self,
        dir: &Path,
        key_prefix: &str,
        filter: Option<&[String]>,
        out: &mut Vec<Found>,
    ) -> std::io::Result<()> {
        let Some(entries) = self.cache.read(dir)? else {
            return Ok(());
        };
        for (name, is_dir) in entries.iter() {
            // Our temp folder and dot files are never snapshots.
            if name.starts_with('.') || name == FS_TMP_DIR {
                continue;
            }
            if let Some(f) = filter {
                if !f.iter().any(|rest| name_in_range(name, rest, self.range)) {
                    continue;
                }
            }
            let key = format!("{key_prefix}{name}");
            if *is_dir {
                self.dir(&dir.join(name), &format!("{key}/"), None, out)?;
                continue;
            }
            let r = self.range;
            match key_time(self.templates, &key, r) {
                Ok(Some(t)) if r.contains(t) => out.push(Found {
                    storage: self.storage.to_string(),
                    key,
                    unix: t,
                    size: None,
                }),
                Ok(_) => {}
                Err(()) => {
                    let Ok(meta) = std::fs::metadata(dir.join(name)) else {
                        continue;
                    };
                    let t = meta
                        .modified()
                        .ok()
                        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs());
                    if r.contains(t) {
                        out.push(Found {
                            storage: self.storage.to_string(),
                            key,
                            unix: t,
                            size: Some(meta.len()),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

async fn scan_listing(
    target: &Target,
    prefix: &str,
    templates: &[Template],
    r: &Range<'_>,
    sorted: bool,
) -> Result<Vec<Found>, StorageError> {
    let path = if prefix.is_empty() { "/" } else { prefix };
    // One template on a sorted listing: a key range by timestamp when it can.
    let bounds = match (sorted, templates) {
        (true, [t]) if TEN_DIGITS.contains(&r.start) && TEN_DIGITS.contains(&r.end) => {
            match t.fixed_prefix(r.domain, r.app, r.stream) {
                (fixed, Some(Var::UnixTimestamp)) if fixed.starts_with(prefix) => {
                    Some((format!("{fixed}{}", r.start), format!("{fixed}{}", r.end)))
                }
                _ => None,
            }
        }
        _ => None,
    };
    let fail = |e: opendal::Error| target.err("list", path, e);
    let mut lister = target.op.lister_with(path).recursive(true);
    if let Some((after, _)) = &bounds {
        lister = lister.start_after(after);
    }
    let mut lister = lister.await.map_err(fail)?;
    let mut out = Vec::new();
    while let Some(entry) = lister.try_next().await.map_err(fail)? {
        let key = entry.path();
        if let Some((_, stop)) = &bounds {
            if key >= stop.as_str() {
                break;
            }
        }
        if entry.metadata().mode() != EntryMode::FILE {
            continue;
        }
        let unix = match key_time(templates, key, r) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(()) => match entry.metadata().last_modified() {
                Some(t) => t.into_inner().as_second().max(0) as u64,
                None => match target.op.stat(key).await {
                    Ok(m) => m
                        .last_modified()
                        .map_or(0, |t| t.into_inner().as_second().max(0) as u64),
                    Err(_) => continue,
                },
            },
        };
        if r.contains(unix) {
            let len = entry.metadata().content_length();
            out.push(Found {
                storage: target.name.clone(),
                key: key.to_string(),
                unix,
                size: (len > 0).then_some(len),
            });
        }
    }
    Ok(out)
}

/// Size and picture dimensions of a found snapshot: a stat when the listing gave no
/// size, then a read of the first 8 KiB, where our encoder puts the SOF header.
pub async fn describe(target: &Target, f: &Found) -> (Option<u64>, Option<(u16, u16)>) {
    let size = match f.size {
        Some(s) => Some(s),
        None => target
            .op
            .stat(&f.key)
            .await
            .ok()
            .map(|m| m.content_length()),
    };
    let want = size.unwrap_or(8192).min(8192);
    if want == 0 {
        return (size, None);
    }
    let head = match target.op.read_with(&f.key).range(0..want).await {
        Ok(b) => b.to_vec(),
        Err(e) if e.kind() == ErrorKind::NotFound => return (size, None),
        Err(_) => return (size, None),
    };
    (size, image_header::dimensions(&head))
}
impl Target {
    /// Lists every key under `prefix` (recursively) and returns the highest
    /// `{Sequence}` among the keys `template` renders for this stream (0 when none).
    pub async fn highest_sequence(
        &self,
        template: &Template,
        domain: &str,
        app: &str,
        stream: &str,
    ) -> Result<u64, StorageError> {
        let prefix = template.list_prefix(domain, app, stream);
        let path = if prefix.is_empty() { "/" } else { &prefix };
        let mut lister = self
            .op
            .lister_with(path)
            .recursive(true)
            .await
            .map_err(|e| self.err("list", path, e))?;
        let mut best = 0;
        while let Some(entry) = lister
            .try_next()
            .await
            .map_err(|e| self.err("list", path, e))?
        {
            let key = entry.path();
            if let Some((_, Some(seq))) = template.match_key(key, domain, app, stream) {
                best = best.max(seq);
            }
        }
        Ok(best)
    }
}

/// On a local folder target: up to `max` keys of files under `prefix` (recursively),
/// names only, in the order of their `/`-separated segments (each folder sorted), after
/// the key `after` when given; and whether the walk reached the end. `None` for other
/// targets (the caller lists through opendal). Finds streams for retention sweeps.
pub async fn folder_keys_after(
    target: &Target,
    prefix: &str,
    after: Option<&str>,
    max: u64,
) -> Option<Result<(Vec<String>, bool), StorageError>> {
    let Listing::Folder { root, .. } = &target.listing else {
        return None;
    };
    let dir = root.join(prefix);
    let prefix = prefix.to_string();
    let after: Option<Vec<String>> = after
        .and_then(|a| a.strip_prefix(prefix.as_str()))
        .map(|rest| rest.split('/').map(str::to_owned).collect());
    let failed = {
        let (storage, path) = (target.name.clone(), dir.display().to_string());
        move |message: String| StorageError::Listing {
            storage: storage.clone(),
            path: path.clone(),
            message,
        }
    };
    let in_task = failed.clone();
    let walked = tokio::task::spawn_blocking(move || {
        let after: Option<Vec<&str>> = after
            .as_ref()
            .map(|v| v.iter().map(String::as_str).collect());
        let mut out = Vec::new();
        let complete = walk_sorted(&dir, &prefix, after.as_deref(), max, &mut out)
            .map_err(|e| in_task(e.to_string()))?;
        Ok((out, complete))
    })
    .await
    .map_err(|e| failed(format!("listing task: {e}")));
    Some(walked.and_then(|r| r))
}

/// [`folder_keys_after`]'s walk: depth first, each folder's names sorted; `after` is the
/// cursor's segments below this folder. Returns false when `max` keys were taken.
fn walk_sorted(
    dir: &Path,
    key_prefix: &str,
    after: Option<&[&str]>,
    max: u64,
    out: &mut Vec<String>,
) -> std::io::Result<bool> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    let mut entries: Vec<(String, bool)> = read
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            Some((name, e.file_type().ok()?.is_dir()))
        })
        .collect();
    entries.sort();
    for (name, is_dir) in entries {
        // Our temp folder and dot files are never snapshots.
        if name.starts_with('.') || name == FS_TMP_DIR {
            continue;
        }
        let below = match after {
            Some([first, rest @ ..]) => match name.as_str().cmp(first) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal if is_dir => Some(rest),
                // The cursor's own key.
                std::cmp::Ordering::Equal => continue,
                std::cmp::Ordering::Greater => None,
            },
            _ => None,
        };
        let key = format!("{key_prefix}{name}");
        if is_dir {
            if !walk_sorted(&dir.join(&name), &format!("{key}/"), below, max, out)? {
                return Ok(false);
            }
        } else {
            out.push(key);
            if out.len() as u64 >= max {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_of_one_snapshot_are_one_group() {
        let r = Range {
            domain: "d",
            app: "live",
            stream: "cam",
            start: 0,
            end: u64::MAX,
        };
        let t = |s: &str| {
            let ext = if s.ends_with(".webp") {
                ".webp"
            } else {
                ".jpg"
            };
            ("s".to_string(), Template::parse_ending(s, ext).unwrap())
        };
        let templates = [
            t("{AppName}/{StreamName}/{Sequence}.jpg"),
            t("{AppName}/{StreamName}/thumb/{Sequence}.webp"),
            t("{AppName}/{StreamName}/t/{UnixTimestamp}.jpg"),
        ];
        let f = |key: &str, unix| Found {
            storage: "s".into(),
            key: key.into(),
            unix,
            size: None,
        };
        // Written a second apart (modification times), still one snapshot per number.
        let found = vec![
            f("live/cam/thumb/2.webp", 11),
            f("live/cam/1.jpg", 5),
            f("live/cam/2.jpg", 10),
            f("live/cam/thumb/1.webp", 5),
            f("live/cam/t/1700000000.jpg", 1_700_000_000),
        ];
        let groups = group(found, &templates, &r);
        let keys: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.members.iter().map(|m| m.key.as_str()).collect())
            .collect();
        assert_eq!(
            keys,
            [
                vec!["live/cam/1.jpg", "live/cam/thumb/1.webp"],
                vec!["live/cam/2.jpg", "live/cam/thumb/2.webp"],
                vec!["live/cam/t/1700000000.jpg"],
            ]
        );
        assert_eq!(
            groups
                .iter()
                .map(|g| (g.unix, g.sequence))
                .collect::<Vec<_>>(),
            [(5, Some(1)), (10, Some(2)), (1_700_000_000, None)]
        );
    }

    #[test]
    fn names_are_filtered_by_their_ten_digits() {
        let r = Range {
            domain: "d",
            app: "a",
            stream: "s",
            start: 1_700_000_000,
            end: 1_700_000_010,
        };
        assert!(name_in_range("1700000000.jpg", "", &r));
        assert!(name_in_range("cam-1700000009.jpg", "cam-", &r));
        assert!(
            name_in_range("1700000005", "", &r),
            "a folder named by the time"
        );
        assert!(!name_in_range("1700000010.jpg", "", &r), "end is exclusive");
        assert!(!name_in_range("17000000051.jpg", "", &r), "eleven digits");
        assert!(!name_in_range("cam1700000005.jpg", "cam-", &r));
        assert!(!name_in_range("170000000.jpg", "", &r));
    }

    #[test]
    fn folder_listings_are_reused_only_while_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let set_old_mtime = |secs_ago: u64| {
            let t = std::time::SystemTime::now() - std::time::Duration::from_secs(secs_ago);
            std::fs::File::open(dir.path())
                .unwrap()
                .set_modified(t)
                .unwrap();
            t
        };
        std::fs::write(dir.path().join("a.jpg"), b"x").unwrap();
        let cache = DirCache::default();
        let names = |e: &crate::storage::dir_cache::Entries| {
            e.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
        };
        set_old_mtime(60);
        assert_eq!(names(&cache.read(dir.path()).unwrap().unwrap()), ["a.jpg"]);
        // A new file changes the folder's time: listed again.
        std::fs::write(dir.path().join("b.jpg"), b"x").unwrap();
        let mut now = names(&cache.read(dir.path()).unwrap().unwrap());
        now.sort();
        assert_eq!(now, ["a.jpg", "b.jpg"]);
        // Proof that the cache answers: a change hidden behind a restored time.
        set_old_mtime(30);
        cache.read(dir.path()).unwrap();
        let hidden = std::fs::File::open(dir.path())
            .unwrap()
            .metadata()
            .unwrap()
            .modified()
            .unwrap();
        std::fs::write(dir.path().join("c.jpg"), b"x").unwrap();
        std::fs::File::open(dir.path())
            .unwrap()
            .set_modified(hidden)
            .unwrap();
        assert_eq!(cache.read(dir.path()).unwrap().unwrap().len(), 2);
        assert!(cache.read(&dir.path().join("missing")).unwrap().is_none());
    }

    #[tokio::test]
    async fn fs_and_listing_scans_agree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap().to_string();
        let settings = crate::storage::settings::StorageSettings {
            name: "t".into(),
            scheme: "fs".into(),
            timeout: std::time::Duration::from_secs(5),
            retries: 0,
            options: [("root".to_string(), root.clone())].into_iter().collect(),
        };
        let target = crate::storage::build(&settings).unwrap();
        for k in [
            "live/cam1/1700000000.jpg",
            "live/cam1/1700000005.jpg",
            "live/cam1/1700000010.jpg",
            "live/cam1/x.jpg",
            "live/cam12/1700000005.jpg",
            "live/cam1/old/1700000007.jpg",
        ] {
            target
                .put_overwrite(k, bytes::Bytes::from_static(b"j"))
                .await
                .unwrap();
        }
        let tpl = Template::parse("{AppName}/{StreamName}/{UnixTimestamp}.jpg").unwrap();
        let r = Range {
            domain: "d",
            app: "live",
            stream: "cam1",
            start: 1_700_000_000,
            end: 1_700_000_010,
        };
        let keys = |mut v: Vec<Found>| {
            v.sort_by_key(|f| f.unix);
            v.into_iter().map(|f| f.key).collect::<Vec<_>>()
        };
        let want = vec!["live/cam1/1700000000.jpg", "live/cam1/1700000005.jpg"];
        assert!(matches!(target.listing, Listing::Folder { .. }));
        let fs = scan(&target, std::slice::from_ref(&tpl), &r).await.unwrap();
        assert_eq!(keys(fs), want);
        let plain = Target {
            listing: Listing::Plain,
            ..target.clone()
        };
        let listed = scan(&plain, std::slice::from_ref(&tpl), &r).await.unwrap();
        assert_eq!(keys(listed), want);
    }

    #[tokio::test]
    async fn highest_sequence_reads_back_what_was_stored() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::storage::settings::StorageSettings {
            name: "t".into(),
            scheme: "fs".into(),
            timeout: std::time::Duration::from_secs(5),
            retries: 0,
            options: [("root".to_string(), dir.path().display().to_string())].into(),
        };
        let t = crate::storage::build(&settings).unwrap();
        let tpl = Template::parse("{AppName}/{StreamName}/{Sequence}.jpg").unwrap();
        assert_eq!(tpl.list_prefix("d", "live", "cam1"), "live/cam1/");
        assert_eq!(
            t.highest_sequence(&tpl, "d", "live", "cam1").await.unwrap(),
            0
        );
        for (k, _) in [
            ("live/cam1/1.jpg", 0),
            ("live/cam1/12.jpg", 0),
            ("live/cam1/3.jpg", 0),
            ("live/cam2/99.jpg", 0),
            ("live/cam1/x.jpg", 0),
        ] {
            t.put_overwrite(k, bytes::Bytes::from_static(b"j"))
                .await
                .unwrap();
        }
        assert_eq!(
            t.highest_sequence(&tpl, "d", "live", "cam1").await.unwrap(),
            12
        );
        assert_eq!(
            t.highest_sequence(&tpl, "d", "live", "cam2").await.unwrap(),
            99
        );
    }

    #[tokio::test]
    async fn folder_keys_resume_after_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::storage::settings::StorageSettings {
            name: "t".into(),
            scheme: "fs".into(),
            timeout: std::time::Duration::from_secs(5),
            retries: 0,
            options: [("root".to_string(), dir.path().display().to_string())].into(),
        };
        let t = crate::storage::build(&settings).unwrap();
        let keys = [
            "a/b-c/1.jpg",
            "a/b/1.jpg",
            "a/b/2.jpg",
            "a/c.jpg",
            "a/d/e/3.jpg",
            "x.jpg",
        ];
        for k in keys {
            t.put_overwrite(k, bytes::Bytes::from_static(b"j"))
                .await
                .unwrap();
        }
        // Segment order: "a/b/…" before "a/b-c/…" ('b' < 'b-c').
        let all = vec![
            "a/b/1.jpg",
            "a/b/2.jpg",
            "a/b-c/1.jpg",
            "a/c.jpg",
            "a/d/e/3.jpg",
        ];
        let (got, complete) = folder_keys_after(&t, "a/", None, 100)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (got, complete),
            (all.iter().map(|s| s.to_string()).collect(), true)
        );
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (got, complete) = folder_keys_after(&t, "a/", after.as_deref(), 2)
                .await
                .unwrap()
                .unwrap();
            after = got.last().cloned();
            seen.extend(got);
            if complete {
                break;
            }
        }
        assert_eq!(seen, all);
        let plain = Target {
            listing: Listing::Plain,
            ..t.clone()
        };
        assert!(folder_keys_after(&plain, "a/", None, 2).await.is_none());
    }
}
