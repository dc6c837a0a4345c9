//! Learning curves of a run, drawn from the logs Burn's learner leaves in its folder (d2l draws one
//! under every training cell; lecture 2 reads the generalisation gap off it).
//!
//! `curves.png` has up to three panels sharing the epoch axis: the mean loss per epoch on the
//! training and validation sets, the gap between them shaded and the epoch of lowest validation
//! loss marked; the task's other metric (accuracy for a classifier) the same way; and the
//! learning rate of every optimiser step beneath. A classifier also gets `confusion.png`, its
//! test set's confusion matrix. Each epoch's value is the mean over its batches,
//! weighted by batch size, which is what the dashboard shows at the end of the epoch.
//!
//! Burn writes `<run>/<split>/epoch-<n>/<Metric>.log`, one `value,count` line per batch. Text is
//! drawn with the DejaVu Sans font in `training/assets/` (its licence beside it), so a plot needs
//! no font library on the machine.

pub mod compare;
pub mod figures;

pub use figures::Figure;

use anyhow::{Context, Result, bail};
use plotters::coord::CoordTranslate;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};

/// A picture's drawing area.
type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Per-epoch means of one metric on one split, `(epoch, mean)` in epoch order.
type Curve = Vec<(usize, f64)>;

/// The metric logs of a split, by file stem, that are not the loss, the guard or the rate.
fn other_metrics(dir: &Path, split: &str) -> Vec<String> {
    let first = dir.join(split).join("epoch-1");
    let Ok(entries) = std::fs::read_dir(first) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log").map(str::to_owned)
        })
        .filter(|n| !["Loss", "Loss_is_finite", "Learning_Rate"].contains(&n.as_str()))
        .collect();
    names.sort();
    names
}

/// The epochs logged under `dir/split`, ascending.
fn epochs(dir: &Path, split: &str) -> Vec<usize> {
    let Ok(entries) = std::fs::read_dir(dir.join(split)) else {
        return Vec::new();
    };
    let mut epochs: Vec<usize> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("epoch-")?.parse().ok()
        })
        .collect();
    epochs.sort_unstable();
    epochs
}

/// The `value,count` lines of one log file. A line that is not two numbers is an error naming
/// the file and line (a log cut short by a kill ends without a newline and is read up to there).
pub(crate) fn read_log(path: &Path) -> Result<Vec<(f64, f64)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let parsed = line.split_once(',').and_then(|(v, n)| {
                Some((v.trim().parse::<f64>().ok()?, n.trim().parse::<f64>().ok()?))
            });
            parsed.with_context(|| {
                format!(
                    "{} line {}: not 'value,count': {line:?}",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect()
}

/// The batch-size-weighted mean of `metric` per epoch on `split`; epochs without the log are left
/// out.
fn curve(dir: &Path, split: &str, metric: &str) -> Result<Curve> {
    let mut points = Vec::new();
    for epoch in epochs(dir, split) {
        let path = dir.join(format!("{split}/epoch-{epoch}/{metric}.log"));
        if !path.is_file() {
            continue;
        }
        let rows = read_log(&path)?;
        let weight: f64 = rows.iter().map(|r| r.1).sum();
        if weight > 0.0 {
            points.push((epoch, rows.iter().map(|r| r.0 * r.1).sum::<f64>() / weight));
        }
    }
    Ok(points)
}

/// The learning rate of every optimiser step, on the epoch axis (see [`per_step`]).
fn learning_rates(dir: &Path) -> Result<Vec<(f64, f64)>> {
    per_step(dir, "Learning_Rate")
}

/// The training value of `metric` at every optimiser step, numbered from 1, with the epoch it
/// belongs to as a fraction (`epoch - 1 + step / steps`) so that it shares the epoch axis.
pub(crate) fn per_step(dir: &Path, metric: &str) -> Result<Vec<(f64, f64)>> {
    let mut points = Vec::new();
    for epoch in epochs(dir, "train") {
        let path = dir.join(format!("train/epoch-{epoch}/{metric}.log"));
        if !path.is_file() {
            continue;
        }
        let rows = read_log(&path)?;
        let steps = rows.len() as f64;
        points.extend(
            rows.iter()
                .enumerate()
                .map(|(i, r)| (epoch as f64 - 1.0 + (i + 1) as f64 / steps, r.0)),
        );
    }
    Ok(points)
}

/// The font every label is drawn in.
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .unwrap_or_else(|_| unreachable!("the bundled font parses"));
    });
}

