//! JPEG encoding of decoded pictures with mozjpeg, and the colour conversion JPEG needs.
//!
//! JPEG (JFIF) stores BT.601 Y'CbCr in full range. H.264 sources are usually limited range
//! (Y' 16–235, C 16–240) and BT.601 or BT.709, so before mozjpeg sees them the planes are
//! range-expanded (256-entry tables) and, for BT.709, re-matrixed to BT.601 in Y'CbCr space with
//! fixed-point integer arithmetic. mozjpeg then takes the planes as raw 4:2:0 data: no RGB round
//! trip. This module must not decode video or know about streams; it sees one picture at a time.
//!
//! mozjpeg reports errors by panicking through C; [`JpegEncoder::encode`] catches them.
//! `Compress` is not `Send`, so it is created, used and finished within one call.

use std::panic::{catch_unwind, AssertUnwindSafe};

use mozjpeg::{ColorSpace, CompInfoExt, Compress};

use super::decode::YuvFrame;

/// The Y'CbCr matrix a source was encoded with (H.264 VUI `matrix_coefficients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorMatrix {
    /// BT.601 (also what unsignalled SD content and JPEG use).
    #[default]
    Bt601,
    /// BT.709 (HD; what OBS sends by default).
    Bt709,
}

/// How to interpret a picture's samples. The default, BT.601 limited range, is H.264's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ColorInfo {
    pub matrix: ColorMatrix,
    /// H.264 VUI `video_full_range_flag`: samples use 0–255 rather than 16–235/16–240.
    pub full_range: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The picture is empty or its planes do not cover its declared size.
    #[error("cannot encode a {width}x{height} picture: {reason}")]
    InvalidFrame {
        width: usize,
        height: usize,
        reason: &'static str,
    },
    /// mozjpeg reported a fatal error (it does so by panicking; the panic was caught).
    #[error("mozjpeg failed: {0}")]
    Panicked(String),
    /// mozjpeg returned an error without panicking.
    #[error("mozjpeg failed {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// mozjpeg's component layout or progress disagreed with what this module computed.
    #[error("mozjpeg raw-data input: {0}")]
    RawData(&'static str),
}

/// Encodes [`YuvFrame`]s as baseline 4:2:0 JPEG. Keeps its scratch planes between calls;
/// one per worker thread (it is `Send`, not `Sync`).
pub struct JpegEncoder {
    quality: u8,
    /// Colour-converted planes, padded as mozjpeg's raw-data input needs.
    y: Vec<u8>,
    cb: Vec<u8>,
    cr: Vec<u8>,
    /// One row of per-pixel chroma contributions to luma (BT.709 path only).
    luma_terms: Vec<i32>,
}

impl JpegEncoder {
    /// `quality` is libjpeg's 1–100 scale (clamped into it).
    pub fn new(quality: u8) -> Self {
        Self {
            quality: quality.clamp(1, 100),
            y: Vec::new(),
            cb: Vec::new(),
            cr: Vec::new(),
            luma_terms: Vec::new(),
        }
    }

    pub fn quality(&self) -> u8 {
        self.quality
    }

    /// Encode with mozjpeg's fastest settings (`set_fastest_defaults`: baseline, standard
    /// Huffman tables), 4:2:0, raw Y'CbCr input converted from `frame`'s planes as `color` says.
    pub fn encode(&mut self, frame: &YuvFrame, color: ColorInfo) -> Result<Vec<u8>, EncodeError> {
        frame
            .check_layout()
            .map_err(|reason| EncodeError::InvalidFrame {
                width: frame.width,
                height: frame.height,
                reason,
            })?;
        let geometry = Geometry::new(frame.width, frame.height);
        self.prepare(frame, color, &geometry);
        let planes = [&self.y[..], &self.cb[..], &self.cr[..]];
        let quality = self.quality;
        match catch_unwind(AssertUnwindSafe(|| compress(planes, &geometry, quality))) {
            Ok(result) => result,
            Err(payload) => Err(EncodeError::Panicked(panic_message(payload.as_ref()))),
        }
    }

