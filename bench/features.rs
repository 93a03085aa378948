//! `formation-bench features`: how long one sparse dictionary (issue 17's TopK SAE) takes to train at a model's
//! width, on planted activations (so the same run also says whether it recovered what was planted).

use std::time::Instant;

use analysis::features::dictionary::{best_matches, dictionary_stats};
use analysis::features::planted::planted;
use analysis::features::sae::{SaeConfig, train_sae};

#[derive(clap::Args)]
pub struct FeaturesArgs {
    /// Residual width.
    #[arg(long, default_value_t = 128)]
    pub d_model: usize,
    /// Latents per residual dimension.
    #[arg(long, default_value_t = 4)]
    pub expansion: usize,
    #[arg(long, default_value_t = 8)]
    pub k: usize,
    /// Activations to train on (the default is `[features] inputs` 4 096 × 3 key positions).
    #[arg(long, default_value_t = 12_288)]
    pub activations: usize,
    /// Optimizer steps (`[features] steps`).
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    /// Planted directions (each activation combines `k` of them).
    #[arg(long, default_value_t = 256)]
    pub features: usize,
}

pub fn run(args: FeaturesArgs) -> anyhow::Result<()> {
    let (x, directions) = planted(args.features, args.d_model, args.k, args.activations, 1);
    let config = SaeConfig {
        latents: args.expansion * args.d_model,
        k: args.k,
        steps: args.steps,
        batch_size: 256,
        lr: 3e-3,
        seed: 0,
    };
    let (device, _) = trainer::device::pick();
    let started = Instant::now();
    let dictionary = train_sae(&x, args.d_model, &config, None, &device)?;
    let seconds = started.elapsed().as_secs_f64();
    let stats = dictionary_stats(&dictionary, &x, 0.5);
    let matches = best_matches(&dictionary, &directions);
    let recovered = matches.iter().filter(|m| m.1 >= 0.95).count();
    println!(
        "| d_model | latents | k | activations | steps | seconds | steps/s | variance explained | planted directions recovered (|cos| ≥ 0.95) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {:.2} | {:.0} | {:.3} | {} of {} |",
        args.d_model,
        config.latents,
        args.k,
        args.activations,
        args.steps,
        seconds,
        args.steps as f64 / seconds,
        stats.variance_explained,
        recovered,
        matches.len()
    );
    Ok(())
}
