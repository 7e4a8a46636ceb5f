//! The `livesnap` binary as users run it: `check-config`, `snapshot FILE.flv`, and
//! `serve` with a real publish (the `ffmpeg` CLI), `/healthz`, and SIGTERM.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_livesnap");

fn livesnap(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .expect("run livesnap")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `config` into `dir/livesnap.toml` and returns its path.
fn write_config(dir: &Path, config: &str) -> PathBuf {
    let path = dir.join("livesnap.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// `check-config` on `config`: (success, stdout, stderr).
fn check_config(config: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), config);
    let out = livesnap(
        &["check-config", "--config", path.to_str().unwrap()],
        dir.path(),
    );
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// An fs target at `root` and one rule writing both modes, `{Sequence}` keys.
fn fs_config(root: &Path) -> String {
    format!(
        r#"
[storage.default]
scheme = "fs"
root = "{}"

[[rules]]
domain = "*"
app = "*"
interval_secs = 5
storage = "default"
overwrite_object = "{{AppName}}/{{StreamName}}.jpg"
sequence_object = "{{AppName}}/{{StreamName}}/{{Sequence}}.jpg"
"#,
        root.display()
    )
}

fn assert_tmp_dir_empty(root: &Path) {
    let tmp = root.join(livesnap::storage::FS_TMP_DIR);
    if tmp.exists() {
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "partial files left behind: {left:?}");
    }
}

#[test]
fn check_config_accepts_the_example_and_names_bad_keys() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let out = livesnap(
        &["check-config", "--config", example.to_str().unwrap()],
        Path::new(env!("CARGO_MANIFEST_DIR")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("configuration OK"),
        "{}",
        text(&out.stdout)
    );

    let rule = |interval: i64| {
        format!(
            "[storage.default]\nscheme = \"memory\"\n[[rules]]\ndomain = \"*\"\napp = \"*\"\n\
             interval_secs = {interval}\nstorage = \"default\"\noverwrite_object = \"{{AppName}}/{{StreamName}}.jpg\"\n"
        )
    };
    let (ok, _, _) = check_config(&rule(5));
    assert!(ok, "a valid rule is accepted");

    for (config, named) in [
        (rule(4), "rules[0].interval_secs"),
        (
            "[server]\nrtmp_listn = \"127.0.0.1:1935\"\n".to_string(),
            "rtmp_listn",
        ),
        (
            "[storage.s3]\nscheme = \"s3\"\nbucket = \"b\"\nendpiont = \"http://x\"\n".to_string(),
            "storage.s3.endpiont",
        ),
    ] {
        let (ok, stdout, stderr) = check_config(&config);
        assert!(!ok, "accepted:\n{config}\nstdout: {stdout}");
        assert!(
            stderr.contains(named),
            "stderr does not name {named}: {stderr}"
        );
    }
}

#[test]
fn check_config_refuses_rules_whose_keys_meet() {
    let config = |live_overwrite: &str| {
        format!(
            r#"
[storage.default]
scheme = "memory"

[[rules]]
domain = "*"
app = "*"
interval_secs = 5
storage = "default"
overwrite_object = "{{AppName}}/{{StreamName}}.jpg"
sequence_object = "{{AppName}}/{{StreamName}}/{{Sequence}}.jpg"

[[rules]]
domain = "*"
app = "live"
interval_secs = 10
storage = "default"
overwrite_object = "{live_overwrite}"
"#
        )
    };
    // The same layout for "live": its keys are those of the same streams.
    let (ok, stdout, stderr) = check_config(&config("{AppName}/{StreamName}.jpg"));
    assert!(ok, "{stdout}{stderr}");
    // "live" overwriting where the first rule keeps its sequence objects.
    let (ok, _, stderr) = check_config(&config("live/{StreamName}/1.jpg"));
    assert!(!ok, "a colliding rule was accepted");
    assert!(
        stderr.contains("rules[1].overwrite_object")
            && stderr.contains("\"live/a/1.jpg\"")
            && stderr.contains("as an overwrite object and a sequence object"),
        "{stderr}"
    );
    // One rule whose two templates meet, or that can write into livesnap's folder.
    let one = |ow: &str, seq: &str| {
        format!(
            "[storage.default]\nscheme = \"memory\"\n[[rules]]\ndomain = \"*\"\napp = \"*\"\n\
             interval_secs = 5\nstorage = \"default\"\noverwrite_object = \"{ow}\"\n\
             sequence_object = \"{seq}\"\n"
        )
    };
    for (config, field, key) in [
        (
            one(
                "{AppName}/{StreamName}/1.jpg",
                "{AppName}/{StreamName}/{Sequence}.jpg",
            ),
            "rules[0].sequence_object",
            "\"a/a/1.jpg\"",
        ),
        (
            one(
                "{AppName}/{StreamName}.jpg",
                "_{AppName}/{StreamName}/{Sequence}.jpg",
            ),
            "rules[0].sequence_object",
            "\"_livesnap/a/0.jpg\"",
        ),
        (
            one(
                "{AppName}{StreamName}.jpg",
                "{AppName}/{StreamName}/{Sequence}.jpg",
            ),
            "rules[0].overwrite_object",
            "\"aaa.jpg\"",
        ),
    ] {
        let (ok, _, stderr) = check_config(&config);
        assert!(!ok, "accepted:\n{config}");
        assert!(
            stderr.contains(field) && stderr.contains(key),
            "{field} {key}: {stderr}"
        );
    }
}

#[test]
fn check_config_without_a_file_reports_the_embedded_default() {
    // Run where no config file is lying around; check-config never binds anything.
    let dir = tempfile::tempdir().unwrap();
    let out = livesnap(&["check-config"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 storage target(s), 1 rule(s)"),
        "{}",
        text(&out.stdout)
    );
    // Validating wrote nothing (not even the default ./snapshots folder).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn snapshot_command_stores_the_due_keyframes_and_continues_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let config = write_config(dir.path(), &fs_config(&root));
    let file = fixture("high_1280x720_bframes_aac.flv");
    let run = || {
        let out = livesnap(
            &[
                "snapshot",
                file.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--app",
                "live",
                "--stream",
                "rec",
            ],
            dir.path(),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    };

    // Keyframes every 2 s over 20 s, interval 5 s: due at 0, 6, 10 and 16 s.
    run();
    assert_eq!(list_files(&root), snapshot_keys("rec", 4));
    let first: Vec<Vec<u8>> = (1..=4)
        .map(|i| std::fs::read(root.join(format!("live/rec/{i}.jpg"))).unwrap())
        .collect();
    for (i, jpeg) in first.iter().enumerate() {
        let (w, h, _) = decode_jpeg(jpeg);
        assert_eq!((w, h), (1280, 720), "snapshot {}", i + 1);
    }
    assert_eq!(std::fs::read(root.join("live/rec.jpg")).unwrap(), first[3]);
    // The four keyframes are different pictures.
    for i in 0..4 {
        for j in i + 1..4 {
            assert_ne!(
                first[i],
                first[j],
                "snapshots {} and {} are equal",
                i + 1,
                j + 1
            );
        }
    }

    // A second run continues at 5 and replaces nothing.
    run();
    assert_eq!(list_files(&root), snapshot_keys("rec", 8));
    for (i, jpeg) in first.iter().enumerate() {
        let now = std::fs::read(root.join(format!("live/rec/{}.jpg", i + 1))).unwrap();
        assert!(now == *jpeg, "live/rec/{}.jpg was replaced", i + 1);
    }
    // The same file gives the same pictures again.
    for (i, jpeg) in first.iter().enumerate() {
        let again = std::fs::read(root.join(format!("live/rec/{}.jpg", i + 5))).unwrap();
        assert!(
            again == *jpeg,
            "live/rec/{}.jpg differs from {}.jpg",
            i + 5,
            i + 1
        );
    }
    assert_eq!(std::fs::read(root.join("live/rec.jpg")).unwrap(), first[3]);
    assert_tmp_dir_empty(&root);
}

#[test]
fn snapshot_command_without_a_matching_rule_fails() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let config = fs_config(&root).replace("app = \"*\"", "app = \"other\"");
    let config = write_config(dir.path(), &config);
    let file = fixture("baseline_640x360_gop1s.flv");
    let out = livesnap(
        &[
            "snapshot",
            file.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--app",
            "live",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no snapshot rule matches"),
        "{}",
        text(&out.stderr)
    );
    assert!(list_files(&root).is_empty());
}

/// A `livesnap` (serve) child; killed and reaped on drop if still running.
struct Serving {
    child: Child,
    rtmp: SocketAddr,
    http: SocketAddr,
    log: PathBuf,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serving {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts `livesnap --config ...` on free loopback ports (retrying if a port was taken
/// meanwhile) and waits until `/healthz` answers.
async fn serve(dir: &Path, root: &Path, grace_secs: u64) -> Serving {
    serve_with(dir, root, grace_secs, "").await
}

/// [`serve`] with `extra` appended to the config. Debug logs go to a file, as when
/// stderr is redirected (NO_COLOR is not set: colour must depend on the terminal).
async fn serve_with(dir: &Path, root: &Path, grace_secs: u64, extra: &str) -> Serving {
    serve_custom(dir, root, grace_secs, extra, |_| {}).await
}

/// [`serve_with`] with `setup` applied to the command before it is spawned.
async fn serve_custom(
    dir: &Path,
    root: &Path,
    grace_secs: u64,
    extra: &str,
    setup: impl Fn(&mut Command),
) -> Serving {
    let mut failures = Vec::new();
    for attempt in 0..3 {
        let (rtmp, http) = (free_addr(), free_addr());
        let config = format!(
            "[server]\nrtmp_listen = \"{rtmp}\"\nhttp_listen = \"{http}\"\n\
             shutdown_grace_secs = {grace_secs}\n{}\n{extra}",
            fs_config(root)
        );
        let config = write_config(dir, &config);
        let log = dir.join(format!("serve-{attempt}.log"));
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(&config)
            .current_dir(dir)
            .env("RUST_LOG", "livesnap=debug")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        setup(&mut command);
        let child = command.spawn().expect("run livesnap");
        let mut serving = Serving {
            child,
            rtmp,
            http,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = serving.child.try_wait().unwrap() {
                failures.push(format!("exited ({status}): {}", serving.log_text()));
                break;
            }
            if let Ok((200, _)) = http_request(http, "GET", "/healthz").await {
                return serving;
            }
            assert!(
                Instant::now() < deadline,
                "livesnap did not answer /healthz in 10 s: {}",
                serving.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("livesnap did not start: {failures:#?}");
}

async fn healthz(addr: SocketAddr) -> serde_json::Value {
    let (status, body) = http_request(addr, "GET", "/healthz")
        .await
        .expect("GET /healthz");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/healthz body {body:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_health_ffmpeg_publish_and_sigterm() {
    const GRACE_SECS: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let mut serving = serve(dir.path(), &root, GRACE_SECS).await;

    let health = healthz(serving.http).await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["live_streams"], 0, "{health}");

    // A real-time publish by the ffmpeg CLI (12 s; keyframes every second).
    let url = format!("rtmp://{}/live/cam1", serving.rtmp);
    let mut ffmpeg = ffmpeg_publish("baseline_640x360_gop1s.flv", &url)
        .stdin(Stdio::null())
        .stderr(Stdio::null()) // it reports the server closing the connection
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg runs");
    // Poll finely: the moment the second snapshot appears fixes the phase of the
    // stream's keyframes (the 5 s keyframe has just been decoded and stored).
    let second = root.join("live/cam1/2.jpg");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !second.exists() {
        assert!(
            Instant::now() < deadline,
            "no second snapshot: {:?}\n{}",
            list_files(&root),
            serving.log_text()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let second_seen = Instant::now();
    assert_eq!(healthz(serving.http).await["live_streams"], 1);

    // SIGTERM while the publish goes on (about 6 s are left), aimed a few
    // milliseconds after the 10 s keyframe arrives, while its snapshot is being
    // decoded. Hitting that window is not guaranteed from outside the process; what
    // is asserted below holds wherever the signal lands.
    tokio::time::sleep_until((second_seen + Duration::from_millis(4985)).into()).await;
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &serving.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = loop {
        if let Some(status) = serving.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(GRACE_SECS + 2),
            "livesnap still runs {GRACE_SECS} s after SIGTERM: {}",
            serving.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        status.success(),
        "exit status {status}: {}",
        serving.log_text()
    );
    let log = serving.log_text();
    assert!(log.contains("shutdown complete"), "{log}");
    // The server ended the publish; ffmpeg notices and exits.
    let _ = tokio::time::timeout(Duration::from_secs(10), ffmpeg.wait()).await;

    // Every snapshot due before the connection ended (the log's final counters) is
    // stored, whole: contiguous sequence keys, every file a complete 640x360 JPEG,
    // the overwrite object equal to the last sequence object, no partial file.
    let ended = log
        .lines()
        .find(|l| l.contains("publish ended"))
        .unwrap_or_else(|| panic!("no 'publish ended' line: {log}"));
    let counter = |name: &str| -> u64 {
        let at = ended.find(&format!(" {name}=")).expect(name) + name.len() + 2;
        let digits: String = ended[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().expect(name)
    };
    let due = counter("due");
    assert!(due >= 2, "{ended}");
    assert_eq!(counter("dropped_busy"), 0, "{ended}");
    assert_eq!(counter("failed_decode"), 0, "{ended}");
    let files = list_files(&root);
    assert_eq!(files, snapshot_keys("cam1", due), "{log}");
    for f in &files {
        let (w, h, _) = decode_jpeg(&std::fs::read(root.join(f)).unwrap());
        assert_eq!((w, h), (640, 360), "{f}");
    }
    assert_eq!(
        std::fs::read(root.join("live/cam1.jpg")).unwrap(),
        std::fs::read(root.join(format!("live/cam1/{due}.jpg"))).unwrap(),
        "the overwrite object is the last snapshot"
    );
    assert_tmp_dir_empty(&root);
    assert!(!log.contains("snapshot not stored"), "{log}");
}

/// SIGHUP (what `systemctl reload` and log rotation send) reloads and ends nothing: a
/// live ffmpeg publish goes on to its end with its snapshots, the node keeps answering,
/// and the log says what was reloaded each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_ends_no_stream() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let mut serving = serve(dir.path(), &root, 2).await;
    let url = format!("rtmp://{}/live/hup", serving.rtmp);
    let ffmpeg = ffmpeg_publish("baseline_640x360_gop1s.flv", &url)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg runs");
    let first = root.join("live/hup/1.jpg");
    assert!(
        wait_for(Duration::from_secs(10), || first.exists()).await,
        "no first snapshot: {}",
        serving.log_text()
    );
    // The file's rule changes before the first SIGHUP (interval, and overwrite keys that
    // stay apart from the old rule's, which the live stream still uses): the live stream
    // keeps its own.
    let config = dir.path().join("livesnap.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let changed = text
        .replace("interval_secs = 5", "interval_secs = 10")
        .replace("{StreamName}.jpg", "{StreamName}/latest.jpg");
    assert_ne!(text, changed);
    std::fs::write(&config, changed).unwrap();
    for n in 1..=2 {
        let kill = Command::new("kill")
            .args(["-HUP", &serving.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success());
        assert!(
            wait_for(Duration::from_secs(3), || serving
                .log_text()
                .matches("SIGHUP: loading")
                .count()
                == n)
            .await,
            "SIGHUP {n} not logged: {}",
            serving.log_text()
        );
        assert!(
            serving.child.try_wait().unwrap().is_none(),
            "SIGHUP ended livesnap"
        );
        assert_eq!(healthz(serving.http).await["live_streams"], 1);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), ffmpeg.wait_with_output())
        .await
        .expect("ffmpeg ends with its file")
        .unwrap();
    assert!(
        out.status.success(),
        "the publish was cut: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 12 s with a keyframe every second, a snapshot every 5 s: 0, 5 and 10 s, under the
    // rule the publish started with.
    assert!(
        wait_for(Duration::from_secs(5), || list_files(&root)
            == snapshot_keys("hup", 3))
        .await,
        "{:?}",
        list_files(&root)
    );
    assert_eq!(
        serving.log_text().matches("config file reloaded").count(),
        2,
        "{}",
        serving.log_text()
    );
    assert!(serving.child.try_wait().unwrap().is_none());
}

/// `ffmpeg` publishing `file` to `url` as fast as it can read it (no `-re`).
fn ffmpeg_burst(file: &str, url: &str) -> tokio::process::Command {
    let mut ffmpeg = tokio::process::Command::new("ffmpeg");
    ffmpeg
        .args(["-v", "error", "-i"])
        .arg(fixture(file))
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    ffmpeg
}

async fn hangup_and_wait_for(serving: &Serving, what: &str, n: usize) {
    let kill = Command::new("kill")
        .args(["-HUP", &serving.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    assert!(
        wait_for(Duration::from_secs(5), || serving
            .log_text()
            .matches(what)
            .count()
            == n)
        .await,
        "{what:?} not logged {n} time(s): {}",
        serving.log_text()
    );
}

async fn metrics_line(serving: &Serving, series: &str) -> String {
    let (status, body) = http_request(serving.http, "GET", "/metrics").await.unwrap();
    assert_eq!(status, 200);
    body.lines()
        .find(|l| l.starts_with(series))
        .unwrap_or_else(|| panic!("no {series} in {body}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_puts_the_files_rules_and_auth_in_force_from_the_next_publish() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let mut serving = serve(dir.path(), &root, 2).await;
    let config = dir.path().join("livesnap.toml");
    let started = std::fs::read_to_string(&config).unwrap();
    let reloaded = format!(
        "{}\n[[auth]]\ndomain = \"*\"\nprimary_key = \"reload-secret\"\nvalidity_secs = 60\n",
        started
            .replace("{StreamName}.jpg", "{StreamName}-v2.jpg")
            .replace(
                "{StreamName}/{Sequence}.jpg",
                "{StreamName}/v2-{Sequence}.jpg"
            )
    );
    std::fs::write(&config, &reloaded).unwrap();
    hangup_and_wait_for(&serving, "config file reloaded", 1).await;
    assert!(
        !serving
            .log_text()
            .contains("take effect at the next restart"),
        "{}",
        serving.log_text()
    );

    // [[auth]] now applies: an unsigned publish is refused and stores nothing.
    let unsigned = format!("rtmp://{}/live/plain", serving.rtmp);
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        ffmpeg_burst("baseline_640x360_gop1s.flv", &unsigned).output(),
    )
    .await
    .expect("ffmpeg ends")
    .unwrap();
    assert!(!out.status.success(), "an unsigned publish was accepted");
    assert!(
        serving.log_text().contains("unauthorized"),
        "{}",
        serving.log_text()
    );

    // A signed one is taken, under the reloaded rule's keys.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed = livesnap::auth::sign_url(
        &format!("rtmp://{}/live/signed", serving.rtmp),
        "reload-secret",
        now,
    )
    .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        ffmpeg_burst("baseline_640x360_gop1s.flv", &signed).output(),
    )
    .await
    .expect("ffmpeg ends")
    .unwrap();
    assert!(
        out.status.success(),
        "the signed publish failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: Vec<String> = [
        "live/signed-v2.jpg",
        "live/signed/v2-1.jpg",
        "live/signed/v2-2.jpg",
        "live/signed/v2-3.jpg",
    ]
    .map(String::from)
    .to_vec();
    assert!(
        wait_for(Duration::from_secs(10), || list_files(&root) == expected).await,
        "{:?}",
        list_files(&root)
    );

    // A file that does not validate changes nothing, and says which key is wrong.
    std::fs::write(
        &config,
        reloaded.replace("interval_secs = 5", "interval_secs = 0"),
    )
    .unwrap();
    hangup_and_wait_for(&serving, "config file not reloaded", 1).await;
    assert!(
        serving.log_text().contains("rules[0].interval_secs"),
        "{}",
        serving.log_text()
    );
    let (status, body) = http_request(serving.http, "GET", "/api/v1/snapshot-configs")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("{StreamName}-v2.jpg"), "{body}");
    assert!(
        metrics_line(&serving, "livesnap_config_reloads_total{result=\"error\"}")
            .await
            .ends_with(" 1")
    );

    // A change a reload cannot apply is named, and the rest is still put in force.
    std::fs::write(
        &config,
        reloaded.replace("shutdown_grace_secs = 2", "shutdown_grace_secs = 3"),
    )
    .unwrap();
    hangup_and_wait_for(&serving, "take effect at the next restart", 1).await;
    assert!(
        serving.log_text().contains("sections=server"),
        "{}",
        serving.log_text()
    );
    assert!(
        metrics_line(&serving, "livesnap_config_reloads_total{result=\"ok\"}")
            .await
            .ends_with(" 2")
    );
    assert!(serving.child.try_wait().unwrap().is_none());
}

/// Starts the child with the open-file limits `soft` and `hard`.
fn open_files(soft: u64, hard: u64) -> impl Fn(&mut Command) {
    move |c: &mut Command| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe and touches only the struct passed.
        unsafe {
            c.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
}

/// (soft, hard) "Max open files" of a process.
fn max_open_files(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (v[0], v[1])
}

/// `serve` raises the soft open-file limit to the hard one (services usually start with
/// 1024, less than `[limits] max_connections` needs), and warns, naming the key, when even
/// the hard limit is below what the connection cap lets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_raises_the_open_file_limit_and_warns_when_it_is_too_low() {
    const WARNING: &str = "open file limit is below limits.max_connections";
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let serving = serve_custom(dir.path(), &root, 1, "", open_files(512, 4096)).await;
    assert_eq!(max_open_files(serving.child.id()), (4096, 4096));
    assert!(
        !serving.log_text().contains(WARNING),
        "{}",
        serving.log_text()
    );
    drop(serving);

    // The default max_connections (1024) + 256 does not fit in 600.
    let serving = serve_custom(dir.path(), &root, 1, "", open_files(600, 600)).await;
    assert_eq!(max_open_files(serving.child.id()), (600, 600));
    let log = serving.log_text();
    assert!(log.contains(WARNING), "{log}");
    assert!(log.contains("open_files=600"), "{log}");
    drop(serving);

    // With the cap lowered to fit, no warning.
    let serving = serve_custom(
        dir.path(),
        &root,
        1,
        "[limits]\nmax_connections = 300\n",
        open_files(600, 600),
    )
    .await;
    assert!(
        !serving.log_text().contains(WARNING),
        "{}",
        serving.log_text()
    );
}

/// kill -9 of livesnap mid-stream, then a restart on the same folder: the encoder
/// publishes again, `{Sequence}` continues without replacing anything, every stored
/// object is a whole JPEG, and a stale temporary file left by the kill is cleaned up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_loses_and_replaces_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let mut first = serve(dir.path(), &root, 5).await;
    let url = format!("rtmp://{}/live/k9", first.rtmp);
    let mut ffmpeg = ffmpeg_publish("baseline_640x360_gop1s.flv", &url)
        .stderr(Stdio::null()) // it reports being cut off by the kill
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg runs");
    let seq_dir = root.join("live/k9");
    let count = |d: &Path| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
    assert!(
        wait_for(Duration::from_secs(15), || count(&seq_dir) >= 2).await,
        "no snapshots before the kill: {}",
        first.log_text()
    );
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), ffmpeg.wait()).await;

    let before: Vec<(String, Vec<u8>)> = list_files(&root)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(root.join(&f)).unwrap()))
        .collect();
    for (f, bytes) in &before {
        let (w, h, _) = decode_jpeg(bytes);
        assert_eq!((w, h), (640, 360), "{f} is not a whole JPEG");
    }
    let max_before = before
        .iter()
        .filter_map(|(f, _)| {
            f.strip_prefix("live/k9/")?
                .strip_suffix(".jpg")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap();

    // A temporary file as a kill mid-write leaves it, aged past the cleanup limit.
    let tmp = root.join(livesnap::storage::FS_TMP_DIR);
    std::fs::create_dir_all(&tmp).unwrap();
    let stale = tmp.join("left-by-kill");
    std::fs::write(&stale, b"partial").unwrap();
    assert!(Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(&stale)
        .status()
        .unwrap()
        .success());

    let second = serve(dir.path(), &root, 5).await;
    assert!(!stale.exists(), "stale temporary file not removed");
    let url = format!("rtmp://{}/live/k9", second.rtmp);
    let status = ffmpeg_publish("baseline_640x360_gop1s.flv", &url)
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let want = max_before as usize + 3;
    assert!(
        wait_for(Duration::from_secs(10), || count(&seq_dir) == want).await,
        "{:?}",
        list_files(&root)
    );
    for (f, bytes) in &before {
        if f.starts_with("live/k9/") {
            assert_eq!(
                &std::fs::read(root.join(f)).unwrap(),
                bytes,
                "{f} was replaced"
            );
        }
    }
    for i in 1..=want {
        let (w, h, _) = decode_jpeg(&std::fs::read(seq_dir.join(format!("{i}.jpg"))).unwrap());
        assert_eq!((w, h), (640, 360));
    }
    drop(second);
}

/// The debug log of `serve` written to a file: no `auth_key` value (the tcUrl and
/// the stream key carry one) and no ANSI colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_carry_no_secret_and_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let auth = "[[auth]]\ndomain = \"*\"\nprimary_key = \"primary-secret\"\n";
    let serving = serve_with(dir.path(), &root, 5, auth).await;
    let now = livesnap::clock::unix_now();
    let sign = |stream: &str, key: &str| {
        let url = livesnap::auth::sign_url(&format!("rtmp://h/live/{stream}"), key, now).unwrap();
        url.split_once('?').unwrap().1.to_string()
    };
    let plain_tc = format!("rtmp://{}/live", serving.rtmp);
    let mut secrets = Vec::new();
    // The signature in the tcUrl (logged with `connect`), in the stream key, and a
    // wrong one (refused).
    for (tc, key, accepted) in [
        (
            format!("{plain_tc}?{}", sign("cam1", "primary-secret")),
            "cam1".to_string(),
            true,
        ),
        (
            plain_tc.clone(),
            format!("cam2?{}", sign("cam2", "primary-secret")),
            true,
        ),
        (
            format!("{plain_tc}?{}", sign("cam3", "wrong-secret")),
            "cam3".to_string(),
            false,
        ),
    ] {
        let query = tc.split_once('?').or(key.split_once('?')).unwrap().1;
        let value = query.strip_prefix("auth_key=").unwrap().to_string();
        secrets.push(value);
        let (mut p, out) = Publisher::connect(serving.rtmp, &tc, "live", &key).await;
        assert_eq!(
            out == PublishOutcome::Accepted,
            accepted,
            "{tc} {key}: {out:?}"
        );
        if accepted {
            send_range(&mut p, "baseline_640x360_gop1s.flv", 0, 1000).await;
            p.finish().await;
        }
    }
    assert!(
        wait_for(Duration::from_secs(10), || list_files(&root).len() >= 4).await,
        "{:?}",
        list_files(&root)
    );
    // Let the connections' last lines be written.
    let log_has = |s: &str| serving.log_text().contains(s);
    assert!(
        wait_for(Duration::from_secs(5), || serving
            .log_text()
            .matches("publish ended")
            .count()
            >= 2)
        .await,
        "{}",
        serving.log_text()
    );
    let log = serving.log_text();
    assert!(log_has("connect"), "{log}");
    assert!(
        log.contains("auth_key=***"),
        "the tcUrl was not logged: {log}"
    );
    for value in &secrets {
        let (ts, hash) = value.split_once("-0-0-").unwrap();
        assert!(
            !log.contains(&hash[..8]),
            "auth_key {value} in the log:\n{log}"
        );
        assert!(!log.contains(&format!("auth_key={ts}")), "{log}");
    }
    assert!(
        !log.contains('\x1b'),
        "ANSI escape codes in a log file:\n{log:?}"
    );
}

/// The server turns transparent huge pages off for itself (`THP_enabled: 0` in
/// /proc/PID/status): its allocator's refaults would otherwise zero 2 MiB at a time.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_without_transparent_huge_pages() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let serving = serve(dir.path(), &root, 1).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", serving.child.id())).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .unwrap_or_else(|| panic!("no THP_enabled line (kernel older than 5.0?):\n{status}"));
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}
