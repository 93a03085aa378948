//! The sidecar thread: opens its own sinks and restores its own previous-checkpoint state ([`SidecarSetup`]),
//! then receives [`Snapshot`]s of the weights over a bounded channel, runs the capture and ablation forwards on
//! its own copy of the model ([`Forwards`]), computes every metric from host arrays ([`Analyzer`]), writes the
//! arrays to HDF5 and then the row to JSONL. It owns everything it carries between
//! checkpoints. Dropping the handle sends the end message and joins; [`Sidecar::finish`] does the same and
//! returns the thread's result.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use burn::prelude::Device;
use crossbeam_channel::{Receiver, Sender, bounded};
use host::jsonl::JsonlWriter;
use host::layout::RunLayout;
use probes::ProbeSet;
use trainer::config::{AnalysisConfig, Checked};
use trainer::tasks::Declared;

use crate::analyzer::{Analyzer, Previous};
use crate::error::AnalysisError;
use crate::forwards::Forwards;
use crate::message::{CheckpointMessage, Message, SendStats, Snapshot};
use crate::row::Timing;
use crate::sinks::hdf5::ActivationStore;
use crate::sinks::jsonl::{last_row, read_rows};
use crate::sinks::tensorboard::TensorBoardWriter;
use crate::stored::StoredName;

/// What the sidecar starts from: it opens its own sinks and restores its own previous-checkpoint state.
pub struct SidecarSetup {
    pub run: RunLayout,
    pub run_id: String,
    pub probe_set_sha256: String,
    pub probe: Arc<ProbeSet>,
    pub config: Checked<AnalysisConfig>,
    /// What the task declares for the analysis ([`trainer::tasks::Task::declared`]).
    pub declared: Declared,
    /// The plain (non-autodiff) device the forwards run on.
    pub device: Device,
    /// The first step this process analyzes: rows and step files from here on are written again.
    pub start_step: u64,
}

/// What the sidecar thread owns.
struct SidecarState {
    forwards: Forwards,
    analyzer: Analyzer,
    jsonl: JsonlWriter,
    store: ActivationStore,
    tensorboard: Option<TensorBoardWriter>,
}

impl SidecarSetup {
    /// Opens the rows file and the activation store (dropping what a resumed run writes again) and restores the
    /// last analyzed checkpoint, which the next one's dynamics compare with, as the uninterrupted run did.
    fn open(self) -> Result<SidecarState, AnalysisError> {
        let analysis = self.run.analysis_dir();
        std::fs::create_dir_all(&analysis).map_err(|e| AnalysisError::io(&analysis, e))?;
        let key_names: Vec<&str> = self
            .probe
            .key_positions
            .iter()
            .map(|k| k.name.as_str())
            .collect();
        let metrics = self.run.metrics();
        let jsonl = JsonlWriter::open_from(&metrics, self.start_step)?;
        let store = ActivationStore::open(
            &self.run,
            &self.run_id,
            &self.probe_set_sha256,
            &key_names,
            self.start_step,
        )?;
        let tensorboard = match self.config.tensorboard {
            true => Some(TensorBoardWriter::open(
                &self.run.tensorboard_events(),
                &read_rows(&metrics)?,
            )?),
            false => None,
        };
        let previous = match last_row(&metrics) {
            Some(row) => {
                let arrays = store.read_step(row.step, &StoredName::DYNAMICS_GROUPS)?;
                Some(Previous::load(row.step, arrays, &row))
            }
            None => None,
        };
        let forwards = Forwards::new(&self.probe, &self.config, &self.declared, &self.device);
        let analyzer = Analyzer::new(
            self.run_id,
            self.probe,
            &self.config,
            &self.declared,
            previous,
        );
        Ok(SidecarState {
            forwards,
            analyzer,
            jsonl,
            store,
            tensorboard,
        })
    }
}

/// Handle of the running sidecar thread.
pub struct Sidecar {
    sender: Sender<Message>,
    handle: Option<JoinHandle<Result<(), AnalysisError>>>,
}

