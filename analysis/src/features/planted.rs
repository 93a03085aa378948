//! Planted features: activations that are known sparse combinations of known directions, the ground truth a
//! dictionary must recover (the toy setting of Sharkey et al. 2022, "Taking features out of superposition with
//! sparse autoencoders", and Elhage et al. 2022's toy models of superposition).

use host::rng::SplitMix64;

use super::sae::random_unit_rows;

/// `n` activations of width `d` [n, d], each a constant offset 0.3 plus `active` of `features` random unit
/// directions (drawn with replacement) with coefficients uniform in [0.5, 1.5]; and the directions
/// [features, d]. Deterministic in `seed`.
pub fn planted(
    features: usize,
    d: usize,
    active: usize,
    n: usize,
    seed: u64,
) -> (Vec<f32>, Vec<f32>) {
    let mut rng = SplitMix64::new(seed);
    let directions = random_unit_rows(&mut rng, features, d);
    let mut x = vec![0.3f32; n * d];
    for row in x.chunks_exact_mut(d) {
        for _ in 0..active {
            let f = rng.below(features);
            let a = 0.5 + rng.uniform() as f32;
            for (v, u) in row.iter_mut().zip(&directions[f * d..(f + 1) * d]) {
                *v += a * u;
            }
        }
    }
    (x, directions)
}
