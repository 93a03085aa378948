//! `formation-bench reproduce`: the reproduction set of docs/reproductions.md. Trains each example with
//! `--analyze` through the `formation` binary, runs the birth-window detector (and, for modular addition, the
//! Fourier progress measures at evenly spaced checkpoints), and prints per published claim the measured value
//! next to the published one.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use host::layout::RunLayout;
use serde_json::Value;

#[derive(clap::Args)]
pub struct ReproduceArgs {
    /// Where the runs go (replaced).
    #[arg(long, default_value = "reproductions")]
    pub out: PathBuf,
    /// The reference modular-addition run (p = 113, 20 000 steps; tens of minutes on 2 cores) instead of the
    /// small one (p = 53, 4 000 steps).
    #[arg(long)]
    pub full: bool,
    /// Checkpoints between two Fourier measurements of the modular-addition run.
    #[arg(long, default_value_t = 4)]
    pub fourier_every: usize,
}

/// One published claim and what this machine measured.
struct Claim {
    paper: &'static str,
    claim: &'static str,
    published: String,
    measured: String,
    holds: bool,
}

pub fn run(args: ReproduceArgs) -> anyhow::Result<()> {
    let formation = std::env::current_exe()?.with_file_name("formation");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("cannot replace {}", args.out.display()))?;
    }
    std::fs::create_dir_all(&args.out)?;
    let trained = |config: &str, name: &str| -> anyhow::Result<(PathBuf, Vec<Value>, Vec<Value>)> {
        let dir = args.out.join(name);
        eprintln!("training {config} -> {}", dir.display());
        formation_ok(
            &formation,
            &[
                "train".as_ref(),
                examples.join(config).as_os_str(),
                "--analyze".as_ref(),
                "--out".as_ref(),
                dir.as_os_str(),
            ],
        )?;
        formation_ok(&formation, &["windows".as_ref(), dir.as_os_str()])?;
        let layout = RunLayout::new(&dir);
        let rows = read_jsonl(&layout.metrics())?;
        let windows: Value =
            serde_json::from_str(&std::fs::read_to_string(layout.birth_windows())?)?;
        let windows = windows["windows"].as_array().cloned().unwrap_or_default();
        Ok((dir, rows, windows))
    };
    let mut claims = vec![];
    let mut costs = vec![];

    let config = if args.full {
        "modular-addition.toml"
    } else {
        "modular-addition-small.toml"
    };
    let (dir, rows, windows) = trained(config, "modular-addition")?;
    costs.push(replay_cost(config, &rows, &windows));
    claims.extend(nanda(
        &formation,
        &dir,
        &rows,
        &windows,
        args.fourier_every,
    )?);
    let (_, rows, windows) = trained("induction.toml", "induction")?;
    costs.push(replay_cost("induction.toml", &rows, &windows));
    claims.extend(olsson(&rows, &windows));
    let (_, rows, windows) = trained("markov-chains.toml", "markov-chains")?;
    costs.push(replay_cost("markov-chains.toml", &rows, &windows));
    claims.extend(edelman(&rows, &windows));
    let (_, rows, windows) = trained("sparse-parity.toml", "sparse-parity")?;
    costs.push(replay_cost("sparse-parity.toml", &rows, &windows));
    claims.extend(barak(&rows));
    claims.extend(decision(&formation, &examples, &args.out)?);

    println!("| paper | claim | published | measured here | holds |");
    println!("|---|---|---|---|---|");
    for c in &claims {
        println!(
            "| {} | {} | {} | {} | {} |",
            c.paper,
            c.claim,
            c.published,
            c.measured,
            if c.holds { "yes" } else { "no" }
        );
    }
    println!();
    println!("| example | steps | windows | top window (kind) | replayed steps | of the run |");
    println!("|---|---|---|---|---|---|");
    for line in &costs {
        println!("{line}");
    }
    Ok(())
}

/// What a dense replay of the top-ranked window costs next to the run: the steps from the last checkpoint at or
/// before its start to its end, as a fraction of the run's steps (one table row).
fn replay_cost(config: &str, rows: &[Value], windows: &[Value]) -> String {
    let steps = rows.last().map(step).unwrap_or_default();
    let top = windows.iter().find(|w| w["rank"] == 1);
    let Some(top) = top else {
        return format!("| {config} | {steps} | 0 | - | - | - |");
    };
    let (start, end) = (
        top["start_step"].as_u64().unwrap_or_default(),
        top["end_step"].as_u64().unwrap_or_default(),
    );
    let from = rows
        .iter()
        .map(step)
        .filter(|&s| s <= start)
        .max()
        .unwrap_or_default();
    let replayed = end.saturating_sub(from);
    format!(
        "| {config} | {steps} | {} | {} {start}–{end} ({}) | {replayed} | {:.1} % |",
        windows.len(),
        top["id"].as_str().unwrap_or("?"),
        top["kind"].as_str().unwrap_or("?"),
        100.0 * replayed as f64 / steps.max(1) as f64
    )
}

