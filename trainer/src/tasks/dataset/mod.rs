//! Data-defined tasks: a dataset directory written by any language (`task.toml` plus `.npy` integer arrays per
//! split; the format is documented in `docs/tasks.md`), loaded and validated once into [`Dataset`]. Every
//! problem is one error naming the file, the index and the field, and nothing downstream checks again.

pub mod export;
pub mod manifest;
pub mod npy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use host::examples::{Examples, Split};
pub use manifest::{Corruption, KeySpec, Manifest, TargetSpec};
use manifest::{FORMAT, resolve_position};

/// The manifest's file name inside a dataset directory.
pub const MANIFEST: &str = "task.toml";

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A file that must be there cannot be read.
    #[error("{path} cannot be read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `task.toml` is not valid TOML or has an unknown or missing field.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A field of `task.toml` has a value the data cannot have.
    #[error("{path}: `{field}` {why}")]
    Field {
        path: PathBuf,
        field: String,
        why: String,
    },
    /// A data file is not what the manifest says (shape, values); `why` names the index.
    #[error("{path} {why}")]
    File { path: PathBuf, why: String },
}

/// Where a key position is, resolved against the sequence length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Fixed(usize),
    Column(String),
}

/// A loaded, validated dataset: its manifest, the examples of each split present (with the per-example columns
/// the manifest names, in [`Examples::columns`]), and the SHA-256 of everything read.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub answer_positions: Vec<usize>,
    /// Key positions by name, in the manifest's (sorted) order.
    pub keys: Vec<(String, Key)>,
    pub splits: Vec<(Split, Examples)>,
    /// SHA-256 over the manifest and every data file read, pinned in the run manifest.
    pub sha256: String,
}

impl Dataset {
    /// Reads and validates the dataset in `dir`.
    pub fn load(dir: &Path) -> Result<Dataset, DatasetError> {
        let manifest_path = dir.join(MANIFEST);
        let text = std::fs::read(&manifest_path).map_err(|source| DatasetError::Read {
            path: manifest_path.clone(),
            source,
        })?;
        let manifest: Manifest = std::str::from_utf8(&text)
            .map_err(|e| format!("is not UTF-8 ({e})"))
            .and_then(|t| {
                toml::from_str(t).map_err(|e| {
                    let line = e
                        .span()
                        .map(|span| t[..span.start].matches('\n').count() + 1);
                    let at = line.map_or_else(String::new, |l| format!("line {l}: "));
                    format!("{at}{}", e.message().trim().replace('\n', " "))
                })
            })
            .map_err(|message| DatasetError::Parse {
                path: manifest_path.clone(),
                message,
            })?;
        let (answer_positions, keys) = check_manifest(&manifest, &manifest_path)?;
        let mut hasher = Sha256::new();
        hasher.update(Sha256::digest(&text));
        let mut splits = vec![];
        for split in Split::ALL {
            let split_dir = dir.join(split.name());
            if !split_dir.is_dir() {
                if split == Split::Train {
                    return Err(DatasetError::File {
                        path: split_dir,
                        why: "is missing: a dataset needs a train split (train/tokens.npy)".into(),
                    });
                }
                continue;
            }
            let examples = load_split(
                &manifest,
                &answer_positions,
                &keys,
                &split_dir,
                &mut |file, hash| {
                    hasher.update(format!("{}/{file}", split.name()).as_bytes());
                    hasher.update(hash.as_bytes());
                },
            )?;
            splits.push((split, examples));
        }
        Ok(Dataset {
            dir: dir.to_owned(),
            manifest,
            answer_positions,
            keys,
            splits,
            sha256: hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        })
    }

    /// The examples of a split, if the dataset has it.
    pub fn split(&self, split: Split) -> Option<&Examples> {
        self.splits
            .iter()
            .find(|(s, _)| *s == split)
            .map(|(_, e)| e)
    }
}

