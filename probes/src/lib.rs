//! Probes: the fixed [`probe_set::ProbeSet`] every checkpoint is analyzed on (generated deterministically from
//! the task and a seed, stratified over targets, stored as HDF5 and pinned by a content hash).

pub mod h5;
pub mod probe_set;

pub use probe_set::{ProbeSet, ProbeSetError};
