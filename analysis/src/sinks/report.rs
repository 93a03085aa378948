//! An intervention report as HDF5, beside its JSON: the same tree, objects as groups, numbers as scalar
//! datasets, arrays of numbers as 1-D datasets, rectangular arrays of number arrays (e.g. LLC traces) as 2-D
//! datasets, other arrays as groups named `0`, `1`, …, strings as attributes. Written under a temporary name
//! and renamed, like every other file formation writes.

use std::path::Path;

use ndarray::Array2;
use serde_json::Value;

use host::h5::write_str_attr;

use crate::error::AnalysisError;

/// Writes `report` to `path` (see the module doc).
pub fn write_report_h5(path: &Path, report: &Value) -> Result<(), AnalysisError> {
    let tmp = path.with_extension("h5.tmp");
    let write = || -> hdf5::Result<()> {
        let file = hdf5::File::create(&tmp)?;
        write_node(&file, "", report)?;
        file.flush()
    };
    write().map_err(|e| AnalysisError::hdf5(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| AnalysisError::io(path, e))
}

/// Writes `value` as member `name` of `group` (the group itself when `name` is empty and `value` an object).
fn write_node(group: &hdf5::Group, name: &str, value: &Value) -> hdf5::Result<()> {
    let numbers =
        |items: &[Value]| -> Option<Vec<f64>> { items.iter().map(Value::as_f64).collect() };
    match value {
        Value::Object(map) => {
            let target = if name.is_empty() {
                group.clone()
            } else {
                group.create_group(name)?
            };
            for (key, child) in map {
                write_node(&target, key, child)?;
            }
        }
        Value::Number(x) => {
            group
                .new_dataset::<f64>()
                .create(name)?
                .write_scalar(&x.as_f64().unwrap_or(f64::NAN))?;
        }
        Value::Array(items) => {
            if let Some(row) = numbers(items) {
                group.new_dataset_builder().with_data(&row).create(name)?;
            } else if let Some(rows) = items
                .iter()
                .map(|item| item.as_array().and_then(|a| numbers(a)))
                .collect::<Option<Vec<Vec<f64>>>>()
                .filter(|rows| rows.windows(2).all(|w| w[0].len() == w[1].len()))
            {
                let width = rows.first().map_or(0, Vec::len);
                let flat: Vec<f64> = rows.concat();
                let array = Array2::from_shape_vec((rows.len(), width), flat)
                    .map_err(|e| hdf5::Error::from(e.to_string()))?;
                group.new_dataset_builder().with_data(&array).create(name)?;
            } else {
                let target = group.create_group(name)?;
                for (i, item) in items.iter().enumerate() {
                    write_node(&target, &i.to_string(), item)?;
                }
            }
        }
        Value::String(text) => write_str_attr(group, name, text)?,
        Value::Bool(flag) => write_str_attr(group, name, if *flag { "true" } else { "false" })?,
        Value::Null => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_tree_reads_back_from_hdf5() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.h5");
        let report = serde_json::json!({
            "loss": 1.5,
            "per_position": [1.0, 0.0, 0.25],
            "traces": [[1.0, 2.0], [3.0, 4.0]],
            "L0": { "top": [{ "neuron": 3, "dla": 0.5 }] },
            "kind": "test",
        });
        write_report_h5(&path, &report).unwrap();
        let file = hdf5::File::open(&path).unwrap();
        assert_eq!(
            file.dataset("loss").unwrap().read_scalar::<f64>().unwrap(),
            1.5
        );
        assert_eq!(
            file.dataset("per_position")
                .unwrap()
                .read_raw::<f64>()
                .unwrap(),
            vec![1.0, 0.0, 0.25]
        );
        let traces = file.dataset("traces").unwrap();
        assert_eq!(traces.shape(), vec![2, 2]);
        assert_eq!(traces.read_raw::<f64>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            file.dataset("L0/top/0/neuron")
                .unwrap()
                .read_scalar::<f64>()
                .unwrap(),
            3.0
        );
        assert_eq!(host::h5::read_str_attr(&file, "kind").unwrap(), "test");
    }
}
