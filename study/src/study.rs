//! A study: one config trained over several seeds (Phase B, `formation replicate`) or over the values of one
//! config key (Phase C, `formation screen`), each run an independent process in its own run directory. This
//! module plans the runs, writes and checks the study's manifest, and reads each run's state from its files.
//!
//! Layout of a study directory: `study.json` (the plan), `configs/NAME.toml` (each run's full config),
//! `runs/NAME/` (run directories), `status/NAME.json` (written by the run's process), `logs/NAME.log`, and
//! `slurm/array.sbatch` when the study goes to Slurm.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::StudyError;
use host::files::write_atomic;
use host::layout::{RunLayout, StudyLayout};
use host::lock::{DirLock, StageError, create_staged};
use trainer::config::Config;
use trainer::run_dir::read_versioned;

/// Version of the study manifest; a study directory of another version is refused.
pub const STUDY_SCHEMA_VERSION: u32 = 1;

/// Seed replication or a one-factor screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StudyKind {
    Replicate,
    Screen,
}

/// One config key and the values a screen gives it (as written on the command line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    pub key: String,
    pub values: Vec<String>,
}

impl Factor {
    /// Parses `KEY=V1,V2,...`.
    pub fn parse(text: &str) -> Result<Self, StudyError> {
        let (key, values) = text.split_once('=').ok_or_else(|| {
            StudyError::Invalid(format!(
                "--factor `{text}` is not of the form KEY=V1,V2,..."
            ))
        })?;
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_owned()).collect();
        if key.trim().is_empty() || values.iter().any(String::is_empty) {
            return Err(StudyError::Invalid(format!(
                "--factor `{text}` needs a key and non-empty values"
            )));
        }
        if let Some(bad) = values.iter().find(|v| {
            !Self::label(v)
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
        }) {
            return Err(StudyError::Invalid(format!(
                "factor value `{bad}` must be letters, digits and . _ + - only, or a path whose last part is \
                 (it names a run directory)"
            )));
        }
        let mut labels: Vec<&str> = values.iter().map(|v| Self::label(v)).collect();
        labels.sort_unstable();
        if let Some(twice) = labels.windows(2).find(|w| w[0] == w[1]) {
            return Err(StudyError::Invalid(format!(
                "two factor values end in `{}`; a value's last path part names its runs, so make them differ",
                twice[0]
            )));
        }
        Ok(Self {
            key: key.trim().to_owned(),
            values,
        })
    }

    /// The part of a value that names its runs: the value itself, or a path's last part (`data/sorting-v2` →
    /// `sorting-v2`), so that a factor can be a dataset directory (`task.path`).
    pub fn label(value: &str) -> &str {
        value
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(value)
    }
}

/// Parses a seed list: `0..5` (0 to 4), `0..=4`, `1,3,7` or `3`.
pub fn parse_seeds(text: &str) -> Result<Vec<u64>, StudyError> {
    let bad = || {
        StudyError::Invalid(format!(
            "--seeds `{text}` is not a range (0..5, 0..=4) or a list (1,3,7) of seeds"
        ))
    };
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    let seeds: Vec<u64> = if let Some((a, b)) = text.split_once("..=") {
        (number(a)?..=number(b)?).collect()
    } else if let Some((a, b)) = text.split_once("..") {
        (number(a)?..number(b)?).collect()
    } else {
        text.split(',').map(number).collect::<Result<_, _>>()?
    };
    let mut unique = seeds.clone();
    unique.sort_unstable();
    unique.dedup();
    if seeds.is_empty() || unique.len() != seeds.len() {
        return Err(StudyError::Invalid(format!(
            "--seeds `{text}` must name at least one seed, each once"
        )));
    }
    Ok(seeds)
}

/// One run of a study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    /// `s3` (replicate) or `optim.lr=1e-3-s3` (screen): the run's directory, config, status and log name.
    pub name: String,
    pub seed: u64,
    /// The factor's value (screens).
    #[serde(default)]
    pub value: Option<String>,
}

/// `study.json`: what the study is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyManifest {
    pub schema_version: u32,
    pub kind: StudyKind,
    /// The config the runs derive from, as given on the command line.
    pub base_config: PathBuf,
    #[serde(default)]
    pub factor: Option<Factor>,
    pub seeds: Vec<u64>,
    pub runs: Vec<PlannedRun>,
}

