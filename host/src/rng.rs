//! A small, seedable, serializable random number generator (SplitMix64, Steele et al. 2014), so that data,
//! initialization and probe sets depend only on the seed and never on a backend or a library version.

use serde::{Deserialize, Serialize};

/// SplitMix64: a 64-bit state advanced by a fixed odd constant and mixed on output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for one named purpose (`"init"`, `"data"`, …), independent of the others for the same seed.
    pub fn derived(seed: u64, purpose: &str, index: u64) -> Self {
        let mut h = SplitMix64::new(seed ^ 0x5851_f42d_4c95_7f2d);
        for byte in purpose.bytes() {
            h.state ^= u64::from(byte);
            h.next_u64();
        }
        h.state ^= index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h.next_u64();
        h
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) (Lemire's multiply-shift; the bias is below 2⁻³² for the n used here).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Standard normal by Box–Muller.
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher–Yates shuffle in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_output_matches_the_reference_splitmix64() {
        // Reference value of SplitMix64 seeded with 0 (Vigna's splitmix64.c): 0xe220a8397b1dcdaf.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn purposes_give_different_streams() {
        let a = SplitMix64::derived(7, "init", 0).next_u64();
        let b = SplitMix64::derived(7, "data", 0).next_u64();
        assert_ne!(a, b);
        assert_eq!(a, SplitMix64::derived(7, "init", 0).next_u64());
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = SplitMix64::new(1);
        let xs: Vec<f64> = (0..20000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "mean {mean} var {var}"
        );
    }
}
