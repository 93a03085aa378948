//! `formation intervene RUN_DIR --step S --kind KIND`: one targeted intervention on one saved checkpoint (of a
//! run, or of a window replay under `RUN_DIR/windows/WN`), written to `RUN_DIR/interventions/step_S/KIND.json`
//! and, the same tree, `KIND.h5`.

use host::names::{Component, MlpWeight, ParamName};
use std::path::PathBuf;

use analysis::analyzer::readout;
use analysis::interventions::llc_model::checkpoint_llc;
use analysis::interventions::{
    corrupted_tokens, fourier_report, logit_lens_report, patching_report,
};
use analysis::metrics::attribution::neuron_attribution;
use analysis::plugin::{ProbeInputs, capture};
use analysis::sinks::report::write_report_h5;
use anyhow::{Context, bail};
use host::files::write_atomic;
use host::layout::RunLayout;
use host::lock::DirLock;
use probes::ProbeSet;
use trainer::checkpoint;
use trainer::config::{InterventionKind, TaskConfig};
use trainer::model::{Channel, HookName, HostArray, ModelDims, Transformer, int_tensor};
use trainer::run_dir::RunFiles;
use trainer::tasks;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// Loss and accuracy of every layer boundary read through LN_final and W_U.
    LogitLens,
    /// Activation patching of every head, MLP and residual position from the clean probe set into a corrupted
    /// one (the task's `corrupted_key` token changed).
    Patching,
    /// Modular addition's Fourier progress measures (Nanda et al. 2023): key frequencies, embedding Gini,
    /// restricted and excluded loss.
    Fourier,
    /// Path patching (Wang et al. 2022) on the same corruption: every head → every later head's q / k / v
    /// input, and every head → the logits directly, as normalized recovery.
    PathPatching,
    /// Neuron level, inside the MLP blocks the block ablation localizes (the largest Δloss and any within half of
    /// its magnitude): each
    /// neuron's direct logit attribution, and the mean-ablation Δloss of the top neurons by |attribution|.
    Neurons,
    /// The local learning coefficient by SGLD (devinterp's estimator; settings in the config's `[llc]`).
    Llc,
}

/// Neurons per localized block whose ablation `neurons` measures (the largest |direct logit attribution|).
const TOP_NEURONS: usize = 32;

#[derive(clap::Args)]
pub struct Args {
    /// A run directory (or a replayed window, RUN_DIR/windows/WN) with a pinned probe set.
    run_dir: PathBuf,
    /// The checkpoint step.
    #[arg(long)]
    step: u64,
    #[arg(long, value_enum)]
    kind: Kind,
}

