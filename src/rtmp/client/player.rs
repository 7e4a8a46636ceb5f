//! `Player`: handshake, `connect`, `createStream`, `play`, then media in, each receive with
//! a deadline. For tests and for measuring latency through a relay.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use super::command::{self, Role};
use super::conn::{refused, skipped, Conn, Deadline};
use super::{ClientError, ClientOptions, Endpoint, MediaKind, Phase};
use crate::rtmp::framing::TYPE_AMF0_COMMAND;

const TID_CONNECT: f64 = 1.0;
const TID_CREATE: f64 = 2.0;
const TID_PLAY: f64 = 3.0;
const TID_DELETE: f64 = 4.0;

/// `play`'s start argument: -2, RTMP 1.0's "live, else recorded" (ffmpeg sends -2000, librtmp
/// -1000; servers read any value below -1 the same way).
const PLAY_START_ANY: f64 = -2.0;

/// Statuses that end a play (the stream may come back: `recv` can be called again).
const END_CODES: [&str; 3] = [
    "NetStream.Play.Stop",
    "NetStream.Play.UnpublishNotify",
    "NetStream.Play.Complete",
];

/// One audio, video or data message received, as the server sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Media {
    pub kind: MediaKind,
    /// Timestamp in ms (RTMP timestamps are decode timestamps for video).
    pub timestamp: u32,
    /// FLV tag body for audio and video, AMF0 values for data.
    pub payload: Bytes,
}

/// A play on a connection the caller opened.
pub struct Player<S> {
    conn: Conn<S>,
    stream_id: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Player<S> {
    /// Handshakes on `io`, connects to `endpoint.app`, and plays `stream`; returns once the
    /// server said `NetStream.Play.Start` (or sent media). An error-level status is
    /// [`ClientError::Refused`].
    pub async fn play(
        io: S,
        endpoint: &Endpoint,
        stream: &str,
        opts: ClientOptions,
    ) -> Result<Player<S>, ClientError> {
        let names = [
            ("app", endpoint.app.as_str()),
            ("tcUrl", endpoint.tc_url.as_str()),
            ("stream name", stream),
        ];
        let mut conn = Conn::open(io, opts, endpoint, names, Role::Player, TID_CONNECT).await?;
        let stream_id = conn.create_stream(&[], TID_CREATE).await?;

        let phase = Phase::Play;
        let play = command::call(
            "play",
            TID_PLAY,
            vec![command::string(stream), command::number(PLAY_START_ANY)],
        );
        conn.queue_command(phase, stream_id, &play)?;
        let buffer_ms = conn.opts.buffer_ms;
        conn.queue_buffer_length(stream_id, buffer_ms);
        conn.flush(phase).await?;
        let deadline = Deadline::after(conn.opts.command_timeout);
        loop {
            let m = conn.next_message(phase, Some(deadline)).await?;
            if MediaKind::from_type_id(m.type_id).is_some() {
                // Some servers skip the status; media means the play is on.
                conn.unread(m);
                break;
            }
            let Some(reply) = conn.reply(phase, &m)? else {
                continue;
            };
            let status = reply.status();
            match (reply.name.as_str(), &status) {
                ("onStatus", Some(s)) if s.code == "NetStream.Play.Start" => break,
                ("onStatus", Some(s)) if s.is_error() => return Err(refused(phase, &reply)),
                ("_error", _) if reply.tid == TID_PLAY || reply.tid == 0.0 => {
                    return Err(refused(phase, &reply))
                }
                _ => skipped(phase, &reply),
            }
        }
        conn.settle(phase, TID_PLAY).await?;
        tracing::debug!(stream_id, "playing");
        Ok(Player { conn, stream_id })
    }

    /// Byte, ping and acknowledgement counters.
    pub fn stats(&self) -> super::ClientStats {
        self.conn.stats()
    }

    /// Message stream id of the play.
    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    /// The next audio, video or data message, waiting at most `read_timeout` for it (a
    /// `Timeout` leaves the player usable). `Ok(None)` when the server says the stream
    /// ended (`NetStream.Play.Stop`, `.UnpublishNotify`, `.Complete`); a new publish of the
    /// same name continues the play, so `recv` may be called again. Pings are answered and
    /// acknowledgements sent on the way. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Option<Media>, ClientError> {
        let phase = Phase::Playing;
        self.conn.check(phase)?;
        let deadline = Deadline::after(self.conn.opts.read_timeout);
        loop {
            let m = self.conn.next_message(phase, Some(deadline)).await?;
            if let Some(kind) = MediaKind::from_type_id(m.type_id) {
                return Ok(Some(Media {
                    kind,
                    timestamp: m.timestamp,
                    payload: m.payload,
                }));
            }
            if m.type_id != TYPE_AMF0_COMMAND {
                tracing::trace!(type_id = m.type_id, "message type not handled; skipped");
                continue;
            }
            let reply = match command::decode(&m.payload) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "command from the server ignored");
                    continue;
                }
            };
            match reply.status() {
                Some(s) if s.is_error() => return Err(refused(phase, &reply)),
                Some(s) if END_CODES.contains(&s.code.as_str()) => {
                    tracing::debug!(code = %s.code, stream_id = self.stream_id, "play ended");
                    return Ok(None);
                }
                _ => skipped(phase, &reply),
            }
        }
    }

    /// Ends the play: `deleteStream`, then closes like `Publisher::finish`.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let phase = Phase::Finish;
        self.conn.check(phase)?;
        let delete = command::call(
            "deleteStream",
            TID_DELETE,
            vec![command::number(f64::from(self.stream_id))],
        );
        self.conn.queue_command(phase, 0, &delete)?;
        self.conn.flush(phase).await?;
        self.conn.close(phase).await
    }
}
