//! The `[optim]` and `[train]` sections: the optimizer, steps, batches, seed and checkpoint schedule.

use serde::{Deserialize, Serialize};

use super::{Checked, invalid};
use crate::error::ConfigError;

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

impl TryFrom<OptimConfig> for Checked<OptimConfig> {
    type Error = ConfigError;

    /// Learning rate, AdamW constants, schedule bounds and clipping.
    fn try_from(o: OptimConfig) -> Result<Self, ConfigError> {
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
        Ok(Checked(o))
    }
}

impl TryFrom<TrainConfig> for Checked<TrainConfig> {
    type Error = ConfigError;

    /// Steps, batch, logging and checkpoint cadence.
    fn try_from(t: TrainConfig) -> Result<Self, ConfigError> {
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
        Ok(Checked(t))
    }
}