    /// Fills the scratch planes with full-range BT.601 samples, padded to whole MCUs.
    fn prepare(&mut self, frame: &YuvFrame, color: ColorInfo, g: &Geometry) {
        self.y.resize(g.y_stride * g.y_rows, 0);
        self.cb.resize(g.c_stride * g.c_rows, 0);
        self.cr.resize(g.c_stride * g.c_rows, 0);
        let (w, h, cw, ch) = (g.width, g.height, g.c_width, g.c_height);
        match (color.matrix, color.full_range) {
            (ColorMatrix::Bt601, true) => {
                copy_rows(&frame.y, frame.y_stride, w, h, &mut self.y, g.y_stride);
                copy_rows(&frame.u, frame.uv_stride, cw, ch, &mut self.cb, g.c_stride);
                copy_rows(&frame.v, frame.uv_stride, cw, ch, &mut self.cr, g.c_stride);
            }
            (ColorMatrix::Bt601, false) => {
                let (ys, cs) = (g.y_stride, g.c_stride);
                map_rows(
                    &frame.y,
                    frame.y_stride,
                    w,
                    h,
                    &mut self.y,
                    ys,
                    &LUMA_TO_FULL,
                );
                map_rows(
                    &frame.u,
                    frame.uv_stride,
                    cw,
                    ch,
                    &mut self.cb,
                    cs,
                    &CHROMA_TO_FULL,
                );
                map_rows(
                    &frame.v,
                    frame.uv_stride,
                    cw,
                    ch,
                    &mut self.cr,
                    cs,
                    &CHROMA_TO_FULL,
                );
            }
            (ColorMatrix::Bt709, full_range) => {
                let k = if full_range {
                    &BT709_FULL
                } else {
                    &BT709_LIMITED
                };
                bt709_luma(frame, k, &mut self.y, g.y_stride, &mut self.luma_terms);
                bt709_chroma(frame, k, &mut self.cb, &mut self.cr, g.c_stride);
            }
        }
        pad_plane(&mut self.y, g.y_stride, w, h);
        pad_plane(&mut self.cb, g.c_stride, cw, ch);
        pad_plane(&mut self.cr, g.c_stride, cw, ch);
    }
}

/// Plane sizes for mozjpeg's raw-data input at 4:2:0. Each plane's row stride must equal
/// mozjpeg's `width_in_blocks * 8` (its wrapper splits the buffer into rows of exactly that),
/// and every call consumes one MCU row: 16 luma rows and 8 chroma rows. Samples beyond the
/// picture are read by the DCT, so they are filled by edge replication (as libjpeg itself does
/// for scanline input) rather than left black, which would bleed into edge blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    width: usize,
    height: usize,
    c_width: usize,
    c_height: usize,
    y_stride: usize,
    c_stride: usize,
    y_rows: usize,
    c_rows: usize,
}

impl Geometry {
    fn new(width: usize, height: usize) -> Self {
        let mcu_rows = height.div_ceil(16);
        Self {
            width,
            height,
            c_width: width.div_ceil(2),
            c_height: height.div_ceil(2),
            y_stride: width.div_ceil(8) * 8,
            c_stride: width.div_ceil(16) * 8,
            y_rows: mcu_rows * 16,
            c_rows: mcu_rows * 8,
        }
    }
}

fn compress(planes: [&[u8]; 3], g: &Geometry, quality: u8) -> Result<Vec<u8>, EncodeError> {
    let mut c = Compress::new(ColorSpace::JCS_YCbCr);
    // Resets every parameter (`jpeg_set_defaults`), so it comes first.
    c.set_fastest_defaults();
    c.set_size(g.width, g.height);
    c.set_quality(f32::from(quality));
    c.set_chroma_sampling_pixel_sizes((2, 2), (2, 2));
    c.set_raw_data_in(true);
    let capacity = (g.width * g.height / 6).max(1024);
    let mut started = c
        .start_compress(Vec::with_capacity(capacity))
        .map_err(|source| EncodeError::Io {
            context: "starting compression",
            source,
        })?;
    let strides: Vec<usize> = started
        .components()
        .iter()
        .map(|c| c.row_stride())
        .collect();
    if strides != [g.y_stride, g.c_stride, g.c_stride] {
        return Err(EncodeError::RawData("component strides differ from ours"));
    }
    if !started.write_raw_data(&planes) {
        return Err(EncodeError::RawData("not all rows were accepted"));
    }
    started.finish().map_err(|source| EncodeError::Io {
        context: "finishing compression",
        source,
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "unknown panic".to_owned()
    }
}

// ---- Range expansion: limited → full (BT.601 sources) ----

/// `round((v - base) * 255 / span) + out_base`, clamped to 0–255, for every byte `v`.
const fn range_table(base: i32, span: i32, out_base: i32) -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut v = 0;
    while v < 256 {
        let d = (v - base) * 255;
        // Integer division truncates toward zero: round half away from zero by hand.
        let scaled = if d >= 0 {
            (d + span / 2) / span
        } else {
            -((-d + span / 2) / span)
        };
        let out = scaled + out_base;
        table[v as usize] = if out < 0 {
            0
        } else if out > 255 {
            255
        } else {
            out as u8
        };
        v += 1;
    }
    table
}

