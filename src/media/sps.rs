//! H.264 sequence parameter set (ITU-T H.264 §7.3.2.1.1) → what snapshotting needs: cropped picture size,
//! colour matrix and range.
//!
//! Owns: emulation-prevention removal, the Exp-Golomb bit reader and the SPS syntax up to the VUI colour
//! description. Pure function over bytes, every read checked, no panic on any input.
//! Must not touch: other NAL types, decoding, colour conversion itself.

pub use super::flv::MediaError;

/// YCbCr → RGB matrix, from VUI `matrix_coefficients`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matrix {
    /// Rec. ITU-R BT.601 (Kr = 0.299, Kb = 0.114).
    Bt601,
    /// Rec. ITU-R BT.709 (Kr = 0.2126, Kb = 0.0722).
    Bt709,
}

impl Matrix {
    /// 1 → BT.709; 5 and 6 → BT.601; 2 (unspecified) or no colour description → BT.601, the same default as
    /// ffmpeg's swscale (`SWS_CS_DEFAULT` is ITU-R BT.601). Every other value (0 identity/GBR, 4 FCC,
    /// 7 SMPTE 240M, 9/10 BT.2020, …) also maps to BT.601: the decoder path is 8-bit 4:2:0 SDR, and BT.601 is
    /// the least surprising fallback for what such streams actually carry.
    pub fn from_matrix_coefficients(value: Option<u8>) -> Matrix {
        match value {
            Some(1) => Matrix::Bt709,
            _ => Matrix::Bt601,
        }
    }
}

/// What the snapshot path needs from an SPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsInfo {
    pub profile_idc: u8,
    pub level_idc: u8,
    /// Displayed width after frame cropping, 1..=8192.
    pub width: u32,
    /// Displayed height after frame cropping (frame height: both fields when interlaced), 1..=8192.
    pub height: u32,
    /// VUI `video_full_range_flag`; false (limited range, 16..235) when absent.
    pub full_range: bool,
    pub matrix: Matrix,
    /// Always 1 (4:2:0) in an `Ok`: other formats are rejected.
    pub chroma_format_idc: u32,
}

/// Largest width or height accepted.
pub const MAX_DIMENSION: u64 = 8192;

