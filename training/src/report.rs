//! The course report: `pdl report [runs/]` reads every run folder under `runs/` and writes
//! `runs/report.md` and `runs/report.html` (the same content; the HTML page shows the pictures
//! inline). One row per experiment of the registry, in course order: the run's score next to the
//! published figure it should be compared with (and its source), epochs, training time, backend
//! and machine, and links to the run's figures; a `--seeds N` folder shows mean ± standard
//! deviation. An experiment without a run is listed as not run. Then a section per run with its
//! pictures (and a language model's sample).
//!
//! A folder that cannot be read (no or garbled `metrics.json`, a truncated log, an unknown
//! experiment in `config.json`) is a one-line note at the top of the report, never a failure:
//! `pdl report` fails only when it found no run at all. The learning curves are redrawn from the
//! logs, so the report shows what the logs hold.

use crate::cli::one_line;
use crate::experiments::{EXPERIMENTS, Experiment, ExperimentConfig};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The files of a run the report links to, and what each shows.
const FIGURES: [(&str, &str); 7] = [
    ("curves.png", "learning curves"),
    ("confusion.png", "confusion matrix"),
    ("mistakes.png", "most confident mistakes"),
    ("per_class.png", "accuracy per class"),
    ("embedding.png", "hidden layer"),
    ("forecasts.png", "forecasts"),
    ("sample.txt", "sample"),
];

/// What `metrics.json` holds that the report shows. Fields newer than a run are optional.
#[derive(Debug, Clone, Deserialize)]
struct Metrics {
    experiment: String,
    backend: String,
    epochs: usize,
    wall_seconds: f64,
    #[serde(default)]
    smoke: bool,
    test: SplitScores,
    /// A pre-training run's probes of its encoder.
    #[serde(default)]
    probe: Option<ProbeInfo>,
    #[serde(default)]
    rerun: Option<RerunInfo>,
}

#[derive(Debug, Clone, Deserialize)]
struct ProbeInfo {
    linear: f64,
}

#[derive(Debug, Clone, Deserialize)]
struct SplitScores {
    loss: f64,
    #[serde(default)]
    accuracy: Option<f64>,
    #[serde(default)]
    mae: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
struct RerunInfo {
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    machine: Option<String>,
}

/// One run folder that could be read.
#[derive(Debug, Clone)]
struct Run {
    /// The folder, relative to the runs folder (`mnist-cnn`, `cora-gcn/seed-42`).
    rel: PathBuf,
    metrics: Metrics,
}

/// What the runs folder holds for one experiment.
#[derive(Debug)]
enum Found {
    /// No folder, or none that could be read.
    NotRun,
    /// One run.
    One(Run),
    /// A `--seeds` folder's runs, in seed order.
    Seeds(Vec<Run>),
}

/// How an experiment's score reads.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Test accuracy.
    Accuracy,
    /// Accuracy on SST-2's dev set.
    Dev,
    /// MSE and MAE.
    Forecast,
    /// Valid loss in nats per character.
    Language,
    /// A pre-trained encoder's linear probe, on the test set.
    Probe,
    /// A masked language model's share of hidden dev words guessed.
    HiddenWords,
}

impl Kind {
    fn of(e: &Experiment) -> Self {
        match (e.preset)() {
            ExperimentConfig::Forecast(_) => Kind::Forecast,
            ExperimentConfig::Language(_) => Kind::Language,
            ExperimentConfig::Sentence(_) => Kind::Dev,
            ExperimentConfig::Contrastive(_) | ExperimentConfig::Masked(_) => Kind::Probe,
            ExperimentConfig::MaskedText(_) => Kind::HiddenWords,
            _ => Kind::Accuracy,
        }
    }

    /// The number mean ± std is taken of: accuracy, or the loss (MSE, nats/char).
    fn value(self, m: &Metrics) -> Option<f64> {
        match self {
            Kind::Accuracy | Kind::Dev | Kind::HiddenWords => m.test.accuracy,
            Kind::Forecast | Kind::Language => Some(m.test.loss),
            Kind::Probe => m.probe.as_ref().map(|p| p.linear),
        }
    }

