//! The training loop. It reads top to bottom: learning rate, checkpoint (+ evaluation + plugin), forward on
//! the step's batch, log, backward, optional global-norm clipping, AdamW update.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::Serialize;

use crate::checkpoint::{self, CheckpointState, RngState};
use crate::config::{Config, OptimConfig};
use crate::error::{CheckpointError, TrainError};
use crate::eval::{SplitScore, evaluate};
use crate::model::{ModelDims, Queries, Transformer, cross_entropy, int_tensor};
use crate::plugin::{CheckpointEvent, CheckpointPlugin, StartEvent, plugin_failure};
use crate::run_dir::{Manifest, RUN_SCHEMA_VERSION, RunFiles, config_sha256};
use crate::schedule::{checkpoint_steps, learning_rate};
use crate::tasks::{self, Split, Task};
use host::jsonl::JsonlWriter;
use host::layout::RunLayout;
use host::lock::{DirLock, create_staged};

/// One line of the progress display.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Training starts (or resumes) at `start` of `total` steps.
    Start { start: u64, total: u64 },
    /// A logged step.
    Step { step: u64, loss: f32, lr: f64 },
    /// A checkpoint was saved (and the plugin called).
    Checkpoint { step: u64, eval: Option<EvalRow> },
}

/// A row of `metrics/train.jsonl`.
#[derive(Debug, Clone, Serialize)]
struct TrainRow {
    step: u64,
    loss: f32,
    lr: f64,
    tokens_seen: u64,
}

/// A row of `metrics/eval.jsonl`: loss and accuracy on each full split the task has.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct EvalRow {
    pub step: u64,
    pub train: Option<SplitScore>,
    pub test: Option<SplitScore>,
    pub ood: Option<SplitScore>,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Summary {
    pub run_id: String,
    /// The run was already complete: nothing was trained or written.
    pub already_complete: bool,
    pub steps: u64,
    pub final_eval: Option<EvalRow>,
    pub wall_s: f64,
}

/// Everything one call to [`train`] needs.
pub struct TrainJob<'a> {
    pub config: &'a Config,
    /// The task of `config` (built once by the caller: a data-defined task reads its dataset).
    pub task: &'a dyn Task,
    pub run: &'a RunLayout,
    /// A new run, or a resume of the run in `run`.
    pub start: Start<'a>,
    /// The plain (non-autodiff) device; training uses its autodiff view.
    pub device: Device,
    pub device_name: String,
    /// Content hash of the probe set, recorded in the manifest of a new run (`--analyze`).
    pub probe_set_sha256: Option<String>,
    /// A replay of a window (`formation replay`): its own checkpoint steps, and where to stop. The config (and
    /// so the learning-rate schedule and the data) stays the original run's.
    pub replay: Option<ReplaySchedule>,
}

/// How a [`train`] call starts.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// A new run. Its directory is created whole: config, manifest, what the plugin pins
    /// ([`CheckpointPlugin::on_create`]) and checkpoint 0 are written under a staging name that is renamed into
    /// place ([`create_staged`]); `train` holds the directory's lock while it runs.
    New,
    /// Continue the run in the job's directory from its last checkpoint; the caller holds its lock.
    Resume(&'a DirLock),
}

/// The checkpoints and the last step of a window replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySchedule {
    pub checkpoints: Vec<u64>,
    pub stop_at: u64,
}

