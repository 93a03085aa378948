//! Fourier progress measures of modular addition (Nanda et al. 2023, "Progress measures for grokking via
//! mechanistic interpretability", §4–5): the model computes (a + b) mod p through a few key frequencies w_k =
//! 2πk/p. Pure functions over host arrays indexed by the p² inputs in the order a·p + b:
//!
//! - [`fourier_basis`]: the orthonormal real Fourier basis over Z_p (constant, then cos_k, sin_k);
//! - [`frequency_norms`] of the embedding W_E and their [`gini`] coefficient (sparse in a grokked model);
//! - [`key_frequencies`] from the 2-D Fourier transform of MLP neuron activations at `=`;
//! - [`restricted_loss`] (only the key frequencies' cos(w_k(a + b)), sin(w_k(a + b)) directions of each output's
//!   logits kept) and [`excluded_loss`] (those directions removed): restricted loss falls before the test loss
//!   during grokking, excluded loss rises.

use faer::Mat;
use std::f64::consts::TAU;

/// The orthonormal Fourier basis over Z_p as rows [p][p]: row 0 constant, then for k = 1..=(p−1)/2 the rows
/// cos(2πk·x/p) and sin(2πk·x/p), each scaled to unit norm (p odd).
pub fn fourier_basis(p: usize) -> Vec<Vec<f64>> {
    let mut rows = vec![vec![1.0 / (p as f64).sqrt(); p]];
    for k in 1..=(p - 1) / 2 {
        for trig in [f64::cos, f64::sin] {
            let row: Vec<f64> = (0..p)
                .map(|x| trig(TAU * (k * x) as f64 / p as f64))
                .collect();
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            rows.push(row.into_iter().map(|v| v / norm).collect());
        }
    }
    rows
}

/// The norm of `w` [p, d] (rows = the p input tokens) along each frequency k = 1..=(p−1)/2:
/// √(‖cos_k · W‖² + ‖sin_k · W‖²).
pub fn frequency_norms(w: &[f32], p: usize) -> Vec<f64> {
    let d = w.len() / p;
    let basis = fourier_basis(p);
    (1..=(p - 1) / 2)
        .map(|k| {
            [2 * k - 1, 2 * k]
                .iter()
                .map(|&r| {
                    (0..d)
                        .map(|j| {
                            let c: f64 =
                                (0..p).map(|x| basis[r][x] * f64::from(w[x * d + j])).sum();
                            c * c
                        })
                        .sum::<f64>()
                })
                .sum::<f64>()
                .sqrt()
        })
        .collect()
}

/// Gini coefficient of non-negative values: 0 when all are equal, (n−1)/n when one holds everything.
/// G = Σ_i (2i − n − 1) x_(i) / (n Σ x) over the values sorted ascending (i from 1).
pub fn gini(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let total: f64 = sorted.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    sorted
        .iter()
        .enumerate()
        .map(|(i, x)| (2.0 * (i + 1) as f64 - n - 1.0) * x)
        .sum::<f64>()
        / (n * total)
}

/// Neurons [`frequency_energy`] transforms at once: its two f64 matrices are [p, p · chunk] (1.6 MB each at
/// p = 113) instead of [p, p · neurons] (52 MB each at the reference's 512 neurons).
const NEURON_CHUNK: usize = 16;

/// Energy of each frequency k = 1..=(p−1)/2 in the 2-D Fourier transform of neuron activations
/// `acts` [p², neurons] (inputs a·p + b): Σ over neurons and over the 2-D basis terms that involve frequency k
/// in a or in b of the squared coefficient. The 2-D transform of a chunk of neurons at once is matrix products
/// with the basis F [p, p]: over a on the chunk's `acts` ([a, (b, neuron)]), then over b for each a-frequency i.
pub fn frequency_energy(acts: &[f32], p: usize) -> Vec<f64> {
    let neurons = acts.len() / (p * p);
    let rows = fourier_basis(p);
    let basis = Mat::from_fn(p, p, |i, x| rows[i][x]);
    let freq = |row: usize| row.div_ceil(2); // 0 constant, 1,2 → 1, 3,4 → 2, …
    let mut energy = vec![0.0; (p - 1) / 2 + 1];
    for first in (0..neurons).step_by(NEURON_CHUNK) {
        let width = NEURON_CHUNK.min(neurons - first);
        let over_a = &basis
            * Mat::from_fn(p, p * width, |a, col| {
                let (b, n) = (col / width, col % width);
                f64::from(acts[(a * p + b) * neurons + first + n])
            });
        for i in 0..p {
            let at_i = Mat::from_fn(p, width, |b, n| over_a[(i, b * width + n)]);
            let coefficients = &basis * &at_i; // [j, neuron]: the coefficient of basis rows i (over a), j (over b)
            for j in 0..p {
                let c2: f64 = (0..width).map(|n| coefficients[(j, n)].powi(2)).sum();
                let (fa, fb) = (freq(i), freq(j));
                if fa > 0 {
                    energy[fa] += c2;
                }
                if fb > 0 && fb != fa {
                    energy[fb] += c2;
                }
            }
        }
    }
    energy[1..].to_vec()
}

