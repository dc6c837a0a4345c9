//! `pdl compare`: the learning curves of several runs in one picture, as TensorBoard overlays
//! runs: the training loss of every step (a moving mean, since one step's loss is noisy) and the
//! validation loss of every epoch. The multi-GPU chapter draws one process at batch B beside N
//! processes at slices of B/N with it; any two runs of the same task compare the same way.
//!
//! Each run is labelled with its folder's name and, from its `metrics.json`, how many processes
//! (and devices in each) trained it. In a multi-process run rank 0 writes the logs, so its per-step loss is
//! that of its slice (B/N examples) and is the noisier for it; the validation loss is the whole
//! validation set's either way.

use super::{BLUE, GREY, RED, draw_with, legend, per_step, whole_epochs};
use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// The colours of the runs, in order (then again).
const COLOURS: [RGBColor; 5] = [
    BLUE,
    RED,
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    GREY,
];

/// One run's curves: its label, the smoothed training loss per step and the validation loss
/// per epoch, both on the epoch axis.
struct Run {
    label: String,
    train: Vec<(f64, f64)>,
    valid: Vec<(f64, f64)>,
}

/// The training loss of every step of the run in `dir`, at `epoch - 1 + step / steps`, as the
/// mean over the last `window` steps (fewer at the start).
fn steps(dir: &Path, window: usize) -> Result<Vec<(f64, f64)>> {
    let raw = per_step(dir, "Loss")?;
    let window = window.max(1);
    let mut sum = 0.0;
    let mut smoothed = Vec::with_capacity(raw.len());
    for (i, &(x, v)) in raw.iter().enumerate() {
        sum += v;
        if i >= window {
            sum -= raw[i - window].1;
        }
        smoothed.push((x, sum / (i + 1).min(window) as f64));
    }
    Ok(smoothed)
}

/// The label of the run in `dir`: its folder's name, the processes that trained it, and their
/// devices when more than one.
fn label(dir: &Path) -> String {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    let metrics = std::fs::read_to_string(dir.join("metrics.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let count = |key: &str| {
        metrics
            .as_ref()
            .and_then(|m| m.get(key)?.as_u64())
            .unwrap_or(1)
    };
    let (devices, nodes) = (count("devices"), count("nodes"));
    let processes = match nodes {
        1 => "1 process".to_string(),
        n => format!("{n} processes"),
    };
    match devices {
        1 => format!("{name} ({processes})"),
        d => format!("{name} ({processes}, {d} devices each)"),
    }
}

/// Draws the curves of the runs in `dirs` into `out` (a `.png`), each training loss a moving mean
/// over `window` steps; its path.
pub fn write_comparison(dirs: &[PathBuf], out: &Path, window: usize) -> Result<PathBuf> {
    if dirs.len() < 2 {
        bail!("pdl compare takes two run folders or more");
    }
    if out.extension().is_none_or(|e| e != "png") {
        bail!("{}: the picture is a PNG; name it *.png", out.display());
    }
    let mut runs = Vec::new();
    for dir in dirs {
        let train = steps(dir, window)?;
        if train.is_empty() {
            bail!(
                "{}: no training logs (train/epoch-N/Loss.log); is it a run folder?",
                dir.display()
            );
        }
        let valid = super::curve(dir, "valid", "Loss")?;
        let valid = valid.into_iter().map(|(e, v)| (e as f64, v)).collect();
        runs.push(Run {
            label: label(dir),
            train,
            valid,
        });
    }
    let last = runs
        .iter()
        .flat_map(|r| r.train.last())
        .map(|p| p.0)
        .fold(1.0, f64::max);
    let values = runs
        .iter()
        .flat_map(|r| r.train.iter().chain(&r.valid))
        .map(|p| p.1)
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        bail!("the runs logged no finite positive loss");
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    draw_with(out, (1000, 520), |area| {
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("Loss: training (mean of {window} steps, lines) and validation (dots, per epoch)"),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..last + 0.1, (lo * 0.9..hi * 1.1).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("loss (log scale)")
            .x_label_formatter(&whole_epochs)
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 14))
            .draw()?;
        for (run, colour) in runs.iter().zip(COLOURS.iter().cycle()) {
            let colour = *colour;
            chart
                .draw_series(LineSeries::new(
                    run.train.iter().copied(),
                    colour.stroke_width(2),
                ))?
                .label(run.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            chart.draw_series(
                run.valid
                    .iter()
                    .map(|&p| Circle::new(p, 5, colour.filled())),
            )?;
        }
        legend(&mut chart, 14, None)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, losses: &[&str], metrics: &str) {
        for (e, text) in losses.iter().enumerate() {
            let epoch = dir.join(format!("train/epoch-{}", e + 1));
            std::fs::create_dir_all(&epoch).unwrap();
            std::fs::write(epoch.join("Loss.log"), text).unwrap();
            let valid = dir.join(format!("valid/epoch-{}", e + 1));
            std::fs::create_dir_all(&valid).unwrap();
            std::fs::write(valid.join("Loss.log"), "0.5,10\n").unwrap();
        }
        std::fs::write(dir.join("metrics.json"), metrics).unwrap();
    }

    #[test]
    fn steps_lie_on_the_epoch_axis_as_a_moving_mean() {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), &["4,1\n2,1\n", "0,1\n2,1\n"], "{}");
        let s = steps(dir.path(), 2).unwrap();
        assert_eq!(s, vec![(0.5, 4.0), (1.0, 3.0), (1.5, 1.0), (2.0, 1.0)]);
    }

    #[test]
    fn runs_are_labelled_by_how_they_trained_and_drawn_together() {
        let root = tempfile::tempdir().unwrap();
        let (one, two) = (root.path().join("one"), root.path().join("two"));
        run(&one, &["1,1\n0.8,1\n"], r#"{"devices": 1}"#);
        run(&two, &["1.1,1\n0.7,1\n"], r#"{"devices": 1, "nodes": 2}"#);
        assert_eq!(label(&one), "one (1 process)");
        assert_eq!(label(&two), "two (2 processes)");
        let out = root.path().join("pictures/both.png");
        let drawn = write_comparison(&[one.clone(), two], &out, 10).unwrap();
        assert_eq!(std::fs::read(drawn).unwrap()[1..4], *b"PNG");
        let alone = write_comparison(std::slice::from_ref(&one), &out, 10).unwrap_err();
        assert!(alone.to_string().contains("two run folders"), "{alone}");
        let empty = tempfile::tempdir().unwrap();
        let e = write_comparison(&[one, empty.path().into()], &out, 10).unwrap_err();
        assert!(e.to_string().contains("no training logs"), "{e}");
    }
}
