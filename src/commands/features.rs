//! `formation features RUN_DIR [--from S] [--to S]`: sparse dictionaries across checkpoints — one per saved
//! checkpoint in the range (of a run, or of a replayed window `RUN_DIR/windows/WN`, whose checkpoints are
//! dense), each warm-started from the previous one so latents keep their identity, with every latent's firing
//! frequency per checkpoint, its decoder cosine to the previous checkpoint and its birth step. Writes
//! `analysis/features.json` and the same tree as `analysis/features.h5`.

use std::path::PathBuf;

use analysis::features::dictionary::Dictionary;
use analysis::features::run::features_at;
use analysis::features::window::{Birth, birth, continuity};
use analysis::sinks::report::write_report_h5;
use anyhow::bail;
use host::files::write_atomic;
use host::layout::RunLayout;
use host::lock::DirLock;
use serde_json::{Value, json};
use trainer::checkpoint;
use trainer::model::{ModelDims, Transformer};
use trainer::run_dir::RunFiles;
use trainer::tasks;

/// A latent is alive at a checkpoint when it fires on at least this fraction of the probe set's activations:
/// above dead, and below what a feature of one token at one key position fires on (induction: 1/64 of the
/// examples at 1 of 3 positions, 0.5 %), so rare specific features count.
const ALIVE: f64 = 0.002;
/// …and steady when its decoder direction's cosine with the previous checkpoint's is at least this.
const STEADY_COSINE: f64 = 0.9;

#[derive(clap::Args)]
pub struct Args {
    /// A run directory, or a replayed window (RUN_DIR/windows/WN), with a pinned probe set.
    run_dir: PathBuf,
    /// The first checkpoint (default: the first saved).
    #[arg(long)]
    from: Option<u64>,
    /// The last checkpoint (default: the last saved).
    #[arg(long)]
    to: Option<u64>,
    /// The residual-stream boundary, instead of the config's `[features] boundary`
    /// (`blocks.{l}.hook_resid_pre|mid|post`).
    #[arg(long)]
    boundary: Option<String>,
    /// Latents active per activation, instead of the config's `[features] k`.
    #[arg(long)]
    k: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let run = RunLayout::new(&args.run_dir);
    let mut config = run.read_config()?;
    config.features = config.features.edit(|features| {
        features.boundary = args.boundary.or(features.boundary.take());
        features.k = args.k.unwrap_or(features.k);
    })?;
    config.validate_features()?;
    let saved = checkpoint::list(&run.checkpoints())?;
    let (from, to) = (args.from.unwrap_or(0), args.to.unwrap_or(u64::MAX));
    let steps: Vec<u64> = saved
        .iter()
        .copied()
        .filter(|s| (from..=to).contains(s))
        .collect();
    if steps.len() < 2 {
        bail!(
            "fewer than two saved checkpoints between {from} and {} in {} (saved: {saved:?})",
            args.to.map_or("the end".into(), |t| t.to_string()),
            run.checkpoints().display()
        );
    }
    let _lock = DirLock::acquire(&run.root, "formation features")?;
    let (out, born_in_range, latents) = features_across(&run, &config, &steps)?;
    crate::say!(
        "{} checkpoints from {} to {}: {born_in_range} of {latents} latents born in the range; wrote {}",
        steps.len(),
        steps[0],
        steps[steps.len() - 1],
        out.display()
    );
    Ok(())
}

/// Trains the warm-started dictionaries of `steps` (saved checkpoints of `run`, at least two) with `config`'s
/// `[features]` settings and writes `analysis/features.json` and `.h5`; returns the JSON's path, how many
/// latents were born in the range, and how many there are. The caller holds `run`'s write lock.
pub(crate) fn features_across(
    run: &RunLayout,
    config: &trainer::Config,
    steps: &[u64],
) -> anyhow::Result<(PathBuf, usize, usize)> {
    let probe = super::intervene::pinned_probe_set(run)?;
    let task = tasks::build(&config.task, config.train.seed)?;
    let (device, _) = trainer::device::pick();
    let dims = ModelDims::new(config, task.as_ref());
    let mut previous: Option<Dictionary> = None;
    let mut last_report = Value::Null;
    let (mut per_checkpoint, mut frequency, mut cosines) = (vec![], vec![], vec![]);
    for &step in steps {
        let dir = checkpoint::step_dir(&run.checkpoints(), step);
        let (model, _) = checkpoint::load_model(&dir, Transformer::new(&dims, 0, &device))?;
        let (dictionary, report) = features_at(
            &model,
            task.as_ref(),
            config,
            &probe,
            step,
            previous.as_ref(),
            &device,
        )?;
        eprintln!(
            "step {step}: variance explained {:.3}, {} dead",
            report["variance_explained"].as_f64().unwrap_or(f64::NAN),
            report["dead"]
        );
        cosines.push(match &previous {
            Some(p) => continuity(&p.w_dec, &dictionary.w_dec, dictionary.d),
            None => vec![1.0; dictionary.latents],
        });
        frequency.push(serde_json::from_value::<Vec<f64>>(
            report["latent_frequency"].clone(),
        )?);
        per_checkpoint.push(json!({
            "step": step,
            "variance_explained": report["variance_explained"],
            "normalized_mse": report["normalized_mse"],
            "dead": report["dead"],
            "dense": report["dense"],
            "delta_loss": report["delta_loss"],
            "fourier_fraction": report["fourier"]["frequency_weighted_fraction"],
        }));
        previous = Some(dictionary);
        last_report = report;
    }
    let last = previous.expect("at least two checkpoints");
    let alive = ALIVE;
    // The last checkpoint's card of each live latent: what it stands for at the end of the range.
    let card = |j: usize| {
        last_report["live_latents"]
            .as_array()
            .and_then(|cards| cards.iter().find(|c| c["latent"] == j))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let latents: Vec<Value> = (0..last.latents)
        .map(|j| {
            let f: Vec<f64> = frequency.iter().map(|row| row[j]).collect();
            let c: Vec<f64> = cosines.iter().map(|row| row[j]).collect();
            let born = birth(steps, &f, &c, alive, STEADY_COSINE);
            json!({
                "latent": j,
                "birth_step": match born { Birth::At(s) => json!(s), _ => Value::Null },
                "born": match born { Birth::Before => "before", Birth::At(_) => "in_range", Birth::Never => "never" },
                "frequency": f,
                "continuity": c,
                "last": card(j),
            })
        })
        .collect();
    let born_in_range = latents.iter().filter(|l| l["born"] == "in_range").count();
    let summary = json!({
        "steps": steps,
        "alive_above": alive,
        "steady_cosine": STEADY_COSINE,
        "checkpoints": per_checkpoint,
        "latents": latents,
        // [latents, checkpoints]: the raster of firing frequencies.
        "frequency": (0..last.latents).map(|j| frequency.iter().map(|row| row[j]).collect::<Vec<f64>>()).collect::<Vec<_>>(),
        "decoder": last.w_dec.chunks_exact(last.d).map(<[f32]>::to_vec).collect::<Vec<_>>(),
    });
    let out = run.features();
    std::fs::create_dir_all(run.analysis_dir())?;
    // The HDF5 copy first: a features.json on disk means both are complete.
    write_report_h5(&out.with_extension("h5"), &summary)?;
    write_atomic(&out, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    Ok((out, born_in_range, last.latents))
}
