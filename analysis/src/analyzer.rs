//! One checkpoint's analysis, run on the sidecar: every metric of SPEC §5 from the message's host arrays, the
//! JSONL row, the arrays to store, and what the next checkpoint's dynamics compare against.
//!
//! The dynamics need the previous checkpoint's residuals, patterns, parameters and probe weights. They are
//! always stored in that checkpoint's HDF5 file under the same names the comparison uses, so a resumed run
//! restores [`Previous`] from the last completed step's file and its row ([`Previous::load`]) and writes the
//! same rows an uninterrupted run would.

use host::names::{AttnWeight, Component, ParamName};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use trainer::tasks::RepeatKeys;

use probes::ProbeSet;
use probes::control_task::control_labels;
use probes::ridge::folds;

use trainer::config::{AnalysisConfig, StoreItem};
use trainer::model::{HookName, HostArray};

use crate::error::AnalysisError;
use crate::message::{CheckpointMessage, StoredArray};
use crate::metrics::attribution::{
    Attribution, AttributionInput, LayerWrites, Readout, direct_logit_attribution,
};
use crate::metrics::behavior::{BehaviorInput, behavior};
use crate::metrics::composition::{circuit, k_composition};
use crate::metrics::dynamics::{
    cosine, frobenius_norm, js_divergence, linear_cka, output_projection, relative_update,
};
use crate::metrics::heads::{HeadInput, head_metrics};
use crate::metrics::mlp::{active_fraction, head_output_norm, norm};
use crate::metrics::residual::{ProbeScore, ProbeTargets, probe_boundary};
use crate::row::{Dla, Dynamics, HeadRow, MlpRow, Row, SCHEMA_VERSION, Timing};
use crate::selection::{at_key_positions, at_key_queries, at_positions, boundaries, hook_axes};

/// Groups of the per-checkpoint HDF5 file that the dynamics read back.
pub const RESID_GROUP: &str = "resid_at_keys";
pub const PATTERN_GROUP: &str = "patterns";
pub const PARAM_GROUP: &str = "params";
pub const PROBE_GROUP: &str = "probe_weights";
pub const PROBE_BIAS_GROUP: &str = "probe_bias";
pub const PROJECTION: &str = "output_projection";

/// What the dynamics compare against: the previous checkpoint's stored arrays (by stored name) and row.
#[derive(Debug, Clone, Default)]
pub struct Previous {
    pub step: u64,
    pub arrays: BTreeMap<String, HostArray>,
    /// The numeric leaves of the previous row's behavior, residual, heads and mlp, by dotted path.
    pub headline: BTreeMap<String, f64>,
}

/// The analysis of one run: the fixed inputs and the previous checkpoint.
pub struct Analyzer {
    run_id: String,
    probe: Arc<ProbeSet>,
    induction_repeat: Option<Vec<usize>>,
    store_items: Vec<StoreItem>,
    probe_targets: ProbeTargets,
    previous: Option<Previous>,
}

/// One analyzed checkpoint: the row (timing still to fill in by the sidecar) and the arrays to store.
pub struct Analysis {
    pub row: Row,
    pub arrays: Vec<StoredArray>,
    /// Milliseconds per metric family.
    pub families: BTreeMap<String, f64>,
}

impl Analyzer {
    /// `repeat_keys`: the task's in-context copying structure ([`trainer::tasks::Task::repeat_keys`]).
    pub fn new(
        run_id: String,
        probe: Arc<ProbeSet>,
        config: &AnalysisConfig,
        repeat_keys: Option<RepeatKeys>,
        previous: Option<Previous>,
    ) -> Self {
        let induction_repeat = repeat_keys.and_then(|keys| repeat_lengths(&probe, keys));
        let controls = probe
            .key_positions
            .iter()
            .map(|key| {
                probe
                    .targets
                    .iter()
                    .map(|target| control_labels(&probe.examples, key, target, probe.seed))
                    .collect()
            })
            .collect();
        let probe_targets = ProbeTargets {
            key_names: probe.key_positions.iter().map(|k| k.name.clone()).collect(),
            targets: probe.targets.clone(),
            controls,
            folds: folds(probe.len(), config.probe_folds, probe.seed),
            alpha: config.probe_alpha,
        };
        Self {
            run_id,
            probe,
            induction_repeat,
            store_items: config.store.clone(),
            probe_targets,
            previous,
        }
    }