/// Luma 16–235 → 0–255.
const LUMA_TO_FULL: [u8; 256] = range_table(16, 219, 0);
/// Chroma 16–240 (centred on 128) → 0–255 (centred on 128).
const CHROMA_TO_FULL: [u8; 256] = range_table(128, 224, 128);

fn copy_rows(src: &[u8], src_stride: usize, w: usize, h: usize, dst: &mut [u8], stride: usize) {
    for (d, s) in dst
        .chunks_exact_mut(stride)
        .zip(src.chunks(src_stride))
        .take(h)
    {
        d[..w].copy_from_slice(&s[..w]);
    }
}

fn map_rows(
    src: &[u8],
    src_stride: usize,
    w: usize,
    h: usize,
    dst: &mut [u8],
    stride: usize,
    table: &[u8; 256],
) {
    for (d, s) in dst
        .chunks_exact_mut(stride)
        .zip(src.chunks(src_stride))
        .take(h)
    {
        for (d, &s) in d[..w].iter_mut().zip(&s[..w]) {
            *d = table[usize::from(s)];
        }
    }
}

/// Replicates the last column into the padding on the right, then the last row downwards.
fn pad_plane(plane: &mut [u8], stride: usize, w: usize, h: usize) {
    for row in plane.chunks_exact_mut(stride).take(h) {
        let edge = row[w - 1];
        row[w..].fill(edge);
    }
    let (picture, below) = plane.split_at_mut(h * stride);
    let last = &picture[(h - 1) * stride..];
    for row in below.chunks_exact_mut(stride) {
        row.copy_from_slice(last);
    }
}

// ---- Matrix conversion: BT.709 → BT.601 in Y'CbCr space ----
//
// Notation: Y in [0, 1], Cb and Cr in [-0.5, 0.5]; (Kr, Kb) = (0.2126, 0.0722) for BT.709 and
// (0.299, 0.114) for BT.601, Kg = 1 - Kr - Kb. A BT.709 source pixel is, in R'G'B':
//     R' = Y + 2(1-Kr)·Cr            B' = Y + 2(1-Kb)·Cb
//     G' = Y - (2Kb(1-Kb)·Cb + 2Kr(1-Kr)·Cr) / Kg
// and JPEG wants the BT.601 coding of that same R'G'B':
//     Y6 = Kr6·R' + Kg6·G' + Kb6·B'   Cb6 = (B' - Y6) / 2(1-Kb6)   Cr6 = (R' - Y6) / 2(1-Kr6)
// Substituting, everything is linear in (Y, Cb, Cr), and since both matrices send grey to grey
// Y passes through with weight 1 and chroma does not depend on Y:
//     Y6  = Y + a·Cb + b·Cr                  a = 2Kb6(1-Kb) - 2Kg6·Kb(1-Kb)/Kg
//                                            b = 2Kr6(1-Kr) - 2Kg6·Kr(1-Kr)/Kg
//     Cb6 = ((2(1-Kb) - a)·Cb - b·Cr) / 2(1-Kb6)
//     Cr6 = (-a·Cb + (2(1-Kr) - b)·Cr) / 2(1-Kr6)
// Numerically:
//     [Y6 ]   [1   0.101579  0.196076] [Y ]
//     [Cb6] = [0   0.989854 -0.110653] [Cb]
//     [Cr6]   [0  -0.072453  0.983398] [Cr]
// For limited-range sources the columns are also scaled by 255/219 (luma, after subtracting 16)
// and 255/224 (chroma), so range expansion and re-matrixing are one step with one rounding:
//     Y6·255 = 1.164384·(Y-16) + 0.115637·(Cb-128) + 0.223212·(Cr-128)
//     Cb6    = 1.126843·(Cb-128) - 0.125966·(Cr-128) + 128
//     Cr6    = -0.082480·(Cb-128) + 1.119493·(Cr-128) + 128
// The coefficients are applied in 16.16 fixed point. Luma takes the chroma sample covering its
// 2×2 block (4:2:0), so at chroma edges the luma correction is as sharp as the chroma is.

