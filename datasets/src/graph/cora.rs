//! Cora (McCallum et al. 2000; LINQS release, Sen et al. 2008): 2708 machine-learning papers,
//! 5429 citations, a 1433-word binary bag of words per paper, 7 subject classes.
//!
//! The LINQS files, tab-separated:
//! - `cora.content`: `<paper id> <1433 values> <class name>`, one paper per line;
//! - `cora.cites`: `<cited paper id> <citing paper id>`, one citation per line.
//!
//! [`load_linqs`] reads any graph in this format (CiteSeer's files have the same shape) given its
//! class names; [`load`] reads Cora. Citations become undirected edges (see
//! [`undirected_edges`]); features stay as in the file (call [`Graph::row_normalize`]).

use super::{Graph, undirected_edges};
use crate::DataError;
use crate::download::{RemoteFile, ensure_files_with, offline};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Cora's seven classes, in the order of their labels.
pub const CLASSES: [&str; 7] = [
    "Case_Based",
    "Genetic_Algorithms",
    "Neural_Networks",
    "Probabilistic_Methods",
    "Reinforcement_Learning",
    "Rule_Learning",
    "Theory",
];

/// The two files, as the LINQS archive names them.
pub const FILE_NAMES: [&str; 2] = ["cora.content", "cora.cites"];

/// Kipf's pygcn repository serves the two LINQS files unpacked, byte-identical to the archive
/// (`linqs-data.soe.ucsc.edu/public/lbc/cora.tgz`), so each can be fetched and checked alone.
const MIRRORS: &[&str] = &["https://raw.githubusercontent.com/tkipf/pygcn/master/data/cora/"];

const FILES: [RemoteFile; 2] = [
    RemoteFile {
        name: FILE_NAMES[0],
        remote_name: None,
        sha256: "b8ebed0fd45e53995abafd1b70cf6a9fcc8f86abc5826d69b97fe6ca46e9c8ee",
        mirrors: MIRRORS,
    },
    RemoteFile {
        name: FILE_NAMES[1],
        remote_name: None,
        sha256: "ec1a372391b7f0f60a6aff0084e8abd8f19f0faa7e1f2441a41c492042d5945e",
        mirrors: MIRRORS,
    },
];

/// Finds Cora's folder under `data_dir` (`cora/`), downloading missing files when allowed (and
/// `PDL_OFFLINE` is not set).
pub fn locate(data_dir: &Path, allow_download: bool) -> Result<PathBuf, DataError> {
    ensure_files_with(
        data_dir,
        "Cora",
        "cora",
        &FILES,
        allow_download && !offline(),
    )
}

/// Reads Cora from `dir/cora.content` and `dir/cora.cites`.
pub fn load(dir: &Path) -> Result<Graph, DataError> {
    load_linqs(&dir.join(FILE_NAMES[0]), &dir.join(FILE_NAMES[1]), &CLASSES)
}

fn read(path: &Path) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))
}

