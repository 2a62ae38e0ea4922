//! VAE sampling for `omnitokenc sample=true`: deterministic standard-normal noise and
//! `mean + exp(0.5 logvar) noise`, free of GStreamer and ONNX Runtime.

/// Deterministic standard-normal noise for VAE sampling: the same `(seed,
/// chunk_index)` always gives the same values, whatever the batching.
pub fn gaussian_noise(seed: u64, chunk_index: u64, n: usize) -> Vec<f32> {
    // SplitMix64 seeded from both values, Box-Muller in f64.
    let mut state = seed ^ chunk_index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut unit = move || ((next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64; // (0, 1)
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let (u1, u2) = (unit(), unit());
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        out.push((r * a.cos()) as f32);
        out.push((r * a.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// A sample of one chunk's latents: `mean + exp(0.5 logvar) eps`, `eps` from
/// [`gaussian_noise`]`(seed, chunk_index)`.
pub fn sample(mean: &[f32], logvar: &[f32], seed: u64, chunk_index: u64) -> Vec<f32> {
    let eps = gaussian_noise(seed, chunk_index, mean.len());
    mean.iter()
        .zip(logvar)
        .zip(eps)
        .map(|((&m, &lv), e)| m + (0.5 * lv).exp() * e)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_seeded_and_normal() {
        let a = gaussian_noise(42, 3, 10_001);
        assert_eq!(a, gaussian_noise(42, 3, 10_001));
        assert_ne!(a, gaussian_noise(43, 3, 10_001));
        assert_ne!(a, gaussian_noise(42, 4, 10_001));
        assert_eq!(a.len(), 10_001);
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
        assert!(a.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn sample_scales_the_noise() {
        let eps = gaussian_noise(1, 2, 3);
        let s = sample(&[1.0, 2.0, 3.0], &[0.0, 2.0f32.ln() * 2.0, -60.0], 1, 2);
        assert_eq!(s[0], 1.0 + eps[0]);
        assert!((s[1] - (2.0 + 2.0 * eps[1])).abs() < 1e-6);
        assert!((s[2] - 3.0).abs() < 1e-9);
    }
}
