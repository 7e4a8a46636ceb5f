//! AMF0 and commands: deep nesting, commands cut short or with values of the wrong type,
//! AMF3, oversized metadata, markers rml_rtmp does not decode, a createStream flood, and a
//! lone @setDataFrame (ignored).

use bytes::Bytes;
use livesnap::rtmp::framing::{
    set_chunk_size_chunk, write_single_chunk, Message, TYPE_AMF0_COMMAND, TYPE_AMF0_DATA,
    TYPE_AMF3_COMMAND, TYPE_AMF3_DATA,
};
use rml_rtmp::rml_amf0::Amf0Value;

use crate::common::raw::{amf, chunk_header, message, n, obj, s, RawClient};
use crate::common::*;
use crate::harness::*;
use crate::offence::*;
use crate::video::*;

/// `connect`, 1, then `depth` objects nested through a property `k` around a null; with
/// `closed`, their object ends too (7 bytes a level), else only the openings (4 a level).
fn deep_connect(depth: usize, closed: bool) -> Vec<u8> {
    let mut b = amf(&[s("connect"), n(1.0)]);
    for _ in 0..depth {
        b.extend([0x03, 0, 1, b'k']);
    }
    b.push(0x05);
    if closed {
        for _ in 0..depth {
            b.extend([0, 0, 0x09]);
        }
    }
    b
}

/// `values`, then `depth` strict arrays of one element nested around a null (well-formed).
fn deep_arrays(values: &[Amf0Value], depth: usize) -> Vec<u8> {
    let mut b = amf(values);
    for _ in 0..depth {
        b.extend([0x0A, 0, 0, 0, 1]);
    }
    b.push(0x05);
    b
}