/// The `top` frequencies (1-based k) with the most energy, strongest first.
pub fn key_frequencies(energy: &[f64], top: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..energy.len()).collect();
    order.sort_by(|&a, &b| energy[b].total_cmp(&energy[a]));
    order.into_iter().take(top).map(|i| i + 1).collect()
}

/// The components of `logits` [p², p] (inputs a·p + b, outputs c) along cos(w_k(a + b)) and sin(w_k(a + b))
/// over the inputs, for each output c and each k in `freqs` (Nanda et al.'s `get_component_cos_xpy` /
/// `sin_xpy`), plus the per-output constant if `constant`; as a [p², p] array (the directions are orthogonal).
fn frequency_components(logits: &[f32], p: usize, freqs: &[usize], constant: bool) -> Vec<f64> {
    let mut directions: Vec<Vec<f64>> = vec![];
    if constant {
        directions.push(vec![1.0; p * p]);
    }
    for &k in freqs {
        for trig in [f64::cos, f64::sin] {
            directions.push(
                (0..p * p)
                    .map(|i| trig(TAU * (k * ((i / p + i % p) % p)) as f64 / p as f64))
                    .collect(),
            );
        }
    }
    let mut out = vec![0.0; p * p * p];
    for direction in &directions {
        let norm2: f64 = direction.iter().map(|v| v * v).sum();
        for c in 0..p {
            let dot: f64 = (0..p * p)
                .map(|i| direction[i] * f64::from(logits[i * p + c]))
                .sum();
            for (i, u) in direction.iter().enumerate() {
                out[i * p + c] += dot / norm2 * u;
            }
        }
    }
    out
}

/// Mean cross-entropy of `logits` [p², p] at the inputs `rows` against (a + b) mod p, in f64 (the f32 logits
/// as they are, without a p³ f64 copy).
fn loss_at<T: Copy + Into<f64>>(logits: &[T], p: usize, rows: &[usize]) -> f64 {
    let total: f64 = rows
        .iter()
        .map(|&i| {
            let row = &logits[i * p..(i + 1) * p];
            let at = |c: usize| -> f64 { row[c].into() };
            let max = (0..p).map(at).fold(f64::NEG_INFINITY, f64::max);
            let lse = max + (0..p).map(|c| (at(c) - max).exp()).sum::<f64>().ln();
            lse - at((i / p + i % p) % p)
        })
        .sum();
    total / rows.len().max(1) as f64
}

/// Loss at `rows` of the logits restricted to the key frequencies' directions and each output's mean over the
/// inputs. With every frequency kept this is the projection onto all functions of (a + b) mod p, so a model
/// whose logits depend on a + b only keeps its loss exactly.
pub fn restricted_loss(logits: &[f32], p: usize, freqs: &[usize], rows: &[usize]) -> f64 {
    let kept = frequency_components(logits, p, freqs, true);
    loss_at(&kept, p, rows)
}

/// Loss at `rows` of the logits with the key frequencies' directions removed.
pub fn excluded_loss(logits: &[f32], p: usize, freqs: &[usize], rows: &[usize]) -> f64 {
    let mut rest = frequency_components(logits, p, freqs, false);
    for (r, &l) in rest.iter_mut().zip(logits) {
        *r = f64::from(l) - *r;
    }
    loss_at(&rest, p, rows)
}

