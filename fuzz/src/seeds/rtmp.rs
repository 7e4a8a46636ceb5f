//! RTMP seeds: recorded publishes (rml_rtmp's client and ours), handshakes, chunk streams
//! laid out chunk by chunk, AMF0 commands.

use std::collections::VecDeque;

use livesnap::rtmp::chunk_writer::{ChunkWriter, MessageHeader};
use livesnap::rtmp::client::{ClientOptions, Endpoint, Publisher};
use livesnap::rtmp::framing::{TYPE_ABORT, TYPE_AMF0_COMMAND, TYPE_AUDIO, TYPE_VIDEO};
use livesnap::rtmp::session::{Event, Session, SessionLimits};
use livesnap::testing::peer;
use livesnap::testing::wire::chunk_header;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionResult, PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;

use super::media::Video;
use super::Seed;

/// Drives rml_rtmp's client session against our `Session` in memory and records what
/// the client sends after the handshake: connect, createStream, publish, metadata, then
/// the fixture's video tags until about `budget` bytes.
pub(super) fn recorded_publish(video: &Video, budget: usize) -> Vec<u8> {
    struct Pump {
        client: ClientSession,
        server: Session,
        wire: Vec<u8>,
    }
    impl Pump {
        fn send(&mut self, results: Vec<ClientSessionResult>) {
            let mut queue = VecDeque::from(results);
            while let Some(r) = queue.pop_front() {
                let ClientSessionResult::OutboundResponse(packet) = r else {
                    continue;
                };
                self.wire.extend_from_slice(&packet.bytes);
                let mut events = Vec::new();
                self.server
                    .handle(&packet.bytes, &mut events)
                    .expect("server");
                for e in events {
                    if let Event::PublishRequested { .. } = e {
                        self.server.accept_publish().expect("accept");
                    }
                }
                let out = std::mem::take(self.server.output());
                if !out.is_empty() {
                    queue.extend(self.client.handle_input(&out).expect("client"));
                }
            }
        }
    }
    let mut config = ClientSessionConfig::new();
    config.tc_url = Some("rtmp://127.0.0.1:1935/live".into());
    let (client, initial) = ClientSession::new(config).expect("client");
    let mut p = Pump {
        client,
        server: Session::new(SessionLimits::default()).expect("session"),
        wire: Vec::new(),
    };
    p.send(initial);
    let r = p.client.request_connection("live".into()).expect("connect");
    p.send(vec![r]);
    let r = p
        .client
        .request_publishing("cam1".into(), PublishRequestType::Live)
        .expect("publish");
    p.send(vec![r]);
    let mut metadata = StreamMetadata::new();
    metadata.video_width = Some(1280);
    metadata.video_height = Some(720);
    metadata.video_codec_id = Some(7);
    metadata.encoder = Some("Lavf59.27.100".into());
    let r = p.client.publish_metadata(&metadata).expect("metadata");
    p.send(vec![r]);
    for (ts, data) in &video.0 {
        if p.wire.len() >= budget {
            break;
        }
        let r = p
            .client
            .publish_video_data(data.clone(), RtmpTimestamp::new(*ts), false)
            .expect("video");
        p.send(vec![r]);
    }
    assert!(
        p.server.is_publishing(),
        "the recorded publish was not accepted"
    );
    p.wire
}

