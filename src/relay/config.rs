//! `[[relays]]`: where each publish is pushed, per (domain, app) like snapshot rules
//! (the most specific entry wins: (domain, app) → (domain, *) → (*, app) → (*, *)).
//! The shape as written ([`RelaySpec`], shared by the config file and the API's JSON),
//! its validation into a [`Relay`] (errors name the key, `relays[1].targets[0].url`),
//! the lookup ([`RelaySet`]) and the relays in force on this node ([`RelayBook`]: the
//! config file's plus those added through the API, which live in the shared rule
//! document beside the snapshot rules: [`StoredRelay`]). A publish takes its relay
//! once, at its start.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::url::{self, Signing};
use crate::error::{invalid, Invalid};
use crate::names::{self, ANY};

fn any() -> String {
    ANY.to_owned()
}

fn default_validity() -> u64 {
    1800
}

/// One `[[relays]]` entry as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySpec {
    /// A host name, or "*" for every domain. Default "*".
    #[serde(default = "any")]
    pub domain: String,
    /// An app name, or "*" for every app. Default "*".
    #[serde(default = "any")]
    pub app: String,
    /// Append the publish's query to each target that does not say otherwise (minus an
    /// `auth_key` livesnap checked itself: an origin's own passes through, so a tap in
    /// front of a signed ingest changes nothing). Default true.
    #[serde(default = "yes")]
    pub pass_query: bool,
    /// Where to push: URL templates or tables.
    pub targets: Vec<TargetSpec>,
}

/// A target as written: a URL template, or a table with options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetSpec {
    Url(String),
    Table(TargetTable),
}

/// A target with options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetTable {
    /// `rtmp://host[:port]/app/{StreamName}` or `rtmps://…`, with `{Domain}`,
    /// `{AppName}`, `{StreamName}`.
    pub url: String,
    /// Overrides the entry's `pass_query` for this target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_query: Option<bool>,
    /// Sign the URL with this key (Alibaba type A `auth_key`), per connection attempt.
    /// Kept in the shared rule document; never shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_key: Option<String>,
    /// Seconds a signature is valid (its timestamp is now + this). Default 1800.
    #[serde(default = "default_validity")]
    pub sign_validity_secs: u64,
    /// PEM file of the CA certificates to trust for this `rtmps://` target instead of
    /// the system's trust store (a private origin's CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<String>,
}

impl TargetSpec {
    pub fn url(&self) -> &str {
        match self {
            TargetSpec::Url(u) => u,
            TargetSpec::Table(t) => &t.url,
        }
    }
}

/// A validated target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL template (checked by `url::check_template`).
    pub url: String,
    pub pass_query: bool,
    pub sign: Option<Signing>,
    pub tls_ca_file: Option<PathBuf>,
}

/// A validated relay entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    pub spec: RelaySpec,
    pub targets: Vec<Target>,
}

/// Targets per entry at most.
pub const MAX_TARGETS: usize = 16;

impl RelaySpec {
    /// Validates the entry; `at` prefixes the keys of errors (`relays[1]`).
    pub fn validate(&self, at: &str) -> Result<Relay, Invalid> {
        let key = |k: &str| format!("{at}.{k}");
        names::check_scope(&self.domain, &self.app, at)?;
        if self.targets.is_empty() || self.targets.len() > MAX_TARGETS {
            return Err(invalid(
                key("targets"),
                format!(
                    "must list 1..={MAX_TARGETS} targets, got {}",
                    self.targets.len()
                ),
            ));
        }
        let mut targets = Vec::new();
        for (i, t) in self.targets.iter().enumerate() {
            let tkey = |k: &str| key(&format!("targets[{i}].{k}"));
            url::check_template(t.url()).map_err(|e| invalid(tkey("url"), e))?;
            if targets.iter().any(|o: &Target| o.url == t.url()) {
                return Err(invalid(
                    tkey("url"),
                    format!("{:?} is listed twice", t.url()),
                ));
            }
            let target = match t {
                TargetSpec::Url(u) => Target {
                    url: u.clone(),
                    pass_query: self.pass_query,
                    sign: None,
                    tls_ca_file: None,
                },
                TargetSpec::Table(t) => {
                    if !(60..=7 * 86400).contains(&t.sign_validity_secs) {
                        return Err(invalid(
                            tkey("sign_validity_secs"),
                            format!("must be 60..=604800, got {}", t.sign_validity_secs),
                        ));
                    }
                    if t.sign_key.as_deref().is_some_and(str::is_empty) {
                        return Err(invalid(tkey("sign_key"), "must not be empty"));
                    }
                    if t.tls_ca_file.is_some() && !t.url.starts_with("rtmps://") {
                        return Err(invalid(
                            tkey("tls_ca_file"),
                            "only applies to rtmps:// targets",
                        ));
                    }
                    if let Some(f) = &t.tls_ca_file {
                        super::tls::read_roots(std::path::Path::new(f))
                            .map_err(|e| invalid(tkey("tls_ca_file"), e))?;
                    }
                    Target {
                        url: t.url.clone(),
                        pass_query: t.pass_query.unwrap_or(self.pass_query),
                        sign: t.sign_key.as_ref().map(|k| Signing {
                            key: k.clone(),
                            validity_secs: t.sign_validity_secs,
                        }),
                        tls_ca_file: t.tls_ca_file.as_ref().map(PathBuf::from),
                    }
                }
            };
            targets.push(target);
        }
        Ok(Relay {
            spec: self.clone(),
            targets,
        })
    }
}

