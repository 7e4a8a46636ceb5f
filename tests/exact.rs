//! Exact-time snapshots (a rule's `exact = true`): a real RTMP publish of an 8 s-GOP
//! recording with a 5 s rule gives the frames at 0, 5, 10, 15 and 20 s — decoded forward
//! from the keyframe before each, in presentation order — which ffmpeg's decode of the
//! same frames confirms (PSNR); with B-frames too; and over the frame cap the keyframe
//! is taken and the fallback counted. Real fixtures, JPEGs in a real folder.

mod common;

use std::process::Command;
use std::time::Duration;

use common::external::ffmpeg_rgb;
use common::*;
use livesnap::testing::pictures::psnr;

/// A node with one exact rule for every app (5 s, sequence and overwrite objects) and
/// `snapshot` keys in its `[snapshot]` table.
async fn start(snapshot: &str) -> TestServer {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
handshake_timeout_secs = 5
idle_timeout_secs = 5
[snapshot]
workers = 2
{snapshot}
[storage.default]
scheme = "fs"
root = "{}"
[[rules]]
domain = "*"
app = "*"
interval_secs = 5
storage = "default"
exact = true
overwrite_object = "{{AppName}}/{{StreamName}}.jpg"
sequence_object = "{{AppName}}/{{StreamName}}/{{Sequence}}.jpg"
"#,
        root.display()
    );
    TestServer::start(dir, &text).await
}

/// ffmpeg's decode of the frames numbered `frames` (presentation order), as RGB24.
fn reference_frames(file: &str, frames: &[usize], width: usize, height: usize) -> Vec<Vec<u8>> {
    // ffmpeg puts the selected frames out once each, in order.
    let mut unique = frames.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let select = unique
        .iter()
        .map(|n| format!("eq(n\\,{n})"))
        .collect::<Vec<_>>()
        .join("+");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(fixture(file))
        .args(["-vf", &format!("select={select}"), "-vsync", "0"])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = width * height * 3;
    assert_eq!(out.stdout.len(), size * unique.len());
    let pics: Vec<&[u8]> = out.stdout.chunks(size).collect();
    frames
        .iter()
        .map(|f| pics[unique.iter().position(|u| u == f).unwrap()].to_vec())
        .collect()
}

/// Publishes `file` at full speed as live/`stream` and waits until `n` sequence
/// snapshots are stored; returns the folder's JPEGs decoded by ffmpeg, in order.
async fn publish_and_collect(
    server: &TestServer,
    file: &str,
    stream: &str,
    n: u64,
) -> Vec<Vec<u8>> {
    publish_fixture(server, "live", stream, file, 0.0).await;
    let root = server.root();
    let expected = snapshot_keys(stream, n);
    let stored = wait_for(Duration::from_secs(60), || list_files(&root) == expected).await;
    assert!(
        stored,
        "stored {:?}, expected {expected:?}",
        list_files(&root)
    );
    (1..=n)
        .map(|i| ffmpeg_rgb(&root.join(format!("live/{stream}/{i}.jpg"))))
        .collect()
}

/// Every snapshot is the frame it stands for (≥ 30 dB against ffmpeg's decode of it) and
/// closer to it than to the frames just before and after it: the right frame, not one off.
fn check(file: &str, got: &[Vec<u8>], frames: &[usize]) {
    check_sized(file, got, frames, (640, 360));
}

fn check_sized(file: &str, got: &[Vec<u8>], frames: &[usize], (w, h): (usize, usize)) {
    let refs = reference_frames(file, frames, w, h);
    let own: Vec<f64> = got.iter().zip(&refs).map(|(g, r)| psnr(g, r)).collect();
    for (i, p) in own.iter().enumerate() {
        assert!(
            *p >= 30.0,
            "snapshot {} (frame {}): PSNR {p:.1} dB",
            i + 1,
            frames[i]
        );
    }
    for offset in [-1isize, 1] {
        let picked: Vec<usize> = (0..got.len())
            .filter(|&i| frames[i] as isize + offset >= 0)
            .collect();
        let others: Vec<usize> = picked
            .iter()
            .map(|&i| (frames[i] as isize + offset) as usize)
            .collect();
        let near = reference_frames(file, &others, w, h);
        for ((&i, other), reference) in picked.iter().zip(&others).zip(&near) {
            let q = psnr(&got[i], reference);
            assert!(
                q < own[i],
                "snapshot {} (frame {}) is closer to frame {other} ({q:.1} vs {:.1} dB)",
                i + 1,
                frames[i],
                own[i]
            );
        }
    }
}