/// Loss of the logits as they are, at `rows`.
pub fn full_loss(logits: &[f32], p: usize, rows: &[usize]) -> f64 {
    loss_at(logits, p, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 2-D transform as the definition's sums, one coefficient at a time: the oracle for the matrix form.
    fn frequency_energy_by_sums(acts: &[f32], p: usize) -> Vec<f64> {
        let neurons = acts.len() / (p * p);
        let basis = fourier_basis(p);
        let freq = |row: usize| row.div_ceil(2);
        let mut energy = vec![0.0; (p - 1) / 2 + 1];
        for n in 0..neurons {
            for (i, row_a) in basis.iter().enumerate() {
                for (j, row_b) in basis.iter().enumerate() {
                    let c: f64 = (0..p * p)
                        .map(|x| row_a[x / p] * row_b[x % p] * f64::from(acts[x * neurons + n]))
                        .sum();
                    let (fa, fb) = (freq(i), freq(j));
                    if fa > 0 {
                        energy[fa] += c * c;
                    }
                    if fb > 0 && fb != fa {
                        energy[fb] += c * c;
                    }
                }
            }
        }
        energy[1..].to_vec()
    }

    #[test]
    fn the_matrix_form_of_the_frequency_energy_is_the_sums() {
        // Two full chunks of neurons and a partial third.
        let (p, neurons) = (7, 2 * NEURON_CHUNK + 3);
        let mut rng = host::rng::SplitMix64::new(5);
        let acts: Vec<f32> = (0..p * p * neurons)
            .map(|_| rng.next_u64() as f32 / u64::MAX as f32 - 0.5)
            .collect();
        let (fast, slow) = (
            frequency_energy(&acts, p),
            frequency_energy_by_sums(&acts, p),
        );
        assert_eq!(fast.len(), 3);
        for (a, b) in fast.iter().zip(&slow) {
            assert!((a - b).abs() < 1e-9 * b.max(1.0), "{fast:?} vs {slow:?}");
        }
    }

    #[test]
    fn the_basis_is_orthonormal() {
        let basis = fourier_basis(7);
        for (i, u) in basis.iter().enumerate() {
            for (j, v) in basis.iter().enumerate() {
                let dot: f64 = u.iter().zip(v).map(|(a, b)| a * b).sum();
                assert!(
                    (dot - f64::from(u8::from(i == j))).abs() < 1e-12,
                    "{i} {j}: {dot}"
                );
            }
        }
    }

    #[test]
    fn gini_by_hand() {
        assert_eq!(gini(&[1.0, 1.0, 1.0, 1.0]), 0.0);
        // One of four holds everything: (n − 1)/n = 3/4.
        assert!((gini(&[0.0, 0.0, 5.0, 0.0]) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn an_embedding_of_one_frequency_has_all_its_norm_there() {
        // W_E[x] = [cos(2π·3x/11), sin(2π·3x/11)]: only k = 3.
        let p = 11;
        let w: Vec<f32> = (0..p)
            .flat_map(|x| {
                let t = TAU * (3 * x) as f64 / p as f64;
                [t.cos() as f32, t.sin() as f32]
            })
            .collect();
        let norms = frequency_norms(&w, p);
        assert!(norms[2] > 1.0);
        assert!(
            norms.iter().enumerate().all(|(i, &n)| i == 2 || n < 1e-5),
            "{norms:?}"
        );
        assert!(gini(&norms) > 0.79, "{}", gini(&norms));
    }

    /// Logits that depend on (a + b) mod p only: L[a, b, c] = g((a + b) mod p, c) for a fixed random g, with
    /// a bump at the correct answer so the loss is low.
    fn logits_of_the_sum(p: usize) -> Vec<f32> {
        let mut rng = host::rng::SplitMix64::new(3);
        let g: Vec<f64> = (0..p * p).map(|_| rng.normal()).collect();
        (0..p * p * p)
            .map(|i| {
                let (s, c) = (((i / (p * p)) + (i / p) % p) % p, i % p);
                (g[s * p + c] + if s == c { 4.0 } else { 0.0 }) as f32
            })
            .collect()
    }

    #[test]
    fn restricted_loss_with_every_frequency_kept_is_the_full_loss() {
        let p = 13;
        let logits = logits_of_the_sum(p);
        let rows: Vec<usize> = (0..p * p).collect();
        let every: Vec<usize> = (1..=(p - 1) / 2).collect();
        let full = full_loss(&logits, p, &rows);
        let restricted = restricted_loss(&logits, p, &every, &rows);
        assert!((restricted - full).abs() < 1e-5, "{restricted} vs {full}");
        // Fewer frequencies keep less: the loss rises. Removing every frequency leaves each output a constant
        // L̄_c, whose loss lse(L̄) − mean(L̄) is at least that of uniform logits, ln p.
        assert!(restricted_loss(&logits, p, &[1, 2], &rows) > full + 0.1);
        let excluded = excluded_loss(&logits, p, &every, &rows);
        assert!(
            excluded >= (p as f64).ln() - 1e-9 && excluded > full + 1.0,
            "{excluded}"
        );
    }

    #[test]
    fn neuron_activations_of_one_frequency_make_it_the_key_frequency() {
        // Two neurons: cos(w_4 a)·cos(w_4 b) and sin(w_4(a + b)).
        let p = 11;
        let acts: Vec<f32> = (0..p * p)
            .flat_map(|i| {
                let (a, b) = ((i / p) as f64, (i % p) as f64);
                let w = TAU * 4.0 / p as f64;
                [
                    ((w * a).cos() * (w * b).cos()) as f32,
                    (w * (a + b)).sin() as f32,
                ]
            })
            .collect();
        let energy = frequency_energy(&acts, p);
        assert_eq!(key_frequencies(&energy, 1), vec![4]);
        assert!(
            energy.iter().enumerate().all(|(i, &e)| i == 3 || e < 1e-9),
            "{energy:?}"
        );
    }
}
