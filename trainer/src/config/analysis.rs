//! The analysis sections: `[analysis]` (every checkpoint), `[windows]`, `[interventions]`, `[llc]` and
//! `[decision]`.

use serde::{Deserialize, Serialize};

use super::{Checked, invalid};
use crate::error::ConfigError;

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
    /// Checkpoints that wait in the bounded channel while the sidecar works on one; the trainer waits when it is
    /// full.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// What a failing analysis does to training.
    #[serde(default)]
    pub on_error: OnError,
    /// Also write the rows' headline scalars as TensorBoard event files under `tensorboard/`.
    #[serde(default)]
    pub tensorboard: bool,
    /// For a task with a Fourier grid (modular addition) and a model with MLPs: one more forward over all p²
    /// inputs per checkpoint, and Nanda et al.'s progress measures in the row (`behavior.progress.*`:
    /// restricted and excluded loss, …), so that the birth-window detector sees circuit formation.
    #[serde(default)]
    pub fourier_progress: bool,
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
/// Sixteen: only the log-spaced burst of early checkpoints (steps 0, 1, 2, 4, 8, …, eight or nine of them before
/// the linear schedule's first) outruns the sidecar, and with room for all of them the trainer never waits. A
/// waiting checkpoint is only its weights (under a megabyte on the examples), and the sidecar returns its freed
/// pages after every metric family, so a shorter queue lowers no peak: sparse parity, 400 steps, trainer waits
/// 14.0 → 0.1 ms per checkpoint from 4 to 16, peak RSS 171–173 → 150–168 MiB (BENCHMARKS.md).
fn default_queue() -> usize {
    16
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
            tensorboard: false,
            fourier_progress: false,
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
    /// A slow change (a steady rise longer than the baseline's window, invisible to `k`) counts if the series
    /// moved by at least this fraction of its scale across it ...
    pub slow_change: f64,
    /// ... within at most this fraction of the run's log-step range (a trend over most of the run is no birth).
    pub slow_span: f64,
    /// Series whose scale (range, or half the largest magnitude) stays below this are not examined: in the units
    /// of the row (fractions, nats, logits), a metric that never moves by 0.1 has no birth to find.
    pub min_scale: f64,
    /// The essential-dynamics trajectory is flagged where it turns by more than this many degrees.
    pub turn_degrees: f64,
    /// Principal components of the output trajectory the turning trigger follows.
    pub components: usize,
    /// Two peaks of trigger activity are two stages (two windows) when the activity between them falls below
    /// this fraction of the lower peak; otherwise they are one change.
    pub split_depth: f64,
    /// A window is the stretch around its stage's activity peak where the activity stays at or above this
    /// fraction of the peak (widened by one checkpoint on each side): where its triggers change together.
    pub core_level: f64,
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
            slow_change: 0.5,
            slow_span: 0.25,
            min_scale: 0.1,
            turn_degrees: 45.0,
            components: 3,
            split_depth: 0.5,
            core_level: 0.3,
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
    Features,
}

impl InterventionKind {
    /// The name its report is written under: `RUN_DIR/interventions/step_S/{file_stem}.json` and `.h5`.
    pub fn file_stem(self) -> &'static str {
        match self {
            Self::LogitLens => "logit_lens",
            Self::Patching => "patching",
            Self::PathPatching => "path_patching",
            Self::Fourier => "fourier",
            Self::Neurons => "neurons",
            Self::Llc => "llc",
            Self::Features => "features",
        }
    }
}

/// A name that is not an intervention kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an intervention kind (logit-lens, patching, path-patching, fourier, neurons, llc, features)"
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
    /// `formation llc` (the trajectory over saved checkpoints) spends at most this many SGLD steps per training
    /// step of the run: fewer draws first, then fewer checkpoints (docs/windows.md).
    pub trajectory_budget: f64,
    /// With `train --analyze`: the trajectory estimated in the training loop, on the live weights, within this
    /// budget (SGLD steps per training step, planned like `trajectory_budget`); absent: not in the loop.
    pub in_loop: Option<f64>,
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
            trajectory_budget: 2.0,
            in_loop: None,
        }
    }
}