/// Reads a graph in the LINQS format. Every content line must have the same number of columns
/// (at least three), numeric features and a class from `classes`; every cite must name two papers
/// of the content file. Errors name the file and line.
pub fn load_linqs(content: &Path, cites: &Path, classes: &[&str]) -> Result<Graph, DataError> {
    let at = |path: &Path, line: usize, message: String| {
        DataError::format(path, format!("line {line}: {message}"))
    };
    let text = read(content)?;
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let (mut features, mut labels) = (Vec::new(), Vec::new());
    let mut num_features = None;
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let expected = *num_features.get_or_insert(cols.len().saturating_sub(2)) + 2;
        if cols.len() < 3 || cols.len() != expected {
            return Err(at(
                content,
                i + 1,
                format!(
                    "{} tab-separated columns, expected {} (paper id, features, class)",
                    cols.len(),
                    expected.max(3)
                ),
            ));
        }
        if ids.insert(cols[0], labels.len()).is_some() {
            return Err(at(content, i + 1, format!("paper id {} repeats", cols[0])));
        }
        for (j, v) in cols[1..cols.len() - 1].iter().enumerate() {
            match v.trim().parse::<f32>() {
                Ok(x) if x.is_finite() => features.push(x),
                _ => {
                    return Err(at(
                        content,
                        i + 1,
                        format!("feature {} is '{v}', not a number", j + 1),
                    ));
                }
            }
        }
        let class = cols[cols.len() - 1].trim();
        match classes.iter().position(|c| *c == class) {
            Some(label) => labels.push(label),
            None => {
                return Err(at(
                    content,
                    i + 1,
                    format!(
                        "unknown class '{class}' (expected one of {})",
                        classes.join(", ")
                    ),
                ));
            }
        }
    }
    if labels.is_empty() {
        return Err(DataError::format(content, "no papers in the file"));
    }

    let text_cites = read(cites)?;
    let mut pairs = Vec::new();
    for (i, line) in text_cites
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let cols: Vec<&str> = line.split('\t').map(str::trim).collect();
        if cols.len() != 2 {
            return Err(at(
                cites,
                i + 1,
                format!(
                    "{} tab-separated columns, expected 2 (cited id, citing id)",
                    cols.len()
                ),
            ));
        }
        let node = |id: &str| {
            ids.get(id).copied().ok_or_else(|| {
                at(
                    cites,
                    i + 1,
                    format!("paper id {id} is not in {}", content.display()),
                )
            })
        };
        pairs.push((node(cols[1])?, node(cols[0])?));
    }
    let (sources, targets) = undirected_edges(pairs);
    Ok(Graph {
        num_nodes: labels.len(),
        num_features: num_features.unwrap_or(0),
        features,
        sources,
        targets,
        labels,
        class_names: classes.iter().map(|c| c.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(content: &str, cites: &str) -> (tempfile::TempDir, Result<Graph, DataError>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cora.content"), content).unwrap();
        std::fs::write(dir.path().join("cora.cites"), cites).unwrap();
        let graph = load(dir.path());
        (dir, graph)
    }

    fn error(content: &str, cites: &str) -> String {
        write(content, cites).1.unwrap_err().to_string()
    }

    const GOOD: &str = "31\t1\t0\tTheory\n7\t0\t1\tCase_Based\n9\t1\t1\tTheory\n";

    #[test]
    fn reads_papers_and_makes_citations_undirected() {
        let (_dir, g) = write(GOOD, "31\t7\n9\t31\n7\t31\n9\t9\n");
        let g = g.unwrap();
        assert_eq!((g.num_nodes, g.num_features, g.num_classes()), (3, 2, 7));
        assert_eq!(g.labels, vec![6, 0, 6]);
        assert_eq!(g.features, vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        // 31-7 twice and 9-31 once: two undirected links, the self-citation dropped.
        assert_eq!(g.sources, vec![0, 0, 1, 2]);
        assert_eq!(g.targets, vec![1, 2, 0, 0]);
    }

    #[test]
    fn a_short_row_names_file_and_line() {
        let e = error("31\t1\t0\tTheory\n7\t0\tCase_Based\n", "");
        assert!(
            e.contains("cora.content: line 2: 3 tab-separated columns, expected 4"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_class_names_file_and_line() {
        let e = error("31\t1\t0\tTheory\n7\t0\t1\tAstrology\n", "");
        assert!(
            e.contains("line 2: unknown class 'Astrology'") && e.contains("Case_Based"),
            "{e}"
        );
    }

    #[test]
    fn a_non_numeric_feature_names_file_and_line() {
        let e = error("31\t1\tx\tTheory\n", "");
        assert!(e.contains("line 1: feature 2 is 'x'"), "{e}");
    }

    #[test]
    fn a_repeated_paper_is_an_error() {
        let e = error("31\t1\t0\tTheory\n31\t1\t0\tTheory\n", "");
        assert!(e.contains("line 2: paper id 31 repeats"), "{e}");
    }

    #[test]
    fn a_cite_of_an_unknown_paper_names_file_and_line() {
        let e = error(GOOD, "31\t7\n31\t1234\n");
        assert!(
            e.contains("cora.cites: line 2: paper id 1234 is not in"),
            "{e}"
        );
    }

    #[test]
    fn a_cite_with_three_columns_is_an_error() {
        let e = error(GOOD, "31\t7\t9\n");
        assert!(
            e.contains("cora.cites: line 1: 3 tab-separated columns"),
            "{e}"
        );
    }

    #[test]
    fn empty_and_missing_files_are_errors() {
        assert!(error("", "").contains("no papers"));
        let dir = tempfile::tempdir().unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("cora.content"), "{e}");
    }
}