/// Checks the manifest on its own; returns the resolved answer positions and key positions.
#[allow(clippy::type_complexity)]
fn check_manifest(
    m: &Manifest,
    path: &Path,
) -> Result<(Vec<usize>, Vec<(String, Key)>), DatasetError> {
    let field = |field: &str, why: String| DatasetError::Field {
        path: path.to_owned(),
        field: field.to_owned(),
        why,
    };
    if m.format != FORMAT {
        return Err(field(
            "format",
            format!("is {}; this build reads format {FORMAT}", m.format),
        ));
    }
    if m.name.is_empty()
        || !m
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(field(
            "name",
            format!("is {:?}; use lowercase letters, digits and '-'", m.name),
        ));
    }
    for (name, value) in [
        ("vocab", m.vocab),
        ("seq_len", m.seq_len),
        ("vocab_out", m.vocab_out()),
    ] {
        if value == 0 {
            return Err(field(name, "must be at least 1".into()));
        }
    }
    if let Some(a) = m.attainable_accuracy
        && !(a > 0.0 && a <= 1.0)
    {
        return Err(field(
            "attainable_accuracy",
            format!("must be in (0, 1], got {a}"),
        ));
    }
    if m.answer_positions.is_empty() {
        return Err(field(
            "answer_positions",
            "is empty; name at least one position where the loss counts".into(),
        ));
    }
    let mut answers = vec![];
    for &index in &m.answer_positions {
        let pos = resolve_position(index, m.seq_len).ok_or_else(|| {
            field(
                "answer_positions",
                format!("has {index}, outside a sequence of {} tokens", m.seq_len),
            )
        })?;
        if answers.contains(&pos) {
            return Err(field(
                "answer_positions",
                format!("names position {pos} twice"),
            ));
        }
        answers.push(pos);
    }
    if let Some(names) = &m.token_names
        && names.len() != m.vocab
    {
        return Err(field(
            "token_names",
            format!("has {} names for a vocabulary of {}", names.len(), m.vocab),
        ));
    }
    let mut keys = vec![];
    for (name, spec) in &m.keys {
        let key = match spec {
            KeySpec::Fixed(index) => {
                Key::Fixed(resolve_position(*index, m.seq_len).ok_or_else(|| {
                    field(
                        &format!("keys.{name}"),
                        format!("is {index}, outside a sequence of {} tokens", m.seq_len),
                    )
                })?)
            }
            KeySpec::Column(column) => Key::Column(column.clone()),
        };
        keys.push((name.clone(), key));
    }
    for (name, target) in &m.targets {
        if target.classes == 0 {
            return Err(field(
                &format!("targets.{name}.classes"),
                "must be at least 1".into(),
            ));
        }
    }
    if let Some(Corruption { key }) = &m.corruption
        && !m.keys.contains_key(key)
    {
        return Err(field(
            "corruption.key",
            format!("is `{key}`, which is not one of the key positions"),
        ));
    }
    for measure in &m.progress {
        check_progress(measure, m, &answers).map_err(|why| field("progress", why))?;
    }
    Ok((answers, keys))
}

/// Why a declared progress measure cannot apply to this dataset, if it cannot.
fn check_progress(
    measure: &crate::tasks::ProgressMeasure,
    m: &Manifest,
    answers: &[usize],
) -> Result<(), String> {
    use crate::tasks::ProgressMeasure;
    match measure {
        ProgressMeasure::ParityFourier {
            bits,
            subset,
            answer,
            zero,
            one,
        } => {
            if bits.is_empty() || bits.len() > 64 {
                return Err(format!(
                    "parity_fourier needs 1 to 64 bits, got {}",
                    bits.len()
                ));
            }
            if let Some(b) = bits.iter().find(|&&b| b >= m.seq_len) {
                return Err(format!(
                    "parity_fourier bit position {b} is outside a sequence of {} tokens",
                    m.seq_len
                ));
            }
            let mut distinct = subset.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if subset.is_empty()
                || distinct.len() != subset.len()
                || subset.iter().any(|&i| i >= bits.len())
            {
                return Err(format!(
                    "parity_fourier subset {subset:?} must be distinct indices below the {} bits",
                    bits.len()
                ));
            }
            if !answers.contains(answer) {
                return Err(format!(
                    "parity_fourier answer {answer} is not an answer position"
                ));
            }
            if zero == one || [zero, one].iter().any(|&&c| c as usize >= m.vocab_out()) {
                return Err(format!(
                    "parity_fourier classes {zero} and {one} must be distinct and below vocab_out ({})",
                    m.vocab_out()
                ));
            }
        }
        ProgressMeasure::MarkovOracles {
            states,
            pseudo_count,
        } => {
            if *states < 2 || *states > m.vocab_out() {
                return Err(format!(
                    "markov_oracles states {states} must be in 2..=vocab_out ({})",
                    m.vocab_out()
                ));
            }
            if !(pseudo_count.is_finite() && *pseudo_count > 0.0) {
                return Err(format!(
                    "markov_oracles pseudo_count must be positive, got {pseudo_count}"
                ));
            }
        }
    }
    Ok(())
}

