//! An RTMP client: [`Publisher`] pushes a stream to a server, [`Player`] pulls one.
//!
//! Owns the client side of a connection after the caller has opened it: the handshake, the
//! few AMF0 commands of publishing and playing, answers to the server's protocol messages,
//! deadlines and the chunked writing of media. It is generic over the byte stream
//! (`S: AsyncRead + AsyncWrite + Unpin + Send`): the caller dials TCP (and TLS for
//! `rtmps://`), so it knows nothing of addresses, DNS, certificates or reconnecting. It does
//! not parse media (payloads go out and come in byte-identical) and it does not own queues.
//!
//! Untrusted bytes from the server go through our bounded `framing::ChunkReader` (message
//! caps from [`ClientOptions::limits`]); AMF0 commands are checked by `amf::validate_values`
//! before rml_amf0 decodes them, exactly as the server side does. rml_rtmp's sessions are
//! not used: the commands are built here with `rml_amf0`, and chunks are written by
//! `chunk_writer` (full type-0 header on every message, so no compression state to corrupt).
//!
//! Deadlines: the handshake and every command answer have one ([`ClientOptions`]); every
//! write that makes no progress for `write_timeout` fails; a `Player` waits at most
//! `read_timeout` for each message. The one wait without a deadline is
//! [`Publisher::service`], because a server may legitimately stay silent while a client
//! publishes (nginx-rtmp sends nothing at all while media keeps arriving): a dead server
//! shows up as a write that makes no progress, or as a closed connection.
//!
//! # Servicing server input while publishing
//!
//! Media sends never wait for input. Each send first handles whatever input is already
//! readable (one non-blocking read: ping requests are answered, acknowledgements sent when
//! the server's window is reached, its chunk size applied), so a publisher that sends
//! regularly needs nothing more. A publisher that may idle (a relay whose source pauses)
//! must also poll [`Publisher::service`], which is cancel-safe and made for `select!`:
//!
//! ```text
//! loop {
//!     tokio::select! {
//!         r = publisher.service() => r?,            // pings, acks, error statuses
//!         item = queue.recv() => match item {
//!             Some(m) => publisher.send(m.kind, m.timestamp, &m.payload).await?,
//!             None => break,
//!         },
//!     }
//! }
//! publisher.finish().await?;
//! ```
//!
//! `send*`, `service` and `Player::recv` are cancel-safe in this sense: a dropped call either
//! queued its whole message or nothing, and bytes already queued go out, in order, ahead of
//! anything sent later; a send cancelled mid-write is completed by the next call. (Dropping
//! `publish`, `play`, `finish` or `close` abandons the connection.) Stream keys are never
//! logged: for YouTube or Facebook the key is the credential.

mod command;
mod conn;
mod player;
mod publisher;
#[cfg(test)]
mod test_peer;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use crate::rtmp::amf::AmfError;
use crate::rtmp::chunk_writer::ChunkWriteError;
use crate::rtmp::framing::{FramingError, FramingLimits, TYPE_AMF0_DATA, TYPE_AUDIO, TYPE_VIDEO};

pub use player::{Media, Player};
pub use publisher::Publisher;

/// Chunk stream ids used for our messages (as ffmpeg lays them out).
pub const CSID_CONTROL: u32 = 2;
pub const CSID_COMMAND: u32 = 3;
pub const CSID_AUDIO: u32 = 4;
pub const CSID_DATA: u32 = 5;
pub const CSID_VIDEO: u32 = 6;

/// Timeouts and caps of one client connection.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Whole handshake, from C0+C1 sent to S2 received. Default 10 s.
    pub handshake_timeout: Duration,
    /// Wait for the answer to each command (`connect`, `createStream`, `publish`, `play`).
    /// Default 10 s.
    pub command_timeout: Duration,
    /// `Player::recv`: wait for the next media or data message. Default 10 s.
    pub read_timeout: Duration,
    /// Any single write or flush that makes no progress. Default 10 s.
    pub write_timeout: Duration,
    /// `finish`: wait for the server to close after our commands and FIN, so that it has
    /// read everything before we drop the socket. Default 2 s.
    pub close_timeout: Duration,
    /// Outgoing chunk size, announced right after the handshake. 128..=16 MiB, default 4096
    /// (what OBS and ffmpeg use).
    pub chunk_size: u32,
    /// Caps on what the server may send. Default: 4 MiB media, 64 KiB commands, 64 chunk
    /// streams.
    pub limits: FramingLimits,
    /// `Player`: buffer length announced with `SetBufferLength`, in ms. Default 1000.
    pub buffer_ms: u32,
    /// After `NetStream.Publish.Start` / `NetStream.Play.Start`, how long to keep reading
    /// for a refusal that follows it: nginx-rtmp's `deny publish` sends `Publish.Start`
    /// and then closes the connection. The wait ends early when a play's media arrives.
    /// Zero checks only what has already arrived. Default 100 ms.
    pub start_grace: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            handshake_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            chunk_size: 4096,
            limits: FramingLimits::default(),
            buffer_ms: 1000,
            start_grace: Duration::from_millis(100),
        }
    }
}

