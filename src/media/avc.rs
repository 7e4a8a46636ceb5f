//! AVC (H.264) payloads of FLV video tags: the AVCDecoderConfigurationRecord of a sequence header, and
//! AVCC access units (length-prefixed NAL units) → Annex B for the decoder.
//!
//! Owns: parameter-set extraction, the cheap per-access-unit scan (IDR? in-band SPS/PPS?) and the Annex B
//! conversion. Pure functions over bytes, every length checked, no panic on any input.
//! Must not touch: SPS syntax (see `sps`), decoding, scheduling.

use bytes::Bytes;

pub use super::flv::MediaError;

/// NAL unit types used here (ITU-T H.264 table 7-1).
pub mod nal_type {
    pub const SLICE: u8 = 1;
    pub const IDR: u8 = 5;
    pub const SEI: u8 = 6;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const AUD: u8 = 9;
    pub const FILLER: u8 = 12;
}

/// The parts of an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1) the pipeline needs.
#[derive(Debug, Clone, PartialEq)]
pub struct AvcConfig {
    /// AVCProfileIndication (profile_idc of the first SPS).
    pub profile: u8,
    /// AVCLevelIndication.
    pub level: u8,
    /// Bytes in each NAL unit length prefix: 1, 2 or 4.
    pub length_size: u8,
    /// SPS NAL units, header byte included; at least one.
    pub sps: Vec<Bytes>,
    /// PPS NAL units, header byte included; may be empty (then they must arrive in-band).
    pub pps: Vec<Bytes>,
}

/// Parses the AVCDecoderConfigurationRecord carried by an AVC sequence header.
///
/// Errors: a record shorter than 6 bytes, a version other than 1, length size 3, no SPS, a parameter set of
/// length 0 or overrunning the record, or an SPS/PPS entry holding another NAL type. Bytes after the PPS
/// (the High-profile chroma/bit-depth extension) are ignored: the SPS says the same.
pub fn parse_decoder_config(record: &[u8]) -> Result<AvcConfig, MediaError> {
    if record.len() < 6 {
        return Err(MediaError::ConfigTooShort {
            len: record.len(),
            need: 6,
        });
    }
    if record[0] != 1 {
        return Err(MediaError::ConfigVersion(record[0]));
    }
    let length_size = (record[4] & 0x03) + 1;
    check_length_size(length_size)?;
    let sps_count = usize::from(record[5] & 0x1f);
    if sps_count == 0 {
        return Err(MediaError::NoSps);
    }
    let mut rest = &record[6..];
    let sps = param_sets(&mut rest, sps_count, "SPS", nal_type::SPS)?;
    let pps_count = match rest.split_first() {
        Some((&n, tail)) => {
            rest = tail;
            usize::from(n)
        }
        // Some muxers end the record after the SPS when the PPS will come in-band.
        None => 0,
    };
    let pps = param_sets(&mut rest, pps_count, "PPS", nal_type::PPS)?;
    Ok(AvcConfig {
        profile: record[1],
        level: record[3],
        length_size,
        sps,
        pps,
    })
}

fn param_sets(
    rest: &mut &[u8],
    count: usize,
    kind: &'static str,
    expected: u8,
) -> Result<Vec<Bytes>, MediaError> {
    let mut sets = Vec::with_capacity(count);
    for index in 0..count {
        let len = match rest {
            [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => {
                return Err(MediaError::ParamSetLength {
                    kind,
                    index,
                    len: 0,
                    remaining: rest.len(),
                })
            }
        };
        let remaining = rest.len() - 2;
        if len == 0 || len > remaining {
            return Err(MediaError::ParamSetLength {
                kind,
                index,
                len,
                remaining,
            });
        }
        let nal = &rest[2..2 + len];
        if nal[0] & 0x1f != expected {
            return Err(MediaError::ParamSetType {
                kind,
                index,
                nal_type: nal[0] & 0x1f,
            });
        }
        sets.push(Bytes::copy_from_slice(nal));
        *rest = &rest[2 + len..];
    }
    Ok(sets)
}

fn check_length_size(length_size: u8) -> Result<(), MediaError> {
    match length_size {
        1 | 2 | 4 => Ok(()),
        other => Err(MediaError::LengthSize(other)),
    }
}

/// Iterator over the NAL units of an AVCC access unit; yields `Err` once at the first bad length, then
/// stops. Made by [`nal_units`].
#[derive(Debug, Clone)]
pub struct NalUnits<'a> {
    body: &'a [u8],
    pos: usize,
    length_size: u8,
}

