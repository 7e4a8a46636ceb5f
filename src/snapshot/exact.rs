//! Exact-time snapshots (a rule's `exact = true`): the picture at `t0 + k × interval`
//! even when keyframes are rarer than the interval.
//!
//! [`ExactScheduler`] (no I/O, fed every AVC frame of a publish in decode order) keeps
//! the compressed frames since the last keyframe — clones of each message's shared
//! `Bytes`, never copies — bounded in bytes (`snapshot.exact_gop_bytes`) and in frames
//! (`snapshot.exact_max_frames`), and picks for each due time the first frame at or
//! after it in presentation order (`pts = dts + composition time`). A candidate is final
//! once a frame arrives whose decode time reaches the candidate's presentation time
//! (no later frame can present earlier), or at the next keyframe, or at the end.
//!
//! [`ExactDecoder`] (in a pool worker, never on the async runtime) decodes forward from
//! the keyframe to that frame with openh264 in its no-flush mode, whose pictures come
//! out in presentation order (the B-frame reordering done), and keeps the one whose rank
//! in presentation order is the target's. The default flush mode returns pictures in
//! decode order and fails a few B-frames into a GOP (openh264 2.7.0: native code 0x4000),
//! hence a decoder of its own.
//!
//! Fallbacks to the GOP's keyframe (counted as `livesnap_exact_fallbacks_total{reason}`):
//! `frame_cap` (the target is more than `exact_max_frames` frames into its GOP),
//! `gop_bytes` (the GOP outgrew `exact_gop_bytes`, its frames were let go) and
//! `decode_error` (openh264 refused a frame of the GOP, for example a slice type it cannot
//! decode; the pool renders the keyframe instead).

use bytes::Bytes;
use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::OpenH264API;

use crate::media::avc;
use crate::snapshot::decode::{copy_picture, DecodeError, YuvFrame};
use crate::snapshot::scheduler::MAX_FORWARD_JUMP_MS;

/// The bounds of exact mode (`[snapshot] exact_gop_bytes`, `exact_max_frames`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExactLimits {
    /// Bytes of compressed frames one stream keeps since its last keyframe.
    pub gop_bytes: u64,
    /// Frames decoded for one snapshot at most (the keyframe included).
    pub max_frames: usize,
}

impl Default for ExactLimits {
    fn default() -> Self {
        ExactLimits {
            gop_bytes: 32 << 20,
            max_frames: 300,
        }
    }
}

/// Why an exact snapshot is the keyframe's picture instead of the due frame's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The due frame is more than `exact_max_frames` frames into its GOP.
    FrameCap,
    /// The GOP outgrew `exact_gop_bytes`.
    GopBytes,
    /// openh264 could not decode a frame of the GOP.
    DecodeError,
}

impl Fallback {
    /// The `reason` label of `livesnap_exact_fallbacks_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Fallback::FrameCap => "frame_cap",
            Fallback::GopBytes => "gop_bytes",
            Fallback::DecodeError => "decode_error",
        }
    }
}

/// One exact snapshot to render: the GOP's keyframe, then the frames after it in decode
/// order up to and including the due frame; `rank` is the due frame's place in
/// presentation order among all of them (the keyframe is 0).
#[derive(Debug, Clone)]
pub struct ExactDue<C> {
    /// Presentation time of the picture, ms after the first keyframe's.
    pub offset_ms: u64,
    pub keyframe: Bytes,
    /// What the GOP's keyframe came with (the sequence header in force).
    pub context: C,
    pub forward: Vec<Bytes>,
    pub rank: usize,
    /// Set when the picture is the keyframe's for one of these reasons.
    pub fallback: Option<Fallback>,
}

struct GopFrame {
    data: Bytes,
    pts: i64,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    pts: i64,
    /// Decode-order index in the GOP (0 is the keyframe).
    index: usize,
}

