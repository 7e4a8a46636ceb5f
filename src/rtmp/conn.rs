//! One RTMP connection: moves bytes between the socket and the session, with a
//! deadline on every read, and acts on session events (publish decisions, media).
//! A panic here ends this connection only; it is logged with the peer and stream.
//! The task is generic over its [`Transport`]: plain TCP (RTMP) or TLS over TCP (RTMPS).

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::FutureExt;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::server::TlsStream;
use tracing::Instrument;

use crate::admission::{self, Refusal, Refused};
use crate::hub::{FrameKind, Item};
use crate::ingest::{self, Ingest};
use crate::live::{LiveStream, Players};
use crate::names;
use crate::node::Node;
use crate::rtmp::framing::{FramingError, FramingLimits};
use crate::rtmp::limits::{ConnLimits, ConnPermit};
use crate::rtmp::player::{
    batch_buffer, written, Feed, Playing, Wait, BATCH_BUFFERS, PLAYER_BATCH, PLAYER_BATCH_BYTES,
    PLAYER_READ_BUF, PLAYER_SNDBUF,
};
use crate::rtmp::session::{Event, MediaKind, Session, SessionError, SessionLimits};
use crate::rtmp::socket;

/// The read buffer after the handshake: twice [`PUBLISH_RCVLOWAT`], so that one `read`
/// per wakeup takes everything queued (a buffer the size of the mark took two, the second
/// for the bytes that arrived meanwhile; docs/performance.md "Ingest alone").
const READ_BUF: usize = 64 * 1024;

/// While a connection publishes, the kernel wakes its task only once this many bytes are
/// queued (`SO_RCVLOWAT`; about 60 ms of a 4 Mbit/s stream) instead of once per RTMP
/// message, which cuts ingest CPU (measured in docs/performance.md: 32 KiB took 30 % off
/// 16 KiB's, 64 KiB little more). Bytes below the mark are read by the [`DRAIN_TICK`], so
/// nothing waits longer than that. At most a quarter of the kernel's default receive
/// buffer (128 KiB), so the window the sender sees stays open while the mark fills.
const PUBLISH_RCVLOWAT: usize = 32 * 1024;
const _: () = assert!(READ_BUF >= 2 * PUBLISH_RCVLOWAT);
/// The mark while the publish has readers downstream (players, relay targets): a frame
/// below the full mark would wait for the next ones (up to a frame interval, or the drain
/// tick), which is latency those readers see; this one keeps most of the batching.
const LIVE_RCVLOWAT: usize = 4 * 1024;
/// The receive low-water mark of a connection: 1 unless it publishes (`Some(readers of
/// its hub)`), then [`PUBLISH_RCVLOWAT`], or [`LIVE_RCVLOWAT`] while someone reads it.
fn rcvlowat(publish_readers: Option<usize>) -> usize {
    match publish_readers {
        None => 1,
        Some(0) => PUBLISH_RCVLOWAT,
        Some(_) => LIVE_RCVLOWAT,
    }
}
/// How long bytes may wait below the low-water mark: a publishing connection that has read
/// nothing for this long reads whatever is queued. The deadline moves with every read, so a
/// steady stream never reaches it and its thread is woken by data alone.
const DRAIN_TICK: std::time::Duration = std::time::Duration::from_millis(200);

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("not RTMP: first byte 0x{0:02x} (expected 0x03)")]
    NotRtmp(u8),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("handshake not finished within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    #[error("no media for {0:?}")]
    Idle(std::time::Duration),
    #[error("no publish within {0:?}")]
    NoPublish(std::time::Duration),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Session(#[from] SessionError),
    #[error("publish rejected: {0}")]
    Rejected(Refused),
    #[error("play refused: {0}")]
    PlayRefused(String),
    #[error("player stayed behind for {0:?} (play.lag_close_secs)")]
    PlayerLagging(std::time::Duration),
    #[error("disconnected by the node")]
    Kicked,
    #[error(
        "handshake evicted: limits.max_handshakes reached and this was the oldest in progress"
    )]
    HandshakeEvicted,
}

