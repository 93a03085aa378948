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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `dir`.
    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// CI type-checks the `cuda` feature on this crate alone, which covers the feature only while no other crate
    /// has cuda-gated code: this fails when one gets some.
    #[test]
    fn no_other_crate_has_cuda_gated_code() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut files = Vec::new();
        for dir in [
            "src", "bench", "tests", "host", "probes", "analysis", "study",
        ] {
            sources(&root.join(dir), &mut files);
        }
        assert!(
            files.len() > 50,
            "{} sources under {}",
            files.len(),
            root.display()
        );
        let gated: Vec<_> = files
            .iter()
            .filter(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .contains("feature = \"cuda\"")
            })
            .collect();
        assert!(
            gated.is_empty(),
            "cuda-gated code outside trainer: {gated:?}"
        );
    }
}
