//! Dynamics metrics (SPEC §5E): how the model's representations and weights change between checkpoints.

use faer::Mat;
use host::rng::SplitMix64;

/// Frobenius norm ‖W‖_F of one parameter tensor.
pub fn frobenius_norm(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

/// Linear CKA of two activation matrices `x` [n, d1] and `y` [n, d2] (row-major, same n examples), columns
/// centred first: ‖YᵀX‖²_F / (‖XᵀX‖_F · ‖YᵀY‖_F) (Kornblith et al. 2019, eq. 5). 1 for identical
/// representations; invariant to orthogonal transforms and isotropic scaling. 0 if either side is constant.
/// The Gram products run in f64 through faer.
pub fn linear_cka(x: &[f32], d1: usize, y: &[f32], d2: usize) -> f64 {
    linear_cka_reusing(x, d1, y, d2, None).0
}

/// [`linear_cka`] given `y`'s own ‖YᵀY‖²_F when it is known (`y_self`, as this function returned it for `y`
/// as its `x`): returns the CKA and `x`'s ‖XᵀX‖²_F. A trajectory compares each checkpoint with the one before,
/// so each side's product is formed once instead of twice; the value is the same computation's, so the result
/// has the same bits as [`linear_cka`]'s.
pub fn linear_cka_reusing(
    x: &[f32],
    d1: usize,
    y: &[f32],
    d2: usize,
    y_self: Option<f64>,
) -> (f64, f64) {
    let (x, y) = (centred(x, d1), centred(y, d2));
    let cross = |a: &Mat<f64>, b: &Mat<f64>| (a.transpose() * b).squared_norm_l2();
    let x_self = cross(&x, &x);
    let denominator = (x_self * y_self.unwrap_or_else(|| cross(&y, &y))).sqrt();
    let cka = if denominator > 0.0 {
        cross(&y, &x) / denominator
    } else {
        0.0
    };
    (cka, x_self)
}

/// `m` [n, d] row-major as an f64 matrix with every column's mean subtracted.
fn centred(m: &[f32], d: usize) -> Mat<f64> {
    let n = m.len() / d;
    let mut mean = vec![0.0; d];
    for row in m.chunks(d) {
        for (acc, &v) in mean.iter_mut().zip(row) {
            *acc += f64::from(v) / n as f64;
        }
    }
    Mat::from_fn(n, d, |i, j| f64::from(m[i * d + j]) - mean[j])
}

/// Relative update of one parameter between two checkpoints: ‖W_t − W_{t−1}‖_F / ‖W_{t−1}‖_F; `None` when
/// W_{t−1} = 0 (biases at initialization), where it is undefined.
pub fn relative_update(current: &[f32], previous: &[f32]) -> Option<f64> {
    let change: f64 = current
        .iter()
        .zip(previous)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum::<f64>()
        .sqrt();
    let base = frobenius_norm(previous);
    (base > 0.0).then(|| change / base)
}

/// Cosine similarity of two flattened weight arrays (e.g. a probe's weights at two checkpoints); 0 if either is
/// all zeros.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let norms = frobenius_norm(a) * frobenius_norm(b);
    if norms > 0.0 { dot / norms } else { 0.0 }
}

/// Number of coordinates of the output projection.
pub const PROJECTION_DIM: usize = 32;
// One draw of 64 bits gives every coordinate's sign, eight at a time.
const _: () = assert!(PROJECTION_DIM.is_multiple_of(8) && PROJECTION_DIM <= 64);

/// The signs of [`output_projection`] for each byte of a draw: entry b, sign k is +1 where bit k of b is set.
static SIGNS: [[f64; 8]; 256] = {
    let mut table = [[0.0; 8]; 256];
    let mut b = 0;
    while b < 256 {
        let mut k = 0;
        while k < 8 {
            table[b][k] = if (b >> k) & 1 == 1 { 1.0 } else { -1.0 };
            k += 1;
        }
        b += 1;
    }
    table
};

/// A fixed random projection of the model's outputs, for the essential-dynamics trajectory (SPEC §5E, §6):
/// y_k = Σ_i s_ik x_i / √D with Rademacher signs s_ik = ±1 drawn from `seed` (Achlioptas 2003: distances
/// between checkpoints are kept up to a small factor), D = `outputs.len()`. The same seed gives the same
/// projection at every checkpoint.
pub fn output_projection(outputs: &[f32], seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::derived(seed, "output-projection", 0);
    let mut y = vec![0.0f64; PROJECTION_DIM];
    for &x in outputs {
        // s_ik = +1 where bit k of the draw is set, −1 where not; eight signs at a time from a table, so the
        // sums vectorize without a branch (the same products, so the same bits).
        let (signs, x) = (rng.next_u64(), f64::from(x));
        for (byte, y8) in y.chunks_exact_mut(8).enumerate() {
            let s8 = &SIGNS[(signs >> (8 * byte) & 0xff) as usize];
            for (yk, &s) in y8.iter_mut().zip(s8) {
                *yk += s * x;
            }
        }
    }
    let scale = 1.0 / (outputs.len().max(1) as f64).sqrt();
    y.iter_mut().for_each(|v| *v *= scale);
    y
}

