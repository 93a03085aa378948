//! Runs one intervention kind on one checkpoint's model: the device forwards live on the model
//! (`trainer::model`), the host math in the sibling modules; this module ties them together per kind and
//! returns the report the `intervene` command writes. What is task-specific (the corrupted key position, the
//! Fourier grid) comes from the task.

use burn::prelude::Device;
use host::names::{Component, MlpWeight, ParamName};
use probes::ProbeSet;
use serde_json::Value;
use trainer::config::{Config, InterventionKind};
use trainer::model::{Channel, HookName, HostArray, ModelDims, Transformer, int_tensor};
use trainer::tasks::Task;

use super::llc_model::checkpoint_llc;
use super::{corrupted_tokens, fourier_report, logit_lens_report, patching_report};
use crate::analyzer::readout;
use crate::error::AnalysisError;
use crate::forwards::{ProbeInputs, capture, grid_capture};
use crate::metrics::attribution::neuron_attribution;

/// Neurons per localized block whose ablation `neurons` measures (the largest |direct logit attribution|).
const TOP_NEURONS: usize = 32;

const NO_CORRUPTION: &str = "the task declares no corruption for patching (a data-defined task names one in \
     task.toml: [corruption] key = \"...\")";
const NO_FOURIER_GRID: &str =
    "the Fourier progress measures need a task that declares a Fourier grid (modular addition)";
const NO_MLP_FOURIER: &str = "the Fourier progress measures need a model with MLPs";
const NO_MLP: &str = "the model has no MLP blocks";

/// Why intervention `kind` cannot run on this task and model, if it cannot (what the task does not declare,
/// or a model without the blocks it measures). A replay skips such window analyses with this note.
pub fn cannot_run(
    kind: InterventionKind,
    task: &dyn Task,
    dims: &ModelDims,
) -> Option<&'static str> {
    match kind {
        InterventionKind::Patching | InterventionKind::PathPatching => {
            task.corrupted_key().is_none().then_some(NO_CORRUPTION)
        }
        InterventionKind::Fourier if task.fourier_grid().is_none() => Some(NO_FOURIER_GRID),
        InterventionKind::Fourier => dims.d_mlp.is_none().then_some(NO_MLP_FOURIER),
        InterventionKind::Neurons => dims.d_mlp.is_none().then_some(NO_MLP),
        InterventionKind::LogitLens | InterventionKind::Llc | InterventionKind::Features => None,
    }
}

