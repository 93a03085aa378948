//! `formation llc RUN_DIR`: the LLC trajectory over a run's saved checkpoints (`analysis/llc.jsonl`, one row per
//! estimated checkpoint with its chain diagnostics, optionally the weight-restricted LLC of every head and MLP),
//! within the `[llc] trajectory_budget`; a rerun continues after the last estimated checkpoint. With
//! `--calibrate`, the ε × nβ grid at one checkpoint instead (`analysis/llc_calibration.json`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use analysis::interventions::llc::{LlcEstimate, SgldConfig};
use analysis::interventions::llc_model::{default_nbeta, restricted_llcs};
use analysis::trajectory::{
    CalibrationPoint, ComponentLlc, EPSILONS, LlcRow, NBETA_FACTORS, plan, read_llc, recommend,
    sampler_mismatch,
};
use anyhow::{Context, bail};
use host::files::write_atomic;
use host::jsonl::JsonlWriter;
use host::layout::RunLayout;
use host::lock::DirLock;
use host::names::Component;
use trainer::checkpoint;
use trainer::config::{Config, LlcConfig};
use trainer::model::{ModelDims, Transformer};
use trainer::run_dir::RunFiles;
use trainer::tasks::{self, Task};

#[derive(clap::Args)]
pub struct Args {
    /// A run directory with saved checkpoints.
    run_dir: PathBuf,
    /// Estimate at every K-th saved checkpoint with the configured draws (default: as many checkpoints and
    /// draws as `[llc] trajectory_budget` allows).
    #[arg(long)]
    every: Option<usize>,
    /// Also the weight-restricted LLC of every head and MLP at each estimated checkpoint (one more estimate per
    /// component).
    #[arg(long)]
    components: bool,
    /// Instead of the trajectory: the ε × nβ calibration grid at one checkpoint, with a recommended setting.
    #[arg(long)]
    calibrate: bool,
    /// The checkpoint to calibrate at (default: the last).
    #[arg(long, requires = "calibrate")]
    step: Option<u64>,
    /// The SGLD step size, instead of the config's `[llc] epsilon` (what `--calibrate` recommends).
    #[arg(long)]
    epsilon: Option<f64>,
    /// n·β, instead of the config's `[llc] nbeta` (default n / ln n).
    #[arg(long)]
    nbeta: Option<f64>,
    /// Draws per chain, instead of the config's `[llc] draws` (the most the budget may use).
    #[arg(long)]
    draws: Option<usize>,
}

/// A loaded run: its config, task and the saved checkpoint steps.
struct Loaded {
    config: Config,
    task: Box<dyn Task>,
    checkpoints: Vec<u64>,
    device: burn::prelude::Device,
}

impl Loaded {
    fn model(&self, run: &RunLayout, step: u64) -> anyhow::Result<Transformer> {
        let dims = ModelDims::new(&self.config, self.task.as_ref());
        let dir = checkpoint::step_dir(&run.checkpoints(), step);
        let (model, _) = checkpoint::load_model(&dir, Transformer::new(&dims, 0, &self.device))?;
        Ok(model)
    }

    /// `components` (all weights first) at checkpoint `step`.
    fn estimate(
        &self,
        run: &RunLayout,
        step: u64,
        llc: &LlcConfig,
        components: &[Option<Component>],
    ) -> anyhow::Result<Vec<(SgldConfig, LlcEstimate)>> {
        let model = self.model(run, step)?;
        Ok(restricted_llcs(
            &model,
            self.task.as_ref(),
            &self.config,
            llc,
            &self.device,
            components,
        ))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let run = RunLayout::new(&args.run_dir);
    run.read_manifest()?;
    let config = run.read_config()?;
    let checkpoints = checkpoint::list(&run.checkpoints())?;
    if checkpoints.is_empty() {
        bail!("{} has no saved checkpoints", run.checkpoints().display());
    }
    if let Some(step) = args.step
        && !checkpoints.contains(&step)
    {
        bail!(
            "no checkpoint for step {step} in {} (available: {checkpoints:?})",
            run.checkpoints().display()
        );
    }
    if args.every == Some(0) {
        bail!("--every must be at least 1");
    }
    let mut config = config;
    for (name, value) in [("--epsilon", args.epsilon), ("--nbeta", args.nbeta)] {
        if value.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
            bail!("{name} must be a positive number");
        }
    }
    if args.draws == Some(0) {
        bail!("--draws must be at least 1");
    }
    config.llc = config.llc.edit(|llc| {
        llc.draws = args.draws.unwrap_or(llc.draws);
        llc.epsilon = args.epsilon.unwrap_or(llc.epsilon);
        llc.nbeta = args.nbeta.or(llc.nbeta);
    })?;
    let _lock = DirLock::acquire(&run.root, "formation llc")?;
    let task = tasks::build(&config.task, config.train.seed)?;
    let (device, _) = trainer::device::pick();
    let loaded = Loaded {
        config,
        task,
        checkpoints,
        device,
    };
    std::fs::create_dir_all(run.analysis_dir())
        .with_context(|| format!("creating {}", run.analysis_dir().display()))?;
    if args.calibrate {
        calibrate(&run, &loaded, args.step)
    } else {
        trajectory(&run, &loaded, args.every, args.components)
    }
}

