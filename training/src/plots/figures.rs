//! The figures a pipeline adds to its run, beyond the learning curves every run has: what the
//! model got wrong (image classifiers), what it forecast (forecasters), how it scores each class
//! and what its hidden layer learnt (graph models), what it writes (language models). A pipeline
//! puts them in its [`crate::artifacts::RunReport`]; `pdl train` draws them into the run folder
//! once the run is saved, so a figure that cannot be drawn costs a note, never the run.

use super::{BLUE, GREY, RED, draw_with, legend};
use crate::learner::Wrong;
use anyhow::{Result, bail};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};

/// One figure of a run.
#[derive(Debug, Clone)]
pub enum Figure {
    /// An image classifier's most confidently wrong test images: `mistakes.png`.
    Mistakes(Mistakes),
    /// A forecaster's forecasts of some test windows: `forecasts.png`.
    Forecasts(Forecasts),
    /// A classifier's test accuracy per class: `per_class.png`.
    PerClass {
        /// The class names, by label.
        classes: Vec<String>,
        /// `confusion[true class][predicted class]` test examples.
        confusion: Vec<Vec<usize>>,
    },
    /// A hidden layer's representations projected onto their first two principal components:
    /// `embedding.png`.
    Embedding(Embedding),
    /// Text a language model wrote: `sample.txt`.
    Sample(String),
    /// A masked autoencoder's test images, what it was shown and what it filled in:
    /// `reconstructions.png`.
    Reconstructions(Reconstructions),
}

impl Figure {
    /// What the figure shows, for the line that names its file.
    pub fn what(&self) -> &'static str {
        match self {
            Figure::Mistakes(_) => "most confident mistakes",
            Figure::Forecasts(_) => "test forecasts",
            Figure::PerClass { .. } => "test accuracy per class",
            Figure::Embedding(_) => "hidden-layer projection",
            Figure::Sample(_) => "generated sample",
            Figure::Reconstructions(_) => "masked-autoencoder reconstructions",
        }
    }

    /// Draws (or writes) the figure into the run folder `dir`; its path.
    pub fn draw(&self, dir: &Path) -> Result<PathBuf> {
        match self {
            Figure::Mistakes(m) => m.draw(&dir.join("mistakes.png")),
            Figure::Forecasts(f) => f.draw(&dir.join("forecasts.png")),
            Figure::PerClass { classes, confusion } => {
                per_class(&dir.join("per_class.png"), classes, confusion)
            }
            Figure::Embedding(e) => e.draw(&dir.join("embedding.png")),
            Figure::Reconstructions(r) => r.draw(&dir.join("reconstructions.png")),
            Figure::Sample(text) => {
                let path = dir.join("sample.txt");
                crate::artifacts::write_atomic(&path, text.as_bytes())?;
                Ok(path)
            }
        }
    }
}

/// Test images a classifier got wrong, most confident first.
#[derive(Debug, Clone)]
pub struct Mistakes {
    /// Each mistake and its pixels (`height * width`, 0 = background).
    pub images: Vec<(Wrong, Vec<u8>)>,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// The class names, by label.
    pub classes: Vec<String>,
}

impl Mistakes {
    /// A grid of the images, six to a row, each under its true class, the class the model gave
    /// it and the probability it gave that class.
    fn draw(&self, path: &Path) -> Result<PathBuf> {
        if self.images.is_empty() {
            bail!("no test image was misclassified");
        }
        let (cols, scale) = (6usize, 4usize);
        let rows = self.images.len().div_ceil(cols);
        let (cell_w, cell_h) = (
            (self.width * scale + 40) as u32,
            (self.height * scale + 48) as u32,
        );
        let size = (cell_w * cols as u32, 40 + cell_h * rows as u32);
        let name = |c: usize| self.classes.get(c).cloned().unwrap_or(c.to_string());
        draw_with(path, size, |area| {
            let (title, grid) = area.split_vertically(40);
            title.titled(
                "Most confidently wrong test images",
                ("sans-serif", 20).into_font(),
            )?;
            let cells = grid.split_evenly((rows, cols));
            for ((wrong, pixels), cell) in self.images.iter().zip(cells) {
                let font = ("sans-serif", 13).into_font();
                let black = TextStyle::from(font.clone()).pos(Pos::new(HPos::Center, VPos::Top));
                let red = black.color(&RED);
                let centre = cell_w as i32 / 2;
                cell.draw(&Text::new(
                    format!("true {}", name(wrong.truth)),
                    (centre, 4),
                    black,
                ))?;
                cell.draw(&Text::new(
                    format!(
                        "said {} ({:.0}%)",
                        name(wrong.guess),
                        100.0 * wrong.confidence
                    ),
                    (centre, 20),
                    red,
                ))?;
                let (x0, y0) = (20, 40);
                for (i, &v) in pixels.iter().enumerate() {
                    let (x, y) = (
                        (i % self.width * scale) as i32,
                        (i / self.width * scale) as i32,
                    );
                    let ink = 255 - v;
                    cell.draw(&Rectangle::new(
                        [
                            (x0 + x, y0 + y),
                            (x0 + x + scale as i32, y0 + y + scale as i32),
                        ],
                        RGBColor(ink, ink, ink).filled(),
                    ))?;
                }
            }
            Ok(())
        })
    }
}

