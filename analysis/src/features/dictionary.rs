//! A trained sparse dictionary on the host and what is measured of it, as pure functions: the TopK encoding,
//! the reconstruction, its normalized error and explained variance, each latent's firing frequency (dead and
//! dense latents), and how well its decoder directions match known directions (Gao et al. 2024, "Scaling and
//! evaluating sparse autoencoders", §2.3 for the encoder, §4 for the metrics).

use serde::Serialize;

use crate::metrics::dynamics::cosine;

/// A TopK sparse autoencoder's weights: latents z = ReLU(TopK_k((x − b_pre)·W_enc + b_enc)) and the
/// reconstruction x̂ = z·W_dec + b_pre (Gao et al. 2024, eq. 3–4), for inputs of width `d` and `latents`
/// latents. Row-major: `w_enc` [d, latents], `w_dec` [latents, d] (each row one latent's unit-norm
/// decoder direction).
#[derive(Debug, Clone, PartialEq)]
pub struct Dictionary {
    pub d: usize,
    pub latents: usize,
    pub k: usize,
    pub w_enc: Vec<f32>,
    pub b_enc: Vec<f32>,
    pub w_dec: Vec<f32>,
    pub b_pre: Vec<f32>,
}

impl Dictionary {
    /// The latents of each row of `x` [n, d]: [n, latents], at most `k` non-zero per row (the `k` largest
    /// pre-activations, ties broken towards the lower index, then ReLU).
    pub fn encode(&self, x: &[f32]) -> Vec<f32> {
        let (d, m) = (self.d, self.latents);
        let mut out = Vec::with_capacity(x.len() / d * m);
        let mut order: Vec<usize> = (0..m).collect();
        for row in x.chunks_exact(d) {
            let pre: Vec<f32> = (0..m)
                .map(|j| {
                    let dot: f32 = row
                        .iter()
                        .zip(&self.b_pre)
                        .enumerate()
                        .map(|(i, (x, b))| (x - b) * self.w_enc[i * m + j])
                        .sum();
                    dot + self.b_enc[j]
                })
                .collect();
            order.sort_by(|&a, &b| pre[b].total_cmp(&pre[a]).then(a.cmp(&b)));
            let mut z = vec![0.0; m];
            for &j in &order[..self.k.min(m)] {
                z[j] = pre[j].max(0.0);
            }
            out.extend(z);
        }
        out
    }

    /// The reconstruction of latents `z` [n, latents]: [n, d].
    pub fn decode(&self, z: &[f32]) -> Vec<f32> {
        let (d, m) = (self.d, self.latents);
        let mut out = Vec::with_capacity(z.len() / m * d);
        for latents in z.chunks_exact(m) {
            let mut x = self.b_pre.clone();
            for (j, &a) in latents.iter().enumerate().filter(|(_, a)| **a != 0.0) {
                for (xi, w) in x.iter_mut().zip(&self.w_dec[j * d..(j + 1) * d]) {
                    *xi += a * w;
                }
            }
            out.extend(x);
        }
        out
    }

    /// One latent's decoder direction.
    pub fn direction(&self, latent: usize) -> &[f32] {
        &self.w_dec[latent * self.d..(latent + 1) * self.d]
    }
}

/// How well a dictionary reconstructs a set of inputs and how its latents fire on them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DictionaryStats {
    /// Σ‖x − x̂‖² / Σ‖x − x̄‖² (Gao et al. 2024's normalized MSE: 1 is no better than predicting the mean).
    pub normalized_mse: f64,
    /// 1 − normalized MSE: the fraction of the inputs' variance the reconstruction explains.
    pub variance_explained: f64,
    /// Per latent, the fraction of inputs on which it is non-zero.
    pub frequency: Vec<f64>,
    /// Latents that fire on no input.
    pub dead: usize,
    /// Latents that fire on more than `dense_above` of the inputs (they act as a bias, not a feature).
    pub dense: usize,
}

/// Reconstruction and firing statistics of `dictionary` on `x` [n, d].
pub fn dictionary_stats(dictionary: &Dictionary, x: &[f32], dense_above: f64) -> DictionaryStats {
    let d = dictionary.d;
    let n = x.len() / d;
    let z = dictionary.encode(x);
    let reconstruction = dictionary.decode(&z);
    let normalized_mse = normalized_mse(x, &reconstruction, d);
    let mut frequency = vec![0.0; dictionary.latents];
    for latents in z.chunks_exact(dictionary.latents) {
        for (f, &a) in frequency.iter_mut().zip(latents) {
            if a > 0.0 {
                *f += 1.0;
            }
        }
    }
    frequency.iter_mut().for_each(|f| *f /= n.max(1) as f64);
    DictionaryStats {
        normalized_mse,
        variance_explained: 1.0 - normalized_mse,
        dead: frequency.iter().filter(|&&f| f == 0.0).count(),
        dense: frequency.iter().filter(|&&f| f > dense_above).count(),
        frequency,
    }
}

