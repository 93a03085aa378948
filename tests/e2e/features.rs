//! `formation intervene --kind features` (issue 17): a TopK sparse dictionary on the residual stream at the key
//! positions of a real checkpoint, its report and HDF5 file; bad dictionary settings are one sentence and
//! create nothing.

use crate::common::*;
use serde_json::Value;

/// The CI config with `[features]` settings appended.
fn config(dir: &std::path::Path, features: &str) -> String {
    let text = std::fs::read_to_string(example("ci.toml")).unwrap() + "\n[features]\n" + features;
    let path = dir.join("features.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn a_dictionary_is_trained_measured_and_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let small = "expansion = 2\nk = 4\ninputs = 529\nsteps = 300\n";
    ok(formation(
        &["train", &config(dir, small), "--analyze", "--out", "run"],
        dir,
    ));
    ok(formation(
        &["intervene", "run", "--step", "60", "--kind", "features"],
        dir,
    ));
    let out = dir.join("run/interventions/step_000060");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("features.json")).unwrap()).unwrap();
    // d_model 32, expansion 2: 64 latents; p = 23 gives 529 pairs, each read at a, b and = (3 key positions).
    assert_eq!(report["latents"], 64);
    assert_eq!(report["k"], 4);
    assert_eq!(report["boundary"], "blocks.0.hook_resid_post");
    assert_eq!(report["activations"], 529 * 3);
    let explained = report["variance_explained"].as_f64().unwrap();
    let nmse = report["normalized_mse"].as_f64().unwrap();
    assert!((explained + nmse - 1.0).abs() < 1e-9, "{report}");
    assert!(explained > 0.5, "{report}");
    let delta = report["delta_loss"].as_f64().unwrap();
    let loss = report["loss"].as_f64().unwrap();
    assert!((report["loss_spliced"].as_f64().unwrap() - loss - delta).abs() < 1e-9);
    let frequency = report["latent_frequency"].as_array().unwrap();
    assert_eq!(frequency.len(), 64);
    let dead = frequency.iter().filter(|f| f.as_f64() == Some(0.0)).count();
    assert_eq!(report["dead"].as_u64().unwrap() as usize, dead);
    // One card per live latent, most frequent first: promoted tokens, top activations with their tokens, and
    // the best-correlated probe target class per key position.
    let live = report["live_latents"].as_array().unwrap();
    assert_eq!(live.len(), 64 - dead);
    let frequencies: Vec<f64> = live
        .iter()
        .map(|l| l["frequency"].as_f64().unwrap())
        .collect();
    assert!(
        frequencies.windows(2).all(|w| w[0] >= w[1]),
        "{frequencies:?}"
    );
    for card in live {
        assert_eq!(card["promoted_tokens"].as_array().unwrap().len(), 5);
        let top = card["top_activations"].as_array().unwrap();
        assert!(!top.is_empty() && top.len() <= 5);
        assert!(
            top.iter()
                .all(|a| a["activation"].as_f64().unwrap() > 0.0
                    && a["token"].as_u64().unwrap() < 24)
        ); // 0..22 and `=` (23);
        for best in card["best_targets"].as_array().unwrap() {
            let r = best["correlation"].as_f64().unwrap();
            assert!(r > 0.0 && r <= 1.0 + 1e-9, "{best}");
        }
    }
    // Modular addition declares a Fourier grid: the share of the live latents' directions inside the key-frequency
    // subspace is reported beside a random direction's expectation.
    let fourier = &report["fourier"];
    assert_eq!(fourier["key_frequencies"].as_array().unwrap().len(), 5);
    let dim = fourier["subspace_dim"].as_f64().unwrap();
    assert!(dim > 0.0 && dim <= 30.0, "{fourier}");
    assert!((fourier["random_expectation"].as_f64().unwrap() - dim / 32.0).abs() < 1e-12);
    for share in ["mean_fraction", "frequency_weighted_fraction"] {
        let f = fourier[share].as_f64().unwrap();
        assert!((0.0..=1.0 + 1e-9).contains(&f), "{fourier}");
    }
    // The decoder in HDF5: [latents, d_model], unit-norm rows.
    let file = hdf5::File::open(out.join("features.h5")).unwrap();
    let decoder = file.dataset("decoder").unwrap().read_2d::<f64>().unwrap();
    assert_eq!(decoder.shape(), [64, 32]);
    for row in decoder.rows() {
        assert!((row.dot(&row).sqrt() - 1.0).abs() < 1e-4);
    }
}

