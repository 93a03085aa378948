//! Tasks: what the model learns. Each task is one file implementing [`Task`]: its vocabulary, deterministic
//! train/test (and optional OOD) splits from a seed, the answer positions where the loss counts, named key
//! positions and named probe targets.

mod associative_recall;
pub mod dataset;
pub mod group;
mod induction;
mod markov;
mod modular_addition;
mod sequences;
mod sparse_parity;

pub use associative_recall::AssociativeRecall;
pub use group::{Group, GroupComposition, GroupKind};
pub use host::detector::HeadDetector;
pub use host::examples::{Examples, Labeled, ProbeSource, Split};
pub use host::measure::ProgressMeasure;
pub use induction::Induction;
pub use markov::MarkovChains;
pub use modular_addition::ModularAddition;
pub use sequences::Sequences;
pub use sparse_parity::SparseParity;

use crate::config::TaskConfig;
use host::rng::SplitMix64;

/// Every input of a cyclic group task, for the Fourier progress measures: `p` elements, `inputs` the p² token
/// sequences (`a b =`, a-major) and `train` the indices (a·p + b) of the pairs in the train split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FourierGrid {
    pub p: usize,
    pub seq_len: usize,
    pub inputs: Vec<u32>,
    pub train: Vec<usize>,
}

impl FourierGrid {
    /// The grid of a cyclic group of `p` elements whose train split holds the pairs of `train` (`a b =`
    /// examples).
    pub fn of_pairs(p: usize, train: &Examples) -> FourierGrid {
        FourierGrid {
            p,
            seq_len: 3,
            inputs: (0..p * p)
                .flat_map(|i| [(i / p) as u32, (i % p) as u32, p as u32])
                .collect(),
            train: (0..train.n)
                .map(|i| train.token(i, 0) as usize * p + train.token(i, 1) as usize)
                .collect(),
        }
    }
}

/// The train and test pair indices (a · n + b) of a binary-operation task over `n` elements: a seeded
/// shuffle of all n² pairs, of which the first `train_fraction` train.
pub(crate) fn pair_split(
    n: usize,
    train_fraction: f64,
    seed: u64,
    purpose: &str,
) -> (Vec<usize>, Vec<usize>) {
    let mut pairs: Vec<usize> = (0..n * n).collect();
    SplitMix64::derived(seed, purpose, 0).shuffle(&mut pairs);
    let n_train = (train_fraction * (n * n) as f64).round() as usize;
    let test = pairs.split_off(n_train);
    (pairs, test)
}

