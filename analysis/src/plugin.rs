//! The checkpoint plugin of `--analyze`: on the trainer thread it runs one capture forward over the probe set
//! on the live model (an inference view, no reload), gathers what the metrics and the store need, copies it to
//! host memory and sends it to the sidecar. Everything else happens on the sidecar.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use probes::ProbeSet;
use trainer::config::{AnalysisConfig, OnError};
use trainer::model::{HookName, HookTensor, HostArray, Transformer, int_tensor};
use trainer::plugin::{CheckpointEvent, CheckpointPlugin, PluginError, StartEvent};
use trainer::run_dir::{JsonlWriter, RunDir};

use crate::error::AnalysisError;
use crate::message::{CheckpointMessage, SendStats};
use crate::selection::needed;
use crate::sidecar::{Sidecar, SidecarState};
use crate::sinks::hdf5::ActivationStore;
use crate::sinks::jsonl::existing_steps;

/// `analysis/` inside a run directory.
pub fn analysis_dir(run: &RunDir) -> PathBuf {
    run.root.join("analysis")
}

/// `analysis/checkpoint_metrics.jsonl`.
pub fn metrics_path(run: &RunDir) -> PathBuf {
    analysis_dir(run).join("checkpoint_metrics.jsonl")
}

/// `probes/probe_set.h5`.
pub fn probe_set_path(run: &RunDir) -> PathBuf {
    run.root.join("probes").join("probe_set.h5")
}

/// The `--analyze` plugin.
pub struct AnalyzePlugin {
    config: AnalysisConfig,
    probe: Arc<ProbeSet>,
    tokens: Tensor<2, Int>,
    induction_repeat: Option<Vec<usize>>,
    sidecar: Option<Sidecar>,
    /// Queue depth after the last send, for the progress display.
    depth: Arc<AtomicUsize>,
    disabled: bool,
}

impl AnalyzePlugin {
    /// `device` is the plain (non-autodiff) device the model trains on.
    pub fn new(config: AnalysisConfig, probe: ProbeSet, device: &Device) -> Self {
        let device = device.clone().without_autodiff();
        let e = &probe.examples;
        let tokens = int_tensor(&e.tokens, e.n, e.seq_len, &device);
        let induction_repeat = induction_repeat(&probe);
        Self {
            config,
            probe: Arc::new(probe),
            tokens,
            induction_repeat,
            sidecar: None,
            depth: Arc::new(AtomicUsize::new(0)),
            disabled: false,
        }
    }

    /// A gauge of the analysis queue depth (updated at every send).
    pub fn queue_depth(&self) -> Arc<AtomicUsize> {
        self.depth.clone()
    }

    /// Capture forward and copies to host: everything the trainer thread pays for one checkpoint.
    fn capture(
        &self,
        model: &Transformer,
        step: u64,
    ) -> Result<Vec<(HookName, HostArray)>, AnalysisError> {
        let capture = model.valid().capture(self.tokens.clone());
        let mut hooks = vec![];
        for (name, tensor) in capture.hooks() {
            if needed(&self.config.store, name) {
                let array = match tensor {
                    HookTensor::Rank3(t) => HostArray::from_tensor(t.clone()),
                    HookTensor::Rank4(t) => HostArray::from_tensor(t.clone()),
                };
                hooks.push((
                    name,
                    array.map_err(|message| AnalysisError::Host { step, message })?,
                ));
            }
        }
        Ok(hooks)
    }

    fn fail(&mut self, step: u64, error: AnalysisError) -> Result<(), PluginError> {
        match self.config.on_error {
            OnError::Stop => Err(Box::new(error)),
            OnError::Warn => {
                eprintln!(
                    "WARNING: analysis failed at step {step}: {error}. Training continues WITHOUT analysis \
                     (analysis.on_error = \"warn\")."
                );
                self.disabled = true;
                self.sidecar = None;
                Ok(())
            }
        }
    }
}

