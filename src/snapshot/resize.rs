//! Resizing a decoded picture in its own Y'CbCr planes (4:2:0), before colour conversion and
//! encoding, with `fast_image_resize` (SIMD convolution, one pass per plane).
//!
//! [`Layout::plan`] turns a picture size and an output's box (`width` and/or `height`, a
//! [`Fit`]) into the output's size and where the picture lands in it; [`Resizer::resize`]
//! applies it. Rules that hold for every fit:
//!
//! - Never upscale. `scale` with a box larger than the picture gives the picture's size;
//!   `pad` and `crop` shrink a box the picture cannot fill without upscaling, keeping the
//!   box's aspect ratio (so the picture keeps its size and the bars or the cut stay).
//! - `scale` keeps the aspect ratio inside the box (one side may be left out); `pad`
//!   letterboxes to the exact box with black bars; `crop` fills the box and cuts the middle.
//! - Offsets of the picture inside a padded box are even, so chroma lines up with luma.
//!
//! This module must not decode, convert colour, encode or know about streams.

use fast_image_resize as fir;

use super::decode::YuvFrame;

pub use crate::rules::output::Fit;

/// Where a resized picture comes from and goes to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    /// The output's size.
    pub width: u32,
    pub height: u32,
    /// The part of the source that is used (luma samples): all of it but for `crop`.
    pub src: [f64; 4],
    /// Where that part lands in the output: (x, y, width, height), x and y even.
    pub dst: [u32; 4],
}

impl Layout {
    /// The layout of a `src_w`×`src_h` picture in a box of `width` and/or `height` (both
    /// `None`: the picture's own size). `pad` and `crop` without both sides act as `scale`
    /// (validation refuses that configuration before it gets here).
    pub fn plan(
        src_w: u32,
        src_h: u32,
        width: Option<u32>,
        height: Option<u32>,
        fit: Fit,
    ) -> Layout {
        let (sw, sh) = (f64::from(src_w.max(1)), f64::from(src_h.max(1)));
        let whole = [0.0, 0.0, sw, sh];
        let round = |v: f64| (v.round() as u32).max(1);
        match (width, height, fit) {
            (Some(bw), Some(bh), Fit::Pad) => {
                let (bw, bh) = (f64::from(bw.max(1)), f64::from(bh.max(1)));
                // The picture's scale inside the box, never above 1; the box shrinks with it.
                let s = (bw / sw).min(bh / sh);
                let k = if s > 1.0 { 1.0 / s } else { 1.0 };
                let s = s.min(1.0);
                let (ow, oh) = (round(bw * k), round(bh * k));
                let (iw, ih) = (round(sw * s).min(ow), round(sh * s).min(oh));
                let x = ((ow - iw) / 2) & !1;
                let y = ((oh - ih) / 2) & !1;
                Layout {
                    width: ow,
                    height: oh,
                    src: whole,
                    dst: [x, y, iw, ih],
                }
            }
            (Some(bw), Some(bh), Fit::Crop) => {
                let (bw, bh) = (f64::from(bw.max(1)), f64::from(bh.max(1)));
                let s = (bw / sw).max(bh / sh);
                let k = if s > 1.0 { 1.0 / s } else { 1.0 };
                let s = s.min(1.0);
                let (ow, oh) = (round(bw * k), round(bh * k));
                // The source rectangle that maps onto the whole box.
                let (cw, ch) = ((f64::from(ow) / s).min(sw), (f64::from(oh) / s).min(sh));
                Layout {
                    width: ow,
                    height: oh,
                    src: [(sw - cw) / 2.0, (sh - ch) / 2.0, cw, ch],
                    dst: [0, 0, ow, oh],
                }
            }
            (w, h, _) => {
                let sx = w.map_or(f64::INFINITY, |w| f64::from(w.max(1)) / sw);
                let sy = h.map_or(f64::INFINITY, |h| f64::from(h.max(1)) / sh);
                let s = sx.min(sy).min(1.0);
                let (ow, oh) = (round(sw * s), round(sh * s));
                Layout {
                    width: ow,
                    height: oh,
                    src: whole,
                    dst: [0, 0, ow, oh],
                }
            }
        }
    }