/// Iterates the NAL units (header byte included) of an AVCC access unit. Errors at once on a length
/// size other than 1, 2 or 4.
pub fn nal_units(body: &[u8], length_size: u8) -> Result<NalUnits<'_>, MediaError> {
    check_length_size(length_size)?;
    Ok(NalUnits {
        body,
        pos: 0,
        length_size,
    })
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = Result<&'a [u8], MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = self.pos;
        let rest = self.body.get(offset..).filter(|r| !r.is_empty())?;
        let ls = usize::from(self.length_size);
        // Stop after this item whatever happens; set again on success.
        self.pos = self.body.len();
        if rest.len() < ls {
            return Some(Err(MediaError::NalLengthTruncated {
                offset,
                length_size: self.length_size,
                remaining: rest.len(),
            }));
        }
        let len = rest[..ls]
            .iter()
            .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
        let remaining = rest.len() - ls;
        if len == 0 || len as usize > remaining {
            return Some(Err(MediaError::NalLength {
                offset,
                len,
                remaining,
            }));
        }
        let end = ls + len as usize;
        self.pos = offset + end;
        Some(Ok(&rest[ls..end]))
    }
}

/// What a cheap scan of one access unit found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AccessUnitInfo {
    /// Holds an IDR slice (NAL type 5): a decodable keyframe given SPS and PPS.
    pub has_idr: bool,
    /// The first in-band SPS of this access unit.
    pub sps: Option<Bytes>,
    /// The first in-band PPS of this access unit.
    pub pps: Option<Bytes>,
    pub nal_count: usize,
}

/// Cheap scan of an AVCC access unit: reads NAL lengths and types only; copies nothing but in-band
/// parameter sets (tens of bytes, when present). NAL length 0, a length past the end (0xFFFFFFFF included),
/// a cut-off length prefix or length size 3 → error.
pub fn scan_access_unit(body: &[u8], length_size: u8) -> Result<AccessUnitInfo, MediaError> {
    let mut info = AccessUnitInfo::default();
    for nal in nal_units(body, length_size)? {
        let nal = nal?;
        info.nal_count += 1;
        match nal[0] & 0x1f {
            nal_type::IDR => info.has_idr = true,
            nal_type::SPS if info.sps.is_none() => info.sps = Some(Bytes::copy_from_slice(nal)),
            nal_type::PPS if info.pps.is_none() => info.pps = Some(Bytes::copy_from_slice(nal)),
            _ => {}
        }
    }
    Ok(info)
}

