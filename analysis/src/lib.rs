//! The every-checkpoint analysis of `formation train --analyze`. At each checkpoint save the
//! [`plugin::AnalyzePlugin`] captures activations over the fixed probe set on the live model, copies them to
//! host memory and sends a [`message::CheckpointMessage`] over a bounded channel; the [`sidecar`] thread
//! computes the [`metrics`] and writes them through the [`sinks`]: one [`row::Row`] per checkpoint to
//! `analysis/checkpoint_metrics.jsonl` and the arrays to `analysis/activations.h5`. No checkpoint is read back.

pub mod analyzer;
pub mod error;
pub mod interventions;
pub mod message;
pub mod metrics;
pub mod plugin;
pub mod row;
pub mod selection;
pub mod sidecar;
pub mod sinks;
pub mod windows;

pub use error::AnalysisError;
pub use plugin::AnalyzePlugin;