/// Images a masked autoencoder saw only in part, and what it made of them.
#[derive(Debug, Clone)]
pub struct Reconstructions {
    /// Per image: its pixels, which of them were hidden from the encoder, and the pixels with
    /// the hidden ones as the decoder predicted (`height * width` each, 0 = background).
    pub images: Vec<(Vec<u8>, Vec<bool>, Vec<u8>)>,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// The test set's mean squared error on the hidden pixels (normalised units).
    pub mse: f64,
}

impl Reconstructions {
    /// Three rows: the images, what the encoder was shown (hidden patches tinted blue), and the
    /// images filled in.
    fn draw(&self, path: &Path) -> Result<PathBuf> {
        if self.images.is_empty() {
            bail!("no test image to reconstruct");
        }
        let (cols, scale) = (self.images.len(), 4usize);
        let (cell_w, cell_h) = (
            (self.width * scale + 12) as u32,
            (self.height * scale + 12) as u32,
        );
        let label_w = 90u32;
        let size = (label_w + cell_w * cols as u32, 40 + cell_h * 3);
        draw_with(path, size, |area| {
            let (title, grid) = area.split_vertically(40);
            title.titled(
                &format!(
                    "Masked autoencoder on test images (hidden-pixel MSE {:.3})",
                    self.mse
                ),
                ("sans-serif", 18).into_font(),
            )?;
            let (labels, grid) = grid.split_horizontally(label_w);
            let font = ("sans-serif", 14).into_font();
            for (row, name) in ["image", "shown", "filled in"].iter().enumerate() {
                let y = row as i32 * cell_h as i32 + cell_h as i32 / 2;
                labels.draw(&Text::new(name.to_string(), (6, y), font.clone()))?;
            }
            let cells = grid.split_evenly((3, cols));
            for (k, cell) in cells.iter().enumerate() {
                let (row, col) = (k / cols, k % cols);
                let (original, hidden, filled) = &self.images[col];
                for i in 0..self.width * self.height {
                    let colour = match row {
                        0 => grey(original[i]),
                        1 if hidden[i] => RGBColor(190, 205, 235),
                        1 => grey(original[i]),
                        _ => grey(filled[i]),
                    };
                    let (x, y) = (
                        (i % self.width * scale) as i32 + 6,
                        (i / self.width * scale) as i32 + 6,
                    );
                    cell.draw(&Rectangle::new(
                        [(x, y), (x + scale as i32, y + scale as i32)],
                        colour.filled(),
                    ))?;
                }
            }
            Ok(())
        })
    }
}

/// Ink `v` (0 = background) as a shade of grey on white.
fn grey(v: u8) -> RGBColor {
    let ink = 255 - v;
    RGBColor(ink, ink, ink)
}

/// Test windows of one series: what came before, what followed, the forecast and the naive one.
#[derive(Debug, Clone)]
pub struct Forecasts {
    /// The series shown (a column of the CSV).
    pub series: String,
    /// The windows, in test order.
    pub windows: Vec<ForecastWindow>,
}

/// One forecast window of one series, in the standardised units the model sees.
#[derive(Debug, Clone)]
pub struct ForecastWindow {
    /// The window's position among the test windows.
    pub index: usize,
    /// The look-back.
    pub lookback: Vec<f32>,
    /// What followed.
    pub truth: Vec<f32>,
    /// The model's forecast.
    pub forecast: Vec<f32>,
    /// The naive forecast: the look-back's last steps repeated.
    pub naive: Vec<f32>,
}

impl Forecasts {
    /// One chart per window, two to a row, time 0 the first forecast step.
    fn draw(&self, path: &Path) -> Result<PathBuf> {
        if self.windows.is_empty() {
            bail!("no test window to show");
        }
        let rows = self.windows.len().div_ceil(2);
        let cols = self.windows.len().min(2);
        draw_with(path, (560 * cols as u32, 40 + 320 * rows as u32), |area| {
            let (title, grid) = area.split_vertically(40);
            title.titled(
                &format!(
                    "Forecasts of {} on test windows (standardised)",
                    self.series
                ),
                ("sans-serif", 20).into_font(),
            )?;
            for (w, cell) in self.windows.iter().zip(grid.split_evenly((rows, cols))) {
                w.draw(&cell)?;
            }
            Ok(())
        })
    }
}

