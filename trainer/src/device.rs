//! The one place that picks the compute device: burn-cuda with the `cuda` feature, else burn's flex CPU backend.
//! It lives here, beside the only other cuda-gated code (the model's kernel extension), so type-checking the
//! `cuda` feature needs this crate alone (`scripts/test.sh`).

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
