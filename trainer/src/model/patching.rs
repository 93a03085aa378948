//! Activation patching (SPEC §6; Meng et al. 2022, Wang et al. 2022): run the corrupted input, but with one
//! component's activation taken from the clean run, and measure the logit difference at the answers. From two
//! captures (clean and corrupted), like the ablations: a patched head changes its layer's `hook_resid_mid` by
//! (z_clean − z_corrupt)·W_O[h], a patched MLP its `hook_resid_post`, a patched residual position the block
//! input, so only the rest of the model runs, every component of a layer in one batch with an unpatched copy
//! on the same path.
//!
//! The logit difference is logit[clean answer] − mean logit (the direction of the direct logit attribution),
//! averaged over the examples and answer positions.

use crate::error::ForwardError;
use burn::prelude::*;

use super::ablation::{at, copy_targets, mean_per_copy};
use super::{Capture, Queries, Transformer};

/// Logit differences of the clean run, the corrupted run, and the corrupted run with each component patched.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct PatchingEffects {
    pub clean: f64,
    pub corrupt: f64,
    /// `[layer][head]`: `hook_z` of that head patched.
    pub heads: Vec<Vec<f64>>,
    /// `[layer]`: `hook_mlp_out` patched (empty for attention-only models).
    pub mlp: Vec<f64>,
    /// `[layer][position]`: `hook_resid_pre` of that block patched at one position.
    pub resid_pre: Vec<Vec<f64>>,
}

impl PatchingEffects {
    /// Normalized recovery of a patched run's logit difference, (LD − LD_corrupt) / (LD_clean − LD_corrupt):
    /// 1 = the patched path carries the whole difference, 0 = none of it (0 if clean and corrupt agree).
    pub fn recovery(&self, logit_diff: f64) -> f64 {
        let span = self.clean - self.corrupt;
        if span != 0.0 {
            (logit_diff - self.corrupt) / span
        } else {
            0.0
        }
    }
}

impl Transformer {
    /// Patches every head, MLP and residual position from `clean` into `corrupt` (captures of the same batch
    /// size); `targets` [batch, answers] are the clean answers at the positions `answers` selects.
    pub fn activation_patching(
        &self,
        clean: &Capture,
        corrupt: &Capture,
        targets: &Tensor<2, Int>,
        answers: &Queries,
    ) -> Result<PatchingEffects, ForwardError> {
        let mut out = PatchingEffects {
            clean: logit_diffs(at(clean.logits.clone(), answers), targets, 1)?[0],
            ..Default::default()
        };
        for (l, (c, x)) in clean.blocks.iter().zip(&corrupt.blocks).enumerate() {
            let [n, pos, n_heads, d_head] = x.z.dims();
            let d_model = self.dims.d_model;
            let delta = (c.z.clone() - x.z.clone())
                .permute([2, 0, 1, 3])
                .reshape([n_heads, n * pos, d_head])
                .matmul(self.blocks[l].attn.W_O.val())
                .reshape([n_heads * n, pos, d_model]);
            let patched = x.resid_mid.clone().repeat_dim(0, n_heads) + delta;
            let batch = Tensor::cat(vec![x.resid_mid.clone(), patched], 0);
            let diffs = logit_diffs(
                self.logits_after_mid(l, batch, answers),
                targets,
                n_heads + 1,
            )?;
            out.corrupt = diffs[0];
            out.heads.push(diffs[1..].to_vec());
            if let (Some(c_out), Some(x_out)) = (&c.mlp_out, &x.mlp_out) {
                let patched = x.resid_post.clone() + c_out.clone() - x_out.clone();
                let batch = Tensor::cat(vec![x.resid_post.clone(), patched], 0);
                out.mlp
                    .push(logit_diffs(self.logits_after_post(l, batch, answers), targets, 2)?[1]);
            }
            // One copy per position: the corrupted block input with that row taken from the clean run.
            let device = x.resid_pre.device();
            let eye: Vec<f32> = (0..pos * pos)
                .map(|i| if i / pos == i % pos { 1.0 } else { 0.0 })
                .collect();
            let mask = Tensor::<2>::from_data(TensorData::new(eye, [pos, pos]), &device)
                .reshape([pos, 1, pos, 1]);
            let diff = (c.resid_pre.clone() - x.resid_pre.clone()).unsqueeze::<4>();
            let patched = (x.resid_pre.clone().unsqueeze::<4>() + mask * diff).reshape([
                pos * n,
                pos,
                d_model,
            ]);
            out.resid_pre.push(logit_diffs(
                self.logits_from_pre(l, patched, answers),
                targets,
                pos,
            )?);
        }
        Ok(out)
    }

