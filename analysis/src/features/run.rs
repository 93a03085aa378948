//! `formation intervene --kind features` on one checkpoint: a TopK sparse autoencoder ([`super::sae`]) trained
//! on the residual stream at the task's key positions at one boundary, over inputs drawn from the task, then
//! measured on the fixed probe set ([`super::dictionary`]): reconstruction, dead and dense latents, and the
//! loss with the reconstruction spliced in at those positions (the rest of the model runs on it).

use burn::prelude::*;
use host::examples::{Examples, Labeled};
use host::hook::HookName;
use probes::ProbeSet;
use serde_json::{Value, json};
use trainer::config::Config;
use trainer::model::{HookTensor, Transformer, cross_entropy, int_tensor, to_host};
use trainer::tasks::Task;

use super::dictionary::{Dictionary, DictionaryStats, dictionary_stats};
use super::latents::{best_class, promoted_tokens, top_activations};
use super::sae::{SaeConfig, train_sae};
use super::subspace::{fourier_directions, fraction_inside, orthonormal_basis};
use crate::error::AnalysisError;
use crate::interventions::KEY_FREQUENCIES;
use crate::interventions::fourier::{frequency_energy, key_frequencies};
use crate::selection::at_positions;

/// Examples per capture forward (bounds the memory of the captured patterns).
const CHUNK: usize = 512;

/// Salt of the training inputs' seed, so they are drawn apart from the probe set.
const INPUTS_SEED: u64 = 0x5AE;

/// The residual stream of `examples` at `boundary`: the whole of it [n, pos, d_model] and its rows at the
/// key positions [n · keys, d_model] (example-major, keys in order).
struct AtBoundary {
    resid: Vec<f32>,
    rows: Vec<f32>,
}

fn at_boundary(
    model: &Transformer,
    examples: &Examples,
    keys: &[Labeled],
    boundary: &HookName,
    device: &Device,
    step: u64,
) -> Result<AtBoundary, AnalysisError> {
    let d = model.dims.d_model;
    let pos = examples.seq_len;
    let mut resid = Vec::with_capacity(examples.n * pos * d);
    for start in (0..examples.n).step_by(CHUNK) {
        let chunk: Vec<usize> = (start..(start + CHUNK).min(examples.n)).collect();
        let part = examples.select(&chunk);
        let captured = model.capture(int_tensor(&part.tokens, part.n, pos, device));
        let tensor = captured
            .into_hooks()
            .into_iter()
            .find_map(|(name, t)| match t {
                HookTensor::Rank3(t) if name == *boundary => Some(t),
                _ => None,
            })
            .ok_or_else(|| AnalysisError::Metric {
                step,
                message: format!("the model has no residual stream at {boundary}"),
            })?;
        let host = to_host(tensor).map_err(|source| AnalysisError::Host { step, source })?;
        resid.extend(host.data);
    }
    let mut rows = Vec::with_capacity(examples.n * keys.len() * d);
    for i in 0..examples.n {
        for key in keys {
            let at = (i * pos + key.values[i] as usize) * d;
            rows.extend_from_slice(&resid[at..at + d]);
        }
    }
    Ok(AtBoundary { resid, rows })
}

/// Mean cross-entropy at the answers of `examples` when the residual stream at `boundary` is `resid`
/// [n, pos, d_model].
fn loss_from(
    model: &Transformer,
    task: &dyn Task,
    examples: &Examples,
    boundary: &HookName,
    resid: Vec<f32>,
    device: &Device,
) -> Option<f64> {
    let (n, pos, d) = (examples.n, examples.seq_len, model.dims.d_model);
    let resid = Tensor::<3>::from_data(TensorData::new(resid, [n, pos, d]), device);
    let answers = model.answer_queries(task.answer_positions(), device);
    let logits = model.logits_from_boundary(boundary, resid, &answers)?;
    let targets = int_tensor(&examples.targets, n, examples.n_answers, device);
    Some(f64::from(
        cross_entropy(logits, targets).into_scalar::<f32>(),
    ))
}

