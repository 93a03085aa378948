//! The checkpoint plugin of `--analyze`: on the trainer thread it runs one capture forward over the probe set
//! on the live model (an inference view, no reload), gathers what the metrics and the store need, copies it to
//! host memory and sends it to the sidecar. Everything else happens on the sidecar.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use probes::ProbeSet;
use trainer::config::{AnalysisConfig, OnError, StoreItem};
use trainer::model::{Capture, HookName, HostArray, Transformer, int_tensor};
use trainer::plugin::{CheckpointEvent, CheckpointPlugin, PluginError, StartEvent};
use trainer::run_dir::{JsonlWriter, RunDir};

use crate::error::AnalysisError;
use crate::message::{CheckpointMessage, SendStats, StoredArray};
use crate::sidecar::{Sidecar, SidecarState};
use crate::sinks::hdf5::ActivationStore;
use crate::sinks::jsonl::existing_steps;

/// `analysis/` inside a run directory.
pub fn analysis_dir(run: &RunDir) -> PathBuf {
    run.root.join("analysis")
}

/// `analysis/checkpoint_metrics.jsonl`.
pub fn metrics_path(run: &RunDir) -> PathBuf {
    analysis_dir(run).join("checkpoint_metrics.jsonl")
}

/// `probes/probe_set.h5`.
pub fn probe_set_path(run: &RunDir) -> PathBuf {
    run.root.join("probes").join("probe_set.h5")
}

/// The `--analyze` plugin.
pub struct AnalyzePlugin {
    config: AnalysisConfig,
    probe: Arc<ProbeSet>,
    device: Device,
    tokens: Tensor<2, Int>,
    induction_half: Option<usize>,
    sidecar: Option<Sidecar>,
    /// Queue depth after the last send, for the progress display.
    depth: Arc<AtomicUsize>,
    disabled: bool,
}

impl AnalyzePlugin {
    /// `device` is the plain (non-autodiff) device the model trains on.
    pub fn new(config: AnalysisConfig, probe: ProbeSet, device: &Device) -> Self {
        let device = device.clone().without_autodiff();
        let e = &probe.examples;
        let tokens = int_tensor(&e.tokens, e.n, e.seq_len, &device);
        let induction_half = (probe.task == "induction").then_some(e.seq_len / 2);
        Self {
            config,
            probe: Arc::new(probe),
            device,
            tokens,
            induction_half,
            sidecar: None,
            depth: Arc::new(AtomicUsize::new(0)),
            disabled: false,
        }
    }

    /// A gauge of the analysis queue depth (updated at every send).
    pub fn queue_depth(&self) -> Arc<AtomicUsize> {
        self.depth.clone()
    }

    /// Capture, gather, copy to host: everything the trainer thread pays for one checkpoint.
    fn capture(
        &self,
        model: &Transformer,
        step: u64,
    ) -> Result<(HostArray, Vec<StoredArray>), AnalysisError> {
        let host = |e: String| AnalysisError::Host { step, message: e };
        let model = model.valid();
        let capture = model.capture(self.tokens.clone());
        let logits = HostArray::from_tensor(capture.logits.clone()).map_err(host)?;
        let stored = self.stored_arrays(&model, &capture).map_err(host)?;
        Ok((logits, stored))
    }