impl ConnError {
    /// The `reason` label of `livesnap_connections_rejected_total`, for endings that
    /// are the peer's fault or a refusal (not for a plain disconnect).
    pub fn metric_reason(&self) -> Option<&'static str> {
        Some(match self {
            ConnError::NotRtmp(_) => "not_rtmp",
            ConnError::Handshake(_) => "handshake",
            ConnError::HandshakeTimeout(_) => "handshake_timeout",
            ConnError::HandshakeEvicted => "handshake_limit",
            ConnError::Idle(_) | ConnError::NoPublish(_) => "idle_timeout",
            ConnError::Session(SessionError::Framing(FramingError::PartialBudget { .. })) => {
                "partial_budget"
            }
            ConnError::Session(SessionError::Framing(FramingError::NodePartialBudget {
                ..
            })) => "node_partial_budget",
            ConnError::Session(SessionError::Framing(_)) => "framing",
            ConnError::Session(SessionError::Amf { .. } | SessionError::Amf3(_)) => "amf",
            ConnError::Session(_) => "protocol",
            ConnError::Rejected(r) => r.refusal.metric_reason(),
            ConnError::PlayRefused(_) => "play_refused",
            ConnError::PlayerLagging(_) => "player_lagging",
            ConnError::Io(_) | ConnError::Kicked => return None,
        })
    }
}

/// What a connection runs over: plain TCP (RTMP) or TLS over TCP (RTMPS). Both use the
/// receive low-water mark while a connection publishes ([`PUBLISH_RCVLOWAT`], read below
/// the mark by the [`DRAIN_TICK`]; on platforms with the mark, [`socket::LOWAT`]): the mark
/// is set on the TCP socket, and TLS reads what is below it through its decryption
/// ([`tls_read_below_mark`]).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Sets the receive low-water mark (best effort: a failure only costs CPU).
    fn set_rcvlowat(&self, bytes: usize);
    /// Reads what is queued below the mark without waiting (`WouldBlock` when nothing).
    fn read_below_mark(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Caps the kernel's send buffer (for players; best effort).
    fn set_sndbuf(&self, bytes: usize);
}

impl Transport for TcpStream {
    fn set_rcvlowat(&self, bytes: usize) {
        socket::set_rcvlowat(self, bytes)
    }
    fn read_below_mark(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        socket::recv_queued(self, buf)
    }
    fn set_sndbuf(&self, bytes: usize) {
        socket::set_sndbuf(self, bytes)
    }
}

/// RTMPS: the mark on the TCP socket under the TLS stream.
impl Transport for TlsStream<TcpStream> {
    fn set_rcvlowat(&self, bytes: usize) {
        socket::set_rcvlowat(self.get_ref().0, bytes)
    }
    fn read_below_mark(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        tls_read_below_mark(self, buf)
    }
    fn set_sndbuf(&self, bytes: usize) {
        socket::set_sndbuf(self.get_ref().0, bytes)
    }
}

/// Reads through TLS what is queued below the mark, without waiting: the plaintext rustls
/// already holds, else the socket's queued bytes handed to rustls, which decrypts the
/// records they complete. A record still incomplete stays in rustls's buffer (nothing is
/// lost); the next read, by the mark or the drain, completes it. `WouldBlock` when no
/// plaintext came of it, `Ok(0)` at the end of the stream.
fn tls_read_below_mark(tls: &mut TlsStream<TcpStream>, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::{ErrorKind, Read};
    /// The socket as rustls reads it here: only what is queued now.
    struct Queued<'a>(&'a TcpStream);
    impl Read for Queued<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            socket::recv_queued(self.0, buf)
        }
    }
    let (tcp, session) = tls.get_mut();
    loop {
        match session.reader().read(buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            done => return done,
        }
        if session.read_tls(&mut Queued(tcp))? == 0 {
            // The peer closed the TCP connection: whatever rustls makes of it (the end of
            // the stream after a close_notify, an unexpected end without one).
            return match session.reader().read(buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(0),
                done => done,
            };
        }
        session
            .process_new_packets()
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
    }
}