/// The dictionary of `config.features` at checkpoint `step` of `model`, trained from scratch and measured.
pub fn features_report(
    model: &Transformer,
    task: &dyn Task,
    config: &Config,
    probe: &ProbeSet,
    step: u64,
    device: &Device,
) -> Result<Value, AnalysisError> {
    features_at(model, task, config, probe, step, None, device).map(|(_, report)| report)
}

/// The dictionary of `config.features` at checkpoint `step` of `model`, trained (from `start`, the previous
/// checkpoint's, when given) and measured; with its report.
pub fn features_at(
    model: &Transformer,
    task: &dyn Task,
    config: &Config,
    probe: &ProbeSet,
    step: u64,
    start: Option<&Dictionary>,
    device: &Device,
) -> Result<(Dictionary, Value), AnalysisError> {
    let settings = &config.features;
    let boundary = config
        .features_boundary()
        .map_err(|e| AnalysisError::Metric {
            step,
            message: e.to_string(),
        })?;
    let d = model.dims.d_model;
    let inputs = ProbeSet::generate(task, settings.inputs, settings.seed ^ INPUTS_SEED);
    let train = at_boundary(
        model,
        &inputs.examples,
        &inputs.key_positions,
        &boundary,
        device,
        step,
    )?;
    let sae = SaeConfig {
        latents: settings.expansion * d,
        k: settings.k,
        steps: settings.steps,
        batch_size: settings.batch_size,
        lr: settings.lr,
        seed: settings.seed,
    };
    let dictionary = train_sae(&train.rows, d, &sae, start, device)
        .map_err(|source| AnalysisError::Host { step, source })?;

    let measured = at_boundary(
        model,
        &probe.examples,
        &probe.key_positions,
        &boundary,
        device,
        step,
    )?;
    let stats = dictionary_stats(&dictionary, &measured.rows, settings.dense_above);
    let z = dictionary.encode(&measured.rows);
    let reconstruction = dictionary.decode(&z);
    let mut spliced = measured.resid.clone();
    let pos = probe.examples.seq_len;
    let keys = &probe.key_positions;
    for (r, row) in reconstruction.chunks_exact(d).enumerate() {
        let (i, key) = (r / keys.len(), &keys[r % keys.len()]);
        let at = (i * pos + key.values[i] as usize) * d;
        spliced[at..at + d].copy_from_slice(row);
    }
    let unable = || AnalysisError::Metric {
        step,
        message: format!("cannot run the model from {boundary}"),
    };
    let clean = loss_from(
        model,
        task,
        &probe.examples,
        &boundary,
        measured.resid,
        device,
    )
    .ok_or_else(unable)?;
    let with_dictionary =
        loss_from(model, task, &probe.examples, &boundary, spliced, device).ok_or_else(unable)?;
    let report = json!({
        "boundary": boundary.to_string(),
        "key_positions": keys.iter().map(|k| k.name.clone()).collect::<Vec<_>>(),
        "inputs": inputs.examples.n,
        "activations": train.rows.len() / d,
        "latents": dictionary.latents,
        "k": dictionary.k,
        "steps": settings.steps,
        "normalized_mse": stats.normalized_mse,
        "variance_explained": stats.variance_explained,
        "dead": stats.dead,
        "dense": stats.dense,
        "loss": clean,
        "loss_spliced": with_dictionary,
        "delta_loss": with_dictionary - clean,
        "latent_frequency": stats.frequency,
        "live_latents": latent_cards(model, probe, &dictionary, &stats, &z, step)?,
        "fourier": fourier_alignment(model, task, &boundary, &dictionary, &stats, device, step)?,
        "decoder": dictionary
            .w_dec
            .chunks_exact(d)
            .map(|row| row.to_vec())
            .collect::<Vec<_>>(),
    });
    Ok((dictionary, report))
}

