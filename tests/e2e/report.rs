//! `formation report` opened in a real headless browser (Debian's chromium): the page draws every plot with no
//! error, a screenshot shows them, and the drawn data equal the run's JSONL (issue 7).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// Runs headless chromium on a local file with `args`; returns its stdout and stderr.
fn headless(browser: &str, page: &Path, profile: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--enable-logging=stderr", "--v=0"])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The page after its scripts ran; checks it drew every plot without an error (in the page or the console).
fn rendered(browser: &str, page: &Path, profile: &Path) -> String {
    let (dom, log) = headless(browser, page, profile, &["--dump-dom"]);
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console output: {console:?}");
    let html = std::fs::read_to_string(page).unwrap();
    let plots = html.matches("<figure id=\"plot-").count();
    assert!(plots > 0);
    assert!(
        dom.contains(&format!("data-plots=\"{plots}\" data-errors=\"0\"")),
        "not every plot drawn without error: {}",
        &dom[dom.find("<body").unwrap()..][..200]
    );
    assert_eq!(dom.matches("<svg").count(), plots, "one drawing per plot");
    dom
}

/// The opening tags of the elements inside `<svg data-plot="ID">`.
fn plot_elements<'a>(dom: &'a str, id: &str) -> Vec<&'a str> {
    let start = dom
        .find(&format!("data-plot=\"{id}\""))
        .unwrap_or_else(|| panic!("plot {id} drawn"));
    let svg = &dom[start..start + dom[start..].find("</svg>").unwrap()];
    svg.split('<').skip(1).collect()
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let value = &tag[at..at + tag[at..].find('"')?];
    Some(
        value
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">"),
    )
}

/// (x, y) of the drawn line `name` of plot `id`.
fn drawn_line(dom: &str, id: &str, name: &str) -> Vec<(u64, f64)> {
    let path = plot_elements(dom, id)
        .into_iter()
        .find(|t| t.starts_with("path") && attr(t, "data-name").as_deref() == Some(name))
        .unwrap_or_else(|| panic!("line {name} in plot {id}"));
    let xs: Vec<u64> = serde_json::from_str(&attr(path, "data-x").unwrap()).unwrap();
    let ys: Vec<f64> = serde_json::from_str(&attr(path, "data-y").unwrap()).unwrap();
    xs.into_iter().zip(ys).collect()
}

/// (step, value) of `path` in every row that has it.
fn from_rows(rows: &[serde_json::Value], path: &[&str]) -> Vec<(u64, f64)> {
    rows.iter()
        .filter_map(|r| {
            let v = path.iter().try_fold(r, |v, k| v.get(*k))?.as_f64()?;
            Some((r["step"].as_u64()?, v))
        })
        .collect()
}

