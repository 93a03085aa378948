//! The sidecar thread: receives [`CheckpointMessage`]s over a bounded channel, computes every metric from host
//! arrays, writes the arrays to HDF5 and then the row to JSONL. It owns everything it carries between
//! checkpoints. Dropping the handle sends the end message and joins; [`Sidecar::finish`] does the same and
//! returns the thread's result.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded};
use probes::ProbeSet;
use trainer::config::StoreItem;
use trainer::model::{HookName, HostArray};
use trainer::run_dir::JsonlWriter;

use crate::error::AnalysisError;
use crate::message::{CheckpointMessage, Message};
use crate::metrics::behavior::{BehaviorInput, behavior};
use crate::metrics::dynamics::frobenius_norm;
use crate::metrics::heads::{HeadInput, head_metrics};
use crate::metrics::mlp::{active_fraction, head_output_norm, norm};
use crate::row::{Row, SCHEMA_VERSION, Timing};
use crate::selection::stored_arrays;
use crate::sinks::hdf5::ActivationStore;

/// What the sidecar thread owns.
pub struct SidecarState {
    pub run_id: String,
    pub probe: Arc<ProbeSet>,
    /// For induction, each probe example's repeat length (enables the induction-only metrics).
    pub induction_repeat: Option<Vec<usize>>,
    pub jsonl: JsonlWriter,
    pub store: ActivationStore,
    pub store_items: Vec<StoreItem>,
}

/// Handle of the running sidecar thread.
pub struct Sidecar {
    sender: Sender<Message>,
    handle: Option<JoinHandle<Result<(), AnalysisError>>>,
}

impl Sidecar {
    /// Starts the thread with a channel of `capacity` checkpoints.
    pub fn spawn(state: SidecarState, capacity: usize) -> Result<Self, AnalysisError> {
        let (sender, receiver) = bounded(capacity);
        let handle = std::thread::Builder::new()
            .name("formation-sidecar".into())
            .spawn(move || run(state, receiver))
            .map_err(|e| AnalysisError::SidecarGone(format!("cannot start the thread: {e}")))?;
        Ok(Self {
            sender,
            handle: Some(handle),
        })
    }

    /// Sends one checkpoint, waiting while the channel is full. Returns the wait in ms and the queue depth.
    pub fn send(&mut self, message: CheckpointMessage) -> Result<(f64, usize), AnalysisError> {
        let start = Instant::now();
        if self
            .sender
            .send(Message::Checkpoint(Box::new(message)))
            .is_err()
        {
            // The thread ended early: its result says why.
            return Err(self
                .join()
                .err()
                .unwrap_or(AnalysisError::SidecarGone("it exited".into())));
        }
        Ok((start.elapsed().as_secs_f64() * 1e3, self.sender.len()))
    }

    /// Lets the sidecar drain the channel, ends it and returns its result.
    pub fn finish(mut self) -> Result<(), AnalysisError> {
        let _ = self.sender.send(Message::End);
        self.join()
    }

    fn join(&mut self) -> Result<(), AnalysisError> {
        match self.handle.take() {
            Some(handle) => handle.join().unwrap_or_else(|panic| {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into());
                Err(AnalysisError::SidecarGone(why))
            }),
            None => Err(AnalysisError::SidecarGone("it already ended".into())),
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if self.handle.is_some() {
            let _ = self.sender.send(Message::End);
            let _ = self.join();
        }
    }
}

fn run(mut state: SidecarState, receiver: Receiver<Message>) -> Result<(), AnalysisError> {
    for message in receiver {
        match message {
            Message::Checkpoint(checkpoint) => process(&mut state, *checkpoint)?,
            Message::End => break,
        }
    }
    Ok(())
}

