//! Pictures over HTTP on a real node (RTMP publish over loopback, fs storage):
//! `latest.jpg` resized on request (sizes, aspect, exact pad and crop boxes checked
//! against ffmpeg, ETag revalidation, the stored picture of a stream that is not live,
//! bad parameters), and storyboards (WebVTT cues covering the range inside the
//! sprite, the sprite's tiles against ffmpeg's scale of the stored snapshots, signed
//! storyboard links without the token, tampering refused).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::external::ffmpeg_rgb;
use common::*;
use livesnap::clock::{rfc3339, unix_now};
use livesnap::testing::pictures::psnr;
use serde_json::{json, Value};

/// 640x360, a keyframe every second, 12 s.
const FIXTURE: &str = "baseline_640x360_gop1s.flv";
const TOKEN: &str = "admin-token-for-the-pictures-tests";
const KEY: &str = "a-links-key-of-at-least-32-bytes-long";
/// The domain of a publish to rtmp://127.0.0.1:PORT/live (the tcUrl's host).
const DOMAIN: &str = "127.0.0.1";

fn config(root: &Path) -> String {
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
[links]
key = "{KEY}"
"#,
        root.display()
    )
}

async fn start() -> (TestServer, String) {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let text = config(&dir.path().join("snapshots"));
    (TestServer::start(dir, &text).await, text)
}

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A GET, with the admin token when `token`, and `If-None-Match` when given.
async fn get(server: &TestServer, path: &str, token: bool, inm: Option<&str>) -> Got {
    let mut rb = reqwest::Client::new().get(format!("http://{}{path}", server.http));
    if token {
        rb = rb.header("authorization", format!("Bearer {TOKEN}"));
    }
    if let Some(t) = inm {
        rb = rb.header("if-none-match", t);
    }
    let resp = rb.send().await.unwrap();
    Got {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

fn stream_path(stream: &str, rest: &str) -> String {
    format!("/api/v1/streams/{DOMAIN}/live/{stream}/{rest}")
}

fn img_path(stream: &str, rest: &str) -> String {
    format!("/img/{DOMAIN}/live/{stream}/{rest}")
}

/// ffmpeg's `-vf FILTER` of a JPEG, as RGB24, the filter applied to the decoded
/// picture converted to RGB first (`format=rgb24,FILTER`), as a browser scales it.
/// (swscale scaling the decoded YUV directly keeps the colour planes at their coded
/// resolution: on testsrc2's saturated bars its own two paths differ by ≈ 27 dB.)
fn ffmpeg_filtered(jpeg: &[u8], filter: &str) -> Vec<u8> {
    let filter = format!("format=rgb24,{filter}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.jpg");
    std::fs::write(&file, jpeg).unwrap();
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args(["-vf", &filter, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A JPEG decoded by ffmpeg (as the references are).
fn ffmpeg_decoded(jpeg: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.jpg");
    std::fs::write(&file, jpeg).unwrap();
    ffmpeg_rgb(&file)
}

/// The rows `y0..y1` of an RGB24 picture `w` wide, columns `x0..x1`.
fn region(rgb: &[u8], w: usize, (x0, y0, x1, y1): (usize, usize, usize, usize)) -> Vec<u8> {
    let mut out = Vec::new();
    for y in y0..y1 {
        out.extend_from_slice(&rgb[(y * w + x0) * 3..(y * w + x1) * 3]);
    }
    out
}

fn mean(v: &[u8]) -> f64 {
    v.iter().map(|&b| f64::from(b)).sum::<f64>() / v.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_jpg_is_resized_on_request_from_memory_and_from_storage() {
    let (server, _) = start().await;
    let root = server.root();
    let mut p = start_publish(server.rtmp, "live", "camA").await;
    // Keyframes 0..6 s: snapshots at 0 and 5 s, then the publish stays live.
    send_range(&mut p, FIXTURE, 0, 6_500).await;
    assert!(
        wait_for(Duration::from_secs(15), || root
            .join("live/camA/2.jpg")
            .exists())
        .await,
        "two snapshots stored"
    );
    let full_path = stream_path("camA", "latest.jpg");
    // The newest in memory is the second snapshot once the writer has stored it
    // (the sequence object is written first, the picture kept in memory last).
    let mut full = get(&server, &full_path, true, None).await;
    for _ in 0..50 {
        if std::fs::read(root.join("live/camA/2.jpg")).ok().as_deref() == Some(&full.body[..]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        full = get(&server, &full_path, true, None).await;
    }
    assert_eq!(full.status, 200);
    assert_eq!(full.header("x-livesnap-source"), Some("memory"));
    assert_eq!(decode_jpeg(&full.body).0, 640);

    // width=320 keeps the aspect ratio.
    let thumb_path = format!("{full_path}?width=320");
    let thumb = get(&server, &thumb_path, true, None).await;
    assert_eq!(
        thumb.status,
        200,
        "{}",
        String::from_utf8_lossy(&thumb.body)
    );
    assert_eq!(thumb.header("content-type"), Some("image/jpeg"));
    assert_eq!(thumb.header("x-livesnap-source"), Some("memory"));
    let (w, h, _) = decode_jpeg(&thumb.body);
    assert_eq!((w, h), (320, 180));
    assert!(thumb.body.len() < full.body.len());
    // The pixels, at a quality that leaves the resize's own error (the default 80
    // costs ≈ 2 dB more on these saturated bars).
    let fine = get(&server, &format!("{thumb_path}&quality=95"), true, None).await;
    let reference = ffmpeg_filtered(&full.body, "scale=320:180");
    let db = psnr(&ffmpeg_decoded(&fine.body), &reference);
    assert!(db >= 30.0, "width=320 vs ffmpeg's scale: {db:.1} dB");
    // height only, and a box larger than the picture (never upscaled).
    let g = get(&server, &format!("{full_path}?height=90"), true, None).await;
    assert_eq!(decode_jpeg(&g.body).0, 160);
    let g = get(&server, &format!("{full_path}?width=2000"), true, None).await;
    assert_eq!((decode_jpeg(&g.body).0, decode_jpeg(&g.body).1), (640, 360));

    // ETag round trip: 304 with no body, the same ETag; a new size is another ETag.
    let etag = thumb.header("etag").expect("an ETag").to_string();
    assert_eq!(thumb.header("cache-control"), Some("no-cache"));
    let again = get(&server, &thumb_path, true, Some(&etag)).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let other = get(
        &server,
        &format!("{full_path}?width=321"),
        true,
        Some(&etag),
    )
    .await;
    assert_eq!(other.status, 200);
    assert_ne!(other.header("etag"), Some(etag.as_str()));
    let full_etag = full.header("etag").unwrap().to_string();
    assert_ne!(full_etag, etag);
    assert_eq!(
        get(&server, &full_path, true, Some(&full_etag))
            .await
            .status,
        304
    );
    // The same request again is served from the cache: byte-identical.
    assert_eq!(get(&server, &thumb_path, true, None).await.body, thumb.body);

    // pad: the exact box, the picture letterboxed in it (640x360 → 200x113 at y=42,
    // even offsets as the outputs have them).
    let pad = get(
        &server,
        &format!("{full_path}?width=200&height=200&fit=pad&quality=95"),
        true,
        None,
    )
    .await;
    assert_eq!(pad.status, 200);
    let pad_rgb = ffmpeg_decoded(&pad.body);
    assert_eq!(decode_jpeg(&pad.body).0, 200);
    assert_eq!(pad_rgb.len(), 200 * 200 * 3);
    let reference = ffmpeg_filtered(&full.body, "scale=200:113,pad=200:200:0:42:black");
    let inner = |v: &[u8]| region(v, 200, (0, 45, 200, 154));
    let db = psnr(&inner(&pad_rgb), &inner(&reference));
    assert!(db >= 30.0, "pad vs ffmpeg's scale+pad: {db:.1} dB");
    for band in [(0, 0, 200, 40), (0, 160, 200, 200)] {
        let m = mean(&region(&pad_rgb, 200, band));
        assert!(m < 6.0, "letterbox band {band:?} is black (mean {m:.1})");
    }
    // crop: fills the box from the centre (360x360 of the middle, scaled to 180).
    let crop = get(
        &server,
        &format!("{full_path}?width=180&height=180&fit=crop&quality=95"),
        true,
        None,
    )
    .await;
    assert_eq!(crop.status, 200);
    let crop_rgb = ffmpeg_decoded(&crop.body);
    assert_eq!(crop_rgb.len(), 180 * 180 * 3);
    let reference = ffmpeg_filtered(&full.body, "crop=360:360:140:0,scale=180:180");
    let db = psnr(&crop_rgb, &reference);
    assert!(db >= 30.0, "crop vs ffmpeg's crop+scale: {db:.1} dB");
    // quality alone re-encodes at full size; a lower quality is smaller.
    let q = get(&server, &format!("{full_path}?quality=20"), true, None).await;
    assert_eq!(decode_jpeg(&q.body).0, 640);
    assert!(q.body.len() < full.body.len());

    // latest.webp: the same picture as WebP, resized the same way.
    let webp_path = format!("{}?width=320", stream_path("camA", "latest.webp"));
    let webp = get(&server, &webp_path, true, None).await;
    assert_eq!(webp.status, 200, "{}", String::from_utf8_lossy(&webp.body));
    assert_eq!(webp.header("content-type"), Some("image/webp"));
    assert_eq!(
        (&webp.body[..4], &webp.body[8..12]),
        (&b"RIFF"[..], &b"WEBP"[..])
    );
    let webp_rgb = ffmpeg_decoded(&webp.body);
    assert_eq!(webp_rgb.len(), 320 * 180 * 3);
    let fine = get(&server, &format!("{webp_path}&quality=95"), true, None).await;
    let db = psnr(
        &ffmpeg_decoded(&fine.body),
        &ffmpeg_filtered(&full.body, "scale=320:180"),
    );
    // WebP is always 4:2:0 (libwebp halves the colour planes again): on testsrc2's
    // saturated bars that costs ≈ 5 dB against an RGB reference; another picture of
    // the same stream scores below 15 dB.
    assert!(db >= 22.0, "webp vs ffmpeg's scale: {db:.1} dB");
    let webp_etag = webp.header("etag").unwrap().to_string();
    assert_ne!(webp_etag, etag);
    let again = get(
        &server,
        &format!("{}?width=320", stream_path("camA", "latest.webp")),
        true,
        Some(&webp_etag),
    )
    .await;
    assert_eq!(again.status, 304);
    let full_webp = get(&server, &stream_path("camA", "latest.webp"), true, None).await;
    assert_eq!(ffmpeg_decoded(&full_webp.body).len(), 640 * 360 * 3);

    // Bad parameters: 400 naming the parameter.
    for (query, field) in [
        ("width=0", "width"),
        ("width=5000", "width"),
        ("width=abc", "width"),
        ("height=-1", "height"),
        ("width=100&fit=zoom", "fit"),
        ("width=100&fit=pad", "height"),
        ("height=100&fit=crop", "width"),
        ("fit=scale", "width"),
        ("width=100&quality=0", "quality"),
        ("width=100&quality=101", "quality"),
        ("size=100", "size"),
        ("width=100&width=200", "width"),
    ] {
        let g = get(&server, &format!("{full_path}?{query}"), true, None).await;
        assert_eq!(g.status, 400, "{query}");
        assert_eq!(g.json()["field"].as_str(), Some(field), "{query}");
    }
    // Cache busters that pages add (`t`, jQuery's `_`) change nothing.
    let busted = get(
        &server,
        &format!("{thumb_path}&t=1733130000&_=42"),
        true,
        None,
    )
    .await;
    assert_eq!(busted.status, 200);
    assert_eq!(busted.body, thumb.body, "the same cached picture");
    // The admin route keeps its token.
    assert_eq!(get(&server, &thumb_path, false, None).await.status, 401);

    // A signed latest.jpg link takes the size parameters too.
    let signer = livesnap::links::Signer::new(KEY.as_bytes(), 600, 604_800);
    let link = signer.sign_at(&img_path("camA", "latest.jpg"), unix_now() + 60);
    let g = get(&server, &format!("{link}&width=320"), false, None).await;
    assert_eq!(g.status, 200, "{}", String::from_utf8_lossy(&g.body));
    assert_eq!(g.body, thumb.body, "the same cached picture");
    let webp_link = signer.sign_at(&img_path("camA", "latest.webp"), unix_now() + 60);
    let g = get(&server, &format!("{webp_link}&width=320"), false, None).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.body, webp.body);
    let g = get(&server, &format!("{link}&fit=bad&width=1"), false, None).await;
    assert_eq!((g.status, g.json()["field"].as_str()), (400, Some("fit")));

    // Not live any more: the stored overwrite object, resized.
    p.finish().await;
    assert!(
        wait_for(Duration::from_secs(10), || server
            .node()
            .registry
            .is_empty())
        .await,
        "the publish ended"
    );
    let stored = get(&server, &thumb_path, true, None).await;
    assert_eq!(stored.status, 200);
    assert_eq!(stored.header("x-livesnap-source"), Some("storage"));
    assert_eq!(
        (decode_jpeg(&stored.body).0, decode_jpeg(&stored.body).1),
        (320, 180)
    );
    let stored_etag = stored.header("etag").unwrap().to_string();
    assert_eq!(
        get(&server, &thumb_path, true, Some(&stored_etag))
            .await
            .status,
        304
    );
    let reference = ffmpeg_filtered(
        &std::fs::read(root.join("live/camA.jpg")).unwrap(),
        "scale=320:180",
    );
    let db = psnr(&ffmpeg_decoded(&stored.body), &reference);
    assert!(db >= 30.0, "stored, resized: {db:.1} dB");
    // None stored: 404.
    let none = get(
        &server,
        &stream_path("nobody", "latest.jpg?width=320"),
        true,
        None,
    )
    .await;
    assert_eq!(none.status, 404);
}

/// A WebVTT cue: start and end (s), the URL, its `#xywh` box.
type Cue = (f64, f64, String, (u32, u32, u32, u32));

/// Cues of a WebVTT file.
fn parse_vtt(text: &str) -> Vec<Cue> {
    assert!(text.starts_with("WEBVTT\n"), "{text}");
    let secs = |t: &str| -> f64 {
        let p: Vec<f64> = t.split(':').map(|x| x.parse().unwrap()).collect();
        p[0] * 3600.0 + p[1] * 60.0 + p[2]
    };
    let mut cues = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if let Some((a, b)) = l.split_once(" --> ") {
            let (url, frag) = lines[i + 1]
                .split_once("#xywh=")
                .expect("an #xywh fragment");
            let n: Vec<u32> = frag.split(',').map(|x| x.parse().unwrap()).collect();
            assert_eq!(n.len(), 4, "{frag}");
            cues.push((secs(a), secs(b), url.to_string(), (n[0], n[1], n[2], n[3])));
        }
    }
    cues
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storyboards_tile_the_stored_snapshots_and_sign() {
    let (server, text) = start().await;
    let root = server.root();
    let t0 = unix_now();
    // At twice real time: snapshots 2.5 s apart (a storyboard has one tile a second).
    publish_fixture(&server, "live", "camB", FIXTURE, 2.0).await;
    assert!(
        wait_for(Duration::from_secs(15), || root
            .join("live/camB/3.jpg")
            .exists())
        .await,
        "three snapshots stored: {:?}",
        list_files(&root)
    );
    let (start_s, end_s) = (t0 - 600, unix_now() + 60);
    let query = format!(
        "start_time={}&end_time={}&tile=160x90&columns=2",
        rfc3339(start_s),
        rfc3339(end_s)
    );
    // The snapshot query's items, in its order: the tiles' order.
    let snaps = get(
        &server,
        &format!(
            "/api/v1/snapshots?domain={DOMAIN}&app=live&stream=camB&start_time={}&end_time={}&limit=100",
            rfc3339(start_s),
            rfc3339(end_s)
        ),
        true,
        None,
    )
    .await
    .json();
    let keys: Vec<String> = snaps["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 3, "{snaps}");

    let vtt = get(
        &server,
        &stream_path("camB", &format!("storyboard.vtt?{query}")),
        true,
        None,
    )
    .await;
    assert_eq!(vtt.status, 200, "{}", String::from_utf8_lossy(&vtt.body));
    assert_eq!(vtt.header("content-type"), Some("text/vtt; charset=utf-8"));
    let cues = parse_vtt(std::str::from_utf8(&vtt.body).unwrap());
    assert_eq!(cues.len(), 3, "one cue per stored snapshot");
    // The cues cover the range, in order, without gaps.
    assert_eq!(cues[0].0, 0.0);
    for w in cues.windows(2) {
        assert_eq!(w[0].1, w[1].0);
        assert!(w[0].0 < w[0].1);
    }
    assert_eq!(cues[2].1, (end_s - start_s) as f64);
    assert!(cues
        .iter()
        .all(|c| c.2 == format!("storyboard.jpg?{query}")));

    let sprite = get(&server, &stream_path("camB", &cues[0].2), true, None).await;
    assert_eq!(
        sprite.status,
        200,
        "{}",
        String::from_utf8_lossy(&sprite.body)
    );
    assert_eq!(sprite.header("content-type"), Some("image/jpeg"));
    let (sw, sh, _) = decode_jpeg(&sprite.body);
    assert_eq!((sw, sh), (320, 180), "2 columns, 2 rows of 160x90");
    let sprite_rgb = ffmpeg_decoded(&sprite.body);
    for (i, (_, _, _, (x, y, w, h))) in cues.iter().enumerate() {
        assert!(
            x + w <= sw as u32 && y + h <= sh as u32,
            "cue {i} inside the sprite"
        );
        assert_eq!((*w, *h), (160, 90));
        let tile = region(
            &sprite_rgb,
            sw,
            (*x as usize, *y as usize, (x + w) as usize, (y + h) as usize),
        );
        let stored = std::fs::read(root.join(&keys[i])).unwrap();
        let reference = ffmpeg_filtered(&stored, "scale=160:90");
        let db = psnr(&tile, &reference);
        assert!(db >= 30.0, "tile {i} vs {}: {db:.1} dB", keys[i]);
    }
    // ETag revalidation of the sprite.
    let etag = sprite.header("etag").unwrap().to_string();
    assert_eq!(
        get(&server, &stream_path("camB", &cues[0].2), true, Some(&etag))
            .await
            .status,
        304
    );
    // Bad parameters name themselves; the token is required.
    for (q, field) in [
        (query.replace("160x90", "160x"), "tile"),
        (query.replace("160x90", "8x8"), "tile"),
        (query.replace("columns=2", "columns=0"), "columns"),
        (
            format!(
                "start_time={}&end_time={}",
                rfc3339(end_s),
                rfc3339(start_s)
            ),
            "end_time",
        ),
        (
            format!(
                "start_time={}&end_time={}",
                rfc3339(start_s),
                rfc3339(start_s + 3 * 86_400)
            ),
            "end_time",
        ),
        (format!("end_time={}", rfc3339(end_s)), "start_time"),
    ] {
        let g = get(
            &server,
            &stream_path("camB", &format!("storyboard.vtt?{q}")),
            true,
            None,
        )
        .await;
        assert_eq!(
            (g.status, g.json()["field"].as_str()),
            (400, Some(field)),
            "{q}"
        );
    }
    assert_eq!(
        get(&server, &stream_path("camB", &cues[0].2), false, None)
            .await
            .status,
        401
    );
    // A range with nothing stored: an empty VTT, and no sprite.
    let empty = format!(
        "start_time={}&end_time={}",
        rfc3339(start_s - 7200),
        rfc3339(start_s - 3600)
    );
    let g = get(
        &server,
        &stream_path("camB", &format!("storyboard.vtt?{empty}")),
        true,
        None,
    )
    .await;
    assert_eq!((g.status, &g.body[..]), (200, &b"WEBVTT\n"[..]));
    let g = get(
        &server,
        &stream_path("camB", &format!("storyboard.jpg?{empty}")),
        true,
        None,
    )
    .await;
    assert_eq!(g.status, 404);

    // Signed: a link from the API works without the token, and so does its sprite.
    let board = img_path("camB", &format!("storyboard.vtt?{query}"));
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/links", server.http))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(json!({ "path": board, "ttl_secs": 600 }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let url = body["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("{board}&exp=")), "{url}");
    let g = get(&server, &url, false, None).await;
    assert_eq!(g.status, 200, "{}", String::from_utf8_lossy(&g.body));
    assert_eq!(g.header("access-control-allow-origin"), Some("*"));
    let signed_cues = parse_vtt(std::str::from_utf8(&g.body).unwrap());
    assert_eq!(signed_cues.len(), 3);
    let sprite_url = &signed_cues[0].2;
    assert!(
        sprite_url.starts_with(&format!("storyboard.jpg?{query}&exp=")),
        "{sprite_url}"
    );
    let sprite_abs = img_path("camB", sprite_url);
    let g = get(&server, &sprite_abs, false, None).await;
    assert_eq!(g.status, 200, "{}", String::from_utf8_lossy(&g.body));
    assert_eq!(g.body, sprite.body, "the same sheet as the admin route");
    // Tampered: another range, another parameter, another signature, or the VTT's
    // signature on the sprite: 403.
    let wider = url.replace(&rfc3339(end_s), &rfc3339(end_s + 60));
    let more = url.replace("columns=2", "columns=3");
    let mut bad_sig = url.clone().into_bytes();
    let at = url.find("sig=").unwrap() + 4;
    bad_sig[at] = if bad_sig[at] == b'0' { b'1' } else { b'0' };
    let bad_sig = String::from_utf8(bad_sig).unwrap();
    let swapped = url.replace("storyboard.vtt", "storyboard.jpg");
    let stripped = sprite_abs.replace(&format!("{query}&"), "");
    let cases: [(&str, String); 5] = [
        ("wider range", wider),
        ("more columns", more),
        ("signature", bad_sig),
        ("vtt signature on the sprite", swapped),
        ("no parameters", stripped),
    ];
    for (what, u) in cases {
        let g = get(&server, &u, false, None).await;
        assert_eq!(
            g.status,
            403,
            "{what}: {u}: {}",
            String::from_utf8_lossy(&g.body)
        );
    }

    // `livesnap sign-image` signs storyboards the same way (its function, in process:
    // the built binary is shared with other worktrees' builds).
    let settings = livesnap::config::Config::parse(&text)
        .unwrap()
        .validate()
        .unwrap();
    let cli_url = livesnap::cli::sign_image(&settings, &board, Some(120), unix_now()).unwrap();
    assert!(cli_url.starts_with(&format!("{board}&exp=")), "{cli_url}");
    assert_eq!(get(&server, &cli_url, false, None).await.status, 200);
}
