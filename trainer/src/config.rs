//! The run configuration: one TOML file, parsed strictly (unknown keys are errors) and validated once into
//! types the rest of the code trusts.
// `!(x > 0.0)` on purpose: it also rejects NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::ConfigError;

/// A whole run: what to learn, with which model, how to train and what to analyze.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub task: TaskConfig,
    pub model: ModelConfig,
    pub optim: OptimConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub analysis: AnalysisConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    #[serde(default)]
    pub windows: WindowsConfig,
    #[serde(default)]
    pub llc: LlcConfig,
    #[serde(default)]
    pub interventions: InterventionsConfig,
    #[serde(default)]
    pub decision: DecisionConfig,
    #[serde(default)]
    pub slurm: SlurmConfig,
}

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

/// Activation function of the MLP, named as TransformerLens names it (`act_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    /// The exact (erf) GELU, TransformerLens `"gelu"`.
    Gelu,
}

/// Normalization before each sublayer and before the unembedding (TransformerLens `normalization_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    None,
    /// LayerNorm with learned weight and bias, eps 1e-5 (TransformerLens `"LN"`).
    Ln,
}

/// The transformer's shape; `n_ctx` and the vocabulary come from the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    /// Defaults to `d_model / n_heads`.
    #[serde(default)]
    pub d_head: Option<usize>,
    /// Ignored (and may be absent) when `attn_only`.
    #[serde(default)]
    pub d_mlp: Option<usize>,
    #[serde(default = "default_act")]
    pub act_fn: Activation,
    #[serde(default = "default_norm")]
    pub normalization: Normalization,
    #[serde(default)]
    pub attn_only: bool,
    /// Standard deviation of the weight init is `init_range / sqrt(d_model)`; TransformerLens uses 0.8.
    #[serde(default = "default_init_range")]
    pub init_range: f64,
}

fn default_act() -> Activation {
    Activation::Relu
}
fn default_norm() -> Normalization {
    Normalization::None
}
fn default_init_range() -> f64 {
    0.8
}

/// Learning-rate schedule after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    Constant,
    /// Cosine decay from `lr` to `lr * min_lr_ratio` at the last step.
    Cosine,
}

/// AdamW (decoupled weight decay, Loshchilov & Hutter 2019), as `torch.optim.AdamW`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub lr: f64,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Applied to every parameter, as in Nanda et al.'s grokking setup.
    #[serde(default)]
    pub weight_decay: f64,
    /// Linear warmup from 0 to `lr` over this many steps.
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default = "default_schedule")]
    pub schedule: LrSchedule,
    #[serde(default)]
    pub min_lr_ratio: f64,
    /// Clip the global gradient norm (all parameters together, as `torch.nn.utils.clip_grad_norm_`).
    #[serde(default)]
    pub grad_clip: Option<f64>,
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_schedule() -> LrSchedule {
    LrSchedule::Constant
}

/// Steps, batches, seed and the checkpoint schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub steps: u64,
    /// Examples per step; absent means full batch (the whole train split every step).
    #[serde(default)]
    pub batch_size: Option<usize>,
    pub seed: u64,
    /// Write the training loss to `metrics/train.jsonl` every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    pub checkpoints: CheckpointConfig,
}

fn default_log_every() -> u64 {
    10
}

/// When to save: step 0, powers of two up to `log_spaced_until`, every `every` steps, and the last step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    pub every: u64,
    #[serde(default)]
    pub log_spaced_until: u64,
}

/// Every-checkpoint analysis settings (used with `--analyze`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Number of examples in the fixed probe set (capped at the task's pool size).
    #[serde(default = "default_probe_size")]
    pub probe_size: usize,
    #[serde(default)]
    pub probe_seed: u64,
    /// Use this probe-set file (from `formation probe-set`) instead of generating one.
    #[serde(default)]
    pub probe_set: Option<std::path::PathBuf>,
    /// Folds of the residual probes' cross-validation.
    #[serde(default = "default_probe_folds")]
    pub probe_folds: usize,
    /// Ridge strength of the residual probes, relative to the features' mean variance (λ = alpha·tr(XᵀX)/d).
    #[serde(default = "default_probe_alpha")]
    pub probe_alpha: f64,
    /// Probe examples the mean-ablation forwards run on (evenly spaced through the probe set; the means they
    /// substitute are still over every example). Absent: all of them.
    #[serde(default)]
    pub ablation_size: Option<usize>,
    /// What `analysis/activations.h5` stores per checkpoint beyond what the dynamics always need.
    #[serde(default)]
    pub store: Vec<StoreItem>,
    /// Capacity of the bounded channel to the sidecar, in checkpoints; the trainer waits when it is full.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// What a failing analysis does to training.
    #[serde(default)]
    pub on_error: OnError,
}

