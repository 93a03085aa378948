//! The trackers researchers already use: TensorBoard event files (and through them W&B), read back with
//! TensorBoard's own reader.

use crate::common::{formation, kill_after_rows, long_ci_config, ok, python};

#[test]
fn tensorboard_events_equal_the_jsonl_rows_across_a_kill_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = long_ci_config(dir);
    let text = std::fs::read_to_string(&config).unwrap() + "\n[analysis]\ntensorboard = true\n";
    std::fs::write(&config, text).unwrap();
    // Killed part-way (a row may be on disk without its event), then resumed: every row has its event once.
    kill_after_rows(
        &["train", &config, "--analyze", "--out", "run"],
        dir,
        &dir.join("run"),
        25,
    );
    ok(formation(
        &["train", &config, "--analyze", "--resume", "run"],
        dir,
    ));
    let Some(stdout) = python("tensorboard_matches_jsonl.py", &["run"], dir) else {
        return;
    };
    assert!(stdout.contains("65 steps: equal to the JSONL"), "{stdout}");
}
