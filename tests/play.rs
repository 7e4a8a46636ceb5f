//! RTMP players of live streams: the library's `Player` and the `ffmpeg` CLI play what a
//! publisher sends, through the node's fan-out (`hub`), from a keyframe on, byte for
//! byte.

mod common;

use std::time::{Duration, Instant};

use common::*;
use livesnap::rtmp::client::{ClientError, ClientOptions, Endpoint, MediaKind, Player};
use livesnap::testing::replay::{Recording, Tag};
use tokio::net::TcpStream;

const FIXTURE: &str = "high_1280x720_bframes_aac.flv";

fn opts() -> ClientOptions {
    ClientOptions {
        handshake_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

async fn play(
    server: &TestServer,
    app: &str,
    stream: &str,
) -> Result<Player<TcpStream>, ClientError> {
    let io = TcpStream::connect(server.rtmp).await.unwrap();
    let endpoint = Endpoint::parse(&format!("rtmp://{}/{app}", server.rtmp)).unwrap();
    Player::play(io, &endpoint, stream, opts()).await
}

fn recording() -> Recording {
    Recording::load(fixture(FIXTURE)).unwrap()
}

/// Publishes `live/STREAM` with the fixture's first second (as fast as possible, the
/// publish left open), then starts a player of it.
async fn live_second_and_player(
    server: &TestServer,
    stream: &str,
) -> (Publisher, Player<TcpStream>) {
    let mut publisher = start_publish(server.rtmp, "live", stream).await;
    send_range(&mut publisher, FIXTURE, 0, 1000).await;
    let player = play(server, "live", stream).await.unwrap();
    (publisher, player)
}

/// A node with the default rules and `settings` in its `[play]` table.
async fn with_play(settings: &str) -> TestServer {
    start_server(&format!("{DEFAULT_RULES}\n[play]\n{settings}\n")).await
}

/// Waits until `app/stream` is live on the node.
async fn wait_live(server: &TestServer, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .node()
        .registry
        .list()
        .iter()
        .any(|s| s.id.stream == stream)
    {
        assert!(Instant::now() < deadline, "{stream} never went live");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_player_joining_mid_stream_gets_headers_then_every_message_from_a_keyframe() {
    let server = start_server(DEFAULT_RULES).await;
    let publisher = tokio::spawn(publish_fixture_to(server.rtmp, "live", "cam", FIXTURE, 1.0));
    wait_live(&server, "cam").await;
    // Join between two keyframes (every 2 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut player = play(&server, "live", "cam").await.unwrap();
    let mut got = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let m = player
            .recv()
            .await
            .unwrap()
            .expect("the publish is still on");
        got.push(m);
    }
    player.close().await.unwrap();
    publisher.abort();

    let tags: Vec<Tag> = recording().tags().to_vec();
    let is_header = |kind: MediaKind, p: &[u8]| match kind {
        MediaKind::Video => p.len() > 1 && p[0] == 0x17 && p[1] == 0,
        MediaKind::Audio => p.len() > 1 && p[0] >> 4 == 10 && p[1] == 0,
        MediaKind::Data => true,
    };
    // Sequence headers first, as the publisher sent them (the file's first tags).
    let headers: Vec<_> = got
        .iter()
        .take_while(|m| is_header(m.kind, &m.payload))
        .collect();
    let video_header = tags.iter().find(|t| t.kind == MediaKind::Video).unwrap();
    let audio_header = tags.iter().find(|t| t.kind == MediaKind::Audio).unwrap();
    assert!(
        headers.iter().any(|m| m.payload == video_header.payload),
        "the AVC sequence header comes before any picture"
    );
    assert!(
        headers.iter().any(|m| m.payload == audio_header.payload),
        "the AAC sequence header comes before any sound"
    );
    // Then a keyframe, and from there every message of the file in order, unchanged.
    let media = &got[headers.len()..];
    let first = &media[0];
    assert_eq!(first.kind, MediaKind::Video);
    assert_eq!(first.payload[0], 0x17, "the first picture is a keyframe");
    assert!(first.timestamp > 0, "joined mid-stream, not at the start");
    let start = tags
        .iter()
        .position(|t| {
            t.kind == MediaKind::Video
                && t.timestamp == first.timestamp
                && t.payload == first.payload
        })
        .expect("the first picture is one of the file's keyframes");
    assert!(tags[start].keyframe);
    assert!(media.len() > 50, "3 s of media played, got {}", media.len());
    for (i, (m, t)) in media.iter().zip(&tags[start..]).enumerate() {
        assert_eq!(
            (m.kind, m.timestamp, &m.payload),
            (t.kind, t.timestamp, &t.payload),
            "message {i} after the keyframe"
        );
    }
}

#[tokio::test]
async fn without_the_gop_cache_a_player_starts_at_the_next_keyframe() {
    let server = with_play("gop_cache = false").await;
    let mut publisher = start_publish(server.rtmp, "live", "cam").await;
    // Keyframes every 2 s: the newest one sent before the player joins is at about 2 s.
    send_range(&mut publisher, FIXTURE, 0, 3000).await;
    wait_live(&server, "cam").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut player = play(&server, "live", "cam").await.unwrap();
    send_range(&mut publisher, FIXTURE, 3000, 6000).await;
    let mut got = Vec::new();
    while got
        .last()
        .is_none_or(|m: &livesnap::rtmp::client::Media| m.timestamp < 5500)
    {
        got.push(
            player
                .recv()
                .await
                .unwrap()
                .expect("the publish is still on"),
        );
    }
    let tags: Vec<Tag> = recording().tags().to_vec();
    // Headers at once, then nothing before the first keyframe sent after the join.
    let first = got
        .iter()
        .position(|m| m.kind == MediaKind::Video && m.payload[1] == 1)
        .expect("a picture");
    let picture = &got[first];
    assert_eq!(picture.payload[0], 0x17, "the first picture is a keyframe");
    assert!(
        picture.timestamp >= 3000,
        "the first picture is the keyframe after the join, not the cached one at {} ms",
        picture.timestamp
    );
    assert!(
        got[..first]
            .iter()
            .all(|m| m.kind == MediaKind::Data || m.payload.get(1) == Some(&0)),
        "only metadata and sequence headers come before it"
    );
    let start = tags
        .iter()
        .position(|t| t.kind == MediaKind::Video && t.timestamp == picture.timestamp && t.keyframe)
        .expect("one of the file's keyframes");
    let media: Vec<_> = got[first..]
        .iter()
        .filter(|m| m.kind != MediaKind::Data)
        .collect();
    for (i, (m, t)) in media.iter().zip(&tags[start..]).enumerate() {
        assert_eq!(
            (m.kind, m.timestamp, &m.payload),
            (t.kind, t.timestamp, &t.payload),
            "message {i} after the keyframe"
        );
    }
    publisher.finish().await;
}

/// Without the GOP cache a stream holds no picture, not even one for on-demand
/// snapshots: such a snapshot waits for the stream's next keyframe, and hears at once when
/// the publish ends first.
#[tokio::test]
async fn without_the_gop_cache_an_on_demand_snapshot_waits_for_the_next_keyframe() {
    let server = with_play("gop_cache = false").await;
    let mut publisher = start_publish(server.rtmp, "live", "lean").await;
    send_range(&mut publisher, FIXTURE, 0, 1000).await;
    let live = server.node().registry.list()[0].clone();
    assert!(
        live.info().last_keyframe.is_none(),
        "a keyframe is held for nobody"
    );
    let path = format!("/api/v1/streams/{}/live/lean/snapshot", live.id.domain);
    let http = server.http;
    let asked = {
        let path = path.clone();
        tokio::spawn(async move { http_request(http, "POST", &path).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!asked.is_finished(), "answered before any keyframe came");
    // The next keyframe (2 s) arrives: the snapshot is rendered from it.
    send_range(&mut publisher, FIXTURE, 1000, 2100).await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), asked)
        .await
        .expect("answered once the keyframe came")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(live.info().last_keyframe.is_none());
    // A snapshot waiting when the publish ends is answered then, not after its 10 s.
    let asked = tokio::spawn(async move { http_request(http, "POST", &path).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ended = Instant::now();
    publisher.finish().await;
    let (status, body) = asked.await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("ended before its next keyframe"), "{body}");
    assert!(
        ended.elapsed() < Duration::from_secs(3),
        "{:?}",
        ended.elapsed()
    );
}

#[tokio::test]
async fn a_player_may_wait_for_the_publish_to_start() {
    let server = with_play("wait_for_publish_secs = 10").await;
    // The player asks first; the publish starts 700 ms later.
    let (player, publisher) = tokio::join!(play(&server, "live", "cam"), async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut p = start_publish(server.rtmp, "live", "cam").await;
        send_range(&mut p, FIXTURE, 0, 1000).await;
        p
    });
    let mut player = player.expect("the play waits for the publish");
    let first = loop {
        let m = player.recv().await.unwrap().expect("media");
        if m.kind == MediaKind::Video && m.payload[1] == 1 {
            break m;
        }
    };
    assert_eq!(first.payload[0], 0x17, "the first picture is a keyframe");
    assert_eq!(first.timestamp, 0, "from the start of the publish");
    publisher.finish().await;

    // Nobody publishes: refused once the wait is over, naming the setting.
    let server = with_play("wait_for_publish_secs = 1").await;
    let asked = Instant::now();
    let err = play(&server, "live", "nobody")
        .await
        .err()
        .expect("a play of a stream that never went live");
    let status = err.status().expect("a status").clone();
    assert_eq!(status.code, "NetStream.Play.StreamNotFound");
    assert!(
        status.description.contains("wait_for_publish_secs"),
        "{}",
        status.description
    );
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
}

/// A wait longer than the idle timeout: the play's start, not the last read before the
/// wait, is where the player's idle time starts.
#[tokio::test]
async fn a_wait_longer_than_the_idle_timeout_still_plays() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nrtmp_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
         idle_timeout_secs = 1\n[storage.default]\nscheme = \"fs\"\nroot = \"{}\"\n\
         {DEFAULT_RULES}\n[play]\nwait_for_publish_secs = 10\n",
        dir.path().join("snapshots").display()
    );
    let server = TestServer::start(dir, &text).await;
    let (player, publisher) = tokio::join!(play(&server, "live", "cam"), async {
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let mut p = start_publish(server.rtmp, "live", "cam").await;
        // Live, but no media for a moment: the player's connection has nothing to send.
        tokio::time::sleep(Duration::from_millis(300)).await;
        send_range(&mut p, FIXTURE, 0, 1000).await;
        p
    });
    let mut player = player.expect("the play waits for the publish");
    // Pictures up to the end of the second sent.
    let mut last = 0;
    while last < 900 {
        let m = player
            .recv()
            .await
            .expect("the player is not closed as idle")
            .expect("media");
        if m.kind == MediaKind::Video {
            last = m.timestamp;
        }
    }
    publisher.finish().await;
}

/// Sends the fixture's tags with `from_ms <= timestamp < to_ms` at real-time pace.
async fn send_paced(p: &mut Publisher, from_ms: u32, to_ms: u32) {
    let started = Instant::now();
    for tag in fixture_tags(FIXTURE) {
        if !(from_ms..to_ms).contains(&tag.timestamp_ms) {
            continue;
        }
        let due = Duration::from_millis(u64::from(tag.timestamp_ms - from_ms));
        tokio::time::sleep_until((started + due).into()).await;
        match tag.tag_type {
            9 => p.video(tag.timestamp_ms, tag.data).await.unwrap(),
            8 => p.audio(tag.timestamp_ms, tag.data).await.unwrap(),
            _ => {}
        }
    }
}

/// An encoder that reconnects: with `wait_for_publish_secs`, its players stay connected,
/// hear nothing while it is away, then get the new publish's headers and pictures, with
/// timestamps that carry on from where they were.
#[tokio::test]
async fn a_player_stays_through_a_republish_and_its_time_goes_on() {
    let server = with_play("wait_for_publish_secs = 5").await;
    let (publisher, mut player) = live_second_and_player(&server, "cam").await;
    let tags = recording().tags().to_vec();
    let last_video = tags
        .iter()
        .filter(|t| t.kind == MediaKind::Video && t.timestamp < 1000)
        .map(|t| t.timestamp)
        .max()
        .unwrap();
    let mut last = 0;
    while last < last_video {
        let m = player.recv().await.unwrap().expect("media");
        if m.kind == MediaKind::Video {
            last = m.timestamp;
        }
    }
    let first_bytes = server.node().registry.list()[0].players.list()[0]
        .totals()
        .0;
    assert!(first_bytes > 0);
    publisher.finish().await;
    let metrics = &server.node().metrics;
    assert!(
        wait_for(Duration::from_secs(5), || metrics.players_waiting.get()
            == 1)
        .await,
        "the player waits for the next publish"
    );
    assert!(server.node().registry.list().is_empty());
    let away = Duration::from_millis(400);
    tokio::time::sleep(away).await;
    let mut publisher = start_publish(server.rtmp, "live", "cam").await;
    send_range(&mut publisher, FIXTURE, 0, 1000).await;

    // The new publish: its sequence headers, then its first keyframe, every message as
    // sent, each timestamp moved by one shift that puts the keyframe after the wait.
    let mut got = Vec::new();
    while got.len() < 20 {
        let m = player.recv().await.unwrap().expect("the play goes on");
        if m.kind != MediaKind::Data {
            got.push(m);
        }
    }
    // What was left of the first publish (its last sounds) comes first.
    let is_header = |p: &[u8]| p.len() > 1 && p[1] == 0;
    let rest = got.iter().take_while(|m| !is_header(&m.payload)).count();
    for m in &got[..rest] {
        assert!(
            m.timestamp < 1000,
            "{} ms: not of the first publish",
            m.timestamp
        );
        last = last.max(m.timestamp);
    }
    let got = &got[rest..];
    let media: Vec<_> = got.iter().skip_while(|m| is_header(&m.payload)).collect();
    assert!(
        got.len() - media.len() >= 2,
        "sequence headers come first again"
    );
    assert!(
        got[..got.len() - media.len()]
            .iter()
            .all(|m| m.timestamp == last),
        "headers at the point the player reached ({last} ms)"
    );
    let key = media[0];
    assert_eq!(key.kind, MediaKind::Video);
    assert_eq!(
        key.payload[0], 0x17,
        "the next publish starts at a keyframe"
    );
    let gap = key.timestamp.wrapping_sub(last);
    assert!(
        (away.as_millis() as u32..10_000).contains(&gap),
        "the keyframe comes {gap} ms after the last picture of the first publish"
    );
    let shift = key.timestamp;
    let from = tags
        .iter()
        .position(|t| t.kind == MediaKind::Video && t.payload == key.payload)
        .expect("the first keyframe of the fixture");
    for (i, (m, t)) in media.iter().zip(&tags[from..]).enumerate() {
        assert_eq!(
            (m.kind, m.timestamp, &m.payload),
            (t.kind, t.timestamp + shift, &t.payload),
            "message {i} of the next publish"
        );
    }
    // One player all along: listed on the new publish, with its bytes carried on.
    assert_eq!(metrics.players_waiting.get(), 0);
    assert_eq!(metrics.players_active.get(), 1);
    let live = server.node().registry.list();
    let players = live[0].players.list();
    assert_eq!(players.len(), 1);
    assert!(players[0].totals().0 > first_bytes);
    // Its place on the new publish is the one the API disconnects.
    let path = format!(
        "/api/v1/streams/{}/live/cam/players/{}",
        live[0].id.domain, players[0].id
    );
    let (status, body) = http_request(server.http, "DELETE", &path).await.unwrap();
    assert_eq!(status, 204, "{body}");
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        while let Ok(Some(_)) = player.recv().await {}
    });
    assert!(closed.await.is_ok(), "the kicked player is still connected");
    publisher.finish().await;
}