#[test]
fn bad_dictionary_settings_are_one_sentence_and_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for (settings, says) in [
        ("k = 64\nexpansion = 2\n", "features.k"),
        (
            "boundary = \"blocks.3.hook_resid_pre\"\n",
            "blocks.0.hook_resid_pre, blocks.0.hook_resid_mid, blocks.0.hook_resid_post",
        ),
        ("boundary = \"blocks.0.attn.hook_z\"\n", "features.boundary"),
        ("k = 0\n", "features"),
    ] {
        let error = one_error(formation(
            &["train", &config(dir, settings), "--out", "run"],
            dir,
        ));
        assert!(error.contains(says), "{settings}: {error}");
        assert!(!dir.join("run").exists());
    }
    // A step the run does not have: one sentence, no interventions directory.
    ok(formation(
        &[
            "train",
            &config(dir, "steps = 50\n"),
            "--analyze",
            "--out",
            "run",
        ],
        dir,
    ));
    let error = one_error(formation(
        &["intervene", "run", "--step", "61", "--kind", "features"],
        dir,
    ));
    assert!(error.contains("no checkpoint for step 61"), "{error}");
    assert!(!dir.join("run/interventions/step_000061").exists());
}

#[test]
fn dictionaries_across_checkpoints_keep_their_latents_and_date_their_births() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let small = "expansion = 2\nk = 4\ninputs = 529\nsteps = 200\n";
    ok(formation(
        &["train", &config(dir, small), "--analyze", "--out", "run"],
        dir,
    ));
    // Checkpoints 8, 20, 40 and 60 of the CI run.
    let out = ok(formation(&["features", "run", "--from", "8"], dir));
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 checkpoints from 8 to 60"));
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("run/analysis/features.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["steps"], serde_json::json!([8, 20, 40, 60]));
    assert_eq!(summary["checkpoints"].as_array().unwrap().len(), 4);
    let latents = summary["latents"].as_array().unwrap();
    assert_eq!(latents.len(), 64);
    let alive = summary["alive_above"].as_f64().unwrap();
    assert_eq!(alive, 0.002);
    for latent in latents {
        let f: Vec<f64> = serde_json::from_value(latent["frequency"].clone()).unwrap();
        let c: Vec<f64> = serde_json::from_value(latent["continuity"].clone()).unwrap();
        assert_eq!((f.len(), c.len()), (4, 4));
        // A birth in the range means alive from there to the end, with a steady direction after it.
        match latent["born"].as_str().unwrap() {
            "in_range" => {
                let at = latent["birth_step"].as_u64().unwrap();
                let t = [8, 20, 40, 60].iter().position(|&s| s == at).unwrap();
                assert!(t > 0 && f[t..].iter().all(|&x| x >= alive), "{latent}");
                assert!(c[t + 1..].iter().all(|&x| x >= 0.9), "{latent}");
            }
            "before" => assert!(f.iter().all(|&x| x >= alive), "{latent}"),
            "never" => assert!(latent["birth_step"].is_null()),
            other => panic!("born {other}"),
        }
    }
    // The raster in HDF5: [latents, checkpoints].
    let file = hdf5::File::open(dir.join("run/analysis/features.h5")).unwrap();
    assert_eq!(file.dataset("frequency").unwrap().shape(), [64, 4]);
    // A boundary or k given on the command line is checked like the config's: one sentence, nothing written.
    std::fs::remove_file(dir.join("run/analysis/features.json")).unwrap();
    let error = one_error(formation(
        &["features", "run", "--boundary", "blocks.2.hook_resid_post"],
        dir,
    ));
    assert!(error.contains("features.boundary"), "{error}");
    let error = one_error(formation(&["features", "run", "--k", "64"], dir));
    assert!(error.contains("features.k"), "{error}");
    assert!(!dir.join("run/analysis/features.json").exists());
    // One checkpoint is not a range.
    let error = one_error(formation(&["features", "run", "--from", "60"], dir));
    assert!(
        error.contains("fewer than two saved checkpoints"),
        "{error}"
    );
}

