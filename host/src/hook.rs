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

#[cfg(test)]
mod tests {
    use super::*;

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