/// A player kept after its publish, when no publish follows: its play completes when the
/// wait is over, and the connection closes.
#[tokio::test]
async fn a_kept_player_ends_when_no_publish_follows() {
    let server = with_play("wait_for_publish_secs = 1").await;
    let (publisher, mut player) = live_second_and_player(&server, "gone").await;
    publisher.finish().await;
    let ended = Instant::now();
    let mut pictures = 0;
    while let Some(m) = player.recv().await.expect("told, not cut") {
        pictures += usize::from(m.kind == MediaKind::Video);
    }
    assert!(pictures > 5, "{pictures} pictures");
    assert!(
        ended.elapsed() >= Duration::from_millis(900),
        "the play completed {:?} after the publish ended, before the wait was over",
        ended.elapsed()
    );
    assert!(player.recv().await.is_err(), "the connection closes");
    let metrics = &server.node().metrics;
    assert!(
        wait_for(Duration::from_secs(2), || {
            metrics.players_waiting.get() == 0 && metrics.players_active.get() == 0
        })
        .await
    );
}

/// A client that leaves while its play waits for a publish is gone at once, not when the
/// wait is over.
#[tokio::test]
async fn a_waiting_player_that_leaves_is_gone_at_once() {
    let server = with_play("wait_for_publish_secs = 60").await;
    let rtmp = server.rtmp;
    let waiting = tokio::spawn(async move {
        let io = TcpStream::connect(rtmp).await.unwrap();
        let endpoint = Endpoint::parse(&format!("rtmp://{rtmp}/live")).unwrap();
        let opts = ClientOptions {
            command_timeout: Duration::from_secs(120),
            ..opts()
        };
        Player::play(io, &endpoint, "later", opts).await
    });
    let metrics = &server.node().metrics;
    assert!(
        wait_for(Duration::from_secs(5), || metrics.players_waiting.get()
            == 1)
        .await
    );
    waiting.abort();
    // The wait belongs to the connection: it ends when the connection task does.
    assert!(
        wait_for(Duration::from_secs(3), || metrics.players_waiting.get()
            == 0)
        .await,
        "the play still waits for its publish after its client left"
    );
}

