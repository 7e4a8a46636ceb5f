//! The S3 storage path end to end: a real S3-protocol server (`moto_server`) on
//! loopback, a real node publishing to it, and the bucket read back through opendal.
//! Also what a storage outage does to a publisher: nothing (snapshots are dropped
//! and counted, the replay keeps its pace).
//!
//! `moto_server` must be on the PATH (`.ci/setup` installs `moto[server]==5.2.5` into
//! `target/ci-venv`, and `.ci/test` puts it on the PATH); without it these tests fail,
//! they never skip.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::moto::s3_config;
use common::*;
use livesnap::snapshot::stats::StreamStats;
use opendal::{ErrorKind, Operator};

const BUCKET: &str = "livesnap-test";
/// 640x360, a keyframe every second, 12 s: snapshots due at 0, 5 and 10 s.
const FIXTURE: &str = "baseline_640x360_gop1s.flv";
const REPLAY_SPEED: f64 = 4.0;

/// Every object key in the bucket, sorted.
async fn list_keys(op: &Operator) -> Vec<String> {
    let mut keys: Vec<String> = op
        .list_with("/")
        .recursive(true)
        .await
        .expect("list the bucket")
        .into_iter()
        .filter(|e| e.metadata().mode().is_file())
        .map(|e| e.path().to_string())
        .collect();
    keys.sort();
    keys
}

async fn read(op: &Operator, key: &str) -> Vec<u8> {
    op.read(key)
        .await
        .unwrap_or_else(|e| panic!("read {key}: {e}"))
        .to_vec()
}

/// Publishes the fixture as live/`stream` at `REPLAY_SPEED`; returns how long the
/// replay itself took and the stream's counters (taken from the registry while live).
async fn timed_publish(server: &TestServer, stream: &str) -> (Duration, Arc<StreamStats>) {
    let mut publisher = start_publish(server.rtmp, "live", stream).await;
    let live = |server: &TestServer| {
        server
            .node()
            .registry
            .list()
            .into_iter()
            .find(|s| s.id.app == "live" && s.id.stream == stream)
    };
    assert!(
        wait_for(Duration::from_secs(5), || live(server).is_some()).await,
        "live/{stream} is not in the registry"
    );
    let stats = live(server).expect("live").stats.clone();
    let start = Instant::now();
    publisher
        .replay(&fixture(FIXTURE), REPLAY_SPEED, 0)
        .await
        .expect("the node never cuts the publisher off");
    let took = start.elapsed();
    publisher.finish().await;
    (took, stats)
}

