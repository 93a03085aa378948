//! `formation serve RUN_DIR | STUDY_DIR [--port P] [--bind ADDR]`: a local web dashboard of the report's panels
//! that follows the run while it trains, with one step slider over every per-checkpoint view. Everything is
//! served by the binary (no external assets); it only reads, and only inside the directory it was given: the
//! one thing a request names is a step, a probe example and, for a study, one of its runs.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use analysis::report::live::{StepViewError, step_view};
use analysis::report::{dashboard_page, report_data};
use analysis::sinks::jsonl::read_rows;
use anyhow::bail;
use host::layout::{RunLayout, StudyLayout};
use study::study::StudyFiles;
use tiny_http::{Header, Method, Response, Server};

use crate::commands::report::contents;

#[derive(clap::Args)]
pub struct Args {
    /// An analyzed run directory (it may still be training), or a study directory.
    dir: PathBuf,
    /// The port to listen on (0: any free port, printed).
    #[arg(long, default_value_t = 8050)]
    port: u16,
    /// The address to listen on (default: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let served = Served::new(&args.dir)?;
    let server = Server::http((args.bind, args.port))
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", args.bind, args.port))?;
    // `--port 0` takes a free port: the line says which.
    let address = server
        .server_addr()
        .to_ip()
        .map(|a| a.to_string())
        .unwrap_or_else(|| format!("{}:{}", args.bind, args.port));
    crate::say!(
        "serving {} at http://{address}/ (Ctrl-C stops)",
        args.dir.display()
    );
    for request in server.incoming_requests() {
        let answer = if *request.method() == Method::Get {
            served.answer(request.url())
        } else {
            Answer::text(405, "only GET is served".into())
        };
        // A browser that went away mid-answer is not an error of the server.
        let _ = request.respond(answer.into_response());
    }
    Ok(())
}

/// The directory being served: one run, or a study's runs by name.
struct Served {
    dir: PathBuf,
    /// (name, run directory) of a study's runs; empty for a run.
    runs: Vec<(String, PathBuf)>,
}

