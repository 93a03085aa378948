//! Window replay (SPEC §7): re-train a birth window densely from the last checkpoint at or before its start,
//! in a run directory of its own, and verify it against the original run. Checkpoints hold everything needed
//! to resume bit-exactly (weights, optimizer state, step, data cursor; the data of step s is a pure function of
//! the seed and s), so on the CPU backend the replayed weights at every original checkpoint inside the window
//! must equal the saved ones bit for bit.
//!
//! [`plan`] picks the steps, [`prepare`] creates the replay directory (the original run is only read), the
//! training loop runs with [`ReplaySchedule`], and [`verify`] compares.

use std::path::Path;

use burn::prelude::*;

use crate::checkpoint;
use crate::error::TrainError;
use crate::model::{ModelDims, Transformer};
use crate::run_dir::RunFiles;
use crate::train_loop::ReplaySchedule;
use host::layout::RunLayout;
use host::lock::{DirLock, create_staged};

/// What a replay trains and checks.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayPlan {
    /// The saved checkpoint the replay starts from (the last at or before the window's start).
    pub from: u64,
    pub schedule: ReplaySchedule,
    /// The original checkpoints inside the replayed range, where the weights must match.
    pub verify: Vec<u64>,
}

/// The dense schedule for the window `[start, end]`: every `every` steps from the starting checkpoint, the
/// original checkpoints in between, and `end`.
pub fn plan(
    source: &RunLayout,
    start: u64,
    end: u64,
    every: u64,
) -> Result<ReplayPlan, TrainError> {
    let manifest = source.read_manifest()?;
    let saved = checkpoint::list(&source.checkpoints())?;
    let end = end.min(manifest.steps);
    let from = *saved.iter().rev().find(|&&s| s <= start).ok_or_else(|| {
        error(
            source,
            &format!("has no checkpoint at or before step {start}"),
        )
    })?;
    let every = every.max(1);
    let mut checkpoints: Vec<u64> = (0..)
        .map(|k| from + k * every)
        .take_while(|&s| s <= end)
        .collect();
    let verify: Vec<u64> = saved
        .iter()
        .copied()
        .filter(|&s| s > from && s <= end)
        .collect();
    checkpoints.extend(&verify);
    checkpoints.push(end);
    checkpoints.sort();
    checkpoints.dedup();
    Ok(ReplayPlan {
        from,
        schedule: ReplaySchedule {
            checkpoints,
            stop_at: end,
        },
        verify,
    })
}

/// Creates the replay directory `dest` from `source`: the same config and probe set, a manifest named
/// `run_id` with the dense schedule, and a copy of the starting checkpoint, all at once ([`create_staged`]). A
/// `dest` that already holds this replay is left as it is (an interrupted replay resumes); one holding another
/// plan is refused. Returns the write lock of `dest`.
pub fn prepare(
    source: &RunLayout,
    dest: &RunLayout,
    plan: &ReplayPlan,
    run_id: &str,
) -> Result<DirLock, TrainError> {
    let mut manifest = source.read_manifest()?;
    manifest.run_id = run_id.to_owned();
    manifest.steps = plan.schedule.stop_at;
    manifest.checkpoint_steps = plan.schedule.checkpoints.clone();
    if dest.manifest().exists() {
        let lock = DirLock::acquire(&dest.root, "formation replay")?;
        let existing = dest.read_manifest()?;
        if existing != manifest {
            return Err(error(
                dest,
                "holds a replay with another schedule; remove it or pass the same --every",
            ));
        }
        return Ok(lock);
    }
    let config = source.read_config()?;
    let lock = create_staged(&dest.root, "formation replay", |staging| {
        let staged = RunLayout::new(staging);
        staged.create(&config, &manifest)?;
        let probe = source.probe_set();
        if probe.exists() {
            let dir = staged.probes_dir();
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            copy(&probe, &staged.probe_set())?;
        }
        let name = checkpoint::step_dir_name(plan.from);
        let (from_dir, to_dir) = (
            source.checkpoints().join(&name),
            staged.checkpoints().join(&name),
        );
        std::fs::create_dir_all(&to_dir).map_err(io(&to_dir))?;
        for entry in std::fs::read_dir(&from_dir).map_err(io(&from_dir))? {
            let entry = entry.map_err(io(&from_dir))?;
            copy(&entry.path(), &to_dir.join(entry.file_name()))?;
        }
        Ok::<(), TrainError>(())
    })?;
    Ok(lock)
}

/// One original checkpoint compared with its replay.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verification {
    pub step: u64,
    /// The weights hash the same (bit-identical).
    pub identical: bool,
    /// Largest absolute difference over every parameter (0 when identical).
    pub max_abs_diff: f32,
}

/// Compares the weights of `dest`'s checkpoints at `steps` with `source`'s.
pub fn verify(
    source: &RunLayout,
    dest: &RunLayout,
    steps: &[u64],
    dims: &ModelDims,
    device: &Device,
) -> Result<Vec<Verification>, TrainError> {
    steps
        .iter()
        .map(|&step| {
            let (a, b) = (
                checkpoint::step_dir(&source.checkpoints(), step),
                checkpoint::step_dir(&dest.checkpoints(), step),
            );
            let (sa, sb) = (checkpoint::read_state(&a)?, checkpoint::read_state(&b)?);
            if sa.weights_sha256 == sb.weights_sha256 {
                return Ok(Verification {
                    step,
                    identical: true,
                    max_abs_diff: 0.0,
                });
            }
            let load = |dir: &Path| checkpoint::load_model(dir, Transformer::new(dims, 0, device));
            let (ma, mb) = (load(&a)?.0, load(&b)?.0);
            let (pa, pb) = (
                crate::export::named_parameters(&ma),
                crate::export::named_parameters(&mb),
            );
            let max_abs_diff = pa
                .iter()
                .zip(&pb)
                .flat_map(|((_, (_, x)), (_, (_, y)))| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
                .fold(0.0, f32::max);
            Ok(Verification {
                step,
                identical: false,
                max_abs_diff,
            })
        })
        .collect()
}

fn copy(from: &Path, to: &Path) -> Result<(), TrainError> {
    std::fs::copy(from, to).map(|_| ()).map_err(io(to))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_owned(),
        source,
    }
}

fn error(run: &RunLayout, why: &str) -> TrainError {
    TrainError::RunLayout {
        path: run.root.clone(),
        why: why.to_owned(),
    }
}
