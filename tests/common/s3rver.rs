//! `s3rver` (npm 3.7.1), a real S3-protocol server that ignores conditional writes
//! (`If-None-Match: *` creates replace): the store the start-up probe must refuse.
//! Found at `$CARGO_TARGET_DIR/npm/node_modules/.bin/s3rver`, then
//! `target/npm/node_modules/.bin/s3rver`, then on the PATH (`npm install --prefix
//! target/npm s3rver@3.7.1`, as the CI set-up does).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_addr;

pub const BUCKET: &str = "livesnap-s3rver";

/// An `s3rver` child on a loopback port with one bucket; killed on drop.
pub struct S3rver {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    let rel = "npm/node_modules/.bin/s3rver";
    let mut candidates = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join(rel));
    }
    candidates.push(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(rel),
    );
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("s3rver"))
}

impl S3rver {
    pub async fn start() -> S3rver {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let child = match Command::new(binary())
            .arg("-d")
            .arg(dir.path())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &addr.port().to_string(),
                "--silent",
            ])
            .args([
                "--configure-bucket",
                BUCKET,
                "--allow-mismatched-signatures",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot run s3rver ({}): {e}; install it with \
                 `npm install --prefix target/npm s3rver@3.7.1`",
                binary().display()
            ),
        };
        let mut s = S3rver {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("s3rver exited before listening: {status}");
            }
            assert!(Instant::now() < deadline, "s3rver did not listen in 15 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for S3rver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
