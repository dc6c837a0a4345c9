//! GAT (Velickovic et al. 2018): attention over each node's incoming edges, heads concatenated
//! or averaged. Experiment `cora-gat`.

use super::{GLOROT, NodeClassifier, endpoints, scatter_sum, with_self_loops};
use crate::classification::{check_dropout, train_output};
use burn::module::{Initializer, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;
use burn::tensor::activation::{elu, leaky_relu};
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use pdl_datasets::graph::GraphBatch;

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
/// (heads averaged). Its L2 is the optimiser's weight decay on every parameter, so no
/// [`NodeClassifier::penalty`].
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
        let x = self.hidden(features, edge_index.clone());
        self.conv2.forward(self.dropout.forward(x), edge_index)
    }
}

impl<B: Backend> NodeClassifier<B> for Gat<B> {
    fn logits(&self, features: Tensor<B, 2>, edge_index: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        self.forward(features, edge_index)
    }

    /// `[num_nodes, n_heads * d_hidden]`: ELU of the first layer's concatenated heads.
    fn hidden(&self, features: Tensor<B, 2>, edge_index: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let x = self.dropout.forward(features);
        elu(self.conv1.forward(x, edge_index), 1.0) // [num_nodes, n_heads * d_hidden]
    }
}

impl<B: AutodiffBackend> TrainStep for Gat<B> {
    type Input = GraphBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: GraphBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        train_output(self, self.forward_training(batch))
    }
}

impl<B: Backend> InferenceStep for Gat<B> {
    type Input = GraphBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: GraphBatch<B>) -> ClassificationOutput<B> {
        self.forward_classification(batch)
    }
}
