//! RTMP seeds: a recorded publish, handshakes, hand-built chunk streams, AMF0 commands.

use std::collections::VecDeque;

use livesnap::rtmp::framing::{TYPE_ABORT, TYPE_AMF0_COMMAND, TYPE_AUDIO, TYPE_VIDEO};
use livesnap::rtmp::session::{Event, Session, SessionLimits};
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

/// A test-side chunk writer that writes exactly the headers it is told to.
#[derive(Default)]
struct Chunks(Vec<u8>);

impl Chunks {
    fn basic(&mut self, fmt: u8, csid: u32) -> &mut Self {
        match csid {
            2..=63 => self.0.push(fmt << 6 | csid as u8),
            64..=319 => self.0.extend_from_slice(&[fmt << 6, (csid - 64) as u8]),
            _ => {
                let id = (csid - 64) as u16;
                self.0
                    .extend_from_slice(&[fmt << 6 | 1, id as u8, (id >> 8) as u8]);
            }
        }
        self
    }
    fn ts(&mut self, v: u32) -> &mut Self {
        self.0
            .extend_from_slice(&v.min(0xFF_FFFF).to_be_bytes()[1..]);
        self
    }
    fn ext(&mut self, v: u32) -> &mut Self {
        if v >= 0xFF_FFFF {
            self.0.extend_from_slice(&v.to_be_bytes());
        }
        self
    }
    fn h0(&mut self, csid: u32, ts: u32, len: usize, type_id: u8, sid: u32) -> &mut Self {
        self.basic(0, csid).ts(ts);
        self.0.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        self.0.push(type_id);
        self.0.extend_from_slice(&sid.to_le_bytes());
        self.ext(ts)
    }
    fn h1(&mut self, csid: u32, delta: u32, len: usize, type_id: u8) -> &mut Self {
        self.basic(1, csid).ts(delta);
        self.0.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        self.0.push(type_id);
        self.ext(delta)
    }
    fn h2(&mut self, csid: u32, delta: u32) -> &mut Self {
        self.basic(2, csid).ts(delta).ext(delta)
    }
    fn h3(&mut self, csid: u32, ext: Option<u32>) -> &mut Self {
        self.basic(3, csid);
        if let Some(v) = ext {
            self.0.extend_from_slice(&v.to_be_bytes());
        }
        self
    }
    fn data(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn set_chunk_size(&mut self, size: u32) -> &mut Self {
        self.h0(2, 0, 4, 1, 0).data(&size.to_be_bytes())
    }
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
    let mut w = Chunks::default();
    w.h0(3, 0, c.len(), TYPE_AMF0_COMMAND, 0).data(&c);
    w.h0(4, 0, v.len(), TYPE_VIDEO, 1).data(&v[..128]);
    w.set_chunk_size(256);
    w.h0(5, 0, a.len(), TYPE_AUDIO, 1).data(&a[..256]);
    w.h3(4, None).data(&v[128..384]);
    w.h3(5, None).data(&a[256..]);
    w.h3(4, None).data(&v[384..640]);
    w.h1(5, 23, 40, TYPE_AUDIO).data(&a[..40]);
    w.h3(4, None).data(&v[640..]);
    w.h3(5, None).data(&a[..40]);
    w.h0(4, 0x0123_4567, 300, TYPE_VIDEO, 1).data(&v[..256]);
    w.h3(4, Some(0x0123_4567)).data(&v[256..300]);
    w.h2(4, 0x0100_0000).data(&v[..256]);
    w.h3(4, None).data(&v[256..300]);
    w.h0(320, 5, 0, 18, 1);
    w.h0(65599, 6, a.len(), TYPE_AUDIO, 1).data(&a[..256]);
    w.h0(2, 0, 4, TYPE_ABORT, 0).data(&65599u32.to_be_bytes());
    w.h0(64, 7, 3, TYPE_AUDIO, 1).data(&a[..3]);
    w.h0(2, 0, 4, 5, 0).data(&2_500_000u32.to_be_bytes());
    w.set_chunk_size(4096);
    w.h0(6, 8, 5000, TYPE_VIDEO, 1).data(&pattern(4096, 3));
    w.h3(6, None).data(&pattern(904, 4));
    w.0
}

pub(super) fn framing(publish: &[u8], seeds: &mut Vec<Seed>) {
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
    seeds.push((
        "framing",
        "rml_publish_cut".into(),
        prefixed(&[0, 4, 0, 3, 17, 200], head),
    ));
}

pub(super) fn session(publish: &[u8], seeds: &mut Vec<Seed>) {
    seeds.push(("session", "publish".into(), [&[0, 0], publish].concat()));
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
    let mut w = Chunks::default();
    w.set_chunk_size(65536);
    w.h0(3, 0, connect.len(), TYPE_AMF0_COMMAND, 0)
        .data(&connect);
    w.h0(3, 0, deep.len(), TYPE_AMF0_COMMAND, 0).data(&deep);
    seeds.push(("session", "deep_amf".into(), [&[0, 0], &w.0[..]].concat()));
    let data = [s("@setDataFrame")].concat();
    let mut w = Chunks::default();
    w.h0(3, 0, connect.len(), TYPE_AMF0_COMMAND, 0)
        .data(&connect);
    w.h0(4, 0, data.len(), 18, 1).data(&data);
    seeds.push((
        "session",
        "short_set_data_frame".into(),
        [&[0, 0], &w.0[..]].concat(),
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