/// Metrics, arrays, then the row: the row is the commit point of a checkpoint's analysis.
fn process(state: &mut SidecarState, message: CheckpointMessage) -> Result<(), AnalysisError> {
    let start = Instant::now();
    let probe = &state.probe;
    let splits: Vec<&'static str> = probe.splits.iter().map(|s| s.name()).collect();
    let logits = message
        .hooks
        .iter()
        .find(|(name, _)| *name == HookName::Logits)
        .map(|(_, array)| array)
        .ok_or_else(|| AnalysisError::SidecarGone("a message without logits".into()))?;
    let behavior = behavior(&BehaviorInput {
        logits: &logits.data,
        vocab: logits.shape[2],
        tokens: &probe.examples.tokens,
        seq_len: probe.examples.seq_len,
        answer_positions: &probe.answer_positions,
        answer_targets: &probe.examples.targets,
        splits: &splits,
        induction_repeat: state.induction_repeat.as_deref(),
    });
    let heads = heads_row(
        &message.hooks,
        &message.params,
        probe,
        state.induction_repeat.as_deref(),
    );
    let mlp = mlp_row(&message.hooks, probe);
    let param_norms: BTreeMap<&str, f64> = message
        .params
        .iter()
        .map(|(name, p)| (name.as_str(), frobenius_norm(&p.data)))
        .collect();
    let dynamics = BTreeMap::from([(
        "param_norm".to_owned(),
        serde_json::to_value(param_norms).unwrap_or_default(),
    )]);
    let stored = stored_arrays(
        &state.store_items,
        &message.hooks,
        &probe.key_positions,
        &probe.answer_positions,
    );
    state.store.write(message.step, &stored)?;
    let sidecar_ms = start.elapsed().as_secs_f64() * 1e3;
    let sent = *message.send_stats.wait();
    let eval = message.eval.map(|e| {
        [("train", e.train), ("test", e.test), ("ood", e.ood)]
            .into_iter()
            .filter_map(|(name, score)| Some((name.to_owned(), score?)))
            .collect::<BTreeMap<_, _>>()
    });
    let row = Row {
        schema_version: SCHEMA_VERSION,
        run_id: state.run_id.clone(),
        step: message.step,
        tokens_seen: message.tokens_seen,
        wall_s: message.wall_s,
        lr: message.lr,
        train_loss: message.train_loss,
        behavior,
        eval,
        residual: BTreeMap::new(),
        heads,
        mlp,
        dynamics,
        timing: Timing {
            capture_ms: message.capture_ms,
            queue_ms: sent.queue_ms,
            queue_depth: sent.queue_depth,
            sidecar_ms,
        },
    };
    state.jsonl.write(&row)?;
    Ok(())
}

/// Head metrics of every layer, keyed `L{layer}H{head}`.
fn heads_row(
    hooks: &[(HookName, HostArray)],
    params: &BTreeMap<String, HostArray>,
    probe: &ProbeSet,
    induction_repeat: Option<&[usize]>,
) -> BTreeMap<String, serde_json::Value> {
    let keys: Vec<(&str, &[u32])> = probe
        .key_positions
        .iter()
        .map(|k| (k.name.as_str(), k.values.as_slice()))
        .collect();
    let mut out = BTreeMap::new();
    for (name, pattern) in hooks {
        let HookName::Pattern(layer) = name else {
            continue;
        };
        let metrics = head_metrics(&HeadInput {
            pattern: &pattern.data,
            n_heads: pattern.shape[1],
            seq_len: pattern.shape[2],
            tokens: &probe.examples.tokens,
            keys: &keys,
            induction_repeat,
        });
        let z = hooks
            .iter()
            .find(|(n, _)| *n == HookName::Z(*layer))
            .map(|(_, a)| a);
        let w_o = params.get(&format!("blocks.{layer}.attn.W_O"));
        for (h, m) in metrics.into_iter().enumerate() {
            let mut value = serde_json::to_value(m).unwrap_or_default();
            if let (Some(z), Some(w_o)) = (z, w_o) {
                value["output_norm"] =
                    serde_json::to_value(head_output_norms(z, w_o, h, probe)).unwrap_or_default();
            }
            out.insert(format!("L{layer}H{h}"), value);
        }
    }
    out
}

/// Mean over the probe examples of `value(example, position)` at each key position, keyed by its name.
fn mean_at_keys(probe: &ProbeSet, value: impl Fn(usize, usize) -> f64) -> BTreeMap<String, f64> {
    probe
        .key_positions
        .iter()
        .map(|key| {
            let n = key.values.len();
            let sum: f64 = (0..n).map(|i| value(i, key.values[i] as usize)).sum();
            (key.name.clone(), sum / n.max(1) as f64)
        })
        .collect()
}

/// Mean ‖z_h W_O[h]‖ of head `h` at each key position; `z` is [n, pos, head, d_head], `w_o` [head, d_head, d_model].
fn head_output_norms(
    z: &HostArray,
    w_o: &HostArray,
    h: usize,
    probe: &ProbeSet,
) -> BTreeMap<String, f64> {
    let (seq, heads, d_head) = (z.shape[1], z.shape[2], z.shape[3]);
    let w = &w_o.data[h * d_head * w_o.shape[2]..][..d_head * w_o.shape[2]];
    mean_at_keys(probe, |i, t| {
        head_output_norm(&z.data[((i * seq + t) * heads + h) * d_head..][..d_head], w)
    })
}