/// The sparse dictionary of `formation intervene --kind features` (a TopK sparse autoencoder, Gao et al. 2024,
/// on the residual stream at the task's key positions; docs/features.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturesConfig {
    /// The residual-stream boundary (`blocks.{l}.hook_resid_pre|mid|post`); absent: the last block's
    /// `hook_resid_post`, where everything the model computed is available to the unembedding.
    pub boundary: Option<String>,
    /// Latents per residual dimension (the dictionary has `expansion × d_model` latents).
    pub expansion: usize,
    /// Latents active per input.
    pub k: usize,
    /// Examples drawn from the task to train on (each gives one activation per key position); the whole input
    /// space where the task has fewer.
    pub inputs: usize,
    /// Optimizer steps and inputs per step.
    pub steps: usize,
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    pub seed: u64,
    /// A latent firing on more than this fraction of the probe set's activations counts as dense.
    pub dense_above: f64,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        Self {
            boundary: None,
            expansion: 4,
            k: 8,
            inputs: 4096,
            steps: 2000,
            batch_size: 256,
            lr: 3e-3,
            seed: 0,
            dense_above: 0.5,
        }
    }
}

impl TryFrom<FeaturesConfig> for Checked<FeaturesConfig> {
    type Error = ConfigError;

    /// The dictionary's own settings (its boundary and size against the model: [`super::Config`]).
    fn try_from(f: FeaturesConfig) -> Result<Self, ConfigError> {
        if f.expansion == 0 || f.k == 0 || f.inputs == 0 || f.steps == 0 || f.batch_size == 0 {
            return invalid(
                "features",
                "expansion, k, inputs, steps and batch_size must be at least 1".into(),
            );
        }
        if !(f.lr > 0.0 && f.lr.is_finite() && (0.0..=1.0).contains(&f.dense_above)) {
            return invalid(
                "features",
                format!(
                    "lr must be positive and dense_above in [0, 1], got {} and {}",
                    f.lr, f.dense_above
                ),
            );
        }
        Ok(Checked(f))
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

impl TryFrom<AnalysisConfig> for Checked<AnalysisConfig> {
    type Error = ConfigError;

    /// Probe-set size, folds, ablation subset, ridge penalty and channel capacity.
    fn try_from(a: AnalysisConfig) -> Result<Self, ConfigError> {
        if a.probe_size == 0 {
            return invalid("analysis.probe_size", "must be positive".into());
        }
        if a.probe_folds < 2 || a.probe_folds > a.probe_size {
            return invalid(
                "analysis.probe_folds",
                "must be at least 2 and at most analysis.probe_size".into(),
            );
        }
        if a.ablation_size == Some(0) {
            return invalid(
                "analysis.ablation_size",
                "must be positive (or absent for all)".into(),
            );
        }
        if !(a.probe_alpha.is_finite() && a.probe_alpha > 0.0) {
            return invalid("analysis.probe_alpha", "must be a positive number".into());
        }
        if a.queue == 0 {
            return invalid("analysis.queue", "must be at least 1".into());
        }
        Ok(Checked(a))
    }
}

impl TryFrom<WindowsConfig> for Checked<WindowsConfig> {
    type Error = ConfigError;

    /// The detector's thresholds.
    fn try_from(w: WindowsConfig) -> Result<Self, ConfigError> {
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
        for (name, level) in [
            ("windows.split_depth", w.split_depth),
            ("windows.core_level", w.core_level),
            ("windows.slow_change", w.slow_change),
            ("windows.slow_span", w.slow_span),
        ] {
            if !(level > 0.0 && level <= 1.0) {
                return invalid(name, format!("must be in (0, 1], got {level}"));
            }
        }
        Ok(Checked(w))
    }
}

impl TryFrom<LlcConfig> for Checked<LlcConfig> {
    type Error = ConfigError;

    /// The SGLD sampler's settings.
    fn try_from(l: LlcConfig) -> Result<Self, ConfigError> {
        if !(l.epsilon > 0.0 && l.gamma >= 0.0 && l.nbeta.is_none_or(|b| b > 0.0))
            || l.chains == 0
            || l.draws == 0
        {
            return invalid(
                "llc",
                "epsilon and nbeta must be positive, gamma not negative, chains and draws at least 1".into(),
            );
        }
        for (field, budget) in [
            ("llc.trajectory_budget", Some(l.trajectory_budget)),
            ("llc.in_loop", l.in_loop),
        ] {
            if let Some(b) = budget
                && !(b > 0.0 && b.is_finite())
            {
                return invalid(field, format!("must be positive, got {b}"));
            }
        }
        Ok(Checked(l))
    }
}

impl TryFrom<DecisionConfig> for Checked<DecisionConfig> {
    type Error = ConfigError;

    /// The decision rule's thresholds.
    fn try_from(d: DecisionConfig) -> Result<Self, ConfigError> {
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
        Ok(Checked(d))
    }
}