impl From<InterventionKind> for Kind {
    fn from(kind: InterventionKind) -> Self {
        match kind {
            InterventionKind::LogitLens => Kind::LogitLens,
            InterventionKind::Patching => Kind::Patching,
            InterventionKind::Fourier => Kind::Fourier,
            InterventionKind::Llc => Kind::Llc,
            InterventionKind::Neurons => Kind::Neurons,
            InterventionKind::PathPatching => Kind::PathPatching,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let run = RunLayout::new(&args.run_dir);
    run.read_manifest()?;
    let _lock = DirLock::acquire(&run.root, "formation intervene")?;
    let (out, report) = intervene(&run, args.step, args.kind)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!("wrote {}", out.display());
    Ok(())
}

/// Runs intervention `kind` on checkpoint `step` of `run`; writes and returns its report.
pub fn intervene(
    run: &RunLayout,
    step: u64,
    kind: Kind,
) -> anyhow::Result<(PathBuf, serde_json::Value)> {
    let manifest = run.read_manifest()?;
    let config = run.read_config()?;
    let Some(hash) = &manifest.probe_set_sha256 else {
        bail!(
            "{} has no probe set pinned; train it with --analyze or run `formation sweep` first",
            run.root.display()
        );
    };
    let probe = ProbeSet::load_pinned(&run.probe_set(), hash)?;
    let dir = checkpoint::step_dir(&run.checkpoints(), step);
    if !dir.exists() {
        bail!(
            "no checkpoint for step {} in {} (available: {:?})",
            step,
            run.checkpoints().display(),
            checkpoint::list(&run.checkpoints())?
        );
    }
    let task = tasks::build(&config.task, config.train.seed);
    let (device, _) = crate::device::pick();
    let dims = ModelDims::new(&config, task.as_ref());
    let (model, _) = checkpoint::load_model(&dir, Transformer::new(&dims, 0, &device))?;
    let (name, report) = match kind {
        Kind::LogitLens => {
            let inputs = ProbeInputs::new(&probe, None, &device);
            let captured = capture(&model, &inputs, &[], false, step)?;
            (
                "logit_lens",
                logit_lens_report(&captured.hooks, &captured.params, &probe)
                    .context("the checkpoint has no unembedding")?,
            )
        }
        Kind::Patching | Kind::PathPatching => {
            let corrupted =
                corrupted_tokens(&probe, task.corrupted_key(), task.d_vocab_out(), probe.seed)
                    .context("the probe set lacks the task's corrupted key position")?;
            let e = &probe.examples;
            let tokens = |values: &[u32]| int_tensor(values, e.n, e.seq_len, &device);
            let clean = model.capture(tokens(&e.tokens));
            let corrupt = model.capture(tokens(&corrupted));
            let targets = int_tensor(&e.targets, e.n, e.n_answers, &device);
            let answers = model.answer_queries(&probe.answer_positions, &device);
            let effects = model
                .activation_patching(&clean, &corrupt, &targets, &answers)
                .map_err(anyhow::Error::msg)?;
            if matches!(kind, Kind::Patching) {
                ("patching", patching_report(&effects))
            } else {
                let recovery = |ld: f64| effects.recovery(ld);
                let (layers, heads) = (dims.n_layers, dims.n_heads);
                let mut to_logits = serde_json::Map::new();
                let mut to_heads = serde_json::Map::new();
                for l1 in 0..layers {
                    for h1 in 0..heads {
                        let sender = Component::head(l1, h1).to_string();
                        let direct = model
                            .path_patch_logits(&clean, &corrupt, (l1, h1), &targets, &answers)
                            .map_err(anyhow::Error::msg)?;
                        to_logits.insert(sender.clone(), recovery(direct).into());
                        for (l2, h2) in
                            (l1 + 1..layers).flat_map(|l| (0..heads).map(move |h| (l, h)))
                        {
                            for (channel, name) in
                                [(Channel::Q, "q"), (Channel::K, "k"), (Channel::V, "v")]
                            {
                                let ld = model
                                    .path_patch(
                                        &clean,
                                        &corrupt,
                                        (l1, h1),
                                        (l2, h2),
                                        channel,
                                        &targets,
                                        &answers,
                                    )
                                    .map_err(anyhow::Error::msg)?;
                                to_heads.insert(
                                    format!("{sender}->L{l2}H{h2}.{name}"),
                                    recovery(ld).into(),
                                );
                            }
                        }
                    }
                }
                (
                    "path_patching",
                    serde_json::json!({
                        "logit_diff_clean": effects.clean,
                        "logit_diff_corrupt": effects.corrupt,
                        "recovery": { "to_logits": to_logits, "to_heads": to_heads },
                    }),
                )
            }
        }
        Kind::Fourier => {
            let TaskConfig::ModularAddition { p, .. } = config.task else {
                bail!("the Fourier progress measures are defined for modular addition only");
            };
            let inputs: Vec<u32> = (0..p * p)
                .flat_map(|i| [(i / p) as u32, (i % p) as u32, p as u32])
                .collect();
            let train: Vec<usize> = task
                .split(tasks::Split::Train)
                .map(|e| {
                    (0..e.n)
                        .map(|i| e.token(i, 0) as usize * p + e.token(i, 1) as usize)
                        .collect()
                })
                .unwrap_or_default();
            let hooks = model
                .capture(int_tensor(&inputs, p * p, 3, &device))
                .to_host()
                .map_err(anyhow::Error::msg)?;
            let hook = |name: HookName| hooks.iter().find(|(h, _)| *h == name).map(|(_, a)| a);
            let last = dims.n_layers - 1;
            let (Some(mlp_post), Some(logits)) =
                (hook(HookName::MlpPost(last)), hook(HookName::Logits))
            else {
                bail!("the Fourier progress measures need a model with MLPs");
            };
            let params = trainer::export::named_parameters(&model);
            let (shape, data) = params[&ParamName::Embed.to_string()].clone();
            let w_e = HostArray { shape, data };
            ("fourier", fourier_report(mlp_post, logits, &w_e, p, &train))
        }
        Kind::Neurons => {
            let inputs = ProbeInputs::new(&probe, None, &device);
            let captured = capture(&model, &inputs, &[], true, step)?;
            let blocks = captured.ablation.map(|a| a.mlp).unwrap_or_default();
            if blocks.is_empty() {
                bail!("the model has no MLP blocks");
            }
            let largest = blocks.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let readout = readout(&captured.hooks, &captured.params, &probe)
                .context("the checkpoint lacks its unembedding")?;
            let e = &probe.examples;
            let tokens = int_tensor(&e.tokens, e.n, e.seq_len, &device);
            let targets = int_tensor(&e.targets, e.n, e.n_answers, &device);
            let answers = model.answer_queries(&probe.answer_positions, &device);
            let clean = model.capture(tokens);
            let mut report = serde_json::Map::new();
            for (layer, &dloss) in blocks.iter().enumerate() {
                if dloss < largest - 0.5 * largest.abs() {
                    continue;
                }
                let post = captured
                    .hooks
                    .iter()
                    .find(|(h, _)| *h == HookName::MlpPost(layer))
                    .map(|(_, a)| a)
                    .context("no mlp.hook_post")?;
                let w_out = &captured.params[&ParamName::Mlp(layer, MlpWeight::WOut).to_string()];
                let dla = neuron_attribution(&readout, &post.data, &w_out.data);
                let mut top: Vec<usize> = (0..dla.len()).collect();
                top.sort_by(|&a, &b| dla[b].abs().total_cmp(&dla[a].abs()));
                top.truncate(TOP_NEURONS);
                let ablation = model
                    .neuron_ablation(&clean, layer, &top, &targets, &answers)
                    .map_err(anyhow::Error::msg)?;
                let neurons: Vec<serde_json::Value> = top
                    .iter()
                    .zip(&ablation)
                    .map(|(&n, &d)| serde_json::json!({ "neuron": n, "dla": dla[n], "ablation_dloss": d }))
                    .collect();
                report.insert(
                    Component::mlp(layer).to_string(),
                    serde_json::json!({ "block_ablation_dloss": dloss, "dla": dla, "top_neurons": neurons }),
                );
            }
            ("neurons", serde_json::Value::Object(report))
        }
        Kind::Llc => {
            // The settings as used: `nbeta` is the resolved value, never the config's "absent".
            let (settings, estimate) =
                checkpoint_llc(&model, task.as_ref(), &config, &config.llc, &device);
            (
                "llc",
                serde_json::json!({ "settings": settings, "estimate": estimate }),
            )
        }
    };
    let out_dir = run.interventions(step);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out = out_dir.join(format!("{name}.json"));
    write_atomic(&out, serde_json::to_string_pretty(&report)?.as_bytes())?;
    write_report_h5(&out_dir.join(format!("{name}.h5")), &report)?;
    Ok((out, report))
}
