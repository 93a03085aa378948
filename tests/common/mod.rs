//! Helpers shared by the end-to-end tests: run the real binary, read its outputs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn formation(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_formation"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("binary runs")
}

pub fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

pub fn ok(output: Output) -> Output {
    assert!(
        output.status.success(),
        "formation failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The command failed with exactly one line on stderr, `error: …`; returns that line.
pub fn one_error(output: Output) -> String {
    assert!(!output.status.success(), "expected failure, got success");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line expected, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_owned()
}

pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("every row parses"))
        .collect()
}

pub fn losses(run: &Path) -> Vec<(u64, u32)> {
    jsonl(&run.join("metrics/train.jsonl"))
        .iter()
        .map(|r| {
            (
                r["step"].as_u64().unwrap(),
                (r["loss"].as_f64().unwrap() as f32).to_bits(),
            )
        })
        .collect()
}

/// The hash of the weights' values recorded in a checkpoint (model.bpk also holds per-process parameter ids).
pub fn weights_sha256(run: &Path, step: &str) -> String {
    let state: serde_json::Value = serde_json::from_slice(&read(
        run.join(format!("checkpoints/step_{step}/state.json")),
    ))
    .unwrap();
    let hash = state["weights_sha256"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64, "a SHA-256 is recorded");
    hash
}

pub fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir` with its bytes, sorted by path.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), read(path)));
            }
        }
    }
    out.sort();
    out
}
