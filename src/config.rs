//! Configuration: serde structs that mirror the TOML file (unknown keys are errors),
//! the embedded default, and one `validate()` that turns the file into the immutable
//! runtime view (`Settings`) or an error naming the offending key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::names;
use crate::rules::template::Template;
use crate::rules::{Rule, RuleSet, ANY};

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
    pub rules: Vec<RuleConfig>,
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
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuleStoreConfig {
    /// Storage target holding the rules document. Default "default".
    pub storage: String,
    /// Key of the rules document. Default "_livesnap/rules.json".
    pub key: String,
    /// Seconds between re-reads of the document. Default 10.
    pub reload_secs: u64,
}

impl Default for RuleStoreConfig {
    fn default() -> Self {
        RuleStoreConfig {
            storage: "default".into(),
            key: "_livesnap/rules.json".into(),
            reload_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A host name, or "*" for every domain without its own entry.
    pub domain: String,
    /// The signing key, or the name of an environment variable holding it.
    pub primary_key: Option<String>,
    pub primary_key_env: Option<String>,
    /// A second accepted key, for rotation (or its environment variable).
    pub secondary_key: Option<String>,
    pub secondary_key_env: Option<String>,
    /// Seconds a signed URL stays valid after its timestamp. Default 1800.
    #[serde(default = "default_validity_secs")]
    pub validity_secs: u64,
}

fn default_validity_secs() -> u64 {
    1800
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
pub struct NotifyConfig {
    /// URL receiving snapshot, publish and unpublish events. Default: none.
    pub url: Option<String>,
    /// Key signing callback requests (ALI-LIVE-TIMESTAMP / ALI-LIVE-SIGNATURE).
    pub callback_auth_key: Option<String>,
    /// Events waiting for delivery at most; the oldest is dropped beyond. Default 1024.
    pub queue: usize,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            url: None,
            callback_auth_key: None,
            queue: 1024,
        }
    }
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

/// A storage target: an opendal scheme, our own settings, and the scheme's options
/// passed through to opendal (checked against the keys the scheme knows).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct StorageConfig {
    /// opendal scheme: "fs", "s3", "oss" or "memory".
    pub scheme: String,
    /// Seconds one storage operation may take before it is retried. Default 10.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Retries of a failed storage operation. Default 2.
    #[serde(default = "default_retries")]
    pub retries: usize,
    /// Everything else: the scheme's own options.
    #[serde(flatten)]
    pub options: BTreeMap<String, toml::Value>,
}

fn default_timeout_secs() -> u64 {
    10
}
fn default_retries() -> usize {
    2
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A host name, or "*" for every domain.
    pub domain: String,
    /// An app name, or "*" for every app.
    pub app: String,
    /// Seconds between snapshots, 5..=3600.
    pub interval_secs: i64,
    /// Name of a `[storage.NAME]` target.
    pub storage: String,
    /// Key template replaced at every snapshot.
    pub overwrite_object: Option<String>,
    /// Key template producing a new object at every snapshot.
    pub sequence_object: Option<String>,
    /// URL receiving a POST for each stored snapshot of this rule.
    pub callback: Option<String>,
}

/// The options each scheme accepts (opendal 0.59's config fields). opendal ignores
/// unknown keys silently, so a typo would otherwise go unnoticed.
fn known_options(scheme: &str) -> Option<&'static [&'static str]> {
    Some(match scheme {
        "fs" => &["root", "atomic_write_dir"],
        "memory" => &["root"],
        "s3" => &[
            "root",
            "bucket",
            "enable_versioning",
            "endpoint",
            "region",
            "profile",
            "access_key_id",
            "secret_access_key",
            "session_token",
            "role_arn",
            "external_id",
            "role_session_name",
            "assume_role_duration_seconds",
            "assume_role_session_tags",
            "disable_config_load",
            "disable_ec2_metadata",
            "skip_signature",
            "allow_anonymous",
            "server_side_encryption",
            "server_side_encryption_aws_kms_key_id",
            "server_side_encryption_customer_algorithm",
            "server_side_encryption_customer_key",
            "server_side_encryption_customer_key_md5",
            "default_storage_class",
            "enable_virtual_host_style",
            "batch_max_operations",
            "delete_max_size",
            "disable_stat_with_override",
            "checksum_algorithm",
            "disable_write_with_if_match",
            "enable_write_with_append",
            "disable_list_objects_v2",
            "enable_request_payer",
            "default_acl",
        ],
        "oss" => &[
            "root",
            "endpoint",
            "presign_endpoint",
            "bucket",
            "addressing_style",
            "presign_addressing_style",
            "enable_versioning",
            "server_side_encryption",
            "server_side_encryption_key_id",
            "skip_signature",
            "allow_anonymous",
            "access_key_id",
            "access_key_secret",
            "security_token",
            "batch_max_operations",
            "delete_max_size",
            "role_arn",
            "role_session_name",
            "oidc_provider_arn",
            "oidc_token_file",
            "sts_endpoint",
            "external_id",
        ],
        _ => return None,
    })
}

