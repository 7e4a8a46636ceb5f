//! The dashboard page at `/` in a real browser: Debian's headless Chromium loads it
//! from a node with a live stream; the page must show a tile for the stream whose
//! thumbnail (the stream's latest.jpg?width=320) has loaded. A second test drives the
//! page through the DevTools protocol (over `--remote-debugging-pipe`): a stream's
//! history after it ended, and adding, editing and deleting a rule in the page.
//!
//! Needs `/usr/bin/chromium` (`apt-get install chromium`, as `.ci/setup` does); without
//! it the test fails, it never skips.

mod common;

use std::time::Duration;

use common::external::*;
use common::*;
use serde_json::{json, Value};

/// The opening tag of the first element carrying `attr`.
fn tag_with<'a>(dom: &'a str, attr: &str) -> Option<&'a str> {
    let at = dom.find(attr)?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_a_live_stream_with_its_picture() {
    let dir = tempfile::tempdir().unwrap();
    // A long idle timeout: the publisher pauses while the browser runs.
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
idle_timeout_secs = 120
[snapshot]
workers = 2
[storage.default]
scheme = "fs"
root = "{}"
{DEFAULT_RULES}
"#,
        dir.path().join("snapshots").display()
    );
    let mut server = TestServer::start(dir, &text).await;

    // The first 2 s of a 640x360 recording: one snapshot (at 0 s), then a pause.
    let mut p = start_publish(server.rtmp, "live", "cam").await;
    send_range(&mut p, "baseline_640x360_gop1s.flv", 0, 2000).await;
    let node = server.node().clone();
    assert!(
        wait_for(Duration::from_secs(10), || first_stream_stored(&node) >= 1).await,
        "no snapshot was stored"
    );
    // One RTMP player, shown on the tile.
    let endpoint =
        livesnap::rtmp::client::Endpoint::parse(&format!("rtmp://{}/live", server.rtmp)).unwrap();
    let io = tokio::net::TcpStream::connect(server.rtmp).await.unwrap();
    let player = livesnap::rtmp::client::Player::play(io, &endpoint, "cam", Default::default())
        .await
        .unwrap();

    let url = format!("http://{}/", server.http);
    let dom = tokio::task::spawn_blocking(move || dump_dom(&url, 6000))
        .await
        .unwrap();
    let tile = tag_with(&dom, "data-stream=\"127.0.0.1/live/cam\"")
        .unwrap_or_else(|| panic!("no tile for the stream in:\n{dom}"));
    assert!(tile.contains("class=\"tile\""), "{tile}");
    let img = tag_with(&dom, "data-loaded=\"1\"")
        .unwrap_or_else(|| panic!("the tile's image did not load:\n{dom}"));
    assert!(img.starts_with("<img"), "{img}");
    // A thumbnail is asked for; a node whose latest.jpg does not scale yet sends the
    // 640x360 picture itself.
    assert!(
        img.contains("data-path=\"api/v1/streams/127.0.0.1/live/cam/latest.jpg?width=320\""),
        "{img}"
    );
    assert!(
        (img.contains("data-natural-width=\"320\"") && img.contains("data-natural-height=\"180\""))
            || (img.contains("data-natural-width=\"640\"")
                && img.contains("data-natural-height=\"360\"")),
        "{img}"
    );
    assert!(img.contains("src=\"blob:"), "{img}");
    assert!(dom.contains("1 live stream"), "status line missing:\n{dom}");
    assert!(dom.contains("every 5 s"), "rule missing:\n{dom}");
    assert!(dom.contains("taken 1"), "counters missing:\n{dom}");
    assert!(dom.contains(">1 player<"), "players missing:\n{dom}");
    drop(player);

    // Its history by address, on a node without [links]: the stored snapshot with its
    // time, and a note instead of pictures.
    let url = format!("http://{}/#/history/127.0.0.1/live/cam", server.http);
    let dom = tokio::task::spawn_blocking(move || dump_dom(&url, 6000))
        .await
        .unwrap();
    let shot = tag_with(&dom, "data-key=\"live/cam/1.jpg\"")
        .unwrap_or_else(|| panic!("the stored snapshot is not listed:\n{dom}"));
    assert!(shot.contains("class=\"shot\""), "{shot}");
    assert!(dom.contains("1 stored snapshot<"), "count missing:\n{dom}");
    assert!(dom.contains("<time datetime=\""), "time missing:\n{dom}");
    assert!(
        dom.contains("Pictures need signed image links ([links] in the config)"),
        "note missing:\n{dom}"
    );

    p.finish().await;
    assert!(server.stop().await);
}

