//! Node classification on a citation graph: the course's GNN chapter.
//!
//! Data: Cora's LINQS files (or any folder holding `cora.content` and `cora.cites` with Cora's
//! classes), features row-normalised, a seeded Planetoid-sized split (20 nodes per class to train,
//! 500 to validate, 1000 to test). Loop: full-graph training through the shared tail of [`crate::job`]: the
//! dataset has one item, so a batch is the whole graph, an epoch is one optimiser step, and the
//! loss counts only the split's nodes. Adam with L2 weight decay (as the papers'), optional early
//! stopping on the valid loss, and the weights of the best valid epoch restored at the end.
//!
//! The seed draws the split as well as the weights, so `pdl train cora-gcn --seeds 10` is Kipf &
//! Welling's protocol for random splits (their Table 2: GCN 80.1 +- 0.5% over 10 splits; 81.5% is
//! on the one public Planetoid split, whose node ids the LINQS files do not carry). Set
//! `split_seed` in a config to train several initialisations on one split.

use super::Pipeline;
use crate::artifacts::{RunContext, RunReport, Scores};
use crate::job::{Job, Loaders, Outcome, Scoring, Training};
use crate::plots::Figure;
use crate::plots::figures::Embedding;
use crate::settings::{CheckParts, Optimiser, RunConfig, count};
use anyhow::{Result, bail};
use burn::config::Config;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use pdl_datasets::graph::{Graph, GraphBatch, GraphBatcher, GraphDataset, NodeSplit, cora};
use pdl_models::gnn::NodeClassifier;
use pdl_models::{GatConfig, GcnConfig, SageConfig};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// What the graph pipeline hands a model: the whole graph, with a split's nodes.
type GraphJob<'a, B> = Job<'a, B, GraphBatch<B>, GraphBatch<<B as AutodiffBackend>::InnerBackend>>;

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

    /// Hands `job` the way to build the configured model on its device: the one place the model
    /// enum is matched.
    fn run<B: AutodiffBackend>(&self, job: GraphJob<'_, B>) -> Result<Outcome> {
        match self {
            Self::Gcn(c) => job.run(|device| c.init::<B>(device)),
            Self::Sage(c) => job.run(|device| c.init::<B>(device)),
            Self::Gat(c) => job.run(|device| c.init::<B>(device)),
        }
    }

    /// Loads the run's saved model and gives every node's last hidden layer, and its name (the
    /// model's other match on the enum).
    fn hidden<B: Backend>(
        &self,
        dir: &std::path::Path,
        graph: &Graph,
        device: &B::Device,
    ) -> Result<(String, Vec<Vec<f32>>)> {
        /// Builds the model, loads the saved weights, and runs the first layer on every node.
        fn rows<B: Backend, M: Module<B> + NodeClassifier<B>>(
            build: impl FnOnce(&B::Device) -> M,
            path: &std::path::Path,
            graph: &Graph,
            device: &B::Device,
        ) -> Result<Vec<Vec<f32>>> {
            let model = pdl_models::seeded::<B, _>(device, 0, build);
            let model = crate::learner::load_model(model, path, device)?;
            let batch = GraphBatch::<B>::new(graph, &[], device);
            Ok(crate::learner::host_rows(
                model.hidden(batch.features, batch.edge_index),
            ))
        }
        let path = dir.join("model.mpk");
        Ok(match self {
            Self::Gcn(c) => (
                format!("GCN hidden layer ({})", c.d_hidden),
                rows(|d| c.init::<B>(d), &path, graph, device)?,
            ),
            Self::Sage(c) => (
                format!("GraphSAGE hidden layer ({})", c.d_hidden),
                rows(|d| c.init::<B>(d), &path, graph, device)?,
            ),
            Self::Gat(c) => (
                format!("GAT hidden layer ({} heads x {})", c.n_heads, c.d_hidden),
                rows(|d| c.init::<B>(d), &path, graph, device)?,
            ),
        })
    }

    fn sizes(&self) -> (usize, usize) {
        match self {
            Self::Gcn(c) => (c.d_input, c.num_classes),
            Self::Sage(c) => (c.d_input, c.num_classes),
            Self::Gat(c) => (c.d_input, c.num_classes),
        }
    }
}

fn yes() -> bool {
    true
}

/// Everything needed to rebuild a node-classification run; saved as its `config.json`. An epoch
/// is one optimiser step on the whole graph.
pub type GraphExperimentConfig = RunConfig<GraphModelConfig, GraphOptions>;

/// How the graph's features are scaled and its nodes split.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(crate = "burn::serde")]
pub struct GraphOptions {
    /// Scale each node's features to sum to 1, as Kipf & Welling do for Cora.
    #[serde(default = "yes")]
    pub row_normalize: bool,
    /// Labelled training nodes per class.
    #[serde(default = "count::<20>")]
    pub train_per_class: usize,
    /// Validation nodes.
    #[serde(default = "count::<500>")]
    pub valid_size: usize,
    /// Test nodes.
    #[serde(default = "count::<1000>")]
    pub test_size: usize,
    /// Seed of the split; none: the same as `seed`, so each seed draws its own split.
    #[serde(default)]
    pub split_seed: Option<u64>,
}

