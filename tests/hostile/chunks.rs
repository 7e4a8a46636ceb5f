//! The chunk layer: bad chunk sizes, chunks on unopened chunk streams, a header
//! mid-message, random bytes, too many chunk streams and a huge declared message.

use livesnap::rtmp::framing::{set_chunk_size_chunk, TYPE_AUDIO, TYPE_SET_CHUNK_SIZE, TYPE_VIDEO};

use crate::common::raw::{chunk_header, RawClient};
use crate::common::*;
use crate::harness::*;
use crate::offence::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_layer_violations_are_closed() {
    use {Before::*, Close::*};
    let h = Harness::start().await;
    let addr = h.addr();
    let mut offences = Vec::new();
    // set_chunk_size_chunk clears the top bit, as the spec asks: write these by hand.
    for size in [0u32, 1, 0x7FFF_FFFF, 0x8000_0100] {
        let mut b = chunk_header(0, 2, 0, 4, TYPE_SET_CHUNK_SIZE, 0);
        b.extend(size.to_be_bytes());
        offences.push(offence(
            format!("SetChunkSize {size:#x}"),
            Handshake,
            Prompt,
            b,
        ));
    }
    for fmt in 1..=3u8 {
        let mut b = chunk_header(fmt, 9, 0, 10, TYPE_AUDIO, 1);
        b.extend([0xAF; 10]);
        offences.push(offence(
            format!("fmt {fmt} chunk on an unopened csid"),
            Handshake,
            Prompt,
            b,
        ));
    }
    let mut b = chunk_header(0, 6, 0, 300, TYPE_VIDEO, 1);
    b.extend([0x27; 128]);
    b.extend(chunk_header(0, 6, 40, 300, TYPE_VIDEO, 1));
    offences.push(offence("another header mid-message", Handshake, Prompt, b));
    for seed in 1..=6u64 {
        let len = [512, 4096, 65536][seed as usize % 3];
        let what = format!("{len} random bytes after a publish, seed {seed}");
        let before = Publish(format!("random{seed}"));
        offences.push(offence(what, before, PromptOrIdle, random_bytes(seed, len)));
    }
    let mut cases = committed(addr, &h.node(), offences);
    cases.push((
        "thousands of chunk stream ids".into(),
        case(async move {
            let mut c = RawClient::connect(addr).await;
            let open = |csids: std::ops::Range<u32>| {
                let mut b = Vec::new();
                for csid in csids {
                    b.extend(chunk_header(0, csid, 0, 1, TYPE_AUDIO, 1));
                    b.push(0xAF);
                }
                b
            };
            // limits.max_chunk_streams = 64 are fine ...
            c.send(&open(3..67)).await.unwrap();
            expect_open(&mut c, "64 chunk streams").await;
            // ... more are not.
            let _ = c.send(&open(67..5067)).await;
            let t = c.closed_within(CLOSE_LIMIT).await;
            assert!(t.is_some_and(|t| t <= PROMPT), "5,000 chunk streams: {t:?}");
        }),
    ));
    cases.push((
        "16 MiB video message declared, then a stall".into(),
        case(async move {
            // The node runs in this process, beside other tests: the smallest growth of
            // three tries is the measure.
            let mut growth = u64::MAX;
            for _ in 0..3 {
                let mut c = RawClient::connect(addr).await;
                let mut b = set_chunk_size_chunk(0xFF_FFFF);
                b.extend(chunk_header(0, 6, 0, 0xFF_FFFF, TYPE_VIDEO, 1));
                b.extend([0x17; 64 << 10]);
                let before = vm_rss_bytes();
                let _ = c.send(&b).await;
                let t = c.closed_within(CLOSE_LIMIT).await;
                assert!(t.is_some_and(|t| t <= PROMPT), "16 MiB message: {t:?}");
                growth = growth.min(vm_rss_bytes().saturating_sub(before));
            }
            println!("16 MiB video message: RSS growth {growth} bytes");
            assert!(growth < 8 << 20, "RSS grew by {growth} bytes");
        }),
    ));
    run_cases(cases).await;
    h.finish(&[]).await;
}