    /// Every metric of one checkpoint.
    pub fn analyze(&mut self, message: &CheckpointMessage) -> Result<Analysis, AnalysisError> {
        let mut families = BTreeMap::new();
        let mut clock = Instant::now();
        let mut lap = |name: &str, families: &mut BTreeMap<String, f64>| {
            families.insert(name.to_owned(), clock.elapsed().as_secs_f64() * 1e3);
            clock = Instant::now();
        };
        let probe = self.probe.clone();
        let hooks = &message.hooks;
        let missing = |what: &str| AnalysisError::Missing {
            step: message.step,
            what: what.to_owned(),
        };
        let logits = hook(hooks, HookName::Logits).ok_or_else(|| missing("logits"))?;
        let splits: Vec<&'static str> = probe.splits.iter().map(|s| s.name()).collect();
        let behavior = behavior(&BehaviorInput {
            logits: &logits.data,
            vocab: logits.shape[2],
            tokens: &probe.examples.tokens,
            seq_len: probe.examples.seq_len,
            answer_positions: &probe.answer_positions,
            answer_targets: &probe.examples.targets,
            splits: &splits,
            induction_repeat: self.induction_repeat.as_deref(),
        });
        lap("behavior", &mut families);

        let mut arrays = vec![];
        let mut residual = BTreeMap::new();
        for (name, array) in boundaries(hooks) {
            let at_keys = at_key_positions(array, &probe.key_positions);
            let (n_keys, d_model) = (at_keys.shape[1], at_keys.shape[2]);
            let results = probe_boundary(&at_keys.data, n_keys, d_model, &self.probe_targets)
                .map_err(|e| AnalysisError::Metric {
                    step: message.step,
                    message: format!("{name}: {e}"),
                })?;
            let mut by_key: BTreeMap<String, BTreeMap<String, ProbeScore>> = BTreeMap::new();
            for result in results {
                let key = &self.probe_targets.key_names[result.key];
                let target = &self.probe_targets.targets[result.target];
                by_key
                    .entry(key.clone())
                    .or_default()
                    .insert(target.name.clone(), result.score);
                let path = format!("{name}/{key}/{}", target.name);
                arrays.push(stored(
                    format!("{PROBE_GROUP}/{path}"),
                    "d_model,class",
                    HostArray {
                        shape: vec![d_model, target.n_classes],
                        data: result.probe.weights,
                    },
                ));
                arrays.push(stored(
                    format!("{PROBE_BIAS_GROUP}/{path}"),
                    "class",
                    HostArray {
                        shape: vec![target.n_classes],
                        data: result.probe.bias,
                    },
                ));
            }
            residual.insert(name.to_string(), by_key);
            arrays.push(stored(
                format!("{RESID_GROUP}/{name}"),
                "example,key_position,d_model",
                at_keys,
            ));
        }
        lap("residual", &mut families);

        let attribution = attribution(message, &probe).ok_or_else(|| missing("parameters"))?;
        lap("attribution", &mut families);

        let heads = self.heads_row(message, &attribution, &mut arrays);
        lap("heads", &mut families);
        let mlp = self.mlp_row(message, &attribution);
        lap("mlp", &mut families);

        for (name, param) in &message.params {
            arrays.push(stored(format!("{PARAM_GROUP}/{name}"), "", param.clone()));
        }
        let outputs = at_positions(logits, &probe.answer_positions);
        let projection = output_projection(&outputs.data, probe.seed);
        arrays.push(stored(
            PROJECTION.into(),
            "component",
            HostArray {
                shape: vec![projection.len()],
                data: projection.iter().map(|&v| v as f32).collect(),
            },
        ));
        self.extra_arrays(hooks, &mut arrays);
        let mut row = Row {
            schema_version: SCHEMA_VERSION,
            run_id: self.run_id.clone(),
            step: message.step,
            tokens_seen: message.tokens_seen,
            wall_s: message.wall_s,
            lr: message.lr,
            train_loss: message.train_loss,
            behavior,
            eval: message.eval.clone().map(|e| {
                [("train", e.train), ("test", e.test), ("ood", e.ood)]
                    .into_iter()
                    .filter_map(|(name, score)| Some((name.to_owned(), score?)))
                    .collect()
            }),
            residual,
            heads,
            mlp,
            dla: Dla {
                attn_bias: attribution
                    .attn_bias
                    .iter()
                    .enumerate()
                    .map(|(l, v)| (Component::mlp(l).to_string(), *v))
                    .collect(),
                embed: attribution.embed,
                logit_diff: attribution.logit_diff,
                pos_embed: attribution.pos_embed,
                unembed_bias: attribution.unembed_bias,
            },
            dynamics: Dynamics::default(),
            timing: Timing::default(),
        };
        let headline = headline(&row);
        row.dynamics = self.dynamics(message, &arrays, &headline, projection);
        lap("dynamics", &mut families);
        self.previous = Some(Previous {
            step: message.step,
            arrays: arrays
                .iter()
                .filter(|a| is_dynamics_input(&a.name))
                .map(|a| (a.name.clone(), a.array.clone()))
                .collect(),
            headline,
        });
        Ok(Analysis {
            row,
            arrays,
            families,
        })
    }

