//! Graphs for node classification: node features, an edge list, labels, and node splits.
//!
//! - [`Graph`]: features `[num_nodes, num_features]`, `edge_index` `[2, num_edges]` (row 0 the
//!   source of each edge, row 1 its target; messages flow source -> target), one label per node.
//! - [`cora`]: the Cora citation graph in its LINQS files (`cora.content`, `cora.cites`).
//! - [`synthetic`]: a seeded stochastic block model, for tests and the scale benchmark.
//! - [`NodeSplit`]: the Planetoid-sized split (Yang, Cohen & Salakhutdinov 2016): 20 labelled nodes
//!   per class to train on, 500 to validate, 1000 to test.
//! - [`GraphBatcher`]: the whole graph as one batch, with the nodes whose loss counts.
//!
//! Edges are stored once in each direction, without duplicates and without self-loops: a layer
//! that needs self-loops (GCN, GAT) adds them itself, so the data does not decide for it.

pub mod cora;
pub mod synthetic;

use crate::SplitMix64;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use burn::tensor::TensorData;
use std::sync::Arc;

/// A graph with features and a class per node.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Number of nodes.
    pub num_nodes: usize,
    /// Features per node.
    pub num_features: usize,
    /// Node features, row-major `[num_nodes, num_features]`.
    pub features: Vec<f32>,
    /// Source node of each edge, `[num_edges]`.
    pub sources: Vec<i64>,
    /// Target node of each edge, `[num_edges]`.
    pub targets: Vec<i64>,
    /// Class of each node, `[num_nodes]`.
    pub labels: Vec<usize>,
    /// Class names, indexed by label.
    pub class_names: Vec<String>,
}

impl Graph {
    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Number of directed edges (`edge_index` columns).
    pub fn num_edges(&self) -> usize {
        self.sources.len()
    }

    /// Scales each node's feature row to sum to 1 (rows of zeros stay zero), as Kipf & Welling
    /// preprocess Cora's bag-of-words features.
    pub fn row_normalize(&mut self) {
        for row in self.features.chunks_mut(self.num_features.max(1)) {
            let sum: f32 = row.iter().sum();
            if sum != 0.0 {
                row.iter_mut().for_each(|x| *x /= sum);
            }
        }
    }

    /// Nodes per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }
}

/// Makes an undirected edge list from `pairs`: both directions of each pair, self-loops dropped,
/// duplicates dropped, sorted by (source, target). Returns `(sources, targets)`.
pub fn undirected_edges(pairs: impl IntoIterator<Item = (usize, usize)>) -> (Vec<i64>, Vec<i64>) {
    let mut edges: Vec<(i64, i64)> = pairs
        .into_iter()
        .filter(|(a, b)| a != b)
        .flat_map(|(a, b)| [(a as i64, b as i64), (b as i64, a as i64)])
        .collect();
    edges.sort_unstable();
    edges.dedup();
    edges.into_iter().unzip()
}

/// Which nodes train, validate and test, as node indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSplit {
    /// Labelled training nodes.
    pub train: Vec<i64>,
    /// Validation nodes.
    pub valid: Vec<i64>,
    /// Test nodes.
    pub test: Vec<i64>,
}

impl NodeSplit {
    /// A seeded Planetoid-sized split: `per_class` random nodes of each class for training, then
    /// `valid` and `test` random nodes from the rest (disjoint). Errors when a class has fewer than
    /// `per_class` nodes or the graph is too small for the three sets.
    pub fn planetoid(
        graph: &Graph,
        per_class: usize,
        valid: usize,
        test: usize,
        seed: u64,
    ) -> Result<Self, String> {
        let mut order: Vec<usize> = (0..graph.num_nodes).collect();
        SplitMix64::new(seed).shuffle(&mut order);
        let mut taken = vec![0usize; graph.num_classes()];
        let (mut train, mut rest) = (Vec::new(), Vec::new());
        for node in order {
            let class = graph.labels[node];
            if taken[class] < per_class {
                taken[class] += 1;
                train.push(node as i64);
            } else {
                rest.push(node as i64);
            }
        }
        if let Some(class) = taken.iter().position(|&t| t < per_class) {
            return Err(format!(
                "class '{}' has {} nodes, fewer than the {per_class} training nodes per class",
                graph.class_names[class], taken[class]
            ));
        }
        if rest.len() < valid + test {
            return Err(format!(
                "{} nodes are left after the training nodes, fewer than {valid} valid + {test} test",
                rest.len()
            ));
        }
        let test_nodes = rest[valid..valid + test].to_vec();
        rest.truncate(valid);
        Ok(Self {
            train,
            valid: rest,
            test: test_nodes,
        })
    }
}

/// The nodes of one split: the single item of a [`GraphDataset`].
pub type NodeList = Arc<Vec<i64>>;

/// A dataset of one item, the node list of a split: full-graph training is one batch per epoch.
#[derive(Debug, Clone)]
pub struct GraphDataset {
    nodes: NodeList,
}

impl GraphDataset {
    /// The dataset whose batch scores `nodes`.
    pub fn new(nodes: Vec<i64>) -> Self {
        Self {
            nodes: Arc::new(nodes),
        }
    }
}

impl Dataset<NodeList> for GraphDataset {
    fn get(&self, index: usize) -> Option<NodeList> {
        (index == 0).then(|| self.nodes.clone())
    }

    fn len(&self) -> usize {
        1
    }
}

