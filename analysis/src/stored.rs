//! Where an array lives in a step's HDF5 file (`analysis/activations/step_N.h5`). [`StoredName`] is the only
//! code that writes or parses these paths (documented in `docs/schema.md`).

use std::fmt;
use std::str::FromStr;

use host::array::HostArray;
use host::hook::HookName;

/// The path of one stored array.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoredName {
    /// `resid_at_keys/{boundary}` [example, key_position, d_model]: the residual stream at the key positions.
    ResidAtKeys(HookName),
    /// `patterns/{hook}` [example, head, key_position, k]: attention at the key queries.
    Pattern(HookName),
    /// `params/{name}`: a parameter by its state-dict name.
    Param(String),
    /// `probe_weights/{boundary}/{target}` [key_position, d_model, class]: the probe of every key position.
    ProbeWeights { boundary: HookName, target: String },
    /// `probe_bias/{boundary}/{target}` [key_position, class]
    ProbeBias { boundary: HookName, target: String },
    /// `output_projection` [component]: the fixed random projection of the answer logits.
    OutputProjection,
    /// `logits_at_answers` [example, answer, d_vocab_out] (`analysis.store`).
    LogitsAtAnswers,
    /// `{hook}`: a whole hook point (`analysis.store = ["all_hooks"]`).
    Hook(HookName),
}

impl StoredName {
    pub const RESID_GROUP: &'static str = "resid_at_keys";
    pub const PATTERN_GROUP: &'static str = "patterns";
    pub const PARAM_GROUP: &'static str = "params";
    pub const PROBE_GROUP: &'static str = "probe_weights";
    pub const PROBE_BIAS_GROUP: &'static str = "probe_bias";
    /// The groups the next checkpoint's dynamics compare with (a resumed run reads them back).
    pub const DYNAMICS_GROUPS: [&'static str; 4] = [
        Self::RESID_GROUP,
        Self::PATTERN_GROUP,
        Self::PARAM_GROUP,
        Self::PROBE_GROUP,
    ];

    /// Whether the next checkpoint's dynamics compare with this array.
    pub fn is_dynamics_input(&self) -> bool {
        matches!(
            self,
            StoredName::ResidAtKeys(_)
                | StoredName::Pattern(_)
                | StoredName::Param(_)
                | StoredName::ProbeWeights { .. }
        )
    }
}

impl fmt::Display for StoredName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredName::ResidAtKeys(b) => write!(f, "{}/{b}", Self::RESID_GROUP),
            StoredName::Pattern(h) => write!(f, "{}/{h}", Self::PATTERN_GROUP),
            StoredName::Param(p) => write!(f, "{}/{p}", Self::PARAM_GROUP),
            StoredName::ProbeWeights { boundary, target } => {
                write!(f, "{}/{boundary}/{target}", Self::PROBE_GROUP)
            }
            StoredName::ProbeBias { boundary, target } => {
                write!(f, "{}/{boundary}/{target}", Self::PROBE_BIAS_GROUP)
            }
            StoredName::OutputProjection => f.write_str("output_projection"),
            StoredName::LogitsAtAnswers => f.write_str("logits_at_answers"),
            StoredName::Hook(h) => write!(f, "{h}"),
        }
    }
}

/// A stacked probe array (`probe_weights` [key_position, d_model, class], `probe_bias` [key_position, class]),
/// one key position's slice at a time; `None` for an empty array.
pub fn key_slices(array: &HostArray) -> Option<std::slice::ChunksExact<'_, f32>> {
    let keys = *array.shape.first()?;
    let per_key = array.data.len() / keys.max(1);
    (per_key > 0).then(|| array.data.chunks_exact(per_key))
}

/// A path that is not a stored array's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not the path of a stored array")]
pub struct UnknownStoredName(pub String);

impl FromStr for StoredName {
    type Err = UnknownStoredName;

    /// Parses exactly what [`fmt::Display`] writes.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownStoredName(text.to_owned());
        let hook = |s: &str| s.parse::<HookName>().map_err(|_| unknown());
        let probe = |rest: &str| -> Result<(HookName, String), UnknownStoredName> {
            match rest.split_once('/') {
                Some((b, t)) if !t.is_empty() && !t.contains('/') => Ok((hook(b)?, t.to_owned())),
                _ => Err(unknown()),
            }
        };
        let (group, rest) = text.split_once('/').unwrap_or((text, ""));
        Ok(match group {
            Self::RESID_GROUP => StoredName::ResidAtKeys(hook(rest)?),
            Self::PATTERN_GROUP => StoredName::Pattern(hook(rest)?),
            Self::PARAM_GROUP if !rest.is_empty() => StoredName::Param(rest.to_owned()),
            Self::PROBE_GROUP => {
                let (boundary, target) = probe(rest)?;
                StoredName::ProbeWeights { boundary, target }
            }
            Self::PROBE_BIAS_GROUP => {
                let (boundary, target) = probe(rest)?;
                StoredName::ProbeBias { boundary, target }
            }
            "output_projection" if rest.is_empty() => StoredName::OutputProjection,
            "logits_at_answers" if rest.is_empty() => StoredName::LogitsAtAnswers,
            _ => StoredName::Hook(hook(text)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_name_parses_back_from_its_path() {
        let names = [
            StoredName::ResidAtKeys(HookName::ResidPre(0)),
            StoredName::Pattern(HookName::Pattern(1)),
            StoredName::Param("blocks.0.attn.W_O".into()),
            StoredName::ProbeWeights {
                boundary: HookName::ResidPost(1),
                target: "sum".into(),
            },
            StoredName::ProbeBias {
                boundary: HookName::ResidMid(0),
                target: "a".into(),
            },
            StoredName::OutputProjection,
            StoredName::LogitsAtAnswers,
            StoredName::Hook(HookName::Z(0)),
        ];
        for name in names {
            assert_eq!(name.to_string().parse::<StoredName>(), Ok(name.clone()));
        }
        assert_eq!(
            StoredName::ProbeWeights {
                boundary: HookName::ResidPre(0),
                target: "sum".into()
            }
            .to_string(),
            "probe_weights/blocks.0.hook_resid_pre/sum"
        );
        // The layout before schema version 2 (one array per key position) is not a stored name any more.
        for bad in [
            "params",
            "probe_weights/blocks.0.hook_resid_pre",
            "probe_weights/blocks.0.hook_resid_pre/eq/sum",
            "nonsense",
        ] {
            assert!(bad.parse::<StoredName>().is_err(), "{bad}");
        }
    }
}