    fn one(self, m: &Metrics) -> String {
        let s = &m.test;
        match (self, s.accuracy, s.mae) {
            (Kind::Probe, _, _) => match &m.probe {
                Some(p) => format!("linear probe {:.2}%", p.linear),
                None => format!("NT-Xent {:.4}, no probe", s.loss),
            },
            (Kind::Accuracy, Some(a), _) => format!("{a:.2}%"),
            (Kind::Dev, Some(a), _) => format!("dev {a:.2}%"),
            (Kind::HiddenWords, Some(a), _) => {
                format!("dev hidden words {:.3} nats, {a:.2}% guessed", s.loss)
            }
            (Kind::Forecast, _, Some(mae)) => format!("MSE {:.3}, MAE {mae:.3}", s.loss),
            (Kind::Language, _, _) => format!(
                "valid {:.3} nats/char ({:.2} bits)",
                s.loss,
                s.loss / std::f64::consts::LN_2
            ),
            _ => format!("loss {:.4}", s.loss),
        }
    }

    fn spread(self, runs: &[Run]) -> String {
        let values: Vec<f64> = runs.iter().filter_map(|r| self.value(&r.metrics)).collect();
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let std = var.sqrt();
        let seeds = runs.len();
        match self {
            Kind::Accuracy => format!("{mean:.2} ± {std:.2}% ({seeds} seeds)"),
            Kind::Dev => format!("dev {mean:.2} ± {std:.2}% ({seeds} seeds)"),
            Kind::Forecast => format!("MSE {mean:.3} ± {std:.3} ({seeds} seeds)"),
            Kind::Language => format!("valid {mean:.3} ± {std:.3} nats/char ({seeds} seeds)"),
            Kind::Probe => format!("linear probe {mean:.2} ± {std:.2}% ({seeds} seeds)"),
            Kind::HiddenWords => format!("dev {mean:.2} ± {std:.2}% words guessed ({seeds} seeds)"),
        }
    }
}

/// `7 min 12 s`, `18 s`, `1 h 11 min`.
fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{:.0} s", seconds.max(0.0)),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// What the report found: a row per experiment, the runs of unlisted folders, and notes.
struct Survey {
    rows: Vec<(&'static Experiment, Found)>,
    notes: Vec<String>,
}

fn read_metrics(dir: &Path, shown: &Path) -> Result<Metrics> {
    let path = dir.join("metrics.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: no metrics.json (the run did not finish)",
            shown.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not the metrics of a pdl run",
            shown.join("metrics.json").display()
        )
    })
}

/// The experiment a folder's `config.json` names, if it has one.
fn configured_experiment(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(value.get("experiment")?.as_str()?.to_string())
}

/// A folder under `root` as notes name it: from the runs folder's own name (`runs/mnist-cnn`).
fn shown(root: &Path, rel: &Path) -> PathBuf {
    Path::new(root.file_name().unwrap_or(root.as_os_str())).join(rel)
}

/// The link from the report (in `root`) to `file` of the run folder `rel`.
fn link(rel: &Path, file: &str) -> String {
    rel.join(file).to_string_lossy().replace('\\', "/")
}

/// Reads one run folder, redrawing its learning curves; a problem is a note.
fn read_run(root: &Path, rel: PathBuf, e: &Experiment, notes: &mut Vec<String>) -> Option<Run> {
    let dir = root.join(&rel);
    let shown = shown(root, &rel);
    if let Some(named) = configured_experiment(&dir).filter(|n| n != e.name) {
        let known = crate::experiments::find(&named).is_ok();
        notes.push(match known {
            true => format!(
                "{}: config.json is a run of {named}, not {}; left out",
                shown.display(),
                e.name
            ),
            false => format!(
                "{}: config.json names experiment {named:?}, which pdl does not have; left out",
                shown.display()
            ),
        });
        return None;
    }
    let metrics = match read_metrics(&dir, &shown) {
        Ok(m) => m,
        Err(err) => {
            notes.push(one_line(&err));
            return None;
        }
    };
    if metrics.experiment != e.name {
        notes.push(format!(
            "{}: metrics.json is a run of {}, not {}; left out",
            shown.display(),
            metrics.experiment,
            e.name
        ));
        return None;
    }
    if let Err(err) = crate::plots::write_curves(&dir, (e.preset)().loss_unit()) {
        notes.push(format!(
            "{}: no learning curves: {}",
            shown.display(),
            one_line(&err)
        ));
    }
    Some(Run { rel, metrics })
}

