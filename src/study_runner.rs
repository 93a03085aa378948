//! Runs a study's unfinished runs on this machine, `jobs` at once, each as its own
//! `formation study-task` process writing to `logs/NAME.log`; one progress line per run (read from the run's
//! `metrics/train.jsonl`). A failed run is reported and the others go on.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use host::layout::StudyLayout;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use study::study::{PlannedRun, RunState, StudyFiles, StudyManifest, last_logged_step};
use trainer::Config;

struct Running<'a> {
    run: &'a PlannedRun,
    child: Child,
    bar: Option<ProgressBar>,
    started: Instant,
}

pub fn run_local(study: &StudyLayout, manifest: &StudyManifest, jobs: usize) -> anyhow::Result<()> {
    let todo: Vec<&PlannedRun> = manifest
        .runs
        .iter()
        .filter(|r| study.state(&r.name) != RunState::Done)
        .collect();
    let skipped = manifest.runs.len() - todo.len();
    eprintln!(
        "study {}: {} runs, {} to run ({skipped} already done), {jobs} at once",
        study.root.display(),
        manifest.runs.len(),
        todo.len()
    );
    let exe = std::env::current_exe().context("locating the formation binary")?;
    let bars = std::io::stderr().is_terminal().then(MultiProgress::new);
    let style = ProgressStyle::with_template("{prefix:<32} {bar:25} {pos}/{len} steps  {msg}")
        .expect("valid template");
    let mut queue = todo.into_iter();
    let mut running: Vec<Running> = vec![];
    let mut failed: Vec<(String, String)> = vec![];
    let mut finished = 0;
    loop {
        while running.len() < jobs
            && let Some(run) = queue.next()
        {
            let log_path = study.log(&run.name);
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .with_context(|| format!("opening {}", log_path.display()))?;
            let child = Command::new(&exe)
                .arg("study-task")
                .arg(&study.root)
                .arg(&run.name)
                .env(
                    crate::commands::study::PARENT_PID_ENV,
                    std::process::id().to_string(),
                )
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting run {}", run.name))?;
            let total = Config::load(&study.config(&run.name))?.train.steps;
            let bar = bars.as_ref().map(|m| {
                let bar = m.add(ProgressBar::new(total));
                bar.set_style(style.clone());
                bar.set_prefix(run.name.clone());
                bar
            });
            if bar.is_none() {
                eprintln!("run {} started (log {})", run.name, log_path.display());
            }
            running.push(Running {
                run,
                child,
                bar,
                started: Instant::now(),
            });
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut still = vec![];
        for mut r in running {
            let step = last_logged_step(&study.run(&r.run.name));
            match r
                .child
                .try_wait()
                .with_context(|| format!("waiting for run {}", r.run.name))?
            {
                None => {
                    if let (Some(bar), Some(step)) = (&r.bar, step) {
                        bar.set_position(step);
                    }
                    still.push(r);
                }
                Some(exit) => {
                    let secs = r.started.elapsed().as_secs_f64();
                    let outcome = match study.state(&r.run.name) {
                        RunState::Done if exit.success() => Ok(()),
                        RunState::Failed { error, .. } => Err(error),
                        _ => Err(format!("its process exited with {exit}")),
                    };
                    let line = match &outcome {
                        Ok(()) => {
                            finished += 1;
                            format!("done in {secs:.1} s")
                        }
                        Err(error) => {
                            failed.push((r.run.name.clone(), error.clone()));
                            format!("FAILED: {error}")
                        }
                    };
                    match &r.bar {
                        Some(bar) => {
                            if let Some(step) = step {
                                bar.set_position(step);
                            }
                            bar.finish_with_message(line);
                        }
                        None => eprintln!("run {} {line}", r.run.name),
                    }
                }
            }
        }
        running = still;
    }
    crate::say!(
        "{finished} runs finished, {} failed, {skipped} were already done -> {}",
        failed.len(),
        study.root.display()
    );
    if !failed.is_empty() {
        for (name, error) in &failed {
            crate::say!("  {name}: {error} (log: {})", study.log(name).display());
        }
        bail!(
            "{} of {} runs failed ({}); fix the cause and re-run the same command to continue them",
            failed.len(),
            manifest.runs.len(),
            failed
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
