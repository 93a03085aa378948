//! Targeted interventions (SPEC §6, second half): the expensive analyses that run on one checkpoint of a
//! birth window on demand (`formation intervene`), never at every checkpoint. So far: the [`logit_lens`] per
//! layer boundary. Each kind turns one checkpoint's capture into a JSON report.

pub mod fourier;
pub mod llc;
pub mod llc_model;
pub mod logit_lens;
pub mod run;

use host::names::{Component, ParamName};
use std::collections::BTreeMap;

use probes::ProbeSet;
use serde_json::{Value, json};
use trainer::model::{HookName, HostArray};

use crate::selection::{at_positions, boundaries};
use logit_lens::{Unembedding, logit_lens};

/// The logit lens at every layer boundary, keyed by hook name, from a capture's host hooks and the
/// parameters; `None` if the unembedding is missing.
pub fn logit_lens_report(
    hooks: &[(HookName, HostArray)],
    params: &BTreeMap<String, HostArray>,
    probe: &ProbeSet,
) -> Option<Value> {
    let param = |name: &str| params.get(name).map(|p| p.data.as_slice());
    let unembed = Unembedding {
        w_u: param(&ParamName::Unembed.to_string())?,
        b_u: param(&ParamName::UnembedBias.to_string())?,
        ln_final: param(&ParamName::LnFinalWeight.to_string())
            .zip(param(&ParamName::LnFinalBias.to_string())),
        eps: trainer::model::layer_norm_eps(),
    };
    let targets = &probe.examples.targets;
    let mut out = BTreeMap::new();
    for (name, array) in boundaries(hooks) {
        let at_answers = at_positions(array, &probe.answer_positions);
        out.insert(
            name.to_string(),
            json!(logit_lens(&at_answers.data, targets, &unembed)),
        );
    }
    Some(json!(out))
}

/// The probe set's tokens [n, seq] with the token at key position `key` of every example replaced by another
/// token of the output vocabulary (a seeded, per-example shift, never 0): the corrupted inputs of activation
/// patching.
pub fn corrupted_tokens(
    probe: &ProbeSet,
    key: &str,
    d_vocab_out: usize,
    seed: u64,
) -> Option<Vec<u32>> {
    let positions = probe.key_positions.iter().find(|k| k.name == key)?;
    let e = &probe.examples;
    let mut tokens = e.tokens.clone();
    let mut rng = host::rng::SplitMix64::derived(seed, "patching-corruption", 0);
    for (i, &t) in positions.values.iter().enumerate() {
        let at = i * e.seq_len + t as usize;
        let shift = 1 + rng.below(d_vocab_out.max(2) - 1) as u32;
        tokens[at] = (tokens[at] + shift) % d_vocab_out as u32;
    }
    Some(tokens)
}

/// Activation-patching results as normalized recovery, (LD_patched − LD_corrupt) / (LD_clean − LD_corrupt):
/// 1 = the component carries the whole difference, 0 = none of it.
pub fn patching_report(effects: &trainer::model::PatchingEffects) -> Value {
    let recovery = |ld: f64| effects.recovery(ld);
    let mut heads = BTreeMap::new();
    for (l, layer) in effects.heads.iter().enumerate() {
        for (h, &ld) in layer.iter().enumerate() {
            heads.insert(Component::head(l, h).to_string(), recovery(ld));
        }
    }
    let mlp: BTreeMap<String, f64> = effects
        .mlp
        .iter()
        .enumerate()
        .map(|(l, &ld)| (Component::mlp(l).to_string(), recovery(ld)))
        .collect();
    let resid: BTreeMap<String, Vec<f64>> = effects
        .resid_pre
        .iter()
        .enumerate()
        .map(|(l, row)| {
            (
                HookName::ResidPre(l).to_string(),
                row.iter().map(|&ld| recovery(ld)).collect(),
            )
        })
        .collect();
    json!({
        "logit_diff_clean": effects.clean,
        "logit_diff_corrupt": effects.corrupt,
        "recovery": { "heads": heads, "mlp": mlp, "resid_pre_by_position": resid },
    })
}

/// How many frequencies [`fourier_report`] calls key (Nanda et al. find five for p = 113).
pub const KEY_FREQUENCIES: usize = 5;

/// The Fourier progress measures of a modular-addition checkpoint from a forward over all p² inputs (in the
/// order a·p + b) at the `=` position: `mlp_eq` [p², d_mlp] of the last MLP, `logits_eq` [p², p],
/// `w_e` [p + 1, d_model]; `train` lists the inputs of the train split.
pub fn fourier_report(
    mlp_eq: &[f32],
    logits_eq: &[f32],
    w_e: &HostArray,
    p: usize,
    train: &[usize],
) -> Value {
    let measures = fourier_measures(mlp_eq, logits_eq, w_e, p, train);
    json!({
        "key_frequencies": measures.key_frequencies,
        "neuron_energy_by_frequency": measures.neuron_energy,
        "embedding_norm_by_frequency": measures.embedding_norms,
        "embedding_gini": measures.embedding_gini,
        "train_loss": measures.train_loss,
        "test_loss": measures.test_loss,
        "restricted_loss": measures.restricted_loss,
        "excluded_loss": measures.excluded_loss,
    })
}

/// Nanda et al. 2023's progress measures of one checkpoint (see [`fourier_measures`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FourierMeasures {
    pub key_frequencies: Vec<usize>,
    pub neuron_energy: Vec<f64>,
    pub embedding_norms: Vec<f64>,
    pub embedding_gini: f64,
    pub train_loss: f64,
    pub test_loss: f64,
    pub restricted_loss: f64,
    pub excluded_loss: f64,
}

/// The Fourier progress measures from the last MLP's neurons `mlp_eq` [p², d_mlp] and the logits `logits_eq`
/// [p², p] at `=` over all p² inputs (a-major), the embedding `w_e` [p + 1, d_model] and the train inputs.
pub fn fourier_measures(
    mlp_eq: &[f32],
    logits_eq: &[f32],
    w_e: &HostArray,
    p: usize,
    train: &[usize],
) -> FourierMeasures {
    use fourier::*;
    let neuron_energy = frequency_energy(mlp_eq, p);
    let keys = key_frequencies(&neuron_energy, KEY_FREQUENCIES);
    let embedding_norms = frequency_norms(&w_e.data[..p * w_e.shape[1]], p);
    let in_train: std::collections::BTreeSet<usize> = train.iter().copied().collect();
    let test: Vec<usize> = (0..p * p).filter(|i| !in_train.contains(i)).collect();
    FourierMeasures {
        embedding_gini: gini(&embedding_norms),
        train_loss: full_loss(logits_eq, p, train),
        test_loss: full_loss(logits_eq, p, &test),
        restricted_loss: restricted_loss(logits_eq, p, &keys, train),
        excluded_loss: excluded_loss(logits_eq, p, &keys, train),
        key_frequencies: keys,
        neuron_energy,
        embedding_norms,
    }
}
