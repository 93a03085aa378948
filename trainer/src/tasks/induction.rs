//! Induction (in-context copying; Olsson et al. 2022): a block B of h random tokens appears twice at the end of
//! a 2n-token sequence, after 2(n − h) random filler tokens. The repeat length h varies between examples
//! (`min_repeat` ≤ h ≤ n), so the distance between the two copies varies too: no fixed positional offset solves
//! the task, and the model has to find the previous occurrence by content (previous-token head + induction
//! head). The loss counts at the last `min_repeat − 1` positions, which lie inside the second copy for every h.

use super::{
    DataCursor, Examples, Labeled, RepeatKeys, Split, Task, stream_batch, stream_cursor, test_only,
};
use host::rng::SplitMix64;

pub struct Induction {
    vocab: usize,
    half: usize,
    min_repeat: usize,
    seed: u64,
    answers: Vec<usize>,
    test: Examples,
}

impl Induction {
    /// Sequences are `2 * half` tokens long; repeat lengths run over `min_repeat..=half`.
    pub fn new(vocab: usize, half: usize, min_repeat: usize, test_size: usize, seed: u64) -> Self {
        let seq_len = 2 * half;
        // Position t predicts token t + 1: the last min_repeat − 1 predictions are all inside the second copy.
        let answers = (seq_len - min_repeat..seq_len - 1).collect();
        let mut task = Self {
            vocab,
            half,
            min_repeat,
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

    /// Repeat length of the example at `index` of a generated block: cycles through min_repeat..=half, so
    /// every block covers all lengths evenly.
    pub fn repeat_len(&self, index: usize) -> usize {
        self.min_repeat + index % (self.half - self.min_repeat + 1)
    }

    fn generate(&self, rng: &mut SplitMix64, n: usize) -> Examples {
        let seq_len = 2 * self.half;
        let mut tokens = Vec::with_capacity(n * seq_len);
        let mut targets = Vec::with_capacity(n * self.answers.len());
        for i in 0..n {
            let h = self.repeat_len(i);
            let start = tokens.len();
            tokens.extend((0..seq_len - 2 * h).map(|_| rng.below(self.vocab) as u32));
            let block: Vec<u32> = (0..h).map(|_| rng.below(self.vocab) as u32).collect();
            tokens.extend_from_slice(&block);
            tokens.extend_from_slice(&block);
            targets.extend(self.answers.iter().map(|&t| tokens[start + t + 1]));
        }
        Examples {
            n,
            seq_len,
            tokens,
            n_answers: self.answers.len(),
            targets,
            columns: Default::default(),
        }
    }

    /// The key query position `cur` of example `index`: inside the second copy, after its first token, spread
    /// over the answer positions.
    fn cur(&self, index: usize) -> usize {
        let seq_len = 2 * self.half;
        seq_len - self.min_repeat + 1 + index % (self.min_repeat - 2)
    }
}

impl Task for Induction {
    fn name(&self) -> &str {
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
        test_only(&self.test, split)
    }
    fn train_batch(&self, step: u64, batch_size: Option<usize>) -> Examples {
        stream_batch(self.seed, "induction-train", step, batch_size, |rng, n| {
            self.generate(rng, n)
        })
    }
    fn data_cursor(&self, step: u64, batch_size: Option<usize>) -> DataCursor {
        stream_cursor(step, batch_size)
    }
    fn corrupted_key(&self) -> Option<&str> {
        Some("prev_occ")
    }
    fn repeat_keys(&self) -> Option<RepeatKeys> {
        Some(RepeatKeys {
            repeat: "cur",
            first: "prev_occ",
        })
    }
    fn key_positions(&self, examples: &Examples) -> Vec<Labeled> {
        let seq_len = self.seq_len();
        let at = |back: fn(usize) -> usize| -> Vec<u32> {
            (0..examples.n)
                .map(|i| (self.cur(i) - back(self.repeat_len(i))) as u32)
                .collect()
        };
        vec![
            Labeled {
                name: "cur".into(),
                n_classes: seq_len,
                values: at(|_| 0),
            },
            Labeled {
                name: "prev_occ".into(),
                n_classes: seq_len,
                values: at(|h| h),
            },
            Labeled {
                name: "after_prev".into(),
                n_classes: seq_len,
                values: at(|h| h - 1),
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
    fn the_last_h_tokens_repeat_the_h_before_them_exactly() {
        let task = Induction::new(20, 8, 4, 16, 3);
        let e = task.train_batch(5, Some(32));
        let mut lengths = std::collections::BTreeSet::new();
        for i in 0..e.n {
            let h = task.repeat_len(i);
            lengths.insert(h);
            for j in 0..h {
                assert_eq!(e.token(i, 16 - 2 * h + j), e.token(i, 16 - h + j));
            }
        }
        assert_eq!(lengths, (4..=8).collect(), "every repeat length occurs");
    }

    #[test]
    fn targets_are_the_next_token_at_each_answer_position() {
        let task = Induction::new(20, 8, 4, 16, 3);
        let e = task.split(Split::Test).unwrap();
        assert_eq!(task.answer_positions(), &[12, 13, 14]);
        for i in 0..e.n {
            for (j, &t) in task.answer_positions().iter().enumerate() {
                assert_eq!(e.targets[i * e.n_answers + j], e.token(i, t + 1));
            }
        }
    }

    #[test]
    fn key_positions_point_at_the_previous_occurrence() {
        let task = Induction::new(20, 8, 4, 16, 3);
        let e = task.split(Split::Test).unwrap();
        let keys = task.key_positions(&e);
        let targets = task.probe_targets(&e);
        for i in 0..e.n {
            let (cur, prev, after) = (keys[0].values[i], keys[1].values[i], keys[2].values[i]);
            assert!(
                (13..=14).contains(&cur),
                "inside the second copy for every repeat length"
            );
            assert_eq!(cur - prev, task.repeat_len(i) as u32);
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
        let a = Induction::new(20, 8, 4, 16, 3);
        let b = Induction::new(20, 8, 4, 16, 3);
        assert_eq!(a.train_batch(9, Some(4)), b.train_batch(9, Some(4)));
        assert_eq!(a.split(Split::Test), b.split(Split::Test));
        assert_ne!(a.train_batch(9, Some(4)), a.train_batch(10, Some(4)));
    }
}
