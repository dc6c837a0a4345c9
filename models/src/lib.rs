//! pdl-models: the course's architectures as Burn modules, generic over the backend.
//!
//! Every model follows burn-nn's order: `XxxConfig` (a `Config`, saved in each run's
//! `config.json`) -> `XxxConfig::init(device)` -> `Xxx<B>` (a `Module`) -> `forward`, pure tensors
//! in and out. `forward_classification` adds the loss, and the Learner's `TrainStep` /
//! `InferenceStep` are two lines over it. Course-canonical sizes are named presets
//! (`ClassicCnnConfig::mnist()`), each citing its source.
//!
//! | file | models | chapter |
//! |---|---|---|
//! | [`mlp`] | multilayer perceptron | MLP |
//! | [`cnn`] | LeNet-5, the classic PyTorch MNIST net, a batch-norm CNN | CNN |
//! | [`resnet`] | a small residual network (He et al. 2016) | CNN |
//! | [`gnn`] | GCN, GraphSAGE, GAT by message passing | GNN |
//! | [`rnn`] | Elman RNN, LSTM and GRU cells from scratch, stacks, a forecaster, a char LM, a sentence classifier | RNN |
//! | [`sampling`] | temperature and top-k sampling for generation | RNN, attention |
//! | [`forecast`] | DLinear and the naive forecast, the baselines | RNN |
//! | [`attention`] | scaled dot-product and multi-head attention, causal and padding masks, a KV cache | attention |
//! | [`transformer`] | positional encodings, the pre-norm block, a sentence classifier, a char GPT, ViT | attention |
//! | [`contrastive`] | the NT-Xent loss of SimCLR | self-supervised |
//! | [`simclr`] | SimCLR: a CNN encoder and projection head trained by NT-Xent | self-supervised |
//! | [`mae`] | a masked autoencoder: a ViT encoder over a quarter of the patches, a light decoder | self-supervised |

pub mod attention;
pub mod classification;
pub mod cnn;
pub mod contrastive;
pub mod forecast;
pub mod gnn;
pub mod mae;
pub mod mlp;
pub mod resnet;
pub mod rnn;
pub mod sampling;
pub mod simclr;
pub mod transformer;

/// The backend the unit tests run on: the reference CPU backend, named here once.
#[cfg(test)]
type TestBackend = burn::backend::NdArray;

pub use attention::{
    KvCache, MultiHeadAttention, MultiHeadAttentionConfig, causal_mask, padding_mask,
    scaled_dot_product_attention,
};
pub use classification::{ImageClassifier, ImageEncoder, SentenceClassifier, train_output};
pub use cnn::{BnCnn, BnCnnConfig, ClassicCnn, ClassicCnnConfig, LeNet5, LeNet5Config};
pub use forecast::{DLinear, DLinearConfig, Forecaster};
pub use gnn::{Gat, GatConfig, Gcn, GcnConfig, NodeClassifier, Sage, SageConfig};
pub use mae::{Mae, MaeConfig};
pub use mlp::{Mlp, MlpConfig};
pub use resnet::{ResNet, ResNetConfig};
pub use rnn::{
    CellKind, CellSource, CharRnn, CharRnnConfig, Pooling, RnnForecaster, RnnForecasterConfig,
    SentenceRnn, SentenceRnnConfig,
};
pub use simclr::{SimClr, SimClrConfig};
pub use transformer::{
    CharGpt, CharGptConfig, MaskedLanguageModel, MaskedLanguageModelConfig, MlpActivation,
    PositionalEncoding, PositionalEncodingConfig, PositionalEncodingKind, TransformerBlock,
    TransformerBlockConfig, TransformerClassifier, TransformerClassifierConfig, Vit, VitConfig,
};

/// Seeds every random draw of a run and builds its model with `build`: the backend's generator
/// (initial weights, Burn's own dropout) and the mask streams of the `pdl_kernels` dropout layers
/// that `build` makes on this thread take `seed`, so that a run repeats.
///
/// The backend's generator is one per process. Seeding and building hold a process-wide lock, so
/// that a model built beside another (two runs in one process, the tests) draws none of the
/// other's numbers and gets the weights its seed gives alone. Build every model through here, even
/// one whose weights are loaded over right after: its draws would move another's.
pub fn seeded<B: burn::tensor::backend::Backend, M>(
    device: &B::Device,
    seed: u64,
    build: impl FnOnce(&B::Device) -> M,
) -> M {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _only_we_draw = BUILDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    B::seed(device, seed);
    pdl_kernels::seed(seed);
    build(device)
}