/// Reads and validates one split directory; `hashed(file, sha256)` is called for every file read.
fn load_split(
    m: &Manifest,
    answer_positions: &[usize],
    keys: &[(String, Key)],
    dir: &Path,
    hashed: &mut dyn FnMut(&str, &str),
) -> Result<Examples, DatasetError> {
    let mut read = |name: &str| -> Result<npy::IntArray, DatasetError> {
        let (array, hash) = npy::read(&dir.join(name))?;
        hashed(name, &hash);
        Ok(array)
    };
    let tokens_path = dir.join("tokens.npy");
    let bad = |path: &Path, why: String| DatasetError::File {
        path: path.to_owned(),
        why,
    };
    let tokens = read("tokens.npy")?;
    let [n, seq_len] = tokens.shape[..] else {
        return Err(bad(
            &tokens_path,
            format!(
                "has shape {:?}; tokens are [examples, seq_len]",
                tokens.shape
            ),
        ));
    };
    if seq_len != m.seq_len {
        return Err(bad(
            &tokens_path,
            format!(
                "has sequences of {seq_len} tokens; task.toml says seq_len = {}",
                m.seq_len
            ),
        ));
    }
    if n == 0 {
        return Err(bad(&tokens_path, "has no examples".into()));
    }
    if let Some(flat) = tokens.values.iter().position(|&t| t as usize >= m.vocab) {
        return Err(bad(
            &tokens_path,
            format!(
                "has token {} at example {}, position {}, outside the vocabulary 0..{} (task.toml vocab)",
                tokens.values[flat],
                flat / seq_len,
                flat % seq_len,
                m.vocab
            ),
        ));
    }
    let answers_path = dir.join("answers.npy");
    let n_answers = answer_positions.len();
    let targets = if answers_path.exists() {
        let answers = read("answers.npy")?;
        if answers.shape != [n, n_answers] {
            return Err(bad(
                &answers_path,
                format!(
                    "has shape {:?}; answers are [examples, answer positions] = [{n}, {n_answers}]",
                    answers.shape
                ),
            ));
        }
        answers.values
    } else {
        // Next-token prediction: the answer at position t is the token at t + 1.
        if let Some(&last) = answer_positions.iter().find(|&&p| p + 1 >= seq_len) {
            return Err(bad(
                &answers_path,
                format!(
                    "is missing, and answer position {last} is the last token, so it has no next token to \
                     predict; give each example's answers in answers.npy"
                ),
            ));
        }
        let mut out = Vec::with_capacity(n * n_answers);
        for i in 0..n {
            out.extend(
                answer_positions
                    .iter()
                    .map(|&p| tokens.values[i * seq_len + p + 1]),
            );
        }
        out
    };
    if let Some(flat) = targets.iter().position(|&t| t as usize >= m.vocab_out()) {
        return Err(bad(
            &answers_path,
            format!(
                "has answer {} at example {}, answer position {}, outside 0..{} (task.toml vocab_out)",
                targets[flat],
                flat / n_answers,
                answer_positions[flat % n_answers],
                m.vocab_out()
            ),
        ));
    }
    // Per-example columns: key positions, target labels, control types, each checked against its range.
    let mut columns = BTreeMap::new();
    let mut wanted: BTreeSet<(String, String, Option<usize>)> = BTreeSet::new();
    for (name, key) in keys {
        if let Key::Column(column) = key {
            wanted.insert((column.clone(), format!("key `{name}`"), Some(seq_len)));
        }
    }
    for (name, target) in &m.targets {
        let column = target.column.clone().unwrap_or_else(|| name.clone());
        wanted.insert((column, format!("target `{name}`"), Some(target.classes)));
        if let Some(control) = target.control.as_deref().filter(|c| *c != "token") {
            wanted.insert((control.to_owned(), format!("the control of `{name}`"), None));
        }
    }
    for (column, user, limit) in wanted {
        let file = format!("{column}.npy");
        let path = dir.join(&file);
        if !path.exists() {
            return Err(bad(
                &path,
                format!("is missing ({user} reads column `{column}`)"),
            ));
        }
        let array = read(&file)?;
        if array.shape != [n] {
            return Err(bad(
                &path,
                format!(
                    "has shape {:?}; a column has one value per example: [{n}]",
                    array.shape
                ),
            ));
        }
        if let Some(limit) = limit
            && let Some(i) = array.values.iter().position(|&v| v as usize >= limit)
        {
            let what = if user.starts_with("key") {
                format!(
                    "position {}, outside a sequence of {limit} tokens",
                    array.values[i]
                )
            } else {
                format!("label {}, outside its {limit} classes", array.values[i])
            };
            return Err(bad(&path, format!("has {what} at example {i} ({user})")));
        }
        columns.insert(column, array.values);
    }
    Ok(Examples {
        n,
        seq_len,
        tokens: tokens.values,
        n_answers,
        targets,
        columns,
    })
}
