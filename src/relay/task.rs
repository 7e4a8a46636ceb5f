//! The task that pushes one publish to one target: dial (TCP, TLS for `rtmps://`),
//! publish with the RTMP client, forward every frame of its hub subscription with its
//! original timestamp and payload, answer the server's pings and acknowledgements, and
//! end the upstream publish cleanly when the publish ends. On any failure it backs off
//! (1 s doubling to 30 s, ±20 % jitter) and tries again while the publish lives, from a
//! fresh subscription (metadata, sequence headers, newest keyframe).
//!
//! Nothing here can slow the publisher: the hub never waits for this task; a target
//! that falls a whole window behind is skipped to a keyframe (counted in
//! `skipped_bytes`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::config::{Relay, Target};
use super::state::RelayState;
use super::{tls, url};
use crate::events::{At, Event};
use crate::hub::{Frame, FrameKind, Hub, Item, Subscription};
use crate::names::StreamId;
use crate::node::Node;
use crate::rtmp::client::{ClientOptions, MediaKind, Publisher};

/// TCP connect (and, for `rtmps://`, the TLS handshake) at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that lasted this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// The kernel's send buffer of a relay connection (Linux doubles it): about a second of
/// a 4 Mbit/s stream. What a target has not taken stays in the hub's window, where it is
/// counted as lag and bounded, rather than in an autotuned socket buffer of megabytes.
const SEND_BUFFER: u32 = 256 << 10;

/// Connects to `host:port`, trying each address it resolves to.
async fn dial(authority: &str) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host(authority).await? {
        let sock = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        sock.set_send_buffer_size(SEND_BUFFER)?;
        match sock.connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{authority} resolves to no address"),
        )
    }))
}

/// Client deadlines of a relay connection: a silent or stalled target is given up
/// after a few seconds (and retried), never waited on by anyone else.
fn client_options() -> ClientOptions {
    ClientOptions {
        handshake_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        close_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    }
}

/// Starts one task per target of `relay` for the publish `id` (each subscribed to
/// `hub` now, so the first connection relays the publish from its start). `query` is
/// the publish's query (without `?`); `stop` is cancelled when the publish ends.
/// Returns the targets' states, in order.
pub fn spawn_all(
    node: &Arc<Node>,
    id: &StreamId,
    query: &str,
    hub: &Hub,
    relay: &Relay,
    stop: &CancellationToken,
) -> Vec<Arc<RelayState>> {
    let mut states = Vec::new();
    for target in &relay.targets {
        let query = target.pass_query.then(|| query.to_owned());
        let shown = match url::render(&target.url, id, query.as_deref(), None, 0) {
            Ok(r) => url::redact(&r.url),
            Err(_) => url::redact(&target.url),
        };
        let state = Arc::new(RelayState::new(shown.clone()));
        states.push(state.clone());
        let task = RelayTask {
            node: node.clone(),
            id: id.clone(),
            hub: hub.clone(),
            target: target.clone(),
            query,
            state,
            stop: stop.clone(),
        };
        let first = hub.subscribe();
        let span = tracing::info_span!("relay", target = %shown);
        node.tasks.spawn(task.run(first).instrument(span));
    }
    states
}

struct RelayTask {
    node: Arc<Node>,
    id: StreamId,
    hub: Hub,
    target: Target,
    query: Option<String>,
    state: Arc<RelayState>,
    stop: CancellationToken,
}

/// How one connection ended.
enum Ended {
    /// The publish ended and the upstream publish was finished.
    Done,
    /// The connection failed (after being up, if `was_up`).
    Failed(String),
}

/// `d` ± 20 %.
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(d.as_nanos() as u64);
    let r = (h.finish() % 401) as f64 / 1000.0; // 0.0..=0.4
    d.mul_f64(0.8 + r)
}

