//! A real origin for the RTMP client and relay tests: nginx with the RTMP module
//! (Debian's `nginx` + `libnginx-mod-rtmp`), started per test on a loopback port. It
//! fails, never skips, when nginx or its RTMP module is missing.
//!
//! Applications: `live` (records everything into `rec/`, `wait_key on`) and `closed`
//! (publishing denied: nginx sends `Publish.Start`, then closes).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use livesnap::rtmp::client::Endpoint;
use tokio::net::TcpStream;

pub const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// An nginx process serving RTMP on 127.0.0.1, killed on drop.
pub struct Nginx {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx on a free port; `server_extra` goes into the server block.
    pub fn start(server_extra: &str) -> Nginx {
        Nginx::start_on(None, server_extra)
    }

    /// Starts nginx on `port` (a free one when `None`; retried on another free port if
    /// it was taken meanwhile, unless `port` was given).
    pub fn start_on(port: Option<u16>, server_extra: &str) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!("nginx is required for these tests: apt-get install nginx libnginx-mod-rtmp")
            });
        assert!(
            Path::new(RTMP_MODULE).exists(),
            "nginx's RTMP module {RTMP_MODULE} is required: apt-get install libnginx-mod-rtmp"
        );
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let rec = dir.path().join("rec");
            std::fs::create_dir(&rec).unwrap();
            let port = port.unwrap_or_else(|| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            });
            let d = dir.path().display();
            let conf = format!(
                r#"load_module {RTMP_MODULE};
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        {server_extra}
        application live {{
            live on;
            wait_key on;
            record all;
            record_path {};
        }}
        application closed {{
            live on;
            allow publish 10.0.0.1;
            deny publish all;
        }}
    }}
}}
"#,
                rec.display()
            );
            let conf_path = dir.path().join("nginx.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let mut child = Command::new(nginx)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {nginx}: {e}"));
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Nginx { child, port, dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        }
        panic!("nginx did not start listening; its error log:\n{last_log}");
    }

    pub fn endpoint(&self, app: &str) -> Endpoint {
        Endpoint::parse(&format!("rtmp://127.0.0.1:{}/{app}", self.port)).unwrap()
    }

    /// `rtmp://127.0.0.1:PORT/APP`.
    pub fn url(&self, app: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app}", self.port)
    }

    pub async fn dial(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Where `live` records `stream`.
    pub fn recorded(&self, stream: &str) -> PathBuf {
        self.dir.path().join("rec").join(format!("{stream}.flv"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// The log lines of the connection that published `stream` (nginx numbers its
    /// connections `*N`), once there is one.
    fn publisher_lines(&self, stream: &str) -> Option<Vec<String>> {
        let log = self.log();
        let conn = log.lines().find_map(|l| {
            l.contains(&format!("publish: name='{stream}'"))
                .then(|| {
                    l.split_whitespace()
                        .find(|w| w.starts_with('*'))
                        .map(str::to_owned)
                })
                .flatten()
        })?;
        let tag = format!(" {conn} ");
        Some(
            log.lines()
                .filter(|l| l.contains(&tag))
                .map(str::to_owned)
                .collect(),
        )
    }

    /// Whether the publisher of `stream` ended its publish with `deleteStream` before
    /// it disconnected (an orderly unpublish rather than a dropped connection).
    pub fn unpublished_cleanly(&self, stream: &str) -> bool {
        let Some(lines) = self.publisher_lines(stream) else {
            return false;
        };
        let delete = lines.iter().position(|l| l.contains("deleteStream"));
        let gone = lines.iter().position(|l| l.contains(" disconnect,"));
        matches!((delete, gone), (Some(d), Some(g)) if d < g)
    }

    /// Waits until the publisher of `stream` has disconnected from nginx and the
    /// recording's size has stopped changing.
    pub async fn wait_recorded(&self, stream: &str) -> PathBuf {
        let path = self.recorded(stream);
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = None;
        loop {
            let size = std::fs::metadata(&path).map(|m| m.len()).ok();
            let gone = self
                .publisher_lines(stream)
                .is_some_and(|l| l.iter().any(|l| l.contains(" disconnect,")));
            if size.is_some() && size == last && gone {
                return path;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not finish recording {}; log:\n{}",
                path.display(),
                self.log()
            );
            last = size;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ffmpeg -f framemd5 -c copy` of one stream kind (`"v"` or `"a"`): one line per frame
/// (stream index, dts, pts, duration, size, md5).
pub fn framemd5(file: &Path, kind: &str) -> Vec<String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args([
            "-map",
            &format!("0:{kind}"),
            "-c",
            "copy",
            "-f",
            "framemd5",
            "-",
        ])
        .output()
        .expect("ffmpeg is required for these tests: apt-get install ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg framemd5 of {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// [`framemd5`] of the video stream.
pub fn video_framemd5(file: &Path) -> Vec<String> {
    framemd5(file, "v")
}

/// framemd5 lines without side data (nginx's recording announces the AAC config as
/// side data on its first packet): stream, dts, pts, duration, size, md5.
pub fn frames_only(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| l.split(',').take(6).collect::<Vec<_>>().join(","))
        .collect()
}

/// framemd5 lines with dts and pts made relative to the first frame's dts (nginx starts
/// a recording at 0 wherever it joined the stream).
pub fn rebased(lines: &[String]) -> Vec<String> {
    let fields = |l: &String| {
        l.split(',')
            .map(|f| f.trim().to_owned())
            .collect::<Vec<_>>()
    };
    let Some(first) = lines.first() else {
        return Vec::new();
    };
    let dts0: i64 = fields(first)[1].parse().unwrap();
    lines
        .iter()
        .map(|l| {
            let f = fields(l);
            let dts: i64 = f[1].parse().unwrap();
            let pts: i64 = f[2].parse().unwrap();
            format!("{},{},{},{},{}", dts - dts0, pts - dts0, f[3], f[4], f[5])
        })
        .collect()
}
