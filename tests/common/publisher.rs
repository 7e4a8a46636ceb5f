//! A real RTMP publisher (the library's client, `livesnap::rtmp::client`) that replays
//! FLV fixtures through `livesnap::testing::replay`; the client handshake the raw peer
//! starts with; and helpers that publish a fixture with it, or with the `ffmpeg` CLI.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use livesnap::rtmp::client::{self, ClientError, ClientOptions, Endpoint};
use livesnap::testing::replay::{replay, Recording, ReplayOptions, Sent};
use tokio::net::TcpStream;

use super::{fixture, fixture_tags, TestServer};

/// Does the RTMP client handshake on a fresh connection; returns the socket and any
/// bytes the server sent after S2.
pub async fn connect_handshake(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let rest = livesnap::testing::wire::handshake(&mut sock)
        .await
        .expect("handshake");
    (sock, rest)
}

/// A publisher: the library's RTMP client on a TCP connection (none once refused).
pub struct Publisher {
    client: Option<client::Publisher<TcpStream>>,
}

/// How a publish attempt ended.
#[derive(Debug, PartialEq)]
pub enum PublishOutcome {
    Accepted,
    /// The server refused (the status code and description it sent) or closed the
    /// connection.
    Refused(String),
}

impl Publisher {
    /// Connects, handshakes, sends connect (with `tc_url`) and publish.
    pub async fn connect(
        addr: SocketAddr,
        tc_url: &str,
        app: &str,
        stream_key: &str,
    ) -> (Publisher, PublishOutcome) {
        let sock = TcpStream::connect(addr).await.unwrap();
        Publisher::connect_on(sock, tc_url, app, stream_key).await
    }

    /// [`Publisher::connect`] on an already connected socket.
    pub async fn connect_on(
        sock: TcpStream,
        tc_url: &str,
        app: &str,
        stream_key: &str,
    ) -> (Publisher, PublishOutcome) {
        let endpoint = Endpoint {
            tls: false,
            host: "test".into(),
            port: 1935,
            app: app.to_string(),
            tc_url: tc_url.to_string(),
        };
        match client::Publisher::publish(sock, &endpoint, stream_key, ClientOptions::default())
            .await
        {
            Ok(client) => (
                Publisher {
                    client: Some(client),
                },
                PublishOutcome::Accepted,
            ),
            Err(e) if e.is_refusal() => {
                let why = match e.status() {
                    Some(s) => format!("{} {}", s.code, s.description),
                    None => e.to_string(),
                };
                (Publisher { client: None }, PublishOutcome::Refused(why))
            }
            Err(e) => panic!("publish of {app}/{stream_key:?} failed: {e}"),
        }
    }

    /// The connection; panics for a refused publish.
    pub fn client(&mut self) -> &mut client::Publisher<TcpStream> {
        self.client.as_mut().expect("the publish was accepted")
    }

    pub async fn video(&mut self, ts: u32, data: Bytes) -> Result<(), ClientError> {
        self.client().send_video(ts, &data).await
    }

    pub async fn audio(&mut self, ts: u32, data: Bytes) -> Result<(), ClientError> {
        self.client().send_audio(ts, &data).await
    }

    /// Replays an FLV file's audio and video at `speed` × real time (0 = as fast as
    /// possible), with `ts_offset` added to every timestamp.
    pub async fn replay(
        &mut self,
        file: &Path,
        speed: f64,
        ts_offset: u32,
    ) -> Result<Sent, ClientError> {
        let rec = Recording::load(file).unwrap();
        let opts = ReplayOptions {
            speed,
            ts_offset,
            loops: 1,
        };
        replay(self.client(), &rec, opts).await
    }

    /// Waits until the server closes the connection (or `limit` passes); true if it did.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            loop {
                if self.client().service().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
    }

    /// Ends the publish politely (FCUnpublish/deleteStream) and closes.
    pub async fn finish(self) {
        if let Some(c) = self.client {
            let _ = c.finish().await;
        }
    }
}

/// A publisher of `app`/`stream` (tcUrl `rtmp://ADDR/APP`); panics unless accepted.
pub async fn start_publish(addr: SocketAddr, app: &str, stream: &str) -> Publisher {
    let tc_url = format!("rtmp://{addr}/{app}");
    let (p, outcome) = Publisher::connect(addr, &tc_url, app, stream).await;
    assert_eq!(outcome, PublishOutcome::Accepted, "{app}/{stream}");
    p
}

/// Publishes a whole fixture at `speed` and finishes.
pub async fn publish_fixture(server: &TestServer, app: &str, stream: &str, file: &str, speed: f64) {
    publish_fixture_to(server.rtmp, app, stream, file, speed).await;
}

/// Publishes a whole fixture at `speed` and finishes, like [`publish_fixture`], for a
/// spawned task that cannot borrow the `TestServer`.
pub async fn publish_fixture_to(addr: SocketAddr, app: &str, stream: &str, file: &str, speed: f64) {
    let mut p = start_publish(addr, app, stream).await;
    p.replay(&fixture(file), speed, 0).await.unwrap();
    p.finish().await;
}

/// Sends the fixture's tags with `from_ms <= timestamp < to_ms`, as fast as possible.
pub async fn send_range(p: &mut Publisher, file: &str, from_ms: u32, to_ms: u32) {
    for tag in fixture_tags(file) {
        if tag.timestamp_ms < from_ms || tag.timestamp_ms >= to_ms {
            continue;
        }
        match tag.tag_type {
            9 => p.video(tag.timestamp_ms, tag.data).await.unwrap(),
            8 => p.audio(tag.timestamp_ms, tag.data).await.unwrap(),
            _ => {}
        }
    }
}

/// The `ffmpeg` CLI publishing a fixture to `url` at real time (`-re`, streams copied,
/// errors only); the caller sets its stdio and runs it.
pub fn ffmpeg_publish(file: &str, url: &str) -> tokio::process::Command {
    let mut ffmpeg = tokio::process::Command::new("ffmpeg");
    ffmpeg
        .args(["-v", "error", "-re", "-i"])
        .arg(fixture(file))
        .args(["-c", "copy", "-f", "flv", url]);
    ffmpeg
}
