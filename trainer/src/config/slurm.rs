//! The `[slurm]` section: resources of the Slurm array script of a study.

use serde::{Deserialize, Serialize};

use super::{Checked, invalid};
use crate::error::ConfigError;

/// Resources of the Slurm array script `formation replicate|screen --slurm` writes (flags override them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmConfig {
    /// `--partition`; absent: the cluster's default partition.
    pub partition: Option<String>,
    /// `--cpus-per-task`.
    pub cpus_per_task: usize,
    /// `--mem`, in Slurm's syntax (`4G`).
    pub mem: String,
    /// `--time`, in Slurm's syntax (`01:00:00`).
    pub time: String,
    /// At most this many array tasks at once (`--array=0-N%K`); absent: no limit.
    pub max_parallel: Option<usize>,
    /// Further `#SBATCH` lines, verbatim (`--account=…`, `--qos=…`).
    pub extra: Vec<String>,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            partition: None,
            cpus_per_task: 2,
            mem: "4G".into(),
            time: "01:00:00".into(),
            max_parallel: None,
            extra: vec![],
        }
    }
}

impl TryFrom<SlurmConfig> for Checked<SlurmConfig> {
    type Error = ConfigError;

    /// The Slurm resources.
    fn try_from(s: SlurmConfig) -> Result<Self, ConfigError> {
        if s.cpus_per_task == 0
            || s.max_parallel == Some(0)
            || s.mem.is_empty()
            || s.time.is_empty()
        {
            return invalid(
                "slurm",
                "cpus_per_task and max_parallel must be at least 1, mem and time not empty".into(),
            );
        }
        Ok(Checked(s))
    }
}
