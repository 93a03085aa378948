//! Induction (in-context copying; Olsson et al. 2022): n random tokens followed by their exact repeat. The loss
//! counts on the repeat from its second token on, the only tokens that are predictable from context.

use super::{DataCursor, Examples, Labeled, Split, Task};
use crate::rng::SplitMix64;

pub struct Induction {
    vocab: usize,
    half: usize,
    seed: u64,
    answers: Vec<usize>,
    test: Examples,
}

impl Induction {
    /// `half` is the length n of the random part; sequences are 2n tokens long.
    pub fn new(vocab: usize, half: usize, test_size: usize, seed: u64) -> Self {
        // Position t predicts token t + 1; the repeat's tokens 1..n are x_1..x_{n-1}, predicted at n..2n-2.
        let answers = (half..2 * half - 1).collect();
        let mut task = Self {
            vocab,
            half,
            seed,
            answers,
            test: Examples::default(),
        };
        task.test = task.generate(
            &mut SplitMix64::derived(seed, "induction-test", 0),
            test_size,
        );
        task
    }

    fn generate(&self, rng: &mut SplitMix64, n: usize) -> Examples {
        let seq_len = 2 * self.half;
        let mut tokens = Vec::with_capacity(n * seq_len);
        let mut targets = Vec::with_capacity(n * self.answers.len());
        for _ in 0..n {
            let first: Vec<u32> = (0..self.half)
                .map(|_| rng.below(self.vocab) as u32)
                .collect();
            tokens.extend_from_slice(&first);
            tokens.extend_from_slice(&first);
            targets.extend(self.answers.iter().map(|&t| first[t + 1 - self.half]));
        }
        Examples {
            n,
            seq_len,
            tokens,
            n_answers: self.answers.len(),
            targets,
        }
    }

    /// The key query position `cur` of example `i`: a repeat position, spread evenly over n+1..=2n-2 so that
    /// both its previous occurrence and the token after that lie inside the first half.
    fn cur(&self, i: usize) -> usize {
        self.half + 1 + i % (self.half - 2).max(1)
    }
}

impl Task for Induction {
    fn name(&self) -> &'static str {
        "induction"
    }
    fn d_vocab(&self) -> usize {
        self.vocab
    }
    fn d_vocab_out(&self) -> usize {
        self.vocab
    }
    fn seq_len(&self) -> usize {
        2 * self.half
    }
    fn answer_positions(&self) -> &[usize] {
        &self.answers
    }
    fn split(&self, split: Split) -> Option<Examples> {
        match split {
            Split::Test => Some(self.test.clone()),
            Split::Train | Split::Ood => None,
        }
    }
    fn train_batch(&self, step: u64, batch_size: Option<usize>) -> Examples {
        // Config validation guarantees a batch size for this unbounded stream.
        let batch = batch_size.unwrap_or(1);
        self.generate(
            &mut SplitMix64::derived(self.seed, "induction-train", step),
            batch,
        )
    }
    fn data_cursor(&self, step: u64, batch_size: Option<usize>) -> DataCursor {
        DataCursor {
            epoch: 0,
            offset: step * batch_size.unwrap_or(1) as u64,
        }
    }
    fn key_positions(&self, examples: &Examples) -> Vec<Labeled> {
        let seq_len = self.seq_len();
        let at = |shift: isize| -> Vec<u32> {
            (0..examples.n)
                .map(|i| (self.cur(i) as isize + shift) as u32)
                .collect()
        };
        let n = self.half as isize;
        vec![
            Labeled {
                name: "cur".into(),
                n_classes: seq_len,
                values: at(0),
            },
            Labeled {
                name: "prev_occ".into(),
                n_classes: seq_len,
                values: at(-n),
            },
            Labeled {
                name: "after_prev".into(),
                n_classes: seq_len,
                values: at(1 - n),
            },
        ]
    }
    fn probe_pool(&self, seed: u64, size: usize) -> Vec<(Split, Examples)> {
        // Fresh draws are held-out samples of the same distribution as the test split.
        let fresh = self.generate(
            &mut SplitMix64::derived(seed, "induction-probe", 0),
            2 * size,
        );
        vec![(Split::Test, self.test.clone()), (Split::Test, fresh)]
    }
    fn probe_targets(&self, examples: &Examples) -> Vec<Labeled> {
        let at = |shift: isize| -> Vec<u32> {
            (0..examples.n)
                .map(|i| examples.token(i, (self.cur(i) as isize + shift) as usize))
                .collect()
        };
        vec![
            Labeled {
                name: "cur_token".into(),
                n_classes: self.vocab,
                values: at(0),
            },
            Labeled {
                name: "prev_token".into(),
                n_classes: self.vocab,
                values: at(-1),
            },
            Labeled {
                name: "next_token".into(),
                n_classes: self.vocab,
                values: at(1),
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_half_repeats_the_first_exactly() {
        let task = Induction::new(20, 8, 16, 3);
        let e = task.train_batch(5, Some(32));
        for i in 0..e.n {
            for t in 0..8 {
                assert_eq!(e.token(i, t), e.token(i, t + 8));
            }
        }
    }

    #[test]
    fn targets_are_the_next_token_at_each_answer_position() {
        let task = Induction::new(20, 8, 16, 3);
        let e = task.split(Split::Test).unwrap();
        assert_eq!(task.answer_positions(), &[8, 9, 10, 11, 12, 13, 14]);
        for i in 0..e.n {
            for (j, &t) in task.answer_positions().iter().enumerate() {
                assert_eq!(e.targets[i * e.n_answers + j], e.token(i, t + 1));
            }
        }
    }

    #[test]
    fn key_positions_point_at_the_previous_occurrence() {
        let task = Induction::new(20, 8, 16, 3);
        let e = task.split(Split::Test).unwrap();
        let keys = task.key_positions(&e);
        let targets = task.probe_targets(&e);
        for i in 0..e.n {
            let (cur, prev, after) = (keys[0].values[i], keys[1].values[i], keys[2].values[i]);
            assert!((9..=14).contains(&cur));
            assert_eq!(e.token(i, cur as usize), e.token(i, prev as usize));
            assert_eq!(after, prev + 1);
            assert_eq!(
                targets[2].values[i],
                e.token(i, after as usize),
                "next_token = token after prev_occ"
            );
        }
    }

    #[test]
    fn same_seed_same_data() {
        let a = Induction::new(20, 8, 16, 3);
        let b = Induction::new(20, 8, 16, 3);
        assert_eq!(a.train_batch(9, Some(4)), b.train_batch(9, Some(4)));
        assert_eq!(a.split(Split::Test), b.split(Split::Test));
        assert_ne!(a.train_batch(9, Some(4)), a.train_batch(10, Some(4)));
    }
}
