//! Behavioral metrics (SPEC §5A): what the model does on the probe set, at the answer positions.

use std::collections::BTreeMap;

/// Loss, correctness and margin of one prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Cross-entropy −log softmax(logits)[target], in nats.
    pub loss: f64,
    /// argmax(logits) == target (ties go to the lowest index, as `torch.argmax`).
    pub correct: bool,
    /// Logit margin: logits[target] − max over v ≠ target of logits[v].
    pub margin: f64,
}

/// Scores one row of logits against its target.
pub fn predict(logits: &[f32], target: usize) -> Prediction {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum_exp = f64::from(max)
        + logits
            .iter()
            .map(|&l| f64::from(l - max).exp())
            .sum::<f64>()
            .ln();
    let argmax = logits
        .iter()
        .enumerate()
        .fold(0, |best, (i, &l)| if l > logits[best] { i } else { best });
    let best_other = logits
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != target)
        .map(|(_, &l)| l)
        .fold(f32::NEG_INFINITY, f32::max);
    Prediction {
        loss: log_sum_exp - f64::from(logits[target]),
        correct: argmax == target,
        margin: f64::from(logits[target] - best_other),
    }
}

/// Behavior on the probe set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Behavior {
    /// Mean cross-entropy at the answer positions (nats).
    pub loss: f64,
    /// Fraction of answer positions predicted correctly.
    pub accuracy: f64,
    /// Mean logit margin (correct logit minus best other) at the answer positions.
    pub logit_margin: f64,
    /// Accuracy at each answer position, keyed `pos_{t}`.
    pub per_position_accuracy: BTreeMap<String, f64>,
    /// Accuracy of the probe items drawn from each split (`train`, `test`, `ood`).
    pub split_accuracy: BTreeMap<String, f64>,
    /// Induction only: mean loss at the answer positions (inside the second copy) minus mean loss predicting
    /// the first copy's tokens 1..h (unpredictable there); negative once the model copies from context
    /// (Olsson et al. 2022's in-context learning score, on our sequences).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub in_context_score: Option<f64>,
    /// The task's declared progress measures ([`super::progress`]), keyed by their documented names
    /// (`fourier_gap`, `kl_bigram`, …); absent for tasks that declare none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub progress: BTreeMap<String, f64>,
}

/// Inputs of [`behavior`]: `logits` is `[n, seq, vocab]`, `tokens` `[n, seq]`.
pub struct BehaviorInput<'a> {
    pub logits: &'a [f32],
    pub vocab: usize,
    pub tokens: &'a [u32],
    pub seq_len: usize,
    pub answer_positions: &'a [usize],
    /// `[n, answers]`: the correct next token at each answer position.
    pub answer_targets: &'a [u32],
    /// Split name of each example.
    pub splits: &'a [&'static str],
    /// For induction, each example's repeat length h: its two copies are the last 2h tokens.
    pub induction_repeat: Option<&'a [usize]>,
}

