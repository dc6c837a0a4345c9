//! Multivariate time series from CSV: numeric columns, a leading date column ignored, standard
//! scaling fitted on the training rows only, chronological splits, and sliding windows.
//!
//! A window starting at row `s` has the look-back `rows [s, s + L)` as input and the horizon
//! `rows [s + L, s + L + H)` as target. A split is a range of rows, and its windows lie inside it;
//! [`ett_splits`] lets the valid and test ranges reach `L` rows back into the previous split, as
//! the ETT papers (Informer, Autoformer, DLinear) do, so that their first target starts right at
//! the split's border.
//!
//! - ETT (Zhou et al. 2021, Informer): `ETTh1.csv`, hourly, a `date` column and 7 series
//!   (`HUFL, HULL, MUFL, MULL, LUFL, LULL, OT`).
//! - Airline passengers (Box & Jenkins): 144 monthly totals, a `Month` column and `Passengers`.

use crate::DataError;
use crate::download::{RemoteFile, ensure_files_with, offline};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use burn::tensor::TensorData;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// Zhou et al.'s ETDataset repository, where the ETT files are published.
const ETT_MIRRORS: &[&str] =
    &["https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/"];

/// Jason Brownlee's copy of the Box & Jenkins series, the one most tutorials read.
const AIRLINE_MIRRORS: &[&str] = &["https://raw.githubusercontent.com/jbrownlee/Datasets/master/"];

/// Where a series comes from: a known dataset (found under the data dir, downloaded when missing)
/// or any CSV file.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesSource {
    /// `ett/ETTh1.csv`.
    EttH1,
    /// `ett/ETTh2.csv`.
    EttH2,
    /// `airline-passengers/airline-passengers.csv`.
    Airline,
    /// A CSV file of that shape.
    File(std::path::PathBuf),
}

impl SeriesSource {
    /// `etth1`, `etth2`, `airline`, or a path to a CSV file.
    pub fn parse(name: &str) -> Self {
        match name {
            "etth1" => Self::EttH1,
            "etth2" => Self::EttH2,
            "airline" => Self::Airline,
            path => Self::File(path.into()),
        }
    }

    /// The CSV file, downloading a known dataset's into `data_dir` when it is missing and
    /// `allow_download` (and `PDL_OFFLINE` is not set).
    pub fn locate(
        &self,
        data_dir: &Path,
        allow_download: bool,
    ) -> Result<std::path::PathBuf, DataError> {
        let (dataset, folder, file) = match self {
            Self::File(path) => return Ok(path.clone()),
            Self::EttH1 => (
                "ETTh1",
                "ett",
                RemoteFile {
                    name: "ETTh1.csv",
                    remote_name: None,
                    sha256: "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
                    mirrors: ETT_MIRRORS,
                },
            ),
            Self::EttH2 => (
                "ETTh2",
                "ett",
                RemoteFile {
                    name: "ETTh2.csv",
                    remote_name: None,
                    sha256: "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
                    mirrors: ETT_MIRRORS,
                },
            ),
            Self::Airline => (
                "Airline passengers",
                "airline-passengers",
                RemoteFile {
                    name: "airline-passengers.csv",
                    remote_name: None,
                    sha256: "8cb51be753a718d9be5d76d7e238cc224792754676adc21faa59e954b0201621",
                    mirrors: AIRLINE_MIRRORS,
                },
            ),
        };
        let name = file.name;
        let dir = ensure_files_with(
            data_dir,
            dataset,
            folder,
            &[file],
            allow_download && !offline(),
        )?;
        Ok(dir.join(name))
    }
}

/// A table of numeric series, one row per time step.
#[derive(Debug, Clone)]
pub struct TimeSeries {
    /// Column names, in file order (the date column left out).
    pub columns: Vec<String>,
    /// Values, row-major `[rows, columns]`.
    pub values: Vec<f32>,
    /// Number of rows (time steps).
    pub rows: usize,
}

