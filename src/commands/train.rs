//! `formation train CONFIG [--out DIR] [--resume DIR]`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use trainer::Config;
use trainer::plugin::NoPlugin;
use trainer::run_dir::RunDir;
use trainer::train_loop::{TrainJob, train};

use crate::progress::Display;

#[derive(clap::Args)]
pub struct Args {
    /// The run's TOML config (see examples/).
    config: PathBuf,
    /// Run directory to create (default: runs/<config file stem>).
    #[arg(long, conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint (CONFIG must equal its config.toml).
    #[arg(long)]
    resume: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let (root, resume) = match (&args.resume, &args.out) {
        (Some(dir), _) => {
            if !dir.join("run.json").exists() {
                bail!("cannot resume {}: it is not a run directory (no run.json)", dir.display());
            }
            (dir.clone(), true)
        }
        (None, Some(out)) => (out.clone(), false),
        (None, None) => {
            let stem = args.config.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or("run".into());
            (PathBuf::from("runs").join(stem), false)
        }
    };
    let run = RunDir::new(&root);
    let (device, device_name) = crate::device::pick();
    let mut display = Display::new();
    let summary = train(
        TrainJob { config: &config, run: &run, resume, device, device_name: device_name.to_owned(), probe_set_sha256: None },
        &mut NoPlugin,
        &mut |p| display.update(p),
    )
    .with_context(|| format!("training {}", root.display()))?;
    display.finish();
    let accuracy = summary
        .final_eval
        .map(|e| {
            let acc = |s: Option<trainer::eval::SplitScore>| s.map(|s| format!("{:.4}", s.accuracy)).unwrap_or("-".into());
            format!(", final train accuracy {}, test accuracy {}", acc(e.train), acc(e.test))
        })
        .unwrap_or_default();
    println!(
        "run {} finished {} steps in {:.1} s{} -> {}",
        summary.run_id,
        summary.steps,
        summary.wall_s,
        accuracy,
        root.display()
    );
    Ok(())
}
