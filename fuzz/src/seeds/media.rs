//! Seeds from the fixtures: sequence headers, coded frames, SPS NAL units, keyframes.

use std::path::Path;

use bytes::Bytes;
use livesnap::media::avc::{self, AvcConfig};
use livesnap::media::flv::{self, FlvReader, PacketKind, VideoCodec};

use super::Seed;

/// The video tags of one fixture, as (timestamp, tag body).
pub(super) struct Video(pub(super) Vec<(u32, Bytes)>);

impl Video {
    fn load(root: &Path, name: &str) -> Video {
        let path = root.join("fixtures").join(name);
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let tags = FlvReader::new(Bytes::from(data))
            .expect("FLV header")
            .map(|t| t.expect("FLV tag"))
            .filter(|t| t.tag_type == 9)
            .map(|t| (t.timestamp_ms, t.data))
            .collect();
        Video(tags)
    }

    /// Tag bodies of AVC tags of `kind` (keyframes only when `key`).
    fn avc(&self, kind: PacketKind, key: bool) -> impl Iterator<Item = &Bytes> + '_ {
        self.0.iter().map(|(_, d)| d).filter(move |d| {
            flv::parse_video_tag(d)
                .is_ok_and(|t| t.codec == VideoCodec::Avc && t.kind == kind && (t.keyframe || !key))
        })
    }

    fn sequence_header(&self) -> Bytes {
        self.avc(PacketKind::SequenceHeader, false)
            .next()
            .expect("sequence header")
            .clone()
    }

    fn first_keyframe(&self) -> Bytes {
        self.avc(PacketKind::Nalus, true)
            .next()
            .expect("keyframe")
            .clone()
    }

    /// The smallest coded frame that is not a keyframe.
    fn small_frame(&self) -> Bytes {
        self.avc(PacketKind::Nalus, false)
            .filter(|d| d[0] >> 4 != 1)
            .min_by_key(|d| d.len())
            .expect("inter frame")
            .clone()
    }
}

pub(super) struct Fixtures {
    baseline: Video,
    pub(super) bt709: Video,
    high720: Video,
    high1080: Video,
    resolution_change: Video,
}

impl Fixtures {
    pub(super) fn load(root: &Path) -> Fixtures {
        Fixtures {
            baseline: Video::load(root, "baseline_640x360_gop1s.flv"),
            bt709: Video::load(root, "bt709_bars_1280x720.flv"),
            high720: Video::load(root, "high_1280x720_bframes_aac.flv"),
            high1080: Video::load(root, "high_1920x1080_gop2s.flv"),
            resolution_change: Video::load(root, "resolution_change.flv"),
        }
    }

