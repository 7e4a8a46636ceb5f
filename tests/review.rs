//! The moderation hook against a classifier stand-in on loopback (axum): verdicts
//! arrive, are stored under `_livesnap/review/` and sent as `review` events; a verdict
//! reaching `review_kick` stops the publish; a dead or slow endpoint costs ingest
//! nothing.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use serde_json::{json, Value};

const FIXTURE: &str = "high_1280x720_bframes_aac.flv";

/// One request the classifier received.
#[derive(Clone)]
struct Asked {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct Classifier {
    asked: Arc<Mutex<Vec<Asked>>>,
    events: Arc<Mutex<Vec<Value>>>,
    score: f64,
    delay: Duration,
}

impl Classifier {
    async fn start(score: f64, delay: Duration) -> (Classifier, SocketAddr) {
        let c = Classifier {
            asked: Default::default(),
            events: Default::default(),
            score,
            delay,
        };
        let app = Router::new()
            .route(
                "/classify",
                post(
                    |State(c): State<Classifier>, headers: HeaderMap, body: Bytes| async move {
                        c.asked.lock().unwrap().push(Asked { headers, body });
                        tokio::time::sleep(c.delay).await;
                        Json(json!({"labels": [{"name": "porn", "score": c.score},
                                               {"name": "violence", "score": 0.01}]}))
                    },
                ),
            )
            .route(
                "/events",
                post(
                    |State(c): State<Classifier>, Json(v): Json<Value>| async move {
                        c.events.lock().unwrap().push(v);
                    },
                ),
            )
            .with_state(c.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        (c, addr)
    }

    fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }

    fn reviews(&self) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "review")
            .cloned()
            .collect()
    }
}

fn rule(review: &str) -> String {
    format!(
        r#"
[[rules]]
domain = "*"
app = "*"
interval_secs = 5
storage = "default"
overwrite_object = "{{AppName}}/{{StreamName}}.jpg"
sequence_object = "{{AppName}}/{{StreamName}}/{{Sequence}}.jpg"
{review}
"#
    )
}

