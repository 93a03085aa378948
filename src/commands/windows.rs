//! `formation windows RUN_DIR [--config CONFIG]`: the birth-window detector over the run's analysis rows.

use std::path::PathBuf;

use analysis::row::Row;
use analysis::windows::{find_windows, table};
use anyhow::{Context, bail};
use trainer::Config;
use trainer::run_dir::{RunDir, write_atomic};

#[derive(clap::Args)]
pub struct Args {
    /// A run directory trained with `--analyze` (or swept with `formation sweep`).
    pub(crate) run_dir: PathBuf,
    /// Take the detector's thresholds (the `[windows]` section) from this config instead of the run's own.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let run = RunDir::new(&args.run_dir);
    let manifest = run.read_manifest()?;
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => run.read_config()?,
    };
    let metrics = analysis::plugin::metrics_path(&run);
    let text = std::fs::read_to_string(&metrics).with_context(|| {
        format!(
            "reading {} (was the run trained with --analyze?)",
            metrics.display()
        )
    })?;
    let rows: Vec<Row> = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).with_context(|| {
                format!("{} line {} is not a metrics row", metrics.display(), i + 1)
            })
        })
        .collect::<anyhow::Result<_>>()?;
    if rows.len() < 5 {
        bail!(
            "{} has {} rows; the detector needs at least 5 checkpoints",
            metrics.display(),
            rows.len()
        );
    }
    let found = find_windows(&manifest.run_id, &rows, &config.windows);
    let out = analysis::plugin::analysis_dir(&run).join("birth_windows.json");
    write_atomic(&out, serde_json::to_string_pretty(&found)?.as_bytes())?;
    print!("{}", table(&found));
    println!("\nwrote {}", out.display());
    Ok(())
}