/// Validates the config file's `[[relays]]`: each entry, and (domain, app) unique.
pub fn validate_all(specs: &[RelaySpec]) -> Result<Vec<Relay>, Invalid> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let at = format!("relays[{i}]");
        let r = s.validate(&at)?;
        if !seen.insert((s.domain.clone(), s.app.clone())) {
            return Err(invalid(
                format!("{at}.app"),
                format!(
                    "({:?}, {:?}) has more than one [[relays]] entry",
                    s.domain, s.app
                ),
            ));
        }
        out.push(r);
    }
    Ok(out)
}

/// Relays keyed by (domain, app), looked up like snapshot rules.
pub type RelaySet = crate::names::ByScope<Relay>;

impl RelaySet {
    pub fn new(relays: impl IntoIterator<Item = Arc<Relay>>) -> RelaySet {
        RelaySet::from_scoped(
            relays
                .into_iter()
                .map(|r| (r.spec.domain.clone(), r.spec.app.clone(), r)),
        )
    }
}

/// A relay config added through the API, as the shared rule document keeps it: the
/// config as written, plus its id and creation time (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRelay {
    pub id: u64,
    pub create_time: u64,
    #[serde(flatten)]
    pub spec: RelaySpec,
}

/// A stored relay config in force on this node.
#[derive(Debug, Clone)]
pub struct ApiRelay {
    pub id: u64,
    pub relay: Arc<Relay>,
    pub create_time: u64,
}

#[derive(Debug, Default)]
struct BookState {
    /// The config file's relays, in order.
    config: Arc<[Arc<Relay>]>,
    /// The shared document's relays as last given, kept to be checked again against a
    /// reloaded config file.
    stored: Vec<StoredRelay>,
    api: Vec<ApiRelay>,
    current: Arc<RelaySet>,
}

/// The relays in force on this node: the config file's (read-only through the API,
/// replaced by a config reload) and those of the shared rule document (added through
/// the API).
#[derive(Debug, Default)]
pub struct RelayBook {
    state: RwLock<BookState>,
}

