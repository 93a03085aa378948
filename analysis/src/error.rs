//! The analysis error kinds; each names the step or file involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// Writing or reading an analysis file failed.
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    /// libhdf5 failed.
    #[error("HDF5 {path}: {message}")]
    Hdf5 { path: PathBuf, message: String },
    /// A tensor could not be copied to the host.
    #[error("copying activations to the host at step {step}: {message}")]
    Host { step: u64, message: String },
    /// A checkpoint message lacks an array the metrics need.
    #[error("analysis at step {step}: the checkpoint message has no {what}")]
    Missing { step: u64, what: String },
    /// A metric could not be computed.
    #[error("analysis at step {step}: {message}")]
    Metric { step: u64, message: String },
    /// The sidecar thread stopped (it failed earlier or panicked).
    #[error("the analysis sidecar stopped: {0}")]
    SidecarGone(String),
    /// The probe set could not be used.
    #[error(transparent)]
    ProbeSet(#[from] probes::ProbeSetError),
    /// A run-directory problem (manifest, log rewrite).
    #[error(transparent)]
    Train(#[from] trainer::TrainError),
}

impl AnalysisError {
    pub fn hdf5(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        AnalysisError::Hdf5 {
            path: path.to_owned(),
            message: e.to_string(),
        }
    }
}