/// The `field` (`pts_time`, `dts_time`) of every packet of `stream` (`v:0`, `a:0`) in a
/// recorded file, in seconds, as ffprobe reads them.
fn packet_times(file: &std::path::Path, stream: &str, field: &str) -> Vec<f64> {
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", stream, "-show_entries"])
        .arg(format!("packet={field}"))
        .args(["-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&probe.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

/// A real player across an encoder reconnect: ffmpeg records one stream with the pictures
/// of both publishes, its time never going back.
#[tokio::test]
async fn ffmpeg_records_one_stream_across_an_encoder_reconnect() {
    let server = with_play("wait_for_publish_secs = 2").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("played.flv");
    let ffmpeg = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-rw_timeout",
            "20000000",
        ])
        .arg("-i")
        .arg(server.url("live", "re"))
        .args(["-c", "copy", "-f", "flv", "-y"])
        .arg(&out)
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg runs");
    let metrics = &server.node().metrics;
    assert!(
        wait_for(Duration::from_secs(10), || metrics.players_waiting.get()
            == 1)
        .await
    );
    for _ in 0..2 {
        let mut publisher = start_publish(server.rtmp, "live", "re").await;
        send_paced(&mut publisher, 0, 3000).await;
        publisher.finish().await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // The play completes 2 s after the second publish; ffmpeg then finishes its file.
    let status = tokio::time::timeout(Duration::from_secs(20), ffmpeg.wait_with_output())
        .await
        .expect("ffmpeg ends after the play")
        .unwrap()
        .status;
    assert!(status.success(), "ffmpeg: {status}");
    let dts = packet_times(&out, "v:0", "dts_time");
    // 3 s at 30 fps, twice.
    assert!(dts.len() >= 170, "{} pictures recorded", dts.len());
    assert!(
        dts.windows(2).all(|w| w[1] > w[0]),
        "the recorded time goes back"
    );
    let span = dts[dts.len() - 1] - dts[0];
    assert!(
        (6.3..9.0).contains(&span),
        "both publishes and the time between them: {span:.2} s"
    );
    // Every picture decodes.
    let decoded = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&out)
        .output()
        .expect("ffprobe runs");
    let frames: usize = String::from_utf8_lossy(&decoded.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(frames, dts.len(), "pictures that decode");
}

#[tokio::test]
async fn a_player_is_told_when_the_publish_ends() {
    let server = start_server(DEFAULT_RULES).await;
    let (publisher, mut player) = live_second_and_player(&server, "short").await;
    let mut pictures = 0;
    // What was live when it joined: headers and the first keyframe's group.
    let first = loop {
        let m = player.recv().await.unwrap().expect("media");
        // The node's own data messages (|RtmpSampleAccess, NetStream.Data.Start) first.
        if m.kind != MediaKind::Data {
            break m;
        }
    };
    assert_eq!(first.kind, MediaKind::Video);
    publisher.finish().await;
    while let Some(m) = player.recv().await.unwrap() {
        pictures += usize::from(m.kind == MediaKind::Video);
    }
    assert!(
        pictures > 5,
        "the group of pictures so far was played: {pictures}"
    );
    // The connection is closed after the end was announced.
    assert!(player.recv().await.is_err());
}

/// Bytes below the publisher's receive low-water mark still reach a player when the
/// publisher pauses: one small audio message and then nothing arrives within the drain's
/// 200 ms (here: within 1.5 s), not only when more media follows or the idle timeout (5 s
/// on the test server) ends the publish.
#[tokio::test]
async fn a_small_message_before_a_pause_reaches_the_player() {
    let server = start_server(DEFAULT_RULES).await;
    let (mut publisher, mut player) = live_second_and_player(&server, "pause").await;
    // Let the publisher's connection settle with readers (and their lower mark) attached.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tag = fixture_tags(FIXTURE)
        .into_iter()
        .find(|t| t.tag_type == 8 && t.timestamp_ms >= 1000)
        .expect("an audio tag after 1 s");
    assert!(
        tag.data.len() < 1024,
        "a small message: {} bytes",
        tag.data.len()
    );
    publisher
        .audio(tag.timestamp_ms, tag.data.clone())
        .await
        .unwrap();
    let got = audio_at(&mut player, tag.timestamp_ms, Duration::from_millis(1500)).await;
    assert_eq!(got.payload, tag.data);
    publisher.finish().await;
}

#[tokio::test]
async fn a_play_of_a_stream_that_is_not_live_is_refused() {
    let server = start_server(DEFAULT_RULES).await;
    let err = play(&server, "live", "nobody")
        .await
        .err()
        .expect("refused");
    let status = err.status().expect("a status, not a dropped connection");
    assert_eq!(status.code, "NetStream.Play.StreamNotFound");
    assert!(status.description.contains("nobody"), "{status}");
}

#[tokio::test]
async fn play_can_be_disabled_and_players_per_stream_are_capped() {
    let server = with_play("max_players_per_stream = 1").await;
    let mut publisher = start_publish(server.rtmp, "live", "capped").await;
    send_range(&mut publisher, FIXTURE, 0, 600).await;
    let first = play(&server, "live", "capped").await.unwrap();
    let err = play(&server, "live", "capped")
        .await
        .err()
        .expect("refused");
    let status = err.status().expect("a status");
    assert_eq!(status.code, "NetStream.Play.Failed");
    assert!(
        status.description.contains("max_players_per_stream"),
        "{status}"
    );
    drop(first);
    // The slot is free again once the first player is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match play(&server, "live", "capped").await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "slot never freed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publisher.finish().await;

    let server = with_play("enabled = false").await;
    let mut publisher = start_publish(server.rtmp, "live", "off").await;
    send_range(&mut publisher, FIXTURE, 0, 600).await;
    let err = play(&server, "live", "off").await.err().expect("refused");
    assert!(err
        .status()
        .unwrap()
        .description
        .contains("play is disabled"));
    publisher.finish().await;
}

/// Plays `url` with the `ffmpeg` CLI into `out`, 2 s of the stream copied into FLV;
/// panics unless ffmpeg succeeds.
async fn ffmpeg_records_2s(url: String, out: &std::path::Path) {
    let status = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-rw_timeout",
            "10000000",
        ])
        .arg("-i")
        .arg(url)
        .args(["-t", "2", "-c", "copy", "-f", "flv", "-y"])
        .arg(out)
        .kill_on_drop(true)
        .status()
        .await
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg failed to play: {status}");
}