/// Plans a study: every (factor value ×) seed, with its full config (validated: a bad value fails here, before
/// anything is written or started).
pub fn plan(
    kind: StudyKind,
    base: &Config,
    base_path: &Path,
    seeds: &[u64],
    factor: Option<&Factor>,
) -> Result<(StudyManifest, Vec<Config>), StudyError> {
    let mut runs = vec![];
    let mut configs = vec![];
    let values: Vec<Option<&String>> = match factor {
        Some(f) => f.values.iter().map(Some).collect(),
        None => vec![None],
    };
    for value in values {
        let varied = match (factor, value) {
            (Some(f), Some(v)) => base
                .with_override(&f.key, &absolute_path(&f.key, v))
                .map_err(|e| StudyError::Invalid(format!("{} = {v}: {e}", f.key)))?,
            _ => base.clone(),
        };
        for &seed in seeds {
            let mut config = varied.clone();
            config.train = config.train.edit(|train| train.seed = seed)?;
            let name = match (factor, value) {
                (Some(f), Some(v)) => format!("{}={}-s{seed}", f.key, Factor::label(v)),
                _ => format!("s{seed}"),
            };
            runs.push(PlannedRun {
                name,
                seed,
                value: value.cloned(),
            });
            configs.push(config);
        }
    }
    let manifest = StudyManifest {
        schema_version: STUDY_SCHEMA_VERSION,
        kind,
        base_config: base_path.to_owned(),
        factor: factor.cloned(),
        seeds: seeds.to_vec(),
        runs,
    };
    Ok((manifest, configs))
}

/// A dataset path given on the command line (`--factor task.path=…`) is relative to the working directory;
/// the runs' configs name it absolutely. Other values pass unchanged.
fn absolute_path(key: &str, value: &str) -> String {
    if key != "task.path" {
        return value.to_owned();
    }
    let path = Path::new(value);
    path.canonicalize()
        .or_else(|_| std::path::absolute(path))
        .map_or_else(|_| value.to_owned(), |p| p.to_string_lossy().into_owned())
}

/// What a run's process writes to `status/NAME.json` when it starts, finishes or fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub state: StatusState,
    /// The error, one sentence, when the run failed.
    #[serde(default)]
    pub error: Option<String>,
    pub host: String,
    pub pid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusState {
    Running,
    Done,
    Failed,
}

/// Where a run stands, from its files.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Never started.
    Pending,
    /// Its process said it started and has not finished (or was killed: a re-run resumes it).
    Started { step: Option<u64> },
    /// Failed with this error; a re-run resumes it.
    Failed { error: String, step: Option<u64> },
    /// Trained, analyzed, windows found.
    Done,
}

impl RunState {
    pub fn label(&self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Started { .. } => "started",
            RunState::Failed { .. } => "failed",
            RunState::Done => "done",
        }
    }
}

/// A study directory's own files, read and written with the types they hold (plan, run status); the paths
/// come from [`StudyLayout`].
pub trait StudyFiles {
    /// Writes the plan, or checks it against the one already there; returns the study's write lock.
    fn prepare(&self, manifest: &StudyManifest, configs: &[Config]) -> Result<DirLock, StudyError>;
    /// Reads `study.json`, refusing another schema version.
    fn read_manifest(&self) -> Result<StudyManifest, StudyError>;
    /// Writes `status/NAME.json` (atomically).
    fn write_status(&self, name: &str, status: &RunStatus) -> Result<(), StudyError>;
    /// Where the run `name` stands, from its status file and its run directory.
    fn state(&self, name: &str) -> RunState;
}

impl StudyFiles for StudyLayout {
    /// Writes the plan, or checks it against the one already there (re-running a study command continues
    /// it; a different plan in the same directory is refused before anything changes). A new study directory
    /// appears whole ([`create_staged`]). Returns the study's write lock.
    fn prepare(&self, manifest: &StudyManifest, configs: &[Config]) -> Result<DirLock, StudyError> {
        if self.manifest().exists() {
            let lock = DirLock::acquire(&self.root, "formation study")?;
            let existing = self.read_manifest()?;
            if existing.kind != manifest.kind
                || existing.factor != manifest.factor
                || existing.runs != manifest.runs
            {
                return Err(error(
                    self,
                    "already holds a different study (other runs, factor or kind); choose another --out",
                ));
            }
            for (run, config) in manifest.runs.iter().zip(configs) {
                let frozen = Config::load(&self.config(&run.name))?;
                if &frozen != config {
                    return Err(error(
                        self,
                        &format!(
                            "run {} was planned from a different config; choose another --out",
                            run.name
                        ),
                    ));
                }
            }
            return Ok(lock);
        }
        let fill = |staging: &Path| -> Result<(), StudyError> {
            let staged = StudyLayout::new(staging);
            for dir in StudyLayout::DIRS {
                let path = staging.join(dir);
                fs::create_dir_all(&path).map_err(|e| io(&path, e))?;
            }
            for (run, config) in manifest.runs.iter().zip(configs) {
                write_atomic(&staged.config(&run.name), config.to_toml().as_bytes())?;
            }
            write_atomic(
                &staged.manifest(),
                &serde_json::to_vec_pretty(manifest).expect("study manifest serializes"),
            )?;
            Ok(())
        };
        create_staged(&self.root, "formation study", fill).map_err(|e| match e {
            StageError::Exists { .. } => {
                error(self, "exists and is not a study directory (no study.json)")
            }
            StageError::Lock(e) => e.into(),
            StageError::Io { path, source } => io(&path, source),
            StageError::Fill(e) => e,
        })
    }

    /// Reads `study.json`, refusing another schema version.
    fn read_manifest(&self) -> Result<StudyManifest, StudyError> {
        if !self.manifest().exists() {
            return Err(error(self, "is not a study directory (no study.json)"));
        }
        read_versioned(&self.manifest(), "study", STUDY_SCHEMA_VERSION)
            .map_err(|why| error(self, &trainer::error::error_chain(&why)))
    }