/// One message as one chunk on csid 3 (4 for data), after a SetChunkSize when it needs one.
fn single_chunk(type_id: u8, stream_id: u32, payload: Vec<u8>) -> Vec<u8> {
    let mut b = Vec::new();
    if payload.len() > 128 {
        b.extend(set_chunk_size_chunk(1 << 20));
    }
    let csid = if type_id == TYPE_AMF0_DATA { 4 } else { 3 };
    let m = Message {
        csid,
        timestamp: 0,
        type_id,
        stream_id,
        payload: Bytes::from(payload),
    };
    write_single_chunk(&m, csid, &mut b);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_amf_and_commands_are_closed() {
    use {Before::*, Close::*};
    let h = Harness::start().await;
    let addr = h.addr();
    let node = h.node();
    let connect = amf(&[s("connect"), n(1.0), obj(&[("app", s("live"))])]);
    let meta = [s("@setDataFrame"), s("onMetaData")];
    let cmd = |payload| single_chunk(TYPE_AMF0_COMMAND, 0, payload);
    let on_stream = |type_id, payload| single_chunk(type_id, 1, payload);
    let publish_no_name = amf(&[s("publish"), n(5.0), Amf0Value::Null]);
    let offences = vec![
        // 70 KB: over limits.max_command_bytes, refused at its chunk header.
        offence(
            "connect nesting 10,000 objects",
            Handshake,
            Prompt,
            cmd(deep_connect(10_000, true)),
        ),
        // 40 KB: under the cap, refused by the AMF0 depth guard.
        offence(
            "connect opening 10,000 objects",
            Handshake,
            Prompt,
            cmd(deep_connect(10_000, false)),
        ),
        offence(
            "connect, then 10,000 nested arrays",
            Handshake,
            Prompt,
            cmd(deep_arrays(
                &[s("connect"), n(1.0), obj(&[("app", s("live"))])],
                10_000,
            )),
        ),
        offence(
            "@setDataFrame nesting 10,000 arrays",
            Stream,
            Prompt,
            on_stream(TYPE_AMF0_DATA, deep_arrays(&meta, 10_000)),
        ),
        offence(
            "only the name \"connect\"",
            Handshake,
            Prompt,
            cmd(amf(&[s("connect")])),
        ),
        offence(
            "connect without its object",
            Handshake,
            Prompt,
            cmd(amf(&[s("connect"), n(1.0)])),
        ),
        offence(
            "connect cut inside its object",
            Handshake,
            Prompt,
            cmd(connect[..connect.len() - 5].to_vec()),
        ),
        offence(
            "only the name \"publish\"",
            Stream,
            Prompt,
            on_stream(TYPE_AMF0_COMMAND, amf(&[s("publish")])),
        ),
        offence(
            "publish without a name",
            Stream,
            Prompt,
            on_stream(TYPE_AMF0_COMMAND, publish_no_name),
        ),
        offence(
            "an AMF3 command (type 17)",
            Stream,
            Prompt,
            on_stream(TYPE_AMF3_COMMAND, [&[0], &connect[..]].concat()),
        ),
        offence(
            "AMF3 data (type 15)",
            Stream,
            Prompt,
            on_stream(TYPE_AMF3_DATA, [vec![0], amf(&meta)].concat()),
        ),
        // 16 MiB of metadata (the largest length a header can carry): refused at its chunk
        // header (limits.max_command_bytes).
        offence("16 MiB of @setDataFrame metadata", Stream, Prompt, {
            let mut b = chunk_header(0, 4, 0, (16 << 20) - 1, TYPE_AMF0_DATA, 1);
            b.extend(amf(&meta));
            b.extend(std::iter::repeat_n(0x20, 4000));
            b
        }),
        offence(
            "connect with app as a number",
            Handshake,
            Prompt,
            cmd(amf(&[s("connect"), n(1.0), obj(&[("app", n(7.0))])])),
        ),
        offence(
            "connect with app as an object",
            Handshake,
            Prompt,
            cmd(amf(&[
                s("connect"),
                n(1.0),
                obj(&[("app", obj(&[("x", s("live"))]))]),
            ])),
        ),
        offence(
            "publish with a number as the stream name",
            Stream,
            Prompt,
            on_stream(
                TYPE_AMF0_COMMAND,
                amf(&[s("publish"), n(5.0), Amf0Value::Null, n(42.0)]),
            ),
        ),
        offence(
            "publish with an object as the stream name",
            Stream,
            Prompt,
            on_stream(
                TYPE_AMF0_COMMAND,
                amf(&[
                    s("publish"),
                    n(5.0),
                    Amf0Value::Null,
                    obj(&[("name", s("cam"))]),
                ]),
            ),
        ),
    ];
    // AMF0 markers rml_rtmp does not decode (movieclip, reference, unsupported, recordset,
    // XML document, typed object, switch to AMF3), after a valid connect prefix.
    let mut offences = offences;
    for marker in [0x04u8, 0x07, 0x0D, 0x0E, 0x0F, 0x10, 0x11] {
        let mut b = amf(&[s("connect"), n(1.0)]);
        b.extend([marker, 0, 1, b'x', 0, 0, 0]);
        offences.push(offence(
            format!("connect with AMF0 marker {marker:#04x}"),
            Handshake,
            Prompt,
            cmd(b),
        ));
    }
    let mut cases = committed(addr, &node, offences);
    cases.push((
        "createStream 100,000 times".into(),
        case(async move {
            let mut c = RawClient::connect(addr).await;
            c.connect_app("live", &format!("rtmp://{addr}/live")).await;
            let mut flood = Vec::new();
            for i in 0..100_000u32 {
                let create = amf(&[s("createStream"), n(f64::from(i) + 2.0), Amf0Value::Null]);
                flood.extend(c.writer.write(3, &message(TYPE_AMF0_COMMAND, 0, 0, create)));
            }
            for part in flood.chunks(64 << 10) {
                if c.send(part).await.is_err() {
                    break;
                }
            }
            let t = c.closed_within(CLOSE_LIMIT).await;
            assert!(t.is_some_and(|t| t <= PROMPT), "createStream flood: {t:?}");
            let answered = c
                .commands()
                .iter()
                .filter(|v| {
                    v.len() >= 2
                        && v[0] == s("_result")
                        && matches!(v[1], Amf0Value::Number(t) if t >= 2.0)
                })
                .count();
            assert!(
                answered <= 8,
                "{answered} createStream calls answered; the cap is 8"
            );
        }),
    ));
    cases.push((
        "@setDataFrame alone, before and during a publish".into(),
        case(async move {
            // Outcome: ignored (the session drops an @setDataFrame with fewer than 3
            // values); the connection stays and the publish works.
            let lone = |sid| single_chunk(TYPE_AMF0_DATA, sid, amf(&[s("@setDataFrame")]));
            let mut c = RawClient::connect(addr).await;
            c.connect_app("live", &format!("rtmp://{addr}/live")).await;
            c.send(&lone(0)).await.unwrap();
            c.send(&single_chunk(TYPE_AMF0_DATA, 0, amf(&meta)))
                .await
                .unwrap();
            let sid = c.create_stream(2.0).await;
            let status = c.publish(sid, "meta").await;
            assert_eq!(
                status,
                Some(("status".into(), "NetStream.Publish.Start".into()))
            );
            c.send(&lone(sid)).await.unwrap();
            expect_open(&mut c, "@setDataFrame alone").await;
            let size = obj(&[("width", n(640.0)), ("height", n(360.0))]);
            let full = amf(&[s("@setDataFrame"), s("onMetaData"), size]);
            c.send(&single_chunk(TYPE_AMF0_DATA, sid, full))
                .await
                .unwrap();
            let video = fixture_video();
            let key = [(0, sequence_header(&video)), (0, first_keyframe(&video))];
            let sent = send_video(&mut c, sid, &key).await;
            let stats = stats_of(&node, "meta");
            assert!(wait_for(secs(5.0), || count(&stats.bytes) == sent).await);
            assert!(
                wait_for(secs(10.0), || count(&stats.stored) == 1).await,
                "no snapshot"
            );
            expect_open(&mut c, "after the publish").await;
        }),
    ));
    run_cases(cases).await;
    h.finish(&snapshot_keys("meta", 1)).await;
}
