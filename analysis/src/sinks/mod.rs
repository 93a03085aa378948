//! Where analysis results go: one JSONL row per checkpoint and one HDF5 group per checkpoint.

pub mod hdf5;
pub mod jsonl;
