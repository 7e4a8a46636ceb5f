//! Stream health over real RTMP: the health fixtures (black, frozen, keyframes that
//! stop) and ordinary ones pushed to a real node, its conditions read from
//! `/api/v1/streams` and `/metrics` over HTTP, and its signed `health` events received
//! by a callback listener on loopback.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use common::external::*;
use common::*;
use serde_json::Value;

/// Events (with their headers) a callback listener received.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<(HeaderMap, Value)>>>);

impl Events {
    /// `health` events of `stream`, as (condition, state, from the rule's callback?).
    fn health(&self, stream: &str) -> Vec<(String, String, bool)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, b)| b["event"] == "health" && b["stream"] == stream)
            .map(|(h, b)| {
                (
                    b["condition"].as_str().unwrap().to_string(),
                    b["state"].as_str().unwrap().to_string(),
                    h.get("x-path").is_some_and(|p| p == "/cb"),
                )
            })
            .collect()
    }

    fn bodies(&self, stream: &str) -> Vec<(HeaderMap, Value)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, b)| b["event"] == "health" && b["stream"] == stream)
            .cloned()
            .collect()
    }

    /// Whether `stream` got `condition` `state` events both on the rule's callback and on
    /// the node's notify URL.
    fn has(&self, stream: &str, condition: &str, state: &str) -> bool {
        let got = self.health(stream);
        [true, false].iter().all(|cb| {
            got.iter()
                .any(|(c, s, on_cb)| c == condition && s == state && on_cb == cb)
        })
    }
}

async fn record(
    State(ev): State<Events>,
    path: axum::http::Uri,
    mut headers: HeaderMap,
    body: String,
) -> StatusCode {
    headers.insert("x-path", path.path().parse().unwrap());
    let v = serde_json::from_str(&body).unwrap_or(Value::Null);
    ev.0.lock().unwrap().push((headers, v));
    StatusCode::OK
}

/// A callback listener on 127.0.0.1:0 answering POST /cb (the rule's) and /node.
async fn listener(ev: Events) -> SocketAddr {
    let app = Router::new()
        .route("/cb", post(record))
        .route("/node", post(record))
        .with_state(ev);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

/// A node with one snapshot rule (5 s, a callback) and the node's notify URL, both to
/// `addr`, and `health` as its `[health]` section.
async fn server(addr: SocketAddr, health: &str) -> TestServer {
    start_server(&format!(
        r#"
[[rules]]
domain = "*"
app = "*"
interval_secs = 5
storage = "default"
overwrite_object = "{{AppName}}/{{StreamName}}.jpg"
callback = "http://{addr}/cb"
[notify]
url = "http://{addr}/node"
callback_auth_key = "cb-key"
[health]
{health}
"#
    ))
    .await
}

/// The `health` object of `stream` in `GET /api/v1/streams` (None when not live).
async fn api_health(server: &TestServer, stream: &str) -> Option<Value> {
    let (status, body) = http_request(server.http, "GET", "/api/v1/streams")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == stream)
        .map(|s| s["health"].clone())
}