impl ForecastWindow {
    fn draw(&self, area: &super::Area) -> Result<()> {
        let back = self.lookback.len() as i32;
        let ahead = self.truth.len() as i32;
        let all = self
            .lookback
            .iter()
            .chain(&self.truth)
            .chain(&self.forecast)
            .chain(&self.naive)
            .map(|&v| v as f64)
            .filter(|v| v.is_finite());
        let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let pad = ((hi - lo) * 0.08).max(1e-3);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("test window {}", self.index), ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d(-back as f64..ahead as f64, lo - pad..hi + pad)?;
        chart
            .configure_mesh()
            .x_desc("step (0: first forecast)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 12))
            .draw()?;
        let line = |values: &[f32], start: i32| -> Vec<(f64, f64)> {
            let steps = values.iter().enumerate();
            steps
                .map(|(i, &v)| ((start + i as i32) as f64, v as f64))
                .collect()
        };
        let series = [
            (line(&self.lookback, -back), BLACK, "look-back"),
            (line(&self.truth, 0), BLUE, "truth"),
            (line(&self.forecast, 0), RED, "forecast"),
            (line(&self.naive, 0), GREY, "naive"),
        ];
        for (points, colour, label) in series {
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2))
                });
            // A horizon of a few steps shows as dots.
            if ahead <= 3 {
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
            }
        }
        legend(&mut chart, 12, Some(SeriesLabelPosition::UpperLeft))?;
        Ok(())
    }
}

/// Bars of the test accuracy (recall) of each class, with its number of examples.
fn per_class(path: &Path, classes: &[String], confusion: &[Vec<usize>]) -> Result<PathBuf> {
    let k = confusion.len();
    if k == 0 || classes.len() != k {
        bail!("{} class names for {k} classes", classes.len());
    }
    let recall: Vec<(f64, usize)> = confusion
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let n: usize = row.iter().sum();
            (100.0 * row[i] as f64 / n.max(1) as f64, n)
        })
        .collect();
    let width = 120 + 150 * k as u32;
    draw_with(path, (width, 400), |area| {
        let mut chart = ChartBuilder::on(area)
            .caption("Test accuracy per class", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((0..k - 1).into_segmented(), 0.0..105.0)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE.mix(0.0))
            .y_desc("% correct")
            .x_labels(k)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(c) if *c < k => classes[*c].replace('_', " "),
                _ => String::new(),
            })
            .label_style(("sans-serif", 12))
            .draw()?;
        chart.draw_series(recall.iter().enumerate().map(|(i, &(r, _))| {
            let bar = [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), r),
            ];
            let mut bar = Rectangle::new(bar, BLUE.mix(0.8).filled());
            bar.set_margin(0, 0, 12, 12);
            bar
        }))?;
        chart.draw_series(recall.iter().enumerate().map(|(i, &(r, n))| {
            Text::new(
                format!("{r:.1}% of {n}"),
                (SegmentValue::CenterOf(i), (r + 1.0).min(101.0)),
                TextStyle::from(("sans-serif", 12).into_font())
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))?;
        Ok(())
    })
}

/// A hidden layer's representations of every example, projected onto their first two principal
/// components and coloured by class.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// What the representations are ("GCN hidden layer (16)").
    pub layer: String,
    /// Each example's projection.
    pub points: Vec<(f64, f64)>,
    /// Each example's class.
    pub labels: Vec<usize>,
    /// The class names, by label.
    pub classes: Vec<String>,
    /// The share of the variance each of the two components explains.
    pub explained: (f64, f64),
}

impl Embedding {
    /// The projection of `rows` (one representation per example) onto their first two principal
    /// components.
    pub fn project(
        layer: String,
        rows: &[Vec<f32>],
        labels: Vec<usize>,
        classes: Vec<String>,
    ) -> Result<Self> {
        let (points, explained) = pca2(rows)?;
        Ok(Self {
            layer,
            points,
            labels,
            classes,
            explained,
        })
    }