#[tokio::test]
async fn every_stored_snapshot_is_reviewed_and_its_verdict_stored_and_sent() {
    let (c, addr) = Classifier::start(0.2, Duration::ZERO).await;
    let server = start_server(&format!(
        "{}\n[notify]\nurl = \"http://{addr}/events\"\ncallback_auth_key = \"event-key\"\n",
        rule(&format!("review_url = \"http://{addr}/classify\""))
    ))
    .await;
    publish_fixture(&server, "live", "cam", FIXTURE, 0.0).await;
    let sequence = || -> Vec<String> {
        list_files(&server.root())
            .into_iter()
            .filter(|k| k.starts_with("live/cam/"))
            .collect()
    };
    assert!(wait_for(Duration::from_secs(10), || sequence().len() == 4).await);
    let stored = sequence();
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert!(
        wait_for(Duration::from_secs(10), || c.reviews().len() == 4).await,
        "review events: {:?}",
        c.reviews()
    );
    let asked = c.asked();
    assert_eq!(asked.len(), 4);
    for key in &stored {
        let a = asked
            .iter()
            .find(|a| a.headers["x-livesnap-key"] == key.as_str())
            .unwrap_or_else(|| panic!("{key} was not reviewed"));
        // The JPEG itself, as stored, signed like callbacks.
        assert_eq!(a.headers["content-type"], "image/jpeg");
        assert_eq!(a.headers["x-livesnap-stream"], "cam");
        assert!(a.headers.contains_key("ali-live-signature"));
        let bytes = std::fs::read(server.root().join(key)).unwrap();
        assert_eq!(
            a.body[..],
            bytes[..],
            "{key}: the body is the stored object"
        );
        // The verdict beside it, under the prefix no template can render.
        let verdict: Value = serde_json::from_slice(
            &std::fs::read(server.root().join(format!("_livesnap/review/{key}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(verdict["key"], key.as_str());
        assert_eq!(verdict["labels"][0]["name"], "porn");
        assert_eq!(verdict["kicked"], false);
    }
    let e = &c.reviews()[0];
    assert_eq!(e["stream"], "cam");
    assert!(e["object"].as_str().unwrap().starts_with("live/cam/"));
    assert!(e["review_object"]
        .as_str()
        .unwrap()
        .starts_with("_livesnap/review/live/cam/"));
    let m = server
        .node()
        .metrics
        .reviews
        .get_or_create(&vec![("result", "done")])
        .get();
    assert_eq!(m, 4);
    // The snapshot query returns each object's verdict.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let url = format!(
        "http://{}/api/v1/snapshots?domain=127.0.0.1&app=live&stream=cam&start_time={}&end_time={}&limit=100",
        server.http,
        livesnap::clock::rfc3339(now - 3600),
        livesnap::clock::rfc3339(now + 3600)
    );
    let body = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    let page: Value = serde_json::from_slice(&body).unwrap();
    let items = page["items"].as_array().unwrap();
    let sequence_items: Vec<&Value> = items
        .iter()
        .filter(|i| i["key"].as_str().unwrap().starts_with("live/cam/"))
        .collect();
    assert_eq!(sequence_items.len(), 4, "{page}");
    for i in sequence_items {
        assert_eq!(i["review"]["labels"][0]["name"], "porn", "{i}");
    }
}

#[tokio::test]
async fn review_every_n_and_kick_on_a_verdict() {
    let (c, addr) = Classifier::start(0.95, Duration::ZERO).await;
    let server = start_server(&rule(&format!(
        "review_url = \"http://{addr}/classify\"\nreview_every = 2\nreview_kick = {{ label = \"porn\", score = 0.9 }}"
    )))
    .await;
    let mut publisher = start_publish(server.rtmp, "live", "bad").await;
    // Three due keyframes (0, 5, 10 s): the first and the third are reviewed; the first
    // verdict already stops the publish.
    send_range(&mut publisher, FIXTURE, 0, 12_000).await;
    assert!(
        publisher.closed_within(Duration::from_secs(10)).await,
        "the publish was stopped by the verdict"
    );
    let asked = c.asked();
    assert!(
        !asked.is_empty() && asked.len() <= 2,
        "{} reviews",
        asked.len()
    );
    assert_eq!(asked[0].headers["x-livesnap-key"], "live/bad/1.jpg");
    let path = server.root().join("_livesnap/review/live/bad/1.jpg.json");
    assert!(wait_for(Duration::from_secs(5), || path.exists()).await);
    let verdict: Value = serde_json::from_slice(
        &std::fs::read(server.root().join("_livesnap/review/live/bad/1.jpg.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(verdict["kicked"], true);
}

#[tokio::test]
async fn a_dead_or_slow_endpoint_costs_ingest_nothing() {
    let dead = free_addr();
    let (slow, slow_addr) = Classifier::start(0.1, Duration::from_secs(60)).await;
    let server = start_server(&format!(
        "{}\n[[rules]]\ndomain = \"*\"\napp = \"slow\"\ninterval_secs = 5\nstorage = \"default\"\noverwrite_object = \"slow~{{StreamName}}.jpg\"\nreview_url = \"http://{slow_addr}/classify\"\n",
        rule(&format!("review_url = \"http://{dead}/classify\""))
    ))
    .await;
    let started = std::time::Instant::now();
    publish_fixture(&server, "live", "d", FIXTURE, 0.0).await;
    publish_fixture(&server, "slow", "s", FIXTURE, 0.0).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "two full-speed publishes took {:?}",
        started.elapsed()
    );
    // Every due snapshot was stored, whatever the endpoints did.
    let stored = || {
        let files = list_files(&server.root());
        files.iter().filter(|k| k.starts_with("live/d/")).count() == 4
            && files.contains(&"slow~s.jpg".to_string())
    };
    assert!(wait_for(Duration::from_secs(10), stored).await);
    let files = list_files(&server.root());
    assert_eq!(
        files.iter().filter(|k| k.starts_with("live/d/")).count(),
        4,
        "{files:?}"
    );
    assert!(files.contains(&"slow~s.jpg".to_string()), "{files:?}");
    let failed = || {
        server
            .node()
            .metrics
            .reviews
            .get_or_create(&vec![("result", "failed")])
            .get()
    };
    assert!(
        wait_for(Duration::from_secs(30), || failed() == 4).await,
        "failed reviews: {}",
        failed()
    );
    assert!(!slow.asked().is_empty(), "the slow endpoint was asked");
    assert!(slow.reviews().is_empty());
}

#[tokio::test]
async fn review_settings_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    for (review, key) in [
        ("review_every = 2", "rules[0].review_every"),
        ("review_url = \"ftp://x/y\"", "rules[0].review_url"),
        (
            "review_url = \"http://127.0.0.1:1/c\"\nreview_kick = { label = \"porn\", score = 1.5 }",
            "rules[0].review_kick.score",
        ),
        (
            "review_url = \"http://127.0.0.1:1/c\"\nreview_every = 0",
            "rules[0].review_every",
        ),
    ] {
        let text = format!(
            "[storage.default]\nscheme = \"fs\"\nroot = \"{}\"\n{}",
            dir.path().display(),
            rule(review)
        );
        let err = livesnap::config::Config::parse(&text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(key), "{review}: {err}");
    }
}
