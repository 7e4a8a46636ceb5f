//! Faster than real time: a recording pushed at full speed (the ffmpeg CLI without `-re`,
//! and the library's publisher) gets exactly the snapshots its schedule names, with the
//! pictures of those keyframes, because its connection is paced by the snapshot queue
//! (TCP backpressure) instead of losing keyframes; a live publisher at real-time pace is
//! never slowed meanwhile; and the end of a publish reports its final counts.
//! Real RTMP over loopback, real fixtures, JPEGs written to a real folder.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::external::*;
use common::*;
use livesnap::media::flv::{self, PacketKind};
use livesnap::snapshot::stats::StreamStats;
use livesnap::testing::pictures::psnr;
use livesnap::testing::replay::{replay, Recording, ReplayOptions};

const INTERVAL_MS: u64 = 5_000;

/// A node writing to a fresh folder, with `snapshot` keys for its `[snapshot]` table and
/// `extra` appended (the rules are [`DEFAULT_RULES`]).
async fn start(snapshot: &str, extra: &str) -> TestServer {
    // Not the harness's `init_logs`: this binary also captures `publish ended` lines.
    ended::init();
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
{snapshot}
[storage.default]
scheme = "fs"
root = "{}"
{DEFAULT_RULES}
{extra}
"#,
        root.display()
    );
    TestServer::start(dir, &text).await
}

/// The FLV timestamps of a fixture's coded keyframes.
fn keyframe_timestamps(file: &str) -> Vec<u32> {
    fixture_tags(file)
        .into_iter()
        .filter(|t| t.tag_type == 9)
        .filter(|t| {
            flv::parse_video_tag(&t.data).is_ok_and(|v| v.keyframe && v.kind == PacketKind::Nalus)
        })
        .map(|t| t.timestamp_ms)
        .collect()
}

/// Which keyframes (indices into `ts`) the schedule names: the first, then the first at
/// or after each multiple of the interval after it (due times with no keyframe pass).
fn due_indices(ts: &[u64], interval_ms: u64) -> Vec<usize> {
    let mut next = 0;
    let mut out = Vec::new();
    for (i, &t) in ts.iter().enumerate() {
        let pos = t - ts[0];
        if pos >= next {
            out.push(i);
            next = (pos / interval_ms + 1) * interval_ms;
        }
    }
    out
}

/// The keyframes a push of `file` repeated `loops` times (timestamps continued by
/// `loop_ms` each pass) makes due, as indices into the file's own keyframes.
fn expected_keyframes(file: &str, loops: u32, loop_ms: u32) -> Vec<usize> {
    let one = keyframe_timestamps(file);
    let all: Vec<u64> = (0..u64::from(loops))
        .flat_map(|p| {
            one.iter()
                .map(move |&t| p * u64::from(loop_ms) + u64::from(t))
        })
        .collect();
    due_indices(&all, INTERVAL_MS)
        .into_iter()
        .map(|i| i % one.len())
        .collect()
}

/// Checks that live/`stream` holds exactly one sequence object per expected keyframe
/// (in order, `1.jpg` …), each the picture of that keyframe.
fn check_snapshots(server: &TestServer, stream: &str, file: &str, expected: &[usize]) {
    let root = server.root();
    assert_eq!(
        list_files(&root),
        snapshot_keys(stream, expected.len() as u64),
        "expected keyframes {expected:?}"
    );
    let first = root.join(format!("live/{stream}/1.jpg"));
    let (w, h, _) = decode_jpeg(&std::fs::read(&first).unwrap());
    let refs = reference_keyframes(file, w, h);
    for (n, &k) in expected.iter().enumerate() {
        let path = root.join(format!("live/{stream}/{}.jpg", n + 1));
        let got = ffmpeg_rgb(&path);
        let p = psnr(&got, &refs[k]);
        assert!(
            p >= 30.0,
            "snapshot {} (keyframe {k}): PSNR {p:.1} dB",
            n + 1
        );
        // And it is not the picture of a neighbouring keyframe.
        for other in [k.wrapping_sub(1), k + 1] {
            if let Some(r) = refs.get(other) {
                assert!(
                    psnr(&got, r) < p,
                    "snapshot {} matches keyframe {other}",
                    n + 1
                );
            }
        }
    }
}

