//! Node classification on a citation graph: the course's GNN chapter.
//!
//! Data: Cora's LINQS files (or any folder holding `cora.content` and `cora.cites` with Cora's
//! classes), features row-normalised, a seeded Planetoid-sized split (20 nodes per class to train,
//! 500 to validate, 1000 to test). Loop: full-graph training through [`crate::learner::fit`]: the
//! dataset has one item, so a batch is the whole graph, an epoch is one optimiser step, and the
//! loss counts only the split's nodes. Adam with L2 weight decay (as the papers'), optional early
//! stopping on the valid loss, and the weights of the best valid epoch restored at the end.
//!
//! The seed draws the split as well as the weights, so `pdl train cora-gcn --seeds 10` is Kipf &
//! Welling's protocol for random splits (their Table 2: GCN 80.1 +- 0.5% over 10 splits; 81.5% is
//! on the one public Planetoid split, whose node ids the LINQS files do not carry). Set
//! `split_seed` in a config to train several initialisations on one split.

use crate::artifacts::{RunContext, RunReport, Scores};
use crate::learner::{FitOptions, fit, load_and_evaluate};
use crate::schedule::ScheduleConfig;
use anyhow::{Result, bail};
use burn::config::Config;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::module::AutodiffModule;
use burn::optim::AdamConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{ClassificationOutput, InferenceStep, TrainStep};
use pdl_datasets::graph::{Graph, GraphBatch, GraphBatcher, GraphDataset, NodeSplit, cora};
use pdl_models::{GatConfig, GcnConfig, SageConfig};
use std::path::PathBuf;
use std::sync::Arc;

/// The model of a node-classification experiment.
#[derive(Config, Debug)]
pub enum GraphModelConfig {
    /// Graph convolutional network.
    Gcn(GcnConfig),
    /// GraphSAGE, mean aggregator.
    Sage(SageConfig),
    /// Graph attention network.
    Gat(GatConfig),
}

impl GraphModelConfig {
    fn validate(&self) -> Result<(), String> {
        match self {
            Self::Gcn(c) => c.validate(),
            Self::Sage(c) => c.validate(),
            Self::Gat(c) => c.validate(),
        }
    }

    fn sizes(&self) -> (usize, usize) {
        match self {
            Self::Gcn(c) => (c.d_input, c.num_classes),
            Self::Sage(c) => (c.d_input, c.num_classes),
            Self::Gat(c) => (c.d_input, c.num_classes),
        }
    }
}

/// Everything needed to rebuild a node-classification run; saved as its `config.json`.
#[derive(Config, Debug)]
pub struct GraphExperimentConfig {
    /// The experiment's name in the registry.
    pub experiment: String,
    /// `cora`, or a folder holding `cora.content` and `cora.cites`.
    pub dataset: String,
    /// The model.
    pub model: GraphModelConfig,
    /// Epochs (one optimiser step each) at most.
    #[config(default = 200)]
    pub num_epochs: usize,
    /// Adam's learning rate.
    #[config(default = 0.01)]
    pub learning_rate: f64,
    /// Learning-rate schedule over the epochs.
    #[config(default = "ScheduleConfig::Constant")]
    pub schedule: ScheduleConfig,
    /// L2 penalty added to the gradients (PyTorch `Adam(weight_decay=...)`), as the papers use.
    #[config(default = 5e-4)]
    pub weight_decay: f64,
    /// Stop when the valid loss has not improved for this many epochs; 0 turns it off.
    #[config(default = 0)]
    pub early_stopping_patience: usize,
    /// End with the weights of the epoch with the lowest valid loss.
    #[config(default = true)]
    pub restore_best: bool,
    /// Scale each node's features to sum to 1, as Kipf & Welling do for Cora.
    #[config(default = true)]
    pub row_normalize: bool,
    /// Labelled training nodes per class.
    #[config(default = 20)]
    pub train_per_class: usize,
    /// Validation nodes.
    #[config(default = 500)]
    pub valid_size: usize,
    /// Test nodes.
    #[config(default = 1000)]
    pub test_size: usize,
    /// Seed of the split; none: the same as `seed`, so each seed draws its own split.
    #[config(default = "None")]
    pub split_seed: Option<u64>,
    /// Seed of the weights and dropout.
    #[config(default = 42)]
    pub seed: u64,
    /// A smoke run: one epoch on a split of 2 nodes per class and at most 20 valid and test nodes.
    #[config(default = false)]
    pub smoke: bool,
}

impl GraphExperimentConfig {
    /// Checks everything that can be checked before reading data.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(anyhow::anyhow!("invalid config: {m}"));
        super::check_training(self.num_epochs, self.learning_rate, self.weight_decay)
            .or_else(bad)?;
        if self.train_per_class == 0 || self.valid_size == 0 || self.test_size == 0 {
            return bad("train_per_class, valid_size and test_size must be at least 1".into());
        }
        self.schedule.validate().or_else(bad)?;
        self.model.validate().or_else(bad)
    }

    /// Applies `--smoke`.
    pub fn into_smoke(mut self) -> Self {
        self.smoke = true;
        self.num_epochs = 1;
        self.train_per_class = self.train_per_class.min(2);
        self.valid_size = self.valid_size.min(20);
        self.test_size = self.test_size.min(20);
        self
    }
}

