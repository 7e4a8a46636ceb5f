//! Relay to upstream origins, end to end: a real livesnap node relaying to a real nginx
//! with the RTMP module (recording everything), to another livesnap node that checks
//! signed URLs, and over TLS through a rustls terminator in front of nginx. These tests
//! fail, never skip, when nginx, its RTMP module or ffmpeg is missing.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::external::*;
use common::nginx::{framemd5, frames_only, rebased, video_framemd5, Nginx};
use common::upstream::{black_hole, http_json, stalling_proxy, tls_terminator, EventSink};
use common::*;
use serde_json::Value;

const FIXTURE: &str = "high_1280x720_bframes_aac.flv";

fn relay_config(app: &str, targets: &[String]) -> String {
    format!(
        "{DEFAULT_RULES}\n[[relays]]\napp = \"{app}\"\ntargets = [\n{}\n]\n",
        targets.join(",\n")
    )
}

/// Publishes the fixture's tags with timestamps below `until_ms` at real time (`speed`
/// 1.0) or faster, then finishes; returns how long the sending took.
async fn publish_paced(
    addr: SocketAddr,
    app: &str,
    stream: &str,
    until_ms: u32,
    speed: f64,
) -> Duration {
    let mut p = start_publish(addr, app, stream).await;
    let started = tokio::time::Instant::now();
    for tag in fixture_tags(FIXTURE) {
        if tag.timestamp_ms >= until_ms {
            break;
        }
        if speed > 0.0 {
            let due =
                started + Duration::from_secs_f64(f64::from(tag.timestamp_ms) / 1000.0 / speed);
            tokio::time::sleep_until(due).await;
        }
        match tag.tag_type {
            9 => p.video(tag.timestamp_ms, tag.data).await.unwrap(),
            8 => p.audio(tag.timestamp_ms, tag.data).await.unwrap(),
            _ => {}
        }
    }
    let took = started.elapsed();
    p.finish().await;
    took
}

/// Indices of the fixture's keyframes among its coded video frames (what framemd5 lists).
fn source_keyframes() -> Vec<usize> {
    fixture_tags(FIXTURE)
        .iter()
        .filter(|t| t.tag_type == 9 && t.data.get(1) == Some(&1))
        .enumerate()
        .filter(|(_, t)| t.data[0] >> 4 == 1)
        .map(|(i, _)| i)
        .collect()
}