impl RelayTask {
    async fn run(self, first: Subscription) {
        let connector = if self.target.url.starts_with("rtmps://") {
            match tls::connector(self.target.tls_ca_file.as_deref()) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "relay target cannot be used: no TLS setup");
                    self.state.set_error(e);
                    return;
                }
            }
        } else {
            None
        };
        let mut first = Some(first);
        let mut delay = BACKOFF_FIRST;
        let mut attempts = 0u64;
        loop {
            if attempts > 0 {
                self.state.reconnects.fetch_add(1, Ordering::Relaxed);
                self.node.metrics.relay_reconnects.inc();
            }
            attempts += 1;
            // The first attempt relays from the publish's start; later ones from the
            // newest keyframe.
            let sub = first.take().unwrap_or_else(|| self.hub.subscribe());
            let began = Instant::now();
            match self.attempt(sub, connector.as_ref()).await {
                Ended::Done => return,
                Ended::Failed(e) => {
                    tracing::warn!(error = %e, attempt = attempts, "relay target failed; retrying with backoff");
                    self.state.set_error(e);
                }
            }
            if began.elapsed() >= STABLE_AFTER {
                delay = BACKOFF_FIRST;
            }
            let wait = jitter(delay);
            delay = (delay * 2).min(BACKOFF_MAX);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => return,
                _ = self.node.shutdown.cancelled() => return,
            }
        }
    }

    /// One connection: dial, publish, forward until the publish ends or it fails.
    async fn attempt(
        &self,
        sub: Subscription,
        connector: Option<&tokio_rustls::TlsConnector>,
    ) -> Ended {
        let now = self.node.clock.now_unix();
        let r = match url::render(
            &self.target.url,
            &self.id,
            self.query.as_deref(),
            self.target.sign.as_ref(),
            now,
        ) {
            Ok(r) => r,
            Err(e) => return Ended::Failed(e),
        };
        let dial = async {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, dial(&r.endpoint.authority()))
                .await
                .map_err(|_| format!("connect: no answer within {CONNECT_TIMEOUT:?}"))?
                .map_err(|e| format!("connect: {e}"))?;
            let _ = tcp.set_nodelay(true);
            Ok::<_, String>(tcp)
        };
        let publish = async {
            let tcp = dial.await?;
            match connector {
                Some(c) => {
                    let io = tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        tls::connect(c, &r.endpoint.host, tcp),
                    )
                    .await
                    .map_err(|_| format!("TLS: no handshake within {CONNECT_TIMEOUT:?}"))?
                    .map_err(|e| format!("TLS: {e}"))?;
                    self.note_certificate(&io, &r.endpoint.authority());
                    let p = Publisher::publish(io, &r.endpoint, &r.stream_key, client_options())
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>(Upstream::Tls(Box::new(p)))
                }
                None => {
                    let p = Publisher::publish(tcp, &r.endpoint, &r.stream_key, client_options())
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(Upstream::Tcp(Box::new(p)))
                }
            }
        };
        let up = tokio::select! {
            up = publish => up,
            _ = self.node.shutdown.cancelled() => Err("the node is shutting down".to_owned()),
        };
        match up {
            Ok(Upstream::Tcp(p)) => self.forward(*p, sub).await,
            Ok(Upstream::Tls(p)) => self.forward(*p, sub).await,
            Err(e) => Ended::Failed(e),
        }
    }

    /// Keeps when the certificate `io`'s peer presented expires, for the API and the
    /// expiry gauge (an alert can then warn before the upstream's certificate runs out).
    fn note_certificate(&self, io: &tokio_rustls::client::TlsStream<TcpStream>, target: &str) {
        let leaf = io.get_ref().1.peer_certificates().and_then(|c| c.first());
        match leaf.and_then(|c| crate::x509::validity(c)) {
            Some(v) => {
                let not_after = v.not_after;
                self.state
                    .certificate_not_after
                    .store(not_after, Ordering::Relaxed);
                let metrics = &self.node.metrics;
                metrics.set_relay_certificate_expiry(target.to_owned(), not_after);
            }
            None => tracing::warn!(
                upstream = target,
                "relay target's certificate validity not readable; no expiry gauge"
            ),
        }
    }

    fn event_start(&self) {
        self.node.notify.send(
            &Event::RelayStart {
                stream: self.id.clone(),
                target: self.state.target.clone(),
                at: At::unix(self.node.clock.now_unix()),
            },
            None,
        );
    }

    fn event_stop(&self, reason: &str, sent_bytes: u64) {
        self.node.notify.send(
            &Event::RelayStop {
                stream: self.id.clone(),
                target: self.state.target.clone(),
                at: At::unix(self.node.clock.now_unix()),
                reason: reason.to_owned(),
                sent_bytes,
            },
            None,
        );
    }

    /// Sends the subscription's frames until the publish ends (then finishes the
    /// upstream publish) or the connection fails.
    async fn forward<S>(&self, mut p: Publisher<S>, mut sub: Subscription) -> Ended
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let m = &self.node.metrics;
        self.state.position.store(sub.position(), Ordering::Relaxed);
        self.state.connected.store(true, Ordering::Relaxed);
        m.relay_connected.inc();
        tracing::info!("relaying");
        self.event_start();
        let mut sent = 0u64;
        let result: Result<(), String> = 'relay: loop {
            enum Next {
                Item(Option<Item>),
                Serviced(Result<(), String>),
            }
            let next = tokio::select! {
                biased;
                item = sub.next() => Next::Item(item),
                r = p.service() => Next::Serviced(r.map_err(|e| e.to_string())),
            };
            let mut item = match next {
                Next::Serviced(Ok(())) => continue,
                Next::Serviced(Err(e)) => break Err(e),
                Next::Item(item) => item,
            };
            // One batch: the item awaited, then every item the subscription already
            // holds (up to BATCH_MESSAGES / BATCH_BYTES), queued in order and written
            // with one flush.
            let mut batch = Batch::default();
            let mut ended = false;
            loop {
                match item {
                    None => {
                        ended = true;
                        break;
                    }
                    Some(Item::Resync { frames, bytes }) => {
                        self.state.skipped_bytes.fetch_add(bytes, Ordering::Relaxed);
                        m.relay_skipped_bytes.inc_by(bytes);
                        tracing::warn!(
                            frames,
                            bytes,
                            "relay target fell a whole window behind: skipped to the next keyframe"
                        );
                    }
                    Some(Item::Frame(frame)) => {
                        if let Err(e) = queue_frame(&mut p, &frame) {
                            break 'relay Err(e.to_string());
                        }
                        batch.add(frame.data.len());
                    }
                }
                if batch.full() {
                    break;
                }
                match sub.poll_now() {
                    Some(next) => item = next,
                    None => break,
                }
            }
            if batch.messages > 0 {
                if let Err(e) = p.flush().await {
                    break Err(e.to_string());
                }
                let len = batch.bytes as u64;
                sent += len;
                self.state.sent_bytes.fetch_add(len, Ordering::Relaxed);
                m.relay_sent_bytes.inc_by(len);
                self.state.position.store(sub.position(), Ordering::Relaxed);
            }
            if ended {
                break Ok(());
            }
        };
        drop(sub);
        let ended = match result {
            Ok(()) => match p.finish().await {
                Ok(()) => {
                    tracing::info!(
                        sent_bytes = sent,
                        "publish ended; upstream publish finished"
                    );
                    Ended::Done
                }
                Err(e) => {
                    tracing::warn!(error = %e, "publish ended; upstream did not close cleanly");
                    Ended::Done
                }
            },
            Err(e) => Ended::Failed(e),
        };
        self.state.connected.store(false, Ordering::Relaxed);
        m.relay_connected.dec();
        match &ended {
            Ended::Done => self.event_stop("unpublished", sent),
            Ended::Failed(e) => self.event_stop(e, sent),
        }
        ended
    }
}

