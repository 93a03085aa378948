//! Task-declared progress measures (`behavior.progress.*`): the Fourier gap of a sparse-parity model (Barak et al.
//! 2022) and the KL divergence to the in-context oracles of Markov-chain sequences (Edelman et al. 2024).

use host::array::HostArray;
use host::measure::{ProgressMeasure, markov_oracles};

/// Inputs of [`progress`]: `logits` is `[n, seq, vocab]`, `tokens` `[n, seq]`, `patterns` each layer's
/// attention pattern `[n, head, q, k]`.
pub struct ProgressInput<'a> {
    pub logits: &'a [f32],
    pub vocab: usize,
    pub tokens: &'a [u32],
    pub seq_len: usize,
    pub answer_positions: &'a [usize],
    pub patterns: &'a [&'a HostArray],
}

/// A declared measure with what it reads of the probe tokens alone, computed once per run: for
/// [`ProgressMeasure::MarkovOracles`], the three in-context predictors at every example's answer positions
/// (counting them again at every checkpoint was half of the measure's time).
pub struct PreparedMeasure {
    measure: ProgressMeasure,
    /// [example, answer, predictor, state], flattened; empty for the other measures.
    oracles: Vec<f64>,
}

impl PreparedMeasure {
    /// `tokens` `[n, seq_len]` are the probe set's.
    pub fn new(
        measure: ProgressMeasure,
        tokens: &[u32],
        seq_len: usize,
        answer_positions: &[usize],
    ) -> Self {
        let oracles = match &measure {
            ProgressMeasure::MarkovOracles {
                states,
                pseudo_count,
            } => tokens
                .chunks_exact(seq_len.max(1))
                .flat_map(|tokens| {
                    answer_positions
                        .iter()
                        .flat_map(|&t| markov_oracles(&tokens[..=t], *states, *pseudo_count))
                })
                .flatten()
                .collect(),
            ProgressMeasure::ParityFourier { .. } => vec![],
        };
        Self { measure, oracles }
    }
}

/// The named values of one declared measure, in the order they are documented in `docs/schema.md`.
pub fn progress(prepared: &PreparedMeasure, input: &ProgressInput<'_>) -> Vec<(&'static str, f64)> {
    let n = input.tokens.len() / input.seq_len.max(1);
    let measure = &prepared.measure;
    let row =
        |i: usize, t: usize| &input.logits[(i * input.seq_len + t) * input.vocab..][..input.vocab];
    match measure {
        ProgressMeasure::ParityFourier {
            bits,
            subset,
            answer,
            zero,
            one,
        } => {
            let inputs: Vec<u64> = (0..n)
                .map(|i| {
                    bits.iter().enumerate().fold(0u64, |mask, (b, &pos)| {
                        mask | (u64::from(input.tokens[i * input.seq_len + pos] == *one) << b)
                    })
                })
                .collect();
            let outputs: Vec<f64> = (0..n)
                .map(|i| {
                    let p = softmax(row(i, *answer));
                    p[*one as usize] - p[*zero as usize]
                })
                .collect();
            let gap = fourier_gap(&inputs, &outputs, bits.len(), subset);
            let relevant: Vec<usize> = subset.iter().map(|&i| bits[i]).collect();
            let irrelevant: Vec<usize> = (0..bits.len())
                .filter(|i| !subset.contains(i))
                .map(|i| bits[i])
                .collect();
            let attention = input
                .patterns
                .iter()
                .flat_map(|pattern| relevant_attention(pattern, *answer, &relevant, &irrelevant))
                .reduce(f64::max);
            let mut values = vec![
                ("fourier_target", gap.target),
                ("fourier_best_other", gap.best_other),
                ("fourier_gap", gap.target - gap.best_other),
            ];
            // Without a captured pattern (no attention layer) there is no attention to measure.
            values.extend(attention.map(|a| ("relevant_attention", a)));
            values
        }
        ProgressMeasure::MarkovOracles { states, .. } => {
            let mut totals = [0.0; 3];
            let mut count = 0usize;
            // Each answer's three predictors, in the order of the loop below.
            let mut oracles = prepared.oracles.chunks_exact(3 * states);
            for i in 0..n {
                for &t in input.answer_positions {
                    let model = softmax(row(i, t));
                    let three = oracles
                        .next()
                        .expect("prepared for every example and answer");
                    for (total, oracle) in totals.iter_mut().zip(three.chunks_exact(*states)) {
                        *total += kl_divergence(oracle, &model);
                    }
                    count += 1;
                }
            }
            let mean = |k: usize| totals[k] / count.max(1) as f64;
            vec![
                ("kl_uniform", mean(0)),
                ("kl_unigram", mean(1)),
                ("kl_bigram", mean(2)),
            ]
        }
    }
}

