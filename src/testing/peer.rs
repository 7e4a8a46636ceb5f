//! An in-memory server for a client to publish to, without a node or a socket: rml_rtmp's
//! server handshake and livesnap's own `rtmp::session::Session` over `tokio::io::duplex`,
//! accepting every publish and recording what the client sent.
//!
//! For unit tests of what publishes (`testing::replay`) and for fuzz seeds that record a
//! publish by the library client. It is not the server: no `conn` (deadlines, admission,
//! limits), no ingest; `tests/` start a real node for that.

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

use crate::rtmp::session::{Event, Session, SessionError, SessionLimits};

/// Bytes each direction of the in-memory pipe holds before a write waits.
const PIPE_BYTES: usize = 256 << 10;

/// What the peer saw of one connection.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Every byte the client sent after the handshake, as sent.
    pub wire: Vec<u8>,
    /// The session's events, in order.
    pub events: Vec<Event>,
    /// Why the session stopped, when it was not the client closing.
    pub error: Option<String>,
}

impl Recorded {
    /// `(timestamp, tag body)` of every video message.
    pub fn video(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        self.events.iter().filter_map(|e| match e {
            Event::Video { timestamp, data } => Some((*timestamp, &data[..])),
            _ => None,
        })
    }

    /// Audio messages received.
    pub fn audio_count(&self) -> usize {
        let audio = |e: &&Event| matches!(e, Event::Audio { .. });
        self.events.iter().filter(audio).count()
    }
}

/// Starts the peer on a runtime task; returns the client's end of the pipe and the task,
/// which ends with what it recorded when the client closes (or on a session error).
pub fn spawn(limits: SessionLimits) -> (DuplexStream, JoinHandle<Recorded>) {
    let (client, server) = tokio::io::duplex(PIPE_BYTES);
    (client, tokio::spawn(serve(server, limits)))
}

async fn serve(mut io: DuplexStream, limits: SessionLimits) -> Recorded {
    let mut rec = Recorded::default();
    if let Err(e) = run(&mut io, limits, &mut rec).await {
        rec.error = Some(e);
    }
    rec
}

async fn run(
    io: &mut DuplexStream,
    limits: SessionLimits,
    rec: &mut Recorded,
) -> Result<(), String> {
    let mut buf = vec![0u8; 64 << 10];
    let mut hs = Handshake::new(PeerType::Server);
    let mut rest = loop {
        let n = io.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during the handshake".into());
        }
        match hs.process_bytes(&buf[..n]).map_err(|e| format!("{e:?}"))? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                io.write_all(&response_bytes)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                io.write_all(&response_bytes)
                    .await
                    .map_err(|e| e.to_string())?;
                break remaining_bytes;
            }
        }
    };
    let session_err = |e: SessionError| e.to_string();
    let mut session = Session::new(limits).map_err(session_err)?;
    loop {
        rec.wire.extend_from_slice(&rest);
        let first_new = rec.events.len();
        session
            .handle(&rest, &mut rec.events)
            .map_err(session_err)?;
        let requested = rec.events[first_new..]
            .iter()
            .any(|e| matches!(e, Event::PublishRequested { .. }));
        if requested {
            session.accept_publish().map_err(session_err)?;
        }
        let out = std::mem::take(session.output());
        if !out.is_empty() {
            io.write_all(&out).await.map_err(|e| e.to_string())?;
        }
        let n = io.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        rest = buf[..n].to_vec();
    }
}
