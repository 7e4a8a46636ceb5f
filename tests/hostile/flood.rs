//! Connection floods: 10,000 idle connections held open must not lock out encoders.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::harness::*;

/// Raises this process's open-file soft limit to at least `need` (up to the hard limit).
fn raise_nofile(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialised rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert!(
        lim.rlim_max >= need,
        "this test holds {need} sockets but the open-file hard limit is {} (raise `ulimit -Hn`)",
        lim.rlim_max
    );
    if lim.rlim_cur < need {
        lim.rlim_cur = need;
        // SAFETY: as above.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        assert_eq!(rc, 0, "setrlimit(RLIMIT_NOFILE, {need})");
    }
}

/// 10,000 connections that connect and then say nothing, half from one address and half
/// from 39 others, held open:
/// the per-IP cap refuses what is over 64 per address at accept, the handshake table holds
/// at most `max_handshakes` and evicts its oldest for each newcomer, so while the flood is
/// still held a real encoder gets in and snapshots on schedule, the admin API answers,
/// every flood connection is accounted for (accepted or refused, and evicted or still
/// waiting) and memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_do_not_lock_out_encoders() {
    const IDLE: usize = 10_000;
    const PEERS: usize = 40;
    const BATCH: usize = 100;
    raise_nofile(IDLE as u64 + 4096);
    watch_panics();
    // A long handshake timeout: the flood keeps its slots for the whole test.
    let limits =
        "[limits]\nmax_connections = 1024\nmax_connections_per_ip = 64\nmax_handshakes = 256\n";
    let mut server = start_server_with(
        tempfile::tempdir().unwrap(),
        60,
        &format!("{DEFAULT_RULES}{limits}"),
    )
    .await;
    let addr = server.rtmp;
    let node = server.node().clone();
    let m = node.metrics.clone();
    let rss0 = vm_rss_bytes();

    let started = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    // Connections the accept loop has taken: admitted, or refused for their address.
    let seen = || m.connections_accepted.get() + m.rejected_count("per_ip_limit");
    for batch in 0..IDLE / BATCH {
        let conns = futures::future::join_all((0..BATCH).map(|i| {
            let k = batch * BATCH + i;
            // Half from one address (over its cap), half spread over the others.
            let host = if k.is_multiple_of(2) {
                1
            } else {
                2 + k % (PEERS - 1)
            };
            let ip = std::net::Ipv4Addr::new(127, 0, 1, host as u8);
            connect_from(ip.into(), addr)
        }))
        .await;
        for c in conns {
            idle.push(c.expect("connect"));
        }
        // Paced by the accept loop, so that the kernel's accept queue (net.core.somaxconn
        // may be as low as 128 on some hosts) never overflows: an overflowed connection
        // would be lost by the kernel, not by livesnap.
        let so_far = idle.len() as u64;
        assert!(
            wait_for(secs(10.0), || seen() >= so_far).await,
            "accept loop saw {} of {so_far}",
            seen()
        );
    }
    let opened = started.elapsed();
    assert_eq!(seen(), IDLE as u64);
    let slots = &server
        .running
        .as_ref()
        .expect("running")
        .conn_limits
        .handshakes;
    // Every admitted connection still waiting holds a slot; all others were evicted.
    let settled = || m.connections_accepted.get() - m.rejected_count("handshake_limit");
    assert!(
        wait_for(secs(10.0), || settled() == slots.in_progress() as u64).await,
        "accepted {} − evicted {} ≠ in progress {}",
        m.connections_accepted.get(),
        m.rejected_count("handshake_limit"),
        slots.in_progress()
    );
    assert_eq!(slots.in_progress(), 256, "the table is full of idle peers");
    assert!(m.rejected_count("per_ip_limit") > 0 && m.rejected_count("handshake_limit") > 0);
    println!(
        "{IDLE} idle connections opened and taken by the accept loop in {opened:?}: \
         {} refused per IP, {} evicted, {} waiting",
        m.rejected_count("per_ip_limit"),
        m.rejected_count("handshake_limit"),
        slots.in_progress()
    );

    // The flood is still held: a real encoder publishes and gets every snapshot, and the
    // admin API answers.
    let (status, _) = http_request(server.http, "GET", "/healthz").await.unwrap();
    assert_eq!(status, 200);
    tokio::time::timeout(
        Duration::from_secs(30),
        publish_fixture_to(addr, "live", GOOD, GOOD_FIXTURE, 4.0),
    )
    .await
    .expect("a publish during the flood finished within 30 s");

    // The server closed every flood connection except those still in the table.
    let mut still_open = 0;
    for sock in idle {
        let sock = sock.into_std().unwrap();
        sock.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        if matches!(std::io::Read::read(&mut &sock, &mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        {
            still_open += 1;
        }
    }
    assert!(
        still_open <= 256,
        "{still_open} flood connections still open (max_handshakes 256)"
    );
    let growth = vm_rss_bytes().saturating_sub(rss0);
    println!("RSS growth with the flood held: {} KiB", growth / 1024);
    assert!(growth < 64 << 20, "RSS grew by {growth} bytes");

    assert!(
        wait_for(secs(5.0), || slots.in_progress() == 0
            && node.registry.is_empty())
        .await,
        "slots and names freed after the flood went away"
    );
    assert_no_node_panic();
    assert!(server.stop().await, "shutdown finished in time");
    assert_eq!(list_files(&server.root()), snapshot_keys(GOOD, 3));
}