/// One kind of array stored per checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreItem {
    /// Logits at the answer positions: [example, answer, d_vocab_out].
    LogitsAtAnswers,
    /// Every hook point in full (large).
    AllHooks,
}

/// Whether an analysis failure stops training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Training stops with the analysis error.
    #[default]
    Stop,
    /// Training goes on without analysis after a loud warning.
    Warn,
}

fn default_probe_size() -> usize {
    512
}
fn default_probe_folds() -> usize {
    5
}
fn default_probe_alpha() -> f64 {
    1e-2
}
fn default_queue() -> usize {
    4
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            probe_size: default_probe_size(),
            probe_seed: 0,
            probe_set: None,
            probe_folds: default_probe_folds(),
            probe_alpha: default_probe_alpha(),
            ablation_size: None,
            store: vec![],
            queue: default_queue(),
            on_error: OnError::Stop,
        }
    }
}

/// The birth-window detector's thresholds (`formation windows`; method in `docs/windows.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    /// A checkpoint is flagged where the change rate stands out by more than `k` robust noise scales.
    pub k: f64,
    /// A flagged stretch extends to the neighbouring checkpoints whose change rate, of the same sign, still
    /// stands out by more than `k_extend` noise scales (hysteresis), so a rise spread over several checkpoints
    /// is one window with its whole change rather than its steepest point.
    pub k_extend: f64,
    /// Smallest Gaussian smoothing width, in checkpoints.
    pub min_sigma: f64,
    /// Smoothing width as a fraction of the checkpoint index (wider where checkpoints are dense in log-step).
    pub smooth_fraction: f64,
    /// Half-width, in checkpoints, of the running median that is the change rate's local baseline.
    pub baseline_halfwidth: usize,
    /// A flagged stretch counts only if the series moved by at least this fraction of its range across it.
    pub min_change: f64,
    /// Series whose scale (range, or half the largest magnitude) stays below this are not examined: in the units
    /// of the row (fractions, nats, logits), a metric that never moves by 0.1 has no birth to find.
    pub min_scale: f64,
    /// The essential-dynamics trajectory is flagged where it turns by more than this many degrees.
    pub turn_degrees: f64,
    /// Principal components of the output trajectory the turning trigger follows.
    pub components: usize,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        Self {
            k: 6.0,
            k_extend: 3.0,
            min_sigma: 1.0,
            smooth_fraction: 0.05,
            baseline_halfwidth: 8,
            min_change: 0.2,
            min_scale: 0.1,
            turn_degrees: 45.0,
            components: 3,
        }
    }
}

/// One targeted intervention (`formation intervene --kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InterventionKind {
    LogitLens,
    Patching,
    PathPatching,
    Fourier,
    Neurons,
    Llc,
}

/// A name that is not an intervention kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an intervention kind (logit-lens, patching, path-patching, fourier, neurons, llc)"
)]
pub struct UnknownIntervention(pub String);

impl std::str::FromStr for InterventionKind {
    type Err = UnknownIntervention;

    /// The config's names (`logit-lens`, `path-patching`, …).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(text.to_owned()))
            .map_err(|_| UnknownIntervention(text.to_owned()))
    }
}

/// Which interventions run where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterventionsConfig {
    /// Run at every checkpoint of a window replay (`formation replay`), after the replay verified itself.
    pub in_windows: Vec<InterventionKind>,
}

impl Default for InterventionsConfig {
    fn default() -> Self {
        Self {
            in_windows: vec![InterventionKind::LogitLens, InterventionKind::Patching],
        }
    }
}

/// The SGLD sampler of the local learning coefficient (`formation intervene --kind llc`), devinterp's
/// estimator (Lau et al. 2023).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlcConfig {
    /// Step size ε.
    pub epsilon: f64,
    /// Localization strength γ (pull back to the checkpoint's weights).
    pub gamma: f64,
    /// n·β; absent: n / ln n (devinterp's default β = 1/ln n), n = the training examples the loss is over.
    pub nbeta: Option<f64>,
    pub chains: usize,
    /// Draws kept per chain.
    pub draws: usize,
    /// Steps discarded at the start of each chain.
    pub burn_in: usize,
    pub seed: u64,
}

