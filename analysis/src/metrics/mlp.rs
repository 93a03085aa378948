//! MLP-block metrics (SPEC §5D) that need no ablation: output norm and fraction of active neurons, at the key
//! positions. Also the per-head output norm of §5C, which has the same shape of computation.

use faer::Mat;

/// Euclidean norm ‖x‖₂.
pub fn norm(x: &[f32]) -> f64 {
    x.iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

/// Fraction of neurons whose post-activation is positive (ReLU: the neurons that fire; GELU: the same
/// threshold, so the number means "on the positive side").
pub fn active_fraction(post: &[f32]) -> f64 {
    post.iter().filter(|&&v| v > 0.0).count() as f64 / post.len().max(1) as f64
}

/// Norms of one head's writes into the residual stream, ‖z_i W_O[h]‖₂ for every row z_i of `z` [rows, d_head],
/// with `w_o` [d_head, d_model] (the TransformerLens `result` of that head without the shared bias b_O): one
/// matrix product in f64 for all rows.
pub fn head_output_norms(z: &[f32], d_head: usize, w_o: &[f32]) -> Vec<f64> {
    let rows = z.len() / d_head;
    let d_model = w_o.len() / d_head;
    let z = Mat::<f64>::from_fn(rows, d_head, |i, e| f64::from(z[i * d_head + e]));
    let w_o = Mat::<f64>::from_fn(d_head, d_model, |e, m| f64::from(w_o[e * d_model + m]));
    let out = z * w_o;
    // Column by column (faer stores columns contiguously); each row's squares still add up in column order.
    let mut squares = vec![0.0f64; rows];
    for m in 0..d_model {
        for (sum, &v) in squares.iter_mut().zip(out.col_as_slice(m)) {
            *sum += v * v;
        }
    }
    squares.into_iter().map(f64::sqrt).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_of_three_four_is_five() {
        assert!((norm(&[3.0, 4.0]) - 5.0).abs() < 1e-12);
    }

    #[test]
    fn active_fraction_counts_strictly_positive() {
        assert_eq!(active_fraction(&[0.0, 1.0, -2.0, 0.5]), 0.5);
    }

    #[test]
    fn head_output_norm_is_the_norm_of_z_times_w_o() {
        // W_O = [[1, 0, 0], [0, 1, 1]]. z = [1, 2] → z W_O = [1, 2, 2], norm 3; z = [3, 0] → [3, 0, 0], norm 3;
        // z = [0, 1] → [0, 1, 1], norm √2.
        let w_o = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0];
        let norms = head_output_norms(&[1.0, 2.0, 3.0, 0.0, 0.0, 1.0], 2, &w_o);
        let expected = [3.0, 3.0, 2f64.sqrt()];
        assert!(
            norms
                .iter()
                .zip(expected)
                .all(|(a, b)| (a - b).abs() < 1e-12),
            "{norms:?}"
        );
        // A zero W_O writes nothing.
        assert_eq!(head_output_norms(&[1.0, 2.0], 2, &[0.0; 6]), [0.0]);
    }
}
