//! Names of model parts as the rows, reports and exports spell them: [`Component`] (`L1H2`, `L0`) and
//! [`ParamName`] (TransformerLens state-dict names). These types are the only code that writes these strings.

use std::fmt;

/// A component the analysis localizes: one attention head, or one block's MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// Head `head` of block `layer`, displayed `L{layer}H{head}`.
    Head { layer: usize, head: usize },
    /// The MLP of block `layer`, displayed `L{layer}`.
    Mlp { layer: usize },
}

impl Component {
    pub fn head(layer: usize, head: usize) -> Self {
        Component::Head { layer, head }
    }
    pub fn mlp(layer: usize) -> Self {
        Component::Mlp { layer }
    }
    /// The block the component belongs to.
    pub fn layer(&self) -> usize {
        match *self {
            Component::Head { layer, .. } | Component::Mlp { layer } => layer,
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Component::Head { layer, head } => write!(f, "L{layer}H{head}"),
            Component::Mlp { layer } => write!(f, "L{layer}"),
        }
    }
}

/// A weight of one block's attention (TransformerLens names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttnWeight {
    /// `W_Q` [n_heads, d_model, d_head]
    WQ,
    /// `W_K` [n_heads, d_model, d_head]
    WK,
    /// `W_V` [n_heads, d_model, d_head]
    WV,
    /// `W_O` [n_heads, d_head, d_model]
    WO,
    /// `b_Q` [n_heads, d_head]
    BQ,
    /// `b_K` [n_heads, d_head]
    BK,
    /// `b_V` [n_heads, d_head]
    BV,
    /// `b_O` [d_model]
    BO,
}

/// A weight of one block's MLP (TransformerLens names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MlpWeight {
    /// `W_in` [d_model, d_mlp]
    WIn,
    /// `b_in` [d_mlp]
    BIn,
    /// `W_out` [d_mlp, d_model]
    WOut,
    /// `b_out` [d_model]
    BOut,
}

/// A parameter by its TransformerLens state-dict name (the name the export writes and the stored
/// `params/…` arrays carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParamName {
    /// `embed.W_E` [d_vocab, d_model]
    Embed,
    /// `pos_embed.W_pos` [n_ctx, d_model]
    PosEmbed,
    /// `blocks.{l}.attn.{weight}`
    Attn(usize, AttnWeight),
    /// `blocks.{l}.mlp.{weight}`
    Mlp(usize, MlpWeight),
    /// `unembed.W_U` [d_model, d_vocab_out]
    Unembed,
    /// `unembed.b_U` [d_vocab_out]
    UnembedBias,
    /// `ln_final.w` [d_model] (models with LayerNorm)
    LnFinalWeight,
    /// `ln_final.b` [d_model] (models with LayerNorm)
    LnFinalBias,
}

impl fmt::Display for AttnWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            AttnWeight::WQ => "W_Q",
            AttnWeight::WK => "W_K",
            AttnWeight::WV => "W_V",
            AttnWeight::WO => "W_O",
            AttnWeight::BQ => "b_Q",
            AttnWeight::BK => "b_K",
            AttnWeight::BV => "b_V",
            AttnWeight::BO => "b_O",
        };
        f.write_str(name)
    }
}

impl fmt::Display for MlpWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            MlpWeight::WIn => "W_in",
            MlpWeight::BIn => "b_in",
            MlpWeight::WOut => "W_out",
            MlpWeight::BOut => "b_out",
        };
        f.write_str(name)
    }
}

impl fmt::Display for ParamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamName::Embed => write!(f, "embed.W_E"),
            ParamName::PosEmbed => write!(f, "pos_embed.W_pos"),
            ParamName::Attn(l, w) => write!(f, "blocks.{l}.attn.{w}"),
            ParamName::Mlp(l, w) => write!(f, "blocks.{l}.mlp.{w}"),
            ParamName::Unembed => write!(f, "unembed.W_U"),
            ParamName::UnembedBias => write!(f, "unembed.b_U"),
            ParamName::LnFinalWeight => write!(f, "ln_final.w"),
            ParamName::LnFinalBias => write!(f, "ln_final.b"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_and_parameters_are_spelled_as_the_rows_and_transformer_lens_spell_them() {
        assert_eq!(Component::head(1, 2).to_string(), "L1H2");
        assert_eq!(Component::mlp(0).to_string(), "L0");
        assert_eq!(
            ParamName::Attn(1, AttnWeight::WO).to_string(),
            "blocks.1.attn.W_O"
        );
        assert_eq!(
            ParamName::Mlp(0, MlpWeight::WOut).to_string(),
            "blocks.0.mlp.W_out"
        );
        assert_eq!(ParamName::Embed.to_string(), "embed.W_E");
        assert_eq!(ParamName::Unembed.to_string(), "unembed.W_U");
    }
}
