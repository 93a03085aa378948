//! The trainer's error kinds; each carries the path, step or field it is about.

use std::path::{Path, PathBuf};

/// An error and all its causes as one line, most general first (`writing X: No space left on device`).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![];
    let mut cause = Some(error);
    while let Some(e) = cause {
        // One line: libraries (libhdf5 among them) put their own stacks on several.
        let text = e
            .to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        // Some errors repeat their cause in their own message.
        if !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
        cause = e.source();
    }
    parts.join(": ")
}

/// A config that cannot be read, parsed or trusted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, a missing key or a wrong type.
    #[error("invalid config{}: {message}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Parse {
        path: Option<PathBuf>,
        message: String,
    },
    /// A value out of its allowed range.
    #[error("invalid config{}: {field} {why}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Invalid {
        path: Option<PathBuf>,
        field: String,
        why: String,
    },
}

impl ConfigError {
    /// The error without its `invalid config` preamble (`model.d_model must be …`), for a message that gets
    /// one of its own.
    pub fn reason(&self) -> String {
        match self {
            ConfigError::Parse { message, .. } => message.clone(),
            ConfigError::Invalid { field, why, .. } => format!("{field} {why}"),
            other => other.to_string(),
        }
    }

    /// Attaches the config file's path to a parse or validation error.
    pub fn with_path(self, path: &Path) -> Self {
        match self {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: Some(path.to_owned()),
                message,
            },
            ConfigError::Invalid { field, why, .. } => ConfigError::Invalid {
                path: Some(path.to_owned()),
                field,
                why,
            },
            other => other,
        }
    }
}

/// A checkpoint that cannot be written, found or trusted.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Disk I/O failed.
    #[error("checkpoint {}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// No checkpoint directory for the requested step.
    #[error("no checkpoint for step {step} in {dir}")]
    Missing { dir: PathBuf, step: u64 },
    /// The run directory holds no complete checkpoint at all.
    #[error("no complete checkpoint in {dir}")]
    NoneFound { dir: PathBuf },
    /// A file is truncated or altered: its hash differs from the one recorded at save time.
    #[error("checkpoint {path} is corrupt: {why}")]
    Corrupt { path: PathBuf, why: String },
    /// burn could not save or load a record.
    #[error("checkpoint {path}: {message}")]
    Record { path: PathBuf, message: String },
}

/// A forward, or a copy of its result to host memory, that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// burn could not hand a tensor's values to the host (burn's error only has a debug form).
    #[error("copying a tensor to host memory: {0}")]
    HostCopy(String),
    /// The model has no such part (e.g. the MLP of an attention-only block).
    #[error("{0}")]
    NoSuchPart(String),
}

/// A JSON manifest (`run.json`, `study.json`) that cannot be used; `name` is its file name.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {name}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} is not valid JSON")]
    Json {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("was written with {kind} schema version {found:?}; this build reads version {version}")]
    Version {
        kind: String,
        found: Option<u64>,
        version: u32,
    },
    #[error("{name} does not match its schema")]
    Schema {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What can stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The run directory cannot be created, read or resumed.
    #[error("run directory {path}: {why}")]
    RunLayout { path: PathBuf, why: String },
    /// Writing a log file failed.
    #[error("writing {}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The loss became NaN or infinite.
    #[error("loss is not finite ({loss}) at step {step}")]
    NonFiniteLoss { step: u64, loss: f32 },
    /// A checkpoint plugin failed.
    #[error("checkpoint plugin failed at step {step}: {message}")]
    Plugin { step: u64, message: String },
    /// A forward or its copy to the host failed.
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// Another process writes the run directory.
    #[error(transparent)]
    Lock(#[from] host::lock::LockError),
    /// A whole-file write or a JSON-lines log failed.
    #[error(transparent)]
    File(#[from] host::files::FileError),
    /// A data-defined task's dataset cannot be used.
    #[error(transparent)]
    Dataset(#[from] crate::tasks::dataset::DatasetError),
    /// The dataset under a resumed run is not the one it started with.
    #[error(
        "dataset {path} has SHA-256 {actual} but run.json pins {pinned}; it changed after the run started \
         (restore it, or train a new run)"
    )]
    DatasetChanged {
        path: PathBuf,
        pinned: String,
        actual: String,
    },
    /// Something failed while the run was at `step` (the cause says what and where).
    #[error("at step {step}")]
    AtStep {
        step: u64,
        #[source]
        source: Box<TrainError>,
    },
}

impl TrainError {
    /// This error, said to have happened at `step`.
    pub fn at_step(step: u64) -> impl FnOnce(TrainError) -> TrainError {
        move |e| TrainError::AtStep {
            step,
            source: Box::new(e),
        }
    }
}

impl From<host::lock::StageError<TrainError>> for TrainError {
    fn from(e: host::lock::StageError<TrainError>) -> Self {
        use host::lock::StageError;
        match e {
            StageError::Exists { root } => TrainError::RunLayout {
                path: root,
                why: "already holds a run; pass --resume to continue it or choose another --out"
                    .into(),
            },
            StageError::Lock(e) => TrainError::Lock(e),
            StageError::Io { path, source } => TrainError::Io { path, source },
            StageError::Fill(e) => e,
        }
    }
}
