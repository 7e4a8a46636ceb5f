//! Outputs per rule, end to end: a real RTMP publish of a 1080p fixture into a node whose
//! rule has a full-size JPEG plus a 320-px WebP, a padded and a cropped JPEG and an
//! oversized box; every stored file is decoded by ffmpeg and checked for its size, its
//! shared `{Sequence}` number and (the thumbnail) its likeness to ffmpeg's own scale of
//! the keyframe. Then validation, through the config and through the rule API.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::external::*;
use common::*;
use livesnap::testing::pictures::psnr;
use serde_json::{json, Value};

const FILE: &str = "high_1920x1080_gop2s.flv";

const RULES: &str = r#"
[[rules]]
domain = "*"
app = "live"
interval_secs = 5
storage = "default"
overwrite_object = "{AppName}/{StreamName}.jpg"
sequence_object = "{AppName}/{StreamName}/{Sequence}.jpg"
[[rules.outputs]]
width = 320
format = "webp"
quality = 80
sequence_object = "{AppName}/{StreamName}/thumb/{Sequence}.webp"
overwrite_object = "{AppName}/{StreamName}/thumb.webp"
[[rules.outputs]]
width = 320
height = 320
fit = "pad"
sequence_object = "{AppName}/{StreamName}/pad/{Sequence}.jpg"
[[rules.outputs]]
width = 200
height = 200
fit = "crop"
quality = 90
sequence_object = "{AppName}/{StreamName}/crop/{Sequence}.jpg"
[[rules.outputs]]
height = 4000
sequence_object = "{AppName}/{StreamName}/big/{Sequence}.jpg"
"#;

/// Width and height of a stored picture, as ffprobe reads it.
fn probe(path: &Path) -> (usize, usize) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=width,height", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.trim().split(',').map(|v| v.parse::<usize>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// ffmpeg's decode of the fixture's keyframes scaled to `w`×`h` by its own scaler, in
/// Y'CbCr (as we do), then converted to RGB like [`ffmpeg_rgb`] converts our pictures.
/// (Scaling straight into rgb24 makes swscale take another chroma path: ≈ 27 dB from
/// its own two-step result.)
fn scaled_reference(file: &str, w: usize, h: usize) -> Vec<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-skip_frame", "nokey", "-i"])
        .arg(fixture(file))
        .args([
            "-vsync",
            "0",
            "-vf",
            &format!("scale={w}:{h},format=yuv420p"),
        ])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.chunks(w * h * 3).map(<[u8]>::to_vec).collect()
}

