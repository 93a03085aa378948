//! `formation windows RUN_DIR [--config CONFIG]`: the birth-window detector over the run's analysis rows.

use std::path::PathBuf;

use analysis::sinks::jsonl::read_rows;
use analysis::trajectory::{llc_series, read_llc};
use analysis::windows::{find_windows, table};
use anyhow::{Context, bail};
use host::files::write_atomic;
use host::layout::RunLayout;
use trainer::Config;
use trainer::run_dir::RunFiles;

#[derive(clap::Args)]
pub struct Args {
    /// A run directory trained with `--analyze` (or swept with `formation sweep`).
    pub(crate) run_dir: PathBuf,
    /// Take the detector's thresholds (the `[windows]` section) from this config instead of the run's own.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let run = RunLayout::new(&args.run_dir);
    let manifest = run.read_manifest()?;
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => run.read_config()?,
    };
    // A run still being written is read as far as it goes, and its windows file is left to the finished run.
    let lock = crate::lock_or_note(&run.root, "formation windows")?;
    let metrics = run.metrics();
    let rows = read_rows(&metrics)?;
    if rows.len() < 5 {
        bail!(
            "{} has {} rows; the detector needs at least 5 checkpoints",
            metrics.display(),
            rows.len()
        );
    }
    let llc = llc_series(
        &read_llc(&run.llc()).with_context(|| format!("reading {}", run.llc().display()))?,
    );
    let found = find_windows(&manifest.run_id, &rows, &llc, &config.windows);
    crate::say!("{}", table(&found).trim_end_matches('\n'));
    let out = run.birth_windows();
    if lock.is_some() {
        write_atomic(&out, serde_json::to_string_pretty(&found)?.as_bytes())?;
        crate::say!("\nwrote {}", out.display());
    } else {
        crate::say!(
            "\n{} not written: the run is still in progress",
            out.display()
        );
    }
    Ok(())
}