/// Plays `url` with the `ffmpeg` CLI for 2 s (into an FLV file, copied) and checks what
/// it recorded: 1280x720 H.264, at least 30 frames.
async fn ffmpeg_plays(url: String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("played.flv");
    ffmpeg_records_2s(url, &out).await;
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(&out)
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&probe.stdout);
    let fields: Vec<&str> = text.trim().split(',').collect();
    assert_eq!(&fields[..3], ["h264", "1280", "720"], "ffprobe: {text}");
    let frames: u32 = fields[3].parse().unwrap();
    assert!(frames >= 30, "2 s of video decoded, got {frames} frames");
}

#[tokio::test]
async fn ffmpeg_plays_a_live_stream() {
    let server = start_server(DEFAULT_RULES).await;
    let publisher = tokio::spawn(publish_fixture_to(server.rtmp, "live", "ff", FIXTURE, 1.0));
    wait_live(&server, "ff").await;
    ffmpeg_plays(server.url("live", "ff")).await;
    publisher.abort();
}

#[tokio::test]
async fn ffmpeg_started_before_the_publish_waits_for_it_and_plays() {
    let server = with_play("wait_for_publish_secs = 30").await;
    let rtmp = server.rtmp;
    let publisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        publish_fixture_to(rtmp, "live", "late", FIXTURE, 1.0).await;
    });
    // Refused at once without the wait (ffmpeg would then fail).
    ffmpeg_plays(server.url("live", "late")).await;
    publisher.abort();
}

