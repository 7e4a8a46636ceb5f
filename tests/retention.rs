//! Retention of sequence objects (`retain_secs`, `retain_count`): real nodes on a real
//! folder and on a real S3-protocol server (moto), objects planted with known names
//! and times, passes run by hand (the node task's own is off, except in the one test
//! of the task) under a manual clock, and the `livesnap sweep` command.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use livesnap::clock::ManualClock;
use livesnap::config::Config;
use livesnap::retention::{PassReport, Sweeper};
use livesnap::server::{self, Running};

use common::moto::MotoServer;

/// The tests' "now"; the claim period is `SWEEP` seconds.
const NOW: u64 = 1_800_000_000;
const SWEEP: u64 = 60;

/// Three rules on storage `store`: `live` keeps an hour and at most 5 per stream (times
/// in keys), `seq` keeps 2 per stream (`{Sequence}`, times from storage), `keep` has no
/// retention.
const RULES: &str = r#"
[[rules]]
domain = "*"
app = "live"
interval_secs = 5
storage = "store"
overwrite_object = "{AppName}/{StreamName}.jpg"
sequence_object = "{AppName}/{StreamName}/{UnixTimestamp}.jpg"
retain_secs = 3600
retain_count = 5

[[rules]]
domain = "*"
app = "seq"
interval_secs = 5
storage = "store"
overwrite_object = "{AppName}/{StreamName}/latest.jpg"
sequence_object = "{AppName}/{StreamName}/{Sequence}.jpg"
retain_count = 2

[[rules]]
domain = "*"
app = "keep"
interval_secs = 5
storage = "store"
sequence_object = "{AppName}/{StreamName}/{UnixTimestamp}.jpg"
"#;

fn fs_storage(root: &Path) -> String {
    format!(
        "[storage.store]\nscheme = \"fs\"\nroot = \"{}\"\n",
        root.display()
    )
}

fn s3_storage(moto: &MotoServer, bucket: &str) -> String {
    format!(
        r#"
[storage.store]
scheme = "s3"
bucket = "{bucket}"
endpoint = "{}"
region = "us-east-1"
access_key_id = "livesnap-test-key"
secret_access_key = "livesnap-test-secret"
disable_config_load = true
disable_ec2_metadata = true
timeout_secs = 10
retries = 1
"#,
        moto.endpoint()
    )
}

fn config_text(storage: &str, retention: &str) -> String {
    format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
[snapshot]
workers = 1
{storage}
{RULES}
[retention]
{retention}
"#
    )
}

/// A node on `storage` whose own sweeper is off, at the manual `clock`.
async fn start(storage: &str, retention: &str, clock: Arc<ManualClock>) -> Running {
    common::init_logs();
    let retention = format!("enabled = false\nsweep_secs = {SWEEP}\n{retention}");
    let settings = Config::parse(&config_text(storage, &retention))
        .unwrap()
        .validate()
        .unwrap();
    server::start_with_clock(settings, clock).await.unwrap()
}

/// Plants objects with known names and times; returns every key and those the rules'
/// windows leave out at `NOW`.
async fn plant(node: &Running) -> (BTreeSet<String>, BTreeSet<String>) {
    let t = &node.node.targets["store"];
    let mut all = BTreeSet::new();
    let mut doomed = BTreeSet::new();
    let jpg = || Bytes::from_static(b"\xff\xd8jpeg");
    let mut put = |key: String, goes: bool| {
        all.insert(key.clone());
        if goes {
            doomed.insert(key.clone());
        }
        key
    };
    let mut keys = Vec::new();
    // live/cam1: one every 10 minutes back to 2 hours; the newest 5 stay (the hour
    // would keep 7: the count decides), the rest go.
    for k in 0..=12u64 {
        keys.push(put(format!("live/cam1/{}.jpg", NOW - k * 600), k >= 5));
    }
    // live/cam2: all a day old: only the newest stays.
    for k in 0..3u64 {
        keys.push(put(format!("live/cam2/{}.jpg", NOW - 86_400 - k), k > 0));
    }
    // Overwrite objects and the node's own folder are never swept.
    keys.push(put("live/cam1.jpg".into(), false));
    keys.push(put("live/cam2.jpg".into(), false));
    keys.push(put("seq/cam3/latest.jpg".into(), false));
    keys.push(put("_livesnap/review/live/cam1/1.json".into(), false));
    // keep/cam4: old, but its rule keeps everything.
    for k in 0..3u64 {
        keys.push(put(format!("keep/cam4/{}.jpg", NOW - 86_400 - k), false));
    }
    for key in &keys {
        t.put_overwrite(key, jpg()).await.unwrap();
    }
    // seq/cam3: 1..=6 written in order (times from storage); 5 and 6 stay.
    for n in 1..=6u64 {
        let key = put(format!("seq/cam3/{n}.jpg"), n <= 4);
        t.put_create_only(&key, jpg()).await.unwrap();
    }
    (all, doomed)
}

