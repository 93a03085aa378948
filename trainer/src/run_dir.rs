//! The run directory: `config.toml` (frozen copy), `run.json` (manifest), `checkpoints/`, `metrics/`.
//! Created only after the config validated; resumed only under the identical config.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::sha256_bytes;
use crate::config::{Config, TaskConfig};
use crate::error::{ManifestError, TrainError, error_chain as host_error_chain};
use crate::model::ModelDims;
use crate::tasks::Task;
use host::files::write_atomic;
use host::layout::RunLayout;

/// Version of the run-directory layout and manifest; a run dir from another version is refused.
pub const RUN_SCHEMA_VERSION: u32 = 1;

/// `run.json`: what this run is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    /// `{task}-s{seed}-{first 8 hex of the config hash}`: the same config and seed give the same id.
    pub run_id: String,
    pub formation_version: String,
    pub burn_version: String,
    pub task: String,
    pub seed: u64,
    pub steps: u64,
    pub checkpoint_steps: Vec<u64>,
    pub config_sha256: String,
    pub model: ModelDims,
    pub n_params: usize,
    pub device: String,
    /// SHA-256 of the fixed probe set's content (runs with `--analyze`); a probe set that hashes otherwise is
    /// refused.
    #[serde(default)]
    pub probe_set_sha256: Option<String>,
    /// SHA-256 of a data-defined task's dataset (manifest and every file read); a resumed run under a dataset
    /// that hashes otherwise is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_sha256: Option<String>,
    /// The task's attainable test accuracy where it has irreducible error
    /// ([`crate::tasks::Task::attainable_accuracy`]), what the decision rule judges convergence against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attainable_accuracy: Option<f64>,
}

/// The run directory's own files, read and written with the types they hold (config, manifest); the paths
/// come from [`RunLayout`].
pub trait RunFiles {
    /// Creates a fresh run directory's config and manifest; refuses one that already holds a run.
    fn create(&self, config: &Config, manifest: &Manifest) -> Result<(), TrainError>;
    /// Rewrites the manifest (atomically).
    fn write_manifest(&self, manifest: &Manifest) -> Result<(), TrainError>;
    /// Reads the manifest, refusing another schema version.
    fn read_manifest(&self) -> Result<Manifest, TrainError>;
    /// Reads the frozen config of this run.
    fn read_config(&self) -> Result<Config, TrainError>;
    /// Checks that `config` is the one this run was started with.
    fn check_same_config(&self, config: &Config) -> Result<(), TrainError>;
}

impl RunFiles for RunLayout {
    /// Creates a fresh run directory; refuses one that already holds a run.
    fn create(&self, config: &Config, manifest: &Manifest) -> Result<(), TrainError> {
        if self.manifest().exists() || self.checkpoints().exists() {
            return Err(error(
                self,
                "already holds a run; pass --resume to continue it or choose another --out",
            ));
        }
        let io = |path: PathBuf| move |source| TrainError::Io { path, source };
        for dir in [self.root.clone(), self.checkpoints(), self.metrics_dir()] {
            fs::create_dir_all(&dir).map_err(io(dir.clone()))?;
        }
        write_atomic(&self.config(), config.to_toml().as_bytes())?;
        self.write_manifest(manifest)
    }

    /// Rewrites the manifest (atomically).
    fn write_manifest(&self, manifest: &Manifest) -> Result<(), TrainError> {
        Ok(write_atomic(
            &self.manifest(),
            &serde_json::to_vec_pretty(manifest).expect("manifest serializes"),
        )?)
    }

    /// Reads the manifest, refusing another schema version.
    fn read_manifest(&self) -> Result<Manifest, TrainError> {
        read_versioned(&self.manifest(), "run", RUN_SCHEMA_VERSION)
            .map_err(|why| error(self, &host_error_chain(&why)))
    }

    /// Reads the frozen config of this run.
    fn read_config(&self) -> Result<Config, TrainError> {
        Ok(Config::load(&self.config())?)
    }

    /// Checks that `config` is the one this run was started with.
    fn check_same_config(&self, config: &Config) -> Result<(), TrainError> {
        let frozen = self.read_config()?;
        if &frozen != config {
            let (a, b) = (frozen.to_toml(), config.to_toml());
            let first_diff = a
                .lines()
                .zip(b.lines())
                .find(|(x, y)| x != y)
                .map(|(x, y)| format!(" (run has `{x}`, given `{y}`)"));
            return Err(error(
                self,
                &format!(
                    "was trained with a different config{}; resume with the run's own config.toml",
                    first_diff.unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }
}

/// Checks that a data-defined task's dataset is the one `manifest` pinned when the run started.
pub fn check_same_dataset(
    manifest: &Manifest,
    config: &Config,
    task: &dyn Task,
) -> Result<(), TrainError> {
    match (&manifest.dataset_sha256, task.dataset_sha256()) {
        (Some(pinned), Some(actual)) if pinned != actual => Err(TrainError::DatasetChanged {
            path: match &*config.task {
                TaskConfig::Sequences { path } => path.clone(),
                _ => PathBuf::new(),
            },
            pinned: pinned.clone(),
            actual: actual.to_owned(),
        }),
        _ => Ok(()),
    }
}

fn error(run: &RunLayout, why: &str) -> TrainError {
    TrainError::RunLayout {
        path: run.root.clone(),
        why: why.to_owned(),
    }
}

/// A JSON manifest (`run.json`, `study.json`) whose `schema_version` must be `version`; the error says why
/// (unreadable, not JSON, another version, another shape). `kind` names the layout in that message.
pub fn read_versioned<T: serde::de::DeserializeOwned>(
    path: &Path,
    kind: &str,
    version: u32,
) -> Result<T, ManifestError> {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let text = fs::read_to_string(path).map_err(|source| ManifestError::Read {
        name: name.clone(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| ManifestError::Json {
            name: name.clone(),
            source,
        })?;
    let found = value.get("schema_version").and_then(|v| v.as_u64());
    if found != Some(u64::from(version)) {
        return Err(ManifestError::Version {
            kind: kind.to_owned(),
            found,
            version,
        });
    }
    serde_json::from_value(value).map_err(|source| ManifestError::Schema { name, source })
}

/// SHA-256 of a config's canonical TOML.
pub fn config_sha256(config: &Config) -> String {
    sha256_bytes(config.to_toml().as_bytes())
}
