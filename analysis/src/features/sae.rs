//! Training a TopK sparse autoencoder in burn with autodiff on the run's device (Gao et al. 2024, "Scaling and
//! evaluating sparse autoencoders", §2.3 and appendix A; the reference code is openai/sparse_autoencoder):
//! latents z = ReLU(TopK_k((x − b_pre)·W_enc + b_enc)), reconstruction x̂ = z·W_dec + b_pre; the loss is the
//! normalized MSE plus the AuxK loss (weight 1/32: the residual error reconstructed by the k_aux = d/2 largest
//! dead latents, so dead latents get a gradient). As in the paper: b_pre starts at the data's centre (the mean;
//! the paper takes the geometric median), the encoder starts as the decoder's transpose, decoder rows are unit
//! norm at the start and after every step, Adam without weight decay.

use burn::module::{Module, Param};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::relu;
use host::rng::SplitMix64;
use trainer::error::ForwardError;
use trainer::model::to_host;

use super::dictionary::Dictionary;

/// The dictionary's shape and its training schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct SaeConfig {
    /// Latents (the dictionary size).
    pub latents: usize,
    /// Latents active per input.
    pub k: usize,
    /// Optimizer steps, each on `batch_size` inputs drawn in shuffled epochs.
    pub steps: usize,
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Seeds the initialization and the batch order.
    pub seed: u64,
}

/// A latent that has not fired on the last this many training inputs counts as dead for AuxK (Gao et al. use
/// 10 M tokens; here, about one pass over the inputs, capped so short runs still revive latents).
fn dead_after(n: usize) -> usize {
    n.min(8192)
}

const AUX_WEIGHT: f64 = 1.0 / 32.0;

#[derive(Module, Debug)]
struct TopKSae {
    /// [d, latents]
    w_enc: Param<Tensor<2>>,
    /// [latents]
    b_enc: Param<Tensor<1>>,
    /// [latents, d], rows of unit norm.
    w_dec: Param<Tensor<2>>,
    /// [d]
    b_pre: Param<Tensor<1>>,
}

impl TopKSae {
    /// Pre-activations [batch, latents] of inputs `x` [batch, d].
    fn pre(&self, x: Tensor<2>) -> Tensor<2> {
        (x - self.b_pre.val().unsqueeze()).matmul(self.w_enc.val()) + self.b_enc.val().unsqueeze()
    }
}

/// The `k` largest entries of each row of `pre` [batch, latents], ReLU'd, others 0; and which entries those
/// are (the selection itself carries no gradient).
fn topk(pre: Tensor<2>, k: usize) -> (Tensor<2>, Tensor<2, Bool>) {
    let [batch, latents] = pre.dims();
    let kth = pre.clone().detach().topk(k, 1).slice(s![.., k - 1..k]);
    let kept = pre
        .clone()
        .detach()
        .greater_equal(kth.expand([batch, latents]));
    (relu(pre.mask_fill(kept.clone().bool_not(), 0.0)), kept)
}