    /// True when the layout is the source picture itself (nothing to do).
    pub fn is_identity(&self, src_w: u32, src_h: u32) -> bool {
        self.width == src_w
            && self.height == src_h
            && self.dst == [0, 0, src_w, src_h]
            && self.src == [0.0, 0.0, f64::from(src_w), f64::from(src_h)]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    #[error("cannot resize a {width}x{height} picture: {reason}")]
    InvalidFrame {
        width: usize,
        height: usize,
        reason: &'static str,
    },
    #[error("resizer: {0}")]
    Resize(String),
}

/// Resizes [`YuvFrame`]s; keeps the resizer's buffers between calls (one per worker).
pub struct Resizer {
    inner: fir::Resizer,
    options: fir::ResizeOptions,
    /// A compact copy of a plane whose last row is shorter than its stride.
    compact: Vec<u8>,
    /// The resized picture before it is placed in a padded box.
    inner_plane: Vec<u8>,
}

impl Default for Resizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Resizer {
    pub fn new() -> Self {
        Self {
            inner: fir::Resizer::new(),
            // Catmull-Rom: a bicubic like ffmpeg's default scaler, with the convolution's
            // support widened on downscales (no aliasing on a 6x shrink).
            options: fir::ResizeOptions::new()
                .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::CatmullRom)),
            compact: Vec::new(),
            inner_plane: Vec::new(),
        }
    }

    /// Writes `src` laid out as `layout` says into `dst` (compact strides). `black` is
    /// (Y', Cb, Cr) of black in the source's coding, for the bars of `pad`.
    pub fn resize(
        &mut self,
        src: &YuvFrame,
        layout: &Layout,
        black: [u8; 3],
        dst: &mut YuvFrame,
    ) -> Result<(), ResizeError> {
        src.check_layout()
            .map_err(|reason| ResizeError::InvalidFrame {
                width: src.width,
                height: src.height,
                reason,
            })?;
        let (ow, oh) = (layout.width as usize, layout.height as usize);
        let (ocw, och) = (ow.div_ceil(2), oh.div_ceil(2));
        dst.width = ow;
        dst.height = oh;
        dst.y_stride = ow;
        dst.uv_stride = ocw;
        dst.y.clear();
        dst.y.resize(ow * oh, black[0]);
        dst.u.clear();
        dst.u.resize(ocw * och, black[1]);
        dst.v.clear();
        dst.v.resize(ocw * och, black[2]);
        let [sx, sy, sw, sh] = layout.src;
        let [dx, dy, dw, dh] = layout.dst.map(|v| v as usize);
        let luma = Plane {
            data: &src.y,
            stride: src.y_stride,
            width: src.width,
            height: src.height,
        };
        let crop = [sx, sy, sw, sh];
        self.plane(luma, crop, (dx, dy, dw, dh), &mut dst.y, ow)?;
        let (cw, ch) = (src.chroma_width(), src.chroma_height());
        let ccrop = [sx / 2.0, sy / 2.0, sw / 2.0, sh / 2.0];
        let cdst = (dx / 2, dy / 2, dw.div_ceil(2), dh.div_ceil(2));
        for (data, out) in [(&src.u, &mut dst.u), (&src.v, &mut dst.v)] {
            let plane = Plane {
                data,
                stride: src.uv_stride,
                width: cw,
                height: ch,
            };
            self.plane(plane, ccrop, cdst, out, ocw)?;
        }
        Ok(())
    }

    /// Resizes the `crop` of one plane into the rectangle `to` of `out` (row stride `out_stride`).
    fn plane(
        &mut self,
        p: Plane<'_>,
        crop: [f64; 4],
        to: (usize, usize, usize, usize),
        out: &mut [u8],
        out_stride: usize,
    ) -> Result<(), ResizeError> {
        let (x, y, w, h) = to;
        let err = |e: &dyn std::fmt::Display| ResizeError::Resize(e.to_string());
        // fast_image_resize reads `stride × height` bytes: a plane whose last row is not
        // padded to the stride is compacted first (rare: the decoder pads its planes).
        let (data, stride) = if p.data.len() >= p.stride * p.height {
            (p.data, p.stride)
        } else {
            self.compact.clear();
            for row in p.data.chunks(p.stride).take(p.height) {
                self.compact.extend_from_slice(&row[..p.width]);
            }
            (&self.compact[..], p.width)
        };
        let src =
            fir::images::ImageRef::new(stride as u32, p.height as u32, data, fir::PixelType::U8)
                .map_err(|e| err(&e))?;
        let [cx, cy, cw, ch] = crop;
        let cw = cw.min(p.width as f64 - cx).max(1.0);
        let ch = ch.min(p.height as f64 - cy).max(1.0);
        let options = self.options.crop(cx, cy, cw, ch);
        if (x, y, w) == (0, 0, out_stride) && out.len() == w * h {
            let mut dst =
                fir::images::Image::from_slice_u8(w as u32, h as u32, out, fir::PixelType::U8)
                    .map_err(|e| err(&e))?;
            return self
                .inner
                .resize(&src, &mut dst, &options)
                .map_err(|e| err(&e));
        }
        self.inner_plane.clear();
        self.inner_plane.resize(w * h, 0);
        let mut dst = fir::images::Image::from_slice_u8(
            w as u32,
            h as u32,
            &mut self.inner_plane,
            fir::PixelType::U8,
        )
        .map_err(|e| err(&e))?;
        self.inner
            .resize(&src, &mut dst, &options)
            .map_err(|e| err(&e))?;
        for (row, line) in self.inner_plane.chunks_exact(w).enumerate() {
            let at = (y + row) * out_stride + x;
            out[at..at + w].copy_from_slice(line);
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Plane<'a> {
    data: &'a [u8],
    stride: usize,
    width: usize,
    height: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testing::*;
    use crate::testing::pictures::psnr;

    fn size(l: &Layout) -> (u32, u32) {
        (l.width, l.height)
    }

    #[test]
    fn scale_keeps_the_aspect_ratio_and_never_upscales() {
        let p = |w, h| size(&Layout::plan(1920, 1080, w, h, Fit::Scale));
        assert_eq!(p(Some(320), None), (320, 180));
        assert_eq!(p(None, Some(180)), (320, 180));
        assert_eq!(p(Some(320), Some(320)), (320, 180));
        assert_eq!(p(Some(1000), Some(100)), (178, 100));
        assert_eq!(p(Some(4000), None), (1920, 1080));
        assert_eq!(p(None, None), (1920, 1080));
        assert!(Layout::plan(1920, 1080, Some(4000), None, Fit::Scale).is_identity(1920, 1080));
        assert!(!Layout::plan(1920, 1080, Some(320), None, Fit::Scale).is_identity(1920, 1080));
    }

    #[test]
    fn pad_letterboxes_to_the_box_and_crop_fills_it() {
        let pad = Layout::plan(1920, 1080, Some(320), Some(320), Fit::Pad);
        assert_eq!(size(&pad), (320, 320));
        assert_eq!(pad.dst, [0, 70, 320, 180]);
        let crop = Layout::plan(1920, 1080, Some(320), Some(320), Fit::Crop);
        assert_eq!(size(&crop), (320, 320));
        assert_eq!(crop.dst, [0, 0, 320, 320]);
        assert_eq!(crop.src, [420.0, 0.0, 1080.0, 1080.0]);
        // A box the picture would have to be enlarged for shrinks, keeping its shape.
        let pad = Layout::plan(640, 360, Some(1280), Some(1280), Fit::Pad);
        assert_eq!(size(&pad), (640, 640));
        assert_eq!(pad.dst, [0, 140, 640, 360]);
        let crop = Layout::plan(640, 360, Some(1280), Some(1280), Fit::Crop);
        assert_eq!(size(&crop), (360, 360));
        assert_eq!(crop.src, [140.0, 0.0, 360.0, 360.0]);
    }

    /// A plane of a smooth pattern, as `w`×`h` samples (no stride).
    fn luma(frame: &YuvFrame) -> Vec<u8> {
        frame
            .y
            .chunks(frame.y_stride)
            .take(frame.height)
            .flat_map(|r| &r[..frame.width])
            .copied()
            .collect()
    }

    #[test]
    fn scaled_pictures_resemble_the_source() {
        // A flat picture stays flat at any size, fits included; a smooth gradient halves
        // faithfully (compared against a 2x2 box average).
        let mut resizer = Resizer::new();
        let mut out = YuvFrame::new();
        let (w, h) = (640usize, 360usize);
        let mut src = pattern_frame(w, h);
        src.y.iter_mut().for_each(|v| *v = 100);
        for fit in [Fit::Scale, Fit::Pad, Fit::Crop] {
            let l = Layout::plan(w as u32, h as u32, Some(161), Some(161), fit);
            resizer.resize(&src, &l, [16, 128, 128], &mut out).unwrap();
            assert_eq!(out.check_layout(), Ok(()));
            assert_eq!((out.width as u32, out.height as u32), (l.width, l.height));
            let [x, y, dw, dh] = l.dst.map(|v| v as usize);
            for (r, row) in out.y.chunks(out.y_stride).enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    let inside = (x..x + dw).contains(&c) && (y..y + dh).contains(&r);
                    assert_eq!(v, if inside { 100 } else { 16 }, "{fit:?} at {c},{r}");
                }
            }
        }
        let mut grad = pattern_frame(w, h);
        for (r, row) in grad.y.chunks_mut(grad.y_stride).enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = ((c + r) / 4) as u8;
            }
        }
        let l = Layout::plan(w as u32, h as u32, Some(320), None, Fit::Scale);
        resizer.resize(&grad, &l, [16, 128, 128], &mut out).unwrap();
        let y = luma(&grad);
        let reference: Vec<u8> = (0..h / 2)
            .flat_map(|r| (0..w / 2).map(move |c| (r, c)))
            .map(|(r, c)| {
                let s: u32 = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .iter()
                    .map(|(a, b)| u32::from(y[(2 * r + a) * w + 2 * c + b]))
                    .sum();
                ((s + 2) / 4) as u8
            })
            .collect();
        let db = psnr(&luma(&out), &reference);
        assert!(db > 40.0, "{db:.1} dB");
    }

    #[test]
    fn short_last_rows_and_odd_sizes_are_handled() {
        let mut resizer = Resizer::new();
        let mut out = YuvFrame::new();
        let mut src = pattern_frame(321, 181);
        let cut = src.y.len() - (src.y_stride - src.width);
        src.y.truncate(cut);
        assert_eq!(src.check_layout(), Ok(()));
        let l = Layout::plan(321, 181, Some(99), Some(40), Fit::Pad);
        resizer.resize(&src, &l, [16, 128, 128], &mut out).unwrap();
        assert_eq!((out.width, out.height), (99, 40));
        assert_eq!(out.check_layout(), Ok(()));
    }
}
