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
use crate::events::{self, ClientEvent};
use crate::hub::{FrameKind, Item, Subscription};
use crate::ingest::{self, Ingest};
use crate::live::{Players, Seat};
use crate::names;
use crate::node::Node;
use crate::play::PlayConfig;
use crate::rtmp::framing::{FramingError, FramingLimits};
use crate::rtmp::limits::{ConnLimits, ConnPermit};
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
        let n = tokio::select! {
            r = socket.read(&mut buf) => r?,
            () = &mut idle_timer => {
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
            item = async { match conn.player.as_mut() { Some(p) => p.sub.next().await, None => std::future::pending().await } } => {
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
        if conn.player.is_some() && !sndbuf_set {
            socket.set_sndbuf(PLAYER_SNDBUF);
            sndbuf_set = true;
            // A player sends only commands and acknowledgements: a small read buffer.
            buf = vec![0u8; PLAYER_READ_BUF];
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
async fn unless_none<F: std::future::Future>(f: Option<&mut std::pin::Pin<Box<F>>>) -> F::Output {
    match f {
        Some(f) => f.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The send buffer a player's socket gets (the kernel doubles it for its bookkeeping):
/// about 0.5 s of a 4 Mbit/s stream, above the bandwidth-delay product of most links. What
/// the kernel holds counts as sent, so a small buffer lets a stalled player show as behind
/// quickly, and keeps the memory a player costs small.
const PLAYER_SNDBUF: usize = 128 << 10;

/// A player's read buffer (it sends commands and acknowledgements only).
const PLAYER_READ_BUF: usize = 2048;

/// What a player's output buffer keeps between batches; a bigger one goes back to
/// `BATCH_BUFFERS` after each write, so an idle player holds no copy of a frame (the frames
/// themselves are the hub's, shared by every player).
const PLAYER_OUT_KEEP: usize = 4096;
/// Batch buffers kept for reuse, and the largest kept.
const POOL_BUFFERS: usize = 16;
const POOL_BUFFER_MAX: usize = 1 << 20;

struct Conn {
    node: Arc<Node>,
    session: Session,
    peer: SocketAddr,
    stream: Option<Ingest>,
    /// The live stream this connection plays, if it is a player.
    player: Option<Playing>,
}

/// A player's place in its stream: listed in the stream's players (the admin API shows
/// and kicks it there), counted in `livesnap_players_active` while it lasts, reported as
/// `play` and `play_done` events at its start and end.
struct Playing {
    sub: Subscription,
    node: Arc<Node>,
    seat: Seat,
    /// `[play]` as it was when the play started (a reload applies from the next play).
    lag_close: std::time::Duration,
    queue_bytes: usize,
    /// Since when the player has been behind (it skipped and has not caught up since).
    behind_since: Option<Instant>,
}

impl Playing {
    fn new(sub: Subscription, node: &Arc<Node>, seat: Seat, play: &PlayConfig) -> Playing {
        node.metrics.players_active.inc();
        seat.player
            .position
            .store(sub.position(), Ordering::Relaxed);
        node.notify.send(
            &events::Event::Play(ClientEvent::new(
                seat.stream().id.clone(),
                seat.player.peer,
                seat.player.start_unix,
            )),
            None,
        );
        Playing {
            sub,
            node: node.clone(),
            seat,
            lag_close: play.lag_close(),
            queue_bytes: play.player_queue_bytes,
            behind_since: None,
        }
    }
}

impl Drop for Playing {
    fn drop(&mut self) {
        let node = &self.node;
        node.metrics.players_active.dec();
        let now = node.clock.now_unix();
        let player = &self.seat.player;
        node.notify.send(
            &events::Event::PlayDone {
                client: ClientEvent::new(self.seat.stream().id.clone(), player.peer, now),
                duration_secs: now.saturating_sub(player.start_unix),
                bytes: player.bytes.load(Ordering::Relaxed),
            },
            None,
        );
    }
}

/// Most media messages, and bytes, queued for a player before they are written out.
const PLAYER_BATCH: usize = 64;
const PLAYER_BATCH_BYTES: usize = 64 << 10;

/// Players' batch buffers between batches, shared by every player of the node: a player
/// takes one for a batch and gives it back once the batch is written, so only the players
/// writing at that moment hold one. Hundreds of players each keeping the capacity of their
/// largest batch (a keyframe) was most of their memory, and freeing it after each write
/// instead left the allocator's heap full of holes (`benches/players.sh`,
/// docs/performance.md "Players").
struct BatchBuffers {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl BatchBuffers {
    const fn new() -> BatchBuffers {
        BatchBuffers {
            free: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn free(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A panic while holding it cannot leave the list inconsistent.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer, with the capacity of an earlier batch when one is free.
    fn take(&self) -> Vec<u8> {
        self.free().pop().unwrap_or_default()
    }

    /// Keeps `buf` for the next batch, unless it is small, huge, or enough are kept.
    fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() <= PLAYER_OUT_KEEP || buf.capacity() > POOL_BUFFER_MAX {
            return;
        }
        buf.clear();
        let mut free = self.free();
        if free.len() < POOL_BUFFERS {
            free.push(buf);
        }
    }
}

static BATCH_BUFFERS: BatchBuffers = BatchBuffers::new();

/// Before a player's batch: an empty output buffer is swapped for a pooled one.
fn batch_buffer(out: &mut Vec<u8>, pool: &BatchBuffers) {
    if out.is_empty() && out.capacity() <= PLAYER_OUT_KEEP {
        let pooled = pool.take();
        if pooled.capacity() > out.capacity() {
            *out = pooled;
        }
    }
}

/// Empties the output buffer once it is written; a player's goes back to the pool when it
/// is bigger than `PLAYER_OUT_KEEP`.
fn written(out: &mut Vec<u8>, playing: bool, pool: &BatchBuffers) {
    out.clear();
    if playing && out.capacity() > PLAYER_OUT_KEEP {
        pool.give(std::mem::take(out));
    }
}

/// What a connection is doing, as far as being kicked goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    None,
    Publishing,
    Playing,
}

impl Conn {
    fn role(&self) -> Role {
        if self.stream.is_some() {
            Role::Publishing
        } else if self.player.is_some() {
            Role::Playing
        } else {
            Role::None
        }
    }

    /// What disconnects this connection from the admin API: its publish's kick, or its
    /// player's.
    fn kick_token(&self) -> Option<tokio_util::sync::CancellationToken> {
        match (&self.stream, &self.player) {
            (Some(st), _) => Some(st.live().kick.clone()),
            (None, Some(p)) => Some(p.seat.player.kick.clone()),
            (None, None) => None,
        }
    }

    /// Queues `item` and whatever else is ready for the player; true when the stream
    /// ended (the player was told, the connection closes).
    fn send_to_player(&mut self, item: Option<Item>) -> Result<bool, ConnError> {
        batch_buffer(self.session.output(), &BATCH_BUFFERS);
        let mut next = Some(item);
        let mut sent = 0;
        while let Some(item) = next.take() {
            match item {
                Some(Item::Frame(f)) => {
                    let kind = match f.kind {
                        FrameKind::Metadata => MediaKind::Data,
                        FrameKind::Audio { .. } => MediaKind::Audio,
                        FrameKind::Video { .. } => MediaKind::Video,
                    };
                    self.session.send_media(kind, f.timestamp, &f.data)?;
                    self.node.metrics.bytes_played.inc_by(f.data.len() as u64);
                    if let Some(p) = self.player.as_ref() {
                        let bytes = &p.seat.player.bytes;
                        bytes.fetch_add(f.data.len() as u64, Ordering::Relaxed);
                    }
                }
                Some(Item::Resync { frames, bytes }) => {
                    self.node.metrics.player_skipped_bytes.inc_by(bytes);
                    tracing::info!(
                        frames,
                        bytes,
                        "player fell behind: skipped to the newest keyframe"
                    );
                    if let Some(p) = self.player.as_mut() {
                        let skipped = &p.seat.player.skipped_bytes;
                        skipped.fetch_add(bytes, Ordering::Relaxed);
                        let since = *p.behind_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= p.lag_close {
                            return Err(ConnError::PlayerLagging(p.lag_close));
                        }
                    }
                }
                None => {
                    self.session.finish_play()?;
                    self.player = None;
                    tracing::info!("played stream ended");
                    return Ok(true);
                }
            }
            sent += 1;
            if let Some(p) = self.player.as_mut() {
                // Caught up (less than a quarter of the queue unread): no longer behind.
                if p.behind_since.is_some() && p.sub.lag_bytes() < (p.queue_bytes / 4) as u64 {
                    p.behind_since = None;
                }
                if sent < PLAYER_BATCH && self.session.output().len() < PLAYER_BATCH_BYTES {
                    next = p.sub.poll_now();
                }
            }
        }
        if let Some(p) = self.player.as_ref() {
            let position = &p.seat.player.position;
            position.store(p.sub.position(), Ordering::Relaxed);
        }
        Ok(false)
    }

    async fn flush<T: Transport>(&mut self, socket: &mut T) -> Result<(), ConnError> {
        // A player that takes nothing is closed after lag_close_secs, anyone else after
        // the idle timeout.
        let playing = self.player.is_some();
        let (limit, stalled): (_, fn(_) -> _) = match &self.player {
            Some(p) => (p.lag_close, ConnError::PlayerLagging),
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

    async fn on_play(&mut self, app: &str, stream_key: &str) -> Result<(), ConnError> {
        const FAILED: &str = "NetStream.Play.Failed";
        // Read once: the play keeps these `[play]` settings until it ends.
        let access = self.node.access();
        let play = &access.play;
        if !play.enabled {
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
        let wait = std::time::Duration::from_secs(play.wait_for_publish_secs);
        let live = tokio::select! {
            live = self.node.registry.wait_live(&req.id, wait) => live,
            _ = self.node.shutdown.cancelled() => None,
        };
        let Some(live) = live else {
            let why = if wait.is_zero() {
                format!("stream {} is not live on this node", req.id)
            } else {
                format!(
                    "stream {} did not go live on this node within {} s (play.wait_for_publish_secs)",
                    req.id,
                    wait.as_secs()
                )
            };
            return self.refuse_play("NetStream.Play.StreamNotFound", why);
        };
        let max_node = play.max_players;
        if self.node.metrics.players_active.get() >= max_node as i64 {
            return self.refuse_play(
                FAILED,
                format!("this node serves {max_node} players (play.max_players)"),
            );
        }
        let max = play.max_players_per_stream;
        let now = self.node.clock.now_unix();
        let Some(seat) = Players::join(&live, max, self.peer, now) else {
            return self.refuse_play(
                FAILED,
                format!(
                    "stream {} has {max} players (play.max_players_per_stream)",
                    req.id
                ),
            );
        };
        tracing::Span::current().record("player", seat.player.id);
        self.player = Some(Playing::new(live.hub.subscribe(), &self.node, seat, play));
        self.session.accept_play()?;
        tracing::info!("play started");
        Ok(())
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

    #[test]
    fn a_player_keeps_no_batch_sized_output_buffer_between_writes() {
        let pool = BatchBuffers::new();
        // A 1080p keyframe batch: 150 KiB.
        let mut out = Vec::with_capacity(150 << 10);
        out.extend_from_slice(&[7u8; 150 << 10]);
        let at = out.as_ptr();
        written(&mut out, true, &pool);
        assert!(out.is_empty());
        assert!(
            out.capacity() <= PLAYER_OUT_KEEP,
            "a player kept {} bytes of output buffer",
            out.capacity()
        );
        // The next batch, of this player or another, reuses that memory: no allocation.
        let mut next = Vec::new();
        batch_buffer(&mut next, &pool);
        assert_eq!(next.as_ptr(), at);
        assert!(next.capacity() >= 150 << 10);
        // Nothing pooled: the buffer stays as it is.
        let mut other = Vec::new();
        batch_buffer(&mut other, &pool);
        assert_eq!(other.capacity(), 0);
        // Small batches (audio) keep their buffer: no allocation per message.
        let mut small = Vec::with_capacity(1024);
        small.extend_from_slice(&[1u8; 700]);
        written(&mut small, true, &pool);
        assert!(small.is_empty());
        assert_eq!(small.capacity(), 1024);
        // A publisher's (acknowledgements, answers) is left alone.
        let mut publisher = Vec::with_capacity(150 << 10);
        publisher.push(1);
        written(&mut publisher, false, &pool);
        assert!(publisher.is_empty());
        assert_eq!(publisher.capacity(), 150 << 10);
    }

    #[test]
    fn the_batch_pool_is_bounded() {
        let pool = BatchBuffers::new();
        for _ in 0..POOL_BUFFERS + 5 {
            pool.give(Vec::with_capacity(64 << 10));
        }
        pool.give(Vec::with_capacity(POOL_BUFFER_MAX + 1));
        pool.give(Vec::with_capacity(PLAYER_OUT_KEEP));
        let kept = pool.free();
        assert_eq!(kept.len(), POOL_BUFFERS);
        assert!(kept
            .iter()
            .all(|b| b.capacity() == 64 << 10 && b.is_empty()));
    }
}