    /// Head metrics of every layer, keyed `L{layer}H{head}`; also stores the patterns at the key queries.
    fn heads_row(
        &self,
        message: &CheckpointMessage,
        attribution: &Attribution,
        arrays: &mut Vec<StoredArray>,
    ) -> BTreeMap<String, HeadRow> {
        let probe = &self.probe;
        let keys: Vec<(&str, &[u32])> = probe
            .key_positions
            .iter()
            .map(|k| (k.name.as_str(), k.values.as_slice()))
            .collect();
        let composition = k_composition_row(&message.params);
        let mut out = BTreeMap::new();
        for (name, pattern) in &message.hooks {
            let HookName::Pattern(layer) = *name else {
                continue;
            };
            arrays.push(stored(
                format!("{PATTERN_GROUP}/{name}"),
                "example,head,key_position,k",
                at_key_queries(pattern, &probe.key_positions),
            ));
            let metrics = head_metrics(&HeadInput {
                pattern: &pattern.data,
                n_heads: pattern.shape[1],
                seq_len: pattern.shape[2],
                tokens: &probe.examples.tokens,
                keys: &keys,
                induction_repeat: self.induction_repeat.as_deref(),
            });
            let z = hook(&message.hooks, HookName::Z(layer));
            let w_o = message
                .params
                .get(&ParamName::Attn(layer, AttnWeight::WO).to_string());
            for (h, m) in metrics.into_iter().enumerate() {
                let id = Component::head(layer, h).to_string();
                let row = HeadRow {
                    ablation_dloss: message.ablation.as_ref().map(|a| a.heads[layer][h]),
                    attn: m.attn,
                    dla: attribution.heads[layer][h],
                    entropy: m.entropy,
                    k_composition: composition.get(&id).cloned(),
                    output_norm: z
                        .zip(w_o)
                        .map(|(z, w_o)| head_output_norms(z, w_o, h, probe)),
                    scores: m.scores,
                };
                out.insert(id, row);
            }
        }
        out
    }

    /// MLP metrics of every block, keyed `L{layer}`.
    fn mlp_row(
        &self,
        message: &CheckpointMessage,
        attribution: &Attribution,
    ) -> BTreeMap<String, MlpRow> {
        let probe = &self.probe;
        let at_keys = |array: &HostArray, f: RowMetric| {
            let (seq, d) = (array.shape[1], array.shape[2]);
            mean_at_keys(probe, |i, t| f(&array.data[(i * seq + t) * d..][..d]))
        };
        let mut out = BTreeMap::new();
        for (name, array) in &message.hooks {
            let (layer, f): (usize, RowMetric) = match name {
                HookName::MlpOut(l) => (*l, norm),
                HookName::MlpPost(l) => (*l, active_fraction),
                _ => continue,
            };
            let entry = out
                .entry(Component::mlp(layer).to_string())
                .or_insert_with(|| MlpRow {
                    ablation_dloss: message
                        .ablation
                        .as_ref()
                        .and_then(|a| a.mlp.get(layer).copied()),
                    dla: attribution.mlp.get(layer).copied(),
                    ..MlpRow::default()
                });
            let values = Some(at_keys(array, f));
            match name {
                HookName::MlpOut(_) => entry.output_norm = values,
                _ => entry.active_fraction = values,
            }
        }
        out
    }

