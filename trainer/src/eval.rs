//! Loss and accuracy of a model on a whole split, at the task's answer positions.

use crate::error::ForwardError;
use burn::prelude::*;

use crate::model::{Transformer, cross_entropy, int_tensor};
use crate::tasks::Examples;

/// Examples per forward, to bound memory on large splits.
const CHUNK: usize = 4096;

/// Mean loss and accuracy over a split.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SplitScore {
    pub loss: f64,
    pub accuracy: f64,
}

/// Evaluates `model` (use an inference copy, `model.valid()`) on `examples`; `device` must not be autodiff.
pub fn evaluate(
    model: &Transformer,
    examples: &Examples,
    answers: &[usize],
    device: &Device,
) -> Result<SplitScore, ForwardError> {
    let queries = model.answer_queries(answers, device);
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    let mut start = 0;
    while start < examples.n {
        let idx: Vec<usize> = (start..(start + CHUNK).min(examples.n)).collect();
        let chunk = examples.select(&idx);
        let tokens = int_tensor(&chunk.tokens, chunk.n, chunk.seq_len, device);
        let targets = int_tensor(&chunk.targets, chunk.n, chunk.n_answers, device);
        let logits = model.forward_answers(tokens, &queries);
        let loss = cross_entropy(logits.clone(), targets.clone()).into_scalar::<f32>();
        loss_sum += f64::from(loss) * (chunk.n * chunk.n_answers) as f64;
        let predicted = logits.argmax(2).squeeze_dim::<2>(2);
        correct += predicted.equal(targets).int().sum().into_scalar::<i64>() as usize;
        start += idx.len();
    }
    let total = (examples.n * examples.n_answers) as f64;
    Ok(SplitScore {
        loss: loss_sum / total,
        accuracy: correct as f64 / total,
    })
}
