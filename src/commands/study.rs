//! Phases B and C: `formation replicate CONFIG --seeds 0..5` and `formation screen CONFIG --factor KEY=V1,V2`
//! plan a study (one run per seed, or per factor value × seed) and run it locally (`-j J` at once) or write a
//! Slurm array script (`--slurm`); `formation collect STUDY_DIR` reports where every run stands;
//! `formation study-task STUDY_DIR NAME` is the one run's process (what both engines start).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use host::layout::StudyLayout;
use host::lock::DirLock;
use study::slurm::array_script;
use study::study::{
    Factor, RunState, RunStatus, StatusState, StudyFiles, StudyKind, StudyManifest, parse_seeds,
    plan,
};
use trainer::Config;

use crate::commands::{train, windows};
use crate::study_runner::run_local;

/// How and where a study runs (shared by replicate and screen).
#[derive(clap::Args)]
pub struct Engine {
    /// Study directory (default: studies/<config stem>-seeds or studies/<config stem>-<KEY>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Runs at once (locally), or the array's limit on tasks at once (with --slurm).
    #[arg(short = 'j', long = "jobs", default_value_t = 1)]
    jobs: usize,
    /// Write a Slurm array script (STUDY_DIR/slurm/array.sbatch) instead of running.
    #[arg(long)]
    slurm: bool,
    /// Slurm partition (overrides the config's [slurm] partition).
    #[arg(long, requires = "slurm")]
    partition: Option<String>,
    /// CPUs per array task (overrides [slurm] cpus_per_task).
    #[arg(long, requires = "slurm")]
    cpus_per_task: Option<usize>,
    /// Memory per array task, Slurm syntax (overrides [slurm] mem).
    #[arg(long, requires = "slurm")]
    mem: Option<String>,
    /// Time limit per array task, Slurm syntax (overrides [slurm] time).
    #[arg(long, requires = "slurm")]
    time: Option<String>,
}

#[derive(clap::Args)]
pub struct ReplicateArgs {
    /// The config every seed trains (its own train.seed is replaced).
    config: PathBuf,
    /// Seeds: a range (0..5 is 0 to 4, 0..=4 the same) or a list (1,3,7).
    #[arg(long)]
    seeds: String,
    #[command(flatten)]
    engine: Engine,
}

#[derive(clap::Args)]
pub struct ScreenArgs {
    /// The base config; the factor changes one key of it.
    config: PathBuf,
    /// The key (any config path, e.g. optim.lr, task.train_fraction, model.n_heads) and its values.
    #[arg(long, value_name = "KEY=V1,V2,...")]
    factor: String,
    /// Seeds per value (default: the config's train.seed).
    #[arg(long)]
    seeds: Option<String>,
    #[command(flatten)]
    engine: Engine,
}

#[derive(clap::Args)]
pub struct CollectArgs {
    /// A study directory (from replicate or screen, run locally or on Slurm).
    study_dir: PathBuf,
}

#[derive(clap::Args)]
pub struct TaskArgs {
    /// The study directory.
    study_dir: PathBuf,
    /// The run's name in study.json.
    name: String,
}

pub fn replicate(args: ReplicateArgs) -> anyhow::Result<()> {
    let base = Config::load(&args.config)?;
    let seeds = parse_seeds(&args.seeds)?;
    let default = default_dir(&args.config, "seeds");
    start(
        StudyKind::Replicate,
        &args.config,
        &base,
        &seeds,
        None,
        args.engine,
        default,
    )
}

pub fn screen(args: ScreenArgs) -> anyhow::Result<()> {
    let base = Config::load(&args.config)?;
    let factor = Factor::parse(&args.factor)?;
    let seeds = match &args.seeds {
        Some(text) => parse_seeds(text)?,
        None => vec![base.train.seed],
    };
    let default = default_dir(&args.config, &factor.key);
    start(
        StudyKind::Screen,
        &args.config,
        &base,
        &seeds,
        Some(&factor),
        args.engine,
        default,
    )
}

fn default_dir(config: &Path, suffix: &str) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or("study".into());
    PathBuf::from("studies").join(format!("{stem}-{suffix}"))
}

/// Plans the study (every run's config validated first), writes or checks it, then runs what is unfinished.
fn start(
    kind: StudyKind,
    config_path: &Path,
    base: &Config,
    seeds: &[u64],
    factor: Option<&Factor>,
    engine: Engine,
    default: PathBuf,
) -> anyhow::Result<()> {
    if engine.jobs == 0 {
        bail!("-j must be at least 1");
    }
    let (manifest, configs) = plan(kind, base, config_path, seeds, factor)?;
    // Every dataset a run will read is checked now, so that a bad one fails the study before it starts.
    let mut datasets: Vec<&std::path::Path> = vec![];
    for config in &configs {
        if let trainer::config::TaskConfig::Sequences { path } = &*config.task
            && !datasets.contains(&path.as_path())
        {
            trainer::tasks::dataset::Dataset::load(path)?;
            datasets.push(path);
        }
    }
    let study = StudyLayout::new(engine.out.clone().unwrap_or(default));
    let _lock = study.prepare(&manifest, &configs)?;
    if engine.slurm {
        return write_slurm(&study, &manifest, base, &engine);
    }
    run_local(&study, &manifest, engine.jobs)
}

