//! The sidecar thread: receives [`CheckpointMessage`]s over a bounded channel, computes every metric from host
//! arrays ([`Analyzer`]), writes the arrays to HDF5 and then the row to JSONL. It owns everything it carries between
//! checkpoints. Dropping the handle sends the end message and joins; [`Sidecar::finish`] does the same and
//! returns the thread's result.

use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded};
use host::jsonl::JsonlWriter;

use crate::analyzer::Analyzer;
use crate::error::AnalysisError;
use crate::message::{CheckpointMessage, Message};
use crate::row::Timing;
use crate::sinks::hdf5::ActivationStore;

/// What the sidecar thread owns.
pub struct SidecarState {
    pub analyzer: Analyzer,
    pub jsonl: JsonlWriter,
    pub store: ActivationStore,
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
            Message::Checkpoint(checkpoint) => {
                let step = checkpoint.step;
                process(&mut state, *checkpoint).map_err(|error| AnalysisError::AtStep {
                    step,
                    error: Box::new(error),
                })?
            }
            Message::End => break,
        }
    }
    Ok(())
}

/// Metrics, arrays, then the row: the row is the commit point of a checkpoint's analysis.
fn process(state: &mut SidecarState, message: CheckpointMessage) -> Result<(), AnalysisError> {
    let start = Instant::now();
    let mut analysis = state.analyzer.analyze(&message)?;
    let store_start = Instant::now();
    state.store.write(message.step, &analysis.arrays)?;
    host::failpoint::hit_at("row-pending", message.step);
    analysis
        .families
        .insert("store".into(), store_start.elapsed().as_secs_f64() * 1e3);
    let sent = *message.send_stats.wait();
    analysis.row.timing = Timing {
        capture_ms: message.capture_ms,
        ablation_ms: message.ablation_ms,
        queue_ms: sent.queue_ms,
        queue_depth: sent.queue_depth,
        sidecar_ms: start.elapsed().as_secs_f64() * 1e3,
        families: analysis.families,
    };
    state.jsonl.write(&analysis.row)?;
    host::failpoint::hit_at("row-written", message.step);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use burn::prelude::Device;
    use probes::ProbeSet;
    use trainer::config::{AnalysisConfig, Config};
    use trainer::model::{ModelDims, Transformer};
    use trainer::tasks::{ModularAddition, Task};

    use crate::message::test_message;
    use crate::plugin::{ProbeInputs, capture};

    /// A real checkpoint message of a tiny freshly initialized model (seeded by `step`).
    fn message(step: u64, probe: &ProbeSet) -> CheckpointMessage {
        let config = Config::parse(include_str!("../../examples/ci.toml")).unwrap();
        let task = ModularAddition::new(5, 0.5, 0);
        let device = Device::flex();
        let model = Transformer::new(&ModelDims::new(&config, &task), step, &device);
        let captured = capture(
            &model,
            &ProbeInputs::new(probe, None, &device),
            &[],
            true,
            step,
        )
        .unwrap();
        test_message(step, captured)
    }

    fn spawn(dir: &std::path::Path, probe: &Arc<ProbeSet>) -> Sidecar {
        let state = SidecarState {
            analyzer: Analyzer::new(
                "r".into(),
                probe.clone(),
                &AnalysisConfig::default(),
                None,
                None,
            ),
            jsonl: JsonlWriter::open_from(&dir.join("rows.jsonl"), 0).unwrap(),
            store: ActivationStore::open(&host::layout::RunLayout::new(dir), "r", "h", &["a"], 0)
                .unwrap(),
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
        let activations = host::layout::RunLayout::new(dir.path()).activations_dir();
        std::fs::remove_dir_all(&activations).unwrap();
        std::fs::write(&activations, b"not a directory").unwrap();
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