/// The frames since the last keyframe and the choice of the due frames (see the module
/// documentation). `C` is what the keyframe came with (the sequence header in force).
pub struct ExactScheduler<C> {
    interval_ms: i64,
    limits: ExactLimits,
    last_ts: Option<u32>,
    /// Media clock: decode time in ms since the first keyframe (discontinuities absorbed).
    pos_ms: i64,
    /// The first keyframe's composition time: presentation times count from its picture.
    cts0: Option<i64>,
    next_due: i64,
    frames: Vec<GopFrame>,
    context: Option<C>,
    /// Frames of the GOP seen, kept or not.
    seen: usize,
    bytes: u64,
    overflowed: bool,
    pending: Option<Candidate>,
}

impl<C: Clone> ExactScheduler<C> {
    pub fn new(interval_secs: u32, limits: ExactLimits) -> Self {
        ExactScheduler {
            interval_ms: i64::from(interval_secs.max(1)) * 1000,
            limits,
            last_ts: None,
            pos_ms: 0,
            cts0: None,
            next_due: 0,
            frames: Vec::new(),
            context: None,
            seen: 0,
            bytes: 0,
            overflowed: false,
            pending: None,
        }
    }

    /// Bytes of compressed frames held now (the keyframe included).
    pub fn gop_bytes(&self) -> u64 {
        self.bytes
    }

    /// One AVC frame in decode order: its RTMP timestamp (ms, wrapping), composition time,
    /// whether it is a keyframe, its AVCC access unit, and (for a keyframe) what it came
    /// with. Returns the snapshots this frame makes final (at most two).
    pub fn on_frame(
        &mut self,
        ts: u32,
        cts: i32,
        keyframe: bool,
        data: Bytes,
        context: impl FnOnce() -> C,
    ) -> Vec<ExactDue<C>> {
        if let Some(last) = self.last_ts {
            let delta = ts.wrapping_sub(last);
            if (delta as i32) >= 0 && delta <= MAX_FORWARD_JUMP_MS {
                self.pos_ms += i64::from(delta);
            }
        }
        self.last_ts = Some(ts);
        let cts = i64::from(cts);
        let cts0 = match self.cts0 {
            Some(c) => c,
            None if keyframe => *self.cts0.insert(cts),
            None => return Vec::new(),
        };
        let dts = self.pos_ms - cts0;
        let pts = self.pos_ms + cts - cts0;
        let mut out = Vec::new();
        if let Some(c) = self.pending {
            if keyframe || dts >= c.pts {
                out.extend(self.emit(c));
            }
        }
        let index = if keyframe {
            self.frames.clear();
            self.bytes = data.len() as u64;
            self.frames.push(GopFrame { data, pts });
            self.context = Some(context());
            self.seen = 1;
            self.overflowed = false;
            0
        } else {
            self.push(data, pts)
        };
        if pts >= self.next_due && self.context.is_some() {
            match self.pending {
                Some(c) if c.pts <= pts => {}
                _ => self.pending = Some(Candidate { pts, index }),
            }
        }
        if let Some(c) = self.pending {
            if dts >= c.pts {
                out.extend(self.emit(c));
            }
        }
        out
    }

    /// The end of the publish: the due frame still waiting for later frames, if any.
    pub fn finish(&mut self) -> Option<ExactDue<C>> {
        let c = self.pending?;
        self.emit(c)
    }

    fn push(&mut self, data: Bytes, pts: i64) -> usize {
        let index = self.seen;
        self.seen += 1;
        if self.frames.is_empty() || self.overflowed || index >= self.limits.max_frames {
            return index;
        }
        let len = data.len() as u64;
        if self.bytes.saturating_add(len) > self.limits.gop_bytes {
            // Let the GOP's frames go (the keyframe stays) until the next keyframe.
            self.overflowed = true;
            self.frames.truncate(1);
            self.bytes = self.frames[0].data.len() as u64;
        } else {
            self.bytes += len;
            self.frames.push(GopFrame { data, pts });
        }
        index
    }

