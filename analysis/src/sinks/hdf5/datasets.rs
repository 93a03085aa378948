//! Float32 datasets, each with its `axes` and `shape` attributes, written through HDF5's C API with one set of
//! property lists and types per file. The hdf5 crate's builder builds and closes four property lists, two types
//! and a dataspace per dataset and checks every handle: a third to a half of a checkpoint file's write time
//! when most of its ~100 datasets are small (the probe weights).

use hdf5::Location;
use hdf5_sys::h5::herr_t;
use hdf5_sys::h5a::{H5Aclose, H5Acreate2, H5Awrite};
use hdf5_sys::h5d::{H5Dclose, H5Dcreate2, H5Dwrite};
use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5p::{
    H5P_CLS_DATASET_CREATE, H5P_CLS_LINK_CREATE, H5P_DEFAULT, H5Pclose, H5Pcopy, H5Pcreate,
    H5Pset_chunk, H5Pset_create_intermediate_group, H5Pset_filter, H5Pset_obj_track_times,
    H5Pset_shuffle,
};
use hdf5_sys::h5s::{H5S_ALL, H5S_class_t, H5Sclose, H5Screate, H5Screate_simple};
use hdf5_sys::h5t::{
    H5T_C_S1, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, H5T_NATIVE_UINT64, H5T_STD_U64LE, H5T_VARIABLE,
    H5T_cset_t, H5Tclose, H5Tcopy, H5Tset_cset, H5Tset_size,
};
use hdf5_sys::h5z::H5Z_FLAG_OPTIONAL;
use std::ffi::{CString, c_char};

/// The filter id h5py and the hdf5 crate register LZF under.
const LZF_FILTER_ID: i32 = 32000;

/// One HDF5 handle, closed on drop by the matching `H5?close`.
struct Handle {
    id: hid_t,
    close: unsafe extern "C" fn(hid_t) -> herr_t,
}

impl Handle {
    /// Takes ownership of `id`, or returns the library's error when the call that made it failed (`id < 0`).
    fn new(id: hid_t, close: unsafe extern "C" fn(hid_t) -> herr_t) -> hdf5::Result<Self> {
        if id < 0 {
            return Err(library_error());
        }
        Ok(Self { id, close })
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: `id` is a live handle this value owns, of the kind `close` closes.
        hdf5::sync::sync(|| unsafe { (self.close)(self.id) });
    }
}

/// The error of the HDF5 call that just failed, from the library's error stack.
fn library_error() -> hdf5::Error {
    hdf5::Error::query().unwrap_or_else(|e| e)
}

/// Turns a negative status into the library's error.
fn check(status: herr_t) -> hdf5::Result<()> {
    if status < 0 {
        return Err(library_error());
    }
    Ok(())
}

fn c_string(text: &str) -> hdf5::Result<CString> {
    CString::new(text).map_err(|_| hdf5::Error::from(format!("{text:?} contains a NUL byte")))
}

/// Writes float32 datasets into HDF5 files; holds the property lists and types every dataset shares.
pub struct ArrayWriter {
    /// Link creation: missing parent groups are created on the way.
    link: Handle,
    /// Dataset creation for a contiguous, uncompressed dataset: no access or modification times.
    contiguous: Handle,
    /// Variable-length UTF-8 string, the type of the `axes` attribute.
    utf8: Handle,
    scalar: Handle,
}

impl ArrayWriter {
    pub fn new() -> hdf5::Result<Self> {
        hdf5::sync::sync(|| {
            // SAFETY: plain calls into the library under its lock; every id is checked and owned by a Handle.
            unsafe {
                let link = Handle::new(H5Pcreate(*H5P_CLS_LINK_CREATE), H5Pclose)?;
                check(H5Pset_create_intermediate_group(link.id, 1))?;
                let contiguous = Handle::new(H5Pcreate(*H5P_CLS_DATASET_CREATE), H5Pclose)?;
                check(H5Pset_obj_track_times(contiguous.id, 0))?;
                let utf8 = Handle::new(H5Tcopy(*H5T_C_S1), H5Tclose)?;
                check(H5Tset_size(utf8.id, H5T_VARIABLE))?;
                check(H5Tset_cset(utf8.id, H5T_cset_t::H5T_CSET_UTF8))?;
                let scalar = Handle::new(H5Screate(H5S_class_t::H5S_SCALAR), H5Sclose)?;
                Ok(Self {
                    link,
                    contiguous,
                    utf8,
                    scalar,
                })
            }
        })
    }