/// Trains the model of `job.config`, saving checkpoints on schedule and calling `plugin` at each one.
pub fn train(
    job: TrainJob<'_>,
    plugin: &mut dyn CheckpointPlugin,
    progress: &mut dyn FnMut(Progress),
) -> Result<Summary, TrainError> {
    let config = job.config;
    let total = job
        .replay
        .as_ref()
        .map_or(config.train.steps, |r| r.stop_at);
    let batch_size = config.train.batch_size;
    let task = job.task;
    let dims = ModelDims::new(config, task);
    let infer_device = job.device.clone().without_autodiff();
    let train_device = job.device.clone().autodiff();
    let schedule = match &job.replay {
        Some(replay) => replay.checkpoints.clone(),
        None => checkpoint_steps(&config.train.checkpoints, total),
    };
    let config_hash = config_sha256(config);
    let examples_per_step = batch_size.unwrap_or_else(|| task.train_batch(0, None).n) as u64;
    let tokens_per_step = examples_per_step * task.seq_len() as u64;

    let mut model = Transformer::new(&dims, config.train.seed, &train_device);
    let mut optim = make_optimizer(&config.optim);
    let manifest = Manifest {
        schema_version: RUN_SCHEMA_VERSION,
        run_id: format!(
            "{}-s{}-{}",
            task.name(),
            config.train.seed,
            &config_hash[..8]
        ),
        formation_version: env!("CARGO_PKG_VERSION").to_owned(),
        burn_version: "0.22.1".to_owned(),
        task: task.name().to_owned(),
        seed: config.train.seed,
        steps: total,
        checkpoint_steps: schedule.clone(),
        config_sha256: config_hash.clone(),
        model: dims.clone(),
        n_params: model.num_params(),
        device: job.device_name.clone(),
        probe_set_sha256: job.probe_set_sha256.clone(),
        dataset_sha256: task.dataset_sha256().map(str::to_owned),
        attainable_accuracy: task.attainable_accuracy(),
    };
    let mut resumed_report = (0.0, None);
    let checkpoint_state = |step: u64, lr: f64, last_train_loss: Option<f32>| CheckpointState {
        format: 0,
        step,
        rng: RngState {
            seed: config.train.seed,
            next_step: step,
        },
        data_cursor: task.data_cursor(step, batch_size),
        tokens_seen: step * tokens_per_step,
        lr,
        last_train_loss,
        config_sha256: config_hash.clone(),
        weights_sha256: String::new(),
        files: Default::default(),
    };
    // Held for the whole run when this call creates the directory (a resume's caller holds its own).
    let _created_lock: Option<DirLock>;
    let (start, manifest) = match job.start {
        Start::Resume(_) => {
            let on_disk = job.run.read_manifest()?;
            job.run.check_same_config(config)?;
            crate::run_dir::check_same_dataset(&on_disk, config, task)?;
            let saved = checkpoint::list(&job.run.checkpoints())?;
            let needed = plugin
                .first_missing_step(job.run, &schedule)
                .map_err(plugin_failure(0))?;
            let evals = read_eval_rows(job.run)?;
            if needed.is_none() && saved.last() == Some(&total) && evals.contains_key(&total) {
                // Complete: nothing is written, but a damaged final checkpoint is still reported.
                checkpoint::read_state(&checkpoint::step_dir(&job.run.checkpoints(), total))?;
                return Ok(Summary {
                    run_id: on_disk.run_id,
                    already_complete: true,
                    steps: total,
                    final_eval: evals.get(&total).cloned(),
                    wall_s: 0.0,
                });
            }
            let last = *saved
                .iter()
                .rev()
                .find(|&&s| needed.is_none_or(|n| s <= n))
                .ok_or_else(|| CheckpointError::NoneFound {
                    dir: job.run.checkpoints(),
                })?;
            let (loaded, loaded_optim, state) = checkpoint::load(
                &checkpoint::step_dir(&job.run.checkpoints(), last),
                model,
                optim,
            )?;
            if state.data_cursor != task.data_cursor(state.step, batch_size)
                || state.config_sha256 != on_disk.config_sha256
            {
                return Err(CheckpointError::Corrupt {
                    path: checkpoint::step_dir(&job.run.checkpoints(), last),
                    why: "its data cursor or config hash does not match this run".into(),
                }
                .into());
            }
            (model, optim) = (loaded, loaded_optim);
            resumed_report = (state.lr, state.last_train_loss);
            _created_lock = None;
            (state.step, on_disk)
        }
        Start::New => {
            let lock = create_staged(&job.run.root, "formation train", |staging| {
                let staged = RunLayout::new(staging);
                staged.create(config, &manifest)?;
                host::failpoint::hit("create-manifest");
                plugin.on_create(&staged).map_err(plugin_failure(0))?;
                host::failpoint::hit("create-pinned");
                checkpoint::save(
                    &staged.checkpoints(),
                    &model,
                    &optim,
                    checkpoint_state(0, 0.0, None),
                )?;
                Ok::<(), TrainError>(())
            })?;
            _created_lock = Some(lock);
            (0, manifest)
        }
    };
    let start_event = StartEvent {
        run: job.run,
        manifest: &manifest,
        start_step: start,
        resume: matches!(job.start, Start::Resume(_)),
    };
    plugin
        .on_start(&start_event)
        .map_err(plugin_failure(start))?;

    let mut train_log = JsonlWriter::open_from(&job.run.train_log(), start)?;
    let mut eval_log = JsonlWriter::open_from(&job.run.eval_log(), start)?;
    let splits: Vec<(Split, tasks::Examples)> = Split::ALL
        .iter()
        .filter_map(|&s| task.split(s).map(|e| (s, e)))
        .collect();
    let mut stepper = Stepper::new(model, task, config, &train_device);
    let checkpoint_set: BTreeSet<u64> = schedule.iter().copied().collect();
    let clock = Instant::now();
    let ((mut last_lr, mut last_loss), mut final_eval) = (resumed_report, None);
    progress(Progress::Start { start, total });

    for step in start..=total {
        if checkpoint_set.contains(&step) {
            // The starting checkpoint is on disk already (resumed from, or written with the new directory).
            if step != start {
                let state = checkpoint_state(step, last_lr, last_loss);
                checkpoint::save(&job.run.checkpoints(), stepper.model(), &optim, state)?;
                host::failpoint::hit_at("checkpoint-saved", step);
            }
            let eval_due =
                step == total || (config.eval.every > 0 && step % config.eval.every == 0);
            let eval = if eval_due {
                // On the step's thread, so that eval's buffers come from the heap the steps reuse.
                let model = stepper.model().valid();
                let row = on_first_pool_thread(|| {
                    evaluate_splits(&model, task, &splits, step, &infer_device)
                })?;
                eval_log
                    .write(&row)
                    .map_err(|e| TrainError::at_step(step)(e.into()))?;
                Some(row)
            } else {
                None
            };
            let event = CheckpointEvent {
                eval: eval.as_ref(),
                step,
                model: stepper.model(),
                device: &job.device,
                task,
                lr: last_lr,
                train_loss: last_loss,
                tokens_seen: step * tokens_per_step,
                wall_s: clock.elapsed().as_secs_f64(),
            };
            plugin.on_checkpoint(&event).map_err(plugin_failure(step))?;
            if step == total {
                final_eval = eval.clone();
            }
            progress(Progress::Checkpoint { step, eval });
        }
        if step == total {
            break;
        }

        let (lr, loss) = stepper.step(&mut optim, step);
        if step % config.train.log_every == 0 {
            let value = loss.clone().into_scalar::<f32>();
            if !value.is_finite() {
                return Err(TrainError::NonFiniteLoss { step, loss: value });
            }
            train_log
                .write(&TrainRow {
                    step,
                    loss: value,
                    lr,
                    tokens_seen: step * tokens_per_step,
                })
                .map_err(|e| TrainError::at_step(step)(e.into()))?;
            last_loss = Some(value);
            progress(Progress::Step {
                step,
                loss: value,
                lr,
            });
        }
        last_lr = lr;
    }
    plugin.finish().map_err(plugin_failure(total))?;
    Ok(Summary {
        run_id: manifest.run_id,
        already_complete: false,
        steps: total,
        final_eval,
        wall_s: clock.elapsed().as_secs_f64(),
    })
}

