//! The checkpoint plugin of `--analyze`: on the trainer thread it runs one capture forward over the probe set
//! on the live model (an inference view, no reload) and the mean-ablation forwards that start from it, copies
//! what the metrics need to host memory and sends it to the sidecar. Everything else happens on the sidecar.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use host::layout::RunLayout;
use probes::ProbeSet;
use trainer::config::{AnalysisConfig, Checked, OnError, StoreItem};
use trainer::model::{AblationLosses, HookName, HookTensor, HostArray, Transformer, int_tensor};
use trainer::plugin::{CheckpointEvent, CheckpointPlugin, PluginError, StartEvent};
use trainer::tasks::Declared;

use crate::error::AnalysisError;
use crate::message::{CheckpointMessage, GridCapture};
use crate::selection::needed;
use crate::sidecar::{Sidecar, SidecarSetup};
use crate::sinks::hdf5::{read_stored_step, stored_step_readable};
use crate::sinks::jsonl::committed_steps;
use crate::stored::StoredName;

/// The `--analyze` plugin.
pub struct AnalyzePlugin {
    config: Checked<AnalysisConfig>,
    probe: Arc<ProbeSet>,
    declared: Declared,
    inputs: ProbeInputs,
    /// Every input of the task's Fourier grid on the device, [p², seq] (`[analysis] fourier_progress`).
    grid: Option<Tensor<2, Int>>,
    sidecar: Option<Sidecar>,
    /// Queue depth after the last send, for the progress display.
    depth: Arc<AtomicUsize>,
    disabled: bool,
}

impl AnalyzePlugin {
    /// `device` is the plain (non-autodiff) device the model trains on; `declared` is what the task declares
    /// for the analysis ([`trainer::tasks::Task::declared`]).
    pub fn new(
        config: Checked<AnalysisConfig>,
        probe: ProbeSet,
        declared: Declared,
        device: &Device,
    ) -> Self {
        let inputs = ProbeInputs::new(&probe, config.ablation_size, device);
        let grid = declared
            .fourier_grid
            .as_ref()
            .filter(|_| config.fourier_progress)
            .map(|g| {
                let device = device.clone().without_autodiff();
                int_tensor(&g.inputs, g.p * g.p, g.seq_len, &device)
            });
        Self {
            config,
            probe: Arc::new(probe),
            declared,
            inputs,
            grid,
            sidecar: None,
            depth: Arc::new(AtomicUsize::new(0)),
            disabled: false,
        }
    }

    /// A gauge of the analysis queue depth (updated at every send).
    pub fn queue_depth(&self) -> Arc<AtomicUsize> {
        self.depth.clone()
    }

    fn fail(&mut self, step: u64, error: AnalysisError) -> Result<(), PluginError> {
        match self.config.on_error {
            OnError::Stop => Err(error.into_plugin_error()),
            OnError::Warn => {
                eprintln!(
                    "WARNING: analysis failed at step {step}: {error}. Training continues WITHOUT analysis \
                     (analysis.on_error = \"warn\")."
                );
                self.disabled = true;
                self.sidecar = None;
                Ok(())
            }
        }
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
        }
    }
}

/// What the trainer thread computes for one checkpoint: host copies of the needed hooks and parameters, and the
/// mean-ablation losses (when asked for).
pub struct Captured {
    pub hooks: Vec<(HookName, HostArray)>,
    pub params: BTreeMap<String, HostArray>,
    pub ablation: Option<AblationLosses>,
    pub capture_ms: f64,
    pub ablation_ms: f64,
}

