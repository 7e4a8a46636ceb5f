//! Storage faults with the same node running throughout: a real S3-protocol server
//! (moto) behind a fault-injecting TCP proxy that passes traffic, answers 503 or 403,
//! stalls, or resets connections mid-response. Ingest never stalls, every failure is
//! counted, memory stays bounded, snapshots resume when storage returns, and nothing
//! in the bucket is ever replaced or partial.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::moto::{s3_config, MotoServer};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PASS: u8 = 0;
const ANSWER_503: u8 = 1;
const ANSWER_403: u8 = 2;
const STALL: u8 = 3;
const RESET_MID_RESPONSE: u8 = 4;

/// A TCP proxy in front of `upstream` whose behaviour for new connections is `mode`.
async fn fault_proxy(upstream: SocketAddr, mode: Arc<AtomicU8>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = l.accept().await else {
                return;
            };
            let m = mode.load(Ordering::SeqCst);
            tokio::spawn(serve(client, upstream, m));
        }
    });
    addr
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, mode: u8) {
    match mode {
        ANSWER_503 | ANSWER_403 => {
            let mut buf = vec![0u8; 64 * 1024];
            let _ = tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await;
            let status = if mode == ANSWER_503 {
                "503 Service Unavailable"
            } else {
                "403 Forbidden"
            };
            let _ = client
                .write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        }
        STALL => {
            // Read everything, answer nothing, hold the connection.
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = client.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }
        RESET_MID_RESPONSE => {
            // Forward the request; pass on half of the first response bytes, then reset.
            let Ok(mut up) = TcpStream::connect(upstream).await else {
                return;
            };
            let mut buf = vec![0u8; 64 * 1024];
            let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf)).await
            else {
                return;
            };
            if up.write_all(&buf[..n]).await.is_err() {
                return;
            }
            // The rest of the request body, if any, while waiting for the answer.
            let (mut cr, mut cw) = client.split();
            let (mut ur, mut uw) = up.split();
            let forward = async {
                let mut b = vec![0u8; 64 * 1024];
                loop {
                    match cr.read(&mut b).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if uw.write_all(&b[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            let mut resp = vec![0u8; 4096];
            let got = tokio::select! {
                r = ur.read(&mut resp) => r.unwrap_or(0),
                _ = forward => 0,
            };
            let _ = cw.write_all(&resp[..got / 2]).await;
            let _ = client.set_zero_linger();
            drop(client); // RST
        }
        _ => {
            let Ok(mut up) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_faults_never_stall_ingest_and_lose_or_replace_nothing() {
    let moto = MotoServer::start().await;
    moto.create_bucket("faults").await;
    let mode = Arc::new(AtomicU8::new(PASS));
    let proxy = fault_proxy(moto.addr, mode.clone()).await;
    let config = s3_config("faults", &format!("http://{proxy}"), 1, 0);
    let mut server = start_server(&config).await;
    // Our own operator on the bucket (through the proxy), to read it after shutdown.
    let bucket = server.operator("s3");
    let mut p = start_publish(server.rtmp, "live", "cam").await;

    // 12 loops of a 12 s fixture at 8x (18 s), timestamps continued: one snapshot
    // every 5 s of media. Storage: up, 503, 403, stalled, reset, then up again.
    let schedule = [
        PASS,
        PASS,
        ANSWER_503,
        ANSWER_503,
        ANSWER_403,
        STALL,
        STALL,
        RESET_MID_RESPONSE,
        RESET_MID_RESPONSE,
        PASS,
        PASS,
        PASS,
    ];
    let rss_before = vm_rss_bytes() / 1024;
    let started = Instant::now();
    for (i, m) in schedule.iter().enumerate() {
        mode.store(*m, Ordering::SeqCst);
        p.replay(
            &fixture("baseline_640x360_gop1s.flv"),
            8.0,
            i as u32 * 12_000,
        )
        .await
        .unwrap();
    }
    let took = started.elapsed();
    let rss_growth = (vm_rss_bytes() / 1024).saturating_sub(rss_before);
    let stats = server
        .node()
        .registry
        .list()
        .first()
        .map(|s| s.stats.clone())
        .expect("still live");
    p.finish().await;
    // 144 s of media at 8x is 18 s; the publisher must never wait for storage.
    assert!(took < Duration::from_secs(24), "publish took {took:?}");
    assert!(server.stop().await, "shutdown within the grace period");

    let (due, stored, failed) = (
        count(&stats.due),
        count(&stats.stored),
        count(&stats.failed_store),
    );
    assert!(due >= 25, "due {due}");
    assert!(failed >= 5, "failures not counted: {failed}");
    assert!(stored >= 8, "too few stored: {stored} of {due}");
    assert!(stored < due, "nothing failed? stored {stored} of {due}");
    assert!(
        rss_growth < 64 * 1024,
        "RSS grew by {rss_growth} KiB during the outage"
    );

    // What is in the bucket: whole JPEGs only, sequence numbers unique, the latest
    // ones written after storage came back.
    mode.store(PASS, Ordering::SeqCst);
    let entries = bucket.list_with("live/cam/").await.unwrap();
    let mut seqs = Vec::new();
    for e in entries {
        let key = e.path().to_string();
        let Some(n) = key
            .strip_prefix("live/cam/")
            .and_then(|k| k.strip_suffix(".jpg"))
        else {
            continue;
        };
        seqs.push(n.parse::<u64>().unwrap());
        let bytes = bucket.read(&key).await.unwrap().to_vec();
        let (w, h, _) = decode_jpeg(&bytes);
        assert_eq!((w, h), (640, 360), "{key} is not a whole JPEG");
    }
    seqs.sort();
    let n = seqs.len() as u64;
    assert!(
        n >= stored,
        "{n} sequence objects, {stored} stored snapshots"
    );
    // No gaps from 1 (a failed write is retried at the same number).
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    let last = bucket.read("live/cam.jpg").await.unwrap().to_vec();
    assert_eq!(decode_jpeg(&last).0, 640);
}