/// The model being trained and the fixed inputs of its training step (answer queries, the full batch).
pub struct Stepper<'a> {
    /// Taken out for the duration of an update (burn's optimizer consumes and returns the model).
    model: Option<Transformer>,
    task: &'a dyn Task,
    config: &'a Config,
    queries: Queries,
    full_batch: Option<(Tensor<2, Int>, Tensor<2, Int>)>,
    device: Device,
    /// Run the full forward and take the answer positions from it (benchmarks: like for like with a plain
    /// PyTorch script) instead of [`Transformer::forward_answers`].
    full_forward: bool,
}

impl<'a> Stepper<'a> {
    /// `device` is the autodiff training device.
    pub fn new(
        model: Transformer,
        task: &'a dyn Task,
        config: &'a Config,
        device: &Device,
    ) -> Self {
        let queries = model.answer_queries(task.answer_positions(), device);
        let full_batch = config
            .train
            .batch_size
            .is_none()
            .then(|| batch_tensors(task, 0, None, device));
        Self {
            model: Some(model),
            task,
            config,
            queries,
            full_batch,
            device: device.clone(),
            full_forward: false,
        }
    }

    /// Every step runs the full forward (see [`Transformer::forward_full_at`]); training's default is the
    /// answer-only forward.
    pub fn with_full_forward(mut self) -> Self {
        self.full_forward = true;
        self
    }

    pub fn model(&self) -> &Transformer {
        self.model
            .as_ref()
            .expect("the model is only taken during an update")
    }