/// For an induction probe set, each example's repeat length: the distance from `cur` back to `prev_occ`.
fn induction_repeat(probe: &ProbeSet) -> Option<Vec<usize>> {
    if probe.task != "induction" {
        return None;
    }
    let key = |name: &str| probe.key_positions.iter().find(|k| k.name == name);
    let (cur, prev) = (key("cur")?, key("prev_occ")?);
    Some(
        cur.values
            .iter()
            .zip(&prev.values)
            .map(|(c, p)| (c - p) as usize)
            .collect(),
    )
}

impl CheckpointPlugin for AnalyzePlugin {
    fn first_missing_step(
        &mut self,
        run: &RunDir,
        schedule: &[u64],
    ) -> Result<Option<u64>, PluginError> {
        let done = existing_steps(&metrics_path(run));
        Ok(schedule.iter().copied().find(|s| !done.contains(s)))
    }

    fn on_start(&mut self, event: &StartEvent<'_>) -> Result<(), PluginError> {
        let hash = event.manifest.probe_set_sha256.clone().ok_or_else(|| {
            format!(
                "run {} was started without --analyze (no probe set pinned in run.json)",
                event.run.root.display()
            )
        })?;
        let probe_path = probe_set_path(event.run);
        if event.resume {
            ProbeSet::load_pinned(&probe_path, &hash)?;
        } else {
            let dir = event.run.root.join("probes");
            std::fs::create_dir_all(&dir).map_err(|e| AnalysisError::Io {
                path: dir,
                message: e.to_string(),
            })?;
            self.probe.save(&probe_path)?;
        }
        let analysis = analysis_dir(event.run);
        std::fs::create_dir_all(&analysis).map_err(|e| AnalysisError::Io {
            path: analysis.clone(),
            message: e.to_string(),
        })?;
        let key_names: Vec<&str> = self
            .probe
            .key_positions
            .iter()
            .map(|k| k.name.as_str())
            .collect();
        let state = SidecarState {
            run_id: event.manifest.run_id.clone(),
            probe: self.probe.clone(),
            induction_repeat: self.induction_repeat.clone(),
            jsonl: JsonlWriter::open_from(&metrics_path(event.run), event.start_step)
                .map_err(AnalysisError::from)?,
            store_items: self.config.store.clone(),
            store: ActivationStore::open(
                &analysis,
                &event.manifest.run_id,
                &hash,
                &key_names,
                event.start_step,
            )?,
        };
        self.sidecar = Some(Sidecar::spawn(state, self.config.queue)?);
        Ok(())
    }

    fn on_checkpoint(&mut self, event: &CheckpointEvent<'_>) -> Result<(), PluginError> {
        if self.disabled {
            return Ok(());
        }
        let start = Instant::now();
        let hooks = match self.capture(event.model, event.step) {
            Ok(hooks) => hooks,
            Err(e) => return self.fail(event.step, e),
        };
        let params = trainer::export::named_parameters(event.model)
            .into_iter()
            .map(|(name, (shape, data))| (name, HostArray { shape, data }))
            .collect();
        let send_stats = Arc::new(OnceLock::new());
        let message = CheckpointMessage {
            step: event.step,
            tokens_seen: event.tokens_seen,
            wall_s: event.wall_s,
            lr: event.lr,
            train_loss: event.train_loss,
            eval: event.eval.cloned(),
            hooks,
            params,
            capture_ms: start.elapsed().as_secs_f64() * 1e3,
            send_stats: send_stats.clone(),
        };
        let Some(sidecar) = self.sidecar.as_mut() else {
            return self.fail(
                event.step,
                AnalysisError::SidecarGone("it was never started".into()),
            );
        };
        match sidecar.send(message) {
            Ok((queue_ms, queue_depth)) => {
                let _ = send_stats.set(SendStats {
                    queue_ms,
                    queue_depth,
                });
                self.depth.store(queue_depth, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => self.fail(event.step, e),
        }
    }

    fn finish(&mut self) -> Result<(), PluginError> {
        match self.sidecar.take() {
            Some(sidecar) => sidecar.finish().map_err(|e| Box::new(e) as PluginError),
            None => Ok(()),
        }
    }
}
