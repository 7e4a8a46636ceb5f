//! Memory a connection can pin with partial messages: many chunk streams each declaring a
//! large message and trickling it. Partial messages are charged by their declared length,
//! per connection (`limits.max_partial_bytes_per_connection`) and node-wide
//! (`limits.max_partial_bytes`); over either, the connection is closed with the reason.

use std::net::SocketAddr;
use std::sync::Arc;

use livesnap::rtmp::framing::{PartialPool, TYPE_VIDEO};

use crate::common::raw::{chunk_header, RawClient};
use crate::common::*;
use crate::harness::*;

/// limits.max_message_bytes (default): the largest declarable video message.
const MESSAGE: u32 = 4 << 20;

/// The chunk size every connection starts with.
const CHUNK: usize = 128;

/// Declares a `MESSAGE`-byte video message on each of `csids` and sends its first chunk.
fn declare(csids: std::ops::Range<u32>) -> Vec<u8> {
    let mut b = Vec::new();
    for csid in csids {
        b.extend(chunk_header(0, csid, 0, MESSAGE, TYPE_VIDEO, 1));
        b.extend([0x17; CHUNK]);
    }
    b
}

/// The rest of a message [`declare`]d on `csid`: fmt-3 chunks.
fn complete(csid: u32) -> Vec<u8> {
    let mut b = Vec::new();
    let mut left = MESSAGE as usize - CHUNK;
    while left > 0 {
        let n = left.min(CHUNK);
        b.extend(chunk_header(3, csid, 0, 0, 0, 0));
        b.extend(std::iter::repeat_n(0x17, n));
        left -= n;
    }
    b
}

/// A connection past the handshake.
async fn holder(addr: SocketAddr) -> RawClient {
    RawClient::connect(addr).await
}

/// Checks that the node logged why it closed `c`, and that the reason names `key`.
async fn assert_closed_naming(c: &mut RawClient, key: &str) {
    let local = c.sock.local_addr().unwrap();
    let t = c.closed_within(CLOSE_LIMIT).await;
    assert!(t.is_some_and(|t| t <= PROMPT), "{key}: closed after {t:?}");
    let said = || {
        logs::about(local)
            .into_iter()
            .find(|l| l.reason.contains(key))
    };
    assert!(
        wait_for(secs(2.0), || said().is_some()).await,
        "closed without a reason naming {key} (logged: {:?})",
        logs::about(local)
    );
    println!("closed: {}", said().unwrap().reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_messages_over_the_connection_budget_are_closed() {
    let h = Harness::start().await;
    let addr = h.addr();
    let node = h.node();
    let mut cases = Vec::new();
    for i in 0..4 {
        cases.push((
            format!("holder {i}: three 4 MiB partial messages"),
            case(async move {
                let mut c = holder(addr).await;
                // Two whole declared messages fit the 8 MiB budget ...
                c.send(&declare(4..6)).await.unwrap();
                expect_open(&mut c, "8 MiB of partial messages").await;
                // ... a third does not, however few of its bytes arrived.
                let _ = c.send(&declare(6..7)).await;
                assert_closed_naming(&mut c, "limits.max_partial_bytes_per_connection").await;
            }),
        ));
    }
    run_cases(cases).await;
    assert!(node.metrics.rejected_count("partial_budget") >= 4);
    let pool = h
        .server
        .running
        .as_ref()
        .unwrap()
        .conn_limits
        .partial
        .clone();
    assert!(
        wait_for(secs(2.0), || pool.held() < 1 << 20).await,
        "closed connections still hold {} bytes of the node's budget",
        pool.held()
    );
    h.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_budget_refuses_a_newcomer_while_holders_continue() {
    // Room for two holders of 8 MiB and the good stream's messages (well under 2 MiB).
    let h = Harness::start_with("[limits]\nmax_partial_bytes = 18874368").await;
    let addr = h.addr();
    let pool: Arc<PartialPool> = h
        .server
        .running
        .as_ref()
        .unwrap()
        .conn_limits
        .partial
        .clone();
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut c = holder(addr).await;
        c.send(&declare(4..6)).await.unwrap();
        holders.push(c);
    }
    assert!(
        wait_for(secs(2.0), || pool.held() >= 16 << 20).await,
        "holders hold {}",
        pool.held()
    );
    // The third connection's first partial message does not fit the node's budget.
    let mut newcomer = holder(addr).await;
    let _ = newcomer.send(&declare(4..5)).await;
    assert_closed_naming(&mut newcomer, "limits.max_partial_bytes").await;
    assert!(h.node().metrics.rejected_count("node_partial_budget") >= 1);
    // The holders are still served: one completes its message, which frees its share ...
    for c in &mut holders {
        expect_open(c, "a holder after the newcomer was refused").await;
    }
    holders[0].send(&complete(4)).await.unwrap();
    expect_open(&mut holders[0], "a holder that completed its message").await;
    assert!(
        wait_for(secs(2.0), || pool.held() <= 13 << 20).await,
        "a completed message still holds: {}",
        pool.held()
    );
    // ... so a newcomer's message fits again.
    let mut next = holder(addr).await;
    next.send(&declare(4..5)).await.unwrap();
    expect_open(&mut next, "a newcomer after a holder's message completed").await;
    drop((holders, next));
    assert!(
        wait_for(secs(3.0), || pool.held() < 1 << 20).await,
        "closed connections still hold {} bytes",
        pool.held()
    );
    h.finish(&[]).await;
}
