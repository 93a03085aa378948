//! The training side of formation: [`tasks`] make the data, [`model`] is the TransformerLens-compatible
//! transformer with its capture forward, [`train_loop`] trains it under a [`schedule`], writes
//! [`checkpoint`]s that resume bit-exactly, and calls a [`plugin::CheckpointPlugin`] at every save with the
//! live model; [`sweep`] calls the same plugin over a finished run's saved checkpoints. [`config::Config`] is parsed and validated once; everything downstream trusts it.

pub mod checkpoint;
pub mod config;
pub mod device;
pub mod error;
pub mod eval;
pub mod export;
pub mod model;
pub mod plugin;
pub mod replay;
pub mod run_dir;
pub mod schedule;
pub mod sweep;
pub mod tasks;
pub mod train_loop;

pub use config::Config;
pub use error::{CheckpointError, ConfigError, TrainError};

/// The device unit tests run on (the binary picks the device for real runs).
#[cfg(test)]
pub(crate) fn test_device() -> burn::prelude::Device {
    burn::prelude::Device::flex()
}
