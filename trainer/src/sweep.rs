//! The post-hoc sweep: the checkpoint plugin called over a finished run's saved checkpoints, in schedule order,
//! with each checkpoint's weights loaded from disk (the one place they are read back) and the trainer's view of
//! that moment (learning rate, last training loss, tokens seen, full-split evaluation) taken from the checkpoint
//! state and `metrics/eval.jsonl`. A plugin sees the same events as in the training loop, so `formation sweep`
//! writes what `train --analyze` would have.

use std::time::Instant;

use burn::prelude::*;

use crate::checkpoint;
use crate::error::{CheckpointError, TrainError};
use crate::model::{ModelDims, Transformer};
use crate::plugin::{CheckpointEvent, CheckpointPlugin, StartEvent, plugin_failure};
use crate::run_dir::RunFiles;
use crate::tasks::Task;
use crate::train_loop::{Progress, read_eval_rows};
use host::layout::RunLayout;
use host::lock::DirLock;

/// Calls `plugin` at every scheduled checkpoint of `run` that it has no output for yet; returns how many.
/// The caller holds the run's write lock (`_lock`).
pub fn sweep_checkpoints(
    run: &RunLayout,
    _lock: &DirLock,
    task: &dyn Task,
    device: &Device,
    plugin: &mut dyn CheckpointPlugin,
    progress: &mut dyn FnMut(Progress),
) -> Result<usize, TrainError> {
    let manifest = run.read_manifest()?;
    let config = run.read_config()?;
    crate::run_dir::check_same_dataset(&manifest, &config, task)?;
    let dims = ModelDims::new(&config, task);
    let schedule = manifest.checkpoint_steps.clone();
    let Some(first) = plugin
        .first_missing_step(run, &schedule)
        .map_err(plugin_failure(0))?
    else {
        return Ok(0);
    };
    let saved = checkpoint::list(&run.checkpoints())?;
    let todo: Vec<u64> = schedule.iter().copied().filter(|&s| s >= first).collect();
    if let Some(missing) = todo.iter().find(|s| !saved.contains(s)) {
        return Err(CheckpointError::Corrupt {
            path: checkpoint::step_dir(&run.checkpoints(), *missing),
            why: "this scheduled checkpoint is missing, so the sweep cannot analyze it".into(),
        }
        .into());
    }
    let evals = read_eval_rows(run)?;
    plugin
        .on_start(&StartEvent {
            run,
            manifest: &manifest,
            start_step: first,
            resume: first > 0,
        })
        .map_err(plugin_failure(first))?;
    progress(Progress::Start {
        start: first,
        total: manifest.steps,
    });
    let device = device.clone().without_autodiff();
    let clock = Instant::now();
    for &step in &todo {
        let dir = checkpoint::step_dir(&run.checkpoints(), step);
        let (model, state) = checkpoint::load_model(&dir, Transformer::new(&dims, 0, &device))?;
        let eval = evals.get(&step);
        let event = CheckpointEvent {
            step,
            model: &model,
            device: &device,
            task,
            lr: state.lr,
            train_loss: state.last_train_loss,
            tokens_seen: state.tokens_seen,
            wall_s: clock.elapsed().as_secs_f64(),
            eval,
        };
        plugin.on_checkpoint(&event).map_err(plugin_failure(step))?;
        progress(Progress::Checkpoint {
            step,
            eval: eval.cloned(),
        });
    }
    plugin.finish().map_err(plugin_failure(manifest.steps))?;
    Ok(todo.len())
}
