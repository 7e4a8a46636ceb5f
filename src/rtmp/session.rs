//! The RTMP session without I/O: bytes in, events and bytes-to-send out.
//!
//! Untrusted bytes go first through our `framing::ChunkReader` (bounded, reassembles
//! interleaved chunk streams). Then, per whole message:
//! - protocol control (set chunk size, abort, ack, window ack size, peer bandwidth)
//!   is handled here; we send acknowledgements ourselves;
//! - audio and video go straight out as events: they never reach rml_rtmp (no copy);
//! - AMF0 commands and data are checked by `amf` (depth, shapes rml_rtmp needs) and
//!   only then re-serialised as one whole message per chunk into rml_rtmp's
//!   `ServerSession`, which answers connect/createStream/publish;
//! - anything else is dropped (AMF3 commands close the connection).

use bytes::Bytes;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionError, ServerSessionEvent, ServerSessionResult,
};

use crate::rtmp::amf::{self, AmfError};
pub use crate::rtmp::client::MediaKind;
use crate::rtmp::framing::{
    self, ChunkReader, FramingError, FramingLimits, Message, PartialBudget,
};

/// Chunk size of the canonical stream we feed rml_rtmp: every message fits one chunk.
const FEED_CHUNK_SIZE: u32 = 16 << 20;

/// Limits of one session.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub framing: FramingLimits,
    /// `createStream` calls allowed per connection.
    pub max_streams: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            framing: FramingLimits::default(),
            max_streams: 8,
        }
    }
}

/// Why a session was closed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("chunk stream: {0}")]
    Framing(#[from] FramingError),
    #[error("AMF0 in {what}: {source}")]
    Amf {
        what: &'static str,
        #[source]
        source: AmfError,
    },
    #[error("AMF3 messages (type {0}) are not supported")]
    Amf3(u8),
    #[error("more than {0} createStream calls on one connection")]
    TooManyStreams(u32),
    #[error("a second publish on the same connection")]
    SecondPublish,
    #[error("RTMP session: {0}")]
    Rml(String),
}

impl From<ServerSessionError> for SessionError {
    fn from(e: ServerSessionError) -> Self {
        SessionError::Rml(format!("{e:?}"))
    }
}

/// What the connection task must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `connect` was accepted.
    Connected { app: String, tc_url: Option<String> },
    /// `publish`: the connection task decides, then calls `accept_publish` or
    /// `reject_publish`. `stream_key` still carries its `?query`.
    PublishRequested { app: String, stream_key: String },
    /// `@setDataFrame onMetaData` (or a bare `onMetaData`) of the accepted publish: `data`
    /// is the `onMetaData` message as a player receives it (the name and its values,
    /// bytes as sent, without `@setDataFrame`).
    Metadata { timestamp: u32, data: Bytes },
    /// A video message (FLV video tag body) of the accepted publish.
    Video { timestamp: u32, data: Bytes },
    /// An audio message (FLV audio tag body) of the accepted publish.
    Audio { timestamp: u32, data: Bytes },
    /// The client ended its publish (FCUnpublish/deleteStream/closeStream).
    Unpublished,
    /// `play`: the connection task decides, then calls `accept_play` or `reject_play`.
    /// `stream_key` still carries its `?query`.
    PlayRequested { app: String, stream_key: String },
    /// The client ended its play (closeStream/deleteStream).
    PlayStopped,
}

/// Chunk streams of the media we send to a player (rml_rtmp's own serializer uses 2..=6).
const CSID_PLAY_DATA: u32 = 20;
const CSID_PLAY_AUDIO: u32 = 21;
const CSID_PLAY_VIDEO: u32 = 22;
/// The chunk size our rml_rtmp session announces to the peer at the start.
const OUT_CHUNK_SIZE: u32 = 4096;

pub struct Session {
    reader: ChunkReader,
    rml: ServerSession,
    limits: SessionLimits,
    messages: Vec<Message>,
    feed: Vec<u8>,
    out: Vec<u8>,
    tc_url: Option<String>,
    pending_publish: Option<u32>,
    publishing: bool,
    /// A `play` waiting for the connection task's answer: (request id, message stream).
    pending_play: Option<(u32, u32)>,
    /// The message stream a player is being sent media on.
    playing: Option<u32>,
    /// Writes the media sent to a player (rml_rtmp's serializer copies every payload).
    media_writer: crate::rtmp::chunk_writer::ChunkWriter,
    published_once: bool,
    create_streams: u32,
    window_ack: Option<u32>,
    bytes_total: u64,
    bytes_since_ack: u64,
    ignored_types: u32,
    media_messages: u64,
}