impl Default for LlcConfig {
    fn default() -> Self {
        Self {
            epsilon: 1e-4,
            gamma: 100.0,
            nbeta: None,
            chains: 4,
            draws: 200,
            burn_in: 0,
            seed: 0,
        }
    }
}

/// Thresholds of the decision rule for starting deep circuit work (`formation compare`; the reasoning behind
/// each default is in docs/compare.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionConfig {
    /// Behavior converged: the lowest test accuracy over the last `converged_span` of training is at least this.
    pub min_accuracy: f64,
    /// …and it moved by at most this much (max − min) over that span.
    pub max_accuracy_change: f64,
    /// Fraction of the training steps, at the end, over which convergence is judged.
    pub converged_span: f64,
    /// Replicated: at least this many seeds of one config, each with a birth window…
    pub min_seeds: usize,
    /// …whose birth steps all lie within this factor of the seeds' median birth step.
    pub birth_step_factor: f64,
    /// Localized: at most `max_components` heads / MLP blocks carry this share of the summed ablation effect.
    pub ablation_share: f64,
    pub max_components: usize,
    /// Stabilized: from the end of the birth window to the last checkpoint, the lowest linear CKA of the
    /// residual stream (over boundaries × key positions) is at least this…
    pub min_cka_to_final: f64,
    /// …and the median cosine between the probe directions there and at the last checkpoint is at least this,
    /// over the probes whose final selectivity is at least `min_probe_selectivity`.
    pub min_probe_cosine: f64,
    pub min_probe_selectivity: f64,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        Self {
            min_accuracy: 0.9,
            max_accuracy_change: 0.02,
            converged_span: 0.2,
            min_seeds: 3,
            birth_step_factor: 1.5,
            ablation_share: 0.8,
            max_components: 3,
            min_cka_to_final: 0.9,
            min_probe_cosine: 0.8,
            min_probe_selectivity: 0.1,
        }
    }
}

/// Resources of the Slurm array script `formation replicate|screen --slurm` writes (flags override them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmConfig {
    /// `--partition`; absent: the cluster's default partition.
    pub partition: Option<String>,
    /// `--cpus-per-task`.
    pub cpus_per_task: usize,
    /// `--mem`, in Slurm's syntax (`4G`).
    pub mem: String,
    /// `--time`, in Slurm's syntax (`01:00:00`).
    pub time: String,
    /// At most this many array tasks at once (`--array=0-N%K`); absent: no limit.
    pub max_parallel: Option<usize>,
    /// Further `#SBATCH` lines, verbatim (`--account=…`, `--qos=…`).
    pub extra: Vec<String>,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            partition: None,
            cpus_per_task: 2,
            mem: "4G".into(),
            time: "01:00:00".into(),
            max_parallel: None,
            extra: vec![],
        }
    }
}

/// Full-split evaluation cadence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate the full splits at checkpoints that are multiples of this many steps (0: only at the last step).
    #[serde(default)]
    pub every: u64,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|e| e.with_path(path))?;
        // A dataset path is relative to the config file; the frozen config keeps it absolute, so a run's own
        // config.toml names the same dataset wherever it is read from.
        if let TaskConfig::Sequences { path: data } = &mut config.task
            && data.is_relative()
        {
            let base = path.parent().unwrap_or(Path::new("."));
            let joined = base.join(&*data);
            *data = joined
                .canonicalize()
                .or_else(|_| std::path::absolute(&joined))
                .unwrap_or(joined);
        }
        Ok(config)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: None,
            message: e.message().to_owned(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The canonical TOML text of this config (what is frozen into the run directory).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// This config with one value changed. `key` is a dotted path (`optim.lr`, `train.checkpoints.every`);
    /// `value` is a TOML value (`1e-3`, `true`, `"gelu"`; a bare word is taken as a string). An integer given for
    /// a float field becomes a float. The result is checked like a loaded config (unknown keys, ranges).
    pub fn with_override(&self, key: &str, value: &str) -> Result<Config, ConfigError> {
        let invalid = |why: &str| ConfigError::Invalid {
            path: None,
            field: key.to_owned(),
            why: why.to_owned(),
        };
        let mut root = toml::Value::try_from(self).map_err(|e| invalid(&e.to_string()))?;
        let parts: Vec<&str> = key.split('.').collect();
        let (leaf, sections) = parts.split_last().ok_or_else(|| invalid("is empty"))?;
        let mut table = root
            .as_table_mut()
            .ok_or_else(|| invalid("is not a table"))?;
        for section in sections {
            table = table
                .get_mut(*section)
                .and_then(toml::Value::as_table_mut)
                .ok_or_else(|| invalid(&format!("names no config section (`{section}`)")))?;
        }
        let given = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_owned()));
        let new = match (table.get(*leaf), given) {
            (Some(toml::Value::Float(_)), toml::Value::Integer(i)) => toml::Value::Float(i as f64),
            (_, given) => given,
        };
        table.insert((*leaf).to_owned(), new);
        let text = toml::to_string(&root).map_err(|e| invalid(&e.to_string()))?;
        Config::parse(&text)
    }

    /// Every section validates itself ([`Validate`]); what spans sections is checked here.
    fn validate(&self) -> Result<(), ConfigError> {
        self.task.validate()?;
        self.model.validate()?;
        self.optim.validate()?;
        self.train.validate()?;
        self.analysis.validate()?;
        self.windows.validate()?;
        self.llc.validate()?;
        self.decision.validate()?;
        self.slurm.validate()?;
        if self.task.is_stream() && self.train.batch_size.is_none() {
            return invalid(
                "train.batch_size",
                "is required for a task that draws fresh examples every step (its train stream is unbounded)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn d_head(&self) -> usize {
        self.model
            .d_head
            .unwrap_or(self.model.d_model / self.model.n_heads)
    }
}

/// A config section that checks its own values (ranges, non-empty fields); [`Config::parse`] runs every
/// section's check, then the checks that span sections.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// The error for `field` (a dotted config path) with the reason.
fn invalid(field: &str, why: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        path: None,
        field: field.to_owned(),
        why,
    })
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