/// Headless Chromium driven through the DevTools protocol over a pipe (fd 3 carries
/// our commands, fd 4 its answers, each message ending in a NUL byte).
struct Browser {
    child: std::process::Child,
    to: std::fs::File,
    from: std::io::BufReader<std::fs::File>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        use std::os::fd::FromRawFd;
        use std::os::unix::process::CommandExt;
        let pipe = || {
            let mut fds = [0; 2];
            // SAFETY: pipe2 writes two descriptors into the array it is given.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            fds
        };
        let (commands, answers) = (pipe(), pipe());
        let (child_in, child_out) = (commands[0], answers[1]);
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new("/usr/bin/chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let a = libc::fcntl(child_in, libc::F_DUPFD, 10);
                let b = libc::fcntl(child_out, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run chromium (apt-get install chromium): {e}"));
        // SAFETY: each descriptor is owned once, here; the child's ends are closed.
        let (to, from) = unsafe {
            libc::close(child_in);
            libc::close(child_out);
            (
                std::fs::File::from_raw_fd(commands[1]),
                std::fs::File::from_raw_fd(answers[0]),
            )
        };
        let mut b = Browser {
            child,
            to,
            from: std::io::BufReader::new(from),
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b
    }

    /// Sends one command (to the page once attached) and returns its `result`.
    fn call(&mut self, method: &str, params: Value) -> Value {
        use std::io::{BufRead, Write};
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        loop {
            let mut buf = Vec::new();
            let n = self.from.read_until(0, &mut buf).unwrap();
            assert!(n > 0, "chromium closed its DevTools pipe");
            buf.pop();
            let answer: Value = serde_json::from_slice(&buf).unwrap();
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Evaluates `js` in the page: its value, or `None` when it threw (a page still
    /// loading, an element not there yet).
    fn eval(&mut self, js: &str) -> Option<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        r.get("exceptionDetails")
            .is_none()
            .then(|| r["result"]["value"].clone())
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// Polls `js` until it is truthy (up to 30 s); its value. Panics with the page.
    fn wait(&mut self, js: &str, what: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = self.eval(js) {
                let truthy = !(v.is_null()
                    || v == json!(false)
                    || v == json!(0)
                    || v == json!("")
                    || v.as_array().is_some_and(Vec::is_empty));
                if truthy {
                    return v;
                }
            }
            if std::time::Instant::now() > deadline {
                let page = self
                    .eval("[...document.querySelectorAll('header, section')].map((e) => e.outerHTML).join('\\n')")
                    .unwrap_or_default();
                panic!("{what}: `{js}` never held; the page:\n{page}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a statement that must not throw.
    fn run(&mut self, js: &str) {
        assert!(self.eval(js).is_some(), "`{js}` threw");
    }

    /// Types `value` into the rule form's field `name`.
    fn fill(&mut self, name: &str, value: &str) {
        self.run(&format!(
            "document.querySelector('#rule-form [name={name}]').value = {}",
            json!(value)
        ));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JS string literal of `s`, for selectors.
fn js(s: &str) -> String {
    json!(s).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_history_of_an_ended_stream_and_rule_editing() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
idle_timeout_secs = 120
[snapshot]
workers = 2
[storage.default]
scheme = "fs"
root = "{}"
[links]
key = "a-links-key-of-at-least-32-bytes-for-the-dashboard"
[[rules]]
domain = "*"
app = "*"
interval_secs = 5
storage = "default"
overwrite_object = "{{AppName}}/{{StreamName}}.jpg"
sequence_object = "{{AppName}}/{{StreamName}}/{{Sequence}}.jpg"
"#,
        dir.path().join("snapshots").display()
    );
    let mut server = TestServer::start(dir, &text).await;
    let base = format!("http://{}", server.http);
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let r = client.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            (status, body)
        }
    };

    // A stream with three stored snapshots (0, 5 and 10 s), live while the page opens.
    let mut p = start_publish(server.rtmp, "live", "cam").await;
    send_range(&mut p, "baseline_640x360_gop1s.flv", 0, 12_000).await;
    let node = server.node().clone();
    assert!(
        wait_for(Duration::from_secs(20), || first_stream_stored(&node) >= 3).await,
        "three snapshots were not stored"
    );

    let url = format!("{base}/");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(1);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let browser = tokio::task::spawn_blocking(move || {
        let mut b = Browser::start();
        b.navigate(&url);
        let tile = js("[data-stream=\"127.0.0.1/live/cam\"] img[data-loaded=\"1\"]");
        let path = b.wait(
            &format!("document.querySelector({tile}).dataset.path"),
            "the live tile's thumbnail",
        );
        assert_eq!(
            path,
            "api/v1/streams/127.0.0.1/live/cam/latest.jpg?width=320"
        );
        // Clicking the live tile opens its history.
        b.run(&format!(
            "document.querySelector({}).click()",
            js("[data-stream=\"127.0.0.1/live/cam\"]")
        ));
        b.wait(
            "location.hash === '#/history/127.0.0.1/live/cam'
               && document.querySelectorAll('#history-list .shot').length === 3",
            "the live stream's history",
        );
        b.run("location.hash = '#/'");
        // The stream ends; the page lists it as recently ended...
        tx.blocking_send("end the publish").unwrap();
        done_rx.blocking_recv().unwrap();
        let item = js("#recent [data-stream=\"127.0.0.1/live/cam\"]");
        let recent = js("#recent [data-stream=\"127.0.0.1/live/cam\"] button");
        b.wait(
            &format!("!document.querySelector('.tile') && document.querySelector({recent})"),
            "the ended stream in the recent list",
        );
        // ...and so does a browser that never saw it live (a fresh profile): the list
        // comes from the node, with the stream's end time and stored count.
        let mut fresh = Browser::start();
        fresh.navigate(&url);
        let ended = fresh.wait(
            &format!(
                "(() => {{ const li = document.querySelector({item});
                   return li && [li.dataset.ended, li.textContent]; }})()"
            ),
            "the ended stream in a fresh browser's recent list",
        );
        b = fresh;
        b.run(&format!("document.querySelector({recent}).click()"));
        b.wait(
            "location.hash === '#/history/127.0.0.1/live/cam'",
            "the history view",
        );
        let shots = b.wait(
            "(() => { const s = [...document.querySelectorAll('#history-list .shot')];
               return s.length === 3 && s.every((x) => x.querySelector('img[data-loaded=\"1\"]'))
                 && s.map((x) => [x.dataset.key, x.querySelector('time').dateTime,
                                  x.querySelector('img').naturalWidth]); })()",
            "three stored snapshots with their pictures",
        );
        // The longest range, a day, is one query too.
        b.run(
            "const h = document.getElementById('history-hours'); h.value = '24';
             h.dispatchEvent(new Event('change'))",
        );
        b.wait(
            "document.querySelectorAll('#history-list .shot').length === 3
               && !document.getElementById('history-note').textContent",
            "a day of history",
        );

        // Rules: add a stream rule in the page.
        b.run("location.hash = '#/rules'");
        b.wait(
            &format!(
                "document.querySelector({})",
                js("tr[data-rule=\"*/*\"][data-source=\"config\"]")
            ),
            "the config rule listed",
        );
        b.run("document.getElementById('rule-add').click()");
        b.fill("domain", "*");
        b.fill("app", "studio");
        b.fill("stream", "cam7");
        b.fill("interval_secs", "10");
        b.fill("overwrite_object", "{AppName}/{StreamName}.jpg");
        b.run("document.getElementById('rule-save').click()");
        let row = js("tr[data-rule=\"*/studio/cam7\"]");
        b.wait(
            &format!("document.querySelector({row})"),
            "the added rule listed",
        );
        tx.blocking_send("check the added rule").unwrap();
        done_rx.blocking_recv().unwrap();

        // Edit it: the scope is fixed, the interval changes.
        b.run(&format!(
            "document.querySelector({row} + ' button.edit').click()"
        ));
        let read_only = b.wait(
            "document.getElementById('rule-form').dataset.mode === 'edit'
               && ['domain', 'app', 'stream'].map((f) => document.querySelector('#rule-form [name=' + f + ']').readOnly)",
            "the edit form",
        );
        assert_eq!(read_only, json!([true, true, true]));
        b.fill("interval_secs", "20");
        b.run("document.getElementById('rule-save').click()");
        b.wait(
            &format!("document.querySelector({row} + ' td:nth-child(4)').textContent === '20 s'"),
            "the edited rule listed",
        );
        tx.blocking_send("check the edited rule").unwrap();
        done_rx.blocking_recv().unwrap();

        // A bad value: the API's message next to its field, the rule unchanged.
        b.run(&format!(
            "document.querySelector({row} + ' button.edit').click()"
        ));
        b.fill("interval_secs", "4");
        b.run("document.getElementById('rule-save').click()");
        let next_to = b.wait(
            "document.querySelector('#rule-form [name=interval_secs]').parentElement.querySelector('.error').textContent",
            "the error next to interval_secs",
        );
        let others = b
            .eval("[...document.querySelectorAll('#rule-form .error')].filter((e) => e.textContent).length")
            .unwrap();
        // A field the form has no input for goes in "other fields", its error beside it.
        b.fill("interval_secs", "20");
        b.fill("extra", "{\"review_every\": 3}");
        b.run("document.getElementById('rule-save').click()");
        let extra_error = b.wait(
            "document.querySelector('#rule-form [name=extra]').parentElement.querySelector('.error').textContent",
            "the error next to the other fields",
        );
        b.run("document.getElementById('rule-cancel').click()");
        // An added rule with a bad stream name: the error is next to the stream field.
        b.run("document.getElementById('rule-add').click()");
        b.fill("domain", "*");
        b.fill("app", "studio");
        b.fill("stream", "a/b");
        b.fill("interval_secs", "10");
        b.fill("overwrite_object", "{AppName}/{StreamName}.jpg");
        b.run("document.getElementById('rule-save').click()");
        let stream_error = b.wait(
            "document.querySelector('#rule-form [name=stream]').parentElement.querySelector('.error').textContent",
            "the error next to stream",
        );
        b.run("document.getElementById('rule-cancel').click()");

        // Delete (the button asks once more).
        b.run(&format!(
            "document.querySelector({row} + ' button.delete').click()"
        ));
        b.run(&format!(
            "document.querySelector({row} + ' button.delete').click()"
        ));
        b.wait(
            &format!("!document.querySelector({row})"),
            "the rule gone from the list",
        );
        tx.blocking_send("check the deletion").unwrap();
        (shots, next_to, others, stream_error, extra_error, ended)
    });

    assert_eq!(rx.recv().await, Some("end the publish"));
    p.finish().await;
    assert!(
        wait_for(Duration::from_secs(10), || node.registry.is_empty()).await,
        "the stream did not end"
    );
    done_tx.send(()).await.unwrap();

    let rule_path = "/api/v1/snapshot-configs/*/studio/cam7".to_string();
    assert_eq!(rx.recv().await, Some("check the added rule"));
    let (status, rule) = get(rule_path.clone()).await;
    assert_eq!(status, 200, "{rule}");
    assert_eq!(
        (&rule["stream"], &rule["interval_secs"], &rule["source"]),
        (&json!("cam7"), &json!(10), &json!("api"))
    );
    done_tx.send(()).await.unwrap();
    assert_eq!(rx.recv().await, Some("check the edited rule"));
    assert_eq!(get(rule_path.clone()).await.1["interval_secs"], 20);
    done_tx.send(()).await.unwrap();
    assert_eq!(rx.recv().await, Some("check the deletion"));
    let (shots, next_to, others, stream_error, extra_error, ended) = browser.await.unwrap();
    assert_eq!(get(rule_path.clone()).await.0, 404);

    // The fresh browser's recent list shows what the node's ended list has.
    let (status, list) = get("/api/v1/streams/ended".to_string()).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"][0]["stream"], "cam", "{list}");
    assert_eq!(ended[0], list["items"][0]["end_time"], "{ended} {list}");
    let text = ended[1].as_str().unwrap();
    assert!(
        text.starts_with("127.0.0.1/live/cam")
            && text.contains("ended ")
            && text.contains(" 3 snapshots"),
        "{text}"
    );

    // The history lists what the snapshot query has, newest first, with its times.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (status, q) = get(format!(
        "/api/v1/snapshots?domain=127.0.0.1&app=live&stream=cam&start_time={}&end_time={}&order=desc",
        livesnap::clock::rfc3339(now - 3600),
        livesnap::clock::rfc3339(now + 60)
    ))
    .await;
    assert_eq!(status, 200, "{q}");
    let expected: Vec<Value> = q["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| json!([i["key"], i["create_time"], 640]))
        .collect();
    assert_eq!(
        shots,
        json!(expected),
        "the history view against the snapshot query"
    );
    assert_eq!(shots[0][0], "live/cam/3.jpg");
    let next_to = next_to.as_str().unwrap();
    assert!(next_to.contains("5..=3600"), "{next_to}");
    assert_eq!(others, 1, "one error shown, next to its field");
    assert!(
        stream_error.as_str().unwrap().contains("a/b"),
        "{stream_error}"
    );
    let extra_error = extra_error.as_str().unwrap();
    assert!(
        extra_error.starts_with("review_every: ") && extra_error.contains("needs review_url"),
        "{extra_error}"
    );
    assert!(server.stop().await);
}