#[test]
fn the_run_report_draws_the_jsonl_in_a_real_browser() {
    let Some(browser) = browser() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(formation(
        &["train", &example("ci.toml"), "--analyze", "--out", "run"],
        dir,
    ));
    ok(formation(&["windows", "run"], dir));
    ok(formation(&["replay", "run", "--window", "0"], dir));
    ok(formation(&["report", "run"], dir));
    let page = dir.join("run/report.html");
    let dom = rendered(&browser, &page, &dir.join("profile"));
    let rows = jsonl(&dir.join("run/analysis/checkpoint_metrics.jsonl"));

    // Lines: every drawn point is the row's value at that step, and no row's value is missing.
    for (plot, name, path) in [
        ("run-loss", "probe-set loss", vec!["behavior", "loss"]),
        ("run-loss", "test split loss", vec!["eval", "test", "loss"]),
        (
            "run-accuracy",
            "train split accuracy",
            vec!["eval", "train", "accuracy"],
        ),
        (
            "run-cka",
            "0 resid_post · eq",
            vec!["dynamics", "cka", "blocks.0.hook_resid_post", "eq"],
        ),
    ] {
        assert_eq!(
            drawn_line(&dom, plot, name),
            from_rows(&rows, &path),
            "{plot} / {name}"
        );
    }
    // Heatmap cells: probe accuracy of every boundary × key × target at every checkpoint.
    let cells: Vec<&str> = plot_elements(&dom, "run-probe-accuracy")
        .into_iter()
        .filter(|t| t.starts_with("rect") && t.contains("data-v="))
        .collect();
    let mut expected = 0;
    for row in &rows {
        for (boundary, keys) in row["residual"].as_object().unwrap() {
            for (key, targets) in keys.as_object().unwrap() {
                for (target, scores) in targets.as_object().unwrap() {
                    expected += 1;
                    let label = format!(
                        "{} · {key} · {target}",
                        boundary
                            .trim_start_matches("blocks.")
                            .replace(".hook_", " ")
                    );
                    let step = row["step"].to_string();
                    let cell = cells
                        .iter()
                        .find(|t| {
                            attr(t, "data-row").as_deref() == Some(&label)
                                && attr(t, "data-step") == Some(step.clone())
                        })
                        .unwrap_or_else(|| panic!("cell {label} @ {step}"));
                    let v: f64 = attr(cell, "data-v").unwrap().parse().unwrap();
                    assert_eq!(v, scores["accuracy"].as_f64().unwrap(), "{label} @ {step}");
                }
            }
        }
    }
    assert_eq!(cells.len(), expected);
    // Windows shaded on the time axes, and the replayed window's intervention results drawn.
    assert!(
        plot_elements(&dom, "run-loss")
            .iter()
            .any(|t| attr(t, "data-window").as_deref() == Some("W0"))
    );
    let replayed = jsonl(&dir.join("run/windows/W0/analysis/checkpoint_metrics.jsonl"));
    let lens_path = |step: u64| {
        dir.join(format!(
            "run/windows/W0/interventions/step_{step:06}/logit_lens.json"
        ))
    };
    let drawn = drawn_line(
        &dom,
        "run-W0-logit_lens-blocks.0.hook_resid_post",
        "blocks.0.hook_resid_post.loss",
    );
    assert_eq!(
        drawn.len(),
        replayed.len(),
        "one point per replayed checkpoint"
    );
    for (step, loss) in drawn {
        let report: serde_json::Value = serde_json::from_slice(&read(lens_path(step))).unwrap();
        assert_eq!(
            loss,
            report["blocks.0.hook_resid_post"]["loss"].as_f64().unwrap()
        );
    }

    // A screenshot shows the plots (kept next to the report for a look).
    let shot = dir.join("run/report.png");
    headless(
        &browser,
        &page,
        &dir.join("profile"),
        &[
            "--window-size=1300,1800",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    let png = read(shot);
    assert_eq!(&png[1..4], b"PNG");
    assert!(
        png.len() > 30_000,
        "a screenshot with plots, not a blank page ({} bytes)",
        png.len()
    );
}

#[test]
fn the_study_report_overlays_seeds_and_states_the_decision() {
    let Some(browser) = browser() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(replicate(&example("ci.toml"), "0..2", dir));
    let compared = ok(formation(&["compare", "st"], dir));
    let stdout = String::from_utf8_lossy(&compared.stdout);
    assert!(stdout.contains("NOT READY"), "{stdout}");
    ok(formation(&["report", "st"], dir));
    let page: PathBuf = dir.join("st/report.html");
    let dom = rendered(&browser, &page, &dir.join("profile"));
    for seed in ["s0", "s1"] {
        let rows = jsonl(&dir.join(format!("st/runs/{seed}/analysis/checkpoint_metrics.jsonl")));
        assert_eq!(
            drawn_line(&dom, "seeds-test-accuracy", seed),
            from_rows(&rows, &["eval", "test", "accuracy"])
        );
    }
    let compare: serde_json::Value =
        serde_json::from_slice(&read(dir.join("st/compare.json"))).unwrap();
    let ready = compare["groups"][0]["decision"]["ready"].as_bool().unwrap();
    assert!(!ready, "two seeds of the CI config cannot be ready");
    assert!(dom.contains("NOT READY for deep circuit work"));
    // Every failing criterion of compare.json is on the page.
    for c in compare["groups"][0]["decision"]["criteria"]
        .as_array()
        .unwrap()
    {
        assert!(dom.contains(c["name"].as_str().unwrap()));
    }
}
