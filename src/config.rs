//! Configuration: serde structs that mirror the TOML file (unknown keys are errors),
//! the embedded default, and one `validate()` that turns the file into the immutable
//! runtime view (`Settings`) or an error naming the offending key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use crate::auth::{AuthConfig, AuthSettings};
use crate::error::Invalid;
use crate::names;
pub use crate::notify::NotifyConfig;
pub use crate::play::PlayConfig;
pub use crate::relay::config::{Relay, RelaySpec};
pub use crate::rules::shared::RuleStoreConfig;
use crate::rules::{Rule, RuleSet, RuleSpec};
use crate::storage::settings::{self, StorageConfig, StorageSettings};
use crate::storage::template;

/// The configuration used when `--config` is not given.
pub const DEFAULT_CONFIG: &str = include_str!("default_config.toml");

/// A configuration error, naming the key (`rules[2].interval_secs`) it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{0}")]
    Parse(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl From<Invalid> for ConfigError {
    fn from(e: Invalid) -> ConfigError {
        ConfigError::Invalid {
            key: e.key,
            message: e.message,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Named storage targets. Default: none (the embedded default config has one).
    #[serde(default)]
    pub storage: BTreeMap<String, StorageConfig>,
    /// Snapshot rules. Default: none (no snapshots; ingest still works).
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Where rules created through the admin API are kept, shared by every node
    /// pointed at the same storage.
    pub rule_store: Option<RuleStoreConfig>,
    /// Publish authentication (URL signing), per domain.
    #[serde(default)]
    pub auth: Vec<AuthConfig>,
    /// HTTP hooks consulted by the node.
    #[serde(default)]
    pub hooks: HooksConfig,
    /// Node-wide event callbacks.
    #[serde(default)]
    pub notify: NotifyConfig,
    /// Serving live streams to RTMP players.
    #[serde(default)]
    pub play: PlayConfig,
    /// Relays of every publish to upstream origins, per (domain, app). Default: none.
    #[serde(default)]
    pub relays: Vec<RelaySpec>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// URL POSTed (JSON) before a publish is accepted: 2xx allows, anything else or
    /// no answer within 3 s denies. Default: none.
    pub on_publish: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// RTMP listen address. Default "0.0.0.0:1935".
    pub rtmp_listen: String,
    /// HTTP (health, admin) listen address. Default "127.0.0.1:8935".
    pub http_listen: String,
    /// Seconds a connection has to finish the RTMP handshake. Default 10.
    pub handshake_timeout_secs: u64,
    /// Seconds without any byte from a connection before it is closed. Default 30.
    pub idle_timeout_secs: u64,
    /// Seconds given to in-flight snapshots to be stored at shutdown. Default 10.
    pub shutdown_grace_secs: u64,
    /// Bearer token of the admin API (or LIVESNAP_ADMIN_TOKEN). Default: none, which
    /// is allowed only while http_listen is a loopback address.
    pub admin_token: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            rtmp_listen: "0.0.0.0:1935".into(),
            http_listen: "127.0.0.1:8935".into(),
            handshake_timeout_secs: 10,
            idle_timeout_secs: 30,
            shutdown_grace_secs: 10,
            admin_token: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open RTMP connections at most. Default 1024.
    pub max_connections: usize,
    /// Open RTMP connections from one IP address at most. Default 64.
    pub max_connections_per_ip: usize,
    /// Largest audio/video message accepted, in bytes. Default 4194304 (4 MiB).
    pub max_message_bytes: u32,
    /// Largest command, metadata or control message accepted, in bytes. Default 65536.
    pub max_command_bytes: u32,
    /// Chunk streams a connection may have open at once. Default 64.
    pub max_chunk_streams: usize,
    /// Largest picture (width × height) the decoder is given. Default 9437184 (4096×2304).
    pub max_picture_pixels: u64,
    /// RTMP handshakes in progress at once (unauthenticated peers); when all are taken,
    /// a newcomer closes the oldest. Default 256.
    pub max_handshakes: usize,
    /// `createStream` calls one connection may make. Default 8.
    pub max_streams_per_connection: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 1024,
            max_connections_per_ip: 64,
            max_message_bytes: 4 << 20,
            max_command_bytes: 64 << 10,
            max_chunk_streams: 64,
            max_picture_pixels: 4096 * 2304,
            max_handshakes: 256,
            max_streams_per_connection: 8,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// JPEG quality, 1..=100. Default 80.
    pub quality: u8,
    /// Decode/encode worker threads; 0 means one per CPU core. Default 0.
    pub workers: usize,
    /// Snapshots of one stream waiting to be stored at most; more are dropped and
    /// counted (a storage outage never grows memory without bound). Default 4.
    pub store_queue: usize,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            quality: 80,
            workers: 0,
            store_queue: 4,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter in RUST_LOG syntax; the RUST_LOG variable overrides it. Default "info".
    pub filter: String,
    /// "text" or "json". Default "text".
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".into(),
            format: "text".into(),
        }
    }
}

/// The validated, immutable runtime view of a `Config`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rtmp_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    pub limits: LimitsConfig,
    pub quality: u8,
    pub workers: usize,
    pub store_queue: usize,
    pub log: LogConfig,
    pub storage: BTreeMap<String, StorageSettings>,
    pub rules: RuleSet,
    /// The rules of the config file, in order (the API lists them as read-only).
    pub static_rules: Vec<Rule>,
    /// None when no rule store is configured and there is no "default" storage.
    pub rule_store: Option<RuleStoreConfig>,
    pub admin_token: Option<String>,
    pub auth: Vec<AuthSettings>,
    pub on_publish: Option<String>,
    pub notify: NotifyConfig,
    pub play: PlayConfig,
    /// The config file's relays, in order.
    pub relays: Vec<Relay>,
}