/// What livesnap's own client (`rtmp::client::Publisher`, which the load tool, the soak
/// and relays publish with) sends after the handshake, recorded by `testing::peer` (our
/// `Session` over an in-memory pipe): connect, releaseStream, FCPublish, createStream,
/// publish, `@setDataFrame`, the fixture's video until about `budget` bytes, FCUnpublish
/// and deleteStream. Unlike rml_rtmp's client it writes a type-0 header on every message,
/// at chunk size 4096.
pub(super) fn client_publish(video: &Video, budget: usize) -> Vec<u8> {
    let metadata = amf_command(&[
        s("@setDataFrame"),
        s("onMetaData"),
        ecma(&[
            ("width", n(1280.0)),
            ("height", n(720.0)),
            ("videocodecid", n(7.0)),
            ("encoder", s("livesnap")),
        ]),
    ]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let recorded = runtime.block_on(async {
        let (io, peer) = peer::spawn(SessionLimits::default());
        let endpoint = Endpoint::parse("rtmp://127.0.0.1:1935/live").expect("URL");
        let mut p = Publisher::publish(io, &endpoint, "cam1", ClientOptions::default())
            .await
            .expect("publish");
        p.send_data(0, &metadata).await.expect("metadata");
        let start = p.stats().bytes_out;
        for (ts, data) in &video.0 {
            if p.stats().bytes_out - start >= budget as u64 {
                break;
            }
            p.send_video(*ts, data).await.expect("video");
        }
        p.finish().await.expect("finish");
        peer.await.expect("peer task")
    });
    assert_eq!(
        recorded.error, None,
        "the peer refused the client's publish"
    );
    let unpublished = recorded.events.contains(&Event::Unpublished);
    assert!(unpublished, "the client's publish did not end cleanly");
    recorded.wire
}

pub(super) fn handshake(publish: &[u8], seeds: &mut Vec<Seed>) {
    let mut client = Handshake::new(PeerType::Client);
    let c0c1 = client.generate_outbound_p0_and_p1().expect("C0C1");
    let mut server = Handshake::new(PeerType::Server);
    let s0s1s2 = match server.process_bytes(&c0c1).expect("server") {
        HandshakeProcessResult::InProgress { response_bytes } => response_bytes,
        other => panic!("{other:?}"),
    };
    let c2 = match client.process_bytes(&s0s1s2).expect("client") {
        HandshakeProcessResult::Completed { response_bytes, .. } => response_bytes,
        other => panic!("{other:?}"),
    };
    let mut stream = c0c1.clone();
    stream.extend_from_slice(&c2);
    stream.extend_from_slice(&publish[..publish.len().min(600)]);
    let mut whole = vec![0];
    whole.extend_from_slice(&stream);
    seeds.push(("handshake", "fp9_digest_then_connect".into(), whole));
    // Cut after C0, after C1 and in the middle of C2 (wide cuts: 1 + u16).
    let mut cut = vec![3, 0, 0, 0x05, 0xFF, 0x02, 0xFF];
    cut.extend_from_slice(&stream);
    seeds.push(("handshake", "fp9_digest_cut".into(), cut));
    // The original handshake: C1 with a zero "digest", C2 echoing nothing useful.
    let mut simple = vec![0, 3];
    simple.extend_from_slice(&[0; 1536]);
    simple.extend_from_slice(&[0x5A; 1536]);
    simple.extend_from_slice(&[3, 0, 0, 0]);
    seeds.push(("handshake", "simple".into(), simple));
}

/// A chunk stream under construction. Whole messages go through livesnap's own
/// `ChunkWriter` (a type-0 header, type-3 continuations with the extended timestamp
/// repeated, at the chunk size it announced). Chunks laid out one by one — to interleave
/// chunk streams, change the chunk size in mid-message, abort a message, or use the fmt 1–3
/// headers and the missing extended-timestamp repeat that `ChunkWriter` never writes — take
/// their headers from `testing::wire::chunk_header`.
struct Wire {
    writer: ChunkWriter,
    out: Vec<u8>,
}

impl Wire {
    fn new() -> Wire {
        Wire {
            writer: ChunkWriter::new(),
            out: Vec::new(),
        }
    }
    /// A whole message, chunked at the current chunk size.
    fn message(&mut self, csid: u32, ts: u32, type_id: u8, sid: u32, payload: &[u8]) -> &mut Self {
        let header = MessageHeader {
            csid,
            timestamp: ts,
            type_id,
            stream_id: sid,
        };
        self.writer
            .write(&header, payload, &mut self.out)
            .expect("seed message");
        self
    }
    /// `SetChunkSize`; whole messages after it are chunked at `size`.
    fn set_chunk_size(&mut self, size: u32) -> &mut Self {
        self.writer
            .set_chunk_size(size, &mut self.out)
            .expect("seed chunk size");
        self
    }
    /// One chunk: `header` (from `chunk_header`) and `data`, exactly as given.
    fn chunk(&mut self, header: Vec<u8>, data: &[u8]) -> &mut Self {
        self.out.extend_from_slice(&header);
        self.out.extend_from_slice(data);
        self
    }
}

/// A fmt-3 header on `csid` (no extended timestamp).
fn h3(csid: u32) -> Vec<u8> {
    chunk_header(3, csid, 0, 0, 0, 0)
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 0x10)
        .collect()
}