/// Profiles whose SPS carries chroma format, bit depths and scaling matrices (§7.3.2.1.1).
const HIGH_PROFILES: [u8; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// Parses an SPS NAL unit (1-byte NAL header included; emulation-prevention bytes still in).
///
/// Rejects: another NAL type, a truncated SPS, out-of-range fields, chroma other than 4:2:0 (separate colour
/// planes are reported as `ChromaFormat(3)`), bit depth other than 8, cropping larger than the picture, and a
/// cropped size of 0 or above 8192. Like ffmpeg, a VUI cut short is tolerated: fields it does not reach keep
/// their defaults (limited range, BT.601).
pub fn parse_sps(nal: &[u8]) -> Result<SpsInfo, MediaError> {
    let header = *nal.first().ok_or(MediaError::NotSps(0))?;
    if header & 0x1f != 7 {
        return Err(MediaError::NotSps(header & 0x1f));
    }
    let rbsp = unescape(&nal[1..]);
    let mut r = BitReader::new(&rbsp);
    let profile_idc = r.bits(8, "profile_idc")? as u8;
    r.bits(8, "constraint_set_flags")?;
    let level_idc = r.bits(8, "level_idc")? as u8;
    r.ue_max("seq_parameter_set_id", 31)?;

    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if HIGH_PROFILES.contains(&profile_idc) {
        chroma_format_idc = r.ue_max("chroma_format_idc", 3)? as u32;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag("separate_colour_plane_flag")?;
        }
        let luma = r.ue_max("bit_depth_luma_minus8", 6)? as u32 + 8;
        let chroma = r.ue_max("bit_depth_chroma_minus8", 6)? as u32 + 8;
        if (luma, chroma) != (8, 8) {
            return Err(MediaError::BitDepth { luma, chroma });
        }
        r.flag("qpprime_y_zero_transform_bypass_flag")?;
        if r.flag("seq_scaling_matrix_present_flag")? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag("seq_scaling_list_present_flag")? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    if separate_colour_plane {
        return Err(MediaError::ChromaFormat(3));
    }
    if chroma_format_idc != 1 {
        return Err(MediaError::ChromaFormat(chroma_format_idc));
    }

    r.ue_max("log2_max_frame_num_minus4", 12)?;
    match r.ue_max("pic_order_cnt_type", 2)? {
        0 => {
            r.ue_max("log2_max_pic_order_cnt_lsb_minus4", 12)?;
        }
        1 => {
            r.flag("delta_pic_order_always_zero_flag")?;
            r.se("offset_for_non_ref_pic")?;
            r.se("offset_for_top_to_bottom_field")?;
            let cycle = r.ue_max("num_ref_frames_in_pic_order_cnt_cycle", 255)?;
            for _ in 0..cycle {
                r.se("offset_for_ref_frame")?;
            }
        }
        _ => {}
    }
    r.ue("max_num_ref_frames")?;
    r.flag("gaps_in_frame_num_value_allowed_flag")?;
    let width_mbs = r.ue("pic_width_in_mbs_minus1")? + 1;
    let height_map_units = r.ue("pic_height_in_map_units_minus1")? + 1;
    let frame_mbs_only = r.flag("frame_mbs_only_flag")?;
    if !frame_mbs_only {
        r.flag("mb_adaptive_frame_field_flag")?;
    }
    r.flag("direct_8x8_inference_flag")?;
    let mut crop = [0u64; 4]; // left, right, top, bottom
    if r.flag("frame_cropping_flag")? {
        for (c, field) in crop.iter_mut().zip([
            "frame_crop_left_offset",
            "frame_crop_right_offset",
            "frame_crop_top_offset",
            "frame_crop_bottom_offset",
        ]) {
            *c = r.ue(field)?;
        }
    }
    let (full_range, matrix_coefficients) = if r.flag("vui_parameters_present_flag")? {
        read_vui_colour(&mut r)
    } else {
        (false, None)
    };

    // 4:2:0: crop units are 2 luma samples across, 2 × (2 − frame_mbs_only) down (§7.4.2.1.1).
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let coded_width = width_mbs * 16;
    let coded_height = height_map_units * 16 * field_factor;
    let crop_x = 2 * (crop[0] + crop[1]);
    let crop_y = 2 * field_factor * (crop[2] + crop[3]);
    if crop_x >= coded_width || crop_y >= coded_height {
        return Err(MediaError::Cropping {
            coded_width,
            coded_height,
            crop_x,
            crop_y,
        });
    }
    let (width, height) = (coded_width - crop_x, coded_height - crop_y);
    if width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(MediaError::Dimensions { width, height });
    }
    Ok(SpsInfo {
        profile_idc,
        level_idc,
        width: width as u32,
        height: height as u32,
        full_range,
        matrix: Matrix::from_matrix_coefficients(matrix_coefficients),
        chroma_format_idc,
    })
}

/// scaling_list() of §7.3.2.1.1.1, values discarded.
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), MediaError> {
    let mut last_scale: i64 = 8;
    let mut next_scale: i64 = 8;
    for _ in 0..size {
        if next_scale != 0 {
            let delta = r.se("delta_scale")?;
            if !(-128..=127).contains(&delta) {
                return Err(MediaError::SpsField {
                    field: "delta_scale",
                    value: delta as u64,
                });
            }
            next_scale = (last_scale + delta + 256) % 256;
        }
        if next_scale != 0 {
            last_scale = next_scale;
        }
    }
    Ok(())
}

/// VUI (Annex E.1.1) up to the colour description: (video_full_range_flag, matrix_coefficients).
/// A VUI that ends early keeps what was read so far.
fn read_vui_colour(r: &mut BitReader<'_>) -> (bool, Option<u8>) {
    let mut full_range = false;
    let mut matrix = None;
    let mut read = || -> Result<(), MediaError> {
        if r.flag("aspect_ratio_info_present_flag")? && r.bits(8, "aspect_ratio_idc")? == 255 {
            r.bits(32, "sar_width_height")?;
        }
        if r.flag("overscan_info_present_flag")? {
            r.flag("overscan_appropriate_flag")?;
        }
        if r.flag("video_signal_type_present_flag")? {
            r.bits(3, "video_format")?;
            full_range = r.flag("video_full_range_flag")?;
            if r.flag("colour_description_present_flag")? {
                r.bits(16, "colour_primaries_transfer")?;
                matrix = Some(r.bits(8, "matrix_coefficients")? as u8);
            }
        }
        Ok(())
    };
    let _ = read();
    (full_range, matrix)
}

