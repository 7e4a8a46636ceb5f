//! `rtmp::client` against a real origin: nginx with the RTMP module (Debian's
//! `libnginx-mod-rtmp`), started per test on a free loopback port. These tests fail, never
//! skip, when nginx or its RTMP module is missing.
//!
//! What they pin down about nginx-rtmp 1.2.2 (the relay's first upstream):
//! - a `deny publish` refusal carries no error status: nginx logs "access forbidden by rule"
//!   and closes the connection, so the client reports `Closed { phase: Publish }`;
//! - a second publisher of a live name gets `onStatus` `NetStream.Publish.BadName`
//!   ("Already publishing") at error level;
//! - a `deny publish` refusal arrives *after* `onStatus NetStream.Publish.Start`: nginx sends
//!   the status, then runs the access check and closes; `ClientOptions::start_grace` turns
//!   that close into the refusal;
//! - with `ping N`, nginx pings a client when N passes without I/O in either direction; it
//!   counts its own ping write as I/O, so an unanswered ping never drops a peer that still
//!   takes data (only a stalled socket is dropped). A player receiving media is never pinged.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use bytes::Bytes;
use common::nginx::{video_framemd5, Nginx};
use livesnap::media::flv::FlvReader;
use livesnap::rtmp::chunk_writer::PreChunked;
use livesnap::rtmp::client::{ClientError, ClientOptions, MediaKind, Phase, Player, Publisher};
use tokio::net::TcpStream;

/// Counts heap allocations per thread, to check that sends do not allocate per frame.
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count_allocation() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}

// SAFETY: forwards to the system allocator unchanged; counting touches only a
// destructor-free thread local.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_allocation();
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        count_allocation();
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

