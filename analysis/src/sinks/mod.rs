//! Where analysis results go: one JSONL row per checkpoint and one HDF5 group per checkpoint (and, when asked
//! for, one TensorBoard event per checkpoint); intervention reports as HDF5 beside their JSON.

pub mod hdf5;
pub mod jsonl;
pub mod report;
pub mod tensorboard;
