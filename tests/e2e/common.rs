//! Helpers shared by the end-to-end tests: run the real binary, read its outputs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn formation(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_formation"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("binary runs")
}

/// `formation replicate CONFIG --seeds SEEDS -j 2 --out st` in `dir`.
pub fn replicate(config: &str, seeds: &str, dir: &Path) -> Output {
    formation(
        &[
            "replicate",
            config,
            "--seeds",
            seeds,
            "-j",
            "2",
            "--out",
            "st",
        ],
        dir,
    )
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

/// Every file under `dir` with its bytes, sorted by path; `formation.lock` is left out (every writer, even one
/// that then refuses bad input, writes its own pid there).
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.ends_with("formation.lock") {
                out.push((path.clone(), read(path)));
            }
        }
    }
    out.sort();
    out
}

/// A row without the fields that measure time (`wall_s`, `timing`).
pub fn without_timing(row: &serde_json::Value) -> serde_json::Value {
    let mut row = row.clone();
    let object = row.as_object_mut().unwrap();
    object.remove("wall_s");
    object.remove("timing");
    row
}

/// Equal row counts and rows equal apart from timing; on failure names the first differing row's step and
/// (up to five of) its differing fields.
pub fn assert_same_rows(a: &[serde_json::Value], b: &[serde_json::Value]) {
    assert_eq!(a.len(), b.len(), "row counts");
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (without_timing(x), without_timing(y));
        if x != y {
            let (mut left, mut right) = (vec![], vec![]);
            leaves(&x, vec![], &mut left);
            leaves(&y, vec![], &mut right);
            let differing: Vec<String> = left
                .iter()
                .filter(|leaf| !right.contains(leaf))
                .take(5)
                .map(|(path, value)| format!("{} = {value}", path.join(".")))
                .collect();
            panic!("row at step {} differs: {differing:?}", x["step"]);
        }
    }
}

pub fn leaves(
    value: &serde_json::Value,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, serde_json::Value)>,
) {
    match value.as_object() {
        Some(object) if !object.is_empty() => {
            for (k, v) in object {
                let mut p = prefix.clone();
                p.push(k.clone());
                leaves(v, p, out);
            }
        }
        _ => out.push((prefix, value.clone())),
    }
}

/// The command failed after progress lines: its stderr ends in exactly one `error: …` line; returns it.
pub fn final_error(output: Output) -> String {
    assert!(!output.status.success(), "expected failure, got success");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one error line expected, got: {stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "{stderr}");
    errors[0].to_owned()
}

/// The CI config stretched to 3000 steps with a checkpoint every 50 (65 checkpoints, a few seconds).
pub fn long_ci_config(dir: &Path) -> String {
    let text = std::fs::read_to_string(example("ci.toml")).unwrap();
    let text = text
        .replace("steps = 60", "steps = 3000")
        .replace("every = 20\nlog_spaced", "every = 50\nlog_spaced");
    assert!(text.contains("every = 50"));
    let path = dir.join("long.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    jsonl(&run.join("analysis/checkpoint_metrics.jsonl"))
}

/// Starts a run (or resume) and SIGKILLs it once its metrics file has at least `rows` rows.
pub fn kill_after_rows(args: &[&str], cwd: &Path, run: &Path, rows: usize) {
    let metrics = run.join("analysis/checkpoint_metrics.jsonl");
    kill_when(
        args,
        cwd,
        &format!("{rows} rows in {}", metrics.display()),
        || {
            std::fs::read_to_string(&metrics)
                .map(|t| t.lines().count())
                .unwrap_or(0)
                >= rows
        },
    );
}

/// Starts `formation ARGS` and SIGKILLs it once `reached` holds (`what` says what that is, for the panic when
/// the command finishes first).
pub fn kill_when(args: &[&str], cwd: &Path, what: &str, reached: impl Fn() -> bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_formation"))
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !reached() && Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            panic!("formation {args:?} finished before {what}: make the test config longer");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// Copies the directory tree `from` to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Runs `tests/python/SCRIPT ARGS` in `cwd` with the Python the test set-up made (`FORMATION_PYTHON`, else
/// `python3`) and returns its stdout; `None` when FORMATION_SKIP_PYTHON=1 asks to skip it.
pub fn python(script: &str, args: &[&str], cwd: &Path) -> Option<String> {
    if std::env::var("FORMATION_SKIP_PYTHON").as_deref() == Ok("1") {
        eprintln!("skipping {script}: FORMATION_SKIP_PYTHON=1");
        return None;
    }
    let python = std::env::var("FORMATION_PYTHON").unwrap_or("python3".into());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = Command::new(&python)
        .arg(&path)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!("{python} (run scripts/setup.sh --test, or set FORMATION_SKIP_PYTHON=1): {e}")
        });
    assert!(
        out.status.success(),
        "{script} failed (its packages come from scripts/setup.sh --test; FORMATION_SKIP_PYTHON=1 skips it)\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The browser the test set-up installs, as the path of its executable; without it the test fails and says
/// why, unless FORMATION_SKIP_BROWSER=1 asks to skip it.
pub fn browser() -> Option<String> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        if let Some(path) = found {
            return Some(path);
        }
    }
    if std::env::var("FORMATION_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("skipping the browser test: FORMATION_SKIP_BROWSER=1");
        return None;
    }
    panic!(
        "the browser tests need chromium (run scripts/setup.sh --test); set FORMATION_SKIP_BROWSER=1 to skip them"
    );
}
