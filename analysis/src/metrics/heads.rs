//! Attention-pattern metrics of every head (SPEC §5C): entropy and attention mass at the key positions, and the
//! TransformerLens head-detector scores. Patterns are `[q, k]` rows of one head on one example.

pub use host::detector::HeadDetector;

/// Entropy, in nats, of one attention row: H(a) = −Σ a_k ln a_k (zero terms skipped).
pub fn attention_entropy(row: &[f32]) -> f64 {
    let sum: f64 = row
        .iter()
        .filter(|&&a| a > 0.0)
        .map(|&a| f64::from(a) * f64::from(a).ln())
        .sum();
    0.0 - sum // not −sum: a one-hot row gives +0, not −0
}

/// TransformerLens `head_detector`'s "mul" score with its defaults: Σ(A ⊙ P) / ΣA over the whole `[T, T]`
/// pattern, all query rows included (a perfect previous-token head scores (T−1)/T).
pub fn detector_score(pattern: &[f32], detection: &[f32]) -> f64 {
    let total: f64 = pattern.iter().map(|&a| f64::from(a)).sum();
    let hit: f64 = pattern
        .iter()
        .zip(detection)
        .map(|(&a, &p)| f64::from(a * p))
        .sum();
    if total > 0.0 { hit / total } else { 0.0 }
}

/// TransformerLens `get_previous_token_head_detection_pattern`: P[t, t−1] = 1.
pub fn previous_token_pattern(seq_len: usize) -> Vec<f32> {
    let mut p = vec![0.0; seq_len * seq_len];
    for t in 1..seq_len {
        p[t * seq_len + t - 1] = 1.0;
    }
    p
}

/// TransformerLens `get_duplicate_token_head_detection_pattern`: P[t, s] = 1 where token s = token t, s < t.
pub fn duplicate_token_pattern(tokens: &[u32]) -> Vec<f32> {
    let n = tokens.len();
    let mut p = vec![0.0; n * n];
    for t in 0..n {
        for s in 0..t {
            if tokens[s] == tokens[t] {
                p[t * n + s] = 1.0;
            }
        }
    }
    p
}

/// TransformerLens `get_induction_head_detection_pattern`: the duplicate-token pattern shifted one column right
/// (first column zero), lower triangle kept: P[t, s] = dup[t, s−1] for 1 ≤ s ≤ t.
pub fn induction_pattern(tokens: &[u32]) -> Vec<f32> {
    let n = tokens.len();
    let duplicate = duplicate_token_pattern(tokens);
    let mut p = vec![0.0; n * n];
    for t in 0..n {
        for s in 1..=t {
            p[t * n + s] = duplicate[t * n + s - 1];
        }
    }
    p
}