    /// Everything compared with the previous checkpoint, plus this checkpoint's own parameter norms and output
    /// projection.
    fn dynamics(
        &self,
        message: &CheckpointMessage,
        arrays: &[StoredArray],
        headline: &BTreeMap<String, f64>,
        projection: Vec<f64>,
    ) -> Dynamics {
        let mut out = Dynamics {
            param_norm: message
                .params
                .iter()
                .map(|(name, p)| (name.clone(), frobenius_norm(&p.data)))
                .collect(),
            output_projection: projection,
            ..Dynamics::default()
        };
        let Some(previous) = &self.previous else {
            return out;
        };
        let before = |name: &str| previous.arrays.get(name);
        let mut relative = BTreeMap::new();
        let mut cka: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        let mut probe_cosine: BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>> =
            BTreeMap::new();
        let mut js_drift = BTreeMap::new();
        for array in arrays {
            let Some(old) = before(&array.name) else {
                continue;
            };
            let parts: Vec<&str> = array.name.split('/').collect();
            match parts.as_slice() {
                [PARAM_GROUP, name] => {
                    if let Some(r) = relative_update(&array.array.data, &old.data) {
                        relative.insert(name.to_string(), r);
                    }
                }
                [RESID_GROUP, boundary] => {
                    let [_, _, d] = array.array.shape[..] else {
                        continue;
                    };
                    for (k, key) in self.probe_targets.key_names.iter().enumerate() {
                        let score =
                            linear_cka(&key_column(&array.array, k), d, &key_column(old, k), d);
                        cka.entry(boundary.to_string())
                            .or_default()
                            .insert(key.clone(), score);
                    }
                }
                [PROBE_GROUP, boundary, key, target] => {
                    probe_cosine
                        .entry(boundary.to_string())
                        .or_default()
                        .entry(key.to_string())
                        .or_default()
                        .insert(target.to_string(), cosine(&array.array.data, &old.data));
                }
                [PATTERN_GROUP, hook] => {
                    let layer = hook_layer(hook);
                    let [n, heads, keys, k] = array.array.shape[..] else {
                        continue;
                    };
                    for h in 0..heads {
                        let mut total = 0.0;
                        for i in 0..n {
                            for q in 0..keys {
                                let at = ((i * heads + h) * keys + q) * k;
                                total += js_divergence(
                                    &array.array.data[at..at + k],
                                    &old.data[at..at + k],
                                );
                            }
                        }
                        js_drift.insert(
                            Component::head(layer, h).to_string(),
                            total / (n * keys).max(1) as f64,
                        );
                    }
                }
                _ => {}
            }
        }
        out.delta = Some(
            headline
                .iter()
                .filter_map(|(name, now)| Some((name.clone(), now - previous.headline.get(name)?)))
                .collect(),
        );
        out.previous_step = Some(previous.step);
        out.relative_update = Some(relative);
        out.cka = Some(cka);
        out.probe_cosine = Some(probe_cosine);
        out.pattern_js = Some(js_drift);
        out
    }

    /// The optional arrays of `analysis.store`.
    fn extra_arrays(&self, hooks: &[(HookName, HostArray)], arrays: &mut Vec<StoredArray>) {
        for item in &self.store_items {
            match item {
                StoreItem::LogitsAtAnswers => {
                    if let Some(logits) = hook(hooks, HookName::Logits) {
                        arrays.push(stored(
                            "logits_at_answers".into(),
                            "example,answer,d_vocab_out",
                            at_positions(logits, &self.probe.answer_positions),
                        ));
                    }
                }
                StoreItem::AllHooks => {
                    for (name, array) in hooks {
                        arrays.push(stored(name.to_string(), hook_axes(*name), array.clone()));
                    }
                }
            }
        }
    }
}

