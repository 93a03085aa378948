//! Features across a window's checkpoints: one dictionary per checkpoint, each trained from the previous
//! checkpoint's (warm start), so latent j keeps its identity from one checkpoint to the next; that it does is
//! measured by the cosine of its decoder direction between consecutive checkpoints (per-checkpoint dictionaries
//! matched by decoder cosine, as SAE-Track does, Xu et al. 2024, with the match given by the warm start and
//! checked rather than searched). Each latent's birth step: the first checkpoint from which it fires at least at
//! `alive` and keeps its direction (consecutive cosine ≥ `steady`) to the window's end.

use serde::Serialize;

/// When a latent was born.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Birth {
    /// Already alive and steady at the first checkpoint.
    Before,
    At(u64),
    /// Not alive and steady at the last checkpoint.
    Never,
}

/// The birth of one latent from its firing frequency at each of `steps` and its decoder cosine with the
/// previous checkpoint (`continuity[0]` is not used): the first checkpoint t such that at every checkpoint from
/// t on the frequency is ≥ `alive`, and at every checkpoint after t the cosine is ≥ `steady`.
pub fn birth(
    steps: &[u64],
    frequency: &[f64],
    continuity: &[f64],
    alive: f64,
    steady: f64,
) -> Birth {
    let n = steps.len();
    // Walk back from the last checkpoint while the latent is alive there and steady into the next one.
    let mut first = n;
    while first > 0 {
        let t = first - 1;
        let steady_into_next = t + 1 == n || continuity[t + 1] >= steady;
        if frequency[t] >= alive && steady_into_next {
            first = t;
        } else {
            break;
        }
    }
    match first {
        0 => Birth::Before,
        t if t < n => Birth::At(steps[t]),
        _ => Birth::Never,
    }
}

/// The cosine of each latent's decoder direction between two dictionaries of the same shape (`w_dec`
/// [latents, d], unit rows): one value per latent.
pub fn continuity(previous: &[f32], current: &[f32], d: usize) -> Vec<f64> {
    previous
        .chunks_exact(d)
        .zip(current.chunks_exact(d))
        .map(|(a, b)| crate::metrics::dynamics::cosine(a, b))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn births_by_hand() {
        let steps = [100, 200, 300, 400];
        let steady = [1.0, 0.99, 0.99, 0.99];
        // Fires from 300 on: born at 300.
        assert_eq!(
            birth(&steps, &[0.0, 0.001, 0.02, 0.03], &steady, 0.01, 0.9),
            Birth::At(300)
        );
        // Alive throughout: born before the window.
        assert_eq!(birth(&steps, &[0.05; 4], &steady, 0.01, 0.9), Birth::Before);
        // Alive at 200, gone at 300, back at 400: born at 400 (the last rise counts).
        assert_eq!(
            birth(&steps, &[0.0, 0.05, 0.0, 0.05], &steady, 0.01, 0.9),
            Birth::At(400)
        );
        // Dead at the end: never.
        assert_eq!(
            birth(&steps, &[0.05, 0.05, 0.05, 0.0], &steady, 0.01, 0.9),
            Birth::Never
        );
        // Alive throughout but its direction turns between 200 and 300 (cosine 0.2): born at 300.
        assert_eq!(
            birth(&steps, &[0.05; 4], &[1.0, 0.99, 0.2, 0.99], 0.01, 0.9),
            Birth::At(300)
        );
    }

    #[test]
    fn continuity_is_the_cosine_per_latent() {
        // Two latents in d = 2: the first keeps (1, 0), the second turns from (0, 1) to (1, 0).
        let c = continuity(&[1.0, 0.0, 0.0, 1.0], &[1.0, 0.0, 1.0, 0.0], 2);
        assert_eq!(c, vec![1.0, 0.0]);
    }
}
