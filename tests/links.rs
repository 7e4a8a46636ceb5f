//! Signed image links on a real node: links issued by the admin API and by
//! `livesnap sign-image` (the built binary) fetch a stream's pictures without the
//! admin token; expired, tampered, foreign-path and missing signatures are refused
//! with 403; an object of another stream is never served; without `[links]` the
//! routes answer 404.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use livesnap::links::Signer;
use serde_json::{json, Value};

/// 640x360, a keyframe every second, 12 s.
const FIXTURE: &str = "baseline_640x360_gop1s.flv";
const TOKEN: &str = "admin-token-for-the-links-tests";
const KEY: &str = "a-links-key-of-at-least-32-bytes-long";
const BIN: &str = env!("CARGO_BIN_EXE_livesnap");

fn config(root: &Path, links: bool) -> String {
    let links = if links {
        format!("[links]\nkey = \"{KEY}\"\ndefault_ttl_secs = 600\n")
    } else {
        String::new()
    };
    format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
admin_token = "{TOKEN}"
[snapshot]
workers = 2
[storage.default]
scheme = "fs"
root = "{}"
{DEFAULT_RULES}
{links}
"#,
        root.display()
    )
}

async fn start(links: bool) -> (TestServer, String) {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let text = config(&dir.path().join("snapshots"), links);
    (TestServer::start(dir, &text).await, text)
}

struct Fetched {
    status: u16,
    content_type: Option<String>,
    cors: Option<String>,
    body: Vec<u8>,
}

