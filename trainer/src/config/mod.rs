//! The run configuration: one TOML file, parsed strictly (unknown keys are errors) and validated once into
//! types the rest of the code trusts. One module per section family: `task`, `model`, `training` (optim, train,
//! checkpoints), `analysis` (analysis, windows, interventions, LLC, decision rule), `slurm`. Each section checks
//! its own values in its `TryFrom` into [`Checked`] (run while the file is deserialized); this module checks
//! what spans sections.
// `!(x > 0.0)` on purpose: it also rejects NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ops::Deref;
use std::path::Path;

use crate::error::ConfigError;

mod analysis;
mod model;
mod slurm;
mod task;
mod training;

pub use analysis::{
    AnalysisConfig, DecisionConfig, FeaturesConfig, InterventionKind, InterventionsConfig,
    LlcConfig, OnError, StoreItem, UnknownIntervention, WindowsConfig,
};
pub use model::{Activation, ModelConfig, Normalization};
pub use slurm::SlurmConfig;
pub use task::TaskConfig;
pub use training::{CheckpointConfig, LrSchedule, OptimConfig, TrainConfig};

/// A whole run: what to learn, with which model, how to train and what to analyze.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub task: Checked<TaskConfig>,
    pub model: Checked<ModelConfig>,
    pub optim: Checked<OptimConfig>,
    pub train: Checked<TrainConfig>,
    #[serde(default)]
    pub analysis: Checked<AnalysisConfig>,
    #[serde(default)]
    pub eval: EvalConfig,
    #[serde(default)]
    pub windows: Checked<WindowsConfig>,
    #[serde(default)]
    pub llc: Checked<LlcConfig>,
    #[serde(default)]
    pub features: Checked<FeaturesConfig>,
    #[serde(default)]
    pub interventions: InterventionsConfig,
    #[serde(default)]
    pub decision: Checked<DecisionConfig>,
    #[serde(default)]
    pub slurm: Checked<SlurmConfig>,
}

/// A config section whose values passed the section's own check. The only way to make one is the section's
/// `TryFrom<S>` (beside the section, run when a config file is deserialized), so code holding a `Checked<S>`
/// never checks it again. It reads as the section itself (`Deref`); changing it checks again
/// ([`Checked::edit`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Checked<S>(S);

impl<S> Deref for Checked<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.0
    }
}

impl<S: Clone> Checked<S>
where
    Self: TryFrom<S, Error = ConfigError>,
{
    /// This section with `change` applied, checked again.
    pub fn edit(&self, change: impl FnOnce(&mut S)) -> Result<Self, ConfigError> {
        let mut section = self.0.clone();
        change(&mut section);
        Self::try_from(section)
    }
}

/// A section's defaults; every default passes its check (`defaults_pass_their_checks`).
impl<S: Default> Default for Checked<S> {
    fn default() -> Self {
        Checked(S::default())
    }
}

impl<S: Serialize> Serialize for Checked<S> {
    fn serialize<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, S: Deserialize<'de>> Deserialize<'de> for Checked<S>
where
    Self: TryFrom<S, Error = ConfigError>,
{
    /// The section as written, then its check; a value out of range is a deserialization error whose message
    /// is the check's sentence (`model.d_model must be divisible …`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let section = S::deserialize(deserializer)?;
        Self::try_from(section).map_err(|e| serde::de::Error::custom(e.reason()))
    }
}

