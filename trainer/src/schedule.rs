//! *When* things happen: which steps save a checkpoint and the learning rate at each step. How a checkpoint
//! is written lives in `checkpoint`.

use std::collections::BTreeSet;

use crate::config::{CheckpointConfig, LrSchedule, OptimConfig};

/// The sorted steps at which a checkpoint is saved: 0, the powers of two up to `log_spaced_until`, every
/// multiple of `every`, and the last step. Step `s` means "after `s` optimizer updates".
pub fn checkpoint_steps(config: &CheckpointConfig, total_steps: u64) -> Vec<u64> {
    let mut steps = BTreeSet::from([0, total_steps]);
    let mut power = 1;
    while power <= config.log_spaced_until.min(total_steps) {
        steps.insert(power);
        power *= 2;
    }
    steps.extend((config.every..=total_steps).step_by(config.every as usize));
    steps.into_iter().collect()
}

/// Learning rate for the update that turns step `step` into `step + 1`: linear warmup over `warmup_steps`
/// (from lr/warmup to lr), then constant or cosine decay to `lr * min_lr_ratio` at `total_steps`.
pub fn learning_rate(optim: &OptimConfig, step: u64, total_steps: u64) -> f64 {
    if step < optim.warmup_steps {
        return optim.lr * (step + 1) as f64 / optim.warmup_steps as f64;
    }
    match optim.schedule {
        LrSchedule::Constant => optim.lr,
        LrSchedule::Cosine => {
            let span = total_steps.saturating_sub(optim.warmup_steps).max(1) as f64;
            let progress = ((step - optim.warmup_steps) as f64 / span).min(1.0);
            let min = optim.lr * optim.min_lr_ratio;
            min + (optim.lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_log_spaced_early_then_linear() {
        let c = CheckpointConfig {
            every: 100,
            log_spaced_until: 64,
        };
        assert_eq!(
            checkpoint_steps(&c, 250),
            vec![0, 1, 2, 4, 8, 16, 32, 64, 100, 200, 250]
        );
        let c = CheckpointConfig {
            every: 5,
            log_spaced_until: 0,
        };
        assert_eq!(checkpoint_steps(&c, 10), vec![0, 5, 10]);
    }

    fn optim(schedule: LrSchedule) -> OptimConfig {
        OptimConfig {
            lr: 1.0,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_steps: 4,
            schedule,
            min_lr_ratio: 0.1,
            grad_clip: None,
        }
    }

    #[test]
    fn warmup_then_constant() {
        let o = optim(LrSchedule::Constant);
        let lrs: Vec<f64> = (0..6).map(|s| learning_rate(&o, s, 10)).collect();
        assert_eq!(lrs, vec![0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn cosine_reaches_min_at_the_end_and_half_way_is_the_mean() {
        let o = optim(LrSchedule::Cosine);
        // After warmup (4 steps) the decay spans 10 steps: half way (step 9) gives (1 + 0.1) / 2.
        assert!((learning_rate(&o, 9, 14) - 0.55).abs() < 1e-12);
        assert!((learning_rate(&o, 14, 14) - 0.1).abs() < 1e-12);
    }
}
