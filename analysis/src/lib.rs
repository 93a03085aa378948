//! The every-checkpoint analysis of `formation train --analyze`. At each checkpoint save the
//! [`plugin::AnalyzePlugin`] captures activations over the fixed probe set on the live model (and runs the
//! ablation forwards from that capture), copies them to host memory and sends a [`message::CheckpointMessage`]
//! over a bounded channel; the [`sidecar`] thread has the [`analyzer`] compute every [`metrics`] family (and
//! the dynamics against the previous checkpoint) and writes through the [`sinks`]: one [`row::Row`] per
//! checkpoint to `analysis/checkpoint_metrics.jsonl` and the arrays to `analysis/activations.h5`. No
//! checkpoint is read back.
//!
//! Afterwards, [`windows`] finds the birth windows in the rows (and in the LLC [`trajectory`] over the saved
//! checkpoints, when `formation llc` made one), and [`interventions`] holds the expensive analyses run on
//! single checkpoints inside them (logit lens, patching, neurons, Fourier progress measures, LLC and the
//! weight-restricted LLC per component).

pub mod analyzer;
pub mod compare;
pub mod error;
pub mod features;
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