/// The plot `id` in a report's embedded data.
fn report_plot(page: &std::path::Path, id: &str) -> Value {
    let html = std::fs::read_to_string(page).unwrap();
    let start = html.find("id=\"formation-data\">").unwrap() + "id=\"formation-data\">".len();
    let end = start + html[start..].find("</script>").unwrap();
    let data: Value = serde_json::from_str(&html[start..end].replace("<\\/", "</")).unwrap();
    data["plots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no plot {id}"))
        .clone()
}

#[test]
fn a_replay_learns_features_across_its_window_and_the_report_marks_their_births() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let small = "expansion = 2\nk = 4\ninputs = 529\nsteps = 200\n\n[interventions]\nin_windows = [\"features\"]\n";
    ok(formation(
        &["train", &config(dir, small), "--analyze", "--out", "run"],
        dir,
    ));
    // The window a detector would have written (the window form does not depend on which one).
    let windows = r#"{"windows": [{"id": "W0", "start_step": 8, "end_step": 40}]}"#;
    std::fs::write(dir.join("run/analysis/birth_windows.json"), windows).unwrap();
    let out = ok(formation(
        &["replay", "run", "--window", "0", "--every", "4"],
        dir,
    ));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("latents born in W0"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let window = dir.join("run/windows/W0");
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(window.join("analysis/features.json")).unwrap(),
    )
    .unwrap();
    let dense: Vec<u64> = (2..=10).map(|k| k * 4).collect();
    assert_eq!(summary["steps"], serde_json::json!(dense));
    // The window form replaces the per-checkpoint dictionaries.
    assert!(!window.join("interventions").exists());
    // A second replay run keeps what is done.
    let before = std::fs::metadata(window.join("analysis/features.json"))
        .unwrap()
        .modified()
        .unwrap();
    ok(formation(
        &["replay", "run", "--window", "0", "--every", "4"],
        dir,
    ));
    let after = std::fs::metadata(window.join("analysis/features.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);

    // The report's raster: one row per live latent, each birth in the range marked at its step.
    ok(formation(&["report", "run"], dir));
    let raster = report_plot(&dir.join("run/report.html"), "run-W0-features");
    assert_eq!(raster["steps"], serde_json::json!(dense));
    let rows: Vec<&str> = raster["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let alive = summary["alive_above"].as_f64().unwrap();
    let mut births = vec![];
    for latent in summary["latents"].as_array().unwrap() {
        let label = format!("latent {}", latent["latent"]);
        let live = latent["frequency"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_f64().unwrap() >= alive);
        assert_eq!(rows.contains(&label.as_str()), live, "{label}");
        if let Some(step) = latent["birth_step"].as_u64() {
            births.push((label, step));
        }
    }
    let mut marked: Vec<(String, u64)> = raster["marks"]
        .as_array()
        .map(|marks| {
            marks
                .iter()
                .map(|m| {
                    (
                        m["row"].as_str().unwrap().to_owned(),
                        m["step"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    births.sort();
    marked.sort();
    assert!(!births.is_empty(), "some latent is born inside the window");
    assert_eq!(marked, births);
}
