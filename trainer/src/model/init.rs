//! Deterministic parameter initialization from our own seeded RNG, so the same seed gives the same weights
//! on every backend.

use burn::module::Param;
use burn::prelude::*;

use host::rng::SplitMix64;

/// Normal(0, std²) weights of `shape`.
pub fn normal<const D: usize>(
    rng: &mut SplitMix64,
    shape: [usize; D],
    std: f64,
    device: &Device,
) -> Param<Tensor<D>> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
    Param::from_data(TensorData::new(values, shape), device)
}

/// Constant parameter of `shape` (zeros for biases, ones for LayerNorm weights).
pub fn constant<const D: usize>(
    shape: [usize; D],
    value: f32,
    device: &Device,
) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::<D>::full(shape, value, device))
}
