//! GCN (Kipf & Welling 2017): `H' = D^-1/2 (A + I) D^-1/2 H W + b`. Experiment `cora-gcn`.

use super::{GLOROT, NodeClassifier, endpoints, in_degree, scatter_sum};
use crate::classification::{check_dropout, train_output};
use burn::module::{Initializer, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use pdl_datasets::graph::GraphBatch;

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
        let x = self.hidden(features, edge_index.clone());
        self.conv2.forward(self.dropout.forward(x), edge_index)
    }
}

impl<B: Backend> NodeClassifier<B> for Gcn<B> {
    fn logits(&self, features: Tensor<B, 2>, edge_index: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        self.forward(features, edge_index)
    }

    /// `[num_nodes, d_hidden]`: ReLU of the first layer.
    fn hidden(&self, features: Tensor<B, 2>, edge_index: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let x = self.dropout.forward(features);
        relu(self.conv1.forward(x, edge_index)) // [num_nodes, d_hidden]
    }

    /// `l2_first_layer * sum(W_1^2) / 2`, when configured.
    fn penalty(&self) -> Option<Tensor<B, 1>> {
        (self.l2_first_layer > 0.0)
            .then(|| self.conv1.weight.val().powi_scalar(2).sum() * (self.l2_first_layer / 2.0))
    }
}

impl<B: AutodiffBackend> TrainStep for Gcn<B> {
    type Input = GraphBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: GraphBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        train_output(self, self.forward_training(batch))
    }
}

impl<B: Backend> InferenceStep for Gcn<B> {
    type Input = GraphBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: GraphBatch<B>) -> ClassificationOutput<B> {
        self.forward_classification(batch)
    }
}
