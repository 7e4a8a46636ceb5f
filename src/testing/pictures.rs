//! Comparing pictures in tests and benches.

/// Peak signal-to-noise ratio of two 8-bit sample sequences, in dB (infinite when equal).
///
/// # Panics
/// If the slices differ in length.
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
}