/// Jensen–Shannon divergence (nats) between two distributions: ½ KL(p‖m) + ½ KL(q‖m), m = (p + q)/2.
/// Symmetric, 0 iff p = q, at most ln 2.
pub fn js_divergence(p: &[f32], q: &[f32]) -> f64 {
    let kl_to_mixture = |a: f64, b: f64| {
        if a > 0.0 {
            a * (2.0 * a / (a + b)).ln()
        } else {
            0.0
        }
    };
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let (a, b) = (f64::from(a), f64::from(b));
            0.5 * (kl_to_mixture(a, b) + kl_to_mixture(b, a))
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..n * d).map(|_| rng.normal() as f32).collect()
    }

    #[test]
    fn reusing_the_previous_self_product_gives_the_same_bits() {
        // A trajectory a → b → c: the self-product returned for b when it was compared with a is the one the
        // comparison of c with b reuses.
        let (a, b, c) = (random(40, 6, 1), random(40, 6, 2), random(40, 6, 3));
        let (ab, b_self) = linear_cka_reusing(&b, 6, &a, 6, None);
        let (bc, _) = linear_cka_reusing(&c, 6, &b, 6, Some(b_self));
        assert_eq!(ab.to_bits(), linear_cka(&b, 6, &a, 6).to_bits());
        assert_eq!(bc.to_bits(), linear_cka(&c, 6, &b, 6).to_bits());
        assert!(bc > 0.0 && bc < 1.0, "{bc}");
    }

    #[test]
    fn frobenius_norm_of_a_hand_made_matrix() {
        // [[1, 2], [2, 4]]: 1 + 4 + 4 + 16 = 25 → 5.
        assert!((frobenius_norm(&[1.0, 2.0, 2.0, 4.0]) - 5.0).abs() < 1e-12);
    }

    #[test]
    fn cka_of_a_representation_with_itself_is_one() {
        let x = random(50, 4, 1);
        assert!((linear_cka(&x, 4, &x, 4) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn cka_is_invariant_to_rotation_and_isotropic_scaling() {
        let x = random(60, 2, 2);
        // Rotate by 30° and scale by 3: an orthogonal transform times a scalar.
        let (c, s) = (
            30f64.to_radians().cos() as f32,
            30f64.to_radians().sin() as f32,
        );
        let y: Vec<f32> = x
            .chunks(2)
            .flat_map(|r| [3.0 * (c * r[0] - s * r[1]), 3.0 * (s * r[0] + c * r[1])])
            .collect();
        assert!((linear_cka(&x, 2, &y, 2) - 1.0).abs() < 1e-6);
        // Unrelated random features are far from 1.
        assert!(linear_cka(&x, 2, &random(60, 2, 3), 2) < 0.3);
    }

    #[test]
    fn js_is_zero_for_equal_symmetric_and_at_most_ln2() {
        let p = [0.2, 0.3, 0.5];
        let q = [0.6, 0.1, 0.3];
        assert_eq!(js_divergence(&p, &p), 0.0);
        assert!((js_divergence(&p, &q) - js_divergence(&q, &p)).abs() < 1e-12);
        // Disjoint supports reach the bound ln 2.
        assert!((js_divergence(&[1.0, 0.0], &[0.0, 1.0]) - 2f64.ln()).abs() < 1e-12);
        assert!(js_divergence(&p, &q) < 2f64.ln());
    }

    #[test]
    fn relative_update_and_cosine_by_hand() {
        // [3, 4] → [3, 5]: ‖[0, 1]‖ / ‖[3, 4]‖ = 1/5.
        assert!((relative_update(&[3.0, 5.0], &[3.0, 4.0]).unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(relative_update(&[1.0, 2.0], &[1.0, 2.0]), Some(0.0));
        assert_eq!(relative_update(&[1.0, 2.0], &[0.0, 0.0]), None);
        // cos([1, 0], [1, 1]) = 1/√2; opposite vectors −1.
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - 0.5f64.sqrt()).abs() < 1e-12);
        assert!((cosine(&[1.0, 2.0], &[-2.0, -4.0]) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn output_projection_is_fixed_linear_and_keeps_distances_roughly() {
        let a = random(1, 400, 5);
        let b = random(1, 400, 6);
        let (pa, pb) = (output_projection(&a, 1), output_projection(&b, 1));
        assert_eq!(pa, output_projection(&a, 1));
        // Linear: P(a + b) = P(a) + P(b).
        let sum: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        for ((s, x), y) in output_projection(&sum, 1).iter().zip(&pa).zip(&pb) {
            assert!((s - x - y).abs() < 1e-5); // a + b was rounded to f32
        }
        // E‖P(a − b)‖² = K/D · ‖a − b‖² (each coordinate has variance ‖a − b‖²/D): within a factor 2 at K = 32.
        let diff: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        let projected: f64 = output_projection(&diff, 1).iter().map(|v| v * v).sum();
        let expected = PROJECTION_DIM as f64 / 400.0 * frobenius_norm(&diff).powi(2);
        assert!(
            (0.5..2.0).contains(&(projected / expected)),
            "{projected} vs {expected}"
        );
    }

    #[test]
    fn output_projection_is_the_rademacher_sum_of_its_definition_bit_for_bit() {
        let outputs = random(100, 7, 3);
        let mut rng = SplitMix64::derived(11, "output-projection", 0);
        let mut by_definition = vec![0.0f64; PROJECTION_DIM];
        for &x in &outputs {
            let signs = rng.next_u64();
            for (k, yk) in by_definition.iter_mut().enumerate() {
                let s = if signs >> k & 1 == 1 { 1.0 } else { -1.0 };
                *yk += s * f64::from(x);
            }
        }
        let scale = 1.0 / (outputs.len() as f64).sqrt();
        let expected: Vec<u64> = by_definition
            .iter()
            .map(|v| (v * scale).to_bits())
            .collect();
        let got: Vec<u64> = output_projection(&outputs, 11)
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(got, expected);
    }
}
