//! `formation compare RUN_DIR... | STUDY_DIR`: per run, windows, final behavior and the components that carry
//! the mechanism; across seeds, the spread of birth steps and agreement of the localized components; across a
//! screen's factor, birth step vs value; and the decision rule (READY / NOT READY) per config.

use std::path::{Path, PathBuf};

use analysis::compare::{Comparison, RunSummary, compare, summarize, table};
use anyhow::{Context, bail};
use host::files::write_atomic;
use host::layout::RunLayout;
use host::layout::StudyLayout;
use study::study::{RunState, StudyFiles};
use trainer::Config;
use trainer::run_dir::RunFiles;

#[derive(clap::Args)]
pub struct Args {
    /// Analyzed run directories (taken as seeds of one config), or one study directory.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Take the decision rule's thresholds (the `[decision]` section) from this config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Write the comparison as JSON here (default for a study: STUDY_DIR/compare.json).
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let compared = compare_dirs(&args.dirs, args.config.as_deref())?;
    crate::say!("{}", table(&compared.comparison).trim_end_matches('\n'));
    let json = args
        .json
        .or_else(|| compared.study.as_ref().map(StudyLayout::comparison));
    if let Some(path) = json {
        write_atomic(
            &path,
            serde_json::to_string_pretty(&compared.comparison)?.as_bytes(),
        )?;
        crate::say!("\nwrote {}", path.display());
    }
    Ok(())
}

/// A comparison with what it was made from.
pub struct Compared {
    pub comparison: Comparison,
    /// The study, when one study directory was given.
    pub study: Option<StudyLayout>,
    /// (name, run directory) of every compared run.
    pub members: Vec<(String, PathBuf)>,
}

/// Compares run directories (as seeds of one config) or the done runs of one study directory; thresholds
/// from `config` or the first run's own config.
pub fn compare_dirs(dirs: &[PathBuf], config: Option<&Path>) -> anyhow::Result<Compared> {
    let study =
        (dirs.len() == 1 && host::layout::is_study(&dirs[0])).then(|| StudyLayout::new(&dirs[0]));
    // (name, run dir, factor value)
    let mut members: Vec<(String, PathBuf, Option<String>)> = vec![];
    let mut factor = None;
    if let Some(study) = &study {
        let manifest = study.read_manifest()?;
        factor = manifest.factor.as_ref().map(|f| f.key.clone());
        let mut missing = vec![];
        for run in &manifest.runs {
            if study.state(&run.name) == RunState::Done {
                members.push((
                    run.name.clone(),
                    study.run(&run.name).root,
                    run.value.clone(),
                ));
            } else {
                missing.push(run.name.clone());
            }
        }
        if !missing.is_empty() {
            eprintln!(
                "comparing the {} done runs of {}; not done: {} (see formation collect)",
                members.len(),
                manifest.runs.len(),
                missing.join(", ")
            );
        }
        if members.is_empty() {
            bail!("no run of {} is done yet", study.root.display());
        }
    } else {
        for dir in dirs {
            if !RunLayout::new(dir).exists() {
                bail!(
                    "{} is neither a run directory (no run.json) nor a study directory (no study.json)",
                    dir.display()
                );
            }
            crate::note_if_in_progress(dir);
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(dir.display().to_string());
            members.push((name, dir.clone(), None));
        }
    }
    let thresholds = match config {
        Some(path) => Config::load(path)?.decision,
        None => RunLayout::new(&members[0].1).read_config()?.decision,
    };
    let runs: Vec<RunSummary> = members
        .iter()
        .map(|(name, dir, value)| {
            summarize(&RunLayout::new(dir), name, value.clone(), &thresholds)
                .with_context(|| format!("summarizing {}", dir.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Compared {
        comparison: compare(factor, runs, &thresholds),
        study,
        members: members.into_iter().map(|(n, d, _)| (n, d)).collect(),
    })
}
