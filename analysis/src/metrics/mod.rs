//! Metrics: pure functions over host arrays (`f32` slices with explicit shapes). Nothing here sees a device.

pub mod attribution;
pub mod behavior;
pub mod composition;
pub mod dynamics;
pub mod heads;
pub mod mlp;
pub mod progress;
pub mod residual;
