//! The host-side vocabulary every formation crate shares, with no dependency on burn or on the trainer:
//!
//! - [`array::HostArray`] and [`hook::HookName`]: activations as they leave the device, named by their
//!   TransformerLens hook point; [`names`]: [`names::Component`] (`L1H2`, `L0`) and [`names::ParamName`]
//!   (state-dict names).
//! - [`examples`]: token sequences and named per-example labels; [`detector::HeadDetector`] and
//!   [`measure::ProgressMeasure`], the head-detector patterns and progress measures a task declares;
//!   [`rng::SplitMix64`], the seedable generator data, initialization and probe sets are drawn from.
//! - [`alloc::Routed`]: the binaries' global allocator (mimalloc for training, the system one for analysis).
//! - [`layout`]: every path of a run and a study directory; [`lock`]: the one-writer lock and directories that
//!   appear whole; [`files`], [`jsonl`], [`h5`]: whole-file writes, JSON-lines rows, HDF5 attributes;
//!   [`failpoint`]: crash injection for the tests.

pub mod alloc;
pub mod array;
pub mod detector;
pub mod examples;
pub mod failpoint;
pub mod files;
pub mod h5;
pub mod hook;
pub mod jsonl;
pub mod layout;
pub mod lock;
pub mod measure;
pub mod names;
pub mod rng;
