//! One checkpoint's analysis, run on the sidecar: every metric of SPEC §5 from the message's host arrays, the
//! JSONL row, the arrays to store, and what the next checkpoint's dynamics compare against.
//!
//! The dynamics need the previous checkpoint's residuals, patterns, parameters and probe weights. They are
//! always stored in that checkpoint's HDF5 file under the same names the comparison uses, so a resumed run
//! restores [`Previous`] from the last completed step's file and its row ([`Previous::load`]) and writes the
//! same rows an uninterrupted run would.
//!
//! One module per metric family: [`residual`], [`heads`], [`mlp`], [`attribution`], [`dynamics`]; this module
//! runs them in order and assembles the row.

mod attribution;
mod dynamics;
mod heads;
mod mlp;
mod residual;

use crate::stored::{StoredName, key_slices};
use attribution::logit_attribution;
pub use attribution::readout;
use dynamics::headline;
pub use dynamics::key_column;

use host::names::{AttnWeight, Component, ParamName};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use trainer::tasks::Declared;

use probes::ProbeSet;
use probes::control_task::control_labels;
use probes::ridge::folds;

use trainer::config::{AnalysisConfig, StoreItem};
use trainer::model::{HookName, HostArray};

use crate::error::AnalysisError;
use crate::interventions::fourier_measures;
use crate::message::{CheckpointMessage, StoredArray};
use crate::metrics::attribution::{
    Attribution, AttributionInput, LayerWrites, Readout, direct_logit_attribution,
};
use crate::metrics::behavior::{BehaviorInput, behavior};
use crate::metrics::composition::{circuit, k_composition};
use crate::metrics::dynamics::{
    cosine, frobenius_norm, js_divergence, linear_cka_reusing, output_projection, relative_update,
};
use crate::metrics::heads::{Detections, HeadInput, head_metrics};
use crate::metrics::mlp::{active_fraction, head_output_norms, norm};
use crate::metrics::progress::{PreparedMeasure, ProgressInput, progress};
use crate::metrics::residual::{ProbeScore, ProbeTargets, probe_boundary};
use crate::row::{Dla, Dynamics, HeadRow, MlpRow, Residual, Row, SCHEMA_VERSION, Timing};
use crate::selection::{at_key_positions, at_key_queries, at_positions, boundaries, hook_axes};

/// What the dynamics compare against: the previous checkpoint's stored arrays (by stored name) and row.
#[derive(Debug, Clone, Default)]
pub struct Previous {
    pub step: u64,
    pub arrays: BTreeMap<StoredName, HostArray>,
    /// The numeric leaves of the previous row's behavior, residual, heads and mlp, by dotted path.
    pub headline: BTreeMap<String, f64>,
    /// ‖XᵀX‖²_F of each residual at a key position (by stored array and key index), as the comparison with the
    /// checkpoint before computed it: the next linear CKA's other side (empty after a resume: computed again).
    pub cka_self: BTreeMap<(StoredName, usize), f64>,
}