fn write_slurm(
    study: &StudyLayout,
    manifest: &StudyManifest,
    base: &Config,
    engine: &Engine,
) -> anyhow::Result<()> {
    let resources = base.slurm.edit(|resources| {
        if let Some(p) = &engine.partition {
            resources.partition = Some(p.clone());
        }
        if let Some(c) = engine.cpus_per_task {
            resources.cpus_per_task = c;
        }
        if let Some(m) = &engine.mem {
            resources.mem = m.clone();
        }
        if let Some(t) = &engine.time {
            resources.time = t.clone();
        }
        if engine.jobs > 1 {
            resources.max_parallel = Some(engine.jobs);
        }
    })?;
    let unfinished: Vec<String> = manifest
        .runs
        .iter()
        .filter(|r| study.state(&r.name) != RunState::Done)
        .map(|r| r.name.clone())
        .collect();
    if unfinished.is_empty() {
        crate::say!(
            "every run of {} is done; nothing to submit",
            study.root.display()
        );
        return Ok(());
    }
    // The tasks run on other nodes: they need absolute paths to the binary and the study.
    let exe = std::env::current_exe().context("locating the formation binary")?;
    let root = std::path::absolute(&study.root)
        .with_context(|| format!("resolving {}", study.root.display()))?;
    let script = array_script(&StudyLayout::new(root), &unfinished, &exe, &resources);
    let path = study.sbatch();
    std::fs::create_dir_all(path.parent().expect("sbatch path has a parent"))
        .with_context(|| format!("creating {}", path.display()))?;
    host::files::write_atomic(&path, script.as_bytes())?;
    crate::say!(
        "wrote {} ({} array tasks of {} runs; finished runs are left out)\nsubmit:  sbatch {}\nthen:    formation collect {}",
        path.display(),
        unfinished.len(),
        manifest.runs.len(),
        path.display(),
        study.root.display()
    );
    Ok(())
}

/// One run of a study, as its own process: trains with analysis (resuming an interrupted run), finds the
/// windows, and records the outcome in `status/NAME.json`.
pub fn task(args: TaskArgs) -> anyhow::Result<()> {
    die_with_parent()?;
    let study = StudyLayout::new(&args.study_dir);
    let manifest = study.read_manifest()?;
    if !manifest.runs.iter().any(|r| r.name == args.name) {
        bail!(
            "{} has no run named {}",
            study.manifest().display(),
            args.name
        );
    }
    // One process per run: a second study (or a rerun while an orphan still trains) is refused here.
    let _lock = DirLock::acquire_file(
        &study.status_lock(&args.name),
        &study.run(&args.name).root,
        "formation study-task",
    )?;
    if study.state(&args.name) == RunState::Done {
        crate::say!("{} is already done", args.name);
        return Ok(());
    }
    let status = |state, error| RunStatus {
        state,
        error,
        host: hostname(),
        pid: std::process::id(),
    };
    study.write_status(&args.name, &status(StatusState::Running, None))?;
    let outcome = train_and_find_windows(&study, &args.name);
    let (state, error) = match &outcome {
        Ok(()) => (StatusState::Done, None),
        Err(err) => (StatusState::Failed, Some(crate::one_sentence(err))),
    };
    study.write_status(&args.name, &status(state, error))?;
    outcome
}

/// The environment variable through which a local study hands its pid to the runs it starts.
pub const PARENT_PID_ENV: &str = "FORMATION_STUDY_PARENT";

/// A run started by a local study dies with it (the kernel sends SIGKILL when the parent ends), so that a
/// killed study leaves no orphan writing on; its run resumes when the study is run again. A run whose parent is
/// already gone stops at once. Runs started by Slurm have no such parent.
fn die_with_parent() -> anyhow::Result<()> {
    let Some(parent) = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return Ok(());
    };
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .context("asking to die with the study process")?;
    let current = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
    if current != parent {
        bail!("the study process that started this run (pid {parent}) is gone");
    }
    Ok(())
}

fn train_and_find_windows(study: &StudyLayout, name: &str) -> anyhow::Result<()> {
    let run = study.run(name);
    // A run directory appears whole (run.json with its first checkpoint), so it either resumes or starts anew.
    let resume = run.exists();
    let run_dir = run.root;
    train::run(train::Args {
        config: study.config(name),
        analyze: true,
        out: (!resume).then(|| run_dir.clone()),
        resume: resume.then(|| run_dir.clone()),
    })?;
    windows::run(windows::Args {
        run_dir,
        config: None,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// `formation collect STUDY_DIR`: every run's state; fails while some are not done.
pub fn collect(args: CollectArgs) -> anyhow::Result<()> {
    let study = StudyLayout::new(&args.study_dir);
    let manifest = study.read_manifest()?;
    let mut not_done = vec![];
    crate::say!(
        "{:<32} {:>6} {:<10} {:>12}  note",
        "run",
        "seed",
        "state",
        "step"
    );
    for run in &manifest.runs {
        let state = study.state(&run.name);
        let total = Config::load(&study.config(&run.name))?.train.steps;
        let (step, note) = match &state {
            RunState::Done => (Some(total), String::new()),
            RunState::Pending => (None, "not started".into()),
            RunState::Started { step } => (*step, "running, or stopped: re-run resumes it".into()),
            RunState::Failed { error, step } => (
                *step,
                format!("{error} (log: {})", study.log(&run.name).display()),
            ),
        };
        let step = step.map(|s| format!("{s}/{total}")).unwrap_or("-".into());
        crate::say!(
            "{:<32} {:>6} {:<10} {:>12}  {note}",
            run.name,
            run.seed,
            state.label(),
            step
        );
        if state != RunState::Done {
            not_done.push(run.name.clone());
        }
    }
    if !not_done.is_empty() {
        bail!(
            "{} of {} runs are not done ({}); re-run the study command (or resubmit its Slurm script) to continue them",
            not_done.len(),
            manifest.runs.len(),
            not_done.join(", ")
        );
    }
    crate::say!(
        "all {} runs done; compare them with: formation compare {}",
        manifest.runs.len(),
        study.root.display()
    );
    Ok(())
}
