//! The `[task]` section: which task, with its own parameters.

use serde::{Deserialize, Serialize};

use super::{Checked, invalid};
use crate::error::ConfigError;

/// Which task, with its own parameters (see `tasks/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TaskConfig {
    /// A data-defined task: a dataset directory (`task.toml` and `.npy` arrays per split; `docs/tasks.md`). A
    /// relative path is taken from the config file's directory.
    Sequences { path: std::path::PathBuf },
    /// Tokens `a b =`, answer (a + b) mod p at `=` (Power et al. 2022; Nanda et al. 2023).
    ModularAddition {
        p: usize,
        /// Fraction of all p² pairs that goes to the train split; the rest is the test split.
        train_fraction: f64,
    },
    /// A random token sequence of length `seq_len` followed by its exact repeat (Olsson et al. 2022).
    Induction {
        /// Size of the random-token vocabulary.
        vocab: usize,
        /// Half the sequence length n: the model sees 2n tokens.
        seq_len: usize,
        /// Shortest repeated block (default n / 2); lengths run over min_repeat..=n.
        #[serde(default)]
        min_repeat: Option<usize>,
        /// Number of sequences in the fixed test split.
        #[serde(default = "default_test_size")]
        test_size: usize,
    },
    /// n random bits then `=`, answer the parity of a hidden k-subset (Barak et al. 2022).
    SparseParity {
        /// Number of input bits n (at most 64).
        n_bits: usize,
        /// Size k of the hidden subset.
        k: usize,
        /// The hidden subset (k distinct bit indices below n); drawn from the seed when absent.
        #[serde(default)]
        subset: Option<Vec<usize>>,
        /// A finite train split of this many examples; absent, every step draws fresh examples.
        #[serde(default)]
        train_size: Option<usize>,
        /// Number of examples in the fixed test split.
        #[serde(default = "default_test_size")]
        test_size: usize,
    },
    /// Tokens `a b =`, answer a∘b in a finite group (Chughtai et al. 2023).
    GroupComposition {
        /// `C<n>` cyclic, `D<n>` dihedral (order 2n), `S<n>` symmetric, `A<n>` alternating.
        group: crate::tasks::GroupKind,
        /// Fraction of all |G|² pairs that goes to the train split; the rest is the test split.
        train_fraction: f64,
    },
    /// Sequences from per-sequence random Markov chains, loss on every next token (Edelman et al. 2024).
    MarkovChains {
        /// Number of states (the vocabulary).
        states: usize,
        /// Tokens per sequence.
        seq_len: usize,
        /// Concentration of the symmetric Dirichlet prior over each transition-matrix row.
        #[serde(default = "default_alpha")]
        alpha: f64,
        /// Number of sequences in the fixed test split.
        #[serde(default = "default_test_size")]
        test_size: usize,
    },
    /// Key-value pairs in context, then queries of their keys; answer each query's value (Arora et al. 2023).
    AssociativeRecall {
        /// Key tokens (0..keys).
        keys: usize,
        /// Value tokens (keys..keys + values).
        values: usize,
        /// Key-value pairs in the context (distinct keys and values; at most min(keys, values)).
        pairs: usize,
        /// Queries after the context (distinct keys of the context; at most pairs).
        queries: usize,
        /// Number of sequences in the fixed test split.
        #[serde(default = "default_test_size")]
        test_size: usize,
    },
}

impl TaskConfig {
    /// Whether the task draws fresh training examples every step (then a batch size is required).
    pub fn is_stream(&self) -> bool {
        match self {
            TaskConfig::Induction { .. }
            | TaskConfig::MarkovChains { .. }
            | TaskConfig::AssociativeRecall { .. } => true,
            TaskConfig::SparseParity { train_size, .. } => train_size.is_none(),
            TaskConfig::Sequences { .. }
            | TaskConfig::ModularAddition { .. }
            | TaskConfig::GroupComposition { .. } => false,
        }
    }
}

fn default_test_size() -> usize {
    512
}

fn default_alpha() -> f64 {
    1.0
}

/// A binary-operation task's train fraction over `n` elements: in (0, 1), leaving both splits non-empty.
fn check_train_fraction(train_fraction: f64, n: usize) -> Result<(), ConfigError> {
    if !(train_fraction > 0.0 && train_fraction < 1.0) {
        return invalid(
            "task.train_fraction",
            format!("must be in (0, 1), got {train_fraction}"),
        );
    }
    let n_train = (train_fraction * (n * n) as f64).round() as usize;
    if n_train == 0 || n_train >= n * n {
        return invalid(
            "task.train_fraction",
            format!(
                "gives an empty train or test split ({n_train} of {} pairs)",
                n * n
            ),
        );
    }
    Ok(())
}

