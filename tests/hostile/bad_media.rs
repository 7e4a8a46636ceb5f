//! Bad media: broken AVC sequence headers and NAL lengths, an absurd SPS, HEVC; each is
//! skipped, never fatal to its stream.

use bytes::Bytes;

use crate::common::raw::RawClient;
use crate::common::*;
use crate::harness::*;
use crate::video::*;

/// A bit writer for a hand-made SPS.
#[derive(Default)]
struct Bits {
    bits: Vec<bool>,
}

impl Bits {
    fn u(&mut self, n: u32, v: u64) -> &mut Self {
        self.bits.extend((0..n).rev().map(|i| (v >> i) & 1 == 1));
        self
    }
    fn ue(&mut self, v: u64) -> &mut Self {
        let len = 64 - (v + 1).leading_zeros();
        self.u(len - 1, 0).u(len, v + 1)
    }
    /// RBSP stop bit, byte alignment and emulation prevention, after a NAL header byte.
    fn nal(&mut self, header: u8) -> Vec<u8> {
        self.bits.push(true);
        while !self.bits.len().is_multiple_of(8) {
            self.bits.push(false);
        }
        let mut out = vec![header];
        let mut zeros = 0;
        for byte in self.bits.chunks(8) {
            let b = byte
                .iter()
                .fold(0u8, |acc, &bit| (acc << 1) | u8::from(bit));
            if zeros >= 2 && b <= 3 {
                out.push(3);
                zeros = 0;
            }
            out.push(b);
            zeros = if b == 0 { zeros + 1 } else { 0 };
        }
        out
    }
}

/// A Constrained Baseline SPS coding a 16384x16384 picture (1024x1024 macroblocks).
fn huge_sps() -> Vec<u8> {
    let sps = Bits::default()
        .u(8, 66)
        .u(8, 0xC0)
        .u(8, 51)
        .ue(0) // seq_parameter_set_id
        .ue(0) // log2_max_frame_num_minus4
        .ue(0) // pic_order_cnt_type
        .ue(0) // log2_max_pic_order_cnt_lsb_minus4
        .ue(1) // max_num_ref_frames
        .u(1, 0) // gaps_in_frame_num_value_allowed_flag
        .ue(1023) // pic_width_in_mbs_minus1
        .ue(1023) // pic_height_in_map_units_minus1
        .u(1, 1) // frame_mbs_only_flag
        .u(1, 1) // direct_8x8_inference_flag
        .u(1, 0) // frame_cropping_flag
        .u(1, 0) // vui_parameters_present_flag
        .nal(0x67);
    assert!(matches!(
        livesnap::media::sps::parse_sps(&sps),
        Err(livesnap::media::flv::MediaError::Dimensions {
            width: 16384,
            height: 16384
        })
    ));
    sps
}

fn avc_tag(header: [u8; 2], body: &[u8]) -> Bytes {
    Bytes::from([&header[..], &[0, 0, 0], body].concat())
}

fn avcc(nals: &[&[u8]]) -> Vec<u8> {
    nals.iter()
        .flat_map(|n| [&(n.len() as u32).to_be_bytes()[..], n].concat())
        .collect()
}

/// An AVC sequence header built from the fixture's record with `edit` applied.
fn edited_header(sh: &Bytes, edit: impl Fn(&mut Vec<u8>)) -> Bytes {
    let mut record = sh[5..].to_vec();
    edit(&mut record);
    assert!(livesnap::media::avc::parse_decoder_config(&record).is_err());
    avc_tag([0x17, 0], &record)
}

struct BadMedia {
    stream: &'static str,
    tags: Vec<(u32, Bytes)>,
    /// Whether a keyframe of it is due and reaches the pool (which must fail it).
    reaches_pool: bool,
}

fn bad_media() -> Vec<BadMedia> {
    let video = fixture_video();
    let sh = sequence_header(&video);
    let key = first_keyframe(&video);
    let record = livesnap::media::avc::parse_decoder_config(&sh[5..]).unwrap();
    let key_body = &key[5..];
    let huge = huge_sps();
    let huge_record = [
        &[1, 66, 0xC0, 51, 0xFF, 0xE1][..],
        &(huge.len() as u16).to_be_bytes(),
        &huge,
        &[1],
        &(record.pps[0].len() as u16).to_be_bytes(),
        &record.pps[0],
    ]
    .concat();
    let bad = |stream, tags, reaches_pool| BadMedia {
        stream,
        tags,
        reaches_pool,
    };
    vec![
        bad(
            "before-header",
            vec![(0, key.clone()), (40, video[3].1.clone())],
            false,
        ),
        bad(
            "length-size-3",
            vec![(0, edited_header(&sh, |r| r[4] = 0xFE)), (0, key.clone())],
            false,
        ),
        bad(
            "zero-sps",
            vec![(0, edited_header(&sh, |r| r[5] = 0xE0)), (0, key.clone())],
            false,
        ),
        bad(
            "sps-overrun",
            vec![
                (
                    0,
                    edited_header(&sh, |r| r[6..8].copy_from_slice(&[0xFF, 0xF0])),
                ),
                (0, key.clone()),
            ],
            false,
        ),
        bad(
            "short-tags",
            vec![
                (0, Bytes::new()),
                (0, Bytes::from_static(&[0x17])),
                (0, Bytes::from_static(&[0x17, 1, 0])),
            ],
            false,
        ),
        bad(
            "nal-zero",
            vec![
                (0, sh.clone()),
                (0, avc_tag([0x17, 1], &[&[0, 0, 0, 0], key_body].concat())),
            ],
            true,
        ),
        bad(
            "nal-overrun",
            vec![
                (0, sh.clone()),
                (0, avc_tag([0x17, 1], &[0, 0, 0x10, 0, 0x65, 0x88, 0x84])),
            ],
            true,
        ),
        bad(
            "nal-ffffffff",
            vec![
                (0, sh.clone()),
                (0, avc_tag([0x17, 1], &[&[0xFF; 4], key_body].concat())),
            ],
            true,
        ),
        bad(
            "huge-sps",
            vec![(0, avc_tag([0x17, 0], &huge_record)), (0, key.clone())],
            true,
        ),
        bad(
            "huge-inband-sps",
            vec![
                (0, sh.clone()),
                (
                    0,
                    avc_tag([0x17, 1], &[avcc(&[&huge]), key_body.to_vec()].concat()),
                ),
            ],
            true,
        ),
    ]
}

