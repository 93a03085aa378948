//! `task.toml`, the manifest of a dataset directory: vocabulary, sequence length, answer positions, named key
//! positions, probe targets with their control types, the optional corruption, head detectors and progress
//! measures (`docs/tasks.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the dataset format this build reads.
pub const FORMAT: u32 = 1;

/// The manifest as written by the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The dataset format (1).
    pub format: u32,
    /// The task's name, shown in run ids, probe sets and reports (`[a-z0-9-]`, like a built-in task's).
    pub name: String,
    /// Input tokens lie in `0..vocab` (TransformerLens `d_vocab`).
    pub vocab: usize,
    /// Answers lie in `0..vocab_out` (TransformerLens `d_vocab_out`; default `vocab`).
    #[serde(default)]
    pub vocab_out: Option<usize>,
    /// Tokens per sequence (TransformerLens `n_ctx`).
    pub seq_len: usize,
    /// Positions whose next-token logits carry the loss; a negative index counts from the end (−1: the last).
    pub answer_positions: Vec<i64>,
    /// Optional names of the input tokens, one per token, for tables and the report.
    #[serde(default)]
    pub token_names: Option<Vec<String>>,
    /// TransformerLens head-detector patterns every head is scored against (`previous_token_head`,
    /// `duplicate_token_head`, `induction_head`; default none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub head_detectors: Vec<crate::tasks::HeadDetector>,
    /// Named key positions: a fixed index (negative from the end) or a per-example column.
    #[serde(default)]
    pub keys: BTreeMap<String, KeySpec>,
    /// Named probe targets.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetSpec>,
    /// How activation patching makes a corrupted input (optional).
    #[serde(default)]
    pub corruption: Option<Corruption>,
    /// Progress measures the analysis computes at every checkpoint (`[[progress]]` tables with a `kind`:
    /// `parity_fourier`, `markov_oracles`; default none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub progress: Vec<crate::tasks::ProgressMeasure>,
    /// The best accuracy any predictor can reach on the test split, for a task with irreducible error (noisy
    /// labels, random next tokens); in (0, 1]. The decision rule judges convergence against it
    /// ([`crate::tasks::Task::attainable_accuracy`]); absent, against 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attainable_accuracy: Option<f64>,
}

/// Where a key position is: one index for every example, or a column of per-example indices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeySpec {
    Fixed(i64),
    Column(String),
}

/// A probe target: a per-example label column with its number of classes, and its control type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Labels lie in `0..classes`.
    pub classes: usize,
    /// The label column (default: the target's name).
    #[serde(default)]
    pub column: Option<String>,
    /// The Hewitt & Liang control type: `"token"` (the token at the probed key position, or the whole input
    /// where that token is constant; the default) or the name of a column giving each example's type.
    #[serde(default)]
    pub control: Option<String>,
}

/// The corrupted input of activation patching: the token at a key position, resampled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corruption {
    /// The key position whose token is resampled.
    pub key: String,
}

impl Manifest {
    pub fn vocab_out(&self) -> usize {
        self.vocab_out.unwrap_or(self.vocab)
    }
}

/// A position given as an index that may count from the end, resolved against `seq_len`; `None` when it lies
/// outside the sequence.
pub fn resolve_position(index: i64, seq_len: usize) -> Option<usize> {
    let seq_len = seq_len as i64;
    let pos = if index < 0 { seq_len + index } else { index };
    (0..seq_len).contains(&pos).then_some(pos as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_from_the_end_when_negative() {
        assert_eq!(resolve_position(-1, 8), Some(7));
        assert_eq!(resolve_position(0, 8), Some(0));
        assert_eq!(resolve_position(-8, 8), Some(0));
        assert_eq!(resolve_position(8, 8), None);
        assert_eq!(resolve_position(-9, 8), None);
    }

    #[test]
    fn keys_are_indices_or_column_names() {
        let m: Manifest = toml::from_str(
            r#"format = 1
name = "t"
vocab = 5
seq_len = 4
answer_positions = [-1]
keys = { first = 0, last = -1, hop = "hop_pos" }
[targets.answer]
classes = 5
control = "answer_type"
"#,
        )
        .unwrap();
        assert_eq!(m.keys["first"], KeySpec::Fixed(0));
        assert_eq!(m.keys["hop"], KeySpec::Column("hop_pos".into()));
        assert_eq!(m.targets["answer"].control.as_deref(), Some("answer_type"));
        assert_eq!(m.vocab_out(), 5);
    }
}