impl Sidecar {
    /// Starts the thread, which opens its sinks from `setup`, with room for `capacity` checkpoints waiting in
    /// the channel while it works on one; returns once the thread is ready (or with the reason it could not
    /// start).
    pub fn spawn(setup: SidecarSetup, capacity: usize) -> Result<Self, AnalysisError> {
        let (sender, receiver) = channel(capacity);
        let (ready_tx, ready_rx) = bounded(1);
        let handle = std::thread::Builder::new()
            .name("formation-sidecar".into())
            .spawn(move || {
                // This thread and its pool's allocate with the system allocator, not the trainer's mimalloc
                // (host::alloc says why).
                host::alloc::use_system_allocator();
                let pool = match background_pool() {
                    Ok(pool) => pool,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                pool.install(|| match setup.open() {
                    Ok(state) => {
                        let _ = ready_tx.send(Ok(()));
                        run(state, receiver)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        Ok(())
                    }
                })
            })
            .map_err(|e| AnalysisError::SidecarGone(format!("cannot start the thread: {e}")))?;
        let mut sidecar = Self {
            sender,
            handle: Some(handle),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(sidecar),
            Ok(Err(e)) => {
                let _ = sidecar.join();
                Err(e)
            }
            Err(_) => Err(sidecar
                .join()
                .err()
                .unwrap_or(AnalysisError::SidecarGone("it exited".into()))),
        }
    }

    /// Sends one checkpoint, waiting while the channel is full, then the report of that send. Returns it.
    pub fn send(&mut self, message: Snapshot) -> Result<SendStats, AnalysisError> {
        let start = Instant::now();
        let sent = self
            .sender
            .send(Message::Checkpoint(Box::new(message)))
            .is_ok();
        let stats = SendStats {
            queue_ms: start.elapsed().as_secs_f64() * 1e3,
            // Checkpoints waiting, this one included (each is followed by its report).
            queue_depth: self.sender.len().div_ceil(2),
        };
        if !sent || self.sender.send(Message::Sent(stats)).is_err() {
            // The thread ended early: its result says why.
            return Err(self
                .join()
                .err()
                .unwrap_or(AnalysisError::SidecarGone("it exited".into())));
        }
        Ok(stats)
    }

    /// Lets the sidecar drain the channel, ends it and returns its result.
    pub fn finish(mut self) -> Result<(), AnalysisError> {
        let _ = self.sender.send(Message::End);
        self.join()
    }

    fn join(&mut self) -> Result<(), AnalysisError> {
        match self.handle.take() {
            Some(handle) => handle.join().unwrap_or_else(|panic| {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into());
                Err(AnalysisError::SidecarGone(why))
            }),
            None => Err(AnalysisError::SidecarGone("it already ended".into())),
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if self.handle.is_some() {
            let _ = self.sender.send(Message::End);
            let _ = self.join();
        }
    }
}

/// The sidecar's own rayon pool: one thread at the lowest scheduling priority, where every forward, fit and
/// write of the sidecar runs (burn's flex backend, gemm and faer parallelize over the *current* rayon pool).
/// Training keeps its threads and the cores it uses; the analysis fills the time they leave idle (serial parts
/// of a step, the optimizer's small ops), and when it falls behind, the bounded channel makes the trainer wait
/// for it. Results do not depend on it: flex's kernels give the same bits at one thread as at two.
fn background_pool() -> Result<rayon::ThreadPool, AnalysisError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "formation-analysis".into())
        .start_handler(|_| {
            lowest_priority();
            host::alloc::use_system_allocator();
        })
        .build()
        .map_err(|e| AnalysisError::SidecarGone(format!("cannot start its thread pool: {e}")))
}

