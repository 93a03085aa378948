//! The error kinds of studies; each names the directory, file or value involved.

use std::path::PathBuf;

use trainer::{ConfigError, TrainError};

/// A study (`formation replicate` / `screen`) that cannot be planned, written or read.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// A seed list, factor or factor value that cannot be used.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The study directory cannot be created, read or continued.
    #[error("study directory {path}: {why}")]
    Dir { path: PathBuf, why: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Another process writes the study directory or runs one of its runs.
    #[error(transparent)]
    Lock(#[from] host::lock::LockError),
    #[error(transparent)]
    File(#[from] host::files::FileError),
}
