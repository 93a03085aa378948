//! The probe set: a small, immutable set of examples, stratified so every value of every probe target appears,
//! with each item's key positions, targets and source split. Stored as HDF5 (`probes/probe_set.h5`), pinned by
//! the SHA-256 of its content in the run manifest.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use host::examples::{Examples, Labeled, ProbeSource, Split};
use host::rng::SplitMix64;
use ndarray::ArrayView2;
use sha2::{Digest, Sha256};

use host::h5::{read_str_attr, write_str_attr};

/// Version of the probe-set file layout.
pub const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ProbeSetError {
    /// libhdf5 failed to read or write the file.
    #[error("probe set {path}: {message}")]
    Hdf5 { path: PathBuf, message: String },
    /// The file is readable but not a probe set of this format.
    #[error("probe set {path} is invalid: {why}")]
    Invalid { path: PathBuf, why: String },
    /// The file belongs to another task, vocabulary or sequence length.
    #[error("probe set {path} does not match the config: {why}")]
    Mismatch { path: PathBuf, why: String },
    /// The content hash differs from the one pinned in the run manifest.
    #[error(
        "probe set {path} has SHA-256 {actual} but the run manifest pins {expected}; it was changed after the run started"
    )]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

/// A fixed probe set.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSet {
    pub task: String,
    pub d_vocab: usize,
    pub seed: u64,
    /// Tokens and the correct answer at each answer position.
    pub examples: Examples,
    pub answer_positions: Vec<usize>,
    /// The split each item was drawn from.
    pub splits: Vec<Split>,
    pub key_positions: Vec<Labeled>,
    pub targets: Vec<Labeled>,
    /// Declared control types of the targets that have one (by target name; see
    /// [`ProbeSource::control_types`]); empty for built-in tasks.
    pub control_types: Vec<Labeled>,
}