    fn emit(&mut self, c: Candidate) -> Option<ExactDue<C>> {
        self.pending = None;
        self.next_due = (c.pts.max(0) / self.interval_ms + 1) * self.interval_ms;
        let key = self.frames.first()?;
        let context = self.context.clone()?;
        let fallback = if c.index == 0 {
            None
        } else if c.index >= self.limits.max_frames {
            Some(Fallback::FrameCap)
        } else if self.overflowed || c.index >= self.frames.len() {
            Some(Fallback::GopBytes)
        } else {
            None
        };
        if c.index == 0 || fallback.is_some() {
            return Some(ExactDue {
                offset_ms: key.pts.max(0) as u64,
                keyframe: key.data.clone(),
                context,
                forward: Vec::new(),
                rank: 0,
                fallback,
            });
        }
        let upto = &self.frames[..=c.index];
        Some(ExactDue {
            offset_ms: c.pts.max(0) as u64,
            keyframe: key.data.clone(),
            context,
            forward: upto[1..].iter().map(|f| f.data.clone()).collect(),
            rank: upto.iter().filter(|f| f.pts < c.pts).count(),
            fallback: None,
        })
    }
}

/// Why decoding forward from a keyframe failed (the pool then renders the keyframe).
#[derive(Debug, thiserror::Error)]
pub enum ExactError {
    #[error("frame {index} after the keyframe: {source}")]
    Media {
        index: usize,
        #[source]
        source: crate::media::flv::MediaError,
    },
    /// Parameter sets reach openh264 only with a keyframe, after their size check.
    #[error("frame {index} after the keyframe carries an in-band SPS")]
    InBandSps { index: usize },
    #[error("frame {index} after the keyframe: {source}")]
    Decode {
        index: usize,
        #[source]
        source: DecodeError,
    },
    #[error("openh264 gave {outputs} pictures for the frames fed, the due frame is number {rank}")]
    NotReached { outputs: usize, rank: usize },
}

/// An openh264 decoder in no-flush mode (pictures in presentation order), for decoding
/// forward from a keyframe. One per pool worker; its openh264 decoder is created afresh
/// for each snapshot (a creation costs far less than the frames decoded after it).
pub struct ExactDecoder {
    max_pixels: u64,
    decoder: Option<Decoder>,
    annex_b: Vec<u8>,
}

impl ExactDecoder {
    pub fn new(max_pixels: u64) -> Self {
        ExactDecoder {
            max_pixels,
            decoder: None,
            annex_b: Vec::new(),
        }
    }

    /// Decodes `keyframe` (Annex B, with its checked parameter sets), then `forward` (AVCC
    /// access units in decode order, `length_size`-byte lengths), and puts the picture of
    /// presentation rank `rank` in `frame`. On error the decoder is dropped.
    pub fn decode(
        &mut self,
        keyframe: &[u8],
        forward: &[Bytes],
        length_size: u8,
        rank: usize,
        frame: &mut YuvFrame,
    ) -> Result<(), ExactError> {
        let r = self.decode_inner(keyframe, forward, length_size, rank, frame);
        if r.is_err() {
            self.decoder = None;
        }
        r
    }