    /// Writes `data` (row-major, `shape`) as the little-endian float32 dataset `path` (`a/b/name`, parent groups
    /// created where missing) under `parent`, with the attributes `axes` (a UTF-8 string) and `shape` (uint64,
    /// one per axis). With `chunk`, the dataset is stored in chunks of that shape through the shuffle and LZF
    /// filters (LZF optional: a chunk it cannot shrink is stored as is); without, contiguous and raw.
    pub fn write(
        &self,
        parent: &Location,
        path: &str,
        shape: &[usize],
        data: &[f32],
        axes: &str,
        chunk: Option<&[usize]>,
    ) -> hdf5::Result<()> {
        if shape.iter().product::<usize>() != data.len() {
            return Err(hdf5::Error::from(format!(
                "{path}: {} values do not fill the shape {shape:?}",
                data.len()
            )));
        }
        let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let name = c_string(path)?;
        let axes = c_string(axes)?;
        hdf5::sync::sync(|| {
            // SAFETY: calls into the library under its lock; every id is checked and owned by a Handle; `dims`,
            // `data` and the C strings outlive the calls that read them, and `data` holds exactly the
            // dataspace's element count (checked above).
            unsafe {
                let rank = dims.len() as i32;
                let space = Handle::new(
                    H5Screate_simple(rank, dims.as_ptr(), std::ptr::null()),
                    H5Sclose,
                )?;
                let chunked = match chunk {
                    Some(chunk) => {
                        let plist = Handle::new(H5Pcopy(self.contiguous.id), H5Pclose)?;
                        let chunk: Vec<u64> = chunk.iter().map(|&d| d as u64).collect();
                        check(H5Pset_chunk(plist.id, rank, chunk.as_ptr()))?;
                        check(H5Pset_shuffle(plist.id))?;
                        check(H5Pset_filter(
                            plist.id,
                            LZF_FILTER_ID,
                            H5Z_FLAG_OPTIONAL,
                            0,
                            std::ptr::null(),
                        ))?;
                        Some(plist)
                    }
                    None => None,
                };
                let create = chunked.as_ref().unwrap_or(&self.contiguous);
                let dataset = Handle::new(
                    H5Dcreate2(
                        parent.id(),
                        name.as_ptr(),
                        *H5T_IEEE_F32LE,
                        space.id,
                        self.link.id,
                        create.id,
                        H5P_DEFAULT,
                    ),
                    H5Dclose,
                )?;
                check(H5Dwrite(
                    dataset.id,
                    *H5T_NATIVE_FLOAT,
                    H5S_ALL,
                    H5S_ALL,
                    H5P_DEFAULT,
                    data.as_ptr().cast(),
                ))?;

                let axes_name = c"axes";
                let attr = Handle::new(
                    H5Acreate2(
                        dataset.id,
                        axes_name.as_ptr(),
                        self.utf8.id,
                        self.scalar.id,
                        H5P_DEFAULT,
                        H5P_DEFAULT,
                    ),
                    H5Aclose,
                )?;
                // A variable-length string is written as a pointer to its NUL-terminated bytes.
                let text: *const c_char = axes.as_ptr();
                check(H5Awrite(attr.id, self.utf8.id, (&raw const text).cast()))?;

                let rank_dims = [dims.len() as u64];
                let shape_space = Handle::new(
                    H5Screate_simple(1, rank_dims.as_ptr(), std::ptr::null()),
                    H5Sclose,
                )?;
                let attr = Handle::new(
                    H5Acreate2(
                        dataset.id,
                        c"shape".as_ptr(),
                        *H5T_STD_U64LE,
                        shape_space.id,
                        H5P_DEFAULT,
                        H5P_DEFAULT,
                    ),
                    H5Aclose,
                )?;
                check(H5Awrite(attr.id, *H5T_NATIVE_UINT64, dims.as_ptr().cast()))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_values_attributes_and_filters_that_readers_expect() {
        let dir = tempfile::tempdir().unwrap();
        let file = hdf5::File::create(dir.path().join("a.h5")).unwrap();
        let writer = ArrayWriter::new().unwrap();
        // 2 × 3, row-major: [[0, 1, 2], [3, 4, 5]].
        let values = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        writer
            .write(&file, "g/h/raw", &[2, 3], &values, "example,d_model", None)
            .unwrap();
        writer
            .write(
                &file,
                "g/packed",
                &[2, 3],
                &values,
                "example,d_model",
                Some(&[1, 3]),
            )
            .unwrap();

        let raw = file.dataset("g/h/raw").unwrap();
        assert_eq!(raw.shape(), vec![2, 3]);
        assert_eq!(raw.read_raw::<f32>().unwrap(), values);
        assert!(!raw.is_chunked() && raw.filters().is_empty());
        assert_eq!(
            host::h5::read_str_attr(&raw, "axes").unwrap(),
            "example,d_model"
        );
        assert_eq!(
            raw.attr("shape").unwrap().read_raw::<u64>().unwrap(),
            [2, 3]
        );

        let packed = file.dataset("g/packed").unwrap();
        assert_eq!(packed.read_raw::<f32>().unwrap(), values);
        assert_eq!(packed.chunk(), Some(vec![1, 3]));
        assert_eq!(
            packed.filters(),
            [hdf5::filters::Filter::Shuffle, hdf5::filters::Filter::LZF]
        );
    }

    #[test]
    fn values_that_do_not_fill_the_shape_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = hdf5::File::create(dir.path().join("a.h5")).unwrap();
        let writer = ArrayWriter::new().unwrap();
        let err = writer
            .write(&file, "short", &[2, 3], &[1.0; 5], "a,b", None)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("5 values do not fill the shape [2, 3]")
        );
        assert!(!file.link_exists("short"));
    }
}
