//! `formation-bench memory CONFIG… [--steps N]`: peak resident memory of `formation train` and of
//! `formation train --analyze` on the same config, each its own process (issue 19, goal 3: the analyzed run
//! within 1.5× of the plain one), and the HDF5 bytes per analyzed checkpoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use trainer::Config;

#[derive(clap::Args)]
pub struct MemoryArgs {
    /// Configs to measure.
    #[arg(required = true)]
    configs: Vec<PathBuf>,
    /// Train only this many steps (default: the config's).
    #[arg(long)]
    steps: Option<u64>,
}

/// The peak resident set (`VmHWM`) of process `pid` in MiB, while it runs.
fn peak_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs `formation train CONFIG --out DIR [--analyze]`; returns its peak resident memory in MiB, read from
/// /proc every 20 ms until it exits (the last reading is the peak of all but its final 20 ms).
fn train_peak(formation: &Path, config: &Path, dir: &Path, analyze: bool) -> anyhow::Result<f64> {
    let _ = std::fs::remove_dir_all(dir);
    let mut command = Command::new(formation);
    command.arg("train").arg(config).arg("--out").arg(dir);
    if analyze {
        command.arg("--analyze");
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", formation.display()))?;
    let mut peak: f64 = 0.0;
    loop {
        if let Some(mib) = peak_mib(child.id()) {
            peak = peak.max(mib);
        }
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("formation train {} failed", config.display());
            }
            return Ok(peak);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn run(args: MemoryArgs) -> anyhow::Result<()> {
    let formation = std::env::current_exe()?.with_file_name("formation");
    let scratch =
        std::env::temp_dir().join(format!("formation-bench-memory-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    println!(
        "| config | steps | peak RSS train (MiB) | peak RSS train --analyze (MiB) | ratio | HDF5 bytes/checkpoint |"
    );
    println!("|---|---|---|---|---|---|");
    for path in &args.configs {
        let mut config = Config::load(path)?;
        if let Some(steps) = args.steps {
            config = config.with_override("train.steps", &steps.to_string())?;
        }
        let config_path = scratch.join("config.toml");
        std::fs::write(&config_path, config.to_toml())?;
        let plain = train_peak(&formation, &config_path, &scratch.join("plain"), false)?;
        let analyzed = train_peak(&formation, &config_path, &scratch.join("analyze"), true)?;
        let activations = host::layout::RunLayout::new(scratch.join("analyze")).activations_dir();
        let (mut bytes, mut files) = (0u64, 0u64);
        for entry in std::fs::read_dir(&activations)?.flatten() {
            bytes += entry.metadata()?.len();
            files += 1;
        }
        println!(
            "| {} | {} | {plain:.0} | {analyzed:.0} | {:.2} | {:.0} |",
            path.display(),
            config.train.steps,
            analyzed / plain,
            bytes as f64 / files.max(1) as f64
        );
    }
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}
