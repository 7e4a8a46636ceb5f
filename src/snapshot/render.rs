//! Keyframe → picture: the one place that turns a due keyframe (an AVCC access unit
//! and the sequence header in force) into an encoded picture. Owns a decoder, an
//! encoder and their buffers for reuse; the pool gives each worker one, and the admin
//! API's on-demand snapshot makes its own. Codec panics are caught here.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::health::{self, Luma};
use crate::media::avc::{self, AvcConfig};
use crate::media::sps;
use crate::snapshot::color::ColorInfo;
use crate::snapshot::decode::{KeyframeDecoder, YuvFrame};
use crate::snapshot::encode::JpegEncoder;
use crate::snapshot::exact::ExactDecoder;

/// Why a keyframe gave no picture.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("AVC data: {0}")]
    Media(#[from] crate::media::flv::MediaError),
    #[error("no SPS in the sequence header or the keyframe")]
    NoSps,
    #[error("no PPS in the sequence header or the keyframe")]
    NoPps,
    #[error("picture {width}x{height} exceeds limits.max_picture_pixels = {max}")]
    TooLarge { width: u32, height: u32, max: u64 },
    #[error("decode: {0}")]
    Decode(#[from] crate::snapshot::decode::DecodeError),
    #[error("encode: {0}")]
    Encode(#[from] crate::snapshot::encode::EncodeError),
    #[error("worker panicked: {0}")]
    Panicked(String),
    /// Decoding forward from the keyframe failed (exact mode: render the keyframe instead).
    #[error("exact: {0}")]
    Exact(#[from] crate::snapshot::exact::ExactError),
}

/// An encoded picture.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub jpeg: Bytes,
    pub width: u32,
    pub height: u32,
    /// Time spent decoding and encoding.
    pub decode_time: Duration,
    pub encode_time: Duration,
    /// The decoded picture's luma thumbnail and statistics, for the stream's health.
    pub luma: Option<Luma>,
}

/// Keyframe → JPEG, with its decoder, encoder and buffers kept for reuse.
pub struct Renderer {
    decoder: KeyframeDecoder,
    encoder: JpegEncoder,
    frame: YuvFrame,
    annex_b: Vec<u8>,
    params_key: Vec<u8>,
    max_pixels: u64,
}

impl Renderer {
    pub fn new(quality: u8, max_pixels: u64) -> Renderer {
        Renderer {
            decoder: KeyframeDecoder::new(max_pixels),
            encoder: JpegEncoder::new(quality),
            frame: YuvFrame::new(),
            annex_b: Vec::new(),
            params_key: Vec::new(),
            max_pixels,
        }
    }

    /// Decodes one keyframe (an AVCC access unit, with the sequence header in force)
    /// and encodes it as a JPEG. A panic inside either codec is caught and returned as
    /// an error.
    pub fn render(&mut self, body: &Bytes, config: &AvcConfig) -> Result<Rendered, RenderError> {
        catch_unwind(AssertUnwindSafe(|| self.render_inner(body, config, None))).unwrap_or_else(
            |p| {
                Err(RenderError::Panicked(crate::util::panic_message(
                    p.as_ref(),
                )))
            },
        )
    }

    /// Exact mode: [`Renderer::render`], but the picture is the one of presentation rank
    /// `rank` after decoding `forward` (the frames after the keyframe, in decode order)
    /// with `exact`'s decoder.
    pub fn render_exact(
        &mut self,
        exact: &mut ExactDecoder,
        body: &Bytes,
        forward: &[Bytes],
        rank: usize,
        config: &AvcConfig,
    ) -> Result<Rendered, RenderError> {
        let forward = Some((exact, forward, rank));
        catch_unwind(AssertUnwindSafe(|| {
            self.render_inner(body, config, forward)
        }))
        .unwrap_or_else(|p| {
            Err(RenderError::Panicked(crate::util::panic_message(
                p.as_ref(),
            )))
        })
    }

    fn render_inner(
        &mut self,
        body: &Bytes,
        cfg: &AvcConfig,
        forward: Option<(&mut ExactDecoder, &[Bytes], usize)>,
    ) -> Result<Rendered, RenderError> {
        let au = avc::scan_access_unit(body, cfg.length_size)?;
        // In-band parameter sets win over the sequence header's.
        let sps_nal = au
            .sps
            .as_ref()
            .or(cfg.sps.first())
            .ok_or(RenderError::NoSps)?;
        let pps_nal = au
            .pps
            .as_ref()
            .or(cfg.pps.first())
            .ok_or(RenderError::NoPps)?;
        let info = sps::parse_sps(sps_nal)?;
        // The picture-size cap holds for every SPS of the sequence header and of the access
        // unit, not only the one whose picture we expect: openh264 sizes its buffers from
        // whichever it is given, so none reaches it unchecked.
        let in_band = avc::in_band_sps(body, cfg.length_size)?;
        for nal in cfg.sps.iter().map(|s| &s[..]).chain(in_band) {
            self.check_size(&sps::parse_sps(nal)?)?;
        }
        self.params_key.clear();
        self.params_key.extend_from_slice(sps_nal);
        self.params_key.extend_from_slice(pps_nal);
        avc::to_annex_b(body, cfg.length_size, Some(cfg), &mut self.annex_b)?;
        let t0 = Instant::now();
        match forward {
            None => self
                .decoder
                .decode(&self.annex_b, &self.params_key, &mut self.frame)?,
            Some((exact, frames, rank)) => exact.decode(
                &self.annex_b,
                frames,
                cfg.length_size,
                rank,
                &mut self.frame,
            )?,
        }
        let t1 = Instant::now();
        let f = &self.frame;
        let luma = health::analyze(&f.y, f.y_stride, f.width, f.height);
        let color = ColorInfo::from(&info);
        let jpeg = self.encoder.encode(&self.frame, color)?;
        Ok(Rendered {
            luma,
            jpeg: Bytes::from(jpeg),
            width: self.frame.width as u32,
            height: self.frame.height as u32,
            decode_time: t1 - t0,
            encode_time: t1.elapsed(),
        })
    }

    /// `limits.max_picture_pixels` against one SPS's picture.
    fn check_size(&self, info: &sps::SpsInfo) -> Result<(), RenderError> {
        if u64::from(info.width) * u64::from(info.height) > self.max_pixels {
            return Err(RenderError::TooLarge {
                width: info.width,
                height: info.height,
                max: self.max_pixels,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::avc::parse_decoder_config;
    use crate::media::flv::{fixtures, PacketKind};

    /// The first sequence header and keyframe of a fixture.
    fn first_keyframe(name: &str) -> (AvcConfig, Bytes) {
        let mut config = None;
        for (_, tag) in fixtures::video(name) {
            match tag.kind {
                PacketKind::SequenceHeader => {
                    config = Some(parse_decoder_config(&tag.body).unwrap())
                }
                PacketKind::Nalus if tag.keyframe => return (config.unwrap(), tag.body),
                _ => {}
            }
        }
        panic!("{name}: no keyframe");
    }

    /// A Baseline SPS (id 0) of `width_mbs` × `height_mbs` macroblocks, no cropping, no VUI.
    fn baseline_sps(width_mbs: u64, height_mbs: u64) -> Vec<u8> {
        let mut bits: Vec<bool> = Vec::new();
        let mut u = |n: u32, v: u64| (0..n).rev().for_each(|i| bits.push((v >> i) & 1 == 1));
        let ue = |v: u64, u: &mut dyn FnMut(u32, u64)| {
            let n = 64 - (v + 1).leading_zeros();
            u(n - 1, 0);
            u(n, v + 1);
        };
        u(8, 66); // profile_idc
        u(8, 0); // constraint flags
        u(8, 40); // level_idc
        ue(0, &mut u); // seq_parameter_set_id
        ue(0, &mut u); // log2_max_frame_num_minus4
        ue(2, &mut u); // pic_order_cnt_type
        ue(1, &mut u); // max_num_ref_frames
        u(1, 0); // gaps_in_frame_num_value_allowed_flag
        ue(width_mbs - 1, &mut u);
        ue(height_mbs - 1, &mut u);
        u(1, 1); // frame_mbs_only_flag
        u(1, 1); // direct_8x8_inference_flag
        u(1, 0); // frame_cropping_flag
        u(1, 0); // vui_parameters_present_flag
        u(1, 1); // rbsp stop bit
        let rbsp: Vec<u8> = bits
            .chunks(8)
            .map(|c| (0..8).fold(0u8, |b, i| b << 1 | u8::from(c.get(i) == Some(&true))))
            .collect();
        let mut nal = vec![0x67];
        let mut zeros = 0;
        for b in rbsp {
            if zeros >= 2 && b <= 3 {
                nal.push(3);
                zeros = 0;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            nal.push(b);
        }
        nal
    }

    /// `body` with `nals` put in front of its NAL units, with `length_size`-byte lengths.
    fn prepend(nals: &[&[u8]], body: &[u8], length_size: u8) -> Bytes {
        let mut out = Vec::new();
        for nal in nals {
            let len = (nal.len() as u32).to_be_bytes();
            out.extend_from_slice(&len[4 - usize::from(length_size)..]);
            out.extend_from_slice(nal);
        }
        out.extend_from_slice(body);
        Bytes::from(out)
    }

    #[test]
    fn every_sps_is_checked_before_openh264_sees_it() {
        let (config, body) = first_keyframe("baseline_640x360_gop1s.flv");
        let huge = baseline_sps(512, 512);
        let info = sps::parse_sps(&huge).unwrap();
        assert_eq!((info.width, info.height), (8192, 8192));
        let fitting = config.sps[0].clone();
        let max = 4096 * 2304;

        // The second in-band SPS of the keyframe declares 8192x8192: refused, and no
        // decoder was ever created for it.
        let mut renderer = Renderer::new(80, max);
        let au = prepend(&[&fitting, &huge], &body, config.length_size);
        match renderer.render(&au, &config) {
            Err(RenderError::TooLarge {
                width,
                height,
                max: m,
            }) => {
                assert_eq!((width, height, m), (8192, 8192, max))
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(renderer.decoder.decoders_created(), 0);

        // A second SPS in the sequence header is checked too.
        let mut two = config.clone();
        two.sps.push(Bytes::from(huge.clone()));
        assert!(matches!(
            renderer.render(&body, &two),
            Err(RenderError::TooLarge { width: 8192, .. })
        ));
        assert_eq!(renderer.decoder.decoders_created(), 0);

        // The same keyframe with its own SPS in-band twice still renders: the stream goes on.
        let au = prepend(&[&fitting, &fitting], &body, config.length_size);
        let picture = renderer.render(&au, &config).unwrap();
        assert_eq!((picture.width, picture.height), (640, 360));
        assert_eq!(renderer.decoder.decoders_created(), 1);
    }

    #[test]
    fn a_rendered_picture_carries_its_luma() {
        // The fixture's moving test pattern: neither black nor flat.
        let (config, body) = first_keyframe("baseline_640x360_gop1s.flv");
        let picture = Renderer::new(80, 1 << 24).render(&body, &config).unwrap();
        let luma = picture
            .luma
            .expect("a decoded picture has a luma thumbnail");
        assert!(luma.spread > 40, "{luma:?}");
        assert!(luma.mean > 40.0, "{luma:?}");
    }

    /// The health transitions of every keyframe of a fixture, rendered in order, with
    /// the default thresholds.
    fn health_of(name: &str) -> Vec<(&'static str, bool)> {
        use crate::health::{Health, HealthConfig, Observation};
        let cfg = HealthConfig::default();
        let mut renderer = Renderer::new(80, 1 << 24);
        let mut health = Health::default();
        let mut out = Vec::new();
        let mut config = None;
        for (i, (_, tag)) in fixtures::video(name).into_iter().enumerate() {
            match tag.kind {
                PacketKind::SequenceHeader => {
                    config = Some(parse_decoder_config(&tag.body).unwrap())
                }
                PacketKind::Nalus if tag.keyframe => {
                    let pic = renderer
                        .render(&tag.body, config.as_ref().unwrap())
                        .unwrap();
                    let obs = Observation::Picture(pic.luma.unwrap());
                    health.observe(&cfg, obs, i as u64, &mut out);
                }
                _ => {}
            }
        }
        out.iter().map(|t| (t.condition.name(), t.start)).collect()
    }

    #[test]
    fn default_thresholds_fire_on_the_health_fixtures_only() {
        // Ordinary moving content, every keyframe compared with the one before (closer
        // in time than any snapshot interval): nothing. (bt709_bars is a still test
        // card: frozen by design.)
        for name in [
            "baseline_640x360_gop1s.flv",
            "high_1280x720_bframes_aac.flv",
            "high_1920x1080_gop2s.flv",
            "resolution_change.flv",
            "long_gop_640x360.flv",
            "keyframes_stop_640x360.flv",
        ] {
            assert_eq!(health_of(name), [], "{name}");
        }
        assert_eq!(health_of("black_640x360.flv"), [("black", true)]);
        assert_eq!(health_of("frozen_640x360.flv"), [("frozen", true)]);
    }
}
