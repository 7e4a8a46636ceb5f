//! `Publisher`: handshake, `connect`, `createStream`, `publish`, then media out.
//!
//! The command sequence is ffmpeg's and OBS's: `connect`, then `releaseStream`, `FCPublish`
//! and `createStream` in one go (answers to the first two are ignored: servers differ),
//! `publish(key, "live")`, and at the end `FCUnpublish` and `deleteStream`.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use super::command::{self, Role};
use super::conn::{refused, skipped, Conn};
use super::{ClientError, ClientOptions, Endpoint, MediaKind, Phase};
use crate::rtmp::chunk_writer::{MessageHeader, PreChunked};
use crate::rtmp::framing::TYPE_AMF0_COMMAND;

const TID_CONNECT: f64 = 1.0;
const TID_RELEASE: f64 = 2.0;
const TID_FCPUBLISH: f64 = 3.0;
const TID_CREATE: f64 = 4.0;
const TID_PUBLISH: f64 = 5.0;
const TID_FCUNPUBLISH: f64 = 6.0;
const TID_DELETE: f64 = 7.0;

/// A live publish on a connection the caller opened. See the module docs for how server
/// input is serviced.
pub struct Publisher<S> {
    conn: Conn<S>,
    stream_id: u32,
    stream_key: String,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Publisher<S> {
    /// Handshakes on `io`, connects to `endpoint.app` and publishes `stream_key` (with any
    /// `?query`, sent as is) as a live stream. Returns once the server said
    /// `NetStream.Publish.Start` and nothing refused it within `start_grace`; a refusal is
    /// [`ClientError::Refused`] with the server's status, or [`ClientError::Closed`] when it
    /// just closes (nginx-rtmp's `deny publish` closes right after `Publish.Start`).
    pub async fn publish(
        io: S,
        endpoint: &Endpoint,
        stream_key: &str,
        opts: ClientOptions,
    ) -> Result<Publisher<S>, ClientError> {
        let names = [
            ("app", endpoint.app.as_str()),
            ("tcUrl", endpoint.tc_url.as_str()),
            ("stream key", stream_key),
        ];
        let mut conn = Conn::open(io, opts, endpoint, names, Role::Publisher, TID_CONNECT).await?;
        let key = command::string(stream_key);
        let release = command::call("releaseStream", TID_RELEASE, vec![key.clone()]);
        let fcpublish = command::call("FCPublish", TID_FCPUBLISH, vec![key.clone()]);
        let stream_id = conn
            .create_stream(&[release, fcpublish], TID_CREATE)
            .await?;

        let phase = Phase::Publish;
        let publish = command::call("publish", TID_PUBLISH, vec![key, command::string("live")]);
        conn.queue_command(phase, stream_id, &publish)?;
        conn.flush(phase).await?;
        let deadline = super::conn::Deadline::after(conn.opts.command_timeout);
        loop {
            let m = conn.next_message(phase, Some(deadline)).await?;
            let Some(reply) = conn.reply(phase, &m)? else {
                continue;
            };
            let status = reply.status();
            match (reply.name.as_str(), &status) {
                ("onStatus", Some(s)) if s.code == "NetStream.Publish.Start" => break,
                ("onStatus", Some(s)) if s.is_error() => return Err(refused(phase, &reply)),
                // rml_rtmp answers a refused publish with `_error` and transaction id 0.
                ("_error", _) if reply.tid == TID_PUBLISH || reply.tid == 0.0 => {
                    return Err(refused(phase, &reply))
                }
                _ => skipped(phase, &reply),
            }
        }
        conn.settle(phase, TID_PUBLISH).await?;
        // The stream key is a secret (a YouTube key is the credential): never logged.
        tracing::debug!(stream_id, "publishing");
        Ok(Publisher {
            conn,
            stream_id,
            stream_key: stream_key.to_owned(),
        })
    }

    /// Byte, ping and acknowledgement counters.
    pub fn stats(&self) -> super::ClientStats {
        self.conn.stats()
    }

    /// Message stream id the server gave in `createStream`.
    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    /// Outgoing chunk size (what a [`PreChunked`] must be built with to go out uncopied).
    pub fn chunk_size(&self) -> u32 {
        self.conn.chunk_size()
    }

    /// Sends an FLV video tag body as a type-9 message at `timestamp` (ms), byte-identical.
    pub async fn send_video(&mut self, timestamp: u32, payload: &[u8]) -> Result<(), ClientError> {
        self.send(MediaKind::Video, timestamp, payload).await
    }

    /// Sends an FLV audio tag body as a type-8 message.
    pub async fn send_audio(&mut self, timestamp: u32, payload: &[u8]) -> Result<(), ClientError> {
        self.send(MediaKind::Audio, timestamp, payload).await
    }

    /// Sends a raw AMF0 data message (type 18), e.g. the publisher's `@setDataFrame`
    /// `onMetaData` bytes, unchanged.
    pub async fn send_data(&mut self, timestamp: u32, payload: &[u8]) -> Result<(), ClientError> {
        self.send(MediaKind::Data, timestamp, payload).await
    }

    /// Sends one message of `kind` on our stream: handles readable server input first
    /// (without waiting), copies the chunked message into the write queue and writes it
    /// out.
    pub async fn send(
        &mut self,
        kind: MediaKind,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        let phase = Phase::Publishing;
        self.before_send(phase)?;
        let header = self.header(kind, timestamp);
        self.conn.queue_message(phase, &header, payload)?;
        self.conn.flush(phase).await
    }

    /// Queues one message of `kind` on our stream without writing it, after what is
    /// already queued (copied into the queue). The bytes go out at the next
    /// [`Publisher::flush`] (or any send).
    pub fn queue(
        &mut self,
        kind: MediaKind,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        let phase = Phase::Publishing;
        self.conn.check(phase)?;
        let header = self.header(kind, timestamp);
        self.conn.queue_message(phase, &header, payload)
    }

    /// [`Publisher::queue`] for a shared payload (a hub frame's): only the chunk headers
    /// are built; the payload is written from `payload` itself, so relaying a frame to
    /// several targets copies it to none of them.
    pub fn queue_shared(
        &mut self,
        kind: MediaKind,
        timestamp: u32,
        payload: &Bytes,
    ) -> Result<(), ClientError> {
        let phase = Phase::Publishing;
        self.conn.check(phase)?;
        let header = self.header(kind, timestamp);
        self.conn.queue_shared(phase, &header, payload)
    }

    fn header(&self, kind: MediaKind, timestamp: u32) -> MessageHeader {
        MessageHeader {
            csid: kind.csid(),
            timestamp,
            type_id: kind.type_id(),
            stream_id: self.stream_id,
        }
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.conn.queued_bytes()
    }

    /// Handles readable server input (without waiting), then writes everything queued
    /// (vectored writes, as few as the socket takes) and flushes. Cancel-safe.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        let phase = Phase::Publishing;
        self.before_send(phase)?;
        self.conn.flush(phase).await
    }

