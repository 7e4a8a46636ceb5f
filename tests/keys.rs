//! Keys of different streams never meet, on a real node over real RTMP: an app with a
//! '/' does not write into another app's folders, and with templates that leave out
//! `{Domain}` (the default) the same app and stream under two domains are one stream,
//! never live twice at once.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

/// 640x360, a keyframe every second, 12 s: snapshots at 0, 5 and 10 s.
const FIXTURE: &str = "baseline_640x360_gop1s.flv";
const SNAPSHOTS: u64 = 3;

fn read_all(root: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    list_files(root)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(root.join(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_with_a_folder_never_writes_another_streams_keys() {
    // The default layout: overwrite {AppName}/{StreamName}.jpg, sequence
    // {AppName}/{StreamName}/{Sequence}.jpg. App "live/cam1" with stream "1700000000"
    // used to write its overwrite object at "live/cam1/1700000000.jpg": a sequence key
    // of app "live", stream "cam1".
    let mut server = start_server(DEFAULT_RULES).await;
    publish_fixture(&server, "live", "cam1", FIXTURE, 4.0).await;
    let root = server.root();
    let want_first = snapshot_keys("cam1", SNAPSHOTS);
    assert!(
        wait_for(Duration::from_secs(10), || list_files(&root) == want_first).await,
        "{:?}",
        list_files(&root)
    );
    let first = read_all(&server.root());
    // A planted sequence object under the key the old rendering would overwrite.
    let planted = server.root().join("live/cam1/1700000000.jpg");
    std::fs::write(&planted, b"planted").unwrap();

    publish_fixture(&server, "live/cam1", "1700000000", FIXTURE, 4.0).await;
    server.stop().await;
    let after = read_all(&server.root());
    for (key, bytes) in &first {
        assert_eq!(after.get(key), Some(bytes), "{key} was replaced");
    }
    assert_eq!(std::fs::read(&planted).unwrap(), b"planted");
    let mut second: Vec<String> = after
        .keys()
        .filter(|k| !first.contains_key(*k) && !k.ends_with("/1700000000.jpg"))
        .cloned()
        .collect();
    second.sort();
    let mut want: Vec<String> = (1..=SNAPSHOTS)
        .map(|i| format!("live~cam1/1700000000/{i}.jpg"))
        .collect();
    want.sort();
    assert_eq!(second, want);
    assert!(after.contains_key("live~cam1/1700000000.jpg"));
    assert_eq!(after.len() as u64, 2 * (SNAPSHOTS + 1) + 1);
}

/// Publishes `live/cam1` under `vhost`; the outcome and the publisher.
async fn publish_on(server: &TestServer, vhost: &str) -> (Publisher, PublishOutcome) {
    let tc_url = format!("rtmp://{}/live", server.rtmp);
    Publisher::connect(server.rtmp, &tc_url, "live", &format!("cam1?vhost={vhost}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domainless_templates_make_two_domains_one_stream() {
    let mut server = start_server(DEFAULT_RULES).await;
    let (mut a, outcome) = publish_on(&server, "a.example").await;
    assert_eq!(outcome, PublishOutcome::Accepted);
    let (_, outcome) = publish_on(&server, "b.example").await;
    match outcome {
        PublishOutcome::Refused(why) => {
            assert!(why.contains("NetStream.Publish.BadName"), "{why}");
            assert!(
                why.contains("live/cam1.jpg"),
                "the shared key is named: {why}"
            );
        }
        PublishOutcome::Accepted => panic!("two domains wrote the same keys at once"),
    }
    let metrics = server.node().metrics.clone();
    assert!(
        wait_for(Duration::from_secs(2), || metrics
            .rejected_count("duplicate_keys")
            == 1)
        .await,
        "the refusal is counted as duplicate_keys"
    );
    // The first goes on, and once it ends the other domain may publish.
    send_range(&mut a, FIXTURE, 0, 3000).await;
    a.finish().await;
    let registry = server.node().registry.clone();
    assert!(wait_for(Duration::from_secs(5), || registry.is_empty()).await);
    let (b, outcome) = publish_on(&server, "b.example").await;
    assert_eq!(outcome, PublishOutcome::Accepted);
    b.finish().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_with_the_domain_keep_two_domains_apart() {
    let rules = r#"
[[rules]]
domain = "*"
app = "*"
interval_secs = 5
storage = "default"
overwrite_object = "{Domain}/{AppName}/{StreamName}.jpg"
sequence_object = "{Domain}/{AppName}/{StreamName}/{Sequence}.jpg"
"#;
    let mut server = start_server(rules).await;
    let (mut a, outcome) = publish_on(&server, "a.example").await;
    assert_eq!(outcome, PublishOutcome::Accepted);
    let (mut b, outcome) = publish_on(&server, "b.example").await;
    assert_eq!(outcome, PublishOutcome::Accepted);
    assert_eq!(server.node().registry.len(), 2);
    send_range(&mut a, FIXTURE, 0, 1000).await;
    send_range(&mut b, FIXTURE, 0, 1000).await;
    a.finish().await;
    b.finish().await;
    let metrics = server.node().metrics.clone();
    server.stop().await;
    let files = list_files(&server.root());
    for d in ["a.example", "b.example"] {
        assert!(
            files.contains(&format!("{d}/live/cam1.jpg")),
            "{d}: {files:?}"
        );
        assert!(
            files.contains(&format!("{d}/live/cam1/1.jpg")),
            "{d}: {files:?}"
        );
    }
    assert_eq!(metrics.rejected_count("duplicate_keys"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_rule_whose_keys_meet_another_is_not_applied() {
    // Written by an older node, or by hand: two apps that both leave the app out.
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("snapshots/_livesnap");
    std::fs::create_dir_all(&store).unwrap();
    let rule = |app: &str| {
        format!(
            r#"{{"domain": "*", "app": "{app}", "interval_secs": 5, "storage": "default",
                "overwrite_object": "snaps/{{StreamName}}/latest.jpg", "sequence_object": null,
                "callback": null, "create_time": 1700000000, "update_time": 1700000000}}"#
        )
    };
    let doc = format!(
        r#"{{"format": 1, "version": 1, "updated_time": 1700000000, "rules": [{}, {}], "history": []}}"#,
        rule("cam"),
        rule("door")
    );
    std::fs::write(store.join("rules.json"), doc).unwrap();
    let mut server = start_server_in(dir, DEFAULT_RULES).await;
    let node = server.node().clone();
    let shared = node.shared_rules.clone().expect("a rule store");
    assert!(
        wait_for(Duration::from_secs(5), || shared.doc().rules.len() == 2).await,
        "the document was read"
    );
    let rules = node.rules();
    assert_eq!(rules.lookup("d", "cam", "s").unwrap().app(), "cam");
    // "door" falls back to the config rule for every app.
    assert_eq!(rules.lookup("d", "door", "s").unwrap().app(), "*");
    let skipped = shared.health().skipped;
    assert!(
        skipped
            .iter()
            .any(|s| s.contains("app \"door\"") && s.contains("\"snaps/a/latest.jpg\"")),
        "{skipped:?}"
    );
    server.stop().await;
}