impl Previous {
    /// The dynamics inputs of a stored checkpoint: its arrays under [`DYNAMICS_GROUPS`] and its JSONL row.
    pub fn load(step: u64, arrays: BTreeMap<String, HostArray>, row: &Row) -> Self {
        Self {
            step,
            arrays: arrays
                .into_iter()
                .filter(|(name, _)| is_dynamics_input(name))
                .collect(),
            headline: headline(row),
        }
    }
}

/// The `[example, d]` slice at key position `k` of a `resid_at_keys` array `[example, key_position, d]`.
pub fn key_column(resid: &HostArray, k: usize) -> Vec<f32> {
    let [n, keys, d] = resid.shape[..] else {
        return vec![];
    };
    (0..n)
        .flat_map(|i| &resid.data[(i * keys + k) * d..][..d])
        .copied()
        .collect()
}

/// The HDF5 groups the next checkpoint's dynamics compare with.
pub const DYNAMICS_GROUPS: [&str; 4] = [RESID_GROUP, PATTERN_GROUP, PARAM_GROUP, PROBE_GROUP];

/// Whether a stored array is one the next checkpoint's dynamics compare with.
pub fn is_dynamics_input(name: &str) -> bool {
    DYNAMICS_GROUPS
        .iter()
        .any(|group| name.starts_with(&format!("{group}/")))
}

/// The headline metrics whose change the dynamics report: every numeric leaf of behavior, residual, heads and
/// mlp whose name is one of the scalar results (not the per-key-position breakdowns).
fn headline(row: &Row) -> BTreeMap<String, f64> {
    const LEAVES: [&str; 10] = [
        "loss",
        "accuracy",
        "logit_margin",
        "in_context_score",
        "selectivity",
        "ablation_dloss",
        "dla",
        "induction_score",
        "previous_token_head",
        "duplicate_token_head",
    ];
    const FAMILIES: [&str; 4] = ["behavior", "residual", "heads", "mlp"];
    row.series()
        .into_iter()
        .filter(|(path, _)| FAMILIES.contains(&path.split('.').next().unwrap_or_default()))
        .filter(|(path, _)| LEAVES.contains(&path.rsplit('.').next().unwrap_or_default()))
        .collect()
}

/// K-composition scores keyed by the later head (`L1H0`), then the earlier head (`L0H2`).
fn k_composition_row(
    params: &BTreeMap<String, HostArray>,
) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut ov = vec![];
    let mut qk_t = vec![];
    for layer in 0.. {
        let get = |p: AttnWeight| params.get(&ParamName::Attn(layer, p).to_string());
        let (Some(w_q), Some(w_k), Some(w_v), Some(w_o)) = (
            get(AttnWeight::WQ),
            get(AttnWeight::WK),
            get(AttnWeight::WV),
            get(AttnWeight::WO),
        ) else {
            break;
        };
        let [heads, d_model, d_head] = w_q.shape[..] else {
            break;
        };
        let block = d_model * d_head;
        // Head h's circuit a[h] · b[h]ᵀ (b given transposed or not), for every head of the layer.
        let per_head = |a: &HostArray, b: &HostArray, transpose_b: bool| -> Vec<_> {
            (0..heads)
                .map(|h| {
                    let (a, b) = (&a.data[h * block..][..block], &b.data[h * block..][..block]);
                    circuit(a, b, d_model, d_head, transpose_b)
                })
                .collect()
        };
        ov.push(per_head(w_v, w_o, false));
        qk_t.push(per_head(w_k, w_q, true));
    }
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (l1, h1, l2, h2, score) in k_composition(&ov, &qk_t) {
        out.entry(Component::head(l2, h2).to_string())
            .or_default()
            .insert(Component::head(l1, h1).to_string(), score);
    }
    out
}

