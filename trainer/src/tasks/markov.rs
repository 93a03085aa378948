//! In-context Markov chains (Edelman et al. 2024, "The evolution of statistical induction heads: in-context
//! learning Markov chains"): every sequence comes from its own transition matrix, whose rows are drawn from a
//! symmetric Dirichlet(α) prior, started from that chain's stationary distribution. The loss counts at every
//! position (next-token prediction). The best predictor counts the context's bigrams (a statistical induction
//! head: attend to the tokens that followed earlier copies of the current token); models pass through a
//! uniform stage and an in-context unigram stage first. The task declares the three oracle predictors as
//! progress measures (`behavior.progress.kl_uniform`, `kl_unigram`, `kl_bigram`).

use super::{
    DataCursor, Examples, HeadDetector, Labeled, ProgressMeasure, Split, Task, stream_batch,
    stream_cursor, test_only,
};
use host::measure::markov_oracles;
use host::rng::SplitMix64;

pub struct MarkovChains {
    states: usize,
    seq_len: usize,
    alpha: f64,
    seed: u64,
    answers: Vec<usize>,
    test: Examples,
}

impl MarkovChains {
    pub fn new(states: usize, seq_len: usize, alpha: f64, test_size: usize, seed: u64) -> Self {
        let mut task = Self {
            states,
            seq_len,
            alpha,
            seed,
            // Position t predicts token t + 1: every position but the last.
            answers: (0..seq_len - 1).collect(),
            test: Examples::default(),
        };
        task.test = task.generate(&mut SplitMix64::derived(seed, "markov-test", 0), test_size);
        task
    }

    fn generate(&self, rng: &mut SplitMix64, n: usize) -> Examples {
        let k = self.states;
        let mut tokens = Vec::with_capacity(n * self.seq_len);
        let mut targets = Vec::with_capacity(n * self.answers.len());
        for _ in 0..n {
            let rows: Vec<Vec<f64>> = (0..k).map(|_| rng.dirichlet(k, self.alpha)).collect();
            let start = tokens.len();
            let mut state = rng.categorical(&stationary(&rows));
            for _ in 0..self.seq_len {
                tokens.push(state as u32);
                state = rng.categorical(&rows[state]);
            }
            targets.extend(self.answers.iter().map(|&t| tokens[start + t + 1]));
        }
        Examples {
            n,
            seq_len: self.seq_len,
            tokens,
            n_answers: self.answers.len(),
            targets,
            columns: Default::default(),
        }
    }

    /// The key query position `cur`: the last answer position (its next token is the sequence's last).
    fn cur(&self) -> usize {
        self.seq_len - 2
    }

    /// The latest position before `cur` holding the same token as `cur` (position 0 if there is none, which
    /// with a few states and dozens of tokens almost never happens).
    fn prev_occ(&self, examples: &Examples, i: usize) -> usize {
        let cur = self.cur();
        let token = examples.token(i, cur);
        (0..cur)
            .rev()
            .find(|&s| examples.token(i, s) == token)
            .unwrap_or(0)
    }
}

/// The stationary distribution π = πP of a transition matrix with positive rows, by 200 steps of power
/// iteration from uniform (Dirichlet rows are positive almost surely, so the chain is ergodic and this
/// converges). A step that gives back exactly its input would give it back every time after, so the iteration
/// stops there: the same bits as all 200 steps.
fn stationary(rows: &[Vec<f64>]) -> Vec<f64> {
    let k = rows.len();
    let mut pi = vec![1.0 / k as f64; k];
    let mut next = vec![0.0; k];
    for _ in 0..200 {
        for (j, next) in next.iter_mut().enumerate() {
            *next = (0..k).map(|i| pi[i] * rows[i][j]).sum();
        }
        if next == pi {
            break;
        }
        std::mem::swap(&mut pi, &mut next);
    }
    pi
}