/// Softmax of one logit row, in f64.
fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.iter().map(|e| e / total).collect()
}

/// The Fourier coefficient of a ±1-valued-ish output on the hidden subset and the largest on any other subset
/// of the same size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FourierGap {
    /// |f̂(S)| for the hidden subset S.
    pub target: f64,
    /// max |f̂(T)| over the subsets T ≠ S with |T| = |S|.
    pub best_other: f64,
}

/// Fourier coefficients of the model's output on the Boolean cube (O'Donnell, "Analysis of Boolean
/// Functions", §1.2), estimated on the probe inputs: f̂(T) = mean over x of f(x) χ_T(x) with
/// χ_T(x) = (−1)^(Σ_{i∈T} x_i). The output is f(x) = P(parity 1 | x) − P(parity 0 | x) ∈ [−1, 1], so a perfect
/// parity model has |f̂(S)| = 1 and every other coefficient 0. Barak et al. 2022 (§4, "hidden progress") show
/// that SGD amplifies the coefficient of the hidden subset gradually, long before the loss moves; the gap
/// |f̂(S)| − max_{T≠S, |T|=|S|} |f̂(T)| is that progress, separated from the estimation noise of the other
/// coefficients. The other coefficients are those of the residual f − f̂(S)χ_S: on a finite probe set the
/// characters are not exactly orthogonal (each χ_T correlates with χ_S by ≈ 1/√n on n inputs, ≈ 0.14 at the
/// maximum over the 560 3-subsets of 16 bits with 512 inputs), so a perfect parity model would otherwise show
/// that sampling correlation as mass on other subsets; on the whole cube both definitions agree. `inputs`
/// holds each example's bits as a mask (bit i = x_i), `subset` the indices of S among the `n_bits`.
pub fn fourier_gap(inputs: &[u64], outputs: &[f64], n_bits: usize, subset: &[usize]) -> FourierGap {
    let target_mask = subset.iter().fold(0u64, |m, &i| m | (1 << i));
    let n = inputs.len().max(1) as f64;
    let coefficient = |values: &[f64], mask: u64| -> f64 {
        inputs
            .iter()
            .zip(values)
            .map(|(&x, &f)| f * chi(x, mask))
            .sum::<f64>()
            / n
    };
    let target = coefficient(outputs, target_mask);
    let residual: Vec<f64> = inputs
        .iter()
        .zip(outputs)
        .map(|(&x, &f)| f - target * chi(x, target_mask))
        .collect();
    let mut others = vec![];
    for_each_subset(n_bits, subset.len(), &mut |mask| {
        if mask != target_mask {
            others.push(mask);
        }
    });
    // `coefficient` of the residual for SUBSETS masks at once: each sum is still taken over the examples in
    // order (the same additions, so the same bits), but the masks' independent sums overlap instead of each
    // waiting on its own chain, and χ's sign is flipped without a branch (the 2 023 other 3-subsets of 24
    // bits over 512 examples took ~7 ms a checkpoint, branch misses and one addition chain at a time).
    const SUBSETS: usize = 8;
    let mut best_other = 0.0f64;
    for masks in others.chunks(SUBSETS) {
        let mut sums = [-0.0f64; SUBSETS];
        for (&x, &f) in inputs.iter().zip(&residual) {
            for (sum, &mask) in sums.iter_mut().zip(masks) {
                *sum += times_chi(f, x & mask);
            }
        }
        for sum in &sums[..masks.len()] {
            best_other = best_other.max((sum / n).abs());
        }
    }
    FourierGap {
        target: target.abs(),
        best_other,
    }
}

