//! Timestamps and aborts: RTMP's clock crossing 0xFFFFFF ms, going backwards, and
//! messages aborted half-way.

use bytes::Bytes;
use livesnap::rtmp::framing::{write_single_chunk, Message, TYPE_ABORT, TYPE_VIDEO};
use livesnap::snapshot::scheduler::Scheduler;
use livesnap::snapshot::stats::StreamStats;

use crate::common::raw::{message, RawClient};
use crate::common::*;
use crate::harness::*;
use crate::video::*;

fn is_keyframe(data: &Bytes) -> bool {
    data[..2] == [0x17, 1]
}

/// Sends `tags` with `base` added to their timestamps (wrapping, as RTMP's clock does).
async fn send_video_from(c: &mut RawClient, sid: u32, tags: &[(u32, Bytes)], base: u32) -> u64 {
    let shifted: Vec<(u32, Bytes)> = tags
        .iter()
        .map(|(ts, d)| (base.wrapping_add(*ts), d.clone()))
        .collect();
    send_video(c, sid, &shifted).await
}

/// Video tags, the base added to their timestamps, and the snapshots stored once sent.
type Part = (Vec<(u32, Bytes)>, u32, u64);

/// The parts to send, each with its timestamp base and the number of snapshots a 5 s rule
/// has taken once it is sent (one scheduler over all of them, as the server runs).
fn plan(parts: &[(&[(u32, Bytes)], u32)]) -> Vec<Part> {
    let mut sched = Scheduler::new(5);
    let mut due = 0;
    parts
        .iter()
        .map(|(tags, base)| {
            for (ts, d) in tags.iter() {
                if is_keyframe(d) && sched.on_keyframe(base.wrapping_add(*ts)).is_some() {
                    due += 1;
                }
            }
            (tags.to_vec(), *base, due)
        })
        .collect()
}

fn keyframe_count(parts: &[Part]) -> u64 {
    parts
        .iter()
        .flat_map(|(tags, _, _)| tags)
        .filter(|(_, d)| is_keyframe(d))
        .count() as u64
}

/// Sends `parts` one after the other, waiting after each for every byte to be seen and
/// for `stored` snapshots in total, so that "latest keyframe wins" never has to drop one.
async fn send_parts(c: &mut RawClient, sid: u32, stats: &StreamStats, parts: &[Part], name: &str) {
    let mut sent = 0;
    for (i, (tags, base, stored)) in parts.iter().enumerate() {
        sent += send_video_from(c, sid, tags, *base).await;
        assert!(
            wait_for(secs(5.0), || count(&stats.bytes) == sent).await,
            "{name} part {i}: media bytes seen {} of {sent}",
            count(&stats.bytes)
        );
        assert!(
            wait_for(secs(10.0), || count(&stats.stored) == *stored).await,
            "{name} part {i}: stored {} of {stored}",
            count(&stats.stored)
        );
    }
}

