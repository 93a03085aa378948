//! Modular addition (grokking; Power et al. 2022, Nanda et al. 2023): tokens `a b =`, answer (a + b) mod p
//! at `=`. The train split is a seeded fraction of all p² pairs, the test split the rest.

use super::{
    DataCursor, Examples, FourierGrid, Labeled, Split, Task, finite_cursor, finite_minibatch,
};
use host::rng::SplitMix64;

/// Position of `=`, the only answer position.
const EQ: usize = 2;

pub struct ModularAddition {
    p: usize,
    seed: u64,
    train: Examples,
    test: Examples,
}

impl ModularAddition {
    pub fn new(p: usize, train_fraction: f64, seed: u64) -> Self {
        let mut pairs: Vec<usize> = (0..p * p).collect();
        SplitMix64::derived(seed, "modular-addition-split", 0).shuffle(&mut pairs);
        let n_train = (train_fraction * (p * p) as f64).round() as usize;
        let (train, test) = pairs.split_at(n_train);
        Self {
            p,
            seed,
            train: Self::examples(p, train),
            test: Self::examples(p, test),
        }
    }

    /// Examples for pair indices `a * p + b`.
    fn examples(p: usize, pairs: &[usize]) -> Examples {
        let mut tokens = Vec::with_capacity(pairs.len() * 3);
        let mut targets = Vec::with_capacity(pairs.len());
        for &ab in pairs {
            let (a, b) = (ab / p, ab % p);
            tokens.extend([a as u32, b as u32, p as u32]);
            targets.push(((a + b) % p) as u32);
        }
        Examples {
            n: pairs.len(),
            seq_len: 3,
            tokens,
            n_answers: 1,
            targets,
            columns: Default::default(),
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
        match split {
            Split::Train => Some(self.train.clone()),
            Split::Test => Some(self.test.clone()),
            Split::Ood => None,
        }
    }
    fn train_batch(&self, step: u64, batch_size: Option<usize>) -> Examples {
        match batch_size {
            None => self.train.clone(),
            Some(batch) => {
                self.train
                    .select(&finite_minibatch(self.train.n, batch, self.seed, step))
            }
        }
    }
    fn data_cursor(&self, step: u64, batch_size: Option<usize>) -> DataCursor {
        finite_cursor(self.train.n, batch_size, step)
    }
    fn fourier_grid(&self) -> Option<FourierGrid> {
        let p = self.p;
        let inputs = (0..p * p)
            .flat_map(|i| [(i / p) as u32, (i % p) as u32, p as u32])
            .collect();
        let train = self.split(Split::Train).map_or_else(Vec::new, |e| {
            (0..e.n)
                .map(|i| e.token(i, 0) as usize * p + e.token(i, 1) as usize)
                .collect()
        });
        Some(FourierGrid {
            p,
            seq_len: 3,
            inputs,
            train,
        })
    }
    fn corrupted_key(&self) -> Option<&str> {
        Some("a")
    }
    fn key_positions(&self, examples: &Examples) -> Vec<Labeled> {
        ["a", "b", "eq"]
            .into_iter()
            .enumerate()
            .map(|(pos, name)| Labeled {
                name: name.into(),
                n_classes: 3,
                values: vec![pos as u32; examples.n],
            })
            .collect()
    }
    fn probe_targets(&self, examples: &Examples) -> Vec<Labeled> {
        let column = |pos: usize| (0..examples.n).map(|i| examples.token(i, pos)).collect();
        vec![
            Labeled {
                name: "a".into(),
                n_classes: self.p,
                values: column(0),
            },
            Labeled {
                name: "b".into(),
                n_classes: self.p,
                values: column(1),
            },
            Labeled {
                name: "sum".into(),
                n_classes: self.p,
                values: examples.targets.clone(),
            },
        ]
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
