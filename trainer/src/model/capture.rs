//! The capture forward's result: every hook point, on the device, and its copy to host memory.

use crate::error::ForwardError;
use burn::prelude::*;

use host::array::HostArray;

use super::block::BlockActs;
use host::hook::HookName;

/// All activations of one forward pass, TransformerLens shapes.
#[derive(Clone)]
pub struct Capture {
    /// `hook_embed` [batch, pos, d_model]
    pub embed: Tensor<3>,
    /// `hook_pos_embed` [batch, pos, d_model]
    pub pos_embed: Tensor<3>,
    pub blocks: Vec<BlockActs>,
    /// `logits` [batch, pos, d_vocab_out]
    pub logits: Tensor<3>,
    pub attn_only: bool,
    /// The query positions the last block and the unembedding ran at ([`super::Transformer::capture_at`]), or
    /// `None`: every position. With positions, the last block's activations (`resid_pre` aside) and the logits
    /// have them on their query axis, in this order.
    pub tail: Option<Vec<usize>>,
}

/// Copies a device tensor to host memory.
pub fn to_host<const D: usize>(tensor: Tensor<D>) -> Result<HostArray, ForwardError> {
    let shape = tensor.dims().to_vec();
    let data = tensor
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| ForwardError::HostCopy(format!("{e:?}")))?;
    Ok(HostArray { shape, data })
}

/// One hook point's tensor, whatever its rank (a handle: cloning it does not copy the data).
pub enum HookTensor {
    Rank3(Tensor<3>),
    Rank4(Tensor<4>),
}

impl HookTensor {
    fn into_host(self) -> Result<HostArray, ForwardError> {
        match self {
            HookTensor::Rank3(t) => to_host(t),
            HookTensor::Rank4(t) => to_host(t),
        }
    }
}

impl Capture {
    /// Every hook point with its name, in forward order, consuming the capture. Attention-only models have no
    /// `hook_resid_mid` or MLP hooks, as in TransformerLens.
    pub fn into_hooks(self) -> Vec<(HookName, HookTensor)> {
        use HookTensor::{Rank3, Rank4};
        let mut hooks = vec![
            (HookName::Embed, Rank3(self.embed)),
            (HookName::PosEmbed, Rank3(self.pos_embed)),
        ];
        for (l, b) in self.blocks.into_iter().enumerate() {
            hooks.push((HookName::ResidPre(l), Rank3(b.resid_pre)));
            hooks.push((HookName::Pattern(l), Rank4(b.pattern)));
            hooks.push((HookName::Z(l), Rank4(b.z)));
            hooks.push((HookName::AttnOut(l), Rank3(b.attn_out)));
            if !self.attn_only {
                hooks.push((HookName::ResidMid(l), Rank3(b.resid_mid)));
            }
            if let (Some(post), Some(out)) = (b.mlp_post, b.mlp_out) {
                hooks.push((HookName::MlpPost(l), Rank3(post)));
                hooks.push((HookName::MlpOut(l), Rank3(out)));
            }
            hooks.push((HookName::ResidPost(l), Rank3(b.resid_post)));
        }
        hooks.push((HookName::Logits, Rank3(self.logits)));
        hooks
    }

    /// Every hook point with its name, in forward order (handles to the same tensors).
    pub fn hooks(&self) -> Vec<(HookName, HookTensor)> {
        self.clone().into_hooks()
    }

    /// Host copies of the hook points `keep` selects, in forward order, consuming the capture: each device
    /// tensor is freed once its copy is made, so the capture and its host copy are never both held whole.
    /// Every copy has its hook's whole TransformerLens shape: the rows a capture at [`Self::tail`] positions
    /// did not compute are NaN, so that a reader of one of them gets NaN, never a plausible number.
    pub fn into_host(
        self,
        keep: impl Fn(&HookName) -> bool,
    ) -> Result<Vec<(HookName, HostArray)>, ForwardError> {
        let seq = self.embed.dims()[1];
        let last = self.blocks.len().checked_sub(1);
        let tail = self.tail.clone();
        // The query axis of the hooks a capture at tail positions restricts.
        let tail_axis = |name: &HookName| match *name {
            HookName::Logits => Some(1),
            HookName::Pattern(l) if Some(l) == last => Some(2),
            HookName::Z(l)
            | HookName::AttnOut(l)
            | HookName::ResidMid(l)
            | HookName::MlpPost(l)
            | HookName::MlpOut(l)
            | HookName::ResidPost(l)
                if Some(l) == last =>
            {
                Some(1)
            }
            _ => None,
        };
        self.into_hooks()
            .into_iter()
            .filter(|(name, _)| keep(name))
            .map(|(name, t)| {
                let array = t.into_host()?;
                let array = match (&tail, tail_axis(&name)) {
                    (Some(positions), Some(axis)) => at_positions_of(array, axis, positions, seq),
                    _ => array,
                };
                Ok((name, array))
            })
            .collect()
    }

    /// Host copies of every hook point.
    pub fn to_host(&self) -> Result<Vec<(HookName, HostArray)>, ForwardError> {
        self.clone().into_host(|_| true)
    }
}

/// `rows` computed at `positions` along `axis` (of a sequence of `seq`) → the same array with the whole
/// sequence on that axis, NaN at every other position.
fn at_positions_of(rows: HostArray, axis: usize, positions: &[usize], seq: usize) -> HostArray {
    let outer: usize = rows.shape[..axis].iter().product();
    let inner: usize = rows.shape[axis + 1..].iter().product();
    let mut data = vec![f32::NAN; outer * seq * inner];
    for (o, block) in rows.data.chunks_exact(positions.len() * inner).enumerate() {
        for (&t, row) in positions.iter().zip(block.chunks_exact(inner)) {
            data[(o * seq + t) * inner..][..inner].copy_from_slice(row);
        }
    }
    debug_assert_eq!(rows.data.len(), outer * positions.len() * inner);
    let mut shape = rows.shape;
    shape[axis] = seq;
    HostArray { shape, data }
}