/// Timestamps at the edges of RTMP's clock: a stream crossing 0xFFFFFF ms with absolute
/// (fmt 0) headers, the extended field repeated on continuation chunks or left out (both
/// are sent by real encoders), or with deltas; the clock going backwards (an encoder
/// restarting without republishing); and messages aborted half-way (Abort Message), then
/// resent. Each stream must keep every byte and take exactly the snapshots its own
/// timestamps make due, while the good stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_edges_and_aborted_messages_keep_the_stream() {
    let h = Harness::start().await;
    let addr = h.addr();
    let node = h.node();
    let video = fixture_video();
    // 5 s segments, each with at most one due keyframe, sent one after the other.
    let segments: Vec<Vec<(u32, Bytes)>> = (0..3)
        .map(|k| {
            let range = k * 5000..(k + 1) * 5000;
            let seg: Vec<_> = video
                .iter()
                .filter(|(t, _)| range.contains(t) || (k == 2 && *t >= range.start))
                .cloned()
                .collect();
            seg
        })
        .collect();
    assert!(
        segments.iter().all(|s| !s.is_empty()),
        "the fixture lasts 10 s or more"
    );
    let last_ts = video.last().unwrap().0;
    let mut cases: Vec<(String, Case)> = Vec::new();
    let mut others = Vec::new();

    // The boundary is crossed 4 s in: before it the 3-byte field, after it the extended one.
    const BASE: u32 = 0xFF_FFFF - 4000;
    for (name, absolute, repeat) in [
        ("ext-absolute-repeated", true, true),
        ("ext-absolute-omitted", true, false),
        ("ext-delta", false, true),
    ] {
        let parts = plan(&segments.iter().map(|s| (&s[..], BASE)).collect::<Vec<_>>());
        let due = parts.last().unwrap().2;
        assert_eq!(due, 3, "0 s, 5 s and 10 s are due");
        others.extend(snapshot_keys(name, due));
        let node = node.clone();
        cases.push((
            name.to_string(),
            case(async move {
                let (mut c, sid) = RawClient::start_publish(addr, "live", name).await;
                c.writer.absolute = absolute;
                c.writer.repeat_extended = repeat;
                let stats = stats_of(&node, name);
                send_parts(&mut c, sid, &stats, &parts, name).await;
                assert_eq!(count(&stats.keyframes), keyframe_count(&parts), "{name}");
                assert_eq!(count(&stats.due), due, "{name}");
                // The clock ran continuously across the boundary.
                assert_eq!(count(&stats.media_ms), u64::from(last_ts), "{name}");
                expect_open(&mut c, name).await;
            }),
        ));
    }

    // Backwards: 0..15 s, then the encoder's clock restarts at 0 for 5 s more.
    let mut back: Vec<(&[(u32, Bytes)], u32)> = segments.iter().map(|s| (&s[..], 0)).collect();
    back.push((&segments[0][..], 0));
    let back = plan(&back);
    let back_due = back.last().unwrap().2;
    assert!(
        back_due >= 4,
        "the cadence continues after the jump: {back_due}"
    );
    others.extend(snapshot_keys("ts-backwards", back_due));
    let n2 = node.clone();
    cases.push((
        "timestamps going backwards".into(),
        case(async move {
            let name = "ts-backwards";
            let (mut c, sid) = RawClient::start_publish(addr, "live", name).await;
            let stats = stats_of(&n2, name);
            send_parts(&mut c, sid, &stats, &back, name).await;
            assert_eq!(count(&stats.keyframes), keyframe_count(&back));
            assert_eq!(count(&stats.due), back_due);
            expect_open(&mut c, name).await;
        }),
    ));

    // Abort Message mid-message: the first chunks of a keyframe, an Abort naming its chunk
    // stream, then the keyframe whole. Twice: the restart's first chunk is a fmt 3 header
    // (the aborted message's header repeated), then a fmt 2 one.
    others.extend(snapshot_keys("abort", 2));
    let n3 = node.clone();
    let (seq, key) = (sequence_header(&video), first_keyframe(&video));
    cases.push((
        "Abort Message mid-message".into(),
        case(async move {
            let name = "abort";
            let (mut c, sid) = RawClient::start_publish(addr, "live", name).await;
            let stats = stats_of(&n3, name);
            let mut sent = send_video(&mut c, sid, &[(0, seq.clone())]).await;
            for (round, ts) in [(1u64, 0u32), (2, 5000)] {
                let chunks = c.writer.chunks(6, &message(TYPE_VIDEO, sid, ts, key.clone()));
                assert!(chunks.len() > 3, "the keyframe spans several chunks");
                c.send(&chunks[..2].concat()).await.unwrap();
                let mut abort = Vec::new();
                let m = Message {
                    csid: 2,
                    timestamp: 0,
                    type_id: TYPE_ABORT,
                    stream_id: 0,
                    payload: Bytes::copy_from_slice(&6u32.to_be_bytes()),
                };
                write_single_chunk(&m, 2, &mut abort);
                c.send(&abort).await.unwrap();
                sent += send_video(&mut c, sid, &[(ts, key.clone())]).await;
                assert!(
                    wait_for(secs(5.0), || count(&stats.bytes) == sent).await,
                    "round {round}: media bytes seen {} of {sent} (the aborted part must not count)",
                    count(&stats.bytes)
                );
                assert!(
                    wait_for(secs(10.0), || count(&stats.stored) == round).await,
                    "round {round}: no snapshot"
                );
                assert_eq!(count(&stats.keyframes), round);
            }
            expect_open(&mut c, name).await;
        }),
    ));

    run_cases(cases).await;
    h.finish(&others).await;
}
