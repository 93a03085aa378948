//! `formation serve`: the live dashboard, driven in headless chromium against a run that is still training.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{browser, example, formation, one_error, python};

/// Kills the child when dropped (a failing assertion must not leave a trainer or server behind).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_dashboard_follows_a_training_run_and_its_slider_moves_every_view() {
    let Some(browser) = browser() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Not a run: one sentence, no server.
    let error = one_error(formation(&["serve", "nowhere", "--port", "0"], dir));
    assert!(error.contains("neither a run directory"), "{error}");

    let config = example("induction.toml");
    let _trainer = Running(
        Command::new(env!("CARGO_BIN_EXE_formation"))
            .args(["train", &config, "--analyze", "--out", "run"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let metrics = dir.join("run/analysis/checkpoint_metrics.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 3 {
        assert!(Instant::now() < deadline, "no rows after two minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut server = Running(
        Command::new(env!("CARGO_BIN_EXE_formation"))
            .args(["serve", "run", "--port", "0"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    if let Some(stdout) = python("dashboard_live.py", &[url, "run", &browser], dir) {
        assert!(stdout.contains("no console errors"), "{stdout}");
    }
}