/// A stream without video (a radio station): players start at once with its sound, not
/// at a keyframe that never comes.
#[tokio::test]
async fn ffmpeg_plays_an_audio_only_stream() {
    let server = start_server(DEFAULT_RULES).await;
    let rtmp = server.rtmp;
    let publisher = tokio::spawn(async move {
        let mut p = start_publish(rtmp, "live", "radio").await;
        let started = Instant::now();
        for tag in fixture_tags(FIXTURE) {
            if tag.tag_type != 8 {
                continue;
            }
            let due = Duration::from_millis(u64::from(tag.timestamp_ms));
            tokio::time::sleep_until((started + due).into()).await;
            p.audio(tag.timestamp_ms, tag.data).await.unwrap();
        }
        p
    });
    wait_live(&server, "radio").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("radio.flv");
    ffmpeg_records_2s(server.url("live", "radio"), &out).await;
    publisher.abort();
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name",
        ])
        .args(["-of", "csv=p=0"])
        .arg(&out)
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&probe.stdout);
    assert_eq!(text.trim(), "aac,audio", "one AAC stream, nothing else");
    let pts = packet_times(&out, "a:0", "pts_time");
    // AAC at 44.1 kHz: a frame every 23.2 ms, none missing, from the newest frame when
    // ffmpeg joined (ffmpeg's `-t` ends the file at 2 s of the stream's own time).
    assert!(pts.len() >= 40, "{} audio frames", pts.len());
    assert!(
        pts.windows(2)
            .all(|w| (0.020..0.027).contains(&(w[1] - w[0]))),
        "frames missing: {pts:?}"
    );
}