const FIXTURE: &str = "high_1280x720_bframes_aac.flv";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn opts() -> ClientOptions {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    ClientOptions {
        handshake_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

/// One FLV tag of the fixture as the publisher sends it.
#[derive(Clone)]
struct Tag {
    kind: MediaKind,
    ts: u32,
    payload: Bytes,
}

/// The fixture's tags; the script tag becomes `@setDataFrame onMetaData …` as encoders
/// send it.
fn tags(name: &str) -> Vec<Tag> {
    let data = Bytes::from(std::fs::read(fixture(name)).unwrap());
    let mut out = Vec::new();
    for tag in FlvReader::new(data).unwrap() {
        let tag = tag.unwrap();
        let (kind, payload) = match tag.tag_type {
            8 => (MediaKind::Audio, tag.data),
            9 => (MediaKind::Video, tag.data),
            18 => {
                let mut p = vec![0x02, 0x00, 13];
                p.extend_from_slice(b"@setDataFrame");
                p.extend_from_slice(&tag.data);
                (MediaKind::Data, Bytes::from(p))
            }
            _ => continue,
        };
        out.push(Tag {
            kind,
            ts: tag.timestamp_ms,
            payload,
        });
    }
    out
}

/// Sends `tags` at `speed` × real time (0: as fast as possible).
async fn send_all(
    p: &mut Publisher<TcpStream>,
    tags: &[Tag],
    speed: f64,
) -> Result<(), ClientError> {
    let start = tokio::time::Instant::now();
    for t in tags {
        if speed > 0.0 {
            let due = start + Duration::from_secs_f64(f64::from(t.ts) / 1000.0 / speed);
            tokio::time::sleep_until(due).await;
        }
        p.send(t.kind, t.ts, &t.payload).await?;
    }
    Ok(())
}

#[tokio::test]
async fn nginx_records_the_same_video_frames_fast_and_at_real_time() {
    let nginx = Nginx::start("");
    let tags = tags(FIXTURE);
    let source = video_framemd5(&fixture(FIXTURE));
    assert!(source.len() > 500, "{} video frames", source.len());

    // As fast as possible, the whole file; at real time, its first 3 s. Both at once.
    let paced_until = 3000;
    let paced: Vec<Tag> = tags
        .iter()
        .filter(|t| t.ts < paced_until)
        .cloned()
        .collect();
    let endpoint = nginx.endpoint("live");
    let fast = async {
        let mut p = Publisher::publish(nginx.dial().await, &endpoint, "fast", opts()).await?;
        send_all(&mut p, &tags, 0.0).await?;
        p.finish().await
    };
    let slow = async {
        let started = Instant::now();
        let mut p = Publisher::publish(nginx.dial().await, &endpoint, "paced", opts()).await?;
        send_all(&mut p, &paced, 1.0).await?;
        p.finish().await?;
        Ok::<_, ClientError>(started.elapsed())
    };
    let (fast, slow) = tokio::join!(fast, slow);
    fast.unwrap();
    let took = slow.unwrap();
    assert!(
        took >= Duration::from_millis(2900),
        "paced publish took {took:?}"
    );

    let recorded = video_framemd5(&nginx.wait_recorded("fast").await);
    assert_eq!(
        recorded.len(),
        source.len(),
        "video frames recorded from the fast publish"
    );
    for (i, (r, s)) in recorded.iter().zip(&source).enumerate() {
        assert_eq!(r, s, "fast publish, video frame {i}");
    }

    let recorded = video_framemd5(&nginx.wait_recorded("paced").await);
    let sent = paced.iter().filter(|t| t.kind == MediaKind::Video).count();
    // ffmpeg reports the AVC sequence header as extradata, not as a frame.
    assert_eq!(
        recorded.len(),
        sent - 1,
        "video frames recorded from the paced publish"
    );
    assert_eq!(recorded[..], source[..recorded.len()], "paced publish");
}

#[tokio::test]
async fn a_player_gets_live_video_from_nginx_sequence_header_then_keyframe() {
    // nginx pings a client silent for 1 s: the player must answer while it only reads.
    let nginx = Nginx::start("ping 1s; ping_timeout 1s;");
    let tags = tags(FIXTURE);
    let endpoint = nginx.endpoint("live");
    let publisher = {
        let io = nginx.dial().await;
        let endpoint = endpoint.clone();
        let tags = tags.clone();
        tokio::spawn(async move {
            let mut p = Publisher::publish(io, &endpoint, "cam", opts()).await?;
            send_all(&mut p, &tags, 1.0).await?;
            p.finish().await
        })
    };
    // Join mid-stream, between two keyframes (every 2 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut player = Player::play(nginx.dial().await, &endpoint, "cam", opts())
        .await
        .unwrap();
    let mut videos = Vec::new();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let m = player
            .recv()
            .await
            .unwrap()
            .expect("the publish is still on");
        if m.kind == MediaKind::Video {
            videos.push(m);
        }
    }
    player.close().await.unwrap();
    publisher.abort();

    // FLV video tag: byte 0 = frame type << 4 | codec (7 = AVC), byte 1 = AVC packet type.
    let first = &videos[0].payload;
    assert_eq!((first[0], first[1]), (0x17, 0), "AVC sequence header first");
    let key = &videos[1].payload;
    assert_eq!((key[0], key[1]), (0x17, 1), "then a keyframe");
    // Timestamps increase and payloads are the publisher's, byte for byte, in order.
    let ts: Vec<u32> = videos[1..].iter().map(|m| m.timestamp).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    let source: Vec<&Tag> = tags.iter().filter(|t| t.kind == MediaKind::Video).collect();
    let at = source
        .iter()
        .position(|t| t.payload == videos[1].payload)
        .expect("the keyframe is one of the fixture's");
    for (m, t) in videos[1..].iter().zip(&source[at..]) {
        assert_eq!(m.payload, t.payload);
        assert_eq!(m.timestamp, t.ts, "nginx keeps the publisher's timestamps");
    }
    // Joined at 2.5 s, `wait_key` skips to the keyframe at 4 s: ≈ 2.5 s of 30 fps video.
    assert!(videos.len() > 60, "{} video messages in 4 s", videos.len());
}

#[tokio::test]
async fn nginx_refusals_are_typed_errors_not_hangs() {
    let nginx = Nginx::start("");
    let limit = Duration::from_secs(10);

    // `deny publish`: nginx closes the connection without a status.
    let r = tokio::time::timeout(
        limit,
        Publisher::publish(nginx.dial().await, &nginx.endpoint("closed"), "s", opts()),
    )
    .await
    .expect("a refused publish must not hang");
    let err = r.err().unwrap_or_else(|| {
        panic!(
            "publishing to `closed` must be refused; log:\n{}",
            nginx.log()
        )
    });
    assert!(err.is_refusal(), "{err}");
    assert!(
        matches!(
            err,
            ClientError::Closed {
                phase: Phase::Publish
            }
        ),
        "{err}"
    );
    assert!(nginx.log().contains("access forbidden by rule"));

    // A second publisher of a live name.
    let endpoint = nginx.endpoint("live");
    let mut first = Publisher::publish(nginx.dial().await, &endpoint, "dup", opts())
        .await
        .unwrap();
    let r = tokio::time::timeout(
        limit,
        Publisher::publish(nginx.dial().await, &endpoint, "dup", opts()),
    )
    .await
    .expect("a refused publish must not hang");
    let err = r.err().expect("a second publisher must be refused");
    assert!(err.is_refusal(), "{err}");
    assert_eq!(err.phase(), Phase::Publish);
    let status = err.status().unwrap_or_else(|| panic!("no status in {err}"));
    assert_eq!(status.code, "NetStream.Publish.BadName");
    assert_eq!(status.level, "error");
    first.send_video(0, &[0x17, 0, 0, 0, 0]).await.unwrap();
    first.finish().await.unwrap();
}

#[tokio::test]
async fn an_idle_publisher_answers_nginx_pings_with_service() {
    let nginx = Nginx::start("ping 1s; ping_timeout 1s;");
    let tags = tags(FIXTURE);
    let (head, tail): (Vec<Tag>, Vec<Tag>) = tags.iter().cloned().partition(|t| t.ts < 1000);
    let endpoint = nginx.endpoint("live");

    // Serviced: 4 s of silence from our side while `service` answers nginx's pings.
    let mut p = Publisher::publish(nginx.dial().await, &endpoint, "idle", opts())
        .await
        .unwrap();
    send_all(&mut p, &head, 0.0).await.unwrap();
    let idle = tokio::time::sleep(Duration::from_secs(4));
    tokio::pin!(idle);
    loop {
        tokio::select! {
            r = p.service() => r.unwrap(),
            _ = &mut idle => break,
        }
    }
    let answered = p.stats().pings;
    assert!(
        answered >= 2,
        "{answered} pings answered in 4 s idle with `ping 1s`"
    );
    send_all(&mut p, &tail, 0.0).await.unwrap();
    p.finish().await.unwrap();
    let recorded = video_framemd5(&nginx.wait_recorded("idle").await);
    assert_eq!(recorded, video_framemd5(&fixture(FIXTURE)));

    // Not serviced: the pings wait in the socket until the next send answers them. nginx-rtmp
    // does not mind: its own ping write counts as activity (`ping_reset`), so it drops only
    // a peer whose socket stops taking data. Other servers may be stricter.
    let mut p = Publisher::publish(nginx.dial().await, &endpoint, "unserviced", opts())
        .await
        .unwrap();
    send_all(&mut p, &head, 0.0).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(p.stats().pings, 0);
    send_all(&mut p, &tail[..1], 0.0).await.unwrap();
    assert!(p.stats().pings >= 2, "{:?}", p.stats());
    send_all(&mut p, &tail[1..], 0.0).await.unwrap();
    p.finish().await.unwrap();
    assert!(
        !nginx.log().contains("ping: unresponded"),
        "{}",
        nginx.log()
    );
}

#[tokio::test]
async fn sends_do_not_allocate_per_frame() {
    let nginx = Nginx::start("");
    let tags = tags(FIXTURE);
    let endpoint = nginx.endpoint("live");
    let mut p = Publisher::publish(nginx.dial().await, &endpoint, "alloc", opts())
        .await
        .unwrap();
    let chunk_size = p.chunk_size();
    let pre: Vec<(PreChunked, u32)> = tags
        .iter()
        .map(|t| {
            let m =
                PreChunked::new(t.kind.csid(), t.kind.type_id(), &t.payload, chunk_size).unwrap();
            (m, t.ts)
        })
        .collect();
    // Warm-up: the write buffer grows to the largest message, and tokio's own per-runtime
    // buffers (its coop budget's deferred wakers) to their working size.
    for (m, ts) in &pre {
        p.send_prechunked(m, *ts).await.unwrap();
    }
    for t in &tags {
        p.send(t.kind, t.ts + 30_000, &t.payload).await.unwrap();
    }

    // What the server sends meanwhile is read into one buffer per message (nginx acks at
    // its 5 MB window): those allocations are the only ones allowed.
    let (before, received) = (allocations(), p.stats().messages_in);
    for (m, ts) in &pre {
        p.send_prechunked(m, ts + 60_000).await.unwrap();
    }
    let prechunked = allocations() - before;
    let prechunked_in = p.stats().messages_in - received;
    let (before, received) = (allocations(), p.stats().messages_in);
    for t in &tags {
        p.send(t.kind, t.ts + 90_000, &t.payload).await.unwrap();
    }
    let copied = allocations() - before;
    let copied_in = p.stats().messages_in - received;
    p.finish().await.unwrap();
    assert!(
        prechunked <= prechunked_in && copied <= copied_in,
        "heap allocations: {prechunked} over {} pre-chunked sends ({prechunked_in} messages in), \
         {copied} over {} copied sends ({copied_in} messages in)",
        pre.len(),
        tags.len()
    );
}