/// The whole graph, and the nodes of a split whose predictions count.
#[derive(Debug, Clone)]
pub struct GraphBatch<B: Backend> {
    /// Node features, `[num_nodes, num_features]`.
    pub features: Tensor<B, 2>,
    /// Edges, `[2, num_edges]`: sources in row 0, targets in row 1.
    pub edge_index: Tensor<B, 2, Int>,
    /// The nodes scored, `[num_scored]`.
    pub nodes: Tensor<B, 1, Int>,
    /// Their classes, `[num_scored]`.
    pub targets: Tensor<B, 1, Int>,
}

impl<B: Backend> GraphBatch<B> {
    /// The whole `graph` on `device`, scoring `nodes`.
    pub fn new(graph: &Graph, nodes: &[i64], device: &B::Device) -> Self {
        let (n, d, e) = (graph.num_nodes, graph.num_features, graph.num_edges());
        let mut edges = Vec::with_capacity(2 * e);
        edges.extend_from_slice(&graph.sources);
        edges.extend_from_slice(&graph.targets);
        let targets: Vec<i64> = nodes
            .iter()
            .map(|&i| graph.labels[i as usize] as i64)
            .collect();
        Self {
            features: Tensor::from_data(TensorData::new(graph.features.clone(), [n, d]), device),
            edge_index: Tensor::from_data(TensorData::new(edges, [2, e]), device),
            nodes: Tensor::from_data(TensorData::new(nodes.to_vec(), [nodes.len()]), device),
            targets: Tensor::from_data(TensorData::new(targets, [nodes.len()]), device),
        }
    }
}

/// Builds a [`GraphBatch`] of the whole graph from node lists (several lists are scored together).
#[derive(Debug, Clone)]
pub struct GraphBatcher {
    graph: Arc<Graph>,
}

impl GraphBatcher {
    /// A batcher over `graph`.
    pub fn new(graph: Arc<Graph>) -> Self {
        Self { graph }
    }
}

impl<B: Backend> Batcher<B, NodeList, GraphBatch<B>> for GraphBatcher {
    fn batch(&self, items: Vec<NodeList>, device: &B::Device) -> GraphBatch<B> {
        let nodes: Vec<i64> = items.iter().flat_map(|l| l.iter().copied()).collect();
        GraphBatch::new(&self.graph, &nodes, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_graph(n: usize, classes: usize) -> Graph {
        let (sources, targets) = undirected_edges((1..n).map(|i| (i - 1, i)));
        Graph {
            num_nodes: n,
            num_features: 2,
            features: (0..2 * n).map(|i| i as f32).collect(),
            sources,
            targets,
            labels: (0..n).map(|i| i % classes).collect(),
            class_names: (0..classes).map(|c| format!("c{c}")).collect(),
        }
    }

    #[test]
    fn edges_are_symmetric_without_loops_or_duplicates() {
        let (s, t) = undirected_edges([(0, 1), (1, 0), (2, 2), (1, 2), (0, 1)]);
        assert_eq!(s, vec![0, 1, 1, 2]);
        assert_eq!(t, vec![1, 0, 2, 1]);
    }

    #[test]
    fn rows_sum_to_one_and_zero_rows_stay_zero() {
        let mut g = path_graph(3, 1);
        g.features = vec![1.0, 3.0, 0.0, 0.0, 2.0, 2.0];
        g.row_normalize();
        assert_eq!(g.features, vec![0.25, 0.75, 0.0, 0.0, 0.5, 0.5]);
    }

    #[test]
    fn planetoid_split_is_disjoint_balanced_and_seeded() {
        let g = path_graph(100, 4);
        let s = NodeSplit::planetoid(&g, 5, 20, 30, 7).unwrap();
        assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (20, 20, 30));
        let mut per_class = [0; 4];
        s.train
            .iter()
            .for_each(|&i| per_class[g.labels[i as usize]] += 1);
        assert_eq!(per_class, [5; 4]);
        let mut all: Vec<i64> = [&s.train[..], &s.valid, &s.test].concat();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 70);
        assert_eq!(s, NodeSplit::planetoid(&g, 5, 20, 30, 7).unwrap());
        assert_ne!(s, NodeSplit::planetoid(&g, 5, 20, 30, 8).unwrap());
    }

    #[test]
    fn planetoid_split_rejects_a_graph_too_small() {
        let g = path_graph(10, 2);
        let e = NodeSplit::planetoid(&g, 6, 0, 0, 1).unwrap_err();
        assert!(e.contains("class 'c0' has 5 nodes"), "{e}");
        let e = NodeSplit::planetoid(&g, 2, 4, 3, 1).unwrap_err();
        assert!(e.contains("6 nodes are left"), "{e}");
    }

    #[test]
    fn the_batch_holds_the_whole_graph_and_the_scored_nodes() {
        type B = burn::backend::NdArray;
        let g = Arc::new(path_graph(4, 2));
        let ds = GraphDataset::new(vec![3, 0]);
        assert_eq!(ds.len(), 1);
        let batch: GraphBatch<B> =
            GraphBatcher::new(g).batch(vec![ds.get(0).unwrap()], &Default::default());
        assert_eq!(batch.features.dims(), [4, 2]);
        assert_eq!(batch.edge_index.dims(), [2, 6]);
        assert_eq!(
            batch.targets.into_data().to_vec::<i64>().unwrap(),
            vec![1, 0]
        );
        assert_eq!(batch.nodes.into_data().to_vec::<i64>().unwrap(), vec![3, 0]);
    }
}
