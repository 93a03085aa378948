//! Phases B and C of the workflow: a study trains one config over several seeds ([`study`], `formation
//! replicate`) or over the values of one config key (`formation screen`), each run an independent process in
//! its own run directory, locally or as a Slurm array ([`slurm`]).

pub mod error;
pub mod slurm;
pub mod study;

pub use error::StudyError;
