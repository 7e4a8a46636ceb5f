//! A real RTMP publisher built on rml_rtmp's client session, which replays FLV fixtures;
//! the RTMP client handshake it (and the raw peer) starts with; and helpers that publish
//! a fixture with it, or with the `ffmpeg` CLI.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use livesnap::media::flv::FlvReader;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{fixture, fixture_tags, TestServer};

/// Does the RTMP client handshake on a fresh connection; returns the socket and any
/// bytes the server sent after S2.
pub async fn connect_handshake(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    handshake_on(TcpStream::connect(addr).await.unwrap()).await
}

/// The RTMP client handshake on a connected socket.
pub async fn handshake_on(mut sock: TcpStream) -> (TcpStream, Vec<u8>) {
    let mut hs = Handshake::new(PeerType::Client);
    let p0p1 = hs.generate_outbound_p0_and_p1().unwrap();
    sock.write_all(&p0p1).await.unwrap();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0, "server closed during handshake");
        match hs.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                sock.write_all(&response_bytes).await.unwrap();
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                sock.write_all(&response_bytes).await.unwrap();
                return (sock, remaining_bytes);
            }
        }
    }
}

/// A publisher built on rml_rtmp's client session.
pub struct Publisher {
    pub sock: TcpStream,
    session: ClientSession,
    buf: Vec<u8>,
}

/// How a publish attempt ended.
#[derive(Debug, PartialEq)]
pub enum PublishOutcome {
    Accepted,
    /// The server closed the connection; the bytes it sent (status messages) are kept.
    Closed(Vec<u8>),
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
        let (sock, rest) = handshake_on(sock).await;
        let mut cfg = ClientSessionConfig::new();
        cfg.tc_url = Some(tc_url.to_string());
        let (session, initial) = ClientSession::new(cfg).unwrap();
        let mut p = Publisher {
            sock,
            session,
            buf: vec![0u8; 65536],
        };
        let mut seen = Vec::new();
        for r in initial {
            p.send_result(r).await;
        }
        p.feed(&rest, &mut seen).await;
        let r = p.session.request_connection(app.to_string()).unwrap();
        p.send_result(r).await;
        if let Err(bytes) = p
            .until(&mut seen, |e| {
                matches!(e, ClientSessionEvent::ConnectionRequestAccepted)
            })
            .await
        {
            return (p, PublishOutcome::Closed(bytes));
        }
        let r = p
            .session
            .request_publishing(stream_key.to_string(), PublishRequestType::Live)
            .unwrap();
        p.send_result(r).await;
        match p
            .until(&mut seen, |e| {
                matches!(e, ClientSessionEvent::PublishRequestAccepted)
            })
            .await
        {
            Ok(()) => (p, PublishOutcome::Accepted),
            Err(bytes) => (p, PublishOutcome::Closed(bytes)),
        }
    }

    async fn send_result(&mut self, r: ClientSessionResult) {
        if let ClientSessionResult::OutboundResponse(pkt) = r {
            self.sock.write_all(&pkt.bytes).await.unwrap();
        }
    }

    async fn feed(&mut self, data: &[u8], seen: &mut Vec<ClientSessionEvent>) {
        for r in self.session.handle_input(data).unwrap() {
            match r {
                ClientSessionResult::OutboundResponse(pkt) => {
                    self.sock.write_all(&pkt.bytes).await.unwrap()
                }
                ClientSessionResult::RaisedEvent(e) => seen.push(e),
                _ => {}
            }
        }
    }

    /// Reads until an event matches; on close returns every byte received meanwhile.
    async fn until(
        &mut self,
        seen: &mut Vec<ClientSessionEvent>,
        want: impl Fn(&ClientSessionEvent) -> bool,
    ) -> Result<(), Vec<u8>> {
        let mut raw = Vec::new();
        loop {
            if seen.iter().any(&want) {
                seen.clear();
                return Ok(());
            }
            let n =
                match tokio::time::timeout(Duration::from_secs(10), self.sock.read(&mut self.buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    Ok(Err(_)) => 0,
                    Err(_) => panic!("no answer from the server in 10 s"),
                };
            if n == 0 {
                return Err(raw);
            }
            raw.extend_from_slice(&self.buf[..n]);
            let data = self.buf[..n].to_vec();
            self.feed(&data, seen).await;
        }
    }

    pub async fn video(&mut self, ts: u32, data: Bytes) -> std::io::Result<()> {
        let r = self
            .session
            .publish_video_data(data, RtmpTimestamp::new(ts), false)
            .unwrap();
        if let ClientSessionResult::OutboundResponse(pkt) = r {
            self.sock.write_all(&pkt.bytes).await?;
        }
        Ok(())
    }

    pub async fn audio(&mut self, ts: u32, data: Bytes) -> std::io::Result<()> {
        let r = self
            .session
            .publish_audio_data(data, RtmpTimestamp::new(ts), false)
            .unwrap();
        if let ClientSessionResult::OutboundResponse(pkt) = r {
            self.sock.write_all(&pkt.bytes).await?;
        }
        Ok(())
    }

    /// Replays an FLV file's audio and video at `speed` × real time (0 = as fast as
    /// possible), with `ts_offset` added to every timestamp.
    pub async fn replay(&mut self, file: &Path, speed: f64, ts_offset: u32) -> std::io::Result<()> {
        let data = Bytes::from(std::fs::read(file).unwrap());
        let start = Instant::now();
        let mut first_ts = None;
        for tag in FlvReader::new(data).unwrap() {
            let tag = tag.unwrap();
            let t0 = *first_ts.get_or_insert(tag.timestamp_ms);
            if speed > 0.0 {
                let due =
                    Duration::from_secs_f64(f64::from(tag.timestamp_ms - t0) / 1000.0 / speed);
                let now = start.elapsed();
                if due > now {
                    tokio::time::sleep(due - now).await;
                }
            }
            let ts = tag.timestamp_ms.wrapping_add(ts_offset);
            match tag.tag_type {
                9 => self.video(ts, tag.data).await?,
                8 => self.audio(ts, tag.data).await?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Ends the publish politely (FCUnpublish/deleteStream) and closes.
    pub async fn finish(mut self) {
        if let Ok(results) = self.session.stop_publishing() {
            for r in results {
                self.send_result(r).await;
            }
        }
        let _ = self.sock.shutdown().await;
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
