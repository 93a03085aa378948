//! The one place that picks the compute device: burn-cuda with the `cuda` feature, else burn's flex CPU backend.

use burn::prelude::Device;

/// The device every command computes on, and its name for the run manifest.
pub fn pick() -> (Device, &'static str) {
    #[cfg(feature = "cuda")]
    {
        (Device::cuda(0), "cuda:0")
    }
    #[cfg(not(feature = "cuda"))]
    {
        (Device::flex(), "cpu-flex")
    }
}
