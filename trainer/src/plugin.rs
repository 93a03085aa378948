//! The hook the training loop calls at every checkpoint save, with the live model: no weights are reloaded.

use burn::prelude::*;

use crate::error::{TrainError, error_chain};
use crate::model::Transformer;
use crate::run_dir::Manifest;
use crate::tasks::Task;
use crate::train_loop::EvalRow;
use host::layout::RunLayout;

/// What a plugin may fail with; the loop stops and reports it with the step.
pub type PluginError = Box<dyn std::error::Error + Send + Sync>;

/// A plugin failure that belongs to another step than the checkpoint being handed over (work done in the
/// background fails behind the trainer): the loop reports this step, not its own.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FailedAt {
    pub step: u64,
    /// The failure with all its causes.
    pub message: String,
}

/// The training error for a plugin failure at `step` (or at the step a [`FailedAt`] names), keeping every
/// cause of the error in its message.
pub fn plugin_failure(step: u64) -> impl FnOnce(PluginError) -> TrainError {
    move |error| match error.downcast::<FailedAt>() {
        Ok(failed) => TrainError::Plugin {
            step: failed.step,
            message: failed.message,
        },
        Err(error) => TrainError::Plugin {
            step,
            message: error_chain(error.as_ref()),
        },
    }
}

/// Everything the loop knows at a checkpoint save.
pub struct CheckpointEvent<'a> {
    /// Optimizer updates done so far.
    pub step: u64,
    /// The live model, on the training device (autodiff-enabled; use `model.valid()` for inference).
    pub model: &'a Transformer,
    pub device: &'a Device,
    pub task: &'a dyn Task,
    /// Learning rate of the update that produced this step (0 at step 0).
    pub lr: f64,
    /// Mean training loss of the last logged step at or before this one.
    pub train_loss: Option<f32>,
    pub tokens_seen: u64,
    /// Seconds since this process started training.
    pub wall_s: f64,
    /// Full-split evaluation, on `eval.every` checkpoints and the last one.
    pub eval: Option<&'a EvalRow>,
}

/// What the loop tells a plugin before the first step.
pub struct StartEvent<'a> {
    pub run: &'a RunLayout,
    pub manifest: &'a Manifest,
    /// The step training starts from (0, or the checkpoint a resume continues from).
    pub start_step: u64,
    pub resume: bool,
}

/// Called by the training loop at every checkpoint save, in step order. On resume the loop calls it again
/// for the checkpoint it resumed from, so a plugin can rewrite anything it wrote at or after that step.
pub trait CheckpointPlugin {
    /// On resume, before a checkpoint is chosen: the first scheduled step whose output this plugin lacks (a
    /// kill can stop it behind the trainer). The loop resumes from the last checkpoint at or before it.
    fn first_missing_step(
        &mut self,
        run: &RunLayout,
        schedule: &[u64],
    ) -> Result<Option<u64>, PluginError> {
        let _ = (run, schedule);
        Ok(None)
    }

    /// Called while a new run directory is prepared (`run` is its staging name, renamed into place afterwards):
    /// write what the run must hold from its first moment, such as a pinned input file.
    fn on_create(&mut self, run: &RunLayout) -> Result<(), PluginError> {
        let _ = run;
        Ok(())
    }

    /// Called once, after the run directory exists (or was verified) and before the first step.
    fn on_start(&mut self, event: &StartEvent<'_>) -> Result<(), PluginError> {
        let _ = event;
        Ok(())
    }

    fn on_checkpoint(&mut self, event: &CheckpointEvent<'_>) -> Result<(), PluginError>;

    /// Called once after the last checkpoint; a plugin with background work drains it here.
    fn finish(&mut self) -> Result<(), PluginError> {
        Ok(())
    }
}

/// The plugin of a run without `--analyze`.
pub struct NoPlugin;

impl CheckpointPlugin for NoPlugin {
    fn on_checkpoint(&mut self, _: &CheckpointEvent<'_>) -> Result<(), PluginError> {
        Ok(())
    }
}

/// Several plugins, each hook called on each in order (the first failure stops the loop). On resume the
/// earliest step any of them lacks.
pub struct Plugins(pub Vec<Box<dyn CheckpointPlugin>>);

impl CheckpointPlugin for Plugins {
    fn first_missing_step(
        &mut self,
        run: &RunLayout,
        schedule: &[u64],
    ) -> Result<Option<u64>, PluginError> {
        let mut first = None;
        for plugin in &mut self.0 {
            if let Some(step) = plugin.first_missing_step(run, schedule)? {
                first = Some(first.map_or(step, |f: u64| f.min(step)));
            }
        }
        Ok(first)
    }

    fn on_create(&mut self, run: &RunLayout) -> Result<(), PluginError> {
        self.0.iter_mut().try_for_each(|p| p.on_create(run))
    }

    fn on_start(&mut self, event: &StartEvent<'_>) -> Result<(), PluginError> {
        self.0.iter_mut().try_for_each(|p| p.on_start(event))
    }

    fn on_checkpoint(&mut self, event: &CheckpointEvent<'_>) -> Result<(), PluginError> {
        self.0.iter_mut().try_for_each(|p| p.on_checkpoint(event))
    }

    fn finish(&mut self) -> Result<(), PluginError> {
        self.0.iter_mut().try_for_each(|p| p.finish())
    }
}