impl TimeSeries {
    /// Reads a CSV with a header row. A first column whose first value is not a number (a date
    /// such as `2016-07-01 00:00:00` or `1949-01`) is skipped; every other value must be a finite
    /// number. Errors name the file, line and column.
    pub fn load_csv(path: &Path) -> Result<Self, DataError> {
        let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            .from_reader(file);
        let bad = |m: String| DataError::format(path, m);
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| bad(format!("unreadable header: {e}")))?
            .iter()
            .map(str::to_string)
            .collect();
        if header.iter().all(|h| h.is_empty()) {
            return Err(bad("empty file: no header row".into()));
        }
        let (mut values, mut rows, mut skip_first) = (Vec::new(), 0, None);
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                match e.kind() {
                    csv::ErrorKind::UnequalLengths { len, .. } => bad(format!(
                        "line {line}: {len} fields, expected {} ({})",
                        header.len(),
                        header.join(",")
                    )),
                    _ => bad(format!("line {line}: {e}")),
                }
            })?;
            let line = record.position().map_or(0, |p| p.line());
            let skip = *skip_first
                .get_or_insert_with(|| record.get(0).is_some_and(|v| v.parse::<f32>().is_err()));
            for (j, field) in record.iter().enumerate().skip(usize::from(skip)) {
                match field.parse::<f32>() {
                    Ok(x) if x.is_finite() => values.push(x),
                    _ => {
                        return Err(bad(format!(
                            "line {line}, column '{}': '{field}' is not a number",
                            header[j]
                        )));
                    }
                }
            }
            rows += 1;
        }
        if rows == 0 {
            return Err(bad("no data rows after the header".into()));
        }
        let columns = header[usize::from(skip_first == Some(true))..].to_vec();
        if columns.is_empty() {
            return Err(bad("no numeric columns".into()));
        }
        Ok(Self {
            columns,
            values,
            rows,
        })
    }

    /// Number of series.
    pub fn num_columns(&self) -> usize {
        self.columns.len()
    }

    /// Keeps the named columns, in the given order. A missing name is an error listing those there
    /// are (`path` names the file in it).
    pub fn select(&self, names: &[&str], path: &Path) -> Result<Self, DataError> {
        let index: Vec<usize> = names
            .iter()
            .map(|n| {
                self.columns.iter().position(|c| c == n).ok_or_else(|| {
                    DataError::format(
                        path,
                        format!("no column '{n}' (there are: {})", self.columns.join(", ")),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let c = self.num_columns();
        let values = (0..self.rows)
            .flat_map(|r| index.iter().map(move |&j| (r, j)))
            .map(|(r, j)| self.values[r * c + j])
            .collect();
        Ok(Self {
            columns: names.iter().map(|n| n.to_string()).collect(),
            values,
            rows: self.rows,
        })
    }
}

/// Per-column standardisation `(x - mean) / std`, fitted on some rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaler {
    /// Mean of each column.
    pub mean: Vec<f32>,
    /// Standard deviation of each column (1 where a column is constant).
    pub std: Vec<f32>,
}

impl Scaler {
    /// Fits on `rows` of `series` only (the training part: no peeking at valid or test).
    pub fn fit(series: &TimeSeries, rows: Range<usize>) -> Self {
        let c = series.num_columns();
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for r in rows {
            for j in 0..c {
                let x = series.values[r * c + j] as f64;
                mean[j] += x;
                sq[j] += x * x;
            }
        }
        let mean: Vec<f64> = mean.iter().map(|s| s / n).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| {
                let sd = (s / n - m * m).max(0.0).sqrt() as f32;
                if sd > 1e-8 { sd } else { 1.0 }
            })
            .collect();
        Self {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
        }
    }

    /// The series with every column standardised.
    pub fn transform(&self, series: &TimeSeries) -> TimeSeries {
        let c = series.num_columns();
        let values = series
            .values
            .iter()
            .enumerate()
            .map(|(i, x)| (x - self.mean[i % c]) / self.std[i % c])
            .collect();
        TimeSeries {
            values,
            ..series.clone()
        }
    }
}

/// The row ranges of the ETT papers' split of an hourly ETT file: 12 months of 30 days to train,
/// 4 to validate, 4 to test, the valid and test ranges starting `lookback` rows early. Errors when
/// the file is shorter than 20 such months (14,400 rows).
pub fn ett_splits(rows: usize, lookback: usize) -> Result<[Range<usize>; 3], String> {
    const MONTH: usize = 30 * 24;
    let (train_end, valid_end, test_end) = (12 * MONTH, 16 * MONTH, 20 * MONTH);
    if rows < test_end {
        return Err(format!(
            "the ETT split needs {test_end} hourly rows (20 months of 30 days), the file has {rows}"
        ));
    }
    if lookback > train_end {
        return Err(format!(
            "look-back {lookback} is longer than the training part"
        ));
    }
    Ok([
        0..train_end,
        train_end - lookback..valid_end,
        valid_end - lookback..test_end,
    ])
}

/// One window: the look-back and the horizon that follows it, row-major.
#[derive(Debug, Clone)]
pub struct Window {
    /// `[lookback, columns]`.
    pub input: Vec<f32>,
    /// `[horizon, columns]`.
    pub target: Vec<f32>,
}

/// Every window inside a range of rows of a (scaled) series, one per start row.
#[derive(Debug, Clone)]
pub struct WindowDataset {
    series: Arc<TimeSeries>,
    rows: Range<usize>,
    /// Look-back `L`: input steps.
    pub lookback: usize,
    /// Horizon `H`: steps to predict.
    pub horizon: usize,
}

impl WindowDataset {
    /// The windows of `series` within `rows`.
    pub fn new(
        series: Arc<TimeSeries>,
        rows: Range<usize>,
        lookback: usize,
        horizon: usize,
    ) -> Self {
        Self {
            series,
            rows,
            lookback,
            horizon,
        }
    }

    /// Number of series per step.
    pub fn num_columns(&self) -> usize {
        self.series.num_columns()
    }
}

impl Dataset<Window> for WindowDataset {
    fn get(&self, index: usize) -> Option<Window> {
        if index >= self.len() {
            return None;
        }
        let c = self.series.num_columns();
        let start = self.rows.start + index;
        let mid = start + self.lookback;
        let end = mid + self.horizon;
        let v = &self.series.values;
        Some(Window {
            input: v[start * c..mid * c].to_vec(),
            target: v[mid * c..end * c].to_vec(),
        })
    }

    fn len(&self) -> usize {
        (self.rows.len() + 1).saturating_sub(self.lookback + self.horizon)
    }
}

/// A batch of windows.
#[derive(Debug, Clone)]
pub struct WindowBatch<B: Backend> {
    /// Look-backs, `[batch, lookback, columns]`.
    pub inputs: Tensor<B, 3>,
    /// Horizons, `[batch, horizon, columns]`.
    pub targets: Tensor<B, 3>,
}

/// Stacks [`Window`]s into a [`WindowBatch`] with one buffer per tensor.
#[derive(Debug, Clone, Copy)]
pub struct WindowBatcher {
    /// Series per step.
    pub columns: usize,
}

impl<B: Backend> Batcher<B, Window, WindowBatch<B>> for WindowBatcher {
    fn batch(&self, items: Vec<Window>, device: &B::Device) -> WindowBatch<B> {
        let batch = items.len();
        let c = self.columns.max(1);
        let lookback = items.first().map_or(0, |w| w.input.len() / c);
        let horizon = items.first().map_or(0, |w| w.target.len() / c);
        let mut inputs = Vec::with_capacity(batch * lookback * c);
        let mut targets = Vec::with_capacity(batch * horizon * c);
        for w in items {
            inputs.extend_from_slice(&w.input);
            targets.extend_from_slice(&w.target);
        }
        WindowBatch {
            inputs: Tensor::from_data(TensorData::new(inputs, [batch, lookback, c]), device),
            targets: Tensor::from_data(TensorData::new(targets, [batch, horizon, c]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<TimeSeries, DataError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("series.csv");
        std::fs::write(&path, text).unwrap();
        TimeSeries::load_csv(&path)
    }

    fn error(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    const ETT_LIKE: &str = "date,HUFL,OT\n2016-07-01 00:00:00,5.8,30.5\n2016-07-01 01:00:00,5.6,27.7\n2016-07-01 02:00:00,5.1,27.7\n";

    #[test]
    fn reads_numeric_columns_and_skips_the_date() {
        let s = load(ETT_LIKE).unwrap();
        assert_eq!(s.columns, vec!["HUFL", "OT"]);
        assert_eq!(s.rows, 3);
        assert_eq!(s.values, vec![5.8, 30.5, 5.6, 27.7, 5.1, 27.7]);
        let airline = load("\"Month\",\"Passengers\"\n\"1949-01\",112\n\"1949-02\",118\n").unwrap();
        assert_eq!(
            (airline.columns, airline.values),
            (vec!["Passengers".into()], vec![112.0, 118.0])
        );
        let plain = load("a,b\n1,2\n3,4\n").unwrap();
        assert_eq!(plain.columns, vec!["a", "b"]);
    }

    #[test]
    fn a_non_numeric_value_names_file_line_and_column() {
        let e = error("date,HUFL,OT\n2016-07-01,5.8,30.5\n2016-07-02,abc,1\n");
        assert!(
            e.contains("series.csv: line 3, column 'HUFL': 'abc' is not a number"),
            "{e}"
        );
        let e = error("date,HUFL,OT\n2016-07-01,5.8,NaN\n");
        assert!(e.contains("line 2, column 'OT'"), "{e}");
    }

    #[test]
    fn a_short_row_names_file_and_line() {
        let e = error("date,HUFL,OT\n2016-07-01,5.8,30.5\n2016-07-02,5.8\n");
        assert!(
            e.contains("series.csv: line 3: 2 fields, expected 3"),
            "{e}"
        );
    }

    #[test]
    fn empty_files_and_missing_columns_are_errors() {
        assert!(error("").contains("empty file"));
        assert!(error("date,OT\n").contains("no data rows"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        let e = load(ETT_LIKE)
            .unwrap()
            .select(&["OT", "LULL"], &path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.csv: no column 'LULL' (there are: HUFL, OT)"),
            "{e}"
        );
    }

    #[test]
    fn select_reorders_columns() {
        let s = load(ETT_LIKE)
            .unwrap()
            .select(&["OT", "HUFL"], Path::new("x"))
            .unwrap();
        assert_eq!(s.values[..4], [30.5, 5.8, 27.7, 5.6]);
    }

    #[test]
    fn the_scaler_uses_only_the_rows_it_is_fitted_on() {
        let s = load("a,b\n1,5\n3,5\n100,7\n").unwrap();
        let scaler = Scaler::fit(&s, 0..2);
        assert_eq!(scaler.mean, vec![2.0, 5.0]);
        assert_eq!(scaler.std, vec![1.0, 1.0]); // b is constant on the fitted rows
        let t = scaler.transform(&s);
        assert_eq!(t.values, vec![-1.0, 0.0, 1.0, 0.0, 98.0, 2.0]);
    }

    #[test]
    fn ett_split_has_the_papers_borders_and_window_counts() {
        let [train, valid, test] = ett_splits(17_420, 96).unwrap();
        assert_eq!(
            (train, valid.clone(), test.clone()),
            (0..8640, 8544..11520, 11424..14400)
        );
        let series = Arc::new(TimeSeries {
            columns: vec!["x".into()],
            values: (0..14_400).map(|i| i as f32).collect(),
            rows: 14_400,
        });
        // Informer's and Autoformer's data loaders give 2785 test windows for L = H = 96.
        let test_set = WindowDataset::new(series.clone(), test, 96, 96);
        assert_eq!(test_set.len(), 2785);
        let first = test_set.get(0).unwrap();
        assert_eq!(first.target[0], 11_520.0); // the first target step is the split's first row
        assert_eq!(first.input[95], 11_519.0);
        assert!(test_set.get(2785).is_none());
        assert!(ett_splits(14_399, 96).unwrap_err().contains("14400"));
    }

    #[test]
    fn windows_batch_into_look_back_and_horizon() {
        type B = burn::backend::NdArray;
        let series = Arc::new(load("a,b\n0,10\n1,11\n2,12\n3,13\n4,14\n").unwrap());
        let ds = WindowDataset::new(series, 0..5, 2, 1);
        assert_eq!(ds.len(), 3);
        let batch: WindowBatch<B> = WindowBatcher { columns: 2 }.batch(
            vec![ds.get(0).unwrap(), ds.get(2).unwrap()],
            &Default::default(),
        );
        assert_eq!(batch.inputs.dims(), [2, 2, 2]);
        assert_eq!(
            batch.targets.into_data().to_vec::<f32>().unwrap(),
            vec![2.0, 12.0, 4.0, 14.0]
        );
    }
}