fn metrics(server: &TestServer) -> String {
    server.node().metrics.render()
}

#[tokio::test]
async fn an_8s_gop_with_a_5s_rule_gives_the_frames_at_0_5_10_15_20s() {
    let mut server = start("").await;
    // 25 fps, IDRs at 0, 8, 16 and 24 s: due at 0, 5, 10, 15, 20 s = frames 0, 125 … 500.
    let file = "long_gop_640x360.flv";
    let got = publish_and_collect(&server, file, "cam", 5).await;
    check(file, &got, &[0, 125, 250, 375, 500]);
    let text = metrics(&server);
    assert!(!text.contains("livesnap_exact_fallbacks_total{"), "{text}");
    // Frames decoded forward (keyframe included): 126 + 51 + 176 + 101; the snapshot
    // at 0 s is a keyframe's, rendered as without exact mode.
    assert!(
        text.contains("livesnap_exact_frames_decoded_total 454"),
        "{text}"
    );
    let node = server.node().clone();
    assert!(server.stop().await);
    // The GOP buffer is let go with the publish.
    let text = node.metrics.render();
    assert!(text.contains("livesnap_exact_gop_bytes 0"), "{text}");
}

#[tokio::test]
async fn b_frames_are_decoded_in_presentation_order() {
    let mut server = start("").await;
    // Main profile, 2 B-frames, IDRs at 0, 8 and 16 s (presenting at +80 ms), 21 s.
    let file = "long_gop_bframes_640x360.flv";
    let got = publish_and_collect(&server, file, "bcam", 5).await;
    check(file, &got, &[0, 125, 250, 375, 500]);
    let text = metrics(&server);
    assert!(!text.contains("livesnap_exact_fallbacks_total{"), "{text}");
    assert!(server.stop().await);
}

#[tokio::test]
async fn high_profile_b_frames_with_a_gop_shorter_than_the_interval() {
    let mut server = start("").await;
    // High profile, 2 B-frames, 30 fps, IDRs every 2 s: due 5 s is 1 s into its GOP.
    let file = "high_1280x720_bframes_aac.flv";
    let got = publish_and_collect(&server, file, "hcam", 4).await;
    check_sized(file, &got, &[0, 150, 300, 450], (1280, 720));
    let text = metrics(&server);
    assert!(!text.contains("livesnap_exact_fallbacks_total{"), "{text}");
    assert!(server.stop().await);
}

#[tokio::test]
async fn over_the_frame_cap_the_keyframe_is_taken_and_counted() {
    // A queue of one due snapshot: the full-speed publisher is paced, and loses none.
    let mut server = start("exact_max_frames = 100\nqueue_keyframes = 1").await;
    let file = "long_gop_640x360.flv";
    let got = publish_and_collect(&server, file, "capped", 5).await;
    // Due 5 s (frame 125 of its GOP), 15 s (175) and 20 s (100: the 101st to decode)
    // are past the cap: the keyframes at 0, 8 and 16 s instead; 10 s (50) is exact.
    check(file, &got, &[0, 0, 250, 200, 400]);
    let text = metrics(&server);
    assert!(
        text.contains("livesnap_exact_fallbacks_total{reason=\"frame_cap\"} 3"),
        "{text}"
    );
    assert!(server.stop().await);
}

#[tokio::test]
async fn the_rule_api_takes_and_shows_exact() {
    let server = start("").await;
    let client = reqwest::Client::new();
    let base = format!("http://{}/api/v1/snapshot-configs", server.http);
    let call = |method: reqwest::Method, url: String, body: serde_json::Value| {
        let rb = client
            .request(method, url)
            .header("content-type", "application/json")
            .body(body.to_string());
        async move {
            let resp = rb.send().await.unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.unwrap();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            )
        }
    };
    let body = serde_json::json!({
        "domain": "*", "app": "cams", "interval_secs": 5, "exact": true,
        "overwrite_object": "{StreamName}.jpg",
    });
    let (status, created) = call(reqwest::Method::POST, base.clone(), body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["exact"], true, "{created}");
    let one = format!("{base}/*/cams");
    let (status, patched) = call(
        reqwest::Method::PATCH,
        one.clone(),
        serde_json::json!({ "exact": false }),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched.get("exact"), None, "false is left out: {patched}");
    let (status, refused) = call(
        reqwest::Method::PATCH,
        one,
        serde_json::json!({ "exact": "yes" }),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.to_string().contains("exact"), "{refused}");
}