impl Session {
    /// Starts a session after the handshake; the initial server messages are queued
    /// in the output.
    pub fn new(limits: SessionLimits) -> Result<Session, SessionError> {
        let mut config = ServerSessionConfig::new();
        config.chunk_size = OUT_CHUNK_SIZE;
        let (mut rml, results) = ServerSession::new(config)?;
        let mut s = Session {
            reader: ChunkReader::new(limits.framing),
            rml: {
                // Tell rml_rtmp's deserializer that our canonical feed uses big chunks.
                let r = rml.handle_input(&framing::set_chunk_size_chunk(FEED_CHUNK_SIZE))?;
                debug_assert!(r
                    .iter()
                    .all(|x| !matches!(x, ServerSessionResult::OutboundResponse(_))));
                rml
            },
            limits,
            messages: Vec::new(),
            feed: Vec::new(),
            out: Vec::new(),
            tc_url: None,
            pending_publish: None,
            publishing: false,
            pending_play: None,
            playing: None,
            media_writer: crate::rtmp::chunk_writer::ChunkWriter::with_chunk_size(OUT_CHUNK_SIZE),
            published_once: false,
            create_streams: 0,
            window_ack: None,
            bytes_total: 0,
            bytes_since_ack: 0,
            ignored_types: 0,
            media_messages: 0,
        };
        let mut events = Vec::new();
        s.apply(results, &mut events)?;
        Ok(s)
    }

    /// Charges this session's partial messages to `budget` (per connection and node-wide);
    /// call before the first [`Session::handle`].
    pub fn set_partial_budget(&mut self, budget: PartialBudget) {
        self.reader.set_budget(budget);
    }

    /// Bytes queued for the peer; the caller writes and clears them.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Whether a publish has been accepted and not ended.
    pub fn is_publishing(&self) -> bool {
        self.publishing
    }

    /// Audio and video messages of accepted publishes so far: the connection's measure
    /// of progress (other messages do not keep a connection alive).
    pub fn media_messages(&self) -> u64 {
        self.media_messages
    }

    /// The `tcUrl` of `connect`, if the client sent one.
    pub fn tc_url(&self) -> Option<&str> {
        self.tc_url.as_deref()
    }

    /// Feeds bytes read from the socket.
    pub fn handle(&mut self, data: &[u8], events: &mut Vec<Event>) -> Result<(), SessionError> {
        self.bytes_total += data.len() as u64;
        self.bytes_since_ack += data.len() as u64;
        if let Some(win) = self.window_ack {
            if self.bytes_since_ack >= u64::from(win) {
                self.out
                    .extend_from_slice(&framing::acknowledgement_chunk(self.bytes_total as u32));
                self.bytes_since_ack = 0;
            }
        }
        let mut msgs = std::mem::take(&mut self.messages);
        let r = self.reader.push(data, &mut msgs);
        let mut result = Ok(());
        for m in msgs.drain(..) {
            result = self.on_message(m, events);
            if result.is_err() {
                break;
            }
        }
        self.messages = msgs;
        r?;
        result
    }

