//! `formation-bench`, the benchmarks of BENCHMARKS.md as their own binary (built with the same release profile
//! and allocator as `formation`). `formation-bench train CONFIG`: training steps/s of our loop, side by side with the equivalent PyTorch CPU
//! script (`bench/torch_reference.py`) in the same run, as a ratio. Rounds alternate so that both see the same
//! machine state.

// Benchmarks run with the allocator the product runs with.
#[global_allocator]
static ALLOCATOR: host::alloc::Routed = host::alloc::Routed;

mod features;
mod memory;
mod reproduce;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use trainer::Config;
use trainer::model::{ModelDims, Transformer};
use trainer::tasks;
use trainer::train_loop::{Stepper, make_optimizer};

/// Benchmarks of formation, printed as Markdown tables for BENCHMARKS.md.
#[derive(clap::Parser)]
#[command(name = "formation-bench", version)]
struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Training step time vs the PyTorch reference script.
    Train(TrainArgs),
    /// Wall time of `train --analyze` vs `train`, and where the analysis time goes.
    Analyze(AnalyzeArgs),
    /// Per-checkpoint analysis cost in-loop (zero reload, the trainer only captures) vs `formation sweep`
    /// afterwards (loads each checkpoint).
    Sweep(AnalyzeArgs),
    /// A data-defined task of N sequences (a built-in task's stream, exported): load time and peak memory, and
    /// training step time vs the same task built in.
    Dataset(DatasetArgs),
    /// The reproduction set of docs/reproductions.md: per published formation result, the value measured
    /// here next to the published one.
    Reproduce(reproduce::ReproduceArgs),
    /// Training time of one sparse dictionary (TopK SAE) at a model's width, on planted activations.
    Features(features::FeaturesArgs),
    /// Peak resident memory of `train` and `train --analyze`, each its own process.
    Memory(memory::MemoryArgs),
}

#[derive(clap::Args)]
struct DatasetArgs {
    /// A built-in task's config (e.g. bench/induction-64.toml: 64 tokens per sequence).
    config: PathBuf,
    /// Training sequences to export and load.
    #[arg(long, default_value_t = 1_000_000)]
    sequences: usize,
    /// Timed steps per round.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Alternating rounds (built in, data-defined, …).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(clap::Args)]
struct AnalyzeArgs {
    /// Configs to measure, each with its own checkpoint schedule.
    #[arg(required = true)]
    configs: Vec<PathBuf>,
    /// Train only this many steps (the schedule's checkpoints up to there); default: the config's steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Alternating rounds (train, train --analyze, then the other way round, …).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Turn on every optional per-checkpoint analysis: TensorBoard events and, where the task has a Fourier
    /// grid and the model MLPs, Nanda et al.'s progress measures (`[analysis] fourier_progress`).
    #[arg(long)]
    every_metric: bool,
}

impl AnalyzeArgs {
    /// The config at `path` with these arguments' step cap and optional analyses applied.
    fn load(&self, path: &std::path::Path) -> anyhow::Result<Config> {
        let mut config = Config::load(path)?;
        if let Some(steps) = self.steps {
            config.train = config
                .train
                .edit(|train| train.steps = steps.min(train.steps))?;
        }
        if self.every_metric {
            let task = trainer::tasks::build(&config.task, config.train.seed)?;
            let fourier = task.fourier_grid().is_some() && !config.model.attn_only;
            config.analysis = config.analysis.edit(|analysis| {
                analysis.tensorboard = true;
                analysis.fourier_progress = fourier;
            })?;
        }
        Ok(config)
    }
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Configs to measure (e.g. examples/modular-addition.toml examples/induction.toml).
    #[arg(required = true)]
    configs: Vec<PathBuf>,
    /// Timed steps per round.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Untimed steps before each round.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Alternating rounds (ours, PyTorch, ours, …).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Skip the PyTorch side.
    #[arg(long)]
    no_torch: bool,
    /// Python interpreter with torch installed.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Time only one of our two forwards (e.g. to profile it); the other's columns print "-".
    #[arg(long, value_enum)]
    only: Option<Forward>,
}

/// Our two ways of running a training step's forward.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Forward {
    /// The answer-only forward training uses.
    Answer,
    /// Every position of every block, then the answer rows (like for like with PyTorch).
    Full,
}

