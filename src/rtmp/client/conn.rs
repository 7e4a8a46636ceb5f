//! The I/O core shared by `Publisher` and `Player`: handshake, bounded reading through
//! `framing::ChunkReader`, protocol control (pings, acknowledgements, chunk size), a write
//! queue whose progress survives cancellation, and deadlines.
//!
//! Write queue: `out` holds whole messages (and at its end, possibly the header of a
//! pre-chunked message whose body is `body`); `later` holds protocol answers queued while a
//! `body` is pending, so that they never land between a header and its body. `flush` writes
//! `out[pos..]` then `body` with vectored writes, recording progress after every write, so a
//! cancelled flush loses nothing and the next one resumes where it stopped.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::command::{self, Role};
use super::{ClientError, ClientOptions, ClientStats, Endpoint, Phase, CSID_COMMAND, CSID_CONTROL};
use crate::rtmp::chunk_writer::{ChunkWriteError, ChunkWriter, MessageHeader, PreChunked};
use crate::rtmp::framing::{
    ChunkReader, Message, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, TYPE_ABORT, TYPE_ACKNOWLEDGEMENT,
    TYPE_AMF0_COMMAND, TYPE_SET_CHUNK_SIZE, TYPE_SET_PEER_BANDWIDTH, TYPE_USER_CONTROL,
    TYPE_WINDOW_ACK_SIZE,
};
use crate::rtmp::outbox::{Outbox, MAX_SLICES};

/// Bytes read per read call. Bounds the messages one read can complete (and so `inbox`).
const READ_BUF_LEN: usize = 16 << 10;

/// Own-buffer capacity the write queue keeps between flushes: a message sent by copy
/// (`Publisher::send`) up to this size then allocates nothing; a bigger one is given back.
const OUT_KEEP: usize = 512 << 10;

/// User control event types (RTMP 1.0 §7.1.7).
const UC_SET_BUFFER_LENGTH: u16 = 3;
const UC_PING_REQUEST: u16 = 6;
const UC_PING_RESPONSE: u16 = 7;

/// A point in time to give up, and the timeout it came from (for the error).
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadline {
    at: Instant,
    after: Duration,
}

impl Deadline {
    pub fn after(after: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + after,
            after,
        }
    }
}

