//! The forwards of one checkpoint's analysis, run by the sidecar thread on its own copy of the model loaded from
//! the trainer's snapshot of the weights (no checkpoint is read): one capture forward over the probe set, the
//! mean-ablation forwards that start from it, the Fourier grid's forward when asked for, and the copies to host.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use probes::ProbeSet;
use trainer::config::{AnalysisConfig, StoreItem};
use trainer::export::{named_parameters, with_parameters};
use trainer::model::{AblationLosses, HookName, HostArray, Transformer, int_tensor};
use trainer::tasks::Declared;

use crate::error::AnalysisError;
use crate::message::{GridCapture, Snapshot};
use crate::selection::{needed, tail_positions};

/// Every parameter of `model` by its TransformerLens state-dict name, as host arrays: the snapshot the trainer
/// hands over.
pub fn host_parameters(model: &Transformer) -> BTreeMap<String, HostArray> {
    named_parameters(model)
        .into_iter()
        .map(|(name, (shape, data))| (name, HostArray { shape, data }))
        .collect()
}

/// The sidecar's forwards: the probe set and the Fourier grid on its device, and the model the snapshots are
/// loaded into.
pub struct Forwards {
    device: Device,
    inputs: ProbeInputs,
    /// Every input of the task's Fourier grid, [p², seq] (`[analysis] fourier_progress`).
    grid: Option<Tensor<2, Int>>,
    store: Vec<StoreItem>,
    /// Built from the first snapshot's shape, then reloaded with each snapshot's weights.
    model: Option<Transformer>,
}

impl Forwards {
    /// `device` is a plain (non-autodiff) device.
    pub fn new(
        probe: &ProbeSet,
        config: &AnalysisConfig,
        declared: &Declared,
        device: &Device,
    ) -> Self {
        let grid = declared
            .fourier_grid
            .as_ref()
            .filter(|_| config.fourier_progress)
            .map(|g| int_tensor(&g.inputs, g.p * g.p, g.seq_len, device));
        let mut inputs = ProbeInputs::new(probe, config.ablation_size, device);
        // Worth it at half the positions or fewer: each kept row is gathered before the last block and
        // scattered back after the copy to host, each skipped one saves its share of the block's work.
        inputs.tail = tail_positions(probe, declared, &config.store)
            .filter(|tail| 2 * tail.len() <= probe.examples.seq_len);
        Self {
            device: device.clone(),
            inputs,
            grid,
            store: config.store.clone(),
            model: None,
        }
    }

    /// The forwards of `snapshot`'s weights.
    pub fn run(&mut self, snapshot: &Snapshot) -> Result<Captured, AnalysisError> {
        let step = snapshot.moment.step;
        let template = match self.model.take() {
            Some(model) => model,
            None => Transformer::new(&snapshot.dims, 0, &self.device),
        };
        let model = with_parameters(template, &snapshot.params, &self.device)
            .map_err(|source| AnalysisError::Host { step, source })?;
        let mut captured = capture(&model, &self.inputs, &self.store, true, step)?;
        let start = Instant::now();
        captured.grid = match &self.grid {
            Some(tokens) => grid_capture(&model, tokens, step)?,
            None => None,
        };
        captured.capture_ms += start.elapsed().as_secs_f64() * 1e3;
        self.model = Some(model);
        Ok(captured)
    }
}

/// The probe set on the device the model runs on.
pub struct ProbeInputs {
    /// [n, seq]
    tokens: Tensor<2, Int>,
    /// Correct token at each answer position, [n, answers].
    targets: Tensor<2, Int>,
    answers: Vec<usize>,
    /// The examples the ablation losses are measured on (`None`: all).
    ablation_rows: Option<Tensor<1, Int>>,
    /// The query positions the capture runs the last block and the unembedding at (`None`: all; see
    /// [`tail_positions`]).
    pub tail: Option<Vec<usize>>,
}