/// How the captured model reads the residual stream out at the probe set's answers; `None` if a hook or a
/// parameter is missing.
pub fn readout<'a>(
    hooks: &'a [(HookName, HostArray)],
    params: &'a BTreeMap<String, HostArray>,
    probe: &'a ProbeSet,
) -> Option<Readout<'a>> {
    let param = |name: &str| params.get(name).map(|p| p.data.as_slice());
    let logits = hook(hooks, HookName::Logits)?;
    let w_u = params.get(&ParamName::Unembed.to_string())?;
    let n_layers = (0..)
        .take_while(|&l| params.contains_key(&ParamName::Attn(l, AttnWeight::WO).to_string()))
        .count();
    let final_resid = hook(hooks, HookName::ResidPost(n_layers.checked_sub(1)?))?;
    Some(Readout {
        n: logits.shape[0],
        seq_len: logits.shape[1],
        d_model: w_u.shape[0],
        d_vocab_out: w_u.shape[1],
        answer_positions: &probe.answer_positions,
        answer_targets: &probe.examples.targets,
        w_u: &w_u.data,
        b_u: param(&ParamName::UnembedBias.to_string())?,
        ln_final: param(&ParamName::LnFinalWeight.to_string())
            .zip(param(&ParamName::LnFinalBias.to_string())),
        ln_eps: trainer::model::layer_norm_eps(),
        final_resid: &final_resid.data,
    })
}