/// An epoch-axis label: whole epochs only (the axis runs from 0, the start of training).
fn whole_epochs(x: &f64) -> String {
    match (x - x.round()).abs() < 1e-6 {
        true => format!("{x:.0}"),
        false => String::new(),
    }
}

const BLUE: RGBColor = RGBColor(31, 119, 180);
const RED: RGBColor = RGBColor(214, 39, 40);
const GREY: RGBColor = RGBColor(127, 127, 127);
const TRAIN: RGBColor = BLUE;
const VALID: RGBColor = RED;

/// Draws a PNG of `size` pixels at `path`: a white canvas handed to `draw`, written to a
/// temporary file beside `path` and renamed into place, so a kill mid-draw leaves the old picture
/// or none, never half of one. An error from the plotting library names the file.
fn draw_with(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area) -> Result<()>,
) -> Result<PathBuf> {
    register_font();
    // The encoder picks the format by the extension, so the temporary name ends in `.png` too.
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let partial = path.with_file_name(format!(".{name}.partial.png"));
    let area = BitMapBackend::new(&partial, size).into_drawing_area();
    let drawn = (|| {
        area.fill(&WHITE)?;
        draw(&area)?;
        area.present()?;
        Ok(())
    })();
    drop(area);
    let placed = drawn.and_then(|()| Ok(std::fs::rename(&partial, path)?));
    if placed.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    placed
        .map(|()| path.to_path_buf())
        .map_err(|e: anyhow::Error| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}

/// What a run's loss is counted in, for the axis that shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossUnit {
    /// Per example (cross-entropy in nats, or MSE).
    PerExample,
    /// Nats per character, with bits per character (nats / ln 2) on a second axis: a language
    /// model's.
    PerCharacter,
}

/// Draws `curves.png` into the run folder `dir` from its logs and returns its path.
pub fn write_curves(dir: &Path, unit: LossUnit) -> Result<PathBuf> {
    let loss = (curve(dir, "train", "Loss")?, curve(dir, "valid", "Loss")?);
    if loss.0.is_empty() {
        bail!(
            "{}: no training logs (train/epoch-N/Loss.log); is it a run folder?",
            dir.display()
        );
    }
    let loss_name = match unit {
        LossUnit::PerExample => "Loss",
        LossUnit::PerCharacter => "Loss (nats/char)",
    };
    let mut panels = vec![(loss_name.to_string(), loss.0, loss.1)];
    let valid_metrics = other_metrics(dir, "valid");
    for metric in other_metrics(dir, "train") {
        if valid_metrics.contains(&metric) {
            let (train, valid) = (curve(dir, "train", &metric)?, curve(dir, "valid", &metric)?);
            panels.push((metric.replace('_', " "), train, valid));
        }
    }
    panels.truncate(2);
    let rates = learning_rates(dir)?;
    let last_epoch = panels[0].1.last().map_or(1, |p| p.0).max(1) as f64;
    let best = panels[0]
        .2
        .iter()
        .filter(|p| p.1.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|p| p.0);

    let height = 330 * panels.len() as u32 + if rates.is_empty() { 0 } else { 220 };
    draw_with(&dir.join("curves.png"), (1000, height), |area| {
        let mut rest = area.clone();
        for (i, (name, train, valid)) in panels.iter().enumerate() {
            let (top, bottom) = rest.split_vertically(330);
            rest = bottom;
            let bits = i == 0 && unit == LossUnit::PerCharacter;
            draw_panel(&top, name, (train, valid), best, last_epoch, bits)?;
        }
        if !rates.is_empty() {
            draw_rates(&rest, &rates, last_epoch)?;
        }
        Ok(())
    })
}

/// The most classes a confusion matrix is drawn for.
pub const MAX_CONFUSION_CLASSES: usize = 20;

