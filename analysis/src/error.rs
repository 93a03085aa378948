//! The analysis error kinds; each names the step or file involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// Writing or reading an analysis file failed.
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file that must be there cannot be read; `hint` says which command makes it.
    #[error("{path} cannot be read; {hint}")]
    Unreadable {
        path: PathBuf,
        hint: String,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file, or one line of a JSON-lines file, is not what it should be.
    #[error("{path}: {what}")]
    Json {
        path: PathBuf,
        /// What it should have been (`line 3 is not a metrics row`).
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A file reads but its content cannot be used (rows out of order, no rows).
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    /// libhdf5 failed.
    #[error("HDF5 {path}")]
    Hdf5 {
        path: PathBuf,
        #[source]
        source: Libhdf5,
    },
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
    pub fn hdf5(path: &std::path::Path, source: hdf5::Error) -> Self {
        AnalysisError::Hdf5 {
            path: path.to_owned(),
            source: Libhdf5(source),
        }
    }

    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        AnalysisError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// An error of libhdf5, shown without its internals ([`condense_hdf5`]).
#[derive(Debug)]
pub struct Libhdf5(pub hdf5::Error);

impl std::fmt::Display for Libhdf5 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&condense_hdf5(&self.0.to_string()))
    }
}

impl std::error::Error for Libhdf5 {}

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
