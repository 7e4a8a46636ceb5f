//! What retention keeps, without I/O: the `[retention]` settings, a rule's window
//! ([`Retain`]), which of a stream's sequence objects fall outside it ([`doomed`]), the
//! claim key that lets one node sweep a stream per period, and reading a stream's names
//! back from a key its template rendered (to find streams in storage after a restart).
//!
//! Imports nothing that does I/O, so `config` can own [`RetentionConfig`] without a cycle.

use serde::Deserialize;
use sha2::Digest;

use crate::error::{invalid, Invalid};
use crate::names;
use crate::storage::template::{Part, Template, Var, APP_SEPARATOR};

/// `[retention]`: how often and how much the sweeper works.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Whether this node runs the sweeper. Default true; every node of a fleet may run
    /// it (one sweep per stream per period, whichever node claims it first).
    pub enabled: bool,
    /// Seconds between sweeps, and the claim period (5..=86400). Default 600.
    pub sweep_secs: u64,
    /// Objects one pass deletes at most (1..=1000000); the rest go in later passes.
    /// Default 10000.
    pub max_deletes_per_pass: u64,
    /// Streams one pass sweeps at most (1..=100000). Default 1000.
    pub max_streams_per_pass: u64,
    /// Keys one pass lists at most to find streams in storage, per rule (100..=10000000);
    /// the next pass goes on from there. Default 100000.
    pub max_listed_per_pass: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            enabled: true,
            sweep_secs: 600,
            max_deletes_per_pass: 10_000,
            max_streams_per_pass: 1000,
            max_listed_per_pass: 100_000,
        }
    }
}

impl RetentionConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        for (key, v, range) in [
            ("retention.sweep_secs", self.sweep_secs, 5..=86_400),
            (
                "retention.max_deletes_per_pass",
                self.max_deletes_per_pass,
                1..=1_000_000,
            ),
            (
                "retention.max_streams_per_pass",
                self.max_streams_per_pass,
                1..=100_000,
            ),
            (
                "retention.max_listed_per_pass",
                self.max_listed_per_pass,
                100..=10_000_000,
            ),
        ] {
            if !range.contains(&v) {
                return Err(invalid(
                    key,
                    format!("must be {}..={}, got {v}", range.start(), range.end()),
                ));
            }
        }
        Ok(())
    }
}

/// A rule's retention window: keep objects younger than `secs`, and the newest `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retain {
    pub secs: Option<u64>,
    pub count: Option<u64>,
}

impl Retain {
    /// `None` when the rule keeps everything.
    pub fn of(secs: Option<u64>, count: Option<u64>) -> Option<Retain> {
        (secs.is_some() || count.is_some()).then_some(Retain { secs, count })
    }

    /// The window that keeps what either keeps (two rules judging one stream's keys).
    pub fn keep_more(self, other: Retain) -> Retain {
        let wider = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.max(y)),
            _ => None,
        };
        Retain {
            secs: wider(self.secs, other.secs),
            count: wider(self.count, other.count),
        }
    }
}

/// Why an object goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Older than `retain_secs`.
    Age,
    /// Beyond the newest `retain_count`.
    Count,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Age => "age",
            Reason::Count => "count",
        }
    }
}

/// One stored sequence object of a stream, as judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub key: String,
    /// Its time, as the catalog knows it (`{UnixTimestamp}`, else modification time).
    pub unix: u64,
    /// Its `{Sequence}`, when the template has one.
    pub seq: Option<u64>,
}

/// The items outside the window at `now`, oldest first, with why. The newest item (by
/// time, then sequence) and the one with the highest `{Sequence}` always stay, so that
/// `{Sequence}` continues after them.
pub fn doomed(mut items: Vec<Item>, retain: Retain, now: u64) -> Vec<(Item, Reason)> {
    items.sort_by(|a, b| (b.unix, b.seq, &b.key).cmp(&(a.unix, a.seq, &a.key)));
    let highest_seq = items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| Some((it.seq?, i)))
        .max()
        .map(|(_, i)| i);
    let cutoff = retain.secs.map(|s| now.saturating_sub(s));
    let mut out = Vec::new();
    for (i, it) in items.into_iter().enumerate() {
        if i == 0 || Some(i) == highest_seq {
            continue;
        }
        let reason = if cutoff.is_some_and(|c| it.unix < c) {
            Reason::Age
        } else if retain.count.is_some_and(|c| i as u64 >= c) {
            Reason::Count
        } else {
            continue;
        };
        out.push((it, reason));
    }
    out.reverse();
    out
}