    fn decode_inner(
        &mut self,
        keyframe: &[u8],
        forward: &[Bytes],
        length_size: u8,
        rank: usize,
        frame: &mut YuvFrame,
    ) -> Result<(), ExactError> {
        let max_pixels = self.max_pixels;
        let decode_err = |index: usize| move |source| ExactError::Decode { index, source };
        // A fresh decoder per snapshot: a kept one, given the same IDR again after
        // outputting later pictures of its GOP, put B-frame pictures out of order.
        self.decoder = None;
        if self.decoder.is_none() {
            let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
            let d =
                Decoder::with_api_config(OpenH264API::from_source(), config).map_err(|source| {
                    ExactError::Decode {
                        index: 0,
                        source: DecodeError::Openh264 {
                            context: "creating a no-flush decoder",
                            source,
                        },
                    }
                })?;
            self.decoder = Some(d);
        }
        let decoder = self.decoder.as_mut().expect("created above");
        let mut outputs = 0usize;
        let mut take = |picture: openh264::decoder::DecodedYUV<'_>, index: usize| {
            let hit = outputs == rank;
            outputs += 1;
            if hit {
                copy_picture(&picture, max_pixels, frame).map_err(decode_err(index))?;
            }
            Ok::<(), ExactError>(())
        };
        let openh264_err = |index: usize| {
            move |source| ExactError::Decode {
                index,
                source: DecodeError::Openh264 {
                    context: "decoding forward from a keyframe",
                    source,
                },
            }
        };
        if let Some(p) = decoder.decode(keyframe).map_err(openh264_err(0))? {
            take(p, 0)?;
        }
        for (i, body) in forward.iter().enumerate() {
            let index = i + 1;
            let sps = avc::in_band_sps(body, length_size)
                .map_err(|source| ExactError::Media { index, source })?;
            if !sps.is_empty() {
                return Err(ExactError::InBandSps { index });
            }
            avc::to_annex_b(body, length_size, None, &mut self.annex_b)
                .map_err(|source| ExactError::Media { index, source })?;
            if let Some(p) = decoder.decode(&self.annex_b).map_err(openh264_err(index))? {
                take(p, index)?;
            }
        }
        for p in decoder
            .flush_remaining()
            .map_err(openh264_err(forward.len()))?
        {
            take(p, forward.len())?;
        }
        // Every frame fed gives one picture; fewer means frames were skipped or lost, and
        // the rank would point at another picture.
        if outputs != forward.len() + 1 || outputs <= rank {
            return Err(ExactError::NotReached { outputs, rank });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_frames: usize, gop_bytes: u64) -> ExactLimits {
        ExactLimits {
            gop_bytes,
            max_frames,
        }
    }

    /// Feeds frames (ts, cts, keyframe) of 10 bytes each; returns (offset, keyframe ts,
    /// forward count, rank, fallback) of every due snapshot, the finish included.
    fn run(
        interval: u32,
        lim: ExactLimits,
        frames: &[(u32, i32, bool)],
    ) -> Vec<(u64, u32, usize, usize, Option<Fallback>)> {
        let mut s = ExactScheduler::<u32>::new(interval, lim);
        let mut out = Vec::new();
        for &(ts, cts, key) in frames {
            for d in s.on_frame(ts, cts, key, Bytes::from(vec![0u8; 10]), || ts) {
                out.push((d.offset_ms, d.context, d.forward.len(), d.rank, d.fallback));
            }
        }
        if let Some(d) = s.finish() {
            out.push((d.offset_ms, d.context, d.forward.len(), d.rank, d.fallback));
        }
        out
    }

    /// 25 fps without B-frames, keyframes every `gop` frames, `n` frames.
    fn baseline(gop: u32, n: u32) -> Vec<(u32, i32, bool)> {
        (0..n).map(|i| (i * 40, 0, i % gop == 0)).collect()
    }

    #[test]
    fn long_gop_without_b_frames_takes_the_frame_at_each_due_time() {
        // 8 s GOP (200 frames), 5 s interval, 21 s: due at 0, 5, 10, 15, 20 s.
        let got = run(5, ExactLimits::default(), &baseline(200, 525));
        assert_eq!(
            got,
            [
                (0, 0, 0, 0, None),
                (5000, 0, 125, 125, None),
                (10000, 8000, 50, 50, None),
                (15000, 8000, 175, 175, None),
                (20000, 16000, 100, 100, None),
            ]
        );
    }