impl Served {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        if host::layout::is_study(dir) {
            let study = StudyLayout::new(dir);
            let runs = study
                .read_manifest()?
                .runs
                .iter()
                .map(|r| (r.name.clone(), study.run(&r.name).root))
                .collect();
            return Ok(Self {
                dir: dir.to_owned(),
                runs,
            });
        }
        if !RunLayout::new(dir).exists() {
            bail!(
                "{} is neither a run directory (no run.json) nor a study directory (no study.json)",
                dir.display()
            );
        }
        Ok(Self {
            dir: dir.to_owned(),
            runs: vec![],
        })
    }

    /// The answer to `GET url`.
    fn answer(&self, url: &str) -> Answer {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let query = parse_query(query);
        let result = match path {
            "/" | "/index.html" => return Answer::html(dashboard_page()),
            // Browsers ask for one; there is none.
            "/favicon.ico" => return Answer::text(204, String::new()),
            "/api/report" => self.report(&query),
            "/api/step" => self.step(&query),
            _ => Err(Answer::text(
                404,
                format!("no such page: {path} (the dashboard is at /)"),
            )),
        };
        result.unwrap_or_else(|answer| answer)
    }

    /// The run a request is about: the served run, or the study run named by `run=`.
    fn run(&self, query: &BTreeMap<String, String>) -> Result<RunLayout, Answer> {
        let name = query.get("run").map(String::as_str).unwrap_or_default();
        if self.runs.is_empty() {
            return match name {
                "" => Ok(RunLayout::new(&self.dir)),
                _ => Err(Answer::text(
                    404,
                    format!(
                        "{} is a run, not a study: it has no run {name}",
                        self.dir.display()
                    ),
                )),
            };
        }
        let names: Vec<&str> = self.runs.iter().map(|(n, _)| n.as_str()).collect();
        let chosen = if name.is_empty() { names[0] } else { name };
        self.runs
            .iter()
            .find(|(n, _)| n == chosen)
            .map(|(_, dir)| RunLayout::new(dir))
            .ok_or_else(|| {
                Answer::text(
                    404,
                    format!("the study has no run {chosen} (runs: {})", names.join(", ")),
                )
            })
    }

    /// The report's sections and plots now, the chosen run's analyzed steps, the study's runs, and a stamp of
    /// the files they come from; with `since=` that stamp, only `{"stamp": …}` (nothing changed on disk, so
    /// a page polling every second costs a few `stat` calls, not a report).
    fn report(&self, query: &BTreeMap<String, String>) -> Result<Answer, Answer> {
        let run = self.run(query)?;
        let stamp = format!("{:016x}-{}", self.stamp(), run.root.display());
        if query.get("since") == Some(&stamp) {
            return Ok(Answer::json(&serde_json::json!({ "stamp": stamp })));
        }
        let (title, subtitle, sections) =
            contents(&self.dir).map_err(|e| Answer::text(503, crate::one_sentence(&e)))?;
        let mut data = report_data(&title, &subtitle, &sections);
        let steps: Vec<u64> = match read_rows(&run.metrics()) {
            Ok(rows) => rows.iter().map(|r| r.step).collect(),
            Err(e) => return Err(Answer::text(503, e.to_string())),
        };
        data["stamp"] = stamp.into();
        data["steps"] = steps.into();
        data["runs"] = self.runs.iter().map(|(n, _)| n.clone()).collect();
        Ok(Answer::json(&data))
    }

    /// A hash of the size and modification time of every file the report reads (everything under the
    /// directory but checkpoints, per-step arrays, probe sets and event files).
    fn stamp(&self) -> u64 {
        fn walk(dir: &Path, hasher: &mut impl Hasher) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            let mut entries: Vec<_> = entries.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let name = entry.file_name();
                if ["checkpoints", "activations", "probes", "tensorboard"]
                    .iter()
                    .any(|skip| name == *skip)
                {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                (name, meta.len(), meta.modified().ok()).hash(hasher);
                if meta.is_dir() {
                    walk(&entry.path(), hasher);
                }
            }
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        walk(&self.dir, &mut hasher);
        hasher.finish()
    }

    /// One checkpoint's view: `step=S` (an analyzed step), `example=E` (a probe example, default 0).
    fn step(&self, query: &BTreeMap<String, String>) -> Result<Answer, Answer> {
        let run = self.run(query)?;
        let number = |key: &str, default: Option<u64>| -> Result<u64, Answer> {
            match query.get(key) {
                Some(text) => text.parse().map_err(|_| {
                    Answer::text(400, format!("{key} must be a whole number, not `{text}`"))
                }),
                None => default.ok_or_else(|| Answer::text(400, format!("{key}= is missing"))),
            }
        };
        let step = number("step", None)?;
        let example = number("example", Some(0))? as usize;
        match step_view(&run, step, example) {
            Ok(view) => Ok(Answer::json(&view)),
            Err(StepViewError::NotFound(why)) => Err(Answer::text(404, why)),
            Err(StepViewError::BadRequest(why)) => Err(Answer::text(400, why)),
            Err(StepViewError::Analysis(e)) => Err(Answer::text(503, e.to_string())),
        }
    }
}

/// `a=1&b=x%20y` as a map, percent-decoded (a key given twice keeps its last value).
fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A status, a content type and a body.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Answer {
    fn text(status: u16, body: String) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }
    fn html(body: String) -> Self {
        Self {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body,
        }
    }
    fn json(value: &serde_json::Value) -> Self {
        Self {
            status: 200,
            content_type: "application/json",
            body: value.to_string(),
        }
    }

    fn into_response(self) -> Response<std::io::Cursor<Vec<u8>>> {
        let header = |name: &str, value: &str| {
            Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
        };
        Response::from_string(self.body)
            .with_status_code(self.status)
            .with_header(header("Content-Type", self.content_type))
            .with_header(header("Cache-Control", "no-store"))
    }
}
