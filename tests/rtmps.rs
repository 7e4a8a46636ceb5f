//! RTMPS (`server.rtmps_listen`): real TLS over loopback with a self-signed certificate
//! made by the test, publishes by the library's client and by ffmpeg, peers that do not
//! speak TLS or never finish, the limits both listeners share, and the config checks.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use livesnap::config::Config;
use livesnap::rtmp::client::{self, ClientOptions, Endpoint, MediaKind};
use livesnap::testing::replay::{replay, Recording, ReplayOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

const FIXTURE: &str = "baseline_640x360_gop1s.flv";

/// A self-signed certificate for "localhost" and its key, as PEM files in `dir`.
struct Cert {
    der: rustls::pki_types::CertificateDer<'static>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

fn make_cert(dir: &Path, name: &str) -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    write_cert(dir, name, &ck.cert, &ck.signing_key)
}

/// [`make_cert`] valid until midnight (UTC) of `(year, month, day)`.
fn make_cert_until(dir: &Path, name: &str, (y, m, d): (i32, u8, u8)) -> Cert {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    write_cert(dir, name, &cert, &key)
}

fn write_cert(dir: &Path, name: &str, cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> Cert {
    let cert_file = dir.join(format!("{name}.crt"));
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    Cert {
        der: cert.der().clone(),
        cert_file,
        key_file,
    }
}

/// A node with an RTMP and an RTMPS listener; returns it, its RTMPS address and the
/// certificate it serves.
async fn start_tls_node(handshake_secs: u64, extra: &str) -> (TestServer, SocketAddr, Cert) {
    start_tls_node_with(handshake_secs, "", extra).await
}

/// [`start_tls_node`] with more `[server]` keys.
async fn start_tls_node_with(
    handshake_secs: u64,
    server_extra: &str,
    extra: &str,
) -> (TestServer, SocketAddr, Cert) {
    start_tls_node_cert(handshake_secs, server_extra, extra, |dir| {
        make_cert(dir, "node")
    })
    .await
}

/// [`start_tls_node_with`] serving the certificate `make` writes into the node's folder.
async fn start_tls_node_cert(
    handshake_secs: u64,
    server_extra: &str,
    extra: &str,
    make: impl FnOnce(&Path) -> Cert,
) -> (TestServer, SocketAddr, Cert) {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let cert = make(dir.path());
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
rtmps_listen = "127.0.0.1:0"
tls_cert_file = "{}"
tls_key_file = "{}"
http_listen = "127.0.0.1:0"
handshake_timeout_secs = {handshake_secs}
idle_timeout_secs = 5
{server_extra}
[snapshot]
workers = 2
[storage.default]
scheme = "fs"
root = "{}"
{DEFAULT_RULES}
{extra}
"#,
        cert.cert_file.display(),
        cert.key_file.display(),
        dir.path().join("snapshots").display(),
    );
    let server = TestServer::start(dir, &text).await;
    let tls = server
        .running
        .as_ref()
        .unwrap()
        .rtmps_addr
        .expect("RTMPS on");
    (server, tls, cert)
}

/// A TLS connection to `addr` that trusts only `cert` (and checks the name "localhost").
async fn tls_connect(addr: SocketAddr, cert: &Cert) -> std::io::Result<TlsStream<TcpStream>> {
    tls_connect_on(TcpStream::connect(addr).await?, cert).await
}

/// [`tls_connect`] on an already connected socket.
async fn tls_connect_on(tcp: TcpStream, cert: &Cert) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// Publishes the fixture as live/`stream` over RTMPS with the library's client.
async fn publish_over_tls(addr: SocketAddr, cert: &Cert, stream: &str) {
    let io = tls_connect(addr, cert).await.expect("TLS handshake");
    let mut p = tls_publisher(io, addr, stream).await;
    let rec = Recording::load(fixture(FIXTURE)).unwrap();
    let opts = ReplayOptions {
        speed: 4.0,
        ts_offset: 0,
        loops: 1,
    };
    let sent = replay(&mut p, &rec, opts).await.unwrap();
    assert!(sent.keyframes > 0);
    p.finish().await.unwrap();
}

/// The app `live` at the node's RTMPS address `tls`: the certificate's name "localhost",
/// and the tcUrl `rtmps://ADDR/live`, whose domain a plain client of the node names too.
fn tls_endpoint(tls: SocketAddr) -> Endpoint {
    Endpoint {
        tls: true,
        host: "localhost".into(),
        port: tls.port(),
        app: "live".into(),
        tc_url: format!("rtmps://{tls}/live"),
    }
}

/// A publish of live/`stream` on an open TLS connection to the node's RTMPS address `tls`
/// ([`tls_endpoint`]).
async fn tls_publisher(
    io: TlsStream<TcpStream>,
    tls: SocketAddr,
    stream: &str,
) -> client::Publisher<TlsStream<TcpStream>> {
    client::Publisher::publish(io, &tls_endpoint(tls), stream, ClientOptions::default())
        .await
        .expect("publish accepted over TLS")
}

/// Waits up to `limit` for the peer to close; returns what it sent meanwhile, or None
/// if it was still open at the end.
async fn closed_within(sock: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    match tokio::time::timeout(limit, sock.read_to_end(&mut got)).await {
        Ok(_) => Some(got),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_publish_stores_the_same_snapshots_as_plain_rtmp_alongside() {
    let (mut server, tls, cert) = start_tls_node(3, "").await;
    // Both listeners at once: one publish over TLS, one over plain RTMP.
    let plain = server.rtmp;
    let plain_pub = tokio::spawn(publish_fixture_to(plain, "live", "plain", FIXTURE, 4.0));
    publish_over_tls(tls, &cert, "tls").await;
    plain_pub.await.unwrap();
    let metrics = server.node().metrics.clone();
    assert!(server.stop().await, "shutdown finished in time");
    let files = list_files(&server.root());
    let mut want = snapshot_keys("plain", 3);
    want.extend(snapshot_keys("tls", 3));
    want.sort();
    assert_eq!(files, want);
    // The same keyframes, decoded and encoded the same way: the same bytes.
    for key in ["1", "2", "3"] {
        let read = |s: &str| std::fs::read(server.root().join(format!("live/{s}/{key}.jpg")));
        assert_eq!(
            read("tls").unwrap(),
            read("plain").unwrap(),
            "snapshot {key}"
        );
    }
    assert_eq!(metrics.rejected_count("tls"), 0);
    assert_eq!(metrics.connections_accepted.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_over_tls_gets_every_message_of_a_plain_publish() {
    let (mut server, tls, cert) = start_tls_node(3, "").await;
    let publisher = tokio::spawn(publish_fixture_to(server.rtmp, "live", "cam", FIXTURE, 2.0));
    let node = server.node().clone();
    assert!(wait_for(Duration::from_secs(10), || node.registry.len() == 1).await);
    let io = tls_connect(tls, &cert).await.expect("TLS handshake");
    // The publisher's domain (its tcUrl names 127.0.0.1), not the TLS name.
    let mut player = client::Player::play(io, &tls_endpoint(tls), "cam", ClientOptions::default())
        .await
        .expect("play accepted over TLS");
    let mut got = Vec::new();
    while let Some(m) = player.recv().await.expect("media until the publish ends") {
        got.push(m);
    }
    publisher.await.unwrap();
    // From the first picture (a keyframe) on: every message of the file, unchanged.
    let tags = Recording::load(fixture(FIXTURE)).unwrap().tags().to_vec();
    let first = got
        .iter()
        .position(|m| m.kind == MediaKind::Video && m.payload[0] == 0x17 && m.payload[1] == 1)
        .expect("a keyframe was played");
    let start = tags
        .iter()
        .position(|t| t.keyframe && t.timestamp == got[first].timestamp)
        .expect("the first picture is one of the file's keyframes");
    let played: Vec<_> = got[first..]
        .iter()
        .map(|m| (m.kind, m.timestamp, m.payload.clone()))
        .collect();
    let sent: Vec<_> = tags[start..]
        .iter()
        .map(|t| (t.kind, t.timestamp, t.payload.clone()))
        .collect();
    assert!(played.len() > 100, "played {} messages", played.len());
    assert!(
        played == sent,
        "the played messages differ from the published ones"
    );
    server.stop().await;
}

/// A publish over RTMPS uses the receive low-water mark too, and bytes below it reach a
/// player when the publisher pauses: the drain reads them through TLS. One small audio
/// message, then nothing: it must arrive within 1.5 s (the drain is due 200 ms after the
/// last read), not only when more media follows or the idle timeout (5 s) ends the publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_message_before_a_pause_of_a_tls_publish_reaches_a_player() {
    const AAC_FIXTURE: &str = "high_1280x720_bframes_aac.flv";
    let (mut server, tls, cert) = start_tls_node(3, "").await;
    let io = tls_connect(tls, &cert).await.expect("TLS handshake");
    let mut publisher = tls_publisher(io, tls, "pause").await;
    let tags = fixture_tags(AAC_FIXTURE);
    for tag in tags.iter().filter(|t| t.timestamp_ms < 1000) {
        match tag.tag_type {
            9 => publisher
                .send_video(tag.timestamp_ms, &tag.data)
                .await
                .unwrap(),
            8 => publisher
                .send_audio(tag.timestamp_ms, &tag.data)
                .await
                .unwrap(),
            _ => {}
        }
    }
    let io = TcpStream::connect(server.rtmp).await.unwrap();
    let plain = Endpoint::parse(&format!("rtmp://{}/live", server.rtmp)).unwrap();
    let mut player = client::Player::play(io, &plain, "pause", ClientOptions::default())
        .await
        .expect("play accepted");
    // Let the publishing connection settle with a reader (and its lower mark) attached.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tag = tags
        .iter()
        .find(|t| t.tag_type == 8 && t.timestamp_ms >= 1000)
        .expect("an audio tag after 1 s");
    assert!(tag.data.len() < 1024, "a small message: {}", tag.data.len());
    publisher
        .send_audio(tag.timestamp_ms, &tag.data)
        .await
        .unwrap();
    let got = audio_at(&mut player, tag.timestamp_ms, Duration::from_millis(1500)).await;
    assert_eq!(got.payload, tag.data);
    publisher.finish().await.unwrap();
    server.stop().await;
}

/// A forged TLS record below the receive mark of a publish (no readers: 32 KiB) is read by
/// the drain through rustls, fails to decrypt, and ends that connection within 1.5 s (the
/// idle timeout is 5 s); the node goes on taking publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_record_below_the_mark_ends_the_tls_publish_at_once() {
    use std::io::Write;
    let (mut server, tls, cert) = start_tls_node(3, "").await;
    let std_tcp = std::net::TcpStream::connect(tls).unwrap();
    std_tcp.set_nonblocking(true).unwrap();
    // A second descriptor of the same socket, to write past the TLS layer.
    let mut raw = std_tcp.try_clone().unwrap();
    let io = tls_connect_on(TcpStream::from_std(std_tcp).unwrap(), &cert)
        .await
        .expect("TLS handshake");
    let mut publisher = tls_publisher(io, tls, "forged").await;
    for tag in fixture_tags(FIXTURE)
        .iter()
        .filter(|t| t.timestamp_ms < 500)
    {
        if tag.tag_type == 9 {
            publisher
                .send_video(tag.timestamp_ms, &tag.data)
                .await
                .unwrap();
        }
    }
    let node = server.node().clone();
    assert!(wait_for(Duration::from_secs(5), || node.registry.len() == 1).await);
    // An application-data record whose contents are no encryption of anything.
    let mut forged = vec![0x17, 0x03, 0x03, 0x00, 0x50];
    forged.extend_from_slice(&[0xab; 0x50]);
    assert_eq!(raw.write(&forged).unwrap(), forged.len());
    assert!(
        wait_for(Duration::from_millis(1500), || node.registry.is_empty()).await,
        "the publish was not ended by its forged record"
    );
    drop(publisher);
    // The node still takes publishes.
    let mut p = start_publish(server.rtmp, "live", "after").await;
    send_range(&mut p, FIXTURE, 0, 500).await;
    assert!(wait_for(Duration::from_secs(5), || node.registry.len() == 1).await);
    p.finish().await;
    server.stop().await;
}

/// Waits until `cert` is what the node at `tls` serves; fails after `limit`.
async fn served_within(tls: SocketAddr, cert: &Cert, limit: Duration) {
    let deadline = Instant::now() + limit;
    while let Err(e) = tls_connect(tls, cert).await {
        assert!(
            Instant::now() < deadline,
            "{} was not served within {limit:?}: {e}",
            cert.cert_file.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Renewed certificate files are picked up without a restart (`server.tls_reload_secs`),
/// but only as a matching pair: a renewal caught halfway (the new certificate, the old key)
/// leaves the old pair in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificate_files_are_used_without_a_restart() {
    let (mut server, tls, old) = start_tls_node_with(3, "tls_reload_secs = 1", "").await;
    tls_connect(tls, &old)
        .await
        .expect("the certificate loaded at start");
    let dir = tempfile::tempdir().unwrap();
    let new = make_cert(dir.path(), "renewed");
    // Halfway: the new certificate is in place, its key is not yet.
    std::fs::copy(&new.cert_file, &old.cert_file).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    tls_connect(tls, &old)
        .await
        .expect("the old pair stays in use while the files do not match");
    assert!(tls_connect(tls, &new).await.is_err());
    let metrics = server.node().metrics.clone();
    assert!(
        metrics.tls_reload_count(false) >= 1,
        "the failed load is counted"
    );
    assert_eq!(metrics.tls_reload_count(true), 0);
    std::fs::copy(&new.key_file, &old.key_file).unwrap();
    served_within(tls, &new, Duration::from_secs(5)).await;
    assert!(
        tls_connect(tls, &old).await.is_err(),
        "the old certificate is no longer served"
    );
    assert_eq!(metrics.tls_reload_count(true), 1, "one reload used");
    let text = metrics.render();
    for line in [
        "livesnap_tls_reloads_total{result=\"ok\"} 1",
        "livesnap_tls_reloads_total{result=\"error\"} 1",
    ] {
        assert!(text.contains(line), "{line} not in /metrics");
    }
    server.stop().await;
}

/// A reload asked for (what SIGHUP does) loads the files at once, on a node that never
/// looks at them by itself (`tls_reload_secs = 0`); a pair that does not match is refused
/// and counted, the one in use stays; the expiry gauge follows the certificate in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_request_loads_the_files_at_once_and_the_expiry_gauge_follows() {
    let (mut server, tls, old) = start_tls_node_with(3, "tls_reload_secs = 0", "").await;
    let metrics = server.node().metrics.clone();
    let gauge = |t: u64| {
        format!("livesnap_tls_certificate_expiry_timestamp_seconds{{listener=\"rtmps\"}} {t}")
    };
    let midnight = |(y, m, d): (i32, u8, u8)| {
        livesnap::clock::parse_rfc3339(&format!("{y:04}-{m:02}-{d:02}T00:00:00Z")).unwrap()
    };
    let renewed_until = date_in(400);
    assert!(
        wait_for(Duration::from_secs(2), || metrics.render().contains(
            "livesnap_tls_certificate_expiry_timestamp_seconds{listener=\"rtmps\"}"
        ))
        .await,
        "the gauge is set at start"
    );
    let dir = tempfile::tempdir().unwrap();
    let new = make_cert_until(dir.path(), "renewed", renewed_until);
    std::fs::copy(&new.cert_file, &old.cert_file).unwrap();
    std::fs::copy(&new.key_file, &old.key_file).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tls_connect(tls, &old)
        .await
        .expect("with tls_reload_secs = 0 the node does not look at the files by itself");
    server.running.as_ref().unwrap().reload_now();
    served_within(tls, &new, Duration::from_secs(3)).await;
    assert!(tls_connect(tls, &old).await.is_err());
    assert_eq!(metrics.tls_reload_count(true), 1);
    let text = metrics.render();
    assert!(text.contains(&gauge(midnight(renewed_until))), "{text}");
    // A key of another certificate: refused when asked, counted, the pair in use stays.
    let other = make_cert_until(dir.path(), "other", date_in(500));
    std::fs::copy(&other.key_file, &old.key_file).unwrap();
    server.running.as_ref().unwrap().reload_now();
    assert!(
        wait_for(Duration::from_secs(3), || metrics.tls_reload_count(false)
            == 1)
        .await,
        "the refused pair is counted"
    );
    tls_connect(tls, &new)
        .await
        .expect("the pair in use stays after a refused reload");
    assert_eq!(metrics.tls_reload_count(true), 1);
    assert!(metrics.render().contains(&gauge(midnight(renewed_until))));
    server.stop().await;
}

/// (year, month, day) of `days` from now (UTC).
fn date_in(days: i64) -> (i32, u8, u8) {
    let t = livesnap::clock::unix_now() as i64 + days * 86_400;
    let date = livesnap::clock::rfc3339(t as u64);
    let part = |r: std::ops::Range<usize>| date[r].parse::<u32>().unwrap();
    (part(0..4) as i32, part(5..7) as u8, part(8..10) as u8)
}

/// A certificate close to its end is warned about at start, naming the file and the days
/// left; an expired one is logged as an error (and still served: the operator decides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_close_to_its_end_is_warned_about() {
    let (mut server, _tls, cert) =
        start_tls_node_cert(3, "", "", |dir| make_cert_until(dir, "soon", date_in(4))).await;
    assert!(
        wait_for(Duration::from_secs(2), || !logs::about_cert(
            &cert.cert_file
        )
        .is_empty())
        .await,
        "no warning about {}",
        cert.cert_file.display()
    );
    let logged = logs::about_cert(&cert.cert_file);
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].level, tracing::Level::WARN);
    assert_eq!(logged[0].message, "RTMPS certificate expires soon");
    server.stop().await;

    let (mut server, tls, cert) =
        start_tls_node_cert(3, "", "", |dir| make_cert_until(dir, "old", (2020, 1, 1))).await;
    assert!(
        wait_for(Duration::from_secs(2), || !logs::about_cert(
            &cert.cert_file
        )
        .is_empty())
        .await
    );
    let logged = logs::about_cert(&cert.cert_file);
    assert_eq!(logged[0].level, tracing::Level::ERROR);
    assert!(logged[0].message.contains("has expired"), "{logged:?}");
    // Served all the same; a client that checks validity refuses it.
    let err = tls_connect(tls, &cert).await.unwrap_err();
    assert!(err.to_string().contains("xpired"), "{err}");
    server.stop().await;

    // Far from its end: nothing logged.
    let (mut server, _tls, cert) =
        start_tls_node_cert(3, "", "", |dir| make_cert_until(dir, "far", date_in(60))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(logs::about_cert(&cert.cert_file).is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_rtmps() {
    let (mut server, tls, _cert) = start_tls_node(3, "").await;
    // ffmpeg verifies no certificate unless asked (-tls_verify 1), as OBS with a
    // self-signed node would need.
    let url = format!("rtmps://127.0.0.1:{}/live/ffcam", tls.port());
    let out = ffmpeg_publish(FIXTURE, &url)
        .output()
        .await
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;
    assert_eq!(list_files(&server.root()), snapshot_keys("ffcam", 3));
    let (w, h, _) = decode_jpeg(&std::fs::read(server.root().join("live/ffcam.jpg")).unwrap());
    assert_eq!((w, h), (640, 360));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_rtmp_on_the_tls_port_is_closed_and_counted() {
    let (mut server, tls, _cert) = start_tls_node(5, "").await;
    let mut sock = TcpStream::connect(tls).await.unwrap();
    // C0 + C1 of a plain RTMP handshake.
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(0x5a, 1536));
    sock.write_all(&c0c1).await.unwrap();
    let got = closed_within(&mut sock, Duration::from_secs(2))
        .await
        .expect("closed at once, not at the handshake deadline");
    // At most a TLS alert (content type 21), never an RTMP S0.
    assert!(got.is_empty() || got[0] == 21, "{got:?}");
    let m = server.node().metrics.clone();
    assert!(wait_for(Duration::from_secs(2), || m.rejected_count("tls") == 1).await);
    assert_eq!(m.rejected_count("handshake_timeout"), 0);
    // The plain listener is unaffected.
    publish_fixture(&server, "live", "after", FIXTURE, 8.0).await;
    server.stop().await;
    assert_eq!(list_files(&server.root()), snapshot_keys("after", 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshake_is_closed_at_the_deadline() {
    let (mut server, tls, _cert) = start_tls_node(1, "").await;
    let started = Instant::now();
    let mut sock = TcpStream::connect(tls).await.unwrap();
    // The start of a TLS record (a handshake, 512 bytes announced) and then nothing.
    sock.write_all(&[22, 3, 1, 2, 0, 1]).await.unwrap();
    let node = server.node().clone();
    let limits = server.running.as_ref().unwrap().conn_limits.clone();
    assert!(
        wait_for(Duration::from_secs(1), || limits.handshakes.in_progress()
            == 1)
        .await
    );
    let got = closed_within(&mut sock, Duration::from_secs(4))
        .await
        .expect("closed at the handshake deadline");
    let took = started.elapsed();
    assert!(got.is_empty() || got[0] == 21, "{got:?}");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    let m = node.metrics.clone();
    assert!(
        wait_for(Duration::from_secs(1), || m
            .rejected_count("handshake_timeout")
            == 1)
        .await
    );
    assert_eq!(
        limits.handshakes.in_progress(),
        0,
        "the handshake slot was freed"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_listeners_share_the_per_ip_cap_and_the_handshake_table() {
    let limits = "[limits]\nmax_connections_per_ip = 2\nmax_handshakes = 2\n";
    let (mut server, tls, _cert) = start_tls_node(5, limits).await;
    let m = server.node().metrics.clone();
    let limits = server.running.as_ref().unwrap().conn_limits.clone();
    let in_handshake = |n| {
        let limits = limits.clone();
        move || limits.handshakes.in_progress() == n
    };
    // Two TLS connections that never start their TLS handshake fill the table, one
    // after the other (the first is the oldest).
    let mut a = TcpStream::connect(tls).await.unwrap();
    assert!(wait_for(Duration::from_secs(1), in_handshake(1)).await);
    let mut b = TcpStream::connect(tls).await.unwrap();
    assert!(wait_for(Duration::from_secs(1), in_handshake(2)).await);
    // A plain RTMP connection from the same address is over the per-IP cap they share.
    let mut c = TcpStream::connect(server.rtmp).await.unwrap();
    assert!(closed_within(&mut c, Duration::from_secs(2))
        .await
        .is_some());
    assert_eq!(m.rejected_count("per_ip_limit"), 1);
    // From another loopback address it is admitted, and its RTMP handshake evicts the
    // oldest TLS handshake in progress.
    let _d = connect_from("127.0.0.2".parse().unwrap(), server.rtmp)
        .await
        .unwrap();
    assert!(closed_within(&mut a, Duration::from_secs(2))
        .await
        .is_some());
    assert!(
        wait_for(Duration::from_secs(1), || m
            .rejected_count("handshake_limit")
            == 1)
        .await
    );
    assert!(
        closed_within(&mut b, Duration::from_millis(200))
            .await
            .is_none(),
        "b stays"
    );
    assert_eq!(limits.handshakes.in_progress(), 2);
    server.stop().await;
}

/// The config error for `server` keys (TOML lines), or panics if accepted.
fn config_error(server: &str) -> String {
    let text = format!(
        "[server]\nrtmp_listen = \"127.0.0.1:1935\"\n{server}\n[storage.default]\nscheme = \"memory\"\n"
    );
    match Config::parse(&text).and_then(|c| c.validate().map(|_| ())) {
        Ok(()) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn config_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = make_cert(dir.path(), "good");
    let other = make_cert(dir.path(), "other");
    let (crt, key) = (good.cert_file.display(), good.key_file.display());
    let listen = "rtmps_listen = \"127.0.0.1:1936\"";

    let e = config_error(listen);
    assert!(e.starts_with("server.tls_cert_file: is required"), "{e}");
    let e = config_error(&format!("{listen}\ntls_cert_file = \"{crt}\""));
    assert!(e.starts_with("server.tls_key_file: is required"), "{e}");

    let missing = dir.path().join("missing.pem");
    let m = missing.display();
    let e = config_error(&format!(
        "{listen}\ntls_cert_file = \"{m}\"\ntls_key_file = \"{key}\""
    ));
    assert!(
        e.starts_with(&format!("server.tls_cert_file: {m}: cannot read")),
        "{e}"
    );
    let e = config_error(&format!(
        "{listen}\ntls_cert_file = \"{crt}\"\ntls_key_file = \"{m}\""
    ));
    assert!(
        e.starts_with(&format!("server.tls_key_file: {m}: cannot read")),
        "{e}"
    );

    // The other certificate's key does not belong to this certificate.
    let wrong = other.key_file.display();
    let e = config_error(&format!(
        "{listen}\ntls_cert_file = \"{crt}\"\ntls_key_file = \"{wrong}\""
    ));
    assert_eq!(
        e,
        format!(
            "server.tls_key_file: {wrong}: the private key does not match the certificate in {crt}"
        )
    );
    // Files swapped: no certificate in the key file, no key in the certificate.
    let e = config_error(&format!(
        "{listen}\ntls_cert_file = \"{key}\"\ntls_key_file = \"{key}\""
    ));
    assert!(
        e.starts_with(&format!("server.tls_cert_file: {key}: no CERTIFICATE")),
        "{e}"
    );
    let e = config_error(&format!(
        "{listen}\ntls_cert_file = \"{crt}\"\ntls_key_file = \"{crt}\""
    ));
    assert!(
        e.starts_with(&format!(
            "server.tls_key_file: {crt}: no usable PEM private key"
        )),
        "{e}"
    );

    // Keys that only make sense together.
    let e = config_error(&format!(
        "tls_cert_file = \"{crt}\"\ntls_key_file = \"{key}\""
    ));
    assert!(e.starts_with("server.rtmps_listen: is required"), "{e}");
    let e = config_error(&format!(
        "rtmps_listen = \"nope\"\ntls_cert_file = \"{crt}\"\ntls_key_file = \"{key}\""
    ));
    assert!(e.starts_with("server.rtmps_listen"), "{e}");
    let e = config_error(&format!(
        "rtmps_listen = \"127.0.0.1:1935\"\ntls_cert_file = \"{crt}\"\ntls_key_file = \"{key}\""
    ));
    assert!(
        e.starts_with("server.rtmps_listen: 127.0.0.1:1935 is also server.rtmp_listen"),
        "{e}"
    );

    // And a good pair is accepted.
    let text = format!(
        "[server]\n{listen}\ntls_cert_file = \"{crt}\"\ntls_key_file = \"{key}\"\n[storage.default]\nscheme = \"memory\"\n"
    );
    let s = Config::parse(&text).unwrap().validate().unwrap();
    assert_eq!(s.rtmps.unwrap().listen.to_string(), "127.0.0.1:1936");
    let s = Config::embedded_default().validate().unwrap();
    assert!(s.rtmps.is_none(), "RTMPS is off by default");
}
