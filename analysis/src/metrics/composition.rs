//! Composition scores between attention heads (Elhage et al. 2021, "A Mathematical Framework for Transformer
//! Circuits"), weight-only, as TransformerLens `HookedTransformer.all_composition_scores` /
//! `utils.composition_scores`: ‖M₁M₂‖_F / (‖M₁‖_F ‖M₂‖_F) with M₁ = the earlier head's OV circuit
//! W_V W_O [d_model, d_model] and, for K-composition, M₂ = the later head's `QK.T` = W_K W_Qᵀ.

use faer::Mat;

/// ‖left · right‖_F / (‖left‖_F ‖right‖_F) for square [d, d] matrices; 0 if either is zero.
pub fn composition_score(left: &Mat<f64>, right: &Mat<f64>) -> f64 {
    let norms = left.norm_l2() * right.norm_l2();
    if norms > 0.0 {
        (left * right).norm_l2() / norms
    } else {
        0.0
    }
}

/// `a` [d_model, d_head] · `b`ᵀ where `b` is [d_head, d_model] (`transpose_b` false) or [d_model, d_head]
/// (true), both row-major: a [d_model, d_model] low-rank circuit matrix.
pub fn circuit(a: &[f32], b: &[f32], d_model: usize, d_head: usize, transpose_b: bool) -> Mat<f64> {
    let a = Mat::from_fn(d_model, d_head, |i, e| f64::from(a[i * d_head + e]));
    let b = if transpose_b {
        Mat::from_fn(d_head, d_model, |e, j| f64::from(b[j * d_head + e]))
    } else {
        Mat::from_fn(d_head, d_model, |e, j| f64::from(b[e * d_model + j]))
    };
    a * b
}

/// K-composition score of every (earlier head, later head) pair: `ov[l][h]` = W_V W_O and `qk_t[l][h]` =
/// W_K W_Qᵀ of head h in layer l. Returns `(earlier layer, earlier head, later layer, later head, score)`
/// for every earlier layer < later layer (TransformerLens masks the rest to 0).
pub fn k_composition(
    ov: &[Vec<Mat<f64>>],
    qk_t: &[Vec<Mat<f64>>],
) -> Vec<(usize, usize, usize, usize, f64)> {
    let mut out = vec![];
    for (l2, later) in qk_t.iter().enumerate() {
        for (h2, right) in later.iter().enumerate() {
            for (l1, earlier) in ov.iter().enumerate().take(l2) {
                for (h1, left) in earlier.iter().enumerate() {
                    out.push((l1, h1, l2, h2, composition_score(left, right)));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use host::rng::SplitMix64;

    #[test]
    fn aligned_rank_one_matrices_compose_fully() {
        // M₁ = u vᵀ, M₂ = v wᵀ: M₁M₂ = |v|² u wᵀ, so the score is |v|²|u||w| / (|u||v| · |v||w|) = 1.
        let (u, v, w) = ([1.0, 2.0, 0.0], [0.0, 3.0, 4.0], [2.0, 0.0, 1.0]);
        let left = Mat::from_fn(3, 3, |i, j| u[i] * v[j]);
        let right = Mat::from_fn(3, 3, |i, j| v[i] * w[j]);
        assert!((composition_score(&left, &right) - 1.0).abs() < 1e-12);
        // Orthogonal rank-1 factors (v ⟂ v'): nothing composes.
        let right = Mat::from_fn(3, 3, |i, j| [1.0, 0.0, 0.0][i] * w[j]);
        assert!(composition_score(&left, &right).abs() < 1e-12);
    }

    #[test]
    fn random_square_matrices_score_about_one_over_sqrt_d() {
        // For Gaussian d×d matrices ‖AB‖_F ≈ √d · ‖A‖_F‖B‖_F / d, so the score ≈ 1/√d.
        let d = 64;
        let mut rng = SplitMix64::new(9);
        let mut random = || Mat::from_fn(d, d, |_, _| rng.normal());
        let (a, b) = (random(), random());
        let score = composition_score(&a, &b);
        let expected = 1.0 / (d as f64).sqrt();
        assert!(
            (score / expected - 1.0).abs() < 0.15,
            "{score} vs {expected}"
        );
    }

    #[test]
    fn circuit_matrices_follow_the_transformer_lens_products() {
        // W_V [2, 1] = [[1], [2]], W_O [1, 2] = [[3, 4]]: OV = [[3, 4], [6, 8]].
        let ov = circuit(&[1.0, 2.0], &[3.0, 4.0], 2, 1, false);
        assert_eq!(
            (ov[(0, 0)], ov[(0, 1)], ov[(1, 0)], ov[(1, 1)]),
            (3.0, 4.0, 6.0, 8.0)
        );
        // W_K [2, 1] = [[1], [0]], W_Q [2, 1] = [[2], [5]]: W_K W_Qᵀ = [[2, 5], [0, 0]].
        let qk_t = circuit(&[1.0, 0.0], &[2.0, 5.0], 2, 1, true);
        assert_eq!(
            (qk_t[(0, 0)], qk_t[(0, 1)], qk_t[(1, 0)], qk_t[(1, 1)]),
            (2.0, 5.0, 0.0, 0.0)
        );
    }
}
