use super::*;
use crate::snapshot::testing::*;

/// Runs one conversion on a single 2x2 block of the given samples.
fn convert_block(k: &Conversion, y: u8, u: u8, v: u8) -> [u8; 3] {
    let frame = YuvFrame {
        width: 2,
        height: 2,
        y: vec![y; 4],
        u: vec![u],
        v: vec![v],
        y_stride: 2,
        uv_stride: 1,
    };
    let (mut out_y, mut cb, mut cr) = (vec![0; 4], vec![0; 1], vec![0; 1]);
    convert_luma(&frame, k, &mut out_y, 2, &mut Vec::new());
    convert_chroma(&frame, k, &mut cb, &mut cr, 1);
    assert!(out_y.iter().all(|&s| s == out_y[0]));
    [out_y[0], cb[0], cr[0]]
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
    // BT.709 limited on 8-bit samples, as documented (coefficients to 1/1024).
    let k = BT709_LIMITED_TO_FULL;
    let applied = [
        k.y,
        [k.cb[0], k.cb[1], k.cb[1]],
        [k.cr[0], k.cr[1], k.cr[1]],
    ];
    let documented = [
        [1.164384, 0.115637, 0.223212],
        [1.126843, -0.125966, -0.125966],
        [-0.082480, 1.119493, 1.119493],
    ];
    for (row, want_row) in applied.iter().zip(documented) {
        for (got, want) in row.iter().zip(want_row) {
            assert!((got.value() - want).abs() <= 0.5 / 1024.0, "{k:?}");
        }
    }
    // BT.709 limited to WebP, as documented: the matrix, with luma's chroma terms scaled by
    // 219/224 (limited luma spans 219 levels, chroma 224).
    let k = BT709_LIMITED_TO_LIMITED;
    let applied = [k.y[1], k.y[2], k.cb[0], k.cb[1], k.cr[0], k.cr[1]];
    let documented = [0.099312, 0.191699, 0.989854, -0.110653, -0.072453, 0.983398];
    for (got, want) in applied.iter().zip(documented) {
        assert!((got.value() - want).abs() <= 0.5 / 1024.0, "{k:?}");
    }
    assert_eq!(k.y[0].value(), 1.0);
}

#[test]
fn range_expansion_is_within_one_of_exact_for_every_sample() {
    let exact = |v: f64| v.round().clamp(0.0, 255.0) as u8;
    for s in 0..=255u8 {
        let [y, cb, cr] = convert_block(&BT601_LIMITED_TO_FULL, s, s, 128);
        let want_y = exact((f64::from(s) - 16.0) * 255.0 / 219.0);
        let want_c = exact((f64::from(s) - 128.0) * 255.0 / 224.0 + 128.0);
        assert!(y.abs_diff(want_y) <= 1, "Y {s}: {y} vs {want_y}");
        assert!(cb.abs_diff(want_c) <= 1, "Cb {s}: {cb} vs {want_c}");
        assert_eq!(cr, 128);
    }
    assert_eq!(
        convert_block(&BT601_LIMITED_TO_FULL, 16, 16, 240),
        [0, 0, 255]
    );
    assert_eq!(
        convert_block(&BT601_LIMITED_TO_FULL, 235, 128, 128),
        [255, 128, 128]
    );
    assert_eq!(
        convert_block(&BT601_LIMITED_TO_FULL, 126, 128, 128),
        [128, 128, 128]
    );
}

#[test]
fn range_compression_is_within_one_of_exact_for_every_sample() {
    let exact = |v: f64| v.round().clamp(0.0, 255.0) as u8;
    for s in 0..=255u8 {
        let [y, cb, cr] = convert_block(&BT601_FULL_TO_LIMITED, s, s, 128);
        let want_y = exact(16.0 + f64::from(s) * 219.0 / 255.0);
        let want_c = exact((f64::from(s) - 128.0) * 224.0 / 255.0 + 128.0);
        assert!(y.abs_diff(want_y) <= 1, "Y {s}: {y} vs {want_y}");
        assert!(cb.abs_diff(want_c) <= 1, "Cb {s}: {cb} vs {want_c}");
        assert_eq!(cr, 128);
    }
    assert_eq!(
        convert_block(&BT601_FULL_TO_LIMITED, 0, 0, 255),
        [16, 16, 240]
    );
    assert_eq!(
        convert_block(&BT601_FULL_TO_LIMITED, 255, 128, 128),
        [235, 128, 128]
    );
}

