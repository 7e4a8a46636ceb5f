//! Configuration: serde structs that mirror the TOML file (unknown keys are errors),
//! the embedded default, and one `validate()` that turns the file into the immutable
//! runtime view (`Settings`) or an error naming the offending key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use crate::auth::{AuthConfig, AuthPolicy, AuthSettings};
use crate::error::Invalid;
pub use crate::health::HealthConfig;
pub use crate::links::{LinksConfig, Signer};
use crate::names;
use crate::netlist::NetList;
pub use crate::notify::NotifyConfig;
pub use crate::play::PlayConfig;
pub use crate::relay::config::{Relay, RelaySpec};
pub use crate::retention::policy::RetentionConfig;
use crate::rtmp::tls::{TlsFile, TlsServer};
pub use crate::rules::shared::RuleStoreConfig;
use crate::rules::{Rule, RuleSpec};
use crate::snapshot::exact::ExactLimits;
use crate::snapshot::pool::QueueLimits;
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
    /// Which addresses may publish and play. Default: any.
    #[serde(default)]
    pub access: AccessConfig,
    /// Relays of every publish to upstream origins, per (domain, app). Default: none.
    #[serde(default)]
    pub relays: Vec<RelaySpec>,
    /// Stream health thresholds (black, frozen, no keyframe, no video, decode failing).
    #[serde(default)]
    pub health: HealthConfig,
    /// Signed image links (`/img/…` without the admin token). Default: none (the
    /// routes answer 404).
    pub links: Option<LinksConfig>,
    /// The retention sweeper (rules' `retain_secs` / `retain_count`).
    #[serde(default)]
    pub retention: RetentionConfig,
}

