//! The admin API against real nodes over real HTTP: snapshot-config CRUD with its
//! validation, the rule store shared by two nodes, the snapshot query, live streams
//! (latest.jpg, on-demand snapshots, kick), health, and authentication.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// 640x360, a keyframe every second, 12 s.
const FIXTURE: &str = "baseline_640x360_gop1s.flv";

/// A small HTTP client for one node.
struct Api {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl Api {
    fn new(server: &TestServer) -> Api {
        Api {
            base: format!("http://{}", server.http),
            client: reqwest::Client::new(),
            token: None,
        }
    }

    fn with_token(server: &TestServer, token: &str) -> Api {
        Api {
            token: Some(token.to_string()),
            ..Api::new(server)
        }
    }

    fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let rb = self.client.request(m, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.header("authorization", format!("Bearer {t}")),
            None => rb,
        }
    }

    /// A JSON request; returns the status and the JSON body (Null when empty).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "{method} {path}: not JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, v)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }
}

/// Asserts a 400 naming `field`.
fn assert_invalid((status, body): &(u16, Value), field: &str) {
    assert_eq!(*status, 400, "{body}");
    assert_eq!(body["code"], "invalid_argument", "{body}");
    assert_eq!(body["field"], field, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn rule_body(domain: &str, app: &str) -> Value {
    json!({
        "domain": domain,
        "app": app,
        "interval_secs": 5,
        "storage": "default",
        "overwrite_object": "{AppName}/{StreamName}.jpg",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_whose_keys_meet_another_rules_is_refused() {
    let server = start_server(DEFAULT_RULES).await;
    let api = Api::new(&server);
    let base = "/api/v1/snapshot-configs";
    // "live" overwriting "live/cam1/1.jpg" would replace sequence object 1 of live/cam1
    // under the config rule.
    let mut body = rule_body("*", "live");
    body["overwrite_object"] = json!("{AppName}/{StreamName}/1.jpg");
    let refused = api.call("POST", base, Some(body)).await;
    assert_invalid(&refused, "overwrite_object");
    let message = refused.1["message"].as_str().unwrap();
    assert!(
        message.contains("\"live/a/1.jpg\"") && message.contains("app \"*\""),
        "{message}"
    );
    // Two stored rules for two apps that leave the app out meet each other.
    let mut cam = rule_body("*", "cam");
    cam["overwrite_object"] = json!("snaps/{StreamName}/latest.jpg");
    let (status, created) = api.call("POST", base, Some(cam.clone())).await;
    assert_eq!(status, 201, "{created}");
    let mut other = cam.clone();
    other["app"] = json!("door");
    let refused = api.call("POST", base, Some(other)).await;
    assert_invalid(&refused, "overwrite_object");
    assert!(
        refused.1["message"]
            .as_str()
            .unwrap()
            .contains("\"snaps/a/latest.jpg\" for two different streams"),
        "{}",
        refused.1
    );
    // A PATCH that would make a stored rule meet the config rule is refused too, and the
    // stored rule is unchanged.
    let path = format!("{base}/*/cam");
    let refused = api
        .call(
            "PATCH",
            &path,
            Some(json!({"overwrite_object": "{StreamName}/{StreamName}/1.jpg"})),
        )
        .await;
    assert_invalid(&refused, "overwrite_object");
    assert_eq!(
        api.get(&path).await.1["overwrite_object"],
        "snaps/{StreamName}/latest.jpg"
    );
    // A rule of its own layout is fine.
    let mut door = rule_body("*", "door");
    door["overwrite_object"] = json!("door/{StreamName}.jpg");
    assert_eq!(api.call("POST", base, Some(door)).await.0, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_config_crud_validation_paging_and_order() {
    let config_rule = r#"
[[rules]]
domain = "*"
app = "cfg"
interval_secs = 10
storage = "default"
overwrite_object = "{AppName}/{StreamName}.jpg"
"#;
    let server = start_server(config_rule).await;
    let api = Api::new(&server);
    let base = "/api/v1/snapshot-configs";

    // Add, describe, refuse a duplicate and a shadow of the config rule.
    let (status, created) = api
        .call("POST", base, Some(rule_body("example.com", "live")))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["source"], "api");
    assert_eq!(created["in_force"], true);
    assert_eq!(created["sequence_object"], Value::Null);
    assert!(created["create_time"].as_str().unwrap().ends_with('Z'));
    let (status, one) = api.get(&format!("{base}/example.com/live")).await;
    assert_eq!((status, &one), (200, &created));
    let (status, dup) = api
        .call("POST", base, Some(rule_body("example.com", "live")))
        .await;
    assert_eq!(
        (status, dup["code"].as_str()),
        (409, Some("already_exists"))
    );
    let (status, shadow) = api.call("POST", base, Some(rule_body("*", "cfg"))).await;
    assert_eq!(
        (status, shadow["code"].as_str()),
        (409, Some("already_exists"))
    );
    let (status, cfg) = api.get(&format!("{base}/*/cfg")).await;
    assert_eq!((status, cfg["source"].as_str()), (200, Some("config")));
    assert_eq!(api.get(&format!("{base}/example.com/nope")).await.0, 404);

    // An app with '/' is one %2F-encoded path segment.
    let resp = api
        .request("POST", base)
        .header("content-type", "application/json")
        .body(rule_body("*", "live/sub").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        resp.headers()["location"],
        "/api/v1/snapshot-configs/*/live%2Fsub"
    );
    let (status, sub) = api.get(&format!("{base}/*/live%2Fsub")).await;
    assert_eq!((status, sub["app"].as_str()), (200, Some("live/sub")));
    assert_eq!(
        api.call("DELETE", &format!("{base}/*/live%2Fsub"), None)
            .await
            .0,
        204
    );

    // Validation names each field.
    let with = |k: &str, v: Value| {
        let mut b = rule_body("example.com", "other");
        b[k] = v;
        b
    };
    let cases = [
        (with("domain", json!("Example.COM")), "domain"),
        (with("domain", json!(7)), "domain"),
        (with("app", json!("../x")), "app"),
        (with("interval_secs", json!(4)), "interval_secs"),
        (with("interval_secs", json!(3601)), "interval_secs"),
        (with("interval_secs", json!("5")), "interval_secs"),
        (with("storage", json!("nope")), "storage"),
        (
            with("overwrite_object", json!("{Foo}.jpg")),
            "overwrite_object",
        ),
        (
            with("overwrite_object", json!("../a.jpg")),
            "overwrite_object",
        ),
        (
            with("sequence_object", json!("{AppName}/{StreamName}.jpg")),
            "sequence_object",
        ),
        (with("callback", json!("ftp://example.com/x")), "callback"),
        (with("overwrite_object", Value::Null), "overwrite_object"),
        (with("colour", json!("red")), "colour"),
    ];
    for (body, field) in cases {
        assert_invalid(&api.call("POST", base, Some(body)).await, field);
    }
    let mut missing = rule_body("example.com", "other");
    missing.as_object_mut().unwrap().remove("interval_secs");
    assert_invalid(
        &api.call("POST", base, Some(missing)).await,
        "interval_secs",
    );
    let resp = api
        .request("POST", base)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let (status, arr) = api.call("POST", base, Some(json!([1]))).await;
    assert_eq!(
        (status, arr["code"].as_str()),
        (400, Some("invalid_argument"))
    );

    // PATCH: given fields only; null clears; the result must stay valid.
    let path = format!("{base}/example.com/live");
    let (status, p) = api
        .call("PATCH", &path, Some(json!({"interval_secs": 30})))
        .await;
    assert_eq!(
        (status, p["interval_secs"].as_i64()),
        (200, Some(30)),
        "{p}"
    );
    assert_eq!(p["overwrite_object"], "{AppName}/{StreamName}.jpg");
    assert_eq!(p["create_time"], created["create_time"]);
    let (status, p) = api
        .call(
            "PATCH",
            &path,
            Some(json!({"sequence_object": "{AppName}/{StreamName}/{UnixTimestamp}.jpg", "callback": "http://127.0.0.1:9/cb"})),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    let (status, p) = api
        .call(
            "PATCH",
            &path,
            Some(json!({"callback": null, "overwrite_object": null})),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (p["callback"].clone(), p["overwrite_object"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(p["interval_secs"], 30);
    assert_invalid(
        &api.call("PATCH", &path, Some(json!({"sequence_object": null})))
            .await,
        "overwrite_object",
    );
    assert_invalid(
        &api.call("PATCH", &path, Some(json!({"interval_secs": 0})))
            .await,
        "interval_secs",
    );
    assert_invalid(
        &api.call("PATCH", &path, Some(json!({"interval_secs": null})))
            .await,
        "interval_secs",
    );
    assert_invalid(
        &api.call("PATCH", &path, Some(json!({"storage": "nope"})))
            .await,
        "storage",
    );
    assert_invalid(
        &api.call("PATCH", &path, Some(json!({"app": "x"}))).await,
        "app",
    );
    assert_invalid(
        &api.call("PATCH", &path, Some(json!({"bogus": 1}))).await,
        "bogus",
    );
    let (_, unchanged) = api.get(&path).await;
    assert_eq!(
        unchanged["sequence_object"],
        "{AppName}/{StreamName}/{UnixTimestamp}.jpg"
    );
    let (status, nf) = api
        .call(
            "PATCH",
            &format!("{base}/example.com/nope"),
            Some(json!({"interval_secs": 5})),
        )
        .await;
    assert_eq!((status, nf["code"].as_str()), (404, Some("not_found")));
    let (status, ro) = api
        .call(
            "PATCH",
            &format!("{base}/*/cfg"),
            Some(json!({"interval_secs": 5})),
        )
        .await;
    assert_eq!(
        (status, ro["code"].as_str()),
        (403, Some("permission_denied"))
    );

    // DELETE.
    assert_eq!(api.call("DELETE", &path, None).await.0, 204);
    assert_eq!(api.call("DELETE", &path, None).await.0, 404);
    assert_eq!(
        api.call("DELETE", &format!("{base}/*/cfg"), None).await.0,
        403
    );

    // Paging and order: the config rule first, then API rules by creation.
    for i in 1..=12 {
        let (status, b) = api
            .call("POST", base, Some(rule_body("*", &format!("app{i:02}"))))
            .await;
        assert_eq!(status, 201, "{b}");
    }
    let apps = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["app"].as_str().unwrap().to_string())
            .collect()
    };
    let mut all = vec!["cfg".to_string()];
    all.extend((1..=12).map(|i| format!("app{i:02}")));
    let mut seen = Vec::new();
    for page in 1..=3 {
        let (status, v) = api
            .get(&format!("{base}?page_num={page}&page_size=5"))
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["total"], 13);
        assert_eq!(v["page_size"], 5);
        seen.extend(apps(&v));
    }
    assert_eq!(seen, all);
    let (_, v) = api.get(&format!("{base}?page_num=4&page_size=5")).await;
    assert!(apps(&v).is_empty());
    let mut seen = Vec::new();
    for page in 1..=3 {
        let (_, v) = api
            .get(&format!("{base}?page_num={page}&page_size=5&order=desc"))
            .await;
        seen.extend(apps(&v));
    }
    all.reverse();
    assert_eq!(seen, all);
    let (_, v) = api.get(&format!("{base}?app=app03")).await;
    assert_eq!(
        (v["total"].as_u64(), apps(&v)),
        (Some(1), vec!["app03".to_string()])
    );
    let (_, v) = api.get(&format!("{base}?domain=example.com")).await;
    assert_eq!(v["total"], 0);
    assert_invalid(&api.get(&format!("{base}?page_size=4")).await, "page_size");
    assert_invalid(&api.get(&format!("{base}?page_size=31")).await, "page_size");
    assert_invalid(&api.get(&format!("{base}?page_num=0")).await, "page_num");
    assert_invalid(&api.get(&format!("{base}?order=up")).await, "order");
    assert_invalid(&api.get(&format!("{base}?pagesize=10")).await, "pagesize");

    // The document is in storage, versioned.
    let doc: Value =
        serde_json::from_slice(&std::fs::read(server.root().join("_livesnap/rules.json")).unwrap())
            .unwrap();
    assert_eq!(doc["rules"].as_array().unwrap().len(), 12);
    assert!(doc["version"].as_u64().unwrap() >= 16);
    assert!(!server.root().join("_livesnap/rules.json.lock").exists());
}

async fn wait_not_live(server: &TestServer) {
    assert!(
        wait_for(Duration::from_secs(10), || server
            .node()
            .registry
            .is_empty())
        .await,
        "the stream did not end"
    );
}

fn snapshot_files(server: &TestServer) -> Vec<String> {
    list_files(&server.root())
        .into_iter()
        .filter(|f| !f.starts_with("_livesnap/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_added_through_the_api_applies_from_the_next_publish() {
    let mut server = start_server("").await;
    let api = Api::new(&server);
    let mut p = start_publish(server.rtmp, "live", "cam").await;
    send_range(&mut p, FIXTURE, 0, 2000).await;
    let mut body = rule_body("*", "live");
    body["sequence_object"] = json!("{AppName}/{StreamName}/{Sequence}.jpg");
    let (status, b) = api
        .call("POST", "/api/v1/snapshot-configs", Some(body))
        .await;
    assert_eq!(status, 201, "{b}");
    // The live publish keeps the rule it started with (none).
    send_range(&mut p, FIXTURE, 2000, 12_000).await;
    let (_, streams) = api.get("/api/v1/streams").await;
    assert_eq!(streams["items"][0]["rule"], Value::Null, "{streams}");
    p.finish().await;
    wait_not_live(&server).await;
    assert_eq!(snapshot_files(&server), Vec::<String>::new());

    // The next publish takes it.
    publish_fixture(&server, "live", "cam", FIXTURE, 4.0).await;
    assert!(server.stop().await);
    assert_eq!(
        snapshot_files(&server),
        [
            "live/cam.jpg",
            "live/cam/1.jpg",
            "live/cam/2.jpg",
            "live/cam/3.jpg"
        ]
    );
}

/// A node whose rule store is `shared` (an fs folder another node uses too).
async fn start_shared(shared: &Path) -> TestServer {
    start_shared_every(shared, 1).await
}

/// [`start_shared`] reading the rule store every `reload_secs`.
async fn start_shared_every(shared: &Path, reload_secs: u64) -> TestServer {
    start_server(&format!(
        r#"
[storage.shared]
scheme = "fs"
root = "{}"
[rule_store]
storage = "shared"
key = "_livesnap/rules.json"
reload_secs = {reload_secs}
"#,
        shared.display()
    ))
    .await
}

/// Whether `api` lists `n` entries under `base` within `limit`.
async fn lists_within(api: &Api, base: &str, n: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if api.get(base).await.1["total"].as_u64() == Some(n) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A reload asked for (what SIGHUP does) reads the rule store at once: a node that would
/// read it again only in an hour sees another node's new rule right after the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_request_reads_the_rule_store_at_once() {
    let shared = tempfile::tempdir().unwrap();
    let a_server = start_shared(shared.path()).await;
    let b_server = start_shared_every(shared.path(), 3600).await;
    let (a, b) = (Api::new(&a_server), Api::new(&b_server));
    let base = "/api/v1/snapshot-configs";
    assert_eq!(
        a.call("POST", base, Some(rule_body("*", "asked"))).await.0,
        201
    );
    let total = |v: &Value| v["total"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(total(&b.get(base).await.1), 0, "B read the store by itself");
    b_server.running.as_ref().unwrap().reload_now();
    assert!(
        lists_within(&b, base, 1, Duration::from_secs(2)).await,
        "B did not read the store within 2 s of the request"
    );
    let (_, on_b) = b.get(&format!("{base}/*/asked")).await;
    assert_eq!(on_b["in_force"], true, "{on_b}");
}

/// A reloaded config file (SIGHUP) and the rule store: a config rule the file gains takes
/// its scope from a stored rule (which stays in the document, not in force) and gives it
/// back when the file drops it; its relays are listed as the config's; a file whose rule
/// names a storage target the node was not started with changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_config_file_takes_a_stored_rules_scope_and_gives_it_back() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
[storage.default]
scheme = "fs"
root = "{}"
[rule_store]
storage = "default"
"#,
        dir.path().join("snapshots").display()
    );
    let path = dir.path().join("livesnap.toml");
    let file = livesnap::server::ConfigFile {
        path: path.clone(),
        started: livesnap::config::Config::parse(&base).unwrap(),
    };
    let server = TestServer::start(dir, &base).await;
    let running = server.running.as_ref().unwrap();
    let api = Api::new(&server);
    let rules = "/api/v1/snapshot-configs";
    assert_eq!(
        api.call("POST", rules, Some(rule_body("*", "tv"))).await.0,
        201
    );
    let template = |stream: &str| {
        running
            .node
            .rules()
            .lookup("d", "tv", stream)
            .map(|r| r.overwrite_object.as_ref().unwrap().as_str().to_string())
    };
    assert_eq!(template("s").as_deref(), Some("{AppName}/{StreamName}.jpg"));

    let with_rule = format!(
        "{base}\n[[rules]]\ndomain = \"*\"\napp = \"tv\"\nstorage = \"default\"\ninterval_secs = 10\n\
         overwrite_object = \"file/{{StreamName}}.jpg\"\n\
         [[relays]]\ndomain = \"*\"\napp = \"tv\"\ntargets = [\"rtmp://127.0.0.1:9/{{AppName}}/{{StreamName}}\"]\n"
    );
    std::fs::write(&path, &with_rule).unwrap();
    let report = running.reload_config(&file).await.unwrap();
    assert_eq!((report.rules, report.relays), (1, 1));
    assert!(report.restart_only.is_empty(), "{report:?}");
    assert_eq!(template("s").as_deref(), Some("file/{StreamName}.jpg"));
    let (_, listed) = api.get(rules).await;
    let sources: Vec<(&str, bool)> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["source"].as_str().unwrap(),
                r["in_force"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(sources, [("config", true), ("api", false)], "{listed}");
    let (_, relays) = api.get("/api/v1/relay-configs").await;
    assert_eq!(relays["items"][0]["source"], "config", "{relays}");
    // The API refuses a stored rule of a scope the file now holds.
    assert_eq!(
        api.call("POST", rules, Some(rule_body("*", "tv"))).await.0,
        409
    );

    // A rule on a storage target the node does not have: refused, nothing changes.
    let elsewhere = format!("{with_rule}\n[storage.other]\nscheme = \"memory\"\n").replace(
        "storage = \"default\"\ninterval_secs = 10",
        "storage = \"other\"\ninterval_secs = 10",
    );
    std::fs::write(&path, &elsewhere).unwrap();
    let e = running.reload_config(&file).await.unwrap_err().to_string();
    assert!(e.starts_with("rules[0].storage"), "{e}");
    assert_eq!(template("s").as_deref(), Some("file/{StreamName}.jpg"));
    assert_eq!(running.node.metrics.config_reload_count(false), 1);

    // The file drops its rule: the stored one is in force again.
    std::fs::write(&path, &base).unwrap();
    running.reload_config(&file).await.unwrap();
    assert_eq!(template("s").as_deref(), Some("{AppName}/{StreamName}.jpg"));
    let (_, listed) = api.get(rules).await;
    assert_eq!(listed["items"][0]["in_force"], true, "{listed}");
    assert_eq!(running.node.metrics.config_reload_count(true), 2);
}

/// A reloaded rule whose keys could meet those of a rule a live stream still uses is
/// refused, naming the key, until that stream has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_rule_keeps_its_keys_apart_from_the_rules_live_streams_hold() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "[server]\nrtmp_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
         [storage.default]\nscheme = \"fs\"\nroot = \"{}\"\n{DEFAULT_RULES}",
        dir.path().join("snapshots").display()
    );
    let path = dir.path().join("livesnap.toml");
    let file = livesnap::server::ConfigFile {
        path: path.clone(),
        started: livesnap::config::Config::parse(&base).unwrap(),
    };
    let server = TestServer::start(dir, &base).await;
    let running = server.running.as_ref().unwrap();
    let publisher = start_publish(server.rtmp, "live", "cam-b").await;
    // "live/cam-b.jpg" is the live stream's overwrite key, and this rule's for "cam".
    std::fs::write(
        &path,
        base.replace("{StreamName}.jpg", "{StreamName}-b.jpg"),
    )
    .unwrap();
    let e = running.reload_config(&file).await.unwrap_err().to_string();
    assert!(
        e.starts_with("rules[0].overwrite_object") && e.contains("live streams still use"),
        "{e}"
    );
    assert_eq!(
        running
            .node
            .rules()
            .lookup("d", "live", "x")
            .unwrap()
            .overwrite_object
            .as_ref()
            .unwrap()
            .as_str(),
        "{AppName}/{StreamName}.jpg"
    );
    publisher.finish().await;
    wait_not_live(&server).await;
    running.reload_config(&file).await.unwrap();
    assert_eq!(running.node.metrics.config_reload_count(true), 1);
}

/// Through the API too: a rule update whose keys could meet those of the version live
/// streams still hold is refused until they have ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_update_keeps_its_keys_apart_from_the_version_live_streams_hold() {
    let server = start_server("").await;
    let api = Api::new(&server);
    let base = "/api/v1/snapshot-configs";
    assert_eq!(
        api.call("POST", base, Some(rule_body("*", "live"))).await.0,
        201
    );
    let publisher = start_publish(server.rtmp, "live", "cam-b").await;
    let path = format!("{base}/*/live");
    let change = json!({"overwrite_object": "{AppName}/{StreamName}-b.jpg"});
    let (status, body) = api.call("PATCH", &path, Some(change.clone())).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "overwrite_object", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("live streams still use"),
        "{body}"
    );
    publisher.finish().await;
    wait_not_live(&server).await;
    assert_eq!(api.call("PATCH", &path, Some(change)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_rules_and_concurrent_updates_are_not_lost() {
    let shared = tempfile::tempdir().unwrap();
    let a_server = start_shared(shared.path()).await;
    let b_server = start_shared(shared.path()).await;
    let (a, b) = (Api::new(&a_server), Api::new(&b_server));
    let base = "/api/v1/snapshot-configs";

    assert_eq!(
        a.call("POST", base, Some(rule_body("*", "first"))).await.0,
        201
    );
    let total = |v: &Value| v["total"].as_u64().unwrap();
    assert!(
        lists_within(&b, base, 1, Duration::from_secs(6)).await,
        "node B did not see node A's rule"
    );
    let (_, on_b) = b.get(&format!("{base}/*/first")).await;
    assert_eq!(on_b["in_force"], true, "{on_b}");

    // Both nodes add rules at the same time: none is lost.
    let adds = (0..8).flat_map(|i| {
        [
            a.call("POST", base, Some(rule_body("*", &format!("a{i}")))),
            b.call("POST", base, Some(rule_body("*", &format!("b{i}")))),
        ]
    });
    for (status, body) in futures::future::join_all(adds).await {
        assert_eq!(status, 201, "{body}");
    }
    // Both change different fields of one rule at the same time: both changes stay.
    let path = format!("{base}/*/first");
    let (ra, rb) = tokio::join!(
        a.call("PATCH", &path, Some(json!({"interval_secs": 60}))),
        b.call(
            "PATCH",
            &path,
            Some(json!({"callback": "http://127.0.0.1:9/cb"}))
        ),
    );
    assert_eq!((ra.0, rb.0), (200, 200), "{ra:?} {rb:?}");
    for api in [&a, &b] {
        let mut ok = false;
        for _ in 0..60 {
            let (_, v) = api.get(&format!("{base}?page_size=30")).await;
            let (_, first) = api.get(&path).await;
            if total(&v) == 17
                && first["interval_secs"] == 60
                && first["callback"] == "http://127.0.0.1:9/cb"
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "a node does not show all 17 rules with both changes");
    }
    // The conflicting second add of one (domain, app) is refused on either node.
    let (sa, sb) = tokio::join!(
        a.call("POST", base, Some(rule_body("*", "race"))),
        b.call("POST", base, Some(rule_body("*", "race"))),
    );
    let mut statuses = [sa.0, sb.0];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
}

/// A small real JPEG of `w`×`h`.
fn make_jpeg(w: usize, h: usize) -> Vec<u8> {
    let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
    c.set_size(w, h);
    let mut c = c.start_compress(Vec::new()).unwrap();
    c.write_scanlines(&vec![128u8; w * h * 3]).unwrap();
    c.finish().unwrap()
}

fn put(root: &Path, key: &str, data: &[u8]) {
    let p = root.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn rfc3339(unix: u64) -> String {
    livesnap::clock::rfc3339(unix)
}

/// Pages through a query; returns every item's key and the page sizes.
async fn query_all(
    api: &Api,
    stream: &str,
    start: u64,
    end: u64,
    limit: usize,
    order: &str,
) -> (Vec<String>, Vec<usize>) {
    let (mut keys, mut pages) = (Vec::new(), Vec::new());
    let (mut start, mut end) = (start, end);
    loop {
        let (status, v) = api
            .get(&format!(
                "/api/v1/snapshots?domain=d.example&app=live&stream={stream}&start_time={}&end_time={}&limit={limit}&order={order}",
                rfc3339(start),
                rfc3339(end)
            ))
            .await;
        assert_eq!(status, 200, "{v}");
        let items = v["items"].as_array().unwrap();
        pages.push(items.len());
        keys.extend(items.iter().map(|i| i["key"].as_str().unwrap().to_string()));
        let next = if order == "asc" {
            &v["next_start_time"]
        } else {
            &v["next_end_time"]
        };
        match next.as_str() {
            Some(t) => {
                let t = livesnap::api::params::parse_time("t", t).unwrap();
                if order == "asc" {
                    start = t
                } else {
                    end = t
                }
            }
            None => return (keys, pages),
        }
        assert!(pages.len() < 100, "paging does not end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_query_returns_the_stored_snapshots_of_a_range_in_order() {
    let rules = r#"
[[rules]]
domain = "*"
app = "live"
interval_secs = 5
storage = "default"
sequence_object = "{AppName}/{StreamName}/{UnixTimestamp}.jpg"
"#;
    let server = start_server(rules).await;
    let api = Api::new(&server);
    let root = server.root();
    let jpeg = make_jpeg(48, 32);
    let t0 = 1_700_000_000u64;
    for k in 0..40 {
        put(&root, &format!("live/cam/{}.jpg", t0 + 5 * k), &jpeg);
        // Neighbours that must not be mistaken for cam's snapshots.
        put(&root, &format!("live/cam2/{}.jpg", t0 + 5 * k), &jpeg);
    }
    put(&root, "live/cam/notes.jpg", b"x");
    put(&root, "live/cam/17.jpg.tmp", b"x");

    let want: Vec<String> = (2..20)
        .map(|k| format!("live/cam/{}.jpg", t0 + 5 * k))
        .collect();
    let (keys, pages) = query_all(&api, "cam", t0 + 10, t0 + 100, 7, "asc").await;
    assert_eq!(keys, want);
    assert_eq!(pages, [7, 7, 4]);
    let (keys, _) = query_all(&api, "cam", t0 + 10, t0 + 100, 7, "desc").await;
    assert_eq!(keys, want.iter().rev().cloned().collect::<Vec<_>>());
    let (keys, pages) = query_all(&api, "cam", t0 + 10, t0 + 100, 100, "asc").await;
    assert_eq!((keys.len(), pages), (18, vec![18]));

    let (_, v) = api
        .get(&format!(
            "/api/v1/snapshots?domain=d.example&app=live&stream=cam&start_time={}&end_time={}",
            rfc3339(t0),
            rfc3339(t0 + 1)
        ))
        .await;
    assert_eq!(
        v["items"],
        json!([{
            "key": format!("live/cam/{t0}.jpg"),
            "storage": "default",
            "create_time": "2023-11-14T22:13:20Z",
            "width": 48,
            "height": 32,
            "size": jpeg.len(),
        }])
    );
    assert!(v.get("next_start_time").is_none());

    // A rule updated through the API: snapshots under its older template are found.
    let (status, b) = api
        .call(
            "POST",
            "/api/v1/snapshot-configs",
            Some(
                json!({"domain": "d.example", "app": "live", "interval_secs": 5,
                        "sequence_object": "old/{StreamName}/{UnixTimestamp}.jpg"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    put(&root, &format!("old/cam/{}.jpg", t0 + 11), &jpeg);
    let (status, b) = api
        .call(
            "PATCH",
            "/api/v1/snapshot-configs/d.example/live",
            Some(json!({"sequence_object": "new/{StreamName}-{UnixTimestamp}.jpg"})),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    put(&root, &format!("new/cam-{}.jpg", t0 + 12), &jpeg);
    let (keys, _) = query_all(&api, "cam", t0 + 10, t0 + 16, 10, "asc").await;
    assert_eq!(
        keys,
        [
            format!("live/cam/{}.jpg", t0 + 10),
            format!("old/cam/{}.jpg", t0 + 11),
            format!("new/cam-{}.jpg", t0 + 12),
            format!("live/cam/{}.jpg", t0 + 15),
        ]
    );

    // Arguments are checked.
    let q = |extra: &str| format!("/api/v1/snapshots?domain=d.example&app=live&stream=cam{extra}");
    let range = format!("&start_time={}&end_time={}", rfc3339(t0), rfc3339(t0 + 60));
    assert_invalid(
        &api.get(&q(&format!(
            "&start_time={}&end_time={}",
            rfc3339(t0),
            rfc3339(t0 + 86_401)
        )))
        .await,
        "end_time",
    );
    assert_invalid(
        &api.get(&q(&format!(
            "&start_time={}&end_time={}",
            rfc3339(t0),
            rfc3339(t0)
        )))
        .await,
        "end_time",
    );
    assert_invalid(
        &api.get(&q("&start_time=yesterday&end_time=today")).await,
        "start_time",
    );
    assert_invalid(&api.get(&q(&format!("{range}&limit=0"))).await, "limit");
    assert_invalid(&api.get(&q(&format!("{range}&limit=101"))).await, "limit");
    assert_invalid(
        &api.get(&q(&format!("{range}&order=sideways"))).await,
        "order",
    );
    assert_invalid(
        &api.get(&format!(
            "/api/v1/snapshots?domain=d.example&app=live{range}"
        ))
        .await,
        "stream",
    );
    assert_invalid(&api.get(&q(&format!("/../x{range}"))).await, "stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_latest_jpg_on_demand_snapshot_and_kick() {
    let rules = r#"
[[rules]]
domain = "*"
app = "live"
interval_secs = 5
storage = "default"
overwrite_object = "{AppName}/{StreamName}.jpg"
sequence_object = "{AppName}/{StreamName}/{Sequence}.jpg"
"#;
    let server = start_server(rules).await;
    let api = Api::new(&server);
    let domain = "127.0.0.1";
    let path = format!("/api/v1/streams/{domain}/live/cam");
    assert_eq!(
        api.get(&format!("{path}/latest.jpg")).await.0,
        404,
        "nothing stored yet"
    );

    // 3 s of the fixture: one snapshot (at 0 s), keyframes at 0, 1 and 2 s. The
    // publisher then pauses (the node's idle timeout is 5 s).
    let mut p = start_publish(server.rtmp, "live", "cam").await;
    send_range(&mut p, FIXTURE, 0, 3000).await;
    let node = server.node().clone();
    assert!(wait_for(Duration::from_secs(10), || first_stream_stored(&node) == 1).await);
    let (status, list) = api.get("/api/v1/streams").await;
    assert_eq!(status, 200);
    let s = &list["items"][0];
    assert_eq!(
        (
            s["domain"].as_str(),
            s["app"].as_str(),
            s["stream"].as_str()
        ),
        (Some(domain), Some("live"), Some("cam"))
    );
    assert_eq!(s["video"]["codec"], "H.264");
    assert_eq!(
        (s["video"]["width"].as_u64(), s["video"]["height"].as_u64()),
        (Some(640), Some(360))
    );
    let fps = s["video"]["frame_rate"].as_f64().unwrap();
    assert!((24.0..=26.0).contains(&fps), "frame rate {fps}");
    assert!(s["video"]["bitrate_kbps"].as_f64().unwrap() > 0.0);
    assert_eq!(s["video"]["keyframe_interval_ms"], 1000);
    assert_eq!(s["rule"]["app"], "live");
    assert_eq!(s["snapshots"]["taken"], 1);
    assert_eq!(s["snapshots"]["dropped"], 0);
    assert_eq!(s["snapshots"]["failed"], 0);
    assert!(s["last_snapshot_time"].as_str().is_some());
    assert!(s["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(api.get(&path).await.1["stream"], "cam");

    // latest.jpg from memory, with ETag and 304.
    let resp = api
        .request("GET", &format!("{path}/latest.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "image/jpeg");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-livesnap-source"], "memory");
    let etag = h["etag"].to_str().unwrap().to_string();
    let live_jpeg = resp.bytes().await.unwrap();
    assert_eq!(decode_jpeg(&live_jpeg).0, 640);
    assert_eq!(
        std::fs::read(server.root().join("live/cam.jpg")).unwrap(),
        live_jpeg
    );
    let resp = api
        .request("GET", &format!("{path}/latest.jpg"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 304);
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);
    let resp = api
        .request("GET", &format!("{path}/latest.jpg"))
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // On-demand snapshot of the newest keyframe, outside the schedule.
    let resp = api
        .request("POST", &format!("{path}/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-livesnap-width"], "640");
    assert!(resp.headers().get("x-livesnap-stored").is_none());
    let (w, h, _) = decode_jpeg(&resp.bytes().await.unwrap());
    assert_eq!((w, h), (640, 360));
    let files_before = snapshot_files(&server);
    let resp = api
        .request("POST", &format!("{path}/snapshot?store=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-livesnap-stored"], "true");
    let stored = resp.bytes().await.unwrap();
    assert_eq!(
        std::fs::read(server.root().join("live/cam.jpg")).unwrap(),
        stored
    );
    let files_after = snapshot_files(&server);
    assert_eq!(
        files_after.len(),
        files_before.len() + 1,
        "{files_before:?} → {files_after:?}"
    );
    let resp = api
        .request("GET", &format!("{path}/latest.jpg"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "the stored on-demand snapshot is the latest"
    );
    assert_eq!(resp.bytes().await.unwrap(), stored);
    let (status, e) = api
        .call("POST", &format!("{path}/snapshot?store=maybe"), None)
        .await;
    assert_eq!((status, e["field"].as_str()), (400, Some("store")));
    assert_eq!(
        api.call(
            "POST",
            &format!("/api/v1/streams/{domain}/live/nope/snapshot"),
            None
        )
        .await
        .0,
        404
    );

    // The query finds exactly the sequence objects on disk.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (status, v) = api
        .get(&format!(
            "/api/v1/snapshots?domain={domain}&app=live&stream=cam&start_time={}&end_time={}&limit=100",
            rfc3339(now - 3600),
            rfc3339(now + 3600)
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    let keys: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    let on_disk: Vec<String> = files_after
        .iter()
        .filter(|f| f.starts_with("live/cam/"))
        .cloned()
        .collect();
    assert_eq!(keys, on_disk);
    assert_eq!(v["items"][0]["width"], 640);

    // The rest of the stream, then offline: latest.jpg from the overwrite object.
    send_range(&mut p, FIXTURE, 3000, 12_000).await;
    p.finish().await;
    wait_not_live(&server).await;
    assert!(wait_for(Duration::from_secs(5), || server.node().tasks.is_empty()).await);
    let on_disk = std::fs::read(server.root().join("live/cam.jpg")).unwrap();
    let resp = api
        .request("GET", &format!("{path}/latest.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-livesnap-source"], "storage");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(resp.bytes().await.unwrap(), on_disk);
    let resp = api
        .request("GET", &format!("{path}/latest.jpg"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 304);
    assert_eq!(
        api.get(&format!("/api/v1/streams/{domain}/live/other/latest.jpg"))
            .await
            .0,
        404
    );
    assert_eq!(
        api.get(&format!("/api/v1/streams/{domain}/vod/cam/latest.jpg"))
            .await
            .0,
        404,
        "no rule"
    );
    assert_eq!(
        api.call("POST", &format!("{path}/snapshot"), None).await.0,
        404,
        "not live"
    );

    // Kick: the publisher is disconnected.
    let mut p = start_publish(server.rtmp, "live", "cam").await;
    send_range(&mut p, FIXTURE, 0, 1000).await;
    assert_eq!(api.call("DELETE", &path, None).await.0, 204);
    wait_not_live(&server).await;
    assert!(
        p.closed_within(Duration::from_secs(5)).await,
        "the kicked publisher's socket stayed open"
    );
    assert_eq!(api.call("DELETE", &path, None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorised_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
admin_token = "s3cret-token-for-tests"
[storage.default]
scheme = "fs"
root = "{}"
"#,
        dir.path().join("snapshots").display()
    );
    let server = TestServer::start(dir, &text).await;
    let open = Api::new(&server);
    let wrong = Api::with_token(&server, "s3cret-token-for-tesTS");
    let right = Api::with_token(&server, "s3cret-token-for-tests");
    let routes = [
        ("GET", "/api/v1/snapshot-configs"),
        ("POST", "/api/v1/snapshot-configs"),
        ("GET", "/api/v1/snapshot-configs/*/live"),
        ("PATCH", "/api/v1/snapshot-configs/*/live"),
        ("DELETE", "/api/v1/snapshot-configs/*/live"),
        ("GET", "/api/v1/snapshots?domain=a&app=b&stream=c"),
        ("GET", "/api/v1/streams"),
        ("GET", "/api/v1/streams/a/b/c"),
        ("DELETE", "/api/v1/streams/a/b/c"),
        ("GET", "/api/v1/streams/a/b/c/latest.jpg"),
        ("POST", "/api/v1/streams/a/b/c/snapshot"),
    ];
    for (method, path) in routes {
        for api in [&open, &wrong] {
            let resp = api.request(method, path).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 401, "{method} {path}");
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
            assert_eq!(v["code"], "unauthenticated");
        }
    }
    assert_eq!(right.get("/api/v1/streams").await.0, 200);
    let (status, _) = right
        .call(
            "POST",
            "/api/v1/snapshot-configs",
            Some(rule_body("*", "live")),
        )
        .await;
    assert_eq!(status, 201);
    // Probes and the page need no token.
    assert_eq!(open.get("/healthz").await.0, 200);
    assert_eq!(open.get("/readyz").await.0, 200);
    let page = open.request("GET", "/").send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("api/v1/streams"));
    let (status, v) = open.get("/no/such/route").await;
    assert_eq!((status, v["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_rule_store_keeps_the_last_good_rules_and_is_reported() {
    let shared = tempfile::tempdir().unwrap();
    let server = start_shared(shared.path()).await;
    let api = Api::new(&server);
    let (_, h) = api.get("/healthz").await;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["rule_store"]["ok"], true, "{h}");
    let (status, r) = api.get("/readyz").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/snapshot-configs",
            Some(rule_body("*", "live"))
        )
        .await
        .0,
        201
    );

    let doc = shared.path().join("_livesnap/rules.json");
    let good = std::fs::read(&doc).unwrap();
    std::fs::write(&doc, b"{ this is not json").unwrap();
    let mut degraded = Value::Null;
    for _ in 0..50 {
        degraded = api.get("/healthz").await.1;
        if degraded["status"] == "degraded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    assert!(degraded["rule_store"]["error"]
        .as_str()
        .unwrap()
        .contains("not a valid rules document"));
    let (status, r) = api.get("/readyz").await;
    assert_eq!(
        (status, r["status"].as_str()),
        (503, Some("not_ready")),
        "{r}"
    );
    // The last good rules stay in force.
    assert!(server
        .node()
        .rules()
        .lookup("any.host", "live", "cam")
        .is_some());
    let (_, one) = api.get("/api/v1/snapshot-configs/*/live").await;
    assert_eq!(one["in_force"], true);
    // Updates refuse to overwrite a document they cannot read.
    let (status, e) = api
        .call(
            "POST",
            "/api/v1/snapshot-configs",
            Some(rule_body("*", "x")),
        )
        .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (503, Some("unavailable")),
        "{e}"
    );

    std::fs::write(&doc, good).unwrap();
    let mut healed = false;
    for _ in 0..50 {
        if api.get("/healthz").await.1["status"] == "ok" {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healed);
    assert_eq!(api.get("/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_store_and_snapshot_query_on_s3() {
    let moto = common::moto::MotoServer::start().await;
    let (status, body) = http_request(moto.addr, "PUT", "/rules-bucket")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let extra = format!(
        r#"
[storage.s3]
scheme = "s3"
bucket = "rules-bucket"
endpoint = "http://{}"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
disable_config_load = true
disable_ec2_metadata = true
[rule_store]
storage = "s3"
reload_secs = 1
[[rules]]
domain = "*"
app = "live"
interval_secs = 5
storage = "s3"
sequence_object = "{{AppName}}/{{StreamName}}-{{UnixTimestamp}}.jpg"
"#,
        moto.addr
    );
    let a_server = start_server(&extra).await;
    let b_server = start_server(&extra).await;
    let store = a_server.node().shared_rules.clone().unwrap();
    assert!(store.uses_conditional_writes(), "S3 updates use If-Match");
    let (a, b) = (Api::new(&a_server), Api::new(&b_server));
    let base = "/api/v1/snapshot-configs";

    // Concurrent adds from two nodes through If-Match: none lost.
    let adds = (0..6).flat_map(|i| {
        [
            a.call("POST", base, Some(rule_body("*", &format!("a{i}")))),
            b.call("POST", base, Some(rule_body("*", &format!("b{i}")))),
        ]
    });
    for (status, body) in futures::future::join_all(adds).await {
        assert_eq!(status, 201, "{body}");
    }
    for api in [&a, &b] {
        let mut total = 0;
        for _ in 0..50 {
            total = api.get(&format!("{base}?page_size=30")).await.1["total"]
                .as_u64()
                .unwrap();
            if total == 13 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(total, 13, "1 config rule + 12 added");
    }
    assert!(moto
        .log_text()
        .contains("PUT /rules-bucket/_livesnap/rules.json"));

    // The query on a sorted listing: a key range by timestamp.
    let op = a_server.operator("s3");
    let jpeg = make_jpeg(32, 16);
    let t0 = 1_700_000_000u64;
    for k in 0..30 {
        op.write(&format!("live/cam-{}.jpg", t0 + 10 * k), jpeg.clone())
            .await
            .unwrap();
        // Another stream whose keys share the prefix and sort after cam's.
        op.write(&format!("live/cam-2-{}.jpg", t0 + 10 * k), jpeg.clone())
            .await
            .unwrap();
    }
    let (keys, pages) = query_all(&a, "cam", t0 + 50, t0 + 150, 4, "asc").await;
    let want: Vec<String> = (5..15)
        .map(|k| format!("live/cam-{}.jpg", t0 + 10 * k))
        .collect();
    assert_eq!(keys, want);
    assert_eq!(pages, [4, 4, 2]);
    let (keys, _) = query_all(&a, "cam", t0 + 50, t0 + 150, 4, "desc").await;
    assert_eq!(keys, want.iter().rev().cloned().collect::<Vec<_>>());
    assert!(
        moto.log_text()
            .contains(&format!("start-after=live/cam-{}", t0 + 50)),
        "the listing started at the range"
    );
    let (_, v) = a
        .get(&format!(
            "/api/v1/snapshots?domain=d.example&app=live&stream=cam&start_time={}&end_time={}",
            rfc3339(t0),
            rfc3339(t0 + 1)
        ))
        .await;
    assert_eq!(
        (
            v["items"][0]["width"].as_u64(),
            v["items"][0]["height"].as_u64()
        ),
        (Some(32), Some(16))
    );
    assert_eq!(v["items"][0]["size"].as_u64(), Some(jpeg.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_in_docs_api_md_exists() {
    let server = start_server("").await;
    let api = Api::new(&server);
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md")).unwrap();
    let mut checked = 0;
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let route = line.trim_start_matches("| `").split('`').next().unwrap();
        let Some((method, path)) = route.split_once(' ') else {
            continue; // a field table
        };
        let path = path
            .replace("{domain}", "example.com")
            .replace("{app}", "live")
            .replace("{stream}", "cam");
        let resp = api.request(method, &path).send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap();
        let fallback =
            serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["message"] == "no such route");
        assert!(status != 405 && !fallback, "{method} {path}: {status}");
        checked += 1;
    }
    assert_eq!(checked, 33, "the route table of docs/api.md");
}

fn stream_rule_body(domain: &str, app: &str, stream: &str) -> Value {
    let mut b = rule_body(domain, app);
    b["stream"] = json!(stream);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_rule_crud_round_trip() {
    let config_rules = r#"
[[rules]]
domain = "*"
app = "cfg"
stream = "door"
interval_secs = 10
storage = "default"
overwrite_object = "cfg/door.jpg"
"#;
    let server = start_server(config_rules).await;
    let api = Api::new(&server);
    let base = "/api/v1/snapshot-configs";

    // Create: the Location names the stream.
    let resp = api
        .request("POST", base)
        .header("content-type", "application/json")
        .body(stream_rule_body("example.com", "live", "cam7").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        resp.headers()["location"],
        "/api/v1/snapshot-configs/example.com/live/cam7"
    );
    let created: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(created["stream"], "cam7");
    assert_eq!(created["in_force"], true, "{created}");
    // The app's own rule is another rule, and has no stream.
    let (status, app_rule) = api
        .call("POST", base, Some(rule_body("example.com", "live")))
        .await;
    assert_eq!(status, 201, "{app_rule}");
    assert!(app_rule.get("stream").is_none(), "{app_rule}");

    // Get.
    let stream_path = format!("{base}/example.com/live/cam7");
    assert_eq!(api.get(&stream_path).await, (200, created.clone()));
    assert_eq!(
        api.get(&format!("{base}/example.com/live")).await,
        (200, app_rule.clone())
    );
    let (status, cfg) = api.get(&format!("{base}/*/cfg/door")).await;
    assert_eq!((status, cfg["source"].as_str()), (200, Some("config")));
    assert_eq!(cfg["stream"], "door");
    let (status, nf) = api.get(&format!("{base}/example.com/live/cam8")).await;
    assert_eq!((status, nf["code"].as_str()), (404, Some("not_found")));
    assert!(
        nf["message"].as_str().unwrap().contains("stream \"cam8\""),
        "{nf}"
    );
    assert_eq!(api.get(&format!("{base}/*/cfg")).await.0, 404);

    // 409: the same stream again, or a stream rule of the config file.
    let (status, dup) = api
        .call(
            "POST",
            base,
            Some(stream_rule_body("example.com", "live", "cam7")),
        )
        .await;
    assert_eq!(
        (status, dup["code"].as_str()),
        (409, Some("already_exists"))
    );
    let mut shadow = stream_rule_body("*", "cfg", "door");
    shadow["overwrite_object"] = json!("cfg/door2.jpg");
    let (status, dup) = api.call("POST", base, Some(shadow)).await;
    assert_eq!(
        (status, dup["code"].as_str()),
        (409, Some("already_exists"))
    );

    // An app with '/' is still one %2F-encoded segment, the stream the next one.
    let resp = api
        .request("POST", base)
        .header("content-type", "application/json")
        .body(stream_rule_body("*", "live/sub", "cam7").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        resp.headers()["location"],
        "/api/v1/snapshot-configs/*/live%2Fsub/cam7"
    );
    let (status, sub) = api.get(&format!("{base}/*/live%2Fsub/cam7")).await;
    assert_eq!(
        (status, sub["app"].as_str(), sub["stream"].as_str()),
        (200, Some("live/sub"), Some("cam7"))
    );

    // Validation names the field.
    for (body, field) in [
        (stream_rule_body("example.com", "live", "a/b"), "stream"),
        (stream_rule_body("example.com", "live", ".x"), "stream"),
        (stream_rule_body("example.com", "live", ""), "stream"),
        (stream_rule_body("example.com", "*", "cam9"), "stream"),
        (
            {
                let mut b = rule_body("example.com", "live");
                b["stream"] = json!(9);
                b
            },
            "stream",
        ),
    ] {
        assert_invalid(&api.call("POST", base, Some(body)).await, field);
    }

    // PATCH changes the stream rule only; its scope is fixed.
    let (status, p) = api
        .call("PATCH", &stream_path, Some(json!({"interval_secs": 30})))
        .await;
    assert_eq!(
        (status, p["interval_secs"].as_i64()),
        (200, Some(30)),
        "{p}"
    );
    assert_eq!(p["stream"], "cam7");
    assert_eq!(
        api.get(&format!("{base}/example.com/live")).await.1["interval_secs"],
        5
    );
    assert_invalid(
        &api.call("PATCH", &stream_path, Some(json!({"stream": "cam8"})))
            .await,
        "stream",
    );
    assert_invalid(
        &api.call("PATCH", &stream_path, Some(json!({"interval_secs": 1})))
            .await,
        "interval_secs",
    );
    let (status, nf) = api
        .call(
            "PATCH",
            &format!("{base}/example.com/live/cam8"),
            Some(json!({"interval_secs": 5})),
        )
        .await;
    assert_eq!((status, nf["code"].as_str()), (404, Some("not_found")));
    let (status, ro) = api
        .call(
            "PATCH",
            &format!("{base}/*/cfg/door"),
            Some(json!({"interval_secs": 5})),
        )
        .await;
    assert_eq!(
        (status, ro["code"].as_str()),
        (403, Some("permission_denied"))
    );

    // List: filters by stream; paging counts stream rules like any other.
    let streams_of = |v: &Value| -> Vec<(String, Option<String>)> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["app"].as_str().unwrap().to_string(),
                    i["stream"].as_str().map(str::to_string),
                )
            })
            .collect()
    };
    let (_, all) = api.get(base).await;
    assert_eq!(all["total"], 4, "{all}");
    // The config rule first; the stored ones by creation (one second may hold them all).
    let mut listed = streams_of(&all);
    assert_eq!(listed[0], ("cfg".to_string(), Some("door".to_string())));
    listed[1..].sort();
    assert_eq!(
        listed[1..],
        [
            ("live".to_string(), None),
            ("live".to_string(), Some("cam7".to_string())),
            ("live/sub".to_string(), Some("cam7".to_string())),
        ]
    );
    let (_, v) = api.get(&format!("{base}?stream=cam7")).await;
    assert_eq!(v["total"], 2, "{v}");
    let (_, v) = api.get(&format!("{base}?app=live&stream=cam7")).await;
    assert_eq!(v["total"], 1, "{v}");
    let (_, v) = api
        .get(&format!("{base}?page_num=2&page_size=5&order=desc"))
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0);

    // Delete: the stream rule only.
    assert_eq!(api.call("DELETE", &stream_path, None).await.0, 204);
    assert_eq!(api.call("DELETE", &stream_path, None).await.0, 404);
    assert_eq!(api.get(&stream_path).await.0, 404);
    assert_eq!(api.get(&format!("{base}/example.com/live")).await.0, 200);
    assert_eq!(
        api.call("DELETE", &format!("{base}/*/cfg/door"), None)
            .await
            .0,
        403
    );
    // The document keeps the stream, and only on stream rules.
    let doc: Value =
        serde_json::from_slice(&std::fs::read(server.root().join("_livesnap/rules.json")).unwrap())
            .unwrap();
    let stored: Vec<Option<&str>> = doc["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.get("stream").map(|s| s.as_str().unwrap()))
        .collect();
    assert_eq!(stored, [None, Some("cam7")]);
}

/// The snapshot query's keys for one stream of `live` on 127.0.0.1, the last hour.
async fn stored_keys(api: &Api, stream: &str) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (status, v) = api
        .get(&format!(
            "/api/v1/snapshots?domain=127.0.0.1&app=live&stream={stream}&start_time={}&end_time={}&limit=100",
            rfc3339(now - 3600),
            rfc3339(now + 60)
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    let mut keys: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_rule_applies_to_its_stream_only() {
    let mut server = start_server("").await;
    let api = Api::new(&server);
    let base = "/api/v1/snapshot-configs";
    let mut app = rule_body("*", "live");
    app["sequence_object"] = json!("{AppName}/{StreamName}/{Sequence}.jpg");
    assert_eq!(api.call("POST", base, Some(app)).await.0, 201);
    let mut cam7 = stream_rule_body("*", "live", "cam7");
    cam7["interval_secs"] = json!(10);
    cam7["overwrite_object"] = json!("cams/seven.jpg");
    cam7["sequence_object"] = json!("cams/seven/{Sequence}.jpg");
    let (status, b) = api.call("POST", base, Some(cam7)).await;
    assert_eq!(status, 201, "{b}");

    // Two streams of one app at once: cam7 every 10 s under its own keys, cam8 every
    // 5 s under the app's.
    let mut p7 = start_publish(server.rtmp, "live", "cam7").await;
    let mut p8 = start_publish(server.rtmp, "live", "cam8").await;
    let (_, streams) = api.get("/api/v1/streams").await;
    let rule_of = |name: &str| {
        streams["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stream"] == name)
            .unwrap_or_else(|| panic!("{name} not live: {streams}"))["rule"]
            .clone()
    };
    assert_eq!(rule_of("cam7")["stream"], "cam7");
    assert_eq!(rule_of("cam7")["interval_secs"], 10);
    assert_eq!(rule_of("cam8")["stream"], Value::Null);
    assert_eq!(rule_of("cam8")["interval_secs"], 5);
    let file = fixture(FIXTURE);
    let (a, b) = tokio::join!(p7.replay(&file, 4.0, 0), p8.replay(&file, 4.0, 0));
    a.unwrap();
    b.unwrap();
    p7.finish().await;
    p8.finish().await;
    wait_not_live(&server).await;
    assert_eq!(
        snapshot_files(&server),
        [
            "cams/seven.jpg",
            "cams/seven/1.jpg",
            "cams/seven/2.jpg",
            "live/cam8.jpg",
            "live/cam8/1.jpg",
            "live/cam8/2.jpg",
            "live/cam8/3.jpg"
        ]
    );
    // The snapshot query finds each stream's own objects.
    assert_eq!(
        stored_keys(&api, "cam7").await,
        ["cams/seven/1.jpg", "cams/seven/2.jpg"]
    );
    assert_eq!(
        stored_keys(&api, "cam8").await,
        ["live/cam8/1.jpg", "live/cam8/2.jpg", "live/cam8/3.jpg"]
    );
    // latest.jpg of the ended cam7 is its stream rule's overwrite object.
    let resp = api
        .request("GET", "/api/v1/streams/127.0.0.1/live/cam7/latest.jpg")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        std::fs::read(server.root().join("cams/seven.jpg")).unwrap()
    );

    // A change applies from the next publish: every 5 s now, the sequence going on.
    let (status, b) = api
        .call(
            "PATCH",
            &format!("{base}/*/live/cam7"),
            Some(json!({"interval_secs": 5})),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    publish_fixture(&server, "live", "cam7", FIXTURE, 4.0).await;
    assert!(server.stop().await);
    let seven: Vec<String> = snapshot_files(&server)
        .into_iter()
        .filter(|f| f.starts_with("cams/"))
        .collect();
    assert_eq!(
        seven,
        [
            "cams/seven.jpg",
            "cams/seven/1.jpg",
            "cams/seven/2.jpg",
            "cams/seven/3.jpg",
            "cams/seven/4.jpg",
            "cams/seven/5.jpg"
        ]
    );
}

/// `GET /api/v1/streams/ended`: a publish that ended is listed with its times and the
/// snapshots it stored; a stream still live is not; `since` takes Unix seconds or
/// RFC 3339; a stream that ends later comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_streams_are_listed_newest_first_with_their_stored_count() {
    let rules = r#"
[[rules]]
domain = "*"
app = "live"
interval_secs = 5
storage = "default"
sequence_object = "{AppName}/{StreamName}/{Sequence}.jpg"
"#;
    let server = start_server(rules).await;
    let api = Api::new(&server);
    let before = livesnap::clock::unix_now();
    let (status, empty) = api.get("/api/v1/streams/ended").await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["total"], 0, "{empty}");

    // "done" publishes the whole fixture (12 s: 3 snapshots) and ends; "still" then
    // stays live.
    let mut done = start_publish(server.rtmp, "live", "done").await;
    done.replay(&fixture(FIXTURE), 4.0, 0).await.unwrap();
    done.finish().await;
    wait_not_live(&server).await;
    let node = server.node().clone();
    let stored_of = |name: &str| {
        let (list, _) = node.registry.ended(0);
        list.iter()
            .find(|e| e.id.stream == name)
            .map_or(0, |e| e.stored())
    };
    // Its last snapshot may still be on its way to storage when it ends.
    assert!(wait_for(Duration::from_secs(10), || stored_of("done") == 3).await);
    let mut still = start_publish(server.rtmp, "live", "still").await;
    send_range(&mut still, FIXTURE, 0, 1000).await;
    assert!(wait_for(Duration::from_secs(10), || first_stream_stored(&node) == 1).await);

    let (status, list) = api.get("/api/v1/streams/ended").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 1, "only the ended stream: {list}");
    let e = &list["items"][0];
    assert_eq!(
        (
            e["domain"].as_str(),
            e["app"].as_str(),
            e["stream"].as_str()
        ),
        (Some("127.0.0.1"), Some("live"), Some("done")),
        "{list}"
    );
    assert_eq!(e["snapshots"]["taken"], 3, "{list}");
    let end = livesnap::clock::parse_rfc3339(e["end_time"].as_str().unwrap()).unwrap();
    let start = livesnap::clock::parse_rfc3339(e["start_time"].as_str().unwrap()).unwrap();
    assert!(before <= start && start <= end, "{list}");
    assert!(e["last_snapshot_time"].is_string(), "{list}");
    assert_eq!(list["dropped"], 0);
    assert_eq!(list["next_before"], Value::Null);
    assert_eq!(
        api.get("/api/v1/streams").await.1["items"][0]["stream"],
        "still"
    );

    // `since` as Unix seconds or RFC 3339; after the end, nothing.
    let rfc = livesnap::clock::rfc3339(end);
    for since in [end.to_string(), rfc.clone()] {
        let (_, l) = api
            .get(&format!("/api/v1/streams/ended?since={since}"))
            .await;
        assert_eq!(l["total"], 1, "since={since}: {l}");
    }
    let (_, l) = api
        .get(&format!("/api/v1/streams/ended?since={}", end + 1))
        .await;
    assert_eq!(l["total"], 0, "{l}");
    // `before` is exclusive.
    let total = |q: String| {
        let api = &api;
        async move {
            let (_, l) = api.get(&format!("/api/v1/streams/ended?{q}")).await;
            l["total"].as_u64().unwrap()
        }
    };
    assert_eq!(total(format!("before={}", end + 1)).await, 1);
    assert_eq!(total(format!("before={rfc}")).await, 0);
    assert_invalid(
        &api.get("/api/v1/streams/ended?since=yesterday").await,
        "since",
    );
    assert_invalid(&api.get("/api/v1/streams/ended?limit=0").await, "limit");
    assert_invalid(&api.get("/api/v1/streams/ended?sort=asc").await, "sort");

    // The other one ends: both are listed, the later end first.
    still.finish().await;
    wait_not_live(&server).await;
    assert!(wait_for(Duration::from_secs(10), || stored_of("still") == 1).await);
    let (_, both) = api.get("/api/v1/streams/ended").await;
    let names: Vec<&str> = both["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["still", "done"], "{both}");
    assert_eq!(both["items"][0]["snapshots"]["taken"], 1, "{both}");
}
