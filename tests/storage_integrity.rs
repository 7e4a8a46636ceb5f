//! No-Overwrite really never overwrites (issue 11, part 2): create-only objects on a
//! shared folder have exactly one winner, two writers on one stream keep every
//! snapshot, a taken `{UnixTimestamp}` key is skipped and counted, `{Sequence}` never
//! wraps, a write that timed out but landed is not stored twice (sequence objects and
//! the rule store, through a proxy that loses one response of a real S3 server), and a
//! store that ignores conditional writes is refused at start.
//!
//! Real components: an fs folder, `moto_server` (honours `If-None-Match`), `s3rver`
//! (ignores it). Neither is mocked; without them these tests fail, they never skip.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::fault_proxy::FaultProxy;
use common::moto::MotoServer;
use common::s3rver::S3rver;
use livesnap::config::Config;
use livesnap::metrics::Metrics;
use livesnap::names::StreamId;
use livesnap::notify::{Notifier, NotifyConfig};
use livesnap::rules::RuleSpec;
use livesnap::snapshot::stats::StreamStats;
use livesnap::snapshot::writer::{Snapshot, SnapshotWriter, WriterContext};
use livesnap::storage::settings::StorageSettings;
use livesnap::storage::{build, Created, Target};

const SEQ: &str = "{AppName}/{StreamName}/{Sequence}.jpg";
const TS: &str = "{AppName}/{StreamName}/{UnixTimestamp}.jpg";

fn fs_settings(root: &std::path::Path) -> StorageSettings {
    StorageSettings {
        name: "default".into(),
        scheme: "fs".into(),
        timeout: Duration::from_secs(5),
        retries: 2,
        options: [("root".to_string(), root.display().to_string())].into(),
    }
}

