//! Modular addition (grokking; Power et al. 2022, Nanda et al. 2023): tokens `a b =`, answer (a + b) mod p
//! at `=`. The train split is a seeded fraction of all p² pairs, the test split the rest.

use super::{
    DataCursor, Examples, FiniteSplits, FourierGrid, Labeled, Split, Task, pair_examples,
    pair_key_positions, pair_split, pair_targets,
};

/// Position of `=`, the only answer position.
const EQ: usize = 2;

pub struct ModularAddition {
    p: usize,
    splits: FiniteSplits,
}

impl ModularAddition {
    pub fn new(p: usize, train_fraction: f64, seed: u64) -> Self {
        let (train, test) = pair_split(p, train_fraction, seed, "modular-addition-split");
        let examples = |pairs: &[usize]| pair_examples(p, pairs, |a, b| (a + b) % p as u32);
        Self {
            p,
            splits: FiniteSplits {
                seed,
                train: examples(&train),
                test: examples(&test),
            },
        }
    }
}

impl Task for ModularAddition {
    fn name(&self) -> &str {
        "modular-addition"
    }
    fn d_vocab(&self) -> usize {
        self.p + 1 // 0..p and `=`
    }
    fn d_vocab_out(&self) -> usize {
        self.p
    }
    fn seq_len(&self) -> usize {
        3
    }
    fn answer_positions(&self) -> &[usize] {
        &[EQ]
    }
    fn split(&self, split: Split) -> Option<Examples> {
        self.splits.split(split)
    }
    fn train_batch(&self, step: u64, batch_size: Option<usize>) -> Examples {
        self.splits.train_batch(step, batch_size)
    }
    fn data_cursor(&self, step: u64, batch_size: Option<usize>) -> DataCursor {
        self.splits.data_cursor(step, batch_size)
    }
    fn fourier_grid(&self) -> Option<FourierGrid> {
        Some(FourierGrid::of_pairs(self.p, &self.splits.train))
    }
    fn corrupted_key(&self) -> Option<&str> {
        Some("a")
    }
    fn key_positions(&self, examples: &Examples) -> Vec<Labeled> {
        pair_key_positions(examples)
    }
    fn probe_targets(&self, examples: &Examples) -> Vec<Labeled> {
        pair_targets(examples, self.p, "sum")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn train_and_test_are_disjoint_and_cover_all_pairs() {
        let task = ModularAddition::new(23, 0.3, 5);
        let pairs = |s: Split| -> Vec<(u32, u32)> {
            let e = task.split(s).unwrap();
            (0..e.n).map(|i| (e.token(i, 0), e.token(i, 1))).collect()
        };
        let train: HashSet<_> = pairs(Split::Train).into_iter().collect();
        let test: HashSet<_> = pairs(Split::Test).into_iter().collect();
        assert_eq!(train.len(), (0.3f64 * 529.0).round() as usize); // 159 of 23² = 529
        assert!(train.is_disjoint(&test));
        assert_eq!(train.len() + test.len(), 23 * 23);
    }

    #[test]
    fn answers_are_sums_mod_p() {
        let task = ModularAddition::new(7, 0.5, 0);
        let e = task.split(Split::Test).unwrap();
        for i in 0..e.n {
            assert_eq!(e.token(i, 2), 7, "third token is `=`");
            assert_eq!(e.targets[i], (e.token(i, 0) + e.token(i, 1)) % 7);
        }
    }

    #[test]
    fn same_seed_same_split_other_seed_other_split() {
        let a = ModularAddition::new(11, 0.3, 1).split(Split::Train);
        assert_eq!(a, ModularAddition::new(11, 0.3, 1).split(Split::Train));
        assert_ne!(a, ModularAddition::new(11, 0.3, 2).split(Split::Train));
    }
}