/// NAL payload → RBSP: drops each 0x03 that follows two zero bytes (§7.4.1).
pub fn unescape(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len());
    let mut zeros = 0;
    for &b in payload {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// MSB-first bit reader over an RBSP.
struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits.
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    fn bit(&mut self, field: &'static str) -> Result<u64, MediaError> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or(MediaError::SpsTruncated { field })?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u64::from(bit))
    }

    /// Up to 64 bits, MSB first.
    fn bits(&mut self, n: u32, field: &'static str) -> Result<u64, MediaError> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit(field)?;
        }
        Ok(v)
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, MediaError> {
        Ok(self.bit(field)? == 1)
    }

    /// ue(v); at most 32 leading zeros (values up to 2^33 − 2; the syntax never needs more).
    fn ue(&mut self, field: &'static str) -> Result<u64, MediaError> {
        let mut zeros = 0;
        while self.bit(field)? == 0 {
            zeros += 1;
            if zeros > 32 {
                return Err(MediaError::SpsField {
                    field,
                    value: u64::MAX,
                });
            }
        }
        Ok((1u64 << zeros) - 1 + self.bits(zeros, field)?)
    }

    fn ue_max(&mut self, field: &'static str, max: u64) -> Result<u64, MediaError> {
        let value = self.ue(field)?;
        if value > max {
            return Err(MediaError::SpsField { field, value });
        }
        Ok(value)
    }

    /// se(v).
    fn se(&mut self, field: &'static str) -> Result<i64, MediaError> {
        let k = self.ue(field)? as i64;
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

#[cfg(test)]
mod tests {
    use super::super::avc::parse_decoder_config;
    use super::super::flv::{fixtures, PacketKind};
    use super::*;

    /// MSB-first bit writer for hand-built SPSs.
    #[derive(Default)]
    struct W {
        bytes: Vec<u8>,
        bits: usize,
    }

    impl W {
        fn u(&mut self, n: u32, v: u64) -> &mut Self {
            for i in (0..n).rev() {
                if self.bits.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                let bit = ((v >> i) & 1) as u8;
                *self.bytes.last_mut().unwrap() |= bit << (7 - self.bits % 8);
                self.bits += 1;
            }
            self
        }
        fn ue(&mut self, v: u64) -> &mut Self {
            let n = 64 - (v + 1).leading_zeros();
            self.u(n - 1, 0).u(n, v + 1)
        }
        fn se(&mut self, v: i64) -> &mut Self {
            self.ue(if v > 0 {
                2 * v as u64 - 1
            } else {
                2 * v.unsigned_abs()
            })
        }
        /// Adds the stop bit and emulation prevention; prefixes the NAL header 0x67.
        fn nal(&mut self) -> Vec<u8> {
            self.u(1, 1);
            let mut out = vec![0x67];
            let mut zeros = 0;
            for &b in &self.bytes {
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            out
        }
    }

    /// Options of a hand-built SPS.
    #[derive(Clone)]
    struct Opt {
        profile: u8,
        chroma: u64,
        separate_planes: bool,
        bit_depth_minus8: u64,
        scaling: bool,
        poc_type: u64,
        width_mbs: u64,
        height_units: u64,
        frame_mbs_only: bool,
        crop: [u64; 4],
        /// None: no VUI; Some((full_range, matrix)).
        vui: Option<(bool, Option<u8>)>,
    }

    const BASE: Opt = Opt {
        profile: 66,
        chroma: 1,
        separate_planes: false,
        bit_depth_minus8: 0,
        scaling: false,
        poc_type: 2,
        width_mbs: 40,
        height_units: 23,
        frame_mbs_only: true,
        crop: [0, 0, 0, 4],
        vui: None,
    };

    fn build(o: &Opt) -> Vec<u8> {
        let mut w = W::default();
        w.u(8, o.profile.into()).u(8, 0).u(8, 31).ue(0);
        if HIGH_PROFILES.contains(&o.profile) {
            w.ue(o.chroma);
            if o.chroma == 3 {
                w.u(1, o.separate_planes.into());
            }
            w.ue(o.bit_depth_minus8).ue(o.bit_depth_minus8).u(1, 0);
            w.u(1, o.scaling.into());
            if o.scaling {
                // List 0: deltas that reach nextScale 0 after two entries (ends the list early);
                // lists 1-5 absent; list 6 (8x8): 64 explicit deltas; list 7 absent.
                w.u(1, 1).se(8).se(-16);
                w.u(5, 0);
                w.u(1, 1);
                for i in 0..64 {
                    w.se(if i % 2 == 0 { 3 } else { -2 });
                }
                w.u(1, 0);
            }
        }
        w.ue(0).ue(o.poc_type);
        if o.poc_type == 0 {
            w.ue(2);
        } else if o.poc_type == 1 {
            w.u(1, 0).se(-1).se(2).ue(2).se(5).se(-5);
        }
        w.ue(4).u(1, 0).ue(o.width_mbs - 1).ue(o.height_units - 1);
        w.u(1, o.frame_mbs_only.into());
        if !o.frame_mbs_only {
            w.u(1, 1);
        }
        w.u(1, 1);
        let cropping = o.crop != [0; 4];
        w.u(1, cropping.into());
        if cropping {
            o.crop.iter().for_each(|&c| {
                w.ue(c);
            });
        }
        w.u(1, o.vui.is_some().into());
        if let Some((full_range, matrix)) = o.vui {
            // Extended SAR 0:0 ("unspecified"): 32 zero bits, so emulation prevention is always
            // needed inside it; then overscan info and the video signal type.
            w.u(1, 1).u(8, 255).u(16, 0).u(16, 0).u(1, 1).u(1, 0);
            w.u(1, 1).u(3, 5).u(1, full_range.into());
            w.u(1, matrix.is_some().into());
            if let Some(m) = matrix {
                w.u(8, 1).u(8, 1).u(8, m.into());
            }
            w.u(1, 0); // chroma_loc_info_present_flag; the rest is never read
        }
        w.nal()
    }

    fn parse(o: &Opt) -> Result<SpsInfo, MediaError> {
        parse_sps(&build(o))
    }

    #[test]
    fn baseline_with_cropping() {
        let s = parse(&BASE).unwrap();
        assert_eq!((s.width, s.height), (640, 360));
        assert_eq!(
            (s.profile_idc, s.level_idc, s.chroma_format_idc),
            (66, 31, 1)
        );
        assert_eq!((s.full_range, s.matrix), (false, Matrix::Bt601));
    }

    #[test]
    fn high_profile_with_scaling_lists_and_vui() {
        let o = Opt {
            profile: 100,
            scaling: true,
            poc_type: 1,
            width_mbs: 120,
            height_units: 68,
            crop: [0, 0, 0, 4],
            vui: Some((true, Some(1))),
            ..BASE
        };
        let s = parse(&o).unwrap();
        assert_eq!((s.width, s.height), (1920, 1080));
        assert_eq!((s.full_range, s.matrix), (true, Matrix::Bt709));
        // Without the scaling matrix the same fields must come out: the lists were skipped exactly.
        assert_eq!(
            parse(&Opt {
                scaling: false,
                ..o
            })
            .unwrap(),
            s
        );
    }

    #[test]
    fn interlaced_height_counts_both_fields() {
        let o = Opt {
            profile: 77,
            frame_mbs_only: false,
            width_mbs: 45,
            height_units: 18,
            crop: [0, 0, 0, 0],
            poc_type: 0,
            ..BASE
        };
        assert_eq!(
            (parse(&o).unwrap().width, parse(&o).unwrap().height),
            (720, 576)
        );
        // Crop units double vertically: 2 (4:2:0) × 2 (fields) per unit.
        let s = parse(&Opt {
            crop: [1, 1, 1, 1],
            ..o
        })
        .unwrap();
        assert_eq!((s.width, s.height), (716, 568));
    }

    #[test]
    fn matrix_and_range_mapping() {
        for (vui, expected) in [
            (Some((false, Some(1))), (false, Matrix::Bt709)),
            (Some((false, Some(5))), (false, Matrix::Bt601)),
            (Some((true, Some(6))), (true, Matrix::Bt601)),
            (Some((false, Some(2))), (false, Matrix::Bt601)),
            (Some((false, Some(9))), (false, Matrix::Bt601)),
            (Some((true, None)), (true, Matrix::Bt601)),
            (None, (false, Matrix::Bt601)),
        ] {
            let s = parse(&Opt { vui, ..BASE }).unwrap();
            assert_eq!((s.full_range, s.matrix), expected, "{vui:?}");
        }
    }

    #[test]
    fn truncated_vui_is_tolerated() {
        let full = build(&Opt {
            vui: Some((true, Some(1))),
            ..BASE
        });
        let base = build(&BASE);
        // Every cut inside the VUI parses with defaults for what was not reached.
        for cut in base.len()..full.len() {
            let s = parse_sps(&full[..cut]).unwrap();
            assert_eq!((s.width, s.height), (640, 360), "cut {cut}");
        }
        assert_eq!(parse_sps(&full).unwrap().matrix, Matrix::Bt709);
    }

    #[test]
    fn emulation_prevention_is_removed() {
        let nal = build(&Opt {
            vui: Some((true, Some(1))),
            ..BASE
        });
        assert!(nal.windows(3).any(|w| w == [0, 0, 3]), "{nal:02x?}");
        let s = parse_sps(&nal).unwrap();
        // The fields after the escaped run come out right only if the 0x03 was removed.
        assert_eq!((s.full_range, s.matrix), (true, Matrix::Bt709));
        assert_eq!(unescape(&[0, 0, 3, 0, 0, 3, 3, 1]), [0, 0, 0, 0, 3, 1]);
        assert_eq!(unescape(&[0, 3, 0, 0, 0, 3]), [0, 3, 0, 0, 0]);
    }

    #[test]
    fn rejected_streams_name_the_value() {
        let high = Opt {
            profile: 100,
            ..BASE
        };
        assert_eq!(
            parse(&Opt {
                chroma: 2,
                ..high.clone()
            }),
            Err(MediaError::ChromaFormat(2))
        );
        assert_eq!(
            parse(&Opt {
                chroma: 0,
                ..high.clone()
            }),
            Err(MediaError::ChromaFormat(0))
        );
        assert_eq!(
            parse(&Opt {
                chroma: 3,
                profile: 244,
                ..high.clone()
            }),
            Err(MediaError::ChromaFormat(3))
        );
        assert_eq!(
            parse(&Opt {
                chroma: 3,
                separate_planes: true,
                profile: 244,
                ..high.clone()
            }),
            Err(MediaError::ChromaFormat(3))
        );
        assert_eq!(
            parse(&Opt {
                bit_depth_minus8: 2,
                profile: 110,
                ..high.clone()
            }),
            Err(MediaError::BitDepth {
                luma: 10,
                chroma: 10
            })
        );
        assert_eq!(
            parse(&Opt {
                width_mbs: 520,
                height_units: 10,
                crop: [0; 4],
                ..BASE
            }),
            Err(MediaError::Dimensions {
                width: 8320,
                height: 160
            })
        );
        assert_eq!(
            parse(&Opt {
                crop: [5, 5, 0, 0],
                width_mbs: 1,
                ..BASE
            }),
            Err(MediaError::Cropping {
                coded_width: 16,
                coded_height: 368,
                crop_x: 20,
                crop_y: 0
            })
        );
        assert_eq!(
            parse(&Opt {
                crop: [4, 4, 0, 0],
                width_mbs: 1,
                ..BASE
            }),
            Err(MediaError::Cropping {
                coded_width: 16,
                coded_height: 368,
                crop_x: 16,
                crop_y: 0
            })
        );
        assert_eq!(parse_sps(&[0x68, 0xce]), Err(MediaError::NotSps(8)));
        assert_eq!(parse_sps(&[]), Err(MediaError::NotSps(0)));
        assert_eq!(
            parse_sps(&[0x67, 66, 0, 30, 0b0000_0111, 0b1110_0000]),
            Err(MediaError::SpsField {
                field: "seq_parameter_set_id",
                value: 62
            })
        );
        // 40 zero bits: an Exp-Golomb code longer than any field allows.
        assert!(matches!(
            parse_sps(&[0x67, 66, 0, 30, 0, 0, 3, 0, 0, 3, 0, 0x80]),
            Err(MediaError::SpsField {
                value: u64::MAX,
                ..
            })
        ));
    }

    #[test]
    fn every_truncation_before_the_vui_is_an_error() {
        let nal = build(&Opt {
            profile: 100,
            scaling: true,
            ..BASE
        });
        for cut in 0..nal.len() - 1 {
            assert!(parse_sps(&nal[..cut]).is_err(), "cut {cut}");
        }
        assert!(matches!(
            parse_sps(&nal[..6]),
            Err(MediaError::SpsTruncated { .. })
        ));
    }

    /// (ms, SpsInfo) of every sequence header of a fixture.
    fn fixture_sps(name: &str) -> Vec<(u32, SpsInfo)> {
        fixtures::video(name)
            .into_iter()
            .filter(|(_, t)| t.kind == PacketKind::SequenceHeader)
            .map(|(ts, t)| {
                let config = parse_decoder_config(&t.body).unwrap();
                (ts, parse_sps(&config.sps[0]).unwrap())
            })
            .collect()
    }

    #[test]
    fn fixtures_give_ffprobe_dimensions() {
        for f in fixtures::ALL {
            let (name, headers) = (f.name, f.sizes);
            let got: Vec<(u32, u32)> = fixture_sps(name)
                .iter()
                .map(|(_, s)| (s.width, s.height))
                .collect();
            assert_eq!(got, headers, "{name}");
        }
        let profile_level = |name| {
            let s = fixture_sps(name)[0].1;
            (s.profile_idc, s.level_idc)
        };
        assert_eq!(profile_level("baseline_640x360_gop1s.flv"), (66, 30));
        assert_eq!(profile_level("high_1280x720_bframes_aac.flv"), (100, 31));
        assert_eq!(profile_level("high_1920x1080_gop2s.flv"), (100, 40));
    }

    #[test]
    fn fixture_colour_description() {
        let bars = fixture_sps("bt709_bars_1280x720.flv")[0].1;
        assert_eq!((bars.matrix, bars.full_range), (Matrix::Bt709, false));
        for name in ["baseline_640x360_gop1s.flv", "high_1920x1080_gop2s.flv"] {
            let s = fixture_sps(name)[0].1;
            assert_eq!((s.matrix, s.full_range), (Matrix::Bt601, false), "{name}");
        }
    }

    #[test]
    fn fixture_resolution_change_in_order() {
        let got: Vec<(u32, u32, u32)> = fixture_sps("resolution_change.flv")
            .iter()
            .map(|(ts, s)| (*ts, s.width, s.height))
            .collect();
        assert_eq!(got, [(0, 640, 360), (6000, 1280, 720)]);
    }

    /// Deterministic pseudo-random mutations of real and hand-built SPSs: no input may panic.
    #[test]
    fn mutated_sps_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut inputs = vec![build(&Opt {
            profile: 100,
            scaling: true,
            vui: Some((true, Some(1))),
            ..BASE
        })];
        inputs.extend(fixture_sps_nals());
        let mut ok = 0;
        for _ in 0..5000 {
            for input in &inputs {
                let mut m = input.clone();
                let i = 1 + (rand() as usize) % (m.len() - 1);
                m[i] = rand() as u8;
                ok += usize::from(parse_sps(&m).is_ok());
            }
        }
        assert!(ok > 0, "some mutations still parse");
    }

    fn fixture_sps_nals() -> Vec<Vec<u8>> {
        fixtures::ALL
            .iter()
            .flat_map(|f| fixtures::video(f.name))
            .filter(|(_, t)| t.kind == PacketKind::SequenceHeader)
            .map(|(_, t)| parse_decoder_config(&t.body).unwrap().sps[0].to_vec())
            .collect()
    }
}