    #[test]
    fn b_frames_are_chosen_in_presentation_order() {
        // Decode order I P B B P B B … (x264 -bf 2): a P shows 3 frames after the I, its
        // two B-frames between. 40 ms frames, the keyframe presents at +80 ms.
        let mut frames = Vec::new();
        for i in 0..300u32 {
            let ts = i * 40;
            let (cts, key) = match i {
                0 => (80, true),
                _ if i % 3 == 1 => (120, false), // P: shows 2 frames later than decoded
                _ => (0, false),                 // B
            };
            frames.push((ts, cts, key));
        }
        let got = run(5, ExactLimits::default(), &frames);
        // Due 0 is the keyframe; due 5000 (after cts0 = 80: pts 5080 absolute) is the
        // frame presenting at 5000 relative.
        assert_eq!(got[0], (0, 0, 0, 0, None));
        let (offset, _, forward, rank, fallback) = got[1];
        assert_eq!((offset, fallback), (5000, None));
        // Presenting at 5080 absolute: decode index i with pts = i*40 + cts.
        let target = frames
            .iter()
            .position(|&(ts, cts, _)| i64::from(ts) + i64::from(cts) == 5080)
            .unwrap();
        assert_eq!(forward, target);
        let earlier = frames[..=target]
            .iter()
            .filter(|&&(ts, cts, _)| i64::from(ts) + i64::from(cts) < 5080)
            .count();
        assert_eq!(rank, earlier);
    }

    #[test]
    fn over_the_frame_cap_or_the_byte_bound_falls_back_to_the_keyframe() {
        let got = run(5, limits(100, 1 << 20), &baseline(200, 300));
        assert_eq!(
            got,
            [
                (0, 0, 0, 0, None),
                (0, 0, 0, 0, Some(Fallback::FrameCap)),
                (10000, 8000, 50, 50, None),
            ]
        );
        // 50 frames of 10 bytes fit in 600 bytes (keyframe included), 125 do not.
        let got = run(5, limits(300, 600), &baseline(200, 260));
        assert_eq!(got[1], (0, 0, 0, 0, Some(Fallback::GopBytes)));
        let got = run(5, limits(300, 10 * 126), &baseline(200, 260));
        assert_eq!(got[1], (5000, 0, 125, 125, None));
    }

    #[test]
    fn the_gop_holds_the_messages_own_bytes() {
        let mut s = ExactScheduler::<()>::new(5, ExactLimits::default());
        let message = Bytes::from(vec![7u8; 64]);
        let mut sent = Vec::new();
        let mut dues = Vec::new();
        for i in 0..126u32 {
            // As the ingest does: the tag body is a slice of the message.
            let body = message.slice(i as usize % 8..);
            sent.push(body.as_ptr());
            dues.extend(s.on_frame(i * 40, 0, i == 0, body, || ()));
        }
        assert_eq!(s.gop_bytes(), (0..126).map(|i| 64 - i % 8).sum::<u64>());
        let due = dues.pop().unwrap();
        assert_eq!(due.forward.len(), 125);
        assert_eq!(due.keyframe.as_ptr(), sent[0]);
        for (f, p) in due.forward.iter().zip(&sent[1..]) {
            assert_eq!(f.as_ptr(), *p, "a copy");
        }
    }

    #[test]
    fn gaps_and_discontinuities_do_not_burst() {
        // A 12 s gap inside one GOP: due 5 and 10 both fall on the first frame after it.
        let mut frames = baseline(1000, 50); // 0..2 s
        frames.extend((0..50).map(|i| (14_000 + i * 40, 0, false)));
        let got = run(5, ExactLimits::default(), &frames);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            [0, 14_000, 15_000]
        );
        // Timestamps restart at 0: the clock holds, no snapshot is due twice.
        let mut frames = baseline(1000, 100);
        frames.extend((0..100).map(|i| (i * 40, 0, false)));
        let got = run(5, ExactLimits::default(), &frames);
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [0, 5000]);
    }
}
