//! TransformerLens hook-point names. [`HookName`] is the only code that writes these strings.

use std::fmt;

/// One activation site, named exactly as TransformerLens names its hook point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookName {
    /// `hook_embed` [batch, pos, d_model]
    Embed,
    /// `hook_pos_embed` [batch, pos, d_model]
    PosEmbed,
    /// `blocks.{l}.hook_resid_pre` [batch, pos, d_model]
    ResidPre(usize),
    /// `blocks.{l}.attn.hook_pattern` [batch, head, q, k]
    Pattern(usize),
    /// `blocks.{l}.attn.hook_z` [batch, pos, head, d_head]
    Z(usize),
    /// `blocks.{l}.hook_attn_out` [batch, pos, d_model]
    AttnOut(usize),
    /// `blocks.{l}.hook_resid_mid` [batch, pos, d_model] (absent in attention-only models)
    ResidMid(usize),
    /// `blocks.{l}.mlp.hook_post` [batch, pos, d_mlp]
    MlpPost(usize),
    /// `blocks.{l}.hook_mlp_out` [batch, pos, d_model]
    MlpOut(usize),
    /// `blocks.{l}.hook_resid_post` [batch, pos, d_model]
    ResidPost(usize),
    /// `logits` [batch, pos, d_vocab_out]
    Logits,
}

impl fmt::Display for HookName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookName::Embed => write!(f, "hook_embed"),
            HookName::PosEmbed => write!(f, "hook_pos_embed"),
            HookName::ResidPre(l) => write!(f, "blocks.{l}.hook_resid_pre"),
            HookName::Pattern(l) => write!(f, "blocks.{l}.attn.hook_pattern"),
            HookName::Z(l) => write!(f, "blocks.{l}.attn.hook_z"),
            HookName::AttnOut(l) => write!(f, "blocks.{l}.hook_attn_out"),
            HookName::ResidMid(l) => write!(f, "blocks.{l}.hook_resid_mid"),
            HookName::MlpPost(l) => write!(f, "blocks.{l}.mlp.hook_post"),
            HookName::MlpOut(l) => write!(f, "blocks.{l}.hook_mlp_out"),
            HookName::ResidPost(l) => write!(f, "blocks.{l}.hook_resid_post"),
            HookName::Logits => write!(f, "logits"),
        }
    }
}

/// A string that is not a hook name this model has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a hook name (TransformerLens names such as `blocks.0.hook_resid_post`)")]
pub struct UnknownHook(pub String);

impl std::str::FromStr for HookName {
    type Err = UnknownHook;

    /// Parses exactly what [`fmt::Display`] writes.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownHook(text.to_owned());
        match text {
            "hook_embed" => return Ok(HookName::Embed),
            "hook_pos_embed" => return Ok(HookName::PosEmbed),
            "logits" => return Ok(HookName::Logits),
            _ => {}
        }
        let rest = text.strip_prefix("blocks.").ok_or_else(unknown)?;
        let (layer, site) = rest.split_once('.').ok_or_else(unknown)?;
        let l: usize = layer.parse().map_err(|_| unknown())?;
        let name = match site {
            "hook_resid_pre" => HookName::ResidPre(l),
            "attn.hook_pattern" => HookName::Pattern(l),
            "attn.hook_z" => HookName::Z(l),
            "hook_attn_out" => HookName::AttnOut(l),
            "hook_resid_mid" => HookName::ResidMid(l),
            "mlp.hook_post" => HookName::MlpPost(l),
            "hook_mlp_out" => HookName::MlpOut(l),
            "hook_resid_post" => HookName::ResidPost(l),
            _ => return Err(unknown()),
        };
        Ok(name)
    }
}

/// Written as its TransformerLens name (so maps keyed by hook name are JSON objects keyed by that name).
impl serde::Serialize for HookName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HookName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Serializes a map keyed by hook name in the order of the names as strings (the order a JSON map keyed by
/// those strings has), whatever the order of [`HookName`] itself.
pub fn serialize_by_name<S, V>(
    map: &std::collections::BTreeMap<HookName, V>,
    serializer: S,
) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
    V: serde::Serialize,
{
    let mut entries: Vec<(String, &V)> = map.iter().map(|(k, v)| (k.to_string(), v)).collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    serializer.collect_map(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_anything_else_is_refused() {
        let all = [
            HookName::Embed,
            HookName::PosEmbed,
            HookName::ResidPre(3),
            HookName::Pattern(0),
            HookName::Z(1),
            HookName::AttnOut(2),
            HookName::ResidMid(0),
            HookName::MlpPost(1),
            HookName::MlpOut(0),
            HookName::ResidPost(12),
            HookName::Logits,
        ];
        for name in all {
            assert_eq!(name.to_string().parse::<HookName>(), Ok(name));
        }
        for bad in ["blocks.x.hook_z", "blocks.0.hook_q", "resid", "blocks.0"] {
            assert!(bad.parse::<HookName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn names_match_transformer_lens() {
        assert_eq!(
            HookName::Pattern(1).to_string(),
            "blocks.1.attn.hook_pattern"
        );
        assert_eq!(HookName::MlpPost(0).to_string(), "blocks.0.mlp.hook_post");
        assert_eq!(
            HookName::ResidPost(2).to_string(),
            "blocks.2.hook_resid_post"
        );
        assert_eq!(HookName::Embed.to_string(), "hook_embed");
    }
}