/// Surveys `root`: each experiment's folder (`root/<name>`, or its `seed-*` folders), and any
/// other folder that looks like a run (a note: the report lists the registry's names only).
fn survey(root: &Path) -> Result<Survey> {
    if !root.is_dir() {
        bail!(
            "{}: no such folder of runs (train one first: cargo xtask train mnist-cnn)",
            root.display()
        );
    }
    let mut notes = Vec::new();
    let mut rows = Vec::new();
    for e in EXPERIMENTS {
        let dir = root.join(e.name);
        let mut seeds: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().to_string_lossy().into_owned();
                let seed = name.strip_prefix("seed-")?.parse().ok()?;
                Some((seed, Path::new(e.name).join(name)))
            })
            .collect();
        seeds.sort();
        let found = if !dir.is_dir() {
            Found::NotRun
        } else if !seeds.is_empty() {
            let runs: Vec<Run> = seeds
                .into_iter()
                .filter_map(|(_, rel)| read_run(root, rel, e, &mut notes))
                .collect();
            match runs.len() {
                0 => Found::NotRun,
                _ => Found::Seeds(runs),
            }
        } else {
            read_run(root, PathBuf::from(e.name), e, &mut notes).map_or(Found::NotRun, Found::One)
        };
        rows.push((e, found));
    }
    // Folders that are no experiment's: a run of an unknown experiment is worth a note.
    let mut others: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|p| p.is_dir())
        .collect();
    others.sort();
    for dir in others {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let shown = shown(root, Path::new(&name));
        let shown = shown.display();
        if EXPERIMENTS.iter().any(|e| e.name == name) {
            continue;
        }
        match configured_experiment(&dir) {
            Some(named) if crate::experiments::find(&named).is_err() => notes.push(format!(
                "{shown}: config.json names experiment {named:?}, which pdl does not have; left out"
            )),
            Some(named) => notes.push(format!(
                "{shown}: a run of {named} outside its folder {named}/; left out (the report \
                 reads runs/<experiment>/)"
            )),
            None => {}
        }
    }
    Ok(Survey { rows, notes })
}

/// The report's files, and what it found.
#[derive(Debug)]
pub struct Written {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
    /// Experiments with a run.
    pub reported: usize,
    /// The notes at the top of the report.
    pub notes: Vec<String>,
}

