//! The dashboard page at `/` in a real browser: Debian's headless Chromium loads it
//! from a node with a live stream; the page must show a tile for the stream whose
//! image (the stream's latest.jpg) has loaded.
//!
//! Needs `/usr/bin/chromium` (`apt-get install chromium`, as `.ci/setup` does); without
//! it the test fails, it never skips.

mod common;

use std::time::Duration;

use common::external::*;
use common::*;

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
    assert!(img.contains("data-natural-width=\"640\""), "{img}");
    assert!(img.contains("data-natural-height=\"360\""), "{img}");
    assert!(img.contains("src=\"blob:"), "{img}");
    assert!(dom.contains("1 live stream"), "status line missing:\n{dom}");
    assert!(dom.contains("every 5 s"), "rule missing:\n{dom}");
    assert!(dom.contains("taken 1"), "counters missing:\n{dom}");

    p.finish().await;
    assert!(server.stop().await);
}