    /// Sends a pre-chunked message at `timestamp`: a header built on the stack and the
    /// shared body in vectored writes, nothing copied or allocated. When the message cannot
    /// go out as chunked (another chunk size, or a multi-chunk message at a timestamp
    /// ≥ 0xFFFFFF) it is re-chunked into the write queue instead (a copy).
    pub async fn send_prechunked(
        &mut self,
        msg: &PreChunked,
        timestamp: u32,
    ) -> Result<(), ClientError> {
        let phase = Phase::Publishing;
        self.before_send(phase)?;
        self.conn
            .queue_prechunked(phase, msg, timestamp, self.stream_id)?;
        self.conn.flush(phase).await
    }

    fn before_send(&mut self, phase: Phase) -> Result<(), ClientError> {
        self.conn.check(phase)?;
        self.conn.poll_input(phase)?;
        self.handle_input(phase)
    }

    /// Waits until the server sends something, handles all of it (answers pings,
    /// acknowledges, applies its chunk size) and writes the answers; returns after each
    /// read. No deadline (see the module docs). Cancel-safe: put it in a `select!` next to
    /// the source of media. An error-level `onStatus` is returned as `Refused`, a closed
    /// connection as `Closed`.
    pub async fn service(&mut self) -> Result<(), ClientError> {
        let phase = Phase::Publishing;
        self.conn.check(phase)?;
        self.conn.flush(phase).await?;
        self.conn.wait_input(phase).await?;
        self.handle_input(phase)?;
        self.conn.flush(phase).await
    }

    /// Handles every message already read.
    fn handle_input(&mut self, phase: Phase) -> Result<(), ClientError> {
        while let Some(m) = self.conn.pop_message(phase) {
            if m.type_id != TYPE_AMF0_COMMAND {
                tracing::trace!(type_id = m.type_id, "message from the server ignored");
                continue;
            }
            match self.conn.reply(phase, &m) {
                Ok(Some(reply)) => match reply.status() {
                    Some(s) if s.is_error() && reply.name == "onStatus" => {
                        return Err(refused(phase, &reply))
                    }
                    _ => skipped(phase, &reply),
                },
                Ok(None) => {}
                // A malformed command while publishing does not stop the stream.
                Err(e) => tracing::debug!(error = %e, "command from the server ignored"),
            }
        }
        Ok(())
    }

    /// Ends the publish: `FCUnpublish`, `deleteStream`, then closes our side and waits (at
    /// most `close_timeout`) for the server to close, so that it has read everything.
    pub async fn finish(mut self) -> Result<(), ClientError> {
        let phase = Phase::Finish;
        self.conn.check(phase)?;
        let key = command::string(&self.stream_key);
        let fcunpublish = command::call("FCUnpublish", TID_FCUNPUBLISH, vec![key]);
        let delete = command::call(
            "deleteStream",
            TID_DELETE,
            vec![command::number(f64::from(self.stream_id))],
        );
        self.conn.queue_command(phase, 0, &fcunpublish)?;
        self.conn.queue_command(phase, 0, &delete)?;
        self.conn.flush(phase).await?;
        self.conn.close(phase).await?;
        tracing::debug!(stream_id = self.stream_id, "publish finished");
        Ok(())
    }
}
