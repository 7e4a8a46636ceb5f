//! `[[relays]]`: where each publish is pushed, per (domain, app) like snapshot rules
//! (the most specific entry wins: (domain, app) → (domain, *) → (*, app) → (*, *)).
//! The shape as written ([`RelaySpec`], shared by the config file and the API's JSON),
//! its validation into a [`Relay`] (errors name the key, `relays[1].targets[0].url`),
//! the lookup ([`RelaySet`]) and the relays in force on this node ([`RelayBook`]: the
//! config file's plus those added through the API, kept in this node's memory). A
//! publish takes its relay once, at its start.

use std::collections::{BTreeMap, HashMap};
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
    /// Append the publish's query (minus `auth_key`) to each target that does not say
    /// otherwise. Default false.
    #[serde(default)]
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
    #[serde(default)]
    pub pass_query: Option<bool>,
    /// Sign the URL with this key (Alibaba type A `auth_key`), per connection attempt.
    #[serde(default, skip_serializing)]
    pub sign_key: Option<String>,
    /// Seconds a signature is valid (its timestamp is now + this). Default 1800.
    #[serde(default = "default_validity")]
    pub sign_validity_secs: u64,
    /// PEM file of the CA certificates to trust for this `rtmps://` target instead of
    /// the system's trust store (a private origin's CA).
    #[serde(default)]
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
        if self.domain != ANY {
            let d = names::normalize_domain(&self.domain)
                .map_err(|e| invalid(key("domain"), format!("{:?} {e}", self.domain)))?;
            if d != self.domain {
                return Err(invalid(
                    key("domain"),
                    format!(
                        "{:?} must be written as {d:?} (lower case, no port)",
                        self.domain
                    ),
                ));
            }
        }
        if self.app != ANY {
            names::validate_app(&self.app)
                .map_err(|e| invalid(key("app"), format!("{:?} {e}", self.app)))?;
        }
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

/// Relays keyed by (domain, app).
#[derive(Debug, Default, Clone)]
pub struct RelaySet {
    by_key: HashMap<(String, String), Arc<Relay>>,
}

impl RelaySet {
    pub fn new(relays: impl IntoIterator<Item = Arc<Relay>>) -> RelaySet {
        RelaySet {
            by_key: relays
                .into_iter()
                .map(|r| ((r.spec.domain.clone(), r.spec.app.clone()), r))
                .collect(),
        }
    }

