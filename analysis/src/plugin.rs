//! The checkpoint plugin of `--analyze`: on the trainer thread it only takes a snapshot of the live model's
//! weights (a host copy, no reload) and sends it to the sidecar, which runs the capture and ablation forwards on
//! its own copy of the model ([`crate::forwards`]) and everything after them. The trainer waits for the copy
//! and, when the channel is full, for room in it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use host::layout::RunLayout;
use probes::ProbeSet;
use trainer::config::{AnalysisConfig, Checked, OnError};
use trainer::plugin::{CheckpointEvent, CheckpointPlugin, PluginError, StartEvent};
use trainer::tasks::Declared;

use crate::error::AnalysisError;
use crate::forwards::host_parameters;
use crate::message::{Moment, Snapshot};
use crate::sidecar::{Sidecar, SidecarSetup};
use crate::sinks::hdf5::{read_stored_step, stored_step_readable};
use crate::sinks::jsonl::committed_steps;
use crate::stored::StoredName;

/// The `--analyze` plugin.
pub struct AnalyzePlugin {
    config: Checked<AnalysisConfig>,
    probe: Arc<ProbeSet>,
    declared: Declared,
    /// The plain (non-autodiff) device the sidecar runs its forwards on.
    device: Device,
    sidecar: Option<Sidecar>,
    /// Queue depth after the last send, for the progress display.
    depth: Arc<AtomicUsize>,
    disabled: bool,
}

impl AnalyzePlugin {
    /// `device` is the plain (non-autodiff) device the model trains on; `declared` is what the task declares
    /// for the analysis ([`trainer::tasks::Task::declared`]).
    pub fn new(
        config: Checked<AnalysisConfig>,
        probe: ProbeSet,
        declared: Declared,
        device: &Device,
    ) -> Self {
        Self {
            config,
            probe: Arc::new(probe),
            declared,
            device: device.clone().without_autodiff(),
            sidecar: None,
            depth: Arc::new(AtomicUsize::new(0)),
            disabled: false,
        }
    }

    /// A gauge of the analysis queue depth (updated at every send).
    pub fn queue_depth(&self) -> Arc<AtomicUsize> {
        self.depth.clone()
    }

    fn fail(&mut self, step: u64, error: AnalysisError) -> Result<(), PluginError> {
        match self.config.on_error {
            OnError::Stop => Err(error.into_plugin_error()),
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

impl CheckpointPlugin for AnalyzePlugin {
    /// The first scheduled step without a committed row *and* a readable step file (a row whose arrays are
    /// missing or unreadable is recomputed, never trusted), or whose successor's dynamics could not be restored
    /// from its arrays.
    fn first_missing_step(
        &mut self,
        run: &RunLayout,
        schedule: &[u64],
    ) -> Result<Option<u64>, PluginError> {
        let (rows, damage) = committed_steps(&run.metrics());
        let activations = run.activations_dir();
        let done: Vec<u64> = schedule
            .iter()
            .copied()
            .take_while(|&s| rows.contains(&s) && stored_step_readable(&activations, s))
            .collect();
        let mut first_missing = schedule.get(done.len()).copied();
        // A damaged, duplicated or out-of-order line: rewrite the rows from there.
        if let Some(after) = damage {
            let damaged = schedule
                .iter()
                .copied()
                .find(|&s| after.is_none_or(|a| s > a));
            first_missing = match (first_missing, damaged) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        // The next checkpoint's dynamics compare with the last analyzed one: its arrays must read back whole.
        for &step in done.iter().rev() {
            if first_missing.is_none()
                || read_stored_step(&activations, step, &StoredName::DYNAMICS_GROUPS).is_ok()
            {
                break;
            }
            first_missing = Some(step);
        }
        Ok(first_missing)
    }

    fn on_create(&mut self, run: &RunLayout) -> Result<(), PluginError> {
        let path = run.probe_set();
        let dir = run.probes_dir();
        std::fs::create_dir_all(&dir).map_err(|e| AnalysisError::io(&dir, e))?;
        self.probe.save(&path)?;
        Ok(())
    }

    fn on_start(&mut self, event: &StartEvent<'_>) -> Result<(), PluginError> {
        let hash = event.manifest.probe_set_sha256.clone().ok_or_else(|| {
            format!(
                "run {} was started without --analyze (no probe set pinned in run.json)",
                event.run.root.display()
            )
        })?;
        ProbeSet::load_pinned(&event.run.probe_set(), &hash)?;
        let setup = SidecarSetup {
            run: event.run.clone(),
            run_id: event.manifest.run_id.clone(),
            probe_set_sha256: hash,
            probe: self.probe.clone(),
            config: self.config.clone(),
            declared: self.declared.clone(),
            device: self.device.clone(),
            start_step: event.start_step,
        };
        self.sidecar = Some(Sidecar::spawn(setup, self.config.queue)?);
        Ok(())
    }

    fn on_checkpoint(&mut self, event: &CheckpointEvent<'_>) -> Result<(), PluginError> {
        if self.disabled {
            return Ok(());
        }
        let start = Instant::now();
        let model = event.model.valid();
        let message = Snapshot {
            moment: Moment {
                step: event.step,
                tokens_seen: event.tokens_seen,
                wall_s: event.wall_s,
                lr: event.lr,
                train_loss: event.train_loss,
                eval: event.eval.cloned(),
            },
            dims: model.dims.clone(),
            params: host_parameters(&model),
            snapshot_ms: start.elapsed().as_secs_f64() * 1e3,
        };
        let Some(sidecar) = self.sidecar.as_mut() else {
            return self.fail(
                event.step,
                AnalysisError::SidecarGone("it was never started".into()),
            );
        };
        match sidecar.send(message) {
            Ok(sent) => {
                self.depth.store(sent.queue_depth, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => self.fail(event.step, e),
        }
    }

    fn finish(&mut self) -> Result<(), PluginError> {
        match self.sidecar.take() {
            Some(sidecar) => sidecar.finish().map_err(AnalysisError::into_plugin_error),
            None => Ok(()),
        }
    }
}