    fn draw(&self, path: &Path) -> Result<PathBuf> {
        let (xs, ys): (Vec<f64>, Vec<f64>) = self.points.iter().copied().unzip();
        let range = |v: &[f64]| {
            let (lo, hi) = v
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                    (lo.min(x), hi.max(x))
                });
            let pad = ((hi - lo) * 0.05).max(1e-6);
            lo - pad..hi + pad
        };
        draw_with(path, (900, 720), |area| {
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!(
                        "{}, first two principal components ({:.0}% and {:.0}% of the variance)",
                        self.layer,
                        100.0 * self.explained.0,
                        100.0 * self.explained.1
                    ),
                    ("sans-serif", 17),
                )
                .margin(12)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(range(&xs), range(&ys))?;
            chart
                .configure_mesh()
                .light_line_style(WHITE.mix(0.0))
                .x_desc("PC 1")
                .y_desc("PC 2")
                .label_style(("sans-serif", 12))
                .draw()?;
            for (class, name) in self.classes.iter().enumerate() {
                let colour = Palette99::pick(class).to_rgba();
                let points = self.points.iter().zip(&self.labels);
                chart
                    .draw_series(
                        points
                            .filter(|(_, l)| **l == class)
                            .map(|(&p, _)| Circle::new(p, 2, colour.filled())),
                    )?
                    .label(name.replace('_', " "))
                    .legend(move |(x, y)| Circle::new((x + 6, y), 4, colour.filled()));
            }
            legend(&mut chart, 12, None)?;
            Ok(())
        })
    }
}

/// Each row's coordinates on two components, and the share of the variance each explains.
pub type Projection = (Vec<(f64, f64)>, (f64, f64));

/// The projections of `rows` onto their first two principal components, and the share of the
/// variance each explains: the covariance's two leading eigenvectors by power iteration (the
/// second after deflating the first), in f64.
pub fn pca2(rows: &[Vec<f32>]) -> Result<Projection> {
    let d = rows.first().map_or(0, Vec::len);
    if rows.len() < 3 || d < 2 || rows.iter().any(|r| r.len() != d) {
        bail!("a projection needs at least 3 rows of the same width, 2 or more");
    }
    let n = rows.len() as f64;
    let mut mean = vec![0.0; d];
    for row in rows {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64 / n;
        }
    }
    let centred: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect())
        .collect();
    let mut cov = vec![vec![0.0; d]; d];
    for row in &centred {
        for i in 0..d {
            for j in 0..d {
                cov[i][j] += row[i] * row[j] / n;
            }
        }
    }
    let total: f64 = (0..d).map(|i| cov[i][i]).sum();
    if !(total > 0.0 && total.is_finite()) {
        bail!("the representations do not vary (or are not finite)");
    }
    let mut components = Vec::new();
    let mut variances = Vec::new();
    for _ in 0..2 {
        // Start off any axis, so a leading eigenvector along one is found too.
        let mut v: Vec<f64> = (0..d).map(|i| 1.0 + i as f64 / d as f64).collect();
        let mut value = 0.0;
        for _ in 0..500 {
            let w: Vec<f64> = (0..d)
                .map(|i| (0..d).map(|j| cov[i][j] * v[j]).sum())
                .collect();
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm == 0.0 {
                break;
            }
            value = norm;
            v = w.into_iter().map(|x| x / norm).collect();
        }
        for i in 0..d {
            for j in 0..d {
                cov[i][j] -= value * v[i] * v[j];
            }
        }
        components.push(v);
        variances.push(value);
    }
    let project = |row: &Vec<f64>, c: &Vec<f64>| row.iter().zip(c).map(|(a, b)| a * b).sum();
    let points = centred
        .iter()
        .map(|r| (project(r, &components[0]), project(r, &components[1])))
        .collect();
    Ok((points, (variances[0] / total, variances[1] / total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_component_follows_the_widest_spread() {
        // Points along (2, 1) with a little spread across it: the first component explains
        // nearly all of the variance and orders the points along the line.
        let rows: Vec<Vec<f32>> = (0..50)
            .map(|i| {
                let t = i as f32 - 25.0;
                let across = if i % 2 == 0 { 0.1 } else { -0.1 };
                vec![2.0 * t - across, t + 2.0 * across, 3.0]
            })
            .collect();
        let (points, (first, second)) = pca2(&rows).unwrap();
        assert!(first > 0.999 && second > 0.0 && first + second <= 1.0 + 1e-9);
        let along: Vec<f64> = points.iter().map(|p| p.0).collect();
        let increasing = along.windows(2).all(|w| w[1] > w[0]);
        let decreasing = along.windows(2).all(|w| w[1] < w[0]);
        assert!(increasing || decreasing, "{along:?}");
        assert!(pca2(&rows[..2]).is_err());
        assert!(pca2(&vec![vec![1.0, 1.0]; 5]).is_err());
    }
}
