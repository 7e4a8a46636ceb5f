//! Offences that end in a close, most of them one row: how far the peer gets (`Before`),
//! the bytes it then sends, and when the server must close it (`Close`).

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use livesnap::node::Node;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::raw::{read_until_closed, RawClient};
use crate::common::*;
use crate::harness::*;

/// How far an offender gets before it offends.
#[derive(Debug, Clone)]
pub enum Before {
    /// A bare TCP connection: its bytes are the handshake.
    Tcp,
    /// Past the handshake.
    Handshake,
    /// Past `connect` and `createStream` (message stream 1).
    Stream,
    /// Publishing this stream name on message stream 1.
    Publish(String),
}

/// When the server must close the offender.
#[derive(Debug, Clone, Copy)]
pub enum Close {
    /// On sight.
    Prompt,
    /// At the handshake deadline, counted from the TCP connect.
    HandshakeTimeout,
    /// At the idle timeout, counted from the offender's last bytes.
    IdleTimeout,
    /// On sight, or at the idle timeout if the bytes parse as an unfinished message.
    PromptOrIdle,
}

impl Close {
    pub fn window(self) -> RangeInclusive<Duration> {
        match self {
            Close::Prompt => Duration::ZERO..=PROMPT,
            Close::HandshakeTimeout => {
                HANDSHAKE_TIMEOUT - secs(0.5)..=HANDSHAKE_TIMEOUT + secs(2.0)
            }
            Close::IdleTimeout => IDLE_TIMEOUT - secs(0.5)..=IDLE_TIMEOUT + secs(3.0),
            Close::PromptOrIdle => Duration::ZERO..=IDLE_TIMEOUT + secs(3.0),
        }
    }
}

pub struct Offence {
    what: String,
    before: Before,
    close: Close,
    bytes: Vec<u8>,
}

pub fn offence(what: impl Into<String>, before: Before, close: Close, bytes: Vec<u8>) -> Offence {
    Offence {
        what: what.into(),
        before,
        close,
        bytes,
    }
}

/// Plays an offence on a fresh connection: checks that the server closes it within its
/// window with a logged reason and, if it had published, frees its name for a reconnect.
pub async fn commit(addr: SocketAddr, node: Arc<Node>, o: Offence) {
    let (since, closed, local) = if let Before::Tcp = o.before {
        let mut sock = TcpStream::connect(addr).await.unwrap();
        let local = sock.local_addr().unwrap();
        let since = Instant::now();
        let _ = sock.write_all(&o.bytes).await;
        (
            since,
            read_until_closed(&mut sock, CLOSE_LIMIT).await.is_some(),
            local,
        )
    } else {
        let mut c = match &o.before {
            Before::Publish(name) => RawClient::start_publish(addr, "live", name).await.0,
            _ => RawClient::connect(addr).await,
        };
        if let Before::Stream = o.before {
            c.connect_app("live", &format!("rtmp://{addr}/live")).await;
            assert_eq!(c.create_stream(2.0).await, 1);
        }
        if !o.bytes.is_empty() {
            let _ = c.send(&o.bytes).await;
        }
        let since = Instant::now();
        let local = c.sock.local_addr().unwrap();
        (since, c.closed_within(CLOSE_LIMIT).await.is_some(), local)
    };
    let t = since.elapsed();
    let what = &o.what;
    assert!(closed, "{what}: still open after {CLOSE_LIMIT:?}");
    let window = o.close.window();
    assert!(
        window.contains(&t),
        "{what}: closed after {t:?}, expected {window:?}"
    );
    // The node said why, naming the peer.
    let said = || {
        logs::about(local)
            .into_iter()
            .find(|l| !l.reason.is_empty())
    };
    assert!(
        wait_for(secs(2.0), || said().is_some()).await,
        "{what}: closed without a logged reason (logged: {:?})",
        logs::about(local)
    );
    println!("{what}: closed after {t:?}: {}", said().unwrap().reason);
    if let Before::Publish(name) = &o.before {
        let freed = wait_for(Duration::from_secs(2), || !is_live(&node, name)).await;
        assert!(freed, "{what}: {name} still held");
        // The encoder's reconnect under the same name is accepted (start_publish asserts
        // NetStream.Publish.Start).
        let (c, _) = RawClient::start_publish(addr, "live", name).await;
        drop(c);
        assert!(
            wait_for(Duration::from_secs(2), || !is_live(&node, name)).await,
            "{what}: {name} held after the reconnect ended"
        );
    }
}

pub fn committed(
    addr: SocketAddr,
    node: &Arc<Node>,
    offences: Vec<Offence>,
) -> Vec<(String, Case)> {
    offences
        .into_iter()
        .map(|o| (o.what.clone(), case(commit(addr, node.clone(), o))))
        .collect()
}