/// Every key stored, but the sweep claims and the fs temp folder.
async fn stored(node: &Running) -> BTreeSet<String> {
    let op = &node.node.targets["store"].op;
    let mut out = BTreeSet::new();
    let mut l = op.lister_with("/").recursive(true).await.unwrap();
    while let Some(e) = l.try_next().await.unwrap() {
        let k = e.path();
        if e.metadata().is_file()
            && !k.starts_with("_livesnap/sweep/")
            && !k.starts_with(".livesnap-tmp/")
        {
            out.insert(k.to_string());
        }
    }
    out
}

fn keys(r: &PassReport) -> BTreeSet<String> {
    r.doomed.iter().map(|d| d.key.clone()).collect()
}

fn minus(a: &BTreeSet<String>, b: &BTreeSet<String>) -> BTreeSet<String> {
    a.difference(b).cloned().collect()
}

/// The whole story on one storage: a dry run lists exactly the objects outside the
/// windows and deletes nothing; the real pass deletes exactly those (the newest of each
/// stream, overwrite objects and `_livesnap/` stay); a second pass in the same period is
/// skipped (claimed); one in the next period finds nothing more.
async fn exact_window(storage: String) {
    let clock = Arc::new(ManualClock::new(NOW));
    let node = start(&storage, "", clock.clone()).await;
    let (all, doomed) = plant(&node).await;
    assert_eq!(stored(&node).await, all);
    let sweeper = Sweeper::new(node.node.clone());

    let dry = sweeper.pass(true).await;
    assert_eq!(keys(&dry), doomed, "dry run");
    assert_eq!(dry.doomed.len(), doomed.len(), "each key once");
    assert_eq!(stored(&node).await, all, "a dry run deletes nothing");
    let reasons: Vec<_> = dry
        .doomed
        .iter()
        .filter(|d| d.key.starts_with("live/cam1/"))
        .map(|d| d.reason.as_str())
        .collect();
    assert_eq!(
        reasons,
        ["age"; 6]
            .iter()
            .chain(&["count"; 2])
            .copied()
            .collect::<Vec<_>>()
    );

    let real = sweeper.pass(false).await;
    assert_eq!(
        real.doomed, dry.doomed,
        "the real pass deletes what the dry run listed"
    );
    assert_eq!((real.swept, real.skipped, real.failed), (3, 0, 0));
    assert_eq!(stored(&node).await, minus(&all, &doomed));
    let metrics = node.node.metrics.render();
    assert!(
        metrics.contains(&format!(
            "livesnap_retention_deleted_total {}",
            doomed.len()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("livesnap_retention_sweeps_total{result=\"run\"} 3"),
        "{metrics}"
    );
    assert!(real.examined > all.len() as u64 / 2, "{}", real.examined);
    assert!(
        metrics.contains(&format!(
            "livesnap_retention_examined_total {}",
            real.examined
        )),
        "a dry run counts nothing: {metrics}"
    );

    // Nothing left outside the windows: a listing each, no claim, nothing deleted.
    let again = sweeper.pass(false).await;
    assert_eq!((again.swept, again.skipped, again.failed), (3, 0, 0));
    assert!(again.doomed.is_empty());
    // One more old object of cam2 in the same period: cam2 was swept (claimed) in this
    // period already, so it waits for the next one.
    let late = format!("live/cam2/{}.jpg", NOW - 86_400 - 100);
    node.node.targets["store"]
        .put_overwrite(&late, Bytes::from_static(b"j"))
        .await
        .unwrap();
    let same = sweeper.pass(false).await;
    assert_eq!((same.swept, same.skipped), (2, 1), "claimed this period");
    assert!(same.doomed.is_empty());
    clock.advance(SWEEP);
    let next = sweeper.pass(false).await;
    assert_eq!((next.swept, next.skipped, next.failed), (3, 0, 0));
    assert_eq!(keys(&next), BTreeSet::from([late]));
    assert_eq!(stored(&node).await, minus(&all, &doomed));
    let metrics = node.node.metrics.render();
    assert!(
        metrics.contains("livesnap_retention_sweeps_total{result=\"skipped\"} 1"),
        "{metrics}"
    );
    // Claims: this period's and the last one's stay, older ones go.
    let claims = || async {
        let op = &node.node.targets["store"].op;
        let mut out = BTreeSet::new();
        let mut l = op
            .lister_with("_livesnap/sweep/")
            .recursive(true)
            .await
            .unwrap();
        while let Some(e) = l.try_next().await.unwrap() {
            if e.metadata().is_file() {
                out.insert(e.path().rsplit_once('-').unwrap().1.parse::<u64>().unwrap());
            }
        }
        out
    };
    let slot = (NOW + SWEEP) / SWEEP;
    assert_eq!(claims().await, BTreeSet::from([slot - 1, slot]));
    clock.advance(2 * SWEEP);
    let idle = sweeper.pass(false).await;
    assert!(idle.doomed.is_empty());
    assert!(claims().await.is_empty(), "{:?}", claims().await);
    // `{Sequence}` goes on after the newest kept object.
    let seq = node.node.targets["store"]
        .highest_sequence(
            node.node
                .rules()
                .lookup_app("d", "seq")
                .unwrap()
                .sequence_object
                .as_ref()
                .unwrap(),
            "d",
            "seq",
            "cam3",
        )
        .await
        .unwrap();
    assert_eq!(seq, 6);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_deletes_exactly_what_falls_outside_the_window() {
    let dir = tempfile::tempdir().unwrap();
    exact_window(fs_storage(&dir.path().join("store"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_deletes_exactly_what_falls_outside_the_window() {
    let moto = MotoServer::start().await;
    moto.create_bucket("retention").await;
    exact_window(s3_storage(&moto, "retention")).await;
}

/// A node that knew none of the streams (they ended before its start) sweeps them
/// from storage; a pass deletes at most `max_deletes_per_pass`, the next goes on.
async fn across_restart(storage: String) {
    let clock = Arc::new(ManualClock::new(NOW));
    let first = start(&storage, "max_deletes_per_pass = 3", clock.clone()).await;
    let (all, doomed) = plant(&first).await;
    let r = Sweeper::new(first.node.clone()).pass(false).await;
    assert_eq!(r.doomed.len(), 3, "bounded by max_deletes_per_pass");
    assert!(keys(&r).is_subset(&doomed));
    first.shutdown().await;

    clock.advance(SWEEP);
    let second = start(&storage, "", clock.clone()).await;
    assert!(second.node.registry.is_empty());
    let r2 = Sweeper::new(second.node.clone()).pass(false).await;
    assert_eq!(keys(&r2), minus(&doomed, &keys(&r)));
    assert_eq!(stored(&second).await, minus(&all, &doomed));
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_sweeps_streams_that_ended_before_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    across_restart(fs_storage(&dir.path().join("store"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_sweeps_streams_that_ended_before_a_restart() {
    let moto = MotoServer::start().await;
    moto.create_bucket("restart").await;
    across_restart(s3_storage(&moto, "restart")).await;
}

/// Two nodes on one storage sweep at once: each stream is swept by one of them (the
/// other counts it skipped), each object is deleted once, nothing else goes.
async fn two_nodes(storage: String) {
    let clock = Arc::new(ManualClock::new(NOW));
    let a = start(&storage, "", clock.clone()).await;
    let b = start(&storage, "", clock.clone()).await;
    let (all, doomed) = plant(&a).await;
    let (sa, sb) = (Sweeper::new(a.node.clone()), Sweeper::new(b.node.clone()));
    let (ra, rb) = tokio::join!(sa.pass(false), sb.pass(false));
    assert_eq!((ra.failed, rb.failed), (0, 0));
    assert_eq!((ra.swept + ra.skipped, rb.swept + rb.skipped), (3, 3));
    let (ka, kb) = (keys(&ra), keys(&rb));
    // Each stream's deletions come from one node: one sweep per stream.
    let streams = |k: &BTreeSet<String>| -> BTreeSet<String> {
        k.iter()
            .map(|key| key.rsplit_once('/').unwrap().0.to_string())
            .collect()
    };
    assert!(streams(&ka).is_disjoint(&streams(&kb)), "{ka:?} {kb:?}");
    assert!(ka.is_disjoint(&kb), "no object deleted twice");
    assert_eq!(ra.doomed.len() + rb.doomed.len(), doomed.len());
    assert_eq!(&ka | &kb, doomed);
    assert_eq!(stored(&a).await, minus(&all, &doomed));
    let deleted = |r: &Running| {
        let m = r.node.metrics.render();
        m.lines()
            .find_map(|l| l.strip_prefix("livesnap_retention_deleted_total "))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap()
    };
    assert_eq!(deleted(&a) + deleted(&b), doomed.len());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_two_nodes_delete_each_object_once() {
    let dir = tempfile::tempdir().unwrap();
    two_nodes(fs_storage(&dir.path().join("store"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_two_nodes_delete_each_object_once() {
    let moto = MotoServer::start().await;
    moto.create_bucket("two").await;
    two_nodes(s3_storage(&moto, "two")).await;
}

/// The node task sweeps on its own, every `sweep_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_task_sweeps_every_period() {
    common::init_logs();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &fs_storage(&dir.path().join("store")),
        "enabled = true\nsweep_secs = 5",
    );
    let settings = Config::parse(&text).unwrap().validate().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let node = server::start_with_clock(settings, clock).await.unwrap();
    let (all, doomed) = plant(&node).await;
    let want = minus(&all, &doomed);
    let mut done = false;
    for _ in 0..60 {
        if stored(&node).await == want {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(done, "left: {:?}", minus(&stored(&node).await, &want));
    node.shutdown().await;
}

/// `livesnap sweep --dry-run` prints each key that would go (with storage, rule and
/// reason) and deletes nothing; `livesnap sweep` then deletes exactly those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_command_dry_runs_then_deletes_the_same_keys() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let now = livesnap::clock::unix_now();
    let jpg = b"\xff\xd8jpeg";
    let mut all = BTreeSet::new();
    let mut doomed = BTreeSet::new();
    for k in 0..8u64 {
        let key = format!("live/cam9/{}.jpg", now - 100 - k * 1000);
        let path = root.join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, jpg).unwrap();
        all.insert(key.clone());
        // The hour keeps k = 0..=3; the count of 5 keeps more.
        if k >= 4 {
            doomed.insert(key);
        }
    }
    std::fs::write(root.join("live/cam9.jpg"), jpg).unwrap();
    all.insert("live/cam9.jpg".into());
    let config = dir.path().join("livesnap.toml");
    std::fs::write(&config, config_text(&fs_storage(&root), "")).unwrap();
    let run = |dry: bool| {
        let mut args = vec!["sweep", "--config", config.to_str().unwrap()];
        if dry {
            args.push("--dry-run");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_livesnap"))
            .args(&args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let files = || -> BTreeSet<String> {
        common::list_files(&root)
            .into_iter()
            .filter(|k| !k.starts_with("_livesnap/"))
            .collect()
    };
    let dry = run(true);
    let listed: BTreeSet<String> = dry
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "{l}");
            assert_eq!(f[1], "store");
            assert_eq!(f[2], "domain \"*\", app \"live\"");
            assert_eq!(f[3], "age");
            f[0].to_string()
        })
        .collect();
    assert_eq!(listed, doomed);
    assert_eq!(files(), all, "a dry run deletes nothing");
    let real = run(false);
    assert_eq!(
        real, dry,
        "the pass prints what it deleted: what the dry run listed"
    );
    assert_eq!(files(), minus(&all, &doomed));
}

#[test]
fn retention_settings_are_validated_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(dir.path());
    let err = |rules: &str, retention: &str| {
        let text = format!("{storage}\n{rules}\n[retention]\n{retention}\n");
        Config::parse(&text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
    };
    let rule = |extra: &str| {
        format!(
            "[[rules]]\ndomain = \"*\"\napp = \"live\"\ninterval_secs = 5\nstorage = \"store\"\noverwrite_object = \"{{AppName}}/{{StreamName}}.jpg\"\n{extra}\n"
        )
    };
    let e = err(&rule("retain_count = 3"), "");
    assert!(
        e.starts_with("rules[0].retain_count: needs sequence_object"),
        "{e}"
    );
    let seq = "sequence_object = \"{AppName}/{StreamName}/{Sequence}.jpg\"";
    let e = err(&rule(&format!("{seq}\nretain_secs = 10")), "");
    assert!(e.starts_with("rules[0].retain_secs: must be 60..="), "{e}");
    let e = err(&rule(&format!("{seq}\nretain_count = 0")), "");
    assert!(e.starts_with("rules[0].retain_count: must be 1..="), "{e}");
    let e = err("", "max_deletes_per_pass = 0");
    assert!(e.starts_with("retention.max_deletes_per_pass"), "{e}");
    let e = err("", "sweep_secs = 1");
    assert!(e.starts_with("retention.sweep_secs"), "{e}");
    let e = Config::parse(&format!("{storage}\n[retention]\nwhat = 1\n")).unwrap_err();
    assert!(e.to_string().contains("unknown field `what`"), "{e}");
}

/// Plants `streams` streams of app `live` with 3 day-old objects each (2 go) under
/// names starting with `name`; returns (all, doomed).
async fn plant_old(
    node: &Running,
    name: &str,
    streams: usize,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let t = &node.node.targets["store"];
    let (mut all, mut doomed) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..streams {
        for k in 0..3u64 {
            let key = format!("live/{name}{i:03}/{}.jpg", NOW - 86_400 - k);
            t.put_overwrite(&key, Bytes::from_static(b"j"))
                .await
                .unwrap();
            all.insert(key.clone());
            if k > 0 {
                doomed.insert(key);
            }
        }
    }
    (all, doomed)
}

/// Finding streams in storage lists at most `max_listed_per_pass` keys per pass and
/// goes on where it stopped: the first pass sweeps only some streams, later ones the
/// rest, each object deleted once.
async fn bounded_discovery(storage: String) {
    let clock = Arc::new(ManualClock::new(NOW));
    let node = start(&storage, "max_listed_per_pass = 100", clock.clone()).await;
    let (all, doomed) = plant_old(&node, "s", 60).await;
    let sweeper = Sweeper::new(node.node.clone());
    let mut deleted = BTreeSet::new();
    let mut passes = Vec::new();
    for _ in 0..10 {
        let dry = sweeper.pass(true).await;
        let r = sweeper.pass(false).await;
        assert_eq!(dry.doomed, r.doomed, "a dry run moves nothing on");
        assert_eq!(r.failed, 0);
        for k in keys(&r) {
            assert!(deleted.insert(k.clone()), "{k} deleted twice");
        }
        passes.push(r.doomed.len());
        if deleted == doomed {
            break;
        }
        clock.advance(SWEEP);
    }
    assert!(passes[0] > 0 && passes[0] < doomed.len(), "{passes:?}");
    assert_eq!(deleted, doomed, "{passes:?}");
    assert_eq!(stored(&node).await, minus(&all, &doomed));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_finding_streams_is_bounded_per_pass() {
    let dir = tempfile::tempdir().unwrap();
    bounded_discovery(fs_storage(&dir.path().join("store"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_finding_streams_is_bounded_per_pass() {
    let moto = MotoServer::start().await;
    moto.create_bucket("bounded").await;
    bounded_discovery(s3_storage(&moto, "bounded")).await;
}

/// A stream the node saw live is swept in the next pass after it ended, even when the
/// bounded listing of the pass does not reach its keys (a stream it never saw waits for
/// the listing). On moto, whose listing is sorted: `zcam` and `zzz` sort last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_seen_live_are_swept_without_waiting_for_the_listing() {
    let moto = MotoServer::start().await;
    moto.create_bucket("live").await;
    let clock = Arc::new(ManualClock::new(NOW));
    let node = start(
        &s3_storage(&moto, "live"),
        "max_listed_per_pass = 100",
        clock.clone(),
    )
    .await;
    let (mut all, mut doomed) = plant_old(&node, "a", 40).await;
    let (a2, d2) = plant_old(&node, "zcam", 1).await;
    let (a3, d3) = plant_old(&node, "zzz", 1).await;
    all.extend(a2);
    all.extend(a3);
    doomed.extend(d2.clone());
    doomed.extend(d3.clone());
    let sweeper = Sweeper::new(node.node.clone());

    let p = common::start_publish(node.rtmp_addr, "live", "zcam000").await;
    let n = node.node.clone();
    assert!(common::wait_for(Duration::from_secs(10), || n.registry.len() == 1).await);
    sweeper.observe();
    p.finish().await;
    assert!(common::wait_for(Duration::from_secs(10), || n.registry.is_empty()).await);

    let first = keys(&sweeper.pass(false).await);
    assert!(d2.is_subset(&first), "the stream seen live: {first:?}");
    assert!(first.is_disjoint(&d3), "not reached by the listing yet");
    for _ in 0..5 {
        clock.advance(SWEEP);
        sweeper.pass(false).await;
    }
    assert_eq!(stored(&node).await, minus(&all, &doomed));
    node.shutdown().await;
}

/// The rule API takes `retain_secs` and `retain_count` (validated, naming the field;
/// `null` clears one), and the sweeper applies a stored rule's window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rule_api_sets_retention_and_the_sweeper_applies_it() {
    use serde_json::{json, Value};
    let mut server = common::start_server("").await;
    let client = reqwest::Client::new();
    let base = format!("http://{}/api/v1/snapshot-configs", server.http);
    let call = |method: reqwest::Method, url: String, body: Value| {
        let rb = client
            .request(method, url)
            .header("content-type", "application/json")
            .body(body.to_string());
        async move {
            let resp = rb.send().await.unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let rule = |extra: Value| {
        let mut r = json!({
            "domain": "example.com", "app": "live", "interval_secs": 5,
            "sequence_object": "{AppName}/{StreamName}/{UnixTimestamp}.jpg",
        });
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        r
    };
    let refused = |(status, body): (u16, Value), field: &str| {
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["field"], field, "{body}");
    };
    refused(
        call(
            reqwest::Method::POST,
            base.clone(),
            rule(json!({"retain_secs": 10})),
        )
        .await,
        "retain_secs",
    );
    refused(
        call(
            reqwest::Method::POST,
            base.clone(),
            json!({"domain": "example.com", "app": "live", "interval_secs": 5,
                   "overwrite_object": "{AppName}/{StreamName}.jpg", "retain_count": 2}),
        )
        .await,
        "retain_count",
    );
    let (status, body) = call(
        reqwest::Method::POST,
        base.clone(),
        rule(json!({"retain_count": 2, "retain_secs": 60})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["retain_count"].as_u64(), body["retain_secs"].as_u64()),
        (Some(2), Some(60))
    );
    let one = format!("{base}/example.com/live");
    let (status, body) = call(
        reqwest::Method::PATCH,
        one.clone(),
        json!({"retain_secs": null, "retain_count": 3}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["retain_count"], 3, "{body}");
    assert!(body["retain_secs"].is_null(), "cleared: {body}");
    refused(
        call(reqwest::Method::PATCH, one, json!({"retain_count": 0})).await,
        "retain_count",
    );

    // The stored rule's window: the newest 3 of 5 stay.
    let now = livesnap::clock::unix_now();
    let root = server.root();
    for k in 0..5u64 {
        let path = root.join(format!("live/cam/{}.jpg", now - k * 10));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"j").unwrap();
    }
    let r = Sweeper::new(server.node().clone()).pass(false).await;
    let gone: BTreeSet<String> = keys(&r);
    let want: BTreeSet<String> = (3..5u64)
        .map(|k| format!("live/cam/{}.jpg", now - k * 10))
        .collect();
    assert_eq!(gone, want);
    assert_eq!(r.doomed[0].rule, "domain \"example.com\", app \"live\"");
    assert_eq!(common::list_files(&root.join("live/cam")).len(), 3);
    server.stop().await;
}

/// `max_streams_per_pass` takes the streams found in storage in turns: each pass goes
/// on after the last stream the previous one reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_take_turns_when_a_pass_cannot_reach_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let node = start(
        &fs_storage(&dir.path().join("store")),
        "max_streams_per_pass = 1",
        clock.clone(),
    )
    .await;
    let (all, doomed) = plant_old(&node, "s", 3).await;
    let sweeper = Sweeper::new(node.node.clone());
    let mut per_pass = Vec::new();
    for _ in 0..3 {
        let dry = sweeper.pass(true).await;
        let r = sweeper.pass(false).await;
        assert_eq!(dry.doomed, r.doomed, "a dry run moves nothing on");
        assert_eq!(r.swept + r.skipped + r.failed, 1);
        per_pass.push(keys(&r));
        clock.advance(SWEEP);
    }
    for (i, k) in per_pass.iter().enumerate() {
        let want: BTreeSet<String> = doomed
            .iter()
            .filter(|d| d.starts_with(&format!("live/s{i:03}/")))
            .cloned()
            .collect();
        assert_eq!(k, &want, "pass {i}");
    }
    assert_eq!(stored(&node).await, minus(&all, &doomed));
    node.shutdown().await;
}

/// A stream that lived and ended between two looks of the sweeper (here: never looked
/// at while live) is still swept as one seen live: the node's record of ended publishes
/// has it, not a sampling of the live list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ended_between_passes_is_swept_as_seen_live() {
    let moto = MotoServer::start().await;
    moto.create_bucket("live").await;
    let clock = Arc::new(ManualClock::new(NOW));
    let node = start(
        &s3_storage(&moto, "live"),
        "max_listed_per_pass = 100",
        clock.clone(),
    )
    .await;
    plant_old(&node, "a", 40).await;
    let (_, d2) = plant_old(&node, "zcam", 1).await;
    let sweeper = Sweeper::new(node.node.clone());

    let p = common::start_publish(node.rtmp_addr, "live", "zcam000").await;
    let n = node.node.clone();
    assert!(common::wait_for(Duration::from_secs(10), || n.registry.len() == 1).await);
    p.finish().await;
    assert!(common::wait_for(Duration::from_secs(10), || n.registry.is_empty()).await);
    assert_eq!(
        sweeper.observe(),
        [livesnap::names::StreamId::new(
            "127.0.0.1",
            "live",
            "zcam000"
        )]
    );

    let first = keys(&sweeper.pass(false).await);
    assert!(d2.is_subset(&first), "the stream that ended: {first:?}");
    // A day and more after its end, it waits for the listing like any other.
    clock.advance(livesnap::retention::REMEMBER_ENDED_SECS + 1);
    assert!(sweeper.observe().is_empty());
    node.shutdown().await;
}