    /// Records a run's state (atomically).
    fn write_status(&self, name: &str, status: &RunStatus) -> Result<(), StudyError> {
        Ok(write_atomic(
            &self.status(name),
            &serde_json::to_vec_pretty(status).expect("status serializes"),
        )?)
    }

    /// Where a run stands.
    fn state(&self, name: &str) -> RunState {
        let status: Option<RunStatus> = fs::read_to_string(self.status(name))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        let step = last_logged_step(&self.run(name));
        match status {
            None => RunState::Pending,
            Some(s) => match s.state {
                StatusState::Done => RunState::Done,
                StatusState::Running => RunState::Started { step },
                StatusState::Failed => RunState::Failed {
                    error: s.error.unwrap_or_default(),
                    step,
                },
            },
        }
    }
}

fn error(study: &StudyLayout, why: &str) -> StudyError {
    StudyError::Dir {
        path: study.root.clone(),
        why: why.to_owned(),
    }
}

fn io(path: &Path, source: std::io::Error) -> StudyError {
    StudyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The step of the last line of a run's `metrics/train.jsonl` (read from the file's tail: cheap to poll).
pub fn last_logged_step(run: &RunLayout) -> Option<u64> {
    let mut file = fs::File::open(run.train_log()).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut tail = String::new();
    file.read_to_string(&mut tail).ok()?;
    tail.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|row| row.get("step").and_then(|s| s.as_u64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ci_config() -> Config {
        Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ci.toml")).unwrap()
    }

    #[test]
    fn seeds_parse_as_ranges_and_lists() {
        assert_eq!(parse_seeds("0..3").unwrap(), vec![0, 1, 2]);
        assert_eq!(parse_seeds("2..=4").unwrap(), vec![2, 3, 4]);
        assert_eq!(parse_seeds("7,1").unwrap(), vec![7, 1]);
        assert_eq!(parse_seeds("5").unwrap(), vec![5]);
        for bad in ["3..3", "a..4", "1,1", "", "1,,2"] {
            assert!(parse_seeds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn factor_values_must_name_directories() {
        let f = Factor::parse("optim.lr=1e-3, 3e-3").unwrap();
        assert_eq!(f.key, "optim.lr");
        assert_eq!(f.values, vec!["1e-3", "3e-3"]);
        assert!(Factor::parse("optim.lr").is_err());
        assert!(Factor::parse("optim.lr=1,").is_err());
        assert!(Factor::parse("task.name=a b").is_err());
        // A path names its runs by its last part; two paths ending alike would share run directories.
        let paths = Factor::parse("task.path=../data/sort-v1,sort-v2/").unwrap();
        let labels: Vec<&str> = paths.values.iter().map(|v| Factor::label(v)).collect();
        assert_eq!(labels, ["sort-v1", "sort-v2"]);
        assert!(Factor::parse("task.path=a/data,b/data").is_err());
    }

    #[test]
    fn a_screen_plans_every_value_times_seed_with_the_value_set() {
        let base = ci_config();
        let factor = Factor::parse("optim.weight_decay=0,1").unwrap();
        let (manifest, configs) = plan(
            StudyKind::Screen,
            &base,
            Path::new("ci.toml"),
            &[0, 1],
            Some(&factor),
        )
        .unwrap();
        let names: Vec<&str> = manifest.runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "optim.weight_decay=0-s0",
                "optim.weight_decay=0-s1",
                "optim.weight_decay=1-s0",
                "optim.weight_decay=1-s1"
            ]
        );
        // The integer 0 became the float field's 0.0; every other field is the base config's.
        assert_eq!(configs[0].optim.weight_decay, 0.0);
        assert_eq!(configs[3].optim.weight_decay, 1.0);
        assert_eq!(configs[1].train.seed, 1);
        let mut expected = base.clone();
        expected.optim = expected.optim.edit(|o| o.weight_decay = 0.0).unwrap();
        expected.train = expected.train.edit(|t| t.seed = 1).unwrap();
        assert_eq!(configs[1], expected);
    }

    #[test]
    fn a_bad_factor_value_or_key_fails_the_plan() {
        let base = ci_config();
        for (factor, needle) in [
            ("model.d_model=30", "divisible"),
            ("model.d_modle=32", "d_modle"),
            ("optimizer.lr=1", "no config section"),
            ("optim.lr=fast", "optim.lr"),
        ] {
            let f = Factor::parse(factor).unwrap();
            let err = plan(
                StudyKind::Screen,
                &base,
                Path::new("ci.toml"),
                &[0],
                Some(&f),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(needle), "{factor}: {err}");
        }
    }

    #[test]
    fn overrides_reach_nested_sections_and_keep_strings() {
        let base = ci_config();
        let c = base.with_override("train.checkpoints.every", "10").unwrap();
        assert_eq!(c.train.checkpoints.every, 10);
        let c = base.with_override("model.act_fn", "gelu").unwrap();
        assert_eq!(c.model.act_fn, trainer::config::Activation::Gelu);
    }
}