/// Gives the calling thread the lowest CPU priority: on Linux the SCHED_IDLE class (sched(7)), which runs only
/// on a core no other thread wants and gives it up at once when a trainer thread wakes (at nice 19 alone, a
/// waking thread could wait for the sidecar's slice); nice 19 too, for kernels without it. Both are per thread
/// and need no privilege. Elsewhere the thread keeps its priority.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    {
        let thread = rustix::thread::gettid();
        // A failure leaves the thread at its priority, which costs speed, never a result.
        let _ = rustix::process::setpriority_process(Some(thread), 19);
        let idle = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` reads the parameter it is given and changes only the calling thread
        // (pid 0) from the normal class to SCHED_IDLE, which needs no privilege.
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) };
    }
}

fn run(mut state: SidecarState, receiver: Receiver<Message>) -> Result<(), AnalysisError> {
    while let Ok(message) = receiver.recv() {
        match message {
            Message::Checkpoint(checkpoint) => {
                let step = checkpoint.moment.step;
                process(&mut state, *checkpoint, &receiver).map_err(|error| {
                    AnalysisError::AtStep {
                        step,
                        error: Box::new(error),
                    }
                })?
            }
            Message::Sent(_) => {
                return Err(AnalysisError::SidecarGone(
                    "a send report arrived without its checkpoint".into(),
                ));
            }
            Message::End => break,
        }
    }
    Ok(())
}

/// The trainer-to-sidecar channel with room for `capacity` checkpoints waiting while the sidecar works on one.
/// Each checkpoint is two messages, itself and the report of its send, and the report of the checkpoint being
/// analyzed stays in the channel until its row is written. With room for that report too, a full channel makes
/// the trainer wait on a checkpoint's own send, which `queue_ms` measures, and not on its report's.
fn channel(capacity: usize) -> (Sender<Message>, Receiver<Message>) {
    bounded(2 * capacity + 1)
}

/// Forwards, metrics, arrays, then the row: the row is the commit point of a checkpoint's analysis. The report
/// of the checkpoint's send, right behind it in the channel, completes the row's timing.
fn process(
    state: &mut SidecarState,
    snapshot: Snapshot,
    receiver: &Receiver<Message>,
) -> Result<(), AnalysisError> {
    let captured = state.forwards.run(&snapshot)?;
    let mut message = CheckpointMessage::new(snapshot, captured);
    let start = Instant::now();
    let mut analysis = state.analyzer.analyze(&mut message)?;
    // The hooks and parameters are in the analysis now (the grid is already freed): free them before the
    // store's buffers come.
    let CheckpointMessage {
        moment,
        snapshot_ms,
        capture_ms,
        ablation_ms,
        ..
    } = message;
    let store_start = Instant::now();
    state.store.write(moment.step, &analysis.arrays)?;
    host::failpoint::hit_at("row-pending", moment.step);
    analysis
        .families
        .insert("store".into(), store_start.elapsed().as_secs_f64() * 1e3);
    let sent = match receiver.recv() {
        Ok(Message::Sent(sent)) => sent,
        _ => {
            return Err(AnalysisError::SidecarGone(
                "the checkpoint's send report did not follow it".into(),
            ));
        }
    };
    analysis.row.timing = Timing {
        snapshot_ms,
        capture_ms,
        ablation_ms,
        queue_ms: sent.queue_ms,
        queue_depth: sent.queue_depth,
        sidecar_ms: start.elapsed().as_secs_f64() * 1e3,
        families: analysis.families,
    };
    state.jsonl.write(&analysis.row)?;
    host::failpoint::hit_at("row-written", moment.step);
    if let Some(events) = &mut state.tensorboard {
        events.write(&analysis.row)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Moment;

    use burn::prelude::Device;
    use trainer::config::Config;
    use trainer::model::{ModelDims, Transformer};
    use trainer::tasks::{ModularAddition, Task};

    use crate::forwards::host_parameters;

    /// A snapshot of a tiny freshly initialized model (seeded by `step`), as the plugin takes one.
    fn message(step: u64) -> Snapshot {
        let config = Config::parse(include_str!("../../examples/ci.toml")).unwrap();
        let task = ModularAddition::new(5, 0.5, 0);
        let model = Transformer::new(&ModelDims::new(&config, &task), step, &Device::flex());
        Snapshot {
            moment: Moment::bare(step),
            dims: model.dims.clone(),
            params: host_parameters(&model),
            snapshot_ms: 0.0,
        }
    }

    fn spawn(dir: &std::path::Path, probe: &Arc<ProbeSet>) -> Sidecar {
        let setup = SidecarSetup {
            run: RunLayout::new(dir),
            run_id: "r".into(),
            probe_set_sha256: "h".into(),
            probe: probe.clone(),
            config: Checked::default(),
            declared: Declared::default(),
            device: Device::flex(),
            start_step: 0,
        };
        Sidecar::spawn(setup, 2).unwrap()
    }

    fn rows(dir: &std::path::Path) -> Vec<u64> {
        let rows = crate::sinks::jsonl::existing_steps(&RunLayout::new(dir).metrics());
        rows.into_iter().collect()
    }

    /// The analysis runs in the idle class at nice 19; the thread that asked keeps its own priority.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_analysis_pool_runs_at_the_lowest_priority() {
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let nice = || rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let (own_policy, own_nice) = (policy(), nice());
        let pool = background_pool().unwrap();
        assert_eq!(pool.install(|| (policy(), nice())), (libc::SCHED_IDLE, 19));
        assert_eq!((policy(), nice()), (own_policy, own_nice));
    }

    #[test]
    fn rows_are_written_in_order_and_finish_drains_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let task = ModularAddition::new(5, 0.5, 0);
        let probe = Arc::new(ProbeSet::generate(&task as &dyn Task, 10, 0));
        let mut sidecar = spawn(dir.path(), &probe);
        for step in [0, 1, 2, 4, 8] {
            sidecar.send(message(step)).unwrap();
        }
        sidecar.finish().unwrap();
        assert_eq!(rows(dir.path()), vec![0, 1, 2, 4, 8]);
    }

    #[test]
    fn a_full_channel_stops_the_trainer_at_a_checkpoint_not_at_its_report() {
        let report = || {
            Message::Sent(SendStats {
                queue_ms: 0.0,
                queue_depth: 0,
            })
        };
        for capacity in [1, 2, 4] {
            let (sender, receiver) = channel(capacity);
            sender
                .try_send(Message::Checkpoint(Box::new(message(0))))
                .unwrap();
            sender.try_send(report()).unwrap();
            // The sidecar takes checkpoint 0 and works on it; its report waits in the channel.
            assert!(matches!(receiver.recv().unwrap(), Message::Checkpoint(_)));
            for step in 1..=capacity as u64 {
                let checkpoint = Message::Checkpoint(Box::new(message(step)));
                assert!(
                    sender.try_send(checkpoint).is_ok(),
                    "capacity {capacity}, step {step}"
                );
                assert!(
                    sender.try_send(report()).is_ok(),
                    "capacity {capacity}, step {step}"
                );
            }
            let next = Message::Checkpoint(Box::new(message(capacity as u64 + 1)));
            assert!(sender.try_send(next).is_err(), "capacity {capacity}: full");
        }
    }

    #[test]
    fn a_sidecar_failure_reaches_the_trainer() {
        let dir = tempfile::tempdir().unwrap();
        let task = ModularAddition::new(5, 0.5, 0);
        let probe = Arc::new(ProbeSet::generate(&task as &dyn Task, 10, 0));
        let mut sidecar = spawn(dir.path(), &probe);
        // Sabotage: the per-checkpoint directory becomes a file, so the HDF5 write fails.
        let activations = host::layout::RunLayout::new(dir.path()).activations_dir();
        std::fs::remove_dir_all(&activations).unwrap();
        std::fs::write(&activations, b"not a directory").unwrap();
        let mut error = None;
        for step in 0..10 {
            if let Err(e) = sidecar.send(message(step)) {
                error = Some(e);
                break;
            }
        }
        let error = match error {
            Some(e) => e,
            None => sidecar.finish().unwrap_err(),
        };
        assert!(error.to_string().contains("HDF5"), "{error}");
        assert!(rows(dir.path()).is_empty(), "no row without its arrays");
    }
}
