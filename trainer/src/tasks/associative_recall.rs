//! Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology: measuring and improving recall in efficient
//! language models"): a context of key-value pairs `k₁ v₁ … k_N v_N`, then queries `q₁ v(q₁) … q_Q v(q_Q)` that
//! repeat keys of the context (each followed by its value, teacher-forced); the loss counts at every query,
//! whose next token is its key's value. Keys and values come from disjoint halves of the vocabulary and are
//! drawn without replacement per sequence, so a key's value can only be found in context: attend from the query
//! to the token after the key's earlier occurrence (an induction head: previous-token head in one layer, then
//! query → matching key → value).

use super::{
    DataCursor, Examples, HeadDetector, Labeled, Split, Task, stream_batch, stream_cursor,
    test_only,
};
use host::rng::SplitMix64;

pub struct AssociativeRecall {
    keys: usize,
    values: usize,
    pairs: usize,
    queries: usize,
    seed: u64,
    answers: Vec<usize>,
    test: Examples,
}

impl AssociativeRecall {
    /// Keys are tokens `0..keys`, values `keys..keys + values`; `pairs` ≤ min(keys, values) pairs in context,
    /// `queries` ≤ pairs queries (distinct keys of the context, in random order).
    pub fn new(
        keys: usize,
        values: usize,
        pairs: usize,
        queries: usize,
        test_size: usize,
        seed: u64,
    ) -> Self {
        let mut task = Self {
            keys,
            values,
            pairs,
            queries,
            seed,
            answers: (0..queries).map(|q| 2 * pairs + 2 * q).collect(),
            test: Examples::default(),
        };
        task.test = task.generate(&mut SplitMix64::derived(seed, "mqar-test", 0), test_size);
        task
    }

    fn generate(&self, rng: &mut SplitMix64, n: usize) -> Examples {
        let seq_len = self.seq_len();
        let mut tokens = Vec::with_capacity(n * seq_len);
        let mut targets = Vec::with_capacity(n * self.queries);
        for _ in 0..n {
            let mut keys: Vec<u32> = (0..self.keys as u32).collect();
            rng.shuffle(&mut keys);
            let mut values: Vec<u32> = (0..self.values as u32)
                .map(|v| v + self.keys as u32)
                .collect();
            rng.shuffle(&mut values);
            for p in 0..self.pairs {
                tokens.extend([keys[p], values[p]]);
            }
            let mut asked: Vec<usize> = (0..self.pairs).collect();
            rng.shuffle(&mut asked);
            for &p in &asked[..self.queries] {
                tokens.extend([keys[p], values[p]]);
                targets.push(values[p]);
            }
        }
        Examples {
            n,
            seq_len,
            tokens,
            n_answers: self.queries,
            targets,
            columns: Default::default(),
        }
    }

    /// The first query's position.
    fn query(&self) -> usize {
        2 * self.pairs
    }

    /// The context position of the key the first query of example `i` asks for.
    fn key_match(&self, examples: &Examples, i: usize) -> u32 {
        let query = examples.token(i, self.query());
        (0..self.query())
            .step_by(2)
            .find(|&p| examples.token(i, p) == query)
            .unwrap_or(0) as u32
    }
}

impl Task for AssociativeRecall {
    fn name(&self) -> &str {
        "associative-recall"
    }
    fn d_vocab(&self) -> usize {
        self.keys + self.values
    }
    fn d_vocab_out(&self) -> usize {
        self.keys + self.values
    }
    fn seq_len(&self) -> usize {
        2 * (self.pairs + self.queries)
    }
    fn answer_positions(&self) -> &[usize] {
        &self.answers
    }
    fn split(&self, split: Split) -> Option<Examples> {
        test_only(&self.test, split)
    }
    fn train_batch(&self, step: u64, batch_size: Option<usize>) -> Examples {
        stream_batch(self.seed, "mqar-train", step, batch_size, |rng, n| {
            self.generate(rng, n)
        })
    }
    fn data_cursor(&self, step: u64, batch_size: Option<usize>) -> DataCursor {
        stream_cursor(step, batch_size)
    }
    fn corrupted_key(&self) -> Option<&str> {
        // Resampling the value of the queried pair changes the answer.
        Some("value")
    }
    fn head_detectors(&self) -> Vec<HeadDetector> {
        HeadDetector::ALL.to_vec()
    }
    fn key_positions(&self, examples: &Examples) -> Vec<Labeled> {
        let seq_len = self.seq_len();
        let matches: Vec<u32> = (0..examples.n)
            .map(|i| self.key_match(examples, i))
            .collect();
        vec![
            Labeled {
                name: "query".into(),
                n_classes: seq_len,
                values: vec![self.query() as u32; examples.n],
            },
            Labeled {
                name: "key".into(),
                n_classes: seq_len,
                values: matches.clone(),
            },
            Labeled {
                name: "value".into(),
                n_classes: seq_len,
                values: matches.iter().map(|m| m + 1).collect(),
            },
        ]
    }
    fn probe_targets(&self, examples: &Examples) -> Vec<Labeled> {
        let at = |name: &str, pos: usize| Labeled {
            name: name.into(),
            n_classes: self.keys + self.values,
            values: (0..examples.n).map(|i| examples.token(i, pos)).collect(),
        };
        vec![
            at("query_key", self.query()),
            at("answer", self.query() + 1),
        ]
    }
    fn probe_pool(&self, seed: u64, size: usize) -> Vec<(Split, Examples)> {
        let fresh = self.generate(&mut SplitMix64::derived(seed, "mqar-probe", 0), 2 * size);
        vec![(Split::Test, self.test.clone()), (Split::Test, fresh)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_answer_is_its_keys_value_in_context() {
        let task = AssociativeRecall::new(16, 16, 6, 3, 32, 2);
        let e = task.train_batch(4, Some(32));
        assert_eq!(e.seq_len, 18);
        assert_eq!(task.answer_positions(), &[12, 14, 16]);
        for i in 0..e.n {
            for (j, &q) in task.answer_positions().iter().enumerate() {
                let key = e.token(i, q);
                assert!(key < 16, "queries are keys");
                let at = (0..12).step_by(2).find(|&p| e.token(i, p) == key).unwrap();
                assert_eq!(e.targets[i * 3 + j], e.token(i, at + 1));
                assert_eq!(
                    e.token(i, q + 1),
                    e.token(i, at + 1),
                    "teacher-forced value"
                );
            }
        }
    }

    #[test]
    fn key_positions_point_at_the_queried_pair() {
        let task = AssociativeRecall::new(8, 8, 4, 2, 16, 0);
        let e = task.split(Split::Test).unwrap();
        let keys = task.key_positions(&e);
        for i in 0..e.n {
            let (query, key, value) = (keys[0].values[i], keys[1].values[i], keys[2].values[i]);
            assert_eq!(query, 8);
            assert_eq!(e.token(i, key as usize), e.token(i, query as usize));
            assert_eq!(value, key + 1);
            assert!(e.token(i, value as usize) >= 8, "a value token");
        }
    }
}
