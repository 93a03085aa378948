//! The local learning coefficient of a transformer checkpoint: [`super::llc::estimate_llc`] with the loss and
//! gradient of the model on its training data (the full train split, or the first training batch for tasks
//! with a generated stream), parameters flattened in state-dict order; and the weight-restricted LLC of one
//! head or MLP (only that component's weights move).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use trainer::config::{Config, LlcConfig};
use trainer::export::parameters_in_order;
use trainer::model::{Transformer, cross_entropy, int_tensor};
use trainer::tasks::Task;

use host::names::Component;

use super::llc::{LlcEstimate, SgldConfig, estimate_restricted_llc};

/// λ̂ at `model`'s weights (the checkpoint is w*), with the sampler settings it used (`nbeta` resolved: the
/// config's, or n / ln n for the n examples of the loss).
pub fn checkpoint_llc(
    model: &Transformer,
    task: &dyn Task,
    config: &Config,
    llc: &LlcConfig,
    device: &Device,
) -> (SgldConfig, LlcEstimate) {
    let mut out = restricted_llcs(model, task, config, llc, device, &[None]);
    out.pop().expect("one estimate per request")
}

/// The weight-restricted LLC of each of `components` at `model`'s weights (`None`: all weights, the ordinary
/// LLC), from the same data and sampler settings, one after the other.
pub fn restricted_llcs(
    model: &Transformer,
    task: &dyn Task,
    config: &Config,
    llc: &LlcConfig,
    device: &Device,
    components: &[Option<Component>],
) -> Vec<(SgldConfig, LlcEstimate)> {
    let device = device.clone().without_autodiff().autodiff();
    let data = task.train_batch(0, config.train.batch_size);
    let tokens = int_tensor(&data.tokens, data.n, data.seq_len, &device);
    let targets = int_tensor(&data.targets, data.n, data.n_answers, &device);
    let answers = model.answer_queries(task.answer_positions(), &device);
    let template = model.clone().fork(&device);
    let parameters = parameters_in_order(&template);
    let w_star: Vec<f64> = parameters
        .iter()
        .flat_map(|(_, _, values)| values.iter().map(|&v| f64::from(v)))
        .collect();
    let layout: Vec<(String, Vec<usize>)> = parameters
        .into_iter()
        .map(|(path, shape, _)| (path, shape))
        .collect();
    let loss_and_grad = |w: &[f64]| -> (f64, Vec<f64>) {
        let model = template.clone().map(&mut SetParams {
            values: w,
            at: 0,
            device: &device,
        });
        let loss = cross_entropy(
            model.forward_answers(tokens.clone(), &answers),
            targets.clone(),
        );
        let value = f64::from(loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut collect = CollectGrads {
            grads: &grads,
            out: Vec::with_capacity(w.len()),
        };
        model.visit(&mut collect);
        (value, collect.out)
    };
    let sgld = SgldConfig {
        epsilon: llc.epsilon,
        gamma: llc.gamma,
        nbeta: llc.nbeta.unwrap_or(default_nbeta(data.n)),
        chains: llc.chains,
        draws: llc.draws,
        burn_in: llc.burn_in,
        seed: llc.seed,
    };
    components
        .iter()
        .map(|component| {
            let free = component.map(|c| free_mask(&layout, c)).unwrap_or_default();
            let estimate = estimate_restricted_llc(&w_star, &loss_and_grad, &sgld, &free);
            (sgld.clone(), estimate)
        })
        .collect()
}

/// devinterp's default inverse temperature for a loss over `n` examples: nβ = n / ln n (β = 1 / ln n, Watanabe's
/// WBIC temperature).
pub fn default_nbeta(n: usize) -> f64 {
    let n = n as f64;
    n / n.ln().max(1.0)
}

/// Which flat coordinates belong to `component`: a head's slices (its index on the leading axis) of its block's
/// W_Q, W_K, W_V, W_O, b_Q, b_K, b_V (b_O is shared by the heads), or every weight of an MLP block.
fn free_mask(layout: &[(String, Vec<usize>)], component: Component) -> Vec<bool> {
    let mut mask = vec![];
    for (path, dims) in layout {
        let size: usize = dims.iter().product();
        let mut free = vec![false; size];
        match component {
            Component::Head { layer, head } => {
                let prefix = format!("blocks.{layer}.attn.");
                let per_head = ["W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V"]
                    .iter()
                    .any(|name| *path == format!("{prefix}{name}"));
                if per_head && dims.len() >= 2 && head < dims[0] {
                    let stride = size / dims[0];
                    free[head * stride..(head + 1) * stride].fill(true);
                }
            }
            Component::Mlp { layer } => {
                if path.starts_with(&format!("blocks.{layer}.mlp.")) {
                    free.fill(true);
                }
            }
        }
        mask.extend(free);
    }
    mask
}

/// Replaces every float parameter by the next values of a flat vector (fresh, gradient-tracked parameters).
struct SetParams<'a> {
    values: &'a [f64],
    at: usize,
    device: &'a Device,
}

