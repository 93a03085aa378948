//! The every-checkpoint analysis of `formation train --analyze`. At each checkpoint save the
//! [`plugin::AnalyzePlugin`] copies the live model's weights to host memory and sends that
//! [`message::Snapshot`] over a bounded channel; the [`sidecar`] thread loads it into its own model, runs the
//! [`forwards`] (a capture over the fixed probe set and the ablation forwards from it), has the [`analyzer`]
//! compute every [`metrics`] family (and the dynamics against the previous checkpoint) and writes through the
//! [`sinks`]: one [`row::Row`] per checkpoint to `analysis/checkpoint_metrics.jsonl` and the arrays to
//! `analysis/activations.h5`. No checkpoint is read back.
//!
//! Afterwards, [`windows`] finds the birth windows in the rows (and in the LLC [`trajectory`] over the saved
//! checkpoints, when `formation llc` made one), and [`interventions`] holds the expensive analyses run on
//! single checkpoints inside them (logit lens, patching, neurons, Fourier progress measures, LLC and the
//! weight-restricted LLC per component).

pub mod analyzer;
pub mod compare;
pub mod error;
pub mod features;
pub mod forwards;
pub mod in_loop_llc;
pub mod interventions;
pub mod message;
pub mod metrics;
pub mod plugin;
pub mod report;
pub mod row;
pub mod selection;
pub mod sidecar;
pub mod sinks;
pub mod stored;
pub mod trajectory;
pub mod windows;

pub use error::AnalysisError;
pub use plugin::AnalyzePlugin;