/// `GET /api/v1/streams` → the `relays` array of the first live stream.
async fn relays_of_first_stream(server: &TestServer) -> Vec<Value> {
    let (status, body) = http_request(server.http, "GET", "/api/v1/streams")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["items"][0]["relays"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn metrics(server: &TestServer) -> String {
    http_request(server.http, "GET", "/metrics")
        .await
        .unwrap()
        .1
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or_else(|| panic!("{name} not in\n{text}")) as u64
}

/// The video frames of the source, as the recording of a relay that started at some
/// keyframe must show them: `recorded` is a contiguous run of `source` to its end.
fn assert_tail_of(recorded: &[String], source: &[String], what: &str) -> usize {
    assert!(!recorded.is_empty(), "{what}: nothing recorded");
    let md5 = |l: &String| l.rsplit(',').next().unwrap().trim().to_owned();
    let start = source
        .iter()
        .position(|s| md5(s) == md5(&recorded[0]))
        .unwrap_or_else(|| {
            panic!(
                "{what}: first recorded frame {} not in the source",
                recorded[0]
            )
        });
    assert!(
        start + recorded.len() <= source.len(),
        "{what}: more frames than the source"
    );
    // Same frames, same durations and sizes, same timestamps relative to the first.
    assert_eq!(
        rebased(recorded),
        rebased(&source[start..start + recorded.len()]),
        "{what}"
    );
    start
}

#[tokio::test]
async fn nginx_records_the_relayed_stream_frame_for_frame_and_snapshots_are_still_taken() {
    let nginx = Nginx::start("");
    let events = EventSink::start().await;
    let target = format!("\"{}/{{StreamName}}\"", nginx.url("live"));
    let config = format!(
        "{}\n[notify]\nurl = \"http://{}/events\"\n",
        relay_config("live", &[target]),
        events.addr
    );
    let server = start_server(&config).await;
    publish_fixture(&server, "live", "cam", FIXTURE, 0.0).await;

    let recorded = nginx.wait_recorded("cam").await;
    assert!(nginx.unpublished_cleanly("cam"), "{}", nginx.log());
    let source = video_framemd5(&fixture(FIXTURE));
    let got = video_framemd5(&recorded);
    assert_eq!(got.len(), source.len(), "video frames recorded by nginx");
    for (i, (r, s)) in got.iter().zip(&source).enumerate() {
        assert_eq!(r, s, "video frame {i} (dts, pts, size, md5)");
    }
    // Audio before the first keyframe is not relayed (a relay starts at a keyframe);
    // everything after it is, byte for byte, with its timestamps.
    let audio_src = frames_only(framemd5(&fixture(FIXTURE), "a"));
    let audio = frames_only(framemd5(&recorded, "a"));
    assert!(
        audio.len() + 3 >= audio_src.len(),
        "{} of {} audio frames",
        audio.len(),
        audio_src.len()
    );
    assert_eq!(
        audio[..],
        audio_src[audio_src.len() - audio.len()..],
        "audio frames"
    );

    assert!(
        wait_for(Duration::from_secs(10), || list_files(&server.root())
            .contains(&"live/cam.jpg".to_string()))
        .await,
        "snapshots stored: {:?}",
        list_files(&server.root())
    );
    let m = metrics(&server).await;
    assert!(
        metric(&m, "livesnap_relay_sent_bytes_total") > 1_000_000,
        "{m}"
    );
    assert_eq!(metric(&m, "livesnap_relay_reconnects_total"), 0, "{m}");
    assert!(
        wait_for(Duration::from_secs(5), || events
            .names()
            .contains(&"relay_stop".to_string()))
        .await,
        "events: {:?}",
        events.names()
    );
    let bodies = events.bodies();
    let start = bodies
        .iter()
        .find(|e| e["event"] == "relay_start")
        .expect("relay_start");
    assert_eq!(start["stream"], "cam");
    assert_eq!(start["target"], format!("{}/cam", nginx.url("live")));
    let stop = bodies.iter().find(|e| e["event"] == "relay_stop").unwrap();
    assert_eq!(stop["reason"], "unpublished");
    assert!(stop["sent_bytes"].as_u64().unwrap() > 1_000_000);
}

#[tokio::test]
async fn a_target_down_at_publish_start_is_reached_after_backoff_from_a_keyframe() {
    let port = free_addr().port();
    let target = format!("\"rtmp://127.0.0.1:{port}/live/{{StreamName}}\"");
    let server = start_server(&relay_config("live", &[target])).await;
    let publish = tokio::spawn(publish_paced(server.rtmp, "live", "late", 9000, 1.0));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let relays = relays_of_first_stream(&server).await;
    assert_eq!(relays[0]["connected"], false, "{relays:?}");
    assert!(relays[0]["reconnects"].as_u64().unwrap() >= 1, "{relays:?}");
    let nginx = Nginx::start_on(Some(port), "");
    assert!(
        wait_for(Duration::from_secs(10), || server
            .node()
            .registry
            .list()
            .first()
            .is_some_and(|s| s.relays()[0]
                .connected
                .load(std::sync::atomic::Ordering::Relaxed)))
        .await,
        "the relay connected after backoff"
    );
    let took = publish.await.unwrap();
    assert!(
        took < Duration::from_millis(9000 + 1500),
        "the publisher was slowed: {took:?}"
    );

    let got = video_framemd5(&nginx.wait_recorded("late").await);
    let source = video_framemd5(&fixture(FIXTURE));
    let start = assert_tail_of(&got, &source, "recording of the late relay");
    assert!(start > 0, "it cannot have the start of the stream");
    // The first frame nginx recorded is a keyframe of the source.
    let keyframes = source_keyframes();
    assert!(
        keyframes.contains(&start),
        "recording starts at source frame {start}, keyframes {keyframes:?}"
    );
    assert!(
        wait_for(Duration::from_secs(10), || list_files(&server.root())
            .contains(&"live/late.jpg".to_string()))
        .await,
        "snapshots stored"
    );
    let m = metrics(&server).await;
    assert!(metric(&m, "livesnap_relay_reconnects_total") >= 1, "{m}");
}

#[tokio::test]
async fn refusing_and_black_hole_targets_slow_neither_the_publish_nor_the_other_target() {
    let nginx = Nginx::start("");
    let (hole, hole_task) = black_hole().await;
    let targets = [
        format!("\"{}/{{StreamName}}\"", nginx.url("closed")),
        format!("\"rtmp://{hole}/live/{{StreamName}}\""),
        format!("\"{}/{{StreamName}}\"", nginx.url("live")),
    ];
    let server = start_server(&relay_config("live", &targets)).await;
    let publish = tokio::spawn(publish_paced(server.rtmp, "live", "cam", 8000, 1.0));
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let relays = relays_of_first_stream(&server).await;
    let took = publish.await.unwrap();
    assert!(
        took < Duration::from_millis(8000 + 1000),
        "the publisher was slowed: {took:?}"
    );
    assert_eq!(relays.len(), 3, "{relays:?}");
    assert_eq!(relays[0]["connected"], false, "refused: {relays:?}");
    assert!(relays[0]["reconnects"].as_u64().unwrap() >= 1, "{relays:?}");
    assert!(relays[0]["last_error"].is_string(), "{relays:?}");
    assert_eq!(relays[1]["connected"], false, "black hole: {relays:?}");
    assert_eq!(relays[1]["sent_bytes"], 0, "{relays:?}");
    assert_eq!(relays[2]["connected"], true, "{relays:?}");
    assert_eq!(relays[2]["skipped_bytes"], 0, "{relays:?}");

    let got = video_framemd5(&nginx.wait_recorded("cam").await);
    let source = video_framemd5(&fixture(FIXTURE));
    let sent = fixture_tags(FIXTURE)
        .iter()
        .filter(|t| t.tag_type == 9 && t.timestamp_ms < 8000)
        .count();
    // The sequence header is extradata to ffmpeg, not a frame.
    assert_eq!(got.len(), sent - 1, "frames recorded by the healthy target");
    assert_eq!(got[..], source[..got.len()]);
    assert!(
        nginx.log().contains("access forbidden by rule"),
        "nginx refused the closed app"
    );
    hole_task.abort();
}

#[tokio::test]
async fn a_signed_target_is_accepted_by_an_origin_that_checks_auth_key() {
    let origin = start_server(&format!(
        "{DEFAULT_RULES}\n[[auth]]\ndomain = \"*\"\nprimary_key = \"origin-key\"\n"
    ))
    .await;
    let targets = [
        format!("{{ url = \"rtmp://{}/live/{{StreamName}}\", sign_key = \"origin-key\", sign_validity_secs = 600 }}", origin.rtmp),
        format!("{{ url = \"rtmp://{}/other/{{StreamName}}\", sign_key = \"wrong-key\" }}", origin.rtmp),
    ];
    let edge = start_server(&relay_config("live", &targets)).await;
    let publish = tokio::spawn(publish_paced(edge.rtmp, "live", "signed", 5000, 1.0));
    let id = livesnap::names::StreamId::new("127.0.0.1", "live", "signed");
    assert!(
        wait_for(Duration::from_secs(4), || origin
            .node()
            .registry
            .get(&id)
            .is_some())
        .await,
        "the origin accepted the signed relay; live: {:?}",
        origin
            .node()
            .registry
            .list()
            .iter()
            .map(|s| s.id.to_string())
            .collect::<Vec<_>>()
    );
    // The edge counts it connected once the client's start grace has passed.
    assert!(
        wait_for(Duration::from_secs(2), || edge
            .node()
            .registry
            .list()
            .first()
            .is_some_and(|s| s.relays()[0]
                .connected
                .load(std::sync::atomic::Ordering::Relaxed)))
        .await,
        "the edge shows the relay connected"
    );
    let relays = relays_of_first_stream(&edge).await;
    assert!(
        relays[0]["target"]
            .as_str()
            .unwrap()
            .ends_with("/live/signed"),
        "shown without a signature: {relays:?}"
    );
    assert_eq!(relays[1]["connected"], false, "{relays:?}");
    let err = relays[1]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(err.contains("refused") || err.contains("closed"), "{err}");
    assert!(!err.contains("wrong-key"), "{err}");
    publish.await.unwrap();
    // The origin took snapshots of the relayed stream.
    assert!(
        wait_for(Duration::from_secs(10), || list_files(&origin.root())
            .contains(&"live/signed.jpg".to_string()))
        .await,
        "origin snapshots: {:?}",
        list_files(&origin.root())
    );
}

#[tokio::test]
async fn an_rtmps_target_is_relayed_over_tls_trusting_its_ca_file_only() {
    let nginx = Nginx::start("");
    let (tls_addr, ca_pem) = tls_terminator(nginx.port).await;
    let (_, other_ca) = tls_terminator(nginx.port).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let wrong = dir.path().join("other-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&wrong, other_ca).unwrap();
    let port = tls_addr.port();
    let targets = [
        format!(
            "{{ url = \"rtmps://localhost:{port}/live/{{StreamName}}\", tls_ca_file = \"{}\" }}",
            ca.display()
        ),
        format!(
            "{{ url = \"rtmps://localhost:{port}/live/{{StreamName}}x\", tls_ca_file = \"{}\" }}",
            wrong.display()
        ),
    ];
    let server = start_server(&relay_config("live", &targets)).await;
    let publish = tokio::spawn(publish_paced(server.rtmp, "live", "tls", 4000, 2.0));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let relays = relays_of_first_stream(&server).await;
    assert_eq!(relays[0]["connected"], true, "{relays:?}");
    assert_eq!(
        relays[1]["connected"], false,
        "untrusted certificate: {relays:?}"
    );
    let err = relays[1]["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("TLS"), "{err}");
    // When the target's certificate expires: in the API and as a gauge to alert on; the
    // untrusted target's handshake failed, so it shows none.
    assert_eq!(
        relays[0]["certificate_expires"], "2031-05-17T00:00:00Z",
        "{relays:?}"
    );
    assert!(relays[1].get("certificate_expires").is_none(), "{relays:?}");
    let (code, metrics) = http_request(server.http, "GET", "/metrics").await.unwrap();
    assert_eq!(code, 200);
    let gauge = format!(
        "livesnap_relay_certificate_expiry_timestamp_seconds{{target=\"localhost:{port}\"}} 1936742400"
    );
    assert!(metrics.contains(&gauge), "{gauge} missing from:\n{metrics}");
    publish.await.unwrap();

    let got = video_framemd5(&nginx.wait_recorded("tls").await);
    let source = video_framemd5(&fixture(FIXTURE));
    let sent = fixture_tags(FIXTURE)
        .iter()
        .filter(|t| t.tag_type == 9 && t.timestamp_ms < 4000)
        .count();
    assert_eq!(got.len(), sent - 1, "frames recorded through TLS");
    assert_eq!(got[..], source[..got.len()]);
    assert!(
        !nginx.recorded("tlsx").exists(),
        "nothing went through the untrusted target"
    );
}

#[tokio::test]
async fn relay_configs_added_through_the_api_are_shared_by_nodes_and_apply_from_the_next_publish() {
    let nginx = Nginx::start("");
    let config_target = format!("\"{}/{{StreamName}}\"", nginx.url("closed"));
    let server = start_server(&format!(
        "{}\n[rule_store]\nreload_secs = 1\n",
        relay_config("cfg", &[config_target])
    ))
    .await;
    // A second node on the same rule store (the first node's storage folder).
    let other = TestServer::start(
        tempfile::tempdir().unwrap(),
        &format!(
            r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
[storage.default]
scheme = "fs"
root = "{}"
[rule_store]
reload_secs = 1
"#,
            server.root().display()
        ),
    )
    .await;
    let body = format!(
        r#"{{"app": "api", "targets": ["{}/{{StreamName}}", {{"url": "{}/{{StreamName}}x", "sign_key": "secret-k"}}]}}"#,
        nginx.url("live"),
        nginx.url("live")
    );
    let (status, created) = http_json(server.http, "POST", "/api/v1/relay-configs", &body).await;
    assert_eq!(status, 201, "{created}");
    assert!(!created.contains("secret-k"), "{created}");
    let created: Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["source"], "api");
    assert_eq!(created["targets"][1]["signed"], true, "{created}");
    let (status, e) = http_json(server.http, "POST", "/api/v1/relay-configs", &body).await;
    assert_eq!(status, 409, "{e}");
    let (status, e) = http_json(
        server.http,
        "POST",
        "/api/v1/relay-configs",
        r#"{"app": "x", "targets": ["rtmp://o/{Stream}"]}"#,
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert!(e.contains("targets[0].url"), "{e}");
    let (status, e) = http_json(server.http, "DELETE", "/api/v1/relay-configs/*/cfg", "").await;
    assert_eq!(status, 403, "config relays are read-only: {e}");
    let (_, list) = http_json(server.http, "GET", "/api/v1/relay-configs", "").await;
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["total"], 2, "{list}");
    assert!(!list.to_string().contains("secret-k"), "{list}");

    // The other node picks it up from the shared document and relays its publish.
    assert!(
        wait_for(Duration::from_secs(5), || other
            .node()
            .relays
            .lookup("127.0.0.1", "api")
            .is_some())
        .await,
        "the second node applies the stored relay config"
    );
    publish_paced(other.rtmp, "api", "viaapi", 3000, 0.0).await;
    let got = video_framemd5(&nginx.wait_recorded("viaapi").await);
    assert!(got.len() > 50, "{} frames", got.len());

    let path = format!("/api/v1/relay-configs/{}", created["id"]);
    let (status, _) = http_json(server.http, "DELETE", &path, "").await;
    assert_eq!(status, 204);
    let (status, _) = http_json(server.http, "DELETE", &path, "").await;
    assert_eq!(status, 404);
    assert!(server.node().relays.lookup("127.0.0.1", "api").is_none());
    assert!(
        wait_for(Duration::from_secs(5), || other
            .node()
            .relays
            .lookup("127.0.0.1", "api")
            .is_none())
        .await,
        "the delete reaches the second node"
    );
}

/// A stream without video reaches the origin: its sound is relayed from the start, not
/// held back for a keyframe that never comes.
#[tokio::test]
async fn an_audio_only_stream_is_relayed() {
    let origin = start_server(DEFAULT_RULES).await;
    let target = format!("\"rtmp://{}/live/{{StreamName}}\"", origin.rtmp);
    let edge = start_server(&relay_config("live", &[target])).await;
    let audio: Vec<_> = fixture_tags(FIXTURE)
        .into_iter()
        .filter(|t| t.tag_type == 8 && t.timestamp_ms < 3000)
        .collect();
    let sent: usize = audio.iter().map(|t| t.data.len()).sum();
    let mut p = start_publish(edge.rtmp, "live", "radio").await;
    let started = tokio::time::Instant::now();
    for tag in audio {
        let due = started + Duration::from_millis(u64::from(tag.timestamp_ms));
        tokio::time::sleep_until(due).await;
        p.audio(tag.timestamp_ms, tag.data).await.unwrap();
    }
    let id = livesnap::names::StreamId::new("127.0.0.1", "live", "radio");
    let received = || {
        origin
            .node()
            .registry
            .get(&id)
            .map_or(0, |s| s.hub.pushed_bytes())
    };
    // All of it but what is still on its way (the origin's copy is checked, not the edge's).
    assert!(
        wait_for(Duration::from_secs(5), || received() as usize == sent).await,
        "the origin got {} of {sent} audio bytes",
        received()
    );
    p.finish().await;
}

#[tokio::test]
async fn no_relay_without_a_matching_config() {
    let nginx = Nginx::start("");
    let target = format!("\"{}/{{StreamName}}\"", nginx.url("live"));
    let server = start_server(&relay_config("other", &[target])).await;
    let mut p = start_publish(server.rtmp, "live", "plain").await;
    send_range(&mut p, FIXTURE, 0, 1000).await;
    assert!(
        wait_for(Duration::from_secs(2), || !server
            .node()
            .registry
            .is_empty())
        .await
    );
    assert!(relays_of_first_stream(&server).await.is_empty());
    p.finish().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!nginx.recorded("plain").exists());
}

#[tokio::test]
async fn a_target_that_stops_reading_skips_to_a_keyframe_counted_and_never_slows_the_publish() {
    let nginx = Nginx::start("");
    // The target stops reading for 4 s about 0.5 s into the stream, while the publisher
    // goes on at 6× real time: 2 MB arrive meanwhile, more than the 1 MiB window and the
    // relay's socket buffer.
    let proxy = stalling_proxy(nginx.port, 250_000, Duration::from_secs(4)).await;
    let target = format!("\"rtmp://{proxy}/live/{{StreamName}}\"");
    let config = format!(
        "{}\n[play]\nplayer_queue_bytes = 1048576\n",
        relay_config("live", &[target])
    );
    let server = start_server(&config).await;
    let mut p = start_publish(server.rtmp, "live", "stall").await;
    let started = Instant::now();
    for run in 0..2 {
        p.replay(&fixture(FIXTURE), 6.0, run * 20_100)
            .await
            .unwrap();
    }
    let took = started.elapsed();
    p.finish().await;
    assert!(
        took < Duration::from_millis(6_700 + 1000),
        "the publisher was held by the stalled target: {took:?}"
    );

    // The relay ends once the stalled target has taken what was left.
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&metrics(&server).await, "livesnap_relay_connected") > 0 {
        assert!(Instant::now() < deadline, "the relay did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Without side data: the re-sent sequence header shows as new extradata on the
    // keyframe after the skip.
    let got = frames_only(video_framemd5(&nginx.wait_recorded("stall").await));
    let m = metrics(&server).await;
    let skipped = metric(&m, "livesnap_relay_skipped_bytes_total");
    assert!(skipped > 1_000_000, "skipped {skipped} bytes\n{m}");
    let source = frames_only(video_framemd5(&fixture(FIXTURE)));
    assert!(
        got.len() < 2 * source.len() - 50,
        "{} frames recorded: nothing skipped?",
        got.len()
    );
    // What was recorded after the skip is whole frames of the source, from a keyframe
    // on, up to the very end of the publish.
    let md5 = |l: &String| l.rsplit(',').next().unwrap().trim().to_owned();
    assert_eq!(
        md5(got.last().unwrap()),
        md5(source.last().unwrap()),
        "the end arrived"
    );
    let keyframes: Vec<String> = fixture_tags(FIXTURE)
        .iter()
        .filter(|t| t.tag_type == 9 && t.data.get(1) == Some(&1))
        .zip(&source)
        .filter(|(t, _)| t.data[0] >> 4 == 1)
        .map(|(_, l)| md5(l))
        .collect();
    let pos: Vec<Option<usize>> = got
        .iter()
        .map(|x| source.iter().position(|s| md5(s) == md5(x)))
        .collect();
    let gap = (1..pos.len())
        .find(|&i| match (pos[i - 1], pos[i]) {
            (Some(a), Some(b)) => b != (a + 1) % source.len(),
            _ => true,
        })
        .unwrap_or_else(|| panic!("no skip in the recording: {pos:?}"));
    let resumed = gap;
    assert!(
        keyframes.contains(&md5(&got[resumed])),
        "resumed at a keyframe: {:?}, keyframes at {:?}",
        &pos[gap.saturating_sub(3)..(gap + 5).min(pos.len())],
        keyframes
            .iter()
            .map(|k| source.iter().position(|s| &md5(s) == k))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn shutdown_ends_relays_cleanly_within_the_grace_period() {
    let nginx = Nginx::start("");
    let (hole, hole_task) = black_hole().await;
    let down = free_addr();
    let targets = [
        format!("\"{}/{{StreamName}}\"", nginx.url("live")),
        format!("\"rtmp://{hole}/live/{{StreamName}}\""),
        format!("\"rtmp://{down}/live/{{StreamName}}\""),
    ];
    let mut server = start_server(&relay_config("live", &targets)).await;
    let mut p = start_publish(server.rtmp, "live", "bye").await;
    send_range(&mut p, FIXTURE, 0, 3000).await;
    assert!(
        wait_for(Duration::from_secs(5), || server
            .node()
            .registry
            .list()
            .first()
            .is_some_and(|s| s.relays()[0]
                .connected
                .load(std::sync::atomic::Ordering::Relaxed)))
        .await
    );
    let started = Instant::now();
    // The publisher is still connected, one target is connecting, one backing off.
    assert!(
        server.stop().await,
        "every task ended within the grace period"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // The connected target got an orderly end of its publish.
    nginx.wait_recorded("bye").await;
    assert!(nginx.unpublished_cleanly("bye"), "{}", nginx.log());
    drop(p);
    hole_task.abort();
}

#[tokio::test]
async fn a_tap_passes_the_origins_own_signature_through() {
    // The encoder signs for the origin; the edge has no [[auth]] of its own, so the
    // publish's query (auth_key included) goes upstream unchanged: only the host changed.
    let origin = start_server(&format!(
        "{DEFAULT_RULES}\n[[auth]]\ndomain = \"*\"\nprimary_key = \"origin-key\"\n"
    ))
    .await;
    let targets = [
        format!("\"rtmp://{}/live/{{StreamName}}\"", origin.rtmp),
        format!(
            "{{ url = \"rtmp://{}/other/{{StreamName}}\", pass_query = false }}",
            origin.rtmp
        ),
    ];
    let edge = start_server(&relay_config("live", &targets)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed = livesnap::auth::sign_url("rtmp://h/live/tap", "origin-key", now).unwrap();
    let key = signed.rsplit('/').next().unwrap().to_string();
    assert!(key.starts_with("tap?auth_key="), "{key}");
    let edge_addr = edge.rtmp;
    let publish =
        tokio::spawn(async move { publish_paced(edge_addr, "live", &key, 4000, 1.0).await });
    let id = livesnap::names::StreamId::new("127.0.0.1", "live", "tap");
    assert!(
        wait_for(Duration::from_secs(4), || origin
            .node()
            .registry
            .get(&id)
            .is_some())
        .await,
        "the origin accepted the publish signed for it, relayed by the tap"
    );
    // The target told not to pass the query reaches the origin unsigned: refused.
    let other = livesnap::names::StreamId::new("127.0.0.1", "other", "tap");
    assert!(origin.node().registry.get(&other).is_none());
    assert!(origin.node().metrics.rejected_count("unauthorized") >= 1);
    publish.await.unwrap();
}

#[tokio::test]
async fn an_origin_killed_mid_stream_and_restarted_gets_the_rest_from_a_keyframe() {
    let port = free_addr().port();
    let first = Nginx::start_on(Some(port), "");
    let target = format!("\"rtmp://127.0.0.1:{port}/live/{{StreamName}}\"");
    let server = start_server(&relay_config("live", &[target])).await;
    let publish = tokio::spawn(publish_paced(server.rtmp, "live", "phoenix", 11_000, 1.0));
    let connected = || {
        server.node().registry.list().first().is_some_and(|s| {
            s.relays()[0]
                .connected
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    };
    assert!(
        wait_for(Duration::from_secs(5), connected).await,
        "first connection"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The origin dies mid-stream and comes back on the same port a second later.
    drop(first);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let second = Nginx::start_on(Some(port), "");
    assert!(
        wait_for(Duration::from_secs(8), connected).await,
        "the relay reconnected to the restarted origin"
    );
    let took = publish.await.unwrap();
    assert!(
        took < Duration::from_millis(11_000 + 1500),
        "the publisher was slowed: {took:?}"
    );
    let got = video_framemd5(&second.wait_recorded("phoenix").await);
    let source = video_framemd5(&fixture(FIXTURE));
    let start = assert_tail_of(&got, &source, "recording after the restart");
    assert!(start > 0, "the restarted origin cannot have the start");
    let keyframes = source_keyframes();
    assert!(
        keyframes.contains(&start),
        "recording starts at source frame {start}, keyframes {keyframes:?}"
    );
    let m = metrics(&server).await;
    assert!(metric(&m, "livesnap_relay_reconnects_total") >= 1, "{m}");
}

#[tokio::test]
async fn ffmpeg_and_gstreamer_publishes_reach_the_origin_frame_for_frame() {
    let nginx = Nginx::start("");
    let target = format!("\"{}/{{StreamName}}\"", nginx.url("live"));
    let server = start_server(&relay_config("live", &[target])).await;
    let source = fixture(FIXTURE);
    // ffmpeg, streams copied, as fast as it can (paced by the node's snapshot queue).
    let status = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&source)
        .args(["-c", "copy", "-f", "flv"])
        .arg(server.url("live", "ff"))
        .status()
        .await
        .expect("ffmpeg runs");
    assert!(status.success());
    // GStreamer's rtmp2sink, remuxing the same file.
    let pipeline = format!(
        "filesrc location={} ! flvdemux name=d d.video ! queue ! h264parse ! flvmux streamable=true name=m ! rtmp2sink location={} d.audio ! queue ! aacparse ! m.",
        source.display(),
        server.url("live", "gst")
    );
    let status = tokio::process::Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace())
        .status()
        .await
        .expect("gst-launch-1.0 runs");
    assert!(status.success());

    let want = decoded_md5s(&source);
    for stream in ["ff", "gst"] {
        let got = decoded_md5s(&nginx.wait_recorded(stream).await);
        assert_eq!(
            got.len(),
            want.len(),
            "{stream}: decoded frames at the origin"
        );
        assert!(
            got == want,
            "{stream}: the origin's pictures differ from the source's"
        );
    }
    for stream in ["ff", "gst"] {
        let key = format!("live/{stream}.jpg");
        assert!(
            wait_for(Duration::from_secs(10), || list_files(&server.root())
                .contains(&key))
            .await,
            "snapshots of {stream} stored"
        );
    }
}