fn s3_settings(endpoint: &str, bucket: &str, timeout_secs: u64) -> StorageSettings {
    let opts = [
        ("bucket", bucket),
        ("endpoint", endpoint),
        ("region", "us-east-1"),
        // s3rver's built-in credentials; moto takes any.
        ("access_key_id", "S3RVER"),
        ("secret_access_key", "S3RVER"),
        ("disable_config_load", "true"),
        ("disable_ec2_metadata", "true"),
    ];
    StorageSettings {
        name: "default".into(),
        scheme: "s3".into(),
        timeout: Duration::from_secs(timeout_secs),
        retries: 2,
        options: opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// A writer of live/cam1 (one "node") under `template` on `target`.
fn writer(target: Target, template: &str) -> (SnapshotWriter, Arc<Metrics>, Arc<StreamStats>) {
    let rule = RuleSpec {
        domain: "*".into(),
        app: "*".into(),
        interval_secs: 5,
        storage: "default".into(),
        sequence_object: Some(template.into()),
        ..Default::default()
    }
    .validate("rule", |_| true)
    .unwrap();
    let metrics = Arc::new(Metrics::new());
    let stats = Arc::new(StreamStats::default());
    let cx = WriterContext {
        metrics: metrics.clone(),
        notify: Notifier::new(
            &NotifyConfig::default(),
            metrics.clone(),
            livesnap::clock::system(),
        ),
        stats: stats.clone(),
        latest: Default::default(),
        review: None,
    };
    let w = SnapshotWriter::new(
        StreamId::new("d", "live", "cam1"),
        Arc::new(rule),
        target,
        cx,
    );
    (w, metrics, stats)
}

fn snap(body: String, unix_ts: u64) -> Snapshot {
    Snapshot {
        jpeg: Bytes::from(body),
        width: 2,
        height: 2,
        unix_ts,
        arrived: Instant::now(),
        outputs: Vec::new(),
    }
}

fn key_taken(m: &Metrics, why: &'static str) -> u64 {
    m.keys_taken.get_or_create(&vec![("reason", why)]).get()
}

fn failed(m: &Metrics, why: &'static str) -> u64 {
    m.snapshots_failed
        .get_or_create(&vec![("reason", why)])
        .get()
}

/// Every file of a folder: (name, content), sorted.
fn folder(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_create_only_has_exactly_one_winner_among_32_writers() {
    let dir = tempfile::tempdir().unwrap();
    // Two "nodes" sharing the folder, 16 writers each.
    let nodes = [
        build(&fs_settings(dir.path())).unwrap(),
        build(&fs_settings(dir.path())).unwrap(),
    ];
    for round in 0..5 {
        let key = format!("live/cam1/{round}.jpg");
        let barrier = Arc::new(tokio::sync::Barrier::new(32));
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let t = nodes[i % 2].clone();
                let (key, barrier) = (key.clone(), barrier.clone());
                tokio::spawn(async move {
                    let body = Bytes::from(format!("writer {i} ").repeat(1000));
                    barrier.wait().await;
                    (body.clone(), t.put_create_only(&key, body).await.unwrap())
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (body, created) = t.await.unwrap();
            match created {
                Created::Yes => winners.push(body),
                Created::AlreadyExists => {}
                Created::LandedEarlier => panic!("no attempt failed, none can have landed"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one writer creates"
        );
        let stored = std::fs::read(dir.path().join(&key)).unwrap();
        assert_eq!(stored, winners[0], "round {round}: the winner's content");
    }
    let tmp = dir.path().join(livesnap::storage::FS_TMP_DIR);
    assert_eq!(
        std::fs::read_dir(tmp).unwrap().count(),
        0,
        "no temp file left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_folder_keep_every_sequence_snapshot_of_both() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, ma, _) = writer(build(&fs_settings(dir.path())).unwrap(), SEQ);
    let (mut b, mb, _) = writer(build(&fs_settings(dir.path())).unwrap(), SEQ);
    const N: u64 = 20;
    async fn run(w: &mut SnapshotWriter, who: &'static str) -> Vec<Option<String>> {
        let mut out = Vec::new();
        for i in 0..N {
            let s = snap(format!("{who}{i}"), 1_700_000_000 + i);
            out.push(w.store(s).await.and_then(|s| s.sequence_key));
        }
        out
    }
    let (ka, kb) = tokio::join!(run(&mut a, "a"), run(&mut b, "b"));
    assert!(ka.iter().chain(&kb).all(Option::is_some), "{ka:?} {kb:?}");
    let files = folder(&dir.path().join("live/cam1"));
    let mut names: Vec<u64> = files
        .iter()
        .map(|(n, _)| n.trim_end_matches(".jpg").parse().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, (1..=2 * N).collect::<Vec<_>>(), "no gap, no loss");
    let mut bodies: Vec<String> = files
        .iter()
        .map(|(_, b)| String::from_utf8(b.clone()).unwrap())
        .collect();
    bodies.sort();
    let mut want: Vec<String> = (0..N)
        .flat_map(|i| [format!("a{i}"), format!("b{i}")])
        .collect();
    want.sort();
    assert_eq!(bodies, want, "every snapshot of both nodes, each once");
    assert!(
        key_taken(&ma, "sequence_next") + key_taken(&mb, "sequence_next") > 0,
        "the writers did race on numbers"
    );
}

#[tokio::test]
async fn a_taken_timestamp_key_means_that_second_is_stored_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _, _) = writer(build(&fs_settings(dir.path())).unwrap(), TS);
    let (mut b, mb, sb) = writer(build(&fs_settings(dir.path())).unwrap(), TS);
    let stored = a.store(snap("a".into(), 1_700_000_000)).await.unwrap();
    assert_eq!(
        stored.sequence_key.as_deref(),
        Some("live/cam1/1700000000.jpg")
    );
    assert_eq!(b.store(snap("b".into(), 1_700_000_000)).await, None);
    assert_eq!(key_taken(&mb, "already_stored"), 1);
    assert_eq!(sb.skipped_existing.load(Ordering::Relaxed), 1);
    assert!(b.store(snap("b".into(), 1_700_000_001)).await.is_some());
    assert_eq!(
        folder(&dir.path().join("live/cam1")),
        [
            ("1700000000.jpg".to_string(), b"a".to_vec()),
            ("1700000001.jpg".to_string(), b"b".to_vec())
        ]
    );
}

#[tokio::test]
async fn a_planted_u64_max_sequence_is_refused_not_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let seq_dir = dir.path().join("live/cam1");
    std::fs::create_dir_all(&seq_dir).unwrap();
    std::fs::write(seq_dir.join("18446744073709551615.jpg"), b"planted").unwrap();
    let (mut w, m, stats) = writer(build(&fs_settings(dir.path())).unwrap(), SEQ);
    for i in 0..3 {
        assert_eq!(
            w.store(snap(format!("s{i}"), 1_700_000_000 + i)).await,
            None
        );
    }
    assert_eq!(failed(&m, "sequence_exhausted"), 3, "each refusal counted");
    assert_eq!(stats.failed_store.load(Ordering::Relaxed), 3);
    assert_eq!(
        folder(&seq_dir),
        [("18446744073709551615.jpg".to_string(), b"planted".to_vec())],
        "nothing wrapped to 0 or 1"
    );

    // One below the top: the last number is used, then the stream refuses.
    let dir = tempfile::tempdir().unwrap();
    let seq_dir = dir.path().join("live/cam1");
    std::fs::create_dir_all(&seq_dir).unwrap();
    std::fs::write(seq_dir.join("18446744073709551614.jpg"), b"planted").unwrap();
    let (mut w, m, _) = writer(build(&fs_settings(dir.path())).unwrap(), SEQ);
    let first = w.store(snap("last".into(), 1_700_000_000)).await.unwrap();
    assert_eq!(
        first.sequence_key.as_deref(),
        Some("live/cam1/18446744073709551615.jpg")
    );
    assert_eq!(w.store(snap("over".into(), 1_700_000_005)).await, None);
    assert_eq!(failed(&m, "sequence_exhausted"), 1);
    assert_eq!(folder(&seq_dir).len(), 2);
}

/// Every key in a bucket, sorted.
async fn bucket_keys(op: &opendal::Operator) -> Vec<String> {
    let mut keys: Vec<String> = op
        .list_with("/")
        .recursive(true)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.metadata().mode().is_file())
        .map(|e| e.path().to_string())
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_put_whose_response_was_lost_is_stored_once() {
    let moto = MotoServer::start().await;
    moto.create_bucket("retry").await;
    let proxy = FaultProxy::start(moto.addr).await;
    let target = build(&s3_settings(&proxy.endpoint(), "retry", 1)).unwrap();
    let (mut w, m, _) = writer(target, SEQ);
    proxy.withhold_next_response("PUT /retry/live/cam1/1.jpg");
    let first = w.store(snap("first".into(), 1_700_000_000)).await.unwrap();
    assert_eq!(proxy.withheld(), 1, "the first response was lost");
    assert_eq!(first.sequence_key.as_deref(), Some("live/cam1/1.jpg"));
    assert_eq!(m.creates_landed_earlier.get(), 1);
    let second = w.store(snap("second".into(), 1_700_000_005)).await.unwrap();
    assert_eq!(second.sequence_key.as_deref(), Some("live/cam1/2.jpg"));
    let direct = build(&s3_settings(&moto.endpoint(), "retry", 5))
        .unwrap()
        .op;
    assert_eq!(
        bucket_keys(&direct).await,
        ["live/cam1/1.jpg", "live/cam1/2.jpg"],
        "the picture is stored once"
    );
    assert_eq!(
        direct.read("live/cam1/1.jpg").await.unwrap().to_vec(),
        b"first"
    );
}

fn s3_node_config(endpoint: &str, bucket: &str, timeout_secs: u64) -> String {
    format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
[storage.s3]
scheme = "s3"
bucket = "{bucket}"
endpoint = "{endpoint}"
region = "us-east-1"
access_key_id = "S3RVER"
secret_access_key = "S3RVER"
disable_config_load = true
disable_ec2_metadata = true
timeout_secs = {timeout_secs}
retries = 2
[rule_store]
storage = "s3"
key = "_livesnap/rules.json"
reload_secs = 60

[[rules]]
domain = "*"
app = "*"
interval_secs = 5
storage = "s3"
sequence_object = "{{AppName}}/{{StreamName}}/{{Sequence}}.jpg"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_create_whose_response_was_lost_answers_201_not_409() {
    let moto = MotoServer::start().await;
    moto.create_bucket("rules").await;
    let proxy = FaultProxy::start(moto.addr).await;
    let settings = Config::parse(&s3_node_config(&proxy.endpoint(), "rules", 1))
        .unwrap()
        .validate()
        .unwrap();
    let running = livesnap::server::start(settings).await.unwrap();
    proxy.withhold_next_response("PUT /rules/_livesnap/rules.json");
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/snapshot-configs", running.http_addr))
        .header("content-type", "application/json")
        .body(r#"{"domain":"*","app":"cam","interval_secs":10,"storage":"s3","overwrite_object":"{AppName}/{StreamName}.jpg"}"#)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!(proxy.withheld(), 1, "the first response was lost");
    assert_eq!(status, 201, "{body}");
    let doc = running.node.shared_rules.as_ref().unwrap().doc();
    assert_eq!(doc.rules.len(), 1);
    assert_eq!(doc.version, 1, "written once");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_ignores_conditional_writes_is_refused_at_start() {
    let s3rver = S3rver::start().await;
    // The store really ignores If-None-Match: a second create replaces the first.
    let target = build(&s3_settings(&s3rver.endpoint(), common::s3rver::BUCKET, 5)).unwrap();
    let put = |b: &'static [u8]| target.put_create_only("x/1.jpg", Bytes::from_static(b));
    assert_eq!(put(b"one").await.unwrap(), Created::Yes);
    assert_eq!(
        put(b"two").await.unwrap(),
        Created::Yes,
        "s3rver replaced it"
    );

    let settings = Config::parse(&s3_node_config(
        &s3rver.endpoint(),
        common::s3rver::BUCKET,
        5,
    ))
    .unwrap()
    .validate()
    .unwrap();
    let err = match livesnap::server::start(settings).await {
        Ok(_) => panic!("the node started on a store that overwrites create-only objects"),
        Err(e) => e.to_string(),
    };
    for part in [
        "storage \"s3\" ignores create-only writes",
        "If-None-Match",
        "versioning on OSS",
        "the rule store",
    ] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
    let left = target.op.list_with("_livesnap/probe/").await.unwrap();
    assert!(
        left.iter().all(|e| !e.metadata().mode().is_file()),
        "the scratch key is deleted: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_honours_conditional_writes_passes_the_probe() {
    let moto = MotoServer::start().await;
    moto.create_bucket("probe").await;
    let settings = Config::parse(&s3_node_config(&moto.endpoint(), "probe", 5))
        .unwrap()
        .validate()
        .unwrap();
    let running = livesnap::server::start(settings).await.unwrap();
    let op = build(&s3_settings(&moto.endpoint(), "probe", 5))
        .unwrap()
        .op;
    assert_eq!(
        bucket_keys(&op).await,
        Vec::<String>::new(),
        "probe key deleted"
    );
    assert!(
        moto.log_text().contains("PUT /probe/_livesnap/probe/"),
        "the probe wrote through the store"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_refuses_sequence_objects_on_a_store_that_ignores_conditional_writes() {
    // The store was not probed at start (say it was down then): the writer probes it
    // before its first sequence write, and keeps the answer.
    let s3rver = S3rver::start().await;
    let target = build(&s3_settings(&s3rver.endpoint(), common::s3rver::BUCKET, 5)).unwrap();
    let (mut w, m, _) = writer(target.clone(), SEQ);
    for i in 0..2 {
        assert_eq!(
            w.store(snap(format!("s{i}"), 1_700_000_000 + i)).await,
            None
        );
    }
    assert_eq!(failed(&m, "store_ignores_conditional_writes"), 2);
    assert_eq!(bucket_keys(&target.op).await, Vec::<String>::new());
}