/// The analysis of one run: the fixed inputs and the previous checkpoint.
pub struct Analyzer {
    run_id: String,
    probe: Arc<ProbeSet>,
    induction_repeat: Option<Vec<usize>>,
    /// The declared head detectors' patterns on the probe set.
    head_detections: Detections,
    progress_measures: Vec<PreparedMeasure>,
    /// The Fourier grid's size and train inputs, for the grid capture's progress measures.
    fourier: Option<(usize, Vec<usize>)>,
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
    /// `declared`: what the task declares for the analysis ([`trainer::tasks::Task::declared`]).
    pub fn new(
        run_id: String,
        probe: Arc<ProbeSet>,
        config: &AnalysisConfig,
        declared: &Declared,
        previous: Option<Previous>,
    ) -> Self {
        let induction_repeat = declared
            .repeat_keys
            .and_then(|keys| repeat_lengths(&probe, keys));
        let controls = probe
            .key_positions
            .iter()
            .map(|key| {
                probe
                    .targets
                    .iter()
                    .map(|target| {
                        let declared = probe
                            .control_types
                            .iter()
                            .find(|c| c.name == target.name)
                            .map(|c| c.values.as_slice());
                        control_labels(&probe.examples, key, target, declared, probe.seed)
                    })
                    .collect()
            })
            .collect();
        let head_detections = Detections::new(
            &declared.head_detectors,
            &probe.examples.tokens,
            probe.examples.seq_len,
        );
        let probe_targets = ProbeTargets {
            key_names: probe.key_positions.iter().map(|k| k.name.clone()).collect(),
            targets: probe.targets.clone(),
            controls,
            folds: folds(probe.len(), config.probe_folds, probe.seed),
            alpha: config.probe_alpha,
        };
        let progress_measures = declared
            .progress_measures
            .iter()
            .map(|measure| {
                PreparedMeasure::new(
                    measure.clone(),
                    &probe.examples.tokens,
                    probe.examples.seq_len,
                    &probe.answer_positions,
                )
            })
            .collect();
        Self {
            run_id,
            probe,
            induction_repeat,
            head_detections,
            progress_measures,
            fourier: declared
                .fourier_grid
                .as_ref()
                .map(|g| (g.p, g.train.clone())),
            store_items: config.store.clone(),
            probe_targets,
            previous,
        }
    }