fn formation_ok(formation: &Path, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let output = Command::new(formation).args(args).output()?;
    if !output.status.success() {
        bail!(
            "formation {:?} failed: {}",
            args,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Value>> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect::<anyhow::Result<_>>()
}

fn num(row: &Value, path: &str) -> Option<f64> {
    path.split('.').try_fold(row, |v, key| v.get(key))?.as_f64()
}

fn step(row: &Value) -> u64 {
    row["step"].as_u64().unwrap_or_default()
}

/// The first row's step at which `pred` holds.
fn first(rows: &[Value], pred: impl Fn(&Value) -> bool) -> Option<u64> {
    rows.iter().find(|r| pred(r)).map(step)
}

/// The id of the window holding `at`, or `-`.
fn window_of(windows: &[Value], at: u64) -> String {
    windows
        .iter()
        .find(|w| {
            w["start_step"].as_u64().is_some_and(|s| s <= at)
                && w["end_step"].as_u64().is_some_and(|e| at <= e)
        })
        .map_or("-".into(), |w| {
            format!(
                "{} {}–{}",
                w["id"].as_str().unwrap_or("?"),
                w["start_step"],
                w["end_step"]
            )
        })
}

/// The step ending the interval over which `value` changes most in the direction `sign` (+1 rise, −1 fall)
/// between consecutive checkpoints.
fn steepest(rows: &[Value], sign: f64, value: impl Fn(&Value) -> Option<f64>) -> Option<u64> {
    rows.windows(2)
        .filter_map(|w| Some((step(&w[1]), sign * (value(&w[1])? - value(&w[0])?))))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(s, _)| s)
}

fn fmt_step(s: Option<u64>) -> String {
    s.map_or("never".into(), |s| s.to_string())
}

/// Nanda et al. 2023 on modular addition: memorization ends, then circuit formation (restricted loss falls while
/// the test loss stays high), then cleanup (test loss falls); about five key frequencies.
fn nanda(
    formation: &Path,
    dir: &Path,
    rows: &[Value],
    windows: &[Value],
    every: usize,
) -> anyhow::Result<Vec<Claim>> {
    let evals: Vec<&Value> = rows.iter().filter(|r| r["eval"].is_object()).collect();
    let memorized = evals
        .iter()
        .find(|r| num(r, "eval.train.accuracy").is_some_and(|a| a > 0.99))
        .map(|r| step(r));
    let generalized = evals
        .iter()
        .find(|r| num(r, "eval.test.accuracy").is_some_and(|a| a > 0.95))
        .map(|r| step(r));
    // The Fourier measures at every `every`-th checkpoint (and the last).
    let mut fourier = vec![];
    let last = rows.len().saturating_sub(1);
    for (i, row) in rows.iter().enumerate() {
        if i % every.max(1) != 0 && i != last {
            continue;
        }
        let s = step(row).to_string();
        formation_ok(
            formation,
            &[
                "intervene".as_ref(),
                dir.as_os_str(),
                "--step".as_ref(),
                s.as_ref(),
                "--kind".as_ref(),
                "fourier".as_ref(),
            ],
        )?;
        let report: Value = serde_json::from_str(&std::fs::read_to_string(
            RunLayout::new(dir)
                .interventions(step(row))
                .join("fourier.json"),
        )?)?;
        fourier.push((step(row), report));
    }
    let value = |report: &Value, key: &str| report.get(key).and_then(Value::as_f64);
    let (start_restricted, start_test) = fourier
        .first()
        .map(|(_, r)| (value(r, "restricted_loss"), value(r, "test_loss")))
        .unwrap_or_default();
    // "Falls": below half its value at the start.
    let fell = |key: &str, start: Option<f64>| {
        fourier
            .iter()
            .find(|(_, r)| value(r, key).zip(start).is_some_and(|(v, s)| v < 0.5 * s))
            .map(|(s, _)| *s)
    };
    let restricted_fell = fell("restricted_loss", start_restricted);
    let test_fell = fell("test_loss", start_test);
    let key_count = fourier.last().and_then(|(_, r)| {
        let energy: Vec<f64> = r["neuron_energy_by_frequency"]
            .as_array()?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        Some(frequencies_for(&energy, 0.9))
    });
    Ok(vec![
        Claim {
            paper: "Nanda et al. 2023",
            claim: "memorization ends before generalization (train accuracy > 0.99, then test accuracy > 0.95)",
            published: "memorization ~1.4k, grokking ~9k–13k of 40k steps (p = 113)".into(),
            measured: format!(
                "memorized {}, generalized {} (windows {} / {})",
                fmt_step(memorized),
                fmt_step(generalized),
                memorized.map_or("-".into(), |s| window_of(windows, s)),
                generalized.map_or("-".into(), |s| window_of(windows, s)),
            ),
            holds: memorized.zip(generalized).is_some_and(|(m, g)| m < g),
        },
        Claim {
            paper: "Nanda et al. 2023",
            claim: "circuit formation: the restricted loss falls before the test loss (each below half its start)",
            published: "restricted loss falls first".into(),
            measured: format!(
                "restricted {}, test {}",
                fmt_step(restricted_fell),
                fmt_step(test_fell)
            ),
            holds: restricted_fell.zip(test_fell).is_some_and(|(r, t)| r <= t),
        },
        Claim {
            paper: "Nanda et al. 2023",
            claim: "a handful of key frequencies (how many hold 90 % of the MLP's Fourier energy at =, final checkpoint; holds if 2 to 8)",
            published: "5 (p = 113)".into(),
            measured: key_count.map_or("-".into(), |k| k.to_string()),
            holds: key_count.is_some_and(|k| (2..=8).contains(&k)),
        },
    ])
}

/// How many frequencies, largest first, hold `share` of the energy over frequencies 1.. (the constant term
/// excluded).
fn frequencies_for(energy: &[f64], share: f64) -> usize {
    let mut sorted: Vec<f64> = energy.iter().skip(1).copied().collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = sorted.iter().sum();
    let mut held = 0.0;
    for (i, e) in sorted.iter().enumerate() {
        held += e;
        if held >= share * total {
            return i + 1;
        }
    }
    sorted.len()
}

/// The decision rule (docs/compare.md) on real runs, three seeds each: a configuration trained until it
/// settles, whose mechanism one or two heads carry, is READY; the induction example is NOT READY.
fn decision(formation: &Path, examples: &Path, out: &Path) -> anyhow::Result<Vec<Claim>> {
    let cases = [
        (
            "induction-converged.toml",
            true,
            "induction-converged.toml, seeds 0-2 (trained until it settles; one or two heads carry the mechanism)",
        ),
        (
            "induction.toml",
            false,
            "induction.toml, seeds 0-2 (four heads per layer at a constant learning rate: four heads share the effect, still moving at the end)",
        ),
    ];
    let mut claims = vec![];
    for (config, expected, claim) in cases {
        let study = out.join(format!("decision-{}", config.trim_end_matches(".toml")));
        eprintln!(
            "replicating {config} over seeds 0..3 -> {}",
            study.display()
        );
        formation_ok(
            formation,
            &[
                "replicate".as_ref(),
                examples.join(config).as_os_str(),
                "--seeds".as_ref(),
                "0..3".as_ref(),
                "-j".as_ref(),
                "2".as_ref(),
                "--out".as_ref(),
                study.as_os_str(),
            ],
        )?;
        formation_ok(formation, &["compare".as_ref(), study.as_os_str()])?;
        let compare: Value =
            serde_json::from_str(&std::fs::read_to_string(study.join("compare.json"))?)?;
        let decision = &compare["groups"][0]["decision"];
        let ready = decision["ready"].as_bool().unwrap_or(false);
        let failed: Vec<&str> = decision["criteria"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["passed"] != Value::Bool(true))
            .filter_map(|c| c["name"].as_str())
            .collect();
        let verdict = |ready: bool| if ready { "READY" } else { "NOT READY" };
        claims.push(Claim {
            paper: "decision rule (docs/compare.md)",
            claim,
            published: verdict(expected).into(),
            measured: if ready {
                verdict(true).into()
            } else {
                format!("NOT READY (failed: {})", failed.join(", "))
            },
            holds: ready == expected,
        });
    }
    Ok(claims)
}

/// Olsson et al. 2022: the induction bump (the loss's steepest fall) coincides with the rise of the induction
/// head score and the drop of the in-context score.
fn olsson(rows: &[Value], windows: &[Value]) -> Vec<Claim> {
    let loss = steepest(rows, -1.0, |r| num(r, "behavior.loss"));
    let score = steepest(rows, 1.0, |r| {
        r["heads"]
            .as_object()?
            .values()
            .filter_map(|h| h["scores"]["induction_head"].as_f64())
            .reduce(f64::max)
    });
    let in_context = steepest(rows, -1.0, |r| num(r, "behavior.in_context_score"));
    let steps = [loss, score, in_context];
    let together = steps.iter().all(|s| s.is_some())
        && windows.iter().any(|w| {
            steps.iter().flatten().all(|&s| {
                w["start_step"].as_u64().is_some_and(|a| a <= s)
                    && w["end_step"].as_u64().is_some_and(|e| s <= e)
            })
        });
    vec![Claim {
        paper: "Olsson et al. 2022",
        claim: "the loss bump, the induction-head score rise and the in-context score drop coincide (steepest change of each, in one window)",
        published: "same training window".into(),
        measured: format!(
            "loss {}, induction score {}, in-context score {} ({})",
            fmt_step(loss),
            fmt_step(score),
            fmt_step(in_context),
            score.map_or("-".into(), |s| window_of(windows, s))
        ),
        holds: together,
    }]
}

/// Edelman et al. 2024: the model's nearest in-context oracle goes uniform → unigram → bigram.
fn edelman(rows: &[Value], windows: &[Value]) -> Vec<Claim> {
    let mut stages: Vec<(&str, u64)> = vec![];
    for r in rows {
        let nearest = ["uniform", "unigram", "bigram"]
            .into_iter()
            .filter_map(|o| Some((o, num(r, &format!("behavior.progress.kl_{o}"))?)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((o, _)) = nearest
            && stages.last().map(|s| s.0) != Some(o)
        {
            stages.push((o, step(r)));
        }
    }
    let order: Vec<&str> = stages.iter().map(|s| s.0).collect();
    // Each transition (to unigram, to bigram) lies in a window of its own. A transition's time is where the
    // model approached the next oracle fastest while the previous one was nearest (the steepest fall of the KL
    // to it, ending at or before the switch): the switch itself is a crossing of two KL curves, which can come a
    // checkpoint after the change that causes it (docs/windows.md).
    let approached: Vec<(&str, u64, Option<u64>)> = stages
        .windows(2)
        .map(|pair| {
            let ((_, since), (oracle, switch)) = (pair[0], pair[1]);
            // The rows are in step order: the stretch is a slice of them, not a copy.
            let stretch = &rows[rows.partition_point(|r| step(r) < since)
                ..rows.partition_point(|r| step(r) <= switch)];
            let fastest = steepest(stretch, -1.0, |r| {
                num(r, &format!("behavior.progress.kl_{oracle}"))
            });
            (oracle, switch, fastest)
        })
        .collect();
    let transitions: Vec<String> = approached
        .iter()
        .map(|(_, _, at)| at.map_or("-".into(), |s| window_of(windows, s)))
        .collect();
    let separated = transitions.iter().all(|w| w != "-")
        && transitions.windows(2).all(|pair| pair[0] != pair[1]);
    let first = stages.first().map(|(o, s)| format!("{o} from {s}"));
    vec![Claim {
        paper: "Edelman et al. 2024",
        claim: "stage order of the nearest oracle (smallest KL to the model), each transition (fastest approach to the next oracle) in a window of its own",
        published: "uniform → unigram → bigram".into(),
        measured: first
            .into_iter()
            .chain(approached.iter().zip(&transitions).map(|((o, s, at), w)| {
                format!(
                    "{o} from {s} (approached fastest at {}, {w})",
                    fmt_step(*at)
                )
            }))
            .collect::<Vec<_>>()
            .join(" → "),
        holds: order == ["uniform", "unigram", "bigram"] && separated,
    }]
}

/// Barak et al. 2022: progress on the plateau (attention to the hidden bits) before the loss jump.
fn barak(rows: &[Value]) -> Vec<Claim> {
    let ln2 = 2f64.ln();
    let jump = first(rows, |r| {
        num(r, "behavior.loss").is_some_and(|l| l < 0.5 * ln2)
    });
    let start = rows
        .first()
        .and_then(|r| num(r, "behavior.progress.relevant_attention"));
    let progress = first(rows, |r| {
        num(r, "behavior.progress.relevant_attention")
            .zip(start)
            .is_some_and(|(a, s)| a > s + 0.03)
    });
    vec![Claim {
        paper: "Barak et al. 2022",
        claim: "hidden progress: the weight on the relevant coordinates (attention to the hidden bits, +0.03 over its start) rises before the loss jump (loss < ln 2 / 2)",
        published: "progress measure rises during the plateau".into(),
        measured: format!("progress {}, jump {}", fmt_step(progress), fmt_step(jump)),
        holds: progress.zip(jump).is_some_and(|(p, j)| p < j),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequencies_holding_a_share_of_the_energy() {
        // Constant term 100 (ignored); the rest 5, 3, 1, 1: 90 % of 10 needs 5 + 3 + 1 = 9 → 3 frequencies.
        assert_eq!(frequencies_for(&[100.0, 1.0, 5.0, 1.0, 3.0], 0.9), 3);
    }
}