#[tokio::test]
async fn a_player_that_reads_nothing_is_closed_and_the_publisher_is_unaffected() {
    let server = with_play("player_queue_bytes = 65536\nlag_close_secs = 1").await;
    let mut publisher = start_publish(server.rtmp, "live", "stuck").await;
    send_range(&mut publisher, FIXTURE, 0, 600).await;
    // A player with a tiny receive buffer that never reads after the play started.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let io = socket.connect(server.rtmp).await.unwrap();
    let endpoint = Endpoint::parse(&format!("rtmp://{}/live", server.rtmp)).unwrap();
    let stuck = Player::play(io, &endpoint, "stuck", opts()).await.unwrap();
    // A healthy player alongside it, reading in its own task.
    let mut healthy = play(&server, "live", "stuck").await.unwrap();
    let reader = tokio::spawn(async move {
        let mut pictures = 0usize;
        while let Ok(Some(m)) = healthy.recv().await {
            pictures += usize::from(m.kind == MediaKind::Video);
        }
        pictures
    });
    // 8 s of media at real-time pace.
    let started = Instant::now();
    for tag in fixture_tags(FIXTURE) {
        if !(600..8600).contains(&tag.timestamp_ms) {
            continue;
        }
        let due = Duration::from_millis(u64::from(tag.timestamp_ms - 600));
        tokio::time::sleep_until((started + due).into()).await;
        match tag.tag_type {
            9 => publisher.video(tag.timestamp_ms, tag.data).await.unwrap(),
            8 => publisher.audio(tag.timestamp_ms, tag.data).await.unwrap(),
            _ => {}
        }
    }
    let took = started.elapsed();
    let lagging = server
        .node()
        .metrics
        .connections_rejected
        .get_or_create(&vec![("reason", "player_lagging")])
        .get();
    assert_eq!(lagging, 1, "the stuck player, and only it, was closed");
    assert!(
        took < Duration::from_millis(8500),
        "the publisher was held up: 8 s of media took {took:?}"
    );
    publisher.finish().await;
    let pictures = reader.await.unwrap();
    // 30 fps for 8 s, after the group of pictures it started with.
    assert!(
        pictures >= 240,
        "the healthy player got {pictures} pictures"
    );
    drop(stuck);
}

/// `stream?auth_key=…` signed with `key` now.
fn signed(stream: &str, key: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let url = livesnap::auth::sign_url(&format!("rtmp://h/live/{stream}"), key, now).unwrap();
    url.rsplit('/').next().unwrap().to_string()
}

#[tokio::test]
async fn with_auth_players_sign_with_the_play_key_unless_play_is_public() {
    let auth =
        "[[auth]]\ndomain = \"*\"\nprimary_key = \"publish-key-1\"\nplay_key = \"play-key-123\"\n";
    let server = start_server(&format!("{DEFAULT_RULES}\n{auth}")).await;
    let mut publisher =
        start_publish(server.rtmp, "live", &signed("guarded", "publish-key-1")).await;
    send_range(&mut publisher, FIXTURE, 0, 600).await;
    for (stream, why) in [
        ("guarded".to_string(), "unsigned"),
        (
            signed("guarded", "publish-key-1"),
            "signed with the publish key",
        ),
        (
            signed("guarded", "wrong-key-000"),
            "signed with a wrong key",
        ),
    ] {
        let err = play(&server, "live", &stream)
            .await
            .err()
            .unwrap_or_else(|| panic!("{why}: accepted"));
        assert_eq!(
            err.status().expect(why).code,
            "NetStream.Play.Unauthorized",
            "{why}"
        );
    }
    let mut player = play(&server, "live", &signed("guarded", "play-key-123"))
        .await
        .unwrap();
    let first = loop {
        let m = player.recv().await.unwrap().expect("media");
        if m.kind != MediaKind::Data {
            break m;
        }
    };
    assert_eq!(first.kind, MediaKind::Video);
    publisher.finish().await;

    let server = start_server(&format!("{DEFAULT_RULES}\n{auth}\n[play]\npublic = true\n")).await;
    let mut publisher = start_publish(server.rtmp, "live", &signed("open", "publish-key-1")).await;
    send_range(&mut publisher, FIXTURE, 0, 600).await;
    play(&server, "live", "open")
        .await
        .expect("public play needs no signature");
    publisher.finish().await;
}

/// A node started from a config file whose `[section]` holds `body`, to be written
/// again with another body and reloaded (SIGHUP's path).
struct Reloadable {
    server: TestServer,
    dir: tempfile::TempDir,
    section: &'static str,
    file: livesnap::server::ConfigFile,
}