    /// The update from `step` to `step + 1` on that step's batch; returns its learning rate and the loss
    /// before the update.
    pub fn step(&mut self, optim: &mut ModuleOptimizer, step: u64) -> (f64, Tensor<1>) {
        let lr = learning_rate(&self.config.optim, step, self.config.train.steps);
        let (tokens, targets) = match &self.full_batch {
            Some(batch) => batch.clone(),
            None => batch_tensors(self.task, step, self.config.train.batch_size, &self.device),
        };
        let model = self
            .model
            .take()
            .expect("the model is only taken during an update");
        let (queries, full_forward, clip) = (
            &self.queries,
            self.full_forward,
            self.config.optim.grad_clip,
        );
        // The step runs on rayon's first thread: its parallel operations (gemm, the attention and LayerNorm
        // kernels) then split work with the other thread directly, where from this thread each one would be
        // handed to the pool and waited for (a wake-up of both sides per operation, with three threads on the
        // cores). Always the same thread, so that the step's buffers come from and return to one allocator heap.
        // Which thread runs a part changes no result.
        let (model, loss) = on_first_pool_thread(|| {
            train_step(
                model,
                optim,
                tokens,
                targets,
                queries,
                full_forward,
                lr,
                clip,
            )
        });
        self.model = Some(model);
        (lr, loss)
    }
}

/// `f`, run on the first thread of rayon's global pool (the others are free to take the parallel work it hands
/// out): the training step and eval, so that both use one allocator heap. A step handed to the pool as a job runs on whichever thread is free, and each thread's allocator heap
/// then kept a whole step's freed buffers (peak RSS of the reference run 99 → 179 MiB).
fn on_first_pool_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let f = std::sync::Mutex::new(Some(f));
    rayon::broadcast(|thread| {
        (thread.index() == 0).then(|| {
            let f = f.lock().map(|mut f| f.take()).ok().flatten();
            f.expect("the first thread runs f once")()
        })
    })
    .into_iter()
    .flatten()
    .next()
    .expect("the pool's first thread ran f")
}

/// One optimizer update: loss at the answer positions (from the answer-only forward, or the full one if
/// `full_forward`), backward, optional global-norm clipping, AdamW. Returns the updated model and the loss
/// before the update.
#[allow(clippy::too_many_arguments)]
fn train_step(
    model: Transformer,
    optim: &mut ModuleOptimizer,
    tokens: Tensor<2, Int>,
    targets: Tensor<2, Int>,
    answers: &Queries,
    full_forward: bool,
    lr: f64,
    grad_clip: Option<f64>,
) -> (Transformer, Tensor<1>) {
    let logits = if full_forward {
        model.forward_full_at(tokens, answers)
    } else {
        model.forward_answers(tokens, answers)
    };
    let loss = cross_entropy(logits, targets);
    let mut grads = GradientsParams::from_grads(loss.backward(), &model);
    if let Some(max_norm) = grad_clip {
        clip_global_norm(&model, &mut grads, max_norm);
    }
    (optim.step(lr, model, grads), loss)
}

/// AdamW as `torch.optim.AdamW(lr, betas, eps, weight_decay)`, decaying every parameter.
pub fn make_optimizer(optim: &OptimConfig) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_1(optim.beta1 as f32)
        .with_beta_2(optim.beta2 as f32)
        .with_epsilon(optim.eps as f32)
        .with_weight_decay(optim.weight_decay as f32)
        .init()
}

/// The rows of `metrics/eval.jsonl` by step (none when the file does not exist yet). A line that is torn or
/// not UTF-8 is skipped: its step counts as not evaluated.
pub fn read_eval_rows(run: &RunLayout) -> Result<BTreeMap<u64, EvalRow>, TrainError> {
    let path = run.eval_log();
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => return Err(TrainError::Io { path, source }),
    };
    Ok(bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<EvalRow>(line).ok())
        .map(|row| (row.step, row))
        .collect())
}

/// Token and target tensors of training step `step`.
fn batch_tensors(
    task: &dyn Task,
    step: u64,
    batch_size: Option<usize>,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let batch = task.train_batch(step, batch_size);
    (
        int_tensor(&batch.tokens, batch.n, batch.seq_len, device),
        int_tensor(&batch.targets, batch.n, batch.n_answers, device),
    )
}

/// Loss and accuracy on every full split of the task.
fn evaluate_splits(
    model: &Transformer,
    task: &dyn Task,
    splits: &[(Split, tasks::Examples)],
    step: u64,
    device: &Device,
) -> Result<EvalRow, TrainError> {
    let mut row = EvalRow {
        step,
        train: None,
        test: None,
        ood: None,
    };
    for (split, examples) in splits {
        let score = evaluate(model, examples, task.answer_positions(), device)?;
        match split {
            Split::Train => row.train = Some(score),
            Split::Test => row.test = Some(score),
            Split::Ood => row.ood = Some(score),
        }
    }
    Ok(row)
}