impl ModuleMapper for SetParams<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let shape = param.val().dims();
        let size: usize = shape.iter().product();
        let values: Vec<f32> = self.values[self.at..self.at + size]
            .iter()
            .map(|&v| v as f32)
            .collect();
        self.at += size;
        Param::from_data(TensorData::new(values, shape), self.device)
    }
}

/// Every float parameter's gradient in visiting order (zeros where a parameter got none).
struct CollectGrads<'a> {
    grads: &'a GradientsParams,
    out: Vec<f64>,
}

impl ModuleVisitor for CollectGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let size: usize = param.val().dims().iter().product();
        match self.grads.get::<D>(param.id) {
            Some(grad) => {
                let values = grad
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .unwrap_or_default();
                self.out.extend(values.into_iter().map(f64::from));
            }
            None => self.out.extend(std::iter::repeat_n(0.0, size)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trainer::config::{Activation, Normalization};
    use trainer::model::ModelDims;

    #[test]
    fn a_components_mask_covers_exactly_its_own_weights() {
        let dims = ModelDims {
            n_layers: 2,
            d_model: 8,
            n_heads: 2,
            d_head: 4,
            d_mlp: Some(16),
            d_vocab: 5,
            d_vocab_out: 5,
            n_ctx: 6,
            act_fn: Activation::Relu,
            normalization: Normalization::None,
            attn_only: false,
            init_range: 0.8,
        };
        let model = Transformer::new(&dims, 0, &Device::flex());
        let parameters = parameters_in_order(&model);
        let layout: Vec<(String, Vec<usize>)> = parameters
            .iter()
            .map(|(path, shape, _)| (path.clone(), shape.clone()))
            .collect();
        let paths: Vec<&str> = layout.iter().map(|(p, _)| p.as_str()).collect();
        assert!(paths.contains(&"blocks.1.attn.W_Q"), "{paths:?}");
        assert!(paths.contains(&"blocks.0.mlp.W_in"), "{paths:?}");
        let total: usize = layout
            .iter()
            .map(|(_, d)| d.iter().product::<usize>())
            .sum();
        assert_eq!(
            total,
            parameters.iter().map(|(_, _, v)| v.len()).sum::<usize>()
        );
        // A head: W_Q, W_K, W_V [head, 8, 4] and W_O [head, 4, 8] give 4 · 32 weights, b_Q, b_K, b_V 3 · 4.
        let head = free_mask(&layout, Component::head(1, 1));
        assert_eq!(head.len(), total);
        assert_eq!(head.iter().filter(|&&f| f).count(), 4 * 32 + 3 * 4);
        // The two heads of a block are disjoint.
        let other = free_mask(&layout, Component::head(1, 0));
        assert!(head.iter().zip(&other).all(|(a, b)| !(a & b)));
        // An MLP: W_in [8, 16], b_in [16], W_out [16, 8], b_out [8].
        let mlp = free_mask(&layout, Component::mlp(0));
        assert_eq!(mlp.iter().filter(|&&f| f).count(), 8 * 16 + 16 + 16 * 8 + 8);
    }
}