/// Fractional bits of the fixed-point coefficients.
const FRAC_BITS: u32 = 16;
const ROUND: i32 = 1 << (FRAC_BITS - 1);

/// `M` above, computed from the two standards' (Kr, Kb).
const fn bt709_to_bt601() -> [[f64; 3]; 3] {
    let (kr, kb) = (0.2126, 0.0722);
    let kg = 1.0 - kr - kb;
    let (kr6, kb6) = (0.299, 0.114);
    let kg6 = 1.0 - kr6 - kb6;
    let (r_cr, b_cb) = (2.0 * (1.0 - kr), 2.0 * (1.0 - kb));
    let (g_cb, g_cr) = (-kb * b_cb / kg, -kr * r_cr / kg);
    let a = kb6 * b_cb + kg6 * g_cb;
    let b = kr6 * r_cr + kg6 * g_cr;
    let (db, dr) = (2.0 * (1.0 - kb6), 2.0 * (1.0 - kr6));
    [
        [1.0, a, b],
        [0.0, (b_cb - a) / db, -b / db],
        [0.0, -a / dr, (r_cr - b) / dr],
    ]
}

/// Rounds to 16.16 fixed point (half away from zero).
const fn fixed(x: f64) -> i32 {
    let scaled = x * (1 << FRAC_BITS) as f64;
    if scaled >= 0.0 {
        (scaled + 0.5) as i32
    } else {
        -((-scaled + 0.5) as i32)
    }
}

/// Fixed-point form of one BT.709 → full-range BT.601 conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bt709Coeffs {
    /// Subtracted from luma before scaling: 16 for limited range, 0 for full.
    y_offset: i32,
    y_y: i32,
    y_cb: i32,
    y_cr: i32,
    cb_cb: i32,
    cb_cr: i32,
    cr_cb: i32,
    cr_cr: i32,
}

const fn bt709_coeffs(full_range: bool) -> Bt709Coeffs {
    let m = bt709_to_bt601();
    let (sy, sc, y_offset) = if full_range {
        (1.0, 1.0, 0)
    } else {
        (255.0 / 219.0, 255.0 / 224.0, 16)
    };
    Bt709Coeffs {
        y_offset,
        y_y: fixed(m[0][0] * sy),
        y_cb: fixed(m[0][1] * sc),
        y_cr: fixed(m[0][2] * sc),
        cb_cb: fixed(m[1][1] * sc),
        cb_cr: fixed(m[1][2] * sc),
        cr_cb: fixed(m[2][1] * sc),
        cr_cr: fixed(m[2][2] * sc),
    }
}

const BT709_LIMITED: Bt709Coeffs = bt709_coeffs(false);
const BT709_FULL: Bt709Coeffs = bt709_coeffs(true);

fn to_u8(fixed_point: i32) -> u8 {
    (fixed_point >> FRAC_BITS).clamp(0, 255) as u8
}

fn bt709_chroma(frame: &YuvFrame, k: &Bt709Coeffs, cb: &mut [u8], cr: &mut [u8], stride: usize) {
    let (cw, ch) = (frame.chroma_width(), frame.chroma_height());
    let rows = frame
        .u
        .chunks(frame.uv_stride)
        .zip(frame.v.chunks(frame.uv_stride))
        .zip(cb.chunks_exact_mut(stride).zip(cr.chunks_exact_mut(stride)))
        .take(ch);
    let centre = (128 << FRAC_BITS) + ROUND;
    for ((u_row, v_row), (cb_row, cr_row)) in rows {
        let samples = u_row[..cw].iter().zip(&v_row[..cw]);
        for ((&u, &v), (cb, cr)) in samples.zip(cb_row[..cw].iter_mut().zip(&mut cr_row[..cw])) {
            let (u, v) = (i32::from(u) - 128, i32::from(v) - 128);
            *cb = to_u8(k.cb_cb * u + k.cb_cr * v + centre);
            *cr = to_u8(k.cr_cb * u + k.cr_cr * v + centre);
        }
    }
}

