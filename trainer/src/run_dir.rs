//! The run directory: `config.toml` (frozen copy), `run.json` (manifest), `checkpoints/`, `metrics/`.
//! Created only after the config validated; resumed only under the identical config.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::sha256_bytes;
use crate::config::Config;
use crate::error::TrainError;
use crate::model::ModelDims;

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
}

/// Paths inside one run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn manifest(&self) -> PathBuf {
        self.root.join("run.json")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    pub fn train_log(&self) -> PathBuf {
        self.root.join("metrics").join("train.jsonl")
    }
    pub fn eval_log(&self) -> PathBuf {
        self.root.join("metrics").join("eval.jsonl")
    }

    /// Creates a fresh run directory; refuses one that already holds a run.
    pub fn create(&self, config: &Config, manifest: &Manifest) -> Result<(), TrainError> {
        if self.manifest().exists() || self.checkpoints().exists() {
            return Err(self.error(
                "already holds a run; pass --resume to continue it or choose another --out",
            ));
        }
        let io = |path: PathBuf| move |source| TrainError::Io { path, source };
        for dir in [
            self.root.clone(),
            self.checkpoints(),
            self.root.join("metrics"),
        ] {
            fs::create_dir_all(&dir).map_err(io(dir.clone()))?;
        }
        write_atomic(&self.config(), config.to_toml().as_bytes())?;
        self.write_manifest(manifest)
    }

    /// Rewrites the manifest (atomically).
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<(), TrainError> {
        write_atomic(
            &self.manifest(),
            &serde_json::to_vec_pretty(manifest).expect("manifest serializes"),
        )
    }

    /// Reads the manifest, refusing another schema version.
    pub fn read_manifest(&self) -> Result<Manifest, TrainError> {
        read_versioned(&self.manifest(), "run", RUN_SCHEMA_VERSION).map_err(|why| self.error(&why))
    }

    /// Reads the frozen config of this run.
    pub fn read_config(&self) -> Result<Config, TrainError> {
        Ok(Config::load(&self.config())?)
    }

    /// Checks that `config` is the one this run was started with.
    pub fn check_same_config(&self, config: &Config) -> Result<(), TrainError> {
        let frozen = self.read_config()?;
        if &frozen != config {
            let (a, b) = (frozen.to_toml(), config.to_toml());
            let first_diff = a
                .lines()
                .zip(b.lines())
                .find(|(x, y)| x != y)
                .map(|(x, y)| format!(" (run has `{x}`, given `{y}`)"));
            return Err(self.error(&format!(
                "was trained with a different config{}; resume with the run's own config.toml",
                first_diff.unwrap_or_default()
            )));
        }
        Ok(())
    }

    fn error(&self, why: &str) -> TrainError {
        TrainError::RunDir {
            path: self.root.clone(),
            why: why.to_owned(),
        }
    }
}

/// A JSON manifest (`run.json`, `study.json`) whose `schema_version` must be `version`; the error says why
/// (unreadable, not JSON, another version, another shape). `kind` names the layout in that message.
pub fn read_versioned<T: serde::de::DeserializeOwned>(
    path: &Path,
    kind: &str,
    version: u32,
) -> Result<T, String> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read {name}: {e}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{name} is not valid JSON: {e}"))?;
    let found = value.get("schema_version").and_then(|v| v.as_u64());
    if found != Some(u64::from(version)) {
        return Err(format!(
            "was written with {kind} schema version {found:?}; this build reads version {version}"
        ));
    }
    serde_json::from_value(value).map_err(|e| format!("{name} does not match its schema: {e}"))
}

/// SHA-256 of a config's canonical TOML.
pub fn config_sha256(config: &Config) -> String {
    sha256_bytes(config.to_toml().as_bytes())
}

/// Writes a file whole: to a temporary sibling (named for this process), fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let io = |source| TrainError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::File::create(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

