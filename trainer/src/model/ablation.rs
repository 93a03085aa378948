//! Mean ablation (SPEC §5C, §5D): the loss change at the answer positions when one head's `hook_z` (or one
//! block's `hook_mlp_out`) is replaced by its mean over the examples at each position.
//!
//! The ablations start from a [`Capture`]: an ablated head only changes `hook_resid_mid` of its layer, by
//! (mean z_h − z_h)·W_O[h], so the model runs from there on, never the unchanged prefix. The clean reference
//! and each ablated head go through the rest of the model as batches of the same shape on the same path, so a
//! head that writes nothing (W_O[h] = 0) changes the loss by exactly 0. In the last block only the answer
//! positions reach the loss, so its ablations are computed there alone.

use crate::error::ForwardError;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::block::select_positions;
use super::{Capture, Queries, Transformer};
use host::hook::HookName;

/// Δloss (ablated − clean, nats) of every component.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct AblationLosses {
    /// `[layer][head]`
    pub heads: Vec<Vec<f64>>,
    /// `[layer]`; empty for attention-only models.
    pub mlp: Vec<f64>,
}

impl Transformer {
    /// Mean-ablation Δloss of every head and MLP block on the captured batch; `targets` [batch, answers] are the
    /// correct tokens at the positions `answers` selects. The means are taken over the whole batch; the losses
    /// over the examples `rows` only, if given (a cheaper estimate on a large probe set). A capture at
    /// [`Capture::tail`] positions must list the answer positions first, in order.
    pub fn mean_ablation(
        &self,
        capture: &Capture,
        targets: &Tensor<2, Int>,
        answers: &Queries,
        rows: Option<&Tensor<1, Int>>,
    ) -> Result<AblationLosses, ForwardError> {
        let n_blocks = self.blocks.len();
        // The ablated positions `here`, then the rest of the model `after`: every position, except in the last
        // block, where only the answer positions reach the loss and its ablations run there alone.
        let some = |x: Tensor<3>, here: &Queries| {
            let x = at(x, here);
            match rows {
                Some(rows) => x.select(0, rows.clone()),
                None => x,
            }
        };
        let targets = &match rows {
            Some(rows) => targets.clone().select(0, rows.clone()),
            None => targets.clone(),
        };
        let loss = |logits: Tensor<3>| copy_losses(logits, targets, 1).map(|losses| losses[0]);
        let mut out = AblationLosses::default();
        for (l, acts) in capture.blocks.iter().enumerate() {
            // The last block of a capture at tail positions ran there alone, answers first.
            let in_tail = &Queries::Prefix(targets.dims()[1]);
            let (here, after) = match (l + 1 == n_blocks, &capture.tail) {
                (true, Some(_)) => (in_tail, &Queries::All),
                (true, None) => (answers, &Queries::All),
                (false, _) => (&Queries::All, answers),
            };
            let z_all = at(acts.z.clone(), here);
            let z = match rows {
                Some(rows) => z_all.clone().select(0, rows.clone()),
                None => z_all.clone(),
            };
            let [n, pos, n_heads, d_head] = z.dims();
            let d_model = self.dims.d_model;
            let resid_mid = some(acts.resid_mid.clone(), here);
            let clean = loss(self.logits_after_mid(l, resid_mid.clone(), after))?;
            // What ablating head h adds to resid_mid: (mean z_h − z_h) @ W_O[h]. One head per forward, each the
            // size of the clean one: the same path as the clean copy (so a head that writes nothing changes the
            // loss by exactly 0) and a peak memory of one copy of the batch, not n_heads + 1.
            let dz = z_all.mean_dim(0) - z;
            let w_o = self.blocks[l].attn.W_O.val();
            let mut heads = Vec::with_capacity(n_heads);
            for h in 0..n_heads {
                let delta = dz
                    .clone()
                    .slice(s![.., .., h..h + 1, ..])
                    .reshape([n * pos, d_head])
                    .matmul(
                        w_o.clone()
                            .slice(s![h..h + 1, .., ..])
                            .reshape([d_head, d_model]),
                    )
                    .reshape([n, pos, d_model]);
                let ablated = self.logits_after_mid(l, resid_mid.clone() + delta, after);
                heads.push(loss(ablated)? - clean);
            }
            out.heads.push(heads);
            if let Some(mlp_out) = &acts.mlp_out {
                let mean_out = at(mlp_out.clone(), here).mean_dim(0);
                let clean = self.logits_after_post(l, some(acts.resid_post.clone(), here), after);
                let ablated = self.logits_after_post(l, resid_mid + mean_out, after);
                let (clean, ablated) = (loss(clean)?, loss(ablated)?);
                out.mlp.push(ablated - clean);
            }
        }
        Ok(out)
    }