/// Runs a connection to its end and logs how it ended.
pub async fn run<T: Transport>(
    node: Arc<Node>,
    limits: Arc<ConnLimits>,
    socket: T,
    peer: SocketAddr,
    permit: ConnPermit,
) {
    let span = tracing::info_span!(
        "rtmp",
        %peer,
        domain = tracing::field::Empty,
        app = tracing::field::Empty,
        stream = tracing::field::Empty,
        player = tracing::field::Empty
    );
    let metrics = node.metrics.clone();
    let fut = AssertUnwindSafe(serve(node, &limits, socket, peer)).catch_unwind();
    match fut.instrument(span.clone()).await {
        Ok(Ok(())) => span.in_scope(|| tracing::debug!("connection closed")),
        Ok(Err(ConnError::Io(e))) if is_reset(&e) => {
            span.in_scope(|| tracing::info!(reason = %e, "connection lost"))
        }
        Ok(Err(e)) => {
            if let Some(why) = e.metric_reason() {
                metrics.rejected(why);
            }
            // Peers choose how often this happens: within a budget, then counted only.
            if let Some(suppressed) = limits.warnings.take() {
                span.in_scope(|| tracing::warn!(reason = %e, suppressed, "connection closed"))
            }
        }
        Err(p) => {
            metrics.rejected("panic");
            let msg = crate::util::panic_message(p.as_ref());
            span.in_scope(|| tracing::error!(panic = %msg, "connection task panicked; closed"));
        }
    }
    drop(permit);
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof
    )
}

async fn handshake<T: Transport>(
    socket: &mut T,
    buf: &mut [u8],
    limit: std::time::Duration,
) -> Result<Vec<u8>, ConnError> {
    let deadline = Instant::now() + limit;
    let mut hs = Handshake::new(PeerType::Server);
    let mut first = true;
    loop {
        let n = timeout_at(deadline, socket.read(buf))
            .await
            .map_err(|_| ConnError::HandshakeTimeout(limit))??;
        if n == 0 {
            return Err(ConnError::Handshake(
                "peer closed during the handshake".into(),
            ));
        }
        if first {
            first = false;
            if buf[0] != 3 {
                return Err(ConnError::NotRtmp(buf[0]));
            }
        }
        match hs
            .process_bytes(&buf[..n])
            .map_err(|e| ConnError::Handshake(format!("{e:?}")))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                timeout_at(deadline, write_out(socket, &response_bytes))
                    .await
                    .map_err(|_| ConnError::HandshakeTimeout(limit))??;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                timeout_at(deadline, write_out(socket, &response_bytes))
                    .await
                    .map_err(|_| ConnError::HandshakeTimeout(limit))??;
                return Ok(remaining_bytes);
            }
        }
    }
}

/// Writes all of `bytes` and flushes: a no-op for TCP, but TLS may hold the last record
/// in its buffer until flushed.
async fn write_out<T: Transport>(socket: &mut T, bytes: &[u8]) -> std::io::Result<()> {
    socket.write_all(bytes).await?;
    socket.flush().await
}