/// The active condition names of `stream` in the API.
async fn active(server: &TestServer, stream: &str) -> Vec<String> {
    api_health(server, stream)
        .await
        .map(|h| {
            h["active"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Polls the API until `stream`'s active conditions are `want` (or `limit` passes).
async fn wait_active(server: &TestServer, stream: &str, want: &[&str], limit: Duration) -> bool {
    let end = Instant::now() + limit;
    loop {
        if active(server, stream).await == want {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metrics(server: &TestServer) -> String {
    http_request(server.http, "GET", "/metrics")
        .await
        .unwrap()
        .1
}

/// Pushes a whole fixture as fast as the node takes it and keeps the publish open.
async fn push(server: &TestServer, stream: &str, file: &str) -> Publisher {
    let mut p = start_publish(server.rtmp, "live", stream).await;
    p.replay(&fixture(file), 0.0, 0).await.unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_camera_starts_black_and_its_end_ends_it() {
    let ev = Events::default();
    let addr = listener(ev.clone()).await;
    let mut server = server(addr, "no_video_secs = 60\nno_keyframe_secs = 60").await;
    let p = push(&server, "blackcam", "black_640x360.flv").await;
    assert!(
        wait_active(&server, "blackcam", &["black"], Duration::from_secs(10)).await,
        "{:?}",
        api_health(&server, "blackcam").await
    );
    let h = api_health(&server, "blackcam").await.unwrap();
    assert!(h["since"]["black"].as_str().unwrap().ends_with('Z'), "{h}");
    assert!(
        wait_for(Duration::from_secs(5), || ev
            .has("blackcam", "black", "start"))
        .await
    );
    // The event: its fields, and signed like every callback.
    let (headers, body) = ev.bodies("blackcam").remove(0);
    assert_eq!(body["event"], "health");
    assert_eq!(body["app"], "live");
    assert_eq!(body["domain"], "127.0.0.1");
    assert!(body["time"].as_str().unwrap().ends_with('Z'));
    assert!(body["timestamp"].as_u64().unwrap() > 1_600_000_000);
    assert!(headers.contains_key("ALI-LIVE-SIGNATURE"));
    let m = metrics(&server).await;
    assert!(
        m.contains("livesnap_health_active{condition=\"black\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("livesnap_health_transitions_total{condition=\"black\",state=\"start\"} 1"),
        "{m}"
    );
    // The publish ends: black ends, once, on both URLs.
    p.finish().await;
    assert!(
        wait_for(Duration::from_secs(5), || ev
            .has("blackcam", "black", "end"))
        .await,
        "{:?}",
        ev.health("blackcam")
    );
    assert_eq!(
        ev.health("blackcam").len(),
        4,
        "one start and one end, each on two URLs: {:?}",
        ev.health("blackcam")
    );
    let m = metrics(&server).await;
    assert!(
        m.contains("livesnap_health_active{condition=\"black\"} 0"),
        "{m}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_picture_starts_frozen_ordinary_content_nothing() {
    let ev = Events::default();
    let addr = listener(ev.clone()).await;
    let mut server = server(addr, "no_video_secs = 60\nno_keyframe_secs = 60").await;
    let frozen = push(&server, "frozencam", "frozen_640x360.flv").await;
    let ordinary = push(&server, "movingcam", "baseline_640x360_gop1s.flv").await;
    let with_audio = push(&server, "audiocam", "high_1280x720_bframes_aac.flv").await;
    assert!(
        wait_active(&server, "frozencam", &["frozen"], Duration::from_secs(10)).await,
        "{:?}",
        api_health(&server, "frozencam").await
    );
    assert!(
        wait_for(Duration::from_secs(5), || ev.has(
            "frozencam",
            "frozen",
            "start"
        ))
        .await
    );
    // Every snapshot of the moving streams is rendered and checked by now (a check
    // runs every second): nothing.
    let node = server.node().clone();
    assert!(
        wait_for(Duration::from_secs(10), || {
            node.registry
                .list()
                .iter()
                .all(|s| s.stats.in_flight() == 0)
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for cam in ["movingcam", "audiocam"] {
        assert_eq!(active(&server, cam).await, Vec::<String>::new(), "{cam}");
        assert_eq!(ev.health(cam), [], "{cam}");
        let h = api_health(&server, cam).await.unwrap();
        assert_eq!(h["since"], serde_json::json!({}), "{cam}");
    }
    // The node shuts down with the publishes live: frozen ends, and the event is
    // delivered before the node is gone.
    assert!(server.stop().await);
    assert!(
        ev.has("frozencam", "frozen", "end"),
        "{:?}",
        ev.health("frozencam")
    );
    drop((frozen, ordinary, with_audio));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframes_that_stop_start_no_keyframe() {
    let ev = Events::default();
    let addr = listener(ev.clone()).await;
    let server = server(addr, "no_keyframe_secs = 2\nno_video_secs = 60").await;
    let mut p = start_publish(server.rtmp, "live", "gopcam").await;
    // Real time: keyframes at 0, 1 and 2 s, then 8 s without one.
    let watch = async {
        let started = Instant::now();
        let seen = wait_active(&server, "gopcam", &["no_keyframe"], Duration::from_secs(9)).await;
        (seen, started.elapsed())
    };
    let file = fixture("keyframes_stop_640x360.flv");
    let (sent, (seen, after)) = tokio::join!(p.replay(&file, 1.0, 0), watch);
    sent.unwrap();
    assert!(seen, "{:?}", api_health(&server, "gopcam").await);
    // The last keyframe came at 2 s: not before it is more than 2 s old (the check
    // measures whole seconds, so allow half a second below 4 s).
    assert!(after >= Duration::from_millis(3500), "{after:?}");
    assert!(
        ev.has("gopcam", "no_keyframe", "start"),
        "{:?}",
        ev.health("gopcam")
    );
    p.finish().await;
    assert!(
        wait_for(Duration::from_secs(5), || ev.has(
            "gopcam",
            "no_keyframe",
            "end"
        ))
        .await,
        "{:?}",
        ev.health("gopcam")
    );
    // Moving content: no other condition ever started.
    assert!(ev
        .health("gopcam")
        .iter()
        .all(|(c, _, _)| c == "no_keyframe"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_starts_no_video_and_video_ends_it() {
    let ev = Events::default();
    let addr = listener(ev.clone()).await;
    let server = server(addr, "no_video_secs = 2\nno_keyframe_secs = 60").await;
    let mut p = start_publish(server.rtmp, "live", "radio").await;
    let tags = fixture_tags("high_1280x720_bframes_aac.flv");
    // Audio only, at real time, until no_video starts (at most 8 s of it).
    let started = Instant::now();
    let mut audio = tags.iter().filter(|t| t.tag_type == 8);
    let mut seen = false;
    while started.elapsed() < Duration::from_secs(8) {
        let t = audio.next().unwrap();
        let due = Duration::from_millis(u64::from(t.timestamp_ms));
        tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
        p.audio(t.timestamp_ms, t.data.clone()).await.unwrap();
        if t.timestamp_ms % 1000 < 30 && active(&server, "radio").await == ["no_video"] {
            seen = true;
            break;
        }
    }
    assert!(seen, "{:?}", api_health(&server, "radio").await);
    // Not before no_video_secs (2 s, measured in whole seconds) passed.
    assert!(started.elapsed() > Duration::from_millis(1500));
    assert!(
        wait_for(Duration::from_secs(5), || ev
            .has("radio", "no_video", "start"))
        .await
    );
    // Video arrives: no_video ends while the publish goes on.
    let ts = started.elapsed().as_millis() as u32;
    for t in tags.iter().filter(|t| t.tag_type == 9).take(30) {
        p.video(ts + t.timestamp_ms, t.data.clone()).await.unwrap();
    }
    assert!(wait_active(&server, "radio", &[], Duration::from_secs(5)).await);
    assert!(
        wait_for(Duration::from_secs(5), || ev
            .has("radio", "no_video", "end"))
        .await
    );
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframes_that_fail_to_decode_start_decode_failing() {
    let ev = Events::default();
    let addr = listener(ev.clone()).await;
    let server = server(
        addr,
        "decode_failing_after = 3\nno_video_secs = 60\nno_keyframe_secs = 60",
    )
    .await;
    let mut p = start_publish(server.rtmp, "live", "broken").await;
    let tags = fixture_tags("baseline_640x360_gop1s.flv");
    let header = tags
        .iter()
        .find(|t| t.tag_type == 9 && t.data.get(1) == Some(&0))
        .unwrap();
    p.video(0, header.data.clone()).await.unwrap();
    // Keyframes whose one NAL unit claims 64 bytes and carries 2: no picture. One per
    // snapshot interval, so each is due.
    let bad = Bytes::from_static(&[0x17, 0x01, 0, 0, 0, 0, 0, 0, 64, 0x65, 0x88]);
    for i in 0..4u32 {
        p.video(i * 5000, bad.clone()).await.unwrap();
    }
    assert!(
        wait_active(
            &server,
            "broken",
            &["decode_failing"],
            Duration::from_secs(10)
        )
        .await,
        "{:?}",
        api_health(&server, "broken").await
    );
    assert!(
        wait_for(Duration::from_secs(5), || ev.has(
            "broken",
            "decode_failing",
            "start"
        ))
        .await
    );
    p.finish().await;
    assert!(
        wait_for(Duration::from_secs(5), || ev.has(
            "broken",
            "decode_failing",
            "end"
        ))
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_tile_shows_a_health_badge() {
    let dir = tempfile::tempdir().unwrap();
    // A long idle timeout: the publisher pauses while the browser runs.
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
idle_timeout_secs = 120
[snapshot]
workers = 2
[storage.default]
scheme = "fs"
root = "{}"
{DEFAULT_RULES}
[health]
no_video_secs = 300
no_keyframe_secs = 300
"#,
        dir.path().join("snapshots").display()
    );
    let mut server = TestServer::start(dir, &text).await;
    let p = push(&server, "blackcam", "black_640x360.flv").await;
    assert!(wait_active(&server, "blackcam", &["black"], Duration::from_secs(10)).await);
    let url = format!("http://{}/", server.http);
    let dom = tokio::task::spawn_blocking(move || dump_dom(&url, 4000))
        .await
        .unwrap();
    assert!(
        dom.contains("data-health=\"black\""),
        "the tile does not carry its health:\n{dom}"
    );
    assert!(
        dom.contains("<span class=\"badge\" title=\"black since "),
        "no badge:\n{dom}"
    );
    p.finish().await;
    assert!(server.stop().await);
}

#[test]
fn health_settings_are_validated_with_the_config() {
    use livesnap::config::Config;
    let err = |text: &str| {
        Config::parse(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
    };
    assert!(
        err("[health]\nfrozen_snapshots = 2").contains("health.frozen_snapshots"),
        "{}",
        err("[health]\nfrozen_snapshots = 2")
    );
    assert!(err("[health]\nno_video_secs = 0").contains("health.no_video_secs"));
    assert!(Config::parse("[health]\nblack_max = 3").is_err());
    let ok = Config::parse("[health]\nblack_luma_max = 255\nfrozen_snapshots = 5")
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(ok.health.black_luma_max, 255);
    assert_eq!(ok.health.frozen_snapshots, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_disabled_reports_nothing() {
    let ev = Events::default();
    let addr = listener(ev.clone()).await;
    let server = server(addr, "enabled = false\nno_video_secs = 1").await;
    let p = push(&server, "offcam", "black_640x360.flv").await;
    let node = server.node().clone();
    assert!(
        wait_for(Duration::from_secs(10), || {
            node.registry
                .list()
                .iter()
                .all(|s| s.stats.stored.load(std::sync::atomic::Ordering::Relaxed) >= 3)
        })
        .await
    );
    // Black pictures and no video for more than 1 s: with health off, nothing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(active(&server, "offcam").await, Vec::<String>::new());
    assert_eq!(ev.health("offcam"), []);
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_may_replace_the_node_thresholds_for_its_streams() {
    // App "studio" films a dark set on purpose: its rule's own thresholds never call
    // its picture black, while the same picture under the node's thresholds is black.
    let server = start_server(
        r#"
[[rules]]
domain = "*"
app = "*"
interval_secs = 5
storage = "default"
overwrite_object = "{AppName}/{StreamName}.jpg"
[[rules]]
domain = "*"
app = "studio"
interval_secs = 5
storage = "default"
overwrite_object = "studio/{StreamName}.jpg"
health = { black_luma_max = 0, black_spread_max = 0, no_video_secs = 60, no_keyframe_secs = 60 }
[health]
no_video_secs = 60
no_keyframe_secs = 60
"#,
    )
    .await;
    let live = push(&server, "lit", "black_640x360.flv").await;
    let mut studio = start_publish(server.rtmp, "studio", "dark").await;
    studio
        .replay(&fixture("black_640x360.flv"), 0.0, 0)
        .await
        .unwrap();
    assert!(
        wait_active(&server, "lit", &["black"], Duration::from_secs(10)).await,
        "{:?}",
        api_health(&server, "lit").await
    );
    // Both have been judged by now (one check a second covers every stream).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Not black under its rule; a picture that never changes is still frozen.
    assert_eq!(active(&server, "dark").await, ["frozen"]);
    live.finish().await;
    studio.finish().await;

    // A rule's thresholds are validated like [health], under the rule's key.
    let err = livesnap::config::Config::parse(
        "[[rules]]\ndomain = \"*\"\napp = \"*\"\ninterval_secs = 5\nstorage = \"default\"\noverwrite_object = \"{AppName}/{StreamName}.jpg\"\nhealth = { frozen_snapshots = 2 }\n[storage.default]\nscheme = \"memory\"\n",
    )
    .unwrap()
    .validate()
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("rules[0].health.frozen_snapshots"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframes_further_apart_than_the_interval_are_reported() {
    let ev = Events::default();
    let addr = listener(ev.clone()).await;
    let server = server(addr, "no_video_secs = 60\nno_keyframe_secs = 60").await;
    // Keyframes every 8 s under a 5 s rule, and every 1 s.
    let sparse = push(&server, "sparse", "long_gop_640x360.flv").await;
    let dense = push(&server, "dense", "baseline_640x360_gop1s.flv").await;
    // The flag once the node has read two keyframes of the stream (the pushes return
    // when their bytes are written, not when the node has read them).
    let flag = |stream: &'static str| {
        let server = &server;
        async move {
            let end = Instant::now() + Duration::from_secs(10);
            loop {
                let v = api_health(server, stream).await.unwrap()["keyframes_sparser_than_rule"]
                    .clone();
                if !v.is_null() || Instant::now() > end {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(flag("sparse").await, Value::Bool(true));
    assert_eq!(flag("dense").await, Value::Bool(false));
    sparse.finish().await;
    dense.finish().await;
}