    /// The relay of a publish on (domain, app), most specific first.
    pub fn lookup(&self, domain: &str, app: &str) -> Option<Arc<Relay>> {
        [(domain, app), (domain, ANY), (ANY, app), (ANY, ANY)]
            .into_iter()
            .find_map(|(d, a)| self.by_key.get(&(d.to_string(), a.to_string())))
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// A relay added through the API (kept in this node's memory only).
#[derive(Debug, Clone)]
pub struct ApiRelay {
    pub id: u64,
    pub relay: Arc<Relay>,
    pub create_time: u64,
}

/// Why the API could not add or remove a relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("({0:?}, {1:?}) is set in the config file, which the API cannot change")]
    ReadOnly(String, String),
    #[error("({0:?}, {1:?}) already has a relay config")]
    Exists(String, String),
}

#[derive(Debug, Default)]
struct BookState {
    api: BTreeMap<u64, ApiRelay>,
    next_id: u64,
    current: Arc<RelaySet>,
}

/// The relays in force on this node: the config file's (read-only) and the API's.
#[derive(Debug, Default)]
pub struct RelayBook {
    config: Vec<Arc<Relay>>,
    state: RwLock<BookState>,
}

impl RelayBook {
    pub fn new(config: Vec<Relay>) -> RelayBook {
        let config: Vec<Arc<Relay>> = config.into_iter().map(Arc::new).collect();
        let current = Arc::new(RelaySet::new(config.iter().cloned()));
        RelayBook {
            config,
            state: RwLock::new(BookState {
                api: BTreeMap::new(),
                next_id: 1,
                current,
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BookState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BookState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The relay for a publish starting now.
    pub fn lookup(&self, domain: &str, app: &str) -> Option<Arc<Relay>> {
        self.read().current.lookup(domain, app)
    }

    /// The config file's relays, in order.
    pub fn config(&self) -> &[Arc<Relay>] {
        &self.config
    }

    /// The API's relays, by id.
    pub fn api(&self) -> Vec<ApiRelay> {
        self.read().api.values().cloned().collect()
    }

    fn rebuild(&self, st: &mut BookState) {
        st.current = Arc::new(RelaySet::new(
            self.config
                .iter()
                .cloned()
                .chain(st.api.values().map(|a| a.relay.clone())),
        ));
    }

    /// Adds a relay (validated by the caller); its (domain, app) must be new.
    pub fn add(&self, relay: Relay, now: u64) -> Result<ApiRelay, BookError> {
        let (d, a) = (relay.spec.domain.clone(), relay.spec.app.clone());
        if self
            .config
            .iter()
            .any(|r| r.spec.domain == d && r.spec.app == a)
        {
            return Err(BookError::ReadOnly(d, a));
        }
        let mut st = self.write();
        if st
            .api
            .values()
            .any(|r| r.relay.spec.domain == d && r.relay.spec.app == a)
        {
            return Err(BookError::Exists(d, a));
        }
        let id = st.next_id;
        st.next_id += 1;
        let added = ApiRelay {
            id,
            relay: Arc::new(relay),
            create_time: now,
        };
        st.api.insert(id, added.clone());
        self.rebuild(&mut st);
        Ok(added)
    }

    /// Removes the API relay `id`; false when there is none.
    pub fn remove_id(&self, id: u64) -> bool {
        let mut st = self.write();
        let found = st.api.remove(&id).is_some();
        self.rebuild(&mut st);
        found
    }

    /// Removes the API relay of (domain, app); a config relay is read-only.
    pub fn remove_key(&self, domain: &str, app: &str) -> Result<bool, BookError> {
        if self
            .config
            .iter()
            .any(|r| r.spec.domain == domain && r.spec.app == app)
        {
            return Err(BookError::ReadOnly(domain.into(), app.into()));
        }
        let mut st = self.write();
        let id = st
            .api
            .values()
            .find(|r| r.relay.spec.domain == domain && r.relay.spec.app == app)
            .map(|r| r.id);
        let found = id.is_some_and(|id| st.api.remove(&id).is_some());
        self.rebuild(&mut st);
        Ok(found)
    }
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
        // The signing key never goes out with the spec.
        let json = serde_json::to_string(&r.spec).unwrap();
        assert!(!json.contains("sign_key"), "{json}");
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
    fn most_specific_wins_and_api_relays_join_until_removed() {
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
        let added = book
            .add(v(spec("*", "live", "rtmp://app/a/{StreamName}")), 1)
            .unwrap();
        assert_eq!(
            url("b.com", "live").as_deref(),
            Some("rtmp://app/a/{StreamName}")
        );
        assert_eq!(
            url("a.com", "live").as_deref(),
            Some("rtmp://dom/a/{StreamName}")
        );
        assert!(matches!(
            book.add(v(spec("*", "live", "rtmp://x/a/b")), 2),
            Err(BookError::Exists(..))
        ));
        assert!(matches!(
            book.add(v(spec("*", "*", "rtmp://x/a/b")), 2),
            Err(BookError::ReadOnly(..))
        ));
        assert!(matches!(
            book.remove_key("*", "*"),
            Err(BookError::ReadOnly(..))
        ));
        assert!(book.remove_id(added.id));
        assert!(!book.remove_id(added.id));
        assert_eq!(
            url("b.com", "live").as_deref(),
            Some("rtmp://any/a/{StreamName}")
        );
        book.add(v(spec("*", "live", "rtmp://app/a/{StreamName}")), 3)
            .unwrap();
        assert_eq!(book.remove_key("*", "live"), Ok(true));
        assert_eq!(book.remove_key("*", "live"), Ok(false));
    }
}