fn main() {
    host::alloc::hold_freed_pages();
    let args = Args::parse();
    if let Err(err) = run(args) {
        eprintln!("error: {}", formation::one_sentence(&err));
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Train(args) => bench_train(args),
        What::Analyze(args) => bench_analyze(args),
        What::Sweep(args) => bench_sweep(args),
        What::Dataset(args) => bench_dataset(args),
        What::Reproduce(args) => reproduce::run(args),
        What::Features(args) => features::run(args),
        What::Memory(args) => memory::run(args),
    }
}

/// `VmHWM` (peak resident set) or `VmRSS` of this process in MiB, from /proc/self/status.
fn memory_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU seconds (user + system) from a /proc `stat` line: fields 14 and 15, counted after the command name's
/// closing parenthesis (the name may hold spaces), in USER_HZ = 100 ticks per second, what Linux reports on
/// every common architecture.
fn stat_cpu_s(stat: &str) -> Option<f64> {
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
    Some((ticks(14)? + ticks(15)?) / 100.0)
}

/// CPU seconds so far of the whole process (its exited threads included) and of each live thread that is not
/// the analysis sidecar's (the trainer: the main thread and the global rayon pool doing its tensor work), by
/// thread id.
struct CpuTimes {
    process: f64,
    trainer: std::collections::BTreeMap<String, f64>,
}

fn cpu_times() -> CpuTimes {
    let read = |path: PathBuf| std::fs::read_to_string(path).ok();
    let trainer = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|task| {
            // The sidecar's threads are named formation-sidecar and formation-analysis, cut to 15 characters;
            // unnamed threads carry the program's name, formation-bench.
            read(task.path().join("comm")).is_some_and(|name| {
                !["formation-sidec", "formation-analy"]
                    .iter()
                    .any(|sidecar| name.starts_with(sidecar))
            })
        })
        .filter_map(|task| {
            let cpu = stat_cpu_s(&read(task.path().join("stat"))?)?;
            Some((task.file_name().to_string_lossy().into_owned(), cpu))
        })
        .collect();
    CpuTimes {
        process: read("/proc/self/stat".into())
            .as_deref()
            .and_then(stat_cpu_s)
            .unwrap_or(0.0),
        trainer,
    }
}

impl CpuTimes {
    /// (trainer, rest) CPU seconds spent since `before`: the trainer's live threads (a thread started since
    /// counts from zero), and everything else the process spent (the sidecar's threads, exited or not).
    fn since(&self, before: &CpuTimes) -> (f64, f64) {
        let trainer: f64 = self
            .trainer
            .iter()
            .map(|(tid, cpu)| cpu - before.trainer.get(tid).copied().unwrap_or(0.0))
            .sum();
        (trainer, self.process - before.process - trainer)
    }
}