/// Counters of one connection, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Bytes received after the handshake.
    pub bytes_in: u64,
    /// Bytes written, handshake included.
    pub bytes_out: u64,
    /// Messages received, protocol control included.
    pub messages_in: u64,
    /// Ping requests from the server answered.
    pub pings: u64,
    /// Acknowledgements sent (at the server's window acknowledgement size).
    pub acks: u64,
}

/// Where to connect: what `rtmp[s]://host[:port]/app` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `rtmps://`: the caller wraps the TCP stream in TLS.
    pub tls: bool,
    /// Host name or address, without IPv6 brackets.
    pub host: String,
    /// Given port, or 1935 (`rtmp`) / 443 (`rtmps`).
    pub port: u16,
    /// Application: the whole path after the host (may contain `/`), no trailing `/`.
    pub app: String,
    /// `tcUrl` sent in `connect`: the URL up to and including the app.
    pub tc_url: String,
}

/// Why an RTMP URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RTMP URL {url:?}: {reason}")]
pub struct EndpointError {
    pub url: String,
    pub reason: &'static str,
}

impl Endpoint {
    /// Parses `rtmp://host[:port]/app[/more]` or `rtmps://…`. The stream key is not part
    /// of it: pass it to `Publisher::publish` / `Player::play`.
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let err = |reason| EndpointError {
            url: crate::names::redact(url).into_owned(),
            reason,
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("rtmp://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("rtmps://") {
            (true, r)
        } else {
            return Err(err("must start with rtmp:// or rtmps://"));
        };
        let (authority, app) = rest.split_once('/').ok_or_else(|| err("no app"))?;
        let app = app.trim_end_matches('/');
        if app.is_empty() {
            return Err(err("empty app"));
        }
        if app.chars().any(char::is_control) {
            return Err(err("control character in the app"));
        }
        let default_port = if tls { 443 } else { 1935 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| err("unclosed '['"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, p.parse().map_err(|_| err("bad port"))?),
                None if after.is_empty() => (host, default_port),
                None => return Err(err("junk after ']'")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| err("bad port"))?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return Err(err("empty host"));
        }
        let scheme = if tls { "rtmps" } else { "rtmp" };
        Ok(Endpoint {
            tls,
            host: host.to_owned(),
            port,
            app: app.to_owned(),
            tc_url: format!("{scheme}://{authority}/{app}"),
        })
    }

    /// `host:port` for `TcpStream::connect` (IPv6 hosts bracketed).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What the client was doing when something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Handshake,
    Connect,
    CreateStream,
    Publish,
    /// After `NetStream.Publish.Start`: sending media.
    Publishing,
    Play,
    /// After `NetStream.Play.Start`: receiving media.
    Playing,
    /// `finish`: FCUnpublish/deleteStream and closing.
    Finish,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Handshake => "handshake",
            Phase::Connect => "connect",
            Phase::CreateStream => "createStream",
            Phase::Publish => "publish",
            Phase::Publishing => "publishing",
            Phase::Play => "play",
            Phase::Playing => "playing",
            Phase::Finish => "finish",
        })
    }
}

/// The status object of an `onStatus`, `_result` or `_error` answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// `status`, `warning` or `error` (rml_rtmp says `_error`).
    pub level: String,
    /// e.g. `NetStream.Publish.BadName`.
    pub code: String,
    pub description: String,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if !self.description.is_empty() {
            write!(f, " ({})", self.description)?;
        }
        Ok(())
    }
}