/// How long a replay of the fixture at `REPLAY_SPEED` lasts at the least.
fn nominal_replay() -> Duration {
    let last_ms = fixture_tags(FIXTURE)
        .iter()
        .map(|t| t.timestamp_ms)
        .max()
        .unwrap();
    Duration::from_secs_f64(f64::from(last_ms) / 1000.0 / REPLAY_SPEED)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_sequence_and_overwrite_objects_continue_across_a_restart() {
    let moto = common::moto::MotoServer::start().await;
    moto.create_bucket(BUCKET).await;
    let config = s3_config(BUCKET, &moto.endpoint(), 10, 2);

    let mut first = start_server(&config).await;
    let op = first.operator("s3");
    publish_fixture(&first, "live", "cam", FIXTURE, REPLAY_SPEED).await;
    assert!(first.stop().await, "shutdown finished in time");

    assert_eq!(list_keys(&op).await, snapshot_keys("cam", 3));
    let mut before = Vec::new();
    for key in snapshot_keys("cam", 3) {
        let jpeg = read(&op, &key).await;
        let (w, h, _) = decode_jpeg(&jpeg);
        assert_eq!((w, h), (640, 360), "{key} dimensions");
        let meta = op.stat(&key).await.unwrap();
        assert_eq!(
            meta.content_type(),
            Some("image/jpeg"),
            "{key} content-type"
        );
        before.push((key, jpeg));
    }
    assert_eq!(
        read(&op, "live/cam.jpg").await,
        read(&op, "live/cam/3.jpg").await,
        "the overwrite object is the last snapshot"
    );
    // Nothing went to the node's other (fs) target.
    assert!(list_files(&first.root()).is_empty());

    // The server honours `If-None-Match: *`: a create-only write on a taken key is
    // refused (opendal reports the 412 as ConditionNotMatch) and changes nothing.
    let refused = op
        .write_with("live/cam/1.jpg", b"not a jpeg".to_vec())
        .if_not_exists(true)
        .await
        .expect_err("create-only write over an existing object");
    assert_eq!(refused.kind(), ErrorKind::ConditionNotMatch, "{refused}");

    // A new node on the same bucket continues the sequence at 4 and replaces nothing.
    let mut second = start_server(&config).await;
    publish_fixture(&second, "live", "cam", FIXTURE, REPLAY_SPEED).await;
    assert!(second.stop().await, "shutdown finished in time");
    assert_eq!(list_keys(&op).await, snapshot_keys("cam", 6));
    for (key, jpeg) in before.iter().filter(|(k, _)| k.starts_with("live/cam/")) {
        assert!(read(&op, key).await == *jpeg, "{key} was replaced");
    }
    for i in 4..=6 {
        let key = format!("live/cam/{i}.jpg");
        let (w, h, _) = decode_jpeg(&read(&op, &key).await);
        assert_eq!((w, h), (640, 360), "{key} dimensions");
    }
    assert_eq!(
        read(&op, "live/cam.jpg").await,
        read(&op, "live/cam/6.jpg").await,
        "the overwrite object is the last snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_drops_snapshots_without_stalling_the_publisher() {
    // Nothing listens on this port: every storage request is refused at once.
    let dead = format!("http://{}", free_addr());
    let mut down = start_server(&s3_config(BUCKET, &dead, 1, 0)).await;
    let (outage_took, stats) = timed_publish(&down, "cam").await;
    assert!(
        down.stop().await,
        "store tasks ended within the grace period"
    );
    assert_eq!(count(&stats.due), 3, "{}", stats.summary());
    assert_eq!(count(&stats.stored), 0, "{}", stats.summary());
    assert!(count(&stats.failed_store) >= 3, "{}", stats.summary());
    assert_eq!(count(&stats.finished), 3, "{}", stats.summary());

    // The same publish against a working endpoint: stored, and no faster.
    let moto = common::moto::MotoServer::start().await;
    moto.create_bucket(BUCKET).await;
    let mut up = start_server(&s3_config(BUCKET, &moto.endpoint(), 10, 2)).await;
    let op = up.operator("s3");
    let (working_took, stats) = timed_publish(&up, "cam").await;
    assert!(up.stop().await, "shutdown finished in time");
    assert_eq!(count(&stats.stored), 3, "{}", stats.summary());
    assert_eq!(count(&stats.failed_store), 0, "{}", stats.summary());
    assert_eq!(list_keys(&op).await, snapshot_keys("cam", 3));

    assert!(
        outage_took <= working_took + Duration::from_secs(3),
        "replay took {outage_took:?} with storage down, {working_took:?} with it up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_endpoint_that_never_answers_times_out_without_stalling_the_publisher() {
    // Accepts connections and never answers: every attempt runs into timeout_secs.
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", blackhole.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = blackhole.accept().await {
            held.push(sock);
        }
    });
    let mut server = start_server(&s3_config(BUCKET, &endpoint, 1, 0)).await;
    let (took, stats) = timed_publish(&server, "cam").await;
    let limit = nominal_replay() + Duration::from_secs(3);
    assert!(took <= limit, "replay took {took:?} (limit {limit:?})");
    // Each snapshot costs at most two timed-out requests (list, put): 3 × 2 s < the
    // 10 s grace period.
    let stopping = Instant::now();
    assert!(
        server.stop().await,
        "store tasks ended within the grace period"
    );
    assert!(stopping.elapsed() < Duration::from_secs(10));
    holder.abort();
    assert_eq!(count(&stats.due), 3, "{}", stats.summary());
    assert_eq!(count(&stats.stored), 0, "{}", stats.summary());
    assert!(count(&stats.failed_store) >= 3, "{}", stats.summary());
    assert_eq!(count(&stats.finished), 3, "{}", stats.summary());
}