/// Every in-band SPS NAL unit of an AVCC access unit, in order (zero-copy slices of `body`). The
/// scan keeps only the first; this is for checks that must see each one a decoder would.
pub fn in_band_sps(body: &[u8], length_size: u8) -> Result<Vec<&[u8]>, MediaError> {
    let mut sps = Vec::new();
    for nal in nal_units(body, length_size)? {
        let nal = nal?;
        if nal[0] & 0x1f == nal_type::SPS {
            sps.push(nal);
        }
    }
    Ok(sps)
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Writes the access unit as Annex B (`00 00 00 01` before each NAL unit) into `out`, which is cleared
/// first and whose allocation is reused.
///
/// Order: SPS, then PPS, then the access unit's other NAL units in their order, without AUD (9), SEI (6)
/// and filler (12) (SEI carries nothing a decoder needs for a picture). Parameter sets come from the access
/// unit when it carries them in-band (they win: an encoder may change them without a new sequence header),
/// otherwise from `config`; SPS and PPS are decided separately. Without either, only the slices are
/// written: a keyframe then is not decodable, which the caller can tell from [`scan_access_unit`].
///
/// The whole access unit is validated before anything is written: on error `out` is left empty.
pub fn to_annex_b(
    body: &[u8],
    length_size: u8,
    config: Option<&AvcConfig>,
    out: &mut Vec<u8>,
) -> Result<(), MediaError> {
    out.clear();
    let mut in_band_sps = false;
    let mut in_band_pps = false;
    for nal in nal_units(body, length_size)? {
        match nal?[0] & 0x1f {
            nal_type::SPS => in_band_sps = true,
            nal_type::PPS => in_band_pps = true,
            _ => {}
        }
    }
    let no_sets: &[Bytes] = &[];
    let (config_sps, config_pps) = config.map_or((no_sets, no_sets), |c| (&c.sps[..], &c.pps[..]));
    out.reserve(
        body.len()
            + config_sps
                .iter()
                .chain(config_pps)
                .map(|s| s.len() + 4)
                .sum::<usize>(),
    );
    // Validated above, so the iterations below never yield an error.
    let nals = || nal_units(body, length_size).into_iter().flatten().flatten();
    let mut put = |nal: &[u8]| {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    };
    for (set_type, in_band, from_config) in [
        (nal_type::SPS, in_band_sps, config_sps),
        (nal_type::PPS, in_band_pps, config_pps),
    ] {
        if in_band {
            nals()
                .filter(|n| n[0] & 0x1f == set_type)
                .for_each(&mut put);
        } else {
            from_config.iter().for_each(|s| put(s));
        }
    }
    nals()
        .filter(|n| {
            !matches!(
                n[0] & 0x1f,
                nal_type::SPS | nal_type::PPS | nal_type::AUD | nal_type::SEI | nal_type::FILLER
            )
        })
        .for_each(put);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::flv::{fixtures, PacketKind};
    use super::*;

    /// A 4-byte-length AVCC access unit of the given NAL units.
    fn avcc(nals: &[&[u8]]) -> Vec<u8> {
        let mut b = Vec::new();
        for n in nals {
            b.extend((n.len() as u32).to_be_bytes());
            b.extend(*n);
        }
        b
    }

    fn record(sps: &[&[u8]], pps: &[&[u8]]) -> Vec<u8> {
        let mut r = vec![1, 0x64, 0, 0x1f, 0xff, 0xe0 | sps.len() as u8];
        for s in sps {
            r.extend((s.len() as u16).to_be_bytes());
            r.extend(*s);
        }
        r.push(pps.len() as u8);
        for p in pps {
            r.extend((p.len() as u16).to_be_bytes());
            r.extend(*p);
        }
        r
    }

    /// Splits Annex B output at its 4-byte start codes (the test data holds no other 00 00 00 01).
    fn split_annex_b(b: &[u8]) -> Vec<&[u8]> {
        assert!(b.starts_with(&START_CODE), "{:02x?}", &b[..b.len().min(8)]);
        let mut starts: Vec<usize> = (0..b.len().saturating_sub(3))
            .filter(|&i| b[i..i + 4] == START_CODE)
            .collect();
        starts.push(b.len());
        starts.windows(2).map(|w| &b[w[0] + 4..w[1]]).collect()
    }

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xaa];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    #[test]
    fn decoder_config_parses() {
        let c = parse_decoder_config(&record(&[SPS], &[PPS, &[0x68, 1]])).unwrap();
        assert_eq!((c.profile, c.level, c.length_size), (0x64, 0x1f, 4));
        assert_eq!(c.sps, [Bytes::from_static(SPS)]);
        assert_eq!(c.pps.len(), 2);
        // Record ending right after the SPS: no PPS.
        let mut r = record(&[SPS], &[]);
        r.pop();
        assert!(parse_decoder_config(&r).unwrap().pps.is_empty());
    }

    #[test]
    fn decoder_config_errors() {
        let good = record(&[SPS], &[PPS]);
        let with = |i: usize, v: u8| {
            let mut r = good.clone();
            r[i] = v;
            parse_decoder_config(&r)
        };
        assert_eq!(with(4, 0xfe), Err(MediaError::LengthSize(3)));
        assert_eq!(with(0, 0), Err(MediaError::ConfigVersion(0)));
        assert_eq!(with(5, 0xe0), Err(MediaError::NoSps));
        assert_eq!(
            with(7, 200),
            Err(MediaError::ParamSetLength {
                kind: "SPS",
                index: 0,
                len: 200,
                remaining: 12
            })
        );
        assert!(matches!(
            with(7, 0),
            Err(MediaError::ParamSetLength { len: 0, .. })
        ));
        assert_eq!(
            with(8, 0x68),
            Err(MediaError::ParamSetType {
                kind: "SPS",
                index: 0,
                nal_type: 8
            })
        );
        // Two SPS declared, one present.
        assert!(matches!(
            with(5, 0xe2),
            Err(MediaError::ParamSetType { index: 1, .. }) | Err(MediaError::ParamSetLength { .. })
        ));
        assert!(matches!(
            with(15, 9),
            Err(MediaError::ParamSetLength {
                kind: "PPS",
                len: 9,
                ..
            })
        ));
        for cut in 0..good.len() - 1 {
            if cut == 13 {
                // Ends right after the SPS: accepted without PPS.
                assert!(parse_decoder_config(&good[..cut]).is_ok());
                continue;
            }
            let err = parse_decoder_config(&good[..cut]).unwrap_err();
            if cut < 6 {
                assert_eq!(err, MediaError::ConfigTooShort { len: cut, need: 6 });
            } else if cut > 13 {
                assert!(matches!(
                    err,
                    MediaError::ParamSetLength { kind: "PPS", .. }
                ));
            }
        }
    }

    #[test]
    fn nal_length_errors() {
        let nal0 = [0, 0, 0, 0, 0x65];
        assert_eq!(
            scan_access_unit(&nal0, 4),
            Err(MediaError::NalLength {
                offset: 0,
                len: 0,
                remaining: 1
            })
        );
        let too_big = avcc(&[&[0x65, 1]])
            .into_iter()
            .chain([0, 0, 0, 9, 0x41])
            .collect::<Vec<u8>>();
        assert_eq!(
            scan_access_unit(&too_big, 4),
            Err(MediaError::NalLength {
                offset: 6,
                len: 9,
                remaining: 1
            })
        );
        let huge = [0xff, 0xff, 0xff, 0xff, 0x65, 0];
        assert_eq!(
            scan_access_unit(&huge, 4),
            Err(MediaError::NalLength {
                offset: 0,
                len: u32::MAX,
                remaining: 2
            })
        );
        assert_eq!(
            scan_access_unit(&[0, 0, 0], 4),
            Err(MediaError::NalLengthTruncated {
                offset: 0,
                length_size: 4,
                remaining: 3
            })
        );
        assert_eq!(
            scan_access_unit(&[1, 0x65], 3),
            Err(MediaError::LengthSize(3))
        );
        let mut out = vec![7; 10];
        assert!(to_annex_b(&huge, 4, None, &mut out).is_err());
        assert!(out.is_empty(), "nothing written on error");
        assert_eq!(
            to_annex_b(&[], 3, None, &mut out),
            Err(MediaError::LengthSize(3))
        );
    }

    #[test]
    fn short_length_sizes() {
        let one = [1, 0x65, 2, 0x06, 0];
        assert_eq!(
            scan_access_unit(&one[..2], 1).unwrap(),
            AccessUnitInfo {
                has_idr: true,
                nal_count: 1,
                ..Default::default()
            }
        );
        assert_eq!(scan_access_unit(&one, 1).unwrap().nal_count, 2);
        let two = [0, 1, 0x65, 0, 2, 0x06, 0];
        assert_eq!(scan_access_unit(&two, 2).unwrap().nal_count, 2);
        assert!(matches!(
            scan_access_unit(&two, 1),
            Err(MediaError::NalLength { len: 0, .. })
        ));
        assert_eq!(scan_access_unit(&[], 4).unwrap(), AccessUnitInfo::default());
    }

    #[test]
    fn annex_b_uses_config_and_drops_aud_sei_filler() {
        let config = parse_decoder_config(&record(&[SPS], &[PPS])).unwrap();
        let au = avcc(&[
            &[0x09, 0xf0],
            &[0x06, 5, 1],
            &[0x65, 0x88, 0x84],
            &[0x0c, 0xff],
            &[0x65, 0x99],
        ]);
        let mut out = Vec::with_capacity(1000);
        let ptr = out.as_ptr();
        to_annex_b(&au, 4, Some(&config), &mut out).unwrap();
        assert_eq!(
            split_annex_b(&out),
            [SPS, PPS, &[0x65, 0x88, 0x84][..], &[0x65, 0x99][..]]
        );
        assert_eq!(out.as_ptr(), ptr, "allocation reused");
        // Without a config: slices only.
        to_annex_b(&au, 4, None, &mut out).unwrap();
        assert_eq!(
            split_annex_b(&out),
            [&[0x65, 0x88, 0x84][..], &[0x65, 0x99][..]]
        );
    }

    #[test]
    fn in_band_parameter_sets_win() {
        let config = parse_decoder_config(&record(&[SPS], &[PPS])).unwrap();
        let sps2: &[u8] = &[0x67, 0x64, 0x00, 0x28, 0xbb];
        let pps2: &[u8] = &[0x68, 0xee];
        let idr: &[u8] = &[0x65, 0x11];
        let au = avcc(&[&[0x09, 0x10], sps2, pps2, idr]);
        let info = scan_access_unit(&au, 4).unwrap();
        assert_eq!(info.sps.as_deref(), Some(sps2));
        assert_eq!(info.pps.as_deref(), Some(pps2));
        assert_eq!((info.has_idr, info.nal_count), (true, 4));
        let mut out = Vec::new();
        to_annex_b(&au, 4, Some(&config), &mut out).unwrap();
        assert_eq!(split_annex_b(&out), [sps2, pps2, idr]);
        // Only an in-band SPS: the config's PPS fills in, after the SPS.
        let au = avcc(&[idr, sps2]);
        to_annex_b(&au, 4, Some(&config), &mut out).unwrap();
        assert_eq!(split_annex_b(&out), [sps2, PPS, idr]);
    }

    /// (config of the latest sequence header, body) of every keyframe access unit of a fixture.
    fn keyframes(name: &str) -> Vec<(AvcConfig, Bytes)> {
        let mut config = None;
        let mut keys = Vec::new();
        for (_, tag) in fixtures::video(name) {
            match tag.kind {
                PacketKind::SequenceHeader => {
                    config = Some(parse_decoder_config(&tag.body).unwrap())
                }
                PacketKind::Nalus if tag.keyframe => keys.push((config.clone().unwrap(), tag.body)),
                _ => {}
            }
        }
        keys
    }

    #[test]
    fn fixtures_every_access_unit_scans() {
        for f in fixtures::ALL {
            let (name, keyframes, headers) = (f.name, f.keyframes, f.sizes);
            let mut configs = 0;
            let mut idrs = 0;
            for (_, tag) in fixtures::video(name) {
                match tag.kind {
                    PacketKind::SequenceHeader => {
                        let c = parse_decoder_config(&tag.body).unwrap();
                        assert_eq!(
                            (c.length_size, c.sps.len(), c.pps.len()),
                            (4, 1, 1),
                            "{name}"
                        );
                        configs += 1;
                    }
                    PacketKind::Nalus => {
                        let info = scan_access_unit(&tag.body, 4).unwrap();
                        assert_eq!(info.has_idr, tag.keyframe, "{name}");
                        idrs += usize::from(info.has_idr);
                        assert!(info.nal_count >= 1);
                        // Surprise worth a test: ffmpeg's FLV muxer never repeats SPS/PPS in-band.
                        assert_eq!((info.sps, info.pps), (None, None), "{name}");
                    }
                    _ => {}
                }
            }
            assert_eq!((configs, idrs), (headers.len(), keyframes), "{name}");
        }
    }

    #[test]
    fn fixtures_keyframes_become_decodable_annex_b() {
        let mut out = Vec::new();
        for name in fixtures::ALL.iter().map(|f| f.name) {
            for (config, body) in keyframes(name) {
                to_annex_b(&body, config.length_size, Some(&config), &mut out).unwrap();
                let sps_len = config.sps[0].len();
                assert_eq!(out[..5], [0, 0, 0, 1, 0x67], "{name}: SPS first");
                assert_eq!(&out[4..4 + sps_len], &config.sps[0][..]);
                assert_eq!(
                    out[4 + sps_len..9 + sps_len],
                    [0, 0, 0, 1, 0x68],
                    "{name}: PPS second"
                );
                let after_pps = 8 + sps_len + config.pps[0].len();
                assert_eq!(out[after_pps..after_pps + 4], START_CODE);
                // x264's first IDR carries its version SEI: dropped, so the IDR follows the PPS.
                assert_eq!(
                    out[after_pps + 4] & 0x1f,
                    nal_type::IDR,
                    "{name}: IDR third"
                );
                assert!(
                    !out.windows(5).any(|w| w == [0, 0, 0, 1, nal_type::SEI]),
                    "{name}: no SEI"
                );
            }
        }
    }

    #[test]
    fn fixture_in_band_sps_from_another_stream_wins() {
        // A 360p keyframe's slices prefixed with the 720p half's SPS/PPS in-band, config still 360p.
        let keys = keyframes("resolution_change.flv");
        let (config_360, body_360) = &keys[0];
        let (config_720, _) = &keys[11];
        assert_ne!(config_360.sps, config_720.sps);
        let mut au = avcc(&[&config_720.sps[0], &config_720.pps[0]]);
        au.extend_from_slice(body_360);
        let info = scan_access_unit(&au, 4).unwrap();
        assert_eq!(info.sps.as_ref(), Some(&config_720.sps[0]));
        let mut out = Vec::new();
        to_annex_b(&au, 4, Some(config_360), &mut out).unwrap();
        let nals = split_annex_b(&out);
        assert_eq!(nals[0], &config_720.sps[0][..]);
        assert_eq!(nals[1], &config_720.pps[0][..]);
        assert!(!nals.contains(&&config_360.sps[0][..]));
    }

    /// Deterministic pseudo-random mutations of real tags: no input may panic.
    #[test]
    fn mutated_fixture_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (config, body) = keyframes("bt709_bars_1280x720.flv").swap_remove(1);
        let record = {
            let mut r = record(&[&config.sps[0]], &[&config.pps[0]]);
            r[1] = config.profile;
            r
        };
        let mut out = Vec::new();
        for _ in 0..3000 {
            for input in [&record[..], &body[..body.len().min(64)]] {
                let mut m = input.to_vec();
                for _ in 0..1 + rand() % 4 {
                    let i = (rand() as usize) % m.len();
                    m[i] = rand() as u8;
                }
                m.truncate((rand() as usize) % (m.len() + 1));
                let _ = parse_decoder_config(&m);
                for ls in [1, 2, 3, 4] {
                    let _ = scan_access_unit(&m, ls);
                    let _ = to_annex_b(&m, ls, Some(&config), &mut out);
                }
                let _ = super::super::flv::parse_video_tag(&Bytes::from(m));
            }
        }
    }
}
