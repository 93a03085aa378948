//! *How* a checkpoint is written and read: `checkpoints/step_NNNNNN/` holds the weights (`model.bpk`), the
//! optimizer state (`optim.bpk`) and `state.json` (step, RNG and data cursor, and the SHA-256 of each file).
//! A checkpoint is written into a temporary directory and renamed into place, so a kill never leaves a
//! half-written `step_*` directory; the hashes catch later truncation or corruption.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::CheckpointError;
use crate::export::named_parameters;
use crate::model::Transformer;
use crate::tasks::DataCursor;

const MODEL_FILE: &str = "model.bpk";
const OPTIM_FILE: &str = "optim.bpk";
const STATE_FILE: &str = "state.json";
const FORMAT: u32 = 1;

/// Everything besides weights and optimizer moments needed to resume exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub format: u32,
    pub step: u64,
    /// The data RNG is counter-based: batch `s` is drawn from (seed, s), so its state is the seed and the
    /// next step.
    pub rng: RngState,
    pub data_cursor: DataCursor,
    pub tokens_seen: u64,
    /// Learning rate of the update that produced this step, and the last logged training loss: what the
    /// loop reports at this checkpoint, restored on resume so reports do not depend on where a run resumed.
    pub lr: f64,
    pub last_train_loss: Option<f32>,
    /// SHA-256 of the frozen config this checkpoint was trained under.
    pub config_sha256: String,
    /// SHA-256 of the weights' values (see [`weights_sha256`]): equal hashes mean bit-identical weights,
    /// whatever the process (burn's parameter ids inside `model.bpk` differ between processes).
    pub weights_sha256: String,
    /// SHA-256 of each file in the checkpoint directory.
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: u64,
    pub next_step: u64,
}

/// Directory name of the checkpoint at `step`.
pub fn step_dir_name(step: u64) -> String {
    host::layout::step_name(step)
}

/// The checkpoint directory for `step` under `checkpoints`.
pub fn step_dir(checkpoints: &Path, step: u64) -> PathBuf {
    checkpoints.join(step_dir_name(step))
}

/// Writes a checkpoint atomically (temporary directory, fsync, rename).
pub fn save(
    checkpoints: &Path,
    model: &Transformer,
    optim: &ModuleOptimizer,
    mut state: CheckpointState,
) -> Result<PathBuf, CheckpointError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CheckpointError::Io { path, source }
    };
    let final_dir = step_dir(checkpoints, state.step);
    let tmp = checkpoints.join(format!(".tmp-{}", step_dir_name(state.step)));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let record_err = |path: &Path| {
        let path = path.to_owned();
        move |e: burn::store::RecordError| CheckpointError::Record {
            path,
            message: e.to_string(),
        }
    };
    let model_path = tmp.join(MODEL_FILE);
    model
        .clone()
        .save_file(&model_path)
        .map_err(record_err(&model_path))?;
    let optim_path = tmp.join(OPTIM_FILE);
    optim.save(&optim_path).map_err(record_err(&optim_path))?;
    state.format = FORMAT;
    state.weights_sha256 = weights_sha256(model);
    state.files = BTreeMap::new();
    for name in [MODEL_FILE, OPTIM_FILE] {
        state
            .files
            .insert(name.to_owned(), sha256_file(&tmp.join(name))?);
    }
    let state_path = tmp.join(STATE_FILE);
    let json = serde_json::to_vec_pretty(&state).expect("checkpoint state serializes");
    fs::write(&state_path, json).map_err(io(&state_path))?;
    for name in [MODEL_FILE, OPTIM_FILE, STATE_FILE] {
        let path = tmp.join(name);
        fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io(&path))?;
    }
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
    }
    fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    fs::File::open(checkpoints)
        .and_then(|d| d.sync_all())
        .map_err(io(checkpoints))?;
    Ok(final_dir)
}

/// Reads and verifies `state.json` of the checkpoint in `dir` (every file's hash must match).
pub fn read_state(dir: &Path) -> Result<CheckpointState, CheckpointError> {
    let state_path = dir.join(STATE_FILE);
    let text = fs::read_to_string(&state_path).map_err(|source| CheckpointError::Io {
        path: state_path.clone(),
        source,
    })?;
    let state: CheckpointState =
        serde_json::from_str(&text).map_err(|e| CheckpointError::Corrupt {
            path: state_path.clone(),
            why: format!("unreadable state.json: {e}"),
        })?;
    if state.format != FORMAT {
        return Err(CheckpointError::Corrupt {
            path: state_path,
            why: format!(
                "checkpoint format {} (this build reads {FORMAT})",
                state.format
            ),
        });
    }
    for name in [MODEL_FILE, OPTIM_FILE] {
        let path = dir.join(name);
        let expected = state
            .files
            .get(name)
            .ok_or_else(|| CheckpointError::Corrupt {
                path: state_path.clone(),
                why: format!("no hash recorded for {name}"),
            })?;
        let actual = sha256_file(&path)?;
        if &actual != expected {
            return Err(CheckpointError::Corrupt {
                path,
                why:
                    "its SHA-256 differs from the one recorded at save time (truncated or modified)"
                        .into(),
            });
        }
    }
    Ok(state)
}

/// Loads the verified checkpoint in `dir` into `model` and `optim` (fresh objects of the same shape).
pub fn load(
    dir: &Path,
    model: Transformer,
    optim: ModuleOptimizer,
) -> Result<(Transformer, ModuleOptimizer, CheckpointState), CheckpointError> {
    let state = read_state(dir)?;
    let record_err = |path: PathBuf| {
        move |e: burn::store::RecordError| CheckpointError::Corrupt {
            path,
            why: e.to_string(),
        }
    };
    let model_path = dir.join(MODEL_FILE);
    let model = model
        .try_load_file(&model_path)
        .map_err(record_err(model_path))?;
    let optim_path = dir.join(OPTIM_FILE);
    let optim = optim.load(&optim_path).map_err(record_err(optim_path))?;
    Ok((model, optim, state))
}

/// Loads only the weights of the verified checkpoint in `dir`.
pub fn load_model(
    dir: &Path,
    model: Transformer,
) -> Result<(Transformer, CheckpointState), CheckpointError> {
    let state = read_state(dir)?;
    let path = dir.join(MODEL_FILE);
    let model = model
        .try_load_file(&path)
        .map_err(|e| CheckpointError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
    Ok((model, state))
}

/// Steps of the complete checkpoints under `checkpoints`, sorted (temporary directories are ignored).
pub fn list(checkpoints: &Path) -> Result<Vec<u64>, CheckpointError> {
    let entries = match fs::read_dir(checkpoints) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: checkpoints.to_owned(),
                source,
            });
        }
    };
    let mut steps: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("step_")?.parse().ok())
        .collect();
    steps.sort_unstable();
    Ok(steps)
}

/// SHA-256 over every parameter in path order: its path, shape and little-endian `f32` values.
pub fn weights_sha256(model: &Transformer) -> String {
    let mut hasher = Sha256::new();
    for (name, (shape, values)) in named_parameters(model) {
        hasher.update(name.as_bytes());
        for dim in shape {
            hasher.update((dim as u64).to_le_bytes());
        }
        for v in values {
            hasher.update(v.to_le_bytes());
        }
    }
    hex(&hasher.finalize())
}

/// Hex SHA-256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String, CheckpointError> {
    let mut file = fs::File::open(path).map_err(|source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|source| CheckpointError::Io {
            path: path.to_owned(),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Hex SHA-256 of bytes.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