/// One capture forward over the probe set on an inference view of the live model, the ablation forwards that
/// start from it (if `ablate`), and the copies to host: everything the trainer thread pays for one checkpoint.
pub fn capture(
    model: &Transformer,
    inputs: &ProbeInputs,
    store: &[StoreItem],
    ablate: bool,
    step: u64,
) -> Result<Captured, AnalysisError> {
    let start = Instant::now();
    let model = model.valid();
    let capture = model.capture(inputs.tokens.clone());
    let n_layers = model.dims.n_layers;
    let mut hooks = vec![];
    for (name, tensor) in capture.hooks() {
        if needed(store, name, n_layers) {
            let array = match tensor {
                HookTensor::Rank3(t) => trainer::model::to_host(t.clone()),
                HookTensor::Rank4(t) => trainer::model::to_host(t.clone()),
            };
            hooks.push((
                name,
                array.map_err(|source| AnalysisError::Host { step, source })?,
            ));
        }
    }
    let params = trainer::export::named_parameters(&model)
        .into_iter()
        .map(|(name, (shape, data))| (name, HostArray { shape, data }))
        .collect();
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
    Ok(Captured {
        hooks,
        params,
        ablation,
        capture_ms,
        ablation_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

/// Grid inputs per forward: bounds the memory of the capture over all p² inputs (12 769 at p = 113).
const GRID_CHUNK: usize = 4096;

/// The last MLP's `hook_post` and the logits at the last position (`=` of `a b =`) over every input of the
/// Fourier grid `tokens` [p², seq]; `None` for a model without MLPs.
fn grid_capture(
    model: &Transformer,
    tokens: &Tensor<2, Int>,
    step: u64,
) -> Result<Option<GridCapture>, AnalysisError> {
    let model = model.valid();
    let dims = &model.dims;
    if dims.d_mlp.is_none() || dims.n_layers == 0 {
        return Ok(None);
    }
    let [n, seq] = tokens.dims();
    let (last, eq) = (dims.n_layers - 1, seq - 1);
    let host = |t: Tensor<3>| -> Result<HostArray, AnalysisError> {
        let [rows, _, width] = t.dims();
        let array = trainer::model::to_host(t.slice(s![.., eq..eq + 1, ..]).reshape([rows, width]))
            .map_err(|source| AnalysisError::Host { step, source })?;
        Ok(array)
    };
    let (mut mlp_post, mut logits) = (HostArray::default(), HostArray::default());
    for start in (0..n).step_by(GRID_CHUNK) {
        let end = (start + GRID_CHUNK).min(n);
        let captured = model.capture(tokens.clone().slice(s![start..end, ..]));
        for (name, tensor) in captured.hooks() {
            let into = match name {
                HookName::MlpPost(l) if l == last => &mut mlp_post,
                HookName::Logits => &mut logits,
                _ => continue,
            };
            if let HookTensor::Rank3(t) = tensor {
                let part = host(t.clone())?;
                into.shape = vec![end, part.shape[1]];
                into.data.extend(part.data);
            }
        }
    }
    Ok(Some(GridCapture { mlp_post, logits }))
}

impl CheckpointPlugin for AnalyzePlugin {
    /// The first scheduled step without a committed row *and* a readable step file (a row whose arrays are
    /// missing or unreadable is recomputed, never trusted), or whose successor's dynamics could not be restored
    /// from its arrays.
    fn first_missing_step(
        &mut self,
        run: &RunLayout,
        schedule: &[u64],
    ) -> Result<Option<u64>, PluginError> {
        let (rows, damage) = committed_steps(&run.metrics());
        let activations = run.activations_dir();
        let done: Vec<u64> = schedule
            .iter()
            .copied()
            .take_while(|&s| rows.contains(&s) && stored_step_readable(&activations, s))
            .collect();
        let mut first_missing = schedule.get(done.len()).copied();
        // A damaged, duplicated or out-of-order line: rewrite the rows from there.
        if let Some(after) = damage {
            let damaged = schedule
                .iter()
                .copied()
                .find(|&s| after.is_none_or(|a| s > a));
            first_missing = match (first_missing, damaged) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        // The next checkpoint's dynamics compare with the last analyzed one: its arrays must read back whole.
        for &step in done.iter().rev() {
            if first_missing.is_none()
                || read_stored_step(&activations, step, &StoredName::DYNAMICS_GROUPS).is_ok()
            {
                break;
            }
            first_missing = Some(step);
        }
        Ok(first_missing)
    }

    fn on_create(&mut self, run: &RunLayout) -> Result<(), PluginError> {
        let path = run.probe_set();
        let dir = run.probes_dir();
        std::fs::create_dir_all(&dir).map_err(|e| AnalysisError::io(&dir, e))?;
        self.probe.save(&path)?;
        Ok(())
    }

    fn on_start(&mut self, event: &StartEvent<'_>) -> Result<(), PluginError> {
        let hash = event.manifest.probe_set_sha256.clone().ok_or_else(|| {
            format!(
                "run {} was started without --analyze (no probe set pinned in run.json)",
                event.run.root.display()
            )
        })?;
        ProbeSet::load_pinned(&event.run.probe_set(), &hash)?;
        let setup = SidecarSetup {
            run: event.run.clone(),
            run_id: event.manifest.run_id.clone(),
            probe_set_sha256: hash,
            probe: self.probe.clone(),
            config: self.config.clone(),
            declared: self.declared.clone(),
            start_step: event.start_step,
        };
        self.sidecar = Some(Sidecar::spawn(setup, self.config.queue)?);
        Ok(())
    }

    fn on_checkpoint(&mut self, event: &CheckpointEvent<'_>) -> Result<(), PluginError> {
        if self.disabled {
            return Ok(());
        }
        let captured = match capture(
            event.model,
            &self.inputs,
            &self.config.store,
            true,
            event.step,
        ) {
            Ok(captured) => captured,
            Err(e) => return self.fail(event.step, e),
        };
        let start = Instant::now();
        let grid = match self
            .grid
            .as_ref()
            .map(|g| grid_capture(event.model, g, event.step))
        {
            Some(Ok(grid)) => grid,
            Some(Err(e)) => return self.fail(event.step, e),
            None => None,
        };
        let capture_ms = captured.capture_ms + start.elapsed().as_secs_f64() * 1e3;
        let message = CheckpointMessage {
            step: event.step,
            tokens_seen: event.tokens_seen,
            wall_s: event.wall_s,
            lr: event.lr,
            train_loss: event.train_loss,
            eval: event.eval.cloned(),
            hooks: captured.hooks,
            params: captured.params,
            ablation: captured.ablation,
            grid,
            capture_ms,
            ablation_ms: captured.ablation_ms,
        };
        let Some(sidecar) = self.sidecar.as_mut() else {
            return self.fail(
                event.step,
                AnalysisError::SidecarGone("it was never started".into()),
            );
        };
        match sidecar.send(message) {
            Ok(sent) => {
                self.depth.store(sent.queue_depth, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => self.fail(event.step, e),
        }
    }

    fn finish(&mut self) -> Result<(), PluginError> {
        match self.sidecar.take() {
            Some(sidecar) => sidecar.finish().map_err(AnalysisError::into_plugin_error),
            None => Ok(()),
        }
    }
}
