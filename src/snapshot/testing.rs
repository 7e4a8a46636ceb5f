//! Test support shared by the snapshot modules' unit tests: reference colour codings and
//! synthetic pictures. Compiled for tests only.

use super::color::{ColorInfo, Matrix};
use super::decode::YuvFrame;

pub const LIMITED_601: ColorInfo = ColorInfo {
    matrix: Matrix::Bt601,
    full_range: false,
};
pub const LIMITED_709: ColorInfo = ColorInfo {
    matrix: Matrix::Bt709,
    full_range: false,
};
pub const FULL_601: ColorInfo = ColorInfo {
    matrix: Matrix::Bt601,
    full_range: true,
};
pub const FULL_709: ColorInfo = ColorInfo {
    matrix: Matrix::Bt709,
    full_range: true,
};

/// Red, green, blue, white, black, grey, yellow, cyan, magenta (sRGB, 8-bit).
pub const BARS: [[u8; 3]; 9] = [
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
pub fn ycbcr(rgb: [u8; 3], info: ColorInfo) -> [u8; 3] {
    let (kr, kb) = match info.matrix {
        Matrix::Bt601 => (0.299, 0.114),
        Matrix::Bt709 => (0.2126, 0.0722),
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

pub fn bar_of(x: usize, width: usize) -> usize {
    x * BARS.len() / width
}

/// Vertical colour bars, with strides wider than the picture to catch stride mix-ups.
pub fn bars_frame(width: usize, height: usize, info: ColorInfo) -> YuvFrame {
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

/// A smooth pattern (any coding: the samples stay inside limited range's 38–218) with padded
/// strides.
pub fn pattern_frame(width: usize, height: usize) -> YuvFrame {
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