async fn serve<T: Transport>(
    node: Arc<Node>,
    limits: &ConnLimits,
    mut socket: T,
    peer: SocketAddr,
) -> Result<(), ConnError> {
    let s = &node.settings;
    // A small buffer for the handshake; the full one only for peers that finish it.
    let mut hs_buf = [0u8; 2048];
    let (ticket, evicted) = limits.handshakes.enter();
    if evicted {
        tracing::debug!("handshake table full: evicted the oldest handshake in progress");
    }
    let remaining = tokio::select! {
        r = handshake(&mut socket, &mut hs_buf, s.handshake_timeout) => r?,
        _ = ticket.evicted.cancelled() => return Err(ConnError::HandshakeEvicted),
        _ = node.shutdown.cancelled() => return Ok(()),
    };
    drop(ticket);
    let mut buf = vec![0u8; READ_BUF];
    let partial_budget = limits.partial_budget();
    let limits = SessionLimits {
        framing: FramingLimits {
            max_message_len: s.limits.max_message_bytes,
            max_command_len: s.limits.max_command_bytes,
            max_chunk_streams: s.limits.max_chunk_streams,
        },
        max_streams: s.limits.max_streams_per_connection,
    };
    let mut conn = Conn {
        node: node.clone(),
        session: Session::new(limits)?,
        peer,
        stream: None,
        player: None,
        wait: None,
    };
    conn.session.set_partial_budget(partial_budget);
    let mut events = Vec::new();
    conn.session.handle(&remaining, &mut events)?;
    conn.act(&mut events).await?;
    conn.flush(&mut socket).await?;
    // Progress is media, not bytes: a peer that drips bytes or sends only small
    // control messages is closed `idle` after its last media (or after the handshake,
    // if it never publishes), however busy it keeps the socket.
    let idle = s.idle_timeout;
    let mut progress_at = Instant::now();
    let mut media_seen = 0;
    let mut was_publishing = false;
    let mut was_playing = false;
    let mut mark = 1;
    let mut sndbuf_set = false;
    // The drain deadline (publishing over plain TCP only). Replaced, not reset, after every
    // read: tokio's `reset` to a later time leaves the timer where it was in the wheel, which
    // then wakes the thread at the old time only to move it; a new timer is registered
    // afresh and the replaced one leaves the wheel before it falls due.
    let mut drain: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let shutdown = node.shutdown.cancelled();
    tokio::pin!(shutdown);
    // One idle timer per connection, not one per read: when it fires before the deadline
    // (progress was made since it was set), it is set again to the current deadline.
    let idle_timer = tokio::time::sleep_until(progress_at + idle);
    tokio::pin!(idle_timer);
    // The kick of the stream this connection publishes, or of its player, waited on by one
    // future for the whole publish or play (not a new waiter per read).
    let mut kick: Option<std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>> =
        None;
    let mut kick_of = Role::None;
    loop {
        if kick_of != conn.role() {
            kick_of = conn.role();
            kick = conn.kick_token().map(|t| Box::pin(t.cancelled_owned()));
        }
        if conn.player.is_some() && !sndbuf_set {
            socket.set_sndbuf(PLAYER_SNDBUF);
            sndbuf_set = true;
            // A player sends only commands and acknowledgements: a small read buffer.
            buf = vec![0u8; PLAYER_READ_BUF];
        }
        let n = tokio::select! {
            r = socket.read(&mut buf) => r?,
            () = &mut idle_timer => {
                if conn.wait.is_some() {
                    // Waiting for a publish is not idleness: the wait has its own end.
                    progress_at = Instant::now();
                }
                let deadline = progress_at + idle;
                if Instant::now() >= deadline {
                    return Err(if conn.stream.is_some() { ConnError::Idle(idle) } else { ConnError::NoPublish(idle) });
                }
                idle_timer.as_mut().reset(deadline);
                continue;
            }
            () = unless_none(drain.as_mut()) => match socket.read_below_mark(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => {
                    if Instant::now() >= progress_at + idle {
                        return Err(ConnError::Idle(idle));
                    }
                    // Nothing below the mark: look again a tick later (the stream pauses).
                    if let Some(d) = drain.as_mut() {
                        d.as_mut().reset(Instant::now() + DRAIN_TICK);
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            },
            _ = &mut shutdown => return Ok(()),
            () = unless_none(kick.as_mut()) => {
                return Err(ConnError::Kicked);
            }
            live = unless_none(conn.wait.as_mut().map(|w| &mut w.live)) => {
                let ended = conn.on_live(live);
                conn.flush(&mut socket).await?;
                if ended? {
                    return Ok(());
                }
                progress_at = Instant::now();
                continue;
            }
            item = async { match conn.player.as_mut().and_then(|p| p.feed.as_mut()) { Some(f) => f.sub.next().await, None => std::future::pending().await } } => {
                let ended = conn.send_to_player(item)?;
                conn.flush(&mut socket).await?;
                if ended {
                    return Ok(());
                }
                progress_at = Instant::now();
                continue;
            }
        };
        if n == 0 {
            return Ok(());
        }
        node.metrics.bytes_received.inc_by(n as u64);
        let r = conn.session.handle(&buf[..n], &mut events);
        // Act on what was complete before any error, so a publish that ends in garbage
        // still had its media handled.
        let acted = conn.act(&mut events).await;
        let flushed = conn.flush(&mut socket).await;
        let publishing = conn.stream.is_some();
        // Bytes were read: the drain is due a tick from now. Only a publisher has a mark.
        drain = (socket::LOWAT && publishing).then(|| Box::pin(tokio::time::sleep(DRAIN_TICK)));
        let want = rcvlowat(conn.stream.as_ref().map(|st| st.live().hub.subscribers()));
        if want != mark {
            socket.set_rcvlowat(want);
            mark = want;
        }
        // `act` may have waited for the snapshot queue (a publisher ahead of real time
        // is paced by not being read); that wait is ours, not the peer's idleness, and
        // it was for a media message, so the idle deadline starts again from here.
        // A play that started (after waiting for its publish, maybe longer than the idle
        // timeout) is progress too.
        let playing = conn.player.is_some();
        if conn.session.media_messages() > media_seen
            || publishing != was_publishing
            || playing != was_playing
        {
            media_seen = conn.session.media_messages();
            was_publishing = publishing;
            was_playing = playing;
            progress_at = Instant::now();
        }
        r?;
        acted?;
        flushed?;
    }
}

/// Waits for the future if there is one; without one, never finishes (a `select!` branch
/// that is off until the future exists).
async fn unless_none<F: std::future::Future + ?Sized>(
    f: Option<&mut std::pin::Pin<Box<F>>>,
) -> F::Output {
    match f {
        Some(f) => f.as_mut().await,
        None => std::future::pending().await,
    }
}

struct Conn {
    node: Arc<Node>,
    session: Session,
    peer: SocketAddr,
    stream: Option<Ingest>,
    /// The play of this connection, if it is a player (between two publishes too).
    player: Option<Playing>,
    /// A play waiting for its stream's publish (the first one, or the next).
    wait: Option<Wait>,
}

/// What a connection is doing, as far as being kicked goes. A player between two publishes
/// is `None`: each publish it spans gives it a new place, with its own kick.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    None,
    Publishing,
    Playing,
}

impl Conn {
    fn role(&self) -> Role {
        let feed = self.player.as_ref().and_then(|p| p.feed.as_ref());
        match (&self.stream, feed) {
            (Some(_), _) => Role::Publishing,
            (None, Some(_)) => Role::Playing,
            (None, None) => Role::None,
        }
    }

    /// What disconnects this connection from the admin API: its publish's kick, or its
    /// player's.
    fn kick_token(&self) -> Option<tokio_util::sync::CancellationToken> {
        let feed = self.player.as_ref().and_then(|p| p.feed.as_ref());
        match (&self.stream, feed) {
            (Some(st), _) => Some(st.live().kick.clone()),
            (None, Some(f)) => Some(f.seat.player.kick.clone()),
            (None, None) => None,
        }
    }

    /// Queues `item` and whatever else is ready for the player; true when the play ended
    /// (the player was told, the connection closes). A publish that ends with a player
    /// who may wait for the next one leaves it waiting instead.
    fn send_to_player(&mut self, item: Option<Item>) -> Result<bool, ConnError> {
        let Some(p) = self.player.as_mut() else {
            return Ok(false);
        };
        let session = &mut self.session;
        batch_buffer(session.output(), &BATCH_BUFFERS);
        let (lag_close, queue_bytes) = (p.lag_close(), p.access.play.player_queue_bytes);
        let mut next = Some(item);
        let mut sent = 0;
        while let Some(item) = next.take() {
            let Some(feed) = p.feed.as_mut() else { break };
            match item {
                Some(Item::Frame(f)) => {
                    let kind = match f.kind {
                        FrameKind::Metadata => MediaKind::Data,
                        FrameKind::Audio { .. } => MediaKind::Audio,
                        FrameKind::Video { .. } => MediaKind::Video,
                    };
                    session.send_media(kind, p.timeline.stamp(&f), &f.data)?;
                    self.node.metrics.bytes_played.inc_by(f.data.len() as u64);
                    let bytes = &feed.seat.player.bytes;
                    bytes.fetch_add(f.data.len() as u64, Ordering::Relaxed);
                }
                Some(Item::Resync { frames, bytes }) => {
                    self.node.metrics.player_skipped_bytes.inc_by(bytes);
                    tracing::info!(
                        frames,
                        bytes,
                        "player fell behind: skipped to the newest keyframe"
                    );
                    let skipped = &feed.seat.player.skipped_bytes;
                    skipped.fetch_add(bytes, Ordering::Relaxed);
                    let since = *p.behind_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= lag_close {
                        return Err(ConnError::PlayerLagging(lag_close));
                    }
                }
                None => {
                    let keep = p.keep();
                    if keep.is_zero() {
                        session.finish_play()?;
                        self.player = None;
                        tracing::info!("played stream ended");
                        return Ok(true);
                    }
                    // Nothing is sent meanwhile: ffmpeg and librtmp end a play on
                    // `NetStream.Play.UnpublishNotify`, so the player hears nothing until
                    // the next publish's headers and pictures.
                    p.pause();
                    let (id, access) = (p.id.clone(), p.access.clone());
                    self.wait = Some(Wait::new(&self.node, id, access, keep));
                    tracing::info!(
                        secs = keep.as_secs(),
                        "played stream ended: waiting for its next publish"
                    );
                    return Ok(false);
                }
            }
            sent += 1;
            // Caught up (less than a quarter of the queue unread): no longer behind.
            if p.behind_since.is_some() && feed.sub.lag_bytes() < (queue_bytes / 4) as u64 {
                p.behind_since = None;
            }
            if sent < PLAYER_BATCH && session.output().len() < PLAYER_BATCH_BYTES {
                next = feed.sub.poll_now();
            }
        }
        if let Some(feed) = p.feed.as_ref() {
            let position = &feed.seat.player.position;
            position.store(feed.sub.position(), Ordering::Relaxed);
        }
        Ok(false)
    }

    async fn flush<T: Transport>(&mut self, socket: &mut T) -> Result<(), ConnError> {
        // A player that takes nothing is closed after lag_close_secs, anyone else after
        // the idle timeout.
        let playing = self.player.is_some();
        let (limit, stalled): (_, fn(_) -> _) = match &self.player {
            Some(p) => (p.lag_close(), ConnError::PlayerLagging),
            None => (self.node.settings.idle_timeout, ConnError::Idle),
        };
        let out = self.session.output();
        if !out.is_empty() {
            timeout(limit, write_out(socket, out))
                .await
                .map_err(|_| stalled(limit))??;
            written(out, playing, &BATCH_BUFFERS);
        }
        Ok(())
    }

    async fn act(&mut self, events: &mut Vec<Event>) -> Result<(), ConnError> {
        for ev in events.drain(..) {
            match ev {
                Event::Video { timestamp, data } => {
                    if let Some(st) = self.stream.as_mut() {
                        st.on_video(timestamp, data).await;
                    }
                }
                Event::Audio { timestamp, data } => {
                    if let Some(st) = self.stream.as_ref() {
                        st.on_audio(timestamp, data);
                    }
                }
                Event::Connected { app, tc_url } => {
                    tracing::debug!(app = %names::escape(&names::redact(&app)), tc_url = ?tc_url.as_deref().map(|u| names::escape(&names::redact(u))), "connect");
                }
                Event::PublishRequested { app, stream_key } => {
                    self.on_publish(&app, &stream_key).await?
                }
                Event::Metadata { timestamp, data } => {
                    if let Some(st) = self.stream.as_ref() {
                        st.on_metadata(timestamp, data);
                    }
                }
                Event::Unpublished => {
                    self.stream = None;
                }
                Event::PlayRequested { app, stream_key } => self.on_play(&app, &stream_key).await?,
                Event::PlayStopped => {
                    self.player = None;
                    self.wait = None;
                }
            }
        }
        Ok(())
    }

    fn reject(&mut self, refused: Refused) -> Result<(), ConnError> {
        self.session
            .reject_publish(refused.refusal.status_code(), &refused.message)?;
        Err(ConnError::Rejected(refused))
    }

    fn refuse_play(&mut self, code: &str, message: String) -> Result<(), ConnError> {
        self.session.reject_play(code, &message)?;
        Err(ConnError::PlayRefused(message))
    }

    /// A `play`: refused, started on the live stream, or left waiting for its publish
    /// (`[play] wait_for_publish_secs`; the serve loop then calls [`Conn::on_live`]).
    async fn on_play(&mut self, app: &str, stream_key: &str) -> Result<(), ConnError> {
        const FAILED: &str = "NetStream.Play.Failed";
        // Read once: the play keeps these `[play]` settings until it ends.
        let access = self.node.access();
        if !access.play.enabled {
            return self.refuse_play(
                FAILED,
                "play is disabled on this node ([play] enabled = false)".into(),
            );
        }
        let req = match names::publish_request(app, stream_key, self.session.tc_url()) {
            Ok(r) => r,
            Err(e) => return self.refuse_play(FAILED, e.to_string()),
        };
        let span = tracing::Span::current();
        span.record("domain", req.id.domain.as_str());
        span.record("app", req.id.app.as_str());
        span.record("stream", req.id.stream.as_str());
        if let Err(refused) =
            admission::check_play(&self.node, &access, &req, self.session.tc_url(), self.peer).await
        {
            return self.refuse_play("NetStream.Play.Unauthorized", refused.message);
        }
        let wait = std::time::Duration::from_secs(access.play.wait_for_publish_secs);
        let mut wait = Wait::new(&self.node, req.id, access, wait);
        if wait.secs > 0 {
            tracing::debug!(secs = wait.secs, "waiting for the stream's publish");
            self.wait = Some(wait);
            return Ok(());
        }
        // A wait of zero is a look: answered now, with this batch's other answers.
        let live = wait.live.as_mut().await;
        self.wait = Some(wait);
        self.on_live(live).map(|_| ())
    }

    /// The end of a play's wait: its stream went live (`Some`), or the wait is over. True
    /// when the play ended (the connection closes).
    fn on_live(&mut self, live: Option<Arc<LiveStream>>) -> Result<bool, ConnError> {
        const FAILED: &str = "NetStream.Play.Failed";
        let Some(wait) = self.wait.take() else {
            return Ok(false);
        };
        let play = &wait.access.play;
        let max = play.max_players_per_stream;
        let Some(live) = live else {
            if self.player.take().is_some() {
                // A player kept from an earlier publish: its play is complete.
                self.session.finish_play()?;
                tracing::info!(
                    secs = wait.secs,
                    "no next publish of the played stream: play ended"
                );
                return Ok(true);
            }
            let why = if wait.secs == 0 {
                format!("stream {} is not live on this node", wait.id)
            } else {
                format!(
                    "stream {} did not go live on this node within {} s (play.wait_for_publish_secs)",
                    wait.id, wait.secs
                )
            };
            self.refuse_play("NetStream.Play.StreamNotFound", why)?;
            return Ok(true);
        };
        if let Some(p) = self.player.as_mut() {
            let Some(seat) = Players::join(&live, max, p.peer(), p.start_unix()) else {
                self.player = None;
                self.session.finish_play()?;
                tracing::warn!(
                    max,
                    "the stream's next publish has its players (play.max_players_per_stream): play ended"
                );
                return Ok(true);
            };
            tracing::Span::current().record("player", seat.player.id);
            let sub = live.hub.subscribe();
            p.resume(Feed { sub, seat });
            tracing::info!("play goes on with the stream's next publish");
            return Ok(false);
        }
        let max_node = play.max_players;
        if self.node.metrics.players_active.get() >= max_node as i64 {
            return self
                .refuse_play(
                    FAILED,
                    format!("this node serves {max_node} players (play.max_players)"),
                )
                .map(|_| true);
        }
        let now = self.node.clock.now_unix();
        let Some(seat) = Players::join(&live, max, self.peer, now) else {
            return self
                .refuse_play(
                    FAILED,
                    format!(
                        "stream {} has {max} players (play.max_players_per_stream)",
                        wait.id
                    ),
                )
                .map(|_| true);
        };
        tracing::Span::current().record("player", seat.player.id);
        let feed = Feed {
            sub: live.hub.subscribe(),
            seat,
        };
        self.player = Some(Playing::new(&self.node, wait.access.clone(), feed));
        self.session.accept_play()?;
        tracing::info!("play started");
        Ok(false)
    }

    async fn on_publish(&mut self, app: &str, stream_key: &str) -> Result<(), ConnError> {
        let req = match names::publish_request(app, stream_key, self.session.tc_url()) {
            Ok(r) => r,
            Err(e) => return self.reject(Refused::new(Refusal::BadName, e.to_string())),
        };
        let span = tracing::Span::current();
        span.record("domain", req.id.domain.as_str());
        span.record("app", req.id.app.as_str());
        span.record("stream", req.id.stream.as_str());
        if let Err(refused) =
            admission::check(&self.node, &req, self.session.tc_url(), self.peer).await
        {
            return self.reject(refused);
        }
        match Ingest::start_with_query(&self.node, req.id, &req.query, self.peer) {
            Ok(st) => {
                self.session.accept_publish()?;
                self.stream = Some(st);
                Ok(())
            }
            Err(e @ ingest::StartError::Duplicate(_)) => {
                self.reject(Refused::new(Refusal::Duplicate, e.to_string()))
            }
            Err(e @ ingest::StartError::SameKeys(_)) => {
                self.reject(Refused::new(Refusal::DuplicateKeys, e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_with_readers_wakes_at_a_lower_mark() {
        assert_eq!(rcvlowat(None), 1);
        assert_eq!(rcvlowat(Some(0)), PUBLISH_RCVLOWAT);
        assert_eq!(rcvlowat(Some(1)), LIVE_RCVLOWAT);
        assert_eq!(rcvlowat(Some(200)), LIVE_RCVLOWAT);
        // A frame reaches players and relay targets once at most 4 KiB follow it.
        const { assert!(LIVE_RCVLOWAT <= 4096 && LIVE_RCVLOWAT < PUBLISH_RCVLOWAT) };
    }

    /// A publisher woken at the mark takes everything queued in one `read`: the buffer is
    /// larger than the mark, so the bytes that arrived after it need no second read.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn one_read_takes_more_than_the_mark() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        server.set_rcvlowat(rcvlowat(Some(0)));
        let sent = vec![5u8; READ_BUF];
        client.write_all(&sent).await.unwrap();
        // Wait until the kernel holds all of it (FIONREAD), as after a wakeup that came late.
        loop {
            let mut queued: libc::c_int = 0;
            use std::os::fd::AsRawFd;
            // SAFETY: a valid socket descriptor and a c_int for the answer.
            let rc = unsafe { libc::ioctl(server.as_raw_fd(), libc::FIONREAD, &mut queued) };
            assert_eq!(rc, 0);
            if queued as usize >= sent.len() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let mut buf = vec![0u8; READ_BUF];
        let got = server.read(&mut buf).await.unwrap();
        assert_eq!(
            got,
            sent.len(),
            "one read returned {got} of {} bytes",
            sent.len()
        );
    }
}
