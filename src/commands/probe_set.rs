//! `formation probe-set CONFIG --out FILE`: writes the fixed probe set a config's runs would use.

use std::path::PathBuf;

use probes::ProbeSet;
use trainer::Config;
use trainer::tasks;

#[derive(clap::Args)]
pub struct Args {
    /// The run's TOML config (task, analysis.probe_size, analysis.probe_seed).
    config: PathBuf,
    /// The HDF5 file to write.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let task = tasks::build(&config.task, config.train.seed)?;
    let set = ProbeSet::generate(
        task.as_ref(),
        config.analysis.probe_size,
        config.analysis.probe_seed,
    );
    set.save(&args.out)?;
    crate::say!(
        "wrote {} examples to {} (sha256 {})",
        set.len(),
        args.out.display(),
        set.sha256()
    );
    Ok(())
}