/// The complete rows of a JSON-lines file with their `step`, in file order. A torn, non-UTF-8 or non-JSON
/// line is left out (its step counts as not written), and so is a row whose step is not above the last kept
/// one: what a resumed writer keeps is unique and in step order whatever happened to the file.
pub fn committed_rows(bytes: &[u8]) -> Vec<StepLine<'_>> {
    read_committed(bytes).0
}

/// Where a JSON-lines file first holds a line that [`committed_rows`] leaves out: `Some(after)`, with `after`
/// the step of the last kept row before it (`None`: before any). A writer resumes at the first step after it,
/// so that the rewritten file is clean. `None` when every line is a committed row.
pub fn first_damage(bytes: &[u8]) -> Option<Option<u64>> {
    read_committed(bytes).1
}

/// A row's step and its line.
type StepLine<'a> = (u64, &'a [u8]);

fn read_committed(bytes: &[u8]) -> (Vec<StepLine<'_>>, Option<Option<u64>>) {
    let mut rows: Vec<StepLine<'_>> = vec![];
    let mut damage = None;
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let step = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("step")?.as_u64());
        match step {
            Some(step) if rows.last().is_none_or(|&(last, _)| step > last) => {
                rows.push((step, line))
            }
            _ => {
                if damage.is_none() {
                    damage = Some(rows.last().map(|&(last, _)| last));
                }
            }
        }
    }
    (rows, damage)
}

/// An append-only JSON-lines file: each row is written whole with one `write` and flushed.
pub struct JsonlWriter {
    path: PathBuf,
    file: fs::File,
}

impl JsonlWriter {
    /// Opens `path` for appending, first dropping every row whose `step` is `from_step` or later (rows a resumed
    /// run will write again), a torn last line, and any line [`committed_rows`] leaves out.
    pub fn open_from(path: &Path, from_step: u64) -> Result<Self, TrainError> {
        let io = |source| TrainError::Io {
            path: path.to_owned(),
            source,
        };
        match fs::read(path) {
            Ok(bytes) => {
                let mut kept = Vec::with_capacity(bytes.len());
                for (_, line) in committed_rows(&bytes)
                    .into_iter()
                    .filter(|&(step, _)| step < from_step)
                {
                    kept.extend_from_slice(line);
                    kept.push(b'\n');
                }
                if kept != bytes {
                    write_atomic(path, &kept)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Appends one row.
    pub fn write<T: Serialize>(&mut self, row: &T) -> Result<(), TrainError> {
        let mut line = serde_json::to_vec(row).expect("row serializes");
        line.push(b'\n');
        let io = |source| TrainError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&line).map_err(io)?;
        self.file.flush().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_rows_skip_damaged_lines_duplicates_and_steps_out_of_order() {
        let bytes = b"{\"step\":0}\n{\"step\":1\xff}\n{\"step\":2}\n{\"step\":2}\n{\"step\":1}\n{\"step\":4}\n{\"st";
        let steps: Vec<u64> = committed_rows(bytes).iter().map(|r| r.0).collect();
        assert_eq!(steps, [0, 2, 4]);
        assert_eq!(
            first_damage(bytes),
            Some(Some(0)),
            "the damaged row after step 0"
        );
        assert_eq!(first_damage(b"{\"step\":0}\n{\"step\":1}\n"), None);
        assert_eq!(first_damage(b"{\"step\":3}\n{\"step\":3}\n"), Some(Some(3)));
        assert_eq!(first_damage(b"x\n{\"step\":3}\n"), Some(None));
    }

    #[test]
    fn a_reopened_log_keeps_the_committed_rows_before_the_resume_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        fs::write(
            &path,
            b"{\"step\":0}\n\xfe\xff\n{\"step\":2}\n{\"step\":2}\n{\"step\":4}\n",
        )
        .unwrap();
        let mut log = JsonlWriter::open_from(&path, 4).unwrap();
        log.write(&serde_json::json!({"step": 4})).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"step\":0}\n{\"step\":2}\n{\"step\":4}\n"
        );
    }
}