/// `pdl plot`: redraws what a run folder's files hold: `curves.png` from the logs (in the unit of
/// the experiment in its `config.json`) and `confusion.png` from `confusion.json`. The other
/// figures need the model run over the test set and are drawn when training ends.
pub fn redraw(dir: &Path) -> Result<Vec<PathBuf>> {
    let unit =
        crate::cli::load_run_config(dir).map_or(LossUnit::PerExample, |(_, c)| c.loss_unit());
    let mut drawn = vec![write_curves(dir, unit)?];
    let counts = dir.join("confusion.json");
    if counts.is_file() {
        let text = std::fs::read_to_string(&counts)
            .with_context(|| format!("cannot read {}", counts.display()))?;
        let confusion: Vec<Vec<usize>> = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a confusion matrix", counts.display()))?;
        drawn.push(write_confusion(dir, &confusion)?);
    }
    Ok(drawn)
}

/// Draws `confusion.png` (and writes `confusion.json`, the counts) into the run folder `dir`: the
/// test set's `confusion[true class][predicted class]`, each cell shaded by the share of its true
/// class (so the diagonal reads as each class's recall) and labelled with its count.
pub fn write_confusion(dir: &Path, confusion: &[Vec<usize>]) -> Result<PathBuf> {
    let k = confusion.len();
    if k == 0 || confusion.iter().any(|row| row.len() != k) {
        bail!("a confusion matrix must be square and not empty");
    }
    crate::artifacts::write_json(&dir.join("confusion.json"), &confusion)?;
    let total: usize = confusion.iter().flatten().sum();
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let side = 90 + 48 * k as u32;
    draw_with(&dir.join("confusion.png"), (side + 40, side + 50), |area| {
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!(
                    "Test confusion matrix: {:.2}% of {total} correct",
                    100.0 * correct as f64 / total.max(1) as f64
                ),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((0..k - 1).into_segmented(), (0..k - 1).into_segmented())?;
        // Row 0 at the top: the chart's y runs upwards, so true class i is drawn at k - 1 - i.
        let class_of = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(c) | SegmentValue::Exact(c) if *c < k => Some(*c),
            _ => None,
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted class")
            .y_desc("true class")
            .x_labels(k)
            .y_labels(k)
            .x_label_formatter(&|v| class_of(v).map_or(String::new(), |c| c.to_string()))
            .y_label_formatter(&|v| class_of(v).map_or(String::new(), |c| (k - 1 - c).to_string()))
            .label_style(("sans-serif", 14))
            .draw()?;
        for (i, row) in confusion.iter().enumerate() {
            let of_class = row.iter().sum::<usize>().max(1) as f64;
            for (j, &count) in row.iter().enumerate() {
                let share = count as f64 / of_class;
                let y = k - 1 - i;
                let cell = [
                    (SegmentValue::Exact(j), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(j + 1), SegmentValue::Exact(y + 1)),
                ];
                let shade = if i == j { TRAIN } else { VALID };
                chart.draw_series(std::iter::once(Rectangle::new(
                    cell,
                    shade.mix(0.08 + 0.92 * share.sqrt()).filled(),
                )))?;
                let ink = if share > 0.45 { WHITE } else { BLACK };
                let style = TextStyle::from(("sans-serif", 13).into_font())
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart.draw_series(std::iter::once(Text::new(
                    count.to_string(),
                    (SegmentValue::CenterOf(j), SegmentValue::CenterOf(y)),
                    style,
                )))?;
            }
        }
        Ok(())
    })
}