fn bt709_luma(
    frame: &YuvFrame,
    k: &Bt709Coeffs,
    y: &mut [u8],
    stride: usize,
    terms: &mut Vec<i32>,
) {
    let (w, cw) = (frame.width, frame.chroma_width());
    // Per luma column: the chroma contribution of its covering chroma sample, the luma offset
    // and the rounding constant. Computed once per chroma row, shared by its two luma rows.
    terms.resize(w, 0);
    let base = ROUND - k.y_y * k.y_offset;
    let luma_rows = frame.y.chunks(frame.y_stride).take(frame.height);
    for (i, (src, dst)) in luma_rows.zip(y.chunks_exact_mut(stride)).enumerate() {
        if i % 2 == 0 {
            let start = i / 2 * frame.uv_stride;
            let (u_row, v_row) = (&frame.u[start..start + cw], &frame.v[start..start + cw]);
            for (pair, (&u, &v)) in terms.chunks_mut(2).zip(u_row.iter().zip(v_row)) {
                let t = k.y_cb * (i32::from(u) - 128) + k.y_cr * (i32::from(v) - 128) + base;
                pair.fill(t);
            }
        }
        for ((d, &s), &t) in dst[..w].iter_mut().zip(&src[..w]).zip(terms.iter()) {
            *d = to_u8(k.y_y * i32::from(s) + t);
        }
    }
}