/// Olsson et al.'s induction score on a sequence ending in h random tokens repeated once (the TransformerLens
/// demo's score, there with h = n): mean attention A[t, t − h + 1] over the query positions t of the repeat,
/// T − h ≤ t < T. A perfect induction head scores 1.
pub fn repeat_induction_score(pattern: &[f32], seq_len: usize, repeat: usize) -> f64 {
    let sum: f64 = (seq_len - repeat..seq_len)
        .map(|t| f64::from(pattern[t * seq_len + t + 1 - repeat]))
        .sum();
    sum / repeat as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_row_over_four_keys_has_entropy_ln4() {
        // −4 · 0.25 · ln 0.25 = ln 4 ≈ 1.3863
        assert!((attention_entropy(&[0.25; 4]) - 4f64.ln()).abs() < 1e-9);
        assert_eq!(attention_entropy(&[1.0, 0.0, 0.0]), 0.0);
    }

    /// A planted previous-token head: row 0 attends to itself (its only key), row t to t − 1.
    fn previous_token_head(seq_len: usize) -> Vec<f32> {
        let mut a = vec![0.0; seq_len * seq_len];
        a[0] = 1.0;
        for t in 1..seq_len {
            a[t * seq_len + t - 1] = 1.0;
        }
        a
    }

    /// Uniform causal attention: row t spreads 1/(t+1) over keys 0..=t.
    fn uniform_head(seq_len: usize) -> Vec<f32> {
        let mut a = vec![0.0; seq_len * seq_len];
        for t in 0..seq_len {
            for s in 0..=t {
                a[t * seq_len + s] = 1.0 / (t + 1) as f32;
            }
        }
        a
    }

    #[test]
    fn perfect_previous_token_head_scores_t_minus_1_over_t() {
        let t = 8;
        let score = detector_score(&previous_token_head(t), &previous_token_pattern(t));
        assert!((score - 7.0 / 8.0).abs() < 1e-9, "{score}");
        // A uniform head puts 1/(t+1) on the previous token of row t ≥ 1: Σ_{t=1}^{7} 1/(t+1) = H_8 − 1 ≈ 1.7179;
        // divided by 8 rows ≈ 0.2147.
        let uniform = detector_score(&uniform_head(t), &previous_token_pattern(t));
        assert!((uniform - 0.214_732).abs() < 1e-5, "{uniform}");
    }

    #[test]
    fn duplicate_and_induction_patterns_match_transformer_lens() {
        // tokens [5, 7, 5, 7]: duplicates (2→0), (3→1); induction = shifted right: (2→1), (3→2).
        let dup = duplicate_token_pattern(&[5, 7, 5, 7]);
        let ones: Vec<usize> = (0..16).filter(|&i| dup[i] == 1.0).collect();
        assert_eq!(ones, vec![2 * 4, 3 * 4 + 1]);
        let ind = induction_pattern(&[5, 7, 5, 7]);
        let ones: Vec<usize> = (0..16).filter(|&i| ind[i] == 1.0).collect();
        assert_eq!(ones, vec![2 * 4 + 1, 3 * 4 + 2]);
    }

    #[test]
    fn perfect_induction_head_scores_one_on_a_repeated_sequence() {
        // half 3, tokens x0 x1 x2 x0 x1 x2: a perfect induction head at t ≥ 3 attends to t − 2.
        let (half, seq_len) = (3, 6);
        let mut a = uniform_head(seq_len);
        for t in half..seq_len {
            a[t * seq_len..(t + 1) * seq_len].fill(0.0);
            a[t * seq_len + t + 1 - half] = 1.0;
        }
        assert!((repeat_induction_score(&a, seq_len, half) - 1.0).abs() < 1e-9);
        // TransformerLens's detector on the same head: the 3 repeat rows hit, over 6 rows → 0.5.
        let score = detector_score(&a, &induction_pattern(&[1, 2, 3, 1, 2, 3]));
        assert!((score - 0.5).abs() < 1e-6, "{score}"); // f32 rows of 1/3 sum to 1 within rounding
        assert!(repeat_induction_score(&uniform_head(seq_len), seq_len, half) < 0.3);
    }
}

/// Per-head results of one checkpoint, keyed `L{layer}H{head}` in the row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HeadMetrics {
    /// Mean attention entropy (nats) at each key position used as the query, keyed by key-position name.
    pub entropy: std::collections::BTreeMap<String, f64>,
    /// Mean attention mass from one key position (as query) to another, keyed `{from}_to_{to}`.
    pub attn: std::collections::BTreeMap<String, f64>,
    /// Task head scores: for induction, TransformerLens `head_detector` scores under its names
    /// (`previous_token_head`, `duplicate_token_head`, `induction_head`, each the mean over probe sequences)
    /// and Olsson et al.'s `induction_score` on the repeat.
    pub scores: std::collections::BTreeMap<String, f64>,
}

/// Each detector's pattern on every example of a probe set, as the positions of its ones (the previous-token
/// pattern, the same for all examples, once): they depend on the tokens only, so a run computes them once.
pub struct Detections(Vec<(HeadDetector, Vec<Vec<usize>>)>);

impl Detections {
    /// The patterns of `detectors` on `tokens` [n, seq_len].
    pub fn new(detectors: &[HeadDetector], tokens: &[u32], seq_len: usize) -> Self {
        let t = seq_len.max(1);
        let examples = || tokens.chunks_exact(t);
        Self(
            detectors
                .iter()
                .map(|&d| {
                    let per_example = match d {
                        HeadDetector::PreviousTokenHead => vec![ones(&previous_token_pattern(t))],
                        HeadDetector::DuplicateTokenHead => examples()
                            .map(|toks| ones(&duplicate_token_pattern(toks)))
                            .collect(),
                        HeadDetector::InductionHead => examples()
                            .map(|toks| ones(&induction_pattern(toks)))
                            .collect(),
                    };
                    (d, per_example)
                })
                .collect(),
        )
    }
}