/// Every header form: interleaving, chunk size changes, fmt 0–3, 1–3 byte basic
/// headers, extended timestamps with and without the fmt-3 repeat, abort, empty messages.
fn chunk_features() -> Vec<u8> {
    let v = pattern(700, 1);
    let a = pattern(300, 2);
    let c = amf_command(&[s("createStream"), n(2.0), null()]);
    let mut w = Wire::new();
    w.message(3, 0, TYPE_AMF0_COMMAND, 0, &c);
    // A video message at 128, finished after the chunk size went to 256 and interleaved
    // with an audio message; then fmt 1 and a fmt 3 that starts a new message.
    w.chunk(chunk_header(0, 4, 0, 700, TYPE_VIDEO, 1), &v[..128]);
    w.set_chunk_size(256);
    w.chunk(chunk_header(0, 5, 0, 300, TYPE_AUDIO, 1), &a[..256]);
    w.chunk(h3(4), &v[128..384]);
    w.chunk(h3(5), &a[256..]);
    w.chunk(h3(4), &v[384..640]);
    w.chunk(chunk_header(1, 5, 23, 40, TYPE_AUDIO, 0), &a[..40]);
    w.chunk(h3(4), &v[640..]);
    w.chunk(h3(5), &a[..40]);
    // An extended timestamp repeated on the continuation (as ChunkWriter writes it), then
    // an extended fmt-2 delta whose continuation leaves it out.
    w.message(4, 0x0123_4567, TYPE_VIDEO, 1, &v[..300]);
    w.chunk(chunk_header(2, 4, 0x0100_0000, 0, 0, 0), &v[..256]);
    w.chunk(h3(4), &v[256..300]);
    // 3-byte basic headers, an empty message, an aborted one, a 2-byte basic header.
    w.message(320, 5, 18, 1, &[]);
    w.chunk(chunk_header(0, 65599, 6, 300, TYPE_AUDIO, 1), &a[..256]);
    w.message(2, 0, TYPE_ABORT, 0, &65599u32.to_be_bytes());
    w.message(64, 7, TYPE_AUDIO, 1, &a[..3]);
    w.message(2, 0, 5, 0, &2_500_000u32.to_be_bytes());
    w.set_chunk_size(4096);
    w.message(
        6,
        8,
        TYPE_VIDEO,
        1,
        &[pattern(4096, 3), pattern(904, 4)].concat(),
    );
    w.out
}

pub(super) fn framing(publish: &[u8], client: &[u8], seeds: &mut Vec<Seed>) {
    let features = chunk_features();
    let prefixed = |prefix: &[u8], stream: &[u8]| [prefix, stream].concat();
    seeds.push(("framing", "features".into(), prefixed(&[0, 0], &features)));
    seeds.push((
        "framing",
        "features_cut".into(),
        prefixed(&[0, 6, 0, 2, 11, 17, 130, 255], &features),
    ));
    seeds.push((
        "framing",
        "features_small_limits".into(),
        prefixed(&[0b0110_1011, 0], &features),
    ));
    let head = &publish[..publish.len().min(6000)];
    seeds.push(("framing", "rml_publish".into(), prefixed(&[0, 0], head)));
    let client_head = &client[..client.len().min(6000)];
    seeds.push((
        "framing",
        "client_publish".into(),
        prefixed(&[0, 0], client_head),
    ));
    seeds.push((
        "framing",
        "rml_publish_cut".into(),
        prefixed(&[0, 4, 0, 3, 17, 200], head),
    ));
}