pub(super) struct Conn<S> {
    io: S,
    pub opts: ClientOptions,
    reader: ChunkReader,
    /// Messages read but not yet handed out; filled only when empty, from one read.
    inbox: VecDeque<Message>,
    completed: Vec<Message>,
    rbuf: Box<[u8]>,
    writer: ChunkWriter,
    /// Queued for the server: our own bytes and shared payload slices, in order.
    out: Outbox,
    stats: ClientStats,
    /// `stats.bytes_in` when we last acknowledged.
    acked: u64,
    /// The server's window acknowledgement size.
    ack_window: Option<u32>,
    failed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    /// Performs the client handshake on `io` and queues our `SetChunkSize`.
    pub async fn handshake(io: S, opts: ClientOptions) -> Result<Conn<S>, ClientError> {
        let phase = Phase::Handshake;
        // A bad option fails before any byte is sent.
        let size = opts.chunk_size;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
            let source = ChunkWriteError::ChunkSize { size };
            return Err(ClientError::Write { phase, source });
        }
        let mut conn = Conn {
            io,
            reader: ChunkReader::new(opts.limits),
            opts,
            inbox: VecDeque::new(),
            completed: Vec::new(),
            rbuf: vec![0u8; READ_BUF_LEN].into_boxed_slice(),
            writer: ChunkWriter::new(),
            out: Outbox::new(OUT_KEEP),
            stats: ClientStats::default(),
            acked: 0,
            ack_window: None,
            failed: false,
        };
        let deadline = Deadline::after(conn.opts.handshake_timeout);
        let hs_err = |e| ClientError::Handshake {
            detail: format!("{e:?}"),
        };
        // rml_rtmp's handshake holds only what we feed it: ≤ 3073 bytes plus one read.
        let mut hs = Handshake::new(PeerType::Client);
        conn.out
            .put_own(&hs.generate_outbound_p0_and_p1().map_err(hs_err)?);
        conn.flush(phase).await?;
        let rest = loop {
            let n = conn.read_raw(phase, Some(deadline)).await?;
            match hs.process_bytes(&conn.rbuf[..n]).map_err(hs_err)? {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    conn.out.put_own(&response_bytes);
                    conn.flush(phase).await?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    conn.out.put_own(&response_bytes);
                    break remaining_bytes;
                }
            }
        };
        let writer = &mut conn.writer;
        conn.out
            .own(|b| writer.set_chunk_size(size, b))
            .map_err(|source| ClientError::Write { phase, source })?;
        conn.flush(phase).await?;
        tracing::debug!(chunk_size = size, "RTMP handshake done");
        conn.take_input(phase, &rest)?;
        Ok(conn)
    }

    /// Fails with `Unusable` after an earlier I/O, framing or close error.
    pub fn check(&self, phase: Phase) -> Result<(), ClientError> {
        if self.failed {
            Err(ClientError::Unusable { phase })
        } else {
            Ok(())
        }
    }

    fn fail(&mut self, e: ClientError) -> ClientError {
        if matches!(
            e,
            ClientError::Io { .. } | ClientError::Framing { .. } | ClientError::Closed { .. }
        ) {
            self.failed = true;
        }
        e
    }

    pub fn chunk_size(&self) -> u32 {
        self.writer.chunk_size()
    }

    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.out.len()
    }

    /// One read into `rbuf`; 0 bytes is an error (`Closed`). Cancel-safe.
    async fn read_raw(
        &mut self,
        phase: Phase,
        deadline: Option<Deadline>,
    ) -> Result<usize, ClientError> {
        let read = self.io.read(&mut self.rbuf);
        let r = match deadline {
            Some(d) => match tokio::time::timeout_at(d.at, read).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(ClientError::Timeout {
                        phase,
                        after: d.after,
                    })
                }
            },
            None => read.await,
        };
        match r {
            Ok(0) => Err(self.fail(ClientError::Closed { phase })),
            Ok(n) => Ok(n),
            Err(source) => Err(self.fail(ClientError::Io { phase, source })),
        }
    }

    /// Feeds received bytes to the chunk reader; counts them for acknowledgements.
    fn take_input(&mut self, phase: Phase, data: &[u8]) -> Result<(), ClientError> {
        let received = self.stats.bytes_in + data.len() as u64;
        self.stats.bytes_in = received;
        if let Some(window) = self.ack_window {
            if received - self.acked >= u64::from(window) {
                self.acked = received;
                self.stats.acks += 1;
                // The sequence number is the byte count, modulo 2^32 (RTMP 1.0 §5.4.3).
                let seq = (received as u32).to_be_bytes();
                self.queue_control(TYPE_ACKNOWLEDGEMENT, &seq);
            }
        }
        let r = self.reader.push(data, &mut self.completed);
        self.stats.messages_in += self.completed.len() as u64;
        self.inbox.extend(self.completed.drain(..));
        r.map_err(|source| self.fail(ClientError::Framing { phase, source }))
    }

    /// One read (waiting until `deadline`, or without one), its messages into the inbox.
    /// Cancel-safe.
    async fn fill(&mut self, phase: Phase, deadline: Option<Deadline>) -> Result<(), ClientError> {
        let n = self.read_raw(phase, deadline).await?;
        let data = std::mem::take(&mut self.rbuf);
        let r = self.take_input(phase, &data[..n]);
        self.rbuf = data;
        r
    }

    /// Waits for one read unless messages from the last one are still unhandled.
    /// Cancel-safe.
    pub async fn wait_input(&mut self, phase: Phase) -> Result<(), ClientError> {
        if self.inbox.is_empty() {
            self.fill(phase, None).await?;
        }
        Ok(())
    }

    /// Handles input that is readable right now without waiting: at most one read.
    pub fn poll_input(&mut self, phase: Phase) -> Result<(), ClientError> {
        if !self.inbox.is_empty() {
            return Ok(());
        }
        match self.fill(phase, None).now_or_never() {
            Some(r) => r,
            None => Ok(()),
        }
    }

    /// The next message that is not protocol control, handling control on the way; reads
    /// (after flushing our queued answers) only when nothing is left from the last read.
    /// `None` deadline: wait as long as it takes. Cancel-safe.
    pub async fn next_message(
        &mut self,
        phase: Phase,
        deadline: Option<Deadline>,
    ) -> Result<Message, ClientError> {
        loop {
            if let Some(m) = self.pop_message(phase) {
                return Ok(m);
            }
            self.flush(phase).await?;
            self.fill(phase, deadline).await?;
        }
    }

    /// The next non-control message already read, handling control messages before it.
    pub fn pop_message(&mut self, phase: Phase) -> Option<Message> {
        while let Some(m) = self.inbox.pop_front() {
            if let Some(m) = self.control(phase, m) {
                return Some(m);
            }
        }
        None
    }

    /// Puts a message back at the front of the inbox.
    pub fn unread(&mut self, m: Message) {
        self.inbox.push_front(m);
    }

    /// Handles protocol control; returns every other message.
    fn control(&mut self, phase: Phase, m: Message) -> Option<Message> {
        let be32 = |p: &[u8]| {
            p.get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match m.type_id {
            // Already applied by the chunk reader.
            TYPE_SET_CHUNK_SIZE => {
                tracing::debug!(%phase, size = self.reader.chunk_size(), "server chunk size");
            }
            TYPE_ABORT | TYPE_ACKNOWLEDGEMENT | TYPE_SET_PEER_BANDWIDTH => {}
            TYPE_WINDOW_ACK_SIZE => {
                let size = be32(&m.payload).unwrap_or(0);
                tracing::debug!(%phase, size, "server window acknowledgement size");
                self.ack_window = (size > 0).then_some(size);
            }
            TYPE_USER_CONTROL => {
                let event = m.payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                if event == Some(UC_PING_REQUEST) {
                    if let Some(ts) = m.payload.get(2..6) {
                        let mut answer = [0u8; 6];
                        answer[..2].copy_from_slice(&UC_PING_RESPONSE.to_be_bytes());
                        answer[2..].copy_from_slice(ts);
                        self.queue_control(TYPE_USER_CONTROL, &answer);
                        self.stats.pings += 1;
                        tracing::trace!(%phase, "ping answered");
                    }
                } else {
                    tracing::trace!(%phase, ?event, "user control event");
                }
            }
            _ => return Some(m),
        }
        None
    }

    /// Queues a protocol control message (csid 2, stream 0) after whatever is queued.
    fn queue_control(&mut self, type_id: u8, payload: &[u8]) {
        let header = MessageHeader {
            csid: CSID_CONTROL,
            timestamp: 0,
            type_id,
            stream_id: 0,
        };
        self.copy_in(&header, payload)
            .expect("control messages are tiny and csid 2 is valid");
    }

    /// Chunks a whole message into the queue's own buffer (a copy).
    fn copy_in(&mut self, header: &MessageHeader, payload: &[u8]) -> Result<(), ChunkWriteError> {
        let writer = &self.writer;
        self.out.own(|b| writer.write(header, payload, b))
    }

    /// Queues `SetBufferLength` for `stream_id`.
    pub fn queue_buffer_length(&mut self, stream_id: u32, ms: u32) {
        let mut p = [0u8; 10];
        p[..2].copy_from_slice(&UC_SET_BUFFER_LENGTH.to_be_bytes());
        p[2..6].copy_from_slice(&stream_id.to_be_bytes());
        p[6..].copy_from_slice(&ms.to_be_bytes());
        self.queue_control(TYPE_USER_CONTROL, &p);
    }

    /// Queues a whole message (copied into the queue).
    pub fn queue_message(
        &mut self,
        phase: Phase,
        header: &MessageHeader,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        self.copy_in(header, payload)
            .map_err(|source| ClientError::Write { phase, source })
    }

    /// Queues a whole message whose payload is shared: only its chunk headers are built,
    /// the payload is written from `payload` itself (no copy).
    pub fn queue_shared(
        &mut self,
        phase: Phase,
        header: &MessageHeader,
        payload: &Bytes,
    ) -> Result<(), ClientError> {
        self.writer
            .write_shared(header, payload, &mut self.out)
            .map_err(|source| ClientError::Write { phase, source })
    }

    /// Queues a command on csid 3.
    pub fn queue_command(
        &mut self,
        phase: Phase,
        stream_id: u32,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        let header = MessageHeader {
            csid: CSID_COMMAND,
            timestamp: 0,
            type_id: TYPE_AMF0_COMMAND,
            stream_id,
        };
        self.queue_message(phase, &header, payload)
    }

    /// Queues a pre-chunked message: its header is copied, its body is shared (no copy),
    /// unless it must be re-chunked (see `PreChunked::is_direct`).
    pub fn queue_prechunked(
        &mut self,
        phase: Phase,
        msg: &PreChunked,
        timestamp: u32,
        stream_id: u32,
    ) -> Result<(), ClientError> {
        if msg.is_direct(timestamp, self.writer.chunk_size()) {
            self.out.put_own(&msg.header(timestamp, stream_id));
            self.out.put_shared(msg.body().clone());
            Ok(())
        } else {
            let writer = &self.writer;
            self.out
                .own(|b| msg.write_to(writer, timestamp, stream_id, b))
                .map_err(|source| ClientError::Write { phase, source })
        }
    }

    /// Writes everything queued, then flushes the stream. Each write must make progress
    /// within `write_timeout`. Cancel-safe.
    pub async fn flush(&mut self, phase: Phase) -> Result<(), ClientError> {
        let after = self.opts.write_timeout;
        while !self.out.is_empty() {
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let k = self.out.io_slices(&mut slices);
                tokio::time::timeout(after, self.io.write_vectored(&slices[..k])).await
            };
            let n = match written {
                Err(_) => return Err(ClientError::WriteTimeout { phase, after }),
                Ok(Err(source)) => return Err(self.fail(ClientError::Io { phase, source })),
                Ok(Ok(0)) => {
                    let source = std::io::ErrorKind::WriteZero.into();
                    return Err(self.fail(ClientError::Io { phase, source }));
                }
                Ok(Ok(n)) => n,
            };
            self.stats.bytes_out += n as u64;
            self.out.advance(n);
        }
        match tokio::time::timeout(after, self.io.flush()).await {
            Err(_) => Err(ClientError::WriteTimeout { phase, after }),
            Ok(Err(source)) => Err(self.fail(ClientError::Io { phase, source })),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// The start both roles share: checks that `names` fit AMF0 strings, handshakes on
    /// `io` and connects to `endpoint.app` with transaction id `tid`.
    pub async fn open(
        io: S,
        opts: ClientOptions,
        endpoint: &Endpoint,
        names: [(&'static str, &str); 3],
        role: Role,
        tid: f64,
    ) -> Result<Conn<S>, ClientError> {
        for (what, v) in names {
            if !command::fits(v) {
                return Err(ClientError::TooLong {
                    phase: Phase::Connect,
                    what,
                });
            }
        }
        let mut conn = Conn::handshake(io, opts).await?;
        let phase = Phase::Connect;
        let connect = command::connect(tid, &endpoint.app, &endpoint.tc_url, role);
        conn.queue_command(phase, 0, &connect)?;
        conn.flush(phase).await?;
        conn.await_result(phase, tid).await?;
        tracing::debug!(app = %crate::names::redact(&endpoint.app), "connected");
        Ok(conn)
    }

    /// Sends `before` (commands that precede it, e.g. FCPublish) and `createStream` with
    /// transaction id `tid`; returns the message stream id the server gave.
    pub async fn create_stream(
        &mut self,
        before: &[Vec<u8>],
        tid: f64,
    ) -> Result<u32, ClientError> {
        let phase = Phase::CreateStream;
        for c in before {
            self.queue_command(phase, 0, c)?;
        }
        let create = command::call("createStream", tid, Vec::new());
        self.queue_command(phase, 0, &create)?;
        self.flush(phase).await?;
        let reply = self.await_result(phase, tid).await?;
        match reply.number() {
            Some(id) if id >= 1.0 && id <= f64::from(u32::MAX) && id.fract() == 0.0 => {
                Ok(id as u32)
            }
            other => Err(ClientError::Protocol {
                phase,
                detail: format!("createStream answered stream id {other:?}"),
            }),
        }
    }

    /// Waits for the answer to transaction `tid`: `Ok` with a `_result`, `Refused` with an
    /// `_error` (or an error-level `onStatus`). Other messages are skipped.
    pub async fn await_result(
        &mut self,
        phase: Phase,
        tid: f64,
    ) -> Result<command::Reply, ClientError> {
        let deadline = Deadline::after(self.opts.command_timeout);
        loop {
            let m = self.next_message(phase, Some(deadline)).await?;
            let Some(reply) = self.reply(phase, &m)? else {
                continue;
            };
            match reply.name.as_str() {
                "_result" if reply.tid == tid => return Ok(reply),
                "_error" if reply.tid == tid => return Err(refused(phase, &reply)),
                "onStatus" if reply.status().is_some_and(|s| s.is_error()) => {
                    return Err(refused(phase, &reply))
                }
                _ => skipped(phase, &reply),
            }
        }
    }

    /// Decodes `m` if it is an AMF0 command.
    pub fn reply(
        &mut self,
        phase: Phase,
        m: &Message,
    ) -> Result<Option<command::Reply>, ClientError> {
        if m.type_id != TYPE_AMF0_COMMAND {
            tracing::trace!(%phase, type_id = m.type_id, "message skipped");
            return Ok(None);
        }
        command::decode(&m.payload)
            .map(Some)
            .map_err(|source| ClientError::Amf { phase, source })
    }

    /// After a `…Start` status: reads for up to `start_grace` for an error status (or an
    /// `_error` for `tid`) or a close that follows it. Stops at the first message that is
    /// not a command, and puts it back.
    pub async fn settle(&mut self, phase: Phase, tid: f64) -> Result<(), ClientError> {
        let deadline = Deadline::after(self.opts.start_grace);
        loop {
            let m = match self.next_message(phase, Some(deadline)).await {
                Ok(m) => m,
                Err(ClientError::Timeout { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            if m.type_id != TYPE_AMF0_COMMAND {
                self.unread(m);
                return Ok(());
            }
            let reply =
                command::decode(&m.payload).map_err(|source| ClientError::Amf { phase, source })?;
            let error_status =
                reply.name == "onStatus" && reply.status().is_some_and(|s| s.is_error());
            let error_result = reply.name == "_error" && (reply.tid == tid || reply.tid == 0.0);
            if error_status || error_result {
                return Err(refused(phase, &reply));
            }
            skipped(phase, &reply);
        }
    }

    /// Sends our FIN and reads (discarding) until the server closes or `close_timeout`.
    pub async fn close(&mut self, phase: Phase) -> Result<(), ClientError> {
        let after = self.opts.write_timeout;
        match tokio::time::timeout(after, self.io.shutdown()).await {
            Err(_) => return Err(ClientError::WriteTimeout { phase, after }),
            Ok(Err(source)) => return Err(self.fail(ClientError::Io { phase, source })),
            Ok(Ok(())) => {}
        }
        let deadline = Deadline::after(self.opts.close_timeout);
        loop {
            match self.read_raw(phase, Some(deadline)).await {
                Ok(_) => {}
                Err(ClientError::Closed { .. }) | Err(ClientError::Io { .. }) => return Ok(()),
                Err(ClientError::Timeout { .. }) => {
                    tracing::debug!(%phase, "server kept the connection open after our FIN");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }
}

pub(super) fn refused(phase: Phase, reply: &command::Reply) -> ClientError {
    let status = reply.status().unwrap_or_else(|| super::Status {
        level: "error".into(),
        code: reply.name.clone(),
        description: String::new(),
    });
    tracing::debug!(%phase, code = %status.code, description = %status.description, "refused");
    ClientError::Refused { phase, status }
}

pub(super) fn skipped(phase: Phase, reply: &command::Reply) {
    match reply.status() {
        Some(s) => tracing::debug!(%phase, name = %reply.name, code = %s.code, "status"),
        None => tracing::debug!(%phase, name = %reply.name, tid = reply.tid, "command skipped"),
    }
}