    fn on_message(&mut self, m: Message, events: &mut Vec<Event>) -> Result<(), SessionError> {
        match m.type_id {
            framing::TYPE_VIDEO if self.publishing => {
                self.media_messages += 1;
                events.push(Event::Video {
                    timestamp: m.timestamp,
                    data: m.payload,
                })
            }
            framing::TYPE_AUDIO if self.publishing => {
                self.media_messages += 1;
                events.push(Event::Audio {
                    timestamp: m.timestamp,
                    data: m.payload,
                })
            }
            framing::TYPE_AUDIO | framing::TYPE_VIDEO => {
                tracing::debug!(
                    type_id = m.type_id,
                    "media before an accepted publish ignored"
                );
            }
            framing::TYPE_WINDOW_ACK_SIZE => {
                if m.payload.len() >= 4 {
                    let size = u32::from_be_bytes([
                        m.payload[0],
                        m.payload[1],
                        m.payload[2],
                        m.payload[3],
                    ]);
                    self.window_ack = (size > 0).then_some(size);
                }
            }
            framing::TYPE_SET_CHUNK_SIZE
            | framing::TYPE_ABORT
            | framing::TYPE_ACKNOWLEDGEMENT
            | framing::TYPE_USER_CONTROL
            | framing::TYPE_SET_PEER_BANDWIDTH => {}
            framing::TYPE_AMF3_DATA | framing::TYPE_AMF3_COMMAND => {
                return Err(SessionError::Amf3(m.type_id))
            }
            framing::TYPE_AMF0_COMMAND => {
                let cmd = amf::parse_command(&m.payload).map_err(|source| SessionError::Amf {
                    what: "a command",
                    source,
                })?;
                match cmd.name.as_str() {
                    "connect" => {
                        self.tc_url = cmd.connect.and_then(|c| c.tc_url);
                    }
                    "createStream" => {
                        self.create_streams += 1;
                        if self.create_streams > self.limits.max_streams {
                            return Err(SessionError::TooManyStreams(self.limits.max_streams));
                        }
                    }
                    // One publish or one play per connection; a second one while the
                    // first is still pending would be answered for the wrong name.
                    "publish" | "play" if self.is_busy() => {
                        return Err(SessionError::SecondPublish)
                    }
                    _ => {}
                }
                self.feed_rml(&m, events)?;
            }
            framing::TYPE_AMF0_DATA => {
                let count =
                    amf::validate_values(&m.payload).map_err(|source| SessionError::Amf {
                        what: "a data message",
                        source,
                    })?;
                let name =
                    amf::data_message_name(&m.payload).map_err(|source| SessionError::Amf {
                        what: "a data message",
                        source,
                    })?;
                // rml_rtmp indexes @setDataFrame's values without checking their count.
                if name.as_deref() == Some("@setDataFrame") && count < 3 {
                    tracing::debug!(count, "short @setDataFrame ignored");
                    return Ok(());
                }
                if self.publishing {
                    // What a player receives: `onMetaData` and its values, as sent.
                    let data = match name.as_deref() {
                        Some("@setDataFrame") => Some(m.payload.slice(3 + "@setDataFrame".len()..)),
                        Some("onMetaData") => Some(m.payload.clone()),
                        _ => None,
                    };
                    if let Some(data) = data {
                        events.push(Event::Metadata {
                            timestamp: m.timestamp,
                            data,
                        });
                    }
                }
                if name.as_deref() == Some("@setDataFrame") {
                    self.feed_rml(&m, events)?;
                }
            }
            _ => {
                self.ignored_types += 1;
                if self.ignored_types == 1 {
                    tracing::debug!(type_id = m.type_id, "message type not handled; ignored");
                }
            }
        }
        Ok(())
    }

    fn feed_rml(&mut self, m: &Message, events: &mut Vec<Event>) -> Result<(), SessionError> {
        self.feed.clear();
        framing::write_single_chunk(m, 3, &mut self.feed);
        let results = self.rml.handle_input(&self.feed)?;
        self.apply(results, events)
    }

