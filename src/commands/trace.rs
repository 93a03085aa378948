//! `formation trace CONFIG [--out DIR] [--top N] [--every K]`: Phase A in one command. Trains with the in-loop
//! analysis, finds the birth windows, replays the top-ranked ones densely with the config's window
//! interventions, and writes the report. Each stage keeps what is done, so a rerun after a kill continues where
//! it stopped, and a rerun of a finished trace only rewrites the windows file and the report.

use std::path::PathBuf;

use analysis::windows::read_windows;
use host::layout::RunLayout;
use trainer::Config;

use crate::commands::{replay, report, train, windows};
use crate::progress::Display;

#[derive(clap::Args)]
pub struct Args {
    /// The run's TOML config (see examples/).
    config: PathBuf,
    /// Run directory (default: runs/<config file stem>); an existing one is resumed (CONFIG must equal its
    /// config.toml).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replay this many of the top-ranked birth windows (0: none).
    #[arg(long, default_value_t = 1)]
    top: usize,
    /// Checkpoint every K steps inside a replayed window (default: a fortieth of the window, at least 1).
    #[arg(long)]
    every: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Checked before anything is created: a bad config changes nothing.
    Config::load(&args.config)?;
    let root = args
        .out
        .clone()
        .unwrap_or_else(|| train::default_run_dir(&args.config));
    let run = RunLayout::new(&root);
    let stages = if args.top > 0 { 4 } else { 3 };
    let mut display = Display::new();

    let stage = |n: usize, what: &str| format!("[{n}/{stages}] {what}");
    eprintln!("{}", stage(1, "train with the in-loop analysis"));
    display.set_stage(&stage(1, "train"));
    let resume = run.exists();
    train::run_with(
        train::Args {
            config: args.config.clone(),
            analyze: true,
            out: (!resume).then(|| root.clone()),
            resume: resume.then(|| root.clone()),
        },
        &mut display,
    )?;

    eprintln!("{}", stage(2, "birth windows"));
    windows::run(windows::Args {
        run_dir: root.clone(),
        config: None,
    })?;

    if args.top > 0 {
        let mut found = read_windows(&run)?;
        found.sort_by_key(|w| w.rank);
        found.truncate(args.top);
        if found.is_empty() {
            eprintln!("{}: no birth window to replay", stage(3, "replay"));
        }
        for window in &found {
            let what = format!("replay {} (rank {})", window.id, window.rank);
            eprintln!("{}", stage(3, &what));
            display.set_stage(&stage(3, &window.id));
            replay::replay_window(&run, &window.id, args.every, &mut display)?;
        }
    }

    eprintln!("{}", stage(stages, "report"));
    report::run(report::Args {
        dir: root.clone(),
        out: None,
    })?;
    crate::say!(
        "open {}: the training curves with the birth windows shaded, then probes, heads, MLP blocks and each \
         replayed window's interventions (or browse it with a step slider: formation serve {})",
        run.report().display(),
        root.display()
    );
    Ok(())
}
