//! A real S3-protocol server for tests: `moto_server` on a loopback port.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_addr, http_request};

/// A `moto_server` child listening on a loopback port; killed (and reaped) on drop,
/// also when a test panics.
pub struct MotoServer {
    child: Child,
    pub addr: SocketAddr,
    /// Its stderr (werkzeug logs every request there), quoted when it fails to start.
    log: tempfile::NamedTempFile,
}

impl MotoServer {
    /// Starts it on a free port and waits until it answers HTTP (at most 10 s). A port
    /// taken between our probe and moto's bind makes moto exit; we then try another.
    pub async fn start() -> MotoServer {
        let mut failures = Vec::new();
        for _ in 0..5 {
            let addr = free_addr();
            let port = addr.port();
            let log = tempfile::NamedTempFile::new().expect("temp file for moto's log");
            let stderr = log.reopen().expect("reopen moto's log");
            let child = match Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
            {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "moto_server is not on the PATH: the S3 tests need it \
                     (.ci/setup installs it into target/ci-venv; .ci/test puts it on the PATH)"
                ),
                Err(e) => panic!("cannot run moto_server: {e}"),
            };
            let mut moto = MotoServer { child, addr, log };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = moto.child.try_wait().expect("poll moto_server") {
                    failures.push(format!(
                        "port {port}: exited ({status}): {}",
                        moto.log_text()
                    ));
                    break;
                }
                if let Ok((200, _)) = http_request(moto.addr, "GET", "/").await {
                    return moto;
                }
                assert!(
                    Instant::now() < deadline,
                    "moto_server did not answer HTTP on {} within 10 s: {}",
                    moto.addr,
                    moto.log_text()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("moto_server could not start: {failures:#?}");
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its stderr: werkzeug logs every request there.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Creates a bucket with a plain unsigned `PUT /NAME` (moto takes any request).
    pub async fn create_bucket(&self, name: &str) {
        let (status, body) = http_request(self.addr, "PUT", &format!("/{name}"))
            .await
            .expect("PUT bucket");
        assert_eq!(status, 200, "create bucket {name}: {body}");
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `[storage.s3]` target on `endpoint` (moto takes any credentials) and a rule writing
/// both modes (`{Sequence}` keys) to it.
pub fn s3_config(bucket: &str, endpoint: &str, timeout_secs: u64, retries: usize) -> String {
    format!(
        r#"
[storage.s3]
scheme = "s3"
bucket = "{bucket}"
endpoint = "{endpoint}"
region = "us-east-1"
access_key_id = "livesnap-test-key"
secret_access_key = "livesnap-test-secret"
disable_config_load = true
disable_ec2_metadata = true
timeout_secs = {timeout_secs}
retries = {retries}

[[rules]]
domain = "*"
app = "*"
interval_secs = 5
storage = "s3"
overwrite_object = "{{AppName}}/{{StreamName}}.jpg"
sequence_object = "{{AppName}}/{{StreamName}}/{{Sequence}}.jpg"
"#
    )
}