/// The report of intervention `kind` on `model` (the checkpoint at `step`); it is written under
/// [`InterventionKind::file_stem`].
pub fn run_intervention(
    kind: InterventionKind,
    model: &Transformer,
    task: &dyn Task,
    config: &Config,
    probe: &ProbeSet,
    step: u64,
    device: &Device,
) -> Result<Value, AnalysisError> {
    let unable = |why: &str| AnalysisError::Metric {
        step,
        message: why.to_owned(),
    };
    let forward = |source| AnalysisError::Host { step, source };
    let report = match kind {
        InterventionKind::LogitLens => {
            let inputs = ProbeInputs::new(probe, None, device);
            let captured = capture(model, &inputs, &[], false, step)?;
            logit_lens_report(&captured.hooks, &captured.params, probe)
                .ok_or_else(|| unable("the checkpoint has no unembedding"))?
        }
        InterventionKind::Patching | InterventionKind::PathPatching => {
            let key = task.corrupted_key().ok_or_else(|| unable(NO_CORRUPTION))?;
            // Resampled tokens must be valid inputs and, for the built-in tasks, answers too.
            let vocab = task.d_vocab().min(task.d_vocab_out());
            let corrupted = corrupted_tokens(probe, key, vocab, probe.seed)
                .ok_or_else(|| unable("the probe set lacks the task's corrupted key position"))?;
            let e = &probe.examples;
            let tokens = |values: &[u32]| int_tensor(values, e.n, e.seq_len, device);
            let clean = model.capture(tokens(&e.tokens));
            let corrupt = model.capture(tokens(&corrupted));
            let targets = int_tensor(&e.targets, e.n, e.n_answers, device);
            let answers = model.answer_queries(&probe.answer_positions, device);
            let effects = model
                .activation_patching(&clean, &corrupt, &targets, &answers)
                .map_err(forward)?;
            if matches!(kind, InterventionKind::Patching) {
                patching_report(&effects)
            } else {
                let recovery = |ld: f64| effects.recovery(ld);
                let (layers, heads) = (model.dims.n_layers, model.dims.n_heads);
                let mut to_logits = serde_json::Map::new();
                let mut to_heads = serde_json::Map::new();
                for l1 in 0..layers {
                    for h1 in 0..heads {
                        let sender = Component::head(l1, h1).to_string();
                        let direct = model
                            .path_patch_logits(&clean, &corrupt, (l1, h1), &targets, &answers)
                            .map_err(forward)?;
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
                                    .map_err(forward)?;
                                to_heads.insert(
                                    format!("{sender}->L{l2}H{h2}.{name}"),
                                    recovery(ld).into(),
                                );
                            }
                        }
                    }
                }
                serde_json::json!({
                    "logit_diff_clean": effects.clean,
                    "logit_diff_corrupt": effects.corrupt,
                    "recovery": { "to_logits": to_logits, "to_heads": to_heads },
                })
            }
        }
        InterventionKind::Fourier => {
            let grid = task.fourier_grid().ok_or_else(|| unable(NO_FOURIER_GRID))?;
            let p = grid.p;
            let tokens = int_tensor(&grid.inputs, p * p, grid.seq_len, device);
            // The same forward the in-loop measures run, so the two agree to the bit.
            let Some(captured) = grid_capture(model, &tokens, step)? else {
                return Err(unable(NO_MLP_FOURIER));
            };
            let params = trainer::export::named_parameters(model);
            let (shape, data) = params[&ParamName::Embed.to_string()].clone();
            let w_e = HostArray { shape, data };
            fourier_report(
                &captured.mlp_post.data,
                &captured.logits.data,
                &w_e,
                p,
                &grid.train,
            )
        }
        InterventionKind::Neurons => {
            let inputs = ProbeInputs::new(probe, None, device);
            let captured = capture(model, &inputs, &[], true, step)?;
            let blocks = captured.ablation.map(|a| a.mlp).unwrap_or_default();
            if blocks.is_empty() {
                return Err(unable(NO_MLP));
            }
            let largest = blocks.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let readout = readout(&captured.hooks, &captured.params, probe)
                .ok_or_else(|| unable("the checkpoint lacks its unembedding"))?;
            let e = &probe.examples;
            let tokens = int_tensor(&e.tokens, e.n, e.seq_len, device);
            let targets = int_tensor(&e.targets, e.n, e.n_answers, device);
            let answers = model.answer_queries(&probe.answer_positions, device);
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
                    .ok_or_else(|| unable("the capture has no mlp.hook_post"))?;
                let w_out = &captured.params[&ParamName::Mlp(layer, MlpWeight::WOut).to_string()];
                let dla = neuron_attribution(&readout, &post.data, &w_out.data);
                let mut top: Vec<usize> = (0..dla.len()).collect();
                top.sort_by(|&a, &b| dla[b].abs().total_cmp(&dla[a].abs()));
                top.truncate(TOP_NEURONS);
                let ablation = model
                    .neuron_ablation(&clean, layer, &top, &targets, &answers)
                    .map_err(forward)?;
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
            serde_json::Value::Object(report)
        }
        InterventionKind::Features => {
            crate::features::run::features_report(model, task, config, probe, step, device)?
        }
        InterventionKind::Llc => {
            // The settings as used: `nbeta` is the resolved value, never the config's "absent".
            let (settings, estimate) = checkpoint_llc(model, task, config, &config.llc, device);
            serde_json::json!({ "settings": settings, "estimate": estimate })
        }
    };
    Ok(report)
}
