//! GraphSAGE (Hamilton, Ying & Leskovec 2017), mean aggregator:
//! `h'_i = W_1 h_i + W_2 mean_{j in N(i)} h_j + b`. Experiment `cora-sage`.

use super::{GLOROT, NodeClassifier, endpoints, in_degree, scatter_sum};
use crate::classification::{check_dropout, train_output};
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use pdl_datasets::graph::GraphBatch;
use pdl_kernels::{Linear, LinearConfig};

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

/// A two-layer GraphSAGE: dropout -> conv -> ReLU -> dropout -> conv. Its L2 is the optimiser's
/// weight decay on every parameter, so no [`NodeClassifier::penalty`].
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
        let x = self.hidden(features, edge_index.clone());
        self.conv2.forward(self.dropout.forward(x), edge_index)
    }
}

impl<B: Backend> NodeClassifier<B> for Sage<B> {
    fn logits(&self, features: Tensor<B, 2>, edge_index: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        self.forward(features, edge_index)
    }

    /// `[num_nodes, d_hidden]`: ReLU of the first layer.
    fn hidden(&self, features: Tensor<B, 2>, edge_index: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let x = self.dropout.forward(features);
        relu(self.conv1.forward(x, edge_index)) // [num_nodes, d_hidden]
    }
}

impl<B: AutodiffBackend> TrainStep for Sage<B> {
    type Input = GraphBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: GraphBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        train_output(self, self.forward_training(batch))
    }
}

impl<B: Backend> InferenceStep for Sage<B> {
    type Input = GraphBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: GraphBatch<B>) -> ClassificationOutput<B> {
        self.forward_classification(batch)
    }
}
