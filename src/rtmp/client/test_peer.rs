//! Test peer for the client's unit tests: rml_rtmp's `ServerSession` over
//! `tokio::io::duplex`, with every byte the client sends also fed to our own
//! `framing::ChunkReader`, so that tests compare messages byte for byte.

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent as Ev, ServerSessionResult as Res,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::oneshot;

use super::{command, MediaKind};
use crate::rtmp::framing::{ChunkReader, FramingLimits, Message, TYPE_AMF0_COMMAND};

pub(super) type Reject = Option<(&'static str, &'static str)>;

/// What the peer does.
#[derive(Default)]
pub(super) struct Policy {
    pub reject_connect: Reject,
    pub reject_publish: Reject,
    pub reject_play: Reject,
    /// Drop the connection when a publish is requested (nginx-rtmp's `deny publish`).
    pub close_on_publish: bool,
    /// Accept the publish, then close (nginx-rtmp's `deny publish` does exactly this).
    pub close_after_publish_start: bool,
    /// Never answer `connect`.
    pub ignore_connect: bool,
    /// Send a ping request right after accepting the publish.
    pub ping_after_publish: bool,
    /// After accepting a play: send these, then `finish_playing`.
    pub play_media: Vec<(MediaKind, u32, Bytes)>,
    /// Stop reading after accepting the publish until this fires.
    pub pause: Option<oneshot::Receiver<()>>,
    /// Server chunk size (rml_rtmp's default 4096 when 0).
    pub chunk_size: u32,
    /// Window acknowledgement size announced to the client (rml_rtmp's 1 GiB when 0).
    pub window_ack_size: u32,
}

/// What the peer saw.
#[derive(Debug, Default)]
pub(super) struct Log {
    pub events: Vec<Ev>,
    /// Every message the client sent, as our own chunk reader reassembled it.
    pub messages: Vec<Message>,
    /// The peer stopped reading because the client closed (not because of an error).
    pub eof: bool,
}

impl Log {
    pub fn media(&self) -> Vec<(u8, u32, Bytes)> {
        self.messages
            .iter()
            .filter(|m| MediaKind::from_type_id(m.type_id).is_some())
            .map(|m| (m.type_id, m.timestamp, m.payload.clone()))
            .collect()
    }

    pub fn commands(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter(|m| m.type_id == TYPE_AMF0_COMMAND)
            .map(|m| command::decode(&m.payload).unwrap().name)
            .collect()
    }

    pub fn pings_answered(&self) -> usize {
        let ping = |e: &&Ev| matches!(e, Ev::PingResponseReceived { .. });
        self.events.iter().filter(ping).count()
    }
}

pub(super) async fn server_handshake(io: &mut DuplexStream) -> Vec<u8> {
    let mut hs = Handshake::new(PeerType::Server);
    let mut buf = vec![0u8; 8192];
    loop {
        let n = io.read(&mut buf).await.unwrap();
        assert!(n > 0, "client closed during the handshake");
        match hs.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                io.write_all(&response_bytes).await.unwrap()
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                io.write_all(&response_bytes).await.unwrap();
                return remaining_bytes;
            }
        }
    }
}

/// Runs an rml_rtmp server session on `io` until the client closes.
pub(super) async fn peer(mut io: DuplexStream, mut policy: Policy) -> Log {
    let mut log = Log::default();
    let rest = server_handshake(&mut io).await;
    let mut config = ServerSessionConfig::new();
    if policy.chunk_size > 0 {
        config.chunk_size = policy.chunk_size;
    }
    if policy.window_ack_size > 0 {
        config.window_ack_size = policy.window_ack_size;
    }
    let (mut session, initial) = ServerSession::new(config).unwrap();
    let limits = FramingLimits {
        max_message_len: 16 << 20,
        max_command_len: 16 << 20,
        max_chunk_streams: 64,
    };
    let mut reader = ChunkReader::new(limits);
    let mut pending = initial;
    let mut input = rest;
    let mut buf = vec![0u8; 65536];
    let mut publishing = false;
    loop {
        if !input.is_empty() {
            reader.push(&input, &mut log.messages).unwrap();
            pending.extend(session.handle_input(&input).unwrap());
            input.clear();
        }
        while !pending.is_empty() {
            for r in std::mem::take(&mut pending) {
                match r {
                    Res::OutboundResponse(p) => io.write_all(&p.bytes).await.unwrap(),
                    Res::UnhandleableMessageReceived(_) => {}
                    Res::RaisedEvent(e) => {
                        let answer = |session: &mut ServerSession, id, reject: Reject| match reject
                        {
                            Some((code, text)) => session.reject_request(id, code, text).unwrap(),
                            None => session.accept_request(id).unwrap(),
                        };
                        match &e {
                            Ev::ConnectionRequested { request_id, .. }
                                if !policy.ignore_connect =>
                            {
                                pending.extend(answer(
                                    &mut session,
                                    *request_id,
                                    policy.reject_connect,
                                ));
                            }
                            Ev::PublishStreamRequested { request_id, .. } => {
                                if policy.close_on_publish {
                                    log.events.push(e);
                                    return log;
                                }
                                pending.extend(answer(
                                    &mut session,
                                    *request_id,
                                    policy.reject_publish,
                                ));
                                if policy.close_after_publish_start {
                                    for r in std::mem::take(&mut pending) {
                                        if let Res::OutboundResponse(p) = r {
                                            io.write_all(&p.bytes).await.unwrap();
                                        }
                                    }
                                    log.events.push(e);
                                    return log;
                                }
                                publishing = policy.reject_publish.is_none();
                                if publishing && policy.ping_after_publish {
                                    let (ping, _) = session.send_ping_request().unwrap();
                                    pending.push(Res::OutboundResponse(ping));
                                }
                            }
                            Ev::PlayStreamRequested {
                                request_id,
                                stream_id,
                                ..
                            } => {
                                pending.extend(answer(
                                    &mut session,
                                    *request_id,
                                    policy.reject_play,
                                ));
                                if policy.reject_play.is_none() {
                                    for (kind, ts, data) in std::mem::take(&mut policy.play_media) {
                                        let ts = RtmpTimestamp::new(ts);
                                        let p =
                                            match kind {
                                                MediaKind::Video => session
                                                    .send_video_data(*stream_id, data, ts, false),
                                                MediaKind::Audio => session
                                                    .send_audio_data(*stream_id, data, ts, false),
                                                MediaKind::Data => unreachable!("not used"),
                                            };
                                        pending.push(Res::OutboundResponse(p.unwrap()));
                                    }
                                    let end = session.finish_playing(*stream_id).unwrap();
                                    pending.push(Res::OutboundResponse(end));
                                }
                            }
                            _ => {}
                        }
                        log.events.push(e);
                    }
                }
            }
        }
        if publishing {
            if let Some(gate) = policy.pause.take() {
                let _ = gate.await;
            }
        }
        match io.read(&mut buf).await {
            Ok(0) => {
                log.eof = true;
                return log;
            }
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(_) => return log,
        }
    }
}
