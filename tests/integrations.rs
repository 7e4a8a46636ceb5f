//! Publish authentication, the on_publish hook, signed event callbacks and the
//! Prometheus metrics, against a real node and real HTTP listeners on loopback.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::*;
use serde_json::Value;

/// One request a test listener received.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Value,
}

#[derive(Clone, Default)]
struct Recorder {
    got: Arc<Mutex<Vec<Received>>>,
    /// Status codes to answer, in order; 200 once they run out.
    script: Arc<Mutex<Vec<u16>>>,
    calls: Arc<Mutex<u32>>,
}

impl Recorder {
    fn events(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
    fn named(&self, event: &str) -> Vec<Received> {
        self.events()
            .into_iter()
            .filter(|r| r.body["event"] == event)
            .collect()
    }
}

async fn record(State(rec): State<Recorder>, headers: HeaderMap, body: String) -> StatusCode {
    *rec.calls.lock().unwrap() += 1;
    let status = {
        let mut s = rec.script.lock().unwrap();
        if s.is_empty() {
            200
        } else {
            s.remove(0)
        }
    };
    if status == 200 {
        rec.got.lock().unwrap().push(Received {
            headers,
            body: serde_json::from_str(&body).unwrap_or(Value::Null),
        });
    }
    StatusCode::from_u16(status).unwrap()
}

/// A hook that records what it was asked and allows the stream named "allowed" only.
async fn gate(State(rec): State<Recorder>, headers: HeaderMap, body: String) -> StatusCode {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let allowed = body["stream"] == "allowed";
    rec.got.lock().unwrap().push(Received { headers, body });
    if allowed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::FORBIDDEN
    }
}

/// A callback/hook listener on 127.0.0.1:0 answering POST /cb (and /hook/{anything}).
async fn listener(rec: Recorder) -> SocketAddr {
    let app = Router::new()
        .route("/cb", post(record))
        .route("/node", post(record))
        .route(
            "/hook",
            post(|body: String| async move {
                let v: Value = serde_json::from_str(&body).unwrap();
                if v["stream"] == "allowed" {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::FORBIDDEN
                }
            }),
        )
        .route("/gate", post(gate))
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                StatusCode::OK
            }),
        )
        .with_state(rec);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