/// Per head of one layer's pattern `[n, head, q, k]`: the attention mass from the query position `answer` to
/// the `relevant` key positions, minus the mass those positions would get if each were attended like the
/// average `irrelevant` one, averaged over examples. Barak et al. 2022 (§4) find the hidden progress of
/// sparse-parity learners in the weights on the relevant coordinates, growing through the loss plateau; in a
/// transformer the bits are positions, and the weights that select coordinates are the attention from the
/// answer position, so this is that measure here: 0 for attention blind to the subset, up to 1 for a head that
/// reads only the relevant bits.
pub fn relevant_attention(
    pattern: &HostArray,
    answer: usize,
    relevant: &[usize],
    irrelevant: &[usize],
) -> Vec<f64> {
    let [n, heads, q, k] = pattern.shape[..] else {
        return vec![];
    };
    (0..heads)
        .map(|h| {
            let mut total = 0.0;
            for b in 0..n {
                let row = &pattern.data[((b * heads + h) * q + answer) * k..][..k];
                let mass = |positions: &[usize]| -> f64 {
                    positions.iter().map(|&p| f64::from(row[p])).sum()
                };
                let per_irrelevant = mass(irrelevant) / irrelevant.len().max(1) as f64;
                total += mass(relevant) - relevant.len() as f64 * per_irrelevant;
            }
            total / n.max(1) as f64
        })
        .collect()
}

/// The parity character χ_T(x) = (−1)^(Σ_{i∈T} x_i) of the input bits `x` (a mask) on the subset mask `T`.
pub fn chi(x: u64, subset: u64) -> f64 {
    if (x & subset).count_ones().is_multiple_of(2) {
        1.0
    } else {
        -1.0
    }
}

/// `f · χ_T(x)` from `x & T` (`in_subset`): `f` with its sign flipped when an odd number of the subset's bits
/// are set, which is exactly what multiplying by [`chi`]'s ±1 gives.
fn times_chi(f: f64, in_subset: u64) -> f64 {
    let odd = u64::from(in_subset.count_ones() & 1);
    f64::from_bits(f.to_bits() ^ (odd << 63))
}

/// Calls `visit` with the mask of every subset of size `k` of `n` bits.
fn for_each_subset(n: usize, k: usize, visit: &mut impl FnMut(u64)) {
    fn go(start: usize, n: usize, left: usize, mask: u64, visit: &mut impl FnMut(u64)) {
        if left == 0 {
            return visit(mask);
        }
        for i in start..=n - left {
            go(i + 1, n, left - 1, mask | (1 << i), visit);
        }
    }
    if k <= n {
        go(0, n, k, 0, visit);
    }
}