    fn named(&self) -> [(&'static str, &Video); 5] {
        [
            ("baseline_640x360", &self.baseline),
            ("bt709_1280x720", &self.bt709),
            ("high_1280x720", &self.high720),
            ("high_1920x1080", &self.high1080),
            ("resolution_change", &self.resolution_change),
        ]
    }
}

/// Tag body → the AVC payload after the 5-byte legacy header.
fn avc_payload(tag: &Bytes) -> Bytes {
    flv::parse_video_tag(tag).expect("video tag").body
}

fn config_of(video: &Video) -> AvcConfig {
    avc::parse_decoder_config(&avc_payload(&video.sequence_header())).expect("record")
}

/// `[u16 len][first][second]`.
fn two_parts(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut out = (first.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(first);
    out.extend_from_slice(second);
    out
}

/// Enhanced RTMP header: frame type 1, `packet_type`, FourCC `avc1`.
fn enhanced(packet_type: u8, rest: &[u8]) -> Vec<u8> {
    [&[0x90 | packet_type], &b"avc1"[..], rest].concat()
}

pub(super) fn flv_tag(fixtures: &Fixtures, seeds: &mut Vec<Seed>) {
    let with = |control: u8, first: &[u8], second: &[u8]| {
        [&[control], &two_parts(first, second)[..]].concat()
    };
    for (name, video) in fixtures.named() {
        let header = video.sequence_header();
        seeds.push((
            "flv_tag",
            format!("{name}_inter"),
            with(3, &header, &video.small_frame()),
        ));
    }
    let bt709 = &fixtures.bt709;
    let header = bt709.sequence_header();
    let key = bt709.first_keyframe();
    seeds.push(("flv_tag", "bt709_keyframe".into(), with(3, &header, &key)));
    // Parameter sets in-band, in front of the keyframe's NAL units.
    let config = config_of(bt709);
    let mut inband = key[..5].to_vec();
    for set in config.sps.iter().chain(&config.pps) {
        inband.extend_from_slice(&(set.len() as u32).to_be_bytes());
        inband.extend_from_slice(set);
    }
    inband.extend_from_slice(&key[5..]);
    seeds.push(("flv_tag", "bt709_inband".into(), with(3, &header, &inband)));
    // Enhanced RTMP: sequence start, CodedFramesX, and CodedFrames behind a ModEx.
    let frame = bt709.small_frame();
    let record = avc_payload(&header);
    let au = avc_payload(&frame);
    let modex = [
        &[0x97, 0x00, 0xAB, 0x01],
        &b"avc1"[..],
        &[0, 0, 0x21],
        &au[..],
    ]
    .concat();
    seeds.push((
        "flv_tag",
        "enhanced_x".into(),
        with(3, &enhanced(0, &record), &enhanced(3, &au)),
    ));
    seeds.push((
        "flv_tag",
        "enhanced_modex".into(),
        with(3, &enhanced(0, &record), &modex),
    ));
    // Other codecs and packet kinds: HEVC legacy id 12, VP6, end of sequence.
    seeds.push((
        "flv_tag",
        "other_codecs".into(),
        with(1, &[0x1C, 0, 0, 0, 0, 1], &[0x24, 0, 0]),
    ));
    seeds.push((
        "flv_tag",
        "end_of_sequence".into(),
        with(2, &header, &[0x17, 2, 0, 0, 0]),
    ));
}

pub(super) fn sps(fixtures: &Fixtures, seeds: &mut Vec<Seed>) {
    let mut seen = Vec::new();
    for (name, video) in fixtures.named() {
        for (i, tag) in video.avc(PacketKind::SequenceHeader, false).enumerate() {
            let config = avc::parse_decoder_config(&avc_payload(tag)).expect("record");
            for sps in config.sps {
                if !seen.contains(&sps) {
                    seeds.push(("sps", format!("{name}_{i}"), sps.to_vec()));
                    seen.push(sps);
                }
            }
        }
    }
}

pub(super) fn keyframe_to_jpeg(fixtures: &Fixtures, seeds: &mut Vec<Seed>) {
    for (name, video) in [
        ("baseline_640x360", &fixtures.baseline),
        ("bt709_1280x720", &fixtures.bt709),
    ] {
        let record = avc_payload(&video.sequence_header());
        let key = avc_payload(&video.first_keyframe());
        seeds.push(("keyframe_to_jpeg", name.into(), two_parts(&record, &key)));
    }
    // In-band SPS/PPS with a record that carries only the SPS.
    let bt709 = &fixtures.bt709;
    let config = config_of(bt709);
    let key = avc_payload(&bt709.first_keyframe());
    let mut au = Vec::new();
    for set in config.sps.iter().chain(&config.pps) {
        au.extend_from_slice(&(set.len() as u32).to_be_bytes());
        au.extend_from_slice(set);
    }
    au.extend_from_slice(&key);
    let record = avc_payload(&bt709.sequence_header());
    let sps_only = &record[..8 + config.sps[0].len()];
    let record = [sps_only, &[0]].concat();
    seeds.push((
        "keyframe_to_jpeg",
        "bt709_inband".into(),
        two_parts(&record, &au),
    ));
}