impl Task for MarkovChains {
    fn name(&self) -> &str {
        "markov-chains"
    }
    fn d_vocab(&self) -> usize {
        self.states
    }
    fn d_vocab_out(&self) -> usize {
        self.states
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn answer_positions(&self) -> &[usize] {
        &self.answers
    }
    fn split(&self, split: Split) -> Option<Examples> {
        test_only(&self.test, split)
    }
    fn train_batch(&self, step: u64, batch_size: Option<usize>) -> Examples {
        stream_batch(self.seed, "markov-train", step, batch_size, |rng, n| {
            self.generate(rng, n)
        })
    }
    fn data_cursor(&self, step: u64, batch_size: Option<usize>) -> DataCursor {
        stream_cursor(step, batch_size)
    }
    fn corrupted_key(&self) -> Option<&str> {
        // The token after the previous occurrence is what a statistical induction head reads.
        Some("after_prev")
    }
    fn head_detectors(&self) -> Vec<HeadDetector> {
        HeadDetector::ALL.to_vec()
    }
    /// The in-context bigram predictor's accuracy on the test split: the Bayes predictor under the Dirichlet
    /// prior the chains' rows are drawn from (Edelman et al. 2024, §3), so no model can do better on average.
    fn attainable_accuracy(&self) -> Option<f64> {
        Some(bigram_accuracy(
            &self.test,
            &self.answers,
            self.states,
            self.alpha,
        ))
    }
    fn progress_measures(&self) -> Vec<ProgressMeasure> {
        vec![ProgressMeasure::MarkovOracles {
            states: self.states,
            pseudo_count: self.alpha,
        }]
    }
    fn key_positions(&self, examples: &Examples) -> Vec<Labeled> {
        let at = |name: &str, values: Vec<u32>| Labeled {
            name: name.into(),
            n_classes: self.seq_len,
            values,
        };
        let prev: Vec<u32> = (0..examples.n)
            .map(|i| self.prev_occ(examples, i) as u32)
            .collect();
        vec![
            at("cur", vec![self.cur() as u32; examples.n]),
            at("prev_occ", prev.clone()),
            at("after_prev", prev.iter().map(|p| p + 1).collect()),
        ]
    }
    fn probe_targets(&self, examples: &Examples) -> Vec<Labeled> {
        let at = |name: &str, pos: usize| Labeled {
            name: name.into(),
            n_classes: self.states,
            values: (0..examples.n).map(|i| examples.token(i, pos)).collect(),
        };
        vec![
            at("cur_token", self.cur()),
            at("prev_token", self.cur() - 1),
            at("next_token", self.cur() + 1),
        ]
    }
    fn probe_pool(&self, seed: u64, size: usize) -> Vec<(Split, Examples)> {
        let fresh = self.generate(&mut SplitMix64::derived(seed, "markov-probe", 0), 2 * size);
        vec![(Split::Test, self.test.clone()), (Split::Test, fresh)]
    }
}

/// Mean accuracy of the in-context bigram predictor over every answer position of `examples`: its predictive
/// distribution's argmax, ties split evenly (a target among m tied maxima counts 1/m, the expected accuracy of
/// a uniform choice among them).
fn bigram_accuracy(examples: &Examples, answers: &[usize], states: usize, alpha: f64) -> f64 {
    let mut total = 0.0;
    for i in 0..examples.n {
        let tokens = &examples.tokens[i * examples.seq_len..][..examples.seq_len];
        for (j, &t) in answers.iter().enumerate() {
            let [_, _, bigram] = markov_oracles(&tokens[..=t], states, alpha);
            let target = examples.targets[i * examples.n_answers + j] as usize;
            total += argmax_share(&bigram, target);
        }
    }
    total / (examples.n * answers.len()).max(1) as f64
}

/// 1/m if `target` is among the m largest entries of `q` (ties), else 0.
fn argmax_share(q: &[f64], target: usize) -> f64 {
    let best = q.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let tied = q.iter().filter(|&&v| v == best).count();
    if q.get(target) == Some(&best) {
        1.0 / tied as f64
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bigram_predictor_is_right_where_the_context_has_seen_the_transition() {
        // One sequence 0 1 0 1 over 2 states, α = 1, answers at positions 0, 1, 2 (targets 1, 0, 1).
        // Position 0 (context 0): no transitions seen, bigram (1/2, 1/2): a tie, the target 1 counts 1/2.
        // Position 1 (context 0 1): nothing followed 1 yet: a tie again, 1/2.
        // Position 2 (context 0 1 0): 0 was followed by 1 once: (1, 2)/3, argmax 1 = target: 1.
        // Mean (1/2 + 1/2 + 1) / 3 = 2/3.
        let examples = Examples {
            n: 1,
            seq_len: 4,
            tokens: vec![0, 1, 0, 1],
            n_answers: 3,
            targets: vec![1, 0, 1],
            columns: Default::default(),
        };
        let accuracy = bigram_accuracy(&examples, &[0, 1, 2], 2, 1.0);
        assert!((accuracy - 2.0 / 3.0).abs() < 1e-12, "{accuracy}");
        assert_eq!(argmax_share(&[0.2, 0.4, 0.4], 1), 0.5);
        assert_eq!(argmax_share(&[0.2, 0.4, 0.4], 0), 0.0);
    }

    #[test]
    fn the_stationary_distribution_of_a_two_state_chain() {
        // P = [[0.9, 0.1], [0.5, 0.5]]: π = (0.5, 0.1) / 0.6 = (5/6, 1/6).
        let pi = stationary(&[vec![0.9, 0.1], vec![0.5, 0.5]]);
        assert!((pi[0] - 5.0 / 6.0).abs() < 1e-9, "{pi:?}");
    }

    /// Stopping at a fixed point gives the bits of all 200 steps (the iteration as it was written first), on
    /// chains of 2 to 8 states, Dirichlet rows with α from 0.05 (near-deterministic rows) to 5.
    #[test]
    fn stopping_at_a_fixed_point_gives_the_bits_of_all_200_steps() {
        let all_steps = |rows: &[Vec<f64>]| {
            let k = rows.len();
            let mut pi = vec![1.0 / k as f64; k];
            for _ in 0..200 {
                pi = (0..k)
                    .map(|j| (0..k).map(|i| pi[i] * rows[i][j]).sum())
                    .collect();
            }
            pi
        };
        let mut rng = SplitMix64::new(11);
        for k in 2..=8 {
            for alpha in [0.05, 0.3, 1.0, 5.0] {
                for _ in 0..200 {
                    let rows: Vec<Vec<f64>> = (0..k).map(|_| rng.dirichlet(k, alpha)).collect();
                    let bits = |pi: Vec<f64>| pi.iter().map(|p| p.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(stationary(&rows)), bits(all_steps(&rows)), "{rows:?}");
                }
            }
        }
    }

    #[test]
    fn sequences_follow_their_own_chain() {
        // With two states and α small, each sequence's transition matrix is near-deterministic, and chains
        // differ between sequences: some sequences alternate, others repeat a token.
        let task = MarkovChains::new(2, 40, 0.1, 64, 3);
        let e = task.split(Split::Test).unwrap();
        let switch_rate = |i: usize| {
            (1..40)
                .filter(|&t| e.token(i, t) != e.token(i, t - 1))
                .count() as f64
                / 39.0
        };
        let rates: Vec<f64> = (0..e.n).map(switch_rate).collect();
        assert!(
            rates.iter().any(|&r| r > 0.8) && rates.iter().any(|&r| r < 0.2),
            "{rates:?}"
        );
        for i in 0..e.n {
            for (j, &t) in task.answer_positions().iter().enumerate() {
                assert_eq!(e.targets[i * e.n_answers + j], e.token(i, t + 1));
            }
        }
    }

    #[test]
    fn prev_occ_is_the_latest_earlier_copy_of_the_current_token() {
        let task = MarkovChains::new(3, 16, 1.0, 32, 1);
        let e = task.train_batch(0, Some(32));
        let keys = task.key_positions(&e);
        for i in 0..e.n {
            let (cur, prev) = (keys[0].values[i] as usize, keys[1].values[i] as usize);
            assert_eq!(cur, 14);
            if e.token(i, prev) == e.token(i, cur) {
                assert!((prev + 1..cur).all(|s| e.token(i, s) != e.token(i, cur)));
            }
            assert_eq!(keys[2].values[i] as usize, prev + 1);
        }
    }
}
