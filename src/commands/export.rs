//! `formation export RUN_DIR --step S [--out DIR]`.

use std::path::PathBuf;

use anyhow::Context;
use host::layout::RunLayout;
use host::lock::DirLock;
use trainer::checkpoint;
use trainer::model::{ModelDims, Transformer};
use trainer::run_dir::RunFiles;
use trainer::tasks;

#[derive(clap::Args)]
pub struct Args {
    /// A run directory written by `formation train`.
    run_dir: PathBuf,
    /// The checkpoint step to export.
    #[arg(long)]
    step: u64,
    /// Output directory (default: RUN_DIR/export/step_NNNNNN).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let run = RunLayout::new(&args.run_dir);
    run.read_manifest()?;
    let _lock = DirLock::acquire(&run.root, "formation export")?;
    let config = run.read_config()?;
    let task = tasks::build(&config.task, config.train.seed)?;
    let dims = ModelDims::new(&config, task.as_ref());
    let dir = checkpoint::step_dir(&run.checkpoints(), args.step);
    if !dir.exists() {
        let available = checkpoint::list(&run.checkpoints())?;
        anyhow::bail!(
            "no checkpoint for step {} in {} (available: {:?})",
            args.step,
            run.checkpoints().display(),
            available
        );
    }
    let (device, _) = trainer::device::pick();
    let (model, _) = checkpoint::load_model(&dir, Transformer::new(&dims, 0, &device))?;
    let out = args.out.unwrap_or_else(|| run.export(args.step));
    // A few test-split examples (or train, for tasks without a test split) with our logits on them.
    let examples = task
        .split(tasks::Split::Test)
        .unwrap_or_else(|| task.train_batch(0, Some(8)));
    let sample = examples.select(&(0..examples.n.min(8)).collect::<Vec<_>>());
    trainer::export::export(&model, &sample, &out)
        .with_context(|| format!("writing {}", out.display()))?;
    crate::say!("exported step {} to {}", args.step, out.display());
    Ok(())
}
