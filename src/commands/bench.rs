//! `formation bench train CONFIG`: training steps/s of our loop, side by side with the equivalent PyTorch CPU
//! script (`bench/torch_reference.py`) in the same run, as a ratio. Rounds alternate so that both see the same
//! machine state.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use trainer::Config;
use trainer::model::{ModelDims, Transformer};
use trainer::schedule::learning_rate;
use trainer::tasks;
use trainer::train_loop::{batch_tensors, make_optimizer, train_step};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Training step time vs the PyTorch reference script.
    Train(TrainArgs),
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
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let What::Train(args) = args.what;
    println!("| config | formation ms/step | PyTorch ms/step | ratio (formation / PyTorch) |");
    println!("|---|---|---|---|");
    for config_path in &args.configs {
        let config = Config::load(config_path)?;
        let (mut ours, mut theirs) = (vec![], vec![]);
        for _ in 0..args.rounds {
            ours.extend(time_ours(&config, args.warmup, args.steps)?);
            if !args.no_torch {
                theirs.extend(time_torch(&args, config_path)?);
            }
        }
        let (a, b) = (median(&mut ours), median(&mut theirs));
        let ratio = if theirs.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.2}", a / b)
        };
        let b = if theirs.is_empty() {
            "-".to_owned()
        } else {
            format!("{b:.1}")
        };
        println!("| {} | {a:.1} | {b} | {ratio} |", config_path.display());
    }
    Ok(())
}

/// Milliseconds of each timed training step of our loop (fresh model, the config's batch and optimizer).
fn time_ours(config: &Config, warmup: usize, steps: usize) -> anyhow::Result<Vec<f64>> {
    let (device, _) = crate::device::pick();
    let device = device.autodiff();
    let task = tasks::build(&config.task, config.train.seed);
    let dims = ModelDims::new(config, task.as_ref());
    let mut model = Transformer::new(&dims, config.train.seed, &device);
    let mut optim = make_optimizer(&config.optim);
    let queries = model.answer_queries(task.answer_positions(), &device);
    let batch_size = config.train.batch_size;
    let full = batch_size
        .is_none()
        .then(|| batch_tensors(task.as_ref(), 0, None, &device));
    let mut times = vec![];
    for step in 0..(warmup + steps) as u64 {
        let start = Instant::now();
        let (tokens, targets) = match &full {
            Some(batch) => batch.clone(),
            None => batch_tensors(task.as_ref(), step, batch_size, &device),
        };
        let lr = learning_rate(&config.optim, step, config.train.steps);
        let (updated, loss) = train_step(
            model,
            &mut optim,
            tokens,
            targets,
            &queries,
            lr,
            config.optim.grad_clip,
        );
        model = updated;
        loss.into_scalar::<f32>();
        if step >= warmup as u64 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(times)
}

/// Milliseconds of each timed step of the PyTorch reference script.
fn time_torch(args: &TrainArgs, config: &PathBuf) -> anyhow::Result<Vec<f64>> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/torch_reference.py");
    let output = Command::new(&args.python)
        .arg(&script)
        .arg(config)
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
