//! Probes: the fixed [`probe_set::ProbeSet`] every checkpoint is analyzed on (generated deterministically from
//! the task and a seed, stratified over targets, stored as HDF5 and pinned by a content hash), the linear
//! probes fitted on it ([`ridge`]: closed-form ridge classifier, k-fold cross-validation) and their control
//! tasks ([`control_task`], Hewitt & Liang 2019).

pub mod control_task;
pub mod probe_set;
pub mod ridge;

pub use probe_set::{ProbeSet, ProbeSetError};