    /// Mean-ablation Δloss of single MLP neurons of block `layer` (SPEC §6, neuron level): neuron k's
    /// `mlp.hook_post` replaced by its mean over the batch changes `hook_resid_post` by (mean − post_k)·W_out[k];
    /// all `neurons` in one batch with an unablated copy.
    pub fn neuron_ablation(
        &self,
        capture: &Capture,
        layer: usize,
        neurons: &[usize],
        targets: &Tensor<2, Int>,
        answers: &Queries,
    ) -> Result<Vec<f64>, ForwardError> {
        let acts = &capture.blocks[layer];
        let (Some(post), Some(mlp)) = (&acts.mlp_post, &self.blocks[layer].mlp) else {
            return Err(ForwardError::NoSuchPart(format!(
                "block {layer} has no MLP"
            )));
        };
        let device = post.device();
        let [n, pos, _] = post.dims();
        let k = neurons.len();
        let d_model = self.dims.d_model;
        let index: Vec<i64> = neurons.iter().map(|&i| i as i64).collect();
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [k]), &device);
        let dpost = (post.clone().mean_dim(0) - post.clone())
            .select(2, index.clone())
            .permute([2, 0, 1])
            .reshape([k, n * pos, 1]);
        let w_out = mlp.W_out.val().select(0, index).reshape([k, 1, d_model]);
        let delta = (dpost * w_out).reshape([k * n, pos, d_model]);
        let ablated = acts.resid_post.clone().repeat_dim(0, k) + delta;
        let batch = Tensor::cat(vec![acts.resid_post.clone(), ablated], 0);
        let logits = self.logits_after_post(layer, batch, answers);
        Ok(deltas(copy_losses(logits, targets, k + 1)?))
    }

    /// Logits at the answers from `hook_resid_mid` of block `l` [batch, pos, d_model].
    pub(super) fn logits_after_mid(
        &self,
        l: usize,
        resid_mid: Tensor<3>,
        answers: &Queries,
    ) -> Tensor<3> {
        let act_fn = self.dims.act_fn;
        if l + 1 == self.blocks.len() {
            let (_, _, resid_post) = self.blocks[l].mlp_part(at(resid_mid, answers), act_fn);
            return self.unembed(resid_post);
        }
        let (_, _, resid_post) = self.blocks[l].mlp_part(resid_mid, act_fn);
        self.logits_after_post(l, resid_post, answers)
    }

    /// Logits at the answers from `hook_resid_post` of block `l` [batch, pos, d_model] (every position).
    pub(super) fn logits_after_post(
        &self,
        l: usize,
        resid_post: Tensor<3>,
        answers: &Queries,
    ) -> Tensor<3> {
        self.logits_from_block(l + 1, resid_post, answers)
    }

    /// Logits at the answers from the input of block `first` [batch, pos, d_model] (every position; `first`
    /// = the number of blocks: the final residual stream).
    fn logits_from_block(&self, first: usize, resid: Tensor<3>, answers: &Queries) -> Tensor<3> {
        let n = self.blocks.len();
        if first == n {
            return self.unembed(at(resid, answers));
        }
        let mut resid = resid;
        for (i, block) in self.blocks.iter().enumerate().skip(first) {
            let queries = if i + 1 == n { answers } else { &Queries::All };
            resid = block.forward(resid, queries, self.dims.act_fn).resid_post;
        }
        self.unembed(resid)
    }

    /// Logits at the answers when the residual stream at `boundary` (`hook_resid_pre|mid|post` of a block) is
    /// `resid` [batch, pos, d_model]: the rest of the model runs on it (a splice: replace the activations there,
    /// keep everything downstream). `None` for a hook that is not a residual boundary of this model.
    pub fn logits_from_boundary(
        &self,
        boundary: &HookName,
        resid: Tensor<3>,
        answers: &Queries,
    ) -> Option<Tensor<3>> {
        let n = self.blocks.len();
        match *boundary {
            HookName::ResidPre(l) if l < n => Some(self.logits_from_block(l, resid, answers)),
            HookName::ResidMid(l) if l < n && !self.dims.attn_only => {
                Some(self.logits_after_mid(l, resid, answers))
            }
            HookName::ResidPost(l) if l < n => Some(self.logits_from_block(l + 1, resid, answers)),
            _ => None,
        }
    }
}

/// `x` [batch, pos, …] at the answer positions.
pub(super) fn at<const D: usize>(x: Tensor<D>, answers: &Queries) -> Tensor<D> {
    match answers {
        Queries::All => x,
        Queries::At { positions, .. } => select_positions(x, positions),
        &Queries::Prefix(len) => x.narrow(1, 0, len),
    }
}

/// Mean cross-entropy of each of `copies` stacked copies of the batch: `logits` [copies·n, answers, vocab].
fn copy_losses(
    logits: Tensor<3>,
    targets: &Tensor<2, Int>,
    copies: usize,
) -> Result<Vec<f64>, ForwardError> {
    let correct = log_softmax(logits, 2).gather(2, copy_targets(targets, copies));
    mean_per_copy(correct.neg(), copies)
}

/// `targets` [n, answers] repeated for `copies` stacked copies of the batch, as gather indices
/// [copies·n, answers, 1].
pub(super) fn copy_targets(targets: &Tensor<2, Int>, copies: usize) -> Tensor<3, Int> {
    targets.clone().repeat_dim(0, copies).unsqueeze_dim::<3>(2)
}

/// The mean of `values` [copies·n, answers, 1] over each copy's examples and answers, on the host.
pub(super) fn mean_per_copy(values: Tensor<3>, copies: usize) -> Result<Vec<f64>, ForwardError> {
    let [rows, answers, _] = values.dims();
    let host = values
        .reshape([copies, rows / copies * answers])
        .mean_dim(1)
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| ForwardError::HostCopy(format!("{e:?}")))?;
    Ok(host.into_iter().map(f64::from).collect())
}

/// Loss of each ablated copy minus the clean copy's (the first).
fn deltas(losses: Vec<f64>) -> Vec<f64> {
    losses[1..].iter().map(|l| l - losses[0]).collect()
}
