//! A real livesnap node on 127.0.0.1:0 writing to a temporary folder: starting and
//! stopping it, and looking at what it stored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use livesnap::config::Config;
use livesnap::server::{self, Running};

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
    let settings = Config::parse(&text).unwrap().validate().unwrap();
    let running = server::start(settings).await.unwrap();
    TestServer {
        rtmp: running.rtmp_addr,
        http: running.http_addr,
        running: Some(running),
        dir,
    }
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

/// Snapshots stored so far by the first live stream (0 when none is live).
pub fn first_stream_stored(node: &livesnap::node::Node) -> u64 {
    node.registry.list().first().map_or(0, |s| {
        livesnap::snapshot::stats::StreamStats::get(&s.stats.stored)
    })
}
