//! The client against an in-process peer (`test_peer`: rml_rtmp's `ServerSession` over
//! `tokio::io::duplex`, every byte re-read by our own chunk reader) and against raw hostile
//! peers.

use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::sessions::ServerSessionEvent as Ev;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::oneshot;

use super::test_peer::{peer, server_handshake, Log, Policy};
use super::*;
use crate::rtmp::chunk_writer::PreChunked;

fn opts() -> ClientOptions {
    ClientOptions {
        handshake_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        close_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

fn endpoint() -> Endpoint {
    Endpoint::parse("rtmp://127.0.0.1:1935/live").unwrap()
}

fn pat(n: usize, seed: u8) -> Bytes {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A real `@setDataFrame onMetaData` payload as an encoder sends it.
fn set_data_frame() -> Bytes {
    use rml_rtmp::rml_amf0::{serialize, Amf0Value};
    let mut meta = std::collections::HashMap::new();
    meta.insert("width".to_owned(), Amf0Value::Number(1280.0));
    meta.insert("encoder".to_owned(), Amf0Value::Utf8String("x".into()));
    let values = vec![
        Amf0Value::Utf8String("@setDataFrame".into()),
        Amf0Value::Utf8String("onMetaData".into()),
        Amf0Value::Object(meta),
    ];
    Bytes::from(serialize(&values).unwrap())
}

fn start(policy: Policy, capacity: usize) -> (DuplexStream, tokio::task::JoinHandle<Log>) {
    let (client, server) = tokio::io::duplex(capacity);
    (client, tokio::spawn(peer(server, policy)))
}

#[tokio::test]
async fn publish_sends_byte_identical_messages_with_their_timestamps() {
    let (io, peer) = start(Policy::default(), 64 << 10);
    let mut p = Publisher::publish(io, &endpoint(), "cam1?token=abc", opts())
        .await
        .unwrap();
    assert_eq!(p.stream_id(), 1);
    assert_eq!(p.chunk_size(), 4096);
    let meta = set_data_frame();
    let mut sent = vec![(18u8, 0u32, meta.clone())];
    p.send_data(0, &meta).await.unwrap();
    let cases = [
        (MediaKind::Video, 0, 40),
        (MediaKind::Video, 33, 100_000),
        (MediaKind::Audio, 20, 4096),
        (MediaKind::Audio, 21, 4097),
        (MediaKind::Video, 0x00FF_FFFE, 9000),
        (MediaKind::Video, 0x00FF_FFFF, 9000),
        (MediaKind::Audio, 0x0123_4567, 300),
        (MediaKind::Video, 0x0123_4568, 250_000),
        (MediaKind::Video, 10, 0),
    ];
    for (i, &(kind, ts, len)) in cases.iter().enumerate() {
        let payload = pat(len, i as u8);
        match kind {
            MediaKind::Video => p.send_video(ts, &payload).await.unwrap(),
            MediaKind::Audio => p.send_audio(ts, &payload).await.unwrap(),
            MediaKind::Data => unreachable!(),
        }
        sent.push((kind.type_id(), ts, payload));
    }
    // The pre-chunked path: direct, then at an extended timestamp (re-chunked).
    let payload = pat(10_000, 99);
    let pc = PreChunked::new(CSID_VIDEO, 9, &payload, p.chunk_size()).unwrap();
    for ts in [5000, 5033, 0x0200_0000] {
        p.send_prechunked(&pc, ts).await.unwrap();
        sent.push((9, ts, payload.clone()));
    }
    p.finish().await.unwrap();

    let log = peer.await.unwrap();
    assert!(log.eof);
    assert_eq!(log.media(), sent);
    assert!(log
        .messages
        .iter()
        .filter(|m| m.type_id != 20 && m.type_id != 1)
        .all(|m| m.stream_id == 1));
    assert_eq!(
        log.commands(),
        [
            "connect",
            "releaseStream",
            "FCPublish",
            "createStream",
            "publish",
            "FCUnpublish",
            "deleteStream"
        ]
    );
    let requested = log.events.iter().find_map(|e| match e {
        Ev::PublishStreamRequested {
            app_name,
            stream_key,
            ..
        } => Some((app_name.as_str(), stream_key.as_str())),
        _ => None,
    });
    assert_eq!(requested, Some(("live", "cam1?token=abc")));
    // rml_rtmp parsed the same bytes: it saw the metadata and every video message.
    assert!(log
        .events
        .iter()
        .any(|e| matches!(e, Ev::StreamMetadataChanged { .. })));
    let videos = log
        .events
        .iter()
        .filter(|e| matches!(e, Ev::VideoDataReceived { .. }))
        .count();
    assert_eq!(videos, sent.iter().filter(|s| s.0 == 9).count());
    assert!(log
        .events
        .iter()
        .any(|e| matches!(e, Ev::PublishStreamFinished { .. })));
}

#[tokio::test]
async fn refusals_carry_the_status_and_phase() {
    let policy = Policy {
        reject_publish: Some(("NetStream.Publish.BadName", "Stream already publishing")),
        ..Policy::default()
    };
    let (io, _peer) = start(policy, 64 << 10);
    let err = Publisher::publish(io, &endpoint(), "cam1", opts())
        .await
        .err()
        .unwrap();
    assert!(err.is_refusal(), "{err}");
    assert_eq!(err.phase(), Phase::Publish);
    let status = err.status().unwrap();
    assert_eq!(status.code, "NetStream.Publish.BadName");
    assert_eq!(status.description, "Stream already publishing");
    assert_eq!(
        err.to_string(),
        "publish: refused by the server: NetStream.Publish.BadName (Stream already publishing)"
    );

    let policy = Policy {
        reject_connect: Some(("NetConnection.Connect.Rejected", "no such app")),
        ..Policy::default()
    };
    let (io, _peer) = start(policy, 64 << 10);
    let err = Publisher::publish(io, &endpoint(), "cam1", opts())
        .await
        .err()
        .unwrap();
    assert!(err.is_refusal());
    assert_eq!(err.phase(), Phase::Connect);
    assert_eq!(err.status().unwrap().code, "NetConnection.Connect.Rejected");

    let policy = Policy {
        close_on_publish: true,
        ..Policy::default()
    };
    let (io, _peer) = start(policy, 64 << 10);
    let err = Publisher::publish(io, &endpoint(), "cam1", opts())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            ClientError::Closed {
                phase: Phase::Publish
            }
        ),
        "{err}"
    );
    assert!(err.is_refusal());

    // Accepted, then closed at once: the start grace sees the close.
    let policy = Policy {
        close_after_publish_start: true,
        ..Policy::default()
    };
    let (io, _peer) = start(policy, 64 << 10);
    let err = Publisher::publish(io, &endpoint(), "cam1", opts())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            ClientError::Closed {
                phase: Phase::Publish
            }
        ),
        "{err}"
    );
    assert!(err.is_refusal());

    let policy = Policy {
        reject_play: Some(("NetStream.Play.StreamNotFound", "nope")),
        ..Policy::default()
    };
    let (io, _peer) = start(policy, 64 << 10);
    let err = Player::play(io, &endpoint(), "cam1", opts())
        .await
        .err()
        .unwrap();
    assert_eq!(err.phase(), Phase::Play);
    assert_eq!(err.status().unwrap().code, "NetStream.Play.StreamNotFound");
}

