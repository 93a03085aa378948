//! One row of `analysis/checkpoint_metrics.jsonl` (documented field by field in `docs/schema.md`). Nested
//! objects, so `pandas.json_normalize` flattens them into columns like `behavior.accuracy`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use trainer::eval::SplitScore;

use crate::metrics::behavior::Behavior;

/// Version of the row schema and of the analysis file layout.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub schema_version: u32,
    pub run_id: String,
    pub step: u64,
    pub tokens_seen: u64,
    /// Seconds since the training process started (a resumed run restarts this clock).
    pub wall_s: f64,
    /// Learning rate of the update that produced this step (0 at step 0).
    pub lr: f64,
    /// Mean training-batch loss at the last logged step at or before this one.
    pub train_loss: Option<f32>,
    pub behavior: Behavior,
    /// Loss and accuracy per full split, only on evaluation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<BTreeMap<String, SplitScore>>,
    /// Residual-stream probes: boundary (hook name) → key position → target → scores.
    pub residual: BTreeMap<String, serde_json::Value>,
    pub heads: BTreeMap<String, serde_json::Value>,
    pub mlp: BTreeMap<String, serde_json::Value>,
    /// Direct logit attribution of the components that are neither heads nor MLPs, and the measured total.
    pub dla: serde_json::Value,
    pub dynamics: BTreeMap<String, serde_json::Value>,
    pub timing: Timing,
}

/// Where the analysis time went, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Trainer thread: capture forward over the probe set and the copy to host.
    pub capture_ms: f64,
    /// Trainer thread: the mean-ablation forwards.
    pub ablation_ms: f64,
    /// Trainer thread: waiting for room in the bounded channel (backpressure).
    pub queue_ms: f64,
    /// Messages waiting in the channel right after this one was sent (0: the sidecar had already taken it).
    pub queue_depth: usize,
    /// Sidecar thread: metrics and writing this checkpoint's arrays.
    pub sidecar_ms: f64,
    /// Sidecar thread, per metric family (`behavior`, `residual`, `attribution`, `heads`, `mlp`, `dynamics`)
    /// and `store` (the HDF5 write).
    pub families: BTreeMap<String, f64>,
}

/// The finite numeric leaves of a JSON value by dotted path (object keys joined with `.`; keys may themselves
/// contain dots, as hook names do).
pub fn numeric_leaves(value: &serde_json::Value) -> Vec<(String, f64)> {
    let mut out = vec![];
    let mut stack = vec![(String::new(), value)];
    while let Some((path, value)) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let child = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    stack.push((child, v));
                }
            }
            serde_json::Value::Number(x) => {
                if let Some(x) = x.as_f64().filter(|x| x.is_finite()) {
                    out.push((path, x));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    /// A row with every required field and empty metric families, for tests that fill in what they need.
    pub(crate) fn minimal_row_json() -> serde_json::Value {
        serde_json::json!({
            "schema_version": super::SCHEMA_VERSION, "run_id": "r", "step": 0, "tokens_seen": 0,
            "wall_s": 0.0, "lr": 0.0, "train_loss": null,
            "behavior": {"loss": 1.0, "accuracy": 0.0, "logit_margin": 0.0,
                         "per_position_accuracy": {}, "split_accuracy": {}},
            "residual": {}, "heads": {}, "mlp": {}, "dla": {}, "dynamics": {},
            "timing": {"capture_ms": 0.0, "ablation_ms": 0.0, "queue_ms": 0.0, "queue_depth": 0,
                       "sidecar_ms": 0.0, "families": {}}
        })
    }
}
