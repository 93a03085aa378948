//! MLP-block metrics (SPEC §5D) that need no ablation: output norm and fraction of active neurons, at the key
//! positions. Also the per-head output norm of §5C, which has the same shape of computation.

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

/// Norm of one head's write into the residual stream, ‖z_h W_O[h]‖₂, for `z` [d_head] and `w_o` [d_head, d_model]
/// (the TransformerLens `result` of that head without the shared bias b_O).
pub fn head_output_norm(z: &[f32], w_o: &[f32]) -> f64 {
    let d_model = w_o.len() / z.len();
    let mut out = vec![0.0f64; d_model];
    for (e, &z_e) in z.iter().enumerate() {
        for (m, o) in out.iter_mut().enumerate() {
            *o += f64::from(z_e) * f64::from(w_o[e * d_model + m]);
        }
    }
    out.iter().map(|v| v * v).sum::<f64>().sqrt()
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
        // z = [1, 2], W_O = [[1, 0, 0], [0, 1, 1]] → z W_O = [1, 2, 2], norm 3.
        assert!(
            (head_output_norm(&[1.0, 2.0], &[1.0, 0.0, 0.0, 0.0, 1.0, 1.0]) - 3.0).abs() < 1e-12
        );
        // A zero W_O writes nothing.
        assert_eq!(head_output_norm(&[1.0, 2.0], &[0.0; 6]), 0.0);
    }
}
