//! Test harness shared by the integration tests:
//! - `server`: a real livesnap node on 127.0.0.1:0 writing to a temporary folder;
//! - `publisher`: a real RTMP publisher (the library's client) that replays FLV
//!   fixtures;
//! - `raw`: a raw RTMP peer that sends what no real client would (hostile tests);
//! - `logs`: what the node logged about each peer; `moto`: an S3-protocol server;
//!   `s3rver`: one that ignores conditional writes; `fault_proxy`: a lost response.
//! - `nginx`: a real nginx-rtmp origin per test, and framemd5 comparison of recordings;
//! - `upstream`: stand-ins for failing upstream origins (black hole, stalling proxy, TLS);
//! - `external`: ffmpeg's reference decodes and headless Chromium.
//!
//! `server` and `publisher` are re-exported, so `use common::*;` brings them in; `raw`,
//! `logs` and `moto` are named where they are used. The small helpers below (fixtures,
//! free ports, waiting, HTTP, JPEG, RSS) serve several.
#![allow(dead_code)]

pub mod external;
pub mod fault_proxy;
pub mod logs;
pub mod moto;
pub mod nginx;
pub mod publisher;
pub mod raw;
pub mod s3rver;
pub mod server;
pub mod upstream;

// A test binary that uses none of a module's items would warn of an unused import.
#[allow(unused_imports)]
pub use publisher::*;
#[allow(unused_imports)]
pub use server::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use livesnap::media::flv::{FlvReader, FlvTag};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Every tag of a fixture, in file order.
pub fn fixture_tags(name: &str) -> Vec<FlvTag> {
    let data = Bytes::from(std::fs::read(fixture(name)).unwrap());
    FlvReader::new(data).unwrap().map(|t| t.unwrap()).collect()
}

/// An address on 127.0.0.1 whose port was free a moment ago (bound to 0, then released).
pub fn free_addr() -> SocketAddr {
    livesnap::testing::probe::free_addr().expect("bind 127.0.0.1:0")
}

/// The audio message at `timestamp` (ms) as `player` receives it, skipping the others;
/// panics when it has not come within `limit` or the play ends first.
#[allow(dead_code)]
pub async fn audio_at<S>(
    player: &mut livesnap::rtmp::client::Player<S>,
    timestamp: u32,
    limit: Duration,
) -> livesnap::rtmp::client::Media
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let wait = async {
        loop {
            let m = player
                .recv()
                .await
                .unwrap()
                .expect("the publish is still on");
            if m.kind == livesnap::rtmp::client::MediaKind::Audio && m.timestamp == timestamp {
                return m;
            }
        }
    };
    tokio::time::timeout(limit, wait).await.unwrap_or_else(|_| {
        panic!("the audio message at {timestamp} ms did not arrive within {limit:?}")
    })
}

/// Waits until `cond` holds or the timeout passes; returns whether it held.
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// A TCP connection to `addr` from the local address `from` (any port); on Linux every
/// 127.x.y.z address is the loopback, so tests can act as many peers.
pub async fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from, 0))?;
    sock.connect(addr).await
}

/// Decodes a JPEG to RGB with mozjpeg: (width, height, pixels).
pub fn decode_jpeg(data: &[u8]) -> (usize, usize, Vec<u8>) {
    let d = mozjpeg::Decompress::new_mem(data).unwrap();
    let mut img = d.rgb().unwrap();
    let (w, h) = (img.width(), img.height());
    let pixels: Vec<[u8; 3]> = img.read_scanlines().unwrap();
    img.finish().unwrap();
    (w, h, pixels.into_iter().flatten().collect())
}

/// One hand-written HTTP/1.1 request with an empty body (`Connection: close`), for
/// health checks and for talking to the S3 test server without a client crate.
/// Returns the status code and the body (a chunked body is returned as received).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let mut sock = TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut raw))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no HTTP answer in 10 s")
        })??;
    let text = String::from_utf8_lossy(&raw);
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP response: {text:?}"),
        )
    };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

/// Resident set size of this process, which runs the node under test (`VmRSS` of
/// /proc/self/status), in bytes.
pub fn vm_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmRSS in kB");
    kb * 1024
}