#[test]
fn bt709_conversion_is_within_one_of_exact() {
    let m = bt709_to_bt601();
    let cases = [
        (&BT709_LIMITED_TO_FULL, false, true),
        (&BT709_FULL_TO_FULL, true, true),
        (&BT709_LIMITED_TO_LIMITED, false, false),
        (&BT709_FULL_TO_LIMITED, true, false),
    ];
    for (k, from_full, to_full) in cases {
        let (in_y, in_c, in_black) = range(from_full);
        let (out_y, out_c, out_black) = range(to_full);
        for y in (0..=255u8).step_by(3) {
            for u in (0..=255u8).step_by(5) {
                for v in (0..=255u8).step_by(5) {
                    // Normalised: Y in [0, 1], C in [-0.5, 0.5].
                    let (yf, uf, vf) = (
                        (f64::from(y) - in_black) / in_y,
                        (f64::from(u) - 128.0) / in_c,
                        (f64::from(v) - 128.0) / in_c,
                    );
                    let want = [
                        out_black + out_y * (yf + m[0][1] * uf + m[0][2] * vf),
                        128.0 + out_c * (m[1][1] * uf + m[1][2] * vf),
                        128.0 + out_c * (m[2][1] * uf + m[2][2] * vf),
                    ]
                    .map(|x| x.round().clamp(0.0, 255.0) as u8);
                    let got = convert_block(k, y, u, v);
                    for c in 0..3 {
                        assert!(
                            got[c].abs_diff(want[c]) <= 1,
                            "{from_full}→{to_full} ({y}, {u}, {v}): {got:?} vs {want:?}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn each_source_reaches_each_target_coding() {
    // One 2x2 block per colour: the reference coding of each colour in the source, converted,
    // must be the reference coding of the same colour in the target.
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
    let mut converter = Converter::new();
    for target in [Target::Jpeg, Target::Webp] {
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
            let mut out = YuvFrame::new();
            converter.convert(&frame, info, target, &mut out);
            assert_eq!((out.width, out.height), (2 * n, 2));
            for (i, &rgb) in colours.iter().enumerate() {
                let want = ycbcr(rgb, target.coding());
                let got = [out.y[2 * i + 1], out.u[i], out.v[i]];
                assert_eq!(out.y[out.y_stride + 2 * i], got[0]);
                // The source was rounded to 8 bits (limited range has fewer levels).
                let tolerance = if info.full_range { 1 } else { 2 };
                for c in 0..3 {
                    assert!(
                        got[c].abs_diff(want[c]) <= tolerance,
                        "{info:?} → {target:?} {rgb:?}: got {got:?}, want {want:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_target_coding_passes_through_untouched() {
    let frame = pattern_frame(37, 21);
    let mut converter = Converter::new();
    for target in [Target::Jpeg, Target::Webp] {
        assert_eq!(Conversion::between(target.coding(), target), None);
        let mut out = YuvFrame::new();
        converter.convert(&frame, target.coding(), target, &mut out);
        assert_eq!((out.y_stride, out.uv_stride), (37, 19));
        for (o, s) in out.y.chunks(37).zip(frame.y.chunks(frame.y_stride)) {
            assert_eq!(o, &s[..37]);
        }
        for (o, s) in out.v.chunks(19).zip(frame.v.chunks(frame.uv_stride)) {
            assert_eq!(o, &s[..19]);
        }
    }
    // Every other pair converts.
    for info in [LIMITED_709, FULL_709, FULL_601] {
        assert!(Conversion::between(info, Target::Webp).is_some());
    }
    for info in [LIMITED_709, FULL_709, LIMITED_601] {
        assert!(Conversion::between(info, Target::Jpeg).is_some());
    }
}

#[test]
fn wider_destination_strides_are_kept() {
    let frame = pattern_frame(17, 9);
    let mut out = YuvFrame {
        y_stride: 24,
        uv_stride: 16,
        y: vec![7; 24 * 16],
        ..YuvFrame::default()
    };
    Converter::new().convert(&frame, LIMITED_709, Target::Jpeg, &mut out);
    assert_eq!(
        (out.width, out.height, out.y_stride, out.uv_stride),
        (17, 9, 24, 16)
    );
    assert_eq!(out.y.len(), 24 * 16, "planes never shrink");
    assert_eq!((out.u.len(), out.v.len()), (16 * 5, 16 * 5));
    // Beyond the picture, the destination is left alone.
    assert!(out
        .y
        .chunks(24)
        .all(|row| row[17..].iter().all(|&s| s == 7)));
    assert!(out.y[24 * 9..].iter().all(|&s| s == 7));
}

#[test]
fn black_and_the_sps_mapping() {
    assert_eq!(LIMITED_709.black(), [16, 128, 128]);
    assert_eq!(FULL_601.black(), [0, 128, 128]);
    assert_eq!(ColorInfo::default(), LIMITED_601);
    assert_eq!(Target::Jpeg.coding(), FULL_601);
    assert_eq!(Target::Webp.coding(), LIMITED_601);
}