/// A GET without any credential.
async fn fetch(server: &TestServer, path_and_query: &str) -> Fetched {
    let resp = reqwest::Client::new()
        .get(format!("http://{}{path_and_query}", server.http))
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    Fetched {
        status: resp.status().as_u16(),
        content_type: header("content-type"),
        cors: header("access-control-allow-origin"),
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

/// `POST /api/v1/links` with (or without) the admin token.
async fn issue(server: &TestServer, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut rb = reqwest::Client::new()
        .post(format!("http://{}/api/v1/links", server.http))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        rb = rb.header("authorization", format!("Bearer {t}"));
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn img(stream: &str, rest: &str) -> String {
    format!(
        "/img/{}/live/{stream}/{rest}",
        livesnap::names::DEFAULT_DOMAIN
    )
}

fn assert_refused(f: &Fetched, status: u16, what: &str) {
    assert_eq!(
        f.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&f.body)
    );
    assert_eq!(
        f.cors.as_deref(),
        Some("*"),
        "{what}: CORS header on refusals too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_links_serve_pictures_without_the_token_and_nothing_else() {
    let (server, text) = start(true).await;
    let root = server.root();
    publish_fixture(&server, "live", "camA", FIXTURE, 4.0).await;
    publish_fixture(&server, "live", "camB", FIXTURE, 4.0).await;
    let stored = |k: &str| root.join(k).exists();
    assert!(
        wait_for(Duration::from_secs(10), || stored("live/camA.jpg")
            && stored("live/camA/1.jpg")
            && stored("live/camB/1.jpg"))
        .await,
        "snapshots stored: {:?}",
        list_files(&root)
    );

    // The admin call is guarded like every admin route.
    let latest_a = img("camA", "latest.jpg");
    let (status, _) = issue(&server, None, json!({ "path": latest_a })).await;
    assert_eq!(status, 401);
    let (status, body) = issue(
        &server,
        Some(TOKEN),
        json!({ "path": latest_a, "ttl_secs": 60 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let url = body["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("{latest_a}?exp=")), "{url}");
    // Bad requests name their field.
    let (status, body) = issue(&server, Some(TOKEN), json!({ "path": "/api/v1/streams" })).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("path")),
        "{body}"
    );
    let (status, body) = issue(
        &server,
        Some(TOKEN),
        json!({ "path": latest_a, "ttl_secs": 8 * 86_400 }),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("ttl_secs")),
        "{body}"
    );

    // fs cannot pre-sign storage URLs.
    let (status, body) = issue(
        &server,
        Some(TOKEN),
        json!({ "path": latest_a, "storage_url": true }),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("storage_url")),
        "{body}"
    );

    // Pictures the node makes have no storage URL.
    for path in [
        img("camA", "latest.webp"),
        img(
            "camA",
            "storyboard.vtt?start_time=2026-01-01T00:00:00Z&end_time=2026-01-01T01:00:00Z",
        ),
    ] {
        let (status, body) = issue(
            &server,
            Some(TOKEN),
            json!({ "path": path, "storage_url": true }),
        )
        .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (400, Some("storage_url")),
            "{body}"
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("made by the node"),
            "{body}"
        );
    }

    // latest.jpg without a token: the stored overwrite object (the stream ended).
    let f = fetch(&server, &url).await;
    assert_eq!(f.status, 200, "{}", String::from_utf8_lossy(&f.body));
    assert_eq!(f.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(f.cors.as_deref(), Some("*"));
    assert_eq!(f.body, std::fs::read(root.join("live/camA.jpg")).unwrap());

    // A stored object, through a link printed by `livesnap sign-image`.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("livesnap.toml");
    std::fs::write(&file, &text).unwrap();
    let object_a = img("camA", "object/live/camA/1.jpg");
    let out = Command::new(BIN)
        .args(["sign-image", "--config", file.to_str().unwrap(), &object_a])
        .args(["--ttl", "120"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        cli_url.starts_with(&format!("{object_a}?exp=")),
        "{cli_url}"
    );
    let f = fetch(&server, &cli_url).await;
    assert_eq!(f.status, 200, "{}", String::from_utf8_lossy(&f.body));
    assert_eq!(f.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(f.cors.as_deref(), Some("*"));
    assert_eq!(f.body, std::fs::read(root.join("live/camA/1.jpg")).unwrap());
    // The CLI refuses what the API refuses.
    let out = Command::new(BIN)
        .args(["sign-image", "--config", file.to_str().unwrap(), "/img/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an image link path"));

    // Expired: signed with the node's key, valid until a second that has passed.
    let signer = Signer::new(KEY.as_bytes(), 600, 604_800);
    let now = livesnap::clock::unix_now();
    assert_refused(
        &fetch(&server, &signer.sign_at(&latest_a, now - 5)).await,
        403,
        "expired",
    );
    // The same key and a future exp work (the test signs like the node does).
    assert_eq!(
        fetch(&server, &signer.sign_at(&latest_a, now + 60))
            .await
            .status,
        200
    );
    // Tampered: one hex digit of the signature, or the exp.
    let (path, query) = url.split_once('?').unwrap();
    let sig_at = url.find("sig=").unwrap() + 4;
    let mut tampered = url.clone().into_bytes();
    tampered[sig_at] = if tampered[sig_at] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_refused(&fetch(&server, &tampered).await, 403, "tampered sig");
    let exp: u64 = query[4..query.find('&').unwrap()].parse().unwrap();
    let later = url.replace(&format!("exp={exp}"), &format!("exp={}", exp + 3600));
    assert_refused(&fetch(&server, &later).await, 403, "tampered exp");
    // Another key.
    let other = Signer::new(b"another-key-also-at-least-32-bytes!", 600, 604_800);
    assert_refused(
        &fetch(&server, &other.sign_at(&latest_a, now + 60)).await,
        403,
        "other key",
    );
    // A link for stream A used on stream B.
    let latest_b = img("camB", "latest.jpg");
    assert_refused(
        &fetch(&server, &format!("{latest_b}?{query}")).await,
        403,
        "wrong path",
    );
    let object_b = img("camB", "object/live/camB/1.jpg");
    let cli_query = cli_url.split_once('?').unwrap().1;
    assert_refused(
        &fetch(&server, &format!("{object_b}?{cli_query}")).await,
        403,
        "wrong object",
    );
    // Missing parameters.
    assert_refused(&fetch(&server, path).await, 403, "no query");
    let no_sig = &url[..url.find("&sig=").unwrap()];
    assert_refused(&fetch(&server, no_sig).await, 403, "no sig");
    // A valid signature over a key that is not stream A's: never served.
    for key in [
        "live/camB/1.jpg",
        "live/camB.jpg",
        "live/camA/x.jpg",
        "livesnap-rules.json",
    ] {
        let link = signer.sign_at(&img("camA", &format!("object/{key}")), now + 60);
        let f = fetch(&server, &link).await;
        assert_refused(&f, 404, key);
    }
    // The admin token is no substitute for a signature.
    let resp = reqwest::Client::new()
        .get(format!("http://{}{latest_a}", server.http))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_links_key_the_routes_answer_404() {
    let (server, _) = start(false).await;
    publish_fixture(&server, "live", "camA", FIXTURE, 8.0).await;
    let root = server.root();
    assert!(
        wait_for(Duration::from_secs(10), || root
            .join("live/camA.jpg")
            .exists())
        .await
    );
    // Even a link signed with some key is not served.
    let signer = Signer::new(KEY.as_bytes(), 600, 604_800);
    let now = livesnap::clock::unix_now();
    let f = fetch(
        &server,
        &signer.sign_at(&img("camA", "latest.jpg"), now + 60),
    )
    .await;
    assert_eq!(f.status, 404);
    assert!(
        String::from_utf8_lossy(&f.body).contains("no [links] key"),
        "{}",
        String::from_utf8_lossy(&f.body)
    );
    assert_eq!(f.cors.as_deref(), Some("*"));
    let (status, body) = issue(
        &server,
        Some(TOKEN),
        json!({ "path": img("camA", "latest.jpg") }),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("[links]"),
        "{body}"
    );
}

#[test]
fn the_links_key_is_validated_with_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let base = config(dir.path(), false);
    let err = |links: &str| {
        livesnap::config::Config::parse(&format!("{base}\n[links]\n{links}"))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
    };
    assert!(err("key = \"too-short\"").starts_with("links.key:"));
    assert!(err("").starts_with("links.key:"));
    assert!(err(&format!("key = \"{KEY}\"\nmax_ttl_secs = 0")).starts_with("links.max_ttl_secs:"));
    assert!(err("key_env = \"LIVESNAP_TEST_UNSET_LINKS_KEY\"").starts_with("links.key_env:"));
    assert!(livesnap::config::Config::parse(&format!("{base}\n[links]\nkee = \"x\"")).is_err());
}

/// The `[links]` block of config.example.toml, uncommented, is a valid section with
/// the documented defaults.
#[test]
fn the_documented_links_section_validates() {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml"))
            .unwrap();
    let start = example.find("# [links]\n").expect("a [links] block");
    let block: String = example[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| {
            let l = l.trim_start_matches("# ");
            let setting = l.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            });
            (l == "[links]" || setting).then(|| format!("{l}\n"))
        })
        .collect();
    assert!(block.contains("max_ttl_secs"), "{block}");
    let dir = tempfile::tempdir().unwrap();
    let settings =
        livesnap::config::Config::parse(&format!("{}\n{block}", config(dir.path(), false)))
            .unwrap()
            .validate()
            .unwrap();
    let signer = settings.links.expect("[links] configured");
    assert_eq!((signer.default_ttl, signer.max_ttl), (3600, 604_800));
}

/// Reads `key` from `op`, waiting up to 10 s for it to be stored.
async fn read_when_stored(op: &opendal::Operator, key: &str) -> Vec<u8> {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match op.read(key).await {
            Ok(b) => return b.to_vec(),
            Err(e) if std::time::Instant::now() > end => panic!("{key} not stored: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_urls_are_presigned_on_s3() {
    init_logs();
    let moto = common::moto::MotoServer::start().await;
    moto.create_bucket("links").await;
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
admin_token = "{TOKEN}"
[snapshot]
workers = 2
{}
[links]
key = "{KEY}"
"#,
        common::moto::s3_config("links", &moto.endpoint(), 5, 2)
    );
    let server = TestServer::start(tempfile::tempdir().unwrap(), &text).await;
    publish_fixture(&server, "live", "camA", FIXTURE, 4.0).await;
    let op = server.operator("s3");
    let object = read_when_stored(&op, "live/camA/1.jpg").await;
    let latest = read_when_stored(&op, "live/camA.jpg").await;

    for (path, want) in [
        (img("camA", "object/live/camA/1.jpg"), &object),
        (img("camA", "latest.jpg"), &latest),
    ] {
        let (status, body) = issue(
            &server,
            Some(TOKEN),
            json!({ "path": path, "ttl_secs": 300, "storage_url": true }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let url = body["url"].as_str().unwrap();
        assert!(url.starts_with(&moto.endpoint()), "{url}");
        assert!(url.contains("X-Amz-Signature="), "{url}");
        // Fetched from the storage directly, with no credential but the URL's.
        let resp = reqwest::get(url).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{url}");
        assert_eq!(&resp.bytes().await.unwrap().to_vec(), want, "{path}");
    }
    // Only the stream's own objects are pre-signed.
    let (status, body) = issue(
        &server,
        Some(TOKEN),
        json!({ "path": img("camB", "object/live/camA/1.jpg"), "storage_url": true }),
    )
    .await;
    assert_eq!(status, 404, "{body}");
}