impl ProbeSet {
    /// Draws `size` examples from the task's probe pool (or the whole pool if it is smaller): first, for each
    /// target in turn, one example for every class value not yet present (in a seeded random order), then
    /// random examples up to `size`. Items are kept in pool order.
    pub fn generate<S: ProbeSource + ?Sized>(task: &S, size: usize, seed: u64) -> Self {
        let pool = task.probe_pool(seed, size);
        let mut all = Examples {
            seq_len: task.seq_len(),
            n_answers: task.answer_positions().len(),
            ..Default::default()
        };
        let (mut splits, mut keys, mut targets, mut controls) = (
            vec![],
            Vec::<Labeled>::new(),
            Vec::<Labeled>::new(),
            Vec::<Labeled>::new(),
        );
        // Key positions and targets per block: a task may derive them from an example's index in its block.
        for (split, block) in &pool {
            all.tokens.extend_from_slice(&block.tokens);
            all.targets.extend_from_slice(&block.targets);
            all.n += block.n;
            splits.extend(std::iter::repeat_n(*split, block.n));
            for (list, new) in [
                (&mut keys, task.key_positions(block)),
                (&mut targets, task.probe_targets(block)),
                (&mut controls, task.control_types(block)),
            ] {
                if list.is_empty() {
                    *list = new;
                } else {
                    for (l, n) in list.iter_mut().zip(new) {
                        l.values.extend(n.values);
                    }
                }
            }
        }
        let mut order: Vec<usize> = (0..all.n).collect();
        SplitMix64::derived(seed, "probe-set", 0).shuffle(&mut order);
        let size = size.min(all.n);
        let mut chosen = BTreeSet::new();
        for target in &targets {
            let mut covered = vec![false; target.n_classes];
            for &i in &chosen {
                covered[target.values[i] as usize] = true;
            }
            for &i in &order {
                if chosen.len() >= size {
                    break;
                }
                let class = target.values[i] as usize;
                if !covered[class] {
                    covered[class] = true;
                    chosen.insert(i);
                }
            }
        }
        for &i in &order {
            if chosen.len() >= size {
                break;
            }
            chosen.insert(i);
        }
        let chosen: Vec<usize> = chosen.into_iter().collect();
        let pick = |l: &Labeled| Labeled {
            name: l.name.clone(),
            n_classes: l.n_classes,
            values: chosen.iter().map(|&i| l.values[i]).collect(),
        };
        ProbeSet {
            task: task.name().to_owned(),
            d_vocab: task.d_vocab(),
            seed,
            // The columns a data-defined task carries are in the keys, targets and control types now.
            examples: Examples {
                columns: Default::default(),
                ..all.select(&chosen)
            },
            answer_positions: task.answer_positions().to_vec(),
            splits: chosen.iter().map(|&i| splits[i]).collect(),
            key_positions: keys.iter().map(pick).collect(),
            targets: targets.iter().map(pick).collect(),
            control_types: controls.iter().map(pick).collect(),
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.examples.n
    }

    pub fn is_empty(&self) -> bool {
        self.examples.n == 0
    }

    /// SHA-256 of the content (task, vocabulary, tokens, answers, splits, key positions, targets), independent
    /// of how HDF5 lays the file out.
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |name: &str, values: &[u32]| {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((values.len() as u64).to_le_bytes());
            for v in values {
                h.update(v.to_le_bytes());
            }
        };
        field(
            &format!("task:{}", self.task),
            &[self.d_vocab as u32, self.examples.seq_len as u32],
        );
        field("tokens", &self.examples.tokens);
        field("answer_targets", &self.examples.targets);
        field(
            "answer_positions",
            &self
                .answer_positions
                .iter()
                .map(|&p| p as u32)
                .collect::<Vec<_>>(),
        );
        field(
            "split",
            &self
                .splits
                .iter()
                .map(|&s| split_code(s))
                .collect::<Vec<_>>(),
        );
        // Control types count only where a task declares them, so earlier probe sets keep their hash.
        for (kind, list) in [
            ("key", &self.key_positions),
            ("target", &self.targets),
            ("control", &self.control_types),
        ] {
            for l in list {
                field(&format!("{kind}:{}:{}", l.name, l.n_classes), &l.values);
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Checks that this probe set was made for `task`.
    pub fn check_matches<S: ProbeSource + ?Sized>(
        &self,
        task: &S,
        path: &Path,
    ) -> Result<(), ProbeSetError> {
        let mismatch = |why: String| {
            Err(ProbeSetError::Mismatch {
                path: path.to_owned(),
                why,
            })
        };
        if self.task != task.name() {
            return mismatch(format!(
                "it is for task `{}`, the config trains `{}`",
                self.task,
                task.name()
            ));
        }
        if self.d_vocab != task.d_vocab() || self.examples.seq_len != task.seq_len() {
            return mismatch(format!(
                "vocabulary {} and sequence length {}, the config's task has {} and {}",
                self.d_vocab,
                self.examples.seq_len,
                task.d_vocab(),
                task.seq_len()
            ));
        }
        if self.answer_positions != task.answer_positions() {
            return mismatch("its answer positions differ from the task's".into());
        }
        if let Some(bad) = self
            .examples
            .tokens
            .iter()
            .find(|&&t| t as usize >= task.d_vocab())
        {
            return mismatch(format!("token {bad} is outside the vocabulary"));
        }
        Ok(())
    }

    /// Writes the probe set as HDF5, atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), ProbeSetError> {
        let tmp = path.with_extension("h5.tmp");
        self.write_hdf5(&tmp).map_err(|e| hdf5_err(path, e))?;
        std::fs::rename(&tmp, path).map_err(|e| ProbeSetError::Hdf5 {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    fn write_hdf5(&self, path: &Path) -> hdf5::Result<()> {
        let file = hdf5::File::create(path)?;
        let n = self.len();
        let e = &self.examples;
        write_u32(&file, "tokens", &e.tokens, &[n, e.seq_len])?;
        write_u32(&file, "answer_targets", &e.targets, &[n, e.n_answers])?;
        let answers: Vec<u32> = self.answer_positions.iter().map(|&p| p as u32).collect();
        write_u32(&file, "answer_positions", &answers, &[answers.len()])?;
        let splits: Vec<u32> = self.splits.iter().map(|&s| split_code(s)).collect();
        write_u32(&file, "split", &splits, &[n])?;
        for (group, list) in [
            ("key_positions", &self.key_positions),
            ("targets", &self.targets),
            ("control_types", &self.control_types),
        ] {
            if group == "control_types" && list.is_empty() {
                continue;
            }
            let g = file.create_group(group)?;
            let names: Vec<&str> = list.iter().map(|l| l.name.as_str()).collect();
            write_str_attr(&g, "order", &names.join(","))?;
            for l in list {
                write_u32(&g, &l.name, &l.values, &[n])?;
                g.dataset(&l.name)?
                    .new_attr::<u64>()
                    .create("n_classes")?
                    .write_scalar(&(l.n_classes as u64))?;
            }
        }
        let attr_u64 = |name: &str, v: u64| file.new_attr::<u64>().create(name)?.write_scalar(&v);
        attr_u64("format", u64::from(FORMAT))?;
        attr_u64("d_vocab", self.d_vocab as u64)?;
        attr_u64("seq_len", e.seq_len as u64)?;
        attr_u64("seed", self.seed)?;
        write_str_attr(&file, "task", &self.task)?;
        write_str_attr(&file, "split_names", "0=train,1=test,2=ood")?;
        write_str_attr(&file, "sha256", &self.sha256())?;
        Ok(())
    }

    /// Reads a probe set written by [`ProbeSet::save`].
    pub fn load(path: &Path) -> Result<Self, ProbeSetError> {
        if !path.exists() {
            return Err(ProbeSetError::Invalid {
                path: path.to_owned(),
                why: "no such file".into(),
            });
        }
        let invalid = |why: String| ProbeSetError::Invalid {
            path: path.to_owned(),
            why,
        };
        let file = hdf5::File::open(path).map_err(|e| hdf5_err(path, e))?;
        let read_u64 = |name: &str| -> Result<u64, ProbeSetError> {
            file.attr(name)
                .and_then(|a| a.read_scalar::<u64>())
                .map_err(|e| invalid(format!("attribute {name}: {e}")))
        };
        if read_u64("format")? != u64::from(FORMAT) {
            return Err(invalid(format!(
                "format {} (this build reads {FORMAT})",
                read_u64("format")?
            )));
        }
        let task =
            read_str_attr(&file, "task").map_err(|e| invalid(format!("attribute task: {e}")))?;
        let read = |name: &str| -> Result<(Vec<u32>, Vec<usize>), ProbeSetError> {
            let ds = file
                .dataset(name)
                .map_err(|e| invalid(format!("dataset {name}: {e}")))?;
            let values = ds
                .read_raw::<u32>()
                .map_err(|e| invalid(format!("dataset {name}: {e}")))?;
            Ok((values, ds.shape()))
        };
        let (tokens, shape) = read("tokens")?;
        let (targets, target_shape) = read("answer_targets")?;
        let (answers, _) = read("answer_positions")?;
        let (split_codes, _) = read("split")?;
        if shape.len() != 2
            || target_shape.len() != 2
            || target_shape[0] != shape[0]
            || split_codes.len() != shape[0]
        {
            return Err(invalid("dataset shapes are inconsistent".into()));
        }
        let n = shape[0];
        let splits = split_codes
            .iter()
            .map(|&c| {
                Split::ALL
                    .get(c as usize)
                    .copied()
                    .ok_or_else(|| invalid(format!("unknown split code {c}")))
            })
            .collect::<Result<_, _>>()?;
        let mut lists = vec![];
        for group in ["key_positions", "targets", "control_types"] {
            if group == "control_types" && !file.link_exists(group) {
                lists.push(vec![]);
                continue;
            }
            let g = file
                .group(group)
                .map_err(|e| invalid(format!("group {group}: {e}")))?;
            let mut list = vec![];
            let order =
                read_str_attr(&g, "order").map_err(|e| invalid(format!("{group} order: {e}")))?;
            for name in order
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
            {
                let ds = g
                    .dataset(&name)
                    .map_err(|e| invalid(format!("{group}/{name}: {e}")))?;
                let values = ds
                    .read_raw::<u32>()
                    .map_err(|e| invalid(format!("{group}/{name}: {e}")))?;
                let n_classes = ds
                    .attr("n_classes")
                    .and_then(|a| a.read_scalar::<u64>())
                    .map_err(|e| invalid(e.to_string()))?;
                if values.len() != n {
                    return Err(invalid(format!(
                        "{group}/{name} has {} values for {n} examples",
                        values.len()
                    )));
                }
                list.push(Labeled {
                    name,
                    n_classes: n_classes as usize,
                    values,
                });
            }
            lists.push(list);
        }
        let control_types = lists.pop().unwrap_or_default();
        let targets_list = lists.pop().unwrap_or_default();
        let key_positions = lists.pop().unwrap_or_default();
        let set = ProbeSet {
            task,
            d_vocab: read_u64("d_vocab")? as usize,
            seed: read_u64("seed")?,
            examples: Examples {
                n,
                seq_len: shape[1],
                tokens,
                n_answers: target_shape[1],
                targets,
                columns: Default::default(),
            },
            answer_positions: answers.iter().map(|&p| p as usize).collect(),
            splits,
            key_positions,
            targets: targets_list,
            control_types,
        };
        Ok(set)
    }

    /// Loads a probe set and checks its content hash against `expected`.
    pub fn load_pinned(path: &Path, expected: &str) -> Result<Self, ProbeSetError> {
        let set = Self::load(path)?;
        let actual = set.sha256();
        if actual != expected {
            return Err(ProbeSetError::HashMismatch {
                path: path.to_owned(),
                expected: expected.to_owned(),
                actual,
            });
        }
        Ok(set)
    }
}

fn split_code(split: Split) -> u32 {
    match split {
        Split::Train => 0,
        Split::Test => 1,
        Split::Ood => 2,
    }
}

fn hdf5_err(path: &Path, e: hdf5::Error) -> ProbeSetError {
    ProbeSetError::Hdf5 {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn write_u32(group: &hdf5::Group, name: &str, values: &[u32], shape: &[usize]) -> hdf5::Result<()> {
    let view = ArrayView2::from_shape((shape[0], shape.get(1).copied().unwrap_or(1)), values)
        .map_err(|e| hdf5::Error::from(e.to_string()))?;
    let builder = group.new_dataset_builder().obj_track_times(false);
    if shape.len() == 1 {
        builder.with_data(values).create(name)?;
    } else {
        builder.with_data(&view).create(name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use trainer::tasks::{Induction, ModularAddition, Task};

    #[test]
    fn every_target_value_appears() {
        let task = ModularAddition::new(23, 0.3, 0);
        let set = ProbeSet::generate(&task as &dyn Task, 100, 7);
        assert_eq!(set.len(), 100);
        for target in &set.targets {
            let seen: BTreeSet<u32> = target.values.iter().copied().collect();
            assert_eq!(
                seen.len(),
                23,
                "target {} covers all 23 values",
                target.name
            );
        }
        assert!(set.splits.contains(&Split::Train) && set.splits.contains(&Split::Test));
    }

    #[test]
    fn generation_is_deterministic_and_seeded() {
        let task = Induction::new(16, 6, 3, 32, 1);
        let task = &task as &dyn Task;
        let a = ProbeSet::generate(task, 50, 3);
        assert_eq!(a, ProbeSet::generate(task, 50, 3));
        assert_eq!(a.sha256(), ProbeSet::generate(task, 50, 3).sha256());
        assert_ne!(a.sha256(), ProbeSet::generate(task, 50, 4).sha256());
    }

    #[test]
    fn hdf5_round_trip_keeps_content_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe_set.h5");
        let induction = ProbeSet::generate(&Induction::new(16, 6, 3, 32, 1) as &dyn Task, 40, 2);
        induction.save(&path).unwrap();
        assert_eq!(ProbeSet::load(&path).unwrap(), induction);
        let task = ModularAddition::new(11, 0.5, 0);
        let set = ProbeSet::generate(&task as &dyn Task, 60, 0);
        set.save(&path).unwrap();
        let back = ProbeSet::load_pinned(&path, &set.sha256()).unwrap();
        assert_eq!(back, set);
        assert!(matches!(
            ProbeSet::load_pinned(&path, "00"),
            Err(ProbeSetError::HashMismatch { .. })
        ));
        let other = ModularAddition::new(13, 0.5, 0);
        assert!(matches!(
            back.check_matches(&other as &dyn Task, &path),
            Err(ProbeSetError::Mismatch { .. })
        ));
    }
}
