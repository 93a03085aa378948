//! The local learning coefficient of a transformer checkpoint: [`super::llc::estimate_llc`] with the loss and
//! gradient of the model on its training data (the full train split, or the first training batch for tasks
//! with a generated stream), parameters flattened in state-dict order.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use trainer::config::{Config, LlcConfig};
use trainer::model::{Transformer, cross_entropy, int_tensor};
use trainer::tasks::Task;

use super::llc::{LlcEstimate, SgldConfig, estimate_llc};

/// λ̂ at `model`'s weights (the checkpoint is w*), with the sampler settings it used (`nbeta` resolved: the
/// config's, or n / ln n for the n examples of the loss).
pub fn checkpoint_llc(
    model: &Transformer,
    task: &dyn Task,
    config: &Config,
    llc: &LlcConfig,
    device: &Device,
) -> (SgldConfig, LlcEstimate) {
    let device = device.clone().without_autodiff().autodiff();
    let data = task.train_batch(0, config.train.batch_size);
    let tokens = int_tensor(&data.tokens, data.n, data.seq_len, &device);
    let targets = int_tensor(&data.targets, data.n, data.n_answers, &device);
    let answers = model.answer_queries(task.answer_positions(), &device);
    let n = data.n as f64;
    let template = model.clone().fork(&device);
    let w_star: Vec<f64> = flatten(&template);
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
        nbeta: llc.nbeta.unwrap_or(n / n.ln().max(1.0)),
        chains: llc.chains,
        draws: llc.draws,
        burn_in: llc.burn_in,
        seed: llc.seed,
    };
    let estimate = estimate_llc(&w_star, loss_and_grad, &sgld);
    (sgld, estimate)
}

/// Every float parameter's values in visiting order (the order [`SetParams`] reads them back in).
fn flatten(model: &Transformer) -> Vec<f64> {
    struct Flatten(Vec<f64>);
    impl ModuleVisitor for Flatten {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = param
                .val()
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap_or_default();
            self.0.extend(values.into_iter().map(f64::from));
        }
    }
    let mut flat = Flatten(vec![]);
    model.visit(&mut flat);
    flat.0
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
