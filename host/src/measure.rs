//! Progress measures a task can declare beside its head detectors: task-specific behavior metrics the analysis
//! computes from the probe set's tokens and logits (`behavior.progress.*` in the rows).

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
