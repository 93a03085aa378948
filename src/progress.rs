//! Progress display: a bar with step, loss, steps/s and ETA on a terminal, plain log lines otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use trainer::train_loop::Progress;

pub struct Display {
    bar: Option<ProgressBar>,
    clock: Instant,
    start: u64,
    last_line: Instant,
    queue: Option<Arc<AtomicUsize>>,
    /// Which stage of a longer job the steps belong to (`formation trace`), shown before them.
    stage: String,
}

impl Default for Display {
    fn default() -> Self {
        Self::new()
    }
}

impl Display {
    pub fn new() -> Self {
        Self {
            bar: None,
            clock: Instant::now(),
            start: 0,
            last_line: Instant::now(),
            queue: None,
            stage: String::new(),
        }
    }

    /// Shows `stage` (e.g. `[3/4] replay W2`) in front of the steps that follow.
    pub fn set_stage(&mut self, stage: &str) {
        self.stage = format!("{stage}  ");
    }

    /// Shows the analysis queue depth next to the loss.
    pub fn watch_queue(&mut self, depth: Arc<AtomicUsize>) {
        self.queue = Some(depth);
    }

    fn queue_text(&self) -> String {
        self.queue
            .as_ref()
            .map(|q| format!("  queue {}", q.load(Ordering::Relaxed)))
            .unwrap_or_default()
    }

    pub fn update(&mut self, event: Progress) {
        match event {
            Progress::Start { start, total } => {
                self.start = start;
                self.clock = Instant::now();
                if std::io::stderr().is_terminal() {
                    let bar = ProgressBar::new(total).with_position(start);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix}{bar:30} {pos}/{len} steps  {msg}  {per_sec}  ETA {eta}",
                        )
                        .expect("valid template"),
                    );
                    bar.set_prefix(self.stage.clone());
                    self.bar = Some(bar);
                } else {
                    eprintln!("{}training steps {start}..{total}", self.stage);
                }
            }
            Progress::Step { step, loss, lr } => match &self.bar {
                Some(bar) => {
                    bar.set_position(step);
                    bar.set_message(format!("loss {loss:.4}  lr {lr:.2e}{}", self.queue_text()));
                }
                None if self.last_line.elapsed().as_secs_f64() >= 5.0 => {
                    self.last_line = Instant::now();
                    let rate =
                        (step - self.start) as f64 / self.clock.elapsed().as_secs_f64().max(1e-9);
                    eprintln!(
                        "{}step {step}  loss {loss:.4}  lr {lr:.2e}  {rate:.1} steps/s{}",
                        self.stage,
                        self.queue_text()
                    );
                }
                None => {}
            },
            Progress::Checkpoint { step, eval } => {
                let accuracy = eval
                    .map(|e| {
                        let fmt = |name: &str, s: Option<trainer::eval::SplitScore>| {
                            s.map(|s| format!("  {name} acc {:.3} loss {:.4}", s.accuracy, s.loss))
                                .unwrap_or_default()
                        };
                        format!(
                            "{}{}{}",
                            fmt("train", e.train),
                            fmt("test", e.test),
                            fmt("ood", e.ood)
                        )
                    })
                    .unwrap_or_default();
                let line = format!("checkpoint {step}{accuracy}");
                match &self.bar {
                    Some(bar) => {
                        bar.set_position(step);
                        if !accuracy.is_empty() {
                            bar.println(line);
                        }
                    }
                    // In a log, a checkpoint without an evaluation is not news: the step lines (every 5 s)
                    // already show progress.
                    None if !accuracy.is_empty() => eprintln!("{}{line}", self.stage),
                    None => {}
                }
            }
        }
    }

    /// Shows `done` of `total` pieces of work that are not training steps (`what`: e.g. `interventions`).
    pub fn count(&mut self, what: &str, done: u64, total: u64) {
        if std::io::stderr().is_terminal() {
            let bar = self.bar.get_or_insert_with(|| ProgressBar::new(total));
            if bar.is_finished() || bar.length() != Some(total) {
                *bar = ProgressBar::new(total);
                bar.set_style(
                    ProgressStyle::with_template("{prefix}{bar:30} {pos}/{len} {msg}  ETA {eta}")
                        .expect("valid template"),
                );
                bar.set_prefix(self.stage.clone());
                bar.set_message(what.to_owned());
            }
            bar.set_position(done);
        } else if done == total || self.last_line.elapsed().as_secs_f64() >= 5.0 {
            self.last_line = Instant::now();
            eprintln!("{}{done}/{total} {what}", self.stage);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