fn required_options(scheme: &str) -> &'static [&'static str] {
    match scheme {
        "fs" => &["root"],
        "s3" => &["bucket"],
        "oss" => &["bucket", "endpoint"],
        _ => &[],
    }
}

/// A validated storage target, ready for `storage::build_operator`.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageSettings {
    pub name: String,
    pub scheme: String,
    pub timeout: Duration,
    pub retries: usize,
    pub options: BTreeMap<String, String>,
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
}

/// A validated `[[auth]]` entry with its keys resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthSettings {
    pub domain: String,
    pub primary_key: String,
    pub secondary_key: Option<String>,
    pub validity_secs: u64,
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
            storage.insert(name.clone(), validate_storage(name, st)?);
        }

        let mut rules = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let rule = validate_rule(r, &format!("rules[{i}]"), &storage)?;
            if !seen.insert((rule.domain.clone(), rule.app.clone())) {
                return Err(invalid(
                    format!("rules[{i}]"),
                    format!(
                        "a rule for domain {:?}, app {:?} already exists",
                        rule.domain, rule.app
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
                crate::rules::template::check_key(&rs.key)
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
            auth.push(validate_auth(a, &format!("auth[{i}]"))?);
            if !auth_domains.insert(a.domain.clone()) {
                return Err(invalid(
                    format!("auth[{i}].domain"),
                    format!("{:?} has more than one [[auth]] entry", a.domain),
                ));
            }
        }
        if let Some(u) = &self.hooks.on_publish {
            check_http_url(u).map_err(|m| invalid("hooks.on_publish", m))?;
        }
        if let Some(u) = &self.notify.url {
            check_http_url(u).map_err(|m| invalid("notify.url", m))?;
        }
        if !(1..=1_000_000).contains(&self.notify.queue) {
            return Err(invalid("notify.queue", "must be 1..=1000000"));
        }

        let workers = match sn.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
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
        })
    }
}

/// Checks that a URL is http(s)://host… (callbacks and hooks).
pub fn check_http_url(u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| format!("{u:?} must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') || u.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!("{u:?} is not a valid URL"));
    }
    Ok(())
}

fn validate_auth(a: &AuthConfig, at: &str) -> Result<AuthSettings, ConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    if a.domain != ANY {
        let d = names::normalize_domain(&a.domain)
            .map_err(|e| invalid(key("domain"), format!("{:?} {e}", a.domain)))?;
        if d != a.domain {
            return Err(invalid(key("domain"), format!("must be written as {d:?}")));
        }
    }
    let resolve = |name: &str,
                   direct: &Option<String>,
                   env: &Option<String>|
     -> Result<Option<String>, ConfigError> {
        match (direct, env) {
            (Some(_), Some(_)) => Err(invalid(
                key(name),
                format!("set {name} or {name}_env, not both"),
            )),
            (Some(k), None) => Ok(Some(k.clone())),
            (None, Some(var)) => std::env::var(var).map(Some).map_err(|_| {
                invalid(
                    key(&format!("{name}_env")),
                    format!("environment variable {var:?} is not set"),
                )
            }),
            (None, None) => Ok(None),
        }
    };
    let primary = resolve("primary_key", &a.primary_key, &a.primary_key_env)?
        .ok_or_else(|| invalid(key("primary_key"), "is required (or primary_key_env)"))?;
    let secondary = resolve("secondary_key", &a.secondary_key, &a.secondary_key_env)?;
    for (name, k) in [
        ("primary_key", Some(&primary)),
        ("secondary_key", secondary.as_ref()),
    ] {
        if let Some(k) = k {
            if k.len() < 8 {
                return Err(invalid(key(name), "must be at least 8 characters"));
            }
        }
    }
    if !(1..=31_536_000).contains(&a.validity_secs) {
        return Err(invalid(key("validity_secs"), "must be 1..=31536000"));
    }
    Ok(AuthSettings {
        domain: a.domain.clone(),
        primary_key: primary,
        secondary_key: secondary,
        validity_secs: a.validity_secs,
    })
}

