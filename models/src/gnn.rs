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
//! - [`GcnConv`] / [`Gcn`]: Kipf & Welling (2017), "Semi-Supervised Classification with Graph
//!   Convolutional Networks": `H' = D^-1/2 (A + I) D^-1/2 H W + b`, with `D` the degrees of
//!   `A + I`. Per node: `h'_i = sum_{j in N(i) + i} h_j W / sqrt(d_i d_j) + b`. Experiment
//!   `cora-gcn`.
//! - [`SageConv`] / [`Sage`]: Hamilton, Ying & Leskovec (2017), "Inductive Representation
//!   Learning on Large Graphs", mean aggregator: `h'_i = W_1 h_i + W_2 mean_{j in N(i)} h_j + b`.
//!   Experiment `cora-sage`.
//! - [`GatConv`] / [`Gat`]: Velickovic et al. (2018), "Graph Attention Networks": per head,
//!   `e_ij = LeakyReLU_0.2(a_dst . W h_i + a_src . W h_j)`, `alpha_ij = softmax_j(e_ij)` over the
//!   incoming edges of `i` (self-loop included), `h'_i = sum_j alpha_ij W h_j`; heads concatenated
//!   (hidden layer) or averaged (output layer). Experiment `cora-gat`.

use crate::classification::{check_dropout, classification_output};
use burn::module::{Initializer, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::activation::{elu, leaky_relu, relu};
use burn::train::ClassificationOutput;
use pdl_datasets::graph::GraphBatch;

/// Glorot & Bengio (2010) uniform initialisation, as all three papers use.
const GLOROT: Initializer = Initializer::XavierUniform { gain: 1.0 };

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
fn with_self_loops<B: Backend>(
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

/// Configuration of a [`GcnConv`].
#[derive(Config, Debug)]
pub struct GcnConvConfig {
    /// Input features per node.
    pub d_input: usize,
    /// Output features per node.
    pub d_output: usize,
}

impl GcnConvConfig {
    /// Builds the layer: Glorot-uniform weight, zero bias (as Kipf & Welling's code).
    pub fn init<B: Backend>(&self, device: &B::Device) -> GcnConv<B> {
        GcnConv {
            weight: GLOROT.init_with(
                [self.d_input, self.d_output],
                Some(self.d_input),
                Some(self.d_output),
                device,
            ),
            bias: Initializer::Zeros.init([self.d_output], device),
        }
    }
}

/// One graph convolution, `H' = D^-1/2 (A + I) D^-1/2 H W + b`.
#[derive(Module, Debug)]
pub struct GcnConv<B: Backend> {
    /// `[d_input, d_output]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[d_output]`.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> GcnConv<B> {
    /// # Shapes
    /// - features: `[num_nodes, d_input]`, edge_index: `[2, num_edges]` (no self-loops: the layer
    ///   adds them)
    /// - output: `[num_nodes, d_output]`
    pub fn forward(&self, features: Tensor<B, 2>, edge_index: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [num_nodes, _] = features.dims();
        let (sources, targets) = endpoints(edge_index);
        let h = features.matmul(self.weight.val()); // [num_nodes, d_output]
        let degree = in_degree(targets.clone(), num_nodes) + 1.0; // [num_nodes], self-loop counted
        let inv_sqrt = degree.clone().powf_scalar(-0.5);
        let coef =
            inv_sqrt.clone().select(0, sources.clone()) * inv_sqrt.select(0, targets.clone());
        let messages = h.clone().select(0, sources) * coef.unsqueeze_dim(1); // [num_edges, d_output]
        let self_loops = h * degree.recip().unsqueeze_dim(1); // h_i / d_i
        scatter_sum(messages, targets, num_nodes) + self_loops + self.bias.val().unsqueeze_dim(0)
    }
}

/// Configuration of a [`Gcn`].
#[derive(Config, Debug)]
pub struct GcnConfig {
    /// Input features per node.
    pub d_input: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Width of the hidden layer.
    #[config(default = 16)]
    pub d_hidden: usize,
    /// Dropout on the input of each layer.
    #[config(default = 0.5)]
    pub dropout: f64,
    /// L2 penalty on the first layer's weight, `l2 * sum(W^2) / 2`, added to the training loss.
    /// Kipf & Welling regularise only the first layer (5e-4 on Cora), which an optimiser's weight
    /// decay, applied to every parameter alike, cannot express.
    #[config(default = 0.0)]
    pub l2_first_layer: f64,
}

impl GcnConfig {
    /// Kipf & Welling's Cora model: 1433 -> 16 -> 7, dropout 0.5, L2 5e-4 on the first layer
    /// (train it with Adam, lr 0.01, no further weight decay).
    pub fn cora() -> Self {
        Self::new(1433, 7).with_l2_first_layer(5e-4)
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.d_input == 0 || self.num_classes == 0 || self.d_hidden == 0 {
            return Err("GCN sizes must be at least 1".into());
        }
        if !(self.l2_first_layer >= 0.0 && self.l2_first_layer.is_finite()) {
            return Err(format!(
                "GCN l2_first_layer must be >= 0, got {}",
                self.l2_first_layer
            ));
        }
        check_dropout("GCN", self.dropout)
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`GcnConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Gcn<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        Gcn {
            conv1: GcnConvConfig::new(self.d_input, self.d_hidden).init(device),
            conv2: GcnConvConfig::new(self.d_hidden, self.num_classes).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            l2_first_layer: self.l2_first_layer,
        }
    }
}

/// A two-layer GCN: dropout -> conv -> ReLU -> dropout -> conv.
#[derive(Module, Debug)]
pub struct Gcn<B: Backend> {
    conv1: GcnConv<B>,
    conv2: GcnConv<B>,
    dropout: Dropout,
    l2_first_layer: f64,
}

impl<B: Backend> Gcn<B> {
    /// # Shapes
    /// - features: `[num_nodes, d_input]`, edge_index: `[2, num_edges]`
    /// - output: `[num_nodes, num_classes]`
    pub fn forward(&self, features: Tensor<B, 2>, edge_index: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let x = self.dropout.forward(features);
        let x = relu(self.conv1.forward(x, edge_index.clone())); // [num_nodes, d_hidden]
        self.conv2.forward(self.dropout.forward(x), edge_index)
    }

    /// `l2_first_layer * sum(W_1^2) / 2`, when configured.
    pub fn penalty(&self) -> Option<Tensor<B, 1>> {
        (self.l2_first_layer > 0.0)
            .then(|| self.conv1.weight.val().powi_scalar(2).sum() * (self.l2_first_layer / 2.0))
    }
}

/// Configuration of a [`SageConv`].
#[derive(Config, Debug)]
pub struct SageConvConfig {
    /// Input features per node.
    pub d_input: usize,
    /// Output features per node.
    pub d_output: usize,
}

impl SageConvConfig {
    /// Builds the layer with Glorot-uniform weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SageConv<B> {
        let linear = |bias| {
            LinearConfig::new(self.d_input, self.d_output)
                .with_bias(bias)
                .with_initializer(GLOROT)
                .init(device)
        };
        SageConv {
            root: linear(true),
            neighbours: linear(false),
        }
    }
}

/// GraphSAGE with the mean aggregator, `h'_i = W_1 h_i + W_2 mean_{j in N(i)} h_j + b`.
#[derive(Module, Debug)]
pub struct SageConv<B: Backend> {
    /// `W_1` and `b`, applied to the node itself.
    pub root: Linear<B>,
    /// `W_2`, applied to the mean of the neighbours.
    pub neighbours: Linear<B>,
}

impl<B: Backend> SageConv<B> {
    /// A node without neighbours gets only its own term.
    ///
    /// # Shapes
    /// - features: `[num_nodes, d_input]`, edge_index: `[2, num_edges]`
    /// - output: `[num_nodes, d_output]`
    pub fn forward(&self, features: Tensor<B, 2>, edge_index: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [num_nodes, _] = features.dims();
        let (sources, targets) = endpoints(edge_index);
        // The mean is linear, so W_2 mean(h_j) = mean(W_2 h_j): transform first, gather less.
        let h = self.neighbours.forward(features.clone()); // [num_nodes, d_output]
        let sum = scatter_sum(h.select(0, sources), targets.clone(), num_nodes);
        let count = in_degree(targets, num_nodes).clamp_min(1.0);
        self.root.forward(features) + sum / count.unsqueeze_dim(1)
    }
}

/// Configuration of a [`Sage`].
#[derive(Config, Debug)]
pub struct SageConfig {
    /// Input features per node.
    pub d_input: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Width of the hidden layer.
    #[config(default = 64)]
    pub d_hidden: usize,
    /// Dropout on the input of each layer.
    #[config(default = 0.5)]
    pub dropout: f64,
}

impl SageConfig {
    /// A two-layer mean-aggregator GraphSAGE for Cora, 1433 -> 64 -> 7, dropout 0.5, the usual
    /// full-graph setting for Planetoid benchmarks (the paper itself samples neighbourhoods of
    /// larger graphs).
    pub fn cora() -> Self {
        Self::new(1433, 7)
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.d_input == 0 || self.num_classes == 0 || self.d_hidden == 0 {
            return Err("GraphSAGE sizes must be at least 1".into());
        }
        check_dropout("GraphSAGE", self.dropout)
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`SageConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Sage<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        Sage {
            conv1: SageConvConfig::new(self.d_input, self.d_hidden).init(device),
            conv2: SageConvConfig::new(self.d_hidden, self.num_classes).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

/// A two-layer GraphSAGE: dropout -> conv -> ReLU -> dropout -> conv.
#[derive(Module, Debug)]
pub struct Sage<B: Backend> {
    conv1: SageConv<B>,
    conv2: SageConv<B>,
    dropout: Dropout,
}

impl<B: Backend> Sage<B> {
    /// # Shapes
    /// - features: `[num_nodes, d_input]`, edge_index: `[2, num_edges]`
    /// - output: `[num_nodes, num_classes]`
    pub fn forward(&self, features: Tensor<B, 2>, edge_index: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let x = self.dropout.forward(features);
        let x = relu(self.conv1.forward(x, edge_index.clone())); // [num_nodes, d_hidden]
        self.conv2.forward(self.dropout.forward(x), edge_index)
    }

    /// None: GraphSAGE's L2 applies to every parameter (the optimiser's weight decay).
    pub fn penalty(&self) -> Option<Tensor<B, 1>> {
        None
    }
}

/// Configuration of a [`GatConv`].
#[derive(Config, Debug)]
pub struct GatConvConfig {
    /// Input features per node.
    pub d_input: usize,
    /// Output features per node and head.
    pub d_output: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Concatenate the heads (`[num_nodes, n_heads * d_output]`) or average them
    /// (`[num_nodes, d_output]`).
    #[config(default = true)]
    pub concat: bool,
    /// Dropout on the attention coefficients.
    #[config(default = 0.6)]
    pub dropout: f64,
}

impl GatConvConfig {
    /// Builds the layer with Glorot-uniform weights and attention vectors, zero bias.
    pub fn init<B: Backend>(&self, device: &B::Device) -> GatConv<B> {
        let (h, c) = (self.n_heads, self.d_output);
        let attention = || GLOROT.init_with([h, c], Some(c), Some(1), device);
        GatConv {
            weight: GLOROT.init_with(
                [self.d_input, h * c],
                Some(self.d_input),
                Some(h * c),
                device,
            ),
            att_source: attention(),
            att_target: attention(),
            bias: Initializer::Zeros.init([if self.concat { h * c } else { c }], device),
            dropout: DropoutConfig::new(self.dropout).init(),
            concat: self.concat,
        }
    }
}

/// One graph attention layer with `n_heads` heads.
#[derive(Module, Debug)]
pub struct GatConv<B: Backend> {
    /// `W` of all heads, `[d_input, n_heads * d_output]`.
    pub weight: Param<Tensor<B, 2>>,
    /// The source half of each head's attention vector `a`, `[n_heads, d_output]`.
    pub att_source: Param<Tensor<B, 2>>,
    /// The target half, `[n_heads, d_output]`.
    pub att_target: Param<Tensor<B, 2>>,
    /// `[n_heads * d_output]` when concatenating, else `[d_output]`.
    pub bias: Param<Tensor<B, 1>>,
    dropout: Dropout,
    concat: bool,
}

impl<B: Backend> GatConv<B> {
    /// # Shapes
    /// - features: `[num_nodes, d_input]`, edge_index: `[2, num_edges]` (no self-loops: the layer
    ///   adds them)
    /// - output: `[num_nodes, n_heads * d_output]` (concat) or `[num_nodes, d_output]`
    pub fn forward(&self, features: Tensor<B, 2>, edge_index: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [num_nodes, _] = features.dims();
        let [n_heads, d_output] = self.att_source.dims();
        let (sources, targets) = endpoints(edge_index);
        let (sources, targets) = with_self_loops(sources, targets, num_nodes);
        let h = features
            .matmul(self.weight.val())
            .reshape([num_nodes, n_heads, d_output]);
        // a . [W h_i || W h_j] splits into a target score and a source score per node and head.
        let score = |a: Tensor<B, 2>| -> Tensor<B, 2> {
            (h.clone() * a.unsqueeze_dim::<3>(0))
                .sum_dim(2)
                .squeeze_dim(2)
        };
        let s_source = score(self.att_source.val()); // [num_nodes, n_heads]
        let s_target = score(self.att_target.val()); // [num_nodes, n_heads]
        let e = leaky_relu(
            s_source.clone().select(0, sources.clone())
                + s_target.clone().select(0, targets.clone()),
            0.2,
        ); // [num_edges, n_heads]

        // Softmax over each node's incoming edges. Subtracting any per-node constant leaves it
        // unchanged; LeakyReLU is increasing, so LeakyReLU(s_target_i + max_j s_source_j) bounds
        // every e_ij from above and keeps exp() from overflowing, using only a max over all nodes
        // (Burn's scatter-max is not available on every backend).
        let bound = leaky_relu(
            s_target.detach() + s_source.detach().max_dim(0), // [num_nodes, n_heads]
            0.2,
        );
        let w = (e - bound.select(0, targets.clone())).exp(); // [num_edges, n_heads]
        let denominator = scatter_sum(w.clone(), targets.clone(), num_nodes);
        let alpha = w / denominator.select(0, targets.clone());
        let alpha = self.dropout.forward(alpha);

        let messages = h.select(0, sources) * alpha.unsqueeze_dim(2); // [num_edges, n_heads, d_output]
        let out = scatter_sum(messages, targets, num_nodes); // [num_nodes, n_heads, d_output]
        let out = match self.concat {
            true => out.reshape([num_nodes, n_heads * d_output]),
            false => out.mean_dim(1).reshape([num_nodes, d_output]),
        };
        out + self.bias.val().unsqueeze_dim(0)
    }
}

/// Configuration of a [`Gat`].
#[derive(Config, Debug)]
pub struct GatConfig {
    /// Input features per node.
    pub d_input: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Features per head in the hidden layer.
    #[config(default = 8)]
    pub d_hidden: usize,
    /// Heads of the hidden layer (concatenated).
    #[config(default = 8)]
    pub n_heads: usize,
    /// Heads of the output layer (averaged).
    #[config(default = 1)]
    pub n_heads_output: usize,
    /// Dropout on the input of each layer.
    #[config(default = 0.6)]
    pub dropout: f64,
    /// Dropout on the attention coefficients.
    #[config(default = 0.6)]
    pub attention_dropout: f64,
}

impl GatConfig {
    /// Velickovic et al.'s transductive Cora model: 8 heads x 8 features, ELU, one output head,
    /// dropout 0.6 on inputs and attention (train with Adam, lr 0.005, weight decay 5e-4).
    pub fn cora() -> Self {
        Self::new(1433, 7)
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        let sizes = [
            self.d_input,
            self.num_classes,
            self.d_hidden,
            self.n_heads,
            self.n_heads_output,
        ];
        if sizes.contains(&0) {
            return Err("GAT sizes and head counts must be at least 1".into());
        }
        check_dropout("GAT", self.dropout)?;
        check_dropout("GAT attention", self.attention_dropout)
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`GatConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Gat<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        Gat {
            conv1: GatConvConfig::new(self.d_input, self.d_hidden, self.n_heads)
                .with_dropout(self.attention_dropout)
                .init(device),
            conv2: GatConvConfig::new(
                self.d_hidden * self.n_heads,
                self.num_classes,
                self.n_heads_output,
            )
            .with_concat(false)
            .with_dropout(self.attention_dropout)
            .init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

/// A two-layer GAT: dropout -> attention (heads concatenated) -> ELU -> dropout -> attention
/// (heads averaged).
#[derive(Module, Debug)]
pub struct Gat<B: Backend> {
    conv1: GatConv<B>,
    conv2: GatConv<B>,
    dropout: Dropout,
}

impl<B: Backend> Gat<B> {
    /// # Shapes
    /// - features: `[num_nodes, d_input]`, edge_index: `[2, num_edges]`
    /// - output: `[num_nodes, num_classes]`
    pub fn forward(&self, features: Tensor<B, 2>, edge_index: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let x = self.dropout.forward(features);
        let x = elu(self.conv1.forward(x, edge_index.clone()), 1.0); // [num_nodes, n_heads * d_hidden]
        self.conv2.forward(self.dropout.forward(x), edge_index)
    }

    /// None: GAT's L2 applies to every parameter (the optimiser's weight decay).
    pub fn penalty(&self) -> Option<Tensor<B, 1>> {
        None
    }
}

/// A model mapping a graph to per-node logits.
pub trait NodeClassifier<B: Backend> {
    /// Logits for every node, `[num_nodes, num_classes]`.
    fn logits(&self, features: Tensor<B, 2>, edge_index: Tensor<B, 2, Int>) -> Tensor<B, 2>;

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

macro_rules! node_classifier {
    ($($model:ident),*) => {$(
        impl<B: Backend> NodeClassifier<B> for $model<B> {
            fn logits(&self, features: Tensor<B, 2>, edge_index: Tensor<B, 2, Int>) -> Tensor<B, 2> {
                self.forward(features, edge_index)
            }

            fn penalty(&self) -> Option<Tensor<B, 1>> {
                self.penalty()
            }
        }
        crate::classifier_steps!($model, NodeClassifier, pdl_datasets::graph::GraphBatch);
    )*};
}
node_classifier!(Gcn, Sage, Gat);

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{TensorData, Tolerance};

    type B = NdArray;

    fn small_graph() -> (Tensor<B, 2>, Tensor<B, 2, Int>) {
        let device = Default::default();
        // 5 nodes; links 0-1, 0-2, 1-2, 2-3 (both directions), node 4 alone.
        let pairs = [(0, 1), (0, 2), (1, 2), (2, 3)];
        let (s, t): (Vec<i64>, Vec<i64>) =
            pairs.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).unzip();
        let edges = Tensor::from_data(TensorData::new([s, t].concat(), [2, 8]), &device);
        let x = Tensor::random(
            [5, 3],
            burn::tensor::Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        (x, edges)
    }

    fn dense_adjacency(edge_index: &Tensor<B, 2, Int>, n: usize) -> Tensor<B, 2> {
        let e = edge_index.to_data().to_vec::<i64>().unwrap();
        let m = e.len() / 2;
        let mut a = vec![0f32; n * n];
        for k in 0..m {
            a[e[m + k] as usize * n + e[k] as usize] = 1.0; // row = target, column = source
        }
        Tensor::from_data(TensorData::new(a, [n, n]), &Default::default())
    }

    #[test]
    fn scatter_gcn_equals_the_dense_formula() {
        let (x, edges) = small_graph();
        let conv = GcnConvConfig::new(3, 4).init::<B>(&Default::default());
        let a_hat = dense_adjacency(&edges, 5) + Tensor::eye(5, &Default::default());
        let d = a_hat.clone().sum_dim(1).powf_scalar(-0.5); // [5, 1]
        let norm = d.clone() * a_hat * d.transpose();
        let dense = norm.matmul(x.clone().matmul(conv.weight.val())) + conv.bias.val().unsqueeze();
        conv.forward(x, edges)
            .into_data()
            .assert_approx_eq::<f32>(&dense.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn sage_equals_self_plus_neighbour_mean() {
        let (x, edges) = small_graph();
        let conv = SageConvConfig::new(3, 2).init::<B>(&Default::default());
        let a = dense_adjacency(&edges, 5);
        let mean = (a.clone() / a.sum_dim(1).clamp_min(1.0)).matmul(x.clone());
        let expected = conv.root.forward(x.clone()) + conv.neighbours.forward(mean);
        conv.forward(x, edges)
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn gat_equals_dense_masked_softmax_attention() {
        let (x, edges) = small_graph();
        let device = Default::default();
        let conv = GatConvConfig::new(3, 2, 2)
            .with_dropout(0.0)
            .init::<B>(&device);
        let mask = dense_adjacency(&edges, 5) + Tensor::eye(5, &device); // [target, source]
        let h = x.clone().matmul(conv.weight.val()).reshape([5, 2, 2]);
        let mut heads = Vec::new();
        for k in 0..2 {
            let hk = h.clone().slice([0..5, k..k + 1, 0..2]).reshape([5, 2]);
            let a_s = conv.att_source.val().slice([k..k + 1, 0..2]); // [1, 2]
            let a_t = conv.att_target.val().slice([k..k + 1, 0..2]);
            let s = hk.clone().matmul(a_s.transpose()); // [5, 1]
            let t = hk.clone().matmul(a_t.transpose()); // [5, 1]
            let e = leaky_relu(t + s.transpose(), 0.2); // [target, source]
            let e = e.mask_fill(mask.clone().equal_elem(0.0), f32::NEG_INFINITY);
            let alpha = burn::tensor::activation::softmax(e, 1);
            heads.push(alpha.matmul(hk));
        }
        let expected = Tensor::cat(heads, 1) + conv.bias.val().unsqueeze();
        conv.forward(x, edges)
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn models_give_one_row_of_logits_per_node() {
        let (x, edges) = small_graph();
        let device = Default::default();
        let gcn = GcnConfig::new(3, 4).init::<B>(&device);
        assert_eq!(gcn.forward(x.clone(), edges.clone()).dims(), [5, 4]);
        let sage = SageConfig::new(3, 4).init::<B>(&device);
        assert_eq!(sage.forward(x.clone(), edges.clone()).dims(), [5, 4]);
        let gat = GatConfig::new(3, 4)
            .with_n_heads_output(2)
            .init::<B>(&device);
        assert_eq!(gat.forward(x, edges).dims(), [5, 4]);
    }

    #[test]
    fn cora_models_have_the_papers_parameter_counts() {
        let device = Default::default();
        // GCN: 1433*16 + 16 + 16*7 + 7.
        let gcn = GcnConfig::cora().init::<B>(&device);
        assert_eq!(gcn.num_params(), 23_063);
        // GAT: 1433*64 + 2*64 + 64, then 64*7 + 2*7 + 7.
        let gat = GatConfig::cora().init::<B>(&device);
        assert_eq!(gat.num_params(), 91_712 + 128 + 64 + 448 + 14 + 7);
    }

    #[test]
    fn bad_configs_are_rejected() {
        assert!(GcnConfig::new(0, 7).validate().is_err());
        assert!(GcnConfig::cora().with_dropout(1.0).validate().is_err());
        assert!(SageConfig::cora().with_d_hidden(0).validate().is_err());
        assert!(GatConfig::cora().with_n_heads(0).validate().is_err());
        assert!(
            GatConfig::cora()
                .with_attention_dropout(-0.1)
                .validate()
                .is_err()
        );
    }
}