pub(super) fn session(publish: &[u8], client: &[u8], seeds: &mut Vec<Seed>) {
    seeds.push(("session", "publish".into(), [&[0, 0], publish].concat()));
    seeds.push((
        "session",
        "client_publish".into(),
        [&[0, 0], client].concat(),
    ));
    seeds.push((
        "session",
        "publish_cut".into(),
        [&[0, 5, 9, 0, 100, 13, 255], publish].concat(),
    ));
    let head = &publish[..publish.len().min(2000)];
    seeds.push((
        "session",
        "publish_rejected".into(),
        [&[1, 0], head].concat(),
    ));
    seeds.push((
        "session",
        "publish_small_limits".into(),
        [&[0b1111_1110, 0], head].concat(),
    ));
    // After connect: a command nested 40 deep (rml_rtmp alone would recurse on it).
    let connect = amf_command(&[
        s("connect"),
        n(1.0),
        obj(&[("app", s("live")), ("tcUrl", s("rtmp://h/live"))]),
    ]);
    let mut deep = amf_command(&[s("createStream"), n(2.0), null()]);
    for _ in 0..40 {
        deep.extend_from_slice(&[0x03, 0, 1, b'a']);
    }
    let mut w = Wire::new();
    w.set_chunk_size(65536)
        .message(3, 0, TYPE_AMF0_COMMAND, 0, &connect)
        .message(3, 0, TYPE_AMF0_COMMAND, 0, &deep);
    seeds.push(("session", "deep_amf".into(), [&[0, 0], &w.out[..]].concat()));
    let data = [s("@setDataFrame")].concat();
    let mut w = Wire::new();
    w.message(3, 0, TYPE_AMF0_COMMAND, 0, &connect)
        .message(4, 0, 18, 1, &data);
    seeds.push((
        "session",
        "short_set_data_frame".into(),
        [&[0, 0], &w.out[..]].concat(),
    ));
}