/// At most this many messages are queued before one write…
const BATCH_MESSAGES: usize = 64;
/// …or this many payload bytes (the message that crosses it is the last).
const BATCH_BYTES: usize = 256 << 10;

/// Messages and payload bytes queued since the last flush.
#[derive(Default)]
struct Batch {
    messages: usize,
    bytes: usize,
}

impl Batch {
    fn add(&mut self, len: usize) {
        self.messages += 1;
        self.bytes += len;
    }

    fn full(&self) -> bool {
        self.messages >= BATCH_MESSAGES || self.bytes >= BATCH_BYTES
    }
}

/// Queues one hub frame on `p` (not written until the next flush), with its original
/// timestamp; metadata goes out as `@setDataFrame`. Audio and video payloads are queued
/// shared, not copied.
fn queue_frame<S>(
    p: &mut Publisher<S>,
    frame: &Frame,
) -> Result<(), crate::rtmp::client::ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let kind = match frame.kind {
        FrameKind::Metadata => {
            let body = set_data_frame(&frame.data);
            return p.queue(MediaKind::Data, frame.timestamp, &body);
        }
        FrameKind::Audio { .. } => MediaKind::Audio,
        FrameKind::Video { .. } => MediaKind::Video,
    };
    p.queue_shared(kind, frame.timestamp, &frame.data)
}

/// A connected upstream publish, plain or over TLS.
enum Upstream {
    Tcp(Box<Publisher<TcpStream>>),
    Tls(Box<Publisher<tokio_rustls::client::TlsStream<TcpStream>>>),
}

/// The `@setDataFrame` data message publishers send, around the hub's `onMetaData`
/// message (name and values, bytes as received).
pub fn set_data_frame(on_metadata: &Bytes) -> Vec<u8> {
    const NAME: &[u8] = b"@setDataFrame";
    let mut out = Vec::with_capacity(3 + NAME.len() + on_metadata.len());
    out.extend_from_slice(&[0x02, 0x00, NAME.len() as u8]);
    out.extend_from_slice(NAME);
    out.extend_from_slice(on_metadata);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_goes_out_as_set_data_frame() {
        let body = Bytes::from_static(b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09");
        let out = set_data_frame(&body);
        assert_eq!(
            crate::rtmp::amf::data_message_name(&out)
                .unwrap()
                .as_deref(),
            Some("@setDataFrame")
        );
        assert_eq!(&out[16..], &body[..]);
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10));
            assert!((8000..=12000).contains(&(j.as_millis() as u64)), "{j:?}");
        }
    }
}
