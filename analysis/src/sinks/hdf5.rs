//! `analysis/activations.h5`: one group per checkpoint (`/step_000100`), datasets named by hook point.
//!
//! A kill in the middle of an HDF5 write can leave that file unreadable, so each checkpoint's arrays go to
//! their own file, `analysis/activations/step_NNNNNN.h5`, written under a temporary name and renamed into
//! place. `activations.h5` is a small index of external links to those files (h5py follows them like
//! groups), rewritten the same way after every checkpoint. A kill therefore loses at most the checkpoint
//! being written, never a completed one.

mod datasets;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use host::h5::{read_str_attr, write_str_attr};
use host::layout::RunLayout;
use trainer::model::HostArray;

use self::datasets::ArrayWriter;
use crate::error::AnalysisError;
use crate::message::StoredArray;
use crate::row::SCHEMA_VERSION;

/// Examples per HDF5 chunk along the first axis.
const CHUNK_EXAMPLES: usize = 256;

/// Arrays from this size up are chunked and compressed; smaller ones are stored contiguous and raw.
const COMPRESS_FROM_BYTES: usize = 32 * 1024;

/// The activation store of one run.
pub struct ActivationStore {
    index: PathBuf,
    dir: PathBuf,
    run_id: String,
    probe_set_sha256: String,
    /// Names of the key positions, in the order of the `key_position` axis.
    key_positions: String,
    steps: BTreeSet<u64>,
}