impl Reloadable {
    async fn start(section: &'static str, body: &str) -> Reloadable {
        let dir = tempfile::tempdir().unwrap();
        let text = Reloadable::text(&dir, section, body);
        let file = livesnap::server::ConfigFile {
            path: dir.path().join("livesnap.toml"),
            started: livesnap::config::Config::parse(&text).unwrap(),
        };
        let server = TestServer::start(tempfile::tempdir().unwrap(), &text).await;
        Reloadable {
            server,
            dir,
            section,
            file,
        }
    }

    fn text(dir: &tempfile::TempDir, section: &str, body: &str) -> String {
        format!(
            "[server]\nrtmp_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
             [storage.default]\nscheme = \"fs\"\nroot = \"{}\"\n{DEFAULT_RULES}\n[{section}]\n{body}\n",
            dir.path().join("snapshots").display()
        )
    }

    fn running(&self) -> &livesnap::server::Running {
        self.server.running.as_ref().unwrap()
    }

    /// Writes the file with `body` in the section and reloads it; nothing may need a
    /// restart.
    async fn reload(&self, body: &str) {
        let text = Reloadable::text(&self.dir, self.section, body);
        std::fs::write(&self.file.path, text).unwrap();
        let report = self.running().reload_config(&self.file).await.unwrap();
        assert!(report.restart_only.is_empty(), "{report:?}");
    }
}

/// `[access]`: a publish or play from an address outside the lists is refused before
/// anything else, counted, and the lists follow a config reload (SIGHUP's path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_lists_refuse_publishers_and_players_from_elsewhere_and_follow_a_reload() {
    init_logs();
    let node = Reloadable::start("access", "publish_from = [\"10.0.0.0/8\"]").await;
    let running = node.running();
    let server = &node.server;
    let tc = format!("rtmp://{}/live", server.rtmp);

    let (_, out) = Publisher::connect(server.rtmp, &tc, "live", "cam").await;
    let PublishOutcome::Refused(why) = out else {
        panic!("a publish from 127.0.0.1 was accepted");
    };
    assert!(
        why.contains("NetStream.Publish.Unauthorized")
            && why.contains("127.0.0.1")
            && why.contains("publish_from"),
        "{why}"
    );
    let rejected = || running.node.metrics.rejected_count("address_not_allowed");
    assert_eq!(rejected(), 1);

    // Loopback may publish now; players only from a network the test is not on.
    node.reload("publish_from = [\"127.0.0.0/8\", \"::1\"]\nplay_from = [\"192.0.2.0/24\"]")
        .await;
    let mut publisher = start_publish(server.rtmp, "live", "cam").await;
    send_range(&mut publisher, FIXTURE, 0, 600).await;
    let err = play(server, "live", "cam")
        .await
        .err()
        .expect("a player from 127.0.0.1 was accepted");
    assert_eq!(err.status().unwrap().code, "NetStream.Play.Unauthorized");

    // With no play list, anyone plays: the first media is the stream's.
    node.reload("publish_from = [\"127.0.0.0/8\"]").await;
    let mut player = play(server, "live", "cam").await.unwrap();
    let first = loop {
        let m = player.recv().await.unwrap().expect("media");
        if m.kind != MediaKind::Data {
            break m;
        }
    };
    assert_eq!(first.kind, MediaKind::Video);
    assert_eq!(rejected(), 1);
    publisher.finish().await;
}