    /// Logits at the answers from `hook_resid_pre` of block `l` [batch, pos, d_model].
    fn logits_from_pre(&self, l: usize, resid_pre: Tensor<3>, answers: &Queries) -> Tensor<3> {
        let last = self.blocks.len() - 1;
        let mut resid = resid_pre;
        for (i, block) in self.blocks.iter().enumerate().skip(l) {
            let queries = if i == last { answers } else { &Queries::All };
            resid = block.forward(resid, queries, self.dims.act_fn).resid_post;
        }
        self.unembed(resid)
    }
}

/// Which input of a receiver head a path ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Q,
    K,
    V,
}

impl Transformer {
    /// Path patching (Wang et al. 2022, §3.1): the logit difference of the corrupted run in which only the path
    /// from head `sender` (layer, head) into the `channel` input of head `receiver` (a later layer) carries
    /// the sender's clean output; everything else, including the receiver's other inputs and every other head,
    /// stays corrupted. The receiver's changed output then runs through the rest of the model.
    #[allow(clippy::too_many_arguments)]
    pub fn path_patch(
        &self,
        clean: &Capture,
        corrupt: &Capture,
        sender: (usize, usize),
        receiver: (usize, usize),
        channel: Channel,
        targets: &Tensor<2, Int>,
        answers: &Queries,
    ) -> Result<f64, ForwardError> {
        let (l2, h2) = receiver;
        if l2 <= sender.0 {
            return Err(ForwardError::NoSuchPart(format!(
                "receiver layer {l2} is not after sender layer {}",
                sender.0
            )));
        }
        let x = &corrupt.blocks[l2];
        let block = &self.blocks[l2];
        let [_, pos, _] = x.resid_pre.dims();
        let plain = super::layer_norm::maybe(&block.ln1, x.resid_pre.clone());
        let patched = super::layer_norm::maybe(
            &block.ln1,
            x.resid_pre.clone() + self.head_write_change(clean, corrupt, sender),
        );
        let (q, k, v) = match channel {
            Channel::Q => (patched, plain.clone(), plain),
            Channel::K => (plain.clone(), patched, plain),
            Channel::V => (plain.clone(), plain, patched),
        };
        let mask = Tensor::<2, Bool>::tril_mask([pos, pos], 0, &x.resid_pre.device());
        let acts = block.attn.forward_qkv(q, k, v, mask);
        // Only the receiver's own output changes.
        let [n, _, _, d_head] = x.z.dims();
        let dz = acts.z.slice(s![.., .., h2..h2 + 1, ..])
            - x.z.clone().slice(s![.., .., h2..h2 + 1, ..]);
        let w_o = block
            .attn
            .W_O
            .val()
            .slice(s![h2..h2 + 1, .., ..])
            .reshape([d_head, self.dims.d_model]);
        let change = dz
            .reshape([n * pos, d_head])
            .matmul(w_o)
            .reshape([n, pos, self.dims.d_model]);
        let logits = self.logits_after_mid(l2, x.resid_mid.clone() + change, answers);
        Ok(logit_diffs(logits, targets, 1)?[0])
    }

    /// Path patching from head `sender` straight to the logits: the final residual stream gets the sender's
    /// clean-minus-corrupted output, nothing else changes.
    pub fn path_patch_logits(
        &self,
        clean: &Capture,
        corrupt: &Capture,
        sender: (usize, usize),
        targets: &Tensor<2, Int>,
        answers: &Queries,
    ) -> Result<f64, ForwardError> {
        let last = &corrupt.blocks[self.blocks.len() - 1];
        let resid = last.resid_post.clone() + self.head_write_change(clean, corrupt, sender);
        logit_diffs(self.unembed(at(resid, answers)), targets, 1).map(|d| d[0])
    }

    /// (z_clean − z_corrupt)·W_O[h] of head (layer, h) at every position: [batch, pos, d_model].
    fn head_write_change(
        &self,
        clean: &Capture,
        corrupt: &Capture,
        (l, h): (usize, usize),
    ) -> Tensor<3> {
        let (c, x) = (&clean.blocks[l].z, &corrupt.blocks[l].z);
        let [n, pos, _, d_head] = x.dims();
        let dz =
            c.clone().slice(s![.., .., h..h + 1, ..]) - x.clone().slice(s![.., .., h..h + 1, ..]);
        let w_o = self.blocks[l]
            .attn
            .W_O
            .val()
            .slice(s![h..h + 1, .., ..])
            .reshape([d_head, self.dims.d_model]);
        dz.reshape([n * pos, d_head])
            .matmul(w_o)
            .reshape([n, pos, self.dims.d_model])
    }
}

/// Mean of logit[target] − mean logit for each of `copies` stacked copies of the batch: `logits`
/// [copies·n, answers, vocab], `targets` [n, answers].
fn logit_diffs(
    logits: Tensor<3>,
    targets: &Tensor<2, Int>,
    copies: usize,
) -> Result<Vec<f64>, ForwardError> {
    let diffs = logits.clone().gather(2, copy_targets(targets, copies)) - logits.mean_dim(2);
    mean_per_copy(diffs, copies)
}
