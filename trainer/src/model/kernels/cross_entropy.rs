//! The training loss over host slices: mean cross-entropy of logits against target classes and its gradient,
//! one pass over each row each way (what the flex backend runs for `cross_entropy`). burn composes it from a
//! log-softmax (max, subtract, e^x, sum, log, subtract), a gather and a mean, each a node with its own
//! backward, and takes e^x one element at a time.
//!
//! Rows are split into fixed blocks, each one task; every row's terms are summed in order within it and the
//! rows' losses are added in row order, so results do not depend on the number of threads.

use rayon::prelude::*;

use super::exp::{Exp, exp_in_place};
use super::isa::{Isa, compiled_for_isa};

/// Elements per task, at least (whole rows).
const ELEMENTS_PER_TASK: usize = 1 << 14;

/// Mean over the rows of `logits` [rows, vocab] of −log softmax(row)[target]: each row's
/// ln Σ_j e^(x_j − m) − (x_target − m), with m the row's maximum (so the largest term is e^0 = 1 and nothing
/// overflows). Returns the mean and the softmax of every row [rows, vocab], which its gradient reads.
pub fn forward(logits: &[f32], targets: &[usize], vocab: usize) -> (f32, Vec<f32>) {
    let (isa, rows) = (Isa::detect(), targets.len());
    assert_eq!(
        logits.len(),
        rows * vocab,
        "cross_entropy: logits are not [rows, vocab]"
    );
    assert!(
        targets.iter().all(|&t| t < vocab),
        "cross_entropy: a target is not a class of the {vocab} logits"
    );
    let exp = Exp::for_isa(isa);
    let per_task = ELEMENTS_PER_TASK.div_ceil(vocab.max(1));
    let mut probs = logits.to_vec();
    let losses: Vec<f64> = probs
        .par_chunks_mut((per_task * vocab).max(1))
        .zip(targets.par_chunks(per_task.max(1)))
        .flat_map_iter(|(probs, targets)| softmax_rows_on(isa, probs, targets, exp))
        .collect();
    let total: f64 = losses.iter().sum();
    ((total / rows.max(1) as f64) as f32, probs)
}

/// The gradient of [`forward`]'s mean given its gradient `d_loss`, from the `probs` it returned:
/// d_loss / rows · (softmax − one-hot of the target) on every row.
pub fn backward(probs: &[f32], targets: &[usize], vocab: usize, d_loss: f32) -> Vec<f32> {
    let rows = targets.len();
    let scale = d_loss / rows.max(1) as f32;
    let per_task = ELEMENTS_PER_TASK.div_ceil(vocab.max(1));
    let mut grad = probs.to_vec();
    grad.par_chunks_mut((per_task * vocab).max(1))
        .zip(targets.par_chunks(per_task.max(1)))
        .for_each(|(grad, targets)| {
            for (row, &t) in grad.chunks_exact_mut(vocab).zip(targets) {
                row[t] -= 1.0;
                row.iter_mut().for_each(|g| *g *= scale);
            }
        });
    grad
}

compiled_for_isa! {
    /// [`softmax_rows`] compiled for `isa`.
    fn softmax_rows_on(logits: &mut [f32], targets: &[usize], exp: Exp) -> Vec<f64> => softmax_rows
}

/// Turns consecutive rows of logits into their softmax in place and returns each row's −log p(target).
#[inline(always)]
fn softmax_rows(logits: &mut [f32], targets: &[usize], exp: Exp) -> Vec<f64> {
    let vocab = logits.len() / targets.len().max(1);
    let mut shifted_target = Vec::with_capacity(targets.len());
    for (row, &t) in logits.chunks_exact_mut(vocab).zip(targets) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.iter_mut().for_each(|x| *x -= max);
        shifted_target.push(row[t]);
    }
    exp_in_place(logits, exp);
    logits
        .chunks_exact_mut(vocab)
        .zip(shifted_target)
        .map(|(row, shifted)| {
            let sum: f32 = row.iter().sum();
            row.iter_mut().for_each(|e| *e /= sum);
            f64::from(sum.ln() - shifted)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// −log softmax by hand in f64: ln Σ e^x − x_target.
    fn by_hand(row: &[f32], target: usize) -> f64 {
        let sum: f64 = row.iter().map(|&x| f64::from(x).exp()).sum();
        sum.ln() - f64::from(row[target])
    }

    #[test]
    fn loss_and_gradient_match_the_definition() {
        let (vocab, rows) = (5, 3);
        let logits = [
            0.5, -1.0, 2.0, 0.0, 3.0, //
            100.0, 99.0, 98.0, 0.0, -100.0, // large logits: the max keeps e^x finite
            -2.0, -2.0, -2.0, -2.0, -2.0,
        ];
        let targets = [4, 1, 0];
        let (loss, probs) = forward(&logits, &targets, vocab);
        let expected: f64 = (0..rows)
            .map(|r| by_hand(&logits[r * vocab..][..vocab], targets[r]))
            .sum::<f64>()
            / rows as f64;
        assert!(
            (f64::from(loss) - expected).abs() < 1e-6,
            "{loss} vs {expected}"
        );
        // The uniform row: every class 1/5, and −log(1/5) = ln 5.
        assert!(probs[10..].iter().all(|&p| (p - 0.2).abs() < 1e-7));
        let grad = backward(&probs, &targets, vocab, 2.0);
        for r in 0..rows {
            let row = &logits[r * vocab..][..vocab];
            let sum: f64 = row.iter().map(|&x| f64::from(x).exp()).sum();
            for j in 0..vocab {
                let p = f64::from(row[j]).exp() / sum;
                let want = 2.0 / rows as f64 * (p - f64::from(u8::from(j == targets[r])));
                assert!(
                    (f64::from(grad[r * vocab + j]) - want).abs() < 1e-6,
                    "row {r} class {j}"
                );
            }
        }
    }

    #[test]
    fn same_bits_on_one_thread_and_on_three() {
        // 700 rows of 100 classes: several tasks.
        let (vocab, rows) = (100, 700);
        let logits: Vec<f32> = (0..rows * vocab)
            .map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0)
            .collect();
        let targets: Vec<usize> = (0..rows).map(|r| (r * 31) % vocab).collect();
        let run = |threads: usize| {
            super::super::on_threads(threads, || {
                let (loss, probs) = forward(&logits, &targets, vocab);
                (loss.to_bits(), backward(&probs, &targets, vocab, 1.0))
            })
        };
        assert_eq!(run(1), run(3));
    }
}