/// Per latent that fires on the probe set (most frequent first): its frequency, the tokens its direction
/// promotes, its largest activations (with the token at that position) and, per key position, the probe
/// target class it correlates with best.
fn latent_cards(
    model: &Transformer,
    probe: &ProbeSet,
    dictionary: &Dictionary,
    stats: &DictionaryStats,
    z: &[f32],
    step: u64,
) -> Result<Vec<Value>, AnalysisError> {
    const TOP: usize = 5;
    let w_u =
        to_host(model.unembed.W_U.val()).map_err(|source| AnalysisError::Host { step, source })?;
    let vocab = w_u.shape[1];
    let keys = &probe.key_positions;
    let m = dictionary.latents;
    let mut live: Vec<usize> = (0..m).filter(|&j| stats.frequency[j] > 0.0).collect();
    live.sort_by(|&a, &b| {
        stats.frequency[b]
            .total_cmp(&stats.frequency[a])
            .then(a.cmp(&b))
    });
    let n = probe.examples.n;
    Ok(live
        .into_iter()
        .map(|j| {
            let top = top_activations(z, m, keys.len(), j, TOP);
            let examples: Vec<Value> = top
                .iter()
                .map(|a| {
                    let key = &keys[a.key];
                    let position = key.values[a.example] as usize;
                    json!({
                        "example": a.example,
                        "key": key.name,
                        "token": probe.examples.token(a.example, position),
                        "activation": a.value,
                    })
                })
                .collect();
            let targets: Vec<Value> = keys
                .iter()
                .enumerate()
                .filter_map(|(k, key)| {
                    let values: Vec<f64> =
                        (0..n).map(|i| f64::from(z[(i * keys.len() + k) * m + j])).collect();
                    let labels = probe
                        .targets
                        .iter()
                        .map(|t| (t.name.as_str(), t.values.as_slice(), t.n_classes));
                    best_class(&values, labels).map(|(target, class, r)| {
                        json!({ "key": key.name, "target": target, "class": class, "correlation": r })
                    })
                })
                .collect();
            json!({
                "latent": j,
                "frequency": stats.frequency[j],
                "promoted_tokens": promoted_tokens(dictionary.direction(j), &w_u.data, vocab, TOP),
                "top_activations": examples,
                "best_targets": targets,
            })
        })
        .collect())
}