impl ActivationStore {
    /// Opens the store of `run`, dropping the files of steps at or after `from_step` (a resumed run writes
    /// them again).
    pub fn open(
        run: &RunLayout,
        run_id: &str,
        probe_set_sha256: &str,
        key_positions: &[&str],
        from_step: u64,
    ) -> Result<Self, AnalysisError> {
        let dir = run.activations_dir();
        std::fs::create_dir_all(&dir).map_err(|e| AnalysisError::io(&dir, e))?;
        let mut steps = BTreeSet::new();
        for entry in std::fs::read_dir(&dir)
            .map_err(|e| AnalysisError::io(&dir, e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let step = name
                .strip_prefix("step_")
                .and_then(|s| s.strip_suffix(".h5"))
                .and_then(|s| s.parse::<u64>().ok());
            match step {
                Some(step) if step < from_step => {
                    steps.insert(step);
                }
                _ => std::fs::remove_file(entry.path())
                    .map_err(|e| AnalysisError::io(&entry.path(), e))?,
            }
        }
        let store = Self {
            index: run.activations_index(),
            dir,
            run_id: run_id.to_owned(),
            probe_set_sha256: probe_set_sha256.to_owned(),
            key_positions: key_positions.join(","),
            steps,
        };
        store.write_index()?;
        Ok(store)
    }

    /// Writes one checkpoint's arrays and links them into the index; returns the file's size in bytes.
    pub fn write(&mut self, step: u64, arrays: &[StoredArray]) -> Result<u64, AnalysisError> {
        let name = group_name(step);
        let path = self.dir.join(format!("{name}.h5"));
        let tmp = self.dir.join(format!(".{name}.h5.tmp"));
        self.write_step_file(&tmp, step, arrays)
            .map_err(|e| AnalysisError::hdf5(&path, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| AnalysisError::io(&path, e))?;
        host::failpoint::hit_at("step-file-written", step);
        self.steps.insert(step);
        self.write_index()?;
        Ok(std::fs::metadata(&path)
            .map_err(|e| AnalysisError::io(&path, e))?
            .len())
    }

    fn write_step_file(&self, path: &Path, step: u64, arrays: &[StoredArray]) -> hdf5::Result<()> {
        let file = hdf5::File::create(path)?;
        self.write_file_attrs(&file)?;
        file.new_attr::<u64>().create("step")?.write_scalar(&step)?;
        let writer = ArrayWriter::new()?;
        for stored in arrays {
            let shape = &stored.array.shape;
            // LZF: a fraction of deflate's CPU cost (the sidecar shares two cores with training), and h5py
            // decompresses it out of the box. Small arrays are stored contiguous and raw: a chunked dataset's
            // chunk index costs ~2.4 KB, more than LZF saves on a 16 KB weight matrix (~6 %), and the filter
            // pipeline's CPU buys nothing there.
            let chunk = (stored.array.data.len() * size_of::<f32>() >= COMPRESS_FROM_BYTES
                && hdf5::filters::lzf_available())
            .then(|| {
                let mut chunk = shape.clone();
                chunk[0] = chunk[0].clamp(1, CHUNK_EXAMPLES);
                chunk
            });
            writer.write(
                &file,
                &stored.name.to_string(),
                shape,
                &stored.array.data,
                &stored.axes,
                chunk.as_deref(),
            )?;
        }
        file.flush()?;
        Ok(())
    }

    /// The arrays of a stored step under the groups `groups` (e.g. `params`), by their path in the file
    /// (`params/embed.W_E`).
    pub fn read_step(
        &self,
        step: u64,
        groups: &[&str],
    ) -> Result<BTreeMap<String, HostArray>, AnalysisError> {
        read_stored_step(&self.dir, step, groups)
    }

    /// Rewrites the index: file attributes and one external link per stored step.
    fn write_index(&self) -> Result<(), AnalysisError> {
        let tmp = self.index.with_extension("h5.tmp");
        let write = || -> hdf5::Result<()> {
            let file = hdf5::File::create(&tmp)?;
            self.write_file_attrs(&file)?;
            for &step in &self.steps {
                let name = group_name(step);
                file.link_external(&format!("activations/{name}.h5"), "/", &name)?;
            }
            file.flush()
        };
        write().map_err(|e| AnalysisError::hdf5(&self.index, e))?;
        std::fs::rename(&tmp, &self.index).map_err(|e| AnalysisError::io(&self.index, e))
    }

    fn write_file_attrs(&self, file: &hdf5::File) -> hdf5::Result<()> {
        write_str_attr(file, "run_id", &self.run_id)?;
        write_str_attr(file, "probe_set_sha256", &self.probe_set_sha256)?;
        write_str_attr(file, "key_positions", &self.key_positions)?;
        file.new_attr::<u64>()
            .create("schema_version")?
            .write_scalar(&u64::from(SCHEMA_VERSION))
    }
}

/// The arrays of one stored step under `groups`, read from `activations_dir` (`analysis/activations`) without
/// opening the store for writing.
pub fn read_stored_step(
    activations_dir: &Path,
    step: u64,
    groups: &[&str],
) -> Result<BTreeMap<String, HostArray>, AnalysisError> {
    let path = stored_step_file(activations_dir, step);
    let read = || -> hdf5::Result<BTreeMap<String, HostArray>> {
        let file = hdf5::File::open(&path)?;
        let mut out = BTreeMap::new();
        let mut pending: Vec<hdf5::Group> = groups
            .iter()
            .filter(|g| file.link_exists(g))
            .filter_map(|g| file.group(g).ok())
            .collect();
        while let Some(group) = pending.pop() {
            for ds in group.datasets()? {
                let name = ds.name().trim_start_matches('/').to_owned();
                let data = ds.read_raw::<f32>()?;
                out.insert(
                    name,
                    HostArray {
                        shape: ds.shape(),
                        data,
                    },
                );
            }
            pending.extend(group.groups()?);
        }
        Ok(out)
    };
    read().map_err(|e| AnalysisError::hdf5(&path, e))
}

/// One array of a stored step by its full name (`blocks.1.attn.hook_pattern` when `analysis.store` holds
/// `all_hooks`), or `None` when the step file does not have it.
pub fn read_stored_array(
    activations_dir: &Path,
    step: u64,
    name: &str,
) -> Result<Option<HostArray>, AnalysisError> {
    let path = stored_step_file(activations_dir, step);
    let read = || -> hdf5::Result<Option<HostArray>> {
        let file = hdf5::File::open(&path)?;
        if !file.link_exists(name) {
            return Ok(None);
        }
        let ds = file.dataset(name)?;
        Ok(Some(HostArray {
            shape: ds.shape(),
            data: ds.read_raw::<f32>()?,
        }))
    };
    read().map_err(|e| AnalysisError::hdf5(&path, e))
}

/// The key-position names of a stored step's file (its `key_positions` attribute), in the order of the
/// `key_position` axis of its `resid_at_keys/…` arrays.
pub fn stored_key_positions(
    activations_dir: &Path,
    step: u64,
) -> Result<Vec<String>, AnalysisError> {
    let path = stored_step_file(activations_dir, step);
    let names = hdf5::File::open(&path).and_then(|file| read_str_attr(&file, "key_positions"));
    names
        .map(|names| names.split(',').map(str::to_owned).collect())
        .map_err(|e| AnalysisError::hdf5(&path, e))
}

/// Whether the stored step's file in `activations_dir` exists, opens as HDF5 and is the file of `step`.
pub fn stored_step_readable(activations_dir: &Path, step: u64) -> bool {
    let path = stored_step_file(activations_dir, step);
    path.exists()
        && hdf5::File::open(&path)
            .and_then(|file| file.attr("step")?.read_scalar::<u64>())
            .is_ok_and(|stored| stored == step)
}

/// A stored step's file in `activations_dir` (`analysis/activations/step_000100.h5`).
fn stored_step_file(activations_dir: &Path, step: u64) -> PathBuf {
    activations_dir.join(format!("{}.h5", group_name(step)))
}

/// `step_000100`, the same name as the step's checkpoint directory.
pub fn group_name(step: u64) -> String {
    host::layout::step_name(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(name: &str, value: f32) -> StoredArray {
        StoredArray {
            name: name.parse().unwrap(),
            axes: "example,d".into(),
            array: HostArray {
                shape: vec![3, 2],
                data: vec![value; 6],
            },
        }
    }

    #[test]
    fn nested_names_make_groups_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut store =
            ActivationStore::open(&RunLayout::new(dir.path()), "run", "abc", &["a"], 0).unwrap();
        store
            .write(
                5,
                &[
                    array("params/embed.W_E", 1.0),
                    array("probe_weights/blocks.0.hook_resid_pre/sum", 2.0),
                    array("probe_weights/blocks.0.hook_resid_pre/a", 3.0),
                    array("logits_at_answers", 4.0),
                ],
            )
            .unwrap();
        let read = store.read_step(5, &["params", "probe_weights"]).unwrap();
        let names: Vec<&str> = read.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "params/embed.W_E",
                "probe_weights/blocks.0.hook_resid_pre/a",
                "probe_weights/blocks.0.hook_resid_pre/sum"
            ]
        );
        assert_eq!(
            read["probe_weights/blocks.0.hook_resid_pre/sum"].data,
            vec![2.0; 6]
        );
        assert_eq!(read["params/embed.W_E"].shape, vec![3, 2]);
    }