fn validate_storage(name: &str, st: &StorageConfig) -> Result<StorageSettings, ConfigError> {
    let key = |k: &str| format!("storage.{name}.{k}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(invalid(
            format!("storage.{name}"),
            "a storage name is letters, digits, '_' and '-'",
        ));
    }
    let known = known_options(&st.scheme).ok_or_else(|| {
        invalid(
            key("scheme"),
            format!(
                "unknown scheme {:?} (this build has fs, s3, oss, memory)",
                st.scheme
            ),
        )
    })?;
    if !(1..=600).contains(&st.timeout_secs) {
        return Err(invalid(key("timeout_secs"), "must be 1..=600"));
    }
    if st.retries > 10 {
        return Err(invalid(key("retries"), "must be 0..=10"));
    }
    let mut options = BTreeMap::new();
    for (k, v) in &st.options {
        if !known.contains(&k.as_str()) {
            return Err(invalid(
                key(k),
                format!("unknown option for scheme {:?}", st.scheme),
            ));
        }
        let v = match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(invalid(
                    key(k),
                    format!(
                        "must be a string, integer or boolean, got {}",
                        other.type_str()
                    ),
                ))
            }
        };
        options.insert(k.clone(), v);
    }
    for req in required_options(&st.scheme) {
        if options.get(*req).is_none_or(|v| v.is_empty()) {
            return Err(invalid(
                key(req),
                format!("is required for scheme {:?}", st.scheme),
            ));
        }
    }
    Ok(StorageSettings {
        name: name.to_string(),
        scheme: st.scheme.clone(),
        timeout: Duration::from_secs(st.timeout_secs),
        retries: st.retries,
        options,
    })
}

/// Validates one rule (also used by the admin API for rules it receives).
pub fn validate_rule(
    r: &RuleConfig,
    at: &str,
    storage: &BTreeMap<String, StorageSettings>,
) -> Result<Rule, ConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    let domain = if r.domain == ANY {
        ANY.to_string()
    } else {
        let d = names::normalize_domain(&r.domain)
            .map_err(|e| invalid(key("domain"), format!("{:?} {e}", r.domain)))?;
        if d != r.domain {
            return Err(invalid(
                key("domain"),
                format!(
                    "{:?} must be written as {d:?} (lower case, no port)",
                    r.domain
                ),
            ));
        }
        d
    };
    if r.app != ANY {
        names::validate_app(&r.app).map_err(|e| invalid(key("app"), format!("{:?} {e}", r.app)))?;
    }
    if !(5..=3600).contains(&r.interval_secs) {
        return Err(invalid(
            key("interval_secs"),
            format!("must be 5..=3600, got {}", r.interval_secs),
        ));
    }
    if !storage.contains_key(&r.storage) {
        return Err(invalid(
            key("storage"),
            format!("no storage target named {:?} is configured", r.storage),
        ));
    }
    let overwrite_object = r
        .overwrite_object
        .as_deref()
        .map(|t| {
            Template::parse(t).map_err(|e| invalid(key("overwrite_object"), format!("{t:?} {e}")))
        })
        .transpose()?;
    let sequence_object = r
        .sequence_object
        .as_deref()
        .map(|t| {
            Template::parse_sequential(t)
                .map_err(|e| invalid(key("sequence_object"), format!("{t:?} {e}")))
        })
        .transpose()?;
    if let Some(u) = &r.callback {
        check_http_url(u).map_err(|m| invalid(key("callback"), m))?;
    }
    if overwrite_object.is_none() && sequence_object.is_none() {
        return Err(invalid(
            at,
            "needs overwrite_object, sequence_object or both",
        ));
    }
    Ok(Rule {
        domain,
        app: r.app.clone(),
        interval_secs: r.interval_secs as u32,
        storage: r.storage.clone(),
        overwrite_object,
        sequence_object,
        callback: r.callback.clone(),
    })
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
