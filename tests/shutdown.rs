//! Shutdown delivers the events it produces: a publish cut by the first shutdown stage
//! gets its `unpublish` callback, and each snapshot stored during the grace period its
//! `snapshot` callback, before `shutdown` returns; a receiver that never answers holds the
//! shutdown no longer than the grace period.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::*;
use serde_json::Value;

/// The events a callback receiver got, in arrival order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Value>>>);

impl Received {
    fn named(&self, event: &str) -> Vec<Value> {
        let got = self.0.lock().unwrap();
        got.iter()
            .filter(|v| v["event"] == event)
            .cloned()
            .collect()
    }
}

async fn record(State(rec): State<Received>, body: String) -> StatusCode {
    let v = serde_json::from_str(&body).unwrap_or(Value::Null);
    rec.0.lock().unwrap().push(v);
    StatusCode::OK
}

/// A receiver on 127.0.0.1:0: POST /cb records; POST /never answers after 60 s.
async fn receiver(rec: Received) -> SocketAddr {
    let app = Router::new()
        .route("/cb", post(record))
        .route(
            "/never",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                StatusCode::OK
            }),
        )
        .with_state(rec);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

const FIXTURE: &str = "baseline_640x360_gop1s.flv";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_the_grace_period_are_delivered() {
    let rec = Received::default();
    let addr = receiver(rec.clone()).await;
    let mut server = start_server(&format!(
        "{DEFAULT_RULES}\n[notify]\nurl = \"http://{addr}/cb\"\n"
    ))
    .await;
    let mut p = start_publish(server.rtmp, "live", "cut").await;
    assert!(wait_for(Duration::from_secs(5), || rec.named("publish").len() == 1).await);
    // Keyframes at 0 s and 5 s are due: their snapshots are taken while the node stops.
    send_range(&mut p, FIXTURE, 0, 5500).await;
    // Bytes still in the socket when the node stops are never read (the publisher is
    // cut): stop once the node has seen both due keyframes.
    let due = || {
        server
            .node()
            .registry
            .list()
            .first()
            .is_some_and(|s| count(&s.stats.due) == 2)
    };
    assert!(
        wait_for(Duration::from_secs(5), due).await,
        "both keyframes read"
    );
    let stopped = server.stop().await;
    assert!(stopped, "shutdown finished within the grace period");
    // Delivered before `shutdown` returned: no waiting here.
    let unpublish = rec.named("unpublish");
    assert_eq!(unpublish.len(), 1, "unpublish of the cut publish");
    assert_eq!(unpublish[0]["stream"], "cut");
    let stored: Vec<String> = list_files(&server.root())
        .into_iter()
        .filter(|f| f.starts_with("live/cut/"))
        .collect();
    assert!(!stored.is_empty(), "a snapshot was stored");
    let mut announced: Vec<String> = rec
        .named("snapshot")
        .iter()
        .map(|v| v["sequence_object"].as_str().unwrap().to_string())
        .collect();
    announced.sort();
    assert_eq!(announced, stored, "every stored snapshot was announced");
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_holds_shutdown_for_the_grace_only() {
    let rec = Received::default();
    let addr = receiver(rec.clone()).await;
    let config = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
shutdown_grace_secs = 2
[storage.default]
scheme = "memory"
[notify]
url = "http://{addr}/never"
"#
    );
    let mut server = TestServer::start(tempfile::tempdir().unwrap(), &config).await;
    let p = start_publish(server.rtmp, "live", "stuck").await;
    // The publish event is now being delivered to a receiver that never answers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let node = server.node().clone();
    let started = Instant::now();
    let stopped = server.stop().await;
    let took = started.elapsed();
    assert!(!stopped, "undelivered callbacks are reported");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "shutdown took {took:?} with a 2 s grace"
    );
    // The publish (in flight) and the unpublish (queued) were given up and counted.
    assert_eq!(node.metrics.callbacks_dropped.get(), 2);
    drop(p);
}
