//! `formation sweep RUN_DIR`: the every-checkpoint analysis of `train --analyze`, run afterwards over a run's
//! saved checkpoints (same metric code, same files). Interrupted, it continues where it stopped.

use std::path::PathBuf;

use anyhow::Context;
use host::layout::RunLayout;
use host::lock::DirLock;
use trainer::plugin::CheckpointPlugin;
use trainer::run_dir::RunFiles;
use trainer::sweep::sweep_checkpoints;
use trainer::tasks;
use trainer::train_loop::Progress;

use crate::commands::train::analyze_plugin;
use crate::progress::Display;

#[derive(clap::Args)]
pub struct Args {
    /// A run directory written by `formation train` (with or without --analyze).
    run_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let run = RunLayout::new(&args.run_dir);
    let mut display = Display::new();
    let swept = sweep(&run, &mut |p| display.update(p))?;
    display.finish();
    let manifest = run.read_manifest()?;
    if swept == 0 {
        crate::say!(
            "{}: every scheduled checkpoint is already analyzed",
            run.root.display()
        );
    } else {
        crate::say!(
            "analyzed {swept} checkpoints of {} -> {}",
            manifest.run_id,
            run.metrics().display()
        );
    }
    Ok(())
}

/// Sweeps `run` (see the module doc); returns the number of checkpoints analyzed now.
pub fn sweep(run: &RunLayout, progress: &mut dyn FnMut(Progress)) -> anyhow::Result<usize> {
    let mut manifest = run.read_manifest()?;
    let lock = DirLock::acquire(&run.root, "formation sweep")?;
    let config = run.read_config()?;
    let (device, _) = trainer::device::pick();
    // A run trained without --analyze gets its probe set now, pinned in run.json like train would have: the
    // file first, then its hash (a kill in between leaves an unpinned file that the next sweep rewrites).
    let pinned = manifest.probe_set_sha256.is_some();
    let task = tasks::build(&config.task, config.train.seed)?;
    let (mut plugin, hash) = analyze_plugin(&config, task.as_ref(), run, pinned, &device)?;
    if !pinned {
        plugin.on_create(run).map_err(|e| anyhow::anyhow!(e))?;
        host::failpoint::hit("sweep-probe-set");
        manifest.probe_set_sha256 = Some(hash);
        run.write_manifest(&manifest)?;
    }
    sweep_checkpoints(run, &lock, task.as_ref(), &device, &mut plugin, progress)
        .with_context(|| format!("sweeping {}", run.root.display()))
}
