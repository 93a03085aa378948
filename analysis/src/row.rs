//! One row of `analysis/checkpoint_metrics.jsonl` (documented field by field in `docs/schema.md`). Nested
//! objects, so `pandas.json_normalize` flattens them into columns like `behavior.accuracy`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use trainer::eval::SplitScore;

use crate::metrics::behavior::Behavior;
use crate::metrics::residual::ProbeScore;
use host::hook::HookName;

/// Version of the row schema and of the analysis file layout.
pub const SCHEMA_VERSION: u32 = 2;

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
    #[serde(serialize_with = "host::hook::serialize_by_name")]
    pub residual: Residual,
    /// Every head, keyed by its [`Component`](host::names::Component) (`L1H2`).
    pub heads: BTreeMap<String, HeadRow>,
    /// Every MLP block, keyed by its [`Component`](host::names::Component) (`L0`).
    pub mlp: BTreeMap<String, MlpRow>,
    pub dla: Dla,
    pub dynamics: Dynamics,
    pub timing: Timing,
}

impl Row {
    /// Every finite number of the row's metric families (behavior, eval, residual, heads, mlp, dla, dynamics)
    /// by its dotted path (`heads.L1H0.scores.induction_score`): the one enumeration windows, compare, the
    /// report and the headline deltas select their series from.
    pub fn series(&self) -> Vec<(String, f64)> {
        let families = serde_json::json!({
            "behavior": self.behavior,
            "eval": self.eval,
            "residual": self.residual,
            "heads": self.heads,
            "mlp": self.mlp,
            "dla": self.dla,
            "dynamics": self.dynamics,
        });
        numeric_leaves(&families)
    }
}

// The records below list their fields in alphabetical order: serde writes them in declaration order, and the
// row format has always written these objects' keys sorted (they were JSON maps), so the bytes stay the same.

/// Residual-stream probes: boundary → key position → target → scores.
pub type Residual = BTreeMap<HookName, BTreeMap<String, BTreeMap<String, ProbeScore>>>;

/// One head's metrics (`heads.L{l}H{h}`, documented in `docs/schema.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadRow {
    /// Mean-ablation Δloss (when the ablation forwards ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ablation_dloss: Option<f64>,
    /// Attention mass between key positions, keyed `{from}_to_{to}`.
    pub attn: BTreeMap<String, f64>,
    /// Direct logit attribution.
    pub dla: f64,
    /// Attention entropy at each key position as the query.
    pub entropy: BTreeMap<String, f64>,
    /// K-composition with each earlier head (heads after the first layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k_composition: Option<BTreeMap<String, f64>>,
    /// Output norm at each key position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_norm: Option<BTreeMap<String, f64>>,
    /// The task's head scores (TransformerLens `head_detector` names, the induction score).
    pub scores: BTreeMap<String, f64>,
}

/// One MLP block's metrics (`mlp.L{l}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpRow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ablation_dloss: Option<f64>,
    /// Fraction of active neurons at each key position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_fraction: Option<BTreeMap<String, f64>>,
    /// Direct logit attribution (`null` when it could not be computed).
    pub dla: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_norm: Option<BTreeMap<String, f64>>,
}

/// Direct logit attribution of the components that are neither heads nor MLPs, and the measured total.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dla {
    /// Each block's attention output bias `b_O`, keyed `L{l}`.
    pub attn_bias: BTreeMap<String, f64>,
    pub embed: f64,
    /// The measured mean logit[c] − mean logit; the components sum to it.
    pub logit_diff: f64,
    pub pos_embed: f64,
    /// LayerNorm bias and `b_U` along the logit-difference direction.
    pub unembed_bias: f64,
}

/// What changed since the previous checkpoint, and this checkpoint's own parameter norms and output projection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dynamics {
    /// Linear CKA with the previous checkpoint: boundary → key position → score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cka: Option<BTreeMap<String, BTreeMap<String, f64>>>,
    /// Change of each headline metric, keyed by its dotted path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<BTreeMap<String, f64>>,
    /// A fixed random projection of the probe-set logits at the answer positions.
    #[serde(default)]
    pub output_projection: Vec<f64>,
    /// Frobenius norm of every parameter.
    #[serde(default)]
    pub param_norm: BTreeMap<String, f64>,
    /// Jensen–Shannon drift of each head's attention at the key queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern_js: Option<BTreeMap<String, f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_step: Option<u64>,
    /// Cosine of each probe's weights with the previous checkpoint's: boundary → key → target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_cosine: Option<Residual3>,
    /// ‖W_t − W_{t−1}‖ / ‖W_{t−1}‖ of every parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_update: Option<BTreeMap<String, f64>>,
}