/// Mean of the RGB samples of rows `rows` of a `w`-wide RGB picture.
fn mean_of_rows(rgb: &[u8], w: usize, rows: std::ops::Range<usize>) -> f64 {
    let part = &rgb[rows.start * w * 3..rows.end * w * 3];
    part.iter().map(|&v| f64::from(v)).sum::<f64>() / part.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_output_is_stored_at_its_size_with_one_sequence_number() {
    let mut server = start_server(RULES).await;
    publish_fixture(&server, "live", "hd", FILE, 4.0).await;
    let root = server.root();
    // Due at 0, 6 and 10 s: keyframes 0, 3 and 5. Each snapshot: 5 sequence objects.
    let stored = wait_for(Duration::from_secs(20), || {
        list_files(&root)
            .iter()
            .filter(|k| k.ends_with("3.jpg"))
            .count()
            == 4
    })
    .await;
    assert!(stored, "{:?}", list_files(&root));

    // The snapshot query answers each snapshot once, with all its outputs.
    // Sequence-only keys take their time from the files: query around now.
    let api = reqwest::Client::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let url = format!(
        "http://{}/api/v1/snapshots?domain=default&app=live&stream=hd&start_time={}&end_time={}&limit=100",
        server.http,
        livesnap::clock::rfc3339(now - 3600),
        livesnap::clock::rfc3339(now + 60)
    );
    let bytes = api.get(&url).send().await.unwrap().bytes().await.unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let items = v["items"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(items.len(), 3, "{v}");
    for (i, item) in items.iter().enumerate() {
        let n = i + 1;
        assert_eq!(item["sequence"], n, "{item}");
        assert_eq!(item["key"], format!("live/hd/{n}.jpg"), "{item}");
        let outputs: Vec<(String, String, u64, u64)> = item["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["key"].as_str().unwrap().to_string(),
                    o["format"].as_str().unwrap().to_string(),
                    o["width"].as_u64().unwrap(),
                    o["height"].as_u64().unwrap(),
                )
            })
            .collect();
        let want = |k: &str, f: &str, w, h| (format!("live/hd/{k}"), f.to_string(), w, h);
        assert_eq!(
            outputs,
            [
                want(&format!("{n}.jpg"), "jpeg", 1920, 1080),
                want(&format!("thumb/{n}.webp"), "webp", 320, 180),
                want(&format!("pad/{n}.jpg"), "jpeg", 320, 320),
                want(&format!("crop/{n}.jpg"), "jpeg", 200, 200),
                want(&format!("big/{n}.jpg"), "jpeg", 1920, 1080),
            ],
            "{item}"
        );
    }
    assert!(server.stop().await);

    let mut want: Vec<String> = (1..=3)
        .flat_map(|n| {
            [
                format!("live/hd/{n}.jpg"),
                format!("live/hd/thumb/{n}.webp"),
                format!("live/hd/pad/{n}.jpg"),
                format!("live/hd/crop/{n}.jpg"),
                format!("live/hd/big/{n}.jpg"),
            ]
        })
        .chain(["live/hd.jpg".into(), "live/hd/thumb.webp".into()])
        .collect();
    want.sort();
    assert_eq!(list_files(&root), want);

    let refs = scaled_reference(FILE, 320, 180);
    for (n, keyframe) in [(1, 0), (2, 3), (3, 5)] {
        let at = |k: &str| root.join(format!("live/hd/{k}"));
        // Aspect ratio kept; a box larger than the picture is not an upscale.
        assert_eq!(probe(&at(&format!("{n}.jpg"))), (1920, 1080));
        assert_eq!(probe(&at(&format!("thumb/{n}.webp"))), (320, 180));
        assert_eq!(probe(&at(&format!("pad/{n}.jpg"))), (320, 320));
        assert_eq!(probe(&at(&format!("crop/{n}.jpg"))), (200, 200));
        assert_eq!(probe(&at(&format!("big/{n}.jpg"))), (1920, 1080));
        // The thumbnail looks like ffmpeg's own scale of the same keyframe.
        let thumb = ffmpeg_rgb(&at(&format!("thumb/{n}.webp")));
        let db = psnr(&thumb, &refs[keyframe]);
        assert!(db >= 30.0, "thumbnail {n}: PSNR {db:.1} dB < 30");
        // Letterboxed: black bars above and below (70 rows each), the picture between.
        let pad = ffmpeg_rgb(&at(&format!("pad/{n}.jpg")));
        assert!(
            mean_of_rows(&pad, 320, 0..64) < 4.0,
            "pad {n}: top bar not black"
        );
        assert!(
            mean_of_rows(&pad, 320, 256..320) < 4.0,
            "pad {n}: bottom bar not black"
        );
        let inner: Vec<u8> = pad[70 * 320 * 3..250 * 320 * 3].to_vec();
        let db = psnr(&inner, &refs[keyframe]);
        assert!(db >= 25.0, "pad {n}: picture PSNR {db:.1} dB");
    }
    // The overwrite objects are the last snapshot's.
    assert_eq!(
        std::fs::read(root.join("live/hd/thumb.webp")).unwrap(),
        std::fs::read(root.join("live/hd/thumb/3.webp")).unwrap()
    );
}

fn config_error(rules: &str) -> String {
    let text = format!("{rules}\n[storage.default]\nscheme = \"memory\"\n");
    match livesnap::config::Config::parse(&text) {
        Ok(c) => c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
        Err(e) => e.to_string(),
    }
}