/// Where sweep claims live; inside livesnap's own folder, which no template renders.
pub const CLAIM_FOLDER: &str = "_livesnap/sweep/";

/// The key set of one stream under one template on one storage: the values the
/// template renders (a variable it lacks is left out, as it does not tell keys apart).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    pub storage: String,
    pub template: String,
    pub domain: String,
    pub app: String,
    pub stream: String,
}

impl Scope {
    pub fn new(storage: &str, template: &Template, domain: &str, app: &str, stream: &str) -> Scope {
        let kept = |v: Var, s: &str| {
            if template.has_var(v) {
                s.to_string()
            } else {
                String::new()
            }
        };
        Scope {
            storage: storage.to_string(),
            template: template.as_str().to_string(),
            domain: kept(Var::Domain, domain),
            app: kept(Var::AppName, app),
            stream: stream.to_string(),
        }
    }

    /// 32 hex digits of SHA-256 over the scope's parts.
    pub fn hash(&self) -> String {
        let mut h = sha2::Sha256::new();
        for part in [
            &self.storage,
            &self.template,
            &self.domain,
            &self.app,
            &self.stream,
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        crate::util::hex(&h.finalize()[..16])
    }

    /// The create-only claim of this scope for period `slot` (one folder for all claims,
    /// so that deleting them leaves no empty folder behind on fs).
    pub fn claim_key(&self, slot: u64) -> String {
        format!("{CLAIM_FOLDER}{}-{slot}", self.hash())
    }
}

/// The part of keys that a rule's template renders the same for every stream of the
/// rule, up to its last `/`: the folder to list to find the rule's streams.
pub fn discovery_prefix(template: &Template, domain: &str, app: &str) -> String {
    let mut out = String::new();
    for p in template.parts() {
        match p {
            Part::Lit(s) => out.push_str(s),
            Part::Var(Var::Domain) if domain != names::ANY => out.push_str(domain),
            Part::Var(Var::AppName) if app != names::ANY => {
                out.push_str(&crate::storage::template::render_app(app))
            }
            Part::Var(_) => break,
        }
    }
    match out.rfind('/') {
        Some(i) => out[..=i].to_string(),
        None => String::new(),
    }
}

/// The (domain, app, stream) a rule's template rendered `key` for, when it did: a
/// variable the template lacks takes the rule's value (`*` for a domain it does not
/// name). Names read back are validated as a publish's would be.
pub fn names_of(
    template: &Template,
    key: &str,
    rule_domain: &str,
    rule_app: &str,
) -> Option<(String, String, String)> {
    let mut found: [Option<String>; 3] = [None, None, None];
    if !read_names(template.parts(), key, &mut found) {
        return None;
    }
    let [d, a, s] = found;
    let domain = match d {
        Some(d) => names::normalize_domain(&d).ok().filter(|n| *n == d)?,
        None => rule_domain.to_string(),
    };
    let app = match a {
        Some(a) => a.replace(APP_SEPARATOR, "/"),
        None => rule_app.to_string(),
    };
    let stream = s?;
    if app != names::ANY {
        names::validate_app(&app).ok()?;
    }
    names::validate_stream(&stream).ok()?;
    let fits = |rule: &str, v: &str| rule == names::ANY || rule == v;
    if !fits(rule_domain, &domain) || !fits(rule_app, &app) {
        return None;
    }
    // The template must render exactly this key for these names.
    template.match_key(key, &domain, &app, &stream)?;
    Some((domain, app, stream))
}

/// Backtracking match of `parts` against `key`, capturing the name variables.
fn read_names(parts: &[Part], key: &str, found: &mut [Option<String>; 3]) -> bool {
    let Some((p, rest)) = parts.split_first() else {
        return key.is_empty();
    };
    match p {
        Part::Lit(s) => key
            .strip_prefix(s.as_str())
            .is_some_and(|k| read_names(rest, k, found)),
        Part::Var(v) => {
            let slot = match v {
                Var::Domain => Some(0),
                Var::AppName => Some(1),
                Var::StreamName => Some(2),
                _ => None,
            };
            let run = key
                .bytes()
                .take_while(|b| match slot {
                    Some(_) => *b != b'/',
                    None => b.is_ascii_digit(),
                })
                .count();
            for n in (1..=run).rev() {
                if !key.is_char_boundary(n) {
                    continue;
                }
                let (v, k) = key.split_at(n);
                if let Some(i) = slot {
                    if found[i].as_deref().is_some_and(|prev| prev != v) {
                        continue;
                    }
                    let before = found[i].replace(v.to_string());
                    if read_names(rest, k, found) {
                        return true;
                    }
                    found[i] = before;
                } else if read_names(rest, k, found) {
                    return true;
                }
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(v: &[(u64, Option<u64>)]) -> Vec<Item> {
        v.iter()
            .map(|&(unix, seq)| Item {
                key: format!("k{unix}-{seq:?}"),
                unix,
                seq,
            })
            .collect()
    }

    fn times(d: &[(Item, Reason)]) -> Vec<(u64, Reason)> {
        d.iter().map(|(i, r)| (i.unix, *r)).collect()
    }

    #[test]
    fn age_and_count_windows_keep_the_newest() {
        let all = items(&[(100, None), (200, None), (300, None), (400, None)]);
        let age = Retain::of(Some(150), None).unwrap();
        assert_eq!(
            times(&doomed(all.clone(), age, 400)),
            [(100, Reason::Age), (200, Reason::Age)]
        );
        let count = Retain::of(None, Some(3)).unwrap();
        assert_eq!(
            times(&doomed(all.clone(), count, 400)),
            [(100, Reason::Count)]
        );
        let both = Retain::of(Some(250), Some(1)).unwrap();
        assert_eq!(
            times(&doomed(all.clone(), both, 400)),
            [
                (100, Reason::Age),
                (200, Reason::Count),
                (300, Reason::Count)
            ]
        );
        // Everything is old: the newest still stays.
        assert_eq!(doomed(all, age, 10_000).len(), 3);
    }

    #[test]
    fn the_highest_sequence_stays_even_when_not_the_newest_in_time() {
        // Modification times can tie or go backwards (copies, clock steps).
        let all = items(&[
            (500, Some(7)),
            (500, Some(9)),
            (600, Some(3)),
            (10, Some(8)),
        ]);
        let d = doomed(all, Retain::of(None, Some(1)).unwrap(), 600);
        let seqs: Vec<_> = d.iter().map(|(i, _)| i.seq).collect();
        assert_eq!(
            seqs,
            [Some(8), Some(7)],
            "kept: seq 3 (newest) and 9 (highest)"
        );
    }

    #[test]
    fn windows_merge_to_keep_more() {
        let a = Retain::of(Some(60), Some(5)).unwrap();
        let b = Retain::of(Some(120), None).unwrap();
        assert_eq!(
            a.keep_more(b),
            Retain {
                secs: Some(120),
                count: None
            }
        );
    }

    #[test]
    fn names_are_read_back_from_keys() {
        let t = Template::parse("{Domain}/{AppName}/{StreamName}/{UnixTimestamp}.jpg").unwrap();
        assert_eq!(discovery_prefix(&t, "*", "*"), "");
        assert_eq!(discovery_prefix(&t, "a.com", "live"), "a.com/live/");
        assert_eq!(
            names_of(&t, "a.com/live~x/cam1/1700000000.jpg", "*", "*"),
            Some(("a.com".into(), "live/x".into(), "cam1".into()))
        );
        assert_eq!(
            names_of(&t, "a.com/live/cam1/1700000000.jpg", "*", "vod"),
            None
        );
        assert_eq!(names_of(&t, "a.com/live/cam1/latest.jpg", "*", "*"), None);
        assert_eq!(names_of(&t, "_livesnap/rules.json", "*", "*"), None);
        let t = Template::parse("snaps/{StreamName}-{Sequence}.jpg").unwrap();
        assert_eq!(discovery_prefix(&t, "*", "live"), "snaps/");
        assert_eq!(
            names_of(&t, "snaps/cam-1-12.jpg", "*", "live"),
            Some(("*".into(), "live".into(), "cam-1".into()))
        );
    }

    #[test]
    fn claims_are_per_scope_and_slot() {
        let t = Template::parse("{AppName}/{StreamName}/{Sequence}.jpg").unwrap();
        let a = Scope::new("s", &t, "a.com", "live", "cam1");
        let b = Scope::new("s", &t, "b.com", "live", "cam1");
        assert_eq!(a, b, "the template does not render the domain: one key set");
        let c = Scope::new("s", &t, "a.com", "live", "cam2");
        assert_ne!(a.hash(), c.hash());
        assert_eq!(a.hash().len(), 32);
        assert!(a.claim_key(7).starts_with(CLAIM_FOLDER));
        assert!(a.claim_key(7).ends_with(&format!("{}-7", a.hash())));
    }

    #[test]
    fn settings_are_checked() {
        assert!(RetentionConfig::default().validate().is_ok());
        let bad = RetentionConfig {
            sweep_secs: 1,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "retention.sweep_secs");
    }
}
