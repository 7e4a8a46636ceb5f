//! A real livesnap node on 127.0.0.1:0 writing to a temporary folder: starting and
//! stopping it, and looking at what it stored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use livesnap::config::Config;
use livesnap::server::{self, Running};
use livesnap::snapshot::stats::StreamStats;

use super::logs;

/// Logs to the test output when RUST_LOG is set, and captures warnings about
/// connections for [`logs::about`].
pub fn init_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let output = tracing_subscriber::fmt::layer()
        .with_test_writer()
        .with_filter(tracing_subscriber::EnvFilter::from_default_env());
    let capture = logs::Capture.with_filter(tracing_subscriber::filter::filter_fn(|m| {
        m.is_span() || *m.level() <= tracing::Level::WARN
    }));
    let _ = tracing_subscriber::registry()
        .with(output)
        .with(capture)
        .try_init();
}

/// A node with its snapshot folder.
pub struct TestServer {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
}

impl TestServer {
    /// Starts a node from a whole config text; `dir` (which the config's folders are
    /// usually in) lives as long as the node's `TestServer`. Most tests want
    /// [`start_server`], which writes the config for them.
    pub async fn start(dir: tempfile::TempDir, config: &str) -> TestServer {
        let settings = Config::parse(config).unwrap().validate().unwrap();
        let running = server::start(settings).await.unwrap();
        TestServer {
            rtmp: running.rtmp_addr,
            http: running.http_addr,
            running: Some(running),
            dir,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("snapshots")
    }

    pub fn url(&self, app: &str, stream: &str) -> String {
        format!("rtmp://{}/{app}/{stream}", self.rtmp)
    }

    pub async fn stop(&mut self) -> bool {
        match self.running.take() {
            Some(r) => r.shutdown().await,
            None => true,
        }
    }

    pub fn node(&self) -> &std::sync::Arc<livesnap::node::Node> {
        &self.running.as_ref().expect("running").node
    }

    /// An operator of its own on the node's storage target `name`, built the way the node
    /// builds it; it outlives the node.
    pub fn operator(&self, name: &str) -> opendal::Operator {
        livesnap::storage::build(&self.node().settings.storage[name])
            .unwrap_or_else(|e| panic!("build storage {name}: {e}"))
            .op
    }
}

/// The default rules block used by most tests: every app, 5 s, both modes.
pub const DEFAULT_RULES: &str = r#"
[[rules]]
domain = "*"
app = "*"
interval_secs = 5
storage = "default"
overwrite_object = "{AppName}/{StreamName}.jpg"
sequence_object = "{AppName}/{StreamName}/{Sequence}.jpg"
"#;

/// Starts a node whose `default` storage is an fs folder in a fresh temp dir;
/// `extra` is appended to the config (rules, limits, more storage).
pub async fn start_server(extra: &str) -> TestServer {
    start_server_in(tempfile::tempdir().unwrap(), extra).await
}

pub async fn start_server_in(dir: tempfile::TempDir, extra: &str) -> TestServer {
    start_server_with(dir, 3, extra).await
}

/// [`start_server_in`] with another `server.handshake_timeout_secs`.
pub async fn start_server_with(
    dir: tempfile::TempDir,
    handshake_secs: u64,
    extra: &str,
) -> TestServer {
    init_logs();
    let root = dir.path().join("snapshots");
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
handshake_timeout_secs = {handshake_secs}
idle_timeout_secs = 5
[snapshot]
workers = 2
[storage.default]
scheme = "fs"
root = "{}"
{extra}
"#,
        root.display()
    );
    TestServer::start(dir, &text).await
}

/// Every file under `root` (relative paths, sorted), leaving out the fs temp folder.
pub fn list_files(root: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.retain(|p| !p.starts_with(livesnap::storage::FS_TMP_DIR));
    out.sort();
    out
}

/// The objects live/`stream` leaves after `n` snapshots under the tests' usual rule
/// (overwrite `{AppName}/{StreamName}.jpg`, sequence `{AppName}/{StreamName}/{Sequence}.jpg`,
/// as in [`DEFAULT_RULES`]), sorted as [`list_files`] lists them.
pub fn snapshot_keys(stream: &str, n: u64) -> Vec<String> {
    let mut keys: Vec<String> = (1..=n)
        .map(|i| format!("live/{stream}/{i}.jpg"))
        .chain([format!("live/{stream}.jpg")])
        .collect();
    keys.sort();
    keys
}

/// The value of one of a stream's counters ([`StreamStats`]).
pub fn count(c: &AtomicU64) -> u64 {
    StreamStats::get(c)
}

/// Snapshots stored so far by the first live stream (0 when none is live).
pub fn first_stream_stored(node: &livesnap::node::Node) -> u64 {
    node.registry
        .list()
        .first()
        .map_or(0, |s| count(&s.stats.stored))
}
