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
    let (_server, address) = serve("run", dir);
    let url = format!("http://{address}/");
    if let Some(stdout) = python("dashboard_live.py", &[&url, "run", &browser], dir) {
        assert!(stdout.contains("no console errors"), "{stdout}");
    }
}

/// `GET path` from the server at `address` (`127.0.0.1:PORT`): status and body.
fn get(address: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Starts `formation serve DIR --port 0` in `cwd`; returns it and its address.
fn serve(dir: &str, cwd: &std::path::Path) -> (Running, String) {
    let mut server = Running(
        Command::new(env!("CARGO_BIN_EXE_formation"))
            .args(["serve", dir, "--port", "0"])
            .current_dir(cwd)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches('/')
        .to_owned();
    (server, address)
}

#[test]
fn a_served_study_overlays_its_seeds_and_shows_each_run_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    crate::common::ok(crate::common::replicate(&example("ci.toml"), "0..2", dir));
    let (_server, address) = serve("st", dir);
    let (status, body) = get(&address, "/api/report");
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["runs"], serde_json::json!(["s0", "s1"]));
    let overlay = report["plots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "seeds-test-accuracy")
        .expect("the seeds' overlay");
    let names: Vec<&str> = overlay["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["s0", "s1"]);
    // Nothing changed on disk: the stamp alone comes back.
    let stamp = report["stamp"].as_str().unwrap();
    let since = format!("/api/report?since={stamp}");
    let (status, body) = get(&address, &since);
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({ "stamp": stamp }).to_string());
    // A run's step by name; an unknown run is one sentence.
    let (status, body) = get(&address, "/api/step?step=20&run=s1");
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["step"], 20);
    assert_eq!(
        view["attention"].as_array().unwrap().len(),
        4,
        "one per head"
    );
    let (status, body) = get(&address, "/api/step?step=20&run=s9");
    assert_eq!(
        (status, body.as_str()),
        (404, "the study has no run s9 (runs: s0, s1)")
    );
    let (status, _) = get(&address, "/api/report?run=s9");
    assert_eq!(status, 404);
}

#[test]
fn with_whole_patterns_stored_the_attention_view_shows_every_query_position() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let text = std::fs::read_to_string(example("ci.toml")).unwrap()
        + "\n[analysis]\nstore = [\"all_hooks\"]\n";
    std::fs::write(dir.join("all.toml"), text).unwrap();
    crate::common::ok(formation(
        &["train", "all.toml", "--analyze", "--out", "run"],
        dir,
    ));
    let (_server, address) = serve("run", dir);
    let (status, body) = get(&address, "/api/step?step=40&example=5");
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    // The step file's whole hook, [example, head, q, k], for example 5.
    let file = hdf5::File::open(dir.join("run/analysis/activations/step_000040.h5")).unwrap();
    let whole = file.dataset("blocks.0.attn.hook_pattern").unwrap();
    let shape = whole.shape();
    let data = whole.read_raw::<f32>().unwrap();
    let (heads, q, k) = (shape[1], shape[2], shape[3]);
    let attention = view["attention"].as_array().unwrap();
    assert_eq!(attention.len(), heads);
    for a in attention {
        let h = a["head"].as_u64().unwrap() as usize;
        assert_eq!(a["queries"], serde_json::json!(["0", "1", "2"]));
        for i in 0..q {
            for j in 0..k {
                let drawn = a["pattern"][i][j].as_f64().unwrap() as f32;
                assert_eq!(
                    drawn,
                    data[((5 * heads + h) * q + i) * k + j],
                    "head {h} q {i} k {j}"
                );
            }
        }
    }
    // The example's tokens and where its key positions are.
    assert_eq!(view["tokens"].as_array().unwrap().len(), 3);
    assert_eq!(
        view["key_columns"],
        serde_json::json!({ "a": 0, "b": 1, "eq": 2 })
    );
}
