//! Examples and per-example labels: token sequences with the correct token at each answer position, and named
//! per-example integers (key positions, probe targets), the splits they come from, and [`ProbeSource`]: what a
//! task gives the probe set.

use std::collections::BTreeMap;

/// A block of examples. `tokens` is `[n, seq_len]` row-major; `targets` is `[n, n_answers]`, the correct
/// next token at each of the task's answer positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Examples {
    pub n: usize,
    pub seq_len: usize,
    pub tokens: Vec<u32>,
    pub n_answers: usize,
    pub targets: Vec<u32>,
    /// Named per-example integers that travel with the examples (`[n]` each): a data-defined task's key
    /// positions, labels and control types, by column name. Built-in tasks derive theirs from the tokens and
    /// leave this empty.
    pub columns: BTreeMap<String, Vec<u32>>,
}

impl Examples {
    /// The examples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Examples {
        let mut tokens = Vec::with_capacity(indices.len() * self.seq_len);
        let mut targets = Vec::with_capacity(indices.len() * self.n_answers);
        for &i in indices {
            tokens.extend_from_slice(&self.tokens[i * self.seq_len..(i + 1) * self.seq_len]);
            targets.extend_from_slice(&self.targets[i * self.n_answers..(i + 1) * self.n_answers]);
        }
        let columns = self
            .columns
            .iter()
            .map(|(name, values)| (name.clone(), indices.iter().map(|&i| values[i]).collect()))
            .collect();
        Examples {
            n: indices.len(),
            seq_len: self.seq_len,
            tokens,
            n_answers: self.n_answers,
            targets,
            columns,
        }
    }

    /// Token `pos` of example `i`.
    pub fn token(&self, i: usize, pos: usize) -> u32 {
        self.tokens[i * self.seq_len + pos]
    }
}

/// A named per-example integer: a key position (a sequence index) or a probe target (a class label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labeled {
    pub name: String,
    /// For a target, labels lie in `0..n_classes`; for a key position, `n_classes` is the sequence length.
    pub n_classes: usize,
    pub values: Vec<u32>,
}

/// Which fixed split of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
    Ood,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Test, Split::Ood];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Ood => "ood",
        }
    }
}

/// What a probe set is drawn from: the part of a task that the probes need (every trainer task is one).
pub trait ProbeSource {
    /// The task's config name.
    fn name(&self) -> &str;
    /// Input vocabulary size.
    fn d_vocab(&self) -> usize;
    /// Tokens per example.
    fn seq_len(&self) -> usize;
    /// Positions whose next-token logits count in the loss.
    fn answer_positions(&self) -> &[usize];
    /// Candidate examples for a probe set of `size`, each block with the split it came from.
    fn probe_pool(&self, seed: u64, size: usize) -> Vec<(Split, Examples)>;
    /// Named key positions of each example.
    fn key_positions(&self, examples: &Examples) -> Vec<Labeled>;
    /// Named probe targets of each example.
    fn probe_targets(&self, examples: &Examples) -> Vec<Labeled>;
    /// Each example's Hewitt & Liang input type for the control task of a target, by the target's name, where
    /// the task declares one; targets not listed use the token at the probed key position.
    fn control_types(&self, examples: &Examples) -> Vec<Labeled>;
}
