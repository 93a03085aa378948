//! k-sparse parity (Barak et al. 2022, "Hidden progress in deep learning: SGD learns parities near the
//! computational limit"): n random bits then `=`, answer the parity (XOR) of a hidden subset S of k of them.
//! The loss sits on a plateau at ln 2 for a long time, then drops abruptly; the Fourier coefficient of the
//! model's output on S grows during the plateau (the declared progress measure, `behavior.progress.*`).
//!
//! Tokens: 0 and 1 are the bits, 2 is `=`; the answer classes are 0 and 1. Training draws fresh bits every step
//! (the paper's online setting) unless `train_size` fixes a finite train split.

use super::{
    DataCursor, Examples, Labeled, ProgressMeasure, Split, Task, finite_cursor, finite_minibatch,
    stream_batch, stream_cursor,
};
use host::rng::SplitMix64;

/// The `=` token.
const EQ: u32 = 2;

pub struct SparseParity {
    n_bits: usize,
    subset: Vec<usize>,
    seed: u64,
    answers: [usize; 1],
    train: Option<Examples>,
    test: Examples,
}

impl SparseParity {
    /// `subset` (indices below `n_bits`) is the hidden set; `None` draws `k` indices from the seed.
    /// `train_size` fixes a finite train split; `None` draws fresh examples every step.
    pub fn new(
        n_bits: usize,
        k: usize,
        subset: Option<Vec<usize>>,
        train_size: Option<usize>,
        test_size: usize,
        seed: u64,
    ) -> Self {
        let subset = subset.unwrap_or_else(|| {
            let mut all: Vec<usize> = (0..n_bits).collect();
            SplitMix64::derived(seed, "sparse-parity-subset", 0).shuffle(&mut all);
            let mut chosen = all[..k].to_vec();
            chosen.sort_unstable();
            chosen
        });
        let mut task = Self {
            n_bits,
            subset,
            seed,
            answers: [n_bits],
            train: None,
            test: Examples::default(),
        };
        task.test = task.generate(
            &mut SplitMix64::derived(seed, "sparse-parity-test", 0),
            test_size,
        );
        task.train = train_size
            .map(|n| task.generate(&mut SplitMix64::derived(seed, "sparse-parity-train", 0), n));
        task
    }

    /// The hidden subset, sorted.
    pub fn subset(&self) -> &[usize] {
        &self.subset
    }

    fn generate(&self, rng: &mut SplitMix64, n: usize) -> Examples {
        let seq_len = self.n_bits + 1;
        let mut tokens = Vec::with_capacity(n * seq_len);
        let mut targets = Vec::with_capacity(n);
        for _ in 0..n {
            let start = tokens.len();
            tokens.extend((0..self.n_bits).map(|_| (rng.next_u64() >> 63) as u32));
            tokens.push(EQ);
            targets.push(self.subset.iter().map(|&i| tokens[start + i]).sum::<u32>() % 2);
        }
        Examples {
            n,
            seq_len,
            tokens,
            n_answers: 1,
            targets,
            columns: Default::default(),
        }
    }

    /// The first bit position outside the hidden subset (a key position whose token the answer ignores).
    fn irrelevant(&self) -> Option<usize> {
        (0..self.n_bits).find(|i| !self.subset.contains(i))
    }
}