/// Enhanced RTMP HEVC (sequence start, coded frames, coded frames X) and legacy codec 12.
fn hevc_tags() -> Vec<(u32, Bytes)> {
    let fourcc = b"hvc1";
    let hvcc = [
        1, 1, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 0x5D, 0xF0, 0, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0,
        0x0F, 0,
    ];
    let nal = avcc(&[&[0x26, 0x01, 0xAF, 0x1C, 0x52, 0x40]]);
    let tag = |first: u8, ct: bool, body: &[u8]| {
        let mut t = vec![first];
        t.extend_from_slice(fourcc);
        if ct {
            t.extend_from_slice(&[0, 0, 0]);
        }
        t.extend_from_slice(body);
        Bytes::from(t)
    };
    vec![
        (0, tag(0x80 | 0x10, false, &hvcc)),
        (0, tag(0x80 | 0x10 | 1, true, &nal)),
        (40, tag(0x80 | 0x20 | 3, false, &nal)),
        (80, Bytes::from([&[0x1C, 1, 0, 0, 0][..], &nal].concat())),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_media_is_skipped_not_fatal() {
    let h = Harness::start().await;
    let addr = h.addr();
    let node = h.node();
    let video = fixture_video();
    let good = [
        (10_000, sequence_header(&video)),
        (10_000, first_keyframe(&video)),
    ];
    let mut cases: Vec<(String, Case)> = Vec::new();
    let mut others = Vec::new();
    for bad in bad_media() {
        others.extend(snapshot_keys(bad.stream, 1));
        let node = node.clone();
        let good = good.clone();
        cases.push((
            bad.stream.to_string(),
            case(async move {
                let name = bad.stream;
                let (mut c, sid) = RawClient::start_publish(addr, "live", name).await;
                let stats = stats_of(&node, name);
                let sent = send_video(&mut c, sid, &bad.tags).await;
                assert!(
                    wait_for(secs(5.0), || count(&stats.bytes) == sent).await,
                    "{name}: not all seen"
                );
                if bad.reaches_pool {
                    assert!(
                        wait_for(secs(5.0), || count(&stats.finished) == 1).await,
                        "{name}: not finished"
                    );
                    assert_eq!(
                        (count(&stats.due), count(&stats.failed_decode)),
                        (1, 1),
                        "{name}"
                    );
                } else {
                    assert_eq!(count(&stats.due), 0, "{name}");
                }
                expect_open(&mut c, name).await;
                // The stream still works: a valid keyframe later gives a valid snapshot.
                send_video(&mut c, sid, &good).await;
                assert!(
                    wait_for(secs(10.0), || count(&stats.stored) == 1).await,
                    "{name}: no snapshot"
                );
                expect_open(&mut c, name).await;
                drop(c);
                assert!(
                    wait_for(secs(2.0), || !is_live(&node, name)).await,
                    "{name} still held"
                );
            }),
        ));
    }
    let n2 = node.clone();
    cases.push((
        "Enhanced RTMP HEVC".into(),
        case(async move {
            let (mut c, sid) = RawClient::start_publish(addr, "live", "hevc").await;
            let stats = stats_of(&n2, "hevc");
            let sent = send_video(&mut c, sid, &hevc_tags()).await;
            assert!(
                wait_for(secs(5.0), || count(&stats.bytes) == sent).await,
                "hevc: not all seen"
            );
            expect_open(&mut c, "hevc").await;
            // Counted as received, never handed to the pool.
            assert_eq!((count(&stats.due), count(&stats.stored)), (0, 0));
            drop(c);
            assert!(
                wait_for(secs(2.0), || !is_live(&n2, "hevc")).await,
                "hevc still held"
            );
        }),
    ));
    run_cases(cases).await;
    for bad in bad_media() {
        let path = h.server.root().join(format!("live/{}/1.jpg", bad.stream));
        let (w, hh, _) = decode_jpeg(&std::fs::read(&path).unwrap());
        assert_eq!((w, hh), (640, 360), "{}", bad.stream);
    }
    h.finish(&others).await;
}