#[tokio::test]
async fn a_silent_server_times_out_in_the_phase_it_stalls() {
    let short = ClientOptions {
        handshake_timeout: Duration::from_millis(200),
        command_timeout: Duration::from_millis(200),
        ..opts()
    };
    // Nobody answers the handshake.
    let (io, _server) = tokio::io::duplex(64 << 10);
    let err = Publisher::publish(io, &endpoint(), "s", short.clone())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            ClientError::Timeout {
                phase: Phase::Handshake,
                ..
            }
        ),
        "{err}"
    );

    // Handshake, but `connect` is never answered.
    let policy = Policy {
        ignore_connect: true,
        ..Policy::default()
    };
    let (io, _peer) = start(policy, 64 << 10);
    let err = Player::play(io, &endpoint(), "s", short)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            ClientError::Timeout {
                phase: Phase::Connect,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_refusal());
}

#[tokio::test]
async fn pings_are_answered_by_service_while_idle_and_by_sends() {
    // Idle publisher: only `service` runs.
    let policy = Policy {
        ping_after_publish: true,
        ..Policy::default()
    };
    let (io, peer_task) = start(policy, 64 << 10);
    let mut p = Publisher::publish(io, &endpoint(), "s", opts())
        .await
        .unwrap();
    let idle = tokio::time::sleep(Duration::from_millis(300));
    tokio::pin!(idle);
    loop {
        tokio::select! {
            r = p.service() => r.unwrap(),
            _ = &mut idle => break,
        }
    }
    p.finish().await.unwrap();
    assert_eq!(peer_task.await.unwrap().pings_answered(), 1);

    // Busy publisher that never calls `service`: the next send answers.
    let policy = Policy {
        ping_after_publish: true,
        ..Policy::default()
    };
    let (io, peer_task) = start(policy, 64 << 10);
    let mut p = Publisher::publish(io, &endpoint(), "s", opts())
        .await
        .unwrap();
    for ts in 0..10 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        p.send_video(ts * 33, &pat(500, 1)).await.unwrap();
    }
    p.finish().await.unwrap();
    let log = peer_task.await.unwrap();
    assert_eq!(log.pings_answered(), 1);
    assert_eq!(log.media().len(), 10);
}