/// Examples `a b =` (`=` is token n) for pair indices a · n + b, answer `op(a, b)` at `=`.
pub(crate) fn pair_examples(n: usize, pairs: &[usize], op: impl Fn(u32, u32) -> u32) -> Examples {
    let mut tokens = Vec::with_capacity(pairs.len() * 3);
    let mut targets = Vec::with_capacity(pairs.len());
    for &ab in pairs {
        let (a, b) = ((ab / n) as u32, (ab % n) as u32);
        tokens.extend([a, b, n as u32]);
        targets.push(op(a, b));
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

/// Key positions `a`, `b`, `eq` of `a b =` examples.
pub(crate) fn pair_key_positions(examples: &Examples) -> Vec<Labeled> {
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

/// Probe targets `a`, `b` and the answer (named `answer`) of `a b =` examples over `n` elements.
pub(crate) fn pair_targets(examples: &Examples, n: usize, answer: &str) -> Vec<Labeled> {
    let column = |pos: usize| (0..examples.n).map(|i| examples.token(i, pos)).collect();
    vec![
        Labeled {
            name: "a".into(),
            n_classes: n,
            values: column(0),
        },
        Labeled {
            name: "b".into(),
            n_classes: n,
            values: column(1),
        },
        Labeled {
            name: answer.into(),
            n_classes: n,
            values: examples.targets.clone(),
        },
    ]
}

/// The key positions of a repeated token (`repeat`) and of its first occurrence (`first`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepeatKeys {
    pub repeat: &'static str,
    pub first: &'static str,
}

/// What a task declares for the analysis beyond its key positions and targets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Declared {
    /// The in-context copying structure ([`Task::repeat_keys`]).
    pub repeat_keys: Option<RepeatKeys>,
    /// The head detectors ([`Task::head_detectors`]).
    pub head_detectors: Vec<HeadDetector>,
    /// The task's own progress measures ([`Task::progress_measures`]).
    pub progress_measures: Vec<ProgressMeasure>,
    /// Every input of the task's group ([`Task::fourier_grid`]), for the Fourier progress measures
    /// (`[analysis] fourier_progress`).
    pub fourier_grid: Option<FourierGrid>,
}

/// An algorithmic task the model is trained on.
pub trait Task: Send + Sync {
    /// The task's name (`modular-addition`, `induction`; a data-defined task's own name).
    fn name(&self) -> &str;
    /// Input vocabulary size (TransformerLens `d_vocab`).
    fn d_vocab(&self) -> usize;
    /// Output vocabulary size (TransformerLens `d_vocab_out`).
    fn d_vocab_out(&self) -> usize;
    /// Tokens per example (TransformerLens `n_ctx`).
    fn seq_len(&self) -> usize;
    /// Positions whose next-token logits count in the loss, the same for every example.
    fn answer_positions(&self) -> &[usize];
    /// A fixed split, or `None` if the task has no such split.
    fn split(&self, split: Split) -> Option<Examples>;
    /// The examples of training step `step`: a pure function of the seed and the step, so that a resumed run
    /// sees exactly the batches an uninterrupted one would. `None` batch size means the whole train split.
    fn train_batch(&self, step: u64, batch_size: Option<usize>) -> Examples;
    /// Where the data stream stands after `step` steps, for the checkpoint's record.
    fn data_cursor(&self, step: u64, batch_size: Option<usize>) -> DataCursor;
    /// Named key positions of each example (e.g. `a`, `b`, `eq`).
    fn key_positions(&self, examples: &Examples) -> Vec<Labeled>;
    /// Named probe targets of each example (e.g. `a`, `b`, `sum`).
    fn probe_targets(&self, examples: &Examples) -> Vec<Labeled>;
    /// The key position whose token activation patching changes to make a corrupted input (modular addition:
    /// `a`; induction: the first occurrence, `prev_occ`), if the task declares one.
    fn corrupted_key(&self) -> Option<&str>;
    /// Each example's Hewitt & Liang input type for the control task of a target, where the task declares one
    /// (a data-defined task's control column); other targets use the token at the probed key position.
    fn control_types(&self, examples: &Examples) -> Vec<Labeled> {
        let _ = examples;
        vec![]
    }
    /// The SHA-256 of a data-defined task's dataset, pinned in the run manifest.
    fn dataset_sha256(&self) -> Option<&str> {
        None
    }
    /// The task's in-context copying structure, if it has one (declared here so that no analysis code asks
    /// for a task by name): the key position of a repeated token and the key position of its first
    /// occurrence. The analysis takes each probe example's repeat length from them for the in-context score
    /// and the induction score.
    fn repeat_keys(&self) -> Option<RepeatKeys> {
        None
    }
    /// The accuracy the Bayes-optimal predictor reaches on the test split, for a task whose answers are not all
    /// determined by the input (irreducible error, as in-context Markov chains): the decision rule's "behavior
    /// converged" asks for `[decision] min_accuracy` of it (docs/compare.md). `None` (the default): every
    /// answer is determined by its input, or the task does not know; the threshold is `min_accuracy` itself.
    fn attainable_accuracy(&self) -> Option<f64> {
        None
    }
    /// Everything the task declares for the analysis, in one value for the analysis plugin.
    fn declared(&self) -> Declared {
        Declared {
            repeat_keys: self.repeat_keys(),
            head_detectors: self.head_detectors(),
            progress_measures: self.progress_measures(),
            fourier_grid: self.fourier_grid(),
        }
    }
    /// Progress measures the analysis computes for this task at every checkpoint (`behavior.progress.*`):
    /// the Fourier gap of sparse parity, the in-context oracles of Markov chains; none by default.
    fn progress_measures(&self) -> Vec<ProgressMeasure> {
        vec![]
    }
    /// The TransformerLens head detectors every head is scored against (default: all three for a task with a
    /// repeat structure, none otherwise; a data-defined task lists its own).
    fn head_detectors(&self) -> Vec<HeadDetector> {
        if self.repeat_keys().is_some() {
            HeadDetector::ALL.to_vec()
        } else {
            vec![]
        }
    }
    /// The task's Fourier grid, if it has one (modular addition): every input of the group, in the order the
    /// Fourier progress measures (Nanda et al. 2023) index them. Declared here so that no analysis asks for a
    /// task by name.
    fn fourier_grid(&self) -> Option<FourierGrid> {
        None
    }
    /// Candidate examples for a probe set of `size`, each block with the split it came from. The default is
    /// every fixed split; tasks with a generated stream add fresh draws from `seed`.
    fn probe_pool(&self, seed: u64, size: usize) -> Vec<(Split, Examples)> {
        let _ = (seed, size);
        Split::ALL
            .iter()
            .filter_map(|&s| self.split(s).map(|e| (s, e)))
            .collect()
    }
}

/// Every task is a source of probe sets (the part of a task the `probes` crate needs, without the trainer).
impl ProbeSource for dyn Task + '_ {
    fn name(&self) -> &str {
        Task::name(self)
    }
    fn d_vocab(&self) -> usize {
        Task::d_vocab(self)
    }
    fn seq_len(&self) -> usize {
        Task::seq_len(self)
    }
    fn answer_positions(&self) -> &[usize] {
        Task::answer_positions(self)
    }
    fn probe_pool(&self, seed: u64, size: usize) -> Vec<(Split, Examples)> {
        Task::probe_pool(self, seed, size)
    }
    fn key_positions(&self, examples: &Examples) -> Vec<Labeled> {
        Task::key_positions(self, examples)
    }
    fn probe_targets(&self, examples: &Examples) -> Vec<Labeled> {
        Task::probe_targets(self, examples)
    }
    fn control_types(&self, examples: &Examples) -> Vec<Labeled> {
        Task::control_types(self, examples)
    }
}

