//! Graph neural networks for node classification, by message passing (d2l-style course chapter
//! "Graph Neural Networks for Graph Data").
//!
//! Every layer here is one round of message passing over `edge_index` `[2, num_edges]` (row 0 the
//! source `j` of each edge, row 1 its target `i`): gather each edge's source features with
//! `select`, weigh them, and sum them into the target with a scatter-add (`select_assign`). Memory
//! grows with the number of edges, never with `num_nodes^2` as a dense adjacency matrix would.
//! Features are transformed *before* they are gathered, so each message has the layer's output
//! width, not its input width (Cora: 16 values per edge instead of 1433).
//!
//! - [`GcnConv`] / [`Gcn`] (`gcn.rs`): Kipf & Welling (2017), "Semi-Supervised Classification with Graph
//!   Convolutional Networks": `H' = D^-1/2 (A + I) D^-1/2 H W + b`, with `D` the degrees of
//!   `A + I`. Per node: `h'_i = sum_{j in N(i) + i} h_j W / sqrt(d_i d_j) + b`. Experiment
//!   `cora-gcn`.
//! - [`SageConv`] / [`Sage`] (`sage.rs`): Hamilton, Ying & Leskovec (2017), "Inductive Representation
//!   Learning on Large Graphs", mean aggregator: `h'_i = W_1 h_i + W_2 mean_{j in N(i)} h_j + b`.
//!   Experiment `cora-sage`.
//! - [`GatConv`] / [`Gat`] (`gat.rs`): Velickovic et al. (2018), "Graph Attention Networks": per head,
//!   `e_ij = LeakyReLU_0.2(a_dst . W h_i + a_src . W h_j)`, `alpha_ij = softmax_j(e_ij)` over the
//!   incoming edges of `i` (self-loop included), `h'_i = sum_j alpha_ij W h_j`; heads concatenated
//!   (hidden layer) or averaged (output layer). Experiment `cora-gat`.

//!
//! The message-passing primitives ([`endpoints`], [`scatter_sum`], [`in_degree`]) and
//! [`NodeClassifier`], what the graph pipeline asks of a model, are here.

use crate::classification::classification_output;
use burn::module::Initializer;
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use burn::train::ClassificationOutput;
use pdl_datasets::graph::GraphBatch;

mod gat;
mod gcn;
mod sage;
#[cfg(test)]
mod tests;

pub use gat::{Gat, GatConfig, GatConv, GatConvConfig};
pub use gcn::{Gcn, GcnConfig, GcnConv, GcnConvConfig};
pub use sage::{Sage, SageConfig, SageConv, SageConvConfig};

/// Glorot & Bengio (2010) uniform initialisation, as all three papers use.
pub(crate) const GLOROT: Initializer = Initializer::XavierUniform { gain: 1.0 };

/// Splits `edge_index` `[2, num_edges]` into its sources and targets, `[num_edges]` each.
pub fn endpoints<B: Backend>(
    edge_index: Tensor<B, 2, Int>,
) -> (Tensor<B, 1, Int>, Tensor<B, 1, Int>) {
    let [_, num_edges] = edge_index.dims();
    let sources = edge_index
        .clone()
        .slice([0..1, 0..num_edges])
        .reshape([num_edges]);
    let targets = edge_index.slice([1..2, 0..num_edges]).reshape([num_edges]);
    (sources, targets)
}

/// Sums each edge's message into its target node: `out[i] = sum_{e : targets[e] = i} messages[e]`.
///
/// # Shapes
/// - messages: `[num_edges, ...]`, targets: `[num_edges]`
/// - output: `[num_nodes, ...]`
pub fn scatter_sum<B: Backend, const D: usize>(
    messages: Tensor<B, D>,
    targets: Tensor<B, 1, Int>,
    num_nodes: usize,
) -> Tensor<B, D> {
    let mut shape = messages.dims();
    shape[0] = num_nodes;
    Tensor::zeros(shape, &messages.device()).select_assign(
        0,
        targets,
        messages,
        IndexingUpdateOp::Add,
    )
}

/// Number of incoming edges of each node, `[num_nodes]`.
pub fn in_degree<B: Backend>(targets: Tensor<B, 1, Int>, num_nodes: usize) -> Tensor<B, 1> {
    let [num_edges] = targets.dims();
    let ones = Tensor::ones([num_edges], &targets.device());
    scatter_sum(ones, targets, num_nodes)
}

/// Appends a self-loop `(i, i)` for every node to the edge list.
pub(crate) fn with_self_loops<B: Backend>(
    sources: Tensor<B, 1, Int>,
    targets: Tensor<B, 1, Int>,
    num_nodes: usize,
) -> (Tensor<B, 1, Int>, Tensor<B, 1, Int>) {
    let nodes = Tensor::arange(0..num_nodes as i64, &sources.device());
    (
        Tensor::cat(vec![sources, nodes.clone()], 0),
        Tensor::cat(vec![targets, nodes], 0),
    )
}

/// A model mapping a graph to per-node logits.
pub trait NodeClassifier<B: Backend> {
    /// Logits for every node, `[num_nodes, num_classes]`.
    fn logits(&self, features: Tensor<B, 2>, edge_index: Tensor<B, 2, Int>) -> Tensor<B, 2>;

    /// Every node's last hidden layer, `[num_nodes, d_hidden]`: what the output layer reads (the
    /// course report projects it to 2-D).
    fn hidden(&self, features: Tensor<B, 2>, edge_index: Tensor<B, 2, Int>) -> Tensor<B, 2>;

    /// Logits of the batch's scored nodes, their mean cross-entropy, and their targets: the whole
    /// graph runs, the loss counts only the split's nodes.
    fn forward_classification(&self, batch: GraphBatch<B>) -> ClassificationOutput<B> {
        let logits = self.logits(batch.features, batch.edge_index); // [num_nodes, num_classes]
        classification_output(logits.select(0, batch.nodes), batch.targets)
    }

    /// An L2 penalty the model adds to its training loss, if any.
    fn penalty(&self) -> Option<Tensor<B, 1>> {
        None
    }

    /// [`Self::forward_classification`] plus [`Self::penalty`]: what a training step minimises.
    fn forward_training(&self, batch: GraphBatch<B>) -> ClassificationOutput<B> {
        let mut out = self.forward_classification(batch);
        if let Some(penalty) = self.penalty() {
            out.loss = out.loss + penalty;
        }
        out
    }
}
