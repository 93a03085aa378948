//! Examples and per-example labels: token sequences with the correct token at each answer position, and named
//! per-example integers (key positions, probe targets).

/// A block of examples. `tokens` is `[n, seq_len]` row-major; `targets` is `[n, n_answers]`, the correct
/// next token at each of the task's answer positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Examples {
    pub n: usize,
    pub seq_len: usize,
    pub tokens: Vec<u32>,
    pub n_answers: usize,
    pub targets: Vec<u32>,
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
        Examples {
            n: indices.len(),
            seq_len: self.seq_len,
            tokens,
            n_answers: self.n_answers,
            targets,
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
