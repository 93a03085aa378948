//! `formation intervene RUN_DIR --step S --kind KIND`: one targeted intervention on one saved checkpoint (of a
//! run, or of a window replay under `RUN_DIR/windows/WN`), written to `RUN_DIR/interventions/step_S/KIND.json`
//! and, the same tree, `KIND.h5`.

use std::path::PathBuf;

use analysis::interventions::run::run_intervention;
use analysis::sinks::report::write_report_h5;
use anyhow::{Context, bail};
use host::files::write_atomic;
use host::layout::RunLayout;
use host::lock::DirLock;
use probes::ProbeSet;
use trainer::checkpoint;
use trainer::config::InterventionKind;
use trainer::model::{ModelDims, Transformer};
use trainer::run_dir::RunFiles;
use trainer::tasks;

#[derive(clap::Args)]
pub struct Args {
    /// A run directory (or a replayed window, RUN_DIR/windows/WN) with a pinned probe set.
    run_dir: PathBuf,
    /// The checkpoint step.
    #[arg(long)]
    step: u64,
    /// logit-lens (every layer boundary read through LN_final and W_U), patching (activation patching from the
    /// clean probe set into a corrupted one), path-patching (every head to every later head's q/k/v and to the
    /// logits), neurons (inside the MLP blocks the ablation localizes), fourier (modular addition's progress
    /// measures), llc (the local learning coefficient by SGLD, settings in [llc]), features (a TopK sparse dictionary on the residual stream at the key positions, settings in [features]).
    #[arg(long, value_parser = parse_kind)]
    kind: InterventionKind,
}

/// `--kind`: the names the config's `[interventions] in_windows` uses.
fn parse_kind(text: &str) -> Result<InterventionKind, String> {
    text.parse()
        .map_err(|e: trainer::config::UnknownIntervention| e.to_string())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let run = RunLayout::new(&args.run_dir);
    run.read_manifest()?;
    let _lock = DirLock::acquire(&run.root, "formation intervene")?;
    let (out, report) = intervene(&run, args.step, args.kind)?;
    crate::say!("{}", serde_json::to_string_pretty(&report)?);
    crate::say!("wrote {}", out.display());
    Ok(())
}

/// The probe set `run` pinned (its hash in the manifest), or the one-sentence reason there is none.
pub fn pinned_probe_set(run: &RunLayout) -> anyhow::Result<ProbeSet> {
    let manifest = run.read_manifest()?;
    let Some(hash) = &manifest.probe_set_sha256 else {
        bail!(
            "{} has no probe set pinned; train it with --analyze or run `formation sweep` first",
            run.root.display()
        );
    };
    Ok(ProbeSet::load_pinned(&run.probe_set(), hash)?)
}

/// Runs intervention `kind` on checkpoint `step` of `run`; writes and returns its report.
pub fn intervene(
    run: &RunLayout,
    step: u64,
    kind: InterventionKind,
) -> anyhow::Result<(PathBuf, serde_json::Value)> {
    let config = run.read_config()?;
    let probe = pinned_probe_set(run)?;
    let dir = checkpoint::step_dir(&run.checkpoints(), step);
    if !dir.exists() {
        bail!(
            "no checkpoint for step {} in {} (available: {:?})",
            step,
            run.checkpoints().display(),
            checkpoint::list(&run.checkpoints())?
        );
    }
    let task = tasks::build(&config.task, config.train.seed)?;
    let (device, _) = trainer::device::pick();
    let dims = ModelDims::new(&config, task.as_ref());
    let (model, _) = checkpoint::load_model(&dir, Transformer::new(&dims, 0, &device))?;
    let report = run_intervention(kind, &model, task.as_ref(), &config, &probe, step, &device)?;
    let out = report_path(run, step, kind);
    let out_dir = run.interventions(step);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    // The HDF5 copy first: a JSON report on disk means both are complete (what a resumed replay skips on).
    write_report_h5(&out.with_extension("h5"), &report)?;
    write_atomic(&out, serde_json::to_string_pretty(&report)?.as_bytes())?;
    Ok((out, report))
}

/// Where intervention `kind` on checkpoint `step` of `run` writes its JSON report (its HDF5 copy beside it).
pub fn report_path(run: &RunLayout, step: u64, kind: InterventionKind) -> PathBuf {
    run.interventions(step)
        .join(format!("{}.json", kind.file_stem()))
}
