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
    /// The capture or ablation forwards, or their copy to the host, failed.
    #[error("the capture at step {step}")]
    Host {
        step: u64,
        #[source]
        source: trainer::error::ForwardError,
    },
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
    /// A whole-file write or a JSON-lines file failed.
    #[error(transparent)]
    File(#[from] host::files::FileError),
    /// The sidecar failed on the checkpoint of `step` (it runs behind the trainer, so the trainer learns of it
    /// at a later checkpoint).
    #[error("{error}")]
    AtStep {
        step: u64,
        error: Box<AnalysisError>,
    },
}

impl AnalysisError {
    /// The error as the training loop reports it; a failure of the sidecar keeps the step it happened at
    /// ([`trainer::plugin::FailedAt`]).
    pub fn into_plugin_error(self) -> trainer::plugin::PluginError {
        match self {
            AnalysisError::AtStep { step, error } => Box::new(trainer::plugin::FailedAt {
                step,
                message: trainer::error::error_chain(error.as_ref()),
            }),
            other => Box::new(other),
        }
    }
}

impl AnalysisError {
    pub fn hdf5(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        AnalysisError::Hdf5 {
            path: path.to_owned(),
            message: condense_hdf5(&e.to_string()),
        }
    }
}

/// libhdf5's message without its internals: the function and what failed, then the operating system's own
/// words when it gives them (`H5Fflush(): unable to flush file's cached information: file write failed: No
/// space left on device (os error 28)` instead of a line with the time, descriptor, buffer and byte counts).
fn condense_hdf5(message: &str) -> String {
    let internals = ["time =", "filename =", "file descriptor =", "errno ="];
    let head: Vec<&str> = message
        .split(": ")
        .take_while(|part| !internals.iter().any(|i| part.contains(i)))
        .collect();
    let os = message.split_once("errno = ").and_then(|(_, rest)| {
        let errno = rest.split(',').next()?.trim();
        let (_, text) = rest.split_once("error message = '")?;
        Some(format!("{} (os error {errno})", text.split('\'').next()?))
    });
    match os {
        Some(os) => format!("{}: {os}", head.join(": ")),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::condense_hdf5;

    #[test]
    fn libhdf5_internals_give_way_to_the_os_cause() {
        let raw = "H5Fflush(): unable to flush file's cached information: file write failed: time = Tue Dec  1 \
                   09:26:39 2026; , filename = 'r/a.h5.tmp', file descriptor = 7, errno = 28, error message = 'No \
                   space left on device', buf = 0x7f05702291c0, total write size = 2048, offset = 0";
        assert_eq!(
            condense_hdf5(raw),
            "H5Fflush(): unable to flush file's cached information: file write failed: No space left on device \
             (os error 28)"
        );
        assert_eq!(
            condense_hdf5("H5Fopen(): unable to open file"),
            "H5Fopen(): unable to open file"
        );
    }
}
