//! The load generator `livesnap-load` (the benches' publisher and player fleet), run as
//! its binary against real nodes: publishing over RTMPS (a CA file, `--insecure`, and a
//! refusal when the certificate is not trusted), and `--play-from`, which plays every
//! published stream back from the origin a relay pushes to and measures each frame's lag.

mod common;

use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_livesnap-load");
const FIXTURE: &str = "baseline_640x360_gop1s.flv";

/// Runs livesnap-load with `args` (fixture and quiet added); exit success, stdout, stderr.
async fn run_load(args: &[&str]) -> (bool, String, String) {
    let fixture = fixture(FIXTURE);
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(BIN)
            .args(args)
            .arg("--fixture")
            .arg(&fixture)
            .arg("--quiet")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("livesnap-load ends")
    .expect("livesnap-load runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A node with an RTMPS listener whose self-signed certificate names 127.0.0.1 and
/// localhost; returns it, its RTMPS port and the certificate's PEM file.
async fn start_tls_node() -> (TestServer, u16, std::path::PathBuf) {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".into()])
        .unwrap();
    let cert_file = dir.path().join("node.crt");
    let key_file = dir.path().join("node.key");
    std::fs::write(&cert_file, ck.cert.pem()).unwrap();
    std::fs::write(&key_file, ck.signing_key.serialize_pem()).unwrap();
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
rtmps_listen = "127.0.0.1:0"
tls_cert_file = "{}"
tls_key_file = "{}"
http_listen = "127.0.0.1:0"
[snapshot]
workers = 2
[storage.default]
scheme = "fs"
root = "{}"
{DEFAULT_RULES}
"#,
        cert_file.display(),
        key_file.display(),
        dir.path().join("snapshots").display(),
    );
    let server = TestServer::start(dir, &text).await;
    let port = server
        .running
        .as_ref()
        .unwrap()
        .rtmps_addr
        .expect("RTMPS on")
        .port();
    (server, port, cert_file)
}

/// The node's count of keyframes received, from the load tool's final metrics line.
fn keyframes_seen(stdout: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("final:"))
        .unwrap_or_else(|| panic!("no final metrics line in {stdout}"));
    let at = line
        .find(" keyframes=")
        .expect("keyframes in the final line")
        + 11;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_over_rtmps_trusting_a_ca_file_or_anything() {
    let (server, port, cert) = start_tls_node().await;
    let url = format!("rtmps://127.0.0.1:{port}/live");
    let metrics = format!("http://{}/metrics", server.http);
    let cert = cert.to_str().unwrap();
    let common = [
        "--url",
        &url,
        "--streams",
        "2",
        "--duration",
        "3",
        "--settle",
        "1",
    ];

    let mut args = common.to_vec();
    args.extend([
        "--metrics",
        &metrics,
        "--tls-ca-file",
        cert,
        "--prefix",
        "ca",
    ]);
    let (ok, out, err) = run_load(&args).await;
    assert!(ok, "publish over RTMPS with the CA file: {out}\n{err}");
    assert!(
        out.contains("streams started=2 finished=2 errors=0"),
        "{out}"
    );
    // The node itself counted the keyframes: the streams arrived over TLS.
    assert!(keyframes_seen(&out) >= 4, "{out}");

    let mut args = common.to_vec();
    args.extend(["--metrics", &metrics, "--insecure", "--prefix", "any"]);
    let (ok, out, err) = run_load(&args).await;
    assert!(ok, "publish over RTMPS with --insecure: {out}\n{err}");
    assert!(keyframes_seen(&out) >= 4, "{out}");

    // The system's trust store does not know the test certificate: refused, named.
    let mut args = common.to_vec();
    args.extend(["--metrics", "", "--prefix", "untrusted"]);
    let (ok, out, err) = run_load(&args).await;
    assert!(!ok, "an untrusted certificate must fail: {out}");
    assert!(err.contains("publish failed: TLS to 127.0.0.1"), "{err}");
    assert!(out.contains("errors=2"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_ca_file_is_named() {
    let (ok, _, err) = run_load(&[
        "--url",
        "rtmps://127.0.0.1:1/live",
        "--tls-ca-file",
        "/nonexistent/ca.pem",
    ])
    .await;
    assert!(!ok);
    assert!(err.contains("--tls-ca-file"), "{err}");
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_from_measures_every_stream_through_a_relay() {
    // The origin: a node that serves its streams to players (on by default).
    let origin = start_server("").await;
    let edge = start_server(&format!(
        "[[relays]]\napp = \"live\"\ntargets = [\"rtmp://{}/live/{{StreamName}}\"]\n",
        origin.rtmp
    ))
    .await;
    let url = format!("rtmp://{}/live", edge.rtmp);
    let from = format!("rtmp://{}/live", origin.rtmp);
    let (ok, out, err) = run_load(&[
        "--url",
        &url,
        "--streams",
        "3",
        "--ramp",
        "0.5",
        "--duration",
        "6",
        "--metrics",
        "",
        "--play-from",
        &from,
        "--players-delay",
        "1.5",
    ])
    .await;
    assert!(ok, "{out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("players:"))
        .unwrap_or_else(|| panic!("no players line: {out}"));
    // One player per stream, each at the origin.
    assert!(
        line.starts_with("players: 3 of 3 connected, failed=0 closed_early=0"),
        "{line}"
    );
    // Every frame the origin sent came from this process's streams (matched by timestamp
    // in the stream's own ring), and lags were measured.
    assert!(line.contains(", 0 without a send time)"), "{line}");
    let n: u64 = line
        .rsplit_once("(n=")
        .and_then(|(_, r)| r.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no lag count: {line}"));
    // 3 streams × ≥ 3 s of 30 fps video after the players joined.
    assert!(n >= 200, "{line}");

    // --play-from and --players together: refused before anything starts.
    let (ok, _, err) = run_load(&[
        "--url",
        &url,
        "--play-from",
        &from,
        "--players",
        "2",
        "--metrics",
        "",
    ])
    .await;
    assert!(!ok);
    assert!(err.contains("--play-from and --players"), "{err}");
}
