//! What each latent of a dictionary stands for, measured on the probe set: the output tokens its decoder
//! direction promotes (the direction read through the unembedding, W_dec·W_U: the "logit weights" of SAE
//! dashboards, Bricken et al. 2023 "Towards monosemanticity", as SAELens shows them), the probe activations it
//! fires on most (example and key position), and the probe target class whose indicator its activation
//! correlates with best (Pearson), at each key position. Pure functions over host arrays.

use serde::Serialize;

/// A token and its centred logit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenLogit {
    pub token: u32,
    pub logit: f64,
}

/// The `top` tokens with the largest centred logit `direction · W_U[:, v] − mean_v(direction · W_U)`;
/// `w_u` is [d, vocab] row-major. The centring removes what raises every logit alike (the logit-difference
/// convention of direct logit attribution). The final LayerNorm, where the model has one, is not applied.
pub fn promoted_tokens(
    direction: &[f32],
    w_u: &[f32],
    vocab: usize,
    top: usize,
) -> Vec<TokenLogit> {
    let mut logits = vec![0.0f64; vocab];
    for (row, &x) in w_u.chunks_exact(vocab).zip(direction) {
        for (l, &w) in logits.iter_mut().zip(row) {
            *l += f64::from(x) * f64::from(w);
        }
    }
    let mean = logits.iter().sum::<f64>() / vocab.max(1) as f64;
    let mut tokens: Vec<TokenLogit> = logits
        .iter()
        .enumerate()
        .map(|(v, l)| TokenLogit {
            token: v as u32,
            logit: l - mean,
        })
        .collect();
    tokens.sort_by(|a, b| b.logit.total_cmp(&a.logit).then(a.token.cmp(&b.token)));
    tokens.truncate(top);
    tokens
}

/// One activation of a latent on the probe set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activation {
    pub example: usize,
    /// The key position's index in the task's order.
    pub key: usize,
    pub value: f64,
}

/// The `top` largest non-zero activations of `latent` in `z` [examples · keys, latents] (rows example-major).
pub fn top_activations(
    z: &[f32],
    latents: usize,
    keys: usize,
    latent: usize,
    top: usize,
) -> Vec<Activation> {
    let mut found: Vec<Activation> = z
        .chunks_exact(latents)
        .enumerate()
        .filter(|(_, row)| row[latent] > 0.0)
        .map(|(r, row)| Activation {
            example: r / keys,
            key: r % keys,
            value: f64::from(row[latent]),
        })
        .collect();
    found.sort_by(|a, b| b.value.total_cmp(&a.value).then(a.example.cmp(&b.example)));
    found.truncate(top);
    found
}

/// Pearson correlation of `values` with the indicator of `labels == class`; 0 when either is constant.
pub fn class_correlation(values: &[f64], labels: &[u32], class: u32) -> f64 {
    let n = values.len() as f64;
    let indicator: Vec<f64> = labels
        .iter()
        .map(|&l| f64::from(u8::from(l == class)))
        .collect();
    let (mv, mi) = (
        values.iter().sum::<f64>() / n,
        indicator.iter().sum::<f64>() / n,
    );
    let (mut cov, mut vv, mut vi) = (0.0, 0.0, 0.0);
    for (v, i) in values.iter().zip(&indicator) {
        cov += (v - mv) * (i - mi);
        vv += (v - mv).powi(2);
        vi += (i - mi).powi(2);
    }
    if vv > 0.0 && vi > 0.0 {
        cov / (vv * vi).sqrt()
    } else {
        0.0
    }
}

/// The class of one of `labels` (each `(target name, labels per example, classes)`) whose indicator
/// correlates best with `values` (one per example), and the correlation; `None` when nothing correlates.
pub fn best_class<'a>(
    values: &[f64],
    labels: impl IntoIterator<Item = (&'a str, &'a [u32], usize)>,
) -> Option<(&'a str, u32, f64)> {
    labels
        .into_iter()
        .flat_map(|(name, labels, classes)| {
            (0..classes as u32).map(move |c| (name, c, class_correlation(values, labels, c)))
        })
        .filter(|(_, _, r)| *r > 0.0)
        .max_by(|a, b| a.2.total_cmp(&b.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promoted_tokens_are_centred_logits_of_the_direction() {
        // d = 2, vocab = 3, W_U rows (1, 0, -1) and (0, 2, 0); direction (1, 1): logits (1, 2, -1), mean 2/3,
        // centred (1/3, 4/3, -5/3): token 1 first, then token 0.
        let tokens = promoted_tokens(&[1.0, 1.0], &[1.0, 0.0, -1.0, 0.0, 2.0, 0.0], 3, 2);
        assert_eq!(tokens.iter().map(|t| t.token).collect::<Vec<_>>(), [1, 0]);
        assert!((tokens[0].logit - 4.0 / 3.0).abs() < 1e-12);
        assert!((tokens[1].logit - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn top_activations_name_example_and_key() {
        // 2 examples × 2 keys, 2 latents; latent 1 fires 0.5 at (0, 1) and 2 at (1, 0).
        let z = [0.0, 0.0, 1.0, 0.5, 0.0, 2.0, 3.0, 0.0];
        let top = top_activations(&z, 2, 2, 1, 5);
        assert_eq!(
            top,
            [
                Activation {
                    example: 1,
                    key: 0,
                    value: 2.0
                },
                Activation {
                    example: 0,
                    key: 1,
                    value: 0.5
                },
            ]
        );
    }

    #[test]
    fn correlation_with_a_class_indicator() {
        // Values (1, 0, 1, 0) against labels (2, 1, 2, 0): the indicator of class 2 is the values themselves
        // (r = 1); of class 1 it is (0, 1, 0, 0): r = -1/√3.
        let (values, labels) = ([1.0, 0.0, 1.0, 0.0], [2, 1, 2, 0]);
        assert!((class_correlation(&values, &labels, 2) - 1.0).abs() < 1e-12);
        assert!((class_correlation(&values, &labels, 1) + 1.0 / 3f64.sqrt()).abs() < 1e-12);
        assert_eq!(class_correlation(&[1.0; 4], &labels, 2), 0.0);
        let best = best_class(&values, [("t", &labels[..], 3)]).unwrap();
        assert_eq!((best.0, best.1), ("t", 2));
    }
}