/// The counters of live/`stream` once it is live (waits up to 10 s).
async fn live_stats(server: &TestServer, stream: &str) -> Arc<StreamStats> {
    let node = server.node().clone();
    let mut found = None;
    let ok = wait_for(Duration::from_secs(10), || {
        found = node
            .registry
            .list()
            .into_iter()
            .find(|s| s.id.stream == stream)
            .map(|s| s.stats.clone());
        found.is_some()
    })
    .await;
    assert!(ok, "live/{stream} never went live");
    found.unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Replays a fixture at full speed `loops` times on a new publish of live/`stream`.
async fn push_full_speed(addr: SocketAddr, stream: &str, file: &str, loops: u32) {
    let mut p = start_publish(addr, "live", stream).await;
    let rec = Recording::load(fixture(file)).unwrap();
    let opts = ReplayOptions {
        speed: 0.0,
        ts_offset: 0,
        loops,
    };
    replay(p.client(), &rec, opts).await.unwrap();
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_without_re_gets_every_due_keyframe() {
    // 20 s of 720p High with B-frames and audio, keyframes every 2 s: due at 0, 6, 10
    // and 16 s, all sent within a few milliseconds.
    let file = "high_1280x720_bframes_aac.flv";
    let mut server = start("workers = 1", "").await;
    let url = server.url("live", "ff");
    let mut ffmpeg = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(fixture(file))
        .args(["-c", "copy", "-f", "flv", &url])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("ffmpeg runs");
    let status = tokio::time::timeout(Duration::from_secs(60), ffmpeg.wait())
        .await
        .expect("ffmpeg finishes")
        .unwrap();
    assert!(status.success(), "ffmpeg: {status}");
    // The publish may be over before anyone could look at it: its final line tells.
    assert!(
        wait_for(Duration::from_secs(20), || !ended::about("ff").is_empty()).await,
        "no 'publish ended' line"
    );
    assert!(server.stop().await, "shutdown finished in time");
    let line = &ended::about("ff")[0];
    let expected = expected_keyframes(file, 1, 0);
    assert_eq!(expected, [0, 3, 5, 8]);
    assert_eq!(counter(line, "due"), 4, "{line}");
    assert_eq!(counter(line, "stored"), 4, "{line}");
    assert_eq!(counter(line, "dropped_busy"), 0, "{line}");
    check_snapshots(&server, "ff", file, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_publisher_at_full_speed_gets_every_due_keyframe() {
    // 1080p, keyframes every 2 s, pushed three times back to back (36 s of media).
    let file = "high_1920x1080_gop2s.flv";
    let mut server = start("workers = 1", "").await;
    let rec = Recording::load(fixture(file)).unwrap();
    let expected = expected_keyframes(file, 3, rec.loop_ms());
    let addr = server.rtmp;
    let push = tokio::spawn(async move { push_full_speed(addr, "rs", file, 3).await });
    let stats = live_stats(&server, "rs").await;
    push.await.unwrap();
    assert!(server.stop().await, "shutdown finished in time");
    // Keyframes at 0, 2 … 34 s: due at 0, 6, 10, 16, 20, 26 and 30 s.
    assert_eq!(expected.len(), 7);
    assert_eq!(StreamStats::get(&stats.stored), 7, "{}", stats.summary());
    assert_eq!(
        StreamStats::get(&stats.dropped_busy),
        0,
        "{}",
        stats.summary()
    );
    check_snapshots(&server, "rs", file, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_keyframe_queue_still_gets_every_snapshot_by_pacing() {
    // A queue of one keyframe and a store queue of one: a full-speed push can only get
    // all its snapshots if its connection waits for each one.
    let file = "baseline_640x360_gop1s.flv";
    let mut server = start("workers = 1\nqueue_keyframes = 1\nstore_queue = 1", "").await;
    let rec = Recording::load(fixture(file)).unwrap();
    let expected = expected_keyframes(file, 3, rec.loop_ms());
    assert_eq!(expected.len(), 8);
    let addr = server.rtmp;
    let push = tokio::spawn(async move { push_full_speed(addr, "tiny", file, 3).await });
    let stats = live_stats(&server, "tiny").await;
    push.await.unwrap();
    let metrics = server.node().metrics.render();
    assert!(server.stop().await, "shutdown finished in time");
    let summary = stats.summary();
    assert_eq!(StreamStats::get(&stats.stored), 8, "{summary}");
    assert_eq!(StreamStats::get(&stats.dropped_busy), 0, "{summary}");
    assert_eq!(StreamStats::get(&stats.dropped_backlog), 0, "{summary}");
    assert!(StreamStats::get(&stats.paced_ms) > 0, "{summary}");
    assert!(
        metric(&metrics, "livesnap_publisher_paced_seconds_total") > 0.0,
        "{metrics}"
    );
    check_snapshots(&server, "tiny", file, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_push_is_not_delayed_by_a_full_speed_one() {
    // One worker, kept busy by a 1080p file pushed at full speed in a loop (paced by
    // the pool), while a 360p publisher sends in real time.
    let mut server = start("workers = 1", "").await;
    let addr = server.rtmp;
    let fast = tokio::spawn(async move {
        push_full_speed(addr, "fast", "high_1920x1080_gop2s.flv", 0).await;
    });
    let fast_stats = live_stats(&server, "fast").await;
    // Let the full-speed one fill its queue first.
    assert!(
        wait_for(Duration::from_secs(10), || StreamStats::get(
            &fast_stats.paced_ms
        ) > 0)
        .await,
        "the full-speed push was never paced: {}",
        fast_stats.summary()
    );

    let file = "baseline_640x360_gop1s.flv";
    let mut live = start_publish(addr, "live", "live").await;
    let live_counts = live_stats(&server, "live").await;
    // Sample how far the node's view of the live stream lags behind real time.
    let sampler = {
        let stats = live_counts.clone();
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut started = None;
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let media = Duration::from_millis(StreamStats::get(&stats.media_ms));
                if StreamStats::get(&stats.video_frames) == 0 {
                    continue;
                }
                let t0 = *started.get_or_insert_with(Instant::now);
                worst = worst.max(t0.elapsed().saturating_sub(media));
                if media >= Duration::from_millis(11_900) {
                    return worst;
                }
            }
        })
    };
    let sent = live.replay(&fixture(file), 1.0, 0).await.unwrap();
    let lag = tokio::time::timeout(Duration::from_secs(5), sampler)
        .await
        .expect("the node saw the whole live stream")
        .unwrap();
    live.finish().await;
    let media = Duration::from_millis(u64::from(sent.last_timestamp));
    let rate = media.as_secs_f64() / sent.elapsed.as_secs_f64();
    fast.abort();
    let _ = fast.await;
    assert!(server.stop().await, "shutdown finished in time");

    let summary = live_counts.summary();
    // The live publisher sent at its own pace (media time / wall time ≈ 1) ...
    assert!(
        (0.95..=1.02).contains(&rate),
        "send rate {rate:.3}× real time"
    );
    // ... the node read it as it came (sampled every 50 ms) ...
    assert!(
        lag < Duration::from_millis(750),
        "node lagged {lag:?} behind"
    );
    // ... was never paced, and took every snapshot (0, 5 and 10 s).
    assert_eq!(StreamStats::get(&live_counts.paced_ms), 0, "{summary}");
    assert_eq!(StreamStats::get(&live_counts.dropped_busy), 0, "{summary}");
    assert_eq!(StreamStats::get(&live_counts.stored), 3, "{summary}");
    // Meanwhile the full-speed one kept being paced, and lost nothing either.
    assert!(StreamStats::get(&fast_stats.paced_ms) > 0);
    assert_eq!(
        StreamStats::get(&fast_stats.dropped_busy),
        0,
        "{}",
        fast_stats.summary()
    );
}

/// Starts a never-ending full-speed push of live/`stream` and waits until it is paced.
async fn paced_push(server: &TestServer, stream: &'static str) -> tokio::task::JoinHandle<()> {
    let addr = server.rtmp;
    let push = tokio::spawn(async move {
        let mut p = start_publish(addr, "live", stream).await;
        let rec = Recording::load(fixture("high_1920x1080_gop2s.flv")).unwrap();
        let opts = ReplayOptions {
            speed: 0.0,
            ts_offset: 0,
            loops: 0,
        };
        // Ends when the node closes the connection.
        assert!(replay(p.client(), &rec, opts).await.is_err());
    });
    let stats = live_stats(server, stream).await;
    assert!(
        wait_for(Duration::from_secs(10), || StreamStats::get(
            &stats.paced_ms
        ) > 0)
        .await,
        "never paced: {}",
        stats.summary()
    );
    push
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_publish_ends_cleanly_on_kick_and_on_shutdown() {
    let mut server = start("workers = 1\nqueue_keyframes = 1\nstore_queue = 1", "").await;
    // Disconnected through the API while it waits for the queue.
    let kicked = paced_push(&server, "kicked").await;
    let (status, _) = http_request(
        server.http,
        "DELETE",
        "/api/v1/streams/127.0.0.1/live/kicked",
    )
    .await
    .unwrap();
    assert_eq!(status, 204);
    tokio::time::timeout(Duration::from_secs(5), kicked)
        .await
        .expect("the kicked publisher was closed")
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || ended::about("kicked").len() == 1).await,
        "no 'publish ended' line for the kicked stream"
    );
    // Shutdown while another waits: the node stops well within its grace (10 s).
    let stopped = paced_push(&server, "stopped").await;
    let t = Instant::now();
    assert!(server.stop().await, "shutdown finished in time");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the publisher was closed")
        .unwrap();
    let line = &ended::about("stopped")[0];
    assert_eq!(counter(line, "failed_decode"), 0, "{line}");
    assert_eq!(counter(line, "dropped_backlog"), 0, "{line}");
    assert_eq!(
        counter(line, "due"),
        counter(line, "stored") + counter(line, "dropped_busy"),
        "{line}"
    );
}

/// What `publish ended` log lines said, by stream name.
mod ended {
    use std::sync::Mutex;

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Subscriber};
    use tracing_subscriber::layer::{Context, Layer};
    use tracing_subscriber::registry::LookupSpan;

    static LINES: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

    /// The `stats` of every `publish ended` line about `stream`.
    pub fn about(stream: &str) -> Vec<String> {
        let lines = LINES.lock().unwrap();
        lines
            .iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, l)| l.clone())
            .collect()
    }

    #[derive(Default)]
    struct Fields {
        stream: Option<String>,
        message: String,
        stats: String,
    }

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let v = format!("{value:?}");
            match field.name() {
                "stream" => self.stream = Some(v),
                "message" => self.message = v,
                "stats" => self.stats = v,
                _ => {}
            }
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            match field.name() {
                "stream" => self.stream = Some(value.to_string()),
                "message" => self.message = value.to_string(),
                "stats" => self.stats = value.to_string(),
                _ => {}
            }
        }
    }

    struct SpanStream(String);

    pub struct Capture;

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let mut f = Fields::default();
            attrs.record(&mut f);
            if let (Some(s), Some(span)) = (f.stream, ctx.span(id)) {
                span.extensions_mut().insert(SpanStream(s));
            }
        }

        fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
            let mut f = Fields::default();
            values.record(&mut f);
            if let (Some(s), Some(span)) = (f.stream, ctx.span(id)) {
                span.extensions_mut().replace(SpanStream(s));
            }
        }

        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            let mut f = Fields::default();
            event.record(&mut f);
            if f.message != "publish ended" {
                return;
            }
            let stream = ctx.event_scope(event).and_then(|mut scope| {
                scope.find_map(|s| s.extensions().get::<SpanStream>().map(|x| x.0.clone()))
            });
            if let Some(stream) = stream {
                LINES.lock().unwrap().push((stream, f.stats));
            }
        }
    }

    /// Installs the capture (with the harness's usual output) before any node starts.
    pub fn init() {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let output = tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(tracing_subscriber::EnvFilter::from_default_env());
        let _ = tracing_subscriber::registry()
            .with(output)
            .with(Capture.with_filter(tracing_subscriber::filter::LevelFilter::INFO))
            .try_init();
    }
}