/// The options of a new run: a Planetoid-sized split drawn by the seed (20 nodes per class to
/// train, 500 to validate, 1,000 to test), features row-normalised.
impl Default for GraphOptions {
    fn default() -> Self {
        Self {
            row_normalize: true,
            train_per_class: count::<20>(),
            valid_size: count::<500>(),
            test_size: count::<1000>(),
            split_seed: None,
        }
    }
}

impl GraphExperimentConfig {
    /// Applies `--smoke`: one epoch on a split of 2 nodes per class and at most 20 valid and test
    /// nodes.
    pub fn into_smoke(mut self) -> Self {
        self.training = self.training.into_smoke();
        let data = &mut self.data;
        data.train_per_class = data.train_per_class.min(2);
        data.valid_size = data.valid_size.min(20);
        data.test_size = data.test_size.min(20);
        self
    }
}

impl CheckParts for GraphExperimentConfig {
    fn check_parts(&self) -> Result<(), String> {
        let GraphOptions {
            train_per_class,
            valid_size,
            test_size,
            ..
        } = self.data;
        if train_per_class == 0 || valid_size == 0 || test_size == 0 {
            return Err("train_per_class, valid_size and test_size must be at least 1".into());
        }
        self.model.validate()
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
    if config.data.row_normalize {
        graph.row_normalize();
    }
    let split = NodeSplit::planetoid(
        &graph,
        config.data.train_per_class,
        config.data.valid_size,
        config.data.test_size,
        config.data.split_seed.unwrap_or(config.training.seed),
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

impl<B: AutodiffBackend> Pipeline<B> for GraphExperimentConfig {
    /// Trains the configured model on the whole graph, saves `model.mpk`, scores valid and test.
    fn train(&self, ctx: &RunContext, devices: Vec<B::Device>) -> Result<RunReport> {
        if devices.len() > 1 {
            bail!(
                "{}: full-graph training takes one step per epoch on one device; --devices {} does \
                 not apply",
                self.experiment,
                devices.len()
            );
        }
        let (graph, split) = load_graph(self, ctx)?;
        let device = devices[0].clone();
        let loaders = Loaders {
            train: loader::<B>(&graph, &split.train, &device),
            valid: loader(&graph, &split.valid, &device),
            test: loader(&graph, &split.test, &device),
        };
        let about = format!(
            "graph: {} nodes, {} edges, {} features, {} classes; {} train / {} valid / {} test nodes",
            graph.num_nodes,
            graph.num_edges(),
            graph.num_features,
            graph.num_classes(),
            split.train.len(),
            split.valid.len(),
            split.test.len()
        );
        // PyTorch's and TensorFlow's epsilon, which the papers trained with; Burn's default 1e-5 is
        // near the size of sqrt(v) for the first layer's weights on row-normalised bag-of-words
        // features, and would damp their updates.
        let optimiser = Optimiser::AdamL2 {
            epsilon: Some(1e-8),
        };
        let training = Training::new(&self.training, optimiser, ctx, devices, loaders)
            .one_batch_of(split.train.len())
            .about(about);
        let mut report = self.model.run::<B>(training.into())?.report()?;
        report.figures = graph_figures::<B::InnerBackend>(self, ctx, &graph, &report.test, &device);
        Ok(report)
    }

    /// Rebuilds the model from the config, loads `model.mpk` from the artifact directory, and
    /// scores the test nodes.
    fn eval(&self, ctx: &RunContext, device: B::Device) -> Result<Scores> {
        let (graph, split) = load_graph(self, ctx)?;
        let test = loader(&graph, &split.test, &device);
        self.model
            .run::<B>(Scoring::new(ctx, device, test).into())?
            .scores()
    }

    /// The run's own figures (`pdl plot`), from its `test` scores.
    fn figures(&self, ctx: &RunContext, device: B::Device, test: &Scores) -> Result<Vec<Figure>> {
        let (graph, _) = load_graph(self, ctx)?;
        Ok(graph_figures::<B::InnerBackend>(
            self, ctx, &graph, test, &device,
        ))
    }
}

/// Test accuracy per class, and the saved model's hidden layer projected to 2-D (a note if it
/// cannot be).
fn graph_figures<B: Backend>(
    config: &GraphExperimentConfig,
    ctx: &RunContext,
    graph: &Graph,
    test: &Scores,
    device: &B::Device,
) -> Vec<Figure> {
    let mut figures = Vec::new();
    if let Some(confusion) = &test.confusion {
        figures.push(Figure::PerClass {
            classes: graph.class_names.clone(),
            confusion: confusion.clone(),
        });
    }
    let projected = config
        .model
        .hidden::<B>(&ctx.artifact_dir, graph, device)
        .and_then(|(layer, rows)| {
            let (labels, classes) = (graph.labels.clone(), graph.class_names.clone());
            Embedding::project(layer, &rows, labels, classes)
        });
    match projected {
        Ok(embedding) => figures.push(Figure::Embedding(embedding)),
        Err(e) => println!("note: no hidden-layer projection: {e:#}"),
    }
    figures
}
