//! The `[model]` section: the transformer's shape.

use serde::{Deserialize, Serialize};

use super::{Checked, invalid};
use crate::error::ConfigError;

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

impl TryFrom<ModelConfig> for Checked<ModelConfig> {
    type Error = ConfigError;

    /// Layer, width and head counts, and the initialization range.
    fn try_from(m: ModelConfig) -> Result<Self, ConfigError> {
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
        Ok(Checked(m))
    }
}