/// Computes [`Behavior`] from full-sequence logits.
pub fn behavior(input: &BehaviorInput<'_>) -> Behavior {
    let n = input.tokens.len() / input.seq_len;
    let n_answers = input.answer_positions.len();
    let row =
        |i: usize, t: usize| &input.logits[(i * input.seq_len + t) * input.vocab..][..input.vocab];
    let (mut loss, mut correct, mut margin) = (0.0, 0usize, 0.0);
    let mut per_position = vec![0usize; n_answers];
    let mut per_split: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for i in 0..n {
        for (j, &t) in input.answer_positions.iter().enumerate() {
            let p = predict(row(i, t), input.answer_targets[i * n_answers + j] as usize);
            loss += p.loss;
            margin += p.margin;
            correct += usize::from(p.correct);
            per_position[j] += usize::from(p.correct);
            let entry = per_split.entry(input.splits[i]).or_default();
            entry.0 += usize::from(p.correct);
            entry.1 += 1;
        }
    }
    let total = (n * n_answers).max(1) as f64;
    let in_context_score = input.induction_repeat.map(|repeat| {
        let (mut first, mut count) = (0.0, 0usize);
        for (i, &h) in repeat.iter().enumerate().take(n) {
            // The first copy starts at seq_len − 2h; its positions 0..h−1 predict its tokens 1..h.
            let start = input.seq_len - 2 * h;
            for t in start..start + h - 1 {
                first += predict(row(i, t), input.tokens[i * input.seq_len + t + 1] as usize).loss;
                count += 1;
            }
        }
        loss / total - first / count.max(1) as f64
    });
    Behavior {
        loss: loss / total,
        accuracy: correct as f64 / total,
        logit_margin: margin / total,
        per_position_accuracy: input
            .answer_positions
            .iter()
            .zip(&per_position)
            .map(|(t, &c)| (format!("pos_{t}"), c as f64 / n.max(1) as f64))
            .collect(),
        split_accuracy: per_split
            .into_iter()
            .map(|(s, (c, k))| (s.to_owned(), c as f64 / k as f64))
            .collect(),
        in_context_score,
        progress: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prediction_of_a_hand_made_row() {
        // logits [2, 0, 1], target 0: log-sum-exp = ln(e² + 1 + e) = 2.4076; loss = 0.4076;
        // argmax 0 → correct; margin = 2 − 1 = 1.
        let p = predict(&[2.0, 0.0, 1.0], 0);
        assert!((p.loss - 0.407_606).abs() < 1e-5, "{}", p.loss);
        assert!(p.correct);
        assert!((p.margin - 1.0).abs() < 1e-9);
        // target 2: loss = 2.4076 − 1 = 1.4076, wrong, margin 1 − 2 = −1.
        let p = predict(&[2.0, 0.0, 1.0], 2);
        assert!((p.loss - 1.407_606).abs() < 1e-5 && !p.correct && (p.margin + 1.0).abs() < 1e-9);
    }

    #[test]
    fn uniform_logits_give_loss_ln_vocab() {
        let p = predict(&[0.5; 4], 3);
        assert!((p.loss - 4f64.ln()).abs() < 1e-9);
        assert!(!p.correct, "ties go to index 0");
    }

    #[test]
    fn behavior_aggregates_by_position_and_split() {
        // Two examples, seq 2, vocab 2, answer position 1.
        // Example 0 (train): logits at t=1 [3, 0], target 0 → correct, margin 3.
        // Example 1 (test):  logits at t=1 [0, 1], target 0 → wrong, margin −1.
        let logits = [0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let b = behavior(&BehaviorInput {
            logits: &logits,
            vocab: 2,
            tokens: &[0, 1, 1, 0],
            seq_len: 2,
            answer_positions: &[1],
            answer_targets: &[0, 0],
            splits: &["train", "test"],
            induction_repeat: None,
        });
        assert_eq!(b.accuracy, 0.5);
        assert!((b.logit_margin - 1.0).abs() < 1e-9);
        assert_eq!(b.per_position_accuracy["pos_1"], 0.5);
        assert_eq!(b.split_accuracy["train"], 1.0);
        assert_eq!(b.split_accuracy["test"], 0.0);
        // loss: (ln(1 + e⁻³) + ln(1 + e)) / 2 = (0.04859 + 1.31326) / 2
        assert!((b.loss - 0.680_925).abs() < 1e-5, "{}", b.loss);
    }

    #[test]
    fn in_context_score_is_repeat_loss_minus_first_half_loss() {
        // One induction example, repeat length 2: tokens [0, 1, 0, 1], vocab 2, answer position 2 (predicts 1).
        // First copy: t=0 predicts token 1 with uniform logits → ln 2. Repeat: t=2 predicts 1 with [0, 10].
        let mut logits = vec![0.0; 8];
        logits[2 * 2 + 1] = 10.0;
        let b = behavior(&BehaviorInput {
            logits: &logits,
            vocab: 2,
            tokens: &[0, 1, 0, 1],
            seq_len: 4,
            answer_positions: &[2],
            answer_targets: &[1],
            splits: &["test"],
            induction_repeat: Some(&[2]),
        });
        let repeat = (1.0f64 + (-10.0f64).exp()).ln();
        assert!((b.in_context_score.unwrap() - (repeat - 2f64.ln())).abs() < 1e-9);
    }
}
