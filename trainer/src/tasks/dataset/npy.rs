//! Integer arrays in NumPy's `.npy` format (what `np.save` writes), read as `u32` while their bytes are hashed,
//! and written for `formation task export`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use npyz::WriterBuilder;
use sha2::{Digest, Sha256};

use super::DatasetError;

/// An integer array: its shape and its elements in C order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntArray {
    pub shape: Vec<usize>,
    pub values: Vec<u32>,
}

/// Hashes every byte read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads an integer `.npy` file (any signed or unsigned width, either byte order, C order) as `u32`; returns
/// the array and the SHA-256 of the file's bytes. A value outside `0..2³²` is refused with its index.
pub fn read(path: &Path) -> Result<(IntArray, String), DatasetError> {
    let file = File::open(path).map_err(|source| DatasetError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = BufReader::with_capacity(
        1 << 20,
        Hashing {
            inner: file,
            hasher: Sha256::new(),
        },
    );
    let invalid = |why: String| DatasetError::File {
        path: path.to_owned(),
        why,
    };
    let npy = npyz::NpyFile::new(&mut reader)
        .map_err(|e| invalid(format!("is not a .npy file ({e})")))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() == npyz::Order::Fortran {
        return Err(invalid(
            "is in Fortran order; save a C-ordered copy (np.ascontiguousarray)".into(),
        ));
    }
    let npyz::DType::Plain(dtype) = npy.dtype() else {
        return Err(invalid(
            "holds records or sub-arrays; save a plain integer array".into(),
        ));
    };
    let values = match (dtype.type_char(), dtype.size_field()) {
        (npyz::TypeChar::Int, 1) => convert::<i8>(npy, &shape),
        (npyz::TypeChar::Int, 2) => convert::<i16>(npy, &shape),
        (npyz::TypeChar::Int, 4) => convert::<i32>(npy, &shape),
        (npyz::TypeChar::Int, 8) => convert::<i64>(npy, &shape),
        (npyz::TypeChar::Uint, 1) => convert::<u8>(npy, &shape),
        (npyz::TypeChar::Uint, 2) => convert::<u16>(npy, &shape),
        (npyz::TypeChar::Uint, 4) => convert::<u32>(npy, &shape),
        (npyz::TypeChar::Uint, 8) => convert::<u64>(npy, &shape),
        (npyz::TypeChar::Bool, 1) => convert::<bool>(npy, &shape),
        _ => Err(format!(
            "has dtype {dtype}, not integers; save it with an integer dtype (e.g. np.int32)"
        )),
    }
    .map_err(invalid)?;
    // The rest of the file (nothing, in a well-formed one) still counts in the hash.
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(|source| DatasetError::Read {
        path: path.to_owned(),
        source,
    })?;
    let hash = reader.into_inner().hasher.finalize();
    Ok((
        IntArray { shape, values },
        hash.iter().map(|b| format!("{b:02x}")).collect(),
    ))
}

/// An element that converts to `i128` for the range check (every integer width, and `bool`).
trait Wide: npyz::Deserialize {
    fn wide(self) -> i128;
}

macro_rules! wide {
    ($($t:ty),*) => {$(impl Wide for $t { fn wide(self) -> i128 { i128::from(self) } })*};
}
wide!(i8, i16, i32, i64, u8, u16, u32, u64, bool);

fn convert<T: Wide>(npy: npyz::NpyFile<impl Read>, shape: &[usize]) -> Result<Vec<u32>, String> {
    let len = npy.len() as usize;
    let mut out = Vec::with_capacity(len);
    let data = npy.data::<T>().map_err(|e| e.to_string())?;
    for (flat, value) in data.enumerate() {
        let value = value
            .map_err(|e| format!("cannot be read at element {}: {e}", index(flat, shape)))?
            .wide();
        let value = u32::try_from(value).map_err(|_| {
            format!(
                "has {value} at {}; tokens, labels and positions are integers in 0..2³²",
                index(flat, shape)
            )
        })?;
        out.push(value);
    }
    if out.len() != len {
        return Err(format!(
            "ends after {} of its {len} elements (truncated?)",
            out.len()
        ));
    }
    Ok(out)
}

/// A flat C-order index as `[i, j, …]`.
fn index(mut flat: usize, shape: &[usize]) -> String {
    let mut parts = vec![0; shape.len()];
    for (part, &dim) in parts.iter_mut().zip(shape).rev() {
        *part = flat % dim.max(1);
        flat /= dim.max(1);
    }
    let parts: Vec<String> = parts.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// Writes `values` of `shape` as a little-endian int32 `.npy` file.
pub fn write(path: &Path, shape: &[usize], values: &[u32]) -> std::io::Result<()> {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut out = BufWriter::new(File::create(path)?);
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(&mut out)
        .begin_nd()?;
    for &v in values {
        let v = i32::try_from(v)
            .map_err(|_| std::io::Error::other(format!("{v} does not fit an int32")))?;
        writer.push(&v)?;
    }
    writer.finish()?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_arrays_read_back_with_their_shape_and_a_stable_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        write(&path, &[2, 3], &[0, 1, 2, 3, 4, 5]).unwrap();
        let (array, hash) = read(&path).unwrap();
        assert_eq!(array.shape, vec![2, 3]);
        assert_eq!(array.values, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(hash.len(), 64);
        assert_eq!(read(&path).unwrap().1, hash);
    }

    #[test]
    fn a_negative_value_is_refused_with_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("neg.npy");
        let shape = [2u64, 2];
        let mut out = File::create(&path).unwrap();
        let mut w = npyz::WriteOptions::<i64>::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut out)
            .begin_nd()
            .unwrap();
        for v in [0i64, 1, -3, 2] {
            w.push(&v).unwrap();
        }
        w.finish().unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("has -3 at [1, 0]"), "{err}");
    }

    #[test]
    fn flat_indices_read_as_c_order_coordinates() {
        assert_eq!(index(5, &[2, 3]), "[1, 2]");
        assert_eq!(index(4, &[5]), "[4]");
    }
}