impl Status {
    /// An error-level status (`error`, or rml_rtmp's `_error`).
    pub fn is_error(&self) -> bool {
        self.level == "error" || self.level == "_error"
    }
}

/// Why a client operation failed; every variant names the phase.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with `_error` or an error-level `onStatus`.
    #[error("{phase}: refused by the server: {status}")]
    Refused { phase: Phase, status: Status },
    /// The server closed the connection (nginx-rtmp refuses a publish this way).
    #[error("{phase}: the server closed the connection")]
    Closed { phase: Phase },
    #[error("{phase}: nothing from the server within {after:?}")]
    Timeout { phase: Phase, after: Duration },
    #[error("{phase}: a write made no progress within {after:?}")]
    WriteTimeout { phase: Phase, after: Duration },
    #[error("{phase}: {source}")]
    Io {
        phase: Phase,
        #[source]
        source: std::io::Error,
    },
    #[error("handshake: {detail}")]
    Handshake { detail: String },
    #[error("{phase}: bad chunk stream from the server: {source}")]
    Framing {
        phase: Phase,
        #[source]
        source: FramingError,
    },
    #[error("{phase}: bad AMF0 from the server: {source}")]
    Amf {
        phase: Phase,
        #[source]
        source: AmfError,
    },
    #[error("{phase}: unexpected answer from the server: {detail}")]
    Protocol { phase: Phase, detail: String },
    /// A caller's message or argument that cannot be sent (too long, bad chunk size).
    #[error("{phase}: cannot send: {source}")]
    Write {
        phase: Phase,
        #[source]
        source: ChunkWriteError,
    },
    #[error("{phase}: {what} is longer than AMF0's 65535 bytes")]
    TooLong { phase: Phase, what: &'static str },
    /// A call after an I/O, framing or close error.
    #[error("{phase}: the connection failed earlier and cannot be used")]
    Unusable { phase: Phase },
}

impl ClientError {
    pub fn phase(&self) -> Phase {
        match self {
            ClientError::Refused { phase, .. }
            | ClientError::Closed { phase }
            | ClientError::Timeout { phase, .. }
            | ClientError::WriteTimeout { phase, .. }
            | ClientError::Io { phase, .. }
            | ClientError::Framing { phase, .. }
            | ClientError::Amf { phase, .. }
            | ClientError::Protocol { phase, .. }
            | ClientError::Write { phase, .. }
            | ClientError::TooLong { phase, .. }
            | ClientError::Unusable { phase } => *phase,
            ClientError::Handshake { .. } => Phase::Handshake,
        }
    }

    /// The server's status, for a refusal.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::Refused { status, .. } => Some(status),
            _ => None,
        }
    }

    /// The server said no to `connect`, `createStream`, `publish` or `play`: an error
    /// status, or closing the connection in answer to one of them (or within
    /// `start_grace` after accepting it). A relay should not retry these at full speed.
    pub fn is_refusal(&self) -> bool {
        let setup = matches!(
            self.phase(),
            Phase::Connect | Phase::CreateStream | Phase::Publish | Phase::Play
        );
        match self {
            ClientError::Refused { .. } => true,
            ClientError::Closed { .. } => setup,
            _ => false,
        }
    }
}

/// What kind of message a media payload is sent or received as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Type 8: an FLV audio tag body.
    Audio,
    /// Type 9: an FLV video tag body.
    Video,
    /// Type 18: AMF0 data (`@setDataFrame`, `onMetaData`, ...), bytes as they are.
    Data,
}

impl MediaKind {
    pub fn type_id(self) -> u8 {
        match self {
            MediaKind::Audio => TYPE_AUDIO,
            MediaKind::Video => TYPE_VIDEO,
            MediaKind::Data => TYPE_AMF0_DATA,
        }
    }

    pub fn from_type_id(type_id: u8) -> Option<MediaKind> {
        match type_id {
            TYPE_AUDIO => Some(MediaKind::Audio),
            TYPE_VIDEO => Some(MediaKind::Video),
            TYPE_AMF0_DATA => Some(MediaKind::Data),
            _ => None,
        }
    }

    /// The chunk stream we send it on.
    pub fn csid(self) -> u32 {
        match self {
            MediaKind::Audio => CSID_AUDIO,
            MediaKind::Video => CSID_VIDEO,
            MediaKind::Data => CSID_DATA,
        }
    }
}