/// A counter of a `publish ended` stats line (`stored=3` …).
fn counter(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        .parse()
        .unwrap()
}

/// The JSON bodies POSTed to a listener on 127.0.0.1:0.
async fn event_listener() -> (SocketAddr, Arc<Mutex<Vec<serde_json::Value>>>) {
    use axum::routing::post;
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/events",
        post(move |body: String| {
            let sink = sink.clone();
            async move {
                if let Ok(v) = serde_json::from_str(&body) {
                    sink.lock().unwrap().push(v);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_end_reports_final_counts() {
    let (events_addr, events) = event_listener().await;
    let mut server = start(
        "workers = 1",
        &format!("[notify]\nurl = \"http://{events_addr}/events\""),
    )
    .await;
    // The publisher is done in milliseconds; its snapshots take longer.
    push_full_speed(server.rtmp, "end", "high_1280x720_bframes_aac.flv", 1).await;
    let unpublish = || {
        events
            .lock()
            .unwrap()
            .iter()
            .find(|e| e["event"] == "unpublish" && e["stream"] == "end")
            .cloned()
    };
    assert!(
        wait_for(Duration::from_secs(20), || unpublish().is_some()).await,
        "no unpublish event"
    );
    // Counted the moment the event arrives: everything is stored already.
    let sequence_objects = list_files(&server.root())
        .iter()
        .filter(|k| k.starts_with("live/end/"))
        .count() as u64;
    let event = unpublish().unwrap();
    assert_eq!(sequence_objects, 4);
    assert_eq!(event["snapshots"], sequence_objects, "{event}");
    assert_eq!(event["snapshots_dropped"], 0, "{event}");
    let lines = ended::about("end");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        counter(&lines[0], "stored"),
        sequence_objects,
        "{}",
        lines[0]
    );
    assert_eq!(counter(&lines[0], "due"), 4, "{}", lines[0]);
    assert!(server.stop().await);
}
