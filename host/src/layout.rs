//! Where every file of a run directory and of a study directory lives. [`RunLayout`] and [`StudyLayout`] are
//! the only code that spells these paths; the file formats are documented in `docs/schema.md`.
//!
//! ```text
//! RUN/                             STUDY/
//!   config.toml  run.json            study.json  compare.json  report.html
//!   formation.lock  report.html      configs/NAME.toml
//!   checkpoints/step_NNNNNN/         runs/NAME/            (a RUN)
//!   metrics/{train,eval}.jsonl       status/NAME.{json,lock}
//!   probes/probe_set.h5              logs/NAME.log
//!   analysis/checkpoint_metrics.jsonl  slurm/array.sbatch
//!   analysis/activations.h5, activations/step_NNNNNN.h5
//!   analysis/birth_windows.json
//!   windows/WN/                    (a RUN: the dense replay of window N)
//!   interventions/step_NNNNNN/KIND.{json,h5}
//!   export/step_NNNNNN/
//! ```

use std::path::{Path, PathBuf};

/// `step_000100`: the name of a step's checkpoint directory, HDF5 group and step file.
pub fn step_name(step: u64) -> String {
    format!("step_{step:06}")
}

/// The paths of one run directory.
#[derive(Debug, Clone, PartialEq)]
pub struct RunLayout {
    pub root: PathBuf,
}

impl RunLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// `config.toml`: the frozen, canonical config.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `run.json`: the manifest.
    pub fn manifest(&self) -> PathBuf {
        self.root.join("run.json")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    pub fn metrics_dir(&self) -> PathBuf {
        self.root.join("metrics")
    }
    pub fn train_log(&self) -> PathBuf {
        self.metrics_dir().join("train.jsonl")
    }
    pub fn eval_log(&self) -> PathBuf {
        self.metrics_dir().join("eval.jsonl")
    }
    pub fn probes_dir(&self) -> PathBuf {
        self.root.join("probes")
    }
    /// `probes/probe_set.h5`: the pinned probe set.
    pub fn probe_set(&self) -> PathBuf {
        self.probes_dir().join("probe_set.h5")
    }
    pub fn analysis_dir(&self) -> PathBuf {
        self.root.join("analysis")
    }
    /// `analysis/checkpoint_metrics.jsonl`: one row per analyzed checkpoint.
    pub fn metrics(&self) -> PathBuf {
        self.analysis_dir().join("checkpoint_metrics.jsonl")
    }
    /// `analysis/features.json` (and `.h5` beside it): the dictionaries across checkpoints of `formation
    /// features`, or of a replay whose window interventions include `features`.
    pub fn features(&self) -> PathBuf {
        self.analysis_dir().join("features.json")
    }
    /// `tensorboard/events.out.tfevents.formation`: the rows' headline scalars as TensorBoard events
    /// (`[analysis] tensorboard = true`; TensorBoard reads any file whose name holds `tfevents`).
    pub fn tensorboard_events(&self) -> PathBuf {
        self.root
            .join("tensorboard")
            .join("events.out.tfevents.formation")
    }
    /// `analysis/activations/`: one HDF5 file per analyzed step.
    pub fn activations_dir(&self) -> PathBuf {
        self.analysis_dir().join("activations")
    }
    /// `analysis/activations.h5`: the index of external links to the step files.
    pub fn activations_index(&self) -> PathBuf {
        self.analysis_dir().join("activations.h5")
    }
    /// `analysis/llc.jsonl`: the LLC trajectory, one row per estimated checkpoint (`formation llc`).
    pub fn llc(&self) -> PathBuf {
        self.analysis_dir().join("llc.jsonl")
    }
    /// `analysis/llc_calibration.json`: the ε / nβ grid of `formation llc --calibrate`.
    pub fn llc_calibration(&self) -> PathBuf {
        self.analysis_dir().join("llc_calibration.json")
    }
    /// `analysis/birth_windows.json`, written by `formation windows`.
    pub fn birth_windows(&self) -> PathBuf {
        self.analysis_dir().join("birth_windows.json")
    }
    /// `windows/{id}`: the replay of window `id` (`W0`, …), a run directory of its own.
    pub fn window(&self, id: &str) -> RunLayout {
        RunLayout::new(self.root.join("windows").join(id))
    }
    /// `replay.json` of a window replay (this layout being `windows/WN`).
    pub fn replay_report(&self) -> PathBuf {
        self.root.join("replay.json")
    }
    /// `interventions/`: every intervention report of this run.
    pub fn interventions_dir(&self) -> PathBuf {
        self.root.join("interventions")
    }
    /// `interventions/step_NNNNNN/`: the reports at one checkpoint.
    pub fn interventions(&self, step: u64) -> PathBuf {
        self.interventions_dir().join(step_name(step))
    }
    /// `export/step_NNNNNN/`: the default export directory of a checkpoint.
    pub fn export(&self, step: u64) -> PathBuf {
        self.root.join("export").join(step_name(step))
    }
    /// `report.html`.
    pub fn report(&self) -> PathBuf {
        self.root.join("report.html")
    }
    /// Whether `root` holds a run (its manifest exists).
    pub fn exists(&self) -> bool {
        self.manifest().exists()
    }
}

/// The paths of one study directory.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyLayout {
    pub root: PathBuf,
}

impl StudyLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// `study.json`: the plan.
    pub fn manifest(&self) -> PathBuf {
        self.root.join("study.json")
    }
    /// `configs/NAME.toml`: one run's full config.
    pub fn config(&self, name: &str) -> PathBuf {
        self.root.join("configs").join(format!("{name}.toml"))
    }
    /// `runs/NAME`: one run's directory.
    pub fn run(&self, name: &str) -> RunLayout {
        RunLayout::new(self.root.join("runs").join(name))
    }
    /// `status/NAME.json`, written by the run's process.
    pub fn status(&self, name: &str) -> PathBuf {
        self.root.join("status").join(format!("{name}.json"))
    }
    /// `status/NAME.lock`: held by the one process running that run.
    pub fn status_lock(&self, name: &str) -> PathBuf {
        self.root.join("status").join(format!("{name}.lock"))
    }
    pub fn log(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(format!("{name}.log"))
    }
    pub fn sbatch(&self) -> PathBuf {
        self.root.join("slurm").join("array.sbatch")
    }
    /// `compare.json`, written by `formation compare STUDY`.
    pub fn comparison(&self) -> PathBuf {
        self.root.join("compare.json")
    }
    pub fn report(&self) -> PathBuf {
        self.root.join("report.html")
    }
    /// The directories `prepare` makes.
    pub const DIRS: [&'static str; 4] = ["configs", "runs", "status", "logs"];
}

/// Whether `dir` holds a study (its `study.json` exists).
pub fn is_study(dir: &Path) -> bool {
    StudyLayout::new(dir).manifest().exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_the_documented_ones() {
        let run = RunLayout::new("r");
        assert_eq!(
            run.metrics(),
            Path::new("r/analysis/checkpoint_metrics.jsonl")
        );
        assert_eq!(run.probe_set(), Path::new("r/probes/probe_set.h5"));
        assert_eq!(
            run.window("W2").birth_windows(),
            Path::new("r/windows/W2/analysis/birth_windows.json")
        );
        assert_eq!(
            run.interventions(40),
            Path::new("r/interventions/step_000040")
        );
        let study = StudyLayout::new("s");
        assert_eq!(
            study.run("s0").train_log(),
            Path::new("s/runs/s0/metrics/train.jsonl")
        );
        assert_eq!(study.status_lock("s0"), Path::new("s/status/s0.lock"));
    }
}
