//! Keyframe → picture: the one place that turns a due keyframe (an AVCC access unit
//! and the sequence header in force) into an encoded picture. Owns a decoder, an
//! encoder and their buffers for reuse; the pool gives each worker one, and the admin
//! API's on-demand snapshot makes its own. Codec panics are caught here.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::media::avc::{self, AvcConfig};
use crate::media::sps;
use crate::snapshot::color::ColorInfo;
use crate::snapshot::decode::{KeyframeDecoder, YuvFrame};
use crate::snapshot::encode::JpegEncoder;

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
        catch_unwind(AssertUnwindSafe(|| self.render_inner(body, config))).unwrap_or_else(|p| {
            Err(RenderError::Panicked(crate::util::panic_message(
                p.as_ref(),
            )))
        })
    }

    fn render_inner(&mut self, body: &Bytes, cfg: &AvcConfig) -> Result<Rendered, RenderError> {
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
        if u64::from(info.width) * u64::from(info.height) > self.max_pixels {
            return Err(RenderError::TooLarge {
                width: info.width,
                height: info.height,
                max: self.max_pixels,
            });
        }
        self.params_key.clear();
        self.params_key.extend_from_slice(sps_nal);
        self.params_key.extend_from_slice(pps_nal);
        avc::to_annex_b(body, cfg.length_size, Some(cfg), &mut self.annex_b)?;
        let t0 = Instant::now();
        self.decoder
            .decode(&self.annex_b, &self.params_key, &mut self.frame)?;
        let t1 = Instant::now();
        let color = ColorInfo::from(&info);
        let jpeg = self.encoder.encode(&self.frame, color)?;
        Ok(Rendered {
            jpeg: Bytes::from(jpeg),
            width: self.frame.width as u32,
            height: self.frame.height as u32,
            decode_time: t1 - t0,
            encode_time: t1.elapsed(),
        })
    }
}