/// Position of the training data stream: epoch and offset into that epoch's shuffled order for a finite
/// split, or the number of sequences drawn for a generated stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataCursor {
    pub epoch: u64,
    pub offset: u64,
}

/// Builds the task a config names; `seed` fixes its splits and data stream. A data-defined task is read and
/// validated here, so a bad dataset is refused before anything is created.
pub fn build(config: &TaskConfig, seed: u64) -> Result<Box<dyn Task>, dataset::DatasetError> {
    Ok(match *config {
        TaskConfig::Sequences { ref path } => {
            Box::new(Sequences::new(dataset::Dataset::load(path)?, seed))
        }
        TaskConfig::ModularAddition { p, train_fraction } => {
            Box::new(ModularAddition::new(p, train_fraction, seed))
        }
        TaskConfig::Induction {
            vocab,
            seq_len,
            min_repeat,
            test_size,
        } => Box::new(Induction::new(
            vocab,
            seq_len,
            min_repeat.unwrap_or(seq_len / 2),
            test_size,
            seed,
        )),
        TaskConfig::SparseParity {
            n_bits,
            k,
            ref subset,
            train_size,
            test_size,
        } => Box::new(SparseParity::new(
            n_bits,
            k,
            subset.clone(),
            train_size,
            test_size,
            seed,
        )),
        TaskConfig::GroupComposition {
            group,
            train_fraction,
        } => Box::new(GroupComposition::new(group, train_fraction, seed)),
        TaskConfig::MarkovChains {
            states,
            seq_len,
            alpha,
            test_size,
        } => Box::new(MarkovChains::new(states, seq_len, alpha, test_size, seed)),
        TaskConfig::AssociativeRecall {
            keys,
            values,
            pairs,
            queries,
            test_size,
        } => Box::new(AssociativeRecall::new(
            keys, values, pairs, queries, test_size, seed,
        )),
    })
}

/// Minibatch of a finite split: epoch `e` visits the split in its own seeded shuffled order, and step `s`
/// takes the `batch` items that follow the previous step's, running over into the next epoch.
pub(crate) fn finite_minibatch(n: usize, batch: usize, seed: u64, step: u64) -> Vec<usize> {
    EpochOrder::new(n, seed).minibatch(batch, step)
}

/// The shuffled orders behind [`finite_minibatch`], keeping the last epoch's: a split of a million examples is
/// shuffled once per epoch instead of once per step, with the same batches.
pub(crate) struct EpochOrder {
    n: usize,
    seed: u64,
    last: std::sync::Mutex<Option<(u64, std::sync::Arc<Vec<usize>>)>>,
}

impl EpochOrder {
    pub(crate) fn new(n: usize, seed: u64) -> Self {
        Self {
            n,
            seed,
            last: std::sync::Mutex::new(None),
        }
    }