/// Scales all gradients together so that their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` (burn's own clipping works per parameter tensor).
fn clip_global_norm(model: &Transformer, grads: &mut GradientsParams, max_norm: f64) {
    struct SquaredNorm<'a> {
        grads: &'a GradientsParams,
        sum: f64,
    }
    impl ModuleVisitor for SquaredNorm<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                self.sum += f64::from(g.square().sum().into_scalar::<f32>());
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g * self.factor);
            }
        }
    }
    let mut norm = SquaredNorm { grads, sum: 0.0 };
    model.visit(&mut norm);
    let total = norm.sum.sqrt();
    if total > max_norm {
        // torch adds 1e-6 to the norm before dividing.
        model.visit(&mut Scale {
            grads,
            factor: max_norm / (total + 1e-6),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::PluginError;

    /// Records every call the loop makes.
    #[derive(Default)]
    struct Recorder {
        starts: Vec<(u64, bool)>,
        steps: Vec<u64>,
        evals: Vec<u64>,
        finished: usize,
    }

    impl CheckpointPlugin for Recorder {
        fn on_start(&mut self, event: &StartEvent<'_>) -> Result<(), PluginError> {
            self.starts.push((event.start_step, event.resume));
            Ok(())
        }
        fn on_checkpoint(&mut self, event: &CheckpointEvent<'_>) -> Result<(), PluginError> {
            assert_eq!(
                event.model.dims.d_model, 32,
                "the live model is handed over"
            );
            self.steps.push(event.step);
            if let Some(eval) = event.eval {
                self.evals.push(eval.step);
            }
            Ok(())
        }
        fn finish(&mut self) -> Result<(), PluginError> {
            self.finished += 1;
            Ok(())
        }
    }

    fn job<'a>(config: &'a Config, run: &'a RunLayout, start: Start<'a>) -> TrainJob<'a> {
        TrainJob {
            config,
            // Leaked: a test's few small tasks live as long as the test process.
            task: Box::leak(tasks::build(&config.task, config.train.seed).unwrap()),
            run,
            start,
            device: crate::test_device(),
            device_name: "test".into(),
            probe_set_sha256: None,
            replay: None,
        }
    }

    #[test]
    fn plugin_is_called_at_exactly_the_scheduled_steps_in_order() {
        let config = Config::parse(include_str!("../../examples/ci.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let run = RunLayout::new(dir.path().join("run"));
        let mut recorder = Recorder::default();
        train(job(&config, &run, Start::New), &mut recorder, &mut |_| {}).unwrap();
        assert_eq!(recorder.starts, vec![(0, false)]);
        assert_eq!(recorder.steps, vec![0, 1, 2, 4, 8, 20, 40, 60]);
        assert_eq!(
            recorder.evals,
            vec![0, 20, 40, 60],
            "eval.every = 20, and the last step"
        );
        assert_eq!(recorder.finished, 1);

        // A resume calls it again from the checkpoint it continues from.
        std::fs::remove_dir_all(checkpoint::step_dir(&run.checkpoints(), 60)).unwrap();
        let mut recorder = Recorder::default();
        let lock = DirLock::acquire(&run.root, "test").unwrap();
        train(
            job(&config, &run, Start::Resume(&lock)),
            &mut recorder,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(recorder.starts, vec![(40, true)]);
        assert_eq!(recorder.steps, vec![40, 60]);

        // A complete run is left as it is.
        let mut recorder = Recorder::default();
        let summary = train(
            job(&config, &run, Start::Resume(&lock)),
            &mut recorder,
            &mut |_| {},
        )
        .unwrap();
        assert!(summary.already_complete);
        assert_eq!(summary.final_eval.map(|e| e.step), Some(60));
        assert!(recorder.starts.is_empty() && recorder.steps.is_empty());
    }

    #[test]
    fn a_failing_plugin_stops_training_with_its_step() {
        struct Failing;
        impl CheckpointPlugin for Failing {
            fn on_checkpoint(&mut self, event: &CheckpointEvent<'_>) -> Result<(), PluginError> {
                if event.step == 4 {
                    Err("probe exploded".into())
                } else {
                    Ok(())
                }
            }
        }
        let config = Config::parse(include_str!("../../examples/ci.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let run = RunLayout::new(dir.path().join("run"));
        let err = train(job(&config, &run, Start::New), &mut Failing, &mut |_| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            "checkpoint plugin failed at step 4: probe exploded"
        );
    }
}