/// Where the task declares a Fourier grid (modular addition): the key frequencies (found as `--kind fourier`
/// finds them, from the last MLP's neurons at `=` over all p² inputs) and the fraction of the live latents'
/// decoder directions inside the residual stream's key-frequency subspace at the boundary — the span of the
/// cos/sin components, at each key frequency, of the mean residual vector per value of `a` (at `a`), of `b`
/// (at `b`) and of the answer (a + b) mod p (at `=`) — next to what a random direction would have
/// (subspace dimension / d_model). `Null` for other tasks and for models without an MLP.
fn fourier_alignment(
    model: &Transformer,
    task: &dyn Task,
    boundary: &HookName,
    dictionary: &Dictionary,
    stats: &DictionaryStats,
    device: &Device,
    step: u64,
) -> Result<Value, AnalysisError> {
    let Some(grid) = task.fourier_grid() else {
        return Ok(Value::Null);
    };
    let p = grid.p;
    let hooks = model
        .capture(int_tensor(&grid.inputs, p * p, grid.seq_len, device))
        .to_host()
        .map_err(|source| AnalysisError::Host { step, source })?;
    let hook = |name: HookName| hooks.iter().find(|(h, _)| *h == name).map(|(_, a)| a);
    let last = model.dims.n_layers - 1;
    let (Some(mlp_post), Some(resid)) = (hook(HookName::MlpPost(last)), hook(*boundary)) else {
        return Ok(Value::Null);
    };
    const EQ: usize = 2;
    let keys = key_frequencies(
        &frequency_energy(&at_positions(mlp_post, &[EQ]).data, p),
        KEY_FREQUENCIES,
    );
    let (seq, d) = (resid.shape[1], resid.shape[2]);
    let class = |pos: usize, i: usize| match pos {
        0 => i / p,
        1 => i % p,
        _ => (i / p + i % p) % p,
    };
    let mut vectors = vec![];
    for pos in 0..3 {
        let mut means = vec![0.0f64; p * d];
        for i in 0..p * p {
            let row = &resid.data[(i * seq + pos) * d..][..d];
            let c = class(pos, i);
            means[c * d..(c + 1) * d]
                .iter_mut()
                .zip(row)
                .for_each(|(m, v)| *m += f64::from(*v) / p as f64);
        }
        vectors.extend(fourier_directions(&means, p, &keys));
    }
    let basis = orthonormal_basis(&vectors);
    let live: Vec<usize> = (0..dictionary.latents)
        .filter(|&j| stats.frequency[j] > 0.0)
        .collect();
    let fractions: Vec<f64> = live
        .iter()
        .map(|&j| fraction_inside(dictionary.direction(j), &basis))
        .collect();
    let total_frequency: f64 = live.iter().map(|&j| stats.frequency[j]).sum();
    let weighted: f64 = live
        .iter()
        .zip(&fractions)
        .map(|(&j, f)| stats.frequency[j] * f)
        .sum::<f64>()
        / total_frequency.max(f64::MIN_POSITIVE);
    Ok(json!({
        "key_frequencies": keys,
        "subspace_dim": basis.len(),
        "random_expectation": basis.len() as f64 / d as f64,
        "mean_fraction": fractions.iter().sum::<f64>() / fractions.len().max(1) as f64,
        "frequency_weighted_fraction": weighted,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use trainer::model::ModelDims;

    use crate::features::dictionary::best_matches;
    use crate::features::planted::planted;

    /// A planted model: its embedding row of each token is a known sparse combination of known directions
    /// (Sharkey et al. 2022's toy data, `planted`) and its positional embedding is zero, so the residual stream
    /// at `blocks.0.hook_resid_pre` is exactly that combination at every key position. The dictionary, trained
    /// through the real capture forward on the task's own inputs, recovers every direction.
    #[test]
    fn a_planted_model_s_directions_are_recovered_through_the_capture() {
        // The induction example's task (64 tokens), on a one-layer width-32 model.
        let text = include_str!("../../../examples/induction.toml")
            .replace("n_layers = 2", "n_layers = 1")
            .replace("d_model = 64", "d_model = 32")
            .replace("normalization = \"ln\"", "normalization = \"none\"")
            + "[features]\nboundary = \"blocks.0.hook_resid_pre\"\nexpansion = 1\nk = 2\ninputs = 2048\nsteps = 3000\n";
        let config = Config::parse(&text).unwrap();
        let task = trainer::tasks::build(&config.task, 0).unwrap();
        let device = Device::default();
        let dims = ModelDims::new(&config, task.as_ref());
        let mut model = Transformer::new(&dims, 0, &device);
        // 16 directions in 32 dimensions, 2 per token, over the 64 tokens. Checked on planted seeds 1-6 too:
        // the worst max-cosine is >= 0.99 on 1-5 and 0.948 on seed 6 (not investigated; with only 64 distinct
        // tokens a direction few tokens use is seen rarely).
        let (embedding, directions) = planted(16, 32, 2, 64, 3);
        model.embed.W_E = Param::from_data(TensorData::new(embedding, [64, 32]), &device);
        model.pos_embed.W_pos =
            Param::from_tensor(Tensor::zeros([dims.n_ctx, dims.d_model], &device));
        let probe = ProbeSet::generate(task.as_ref(), 256, 0);
        let (dictionary, report) =
            features_at(&model, task.as_ref(), &config, &probe, 0, None, &device).unwrap();
        let matches = best_matches(&dictionary, &directions);
        let worst = matches.iter().map(|m| m.1).fold(1.0, f64::min);
        assert!(worst >= 0.95, "worst max-cosine {worst}: {matches:?}");
        assert!(
            report["variance_explained"].as_f64().unwrap() > 0.9,
            "{}",
            report["variance_explained"]
        );
    }
}