impl Validate for TaskConfig {
    /// The task's own parameters (p, train fraction, vocabulary, lengths).
    fn validate(&self) -> Result<(), ConfigError> {
        match self {
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
        Ok(())
    }
}

impl Validate for ModelConfig {
    /// Layer, width and head counts, and the initialization range.
    fn validate(&self) -> Result<(), ConfigError> {
        let m = self;
        if m.n_layers == 0 {
            return invalid("model.n_layers", "must be at least 1".into());
        }
        if m.d_model == 0 || m.n_heads == 0 {
            return invalid(
                "model.d_model",
                "d_model and n_heads must be positive".into(),
            );
        }
        if m.d_head.is_none() && !m.d_model.is_multiple_of(m.n_heads) {
            return invalid(
                "model.d_model",
                format!(
                    "must be divisible by n_heads ({} % {} != 0) or d_head must be given",
                    m.d_model, m.n_heads
                ),
            );
        }
        if m.d_head == Some(0) {
            return invalid("model.d_head", "must be positive".into());
        }
        if !m.attn_only && m.d_mlp.unwrap_or(0) == 0 {
            return invalid(
                "model.d_mlp",
                "must be positive unless attn_only = true".into(),
            );
        }
        if !(m.init_range > 0.0) {
            return invalid(
                "model.init_range",
                format!("must be positive, got {}", m.init_range),
            );
        }
        Ok(())
    }
}

impl Validate for OptimConfig {
    /// Learning rate, AdamW constants, schedule bounds and clipping.
    fn validate(&self) -> Result<(), ConfigError> {
        let o = self;
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            return invalid("optim.lr", format!("must be positive, got {}", o.lr));
        }
        for (name, beta) in [("optim.beta1", o.beta1), ("optim.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return invalid(name, format!("must be in [0, 1), got {beta}"));
            }
        }
        if !(o.eps > 0.0) {
            return invalid("optim.eps", format!("must be positive, got {}", o.eps));
        }
        if !(o.weight_decay >= 0.0) {
            return invalid(
                "optim.weight_decay",
                format!("must be non-negative, got {}", o.weight_decay),
            );
        }
        if !(0.0..=1.0).contains(&o.min_lr_ratio) {
            return invalid(
                "optim.min_lr_ratio",
                format!("must be in [0, 1], got {}", o.min_lr_ratio),
            );
        }
        if let Some(c) = o.grad_clip
            && !(c > 0.0)
        {
            return invalid("optim.grad_clip", format!("must be positive, got {c}"));
        }
        Ok(())
    }
}

impl Validate for TrainConfig {
    /// Steps, batch, logging and checkpoint cadence.
    fn validate(&self) -> Result<(), ConfigError> {
        let t = self;
        if t.steps == 0 {
            return invalid("train.steps", "must be at least 1".into());
        }
        if t.batch_size == Some(0) {
            return invalid(
                "train.batch_size",
                "must be positive (omit it for full batch)".into(),
            );
        }
        if t.log_every == 0 {
            return invalid("train.log_every", "must be at least 1".into());
        }
        if t.checkpoints.every == 0 {
            return invalid("train.checkpoints.every", "must be at least 1".into());
        }
        Ok(())
    }
}