#[tokio::test]
async fn player_receives_what_the_server_sends_at_any_chunk_size_and_acknowledges() {
    for chunk_size in [128, 65536] {
        let media: Vec<(MediaKind, u32, Bytes)> = (0..40u32)
            .map(|i| {
                let kind = if i % 3 == 0 {
                    MediaKind::Audio
                } else {
                    MediaKind::Video
                };
                let len = [10, 300, 5000, 70_000][i as usize % 4];
                (kind, i * 20 + (i % 2) * 0x00FF_FFF0, pat(len, i as u8))
            })
            .collect();
        let policy = Policy {
            play_media: media.clone(),
            chunk_size,
            window_ack_size: 100_000,
            ..Policy::default()
        };
        let (io, peer_task) = start(policy, 64 << 10);
        let mut player = Player::play(io, &endpoint(), "cam1", opts()).await.unwrap();
        let mut got = Vec::new();
        while let Some(m) = player.recv().await.unwrap() {
            if m.kind != MediaKind::Data {
                got.push((m.kind, m.timestamp, m.payload));
            }
        }
        assert_eq!(got, media, "chunk size {chunk_size}");
        let stats = player.stats();
        player.close().await.unwrap();
        let log = peer_task.await.unwrap();
        let acks: Vec<u32> = log
            .events
            .iter()
            .filter_map(|e| match e {
                Ev::AcknowledgementReceived { bytes_received } => Some(*bytes_received),
                _ => None,
            })
            .collect();
        assert_eq!(stats.acks as usize, acks.len());
        assert!(stats.bytes_in >= acks.last().copied().unwrap_or(0).into());
        let total: usize = media.iter().map(|m| m.2.len()).sum();
        assert!(acks.len() >= total / 100_000 - 1, "{acks:?}");
        assert!(acks.windows(2).all(|w| w[1] - w[0] >= 100_000), "{acks:?}");
        assert!(log.commands().contains(&"deleteStream".to_string()));
    }
}

#[tokio::test]
async fn a_cancelled_send_is_completed_before_the_next_message() {
    for prechunked in [false, true] {
        let (gate_tx, gate_rx) = oneshot::channel();
        let policy = Policy {
            pause: Some(gate_rx),
            ..Policy::default()
        };
        // A 4 KiB pipe: a 200 KB message cannot be written while the peer does not read.
        let (io, peer_task) = start(policy, 4096);
        let mut p = Publisher::publish(io, &endpoint(), "s", opts())
            .await
            .unwrap();
        let big = pat(200_000, 7);
        let pc = PreChunked::new(CSID_VIDEO, 9, &big, p.chunk_size()).unwrap();
        let send = async {
            if prechunked {
                p.send_prechunked(&pc, 40).await
            } else {
                p.send_video(40, &big).await
            }
        };
        assert!(tokio::time::timeout(Duration::from_millis(100), send)
            .await
            .is_err());
        gate_tx.send(()).unwrap();
        p.send_audio(41, &pat(100, 8)).await.unwrap();
        p.finish().await.unwrap();
        let log = peer_task.await.unwrap();
        let expected = vec![(9, 40, big.clone()), (8, 41, pat(100, 8))];
        assert_eq!(log.media(), expected, "prechunked={prechunked}");
    }
}

