//! Progress measures a task can declare beside its head detectors: task-specific behavior metrics the analysis
//! computes from the probe set's tokens and logits (`behavior.progress.*` in the rows), and the oracle
//! predictors they compare the model with.

/// A task-declared progress measure. Each names what it reads from the probe set; the metric itself is a pure
/// function in `analysis::metrics::progress`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProgressMeasure {
    /// k-sparse parity (Barak et al. 2022, "Hidden progress in deep learning"): the Fourier coefficient of the
    /// model's ±1 output on the hidden subset against the largest one on any other subset of the same size.
    ParityFourier {
        /// Positions of the n input bits in the sequence (token `zero` = bit 0, `one` = bit 1).
        bits: Vec<usize>,
        /// The hidden subset, as indices into `bits`.
        subset: Vec<usize>,
        /// The answer position whose logits give the model's output.
        answer: usize,
        /// Output classes of parity 0 and parity 1.
        zero: u32,
        one: u32,
    },
    /// In-context Markov chains (Edelman et al. 2024): KL divergence from the uniform, in-context unigram and
    /// in-context bigram predictors to the model's next-token distribution at every answer position.
    MarkovOracles {
        /// Number of states (the model's output classes 0..states).
        states: usize,
        /// Dirichlet pseudo-count of the in-context estimators: the concentration of the prior the chains'
        /// rows are drawn from, which makes the bigram estimator the Bayes predictor.
        pseudo_count: f64,
    },
}

/// The three predictors of Edelman et al. 2024 (§3, "in-context learning of Markov chains") for the token after
/// `context`: uniform over the `states`; in-context unigram, q_j ∝ count of j in the context + α; in-context
/// bigram, q_j ∝ count of transitions (last token → j) in the context + α. With α = 1 the bigram predictor is
/// the Bayes posterior mean under the uniform Dirichlet prior the chains are drawn from (the optimal
/// predictor), the unigram one the optimum among predictors that ignore order. Tokens outside `0..states`
/// (a data-defined task's other symbols) are not counted.
pub fn markov_oracles(context: &[u32], states: usize, alpha: f64) -> [Vec<f64>; 3] {
    let uniform = vec![1.0 / states as f64; states];
    let mut unigram = vec![alpha; states];
    for &s in context {
        if let Some(count) = unigram.get_mut(s as usize) {
            *count += 1.0;
        }
    }
    let mut bigram = vec![alpha; states];
    if let Some(&last) = context.last() {
        for pair in context.windows(2) {
            if pair[0] == last
                && let Some(count) = bigram.get_mut(pair[1] as usize)
            {
                *count += 1.0;
            }
        }
    }
    let normalize = |mut q: Vec<f64>| {
        let total: f64 = q.iter().sum();
        q.iter_mut().for_each(|v| *v /= total);
        q
    };
    [uniform, normalize(unigram), normalize(bigram)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oracles_of_a_hand_made_context() {
        // Context 0 0 1 (2 states, α = 1): unigram counts (2, 1) → (3/5, 2/5); the last token 1 was never
        // followed by anything → bigram (1/2, 1/2).
        let [uniform, unigram, bigram] = markov_oracles(&[0, 0, 1], 2, 1.0);
        assert_eq!(uniform, vec![0.5, 0.5]);
        assert!((unigram[0] - 0.6).abs() < 1e-12 && (unigram[1] - 0.4).abs() < 1e-12);
        assert!((bigram[0] - 0.5).abs() < 1e-12);
        // Context 1 0 1 0 1: the last token 1 was followed by 0 twice → (2 + 1, 0 + 1) / 4 = (3/4, 1/4).
        let [_, _, bigram] = markov_oracles(&[1, 0, 1, 0, 1], 2, 1.0);
        assert!((bigram[0] - 0.75).abs() < 1e-12 && (bigram[1] - 0.25).abs() < 1e-12);
    }
}
