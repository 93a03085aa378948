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

    /// Gamma(shape, 1) by Marsaglia & Tsang (2000), "A simple method for generating gamma variables", with
    /// their boost U^(1/shape) for shape < 1.
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let boost = self.uniform().max(f64::MIN_POSITIVE).powf(1.0 / shape);
            return self.gamma(shape + 1.0) * boost;
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform().max(f64::MIN_POSITIVE);
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// A probability vector of `k` entries drawn from the symmetric Dirichlet(alpha) distribution (normalized
    /// Gamma(alpha) draws).
    pub fn dirichlet(&mut self, k: usize, alpha: f64) -> Vec<f64> {
        let draws: Vec<f64> = (0..k).map(|_| self.gamma(alpha)).collect();
        let total: f64 = draws.iter().sum();
        draws.iter().map(|g| g / total).collect()
    }

    /// Index drawn from the probability vector `probs` (inverse CDF; the last index absorbs rounding).
    pub fn categorical(&mut self, probs: &[f64]) -> usize {
        let mut u = self.uniform();
        for (i, &p) in probs.iter().enumerate() {
            if u < p {
                return i;
            }
            u -= p;
        }
        probs.len() - 1
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
    fn gamma_and_dirichlet_have_their_means() {
        // E[Gamma(a)] = a; Dirichlet(k, a) entries have mean 1/k. 20 000 draws: standard error of the
        // Gamma(0.5) mean is sqrt(0.5 / 20000) = 0.005.
        let mut rng = SplitMix64::new(3);
        for shape in [0.5, 1.0, 3.0] {
            let mean = (0..20_000).map(|_| rng.gamma(shape)).sum::<f64>() / 20_000.0;
            assert!(
                (mean - shape).abs() < 0.05 * shape.max(1.0),
                "{shape}: {mean}"
            );
        }
        let mut first = 0.0;
        for _ in 0..5_000 {
            let p = rng.dirichlet(4, 1.0);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            first += p[0];
        }
        assert!((first / 5_000.0 - 0.25).abs() < 0.01, "{}", first / 5_000.0);
        let counts = (0..10_000).fold([0usize; 3], |mut c, _| {
            c[rng.categorical(&[0.2, 0.5, 0.3])] += 1;
            c
        });
        assert!(
            (counts[1] as f64 / 10_000.0 - 0.5).abs() < 0.02,
            "{counts:?}"
        );
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