fn load_graph(config: &GraphExperimentConfig, ctx: &RunContext) -> Result<(Arc<Graph>, NodeSplit)> {
    let dir = match config.dataset.as_str() {
        "cora" => cora::locate(&ctx.data_dir, !ctx.offline)?,
        folder => PathBuf::from(folder),
    };
    let mut graph = cora::load(&dir)?;
    let (d_input, num_classes) = config.model.sizes();
    if (graph.num_features, graph.num_classes()) != (d_input, num_classes) {
        bail!(
            "{}: the graph has {} features and {} classes but the model expects d_input {d_input} \
             and num_classes {num_classes}; set them in the config to match",
            dir.display(),
            graph.num_features,
            graph.num_classes()
        );
    }
    if config.row_normalize {
        graph.row_normalize();
    }
    let split = NodeSplit::planetoid(
        &graph,
        config.train_per_class,
        config.valid_size,
        config.test_size,
        config.split_seed.unwrap_or(config.seed),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    Ok((Arc::new(graph), split))
}

fn loader<B: Backend>(
    graph: &Arc<Graph>,
    nodes: &[i64],
    device: &B::Device,
) -> Arc<dyn DataLoader<B, GraphBatch<B>>> {
    DataLoaderBuilder::new(GraphBatcher::new(graph.clone()))
        .batch_size(1)
        .set_device(device.clone())
        .build(GraphDataset::new(nodes.to_vec()))
}

/// Trains the configured model on the whole graph, saves `model.mpk`, scores valid and test.
pub fn train<B: AutodiffBackend>(
    config: &GraphExperimentConfig,
    ctx: &RunContext,
    devices: Vec<B::Device>,
) -> Result<RunReport> {
    config.validate()?;
    if devices.len() > 1 {
        bail!(
            "{}: full-graph training takes one step per epoch on one device; --devices {} does \
             not apply",
            config.experiment,
            devices.len()
        );
    }
    let (graph, split) = load_graph(config, ctx)?;
    let device = devices[0].clone();
    pdl_models::seed::<B>(&device, config.seed);
    match &config.model {
        GraphModelConfig::Gcn(c) => {
            train_model(c.init::<B>(&device), config, ctx, graph, split, device)
        }
        GraphModelConfig::Sage(c) => {
            train_model(c.init::<B>(&device), config, ctx, graph, split, device)
        }
        GraphModelConfig::Gat(c) => {
            train_model(c.init::<B>(&device), config, ctx, graph, split, device)
        }
    }
}

fn train_model<B, M>(
    model: M,
    config: &GraphExperimentConfig,
    ctx: &RunContext,
    graph: Arc<Graph>,
    split: NodeSplit,
    device: B::Device,
) -> Result<RunReport>
where
    B: AutodiffBackend,
    M: TrainStep<Input = GraphBatch<B>, Output = ClassificationOutput<B>>
        + AutodiffModule<B>
        + std::fmt::Display
        + 'static,
    M::InnerModule: InferenceStep<
            Input = GraphBatch<B::InnerBackend>,
            Output = ClassificationOutput<B::InnerBackend>,
        >,
{
    // PyTorch's and TensorFlow's epsilon, which the papers trained with; Burn's default 1e-5 is
    // near the size of sqrt(v) for the first layer's weights on row-normalised bag-of-words
    // features, and would damp their updates.
    let optim = AdamConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(Some(WeightDecayConfig::new(config.weight_decay as f32)))
        .init();
    let valid_loader = loader::<B::InnerBackend>(&graph, &split.valid, &device);
    let test_loader = loader::<B::InnerBackend>(&graph, &split.test, &device);
    let options = FitOptions::for_run(
        ctx,
        config.num_epochs,
        config.early_stopping_patience,
        config.restore_best,
    );
    println!(
        "{model}\ngraph: {} nodes, {} edges, {} features, {} classes; {} train / {} valid / {} \
         test nodes",
        graph.num_nodes,
        graph.num_edges(),
        graph.num_features,
        graph.num_classes(),
        split.train.len(),
        split.valid.len(),
        split.test.len()
    );
    fit(
        &ctx.artifact_dir,
        model,
        optim,
        config
            .schedule
            .init(config.learning_rate, config.num_epochs),
        loader::<B>(&graph, &split.train, &device),
        valid_loader.clone(),
        vec![device],
        &options,
    )?
    .finish(
        &ctx.artifact_dir,
        split.train.len(),
        &valid_loader,
        &test_loader,
    )
}

/// Rebuilds the model from `config`, loads `model.mpk` from the artifact directory, and scores the
/// test nodes.
pub fn eval<B: Backend>(
    config: &GraphExperimentConfig,
    ctx: &RunContext,
    device: B::Device,
) -> Result<Scores> {
    config.validate()?;
    let (graph, split) = load_graph(config, ctx)?;
    let loader = loader::<B>(&graph, &split.test, &device);
    let dir = &ctx.artifact_dir;
    match &config.model {
        GraphModelConfig::Gcn(c) => load_and_evaluate(c.init::<B>(&device), dir, &device, &loader),
        GraphModelConfig::Sage(c) => load_and_evaluate(c.init::<B>(&device), dir, &device, &loader),
        GraphModelConfig::Gat(c) => load_and_evaluate(c.init::<B>(&device), dir, &device, &loader),
    }
}
