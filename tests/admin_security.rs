//! The admin API and dashboard against a hostile web page: the exact requests a
//! browser sends on a page's behalf (a body-less cross-origin POST, a `text/plain`
//! "simple" POST carrying JSON, a DNS-rebinding GET) are refused, while what curl and
//! scripts send keeps working. Raw HTTP over a TcpStream, so that Host and Origin are
//! exactly what the test writes.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RULE: &str = r#"{"domain":"*","app":"live","interval_secs":5,"storage":"default","overwrite_object":"{AppName}/{StreamName}.jpg"}"#;
const RULES: &str = "/api/v1/snapshot-configs";

/// One raw HTTP/1.1 request: `headers` as written (a `Host` among them when wanted),
/// then Content-Length and the body. Returns (status, JSON body or Null).
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, Value) {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut raw))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, body)
}

fn host(addr: SocketAddr) -> String {
    format!("Host: {addr}")
}

/// The rules created through the API (not from the config file).
async fn api_rules(addr: SocketAddr) -> usize {
    let (status, v) = send(addr, "GET", RULES, &[&host(addr)], "").await;
    assert_eq!(status, 200, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] != "config")
        .count()
}

fn assert_refused((status, body): &(u16, Value), want: u16, code: &str) {
    assert_eq!(*status, want, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_requests_to_the_tokenless_api_are_refused() {
    let server = start_server("").await;
    let addr = server.http;
    let local = host(addr);
    let evil = "Origin: http://evil.example";

    // A page's <form> or fetch(..., {mode: "no-cors"}): text/plain needs no preflight.
    assert_refused(
        &send(
            addr,
            "POST",
            RULES,
            &[&local, evil, "Content-Type: text/plain;charset=UTF-8"],
            RULE,
        )
        .await,
        415,
        "unsupported_media_type",
    );
    // The same without the page's Origin (an old browser, a redirect): still refused.
    for ct in [
        "Content-Type: text/plain",
        "Content-Type: application/x-www-form-urlencoded",
    ] {
        assert_refused(
            &send(addr, "POST", RULES, &[&local, ct], RULE).await,
            415,
            "unsupported_media_type",
        );
    }
    // No Content-Type at all with a body: refused too.
    assert_refused(
        &send(addr, "POST", RULES, &[&local], RULE).await,
        415,
        "unsupported_media_type",
    );
    // A body-less cross-origin POST (no preflight), and a JSON one from a page.
    let snapshot = "/api/v1/streams/default/live/cam/snapshot?store=true";
    assert_refused(
        &send(addr, "POST", snapshot, &[&local, evil], "").await,
        403,
        "permission_denied",
    );
    assert_refused(
        &send(
            addr,
            "POST",
            RULES,
            &[&local, evil, "Content-Type: application/json"],
            RULE,
        )
        .await,
        403,
        "permission_denied",
    );
    for (method, path) in [
        ("DELETE", "/api/v1/streams/default/live/cam"),
        ("DELETE", "/api/v1/streams/default/live/cam/players/1"),
        ("DELETE", "/api/v1/snapshot-configs/*/live"),
        ("PATCH", "/api/v1/snapshot-configs/*/live"),
    ] {
        assert_refused(
            &send(addr, method, path, &[&local, evil], "").await,
            403,
            "permission_denied",
        );
    }
    // Sandboxed frames and file:// pages send "Origin: null".
    assert_refused(
        &send(addr, "POST", snapshot, &[&local, "Origin: null"], "").await,
        403,
        "permission_denied",
    );
    // DNS rebinding: the page's own name resolves to 127.0.0.1, so the browser sends
    // it as Host (and treats the answer as same-origin).
    let rebound = format!("Host: evil.example:{}", addr.port());
    for path in ["/api/v1/streams", RULES, "/"] {
        assert_refused(
            &send(addr, "GET", path, &[&rebound], "").await,
            403,
            "permission_denied",
        );
    }
    // A loopback name on another port is another origin.
    assert_refused(
        &send(
            addr,
            "GET",
            "/api/v1/streams",
            &[&format!("Host: 127.0.0.1:{}", addr.port() + 1)],
            "",
        )
        .await,
        403,
        "permission_denied",
    );
    // A preflight for a JSON POST gets no CORS answer, so the browser never sends it.
    assert_refused(
        &send(
            addr,
            "OPTIONS",
            RULES,
            &[
                &local,
                evil,
                "Access-Control-Request-Method: POST",
                "Access-Control-Request-Headers: content-type",
            ],
            "",
        )
        .await,
        405,
        "method_not_allowed",
    );
    assert_eq!(api_rules(addr).await, 0, "a refused request created a rule");

    // Health and metrics stay public (no body, no state, no secrets).
    assert_eq!(send(addr, "GET", "/healthz", &[&rebound], "").await.0, 200);
    let metrics = send(addr, "GET", "/metrics", &[&rebound], "").await;
    assert_eq!(metrics.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_like_clients_and_the_dashboard_keep_working() {
    let server = start_server("").await;
    let addr = server.http;
    let port = addr.port();
    let json = "Content-Type: application/json";
    // curl: Host 127.0.0.1:PORT, no Origin.
    let (status, v) = send(addr, "POST", RULES, &[&host(addr), json], RULE).await;
    assert_eq!(status, 201, "{v}");
    // A body-less POST without Origin reaches its handler (no such stream: 404).
    let snapshot = "/api/v1/streams/default/live/cam/snapshot";
    let (status, v) = send(addr, "POST", snapshot, &[&host(addr)], "").await;
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    // Other loopback names on the listener's port.
    let localhost = format!("Host: localhost:{port}");
    for h in [localhost.as_str(), &format!("Host: LocalHost:{port}")] {
        assert_eq!(send(addr, "GET", "/api/v1/streams", &[h], "").await.0, 200);
    }
    // The dashboard's own requests: same origin.
    let own = format!("Origin: http://localhost:{port}");
    let (status, v) = send(
        addr,
        "PATCH",
        &format!("{RULES}/*/live"),
        &[
            &localhost,
            &own,
            "Content-Type: application/json; charset=utf-8",
        ],
        r#"{"interval_secs": 10}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["interval_secs"], 10, "{v}");
    let page = send(addr, "GET", "/", &[&localhost], "").await;
    assert_eq!(page.0, 200);
    let (status, _) = send(
        addr,
        "DELETE",
        &format!("{RULES}/*/live"),
        &[&host(addr), &format!("Origin: http://{addr}")],
        "",
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(api_rules(addr).await, 0);
}

/// A node whose config is `[server]` plus `server_extra`, on loopback ports.
async fn start_with_server_keys(server_extra: &str) -> TestServer {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
{server_extra}
[storage.default]
scheme = "fs"
root = "{}"
"#,
        dir.path().join("snapshots").display()
    );
    TestServer::start(dir, &text).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_hosts_lets_a_named_host_in() {
    let server =
        start_with_server_keys(r#"http_hosts = ["snap.internal", "proxy.example:8443"]"#).await;
    let addr = server.http;
    let json = "Content-Type: application/json";
    // A reverse proxy forwarding https://snap.internal (no port).
    let (status, v) = send(
        addr,
        "POST",
        RULES,
        &["Host: snap.internal", "Origin: https://snap.internal", json],
        RULE,
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, _) = send(
        addr,
        "GET",
        "/api/v1/streams",
        &["Host: proxy.example:8443"],
        "",
    )
    .await;
    assert_eq!(status, 200);
    // Only the port given.
    assert_refused(
        &send(
            addr,
            "GET",
            "/api/v1/streams",
            &["Host: proxy.example:8444"],
            "",
        )
        .await,
        403,
        "permission_denied",
    );
    // A listed host does not make other origins welcome.
    assert_refused(
        &send(
            addr,
            "POST",
            RULES,
            &["Host: snap.internal", "Origin: https://evil.example", json],
            RULE,
        )
        .await,
        403,
        "permission_denied",
    );
    assert_refused(
        &send(
            addr,
            "GET",
            "/api/v1/streams",
            &["Host: other.internal"],
            "",
        )
        .await,
        403,
        "permission_denied",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_a_public_host_works_and_bodies_must_still_be_json() {
    let server = start_with_server_keys(r#"admin_token = "s3cret-token-for-tests""#).await;
    let addr = server.http;
    let bearer = "Authorization: Bearer s3cret-token-for-tests";
    let public = "Host: snap.example.com";
    let (status, _) = send(addr, "GET", "/api/v1/streams", &[public, bearer], "").await;
    assert_eq!(status, 200);
    // Without the token: 401, whatever the Host.
    assert_refused(
        &send(addr, "GET", "/api/v1/streams", &[public], "").await,
        401,
        "unauthenticated",
    );
    // A tool on another origin holding the token may write.
    let (status, v) = send(
        addr,
        "POST",
        RULES,
        &[
            public,
            bearer,
            "Origin: https://console.example.com",
            "Content-Type: application/json",
        ],
        RULE,
    )
    .await;
    assert_eq!(status, 201, "{v}");
    // The Content-Type check stays.
    assert_refused(
        &send(
            addr,
            "PATCH",
            &format!("{RULES}/*/live"),
            &[public, bearer, "Content-Type: text/plain"],
            r#"{"interval_secs": 10}"#,
        )
        .await,
        415,
        "unsupported_media_type",
    );
}
