//! `analysis/activations.h5`: one group per checkpoint (`/step_000100`), datasets named by hook point.
//!
//! A kill in the middle of an HDF5 write can leave that file unreadable, so each checkpoint's arrays go to
//! their own file, `analysis/activations/step_NNNNNN.h5`, written under a temporary name and renamed into
//! place. `activations.h5` is a small index of external links to those files (h5py follows them like
//! groups), rewritten the same way after every checkpoint. A kill therefore loses at most the checkpoint
//! being written, never a completed one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ndarray::{ArrayViewD, IxDyn};

use probes::h5::write_str_attr;

use crate::error::AnalysisError;
use crate::message::StoredArray;
use crate::row::SCHEMA_VERSION;

/// Examples per HDF5 chunk along the first axis.
const CHUNK_EXAMPLES: usize = 256;

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
    /// Opens the store under `analysis_dir`, dropping the files of steps at or after `from_step` (a resumed
    /// run writes them again).
    pub fn open(
        analysis_dir: &Path,
        run_id: &str,
        probe_set_sha256: &str,
        key_positions: &[&str],
        from_step: u64,
    ) -> Result<Self, AnalysisError> {
        let dir = analysis_dir.join("activations");
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let mut steps = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let step = name
                .strip_prefix("step_")
                .and_then(|s| s.strip_suffix(".h5"))
                .and_then(|s| s.parse::<u64>().ok());
            match step {
                Some(step) if step < from_step => {
                    steps.insert(step);
                }
                _ => std::fs::remove_file(entry.path()).map_err(|e| io(&entry.path(), e))?,
            }
        }
        let store = Self {
            index: analysis_dir.join("activations.h5"),
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
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        self.steps.insert(step);
        self.write_index()?;
        Ok(std::fs::metadata(&path).map_err(|e| io(&path, e))?.len())
    }

    fn write_step_file(&self, path: &Path, step: u64, arrays: &[StoredArray]) -> hdf5::Result<()> {
        let file = hdf5::File::create(path)?;
        self.write_file_attrs(&file)?;
        file.new_attr::<u64>().create("step")?.write_scalar(&step)?;
        for stored in arrays {
            let shape = &stored.array.shape;
            let view = ArrayViewD::from_shape(IxDyn(shape), &stored.array.data)
                .map_err(|e| hdf5::Error::from(e.to_string()))?;
            let mut chunk = shape.clone();
            chunk[0] = chunk[0].clamp(1, CHUNK_EXAMPLES);
            let mut builder = file
                .new_dataset_builder()
                .obj_track_times(false)
                .chunk(chunk);
            // LZF: a fraction of deflate's CPU cost (the sidecar shares two cores with training), and h5py
            // decompresses it out of the box.
            if hdf5::filters::lzf_available() {
                builder = builder.shuffle().lzf();
            }
            let ds = builder.with_data(&view).create(stored.name.as_str())?;
            write_str_attr(&ds, "axes", &stored.axes)?;
            let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            ds.new_attr::<u64>()
                .shape(dims.len())
                .create("shape")?
                .write_raw(&dims)?;
        }
        file.flush()?;
        Ok(())
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
        std::fs::rename(&tmp, &self.index).map_err(|e| io(&self.index, e))
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

/// `step_000100`, the same name as the step's checkpoint directory.
pub fn group_name(step: u64) -> String {
    trainer::checkpoint::step_dir_name(step)
}

fn io(path: &Path, e: std::io::Error) -> AnalysisError {
    AnalysisError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trainer::model::HostArray;

    fn array(name: &str, value: f32) -> StoredArray {
        StoredArray {
            name: name.into(),
            axes: "example,d".into(),
            array: HostArray {
                shape: vec![3, 2],
                data: vec![value; 6],
            },
        }
    }

    #[test]
    fn steps_are_reachable_through_the_index_and_a_resume_drops_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ActivationStore::open(dir.path(), "run", "abc", &["a"], 0).unwrap();
        store
            .write(0, &[array("blocks.0.hook_resid_pre", 1.0)])
            .unwrap();
        store
            .write(10, &[array("blocks.0.hook_resid_pre", 2.0)])
            .unwrap();
        let index = hdf5::File::open(dir.path().join("activations.h5")).unwrap();
        let values = index
            .dataset("step_000010/blocks.0.hook_resid_pre")
            .unwrap()
            .read_raw::<f32>()
            .unwrap();
        assert_eq!(values, vec![2.0; 6]);
        drop(index);
        let store = ActivationStore::open(dir.path(), "run", "abc", &["a"], 10).unwrap();
        assert_eq!(store.steps, BTreeSet::from([0]));
        let index = hdf5::File::open(dir.path().join("activations.h5")).unwrap();
        assert_eq!(
            index.member_names().unwrap(),
            vec!["step_000000".to_owned()]
        );
    }
}
