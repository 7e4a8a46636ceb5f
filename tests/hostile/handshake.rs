//! The handshake, silence and stalls: garbage instead of a handshake, a handshake dripped
//! or left unfinished, and peers that fall silent or stall mid-message.

use std::time::{Duration, Instant};

use livesnap::rtmp::framing::{set_chunk_size_chunk, TYPE_VIDEO};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::raw::{chunk_header, read_until_closed, RawClient};
use crate::common::*;
use crate::harness::*;
use crate::offence::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_slow_and_silent_peers_are_closed() {
    use {Before::*, Close::*};
    let h = Harness::start().await;
    let addr = h.addr();
    let http = b"GET / HTTP/1.1\r\nHost: livesnap\r\nAccept: */*\r\n\r\n".to_vec();
    let c1 = |seed| [vec![0; 8], random_bytes(seed, 1528)].concat();
    // A video message of exactly limits.max_message_bytes, 60 KiB of it sent.
    let mut at_cap = set_chunk_size_chunk(1 << 16);
    at_cap.extend(chunk_header(0, 6, 0, 4 << 20, TYPE_VIDEO, 1));
    at_cap.extend([0x17; 60 << 10]);
    let offences = vec![
        offence("HTTP on the RTMP port", Tcp, Prompt, http),
        offence("C0 = 6 (RTMPE)", Tcp, Prompt, [vec![6], c1(6)].concat()),
        offence("C0 = 0", Tcp, Prompt, vec![0; 1537]),
        offence("C0 alone", Tcp, HandshakeTimeout, vec![3]),
        offence(
            "C0, 700 bytes of C1",
            Tcp,
            HandshakeTimeout,
            [vec![3], c1(7)[..700].to_vec()].concat(),
        ),
        offence(
            "C0 and C1, never C2",
            Tcp,
            HandshakeTimeout,
            [vec![3], c1(8)].concat(),
        ),
        offence(
            "silence after the handshake",
            Handshake,
            IdleTimeout,
            vec![],
        ),
        offence(
            "half a chunk header",
            Handshake,
            IdleTimeout,
            chunk_header(0, 6, 0, 100, 9, 1)[..5].to_vec(),
        ),
        offence("4 MiB video message stalls", Handshake, IdleTimeout, at_cap),
        offence(
            "a publisher falls silent",
            Publish("silent".into()),
            IdleTimeout,
            vec![],
        ),
    ];
    let mut cases = committed(addr, &h.node(), offences);
    cases.push((
        "slowloris handshake, one byte a second".into(),
        case(async move {
            let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
            let since = Instant::now();
            let drip = tokio::spawn(async move {
                for b in [vec![3], c1(9)].concat() {
                    if wr.write_all(&[b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
            let closed = read_until_closed(&mut rd, CLOSE_LIMIT).await;
            let t = since.elapsed();
            drip.abort();
            assert!(
                closed.is_some(),
                "slowloris: still open after {CLOSE_LIMIT:?}"
            );
            // The deadline covers the whole handshake; a byte does not extend it.
            let window = HandshakeTimeout.window();
            assert!(
                window.contains(&t),
                "slowloris: closed after {t:?}, expected {window:?}"
            );
        }),
    ));
    run_cases(cases).await;
    h.finish(&[]).await;
}

/// A peer that never completes a message but sends a byte every 2 s is not silent, yet it
/// does nothing: the idle deadline counts media, not bytes, so it is closed at the idle
/// timeout however long the drip lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drip_fed_peer_is_closed_by_idle_timeout() {
    watch_panics();
    let server = start_server(DEFAULT_RULES).await;
    let mut c = RawClient::connect(server.rtmp).await;
    let since = Instant::now();
    let mut header = chunk_header(0, 6, 0, 1000, TYPE_VIDEO, 1).into_iter();
    let mut closed = None;
    while since.elapsed() < CLOSE_LIMIT {
        let b = header.next().unwrap_or(0x17);
        if c.send(&[b]).await.is_err() {
            closed = Some(since.elapsed());
            break;
        }
        if c.closed_within(Duration::from_secs(2)).await.is_some() {
            closed = Some(since.elapsed());
            break;
        }
    }
    let window = Close::IdleTimeout.window();
    assert!(
        closed.is_some_and(|t| window.contains(&t)),
        "drip-fed peer closed after {closed:?}, expected {window:?}"
    );
    assert_no_node_panic();
}