/// One metric: the training and validation curves, the gap between them shaded, the best epoch
/// (lowest validation loss) as a dashed vertical line; with `bits`, a loss in nats is read in
/// bits on the right-hand axis too.
fn draw_panel(
    area: &Area,
    name: &str,
    (train, valid): (&Curve, &Curve),
    best: Option<usize>,
    last_epoch: f64,
    bits: bool,
) -> Result<()> {
    let values = train
        .iter()
        .chain(valid)
        .map(|p| p.1)
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let pad = ((hi - lo) * 0.08).max(hi.abs() * 1e-3).max(1e-9);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{name} per epoch"), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0.0..last_epoch + 0.3, lo - pad..hi + pad)?
        .set_secondary_coord(
            0.0..last_epoch + 0.3,
            (lo - pad) / std::f64::consts::LN_2..(hi + pad) / std::f64::consts::LN_2,
        );
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(name)
        .x_label_formatter(&whole_epochs)
        .light_line_style(WHITE.mix(0.0))
        .label_style(("sans-serif", 14))
        .draw()?;
    if bits {
        chart
            .configure_secondary_axes()
            .y_desc("bits/char")
            .label_style(("sans-serif", 14))
            .draw()?;
    }
    // The gap: the polygon between the two curves over the epochs both have.
    let both: Vec<(f64, f64, f64)> = train
        .iter()
        .filter_map(|&(e, t)| valid.iter().find(|v| v.0 == e).map(|v| (e as f64, t, v.1)))
        .collect();
    if both.len() > 1 {
        let outline = both
            .iter()
            .map(|&(e, t, _)| (e, t))
            .chain(both.iter().rev().map(|&(e, _, v)| (e, v)));
        chart.draw_series(std::iter::once(Polygon::new(
            outline.collect::<Vec<_>>(),
            VALID.mix(0.12).filled(),
        )))?;
    }
    for (curve, color, label) in [(train, TRAIN, "train"), (valid, VALID, "valid")] {
        let points: Vec<(f64, f64)> = curve.iter().map(|&(e, v)| (e as f64, v)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    if let Some(best) = best {
        let x = best as f64;
        let dashes = (0..20).map(|i| {
            let y = |k: f64| lo - pad + (hi - lo + 2.0 * pad) * k / 20.0;
            PathElement::new([(x, y(i as f64)), (x, y(i as f64 + 0.5))], BLACK.mix(0.5))
        });
        chart
            .draw_series(dashes)?
            .label(format!("lowest valid loss: epoch {best}"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.mix(0.5)));
    }
    legend(&mut chart, 14, None)?;
    Ok(())
}

/// Draws the legend of `chart`'s labelled series, as every picture here draws it: a pale box
/// with a thin border at `position` (plotters' default when `None`), the labels in `size`-point
/// type.
fn legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    size: u32,
    position: Option<SeriesLabelPosition>,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
{
    let mut style = chart.configure_series_labels();
    if let Some(position) = position {
        style.position(position);
    }
    style
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", size))
        .draw()?;
    Ok(())
}

/// The learning rate of every optimiser step.
fn draw_rates(area: &Area, rates: &[(f64, f64)], last_epoch: f64) -> Result<()> {
    let hi = rates.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-12);
    let mut chart = ChartBuilder::on(area)
        .caption("Learning rate per step", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..last_epoch + 0.3, 0.0..hi * 1.08)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&whole_epochs)
        .y_labels(5)
        .light_line_style(WHITE.mix(0.0))
        .label_style(("sans-serif", 14))
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .draw()?;
    chart.draw_series(LineSeries::new(
        rates.iter().copied(),
        BLACK.stroke_width(1),
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn epoch_means_are_weighted_by_batch_size() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "train/epoch-1/Loss.log", "2.0,3\n1.0,1\n");
        write(dir.path(), "train/epoch-2/Loss.log", "0.5,2\n");
        write(dir.path(), "train/epoch-10/Loss.log", "0.25,2");
        let c = curve(dir.path(), "train", "Loss").unwrap();
        assert_eq!(c, vec![(1, 1.75), (2, 0.5), (10, 0.25)]);
    }

    #[test]
    fn a_garbled_log_line_is_an_error_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "train/epoch-1/Loss.log", "2.0,3\n1.0\n");
        let e = curve(dir.path(), "train", "Loss").unwrap_err().to_string();
        assert!(e.contains("epoch-1/Loss.log line 2"), "{e}");
        // A picture that fails half-way leaves the one before it and no temporary file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        std::fs::write(&path, b"the old picture").unwrap();
        let e = draw_with(&path, (40, 30), |_| bail!("out of ink")).unwrap_err();
        assert!(e.to_string().contains("x.png: out of ink"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"the old picture");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        draw_with(&path, (40, 30), |_| Ok(())).unwrap();
        assert_eq!(std::fs::read(&path).unwrap()[1..4], *b"PNG");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let empty = tempfile::tempdir().unwrap();
        let e = write_curves(empty.path(), LossUnit::PerExample)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no training logs"), "{e}");
    }
}