/// boundary → key position → target → number.
pub type Residual3 = BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>>;

/// Where the analysis time went, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Sidecar thread: capture forward over the probe set (and the Fourier grid's) and the copy to host.
    pub capture_ms: f64,
    /// Sidecar thread: the mean-ablation forwards.
    pub ablation_ms: f64,
    /// Trainer thread: copying the weights to host memory (the snapshot the sidecar's forwards run on). Absent
    /// in rows written before the forwards moved to the sidecar (then they ran on the trainer thread).
    #[serde(default)]
    pub snapshot_ms: f64,
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
    use super::Row;

    #[test]
    fn typed_records_write_their_keys_sorted_like_the_maps_they_replaced_and_list_their_series() {
        let mut value = minimal_row_json();
        value["heads"] = serde_json::json!({"L0H0": {
            "ablation_dloss": 0.5, "attn": {"eq_to_a": 0.25}, "dla": 1.0, "entropy": {"eq": 0.1},
            "k_composition": {"L0H1": 0.2}, "output_norm": {"eq": 2.0}, "scores": {"induction_score": 0.9}}});
        value["mlp"] = serde_json::json!({"L0": {
            "ablation_dloss": 0.1, "active_fraction": {"eq": 0.3}, "dla": null, "output_norm": {"eq": 1.5}}});
        value["dynamics"] = serde_json::json!({
            "cka": {"b": {"eq": 0.9}}, "delta": {"behavior.loss": -0.1}, "output_projection": [0.5],
            "param_norm": {"embed.W_E": 3.0}, "pattern_js": {"L0H0": 0.01}, "previous_step": 4,
            "probe_cosine": {"b": {"eq": {"sum": 0.5}}}, "relative_update": {"embed.W_E": 0.1}});
        let row: Row = serde_json::from_value(value.clone()).unwrap();
        // A JSON map's keys are sorted; the records must write the same bytes.
        assert_eq!(
            serde_json::to_string(&row.heads).unwrap(),
            value["heads"].to_string()
        );
        assert_eq!(
            serde_json::to_string(&row.mlp).unwrap(),
            value["mlp"].to_string()
        );
        assert_eq!(
            serde_json::to_string(&row.dla).unwrap(),
            value["dla"].to_string()
        );
        assert_eq!(
            serde_json::to_string(&row.dynamics).unwrap(),
            value["dynamics"].to_string()
        );
        let series = row.series();
        assert!(series.contains(&("heads.L0H0.scores.induction_score".into(), 0.9)));
        assert!(series.contains(&("dynamics.cka.b.eq".into(), 0.9)));
        assert!(
            !series.iter().any(|(path, _)| path == "mlp.L0.dla"),
            "null is not a number"
        );
    }

    /// A row with every required field and empty metric families, for tests that fill in what they need.
    pub(crate) fn minimal_row_json() -> serde_json::Value {
        serde_json::json!({
            "schema_version": super::SCHEMA_VERSION, "run_id": "r", "step": 0, "tokens_seen": 0,
            "wall_s": 0.0, "lr": 0.0, "train_loss": null,
            "behavior": {"loss": 1.0, "accuracy": 0.0, "logit_margin": 0.0,
                         "per_position_accuracy": {}, "split_accuracy": {}},
            "residual": {}, "heads": {}, "mlp": {},
            "dla": {"attn_bias": {}, "embed": 0.0, "logit_diff": 0.0, "pos_embed": 0.0, "unembed_bias": 0.0},
            "dynamics": {},
            "timing": {"capture_ms": 0.0, "ablation_ms": 0.0, "queue_ms": 0.0, "queue_depth": 0,
                       "sidecar_ms": 0.0, "families": {}}
        })
    }
}