/// A metric of one activation row.
type RowMetric = fn(&[f32]) -> f64;

/// MLP metrics of every block, keyed `L{layer}`: output norm and active fraction at each key position.
fn mlp_row(
    hooks: &[(HookName, HostArray)],
    probe: &ProbeSet,
) -> BTreeMap<String, serde_json::Value> {
    // Mean of `f` over the examples' rows of `array` [n, pos, d] at each key position.
    let at_keys = |array: &HostArray, f: RowMetric| {
        let (seq, d) = (array.shape[1], array.shape[2]);
        mean_at_keys(probe, |i, t| f(&array.data[(i * seq + t) * d..][..d]))
    };
    let mut out = BTreeMap::new();
    for (name, array) in hooks {
        let (layer, field, f): (usize, &str, RowMetric) = match name {
            HookName::MlpOut(l) => (*l, "output_norm", norm),
            HookName::MlpPost(l) => (*l, "active_fraction", active_fraction),
            _ => continue,
        };
        let entry = out
            .entry(format!("L{layer}"))
            .or_insert_with(|| serde_json::json!({}));
        entry[field] = serde_json::to_value(at_keys(array, f)).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;
    use trainer::model::HostArray;
    use trainer::tasks::{ModularAddition, Task};

    use crate::message::SendStats;

    fn message(step: u64, probe: &ProbeSet) -> CheckpointMessage {
        let e = &probe.examples;
        let vocab = 5;
        let logits = HostArray {
            shape: vec![e.n, e.seq_len, vocab],
            data: vec![0.0; e.n * e.seq_len * vocab],
        };
        let send_stats = Arc::new(OnceLock::new());
        let _ = send_stats.set(SendStats {
            queue_ms: 0.0,
            queue_depth: 0,
        });
        CheckpointMessage {
            step,
            tokens_seen: 0,
            wall_s: 0.0,
            lr: 0.0,
            train_loss: None,
            eval: None,
            hooks: vec![(HookName::Logits, logits)],
            params: Default::default(),
            capture_ms: 0.0,
            send_stats,
        }
    }

    fn spawn(dir: &std::path::Path, probe: &Arc<ProbeSet>) -> Sidecar {
        let state = SidecarState {
            run_id: "r".into(),
            probe: probe.clone(),
            induction_repeat: None,
            jsonl: JsonlWriter::open_from(&dir.join("rows.jsonl"), 0).unwrap(),
            store: ActivationStore::open(dir, "r", "h", &["a"], 0).unwrap(),
            store_items: vec![StoreItem::LogitsAtAnswers],
        };
        Sidecar::spawn(state, 2).unwrap()
    }

    #[test]
    fn rows_are_written_in_order_and_finish_drains_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let task = ModularAddition::new(5, 0.5, 0);
        let probe = Arc::new(ProbeSet::generate(&task as &dyn Task, 10, 0));
        let mut sidecar = spawn(dir.path(), &probe);
        for step in [0, 1, 2, 4, 8] {
            sidecar.send(message(step, &probe)).unwrap();
        }
        sidecar.finish().unwrap();
        let steps = crate::sinks::jsonl::existing_steps(&dir.path().join("rows.jsonl"));
        assert_eq!(steps.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 4, 8]);
    }

    #[test]
    fn a_sidecar_failure_reaches_the_trainer() {
        let dir = tempfile::tempdir().unwrap();
        let task = ModularAddition::new(5, 0.5, 0);
        let probe = Arc::new(ProbeSet::generate(&task as &dyn Task, 10, 0));
        let mut sidecar = spawn(dir.path(), &probe);
        // Sabotage: the per-checkpoint directory becomes a file, so the HDF5 write fails.
        std::fs::remove_dir_all(dir.path().join("activations")).unwrap();
        std::fs::write(dir.path().join("activations"), b"not a directory").unwrap();
        let mut error = None;
        for step in 0..10 {
            if let Err(e) = sidecar.send(message(step, &probe)) {
                error = Some(e);
                break;
            }
        }
        let error = match error {
            Some(e) => e,
            None => sidecar.finish().unwrap_err(),
        };
        assert!(error.to_string().contains("HDF5"), "{error}");
        assert!(
            crate::sinks::jsonl::existing_steps(&dir.path().join("rows.jsonl")).is_empty(),
            "no row without its arrays"
        );
    }
}