impl RelayBook {
    pub fn new(config: Vec<Relay>) -> RelayBook {
        let book = RelayBook::default();
        book.set_config(config);
        book
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BookState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The relay for a publish starting now.
    pub fn lookup(&self, domain: &str, app: &str) -> Option<Arc<Relay>> {
        self.read().current.lookup(domain, app)
    }

    /// The config file's relays, in order.
    pub fn config(&self) -> Arc<[Arc<Relay>]> {
        self.read().config.clone()
    }

    /// Whether the config file has a relay for exactly (domain, app).
    pub fn config_has(&self, domain: &str, app: &str) -> bool {
        has(&self.read().config, domain, app)
    }

    /// The stored relays in force, in document order.
    pub fn api(&self) -> Vec<ApiRelay> {
        self.read().api.clone()
    }

    /// Puts the shared document's relays in force (beside the config file's); returns
    /// why any was left out (invalid here, or shadowing a config relay or an earlier one).
    pub fn set_stored(&self, stored: &[StoredRelay]) -> Vec<String> {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        let config = st.config.clone();
        let (next, skipped) = BookState::build(config, stored.to_vec());
        *st = next;
        skipped
    }

    /// Puts a (reloaded) config file's relays in force, from the next publish; the
    /// stored relays are checked against them again. Returns why any stored relay was
    /// left out.
    pub fn set_config(&self, config: Vec<Relay>) -> Vec<String> {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        let stored = std::mem::take(&mut st.stored);
        let (next, skipped) = BookState::build(config.into_iter().map(Arc::new).collect(), stored);
        *st = next;
        skipped
    }
}

fn has(config: &[Arc<Relay>], domain: &str, app: &str) -> bool {
    config
        .iter()
        .any(|r| r.spec.domain == domain && r.spec.app == app)
}

impl BookState {
    fn build(config: Arc<[Arc<Relay>]>, stored: Vec<StoredRelay>) -> (BookState, Vec<String>) {
        let mut skipped = Vec::new();
        let mut api: Vec<ApiRelay> = Vec::new();
        for (i, s) in stored.iter().enumerate() {
            let (d, a) = (&s.spec.domain, &s.spec.app);
            if has(&config, d, a)
                || api
                    .iter()
                    .any(|r| &r.relay.spec.domain == d && &r.relay.spec.app == a)
            {
                skipped.push(format!(
                    "relay config domain {d:?} app {a:?}: the config file or an earlier stored relay config has the same domain and app"
                ));
                continue;
            }
            match s.spec.validate(&format!("relays[{i}]")) {
                Ok(r) => api.push(ApiRelay {
                    id: s.id,
                    relay: Arc::new(r),
                    create_time: s.create_time,
                }),
                Err(e) => skipped.push(format!("relay config domain {d:?} app {a:?}: {e}")),
            }
        }
        let current = Arc::new(RelaySet::new(
            config
                .iter()
                .cloned()
                .chain(api.iter().map(|a| a.relay.clone())),
        ));
        let state = BookState {
            config,
            stored,
            api,
            current,
        };
        (state, skipped)
    }
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(domain: &str, app: &str, url: &str) -> RelaySpec {
        RelaySpec {
            domain: domain.into(),
            app: app.into(),
            pass_query: false,
            targets: vec![TargetSpec::Url(url.into())],
        }
    }

