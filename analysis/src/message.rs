//! What crosses the bounded channel from the trainer thread to the sidecar (host arrays only: a snapshot of the
//! weights), and what the sidecar's forwards make of it.

use std::collections::BTreeMap;

use trainer::model::{HookName, HostArray, ModelDims};
use trainer::train_loop::EvalRow;

use crate::forwards::Captured;

/// The trainer's view of the moment of a checkpoint: what the row says about training itself.
#[derive(Debug, Clone)]
pub struct Moment {
    /// Optimizer updates done so far.
    pub step: u64,
    pub tokens_seen: u64,
    /// Seconds since this process started training.
    pub wall_s: f64,
    /// Learning rate of the update that produced this step.
    pub lr: f64,
    /// Mean training loss of the last logged step at or before this one.
    pub train_loss: Option<f32>,
    /// Full-split evaluation, on `eval.every` checkpoints and the last one.
    pub eval: Option<EvalRow>,
}

#[cfg(test)]
impl Moment {
    /// `step` with no training context (tests).
    pub(crate) fn bare(step: u64) -> Self {
        Self {
            step,
            tokens_seen: 0,
            wall_s: 0.0,
            lr: 0.0,
            train_loss: None,
            eval: None,
        }
    }
}

/// One checkpoint as the trainer thread hands it over: a host copy of the live model's weights and the
/// trainer's view of that moment.
pub struct Snapshot {
    pub moment: Moment,
    /// The model's shape, for the sidecar's own copy of the model.
    pub dims: ModelDims,
    /// Every parameter by its TransformerLens state-dict name (small: these models have < 1M parameters).
    pub params: BTreeMap<String, HostArray>,
    /// Trainer time spent copying the weights, ms.
    pub snapshot_ms: f64,
}

/// One checkpoint's captured activations and the trainer's view of that moment: what the metric families read,
/// made by the sidecar from a [`Snapshot`] and its [`Captured`] forwards.
pub struct CheckpointMessage {
    pub moment: Moment,
    /// Full host copies of the hooks the metrics and the store need (see [`crate::selection::needed`]).
    pub hooks: Vec<(HookName, HostArray)>,
    /// Every parameter by its TransformerLens state-dict name.
    pub params: BTreeMap<String, HostArray>,
    /// Mean-ablation Δloss of every head and MLP block (SPEC §5C/§5D).
    pub ablation: Option<trainer::model::AblationLosses>,
    /// The last MLP's neurons and the logits at `=` over every input of the task's Fourier grid
    /// (`[analysis] fourier_progress`).
    pub grid: Option<GridCapture>,
    pub snapshot_ms: f64,
    pub capture_ms: f64,
    pub ablation_ms: f64,
}

impl CheckpointMessage {
    /// `snapshot` with the forwards `captured` from its weights.
    pub fn new(snapshot: Snapshot, captured: Captured) -> Self {
        Self {
            moment: snapshot.moment,
            hooks: captured.hooks,
            params: captured.params,
            ablation: captured.ablation,
            grid: captured.grid,
            snapshot_ms: snapshot.snapshot_ms,
            capture_ms: captured.capture_ms,
            ablation_ms: captured.ablation_ms,
        }
    }
}

/// A forward over all p² inputs of a Fourier grid (a-major), at the `=` position only.
#[derive(Debug, Clone, PartialEq)]
pub struct GridCapture {
    /// [p², d_mlp] of the last MLP's `hook_post`.
    pub mlp_post: HostArray,
    /// [p², d_vocab_out].
    pub logits: HostArray,
}

/// How a checkpoint's send went, seen from the trainer thread. It follows its checkpoint through the channel
/// (the trainer knows it only once the send returned), and the sidecar writes it into that checkpoint's row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendStats {
    /// Time blocked waiting for room in the channel (backpressure), ms.
    pub queue_ms: f64,
    /// Checkpoints waiting for the sidecar right after the send, this one included.
    pub queue_depth: usize,
}

/// One array for `activations.h5`.
pub struct StoredArray {
    pub name: crate::stored::StoredName,
    /// Comma-separated axis names, e.g. `example,key_position,d_model`.
    pub axes: String,
    pub array: HostArray,
}

/// The sidecar's private message enum: a checkpoint, the report of its send (always right behind it), or the
/// explicit end.
pub(crate) enum Message {
    Checkpoint(Box<Snapshot>),
    Sent(SendStats),
    End,
}

/// A message of `captured` at `step` with no training context (tests).
#[cfg(test)]
pub(crate) fn test_message(step: u64, captured: Captured) -> CheckpointMessage {
    CheckpointMessage {
        moment: Moment::bare(step),
        hooks: captured.hooks,
        params: captured.params,
        ablation: captured.ablation,
        grid: None,
        snapshot_ms: 0.0,
        capture_ms: 0.0,
        ablation_ms: 0.0,
    }
}