// A small ordered AMF0 writer (rml_amf0 writes objects from a HashMap, in random order).
fn s(v: &str) -> Vec<u8> {
    let mut b = vec![0x02];
    b.extend_from_slice(&(v.len() as u16).to_be_bytes());
    b.extend_from_slice(v.as_bytes());
    b
}
fn n(v: f64) -> Vec<u8> {
    let mut b = vec![0x00];
    b.extend_from_slice(&v.to_be_bytes());
    b
}
fn null() -> Vec<u8> {
    vec![0x05]
}
fn boolean(v: bool) -> Vec<u8> {
    vec![0x01, u8::from(v)]
}
fn props(b: &mut Vec<u8>, props: &[(&str, Vec<u8>)]) {
    for (name, value) in props {
        b.extend_from_slice(&(name.len() as u16).to_be_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(value);
    }
    b.extend_from_slice(&[0, 0, 0x09]);
}
fn obj(p: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = vec![0x03];
    props(&mut b, p);
    b
}
fn ecma(p: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = vec![0x08];
    b.extend_from_slice(&(p.len() as u32).to_be_bytes());
    props(&mut b, p);
    b
}
fn strict(values: &[Vec<u8>]) -> Vec<u8> {
    let mut b = vec![0x0A];
    b.extend_from_slice(&(values.len() as u32).to_be_bytes());
    values.iter().for_each(|v| b.extend_from_slice(v));
    b
}
fn amf_command(values: &[Vec<u8>]) -> Vec<u8> {
    values.concat()
}

/// OBS's connect command object.
fn obs_connect() -> Vec<u8> {
    amf_command(&[
        s("connect"),
        n(1.0),
        obj(&[
            ("app", s("live")),
            ("type", s("nonprivate")),
            ("flashVer", s("FMLE/3.0 (compatible; FMSc/1.0)")),
            ("swfUrl", s("rtmp://127.0.0.1/live")),
            ("tcUrl", s("rtmp://127.0.0.1/live")),
        ]),
    ])
}

pub(super) fn amf0(seeds: &mut Vec<Seed>) {
    // mode: bit 0 data, bits 1-2 state, bits 3-4 stream id (0, 1, 2, MAX).
    let mode = |data: bool, state: u8, sid: u8| u8::from(data) | state << 1 | sid << 3;
    let mut deep = amf_command(&[s("_checkbw"), n(5.0), null()]);
    for _ in 0..31 {
        deep.extend_from_slice(&[0x03, 0, 1, b'k']);
    }
    deep.extend_from_slice(&n(1.0));
    for _ in 0..31 {
        deep.extend_from_slice(&[0, 0, 0x09]);
    }
    let ffmpeg_connect = amf_command(&[
        s("connect"),
        n(1.0),
        obj(&[
            ("app", s("live/")),
            ("flashVer", s("FMLE/3.0 (compatible; Lavf59.27.100)")),
            ("tcUrl", s("rtmp://127.0.0.1:1935/live")),
            ("fpad", boolean(false)),
            ("capabilities", n(15.0)),
            ("audioCodecs", n(4071.0)),
            ("videoCodecs", n(252.0)),
            ("videoFunction", n(1.0)),
        ]),
    ]);
    let metadata = amf_command(&[
        s("@setDataFrame"),
        s("onMetaData"),
        ecma(&[
            ("duration", n(0.0)),
            ("width", n(1280.0)),
            ("height", n(720.0)),
            ("videodatarate", n(0.0)),
            ("framerate", n(25.0)),
            ("videocodecid", n(7.0)),
            ("encoder", s("Lavf59.27.100")),
            ("filesize", n(0.0)),
        ]),
    ]);
    let cases: Vec<(&str, u8, Vec<u8>)> = vec![
        ("connect_obs", mode(false, 0, 0), obs_connect()),
        ("connect_ffmpeg", mode(false, 0, 0), ffmpeg_connect),
        (
            "release_stream",
            mode(false, 1, 0),
            amf_command(&[s("releaseStream"), n(2.0), null(), s("cam1")]),
        ),
        (
            "fc_publish",
            mode(false, 1, 0),
            amf_command(&[s("FCPublish"), n(3.0), null(), s("cam1")]),
        ),
        (
            "create_stream",
            mode(false, 1, 0),
            amf_command(&[s("createStream"), n(4.0), null()]),
        ),
        (
            "publish",
            mode(false, 2, 1),
            amf_command(&[
                s("publish"),
                n(5.0),
                null(),
                s("cam1?vhost=a.com"),
                s("live"),
            ]),
        ),
        (
            "delete_stream",
            mode(false, 3, 0),
            amf_command(&[s("deleteStream"), n(6.0), null(), n(1.0)]),
        ),
        (
            "play",
            mode(false, 2, 1),
            amf_command(&[
                s("play"),
                n(7.0),
                null(),
                s("cam1"),
                n(-2.0),
                n(-1.0),
                boolean(true),
            ]),
        ),
        ("set_data_frame", mode(true, 3, 1), metadata),
        ("depth_32", mode(false, 1, 0), deep),
        (
            "strict_array",
            mode(true, 3, 1),
            amf_command(&[
                s("@setDataFrame"),
                s("onMetaData"),
                strict(&[n(1.0), s("x"), null(), obj(&[("a", boolean(true))])]),
            ]),
        ),
    ];
    for (name, mode, payload) in cases {
        seeds.push(("amf0", name.into(), [&[mode], &payload[..]].concat()));
    }
}
