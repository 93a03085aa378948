//! `formation report RUN_DIR | STUDY_DIR [--out FILE]`: the self-contained HTML report (default
//! `RUN_DIR/report.html` or `STUDY_DIR/report.html`).

use std::path::{Path, PathBuf};

use analysis::report::{Section, load_run, render, run_sections, study_sections};
use anyhow::Context;
use host::files::write_atomic;
use host::layout::RunLayout;

use crate::commands::compare::compare_dirs;

#[derive(clap::Args)]
pub struct Args {
    /// An analyzed run directory, or a study directory (from replicate or screen).
    pub(crate) dir: PathBuf,
    /// Where to write the HTML file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let is_study = host::layout::is_study(&args.dir);
    let out = args.out.clone().unwrap_or_else(|| match is_study {
        true => host::layout::StudyLayout::new(&args.dir).report(),
        false => RunLayout::new(&args.dir).report(),
    });
    if !is_study && RunLayout::new(&args.dir).exists() {
        crate::note_if_in_progress(&args.dir);
    }
    let (title, subtitle, sections) = contents(&args.dir)?;
    let page = render(&title, &subtitle, &sections);
    write_atomic(&out, page.as_bytes())?;
    let plots: usize = sections.iter().map(|s| s.plots.len()).sum();
    crate::say!(
        "wrote {} ({plots} plots, {} KB)",
        out.display(),
        page.len() / 1024
    );
    Ok(())
}

/// The report of a run or study directory as it is on disk now: title, subtitle and sections.
pub(crate) fn contents(dir: &Path) -> anyhow::Result<(String, String, Vec<Section>)> {
    if host::layout::is_study(dir) {
        let compared = compare_dirs(&[dir.to_owned()], None)?;
        let runs = compared
            .members
            .iter()
            .map(|(name, dir)| {
                load_run(&RunLayout::new(dir), name)
                    .with_context(|| format!("reading {}", dir.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let kind = match &compared.comparison.factor {
            Some(key) => format!("screen of {key}"),
            None => "seed replication".into(),
        };
        return Ok((
            format!("formation study {}", dir.display()),
            format!("{kind}: {} runs", runs.len()),
            study_sections(&compared.comparison, &runs),
        ));
    }
    if !RunLayout::new(dir).exists() {
        anyhow::bail!(
            "{} is neither a run directory (no run.json) nor a study directory (no study.json)",
            dir.display()
        );
    }
    let run = RunLayout::new(dir);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or("run".into());
    let data = load_run(&run, &name).with_context(|| format!("reading {}", dir.display()))?;
    Ok((
        format!("formation run {}", dir.display()),
        format!(
            "{}: {} checkpoints analyzed, {} birth windows",
            data.run_id,
            data.rows.len(),
            data.windows.len()
        ),
        run_sections(&data, "run", false),
    ))
}
