//! End-to-end: real RTMP over loopback into a real node, real H.264 fixtures, JPEGs
//! written through opendal to a real folder, checked by decoding them.

mod common;

use std::time::Duration;

use common::external::*;
use common::*;
use livesnap::testing::pictures::psnr;

/// Publishes `file` as live/`stream` and checks the sequence objects (`1.jpg` …), the
/// overwrite object (equal to the last), the dimensions, and the picture against
/// ffmpeg's decode of the keyframe the schedule picks.
async fn check_fixture(
    file: &str,
    stream: &str,
    dims: &[(usize, usize)],
    keyframe_index: &[usize],
) {
    let mut server = start_server(DEFAULT_RULES).await;
    publish_fixture(&server, "live", stream, file, 4.0).await;
    assert!(server.stop().await, "shutdown finished in time");
    let root = server.root();
    assert_eq!(list_files(&root), snapshot_keys(stream, dims.len() as u64));
    let last = std::fs::read(root.join(format!("live/{stream}/{}.jpg", dims.len()))).unwrap();
    assert_eq!(
        std::fs::read(root.join(format!("live/{stream}.jpg"))).unwrap(),
        last
    );
    for (i, &(w, h)) in dims.iter().enumerate() {
        let path = root.join(format!("live/{stream}/{}.jpg", i + 1));
        let (jw, jh, _) = decode_jpeg(&std::fs::read(&path).unwrap());
        assert_eq!((jw, jh), (w, h), "snapshot {} dimensions", i + 1);
        if dims.iter().all(|d| *d == dims[0]) {
            let refs = reference_keyframes(file, w, h);
            let p = psnr(&ffmpeg_rgb(&path), &refs[keyframe_index[i]]);
            assert!(p >= 30.0, "snapshot {} PSNR {p:.1} dB < 30", i + 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_360p_gop_1s() {
    // Keyframes every second, 12 s: due at 0, 5 and 10 s.
    check_fixture(
        "baseline_640x360_gop1s.flv",
        "base",
        &[(640, 360); 3],
        &[0, 5, 10],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_720p_bframes_with_audio() {
    // Keyframes every 2 s, 20 s: due at 0, 6, 10 and 16 s.
    check_fixture(
        "high_1280x720_bframes_aac.flv",
        "high720",
        &[(1280, 720); 4],
        &[0, 3, 5, 8],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_1080p() {
    // Keyframes every 2 s, 12 s: due at 0, 6 and 10 s.
    check_fixture(
        "high_1920x1080_gop2s.flv",
        "hd",
        &[(1920, 1080); 3],
        &[0, 3, 5],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gop_longer_than_interval() {
    // Keyframes at 0, 8, 16, 24 s: every one is due (missed due times are skipped).
    check_fixture(
        "long_gop_640x360.flv",
        "longgop",
        &[(640, 360); 4],
        &[0, 1, 2, 3],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolution_change_mid_stream() {
    // 640x360 for 6 s, then 1280x720: due at 0, 5 (old size) and 10 s (new size).
    check_fixture(
        "resolution_change.flv",
        "switch",
        &[(640, 360), (640, 360), (1280, 720)],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bt709_colour_bars_come_out_right() {
    let mut server = start_server(DEFAULT_RULES).await;
    publish_fixture(&server, "live", "bars", "bt709_bars_1280x720.flv", 4.0).await;
    server.stop().await;
    let jpeg = std::fs::read(server.root().join("live/bars/1.jpg")).unwrap();
    let (w, h, rgb) = decode_jpeg(&jpeg);
    assert_eq!((w, h), (1280, 720));
    // Bar centres on row 100 and the RGB that BT.709 limited range gives.
    let bars: [(usize, [i32; 3]); 8] = [
        (60, [102, 102, 102]),
        (210, [191, 191, 191]),
        (360, [191, 191, 0]),
        (510, [0, 191, 191]),
        (630, [0, 191, 0]),
        (780, [191, 0, 191]),
        (930, [191, 0, 0]),
        (1050, [0, 0, 191]),
    ];
    for (x, want) in bars {
        // Mean over a 16×16 block to average out compression noise.
        let mut sum = [0i32; 3];
        for y in 92..108 {
            for xx in x - 8..x + 8 {
                for c in 0..3 {
                    sum[c] += i32::from(rgb[(y * w + xx) * 3 + c]);
                }
            }
        }
        let got = sum.map(|s| s / 256);
        for c in 0..3 {
            assert!(
                (got[c] - want[c]).abs() <= 8,
                "bar at x={x}: got {got:?}, want {want:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_cli_publish() {
    let mut server = start_server(DEFAULT_RULES).await;
    let status = ffmpeg_publish("baseline_640x360_gop1s.flv", &server.url("live", "ffcam"))
        .status()
        .await
        .expect("ffmpeg runs");
    assert!(status.success());
    server.stop().await;
    assert_eq!(
        list_files(&server.root()),
        [
            "live/ffcam.jpg",
            "live/ffcam/1.jpg",
            "live/ffcam/2.jpg",
            "live/ffcam/3.jpg"
        ]
    );
    for i in 1..=3 {
        let (w, h, _) =
            decode_jpeg(&std::fs::read(server.root().join(format!("live/ffcam/{i}.jpg"))).unwrap());
        assert_eq!((w, h), (640, 360));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_rtmp2sink_publish() {
    let mut server = start_server(DEFAULT_RULES).await;
    // A live source encoded by x264 in real time, 11 s, a keyframe every second.
    let pipeline = format!(
        "videotestsrc is-live=true num-buffers=275 ! video/x-raw,format=I420,width=320,height=240,framerate=25/1 \
         ! x264enc key-int-max=25 tune=zerolatency speed-preset=ultrafast ! h264parse \
         ! flvmux streamable=true ! rtmp2sink location={}",
        server.url("live", "gst")
    );
    let status = tokio::process::Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace())
        .status()
        .await
        .expect("gst-launch-1.0 runs");
    assert!(status.success());
    server.stop().await;
    let files = list_files(&server.root());
    assert_eq!(
        files,
        [
            "live/gst.jpg",
            "live/gst/1.jpg",
            "live/gst/2.jpg",
            "live/gst/3.jpg"
        ]
    );
    let (w, h, _) = decode_jpeg(&std::fs::read(server.root().join("live/gst/3.jpg")).unwrap());
    assert_eq!((w, h), (320, 240));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_continues_sequence_without_replacing() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start_server_in(dir, DEFAULT_RULES).await;
    publish_fixture(&first, "live", "cam", "baseline_640x360_gop1s.flv", 4.0).await;
    first.stop().await;
    let root = first.root();
    let before: Vec<(String, Vec<u8>)> = list_files(&root)
        .into_iter()
        .filter(|f| f.starts_with("live/cam/"))
        .map(|f| (f.clone(), std::fs::read(root.join(&f)).unwrap()))
        .collect();
    assert_eq!(before.len(), 3);

    // A new node on the same folder continues at 4.
    let mut second = start_server_in(first.dir, DEFAULT_RULES).await;
    publish_fixture(&second, "live", "cam", "baseline_640x360_gop1s.flv", 4.0).await;
    second.stop().await;
    assert_eq!(list_files(&second.root()), snapshot_keys("cam", 6));
    for (f, bytes) in before {
        assert_eq!(
            std::fs::read(second.root().join(&f)).unwrap(),
            bytes,
            "{f} was replaced"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_rule_means_ingest_without_snapshots() {
    let rules = r#"
[[rules]]
domain = "*"
app = "snap"
interval_secs = 5
storage = "default"
overwrite_object = "{AppName}/{StreamName}.jpg"
"#;
    let mut server = start_server(rules).await;
    publish_fixture(&server, "live", "plain", "baseline_640x360_gop1s.flv", 0.0).await;
    publish_fixture(&server, "snap", "shot", "baseline_640x360_gop1s.flv", 4.0).await;
    server.stop().await;
    assert_eq!(list_files(&server.root()), ["snap/shot.jpg"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_publish_is_rejected_and_first_continues() {
    let mut server = start_server(DEFAULT_RULES).await;
    let tc = format!("rtmp://{}/live", server.rtmp);
    let mut first = start_publish(server.rtmp, "live", "dup").await;
    let (_, second) = Publisher::connect(server.rtmp, &tc, "live", "dup?other=1").await;
    match second {
        PublishOutcome::Refused(why) => assert!(
            why.contains("NetStream.Publish.BadName"),
            "no BadName status"
        ),
        PublishOutcome::Accepted => panic!("second publisher accepted"),
    }
    let metrics = server.node().metrics.clone();
    assert!(
        wait_for(Duration::from_secs(2), || metrics
            .rejected_count("duplicate")
            == 1)
        .await,
        "the refusal is counted as a duplicate"
    );
    assert_eq!(metrics.rejected_count("bad_name"), 0);
    first
        .replay(&fixture("baseline_640x360_gop1s.flv"), 4.0, 0)
        .await
        .unwrap();
    first.finish().await;
    server.stop().await;
    assert_eq!(list_files(&server.root()).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_rejected() {
    let mut server = start_server(DEFAULT_RULES).await;
    let tc = format!("rtmp://{}/live", server.rtmp);
    let long = "a".repeat(300);
    for (app, stream) in [
        ("live", "../etc"),
        ("live", "%2e%2e"),
        ("live", "a\0b"),
        ("live", long.as_str()),
        ("live", ".hidden"),
        ("li ve", "cam"),
        ("live/../x", "cam"),
    ] {
        let (_, outcome) = Publisher::connect(server.rtmp, &tc, app, stream).await;
        match outcome {
            PublishOutcome::Refused(why) => assert!(
                why.contains("NetStream.Publish.BadName"),
                "{app:?}/{stream:?}: no BadName status"
            ),
            PublishOutcome::Accepted => panic!("{app:?}/{stream:?} accepted"),
        }
    }
    assert!(server.node().registry.is_empty());
    server.stop().await;
    assert!(list_files(&server.root()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_and_tcurl_domain_reach_the_key() {
    let rules = r#"
[[rules]]
domain = "cams.example.com"
app = "*"
interval_secs = 5
storage = "default"
overwrite_object = "{Domain}/{AppName}/{StreamName}.jpg"
"#;
    let mut server = start_server(rules).await;
    // Domain from the vhost parameter; the tcUrl host (an IP) does not match the rule.
    let mut p = start_publish(server.rtmp, "live", "cam9?vhost=Cams.Example.com").await;
    p.replay(&fixture("baseline_640x360_gop1s.flv"), 0.0, 0)
        .await
        .unwrap();
    p.finish().await;
    // Domain from the tcUrl host.
    let tc = "rtmp://CAMS.example.com:1935/live".to_string();
    let (mut p, outcome) = Publisher::connect(server.rtmp, &tc, "live", "cam10").await;
    assert_eq!(outcome, PublishOutcome::Accepted);
    p.replay(&fixture("baseline_640x360_gop1s.flv"), 0.0, 0)
        .await
        .unwrap();
    p.finish().await;
    assert!(
        wait_for(Duration::from_secs(10), || list_files(&server.root()).len()
            == 2)
        .await,
        "{:?}",
        list_files(&server.root())
    );
    server.stop().await;
    assert_eq!(
        list_files(&server.root()),
        [
            "cams.example.com/live/cam10.jpg",
            "cams.example.com/live/cam9.jpg"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_encoder_frees_the_name_at_once() {
    let mut server = start_server(DEFAULT_RULES).await;
    let mut child = ffmpeg_publish("baseline_640x360_gop1s.flv", &server.url("live", "killed"))
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg runs");
    let node = server.node().clone();
    assert!(
        wait_for(Duration::from_secs(10), || node.registry.len() == 1).await,
        "ffmpeg never published"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().await.unwrap(); // SIGKILL: no FCUnpublish, no deleteStream
    assert!(
        wait_for(Duration::from_secs(3), || node.registry.is_empty()).await,
        "the killed publisher still holds its name"
    );
    // The encoder comes back under the same name and is accepted.
    publish_fixture(&server, "live", "killed", "baseline_640x360_gop1s.flv", 4.0).await;
    server.stop().await;
    let files = list_files(&server.root());
    assert!(files.contains(&"live/killed.jpg".to_string()), "{files:?}");
    assert!(files.len() >= 4, "{files:?}");
}
