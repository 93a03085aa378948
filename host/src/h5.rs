//! Small helpers over the hdf5 crate shared by every HDF5 file formation writes.

/// Writes a UTF-8 string attribute.
pub fn write_str_attr(location: &hdf5::Location, name: &str, value: &str) -> hdf5::Result<()> {
    let value: hdf5::types::VarLenUnicode = value
        .parse()
        .map_err(|e: hdf5::types::StringError| hdf5::Error::from(e.to_string()))?;
    location
        .new_attr::<hdf5::types::VarLenUnicode>()
        .create(name)?
        .write_scalar(&value)
}

/// Reads a UTF-8 string attribute.
pub fn read_str_attr(location: &hdf5::Location, name: &str) -> hdf5::Result<String> {
    Ok(location
        .attr(name)?
        .read_scalar::<hdf5::types::VarLenUnicode>()?
        .as_str()
        .to_owned())
}
