//! `flv_tag`: the video path of `media::flv` and `media::avc` — `parse_video_tag`,
//! `parse_decoder_config`, `scan_access_unit` and `to_annex_b` — on a sequence header and
//! a coded frame.
//!
//! Layout: one byte (low 2 bits: the NAL length size, 1–4, used when there is no valid
//! decoder configuration), a big-endian u16 `n`, `n` bytes of a sequence-header video
//! tag body, then a coded-frame video tag body. Where a part does not parse as an AVC tag
//! of the right kind, its raw bytes are used as the record or the access unit instead.
//!
//! Invariants: no panic; a parsed tag's body is a suffix of the tag; a parsed decoder
//! configuration has a length size of 1, 2 or 4, at least one SPS, only SPS (type 7) and
//! PPS (type 8) NAL units of its own bytes; `scan_access_unit` and `to_annex_b` accept
//! exactly the access units an independent AVCC reader accepts, agree with it on the NAL
//! count, IDR, in-band SPS and PPS; and `to_annex_b` writes exactly start codes followed
//! by NAL units of the input or the configuration, in the documented order (SPS, PPS,
//! then the others without AUD, SEI and filler), and nothing at all on error.

use bytes::Bytes;
use livesnap::media::avc::{self, AvcConfig};
use livesnap::media::flv::{self, PacketKind, VideoCodec};

const START_CODE: [u8; 4] = [0, 0, 0, 1];

pub fn run(data: &[u8]) {
    let [control, hi, lo, ..] = *data else {
        return;
    };
    let rest = &data[3..];
    let n = usize::from(u16::from_be_bytes([hi, lo])).min(rest.len());
    let (first, second) = rest.split_at(n);

    let record = tag_body(first, PacketKind::SequenceHeader);
    let config = avc::parse_decoder_config(&record).ok();
    if let Some(c) = &config {
        check_config(c, &record);
    }
    let au = tag_body(second, PacketKind::Nalus);
    let length_size = config.as_ref().map_or(1 + (control & 3), |c| c.length_size);
    check_access_unit(&au, length_size, config.as_ref());
    check_access_unit(&au, length_size, None);
}

/// The tag's body when it is an AVC tag of `kind`, else the whole input.
fn tag_body(raw: &[u8], kind: PacketKind) -> Bytes {
    let bytes = Bytes::copy_from_slice(raw);
    match flv::parse_video_tag(&bytes) {
        Ok(tag) => {
            assert!(
                tag.body.len() < bytes.len() && bytes.ends_with(&tag.body),
                "tag body is not a suffix of the tag"
            );
            if tag.codec == VideoCodec::Avc && tag.kind == kind {
                tag.body
            } else {
                bytes
            }
        }
        Err(_) => bytes,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn check_config(c: &AvcConfig, record: &[u8]) {
    assert!(matches!(c.length_size, 1 | 2 | 4), "{}", c.length_size);
    assert!(!c.sps.is_empty(), "no SPS");
    for (sets, kind) in [(&c.sps, 7), (&c.pps, 8)] {
        for set in sets {
            assert!(!set.is_empty() && set[0] & 0x1f == kind, "{set:02x?}");
            assert!(contains(record, set), "parameter set not from the record");
        }
    }
}

/// An independent AVCC reader: the NAL units, or `None` when a length prefix is cut
/// off, a length is 0 or runs past the end, or the length size is not 1, 2 or 4.
fn reference_nals(body: &[u8], length_size: u8) -> Option<Vec<&[u8]>> {
    if !matches!(length_size, 1 | 2 | 4) {
        return None;
    }
    let ls = usize::from(length_size);
    let mut nals = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let prefix = rest.get(..ls)?;
        let len = prefix.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
        let len = usize::try_from(len).ok()?;
        if len == 0 || len > rest.len() - ls {
            return None;
        }
        nals.push(&rest[ls..ls + len]);
        rest = &rest[ls + len..];
    }
    Some(nals)
}

fn check_access_unit(body: &[u8], length_size: u8, config: Option<&AvcConfig>) {
    let scan = avc::scan_access_unit(body, length_size);
    let mut out = b"stale bytes from the previous access unit".to_vec();
    let converted = avc::to_annex_b(body, length_size, config, &mut out);
    let Some(nals) = reference_nals(body, length_size) else {
        assert!(scan.is_err(), "scan accepted a bad access unit: {scan:?}");
        assert!(converted.is_err(), "to_annex_b accepted a bad access unit");
        assert!(
            out.is_empty(),
            "to_annex_b wrote {} bytes on error",
            out.len()
        );
        return;
    };
    let info = scan.expect("scan refused a good access unit");
    converted.expect("to_annex_b refused a good access unit");
    let of_type = |t: u8| nals.iter().filter(move |n| n[0] & 0x1f == t);
    assert_eq!(info.nal_count, nals.len());
    assert_eq!(info.has_idr, of_type(5).next().is_some());
    assert_eq!(info.sps.as_deref(), of_type(7).next().copied());
    assert_eq!(info.pps.as_deref(), of_type(8).next().copied());

    let mut expected = Vec::new();
    let mut put = |nal: &[u8]| {
        expected.extend_from_slice(&START_CODE);
        expected.extend_from_slice(nal);
    };
    let (config_sps, config_pps) = config.map_or((&[][..], &[][..]), |c| (&c.sps[..], &c.pps[..]));
    for (t, from_config) in [(7, config_sps), (8, config_pps)] {
        if of_type(t).next().is_some() {
            of_type(t).for_each(|n| put(n));
        } else {
            from_config.iter().for_each(|s| put(s));
        }
    }
    nals.iter()
        .filter(|n| !matches!(n[0] & 0x1f, 6 | 7 | 8 | 9 | 12))
        .for_each(|n| put(n));
    assert!(
        out == expected,
        "to_annex_b wrote something else than the NAL units"
    );
}