/// Peak signal-to-noise ratio of two 8-bit sample sequences, in dB (infinite when equal).
/// For tests and benches.
///
/// # Panics
/// If the slices differ in length.
#[doc(hidden)]
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "psnr needs equally long inputs");
    let sse: u64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| u64::from(x.abs_diff(y)).pow(2))
        .sum();
    if sse == 0 {
        return f64::INFINITY;
    }
    let mse = sse as f64 / a.len() as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITED_601: ColorInfo = ColorInfo {
        matrix: ColorMatrix::Bt601,
        full_range: false,
    };
    const LIMITED_709: ColorInfo = ColorInfo {
        matrix: ColorMatrix::Bt709,
        full_range: false,
    };
    const FULL_601: ColorInfo = ColorInfo {
        matrix: ColorMatrix::Bt601,
        full_range: true,
    };
    const FULL_709: ColorInfo = ColorInfo {
        matrix: ColorMatrix::Bt709,
        full_range: true,
    };

    /// Red, green, blue, white, black, grey, yellow, cyan, magenta (sRGB, 8-bit).
    const BARS: [[u8; 3]; 9] = [
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [255, 255, 255],
        [0, 0, 0],
        [128, 128, 128],
        [255, 255, 0],
        [0, 255, 255],
        [255, 0, 255],
    ];

    /// Reference Y'CbCr coding of an R'G'B' colour, in floating point (independent of the
    /// fixed-point code under test).
    fn ycbcr(rgb: [u8; 3], info: ColorInfo) -> [u8; 3] {
        let (kr, kb) = match info.matrix {
            ColorMatrix::Bt601 => (0.299, 0.114),
            ColorMatrix::Bt709 => (0.2126, 0.0722),
        };
        let [r, g, b] = rgb.map(|c| f64::from(c) / 255.0);
        let y = kr * r + (1.0 - kr - kb) * g + kb * b;
        let cb = (b - y) / (2.0 * (1.0 - kb));
        let cr = (r - y) / (2.0 * (1.0 - kr));
        let (y, cb, cr) = if info.full_range {
            (255.0 * y, 128.0 + 255.0 * cb, 128.0 + 255.0 * cr)
        } else {
            (16.0 + 219.0 * y, 128.0 + 224.0 * cb, 128.0 + 224.0 * cr)
        };
        [y, cb, cr].map(|v| v.round().clamp(0.0, 255.0) as u8)
    }

    fn bar_of(x: usize, width: usize) -> usize {
        x * BARS.len() / width
    }

    /// Vertical colour bars, with strides wider than the picture to catch stride mix-ups.
    fn bars_frame(width: usize, height: usize, info: ColorInfo) -> YuvFrame {
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        let (y_stride, uv_stride) = (width + 7, cw + 3);
        let mut frame = YuvFrame {
            width,
            height,
            y: vec![0xEE; y_stride * height],
            u: vec![0xEE; uv_stride * ch],
            v: vec![0xEE; uv_stride * ch],
            y_stride,
            uv_stride,
        };
        for row in 0..height {
            for x in 0..width {
                frame.y[row * y_stride + x] = ycbcr(BARS[bar_of(x, width)], info)[0];
            }
        }
        for row in 0..ch {
            for cx in 0..cw {
                let [_, cb, cr] = ycbcr(BARS[bar_of(2 * cx, width)], info);
                frame.u[row * uv_stride + cx] = cb;
                frame.v[row * uv_stride + cx] = cr;
            }
        }
        frame
    }

    fn decode_rgb(jpeg: &[u8]) -> (usize, usize, Vec<[u8; 3]>) {
        let decompress = mozjpeg::Decompress::new_mem(jpeg).unwrap();
        let (w, h) = decompress.size();
        let mut started = decompress.rgb().unwrap();
        let pixels: Vec<[u8; 3]> = started.read_scanlines().unwrap();
        started.finish().unwrap();
        (w, h, pixels)
    }

    fn decode_gray(jpeg: &[u8]) -> (usize, usize, Vec<u8>) {
        let decompress = mozjpeg::Decompress::new_mem(jpeg).unwrap();
        let (w, h) = decompress.size();
        let mut started = decompress.grayscale().unwrap();
        let pixels: Vec<u8> = started.read_scanlines().unwrap();
        started.finish().unwrap();
        (w, h, pixels)
    }

    /// Mean RGB of each bar's interior (8 pixels in from its sides).
    fn bar_means(width: usize, height: usize, pixels: &[[u8; 3]]) -> Vec<[f64; 3]> {
        (0..BARS.len())
            .map(|bar| {
                let x0 = (bar * width).div_ceil(BARS.len()) + 8;
                let x1 = ((bar + 1) * width).div_ceil(BARS.len()) - 8;
                let mut sum = [0f64; 3];
                for row in pixels.chunks(width).take(height) {
                    for px in &row[x0..x1] {
                        for c in 0..3 {
                            sum[c] += f64::from(px[c]);
                        }
                    }
                }
                sum.map(|s| s / ((x1 - x0) * height) as f64)
            })
            .collect()
    }

    /// The bars whose mean is more than `tolerance` away from the true colour in some channel.
    fn wrong_bars(jpeg: &[u8], tolerance: f64) -> Vec<(usize, [f64; 3])> {
        let (w, h, pixels) = decode_rgb(jpeg);
        bar_means(w, h, &pixels)
            .into_iter()
            .enumerate()
            .filter(|(bar, mean)| {
                (0..3).any(|c| (mean[c] - f64::from(BARS[*bar][c])).abs() > tolerance)
            })
            .collect()
    }

    #[test]
    fn bars_decode_to_their_true_colours() {
        let mut encoder = JpegEncoder::new(90);
        for (w, h) in [(640, 360), (321, 181)] {
            for info in [LIMITED_601, LIMITED_709, FULL_601, FULL_709] {
                let jpeg = encoder.encode(&bars_frame(w, h, info), info).unwrap();
                let wrong = wrong_bars(&jpeg, 6.0);
                assert!(wrong.is_empty(), "{w}x{h} {info:?}: bars off: {wrong:?}");
            }
        }
    }

    #[test]
    fn wrong_colour_info_gives_wrong_colours() {
        let mut encoder = JpegEncoder::new(90);
        // BT.709 green read as BT.601: the naive interpretation, about (20, 255, 9).
        let jpeg = encoder
            .encode(&bars_frame(640, 360, LIMITED_709), LIMITED_601)
            .unwrap();
        let (w, h, pixels) = decode_rgb(&jpeg);
        let green = bar_means(w, h, &pixels)[1];
        assert!(
            green[0] > 14.0 && green[2] > 4.0,
            "green came out {green:?}"
        );
        assert!(wrong_bars(&jpeg, 6.0).iter().any(|(bar, _)| *bar == 1));
        // Limited range passed through as full: washed out (black becomes 16, 16, 16).
        let jpeg = encoder
            .encode(&bars_frame(640, 360, LIMITED_601), FULL_601)
            .unwrap();
        assert!(wrong_bars(&jpeg, 6.0).iter().any(|(bar, _)| *bar == 4));
        // Full range squeezed as if limited: crushed and oversaturated.
        let jpeg = encoder
            .encode(&bars_frame(640, 360, FULL_709), LIMITED_709)
            .unwrap();
        assert!(!wrong_bars(&jpeg, 6.0).is_empty());
    }

    /// A smooth pattern in full-range BT.601 (passed through unchanged) with padded strides.
    fn pattern_frame(width: usize, height: usize) -> YuvFrame {
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        let wave = |x: usize, y: usize, fx: f64, fy: f64| {
            (128.0 + 90.0 * (x as f64 / fx).sin() * (y as f64 / fy).cos()) as u8
        };
        let mut frame = YuvFrame {
            width,
            height,
            y: Vec::new(),
            u: Vec::new(),
            v: Vec::new(),
            y_stride: width + 5,
            uv_stride: cw + 1,
        };
        for y in 0..height {
            frame
                .y
                .extend((0..width + 5).map(|x| wave(x, y, 9.0, 13.0)));
        }
        for y in 0..ch {
            frame.u.extend((0..=cw).map(|x| wave(x, y, 11.0, 7.0)));
            frame.v.extend((0..=cw).map(|x| wave(y, x, 5.0, 17.0)));
        }
        frame
    }

    #[test]
    fn any_size_encodes_to_a_faithful_jpeg_of_that_size() {
        let mut encoder = JpegEncoder::new(90);
        let sizes = [
            (640, 360),
            (1280, 720),
            (1920, 1080),
            (322, 182),
            (321, 181),
            (17, 9),
            (15, 31),
            (1, 1),
        ];
        for (w, h) in sizes {
            let frame = pattern_frame(w, h);
            let jpeg = encoder.encode(&frame, FULL_601).unwrap();
            assert_eq!(jpeg[..2], [0xFF, 0xD8], "{w}x{h}: no SOI");
            assert_eq!(jpeg[jpeg.len() - 2..], [0xFF, 0xD9], "{w}x{h}: no EOI");
            let (dw, dh, gray) = decode_gray(&jpeg);
            assert_eq!((dw, dh), (w, h));
            let source: Vec<u8> = frame
                .y
                .chunks(frame.y_stride)
                .flat_map(|row| &row[..w])
                .copied()
                .collect();
            let db = psnr(&source, &gray);
            assert!(db >= 35.0, "{w}x{h}: luma PSNR {db:.1} dB");
        }
    }

    #[test]
    fn padding_replicates_edges() {
        // A flat picture whose size is not a multiple of the MCU: if the padding were not the
        // edge colour, the DCT of the edge blocks would smear it into the visible pixels.
        let mut encoder = JpegEncoder::new(90);
        for (w, h) in [(321, 181), (17, 9), (24, 40)] {
            let frame = YuvFrame {
                width: w,
                height: h,
                y: vec![200; w * h],
                u: vec![90; w.div_ceil(2) * h.div_ceil(2)],
                v: vec![160; w.div_ceil(2) * h.div_ceil(2)],
                y_stride: w,
                uv_stride: w.div_ceil(2),
            };
            let jpeg = encoder.encode(&frame, FULL_601).unwrap();
            let (_, _, gray) = decode_gray(&jpeg);
            let worst = gray.iter().map(|&v| v.abs_diff(200)).max().unwrap();
            assert!(worst <= 2, "{w}x{h}: a pixel is off by {worst}");
            let (_, _, rgb) = decode_rgb(&jpeg);
            let first = rgb[0];
            let spread = rgb
                .iter()
                .flat_map(|px| (0..3).map(move |c| px[c].abs_diff(first[c])))
                .max()
                .unwrap();
            assert!(spread <= 2, "{w}x{h}: colour varies by {spread}");
        }
    }

    #[test]
    fn conversion_matches_the_reference_formulas() {
        let mut encoder = JpegEncoder::new(90);
        // One 2x2 block per colour, so every luma sample has its own colour's chroma.
        let colours: Vec<[u8; 3]> = (0..64u32)
            .map(|i| {
                [
                    (i * 37 % 256) as u8,
                    (i * 91 % 256) as u8,
                    (i * 53 % 256) as u8,
                ]
            })
            .chain(BARS)
            .collect();
        let n = colours.len();
        for info in [LIMITED_601, LIMITED_709, FULL_601, FULL_709] {
            let mut frame = YuvFrame {
                width: 2 * n,
                height: 2,
                y: vec![0; 4 * n],
                u: vec![0; n],
                v: vec![0; n],
                y_stride: 2 * n,
                uv_stride: n,
            };
            for (i, &rgb) in colours.iter().enumerate() {
                let [y, cb, cr] = ycbcr(rgb, info);
                for at in [2 * i, 2 * i + 1, 2 * n + 2 * i, 2 * n + 2 * i + 1] {
                    frame.y[at] = y;
                }
                (frame.u[i], frame.v[i]) = (cb, cr);
            }
            let g = Geometry::new(frame.width, frame.height);
            encoder.prepare(&frame, info, &g);
            for (i, &rgb) in colours.iter().enumerate() {
                let want = ycbcr(rgb, FULL_601);
                let got = [encoder.y[2 * i + 1], encoder.cb[i], encoder.cr[i]];
                assert_eq!(encoder.y[g.y_stride + 2 * i], got[0]);
                // The source was rounded to 8 bits (limited range has fewer levels).
                let tolerance = if info.full_range { 1 } else { 2 };
                for c in 0..3 {
                    assert!(
                        got[c].abs_diff(want[c]) <= tolerance,
                        "{info:?} {rgb:?}: got {got:?}, want {want:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn coefficients_are_the_documented_ones() {
        let m = bt709_to_bt601();
        let documented = [
            [1.0, 0.101579, 0.196076],
            [0.0, 0.989854, -0.110653],
            [0.0, -0.072453, 0.983398],
        ];
        for (row, want_row) in m.iter().zip(documented) {
            for (got, want) in row.iter().zip(want_row) {
                assert!((got - want).abs() < 1e-6, "{m:?}");
            }
        }
        let k = BT709_LIMITED;
        assert_eq!(
            [k.y_y, k.y_cb, k.y_cr, k.cb_cb, k.cb_cr, k.cr_cb, k.cr_cr],
            [76309, 7578, 14628, 73849, -8255, -5405, 73367]
        );
        assert_eq!(BT709_FULL.y_y, 1 << FRAC_BITS);
        assert_eq!(BT709_FULL.y_offset, 0);
    }

    #[test]
    fn range_tables_expand_limited_to_full() {
        assert_eq!(LUMA_TO_FULL[16], 0);
        assert_eq!(LUMA_TO_FULL[0], 0);
        assert_eq!(LUMA_TO_FULL[126], 128);
        assert_eq!(LUMA_TO_FULL[235], 255);
        assert_eq!(LUMA_TO_FULL[255], 255);
        assert_eq!(CHROMA_TO_FULL[128], 128);
        assert_eq!(CHROMA_TO_FULL[16], 0);
        assert_eq!(CHROMA_TO_FULL[240], 255);
        assert_eq!(CHROMA_TO_FULL[100], 96); // 128 - 28 * 255 / 224 = 96.1
        assert!(LUMA_TO_FULL.windows(2).all(|p| p[0] <= p[1]));
        assert!(CHROMA_TO_FULL.windows(2).all(|p| p[0] <= p[1]));
    }

    #[test]
    fn mozjpeg_failure_is_an_error_and_the_encoder_survives() {
        let mut encoder = JpegEncoder::new(80);
        // JPEG cannot exceed 65500 pixels a side: mozjpeg fails inside jpeg_start_compress.
        let wide = YuvFrame {
            width: 65536,
            height: 2,
            y: vec![128; 65536 * 2],
            u: vec![128; 32768],
            v: vec![128; 32768],
            y_stride: 65536,
            uv_stride: 32768,
        };
        match encoder.encode(&wide, FULL_601) {
            Err(EncodeError::Panicked(message)) => {
                assert!(message.contains("65500"), "{message}")
            }
            other => panic!("expected a caught mozjpeg failure, got {other:?}"),
        }
        let jpeg = encoder.encode(&pattern_frame(64, 48), FULL_601).unwrap();
        assert_eq!(decode_gray(&jpeg).0, 64);
    }

    #[test]
    fn inconsistent_frames_are_refused() {
        let mut encoder = JpegEncoder::new(80);
        let mut frame = pattern_frame(64, 48);
        frame.v.truncate(10);
        assert!(matches!(
            encoder.encode(&frame, FULL_601),
            Err(EncodeError::InvalidFrame {
                width: 64,
                height: 48,
                reason: "chroma plane too short"
            })
        ));
        let empty = YuvFrame::default();
        assert!(matches!(
            encoder.encode(&empty, LIMITED_709),
            Err(EncodeError::InvalidFrame { .. })
        ));
    }

    #[test]
    fn psnr_values() {
        let a = [10u8; 100];
        assert_eq!(psnr(&a, &a), f64::INFINITY);
        assert_eq!(psnr(&[], &[]), f64::INFINITY);
        // MSE 100: 10·log10(255² / 100) = 28.13 dB.
        let db = psnr(&a, &[20u8; 100]);
        assert!((db - 28.1308).abs() < 1e-3, "{db}");
        // One sample off by 255 in 65025: MSE 1, 48.13 dB.
        let mut b = vec![0u8; 65025];
        let c = b.clone();
        b[7] = 255;
        assert!((psnr(&b, &c) - 48.1308).abs() < 1e-3);
    }

    #[test]
    fn codec_state_can_move_to_a_worker() {
        fn assert_send<T: Send>() {}
        assert_send::<JpegEncoder>();
        assert_send::<crate::snapshot::decode::KeyframeDecoder>();
    }
}