/// Inputs of [`head_metrics`]: one layer's patterns `[n, head, T, T]` and the probe set's tokens `[n, T]`.
pub struct HeadInput<'a> {
    pub pattern: &'a [f32],
    pub n_heads: usize,
    pub seq_len: usize,
    pub tokens: &'a [u32],
    /// Named key positions, one value per example.
    pub keys: &'a [(&'a str, &'a [u32])],
    /// The TransformerLens detector patterns to score every head against, on these tokens.
    pub detections: &'a Detections,
    /// For induction, each example's repeat length (enables Olsson et al.'s induction score).
    pub induction_repeat: Option<&'a [usize]>,
}

/// Where a detection pattern is 1 (the ones of a 0/1 pattern, row-major order).
fn ones(detection: &[f32]) -> Vec<usize> {
    debug_assert!(detection.iter().all(|&p| p == 0.0 || p == 1.0));
    (0..detection.len())
        .filter(|&k| detection[k] == 1.0)
        .collect()
}

/// [`detector_score`] of a 0/1 detection pattern given by its `ones`, with ΣA computed once for all detectors:
/// the same bits. Every term Σ(A ⊙ P) leaves out is A·0 = +0 (A ≥ 0), which does not change a sum that
/// starts at +0, and the ones (A·1 = A) are added in the same order.
fn detector_score_at(pattern: &[f32], total: f64, ones: &[usize]) -> f64 {
    let hit = ones.iter().fold(0.0, |sum, &k| sum + f64::from(pattern[k]));
    if total > 0.0 { hit / total } else { 0.0 }
}

/// Metrics of every head of one layer.
pub fn head_metrics(input: &HeadInput<'_>) -> Vec<HeadMetrics> {
    let t = input.seq_len;
    let n = input.tokens.len() / t;
    let patterns = &input.detections.0;
    (0..input.n_heads)
        .map(|h| {
            let pattern = |i: usize| &input.pattern[(i * input.n_heads + h) * t * t..][..t * t];
            let mean = |f: &dyn Fn(usize) -> f64| (0..n).map(f).sum::<f64>() / n.max(1) as f64;
            let mut entropy = std::collections::BTreeMap::new();
            let mut attn = std::collections::BTreeMap::new();
            for (from, from_pos) in input.keys {
                let row = |i: usize| &pattern(i)[from_pos[i] as usize * t..][..t];
                entropy.insert((*from).to_owned(), mean(&|i| attention_entropy(row(i))));
                for (to, to_pos) in input.keys {
                    attn.insert(
                        format!("{from}_to_{to}"),
                        mean(&|i| f64::from(row(i)[to_pos[i] as usize])),
                    );
                }
            }
            let mut scores = std::collections::BTreeMap::new();
            if !patterns.is_empty() {
                // ΣA of each example, the denominator of every detector's score.
                let totals: Vec<f64> = (0..n)
                    .map(|i| pattern(i).iter().map(|&a| f64::from(a)).sum())
                    .collect();
                for (detector, per_example) in patterns {
                    let detection = |i: usize| &per_example[i.min(per_example.len() - 1)];
                    scores.insert(
                        detector.name().to_owned(),
                        mean(&|i| detector_score_at(pattern(i), totals[i], detection(i))),
                    );
                }
            }
            if let Some(repeat) = input.induction_repeat {
                let olsson = |i: usize| repeat_induction_score(pattern(i), t, repeat[i]);
                scores.insert("induction_score".into(), mean(&olsson));
            }
            HeadMetrics {
                entropy,
                attn,
                scores,
            }
        })
        .collect()
}

#[cfg(test)]
mod aggregate_tests {
    use super::*;