/// `[access]`: the networks publishers and players may connect from (CIDR such as
/// `10.0.0.0/8` or `2001:db8::/32`, or single addresses), checked before any signature
/// or hook. An empty list (the default) allows any address. The address is the TCP
/// peer's, or the client a `server.proxy_protocol_from` balancer's PROXY header names.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    pub publish_from: Vec<String>,
    pub play_from: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// URL POSTed (JSON) before a publish is accepted: 2xx allows, anything else or
    /// no answer within 3 s denies. Default: none.
    pub on_publish: Option<String>,
    /// URL POSTed (JSON) before a play is accepted, after `[access]` and the player's
    /// signature: 2xx allows, anything else or no answer within 3 s denies. Default: none.
    pub on_play: Option<String>,
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
    /// Host names (`host` or `host:port`) the admin API and dashboard answer to
    /// besides 127.0.0.1, localhost and [::1] on the listener's port, when no admin
    /// token is set. Default: none.
    pub http_hosts: Vec<String>,
    /// RTMPS (RTMP over TLS) listen address, e.g. "0.0.0.0:1936". Default: none (off).
    /// Needs `tls_cert_file` and `tls_key_file`; same limits as the RTMP listener.
    pub rtmps_listen: Option<String>,
    /// PEM certificate chain of the RTMPS listener, end-entity first. Default: none.
    pub tls_cert_file: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`. Default: none.
    pub tls_key_file: Option<String>,
    /// How often (seconds) the two TLS files are looked at for a change (modification
    /// time, size); changed files that load and match are used for new connections.
    /// 0 = never by itself (SIGHUP still loads them at once). Default 60, at most 86400.
    pub tls_reload_secs: u64,
    /// Threads of the network runtime (connections, relays, players, HTTP), 1..=256.
    /// Default: none, one per CPU core (or `TOKIO_WORKER_THREADS` when set). The
    /// snapshot pool (`snapshot.workers`) has threads of its own either way.
    pub runtime_threads: Option<usize>,
    /// Load balancers (CIDR or addresses) whose connections, on both RTMP listeners,
    /// start with a PROXY protocol header (v1 or v2) naming the client: its address then
    /// counts for the per-address cap, `[access]`, the hook and the logs. A connection
    /// from such an address without a valid header within the handshake timeout is
    /// closed. Default: none (no connection is read for a header).
    pub proxy_protocol_from: Vec<String>,
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
            http_hosts: Vec::new(),
            proxy_protocol_from: Vec::new(),
            rtmps_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_reload_secs: 60,
            runtime_threads: None,
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
    /// Bytes one connection's partial (not yet complete) messages may declare in total,
    /// counted by declared length when a message's first chunk arrives; over it the
    /// connection is closed. At least max_message_bytes. Default 8388608 (8 MiB).
    pub max_partial_bytes_per_connection: usize,
    /// Bytes the partial messages of all connections together may declare; a connection
    /// whose message would pass it is closed. At least max_partial_bytes_per_connection.
    /// Default 536870912 (512 MiB).
    pub max_partial_bytes: usize,
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
            max_partial_bytes_per_connection: 8 << 20,
            max_partial_bytes: 512 << 20,
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
    /// Due keyframes one stream may have waiting for a worker, 1..=1024. Default 8.
    pub queue_keyframes: usize,
    /// Bytes of due keyframes one stream may have waiting (a single larger keyframe is
    /// still taken when the queue is empty), 65536..=1073741824. Default 16777216 (16 MiB).
    pub queue_bytes: u64,
    /// Bytes of due keyframes waiting in all streams' queues together, at least
    /// `queue_bytes`, at most 68719476736. Default 268435456 (256 MiB).
    pub max_queued_bytes: u64,
    /// Exact-time rules (`exact = true`): bytes of compressed frames one stream keeps
    /// since its last keyframe, 65536..=1073741824; beyond, its snapshots fall back to the
    /// keyframe until the next one. Default 33554432 (32 MiB).
    pub exact_gop_bytes: u64,
    /// Exact-time rules: frames decoded for one snapshot at most (keyframe included),
    /// 1..=3600; a due frame further into its GOP falls back to the keyframe. Default 300.
    pub exact_max_frames: usize,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            quality: 80,
            workers: 0,
            store_queue: 4,
            queue_keyframes: 8,
            queue_bytes: 16 << 20,
            max_queued_bytes: 256 << 20,
            exact_gop_bytes: ExactLimits::default().gop_bytes,
            exact_max_frames: ExactLimits::default().max_frames,
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

/// The RTMPS listener: its address and the certificate and key it serves (loaded and
/// checked at validation, looked at for a change every `reload`; none = only when asked,
/// on SIGHUP).
#[derive(Debug, Clone)]
pub struct RtmpsSettings {
    pub listen: SocketAddr,
    pub tls: TlsServer,
    pub reload: Option<Duration>,
}

/// The validated, immutable runtime view of a `Config`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rtmp_listen: SocketAddr,
    /// The RTMPS listener, when `server.rtmps_listen` is set.
    pub rtmps: Option<RtmpsSettings>,
    pub http_listen: SocketAddr,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// `server.runtime_threads`: the network runtime's threads; `None` for tokio's
    /// default (one per core, or `TOKIO_WORKER_THREADS`).
    pub runtime_threads: Option<usize>,
    pub limits: LimitsConfig,
    pub quality: u8,
    pub workers: usize,
    pub store_queue: usize,
    /// The snapshot pool's queue bounds (`snapshot.queue_keyframes`, `queue_bytes`,
    /// `max_queued_bytes`).
    pub queue: QueueLimits,
    /// Exact-time snapshot bounds (`snapshot.exact_gop_bytes`, `exact_max_frames`).
    pub exact: ExactLimits,
    pub log: LogConfig,
    pub storage: BTreeMap<String, StorageSettings>,
    /// The rules of the config file, in order (the API lists them as read-only). A
    /// config reload replaces them in the node's `RuleBook`, not here.
    pub static_rules: Vec<Rule>,
    /// None when no rule store is configured and there is no "default" storage.
    pub rule_store: Option<RuleStoreConfig>,
    pub admin_token: Option<String>,
    /// `server.http_hosts`, parsed.
    pub http_hosts: Vec<HttpHost>,
    /// `server.proxy_protocol_from`, parsed.
    pub proxy_protocol_from: NetList,
    pub auth: AuthPolicy,
    pub on_publish: Option<String>,
    pub on_play: Option<String>,
    /// `[access] publish_from` and `play_from`, parsed.
    pub publish_from: NetList,
    pub play_from: NetList,
    pub notify: NotifyConfig,
    pub play: PlayConfig,
    /// The config file's relays, in order.
    pub relays: Vec<Relay>,
    pub health: HealthConfig,
    /// `[links]`: the image link signer, when a key is configured.
    pub links: Option<Signer>,
    pub retention: RetentionConfig,
}

/// One `server.http_hosts` entry: a host name or IP address (lower case; IPv6 in
/// brackets, `[::1]`) and, optionally, the one port it is allowed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHost {
    pub host: String,
    /// None: any port, or none (a reverse proxy on 80/443 sends none).
    pub port: Option<u16>,
}

impl HttpHost {
    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port`, as an HTTP `Host` header
    /// carries them. The message says what is wrong (the caller names the key).
    pub fn parse(raw: &str) -> Result<HttpHost, String> {
        let bad = |why: &str| format!("\"{}\" {why}", names::escape(raw));
        let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
            let (v6, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("has an unclosed '['"))?;
            if v6.is_empty()
                || !v6
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return Err(bad("is not an IPv6 address in brackets"));
            }
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("has junk after ']'"))?,
                ),
            };
            (format!("[{}]", v6.to_ascii_lowercase()), port)
        } else {
            let (h, port) = match raw.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (raw, None),
            };
            if h.is_empty() {
                return Err(bad("has no host name"));
            }
            if h.len() > names::MAX_DOMAIN_LEN {
                return Err(bad("is too long"));
            }
            if !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                || h.starts_with(['-', '.'])
                || h.ends_with('.')
                || h.contains("..")
            {
                return Err(bad(
                    "is not a host name (letters, digits, '-' and '.'), optionally with :port",
                ));
            }
            (h.to_ascii_lowercase(), port)
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return Err(bad("has a port that is not 1..=65535")),
            },
        };
        Ok(HttpHost { host, port })
    }
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

    /// The sections that differ between `self` (in force) and `new` (a reloaded file)
    /// and that a reload does not apply: only `[[rules]]`, `[[relays]]`, `[[auth]]`,
    /// `[access]` and `[hooks]` change without a restart.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        // Destructured so that a new section must be placed on one side or the other.
        let Config {
            server,
            limits,
            snapshot,
            log,
            storage,
            rules: _,
            rule_store,
            auth: _,
            hooks: _,
            access: _,
            notify,
            play: _,
            relays: _,
            health,
            links,
            retention,
        } = new;
        let sections = [
            ("server", self.server != *server),
            ("limits", self.limits != *limits),
            ("snapshot", self.snapshot != *snapshot),
            ("log", self.log != *log),
            ("storage", self.storage != *storage),
            ("rule_store", self.rule_store != *rule_store),
            ("notify", self.notify != *notify),
            ("health", self.health != *health),
            ("links", self.links != *links),
            ("retention", self.retention != *retention),
        ];
        sections
            .into_iter()
            .filter_map(|(name, changed)| changed.then_some(name))
            .collect()
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
        let rtmps = match &s.rtmps_listen {
            Some(a) => {
                let listen = addr("server.rtmps_listen", a)?;
                if listen == rtmp_listen && listen.port() != 0 {
                    return Err(invalid(
                        "server.rtmps_listen",
                        format!("{listen} is also server.rtmp_listen"),
                    ));
                }
                Some(validate_rtmps(s, listen)?)
            }
            None => {
                if s.tls_cert_file.is_some() || s.tls_key_file.is_some() {
                    return Err(invalid(
                        "server.rtmps_listen",
                        "is required when server.tls_cert_file or server.tls_key_file is set",
                    ));
                }
                None
            }
        };
        for (key, v, range) in [
            (
                "server.handshake_timeout_secs",
                s.handshake_timeout_secs,
                1..=300,
            ),
            ("server.idle_timeout_secs", s.idle_timeout_secs, 1..=3600),
            ("server.shutdown_grace_secs", s.shutdown_grace_secs, 0..=600),
            ("server.tls_reload_secs", s.tls_reload_secs, 0..=86400),
        ] {
            if !range.contains(&v) {
                return Err(invalid(key, format!("must be {range:?}, got {v}")));
            }
        }
        if let Some(n) = s.runtime_threads {
            if !(1..=256).contains(&n) {
                return Err(invalid(
                    "server.runtime_threads",
                    format!("must be 1..=256 (or left out for one per core), got {n}"),
                ));
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
        self.retention.validate()?;
        let largest_message = l.max_message_bytes.max(l.max_command_bytes) as usize;
        if l.max_partial_bytes_per_connection < largest_message {
            return Err(invalid(
                "limits.max_partial_bytes_per_connection",
                format!(
                    "must be at least limits.max_message_bytes and limits.max_command_bytes \
                     ({largest_message}), got {}",
                    l.max_partial_bytes_per_connection
                ),
            ));
        }
        if l.max_partial_bytes < l.max_partial_bytes_per_connection {
            return Err(invalid(
                "limits.max_partial_bytes",
                format!(
                    "must be at least limits.max_partial_bytes_per_connection ({}), got {}",
                    l.max_partial_bytes_per_connection, l.max_partial_bytes
                ),
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
        if !(1..=1024).contains(&sn.queue_keyframes) {
            return Err(invalid(
                "snapshot.queue_keyframes",
                format!("must be 1..=1024, got {}", sn.queue_keyframes),
            ));
        }
        if !((64 << 10)..=(1 << 30)).contains(&sn.queue_bytes) {
            return Err(invalid(
                "snapshot.queue_bytes",
                format!("must be 65536..=1073741824, got {}", sn.queue_bytes),
            ));
        }
        if !(sn.queue_bytes..=(64 << 30)).contains(&sn.max_queued_bytes) {
            return Err(invalid(
                "snapshot.max_queued_bytes",
                format!(
                    "must be at least snapshot.queue_bytes ({}) and at most 68719476736, got {}",
                    sn.queue_bytes, sn.max_queued_bytes
                ),
            ));
        }
        if !((64 << 10)..=(1 << 30)).contains(&sn.exact_gop_bytes) {
            return Err(invalid(
                "snapshot.exact_gop_bytes",
                format!("must be 65536..=1073741824, got {}", sn.exact_gop_bytes),
            ));
        }
        if !(1..=3600).contains(&sn.exact_max_frames) {
            return Err(invalid(
                "snapshot.exact_max_frames",
                format!("must be 1..=3600, got {}", sn.exact_max_frames),
            ));
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

        let mut rules: Vec<Rule> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let rule = r.validate(&format!("rules[{i}]"), |s| storage.contains_key(s))?;
            if !seen.insert((
                rule.domain().to_string(),
                rule.app().to_string(),
                rule.stream().map(str::to_string),
            )) {
                return Err(invalid(
                    format!("rules[{i}]"),
                    format!("a rule for {} already exists", rule.describe()),
                ));
            }
            // Rules writing to one place keep their keys apart (`rules::keys_apart`).
            for (j, other) in rules.iter().enumerate() {
                if same_place(&storage, rule.storage(), other.storage()) {
                    crate::rules::keys_apart(&rule, other).map_err(|c| {
                        invalid(
                            format!("rules[{i}].{}", c.field),
                            format!("{c} (rules[{j}])"),
                        )
                    })?;
                }
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
        if let Some(rs) = &rule_store {
            for (i, r) in rules.iter().enumerate() {
                if same_place(&storage, r.storage(), &rs.storage) && r.renders(&rs.key) {
                    return Err(invalid(
                        format!("rules[{i}]"),
                        format!(
                            "a template can render the rule document's key {:?} (rule_store.key)",
                            rs.key
                        ),
                    ));
                }
            }
        }
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
        let mut http_hosts = Vec::new();
        for (i, h) in s.http_hosts.iter().enumerate() {
            http_hosts.push(
                HttpHost::parse(h).map_err(|m| invalid(format!("server.http_hosts[{i}]"), m))?,
            );
        }
        let auth = crate::auth::validate_all(&self.auth, "auth")?;
        for (key, url) in [
            ("hooks.on_publish", &self.hooks.on_publish),
            ("hooks.on_play", &self.hooks.on_play),
        ] {
            if let Some(u) = url {
                names::check_http_url(u).map_err(|m| invalid(key, m))?;
            }
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
        self.health.validate()?;
        let links = match &self.links {
            Some(l) => Some(l.validate(|v| std::env::var(v).ok().filter(|k| !k.is_empty()))?),
            None => None,
        };
        Ok(Settings {
            rtmp_listen,
            rtmps,
            http_listen,
            handshake_timeout: Duration::from_secs(s.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(s.idle_timeout_secs),
            shutdown_grace: Duration::from_secs(s.shutdown_grace_secs),
            runtime_threads: s.runtime_threads,
            limits: self.limits.clone(),
            quality: sn.quality,
            workers,
            store_queue: sn.store_queue,
            queue: QueueLimits {
                keyframes: sn.queue_keyframes,
                bytes: sn.queue_bytes,
                node_bytes: sn.max_queued_bytes,
            },
            exact: ExactLimits {
                gop_bytes: sn.exact_gop_bytes,
                max_frames: sn.exact_max_frames,
            },
            log: self.log.clone(),
            storage,
            static_rules: rules,
            rule_store,
            admin_token,
            http_hosts,
            proxy_protocol_from: NetList::parse(
                "server.proxy_protocol_from",
                &s.proxy_protocol_from,
            )?,
            auth,
            on_publish: self.hooks.on_publish.clone(),
            on_play: self.hooks.on_play.clone(),
            notify: self.notify.clone(),
            play: self.play.clone(),
            publish_from: NetList::parse("access.publish_from", &self.access.publish_from)?,
            play_from: NetList::parse("access.play_from", &self.access.play_from)?,
            relays,
            health: self.health.clone(),
            links,
            retention: self.retention.clone(),
        })
    }
}

/// Whether two storage targets are one place: the same name, or the same scheme and
/// options (two names for one folder or bucket).
pub fn same_place(storage: &BTreeMap<String, StorageSettings>, a: &str, b: &str) -> bool {
    a == b
        || match (storage.get(a), storage.get(b)) {
            (Some(x), Some(y)) => x.scheme == y.scheme && x.options == y.options,
            _ => false,
        }
}

/// The RTMPS listener's certificate and key: both required, readable, parsed and a pair.
fn validate_rtmps(s: &ServerConfig, listen: SocketAddr) -> Result<RtmpsSettings, ConfigError> {
    let file = |key: &str, v: &Option<String>| match v.as_deref() {
        Some(p) if !p.is_empty() => Ok(p.to_owned()),
        _ => Err(invalid(
            key,
            "is required when server.rtmps_listen is set (a PEM file)",
        )),
    };
    let cert = file("server.tls_cert_file", &s.tls_cert_file)?;
    let key = file("server.tls_key_file", &s.tls_key_file)?;
    let tls = TlsServer::load(Path::new(&cert), Path::new(&key)).map_err(|e| {
        let key = match e.file {
            TlsFile::Cert => "server.tls_cert_file",
            TlsFile::Key => "server.tls_key_file",
        };
        invalid(key, e.to_string())
    })?;
    let reload = (s.tls_reload_secs > 0).then(|| Duration::from_secs(s.tls_reload_secs));
    Ok(RtmpsSettings {
        listen,
        tls,
        reload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;

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
        let r = RuleSet::new(s.static_rules)
            .lookup("any.host", "live", "cam")
            .unwrap();
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
    fn hook_urls_are_checked_and_named() {
        let e = err_of(&format!("{BASE}\n[hooks]\non_play = \"ftp://h/x\"\n"));
        assert!(e.starts_with("hooks.on_play:"), "{e}");
        let e = err_of(&format!("{BASE}\n[hooks]\non_publish = \"not a url\"\n"));
        assert!(e.starts_with("hooks.on_publish:"), "{e}");
        let c = Config::parse(&format!(
            "{BASE}\n[hooks]\non_play = \"http://127.0.0.1:9/play\"\n"
        ))
        .unwrap();
        let s = c.validate().unwrap();
        assert_eq!(s.on_play.as_deref(), Some("http://127.0.0.1:9/play"));
        assert_eq!(s.on_publish, None);
    }

    #[test]
    fn rule_errors_name_the_rule_and_key() {
        let r = |extra: &str| {
            with_rule(&format!(
                "domain=\"*\"\napp=\"*\"\nstorage=\"default\"\n{extra}"
            ))
        };
        assert_eq!(
            err_of(&r(
                "interval_secs = 4\noverwrite_object=\"{AppName}/{StreamName}.jpg\""
            )),
            "rules[0].interval_secs: must be 5..=3600, got 4"
        );
        assert!(err_of(&r(
            "interval_secs = 3601\noverwrite_object=\"{AppName}/{StreamName}.jpg\""
        ))
        .starts_with("rules[0].interval_secs"));
        assert!(err_of(&r(
            "interval_secs = -5\noverwrite_object=\"{AppName}/{StreamName}.jpg\""
        ))
        .starts_with("rules[0].interval_secs"));
        assert!(err_of(&r("interval_secs = 5")).contains("needs overwrite_object"));
        assert!(
            err_of(&r("interval_secs = 5\noverwrite_object=\"{Foo}.jpg\""))
                .starts_with("rules[0].overwrite_object")
        );
        assert!(err_of(&r(
            "interval_secs = 5\nsequence_object=\"{AppName}/{StreamName}.jpg\""
        ))
        .starts_with("rules[0].sequence_object"));
        assert!(
            err_of(&r("interval_secs = 5\noverwrite_object=\"../a.jpg\""))
                .starts_with("rules[0].overwrite_object")
        );
        let bad_storage = with_rule(
            "domain=\"*\"\napp=\"*\"\nstorage=\"nope\"\ninterval_secs=5\noverwrite_object=\"{AppName}/{StreamName}.jpg\"",
        );
        assert!(err_of(&bad_storage).starts_with("rules[0].storage"));
        let bad_domain = with_rule(
            "domain=\"Ex.com\"\napp=\"*\"\nstorage=\"default\"\ninterval_secs=5\noverwrite_object=\"{AppName}/{StreamName}.jpg\"",
        );
        assert!(err_of(&bad_domain).starts_with("rules[0].domain"));
        let bad_app = with_rule(
            "domain=\"*\"\napp=\"../x\"\nstorage=\"default\"\ninterval_secs=5\noverwrite_object=\"{AppName}/{StreamName}.jpg\"",
        );
        assert!(err_of(&bad_app).starts_with("rules[0].app"));
        let rule = "domain=\"*\"\napp=\"live\"\nstorage=\"default\"\ninterval_secs=5\noverwrite_object=\"{AppName}/{StreamName}.jpg\"";
        let dup = format!("{BASE}\n[[rules]]\n{rule}\n[[rules]]\n{rule}\n");
        assert!(err_of(&dup).starts_with("rules[1]:"));
    }

    #[test]
    fn a_stream_rule_is_a_scope_of_its_own() {
        let app = "domain=\"*\"\napp=\"live\"\nstorage=\"default\"\ninterval_secs=5\noverwrite_object=\"{AppName}/{StreamName}.jpg\"";
        let cam7 = format!("{app}\nstream=\"cam7\"");
        let both = format!("{BASE}\n[[rules]]\n{app}\n[[rules]]\n{cam7}\n");
        let s = Config::parse(&both).unwrap().validate().unwrap();
        let rules = RuleSet::new(s.static_rules);
        assert_eq!(
            rules.lookup("x", "live", "cam7").unwrap().stream(),
            Some("cam7")
        );
        assert_eq!(rules.lookup("x", "live", "cam8").unwrap().stream(), None);
        let dup = format!("{BASE}\n[[rules]]\n{cam7}\n[[rules]]\n{cam7}\n");
        let e = err_of(&dup);
        assert!(
            e.starts_with("rules[1]:") && e.contains("stream \"cam7\""),
            "{e}"
        );
        assert!(
            err_of(&with_rule(&format!("{app}\nstream=\"a b\""))).starts_with("rules[0].stream")
        );
    }

    fn rules(rules: &[(&str, &str, &str, &str)]) -> String {
        let mut text = format!("{BASE}\n[storage.other]\nscheme = \"memory\"\nroot = \"/other\"\n");
        for (app, storage, ow, seq) in rules {
            text += &format!(
                "[[rules]]\ndomain = \"*\"\napp = \"{app}\"\ninterval_secs = 5\nstorage = \"{storage}\"\n"
            );
            if !ow.is_empty() {
                text += &format!("overwrite_object = \"{ow}\"\n");
            }
            if !seq.is_empty() {
                text += &format!("sequence_object = \"{seq}\"\n");
            }
        }
        text
    }

    #[test]
    fn templates_tell_their_stream() {
        let one = |app, ow, seq| err_of(&rules(&[(app, "default", ow, seq)]));
        let e = one("*", "{AppName}.jpg", "");
        assert!(e.starts_with("rules[0].overwrite_object"), "{e}");
        assert!(e.contains("must contain {StreamName}"), "{e}");
        let e = one("*", "{StreamName}.jpg", "");
        assert!(e.contains("must contain {AppName}"), "{e}");
        // A rule for one app may leave its name out.
        Config::parse(&rules(&[("live", "default", "{StreamName}.jpg", "")]))
            .unwrap()
            .validate()
            .unwrap();
        let e = one("*", "", "{AppName}/{StreamName}{Sequence}.jpg");
        assert!(e.starts_with("rules[0].sequence_object"), "{e}");
        assert!(
            e.contains("\"a/a10.jpg\" from two different sets of values"),
            "{e}"
        );
        let e = one(
            "*",
            "{AppName}/{StreamName}.jpg",
            "{AppName}/{StreamName}.{Sequence}.jpg",
        );
        assert!(e.starts_with("rules[0].sequence_object"), "{e}");
        assert!(e.contains("can both render the key \"a/a.0.jpg\""), "{e}");
        let e = one("*", "_{AppName}/{StreamName}.jpg", "");
        assert!(
            e.contains("\"_livesnap/a.jpg\", in livesnap's own folder \"_livesnap\"/"),
            "{e}"
        );
        let e = one("*", "_livesnap/{AppName}/{StreamName}.jpg", "");
        assert!(e.starts_with("rules[0].overwrite_object"), "{e}");
        let e = one("*", ".livesnap-tmp/{AppName}/{StreamName}.jpg", "");
        assert!(
            e.contains("in livesnap's own folder \".livesnap-tmp\"/"),
            "{e}"
        );
    }

    #[test]
    fn rules_on_one_storage_keep_their_keys_apart() {
        const OW: &str = "{AppName}/{StreamName}.jpg";
        const SEQ: &str = "{AppName}/{StreamName}/{Sequence}.jpg";
        // The default layout for every app and for "live": one stream, one key.
        let ok = rules(&[("*", "default", OW, SEQ), ("live", "default", OW, SEQ)]);
        Config::parse(&ok).unwrap().validate().unwrap();
        // "live" writing its overwrite key where the others keep sequence objects.
        let e = err_of(&rules(&[
            ("*", "default", OW, SEQ),
            ("live", "default", "{AppName}/{StreamName}/1.jpg", ""),
        ]));
        assert!(e.starts_with("rules[1].overwrite_object: overwrite_object of the rule for domain \"*\", app \"live\" and sequence_object of the rule for domain \"*\", app \"*\""), "{e}");
        assert!(e.contains("\"live/a/1.jpg\""), "{e}");
        // Two apps whose rules leave the app out write each other's keys.
        let e = err_of(&rules(&[
            ("live", "default", "snap/{StreamName}.jpg", ""),
            ("vod", "default", "snap/{StreamName}.jpg", ""),
        ]));
        assert!(
            e.contains("\"snap/a.jpg\" for two different streams"),
            "{e}"
        );
        // ...unless they write to different places.
        let apart = rules(&[
            ("live", "default", "snap/{StreamName}.jpg", ""),
            ("vod", "other", "snap/{StreamName}.jpg", ""),
        ]);
        Config::parse(&apart).unwrap().validate().unwrap();
        // Two names for one place are one place.
        let same = apart.replace("root = \"/other\"", "");
        let e = err_of(&same);
        assert!(
            e.contains("(storage \"other\") can both render the key \"snap/a.jpg\""),
            "{e}"
        );
    }

    #[test]
    fn http_hosts_are_parsed_and_checked() {
        let ok = Config::parse(
            "[server]\nhttp_hosts = [\"Snap.Internal\", \"proxy.example:8443\", \"[::1]:9000\", \"10.0.0.5\"]",
        )
        .unwrap()
        .validate()
        .unwrap();
        let hosts: Vec<(&str, Option<u16>)> = ok
            .http_hosts
            .iter()
            .map(|h| (h.host.as_str(), h.port))
            .collect();
        assert_eq!(
            hosts,
            [
                ("snap.internal", None),
                ("proxy.example", Some(8443)),
                ("[::1]", Some(9000)),
                ("10.0.0.5", None)
            ]
        );
        for bad in [
            "\"\"",
            "\"http://x\"",
            "\"x/y\"",
            "\"x:0\"",
            "\"x:99999\"",
            "\"x:\"",
            "\"*\"",
            "\"[zz]\"",
            "\"a..b\"",
        ] {
            let e = err_of(&format!("[server]\nhttp_hosts = [\"ok\", {bad}]"));
            assert!(e.starts_with("server.http_hosts[1]: "), "{bad}: {e}");
        }
    }

    #[test]
    fn auth_entries_are_checked() {
        assert!(
            err_of("[[auth]]\ndomain = \"a.example\"\nallow_unsigned = true")
                .starts_with("auth[0].allow_unsigned")
        );
        assert!(err_of(
            "[[auth]]\ndomain = \"*\"\nallow_unsigned = true\nprimary_key = \"12345678\""
        )
        .starts_with("auth[0].primary_key"));
        let s = Config::parse(
            "[[auth]]\ndomain = \"a.example\"\nprimary_key = \"12345678\"\n[[auth]]\ndomain = \"*\"\nallow_unsigned = true",
        )
        .unwrap()
        .validate()
        .unwrap();
        assert!(s.auth.allow_unsigned);
        assert_eq!(s.auth.entries.len(), 1);
    }

    #[test]
    fn other_keys_are_checked() {
        assert!(err_of("[server]\nrtmp_listen = \"nope\"").starts_with("server.rtmp_listen"));
        assert!(err_of("[snapshot]\nquality = 0").starts_with("snapshot.quality"));
        assert!(err_of("[snapshot]\nqueue_keyframes = 0").starts_with("snapshot.queue_keyframes"));
        assert!(err_of("[snapshot]\nqueue_bytes = 1000").starts_with("snapshot.queue_bytes"));
        assert!(
            err_of("[snapshot]\nexact_gop_bytes = 1000").starts_with("snapshot.exact_gop_bytes")
        );
        assert!(err_of("[snapshot]\nexact_max_frames = 0").starts_with("snapshot.exact_max_frames"));
        assert!(
            err_of("[snapshot]\nqueue_bytes = 1048576\nmax_queued_bytes = 65536")
                .starts_with("snapshot.max_queued_bytes")
        );
        assert!(err_of("[log]\nformat = \"xml\"").starts_with("log.format"));
        assert!(err_of("[limits]\nmax_message_bytes = 1").starts_with("limits.max_message_bytes"));
        assert!(err_of("[storage.x]\nscheme = \"ftp\"").starts_with("storage.x.scheme"));
        assert!(err_of("[storage.x]\nscheme = \"fs\"").starts_with("storage.x.root"));
        assert!(err_of("[storage.x]\nscheme = \"s3\"").starts_with("storage.x.bucket"));
        assert!(err_of("[server]\nruntime_threads = 0").starts_with("server.runtime_threads"));
        assert!(err_of("[server]\nruntime_threads = 257").starts_with("server.runtime_threads"));
        assert!(err_of("[server]\ntls_reload_secs = 86401").starts_with("server.tls_reload_secs"));
    }

    #[test]
    fn access_lists_parse_and_errors_name_the_entry() {
        let s = Config::parse(&format!(
            "{BASE}\n[access]\npublish_from = [\"10.0.0.0/8\", \"::1\"]\n"
        ))
        .unwrap()
        .validate()
        .unwrap();
        assert!(s.publish_from.allows("10.9.8.7".parse().unwrap()));
        assert!(!s.publish_from.allows("192.0.2.1".parse().unwrap()));
        assert!(s.play_from.is_empty());
        let e = err_of(&format!(
            "{BASE}\n[access]\nplay_from = [\"192.0.2.0/24\", \"192.0.2.1/24\"]\n"
        ));
        assert!(
            e.starts_with("access.play_from[1]:") && e.contains("192.0.2.0/24"),
            "{e}"
        );
    }

    #[test]
    fn a_reload_names_the_sections_it_cannot_apply() {
        let base = Config::embedded_default();
        let with = |extra: &str| {
            let text = format!("{DEFAULT_CONFIG}\n{extra}");
            Config::parse(&text).unwrap()
        };
        let reloadable = with(
            "[[auth]]\ndomain = \"*\"\nprimary_key = \"12345678\"\n\
             [hooks]\non_publish = \"http://127.0.0.1:9/p\"\non_play = \"http://127.0.0.1:9/q\"\n\
             [play]\nenabled = false\nmax_players = 3\n\
             [access]\npublish_from = [\"10.0.0.0/8\"]\n\
             [[relays]]\ndomain = \"*\"\napp = \"live\"\ntargets = [\"rtmp://o/{AppName}/{StreamName}\"]\n",
        );
        assert!(base.restart_only_changes(&reloadable).is_empty());
        assert!(base.restart_only_changes(&base).is_empty());
        let mut other = with("[health]\nenabled = false\n[retention]\nenabled = false\n");
        other.server.idle_timeout_secs += 1;
        other.rules.clear();
        assert_eq!(
            base.restart_only_changes(&other),
            ["server", "health", "retention"]
        );
    }

    #[test]
    fn runtime_threads_default_to_none_and_pass_through() {
        let s = Config::embedded_default().validate().unwrap();
        assert_eq!(s.runtime_threads, None);
        let c = Config::parse(&format!("{BASE}\n[server]\nruntime_threads = 1\n")).unwrap();
        assert_eq!(c.validate().unwrap().runtime_threads, Some(1));
    }

    #[test]
    fn partial_message_budgets_are_checked() {
        let s = Config::embedded_default().validate().unwrap();
        assert_eq!(s.limits.max_partial_bytes_per_connection, 8 << 20);
        assert_eq!(s.limits.max_partial_bytes, 512 << 20);
        // Below one whole message: a legal message could never arrive.
        assert_eq!(
            err_of("[limits]\nmax_partial_bytes_per_connection = 4194303"),
            "limits.max_partial_bytes_per_connection: must be at least limits.max_message_bytes \
             and limits.max_command_bytes (4194304), got 4194303"
        );
        assert!(err_of("[limits]\nmax_message_bytes = 16777216")
            .starts_with("limits.max_partial_bytes_per_connection"));
        assert_eq!(
            err_of("[limits]\nmax_partial_bytes = 8388607"),
            "limits.max_partial_bytes: must be at least \
             limits.max_partial_bytes_per_connection (8388608), got 8388607"
        );
        let ok =
            "[limits]\nmax_partial_bytes_per_connection = 4194304\nmax_partial_bytes = 4194304";
        let l = Config::parse(ok).unwrap().validate().unwrap().limits;
        assert_eq!(
            (l.max_partial_bytes_per_connection, l.max_partial_bytes),
            (4 << 20, 4 << 20)
        );
    }
}
