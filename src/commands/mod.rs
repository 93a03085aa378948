//! One module per subcommand.

pub mod compare;
pub mod export;
pub mod features;
pub mod intervene;
pub mod llc;
pub mod probe_set;
pub mod replay;
pub mod report;
pub mod serve;
pub mod study;
pub mod sweep;
pub mod task;
pub mod trace;
pub mod train;
pub mod windows;