/// Σ‖x − x̂‖² / Σ‖x − x̄‖² over the rows of `x` and `reconstruction` [n, d] (x̄ the mean row); 0 when the
/// rows of `x` do not vary.
pub fn normalized_mse(x: &[f32], reconstruction: &[f32], d: usize) -> f64 {
    let n = x.len() / d;
    let mut mean = vec![0.0f64; d];
    for row in x.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v) / n as f64;
        }
    }
    let error: f64 = x
        .iter()
        .zip(reconstruction)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum();
    let variance: f64 = x
        .chunks_exact(d)
        .flat_map(|row| {
            row.iter()
                .zip(&mean)
                .map(|(v, m)| (f64::from(*v) - m).powi(2))
        })
        .sum();
    if variance > 0.0 {
        error / variance
    } else {
        0.0
    }
}

/// For each of `directions` [count, d], the largest |cosine| with any decoder direction of `dictionary`, and
/// which latent it is (the recovery metric of planted-feature experiments: Sharkey et al. 2022, "Taking
/// features out of superposition with sparse autoencoders", mean max cosine similarity).
pub fn best_matches(dictionary: &Dictionary, directions: &[f32]) -> Vec<(usize, f64)> {
    let d = dictionary.d;
    directions
        .chunks_exact(d)
        .map(|u| {
            (0..dictionary.latents)
                .map(|j| (j, cosine(u, dictionary.direction(j)).abs()))
                .fold(
                    (0, f64::NEG_INFINITY),
                    |best, c| if c.1 > best.1 { c } else { best },
                )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// d = 2, three latents along e0, e1 and (e0 + e1)/√2, encoder = decoderᵀ, no biases, k = 1.
    fn tiny() -> Dictionary {
        let r = std::f32::consts::FRAC_1_SQRT_2;
        Dictionary {
            d: 2,
            latents: 3,
            k: 1,
            w_enc: vec![1.0, 0.0, r, 0.0, 1.0, r],
            b_enc: vec![0.0; 3],
            w_dec: vec![1.0, 0.0, 0.0, 1.0, r, r],
            b_pre: vec![0.0; 2],
        }
    }

    #[test]
    fn topk_keeps_the_largest_preactivation_and_drops_negatives() {
        // x = (2, 0.5): pre-activations 2, 0.5, 2.5·0.7071 = 1.768 -> latent 0 only, value 2.
        // x = (-1, -1): all pre-activations negative -> ReLU zeroes the kept one.
        let z = tiny().encode(&[2.0, 0.5, -1.0, -1.0]);
        assert_eq!(z, vec![2.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        // Decoding gives (2, 0) and (0, 0).
        assert_eq!(tiny().decode(&z), vec![2.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn stats_of_a_hand_made_set() {
        // Rows (2, 0), (0, 3), (1, 1): each lies on one latent, so the reconstruction is exact.
        // Latent 0 fires on 1 of 3 rows, latent 1 on 1, latent 2 on 1 (its pre-activation 1.414 beats 1, 1).
        let x = [2.0, 0.0, 0.0, 3.0, 1.0, 1.0];
        let stats = dictionary_stats(&tiny(), &x, 0.5);
        assert!(stats.normalized_mse < 1e-12, "{stats:?}");
        assert!((stats.variance_explained - 1.0).abs() < 1e-12);
        assert_eq!(stats.frequency, vec![1.0 / 3.0; 3]);
        assert_eq!((stats.dead, stats.dense), (0, 0));
        // Dense above 0.3: all three fire on a third of the rows.
        assert_eq!(dictionary_stats(&tiny(), &x, 0.3).dense, 3);
    }

    #[test]
    fn normalized_mse_is_one_for_the_mean_prediction() {
        // x = (0), (2): mean 1; predicting 1 for both has error 1 + 1 = 2 = the variance sum.
        assert!((normalized_mse(&[0.0, 2.0], &[1.0, 1.0], 1) - 1.0).abs() < 1e-12);
        // Predicting (0), (1): error 0 + 1 = 1, half the variance.
        assert!((normalized_mse(&[0.0, 2.0], &[0.0, 1.0], 1) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn best_match_is_the_largest_absolute_cosine() {
        // (0, -1) is latent 1 reversed: |cos| 1. (1, 0.2): cos with e0 = 1/√1.04 = 0.9806, with the diagonal
        // 1.2/(√2·√1.04) = 0.8321 -> latent 0.
        let m = best_matches(&tiny(), &[0.0, -1.0, 1.0, 0.2]);
        assert_eq!(m[0].0, 1);
        assert!((m[0].1 - 1.0).abs() < 1e-6);
        assert_eq!(m[1].0, 0);
        assert!((m[1].1 - 1.0 / 1.04f64.sqrt()).abs() < 1e-6);
    }
}