/// KL(q ‖ p) = Σ_j q_j ln(q_j / p_j) in nats over the support of q (entries of `p` beyond `q`'s length are
/// classes the oracle gives no mass).
pub fn kl_divergence(q: &[f64], p: &[f64]) -> f64 {
    q.iter()
        .zip(p)
        .filter(|&(&qj, _)| qj > 0.0)
        .map(|(&qj, &pj)| qj * (qj / pj.max(f64::MIN_POSITIVE)).ln())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perfect_parity_output_has_coefficient_one_and_the_others_zero() {
        // All 8 inputs of 3 bits; S = {0, 2}; f(x) = χ_S(x) exactly. f̂(S) = 1; every other pair T has
        // f̂(T) = E[χ_S χ_T] = E[χ_{S Δ T}] = 0 over the whole cube.
        let inputs: Vec<u64> = (0..8).collect();
        let outputs: Vec<f64> = inputs.iter().map(|&x| chi(x, 0b101)).collect();
        let gap = fourier_gap(&inputs, &outputs, 3, &[0, 2]);
        assert!(
            (gap.target - 1.0).abs() < 1e-12 && gap.best_other.abs() < 1e-12,
            "{gap:?}"
        );
    }

    #[test]
    fn a_half_learned_output_splits_its_mass() {
        // f = 0.3 χ_{0,1} + 0.5 χ_{1,2} on the 3-bit cube: f̂({0,1}) = 0.3, best other pair 0.5, gap −0.2.
        let inputs: Vec<u64> = (0..8).collect();
        let outputs: Vec<f64> = inputs
            .iter()
            .map(|&x| 0.3 * chi(x, 0b011) + 0.5 * chi(x, 0b110))
            .collect();
        let gap = fourier_gap(&inputs, &outputs, 3, &[0, 1]);
        assert!((gap.target - 0.3).abs() < 1e-12 && (gap.best_other - 0.5).abs() < 1e-12);
    }

    #[test]
    fn a_perfect_output_on_a_sample_has_no_mass_elsewhere() {
        // Four of the eight 3-bit inputs: 0b000, 0b011, 0b101, 0b110 (all even overall parity), so on this
        // sample χ_{0,1} = χ_{2} exactly. f = χ_{0,1}: f̂({0,1}) = 1; the raw coefficient of {2} would also be
        // 1, the residual's is 0.
        let inputs = [0b000u64, 0b011, 0b101, 0b110];
        let outputs: Vec<f64> = inputs.iter().map(|&x| chi(x, 0b011)).collect();
        let gap = fourier_gap(&inputs, &outputs, 3, &[0, 1]);
        assert!(
            (gap.target - 1.0).abs() < 1e-12 && gap.best_other.abs() < 1e-12,
            "{gap:?}"
        );
    }

    #[test]
    fn the_best_other_coefficient_equals_one_subset_at_a_time_bit_for_bit() {
        // 512 random 24-bit inputs and outputs, S = {3, 9, 17}: the batched sums against the definition,
        // each 3-subset's coefficient of the residual summed alone in example order.
        let mut rng = host::rng::SplitMix64::new(7);
        let inputs: Vec<u64> = (0..512).map(|_| rng.next_u64() & 0xff_ffff).collect();
        let outputs: Vec<f64> = (0..512).map(|_| rng.normal()).collect();
        let subset = [3, 9, 17];
        let gap = fourier_gap(&inputs, &outputs, 24, &subset);
        let target_mask = (1 << 3) | (1 << 9) | (1 << 17);
        let n = inputs.len() as f64;
        let target: f64 = inputs
            .iter()
            .zip(&outputs)
            .map(|(&x, &f)| f * chi(x, target_mask))
            .sum::<f64>()
            / n;
        let residual: Vec<f64> = inputs
            .iter()
            .zip(&outputs)
            .map(|(&x, &f)| f - target * chi(x, target_mask))
            .collect();
        let mut best_other = 0.0f64;
        let mut visited = 0;
        for_each_subset(24, 3, &mut |mask| {
            if mask != target_mask {
                visited += 1;
                let c = inputs
                    .iter()
                    .zip(&residual)
                    .map(|(&x, &f)| f * chi(x, mask))
                    .sum::<f64>()
                    / n;
                best_other = best_other.max(c.abs());
            }
        });
        assert_eq!(visited, 2023);
        assert!(best_other > 0.0);
        assert_eq!(gap.best_other.to_bits(), best_other.to_bits());
        assert_eq!(gap.target.to_bits(), target.abs().to_bits());
    }

    #[test]
    fn relevant_attention_is_the_mass_on_the_subset_above_the_irrelevant_rate() {
        // One example, two heads, 4 keys; the answer query is row 3. Relevant keys {0, 1}, irrelevant {2}.
        // Head 0 attends (0.4, 0.3, 0.1, 0.2): 0.7 − 2 · 0.1 = 0.5. Head 1 uniform 0.25: 0.5 − 2 · 0.25 = 0.
        let mut data = vec![0.0f32; 2 * 4 * 4];
        data[3 * 4..4 * 4].copy_from_slice(&[0.4, 0.3, 0.1, 0.2]);
        data[(4 + 3) * 4..(4 + 4) * 4].copy_from_slice(&[0.25; 4]);
        let pattern = HostArray {
            shape: vec![1, 2, 4, 4],
            data,
        };
        let scores = relevant_attention(&pattern, 3, &[0, 1], &[2]);
        assert!(
            (scores[0] - 0.5).abs() < 1e-6 && scores[1].abs() < 1e-6,
            "{scores:?}"
        );
    }

    #[test]
    fn subsets_of_size_k_are_all_visited_once() {
        let mut masks = vec![];
        for_each_subset(5, 3, &mut |m| masks.push(m));
        assert_eq!(masks.len(), 10); // C(5, 3)
        assert!(masks.iter().all(|m| m.count_ones() == 3));
        masks.sort();
        masks.dedup();
        assert_eq!(masks.len(), 10);
    }

    #[test]
    fn kl_of_a_uniform_model_to_the_unigram_oracle() {
        // KL((0.6, 0.4) ‖ (0.5, 0.5)) = 0.6 ln 1.2 + 0.4 ln 0.8 = 0.109393 − 0.089257 = 0.020136.
        assert!((kl_divergence(&[0.6, 0.4], &[0.5, 0.5]) - 0.020_136).abs() < 1e-6);
        assert_eq!(kl_divergence(&[0.5, 0.5], &[0.5, 0.5]), 0.0);
    }

    #[test]
    fn markov_measure_averages_over_answer_positions() {
        // One sequence 0 0 1 with uniform logits over 2 states, answers at positions 1 and 2.
        // Position 1 (context 0 0): unigram (3/4, 1/4), KL = 0.75 ln 1.5 + 0.25 ln 0.5 = 0.130812;
        // bigram from 0: 0→0 once → (2/3, 1/3), KL = (2/3) ln(4/3) + (1/3) ln(2/3) = 0.056633.
        // Position 2 (context 0 0 1): unigram KL 0.020136 (above), bigram (1/2, 1/2) KL 0.
        let values = progress(
            &PreparedMeasure::new(
                ProgressMeasure::MarkovOracles {
                    states: 2,
                    pseudo_count: 1.0,
                },
                &[0, 0, 1],
                3,
                &[1, 2],
            ),
            &ProgressInput {
                logits: &[0.0; 6],
                vocab: 2,
                tokens: &[0, 0, 1],
                seq_len: 3,
                answer_positions: &[1, 2],
                patterns: &[],
            },
        );
        let get = |name: &str| values.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(get("kl_uniform").abs() < 1e-12);
        assert!((get("kl_unigram") - (0.130_812 + 0.020_136) / 2.0).abs() < 1e-6);
        assert!((get("kl_bigram") - 0.056_633 / 2.0).abs() < 1e-6);
    }

    #[test]
    fn parity_measure_reads_bits_from_tokens() {
        // Two bits at positions 0 and 1, answer at 2, tokens 0/1 are the bits and the classes. The model
        // puts all mass on the parity of bit 1 alone: f = P(1) − P(0) = ±1 = −χ_{1}. Subset {1}: gap 1.
        let mut tokens = vec![];
        let mut logits = vec![];
        for x in 0..4u32 {
            let (b0, b1) = (x & 1, x >> 1);
            tokens.extend([b0, b1, 2]);
            logits.extend([0.0f32; 6]);
            logits.extend(if b1 == 1 {
                [-30.0, 30.0, -30.0]
            } else {
                [30.0, -30.0, -30.0]
            });
        }
        let values = progress(
            &PreparedMeasure::new(
                ProgressMeasure::ParityFourier {
                    bits: vec![0, 1],
                    subset: vec![1],
                    answer: 2,
                    zero: 0,
                    one: 1,
                },
                &tokens,
                3,
                &[2],
            ),
            &ProgressInput {
                logits: &logits,
                vocab: 3,
                tokens: &tokens,
                seq_len: 3,
                answer_positions: &[2],
                patterns: &[],
            },
        );
        assert_eq!(values[0].0, "fourier_target");
        assert!(
            (values[0].1 - 1.0).abs() < 1e-9 && values[1].1.abs() < 1e-9,
            "{values:?}"
        );
        assert!((values[2].1 - 1.0).abs() < 1e-9);
    }
}