/// A table cell: the report's own text, kept to one line.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// `text` as HTML, its `code` spans set as code.
fn html_text(text: &str) -> String {
    let parts = escape(text);
    let mut out = String::new();
    for (i, part) in parts.split('`').enumerate() {
        match i % 2 {
            0 => out += part,
            _ => out += &format!("<code>{part}</code>"),
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The runs behind a row, first (the one whose pictures are shown) first.
fn runs_of(found: &Found) -> &[Run] {
    match found {
        Found::NotRun => &[],
        Found::One(run) => std::slice::from_ref(run),
        Found::Seeds(runs) => runs,
    }
}

/// Writes `report.md` and `report.html` into `root` from the runs under it.
pub fn write_report(root: &Path) -> Result<Written> {
    let Survey { rows, notes } = survey(root)?;
    let reported = rows.iter().filter(|(_, f)| !runs_of(f).is_empty()).count();
    if reported == 0 {
        bail!(
            "{}: no run of any experiment could be read{}",
            root.display(),
            match notes.first() {
                Some(note) => format!(" ({note})"),
                None => " (train one first: cargo xtask train mnist-cnn)".into(),
            }
        );
    }
    let mut sources = Vec::new();
    let mut md = String::new();
    let mut html = String::new();
    let title = "pdl course report";
    let intro = format!(
        "{reported} of {} experiments have a run in `{}`. Scores are each run's `metrics.json`: \
         the test split's (SST-2: dev; language models: the valid text's); a `--seeds` folder \
         shows mean ± sample standard deviation. Training time is `wall_seconds`, training \
         alone. The published figure is what the score should be compared with; its source says \
         where the setting differs.",
        EXPERIMENTS.len(),
        root.display()
    );
    let _ = writeln!(md, "# {title}\n\n{intro}\n");
    let _ = writeln!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n\
         <style>body{{font-family:sans-serif;max-width:1280px;margin:2em auto;padding:0 1em}}\
         table{{border-collapse:collapse;font-size:14px}}td,th{{border:1px solid #ccc;\
         padding:4px 8px;vertical-align:top}}th{{background:#f3f3f3}}img{{max-width:100%;\
         border:1px solid #eee;margin:4px 0}}pre{{background:#f7f7f7;padding:8px;\
         white-space:pre-wrap}}.notrun{{color:#888}}.note{{color:#a40}}</style></head><body>\n\
         <h1>{title}</h1>\n<p>{}</p>",
        html_text(&intro)
    );
    if !notes.is_empty() {
        let _ = writeln!(md, "## Notes\n");
        let _ = writeln!(html, "<h2>Notes</h2><ul>");
        for note in &notes {
            let _ = writeln!(md, "- {note}");
            let _ = writeln!(html, "<li class=\"note\">{}</li>", html_text(note));
        }
        let _ = writeln!(md);
        let _ = writeln!(html, "</ul>");
    }
    let header = [
        "chapter",
        "experiment",
        "model",
        "dataset",
        "score",
        "published",
        "epochs",
        "training time",
        "backend, machine",
        "figures",
    ];
    let _ = writeln!(
        md,
        "## Course map\n\n| {} |\n|{}",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    let _ = writeln!(html, "<h2>Course map</h2>\n<table><tr>");
    for h in header {
        let _ = write!(html, "<th>{h}</th>");
    }
    let _ = writeln!(html, "</tr>");
    for (e, found) in &rows {
        let kind = Kind::of(e);
        let runs = runs_of(found);
        let published = e.published.as_ref().map(|p| {
            sources.push((e.name, p.source));
            (p.score, sources.len())
        });
        let published_md = published.map_or("—".into(), |(s, n)| format!("{s} [{n}]"));
        let published_html = published.map_or("—".into(), |(s, n)| {
            format!("{} <a href=\"#source-{n}\">[{n}]</a>", escape(s))
        });
        let file = e.file.rsplit('/').next().unwrap_or(e.file);
        let model = format!("{} (`{file}`)", e.model);
        let (score, epochs, time, machine, figures_md, figures_html) = match runs.first() {
            None => (
                "not run".to_string(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ),
            Some(first) => {
                let m = &first.metrics;
                let mut score = match found {
                    Found::Seeds(runs) => kind.spread(runs),
                    _ => kind.one(m),
                };
                if runs.iter().any(|r| r.metrics.smoke) {
                    score += " (smoke run: means nothing)";
                }
                let epochs: Vec<usize> = runs.iter().map(|r| r.metrics.epochs).collect();
                let (lo, hi) = (epochs.iter().min(), epochs.iter().max());
                let epochs = match (lo, hi) {
                    (Some(lo), Some(hi)) if lo != hi => format!("{lo}-{hi}"),
                    (Some(lo), _) => lo.to_string(),
                    _ => String::new(),
                };
                let seconds: f64 =
                    runs.iter().map(|r| r.metrics.wall_seconds).sum::<f64>() / runs.len() as f64;
                let time = match runs.len() {
                    1 => duration(seconds),
                    _ => format!("{} per seed", duration(seconds)),
                };
                let machine = m.rerun.as_ref().and_then(|r| r.machine.clone());
                let machine = format!(
                    "{}, {}",
                    m.backend,
                    machine.unwrap_or_else(|| "machine not recorded".into())
                );
                let present: Vec<(&str, &str)> = FIGURES
                    .into_iter()
                    .filter(|(file, _)| root.join(&first.rel).join(file).is_file())
                    .collect();
                let link = |file: &str| link(&first.rel, file);
                let md_links = present
                    .iter()
                    .map(|(file, what)| format!("[{what}]({})", link(file)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let html_links = present
                    .iter()
                    .map(|(file, what)| format!("<a href=\"{}\">{what}</a>", escape(&link(file))))
                    .collect::<Vec<_>>()
                    .join(", ");
                (score, epochs, time, machine, md_links, html_links)
            }
        };
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {published_md} | {epochs} | {time} | {} | {figures_md} |",
            e.chapter,
            e.name,
            cell(&model),
            cell(e.dataset),
            cell(&score),
            cell(&machine)
        );
        let class = if runs.is_empty() {
            " class=\"notrun\""
        } else {
            ""
        };
        let _ = writeln!(
            html,
            "<tr{class}><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{published_html}</td><td>{epochs}</td><td>{time}</td>\
             <td>{}</td><td>{figures_html}</td></tr>",
            escape(e.chapter),
            match runs.is_empty() {
                true => format!("<code>{}</code>", e.name),
                false => format!("<a href=\"#{0}\"><code>{0}</code></a>", e.name),
            },
            html_text(&model),
            escape(e.dataset),
            escape(&score),
            escape(&machine)
        );
    }
    let _ = writeln!(md, "\nSources of the published figures:\n");
    let _ = writeln!(
        html,
        "</table>\n<p>Sources of the published figures:</p><ol>"
    );
    for (n, (name, source)) in sources.iter().enumerate() {
        let _ = writeln!(md, "{}. `{name}`: {source}", n + 1);
        let _ = writeln!(
            html,
            "<li id=\"source-{}\"><code>{name}</code>: {}</li>",
            n + 1,
            escape(source)
        );
    }
    let _ = writeln!(html, "</ol>");
    // A section per experiment with a run: its pictures, a language model's sample.
    for (e, found) in &rows {
        let Some(first) = runs_of(found).first() else {
            continue;
        };
        let dir = root.join(&first.rel);
        let which = match found {
            Found::Seeds(runs) => format!(
                " (the pictures are seed {}'s, the first of {})",
                first
                    .metrics
                    .rerun
                    .as_ref()
                    .and_then(|r| r.seed)
                    .map_or("?".into(), |s| s.to_string()),
                runs.len()
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            md,
            "\n## {}\n\n{} on {}{which}.\n",
            e.name, e.model, e.dataset
        );
        let _ = writeln!(
            html,
            "<h2 id=\"{}\">{}</h2>\n<p>{} on {}{}.</p>",
            e.name,
            e.name,
            escape(e.model),
            escape(e.dataset),
            escape(&which)
        );
        for (file, what) in FIGURES {
            let path = dir.join(file);
            if !path.is_file() {
                continue;
            }
            let link = link(&first.rel, file);
            if file.ends_with(".png") {
                let _ = writeln!(md, "![{what}]({link})\n");
                let _ = writeln!(
                    html,
                    "<figure><img src=\"{}\" alt=\"{what}\"><figcaption>{what}</figcaption></figure>",
                    escape(&link)
                );
            } else {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let _ = writeln!(
                    md,
                    "Generated by the trained model after its prompt (temperature 0.8, seed \
                     1):\n\n```text\n{}\n```\n",
                    text.replace("```", "'''")
                );
                let _ = writeln!(
                    html,
                    "<p>Generated by the trained model (temperature 0.8, seed 1):</p><pre>{}</pre>",
                    escape(&text)
                );
            }
        }
    }
    let _ = writeln!(html, "</body></html>");
    let markdown = root.join("report.md");
    let page = root.join("report.html");
    crate::artifacts::write_atomic(&markdown, md.as_bytes())?;
    crate::artifacts::write_atomic(&page, html.as_bytes())?;
    Ok(Written {
        markdown,
        html: page,
        reported,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, file: &str, text: &str) {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A finished run of `experiment` in `root/rel` with test `scores` (JSON) and one epoch of logs.
    fn run(root: &Path, rel: &str, experiment: &str, scores: &str, seed: u64) {
        put(
            root,
            &format!("{rel}/metrics.json"),
            &format!(
                r#"{{"experiment":"{experiment}","backend":"flex","devices":1,"epochs":3,
                "wall_seconds":75.4,"smoke":false,"valid":{scores},"test":{scores},
                "rerun":{{"seed":{seed},"machine":"Test CPU, 2 cores"}}}}"#
            ),
        );
        put(
            root,
            &format!("{rel}/config.json"),
            &format!(r#"{{"experiment":"{experiment}"}}"#),
        );
        for split in ["train", "valid"] {
            put(
                root,
                &format!("{rel}/{split}/epoch-1/Loss.log"),
                "1.0,10\n0.5,10\n",
            );
            put(root, &format!("{rel}/{split}/epoch-2/Loss.log"), "0.4,20\n");
        }
    }

    #[test]
    fn the_report_shows_every_experiment_and_notes_what_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let acc = |a: f64| format!(r#"{{"loss":0.7,"accuracy":{a},"count":1000}}"#);
        run(root, "cora-gcn/seed-42", "cora-gcn", &acc(80.0), 42);
        run(root, "cora-gcn/seed-43", "cora-gcn", &acc(82.0), 43);
        let mse = r#"{"loss":0.3961,"mae":0.4142,"count":2785}"#;
        run(root, "ett-linear", "ett-linear", mse, 42);
        // A log cut short by a kill: the score still shows, the curves are a note.
        run(root, "mnist-mlp", "mnist-mlp", &acc(98.49), 42);
        put(root, "mnist-mlp/train/epoch-2/Loss.log", "0.4");
        // A run that did not finish, a garbled metrics.json, an unknown experiment.
        put(
            root,
            "mnist-cnn/config.json",
            r#"{"experiment":"mnist-cnn"}"#,
        );
        put(root, "fashion-cnn/metrics.json", "{\"experiment\": \"fash");
        put(root, "mystery/config.json", r#"{"experiment":"mnist-gan"}"#);

        let written = write_report(root).unwrap();
        assert_eq!(written.reported, 3);
        let md = std::fs::read_to_string(&written.markdown).unwrap();
        let row = |name: &str| {
            md.lines()
                .find(|l| l.contains(&format!("| `{name}` |")))
                .unwrap_or_else(|| panic!("no row for {name}"))
                .to_string()
        };
        // Every experiment has a row, in course order.
        let rows: Vec<usize> = EXPERIMENTS
            .iter()
            .map(|e| md.find(&row(e.name)).unwrap())
            .collect();
        assert!(rows.windows(2).all(|w| w[0] < w[1]));
        let gcn = row("cora-gcn");
        assert!(gcn.contains("81.00 ± 1.41% (2 seeds)"), "{gcn}");
        assert!(gcn.contains("80.1 ± 0.5% ["), "{gcn}");
        assert!(gcn.contains("1 min 15 s per seed") && gcn.contains("flex, Test CPU, 2 cores"));
        assert!(
            gcn.contains("[learning curves](cora-gcn/seed-42/curves.png)"),
            "{gcn}"
        );
        let ett = row("ett-linear");
        assert!(
            ett.contains("MSE 0.396, MAE 0.414") && ett.contains("| 3 |"),
            "{ett}"
        );
        assert!(row("mnist-mlp").contains("98.49%"));
        for name in ["mnist-cnn", "fashion-cnn", "mnist-vit"] {
            assert!(row(name).contains("not run"), "{}", row(name));
        }
        let notes = written.notes.join("\n");
        for expected in [
            "mnist-mlp: no learning curves",
            "epoch-2/Loss.log line 1",
            "mnist-cnn: no metrics.json",
            "fashion-cnn/metrics.json: not the metrics of a pdl run",
            "mystery: config.json names experiment \"mnist-gan\"",
        ] {
            assert!(notes.contains(expected), "{expected} not in:\n{notes}");
        }
        assert_eq!(written.notes.len(), 4, "{notes}");
        assert!(written.notes.iter().all(|n| !n.contains('\n')));
        // The page shows each drawn picture, and every picture it shows is there.
        let html = std::fs::read_to_string(&written.html).unwrap();
        let shown: Vec<&str> = html
            .split("<img src=\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap())
            .collect();
        assert!(shown.contains(&"cora-gcn/seed-42/curves.png"), "{shown:?}");
        assert!(shown.contains(&"ett-linear/curves.png"), "{shown:?}");
        assert!(
            shown.iter().all(|src| root.join(src).is_file()),
            "{shown:?}"
        );
        assert!(!shown.iter().any(|src| src.starts_with("mnist-mlp/")));
    }

    #[test]
    fn no_run_at_all_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_report(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("no run of any experiment") && e.contains("cargo xtask train"),
            "{e}"
        );
        put(dir.path(), "mnist-mlp/metrics.json", "not json");
        let e = write_report(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("metrics.json: not the metrics of a pdl run"),
            "{e}"
        );
        let e = write_report(&dir.path().join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such folder of runs"), "{e}");
    }
}