impl Validate for AnalysisConfig {
    /// Probe-set size, folds, ablation subset, ridge penalty and channel capacity.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.probe_size == 0 {
            return invalid("analysis.probe_size", "must be positive".into());
        }
        if self.probe_folds < 2 || self.probe_folds > self.probe_size {
            return invalid(
                "analysis.probe_folds",
                "must be at least 2 and at most analysis.probe_size".into(),
            );
        }
        if self.ablation_size == Some(0) {
            return invalid(
                "analysis.ablation_size",
                "must be positive (or absent for all)".into(),
            );
        }
        if !(self.probe_alpha.is_finite() && self.probe_alpha > 0.0) {
            return invalid("analysis.probe_alpha", "must be a positive number".into());
        }
        if self.queue == 0 {
            return invalid("analysis.queue", "must be at least 1".into());
        }
        Ok(())
    }
}

impl Validate for WindowsConfig {
    /// The detector's thresholds.
    fn validate(&self) -> Result<(), ConfigError> {
        let w = self;
        if !(w.k > 0.0 && w.min_sigma > 0.0 && w.smooth_fraction >= 0.0 && w.min_change >= 0.0) {
            return invalid(
                "windows",
                "k and min_sigma must be positive, smooth_fraction and min_change not negative"
                    .into(),
            );
        }
        if !(w.k_extend > 0.0 && w.k_extend <= w.k) {
            return invalid(
                "windows.k_extend",
                format!("must be positive and at most k ({})", w.k),
            );
        }
        if !(w.turn_degrees > 0.0 && w.turn_degrees < 180.0) || w.components == 0 {
            return invalid(
                "windows",
                "turn_degrees must be in (0, 180) and components at least 1".into(),
            );
        }
        Ok(())
    }
}

impl Validate for LlcConfig {
    /// The SGLD sampler's settings.
    fn validate(&self) -> Result<(), ConfigError> {
        let l = self;
        if !(l.epsilon > 0.0 && l.gamma >= 0.0 && l.nbeta.is_none_or(|b| b > 0.0))
            || l.chains == 0
            || l.draws == 0
        {
            return invalid(
                "llc",
                "epsilon and nbeta must be positive, gamma not negative, chains and draws at least 1".into(),
            );
        }
        Ok(())
    }
}

impl Validate for DecisionConfig {
    /// The decision rule's thresholds.
    fn validate(&self) -> Result<(), ConfigError> {
        let d = self;
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        if !(unit(d.min_accuracy)
            && unit(d.max_accuracy_change)
            && d.converged_span > 0.0
            && d.converged_span <= 1.0
            && d.ablation_share > 0.0
            && d.ablation_share <= 1.0
            && unit(d.min_cka_to_final)
            && d.min_probe_cosine >= -1.0
            && d.min_probe_cosine <= 1.0
            && d.min_probe_selectivity.is_finite())
        {
            return invalid(
                "decision",
                "accuracies, shares, span and CKA must lie in [0, 1] (span and share above 0), the cosine in [-1, 1]".into(),
            );
        }
        if d.min_seeds == 0 || d.max_components == 0 || !(d.birth_step_factor >= 1.0) {
            return invalid(
                "decision",
                "min_seeds and max_components must be at least 1, birth_step_factor at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

impl Validate for SlurmConfig {
    /// The Slurm resources.
    fn validate(&self) -> Result<(), ConfigError> {
        let s = self;
        if s.cpus_per_task == 0
            || s.max_parallel == Some(0)
            || s.mem.is_empty()
            || s.time.is_empty()
        {
            return invalid(
                "slurm",
                "cpus_per_task and max_parallel must be at least 1, mem and time not empty".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CI: &str = include_str!("../../examples/ci.toml");

    #[test]
    fn example_ci_config_parses() {
        let c = Config::parse(CI).unwrap();
        assert_eq!(
            Config::parse(&c.to_toml()).unwrap(),
            c,
            "canonical TOML round-trips"
        );
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = Config::parse(&CI.replace("[model]", "[model]\nwidth = 3")).unwrap_err();
        assert!(err.to_string().contains("width"), "{err}");
    }

    #[test]
    fn d_model_not_divisible_by_heads_is_rejected() {
        let text = CI.replace("n_heads = 4", "n_heads = 3");
        let err = Config::parse(&text).unwrap_err();
        assert!(err.to_string().contains("divisible"), "{err}");
    }
}