fn bench_dataset(args: DatasetArgs) -> anyhow::Result<()> {
    use trainer::tasks::dataset::Dataset;
    let builtin = Config::load(&args.config)?;
    let dir = scratch_dir(0, "dataset");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&dir)?;
    // Exported by the `formation` binary in its own process, so that this one's peak memory is the load's.
    let formation = std::env::current_exe()?.with_file_name("formation");
    let start = Instant::now();
    let status = Command::new(&formation)
        .args(["task", "export"])
        .arg(&args.config)
        .arg("--out")
        .arg(&data_dir)
        .args(["--name", "bench", "--train-examples"])
        .arg(args.sequences.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {}", formation.display()))?;
    if !status.success() {
        bail!("formation task export failed");
    }
    let export_s = start.elapsed().as_secs_f64();
    let on_disk: u64 = ["tokens.npy", "answers.npy"]
        .iter()
        .filter_map(|f| std::fs::metadata(data_dir.join("train").join(f)).ok())
        .map(|m| m.len())
        .sum();
    let rss_before = memory_mib("VmRSS:").unwrap_or(f64::NAN);
    let start = Instant::now();
    let data = Dataset::load(&data_dir)?;
    let load_s = start.elapsed().as_secs_f64();
    let peak = memory_mib("VmHWM:").unwrap_or(f64::NAN);
    let train = data.split(tasks::Split::Train).expect("exported");
    let (n, seq_len) = (train.n, train.seq_len);
    drop(data);
    let as_data = Config::load(&data_dir.join("config.toml"))?;
    let (mut ours, mut theirs) = (vec![], vec![]);
    for _ in 0..args.rounds {
        theirs.extend(time_ours(&builtin, false, 3, args.steps)?);
        ours.extend(time_ours(&as_data, false, 3, args.steps)?);
    }
    let (a, b) = (median(&mut ours), median(&mut theirs));
    println!(
        "| sequences × tokens | train files on disk | export | load (check + hash) | peak RSS during load | ms/step data-defined | ms/step built in | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {n} × {seq_len} | {:.0} MiB | {export_s:.1} s | {load_s:.2} s | {:.0} MiB (from {rss_before:.0}) | {a:.2} | {b:.2} | {:.2} |",
        on_disk as f64 / (1 << 20) as f64,
        peak,
        a / b
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn bench_train(args: TrainArgs) -> anyhow::Result<()> {
    println!(
        "| config | formation ms/step (answer-only forward) | formation ms/step (full forward) | PyTorch ms/step (full forward) | ratio answer-only / PyTorch | ratio full / PyTorch |"
    );
    println!("|---|---|---|---|---|---|");
    for config_path in &args.configs {
        let config = Config::load(config_path)?;
        let (mut answers, mut full, mut theirs) = (vec![], vec![], vec![]);
        for _ in 0..args.rounds {
            if args.only != Some(Forward::Full) {
                answers.extend(time_ours(&config, false, args.warmup, args.steps)?);
            }
            if args.only != Some(Forward::Answer) {
                full.extend(time_ours(&config, true, args.warmup, args.steps)?);
            }
            if !args.no_torch {
                theirs.extend(time_torch(&args, config_path, &config)?);
            }
        }
        let (a, f, b) = (median(&mut answers), median(&mut full), median(&mut theirs));
        // A side not timed (`--no-torch`, `--only`) is NaN here and prints as "-".
        let shown = |v: f64, digits: usize| {
            if v.is_nan() {
                "-".to_owned()
            } else {
                format!("{v:.digits$}")
            }
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            config_path.display(),
            shown(a, 1),
            shown(f, 1),
            shown(b, 1),
            shown(a / b, 2),
            shown(f / b, 2),
        );
    }
    Ok(())
}

/// Milliseconds of each timed training step of our loop (fresh model, the config's batch and optimizer), with
/// the answer-only forward training uses or the full forward (`full_forward`, like for like with PyTorch).
fn time_ours(
    config: &Config,
    full_forward: bool,
    warmup: usize,
    steps: usize,
) -> anyhow::Result<Vec<f64>> {
    let (device, _) = trainer::device::pick();
    let device = device.autodiff();
    let task = tasks::build(&config.task, config.train.seed)?;
    let dims = ModelDims::new(config, task.as_ref());
    let model = Transformer::new(&dims, config.train.seed, &device);
    let mut optim = make_optimizer(&config.optim);
    let mut stepper = Stepper::new(model, task.as_ref(), config, &device);
    if full_forward {
        stepper = stepper.with_full_forward();
    }
    let mut times = vec![];
    for step in 0..(warmup + steps) as u64 {
        let start = Instant::now();
        let (_, loss) = stepper.step(&mut optim, step);
        loss.into_scalar::<f32>();
        if step >= warmup as u64 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(times)
}

/// The shapes the PyTorch script needs, from our task (so it serves every task, data-defined ones included):
/// vocabularies, context, batch rows, sequence length and answer positions.
fn torch_shapes(config: &Config) -> anyhow::Result<serde_json::Value> {
    let task = tasks::build(&config.task, config.train.seed)?;
    let dims = ModelDims::new(config, task.as_ref());
    let batch = task.train_batch(0, config.train.batch_size);
    Ok(serde_json::json!({
        "d_vocab": dims.d_vocab,
        "d_vocab_out": dims.d_vocab_out,
        "n_ctx": dims.n_ctx,
        "batch": batch.n,
        "seq_len": batch.seq_len,
        "answers": task.answer_positions(),
    }))
}

/// Milliseconds of each timed step of the PyTorch reference script.
fn time_torch(args: &TrainArgs, path: &PathBuf, config: &Config) -> anyhow::Result<Vec<f64>> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/torch_reference.py");
    let output = Command::new(&args.python)
        .arg(&script)
        .arg(path)
        .args(["--shapes", &torch_shapes(config)?.to_string()])
        .args([
            "--steps",
            &args.steps.to_string(),
            "--warmup",
            &args.warmup.to_string(),
            "--threads",
            "2",
        ])
        .output()
        .with_context(|| format!("running {} {}", args.python, script.display()))?;
    if !output.status.success() {
        bail!(
            "the PyTorch reference failed (pass --no-torch to skip it): {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let line: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading the PyTorch timings")?;
    let times = line["ms_per_step"]
        .as_array()
        .context("no ms_per_step in the PyTorch output")?;
    Ok(times.iter().filter_map(|t| t.as_f64()).collect())
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn bench_analyze(args: AnalyzeArgs) -> anyhow::Result<()> {
    println!(
        "| config | steps | checkpoints | train s | train --analyze s | ratio | per-round ratios: geometric mean (each round's) | \
         trainer CPU s (train → --analyze) | \
         trainer CPU ratio | sidecar CPU s | trainer-blocking ms/checkpoint \
         (weight snapshot + send) | sidecar ms/checkpoint (forwards + metrics + writes) | training ms between linear checkpoints | \
         HDF5 bytes/checkpoint |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut families = vec![];
    for path in &args.configs {
        let config = args.load(path)?;
        let (mut plain, mut analyzed, mut last) = (vec![], vec![], None);
        let (mut plain_cpu, mut analyzed_cpu, mut sidecar_cpu) = (vec![], vec![], vec![]);
        // Each round's two runs follow each other, so their ratio is less exposed to the machine's drift over
        // the sitting than the ratio of the medians.
        let mut paired = vec![];
        for round in 0..args.rounds {
            // Which run goes first alternates (ABBA): with plain always first, the analyzed runs came out
            // faster than the plain ones on most examples (ratios 0.91-0.98), a warm-up bias, not a speed-up.
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for analyze in order {
                let (timed, stats) = timed_run(&config, analyze, round)?;
                if analyze {
                    analyzed.push(timed.wall);
                    analyzed_cpu.push(timed.trainer_cpu);
                    sidecar_cpu.push(timed.other_cpu);
                    last = stats;
                } else {
                    plain.push(timed.wall);
                    plain_cpu.push(timed.trainer_cpu);
                }
            }
            paired.push(analyzed[round] / plain[round]);
        }
        let stats = last.context("no analysis statistics")?;
        let (a, b) = (median(&mut plain), median(&mut analyzed));
        let (ca, cb) = (median(&mut plain_cpu), median(&mut analyzed_cpu));
        // Over an even number of rounds each order comes up equally often, so the geometric mean cancels a
        // bias that favours the first (or second) run of a round; this machine's per-round spread is ±10 %.
        let geometric = (paired.iter().map(|r| r.ln()).sum::<f64>() / paired.len() as f64).exp();
        let each: Vec<String> = paired.iter().map(|r| format!("{r:.3}")).collect();
        // Plain training time per step (checkpoint writes included) times the linear cadence.
        let between =
            a * 1e3 / config.train.steps.max(1) as f64 * config.train.checkpoints.every as f64;
        println!(
            "| {} | {} | {} | {a:.2} | {b:.2} | {:.3} | {geometric:.3} ({}) | {ca:.2} → {cb:.2} | {:.3} | {:.2} | {:.1} | {:.1} | {between:.0} | {:.0} |",
            path.display(),
            config.train.steps,
            stats.checkpoints,
            b / a,
            each.join(", "),
            cb / ca,
            median(&mut sidecar_cpu),
            stats.blocking_ms,
            stats.sidecar_ms,
            stats.bytes
        );
        families.push((path.display().to_string(), stats.families));
    }
    println!();
    println!("Where one checkpoint's analysis time goes (mean ms):");
    println!();
    let names: Vec<String> = families
        .iter()
        .flat_map(|(_, f)| f.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    println!("| config | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(names.len()));
    for (path, family) in families {
        let cells: Vec<String> = names
            .iter()
            .map(|n| format!("{:.1}", family.get(n).copied().unwrap_or(0.0)))
            .collect();
        println!("| {path} | {} |", cells.join(" | "));
    }
    Ok(())
}

fn bench_sweep(args: AnalyzeArgs) -> anyhow::Result<()> {
    println!(
        "| config | checkpoints | in-loop: trainer-blocking ms/checkpoint | in-loop: sidecar ms/checkpoint (overlapped) | \
         sweep ms/checkpoint (load + capture + metrics) | ratio (sweep / in-loop trainer-blocking) |"
    );
    println!("|---|---|---|---|---|---|");
    for path in &args.configs {
        let config = args.load(path)?;
        let (mut swept, mut blocking, mut sidecar, mut checkpoints) = (vec![], vec![], vec![], 0);
        for round in 0..args.rounds {
            let dir = scratch_dir(round, "sweep");
            train_into(&config, &dir, false)?;
            let start = Instant::now();
            let run = host::layout::RunLayout::new(&dir);
            checkpoints = formation::commands::sweep::sweep(&run, &mut |_| {})?;
            swept.push(start.elapsed().as_secs_f64() * 1e3 / checkpoints.max(1) as f64);
            std::fs::remove_dir_all(&dir)?;
            let stats = timed_run(&config, true, round)?
                .1
                .context("no analysis statistics")?;
            blocking.push(stats.blocking_ms);
            sidecar.push(stats.sidecar_ms);
        }
        let (s, b, c) = (
            median(&mut swept),
            median(&mut blocking),
            median(&mut sidecar),
        );
        println!(
            "| {} | {checkpoints} | {b:.1} | {c:.1} | {s:.1} | {:.1} |",
            path.display(),
            s / b
        );
    }
    Ok(())
}

/// A scratch run directory for one benchmark round.
fn scratch_dir(round: usize, what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "formation-bench-{}-{round}-{what}",
        std::process::id()
    ))
}

/// Trains `config` into `dir` (replacing it), with or without `--analyze`.
fn train_into(config: &Config, dir: &std::path::Path, analyze: bool) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let run = host::layout::RunLayout::new(dir);
    let (device, device_name) = trainer::device::pick();
    let task = trainer::tasks::build(&config.task, config.train.seed)?;
    let (mut plugin, hash): (Box<dyn trainer::plugin::CheckpointPlugin>, _) = if analyze {
        let (plugin, hash) = formation::commands::train::analyze_plugin(
            config,
            task.as_ref(),
            &run,
            false,
            &device,
        )?;
        (Box::new(plugin), Some(hash))
    } else {
        (Box::new(trainer::plugin::NoPlugin), None)
    };
    let job = trainer::train_loop::TrainJob {
        config,
        task: task.as_ref(),
        run: &run,
        start: trainer::train_loop::Start::New,
        device,
        device_name: device_name.to_owned(),
        probe_set_sha256: hash,
        replay: None,
    };
    trainer::train_loop::train(job, plugin.as_mut(), &mut |_| {})?;
    Ok(())
}

/// Per-checkpoint means of an analyzed run.
struct AnalysisStats {
    checkpoints: usize,
    blocking_ms: f64,
    sidecar_ms: f64,
    bytes: f64,
    /// Trainer-side `capture` and `ablation`, and the sidecar's metric families.
    families: std::collections::BTreeMap<String, f64>,
}

/// One timed run: wall seconds (including draining the sidecar), the trainer's and the rest's CPU seconds.
struct Timed {
    wall: f64,
    trainer_cpu: f64,
    other_cpu: f64,
}

/// Trains `config` in a scratch directory and times it.
fn timed_run(
    config: &Config,
    analyze: bool,
    round: usize,
) -> anyhow::Result<(Timed, Option<AnalysisStats>)> {
    let dir = scratch_dir(round, if analyze { "analyze" } else { "plain" });
    let cpu = cpu_times();
    let start = Instant::now();
    train_into(config, &dir, analyze)?;
    let wall = start.elapsed().as_secs_f64();
    let (trainer_cpu, other_cpu) = cpu_times().since(&cpu);
    let stats = analyze.then(|| analysis_stats(&dir)).transpose()?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    let timed = Timed {
        wall,
        trainer_cpu,
        other_cpu,
    };
    Ok((timed, stats))
}

fn analysis_stats(dir: &std::path::Path) -> anyhow::Result<AnalysisStats> {
    let run = host::layout::RunLayout::new(dir);
    let text = std::fs::read_to_string(run.metrics())?;
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let mean = |f: &dyn Fn(&serde_json::Value) -> f64| {
        rows.iter().map(f).sum::<f64>() / rows.len().max(1) as f64
    };
    let timing = |r: &serde_json::Value, k: &str| r["timing"][k].as_f64().unwrap_or(0.0);
    let mut bytes = 0u64;
    for entry in std::fs::read_dir(run.activations_dir())?.flatten() {
        bytes += entry.metadata()?.len();
    }
    Ok(AnalysisStats {
        checkpoints: rows.len(),
        // The trainer copies the weights and waits for room in the channel; the sidecar runs the forwards, the
        // metrics and the writes.
        blocking_ms: mean(&|r| timing(r, "snapshot_ms") + timing(r, "queue_ms")),
        sidecar_ms: mean(&|r| {
            timing(r, "capture_ms") + timing(r, "ablation_ms") + timing(r, "sidecar_ms")
        }),
        bytes: bytes as f64 / rows.len().max(1) as f64,
        families: {
            let mut names: Vec<String> = vec![
                "snapshot_ms".into(),
                "capture_ms".into(),
                "ablation_ms".into(),
            ];
            if let Some(first) = rows
                .first()
                .and_then(|r| r["timing"]["families"].as_object())
            {
                names.extend(first.keys().map(|k| format!("families.{k}")));
            }
            names
                .into_iter()
                .map(|name| {
                    let value = mean(&|r| {
                        name.split('.')
                            .fold(&r["timing"], |v, k| &v[k])
                            .as_f64()
                            .unwrap_or(0.0)
                    });
                    (name.trim_start_matches("families.").to_owned(), value)
                })
                .collect()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_are_read_after_the_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …; the
        // name may hold spaces and parentheses.
        let stat = "4242 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 3";
        assert_eq!(stat_cpu_s(stat), Some(3.25));
        assert_eq!(stat_cpu_s("4242 (x) R 1"), None);
        // This process has spent some CPU, and its main thread is among the trainer's.
        let now = cpu_times();
        assert!(now.process > 0.0 || !now.trainer.is_empty());
        assert!(now.trainer.contains_key(&std::process::id().to_string()));
    }
}