fn trajectory(
    run: &RunLayout,
    loaded: &Loaded,
    every: Option<usize>,
    with_components: bool,
) -> anyhow::Result<()> {
    let config = &loaded.config;
    let mut components: Vec<Option<Component>> = vec![None];
    if with_components {
        let dims = ModelDims::new(config, loaded.task.as_ref());
        for layer in 0..dims.n_layers {
            components.extend((0..dims.n_heads).map(|h| Some(Component::head(layer, h))));
            if !dims.attn_only {
                components.push(Some(Component::mlp(layer)));
            }
        }
    }
    let plan = plan(
        &loaded.checkpoints,
        config.train.steps,
        &config.llc,
        every,
        components.len(),
    );
    let llc = config.llc.edit(|llc| llc.draws = plan.draws)?;
    let done = read_llc(&run.llc()).with_context(|| format!("reading {}", run.llc().display()))?;
    if let Some(why) = sampler_mismatch(&done, &llc) {
        bail!("{} {why}", run.llc().display());
    }
    let after = done.last().map(|r| r.step);
    crate::say!(
        "LLC at {} of {} checkpoints (every {}), {} chains x {} draws: {} SGLD steps in all, for a run of {} steps{}",
        plan.steps.len(),
        loaded.checkpoints.len(),
        plan.every,
        llc.chains,
        llc.draws,
        plan.sgld_steps,
        config.train.steps,
        after.map_or(String::new(), |s| format!("; continuing after step {s}"))
    );
    let mut writer = JsonlWriter::open_from(&run.llc(), after.map_or(0, |s| s + 1))?;
    for &step in plan.steps.iter().filter(|&&s| after.is_none_or(|a| s > a)) {
        let mut estimates = loaded.estimate(run, step, &llc, &components)?.into_iter();
        let (settings, estimate) = estimates.next().context("no estimate")?;
        let mut by_component = BTreeMap::new();
        for (component, (_, e)) in components[1..].iter().flatten().zip(estimates) {
            by_component.insert(component.to_string(), ComponentLlc::of(&e));
        }
        let d = &estimate.diagnostics;
        crate::say!(
            "step {step:>7}: LLC {:.3} ± {:.3}{}",
            estimate.llc,
            d.llc_std,
            if d.converged {
                String::new()
            } else {
                format!("  ({})", d.verdict())
            }
        );
        writer.write(&LlcRow {
            step,
            settings,
            estimate,
            components: by_component,
        })?;
    }
    crate::say!("wrote {}", run.llc().display());
    Ok(())
}

fn calibrate(run: &RunLayout, loaded: &Loaded, step: Option<u64>) -> anyhow::Result<()> {
    let config = &loaded.config;
    let step = step.unwrap_or(*loaded.checkpoints.last().expect("checked non-empty"));
    let n = loaded.task.train_batch(0, config.train.batch_size).n;
    let nbeta = default_nbeta(n);
    crate::say!(
        "calibrating the LLC sampler at step {step}: {} step sizes x {} inverse temperatures, {} chains x {} draws each",
        EPSILONS.len(),
        NBETA_FACTORS.len(),
        config.llc.chains,
        config.llc.draws
    );
    crate::say!("\n| epsilon | nbeta | LLC | std | drift | verdict |\n|---|---|---|---|---|---|");
    let mut points = vec![];
    for &epsilon in &EPSILONS {
        for &factor in &NBETA_FACTORS {
            let llc = config.llc.edit(|llc| {
                llc.epsilon = epsilon;
                llc.nbeta = Some(factor * nbeta);
            })?;
            let (_, estimate) = loaded
                .estimate(run, step, &llc, &[None])?
                .pop()
                .context("no estimate")?;
            let d = &estimate.diagnostics;
            crate::say!(
                "| {epsilon:e} | {:.1} | {:.3} | {:.3} | {:+.3} | {} |",
                factor * nbeta,
                estimate.llc,
                d.llc_std,
                d.drift,
                if d.converged {
                    "converged"
                } else {
                    d.verdict()
                }
            );
            points.push(CalibrationPoint {
                epsilon,
                nbeta: factor * nbeta,
                llc: estimate.llc,
                llc_std: d.llc_std,
                drift: d.drift,
                converged: d.converged,
                diverged: d.diverged,
                negative: d.negative,
            });
        }
    }
    let recommended = recommend(&points, nbeta).cloned();
    match &recommended {
        Some(p) => crate::say!(
            "\nrecommended: epsilon = {:e}, nbeta = {:.1} (LLC {:.3}): formation llc {} --epsilon {:e} --nbeta {:.1}",
            p.epsilon,
            p.nbeta,
            p.llc,
            run.root.display(),
            p.epsilon,
            p.nbeta
        ),
        None => crate::say!(
            "\nno setting converged at the default nbeta ({nbeta:.1}): raise [llc] draws and calibrate again"
        ),
    }
    let out = run.llc_calibration();
    let report = serde_json::json!({
        "step": step,
        "default_nbeta": nbeta,
        "chains": config.llc.chains,
        "draws": config.llc.draws,
        "points": points,
        "recommended": recommended,
    });
    write_atomic(&out, serde_json::to_string_pretty(&report)?.as_bytes())?;
    crate::say!("wrote {}", out.display());
    Ok(())
}