/// Direct logit attribution of the message's model on the probe set; `None` if a parameter is missing.
fn attribution(message: &CheckpointMessage, probe: &ProbeSet) -> Option<Attribution> {
    let params = &message.params;
    let param = |name: &str| params.get(name).map(|p| p.data.as_slice());
    let readout = readout(&message.hooks, params, probe)?;
    let n_layers = (0..)
        .take_while(|&l| params.contains_key(&ParamName::Attn(l, AttnWeight::WO).to_string()))
        .count();
    let layers = (0..n_layers)
        .map(|l| {
            let w_o = params.get(&ParamName::Attn(l, AttnWeight::WO).to_string())?;
            Some(LayerWrites {
                z: &hook(&message.hooks, HookName::Z(l))?.data,
                n_heads: w_o.shape[0],
                d_head: w_o.shape[1],
                w_o: &w_o.data,
                b_o: param(&ParamName::Attn(l, AttnWeight::BO).to_string())?,
                mlp_out: hook(&message.hooks, HookName::MlpOut(l)).map(|a| a.data.as_slice()),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(direct_logit_attribution(&AttributionInput {
        readout,
        tokens: &probe.examples.tokens,
        w_e: param(&ParamName::Embed.to_string())?,
        w_pos: param(&ParamName::PosEmbed.to_string())?,
        layers,
        logits: &hook(&message.hooks, HookName::Logits)?.data,
    }))
}

/// Each probe example's repeat length: the distance from the repeated token back to its first occurrence, at
/// the key positions the task declares.
fn repeat_lengths(probe: &ProbeSet, keys: RepeatKeys) -> Option<Vec<usize>> {
    let key = |name: &str| probe.key_positions.iter().find(|k| k.name == name);
    let (cur, prev) = (key(keys.repeat)?, key(keys.first)?);
    Some(
        cur.values
            .iter()
            .zip(&prev.values)
            .map(|(c, p)| (c - p) as usize)
            .collect(),
    )
}

fn hook(hooks: &[(HookName, HostArray)], name: HookName) -> Option<&HostArray> {
    hooks.iter().find(|(n, _)| *n == name).map(|(_, a)| a)
}

/// The layer of a hook name `blocks.{l}.…`.
fn hook_layer(name: &str) -> usize {
    name.split('.')
        .nth(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or(0)
}

fn stored(name: String, axes: &str, array: HostArray) -> StoredArray {
    StoredArray {
        name,
        axes: axes.into(),
        array,
    }
}

/// Mean over the probe examples of `value(example, position)` at each key position, keyed by its name.
fn mean_at_keys(probe: &ProbeSet, value: impl Fn(usize, usize) -> f64) -> BTreeMap<String, f64> {
    probe
        .key_positions
        .iter()
        .map(|key| {
            let n = key.values.len();
            let sum: f64 = (0..n).map(|i| value(i, key.values[i] as usize)).sum();
            (key.name.clone(), sum / n.max(1) as f64)
        })
        .collect()
}

/// Mean ‖z_h W_O[h]‖ of head `h` at each key position; `z` is [n, pos, head, d_head], `w_o` [head, d_head, d_model].
fn head_output_norms(
    z: &HostArray,
    w_o: &HostArray,
    h: usize,
    probe: &ProbeSet,
) -> BTreeMap<String, f64> {
    let (seq, heads, d_head) = (z.shape[1], z.shape[2], z.shape[3]);
    let w = &w_o.data[h * d_head * w_o.shape[2]..][..d_head * w_o.shape[2]];
    mean_at_keys(probe, |i, t| {
        head_output_norm(&z.data[((i * seq + t) * heads + h) * d_head..][..d_head], w)
    })
}

/// A metric of one activation row.
type RowMetric = fn(&[f32]) -> f64;

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::prelude::*;
    use trainer::config::{Activation, Normalization};
    use trainer::model::{ModelDims, Transformer};
    use trainer::tasks::{Induction, Task};

    use crate::message::test_message;
    use crate::plugin::{ProbeInputs, capture};

    fn param<const D: usize>(
        values: Vec<f32>,
        shape: [usize; D],
        device: &Device,
    ) -> Param<Tensor<D>> {
        Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// A hand-built one-layer attention-only model on the induction task: one-hot positions, no token
    /// information, head 0 with W_Q = c·I and W_K a one-step shift (query t matches key t−1), head 1 all
    /// zeros (uniform attention). Through capture and the full analysis, head 0's TransformerLens
    /// previous-token score is (T−1)/T (its first query row can only attend to itself) and head 1's is low.
    #[test]
    fn a_planted_previous_token_head_scores_t_minus_1_over_t() {
        let device = Device::flex();
        let (vocab, n) = (10, 8);
        let t = 2 * n;
        let task = Induction::new(vocab, n, n / 2, 64, 0);
        let probe = Arc::new(ProbeSet::generate(&task as &dyn Task, 32, 0));
        let dims = ModelDims {
            n_layers: 1,
            d_model: t,
            n_heads: 2,
            d_head: t,
            d_mlp: None,
            d_vocab: task.d_vocab(),
            d_vocab_out: task.d_vocab_out(),
            n_ctx: t,
            act_fn: Activation::Relu,
            normalization: Normalization::None,
            attn_only: true,
            init_range: 0.8,
        };
        let mut model = Transformer::new(&dims, 0, &device);
        let identity =
            |scale: f32| (0..t * t).map(move |i| if i / t == i % t { scale } else { 0.0 });
        model.embed.W_E = param(vec![0.0; task.d_vocab() * t], [task.d_vocab(), t], &device);
        model.pos_embed.W_pos = param(identity(1.0).collect(), [t, t], &device);
        let attn = &mut model.blocks[0].attn;
        let w_q: Vec<f32> = identity(400.0)
            .chain(std::iter::repeat_n(0.0, t * t))
            .collect();
        // Key of position s = e_{s+1}: W_K[s, s+1] = 1.
        let shift = (0..t * t).map(|i| if i % t == i / t + 1 { 1.0 } else { 0.0 });
        let w_k: Vec<f32> = shift.chain(std::iter::repeat_n(0.0, t * t)).collect();
        attn.W_Q = param(w_q, [2, t, t], &device);
        attn.W_K = param(w_k, [2, t, t], &device);

        let captured = capture(
            &model,
            &ProbeInputs::new(&probe, None, &device),
            &[],
            true,
            0,
        )
        .unwrap();
        let message = test_message(0, captured);
        let mut analyzer = Analyzer::new(
            "r".into(),
            probe,
            &AnalysisConfig::default(),
            task.repeat_keys(),
            None,
        );
        let row = analyzer.analyze(&message).unwrap().row;
        let score = |head: &str| row.heads[head].scores["previous_token_head"];
        let want = (t - 1) as f64 / t as f64;
        assert!(
            (score("L0H0") - want).abs() < 1e-3,
            "{} vs {want}",
            score("L0H0")
        );
        // Uniform attention: Σ_{q≥1} 1/(q+1) / T = (H_16 − 1)/16 ≈ 0.15.
        assert!(score("L0H1") < 0.2, "{}", score("L0H1"));
    }
}