const RULE_HEAD: &str =
    "[[rules]]\ndomain = \"*\"\napp = \"live\"\ninterval_secs = 5\nstorage = \"default\"\n";

#[test]
fn bad_outputs_in_the_config_are_refused_by_field() {
    let thumb =
        "[[rules.outputs]]\nwidth = 320\nsequence_object = \"{StreamName}/t/{Sequence}.jpg\"\n";
    // Outputs alone are enough (output 0's templates may be left out).
    assert_eq!(config_error(&format!("{RULE_HEAD}{thumb}")), "");
    let cases = [
        ("[[rules.outputs]]\nwidth = 320\nfit = \"pad\"\nsequence_object = \"{StreamName}/p/{Sequence}.jpg\"\n", "rules[0].outputs[1].fit"),
        ("[[rules.outputs]]\nwidth = 320\nquality = 101\nsequence_object = \"{StreamName}/q/{Sequence}.jpg\"\n", "rules[0].outputs[1].quality"),
        ("[[rules.outputs]]\nwidth = 320\nformat = \"webp\"\nsequence_object = \"{StreamName}/w/{Sequence}.jpg\"\n", "rules[0].outputs[1].sequence_object"),
        ("[[rules.outputs]]\nheight = 0\nsequence_object = \"{StreamName}/h/{Sequence}.jpg\"\n", "rules[0].outputs[1].height"),
        // Two outputs that render one key.
        ("[[rules.outputs]]\nwidth = 160\nsequence_object = \"{StreamName}/t/{Sequence}.jpg\"\n", "rules[0].outputs[1].sequence_object"),
        // A template that does not tell its stream.
        ("[[rules.outputs]]\nwidth = 160\noverwrite_object = \"small.jpg\"\n", "rules[0].outputs[1].overwrite_object"),
    ];
    for (second, key) in cases {
        let err = config_error(&format!("{RULE_HEAD}{thumb}{second}"));
        assert!(err.starts_with(key), "{second}: {err}");
    }
    // An unknown fit is refused by the parser, naming the value.
    let err = config_error(&format!("{RULE_HEAD}[[rules.outputs]]\nwidth = 1\nfit = \"stretch\"\nsequence_object = \"{{StreamName}}/{{Sequence}}.jpg\"\n"));
    assert!(err.contains("stretch"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_outputs_through_the_api_are_refused_by_field() {
    let server = start_server("").await;
    let client = reqwest::Client::new();
    let base = format!("http://{}/api/v1/snapshot-configs", server.http);
    let post = |body: Value| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let resp = client
                .post(&base)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let rule = |outputs: Value| {
        json!({"domain": "*", "app": "live", "interval_secs": 5, "storage": "default",
               "overwrite_object": "{AppName}/{StreamName}.jpg", "outputs": outputs})
    };
    let thumb = json!({"width": 320, "format": "webp",
                       "sequence_object": "{AppName}/{StreamName}/{Sequence}.webp"});
    for (bad, field) in [
        (
            json!({"width": 320, "fit": "stretch", "sequence_object": "{AppName}/{StreamName}/a/{Sequence}.jpg"}),
            "outputs[1].fit",
        ),
        (
            json!({"width": 320, "fit": "crop", "sequence_object": "{AppName}/{StreamName}/a/{Sequence}.jpg"}),
            "outputs[1].fit",
        ),
        (
            json!({"width": "wide", "sequence_object": "{AppName}/{StreamName}/a/{Sequence}.jpg"}),
            "outputs[1].width",
        ),
        (
            json!({"quality": 0, "sequence_object": "{AppName}/{StreamName}/a/{Sequence}.jpg"}),
            "outputs[1].quality",
        ),
        (
            json!({"format": "webp", "sequence_object": "{AppName}/{StreamName}/a/{Sequence}.jpg"}),
            "outputs[1].sequence_object",
        ),
        (
            json!({"format": "webp", "sequence_object": "{AppName}/{StreamName}/{Sequence}.webp"}),
            "outputs[1].sequence_object",
        ),
        (
            json!({"colour": "red", "sequence_object": "{AppName}/{StreamName}/a/{Sequence}.jpg"}),
            "outputs[1].colour",
        ),
    ] {
        let (status, body) = post(rule(json!([thumb, bad]))).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["field"], field, "{bad}: {body}");
    }
    let (status, body) = post(rule(json!([thumb]))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["outputs"], json!([thumb]), "{body}");
    // PATCH: the same checks; `null` clears the outputs.
    let patch = |body: Value| {
        let client = client.clone();
        let url = format!("{base}/*/live");
        async move {
            let resp = client
                .patch(&url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let (status, body) = patch(json!({"outputs": [{"height": 90, "fit": "pad",
        "sequence_object": "{AppName}/{StreamName}/p/{Sequence}.jpg"}]}))
    .await;
    assert_eq!(
        (status, &body["field"]),
        (400, &json!("outputs[0].fit")),
        "{body}"
    );
    let (status, body) = patch(json!({"outputs": null})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("outputs").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_on_s3_carry_their_content_type() {
    let moto = common::moto::MotoServer::start().await;
    moto.create_bucket("outputs").await;
    // The rule of `s3_config` (output 0: JPEG) with a 160-px WebP output.
    let config = format!(
        "{}[[rules.outputs]]\nwidth = 160\nformat = \"webp\"\nsequence_object = \"{{AppName}}/{{StreamName}}/small/{{Sequence}}.webp\"\n",
        common::moto::s3_config("outputs", &moto.endpoint(), 10, 2)
    );
    let mut server = start_server(&config).await;
    let op = server.operator("s3");
    publish_fixture(&server, "live", "cam", "baseline_640x360_gop1s.flv", 4.0).await;
    assert!(server.stop().await, "shutdown finished in time");
    for n in 1..=3 {
        let jpeg = op.stat(&format!("live/cam/{n}.jpg")).await.unwrap();
        assert_eq!(jpeg.content_type(), Some("image/jpeg"));
        let key = format!("live/cam/small/{n}.webp");
        let webp = op.stat(&key).await.unwrap();
        assert_eq!(webp.content_type(), Some("image/webp"), "{key}");
        let bytes = op.read(&key).await.unwrap().to_vec();
        let dims = livesnap::storage::image_header::dimensions(&bytes);
        assert_eq!(dims, Some((160, 90)), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_stored_snapshot_has_every_output() {
    let rules = r#"
[[rules]]
domain = "*"
app = "live"
interval_secs = 5
storage = "default"
sequence_object = "{AppName}/{StreamName}/{Sequence}.jpg"
[[rules.outputs]]
height = 90
format = "webp"
sequence_object = "{AppName}/{StreamName}/small/{Sequence}.webp"
"#;
    let server = start_server(rules).await;
    // 3 s of the fixture: the scheduled snapshot 1 (at 0 s), then the publisher pauses.
    let mut p = start_publish(server.rtmp, "live", "cam").await;
    send_range(&mut p, "baseline_640x360_gop1s.flv", 0, 3000).await;
    let node = server.node().clone();
    assert!(wait_for(Duration::from_secs(10), || first_stream_stored(&node) == 1).await);
    let url = format!(
        "http://{}/api/v1/streams/127.0.0.1/live/cam/snapshot?store=true",
        server.http
    );
    let resp = reqwest::Client::new().post(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // The answer is output 0, full size; both outputs are stored as number 2.
    assert_eq!(resp.headers()["x-livesnap-width"], "640");
    let root = server.root();
    assert_eq!(
        list_files(&root),
        [
            "live/cam/1.jpg",
            "live/cam/2.jpg",
            "live/cam/small/1.webp",
            "live/cam/small/2.webp"
        ]
    );
    assert_eq!(probe(&root.join("live/cam/small/2.webp")), (160, 90));
    p.finish().await;
}
