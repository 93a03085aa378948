//! `formation train CONFIG [--analyze] [--out DIR] [--resume DIR]`.

use std::path::PathBuf;

use analysis::AnalyzePlugin;
use analysis::in_loop_llc::InLoopLlc;
use anyhow::{Context, bail};
use host::layout::RunLayout;
use host::lock::DirLock;
use probes::ProbeSet;
use trainer::Config;
use trainer::plugin::{CheckpointPlugin, NoPlugin, Plugins};
use trainer::run_dir::RunFiles;
use trainer::tasks::{self, Task};
use trainer::train_loop::{Start, TrainJob, train};

use crate::progress::Display;

#[derive(clap::Args)]
pub struct Args {
    /// The run's TOML config (see examples/).
    pub(crate) config: PathBuf,
    /// Analyze every checkpoint in-loop (probe set, metrics, analysis/checkpoint_metrics.jsonl + activations.h5).
    #[arg(long)]
    pub(crate) analyze: bool,
    /// Run directory to create (default: runs/<config file stem>).
    #[arg(long, conflicts_with = "resume")]
    pub(crate) out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint (CONFIG must equal its config.toml).
    #[arg(long)]
    pub(crate) resume: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    run_with(args, &mut Display::new())
}

/// `formation train` showing its steps on `display` (one display across `formation trace`'s stages).
pub(crate) fn run_with(args: Args, display: &mut Display) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let (root, resume) = match (&args.resume, &args.out) {
        (Some(dir), _) => {
            if !RunLayout::new(dir).exists() {
                bail!(
                    "cannot resume {}: it is not a run directory (no run.json; a run killed before its first \
                     checkpoint leaves none), so start it with --out {}",
                    dir.display(),
                    dir.display()
                );
            }
            (dir.clone(), true)
        }
        (None, Some(out)) => (out.clone(), false),
        (None, None) => (default_run_dir(&args.config), false),
    };
    let run = RunLayout::new(&root);
    let lock = resume
        .then(|| DirLock::acquire(&root, "formation train --resume"))
        .transpose()?;
    // Read (and, for a data-defined task, validated) before anything is created.
    let task = tasks::build(&config.task, config.train.seed)?;
    let (device, device_name) = trainer::device::pick();
    let (mut plugin, probe_set_sha256) = if args.analyze {
        let (analyze, hash) = analyze_plugin(&config, task.as_ref(), &run, resume, &device)?;
        display.watch_queue(analyze.queue_depth());
        let mut plugins: Vec<Box<dyn CheckpointPlugin>> = vec![Box::new(analyze)];
        if let Some(llc) = InLoopLlc::new(&config)? {
            let plan = llc.plan();
            crate::say!(
                "LLC in the loop at {} of the checkpoints, {} chains x {} draws: {} SGLD steps for {} training steps",
                plan.steps.len(),
                config.llc.chains,
                plan.draws,
                plan.sgld_steps,
                config.train.steps
            );
            plugins.push(Box::new(llc));
        }
        (
            Box::new(Plugins(plugins)) as Box<dyn CheckpointPlugin>,
            Some(hash),
        )
    } else {
        (Box::new(NoPlugin) as Box<dyn CheckpointPlugin>, None)
    };
    let job = TrainJob {
        config: &config,
        task: task.as_ref(),
        run: &run,
        start: match &lock {
            Some(lock) => Start::Resume(lock),
            None => Start::New,
        },
        device,
        device_name: device_name.to_owned(),
        probe_set_sha256,
        replay: None,
    };
    let summary = train(job, plugin.as_mut(), &mut |p| display.update(p))
        .with_context(|| format!("training {}", root.display()))?;
    display.finish();
    if summary.already_complete {
        crate::say!(
            "run {} is already complete ({} steps); nothing changed in {}",
            summary.run_id,
            summary.steps,
            root.display()
        );
        return Ok(());
    }
    let accuracy = summary
        .final_eval
        .map(|e| {
            let acc = |s: Option<trainer::eval::SplitScore>| {
                s.map(|s| format!("{:.4}", s.accuracy))
                    .unwrap_or("-".into())
            };
            format!(
                ", final train accuracy {}, test accuracy {}",
                acc(e.train),
                acc(e.test)
            )
        })
        .unwrap_or_default();
    crate::say!(
        "run {} finished {} steps in {:.1} s{} -> {}",
        summary.run_id,
        summary.steps,
        summary.wall_s,
        accuracy,
        root.display()
    );
    Ok(())
}

/// Where a run of `config` goes when no directory is given: `runs/<config file stem>`.
pub(crate) fn default_run_dir(config: &std::path::Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or("run".into());
    PathBuf::from("runs").join(stem)
}

/// The `--analyze` plugin of a run and the content hash of its probe set.
pub fn analyze_plugin(
    config: &Config,
    task: &dyn Task,
    run: &RunLayout,
    resume: bool,
    device: &burn::prelude::Device,
) -> anyhow::Result<(AnalyzePlugin, String)> {
    if config.analysis.fourier_progress && (task.fourier_grid().is_none() || config.model.attn_only)
    {
        bail!(
            "analysis.fourier_progress needs a task with a Fourier grid (modular addition) and a model with MLPs; \
             {} has {}",
            task.name(),
            if task.fourier_grid().is_none() {
                "no Fourier grid"
            } else {
                "no MLPs (attn_only)"
            }
        );
    }
    let probe = probe_set(config, task, run, resume)?;
    let hash = probe.sha256();
    Ok((
        AnalyzePlugin::new(config.analysis.clone(), probe, task.declared(), device),
        hash,
    ))
}

/// The probe set of this run: on resume the run's own, verified against its manifest; otherwise the file the
/// config names, or a fresh one generated from the task and `analysis.probe_seed`.
fn probe_set(
    config: &Config,
    task: &dyn Task,
    run: &RunLayout,
    resume: bool,
) -> anyhow::Result<ProbeSet> {
    let generate =
        || ProbeSet::generate(task, config.analysis.probe_size, config.analysis.probe_seed);
    let (path, set) = if resume {
        let manifest = run.read_manifest()?;
        let hash = manifest.probe_set_sha256.with_context(|| {
            format!(
                "cannot resume {} with --analyze: it was started without --analyze",
                run.root.display()
            )
        })?;
        let path = run.probe_set();
        if !path.exists() {
            // A kill between pinning the hash and writing the file (older versions pinned first): the probe
            // set is a pure function of the config, so it is made again, and used only if it is the pinned one.
            let set = generate();
            if config.analysis.probe_set.is_none() && set.sha256() == hash {
                std::fs::create_dir_all(path.parent().expect("probe set path has a parent"))?;
                set.save(&path)?;
            }
        }
        (path.clone(), ProbeSet::load_pinned(&path, &hash)?)
    } else if let Some(path) = &config.analysis.probe_set {
        (path.clone(), ProbeSet::load(path)?)
    } else {
        return Ok(generate());
    };
    set.check_matches(task, &path)?;
    Ok(set)
}