impl ProbeInputs {
    /// `device` is the plain (non-autodiff) device the model trains on.
    pub fn new(probe: &ProbeSet, ablation_size: Option<usize>, device: &Device) -> Self {
        let device = device.clone().without_autodiff();
        let e = &probe.examples;
        // Evenly spaced, so that every source split of the probe set is represented.
        let ablation_rows = ablation_size.filter(|&size| size < e.n).map(|size| {
            let rows: Vec<i64> = (0..size).map(|i| (i * e.n / size) as i64).collect();
            Tensor::from_data(TensorData::new(rows, [size]), &device)
        });
        Self {
            tokens: int_tensor(&e.tokens, e.n, e.seq_len, &device),
            targets: int_tensor(&e.targets, e.n, e.n_answers, &device),
            answers: probe.answer_positions.clone(),
            ablation_rows,
            tail: None,
        }
    }
}

/// What the forwards give for one checkpoint: host copies of the needed hooks and parameters, the
/// mean-ablation losses (when asked for) and the Fourier grid's forward (when asked for).
pub struct Captured {
    pub hooks: Vec<(HookName, HostArray)>,
    pub params: BTreeMap<String, HostArray>,
    pub ablation: Option<AblationLosses>,
    pub grid: Option<GridCapture>,
    pub capture_ms: f64,
    pub ablation_ms: f64,
}

/// One capture forward over the probe set on an inference view of `model`, the ablation forwards that start
/// from it (if `ablate`), and the copies to host.
pub fn capture(
    model: &Transformer,
    inputs: &ProbeInputs,
    store: &[StoreItem],
    ablate: bool,
    step: u64,
) -> Result<Captured, AnalysisError> {
    let start = Instant::now();
    let model = model.valid();
    let capture = model.capture_at(inputs.tokens.clone(), inputs.tail.as_deref());
    let capture_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let answers = model.answer_queries(&inputs.answers, &inputs.tokens.device());
    let ablation = ablate
        .then(|| {
            model.mean_ablation(
                &capture,
                &inputs.targets,
                &answers,
                inputs.ablation_rows.as_ref(),
            )
        })
        .transpose()
        .map_err(|source| AnalysisError::Host { step, source })?;
    let ablation_ms = start.elapsed().as_secs_f64() * 1e3;
    // After the ablations, which start from the capture on the device: each hook is freed as it is copied.
    let start = Instant::now();
    let n_layers = model.dims.n_layers;
    let hooks = capture
        .into_host(|name| needed(store, *name, n_layers))
        .map_err(|source| AnalysisError::Host { step, source })?;
    let params = host_parameters(&model);
    let capture_ms = capture_ms + start.elapsed().as_secs_f64() * 1e3;
    Ok(Captured {
        hooks,
        params,
        ablation,
        grid: None,
        capture_ms,
        ablation_ms,
    })
}

/// Grid inputs per forward: bounds the memory of the capture over all p² inputs (12 769 at p = 113; 4 096 per
/// forward peaked 16 MiB higher on the reference, BENCHMARKS.md).
const GRID_CHUNK: usize = 1024;

