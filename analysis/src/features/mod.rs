//! Level 4 of the analysis hierarchy: residual features as the latents of sparse dictionaries (TopK sparse
//! autoencoders, Gao et al. 2024) trained on the residual stream at a task's key positions. [`sae`] trains one
//! in burn; [`dictionary`] holds the trained weights and the pure measurements of them.

pub mod dictionary;
pub mod latents;
pub mod planted;
pub mod run;
pub mod sae;
pub mod subspace;
pub mod window;
