//! `formation task check DIR` and `formation task export CONFIG --out DIR`: data-defined tasks
//! (`docs/tasks.md`).

use std::path::PathBuf;

use anyhow::Context;
use trainer::Config;
use trainer::config::TaskConfig;
use trainer::tasks;
use trainer::tasks::dataset::{Dataset, export};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Read and validate a dataset directory; print its splits, key positions, targets and content hash.
    Check {
        /// A dataset directory (task.toml, train/, optional test/ and ood/).
        dir: PathBuf,
    },
    /// Write a config's task as a dataset directory, with a config.toml that trains it as CONFIG trains the
    /// task (built-in tasks included, e.g. to see the format or to check a data-defined run against them).
    Export {
        /// A run config whose task is exported.
        config: PathBuf,
        /// The dataset directory to create (it must not exist).
        #[arg(long)]
        out: PathBuf,
        /// The exported task's name (default: the task's own).
        #[arg(long)]
        name: Option<String>,
        /// For a task whose training stream is generated (induction): how many training sequences to export.
        #[arg(long)]
        train_examples: Option<usize>,
    },
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check { dir } => check(dir),
        Command::Export {
            config,
            out,
            name,
            train_examples,
        } => export_task(config, out, name, train_examples),
    }
}

fn check(dir: PathBuf) -> anyhow::Result<()> {
    let data = Dataset::load(&dir)?;
    let m = &data.manifest;
    crate::say!(
        "{}: task `{}`, vocab {}, vocab_out {}, seq_len {}, answer positions {:?}",
        dir.display(),
        m.name,
        m.vocab,
        m.vocab_out(),
        m.seq_len,
        data.answer_positions
    );
    for (split, examples) in &data.splits {
        crate::say!("  {:<5} {} examples", split.name(), examples.n);
    }
    let keys: Vec<String> = data.keys.iter().map(|(name, _)| name.clone()).collect();
    let targets: Vec<String> = m
        .targets
        .iter()
        .map(|(name, t)| format!("{name} ({} classes)", t.classes))
        .collect();
    crate::say!("  key positions: {}", keys.join(", "));
    crate::say!("  probe targets: {}", targets.join(", "));
    if let Some(corruption) = &m.corruption {
        crate::say!("  corruption: resample the token at `{}`", corruption.key);
    }
    crate::say!("  sha256 {}", data.sha256);
    Ok(())
}

fn export_task(
    config_path: PathBuf,
    out: PathBuf,
    name: Option<String>,
    train_examples: Option<usize>,
) -> anyhow::Result<()> {
    let mut config = Config::load(&config_path)?;
    let task = tasks::build(&config.task, config.train.seed)?;
    let name = name.unwrap_or_else(|| task.name().to_owned());
    let batch_size = config.train.batch_size;
    // The config that trains the export as `config_path` trains the task; its dataset path is relative to it.
    config.task = config
        .task
        .edit(|task| *task = TaskConfig::Sequences { path: ".".into() })?;
    let config_text = toml::to_string(&config).context("serializing the config")?;
    let manifest = export::export(
        task.as_ref(),
        &name,
        train_examples,
        batch_size,
        &[("config.toml", config_text)],
        &out,
    )?;
    let config_out = out.join("config.toml");
    let data = Dataset::load(&out)?;
    let sizes: Vec<String> = data
        .splits
        .iter()
        .map(|(split, e)| format!("{} {}", e.n, split.name()))
        .collect();
    crate::say!(
        "wrote task `{}` ({}; seq_len {}) to {}; train it with `formation train {}`",
        manifest.name,
        sizes.join(", "),
        manifest.seq_len,
        out.display(),
        config_out.display()
    );
    Ok(())
}