fn positive_test_size(test_size: usize) -> Result<(), ConfigError> {
    if test_size == 0 {
        return invalid(
            "task.test_size",
            "must be positive (the test split is empty)".into(),
        );
    }
    Ok(())
}

impl TryFrom<TaskConfig> for Checked<TaskConfig> {
    type Error = ConfigError;

    /// The task's own parameters (p, train fraction, vocabulary, lengths).
    fn try_from(task: TaskConfig) -> Result<Self, ConfigError> {
        match &task {
            // The dataset is checked when it is read (`tasks::build`), before a run is created.
            TaskConfig::Sequences { path } => {
                if path.as_os_str().is_empty() {
                    return invalid("task.path", "is empty; name the dataset directory".into());
                }
            }
            TaskConfig::ModularAddition { p, train_fraction } => {
                if *p < 2 {
                    return invalid("task.p", format!("must be at least 2, got {p}"));
                }
                check_train_fraction(*train_fraction, *p)?;
            }
            TaskConfig::Induction {
                vocab,
                seq_len,
                min_repeat,
                test_size,
            } => {
                if *vocab < 2 {
                    return invalid("task.vocab", format!("must be at least 2, got {vocab}"));
                }
                if *seq_len < 3 {
                    return invalid("task.seq_len", format!("must be at least 3, got {seq_len}"));
                }
                let min_repeat = min_repeat.unwrap_or(seq_len / 2);
                if min_repeat < 3 || min_repeat > *seq_len {
                    return invalid(
                        "task.min_repeat",
                        format!("must be in 3..=seq_len ({seq_len}), got {min_repeat}"),
                    );
                }
                positive_test_size(*test_size)?;
            }
            TaskConfig::SparseParity {
                n_bits,
                k,
                subset,
                train_size,
                test_size,
            } => {
                if !(2..=64).contains(n_bits) {
                    return invalid("task.n_bits", format!("must be in 2..=64, got {n_bits}"));
                }
                if *k == 0 || k > n_bits {
                    return invalid(
                        "task.k",
                        format!("must be in 1..=n_bits ({n_bits}), got {k}"),
                    );
                }
                if let Some(subset) = subset {
                    let mut sorted = subset.clone();
                    sorted.sort_unstable();
                    sorted.dedup();
                    if sorted.len() != *k || sorted.iter().any(|i| i >= n_bits) {
                        return invalid(
                            "task.subset",
                            format!(
                                "must be k = {k} distinct bit indices below n_bits = {n_bits}, got {subset:?}"
                            ),
                        );
                    }
                }
                if *train_size == Some(0) {
                    return invalid(
                        "task.train_size",
                        "must be positive (or absent for fresh examples every step)".into(),
                    );
                }
                positive_test_size(*test_size)?;
            }
            TaskConfig::GroupComposition {
                group,
                train_fraction,
            } => {
                let order = group.order();
                if order > crate::tasks::group::MAX_ORDER {
                    return invalid(
                        "task.group",
                        format!(
                            "{group} has {order} elements; at most {} are supported (the dataset is all pairs)",
                            crate::tasks::group::MAX_ORDER
                        ),
                    );
                }
                check_train_fraction(*train_fraction, order)?;
            }
            TaskConfig::MarkovChains {
                states,
                seq_len,
                alpha,
                test_size,
            } => {
                if *states < 2 {
                    return invalid("task.states", format!("must be at least 2, got {states}"));
                }
                if *seq_len < 3 {
                    return invalid("task.seq_len", format!("must be at least 3, got {seq_len}"));
                }
                if !(alpha.is_finite() && *alpha > 0.0) {
                    return invalid("task.alpha", format!("must be positive, got {alpha}"));
                }
                positive_test_size(*test_size)?;
            }
            TaskConfig::AssociativeRecall {
                keys,
                values,
                pairs,
                queries,
                test_size,
            } => {
                if *pairs == 0 || pairs > keys.min(values) {
                    return invalid(
                        "task.pairs",
                        format!(
                            "must be in 1..=min(keys, values) = {} (keys and values are distinct per sequence), got {pairs}",
                            keys.min(values)
                        ),
                    );
                }
                if *queries == 0 || queries > pairs {
                    return invalid(
                        "task.queries",
                        format!("must be in 1..=pairs ({pairs}), got {queries}"),
                    );
                }
                positive_test_size(*test_size)?;
            }
        }
        Ok(Checked(task))
    }
}