impl Task for SparseParity {
    fn name(&self) -> &str {
        "sparse-parity"
    }
    fn d_vocab(&self) -> usize {
        3
    }
    fn d_vocab_out(&self) -> usize {
        2
    }
    fn seq_len(&self) -> usize {
        self.n_bits + 1
    }
    fn answer_positions(&self) -> &[usize] {
        &self.answers
    }
    fn split(&self, split: Split) -> Option<Examples> {
        match split {
            Split::Train => self.train.clone(),
            Split::Test => Some(self.test.clone()),
            Split::Ood => None,
        }
    }
    fn train_batch(&self, step: u64, batch_size: Option<usize>) -> Examples {
        match (&self.train, batch_size) {
            (Some(train), None) => train.clone(),
            (Some(train), Some(batch)) => {
                train.select(&finite_minibatch(train.n, batch, self.seed, step))
            }
            (None, batch) => {
                stream_batch(self.seed, "sparse-parity-stream", step, batch, |rng, n| {
                    self.generate(rng, n)
                })
            }
        }
    }
    fn data_cursor(&self, step: u64, batch_size: Option<usize>) -> DataCursor {
        match &self.train {
            Some(train) => finite_cursor(train.n, batch_size, step),
            None => stream_cursor(step, batch_size),
        }
    }
    fn corrupted_key(&self) -> Option<&str> {
        // Resampling a relevant bit flips the parity half the time.
        Some("rel0")
    }
    fn key_positions(&self, examples: &Examples) -> Vec<Labeled> {
        let at = |name: String, pos: usize| Labeled {
            name,
            n_classes: self.seq_len(),
            values: vec![pos as u32; examples.n],
        };
        let mut keys: Vec<Labeled> = self
            .subset
            .iter()
            .enumerate()
            .map(|(j, &pos)| at(format!("rel{j}"), pos))
            .collect();
        keys.extend(self.irrelevant().map(|pos| at("irr".into(), pos)));
        keys.push(at("eq".into(), self.n_bits));
        keys
    }
    fn probe_targets(&self, examples: &Examples) -> Vec<Labeled> {
        let mut targets = vec![Labeled {
            name: "parity".into(),
            n_classes: 2,
            values: examples.targets.clone(),
        }];
        targets.extend(self.subset.iter().enumerate().map(|(j, &pos)| Labeled {
            name: format!("rel{j}"),
            n_classes: 2,
            values: (0..examples.n).map(|i| examples.token(i, pos)).collect(),
        }));
        targets
    }
    fn control_types(&self, examples: &Examples) -> Vec<Labeled> {
        // The parity depends on the relevant bits only: its input type is their tuple (2^k types).
        let k = self.subset.len();
        vec![Labeled {
            name: "parity".into(),
            n_classes: 1 << k,
            values: (0..examples.n)
                .map(|i| {
                    self.subset
                        .iter()
                        .enumerate()
                        .fold(0, |t, (j, &pos)| t | (examples.token(i, pos) << j))
                })
                .collect(),
        }]
    }
    fn progress_measures(&self) -> Vec<ProgressMeasure> {
        vec![ProgressMeasure::ParityFourier {
            bits: (0..self.n_bits).collect(),
            subset: self.subset.clone(),
            answer: self.n_bits,
            zero: 0,
            one: 1,
        }]
    }
    fn probe_pool(&self, seed: u64, size: usize) -> Vec<(Split, Examples)> {
        // Fresh draws are held-out samples of the distribution the test split comes from.
        let fresh = self.generate(
            &mut SplitMix64::derived(seed, "sparse-parity-probe", 0),
            2 * size,
        );
        vec![(Split::Test, self.test.clone()), (Split::Test, fresh)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_the_parity_of_the_hidden_bits() {
        let task = SparseParity::new(10, 3, Some(vec![1, 4, 7]), None, 64, 0);
        let e = task.split(Split::Test).unwrap();
        for i in 0..e.n {
            let ones = e.token(i, 1) + e.token(i, 4) + e.token(i, 7);
            assert_eq!(e.targets[i], ones % 2);
            assert_eq!(e.token(i, 10), EQ);
            assert!((0..10).all(|p| e.token(i, p) < 2));
        }
        // Both answers occur.
        assert!(e.targets.contains(&0) && e.targets.contains(&1));
    }

    #[test]
    fn the_seed_picks_k_distinct_bits_and_the_same_seed_the_same_data() {
        let a = SparseParity::new(20, 3, None, None, 16, 4);
        assert_eq!(a.subset().len(), 3);
        assert!(a.subset().windows(2).all(|w| w[0] < w[1]) && a.subset()[2] < 20);
        let b = SparseParity::new(20, 3, None, None, 16, 4);
        assert_eq!(a.subset(), b.subset());
        assert_eq!(a.train_batch(3, Some(8)), b.train_batch(3, Some(8)));
        assert_ne!(a.train_batch(3, Some(8)), a.train_batch(4, Some(8)));
    }

    #[test]
    fn key_positions_name_the_relevant_bits_and_one_irrelevant() {
        let task = SparseParity::new(6, 2, Some(vec![0, 3]), Some(32), 8, 1);
        let e = task.split(Split::Train).unwrap();
        let keys = task.key_positions(&e);
        let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["rel0", "rel1", "irr", "eq"]);
        assert_eq!(
            keys.iter().map(|k| k.values[0]).collect::<Vec<_>>(),
            [0, 3, 1, 6]
        );
        let types = task.control_types(&e);
        for i in 0..e.n {
            assert_eq!(types[0].values[i], e.token(i, 0) | (e.token(i, 3) << 1));
        }
    }
}