    /// Every metric of one checkpoint. Takes the Fourier grid's arrays out of `message` and frees them as soon
    /// as its measures are in the row: at p = 113 they are 32 MB, and the families after it need none of it.
    pub fn analyze(&mut self, message: &mut CheckpointMessage) -> Result<Analysis, AnalysisError> {
        let mut families = BTreeMap::new();
        let mut clock = Instant::now();
        let mut lap = |name: &str, families: &mut BTreeMap<String, f64>| {
            families.insert(name.to_owned(), clock.elapsed().as_secs_f64() * 1e3);
            clock = Instant::now();
        };
        let probe = self.probe.clone();
        let hooks = &message.hooks;
        let missing = |what: &str| AnalysisError::Missing {
            step: message.moment.step,
            what: what.to_owned(),
        };
        let logits = hook(hooks, HookName::Logits).ok_or_else(|| missing("logits"))?;
        let splits: Vec<&'static str> = probe.splits.iter().map(|s| s.name()).collect();
        let mut behavior = behavior(&BehaviorInput {
            logits: &logits.data,
            vocab: logits.shape[2],
            tokens: &probe.examples.tokens,
            seq_len: probe.examples.seq_len,
            answer_positions: &probe.answer_positions,
            answer_targets: &probe.examples.targets,
            splits: &splits,
            induction_repeat: self.induction_repeat.as_deref(),
        });
        let patterns: Vec<&HostArray> = hooks
            .iter()
            .filter(|(name, _)| matches!(name, HookName::Pattern(_)))
            .map(|(_, array)| array)
            .collect();
        for measure in &self.progress_measures {
            let values = progress(
                measure,
                &ProgressInput {
                    logits: &logits.data,
                    vocab: logits.shape[2],
                    tokens: &probe.examples.tokens,
                    seq_len: probe.examples.seq_len,
                    answer_positions: &probe.answer_positions,
                    patterns: &patterns,
                },
            );
            behavior
                .progress
                .extend(values.into_iter().map(|(name, v)| (name.to_owned(), v)));
        }
        if let (Some(grid), Some((p, train))) = (message.grid.take(), &self.fourier) {
            let w_e = message
                .params
                .get(&ParamName::Embed.to_string())
                .ok_or_else(|| missing("parameters"))?;
            let m = fourier_measures(&grid.mlp_post.data, &grid.logits.data, w_e, *p, train);
            behavior.progress.extend([
                ("restricted_loss".to_owned(), m.restricted_loss),
                ("excluded_loss".to_owned(), m.excluded_loss),
                ("grid_train_loss".to_owned(), m.train_loss),
                ("grid_test_loss".to_owned(), m.test_loss),
                ("embedding_gini".to_owned(), m.embedding_gini),
            ]);
        }
        lap("behavior", &mut families);

        let mut arrays = vec![];
        let residual = self.residual_family(message.moment.step, hooks, &mut arrays)?;
        lap("residual", &mut families);

        let attribution =
            logit_attribution(message, &probe).ok_or_else(|| missing("parameters"))?;
        lap("attribution", &mut families);

        let heads = self.heads_row(message, &attribution, &mut arrays);
        lap("heads", &mut families);
        let mlp = self.mlp_row(message, &attribution);
        lap("mlp", &mut families);

        for (name, param) in &message.params {
            arrays.push(stored(StoredName::Param(name.clone()), "", param.clone()));
        }
        let outputs = at_positions(logits, &probe.answer_positions);
        let projection = output_projection(&outputs.data, probe.seed);
        arrays.push(stored(
            StoredName::OutputProjection,
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
            step: message.moment.step,
            tokens_seen: message.moment.tokens_seen,
            wall_s: message.moment.wall_s,
            lr: message.moment.lr,
            train_loss: message.moment.train_loss,
            behavior,
            eval: message.moment.eval.clone().map(|e| {
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
        let (dynamics, cka_self) = self.dynamics(message, &arrays, &headline, projection);
        row.dynamics = dynamics;
        lap("dynamics", &mut families);
        // Dropped before its successor is copied, so that only one is held at a time.
        self.previous = None;
        self.previous = Some(Previous {
            step: message.moment.step,
            arrays: arrays
                .iter()
                .filter(|a| a.name.is_dynamics_input())
                .map(|a| (a.name.clone(), a.array.clone()))
                .collect(),
            headline,
            cka_self,
        });
        Ok(Analysis {
            row,
            arrays,
            families,
        })
    }

    /// The optional arrays of `analysis.store`.
    fn extra_arrays(&self, hooks: &[(HookName, HostArray)], arrays: &mut Vec<StoredArray>) {
        for item in &self.store_items {
            match item {
                StoreItem::LogitsAtAnswers => {
                    if let Some(logits) = hook(hooks, HookName::Logits) {
                        arrays.push(stored(
                            StoredName::LogitsAtAnswers,
                            "example,answer,d_vocab_out",
                            at_positions(logits, &self.probe.answer_positions),
                        ));
                    }
                }
                StoreItem::AllHooks => {
                    for (name, array) in hooks {
                        arrays.push(stored(
                            StoredName::Hook(*name),
                            hook_axes(*name),
                            array.clone(),
                        ));
                    }
                }
            }
        }
    }
}

impl Previous {
    /// The dynamics inputs of a stored checkpoint: its arrays under [`StoredName::DYNAMICS_GROUPS`] (read
    /// back by path) and its JSONL row.
    pub fn load(step: u64, arrays: BTreeMap<String, HostArray>, row: &Row) -> Self {
        Self {
            step,
            arrays: arrays
                .into_iter()
                .filter_map(|(path, array)| Some((path.parse::<StoredName>().ok()?, array)))
                .filter(|(name, _)| name.is_dynamics_input())
                .collect(),
            headline: headline(row),
            cka_self: BTreeMap::new(),
        }
    }
}

/// Each probe example's repeat length: the distance from the repeated token back to its first occurrence, at
/// the key positions the task declares.
fn repeat_lengths(probe: &ProbeSet, keys: trainer::tasks::RepeatKeys) -> Option<Vec<usize>> {
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

fn stored(name: StoredName, axes: &str, array: HostArray) -> StoredArray {
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

    use crate::forwards::{ProbeInputs, capture};
    use crate::message::test_message;

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
        let mut message = test_message(0, captured);
        let mut analyzer = Analyzer::new(
            "r".into(),
            probe,
            &AnalysisConfig::default(),
            &task.declared(),
            None,
        );
        let row = analyzer.analyze(&mut message).unwrap().row;
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