/// `[play]` follows a config reload from the next play: a player that started keeps
/// playing, a new one is refused while play is off, and a raised cap lets one more in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_settings_follow_a_reload_from_the_next_play() {
    init_logs();
    let node = Reloadable::start("play", "max_players_per_stream = 1").await;
    let server = &node.server;
    let refusal = |r: Result<Player<TcpStream>, ClientError>, why: &str| {
        let status = r
            .err()
            .unwrap_or_else(|| panic!("{why}: accepted"))
            .status()
            .unwrap_or_else(|| panic!("{why}: no status"))
            .clone();
        assert_eq!(status.code, "NetStream.Play.Failed", "{why}");
        status.description
    };

    let (mut publisher, mut first) = live_second_and_player(server, "cam").await;
    let why = refusal(play(server, "live", "cam").await, "a second player");
    assert!(why.contains("max_players_per_stream"), "{why}");

    node.reload("enabled = false").await;
    let why = refusal(play(server, "live", "cam").await, "a play with play off");
    assert!(why.contains("enabled = false"), "{why}");
    // The player that started before the reload plays on.
    send_range(&mut publisher, FIXTURE, 1000, 2000).await;
    let mut last = 0;
    while last < 1500 {
        let m = first.recv().await.unwrap().expect("media");
        last = m.timestamp;
    }

    node.reload("max_players_per_stream = 2").await;
    let mut second = play(server, "live", "cam").await.unwrap();
    let m = loop {
        let m = second.recv().await.unwrap().expect("media");
        if m.kind != MediaKind::Data {
            break m;
        }
    };
    assert_eq!(m.kind, MediaKind::Video);
    let why = refusal(play(server, "live", "cam").await, "a third player");
    assert!(why.contains("has 2 players"), "{why}");
    publisher.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lists_a_streams_players_and_disconnects_one() {
    let server = start_server(DEFAULT_RULES).await;
    let (mut publisher, mut first) = live_second_and_player(&server, "cam").await;
    let mut second = play(&server, "live", "cam").await.unwrap();
    for p in [&mut first, &mut second] {
        while p.recv().await.unwrap().expect("media").kind != MediaKind::Video {}
    }
    let id = server.node().registry.list()[0].id.clone();
    let base = &format!("/api/v1/streams/{}/live/cam", id.domain);
    let get = |path: String| async move {
        let (code, body) = http_request(server.http, "GET", &path).await.unwrap();
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let list = get(format!("{base}/players")).await;
    assert_eq!(list["total"], 2, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(
        items
            .iter()
            .map(|p| p["id"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2],
        "{list}"
    );
    for p in items {
        assert!(p["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{p}");
        assert!(p["bytes"].as_u64().unwrap() > 0, "{p}");
        assert_eq!(p["skipped_bytes"], 0, "{p}");
        assert!(p["start_time"].as_str().unwrap().ends_with('Z'), "{p}");
    }
    assert_eq!(get(base.to_string()).await["player_count"], 2);

    let delete =
        |path: String| async move { http_request(server.http, "DELETE", &path).await.unwrap() };
    assert_eq!(delete(format!("{base}/players/1")).await.0, 204);
    // The first player's connection closes at once (the publisher sends nothing meanwhile,
    // and the client's own read timeout is 5 s); what it had in flight may still arrive.
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        while let Ok(Some(_)) = first.recv().await {}
    })
    .await;
    assert!(closed.is_ok(), "the kicked player was not disconnected");
    // The publish and the other player go on.
    send_range(&mut publisher, FIXTURE, 1000, 2000).await;
    let mut last = 0;
    while last < 1500 {
        last = second.recv().await.unwrap().expect("media").timestamp;
    }
    assert!(
        wait_for(Duration::from_secs(5), || server.node().registry.list()[0]
            .players
            .len()
            == 1)
        .await
    );
    let list = get(format!("{base}/players")).await;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["items"][0]["id"], 2, "{list}");

    let (code, body) = delete(format!("{base}/players/1")).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("has no player 1"), "{body}");
    let (code, body) = delete(format!("{base}/players/first")).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("player") && body.contains("\\\"first\\\""),
        "{body}"
    );
    let gone = format!("/api/v1/streams/{}/live/gone/players/2", id.domain);
    let (code, body) = delete(gone).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("not live"), "{body}");
    publisher.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_players_list_shows_how_far_each_player_lags() {
    let server = start_server(DEFAULT_RULES).await;
    let (mut publisher, mut reader) = live_second_and_player(&server, "cam").await;
    while reader.recv().await.unwrap().expect("media").kind != MediaKind::Video {}
    // A second player that plays and then reads nothing.
    let stalled = play(&server, "live", "cam").await.unwrap();
    // The rest of the file (≈ 1.5 MB), faster than real time.
    send_range(&mut publisher, FIXTURE, 1000, u32::MAX).await;
    let last = recording().tags().last().unwrap().timestamp;
    while reader.recv().await.unwrap().expect("media").timestamp < last {}
    let id = server.node().registry.list()[0].id.clone();
    let path = format!("/api/v1/streams/{}/live/cam/players", id.domain);
    let lags = || async {
        let (code, body) = http_request(server.http, "GET", &path).await.unwrap();
        assert_eq!(code, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        let lag = |i: usize| list["items"][i]["lag_bytes"].as_u64().unwrap();
        (lag(0), lag(1))
    };
    // The reader has taken everything; the stalled player holds back what its socket
    // buffers could not take (the stream's window is 4 MiB, so it has not skipped).
    let deadline = Instant::now() + Duration::from_secs(5);
    let (reading, stalling) = loop {
        let (a, b) = lags().await;
        if a == 0 && b > 0 || Instant::now() > deadline {
            break (a, b);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reading, 0, "a player that read everything lags by nothing");
    assert!(
        stalling > 100_000,
        "a player that reads nothing lags by what it was not sent: {stalling} bytes"
    );
    let pushed = server.node().registry.list()[0].hub.pushed_bytes();
    assert!(stalling < pushed, "{stalling} of {pushed} bytes");
    drop(stalled);
    publisher.finish().await;
}

#[tokio::test]
async fn relay_targets_do_not_take_the_players_places() {
    // Two relay targets that accept TCP and never answer: each holds its place in the
    // stream's fan-out while it waits for the handshake, but neither is a player.
    let silent = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (la, lb) = (silent(), silent());
    let (a, b) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let server = start_server(&format!(
        "{DEFAULT_RULES}\n[play]\nmax_players_per_stream = 1\n\
         [[relays]]\ndomain = \"*\"\napp = \"live\"\n\
         targets = [\"rtmp://{a}/{{AppName}}/{{StreamName}}\", \"rtmp://{b}/{{AppName}}/{{StreamName}}\"]\n"
    ))
    .await;
    let mut publisher = start_publish(server.rtmp, "live", "relayed").await;
    send_range(&mut publisher, FIXTURE, 0, 600).await;
    wait_live(&server, "relayed").await;
    let live = server.node().registry.list()[0].clone();
    assert_eq!(live.relays().len(), 2);
    assert_eq!(
        live.hub.subscribers(),
        2,
        "the relay targets wait for a handshake"
    );
    let mut player = play(&server, "live", "relayed").await.unwrap();
    assert!(player.recv().await.unwrap().is_some());
    let err = play(&server, "live", "relayed")
        .await
        .err()
        .expect("refused");
    assert!(
        err.status().unwrap().description.contains("has 1 players"),
        "{err}"
    );
    publisher.finish().await;
}