impl Config {
    /// Parses TOML text (no validation).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Reads and parses a file (no validation).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse(m) => ConfigError::Parse(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The embedded default.
    pub fn embedded_default() -> Config {
        Config::parse(DEFAULT_CONFIG).expect("the embedded default config parses")
    }

    /// Checks every key and builds the runtime view.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let s = &self.server;
        let addr = |key: &str, v: &str| {
            v.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    key,
                    format!("{v:?} is not an address like \"0.0.0.0:1935\""),
                )
            })
        };
        let rtmp_listen = addr("server.rtmp_listen", &s.rtmp_listen)?;
        let http_listen = addr("server.http_listen", &s.http_listen)?;
        for (key, v, range) in [
            (
                "server.handshake_timeout_secs",
                s.handshake_timeout_secs,
                1..=300,
            ),
            ("server.idle_timeout_secs", s.idle_timeout_secs, 1..=3600),
            ("server.shutdown_grace_secs", s.shutdown_grace_secs, 0..=600),
        ] {
            if !range.contains(&v) {
                return Err(invalid(key, format!("must be {range:?}, got {v}")));
            }
        }

        let l = &self.limits;
        let positive = [
            ("limits.max_connections", l.max_connections as u64),
            (
                "limits.max_connections_per_ip",
                l.max_connections_per_ip as u64,
            ),
            ("limits.max_chunk_streams", l.max_chunk_streams as u64),
            ("limits.max_picture_pixels", l.max_picture_pixels),
            ("limits.max_handshakes", l.max_handshakes as u64),
            (
                "limits.max_streams_per_connection",
                u64::from(l.max_streams_per_connection),
            ),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if !(4096..=(64 << 20)).contains(&l.max_message_bytes) {
            return Err(invalid(
                "limits.max_message_bytes",
                format!("must be 4096..=67108864, got {}", l.max_message_bytes),
            ));
        }
        if !(1024..=(16 << 20)).contains(&l.max_command_bytes) {
            return Err(invalid(
                "limits.max_command_bytes",
                format!("must be 1024..=16777216, got {}", l.max_command_bytes),
            ));
        }

        let sn = &self.snapshot;
        if !(1..=100).contains(&sn.quality) {
            return Err(invalid(
                "snapshot.quality",
                format!("must be 1..=100, got {}", sn.quality),
            ));
        }
        if sn.workers > 256 {
            return Err(invalid("snapshot.workers", "must be 0..=256"));
        }
        if !(1..=1024).contains(&sn.store_queue) {
            return Err(invalid("snapshot.store_queue", "must be 1..=1024"));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid(
                "log.format",
                format!("must be \"text\" or \"json\", got {:?}", self.log.format),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.filter)
            .map_err(|e| invalid("log.filter", e.to_string()))?;

        let mut storage = BTreeMap::new();
        for (name, st) in &self.storage {
            storage.insert(name.clone(), settings::validate(name, st)?);
        }

        let mut rules = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let rule = r.validate(&format!("rules[{i}]"), |s| storage.contains_key(s))?;
            if !seen.insert((rule.domain().to_string(), rule.app().to_string())) {
                return Err(invalid(
                    format!("rules[{i}]"),
                    format!(
                        "a rule for domain {:?}, app {:?} already exists",
                        rule.domain(),
                        rule.app()
                    ),
                ));
            }
            rules.push(rule);
        }

        let rule_store = match &self.rule_store {
            Some(rs) => {
                if !storage.contains_key(&rs.storage) {
                    return Err(invalid(
                        "rule_store.storage",
                        format!("no storage target named {:?} is configured", rs.storage),
                    ));
                }
                template::check_key(&rs.key)
                    .map_err(|e| invalid("rule_store.key", e.to_string()))?;
                if !(1..=3600).contains(&rs.reload_secs) {
                    return Err(invalid("rule_store.reload_secs", "must be 1..=3600"));
                }
                Some(rs.clone())
            }
            None => storage
                .contains_key("default")
                .then(RuleStoreConfig::default),
        };
        let admin_token = s
            .admin_token
            .clone()
            .or_else(|| std::env::var("LIVESNAP_ADMIN_TOKEN").ok())
            .filter(|t| !t.is_empty());
        if admin_token.is_none() && !http_listen.ip().is_loopback() {
            return Err(invalid(
                "server.admin_token",
                format!(
                    "is required when server.http_listen ({http_listen}) is not a loopback address (or set LIVESNAP_ADMIN_TOKEN)"
                ),
            ));
        }
        let mut auth = Vec::new();
        let mut auth_domains = std::collections::HashSet::new();
        for (i, a) in self.auth.iter().enumerate() {
            auth.push(crate::auth::validate(a, &format!("auth[{i}]"))?);
            if !auth_domains.insert(a.domain.clone()) {
                return Err(invalid(
                    format!("auth[{i}].domain"),
                    format!("{:?} has more than one [[auth]] entry", a.domain),
                ));
            }
        }
        if let Some(u) = &self.hooks.on_publish {
            names::check_http_url(u).map_err(|m| invalid("hooks.on_publish", m))?;
        }
        if let Some(u) = &self.notify.url {
            names::check_http_url(u).map_err(|m| invalid("notify.url", m))?;
        }
        if !(1..=1_000_000).contains(&self.notify.queue) {
            return Err(invalid("notify.queue", "must be 1..=1000000"));
        }

        let workers = match sn.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        self.play.validate()?;
        let relays = crate::relay::config::validate_all(&self.relays)?;
        Ok(Settings {
            rtmp_listen,
            http_listen,
            handshake_timeout: Duration::from_secs(s.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(s.idle_timeout_secs),
            shutdown_grace: Duration::from_secs(s.shutdown_grace_secs),
            limits: self.limits.clone(),
            quality: sn.quality,
            workers,
            store_queue: sn.store_queue,
            log: self.log.clone(),
            storage,
            rules: RuleSet::new(rules.clone()),
            static_rules: rules,
            rule_store,
            admin_token,
            auth,
            on_publish: self.hooks.on_publish.clone(),
            notify: self.notify.clone(),
            play: self.play.clone(),
            relays,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(text: &str) -> String {
        match Config::parse(text).and_then(|c| c.validate().map(|_| ())) {
            Ok(()) => panic!("config was accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    const BASE: &str = r#"
[storage.default]
scheme = "memory"
"#;

    fn with_rule(rule: &str) -> String {
        format!("{BASE}\n[[rules]]\n{rule}\n")
    }

    #[test]
    fn embedded_default_is_valid_and_as_documented() {
        let s = Config::embedded_default().validate().unwrap();
        assert_eq!(s.rtmp_listen.to_string(), "0.0.0.0:1935");
        assert_eq!(s.http_listen.to_string(), "127.0.0.1:8935");
        assert_eq!(s.storage["default"].scheme, "fs");
        assert_eq!(s.storage["default"].options["root"], "./snapshots");
        let r = s.rules.lookup("any.host", "live").unwrap();
        assert_eq!(r.interval_secs, 5);
        assert_eq!(
            r.overwrite_object.as_ref().unwrap().as_str(),
            "{AppName}/{StreamName}.jpg"
        );
        assert_eq!(
            r.sequence_object.as_ref().unwrap().as_str(),
            "{AppName}/{StreamName}/{UnixTimestamp}.jpg"
        );
        assert_eq!(s.handshake_timeout, Duration::from_secs(10));
        assert_eq!(s.idle_timeout, Duration::from_secs(30));
        assert_eq!(s.quality, 80);
    }

    #[test]
    fn example_file_parses_validates_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let example = Config::load(&path).unwrap();
        example.validate().unwrap();
        // The example documents every key at its default value.
        assert_eq!(example, Config::embedded_default());
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(err_of("[server]\nrtmp_listn = \"x\"").contains("rtmp_listn"));
        assert!(err_of("bogus = 1").contains("bogus"));
        assert!(err_of(&with_rule(
            "domain=\"*\"\napp=\"*\"\ninterval_secs=5\nstorage=\"default\"\noverwrite_object=\"a.jpg\"\ncolor=1"
        ))
        .contains("color"));
        assert_eq!(
            err_of("[storage.s]\nscheme = \"s3\"\nbucket = \"b\"\nendpiont = \"x\""),
            "storage.s.endpiont: unknown option for scheme \"s3\""
        );
    }

    #[test]
    fn rule_errors_name_the_rule_and_key() {
        let r = |extra: &str| {
            with_rule(&format!(
                "domain=\"*\"\napp=\"*\"\nstorage=\"default\"\n{extra}"
            ))
        };
        assert_eq!(
            err_of(&r("interval_secs = 4\noverwrite_object=\"a.jpg\"")),
            "rules[0].interval_secs: must be 5..=3600, got 4"
        );
        assert!(
            err_of(&r("interval_secs = 3601\noverwrite_object=\"a.jpg\""))
                .starts_with("rules[0].interval_secs")
        );
        assert!(err_of(&r("interval_secs = -5\noverwrite_object=\"a.jpg\""))
            .starts_with("rules[0].interval_secs"));
        assert!(err_of(&r("interval_secs = 5")).contains("needs overwrite_object"));
        assert!(
            err_of(&r("interval_secs = 5\noverwrite_object=\"{Foo}.jpg\""))
                .starts_with("rules[0].overwrite_object")
        );
        assert!(
            err_of(&r("interval_secs = 5\nsequence_object=\"{AppName}.jpg\""))
                .starts_with("rules[0].sequence_object")
        );
        assert!(
            err_of(&r("interval_secs = 5\noverwrite_object=\"../a.jpg\""))
                .starts_with("rules[0].overwrite_object")
        );
        let bad_storage = with_rule(
            "domain=\"*\"\napp=\"*\"\nstorage=\"nope\"\ninterval_secs=5\noverwrite_object=\"a.jpg\"",
        );
        assert!(err_of(&bad_storage).starts_with("rules[0].storage"));
        let bad_domain = with_rule(
            "domain=\"Ex.com\"\napp=\"*\"\nstorage=\"default\"\ninterval_secs=5\noverwrite_object=\"a.jpg\"",
        );
        assert!(err_of(&bad_domain).starts_with("rules[0].domain"));
        let bad_app = with_rule(
            "domain=\"*\"\napp=\"../x\"\nstorage=\"default\"\ninterval_secs=5\noverwrite_object=\"a.jpg\"",
        );
        assert!(err_of(&bad_app).starts_with("rules[0].app"));
        let rule = "domain=\"*\"\napp=\"live\"\nstorage=\"default\"\ninterval_secs=5\noverwrite_object=\"a.jpg\"";
        let dup = format!("{BASE}\n[[rules]]\n{rule}\n[[rules]]\n{rule}\n");
        assert!(err_of(&dup).starts_with("rules[1]:"));
    }

    #[test]
    fn other_keys_are_checked() {
        assert!(err_of("[server]\nrtmp_listen = \"nope\"").starts_with("server.rtmp_listen"));
        assert!(err_of("[snapshot]\nquality = 0").starts_with("snapshot.quality"));
        assert!(err_of("[log]\nformat = \"xml\"").starts_with("log.format"));
        assert!(err_of("[limits]\nmax_message_bytes = 1").starts_with("limits.max_message_bytes"));
        assert!(err_of("[storage.x]\nscheme = \"ftp\"").starts_with("storage.x.scheme"));
        assert!(err_of("[storage.x]\nscheme = \"fs\"").starts_with("storage.x.root"));
        assert!(err_of("[storage.x]\nscheme = \"s3\"").starts_with("storage.x.bucket"));
    }
}