    fn apply(
        &mut self,
        results: Vec<ServerSessionResult>,
        events: &mut Vec<Event>,
    ) -> Result<(), SessionError> {
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(p) => self.out.extend_from_slice(&p.bytes),
                ServerSessionResult::RaisedEvent(e) => self.on_rml_event(e, events)?,
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    fn on_rml_event(
        &mut self,
        e: ServerSessionEvent,
        events: &mut Vec<Event>,
    ) -> Result<(), SessionError> {
        match e {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                let results = self.rml.accept_request(request_id)?;
                self.apply(results, events)?;
                events.push(Event::Connected {
                    app: app_name,
                    tc_url: self.tc_url.clone(),
                });
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => {
                self.pending_publish = Some(request_id);
                events.push(Event::PublishRequested {
                    app: app_name,
                    stream_key,
                });
            }
            ServerSessionEvent::PublishStreamFinished { .. } if self.publishing => {
                self.publishing = false;
                events.push(Event::Unpublished);
            }
            ServerSessionEvent::PlayStreamRequested {
                request_id,
                app_name,
                stream_key,
                stream_id,
                ..
            } => {
                self.pending_play = Some((request_id, stream_id));
                events.push(Event::PlayRequested {
                    app: app_name,
                    stream_key,
                });
            }
            ServerSessionEvent::PlayStreamFinished { .. } if self.playing.is_some() => {
                self.playing = None;
                events.push(Event::PlayStopped);
            }
            // releaseStream, FCPublish, FCUnpublish, _checkbw and the like need no answer.
            _ => {}
        }
        Ok(())
    }

    /// Accepts the pending publish (answers `NetStream.Publish.Start`).
    pub fn accept_publish(&mut self) -> Result<(), SessionError> {
        let id = self
            .pending_publish
            .take()
            .ok_or_else(|| SessionError::Rml("no publish to accept".into()))?;
        let results = self.rml.accept_request(id)?;
        let mut events = Vec::new();
        self.apply(results, &mut events)?;
        self.publishing = true;
        self.published_once = true;
        Ok(())
    }

    /// Whether a publish or a play was asked for on this connection.
    fn is_busy(&self) -> bool {
        self.published_once
            || self.pending_publish.is_some()
            || self.pending_play.is_some()
            || self.playing.is_some()
    }

    /// Whether a play has been accepted and not ended.
    pub fn is_playing(&self) -> bool {
        self.playing.is_some()
    }

    /// Accepts the pending play (answers `NetStream.Play.Start`); media follows through
    /// [`Session::send_media`].
    pub fn accept_play(&mut self) -> Result<(), SessionError> {
        let (id, stream_id) = self
            .pending_play
            .take()
            .ok_or_else(|| SessionError::Rml("no play to accept".into()))?;
        let results = self.rml.accept_request(id)?;
        let mut events = Vec::new();
        self.apply(results, &mut events)?;
        self.playing = Some(stream_id);
        Ok(())
    }

    /// Rejects the pending play with a status code such as
    /// `NetStream.Play.StreamNotFound`; the caller then closes the connection.
    pub fn reject_play(&mut self, code: &str, description: &str) -> Result<(), SessionError> {
        let (id, _) = self
            .pending_play
            .take()
            .ok_or_else(|| SessionError::Rml("no play to reject".into()))?;
        let results = self.rml.reject_request(id, code, description)?;
        let mut events = Vec::new();
        self.apply(results, &mut events)
    }

    /// Queues one media message for the player, its payload as given.
    pub fn send_media(
        &mut self,
        kind: MediaKind,
        timestamp: u32,
        data: &[u8],
    ) -> Result<(), SessionError> {
        let Some(stream_id) = self.playing else {
            return Ok(());
        };
        let csid = match kind {
            MediaKind::Data => CSID_PLAY_DATA,
            MediaKind::Audio => CSID_PLAY_AUDIO,
            MediaKind::Video => CSID_PLAY_VIDEO,
        };
        let header = crate::rtmp::chunk_writer::MessageHeader {
            csid,
            timestamp,
            type_id: kind.type_id(),
            stream_id,
        };
        self.out
            .reserve(self.media_writer.encoded_len(&header, data.len()));
        self.media_writer
            .write(&header, data, &mut self.out)
            .map_err(|e| SessionError::Rml(format!("chunking media for a player: {e}")))
    }

    /// Ends the play: the player is told the stream ended (`NetStream.Play.Complete`
    /// and stream EOF).
    pub fn finish_play(&mut self) -> Result<(), SessionError> {
        if let Some(stream_id) = self.playing.take() {
            let packet = self.rml.finish_playing(stream_id)?;
            self.out.extend_from_slice(&packet.bytes);
        }
        Ok(())
    }

    /// Rejects the pending publish with a status code such as
    /// `NetStream.Publish.BadName`; the caller then closes the connection.
    pub fn reject_publish(&mut self, code: &str, description: &str) -> Result<(), SessionError> {
        let id = self
            .pending_publish
            .take()
            .ok_or_else(|| SessionError::Rml("no publish to reject".into()))?;
        let results = self.rml.reject_request(id, code, description)?;
        let mut events = Vec::new();
        self.apply(results, &mut events)
    }
}
