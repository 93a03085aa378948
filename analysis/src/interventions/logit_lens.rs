//! Logit lens (nostalgebraist 2020; SPEC §6): read the residual stream at a layer boundary as if it were the
//! last one, logits = LN_final(resid) · W_U + b_U, and score them on the probe set's answers.

use serde::Serialize;

use crate::metrics::attribution::layer_norm_stats;

/// Loss and accuracy of one boundary read through the unembedding.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LensScore {
    /// Mean cross-entropy (nats) at the answer positions.
    pub loss: f64,
    /// Argmax accuracy at the answer positions.
    pub accuracy: f64,
}

/// The unembedding a lens reads through: `W_U` [d_model, d_vocab_out], `b_U`, and the final LayerNorm's
/// weight and bias if the model has one.
pub struct Unembedding<'a> {
    pub w_u: &'a [f32],
    pub b_u: &'a [f32],
    pub ln_final: Option<(&'a [f32], &'a [f32])>,
    pub eps: f64,
}

/// Scores `resid` [rows, d_model] (one row per example × answer position) against `targets` [rows].
pub fn logit_lens(resid: &[f32], targets: &[u32], unembed: &Unembedding<'_>) -> LensScore {
    let vocab = unembed.b_u.len();
    let d = unembed.w_u.len() / vocab;
    let rows = targets.len();
    let (mut loss, mut correct) = (0.0, 0usize);
    for (row, &target) in resid.chunks(d).zip(targets) {
        let x: Vec<f64> = match unembed.ln_final {
            Some((w, b)) => {
                let (mean, scale) = layer_norm_stats(row, unembed.eps);
                row.iter()
                    .zip(w.iter().zip(b))
                    .map(|(&v, (&wj, &bj))| {
                        (f64::from(v) - mean) / scale * f64::from(wj) + f64::from(bj)
                    })
                    .collect()
            }
            None => row.iter().map(|&v| f64::from(v)).collect(),
        };
        let logits: Vec<f64> = (0..vocab)
            .map(|c| {
                f64::from(unembed.b_u[c])
                    + x.iter()
                        .enumerate()
                        .map(|(j, xj)| xj * f64::from(unembed.w_u[j * vocab + c]))
                        .sum::<f64>()
            })
            .collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        loss += lse - logits[target as usize];
        let best = (0..vocab)
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
            .unwrap_or(0);
        correct += usize::from(best == target as usize);
    }
    LensScore {
        loss: loss / rows.max(1) as f64,
        accuracy: correct as f64 / rows.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_sized_lens_without_layer_norm() {
        // d_model 2, vocab 2, W_U = I, b_U = 0: logits = resid. Row [2, 0] → class 0 with loss ln(1 + e^-2);
        // row [0, 1] with target 0 → wrong, loss ln(1 + e^1).
        let unembed = Unembedding {
            w_u: &[1.0, 0.0, 0.0, 1.0],
            b_u: &[0.0, 0.0],
            ln_final: None,
            eps: 1e-5,
        };
        let score = logit_lens(&[2.0, 0.0, 0.0, 1.0], &[0, 0], &unembed);
        let want = ((1.0 + (-2f64).exp()).ln() + (1.0 + 1f64.exp()).ln()) / 2.0;
        assert!((score.loss - want).abs() < 1e-12);
        assert_eq!(score.accuracy, 0.5);
    }
}