    /// The scores [`head_metrics`] reports carry the bits of [`detector_score`] over the dense patterns, on
    /// causal rows of uneven weights (some exactly zero) and tokens with repeats.
    #[test]
    fn detector_scores_are_the_bits_of_the_dense_definition() {
        let (n, heads, t) = (5, 3, 9);
        let tokens: Vec<u32> = (0..n * t).map(|k| (k * k % 7 % 4) as u32).collect();
        let mut pattern = vec![0.0f32; n * heads * t * t];
        for (r, row) in pattern.chunks_exact_mut(t).enumerate() {
            let q = r % t;
            let weights: Vec<f32> = (0..=q)
                .map(|k| {
                    if (r + k) % 5 == 0 {
                        0.0
                    } else {
                        ((r * 31 + k * 17) % 13) as f32 + 0.1
                    }
                })
                .collect();
            let total: f32 = weights.iter().sum();
            for (a, w) in row.iter_mut().zip(&weights) {
                *a = w / total;
            }
        }
        let detectors = [
            HeadDetector::PreviousTokenHead,
            HeadDetector::DuplicateTokenHead,
            HeadDetector::InductionHead,
        ];
        let metrics = head_metrics(&HeadInput {
            pattern: &pattern,
            n_heads: heads,
            seq_len: t,
            tokens: &tokens,
            keys: &[],
            detections: &Detections::new(&detectors, &tokens, t),
            induction_repeat: None,
        });
        for (h, metrics) in metrics.iter().enumerate() {
            for detector in detectors {
                let dense = (0..n)
                    .map(|i| {
                        let toks = &tokens[i * t..(i + 1) * t];
                        let detection = match detector {
                            HeadDetector::PreviousTokenHead => previous_token_pattern(t),
                            HeadDetector::DuplicateTokenHead => duplicate_token_pattern(toks),
                            HeadDetector::InductionHead => induction_pattern(toks),
                        };
                        detector_score(&pattern[(i * heads + h) * t * t..][..t * t], &detection)
                    })
                    .sum::<f64>()
                    / n as f64;
                let got = metrics.scores[detector.name()];
                assert_eq!(got.to_bits(), dense.to_bits(), "head {h} {detector:?}");
            }
        }
    }

    #[test]
    fn declared_detectors_score_every_head_without_a_repeat_structure() {
        // T 3, one example, one head that attends from every row to the previous token (row 0 to itself).
        let pattern = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let metrics = head_metrics(&HeadInput {
            pattern: &pattern,
            n_heads: 1,
            seq_len: 3,
            tokens: &[5, 6, 5],
            keys: &[],
            detections: &Detections::new(
                &[
                    HeadDetector::PreviousTokenHead,
                    HeadDetector::DuplicateTokenHead,
                ],
                &[5, 6, 5],
                3,
            ),
            induction_repeat: None,
        });
        let scores = &metrics[0].scores;
        assert_eq!(scores.len(), 2, "only the declared detectors: {scores:?}");
        // Σ A ⊙ P / Σ A: the previous-token pattern hits rows 1 and 2 → 2/3; the only duplicate (token 2 of
        // token 0) is not attended → 0.
        assert!((scores["previous_token_head"] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(scores["duplicate_token_head"], 0.0);
    }

    #[test]
    fn head_metrics_average_over_examples_at_each_key_position() {
        // One example, T 2, two heads. Head 0 attends from position 1 entirely to 0; head 1 uniformly.
        let pattern = [1.0, 0.0, 1.0, 0.0, /* head 1 */ 1.0, 0.0, 0.5, 0.5];
        let metrics = head_metrics(&HeadInput {
            pattern: &pattern,
            n_heads: 2,
            seq_len: 2,
            tokens: &[3, 4],
            keys: &[("a", &[0]), ("eq", &[1])],
            detections: &Detections::new(&[], &[3, 4], 2),
            induction_repeat: None,
        });
        assert_eq!(metrics[0].attn["eq_to_a"], 1.0);
        assert_eq!(metrics[1].attn["eq_to_a"], 0.5);
        assert_eq!(metrics[1].attn["eq_to_eq"], 0.5);
        assert!((metrics[1].entropy["eq"] - 2f64.ln()).abs() < 1e-9);
        assert_eq!(metrics[0].entropy["a"], 0.0);
        assert!(
            metrics[0].scores.is_empty(),
            "no induction scores outside the induction task"
        );
    }
}
