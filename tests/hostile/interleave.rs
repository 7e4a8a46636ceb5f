//! Legal interleaving: several chunk streams' chunks interleaved, extended timestamps
//! and a chunk size changed mid-publish must work.

use bytes::Bytes;
use livesnap::rtmp::framing::{
    set_chunk_size_chunk, TYPE_AMF0_COMMAND, TYPE_AMF0_DATA, TYPE_AUDIO, TYPE_VIDEO,
};

use crate::common::raw::{amf, interleave, message, n, obj, s, RawClient};
use crate::common::*;
use crate::harness::*;
use crate::video::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legal_interleaved_chunk_streams_publish() {
    let h = Harness::start().await;
    let addr = h.addr();
    let node = h.node();

    let mut c = RawClient::connect(addr).await;
    // connect in 128-byte chunks on csid 3, interleaved with a data message on csid 4
    // whose timestamp needs the extended field (repeated on its continuation chunks).
    let pad = "p".repeat(300);
    let connect = amf(&[
        s("connect"),
        n(1.0),
        obj(&[
            ("app", s("live")),
            ("type", s("nonprivate")),
            ("flashVer", s("FMLE/3.0 (compatible; livesnap-hostile)")),
            ("swfUrl", s(&pad)),
            ("tcUrl", s(&format!("rtmp://{addr}/live"))),
        ]),
    ]);
    let side = amf(&[s("onTextData"), obj(&[("text", s(&"t".repeat(500)))])]);
    let a = c
        .writer
        .chunks(3, &message(TYPE_AMF0_COMMAND, 0, 0, connect));
    let b = c
        .writer
        .chunks(4, &message(TYPE_AMF0_DATA, 0, 0x0123_4567, side));
    assert!(
        a.len() >= 3 && b.len() >= 4,
        "both messages span several chunks"
    );
    c.send(&interleave(vec![a, b])).await.unwrap();
    c.wait_connected().await;
    let sid = c.create_stream(2.0).await;
    assert_eq!(
        c.publish(sid, "ilv").await,
        Some(("status".into(), "NetStream.Publish.Start".into()))
    );
    assert!(is_live(&node, "ilv"));

    // The first second of video (two keyframes) with AAC-like audio every 23 ms on csid 4,
    // chunks interleaved; timestamps past 0xFFFFFF; half at 128-byte chunks, half at 1000.
    const BASE: u32 = 0x0100_0000;
    let video: Vec<(u32, Bytes)> = fixture_video()
        .into_iter()
        .filter(|(ts, _)| *ts <= 1000)
        .collect();
    let mut audio = vec![(0u32, Bytes::from_static(&[0xAF, 0x00, 0x12, 0x10]))];
    audio.extend((1..=43).map(|k| {
        (
            23 * k,
            Bytes::from([vec![0xAF, 0x01], random_bytes(u64::from(k), 180)].concat()),
        )
    }));
    let mut sent = 0u64;
    for (range, chunk_size) in [(0..500, 128), (500..1001, 1000)] {
        if c.writer.chunk_size != chunk_size {
            c.send(&set_chunk_size_chunk(chunk_size as u32))
                .await
                .unwrap();
            c.writer.chunk_size = chunk_size;
        }
        let mut vchunks = Vec::new();
        for (ts, d) in video.iter().filter(|(ts, _)| range.contains(ts)) {
            vchunks.extend(
                c.writer
                    .chunks(6, &message(TYPE_VIDEO, sid, BASE + ts, d.clone())),
            );
            sent += d.len() as u64;
        }
        let mut achunks = Vec::new();
        for (ts, d) in audio.iter().filter(|(ts, _)| range.contains(ts)) {
            achunks.extend(
                c.writer
                    .chunks(4, &message(TYPE_AUDIO, sid, BASE + ts, d.clone())),
            );
            sent += d.len() as u64;
        }
        c.send(&interleave(vec![vchunks, achunks])).await.unwrap();
    }
    let stats = stats_of(&node, "ilv");
    assert!(
        wait_for(secs(5.0), || count(&stats.bytes) == sent).await,
        "media bytes seen {} of {sent}",
        count(&stats.bytes)
    );
    assert!(
        wait_for(secs(10.0), || count(&stats.stored) == 1).await,
        "no snapshot stored"
    );
    assert_eq!((count(&stats.keyframes), count(&stats.due)), (2, 1));
    expect_open(&mut c, "interleaved publisher").await;
    drop(c);
    assert!(wait_for(secs(2.0), || !is_live(&node, "ilv")).await);
    h.finish(&snapshot_keys("ilv", 1)).await;
}