    #[test]
    fn large_arrays_are_compressed_and_small_ones_stored_raw_both_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut store =
            ActivationStore::open(&RunLayout::new(dir.path()), "run", "abc", &["a"], 0).unwrap();
        // A compressible large array (a ramp repeated) and a small one, each one float short of / at the size.
        let ramp = |n: usize| (0..n).map(|i| (i % 17) as f32).collect::<Vec<f32>>();
        let n_large = COMPRESS_FROM_BYTES / size_of::<f32>();
        let sized = |name: &str, n: usize| StoredArray {
            name: name.parse().unwrap(),
            axes: "example".into(),
            array: HostArray {
                shape: vec![n],
                data: ramp(n),
            },
        };
        store
            .write(
                0,
                &[
                    sized("params/large", n_large),
                    sized("params/small", n_large - 1),
                ],
            )
            .unwrap();
        let path = RunLayout::new(dir.path())
            .activations_dir()
            .join("step_000000.h5");
        let file = hdf5::File::open(path).unwrap();
        let (large, small) = (
            file.dataset("params/large").unwrap(),
            file.dataset("params/small").unwrap(),
        );
        assert!(large.is_chunked() && !large.filters().is_empty());
        assert!(!small.is_chunked() && small.filters().is_empty());
        assert!(large.storage_size() < (COMPRESS_FROM_BYTES / 2) as u64);
        let read = store.read_step(0, &["params"]).unwrap();
        assert_eq!(read["params/large"].data, ramp(n_large));
        assert_eq!(read["params/small"].data, ramp(n_large - 1));
    }

    #[test]
    fn steps_are_reachable_through_the_index_and_a_resume_drops_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut store =
            ActivationStore::open(&RunLayout::new(dir.path()), "run", "abc", &["a"], 0).unwrap();
        store
            .write(0, &[array("blocks.0.hook_resid_pre", 1.0)])
            .unwrap();
        store
            .write(10, &[array("blocks.0.hook_resid_pre", 2.0)])
            .unwrap();
        let index = hdf5::File::open(RunLayout::new(dir.path()).activations_index()).unwrap();
        let values = index
            .dataset("step_000010/blocks.0.hook_resid_pre")
            .unwrap()
            .read_raw::<f32>()
            .unwrap();
        assert_eq!(values, vec![2.0; 6]);
        drop(index);
        let store =
            ActivationStore::open(&RunLayout::new(dir.path()), "run", "abc", &["a"], 10).unwrap();
        assert_eq!(store.steps, BTreeSet::from([0]));
        let nested = store.read_step(0, &["blocks.0.hook_resid_pre"]);
        assert!(nested.unwrap().is_empty(), "only groups are read");
        let index = hdf5::File::open(RunLayout::new(dir.path()).activations_index()).unwrap();
        assert_eq!(
            index.member_names().unwrap(),
            vec!["step_000000".to_owned()]
        );
    }
}