#[tokio::test]
async fn a_stalled_server_fails_the_write_within_write_timeout() {
    let (_gate_tx, gate_rx) = oneshot::channel::<()>();
    let policy = Policy {
        pause: Some(gate_rx),
        ..Policy::default()
    };
    let (io, _peer) = start(policy, 4096);
    let o = ClientOptions {
        write_timeout: Duration::from_millis(200),
        ..opts()
    };
    let mut p = Publisher::publish(io, &endpoint(), "s", o).await.unwrap();
    let err = p.send_video(0, &pat(100_000, 1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::WriteTimeout {
                phase: Phase::Publishing,
                ..
            }
        ),
        "{err}"
    );
}

/// A peer that handshakes, then writes `bytes` and keeps the connection open.
async fn hostile(bytes: Vec<u8>) -> DuplexStream {
    let (client, mut server) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        server_handshake(&mut server).await;
        let _ = server.write_all(&bytes).await;
        let mut sink = vec![0u8; 65536];
        while matches!(server.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    client
}

#[tokio::test]
async fn hostile_servers_get_bounded_errors() {
    use crate::rtmp::chunk_writer::{ChunkWriter, MessageHeader};
    use crate::rtmp::framing::FramingError;
    let h = |csid, type_id| MessageHeader {
        csid,
        timestamp: 0,
        type_id,
        stream_id: 0,
    };
    // A 16 MiB video message header: refused at the header, nothing reserved.
    let mut b = vec![0x04, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0];
    b.extend_from_slice(&[0; 100]);
    let err = Publisher::publish(hostile(b).await, &endpoint(), "s", opts())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            &err,
            ClientError::Framing {
                phase: Phase::Connect,
                source: FramingError::MessageTooLarge { .. }
            }
        ),
        "{err}"
    );
    // SetChunkSize 0.
    let mut b = Vec::new();
    ChunkWriter::new()
        .write(&h(2, 1), &0u32.to_be_bytes(), &mut b)
        .unwrap();
    let err = Player::play(hostile(b).await, &endpoint(), "s", opts())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            &err,
            ClientError::Framing {
                source: FramingError::ChunkSize { size: 0 },
                ..
            }
        ),
        "{err}"
    );
    // A `_result` nested 100,000 deep: refused by the AMF0 guard, no stack overflow.
    let mut amf = command::call("_result", 1.0, Vec::new());
    amf.pop();
    for _ in 0..100_000 {
        amf.extend_from_slice(&[0x03, 0, 1, b'a']);
    }
    amf.truncate(60_000);
    let mut b = Vec::new();
    let mut w = ChunkWriter::new();
    w.set_chunk_size(65536, &mut b).unwrap();
    w.write(&h(3, 20), &amf, &mut b).unwrap();
    let err = Publisher::publish(hostile(b).await, &endpoint(), "s", opts())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            &err,
            ClientError::Amf {
                phase: Phase::Connect,
                ..
            }
        ),
        "{err}"
    );
    // A command over the 64 KiB command cap.
    let mut b = Vec::new();
    w.write(&h(3, 20), &vec![5u8; 70_000], &mut b).unwrap();
    let err = Publisher::publish(hostile(b).await, &endpoint(), "s", opts())
        .await
        .err()
        .unwrap();
    assert!(matches!(&err, ClientError::Framing { .. }), "{err}");
    // Ping floods are answered without growing anything but the socket's queue.
    let mut b = Vec::new();
    for _ in 0..10_000 {
        w.write(&h(2, 4), &[0, 6, 0, 0, 0, 1], &mut b).unwrap();
    }
    let o = ClientOptions {
        command_timeout: Duration::from_millis(300),
        ..opts()
    };
    let err = Publisher::publish(hostile(b).await, &endpoint(), "s", o)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            &err,
            ClientError::Timeout {
                phase: Phase::Connect,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn endpoints_parse() {
    let e = Endpoint::parse("rtmp://a.rtmp.youtube.com/live2").unwrap();
    assert_eq!(
        (
            e.tls,
            e.host.as_str(),
            e.port,
            e.app.as_str(),
            e.tc_url.as_str()
        ),
        (
            false,
            "a.rtmp.youtube.com",
            1935,
            "live2",
            "rtmp://a.rtmp.youtube.com/live2"
        )
    );
    let e = Endpoint::parse("rtmps://live-api-s.facebook.com:443/rtmp/").unwrap();
    assert_eq!((e.tls, e.port, e.app.as_str()), (true, 443, "rtmp"));
    assert_eq!(e.authority(), "live-api-s.facebook.com:443");
    let e = Endpoint::parse("rtmps://host/app/sub").unwrap();
    assert_eq!((e.port, e.app.as_str()), (443, "app/sub"));
    let e = Endpoint::parse("rtmp://[::1]:1936/live").unwrap();
    assert_eq!((e.host.as_str(), e.port), ("::1", 1936));
    assert_eq!(e.authority(), "[::1]:1936");
    assert_eq!(e.tc_url, "rtmp://[::1]:1936/live");
    for bad in [
        "http://h/live",
        "rtmp://h",
        "rtmp://h/",
        "rtmp:///live",
        "rtmp://h:x/live",
        "rtmp://[::1/live",
    ] {
        assert!(Endpoint::parse(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn bad_options_fail_before_sending() {
    let (io, _server) = tokio::io::duplex(1024);
    let o = ClientOptions {
        chunk_size: 64,
        ..opts()
    };
    let err = Publisher::publish(io, &endpoint(), "s", o)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            ClientError::Write {
                phase: Phase::Handshake,
                ..
            }
        ),
        "{err}"
    );
}

/// Records every byte written through it once `on` is set.
struct Recorder {
    io: DuplexStream,
    log: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

impl tokio::io::AsyncRead for Recorder {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Recorder {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = r {
            if let Some(log) = self.log.lock().unwrap().as_mut() {
                log.extend_from_slice(&buf[..n]);
            }
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The bytes a publisher writes for `msgs` after its publish started: one `send` each,
/// or (`batched`) all queued and written by one flush. Also what the peer received.
async fn media_bytes(msgs: &[(MediaKind, u32, Bytes)], batched: bool) -> (Vec<u8>, Log) {
    let (io, peer) = start(Policy::default(), 1 << 20);
    let log = std::sync::Arc::new(std::sync::Mutex::new(None));
    let io = Recorder {
        io,
        log: log.clone(),
    };
    let mut p = Publisher::publish(io, &endpoint(), "s", opts())
        .await
        .unwrap();
    *log.lock().unwrap() = Some(Vec::new());
    for (kind, ts, payload) in msgs {
        if batched {
            p.queue(*kind, *ts, payload).unwrap();
        } else {
            p.send(*kind, *ts, payload).await.unwrap();
        }
    }
    if batched {
        assert_eq!(
            log.lock().unwrap().as_ref().unwrap().len(),
            0,
            "queue wrote"
        );
        assert!(p.queued_bytes() > 0);
        p.flush().await.unwrap();
        assert_eq!(p.queued_bytes(), 0);
    }
    let bytes = log.lock().unwrap().take().unwrap();
    p.finish().await.unwrap();
    (bytes, peer.await.unwrap())
}

#[tokio::test]
async fn a_batch_writes_exactly_the_bytes_of_sending_one_by_one() {
    // Same-size, same-type messages at steady deltas (fmt 2/3 headers: the chunk stream
    // state carries from one message to the next), a multi-chunk keyframe, extended
    // timestamps, metadata and an empty message.
    let mut msgs = vec![(MediaKind::Data, 0, set_data_frame())];
    for i in 0..20u32 {
        msgs.push((MediaKind::Video, i * 33, pat(700, i as u8)));
        msgs.push((MediaKind::Audio, i * 23, pat(200, 50)));
    }
    msgs.push((MediaKind::Video, 700, pat(300_000, 3)));
    msgs.push((MediaKind::Video, 733, pat(0, 0)));
    msgs.push((MediaKind::Video, 0x00FF_FFFF, pat(9000, 4)));
    msgs.push((MediaKind::Audio, 0x0100_0010, pat(300, 5)));
    msgs.push((MediaKind::Audio, 0x0100_0020, pat(300, 5)));
    let (one_by_one, log1) = media_bytes(&msgs, false).await;
    let (batched, log2) = media_bytes(&msgs, true).await;
    assert!(one_by_one.len() > 300_000);
    assert!(one_by_one == batched, "the batch's bytes differ");
    let sent: Vec<_> = msgs
        .iter()
        .map(|(k, t, p)| (k.type_id(), *t, p.clone()))
        .collect();
    assert_eq!(log1.media(), sent);
    assert_eq!(log2.media(), sent);
}