/// Trains a dictionary on the rows of `x` [n, d] (host), from a fresh initialization, or from `start` (a
/// dictionary of the same shape, e.g. the previous checkpoint's: latent j then continues latent j);
/// deterministic for a given seed on the CPU backend.
pub fn train_sae(
    x: &[f32],
    d: usize,
    config: &SaeConfig,
    start: Option<&Dictionary>,
    device: &Device,
) -> Result<Dictionary, ForwardError> {
    let device = device.clone().without_autodiff().autodiff();
    let n = x.len() / d;
    let m = config.latents;
    let mut rng = SplitMix64::derived(config.seed, "sae", 0);
    let mut mean = vec![0.0f32; d];
    for row in x.chunks_exact(d) {
        for (c, v) in mean.iter_mut().zip(row) {
            *c += v / n as f32;
        }
    }
    let variance: f64 = x
        .chunks_exact(d)
        .map(|row| {
            row.iter()
                .zip(&mean)
                .map(|(v, c)| f64::from(v - c).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / n as f64;
    // Inputs that do not vary (a boundary whose key positions all hold one constant vector) would divide the
    // loss by zero; their normalized error is then taken against a tiny variance instead.
    let variance = variance.max(1e-12);
    let w_dec = random_unit_rows(&mut rng, m, d);
    let w_enc: Vec<f32> = (0..d * m).map(|i| w_dec[(i % m) * d + i / m]).collect();
    let param = |values: Vec<f32>, shape: [usize; 2]| {
        Param::from_data(TensorData::new(values, shape), &device)
    };
    let vector =
        |values: Vec<f32>, len: usize| Param::from_data(TensorData::new(values, [len]), &device);
    let mut sae = match start {
        Some(s) if s.d == d && s.latents == m => TopKSae {
            w_enc: param(s.w_enc.clone(), [d, m]),
            b_enc: vector(s.b_enc.clone(), m),
            w_dec: param(s.w_dec.clone(), [m, d]),
            b_pre: vector(s.b_pre.clone(), d),
        },
        _ => TopKSae {
            w_enc: param(w_enc, [d, m]),
            b_enc: vector(vec![0.0f32; m], m),
            w_dec: param(w_dec, [m, d]),
            b_pre: vector(mean, d),
        },
    };
    let data = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [n, d]), &device);
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(0.0)
        .init();
    let k_aux = (d / 2).max(1);
    let mut unseen = vec![0usize; m];
    let mut order: Vec<usize> = (0..n).collect();
    let mut at = n;
    for _ in 0..config.steps {
        let mut batch = Vec::with_capacity(config.batch_size);
        while batch.len() < config.batch_size.min(n) {
            if at == n {
                shuffle(&mut order, &mut rng);
                at = 0;
            }
            batch.push(order[at] as i64);
            at += 1;
        }
        let b = batch.len();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(batch, [b]), &device);
        let xb = data.clone().select(0, rows);
        let pre = sae.pre(xb.clone());
        let (z, kept) = topk(pre.clone(), config.k);
        let error = xb - (z.matmul(sae.w_dec.val()) + sae.b_pre.val().unsqueeze());
        let mut loss = error.clone().powf_scalar(2.0).sum_dim(1).mean() / variance;
        // Which latents fired in this batch: the only host round trip of a step.
        let fired = to_host(kept.int().sum_dim(0).float())?;
        for (u, f) in unseen.iter_mut().zip(&fired.data) {
            *u = if *f > 0.0 { 0 } else { *u + b };
        }
        let dead: Vec<bool> = unseen.iter().map(|&u| u >= dead_after(n)).collect();
        let n_dead = dead.iter().filter(|&&x| x).count();
        if n_dead > 0 {
            let alive = Tensor::<1, Bool>::from_data(
                TensorData::new(dead.iter().map(|x| !x).collect::<Vec<_>>(), [m]),
                &device,
            );
            let pre_dead = pre.mask_fill(alive.unsqueeze::<2>().expand([b, m]), f32::NEG_INFINITY);
            let (z_aux, _) = topk(pre_dead, k_aux.min(n_dead));
            let target = error.detach();
            let aux = (target.clone() - z_aux.matmul(sae.w_dec.val()))
                .powf_scalar(2.0)
                .sum_dim(1)
                .mean()
                / target.powf_scalar(2.0).sum_dim(1).mean().clamp_min(1e-12);
            loss = loss + aux * AUX_WEIGHT;
        }
        let grads = GradientsParams::from_grads(loss.backward(), &sae);
        sae = optim.step(config.lr, sae, grads);
        sae.w_dec = sae.w_dec.map(|w| {
            let norms = w
                .clone()
                .powf_scalar(2.0)
                .sum_dim(1)
                .sqrt()
                .clamp_min(1e-12);
            (w / norms).detach().require_grad()
        });
    }
    let host = |t: Tensor<2>| to_host(t).map(|a| a.data);
    Ok(Dictionary {
        d,
        latents: m,
        k: config.k,
        w_enc: host(sae.w_enc.val())?,
        b_enc: host(sae.b_enc.val().unsqueeze())?,
        w_dec: host(sae.w_dec.val())?,
        b_pre: host(sae.b_pre.val().unsqueeze())?,
    })
}

/// `count` random unit vectors of width `d` [count, d] (Gaussian directions).
pub(crate) fn random_unit_rows(rng: &mut SplitMix64, count: usize, d: usize) -> Vec<f32> {
    let mut rows = vec![0.0f32; count * d];
    for row in rows.chunks_exact_mut(d) {
        row.iter_mut().for_each(|w| *w = rng.normal() as f32);
        let norm = row.iter().map(|w| w * w).sum::<f32>().sqrt();
        row.iter_mut().for_each(|w| *w /= norm);
    }
    rows
}

/// Fisher–Yates with the run's RNG.
fn shuffle(order: &mut [usize], rng: &mut SplitMix64) {
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::dictionary::{best_matches, dictionary_stats};
    use crate::features::planted::planted;

    #[test]
    fn recovers_planted_directions() {
        // 24 directions in 16 dimensions (more features than dimensions: superposition), 3 active per input;
        // a 4x dictionary (64 latents) with k = 3 recovers every one (|cos| >= 0.95) and explains the data.
        // Checked on planted seeds 1-5 too. With k = 4 (one slot more than the inputs use) the spare latent
        // absorbs parts of co-occurring directions and the worst match falls to 0.87-0.91: k should match the
        // sparsity of what is being decomposed.
        let (x, directions) = planted(24, 16, 3, 8192, 7);
        let config = SaeConfig {
            latents: 64,
            k: 3,
            steps: 3000,
            batch_size: 256,
            lr: 3e-3,
            seed: 0,
        };
        let dictionary = train_sae(&x, 16, &config, None, &Device::default()).unwrap();
        let matches = best_matches(&dictionary, &directions);
        let worst = matches.iter().map(|m| m.1).fold(1.0, f64::min);
        assert!(worst >= 0.95, "worst max-cosine {worst}: {matches:?}");
        let stats = dictionary_stats(&dictionary, &x, 0.5);
        assert!(stats.variance_explained > 0.9, "{stats:?}");
        // Same seed, same dictionary.
        assert_eq!(
            train_sae(&x, 16, &config, None, &Device::default()).unwrap(),
            dictionary
        );
    }
}