    #[test]
    fn toml_forms_parse_and_validate() {
        #[derive(Deserialize)]
        struct F {
            relays: Vec<RelaySpec>,
        }
        let f: F = toml::from_str(
            r#"
[[relays]]
app = "live"
pass_query = true
targets = [
  "rtmp://origin.example.com/{AppName}/{StreamName}",
  { url = "rtmp://push.example.com/{AppName}/{StreamName}", sign_key = "k", sign_validity_secs = 600 },
  { url = "rtmps://live-api-s.facebook.com:443/rtmp/{StreamName}", pass_query = false },
]
"#,
        )
        .unwrap();
        let relays = validate_all(&f.relays).unwrap();
        let r = &relays[0];
        let default: RelaySpec =
            toml::from_str(r#"targets = ["rtmp://o/{AppName}/{StreamName}"]"#).unwrap();
        assert!(default.pass_query, "the publish's query passes by default");
        assert_eq!((r.spec.domain.as_str(), r.spec.app.as_str()), ("*", "live"));
        assert!(r.targets[0].pass_query && r.targets[1].pass_query);
        assert!(!r.targets[2].pass_query);
        assert_eq!(
            r.targets[1].sign,
            Some(Signing {
                key: "k".into(),
                validity_secs: 600
            })
        );
    }

    #[test]
    fn the_commented_example_in_config_example_toml_is_valid() {
        #[derive(Deserialize)]
        struct F {
            relays: Vec<RelaySpec>,
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let start = text.find("# [[relays]]").expect("a [[relays]] example");
        let block: Vec<&str> = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches('#').trim_start())
            .collect();
        let f: F = toml::from_str(&block.join("\n")).unwrap();
        let relays = validate_all(&f.relays).unwrap();
        assert_eq!(relays[0].targets.len(), 3);
        assert!(relays[0].targets[1].sign.is_some());
    }

    #[test]
    fn errors_name_the_key() {
        let mut s = spec("*", "*", "rtmp://o/live/{StreamName}");
        s.targets.push(TargetSpec::Url("rtmp://o/{Stream}".into()));
        let e = validate_all(&[spec("*", "live", "rtmp://o/a/b"), s]).unwrap_err();
        assert_eq!(e.key, "relays[1].targets[1].url");
        let e = validate_all(&[
            spec("*", "*", "rtmp://o/a/b"),
            spec("*", "*", "rtmp://p/a/b"),
        ])
        .unwrap_err();
        assert_eq!(e.key, "relays[1].app");
        let e = spec("A.com", "*", "rtmp://o/a/b")
            .validate("relays[0]")
            .unwrap_err();
        assert_eq!(e.key, "relays[0].domain");
        let mut s = spec("*", "*", "rtmp://o/a/b");
        s.targets = vec![TargetSpec::Table(TargetTable {
            url: "rtmp://o/a/b".into(),
            pass_query: None,
            sign_key: Some("k".into()),
            sign_validity_secs: 5,
            tls_ca_file: None,
        })];
        let e = s.validate("relays[0]").unwrap_err();
        assert_eq!(e.key, "relays[0].targets[0].sign_validity_secs");
        s.targets = vec![];
        assert_eq!(
            s.validate("relays[0]").unwrap_err().key,
            "relays[0].targets"
        );
    }

    #[test]
    fn most_specific_wins_and_stored_relays_join_without_shadowing_the_config() {
        let v = |s: RelaySpec| s.validate("r").unwrap();
        let book = RelayBook::new(vec![
            v(spec("*", "*", "rtmp://any/a/{StreamName}")),
            v(spec("a.com", "*", "rtmp://dom/a/{StreamName}")),
        ]);
        let url = |d, a| book.lookup(d, a).map(|r| r.targets[0].url.clone());
        assert_eq!(
            url("b.com", "live").as_deref(),
            Some("rtmp://any/a/{StreamName}")
        );
        assert_eq!(
            url("a.com", "live").as_deref(),
            Some("rtmp://dom/a/{StreamName}")
        );
        let stored = |id, s: RelaySpec| StoredRelay {
            id,
            create_time: 1,
            spec: s,
        };
        let skipped = book.set_stored(&[
            stored(1, spec("*", "live", "rtmp://app/a/{StreamName}")),
            stored(2, spec("*", "live", "rtmp://dup/a/{StreamName}")),
            stored(3, spec("*", "*", "rtmp://shadow/a/{StreamName}")),
            stored(4, spec("*", "bad", "ftp://x/a/b")),
        ]);
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(
            skipped[2].contains("relays[3].targets[0].url"),
            "{skipped:?}"
        );
        assert_eq!(
            url("b.com", "live").as_deref(),
            Some("rtmp://app/a/{StreamName}")
        );
        assert_eq!(
            url("a.com", "live").as_deref(),
            Some("rtmp://dom/a/{StreamName}")
        );
        assert_eq!(book.api().iter().map(|a| a.id).collect::<Vec<_>>(), [1]);
        book.set_stored(&[]);
        assert_eq!(
            url("b.com", "live").as_deref(),
            Some("rtmp://any/a/{StreamName}")
        );
    }

    #[test]
    fn a_reloaded_config_checks_the_stored_relays_again() {
        let v = |s: RelaySpec| s.validate("r").unwrap();
        let book = RelayBook::new(vec![v(spec("*", "*", "rtmp://any/a/{StreamName}"))]);
        let stored = |id, s: RelaySpec| StoredRelay {
            id,
            create_time: 1,
            spec: s,
        };
        let skipped = book.set_stored(&[
            stored(1, spec("*", "live", "rtmp://app/a/{StreamName}")),
            stored(2, spec("*", "tv", "rtmp://tv/a/{StreamName}")),
        ]);
        assert!(skipped.is_empty(), "{skipped:?}");
        let url = |d, a| book.lookup(d, a).map(|r| r.targets[0].url.clone());
        // The new file takes (*, live) itself and drops (*, *).
        let skipped = book.set_config(vec![v(spec("*", "live", "rtmp://file/a/{StreamName}"))]);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].contains("\"live\""), "{skipped:?}");
        assert_eq!(
            url("d", "live").as_deref(),
            Some("rtmp://file/a/{StreamName}")
        );
        assert_eq!(url("d", "tv").as_deref(), Some("rtmp://tv/a/{StreamName}"));
        assert_eq!(url("d", "radio"), None);
        assert_eq!(book.api().iter().map(|a| a.id).collect::<Vec<_>>(), [2]);
        assert!(book.config_has("*", "live") && !book.config_has("*", "*"));
        // Without it the stored relay is in force again.
        assert!(book.set_config(Vec::new()).is_empty());
        assert_eq!(
            url("d", "live").as_deref(),
            Some("rtmp://app/a/{StreamName}")
        );
        assert_eq!(book.config().len(), 0);
    }

    #[test]
    fn stored_relays_keep_their_signing_key_in_the_document() {
        let json = r#"{"id": 3, "create_time": 5, "app": "live",
            "targets": [{"url": "rtmp://o/a/{StreamName}", "sign_key": "k"}]}"#;
        let s: StoredRelay = serde_json::from_str(json).unwrap();
        assert_eq!((s.id, s.spec.domain.as_str()), (3, "*"));
        let back = serde_json::to_string(&s).unwrap();
        assert!(back.contains("\"sign_key\":\"k\""), "{back}");
        assert_eq!(serde_json::from_str::<StoredRelay>(&back).unwrap(), s);
    }
}