async fn metrics(server: &TestServer) -> String {
    reqwest::get(format!("http://{}/metrics", server.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_publish() {
    let mut server = start_server(DEFAULT_RULES).await;
    publish_fixture(&server, "live", "m", "baseline_640x360_gop1s.flv", 4.0).await;
    // The three snapshots are stored once the store task has drained.
    assert!(
        wait_for(Duration::from_secs(10), || list_files(&server.root()).len()
            == 4)
        .await
    );
    let text = metrics(&server).await;
    assert_eq!(metric(&text, "livesnap_connections_accepted_total"), 1.0);
    assert_eq!(metric(&text, "livesnap_keyframes_total"), 12.0);
    assert_eq!(metric(&text, "livesnap_snapshots_taken_total"), 3.0);
    assert_eq!(metric(&text, "livesnap_decode_seconds_count"), 3.0);
    assert_eq!(metric(&text, "livesnap_encode_seconds_count"), 3.0);
    assert_eq!(metric(&text, "livesnap_store_seconds_count"), 3.0);
    assert_eq!(
        metric(&text, "livesnap_snapshot_latency_seconds_count"),
        3.0
    );
    assert_eq!(metric(&text, "livesnap_publishes_active"), 0.0);
    let bytes = metric(&text, "livesnap_received_bytes_total");
    let file = std::fs::metadata(fixture("baseline_640x360_gop1s.flv"))
        .unwrap()
        .len() as f64;
    // Every media byte plus RTMP headers and commands, but not wildly more.
    assert!(
        bytes > file * 0.95 && bytes < file * 1.2,
        "{bytes} vs file {file}"
    );
    // A refused publish is counted by reason.
    let tc = format!("rtmp://{}/live", server.rtmp);
    let (_, out) = Publisher::connect(server.rtmp, &tc, "live", "..bad").await;
    assert!(matches!(out, PublishOutcome::Refused(_)));
    let rejected = server.node().metrics.clone();
    assert!(
        wait_for(Duration::from_secs(5), || rejected.render().contains(
            "livesnap_connections_rejected_total{reason=\"bad_name\"} 1"
        ))
        .await
    );
    assert_eq!(
        metric(
            &metrics(&server).await,
            "livesnap_connections_rejected_total{reason=\"bad_name\"}"
        ),
        1.0
    );
    server.stop().await;
}

fn auth_config(extra: &str) -> String {
    format!(
        "{DEFAULT_RULES}\n[[auth]]\ndomain = \"*\"\nprimary_key = \"primary-secret\"\nsecondary_key = \"rotated-secret\"\nvalidity_secs = 60\n{extra}"
    )
}

fn status_of(out: &PublishOutcome) -> String {
    match out {
        PublishOutcome::Accepted => "accepted".into(),
        PublishOutcome::Refused(why) => why.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_are_required() {
    let mut server = start_server(&auth_config("")).await;
    let now = livesnap::clock::unix_now();
    let tc = format!("rtmp://{}/live", server.rtmp);
    let key_of = |stream: &str, key: &str, ts: u64| {
        let url = livesnap::auth::sign_url(&format!("rtmp://h/live/{stream}"), key, ts).unwrap();
        url.rsplit_once('/').unwrap().1.to_string()
    };
    // Refused: no signature, wrong key, expired, signed for another stream.
    for stream_key in [
        "cam".to_string(),
        key_of("cam", "not-the-key", now),
        key_of("cam", "primary-secret", now - 61),
        key_of("other", "primary-secret", now).replace("other", "cam"),
    ] {
        let (_, out) = Publisher::connect(server.rtmp, &tc, "live", &stream_key).await;
        let s = status_of(&out);
        assert!(
            s.contains("NetStream.Publish.Unauthorized"),
            "{stream_key}: {s}"
        );
        assert!(!s.contains("primary-secret"));
    }
    // Accepted with either key, in the stream key or in the tcUrl.
    let (p, out) = Publisher::connect(
        server.rtmp,
        &tc,
        "live",
        &key_of("cam", "primary-secret", now),
    )
    .await;
    assert_eq!(out, PublishOutcome::Accepted);
    p.finish().await;
    let (p, out) = Publisher::connect(
        server.rtmp,
        &tc,
        "live",
        &key_of("cam2", "rotated-secret", now),
    )
    .await;
    assert_eq!(out, PublishOutcome::Accepted);
    p.finish().await;
    let signed = key_of("cam3", "primary-secret", now);
    let query = signed.split_once('?').unwrap().1;
    let (p, out) = Publisher::connect(server.rtmp, &format!("{tc}?{query}"), "live", "cam3").await;
    assert_eq!(out, PublishOutcome::Accepted);
    p.finish().await;
    let text = metrics(&server).await;
    assert_eq!(
        metric(
            &text,
            "livesnap_connections_rejected_total{reason=\"unauthorized\"}"
        ),
        4.0
    );
    server.stop().await;
}

/// The domain is the client's choice (tcUrl host or `vhost=`): once `[[auth]]` lists
/// a domain, naming another one must not skip the signature check, since with the
/// default templates it writes the same keys as the protected domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_domain_is_refused_once_auth_lists_domains() {
    let listed = "\n[[auth]]\ndomain = \"a.example\"\nprimary_key = \"primary-secret\"\n";
    let mut server = start_server(&format!("{DEFAULT_RULES}{listed}")).await;
    let now = livesnap::clock::unix_now();
    let tc = format!("rtmp://{}/live", server.rtmp);
    // Unsigned, and signed with a.example's own key: neither may publish elsewhere.
    let signed = livesnap::auth::sign_url("rtmp://h/live/cam", "primary-secret", now).unwrap();
    let signed_query = signed.split_once('?').unwrap().1.to_string();
    for stream_key in [
        "cam?vhost=unlisted.example".to_string(),
        format!("cam?vhost=unlisted.example&{signed_query}"),
    ] {
        let (p, out) = Publisher::connect(server.rtmp, &tc, "live", &stream_key).await;
        let s = status_of(&out);
        assert!(
            s.contains("NetStream.Publish.Unauthorized") && s.contains("unlisted.example"),
            "{stream_key}: {s}"
        );
        drop(p);
    }
    // The tcUrl host names a domain too (here the node's address, "127.0.0.1").
    let (_, out) = Publisher::connect(server.rtmp, &tc, "live", "cam").await;
    assert!(status_of(&out).contains("NetStream.Publish.Unauthorized"));
    assert_eq!(
        metric(
            &metrics(&server).await,
            "livesnap_connections_rejected_total{reason=\"unlisted_domain\"}"
        ),
        3.0
    );
    assert!(server.node().registry.list().is_empty());
    assert!(list_files(&server.root()).is_empty());
    // The listed domain, signed, still publishes and stores.
    let (mut p, out) = Publisher::connect(
        server.rtmp,
        &tc,
        "live",
        &format!("cam?vhost=a.example&{signed_query}"),
    )
    .await;
    assert_eq!(out, PublishOutcome::Accepted);
    send_range(&mut p, "baseline_640x360_gop1s.flv", 0, 1000).await;
    p.finish().await;
    assert!(
        wait_for(Duration::from_secs(10), || !list_files(&server.root())
            .is_empty())
        .await
    );
    server.stop().await;

    // A "*" entry with allow_unsigned = true lets unlisted domains publish unsigned;
    // the listed one still needs its signature.
    let open = "\n[[auth]]\ndomain = \"*\"\nallow_unsigned = true\n";
    let mut server = start_server(&format!("{DEFAULT_RULES}{listed}{open}")).await;
    let tc = format!("rtmp://{}/live", server.rtmp);
    let (p, out) = Publisher::connect(server.rtmp, &tc, "live", "cam?vhost=unlisted.example").await;
    assert_eq!(out, PublishOutcome::Accepted);
    p.finish().await;
    let (_, out) = Publisher::connect(server.rtmp, &tc, "live", "cam?vhost=a.example").await;
    assert!(status_of(&out).contains("NetStream.Publish.Unauthorized"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_publish_hook_allows_and_denies() {
    let addr = listener(Recorder::default()).await;
    let mut server = start_server(&format!(
        "{DEFAULT_RULES}\n[hooks]\non_publish = \"http://{addr}/hook\"\n"
    ))
    .await;
    let tc = format!("rtmp://{}/live", server.rtmp);
    let p = start_publish(server.rtmp, "live", "allowed").await;
    p.finish().await;
    let (_, out) = Publisher::connect(server.rtmp, &tc, "live", "denied").await;
    assert!(status_of(&out).contains("NetStream.Publish.Unauthorized"));
    server.stop().await;

    // A hook that does not answer within 3 s denies.
    let mut server = start_server(&format!(
        "{DEFAULT_RULES}\n[hooks]\non_publish = \"http://{addr}/slow\"\n"
    ))
    .await;
    let started = Instant::now();
    let (_, out) = Publisher::connect(
        server.rtmp,
        &format!("rtmp://{}/live", server.rtmp),
        "live",
        "allowed",
    )
    .await;
    assert!(status_of(&out).contains("NetStream.Publish.Unauthorized"));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(6),
        "{took:?}"
    );
    server.stop().await;
}

/// The `on_play` hook is asked before each play with the play's names, query and peer:
/// a 2xx answer allows, anything else refuses. Every play that started is reported as a
/// `play` event and, once it ends, a `play_done` event with what it was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_play_hook_allows_and_denies_and_plays_are_reported() {
    use livesnap::rtmp::client::{ClientOptions, Endpoint, MediaKind, Player};
    let rec = Recorder::default();
    let addr = listener(rec.clone()).await;
    let mut server = start_server(&format!(
        "{DEFAULT_RULES}\n[hooks]\non_play = \"http://{addr}/gate\"\n\
         [notify]\nurl = \"http://{addr}/node\"\n"
    ))
    .await;
    let mut publishers = Vec::new();
    for stream in ["allowed", "denied"] {
        let mut p = start_publish(server.rtmp, "live", stream).await;
        send_range(&mut p, "baseline_640x360_gop1s.flv", 0, 1000).await;
        publishers.push(p);
    }
    let rtmp = server.rtmp;
    let play = |stream: &'static str| async move {
        let io = tokio::net::TcpStream::connect(rtmp).await.unwrap();
        let endpoint = Endpoint::parse(&format!("rtmp://{rtmp}/live")).unwrap();
        let opts = ClientOptions {
            read_timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        };
        Player::play(io, &endpoint, stream, opts).await
    };
    let mut player = play("allowed?token=t1").await.unwrap();
    let mut bytes = 0;
    let first = loop {
        let m = player.recv().await.unwrap().expect("media");
        bytes += m.payload.len();
        if m.kind != MediaKind::Data {
            break m;
        }
    };
    assert_eq!(first.kind, MediaKind::Video);
    let err = play("denied")
        .await
        .err()
        .expect("the hook's 403 was ignored");
    let status = err.status().expect("a refusal");
    assert_eq!(status.code, "NetStream.Play.Unauthorized");
    assert!(
        status.description.contains("on_play hook answered 403"),
        "{status:?}"
    );

    let asked: Vec<Value> = rec
        .events()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b["action"] == "play")
        .collect();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(asked[0]["stream"], "allowed");
    assert_eq!(asked[0]["app"], "live");
    assert_eq!(asked[0]["query"], "token=t1");
    assert!(
        asked[0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{asked:?}"
    );
    assert_eq!(asked[1]["stream"], "denied");
    // Publishes are not asked about: the hook is for plays.
    assert!(rec.events().iter().all(|r| r.body["action"] != "publish"));

    drop(player);
    assert!(
        wait_for(Duration::from_secs(10), || rec.named("play_done").len()
            == 1)
        .await,
        "{:?}",
        rec.events()
    );
    let started = rec.named("play");
    assert_eq!(started.len(), 1, "the refused play was reported");
    assert_eq!(started[0].body["stream"], "allowed");
    let done = &rec.named("play_done")[0].body;
    assert_eq!(done["stream"], "allowed");
    assert_eq!(done["peer"], started[0].body["peer"]);
    // At least what the player read before it left.
    assert!(done["bytes"].as_u64().unwrap() >= bytes as u64, "{done}");
    for p in publishers {
        p.finish().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_signed_and_complete() {
    let rec = Recorder::default();
    let addr = listener(rec.clone()).await;
    let rules = format!(
        r#"
[[rules]]
domain = "*"
app = "*"
interval_secs = 5
storage = "default"
overwrite_object = "{{AppName}}/{{StreamName}}.jpg"
sequence_object = "{{AppName}}/{{StreamName}}/{{Sequence}}.jpg"
callback = "http://{addr}/cb"
[notify]
url = "http://{addr}/node"
callback_auth_key = "cb-key"
"#
    );
    let mut server = start_server(&rules).await;
    publish_fixture(&server, "live", "cbcam", "baseline_640x360_gop1s.flv", 4.0).await;
    assert!(
        wait_for(Duration::from_secs(10), || rec.named("unpublish").len()
            == 1
            && rec.named("snapshot").len() == 6)
        .await,
        "{:?}",
        rec.events()
    );
    assert_eq!(rec.named("publish").len(), 1);
    let snaps = rec.named("snapshot");
    for (i, r) in snaps.iter().enumerate() {
        let b = &r.body;
        assert_eq!(b["app"], "live");
        assert_eq!(b["stream"], "cbcam");
        assert_eq!(b["domain"], "127.0.0.1");
        assert_eq!(b["storage"], "default");
        assert_eq!(b["width"], 640);
        assert_eq!(b["height"], 360);
        assert_eq!(b["overwrite_object"], "live/cbcam.jpg");
        let seq = b["sequence_object"].as_str().unwrap();
        let stored = std::fs::read(server.root().join(seq)).unwrap();
        assert_eq!(b["size"], stored.len(), "{i}");
        let ts = r.headers["ALI-LIVE-TIMESTAMP"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap();
        assert_eq!(
            r.headers["ALI-LIVE-SIGNATURE"].to_str().unwrap(),
            livesnap::util::hex(&md5::Md5::digest(
                format!("127.0.0.1|{ts}|cb-key").as_bytes()
            ))
        );
        assert!(b["create_time"].as_str().unwrap().ends_with('Z'));
    }
    let mut seqs: Vec<&str> = snaps
        .iter()
        .map(|r| r.body["sequence_object"].as_str().unwrap())
        .collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(
        seqs,
        ["live/cbcam/1.jpg", "live/cbcam/2.jpg", "live/cbcam/3.jpg"]
    );
    let un = &rec.named("unpublish")[0].body;
    assert!(un["bytes"].as_u64().unwrap() > 500_000);
    assert!(un["duration_secs"].as_u64().is_some());
    server.stop().await;
}

use md5::Digest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_retried_and_a_dead_target_slows_nothing() {
    // Two failures, then success: one delivery after retries.
    let rec = Recorder::default();
    *rec.script.lock().unwrap() = vec![500, 503];
    let addr = listener(rec.clone()).await;
    let mut server = start_server(&format!(
        "{DEFAULT_RULES}\n[notify]\nurl = \"http://{addr}/node\"\n"
    ))
    .await;
    let p = start_publish(server.rtmp, "live", "retry").await;
    assert!(wait_for(Duration::from_secs(8), || rec.named("publish").len() == 1).await);
    assert_eq!(*rec.calls.lock().unwrap(), 3);
    p.finish().await;
    server.stop().await;

    // A target that refuses connections: the publish runs at full pace and every
    // snapshot is stored on schedule; failures are counted.
    let dead = free_addr();
    let mut server = start_server(&format!(
        "{DEFAULT_RULES}\n[notify]\nurl = \"http://{dead}/x\"\n"
    ))
    .await;
    let started = Instant::now();
    publish_fixture(&server, "live", "deadcb", "baseline_640x360_gop1s.flv", 4.0).await;
    let took = started.elapsed();
    // 12 s of media at 4x is 3 s; allow slack for a busy CI machine.
    assert!(took < Duration::from_secs(6), "publish took {took:?}");
    assert!(
        wait_for(Duration::from_secs(10), || list_files(&server.root()).len()
            == 4)
        .await
    );
    assert!(
        wait_for(Duration::from_secs(20), || {
            let m = server.node().metrics.callbacks_failed.get();
            m >= 1
        })
        .await
    );
    server.stop().await;
}

/// `server.proxy_protocol_from`: behind a load balancer, the PROXY header (v1 or v2)
/// names the client, and the client's address is what `[access]`, the per-address cap and
/// the API see; a connection from the balancer without a header is closed and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balancers_proxy_header_names_the_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nrtmp_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
         handshake_timeout_secs = 2\nproxy_protocol_from = [\"127.0.0.0/8\"]\n\
         [limits]\nmax_connections_per_ip = 1\n\
         [storage.default]\nscheme = \"fs\"\nroot = \"{}\"\n{DEFAULT_RULES}\n\
         [access]\npublish_from = [\"198.51.100.0/24\", \"2001:db8::/32\"]\n",
        dir.path().join("snapshots").display()
    );
    let mut server = TestServer::start(dir, &config).await;
    let tc = format!("rtmp://{}/live", server.rtmp);
    let behind = |header: Vec<u8>| async move {
        let mut sock = tokio::net::TcpStream::connect(server.rtmp).await.unwrap();
        sock.write_all(&header).await.unwrap();
        sock
    };
    let v1 = |client: &str| format!("PROXY TCP4 {client} 10.0.0.1 5555 1935\r\n").into_bytes();
    let node_addr: SocketAddr = "10.0.0.1:1935".parse().unwrap();
    let v2 = |client: &str| livesnap::rtmp::proxy::v2_header(client.parse().unwrap(), node_addr);

    // Two clients behind one balancer, each within its own per-address cap of 1.
    let (a, out) =
        Publisher::connect_on(behind(v1("198.51.100.7")).await, &tc, "live", "cam").await;
    assert_eq!(out, PublishOutcome::Accepted);
    let (b, out) =
        Publisher::connect_on(behind(v2("[2001:db8::7]:4000")).await, &tc, "live", "cam2").await;
    assert_eq!(out, PublishOutcome::Accepted);
    let (_, body) = http_request(server.http, "GET", "/api/v1/streams")
        .await
        .unwrap();
    assert!(
        body.contains("198.51.100.7:5555") && body.contains("[2001:db8::7]:4000"),
        "{body}"
    );

    // [access] judges the client, not the balancer.
    let (_, out) =
        Publisher::connect_on(behind(v1("203.0.113.9")).await, &tc, "live", "cam3").await;
    let why = status_of(&out);
    assert!(
        why.contains("Unauthorized") && why.contains("203.0.113.9"),
        "{why}"
    );

    // The first client again: over its own cap, closed after the header.
    let closed = |mut sock: tokio::net::TcpStream| async move {
        let _ = sock.write_all(&[3u8; 1537]).await;
        let mut buf = [0u8; 16];
        tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
            .await
            .expect("the connection is closed")
            .map_or(true, |n| n == 0)
    };
    assert!(closed(behind(v1("198.51.100.7")).await).await);
    // No header at all from the balancer's address.
    assert!(closed(behind(Vec::new()).await).await);
    let text = metrics(&server).await;
    for (reason, n) in [
        ("per_ip_limit", 1.0),
        ("proxy_protocol", 1.0),
        ("address_not_allowed", 1.0),
    ] {
        assert_eq!(
            metric(
                &text,
                &format!("livesnap_connections_rejected_total{{reason=\"{reason}\"}}")
            ),
            n,
            "{reason}"
        );
    }
    a.finish().await;
    b.finish().await;
    server.stop().await;
}