    fn stored_arrays(
        &self,
        model: &Transformer,
        capture: &Capture,
    ) -> Result<Vec<StoredArray>, String> {
        let e = &self.probe.examples;
        let keys = &self.probe.key_positions;
        let n_keys = keys.len();
        let (n, seq_len) = (e.n, e.seq_len);
        // Index [example, key] of each key position, for gathers along the position axis.
        let key_index: Vec<i64> = (0..n)
            .flat_map(|i| keys.iter().map(move |k| i64::from(k.values[i])))
            .collect();
        let key_index =
            Tensor::<2, Int>::from_data(TensorData::new(key_index, [n, n_keys]), &self.device);
        let mut out = vec![];
        for item in &self.config.store {
            match item {
                StoreItem::ResidualAtKeys => {
                    let d_model = model.dims.d_model;
                    let index = key_index
                        .clone()
                        .unsqueeze_dim::<3>(2)
                        .expand([n, n_keys, d_model]);
                    for (name, resid) in residual_boundaries(capture) {
                        let array = HostArray::from_tensor(resid.gather(1, index.clone()))?;
                        out.push(StoredArray {
                            name: name.to_string(),
                            axes: "example,key_position,d_model".into(),
                            array,
                        });
                    }
                }
                StoreItem::PatternsAtKeys => {
                    let n_heads = model.dims.n_heads;
                    let index = key_index
                        .clone()
                        .unsqueeze_dims::<4>(&[1, 3])
                        .expand([n, n_heads, n_keys, seq_len]);
                    for (l, block) in capture.blocks.iter().enumerate() {
                        let array =
                            HostArray::from_tensor(block.pattern.clone().gather(2, index.clone()))?;
                        let name = HookName::Pattern(l).to_string();
                        out.push(StoredArray {
                            name,
                            axes: "example,head,key_position,k".into(),
                            array,
                        });
                    }
                }
                StoreItem::LogitsAtAnswers => {
                    let answers: Vec<i64> = self
                        .probe
                        .answer_positions
                        .iter()
                        .map(|&p| p as i64)
                        .collect();
                    let count = answers.len();
                    let index = Tensor::<1, Int>::from_data(
                        TensorData::new(answers, [count]),
                        &self.device,
                    );
                    let array = HostArray::from_tensor(capture.logits.clone().select(1, index))?;
                    out.push(StoredArray {
                        name: "logits".into(),
                        axes: "example,answer,d_vocab_out".into(),
                        array,
                    });
                }
                StoreItem::AllHooks => {
                    for (name, array) in capture.to_host()? {
                        out.push(StoredArray {
                            name: name.to_string(),
                            axes: hook_axes(name).into(),
                            array,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    fn fail(&mut self, step: u64, error: AnalysisError) -> Result<(), PluginError> {
        match self.config.on_error {
            OnError::Stop => Err(Box::new(error)),
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

/// The residual stream at every layer boundary: `resid_pre` and `resid_mid` of each block, final `resid_post`.
fn residual_boundaries(capture: &Capture) -> Vec<(HookName, Tensor<3>)> {
    let mut out = vec![];
    for (l, block) in capture.blocks.iter().enumerate() {
        out.push((HookName::ResidPre(l), block.resid_pre.clone()));
        if !capture.attn_only {
            out.push((HookName::ResidMid(l), block.resid_mid.clone()));
        }
    }
    if let Some(last) = capture.blocks.last() {
        out.push((
            HookName::ResidPost(capture.blocks.len() - 1),
            last.resid_post.clone(),
        ));
    }
    out
}

/// Axis names of a full hook array.
fn hook_axes(name: HookName) -> &'static str {
    match name {
        HookName::Pattern(_) => "example,head,q,k",
        HookName::Z(_) => "example,pos,head,d_head",
        HookName::MlpPost(_) => "example,pos,d_mlp",
        HookName::Logits => "example,pos,d_vocab_out",
        _ => "example,pos,d_model",
    }
}

impl CheckpointPlugin for AnalyzePlugin {
    fn first_missing_step(
        &mut self,
        run: &RunDir,
        schedule: &[u64],
    ) -> Result<Option<u64>, PluginError> {
        let done = existing_steps(&metrics_path(run));
        Ok(schedule.iter().copied().find(|s| !done.contains(s)))
    }

    fn on_start(&mut self, event: &StartEvent<'_>) -> Result<(), PluginError> {
        let hash = event.manifest.probe_set_sha256.clone().ok_or_else(|| {
            format!(
                "run {} was started without --analyze (no probe set pinned in run.json)",
                event.run.root.display()
            )
        })?;
        let probe_path = probe_set_path(event.run);
        if event.resume {
            ProbeSet::load_pinned(&probe_path, &hash)?;
        } else {
            let dir = event.run.root.join("probes");
            std::fs::create_dir_all(&dir).map_err(|e| AnalysisError::Io {
                path: dir,
                message: e.to_string(),
            })?;
            self.probe.save(&probe_path)?;
        }
        let analysis = analysis_dir(event.run);
        std::fs::create_dir_all(&analysis).map_err(|e| AnalysisError::Io {
            path: analysis.clone(),
            message: e.to_string(),
        })?;
        let key_names: Vec<&str> = self
            .probe
            .key_positions
            .iter()
            .map(|k| k.name.as_str())
            .collect();
        let state = SidecarState {
            run_id: event.manifest.run_id.clone(),
            probe: self.probe.clone(),
            induction_half: self.induction_half,
            jsonl: JsonlWriter::open_from(&metrics_path(event.run), event.start_step)
                .map_err(AnalysisError::from)?,
            store: ActivationStore::open(
                &analysis,
                &event.manifest.run_id,
                &hash,
                &key_names,
                event.start_step,
            )?,
        };
        self.sidecar = Some(Sidecar::spawn(state, self.config.queue)?);
        Ok(())
    }

    fn on_checkpoint(&mut self, event: &CheckpointEvent<'_>) -> Result<(), PluginError> {
        if self.disabled {
            return Ok(());
        }
        let start = Instant::now();
        let (logits, stored) = match self.capture(event.model, event.step) {
            Ok(arrays) => arrays,
            Err(e) => return self.fail(event.step, e),
        };
        let send_stats = Arc::new(OnceLock::new());
        let message = CheckpointMessage {
            step: event.step,
            tokens_seen: event.tokens_seen,
            wall_s: event.wall_s,
            lr: event.lr,
            train_loss: event.train_loss,
            eval: event.eval.cloned(),
            logits,
            stored,
            capture_ms: start.elapsed().as_secs_f64() * 1e3,
            send_stats: send_stats.clone(),
            sent_at: Instant::now(),
        };
        let Some(sidecar) = self.sidecar.as_mut() else {
            return self.fail(
                event.step,
                AnalysisError::SidecarGone("it was never started".into()),
            );
        };
        match sidecar.send(message) {
            Ok((queue_ms, queue_depth)) => {
                let _ = send_stats.set(SendStats {
                    queue_ms,
                    queue_depth,
                });
                self.depth.store(queue_depth, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => self.fail(event.step, e),
        }
    }

    fn finish(&mut self) -> Result<(), PluginError> {
        match self.sidecar.take() {
            Some(sidecar) => sidecar.finish().map_err(|e| Box::new(e) as PluginError),
            None => Ok(()),
        }
    }
}