/// The last MLP's `hook_post` and the logits at the last position (`=` of `a b =`) over every input of the
/// Fourier grid `tokens` [p², seq]; `None` for a model without MLPs. The last block's queries, MLP and the
/// unembedding run only at `=` ([`Transformer::answer_acts`]).
pub(crate) fn grid_capture(
    model: &Transformer,
    tokens: &Tensor<2, Int>,
    step: u64,
) -> Result<Option<GridCapture>, AnalysisError> {
    let model = model.valid();
    let dims = &model.dims;
    let Some(d_mlp) = dims.d_mlp.filter(|_| dims.n_layers > 0) else {
        return Ok(None);
    };
    let [n, seq] = tokens.dims();
    let at_eq = model.answer_queries(&[seq - 1], &tokens.device());
    let host = |t: Tensor<3>| -> Result<HostArray, AnalysisError> {
        let [rows, _, width] = t.dims();
        trainer::model::to_host(t.reshape([rows, width]))
            .map_err(|source| AnalysisError::Host { step, source })
    };
    // Sized once: grown chunk by chunk, the arrays (26 MB of `hook_post` at the reference size) would pass
    // through twice their final capacity while each reallocation copies.
    let sized = |width: usize| HostArray {
        shape: vec![0, width],
        data: Vec::with_capacity(n * width),
    };
    let (mut mlp_post, mut logits) = (sized(d_mlp), sized(dims.d_vocab_out));
    for start in (0..n).step_by(GRID_CHUNK) {
        let end = (start + GRID_CHUNK).min(n);
        let (acts, at) = model.answer_acts(tokens.clone().slice(s![start..end, ..]), &at_eq);
        let post = acts.mlp_post.expect("a model with MLPs has hook_post");
        for (into, part) in [(&mut mlp_post, host(post)?), (&mut logits, host(at)?)] {
            into.shape = vec![end, part.shape[1]];
            into.data.extend(part.data);
        }
    }
    Ok(Some(GridCapture { mlp_post, logits }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use trainer::config::Config;
    use trainer::model::ModelDims;
    use trainer::tasks::build;

    use super::*;
    use crate::analyzer::{Analysis, Analyzer};
    use crate::message::test_message;

    /// Every number of two checkpoints' rows and stored arrays, from a capture at the tail positions and from
    /// a full one, on the example tasks (a NaN read anywhere would show as a difference; the sidecar uses a
    /// tail only where it is half the positions or fewer, sparse parity among these, but every tail must hold
    /// what the analysis reads).
    #[test]
    fn the_analysis_of_a_capture_at_tail_positions_is_the_analysis_of_the_full_capture() {
        let device = Device::flex();
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut with_tail = 0;
        for name in [
            "sparse-parity",
            "associative-recall",
            "modular-addition-small",
            "markov-chains",
            "group-composition",
        ] {
            let config = Config::load(&examples.join(format!("{name}.toml"))).unwrap();
            let task = build(&config.task, 0).unwrap();
            let probe = Arc::new(ProbeSet::generate(task.as_ref(), 64, 0));
            // Without head detectors (they score whole patterns, so a task that has them gets no tail), so
            // that the tasks with detectors check every other reader too.
            let declared = Declared {
                head_detectors: vec![],
                ..task.declared()
            };
            let dims = ModelDims::new(&config, task.as_ref());
            let tail = tail_positions(&probe, &declared, &[]);
            with_tail += usize::from(tail.is_some());
            let analyses = |tail: Option<Vec<usize>>| -> Vec<Analysis> {
                let mut inputs = ProbeInputs::new(&probe, None, &device);
                inputs.tail = tail;
                let mut analyzer = Analyzer::new(
                    "r".into(),
                    probe.clone(),
                    &AnalysisConfig::default(),
                    &declared,
                    None,
                );
                (0..2)
                    .map(|seed| {
                        let model = Transformer::new(&dims, seed, &device);
                        let captured = capture(&model, &inputs, &[], true, seed).unwrap();
                        analyzer.analyze(&mut test_message(seed, captured)).unwrap()
                    })
                    .collect()
            };
            for (full, at) in analyses(None).iter().zip(&analyses(tail.clone())) {
                let json = |row: &crate::row::Row| {
                    let mut value = serde_json::to_value(row).unwrap();
                    value.as_object_mut().unwrap().remove("timing");
                    value
                };
                assert_close(&json(&full.row), &json(&at.row), name);
                assert_eq!(full.arrays.len(), at.arrays.len(), "{name}");
                for (a, b) in full.arrays.iter().zip(&at.arrays) {
                    assert_eq!(
                        (&a.name, &a.array.shape),
                        (&b.name, &b.array.shape),
                        "{name}"
                    );
                    for (x, y) in a.array.data.iter().zip(&b.array.data) {
                        assert!(
                            (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                            "{name} {}: {x} vs {y}",
                            a.name
                        );
                    }
                }
            }
        }
        // Sparse parity (its answer, bits and subset among 25 positions), associative recall, Markov chains.
        assert_eq!(with_tail, 3);
    }

    fn assert_close(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                assert_eq!(
                    x.keys().collect::<Vec<_>>(),
                    y.keys().collect::<Vec<_>>(),
                    "{at}"
                );
                for (key, value) in x {
                    assert_close(value, &y[key], &format!("{at}.{key}"));
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                assert_eq!(x.len(), y.len(), "{at}");
                for (i, (x, y)) in x.iter().zip(y).enumerate() {
                    assert_close(x, y, &format!("{at}[{i}]"));
                }
            }
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{at}: {x} vs {y}");
            }
            _ => assert_eq!(a, b, "{at}"),
        }
    }
}
