//! `formation replay RUN_DIR --window N [--every K]`: re-train birth window `WN` densely from the last saved
//! checkpoint at or before its start, analyze every dense checkpoint, write everything under
//! `RUN_DIR/windows/WN/` (a run directory of the usual layout) and verify the replay against the original
//! checkpoints inside the window.

use std::path::PathBuf;

use analysis::interventions::run::cannot_run;
use analysis::windows::read_windows;
use anyhow::{Context, bail};
use host::files::write_atomic;
use host::layout::RunLayout;
use trainer::config::InterventionKind;
use trainer::model::ModelDims;
use trainer::replay::{plan, prepare, verify};
use trainer::run_dir::RunFiles;
use trainer::tasks;
use trainer::train_loop::{Start, TrainJob, train};

use crate::commands::features::features_across;
use crate::commands::intervene::{intervene, report_path};
use crate::commands::train::analyze_plugin;
use crate::progress::Display;

#[derive(clap::Args)]
pub struct Args {
    /// An analyzed run directory on which `formation windows` has run.
    run_dir: PathBuf,
    /// The window to replay: N of `WN` in analysis/birth_windows.json.
    #[arg(long)]
    window: usize,
    /// Checkpoint (and analyze) every K steps inside the window (default: a fortieth of the window, at least 1).
    #[arg(long)]
    every: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    replay_window(
        &RunLayout::new(&args.run_dir),
        &format!("W{}", args.window),
        args.every,
        &mut Display::new(),
    )
}

/// Replays window `name` (`WN`) of `run` (every `every` steps, default a fortieth of the window), verifies it and runs
/// the config's window interventions at every replayed checkpoint, showing the steps on `display`. Everything
/// already done is kept: an interrupted replay resumes from its last dense checkpoint, and an intervention
/// whose report is on disk is not run again.
pub(crate) fn replay_window(
    run: &RunLayout,
    name: &str,
    every: Option<u64>,
    display: &mut Display,
) -> anyhow::Result<()> {
    let manifest = run.read_manifest()?;
    let config = run.read_config()?;
    let windows = read_windows(run)?;
    let window = windows
        .iter()
        .find(|w| w.id == name)
        .with_context(|| format!("{} has no window {name}", run.birth_windows().display()))?;
    let (start, end) = (window.start_step, window.end_step);
    let every = every.unwrap_or(((end - start) / 40).max(1));
    if every == 0 {
        bail!("--every must be at least 1");
    }
    if manifest.probe_set_sha256.is_none() {
        bail!(
            "{} has no probe set pinned; train it with --analyze or run `formation sweep` first",
            run.root.display()
        );
    }
    let task = tasks::build(&config.task, config.train.seed)?;
    trainer::run_dir::check_same_dataset(&manifest, &config, task.as_ref())?;
    let plan = plan(run, start, end, every)?;
    let dest = run.window(name);
    let lock = prepare(run, &dest, &plan, &format!("{}-{name}", manifest.run_id))?;

    let (device, device_name) = trainer::device::pick();
    let (mut plugin, _) = analyze_plugin(&config, task.as_ref(), &dest, true, &device)?;
    display.watch_queue(plugin.queue_depth());
    let job = TrainJob {
        config: &config,
        task: task.as_ref(),
        run: &dest,
        start: Start::Resume(&lock),
        device: device.clone(),
        device_name: device_name.to_owned(),
        probe_set_sha256: None,
        replay: Some(plan.schedule.clone()),
    };
    train(job, &mut plugin, &mut |p| display.update(p))
        .with_context(|| format!("replaying {name} in {}", dest.root.display()))?;
    display.finish();

    let dims = ModelDims::new(&config, task.as_ref());
    let checks = verify(run, &dest, &plan.verify, &dims, &device)?;
    let report = serde_json::json!({
        "window": name,
        "window_steps": [start, end],
        "from_checkpoint": plan.from,
        "every": every,
        "checkpoints": plan.schedule.checkpoints,
        "verification": checks,
        "bit_exact": checks.iter().all(|c| c.identical),
    });
    write_atomic(
        &dest.replay_report(),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    crate::say!(
        "replayed {name} (steps {start}–{end}) from checkpoint {} every {every} steps: {} checkpoints analyzed -> {}",
        plan.from,
        plan.schedule.checkpoints.len(),
        dest.root.display()
    );
    for check in &checks {
        crate::say!(
            "  step {:>7}: {}",
            check.step,
            if check.identical {
                "weights bit-identical to the original checkpoint".to_owned()
            } else {
                format!("weights DIFFER (max |Δ| = {:.3e})", check.max_abs_diff)
            }
        );
    }
    if let Some(bad) = checks.iter().find(|c| !c.identical) {
        bail!(
            "the replay of {name} is not bit-exact: at step {} the weights differ from the original by up to {:.3e}",
            bad.step,
            bad.max_abs_diff
        );
    }
    window_analyses(
        &dest,
        &config,
        task.as_ref(),
        &dims,
        &plan.schedule.checkpoints,
        name,
        display,
    )
}

/// The window analyses `config` asks for (`[interventions] in_windows`) at every replayed checkpoint `steps` of
/// window `name` in `dest`; what a killed replay finished stays done. Features are the window form:
/// dictionaries across the dense checkpoints, each warm-started from the one before, so that latents keep their
/// identity and get birth steps. One the task or model cannot run (patching without a declared corruption, …)
/// is skipped with a note, so the default list serves every task.
fn window_analyses(
    dest: &RunLayout,
    config: &trainer::Config,
    task: &dyn tasks::Task,
    dims: &ModelDims,
    steps: &[u64],
    name: &str,
    display: &mut Display,
) -> anyhow::Result<()> {
    let kinds: Vec<InterventionKind> = config
        .interventions
        .in_windows
        .iter()
        .copied()
        .filter(|&k| k != InterventionKind::Features)
        .filter(|&kind| match cannot_run(kind, task, dims) {
            Some(why) => {
                eprintln!("note: the window analyses of {name} skip {kind:?}: {why}");
                false
            }
            None => true,
        })
        .collect();
    if config
        .interventions
        .in_windows
        .contains(&InterventionKind::Features)
    {
        let done = std::fs::read(dest.features())
            .ok()
            .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
            .is_some_and(|summary| summary["steps"] == serde_json::json!(steps));
        if !done {
            let (out, born, latents) = features_across(dest, config, steps)
                .with_context(|| format!("features across {name}"))?;
            crate::say!(
                "features: {born} of {latents} latents born in {name} -> {}",
                out.display()
            );
        }
    }
    if !kinds.is_empty() {
        let mut ran = 0;
        let total = (steps.len() * kinds.len()) as u64;
        let work = steps
            .iter()
            .flat_map(|&step| kinds.iter().map(move |&kind| (step, kind)));
        for (done, (step, kind)) in work.enumerate() {
            display.count("window interventions", done as u64, total);
            if report_path(dest, step, kind).exists() {
                continue;
            }
            intervene(dest, step, kind)
                .with_context(|| format!("{kind:?} at step {step} of {name}"))?;
            ran += 1;
        }
        display.count("window interventions", total, total);
        display.finish();
        crate::say!(
            "{:?} at {} checkpoints ({ran} run now, the rest done before) -> {}",
            kinds,
            steps.len(),
            dest.interventions_dir().display()
        );
    }
    Ok(())
}
