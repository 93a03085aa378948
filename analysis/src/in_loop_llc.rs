//! The LLC trajectory in the training loop (`[llc] in_loop` with `train --analyze`): at the checkpoints the
//! trajectory plan picks within the in-loop budget, one estimate on the live weights (nothing reloaded), written
//! to `analysis/llc.jsonl` as `formation llc` writes it, so the detector and the report read both alike and
//! `formation llc` with the same plan gives the same rows.

use std::collections::BTreeMap;

use host::jsonl::JsonlWriter;
use host::layout::RunLayout;
use trainer::config::{Checked, Config, LlcConfig};
use trainer::plugin::{CheckpointEvent, CheckpointPlugin, PluginError, StartEvent};
use trainer::schedule::checkpoint_steps;

use crate::interventions::llc_model::checkpoint_llc;
use crate::trajectory::{LlcRow, TrajectoryPlan, plan, read_llc, sampler_mismatch};

/// The in-loop estimator of one run.
pub struct InLoopLlc {
    config: Config,
    /// The sampler with the plan's draws.
    llc: Checked<LlcConfig>,
    plan: TrajectoryPlan,
    writer: Option<JsonlWriter>,
}

impl InLoopLlc {
    /// The estimator of a run of `config`, planned over its whole checkpoint schedule within `[llc] in_loop`;
    /// `None` when the config does not ask for it.
    pub fn new(config: &Config) -> Result<Option<Self>, trainer::error::ConfigError> {
        let Some(budget) = config.llc.in_loop else {
            return Ok(None);
        };
        let schedule = checkpoint_steps(&config.train.checkpoints, config.train.steps);
        let budgeted = config.llc.edit(|llc| llc.trajectory_budget = budget)?;
        let plan = plan(&schedule, config.train.steps, &budgeted, None, 1);
        Ok(Some(Self {
            llc: config.llc.edit(|llc| llc.draws = plan.draws)?,
            config: config.clone(),
            plan,
            writer: None,
        }))
    }

    /// What the loop will spend: checkpoints, draws and SGLD steps against the run's training steps.
    pub fn plan(&self) -> &TrajectoryPlan {
        &self.plan
    }
}

impl CheckpointPlugin for InLoopLlc {
    /// The first planned checkpoint without its row (a kill can land between a checkpoint and its estimate).
    fn first_missing_step(
        &mut self,
        run: &RunLayout,
        _schedule: &[u64],
    ) -> Result<Option<u64>, PluginError> {
        let done: Vec<u64> = read_llc(&run.llc())?.iter().map(|r| r.step).collect();
        Ok(self.plan.steps.iter().copied().find(|s| !done.contains(s)))
    }

    /// Refuses a trajectory made with other sampler settings, then keeps its rows before the start step.
    fn on_start(&mut self, event: &StartEvent<'_>) -> Result<(), PluginError> {
        let path = event.run.llc();
        if let Some(why) = sampler_mismatch(&read_llc(&path)?, &self.llc) {
            return Err(format!("{} {why}", path.display()).into());
        }
        std::fs::create_dir_all(event.run.analysis_dir())?;
        self.writer = Some(JsonlWriter::open_from(&path, event.start_step)?);
        Ok(())
    }

    fn on_checkpoint(&mut self, event: &CheckpointEvent<'_>) -> Result<(), PluginError> {
        if !self.plan.steps.contains(&event.step) {
            return Ok(());
        }
        let (settings, estimate) = checkpoint_llc(
            event.model,
            event.task,
            &self.config,
            &self.llc,
            event.device,
        );
        let writer = self
            .writer
            .as_mut()
            .ok_or("the in-loop LLC was not started")?;
        writer.write(&LlcRow {
            step: event.step,
            settings,
            estimate,
            components: BTreeMap::new(),
        })?;
        Ok(())
    }
}