    /// The order of epoch `epoch`: 0..n shuffled by a generator derived from the seed and the epoch.
    fn order(&self, epoch: u64) -> std::sync::Arc<Vec<usize>> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some((e, order)) if *e == epoch => order.clone(),
            _ => {
                let mut order: Vec<usize> = (0..self.n).collect();
                SplitMix64::derived(self.seed, "epoch-order", epoch).shuffle(&mut order);
                let order = std::sync::Arc::new(order);
                *last = Some((epoch, order.clone()));
                order
            }
        }
    }

    /// The indices of step `step`'s minibatch of `batch` examples.
    pub(crate) fn minibatch(&self, batch: usize, step: u64) -> Vec<usize> {
        let n = self.n as u128;
        let start = step as u128 * batch as u128;
        let mut out = Vec::with_capacity(batch);
        let mut current: Option<(u64, std::sync::Arc<Vec<usize>>)> = None;
        for k in 0..batch as u128 {
            let pos = start + k;
            let epoch = (pos / n) as u64;
            if current.as_ref().is_none_or(|(e, _)| *e != epoch) {
                current = Some((epoch, self.order(epoch)));
            }
            let (_, order) = current.as_ref().expect("set above");
            out.push(order[(pos % n) as usize]);
        }
        out
    }
}

/// The fixed train and test splits of a task whose training draws from the finite train split (full batch, or
/// minibatches in seeded epoch order).
pub(crate) struct FiniteSplits {
    pub seed: u64,
    pub train: Examples,
    pub test: Examples,
}

impl FiniteSplits {
    pub(crate) fn split(&self, split: Split) -> Option<Examples> {
        match split {
            Split::Train => Some(self.train.clone()),
            Split::Test => Some(self.test.clone()),
            Split::Ood => None,
        }
    }
    pub(crate) fn train_batch(&self, step: u64, batch_size: Option<usize>) -> Examples {
        match batch_size {
            None => self.train.clone(),
            Some(batch) => {
                self.train
                    .select(&finite_minibatch(self.train.n, batch, self.seed, step))
            }
        }
    }
    pub(crate) fn data_cursor(&self, step: u64, batch_size: Option<usize>) -> DataCursor {
        finite_cursor(self.train.n, batch_size, step)
    }
}

/// Step `step`'s batch of a generated stream: `batch` fresh examples from a generator derived from the seed,
/// the stream's `purpose` and the step (config validation guarantees a batch size for an unbounded stream).
pub(crate) fn stream_batch(
    seed: u64,
    purpose: &str,
    step: u64,
    batch_size: Option<usize>,
    generate: impl FnOnce(&mut SplitMix64, usize) -> Examples,
) -> Examples {
    generate(
        &mut SplitMix64::derived(seed, purpose, step),
        batch_size.unwrap_or(1),
    )
}

/// Where a generated stream stands after `step` steps: the number of examples drawn.
pub(crate) fn stream_cursor(step: u64, batch_size: Option<usize>) -> DataCursor {
    DataCursor {
        epoch: 0,
        offset: step * batch_size.unwrap_or(1) as u64,
    }
}

/// The only fixed split of a generated-stream task is its test split.
pub(crate) fn test_only(test: &Examples, split: Split) -> Option<Examples> {
    match split {
        Split::Test => Some(test.clone()),
        Split::Train | Split::Ood => None,
    }
}

/// Cursor of [`finite_minibatch`] after `step` steps.
pub(crate) fn finite_cursor(n: usize, batch: Option<usize>, step: u64) -> DataCursor {
    let batch = batch.unwrap_or(n) as u128;
    let pos = step as u128 * batch;
    DataCursor {
        epoch: (pos / n as u128) as u64,
        offset: (pos % n as u128) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_epoch_order_gives_the_batches_of_a_fresh_one_in_any_step_order() {
        let kept = EpochOrder::new(10, 7);
        for step in [0, 1, 2, 9, 3, 3, 0, 25, 4] {
            assert_eq!(
                kept.minibatch(4, step),
                EpochOrder::new(10, 7).minibatch(4, step),
                "step {step}"
            );
        }
    }

    #[test]
    fn minibatches_cover_each_epoch_exactly_once() {
        // 10 items, batch 4: steps 0..5 draw 20 items = two full epochs.
        let mut seen = vec![0; 10];
        for step in 0..5 {
            for i in finite_minibatch(10, 4, 3, step) {
                seen[i] += 1;
            }
        }
        assert_eq!(seen, vec![2; 10]);
        assert_eq!(
            finite_cursor(10, Some(4), 5),
            DataCursor {
                epoch: 2,
                offset: 0
            }
        );
        assert_eq!(
            finite_cursor(10, Some(4), 3),
            DataCursor {
                epoch: 1,
                offset: 2
            }
        );
    }
}
