//! Dynamics metrics (SPEC §5E): how the model's representations and weights change between checkpoints.

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
pub fn linear_cka(x: &[f32], d1: usize, y: &[f32], d2: usize) -> f64 {
    let n = x.len() / d1;
    let centred = |m: &[f32], d: usize| -> Vec<f64> {
        let mut mean = vec![0.0; d];
        for row in m.chunks(d) {
            for (acc, &v) in mean.iter_mut().zip(row) {
                *acc += f64::from(v) / n as f64;
            }
        }
        m.chunks(d)
            .flat_map(|row| {
                row.iter()
                    .zip(&mean)
                    .map(|(&v, mu)| f64::from(v) - mu)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let (x, y) = (centred(x, d1), centred(y, d2));
    // ‖AᵀB‖²_F for A [n, da], B [n, db].
    let cross = |a: &[f64], da: usize, b: &[f64], db: usize| -> f64 {
        let mut m = vec![0.0; da * db];
        for i in 0..n {
            let (ra, rb) = (&a[i * da..(i + 1) * da], &b[i * db..(i + 1) * db]);
            for (p, &va) in ra.iter().enumerate() {
                for (q, &vb) in rb.iter().enumerate() {
                    m[p * db + q] += va * vb;
                }
            }
        }
        m.iter().map(|v| v * v).sum()
    };
    let denominator = (cross(&x, d1, &x, d1) * cross(&y, d2, &y, d2)).sqrt();
    if denominator > 0.0 {
        cross(&y, d2, &x, d1) / denominator
    } else {
        0.0
    }
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
    use trainer::rng::SplitMix64;

    fn random(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..n * d).map(|_| rng.normal() as f32).collect()
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
}