/// Full-split evaluation cadence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate the full splits at checkpoints that are multiples of this many steps (0: only at the last step).
    #[serde(default)]
    pub every: u64,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|e| e.with_path(path))?;
        // A dataset path is relative to the config file; the frozen config keeps it absolute, so a run's own
        // config.toml names the same dataset wherever it is read from.
        if let TaskConfig::Sequences { path: data } = &*config.task
            && data.is_relative()
        {
            let base = path.parent().unwrap_or(Path::new("."));
            let joined = base.join(data);
            let absolute = joined
                .canonicalize()
                .or_else(|_| std::path::absolute(&joined))
                .unwrap_or(joined);
            config.task = config.task.edit(|task| {
                *task = TaskConfig::Sequences { path: absolute };
            })?;
        }
        Ok(config)
    }

    /// Parses and validates config text: each section is checked while it is deserialized ([`Checked`]), then
    /// what spans sections.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: None,
            message: e.message().to_owned(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The canonical TOML text of this config (what is frozen into the run directory).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// This config with one value changed. `key` is a dotted path (`optim.lr`, `train.checkpoints.every`);
    /// `value` is a TOML value (`1e-3`, `true`, `"gelu"`; a bare word is taken as a string). An integer given for
    /// a float field becomes a float. The result is checked like a loaded config (unknown keys, ranges).
    pub fn with_override(&self, key: &str, value: &str) -> Result<Config, ConfigError> {
        let invalid = |why: &str| ConfigError::Invalid {
            path: None,
            field: key.to_owned(),
            why: why.to_owned(),
        };
        let mut root = toml::Value::try_from(self).map_err(|e| invalid(&e.to_string()))?;
        let parts: Vec<&str> = key.split('.').collect();
        let (leaf, sections) = parts.split_last().ok_or_else(|| invalid("is empty"))?;
        let mut table = root
            .as_table_mut()
            .ok_or_else(|| invalid("is not a table"))?;
        for section in sections {
            table = table
                .get_mut(*section)
                .and_then(toml::Value::as_table_mut)
                .ok_or_else(|| invalid(&format!("names no config section (`{section}`)")))?;
        }
        let given = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_owned()));
        let new = match (table.get(*leaf), given) {
            (Some(toml::Value::Float(_)), toml::Value::Integer(i)) => toml::Value::Float(i as f64),
            (_, given) => given,
        };
        table.insert((*leaf).to_owned(), new);
        let text = toml::to_string(&root).map_err(|e| invalid(&e.to_string()))?;
        Config::parse(&text)
    }

    /// What spans sections (each section has checked itself: [`Checked`]).
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_features()?;
        if self.task.is_stream() && self.train.batch_size.is_none() {
            return invalid(
                "train.batch_size",
                "is required for a task that draws fresh examples every step (its train stream is unbounded)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The `[features]` section against the model: a boundary the model has, k smaller than the dictionary
    /// (also after a command overrides them).
    pub fn validate_features(&self) -> Result<(), ConfigError> {
        self.features_boundary()?;
        let latents = self.features.expansion * self.model.d_model;
        if self.features.k >= latents {
            return invalid(
                "features.k",
                format!(
                    "must be smaller than the dictionary ({} latents: expansion {} × d_model {}), got {}",
                    latents, self.features.expansion, self.model.d_model, self.features.k
                ),
            );
        }
        Ok(())
    }

    /// The residual-stream boundary the sparse dictionary reads (`[features] boundary`, else the last
    /// block's `hook_resid_post`), checked against the model: a boundary it does not have is an error naming
    /// those it has.
    pub fn features_boundary(&self) -> Result<host::hook::HookName, ConfigError> {
        use host::hook::HookName;
        let m = &self.model;
        let boundaries: Vec<HookName> = (0..m.n_layers)
            .flat_map(|l| {
                let mid = (!m.attn_only).then_some(HookName::ResidMid(l));
                [
                    Some(HookName::ResidPre(l)),
                    mid,
                    Some(HookName::ResidPost(l)),
                ]
            })
            .flatten()
            .collect();
        let Some(text) = &self.features.boundary else {
            return Ok(HookName::ResidPost(m.n_layers - 1));
        };
        match text.parse::<HookName>() {
            Ok(name) if boundaries.contains(&name) => Ok(name),
            _ => Err(ConfigError::Invalid {
                path: None,
                field: "features.boundary".into(),
                why: format!(
                    "`{text}` is not a residual-stream boundary of this model (it has {})",
                    boundaries
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// Width of one attention head.
    pub fn d_head(&self) -> usize {
        self.model
            .d_head
            .unwrap_or(self.model.d_model / self.model.n_heads)
    }
}

/// The error for `field` (a dotted config path) with the reason.
fn invalid<T>(field: &str, why: String) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        path: None,
        field: field.to_owned(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CI: &str = include_str!("../../../examples/ci.toml");

    #[test]
    fn example_ci_config_parses() {
        let c = Config::parse(CI).unwrap();
        assert_eq!(
            Config::parse(&c.to_toml()).unwrap(),
            c,
            "canonical TOML round-trips"
        );
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = Config::parse(&CI.replace("[model]", "[model]\nwidth = 3")).unwrap_err();
        assert!(err.to_string().contains("width"), "{err}");
    }

    #[test]
    fn defaults_pass_their_checks() {
        Checked::try_from(AnalysisConfig::default()).unwrap();
        Checked::try_from(WindowsConfig::default()).unwrap();
        Checked::try_from(LlcConfig::default()).unwrap();
        Checked::try_from(FeaturesConfig::default()).unwrap();
        Checked::try_from(DecisionConfig::default()).unwrap();
        Checked::try_from(SlurmConfig::default()).unwrap();
    }

    #[test]
    fn an_edit_is_checked_again() {
        let c = Config::parse(CI).unwrap();
        let err = c.llc.edit(|llc| llc.draws = 0).unwrap_err();
        assert!(err.to_string().contains("draws at least 1"), "{err}");
        assert_eq!(c.llc.edit(|llc| llc.draws = 7).unwrap().draws, 7);
    }

    #[test]
    fn d_model_not_divisible_by_heads_is_rejected() {
        let text = CI.replace("n_heads = 4", "n_heads = 3");
        let err = Config::parse(&text).unwrap_err();
        assert!(err.to_string().contains("divisible"), "{err}");
    }
}
