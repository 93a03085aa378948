//! `formation task export`: any task written as a dataset directory, so that a built-in task trained as a
//! data-defined one can be compared with itself (and a researcher sees a complete example of the format).

use std::collections::BTreeMap;
use std::path::Path;

use host::examples::{Examples, Split};

use super::manifest::{Corruption, FORMAT, KeySpec, Manifest, TargetSpec};
use super::{MANIFEST, npy};
use crate::tasks::Task;

/// Why an export cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path} already exists; export into a new directory")]
    Exists { path: std::path::PathBuf },
    #[error(
        "task `{task}` has no fixed train split (its training stream is generated); pass --train-examples N to \
         export its first N training sequences"
    )]
    NoTrainSplit { task: String },
    #[error("writing {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `task` as a dataset directory `out` (which must not exist) named `name`: every fixed split, or the
/// first `train_examples` sequences of a generated training stream (`batch_size` at a time, as training draws
/// them); key positions as fixed indices where they are the same for every example, else as columns
/// `<key>_pos`; every target as a column of its own name; the task's corruption; and the `extra` files (name,
/// text). The directory appears complete or not at all. Returns the manifest.
pub fn export(
    task: &dyn Task,
    name: &str,
    train_examples: Option<usize>,
    batch_size: Option<usize>,
    extra: &[(&str, String)],
    out: &Path,
) -> Result<Manifest, ExportError> {
    if out.exists() {
        return Err(ExportError::Exists {
            path: out.to_owned(),
        });
    }
    let mut splits: Vec<(Split, Examples)> = vec![];
    for split in Split::ALL {
        let examples = match (split, task.split(split), train_examples) {
            (Split::Train, _, Some(n)) => streamed(task, n, batch_size.unwrap_or(n)),
            (_, Some(examples), _) => examples,
            (Split::Train, None, None) => {
                return Err(ExportError::NoTrainSplit {
                    task: task.name().to_owned(),
                });
            }
            (_, None, _) => continue,
        };
        splits.push((split, examples));
    }
    let train = &splits[0].1;
    let mut keys = BTreeMap::new();
    for key in task.key_positions(train) {
        let fixed = splits.iter().all(|(_, examples)| {
            task.key_positions(examples)
                .iter()
                .find(|k| k.name == key.name)
                .is_some_and(|k| k.values.iter().all(|&v| v == key.values[0]))
        });
        let spec = if fixed {
            KeySpec::Fixed(i64::from(key.values[0]))
        } else {
            KeySpec::Column(format!("{}_pos", key.name))
        };
        keys.insert(key.name, spec);
    }
    let targets = task
        .probe_targets(train)
        .into_iter()
        .map(|t| {
            let spec = TargetSpec {
                classes: t.n_classes,
                column: None,
                control: None,
            };
            (t.name, spec)
        })
        .collect();
    let manifest = Manifest {
        format: FORMAT,
        name: name.to_owned(),
        vocab: task.d_vocab(),
        vocab_out: (task.d_vocab_out() != task.d_vocab()).then_some(task.d_vocab_out()),
        seq_len: task.seq_len(),
        answer_positions: task.answer_positions().iter().map(|&p| p as i64).collect(),
        token_names: None,
        head_detectors: task.head_detectors(),
        keys,
        targets,
        corruption: task
            .corrupted_key()
            .map(|key| Corruption { key: key.into() }),
        progress: task.progress_measures(),
        attainable_accuracy: task.attainable_accuracy(),
    };
    let tmp = out.with_extension("partial");
    let write = |path: &Path, result: std::io::Result<()>| {
        result.map_err(|source| ExportError::Write {
            path: path.to_owned(),
            source,
        })
    };
    if tmp.exists() {
        write(&tmp, std::fs::remove_dir_all(&tmp))?;
    }
    let text = toml::to_string(&manifest).expect("a manifest serializes");
    write(&tmp, std::fs::create_dir_all(&tmp))?;
    write(
        &tmp.join(MANIFEST),
        std::fs::write(tmp.join(MANIFEST), text),
    )?;
    for (file, text) in extra {
        write(&tmp.join(file), std::fs::write(tmp.join(file), text))?;
    }
    for (split, examples) in &splits {
        let dir = tmp.join(split.name());
        write(&dir, std::fs::create_dir_all(&dir))?;
        let mut arrays: Vec<(String, Vec<usize>, Vec<u32>)> = vec![
            (
                "tokens".into(),
                vec![examples.n, examples.seq_len],
                examples.tokens.clone(),
            ),
            (
                "answers".into(),
                vec![examples.n, examples.n_answers],
                examples.targets.clone(),
            ),
        ];
        for key in task.key_positions(examples) {
            if let Some(KeySpec::Column(column)) = manifest.keys.get(&key.name) {
                arrays.push((column.clone(), vec![examples.n], key.values));
            }
        }
        for target in task.probe_targets(examples) {
            arrays.push((target.name, vec![examples.n], target.values));
        }
        for (name, shape, values) in arrays {
            let path = dir.join(format!("{name}.npy"));
            write(&path, npy::write(&path, &shape, &values))?;
        }
    }
    write(out, std::fs::rename(&tmp, out))?;
    Ok(manifest)
}

/// The first `n` sequences of a generated training stream, drawn `batch` at a time as training draws them.
fn streamed(task: &dyn Task, n: usize, batch: usize) -> Examples {
    let mut all = task.train_batch(0, Some(batch));
    let mut step = 1;
    while all.n < n {
        let next = task.train_batch(step, Some(batch));
        all.tokens.extend(next.tokens);
        all.targets.extend(next.targets);
        all.n += next.n;
        step += 1;
    }
    all.select(&(0..n).collect::<Vec<_>>())
}
