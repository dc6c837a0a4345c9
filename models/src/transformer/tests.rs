//! The transformer family's tests: positions, padding, causality, the KV cache, overfitting.

use super::*;
use crate::TestBackend as B;
use crate::sampling::{Generate, Sampling};
use burn::backend::Autodiff;
use burn::data::dataloader::batcher::Batcher;
use burn::module::AutodiffModule;
use burn::module::Param;
use burn::optim::{AdamConfig, Optimizer};
use burn::tensor::{Distribution, Tolerance};
use burn::train::{ClassificationOutput, TrainStep};
use pdl_datasets::SplitMix64;
use pdl_datasets::batcher::ImageBatch;
use pdl_datasets::text::chars::{CharBatcher, CharWindowDataset};
use pdl_datasets::text::sst2::{SentenceBatcher, SentenceItem};

type AB = Autodiff<B>;

fn close<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) {
    a.into_data()
        .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-5));
}

fn tokens(ids: &[i64]) -> Tensor<B, 2, Int> {
    Tensor::from_data(
        TensorData::new(ids.to_vec(), [1, ids.len()]),
        &Default::default(),
    )
}

#[test]
fn sinusoids_follow_the_formula() {
    let d = 6;
    let table = sinusoidal_positions::<B>(10, d, &Default::default());
    let values = table.into_data().to_vec::<f32>().unwrap();
    for p in [0usize, 1, 3, 9] {
        for i in 0..d / 2 {
            let angle = p as f64 / 10_000f64.powf(2.0 * i as f64 / d as f64);
            let (sin, cos) = (values[p * d + 2 * i], values[p * d + 2 * i + 1]);
            assert!((sin as f64 - angle.sin()).abs() < 1e-6, "p {p} i {i}");
            assert!((cos as f64 - angle.cos()).abs() < 1e-6, "p {p} i {i}");
        }
    }
    // Position 0 is (0, 1, 0, 1, ...); the sinusoidal encoding has no parameters.
    assert_eq!(&values[..4], &[0.0, 1.0, 0.0, 1.0]);
    let encoding = PositionalEncodingConfig::new(6, 10).init::<B>(&Default::default());
    assert_eq!(encoding.num_params(), 0);
    assert_eq!(encoding.forward(2, 3).dims(), [1, 3, 6]);
}

#[test]
fn learned_positions_are_rows_of_an_embedding() {
    let encoding = PositionalEncodingConfig::new(4, 8)
        .with_kind(PositionalEncodingKind::Learned)
        .init::<B>(&Default::default());
    assert_eq!(encoding.num_params(), 32);
    assert_eq!(encoding.max_len(), 8);
    let all = encoding.forward(0, 8);
    close(encoding.forward(5, 3), all.slice([0..1, 5..8, 0..4]));
}

#[test]
fn classifier_padding_changes_no_logit() {
    let device = Default::default();
    for positions in [
        PositionalEncodingKind::Sinusoidal,
        PositionalEncodingKind::Learned,
    ] {
        let model = TransformerClassifierConfig::new(20, 3)
            .with_d_model(8)
            .with_n_heads(2)
            .with_max_len(8)
            .with_positions(positions)
            .with_dropout(0.0)
            .init::<B>(&device);
        // Sentence 0 is 3 tokens padded to 5 (with non-pad ids, to show the mask rules).
        let tokens = Tensor::<B, 2, Int>::from_data([[4, 7, 2, 9, 9], [5, 1, 3, 8, 6]], &device);
        let mask =
            Tensor::<B, 2, Bool>::from_data([[true, true, true, false, false], [true; 5]], &device);
        let batched = model.forward(tokens.clone(), mask);
        assert_eq!(batched.dims(), [2, 3]);
        let alone = model.forward(
            tokens.slice([0..1, 0..3]),
            Tensor::from_data([[true, true, true]], &device),
        );
        close(batched.slice([0..1, 0..3]), alone);
    }
}

#[test]
fn classifier_parameter_count() {
    // SST-2's vocabulary: embedding 14818 x 128; per block two layer norms (2 x 256), four
    // 128 x 128 attention projections with biases, and the MLP 128 -> 512 -> 128; the final
    // norm; the head 128 -> 2. Sinusoidal positions add nothing.
    let model = TransformerClassifierConfig::new(14_818, 2).init::<B>(&Default::default());
    let block = 2 * 256 + 4 * (128 * 128 + 128) + (128 * 512 + 512) + (512 * 128 + 128);
    let expected = 14_818 * 128 + 2 * block + 256 + (128 * 2 + 2);
    assert_eq!(model.num_params(), expected);
    assert_eq!(expected, 2_293_762);
}

fn small_gpt(block_size: usize) -> CharGpt<B> {
    CharGptConfig::new(11)
        .with_block_size(block_size)
        .with_d_model(16)
        .with_n_heads(2)
        .with_n_layers(2)
        .with_dropout(0.0)
        .init(&Default::default())
}

#[test]
fn gpt_a_future_token_never_changes_earlier_logits() {
    let model = small_gpt(8);
    let a = model.forward(tokens(&[1, 4, 2, 9, 3, 0]));
    let b = model.forward(tokens(&[1, 4, 2, 7, 7, 10]));
    assert_eq!(a.dims(), [1, 6, 11]);
    close(a.slice([0..1, 0..3, 0..11]), b.slice([0..1, 0..3, 0..11]));
}

#[test]
fn gpt_reading_in_pieces_with_caches_equals_one_pass() {
    let model = small_gpt(8);
    let text = [3, 1, 4, 1, 5, 9, 2];
    let whole = model.forward(tokens(&text));
    let (first, caches) = model.forward_cached(tokens(&text[..4]), None);
    let (second, caches) = model.forward_cached(tokens(&text[4..5]), Some(caches));
    let (third, caches) = model.forward_cached(tokens(&text[5..]), Some(caches));
    assert_eq!(caches.len(), 2);
    assert_eq!(caches[0].seq_len(), 7);
    close(Tensor::cat(vec![first, second, third], 1), whole);
}

#[test]
fn gpt_greedy_generation_with_the_cache_equals_without_past_the_block_size() {
    let device = Default::default();
    let model = small_gpt(6);
    let greedy = Sampling {
        temperature: 0.0,
        top_k: None,
    };
    for prompt in [&[2u32][..], &[1, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9]] {
        let cached = model.generate(prompt, 15, greedy, 0, true, &device);
        let uncached = model.generate(prompt, 15, greedy, 0, false, &device);
        assert_eq!(cached.len(), 15);
        assert_eq!(cached, uncached, "prompt {prompt:?}");
    }
    // Sampling is seeded.
    let warm = Sampling {
        temperature: 1.0,
        top_k: Some(5),
    };
    let a = model.generate(&[4], 10, warm, 3, true, &device);
    assert_eq!(a, model.generate(&[4], 10, warm, 3, true, &device));
    assert!(a.iter().all(|&i| i < 11));
}

#[test]
#[should_panic(expected = "longer than its block size")]
fn gpt_refuses_a_context_past_its_block_size() {
    small_gpt(4).forward(tokens(&[1, 2, 3, 4, 5]));
}

#[test]
fn gpt_ties_its_output_layer_to_the_embedding() {
    // Tiny Shakespeare's 65 characters: embedding 65 x 192 and positions 128 x 192; per block
    // two layer norms, four 192 x 192 projections and the MLP 192 -> 768 -> 192; the final
    // norm. No 192 x 65 output matrix.
    let model = CharGptConfig::new(65).init::<B>(&Default::default());
    let block = 2 * 384 + 4 * (192 * 192 + 192) + (192 * 768 + 768) + (768 * 192 + 192);
    let expected = 65 * 192 + 128 * 192 + 4 * block + 384;
    assert_eq!(model.num_params(), expected);
    assert_eq!(expected, 1_816_896);
    // Changing the embedding changes the logits: they are read against it.
    let small = small_gpt(4);
    let before = small.forward(tokens(&[1, 2]));
    let mut bigger = small.clone();
    bigger.embedding.weight = Param::from_tensor(small.embedding.weight.val() * 2.0);
    let after = bigger.forward(tokens(&[1, 2]));
    assert!((after - before).abs().max().into_scalar() > 1e-3);
}

#[test]
fn vit_gives_logits_per_image_and_rejects_a_patch_that_does_not_divide() {
    let device = Default::default();
    let model = VitConfig::mnist().init::<B>(&device);
    let images = Tensor::random([3, 1, 28, 28], Distribution::Default, &device);
    assert_eq!(model.forward(images).dims(), [3, 10]);
    // Patch embedding 49 x 64 + 64, class token, 17 positions, 6 blocks (MLP 64 -> 128 -> 64),
    // final norm, head 64 -> 10.
    let block = 2 * 128 + 4 * (64 * 64 + 64) + (64 * 128 + 128) + (128 * 64 + 64);
    let expected = (49 * 64 + 64) + 64 + 17 * 64 + 6 * block + 128 + 650;
    assert_eq!(model.num_params(), expected);
    assert_eq!(expected, 205_962);
    assert!(VitConfig::new().with_patch_size(5).validate().is_err());
    assert!(VitConfig::new().with_n_heads(5).validate().is_err());
    assert!(VitConfig::new().with_patch_size(4).validate().is_ok());
}

/// Trains on one fixed batch with Adam; the loss must fall below half its start.
fn assert_overfits<M, I: Clone>(mut model: M, batch: I, steps: usize, lr: f64)
where
    M: TrainStep<Input = I, Output = ClassificationOutput<AB>> + AutodiffModule<AB>,
{
    let mut optim = AdamConfig::new().init();
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let out = model.step(batch.clone());
        losses.push(out.item.loss.clone().into_scalar().elem::<f64>());
        model = optim.step(lr, model, out.grads);
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(
        last < first / 2.0,
        "loss went from {first:.4} to {last:.4}: {losses:?}"
    );
}

#[test]
fn classifier_overfits_one_batch() {
    let mut rng = SplitMix64::new(2);
    let items = (0..16)
        .map(|i| SentenceItem {
            tokens: (0..2 + rng.below(6))
                .map(|_| 2 + rng.below(30) as u32)
                .collect(),
            label: i % 2,
        })
        .collect();
    let batch = SentenceBatcher { max_len: 16 }.batch(items, &Default::default());
    let model = TransformerClassifierConfig::new(32, 2)
        .with_d_model(32)
        .with_n_layers(1)
        .with_max_len(16)
        .with_dropout(0.0)
        .init::<AB>(&Default::default());
    assert_overfits(model, batch, 40, 3e-3);
}

#[test]
fn gpt_overfits_one_batch() {
    let text: Vec<u32> = (0..200).map(|i| (i * 7 % 13) as u32).collect();
    let windows = CharWindowDataset::random(std::sync::Arc::new(text), 16, 8, 1).unwrap();
    let items = (0..8)
        .map(|i| burn::data::dataset::Dataset::get(&windows, i).unwrap())
        .collect();
    let batch = CharBatcher.batch(items, &Default::default());
    let model = CharGptConfig::new(13)
        .with_block_size(16)
        .with_d_model(32)
        .with_n_heads(4)
        .with_n_layers(2)
        .with_dropout(0.0)
        .init::<AB>(&Default::default());
    assert_overfits(model, batch, 40, 3e-3);
}

#[test]
fn vit_overfits_one_batch() {
    // Ten images, each noise with a bright row at a height given by its class.
    let device = Default::default();
    let mut rng = SplitMix64::new(9);
    let mut pixels = Vec::with_capacity(10 * 28 * 28);
    for label in 0..10 {
        for row in 0..28 {
            for _ in 0..28 {
                let bright = row == 3 + 2 * label;
                pixels.push(if bright { 1.0 } else { rng.symmetric(0.2) });
            }
        }
    }
    let batch = ImageBatch {
        images: Tensor::<AB, 4>::from_data(TensorData::new(pixels, [10, 1, 28, 28]), &device),
        targets: Tensor::from_data(
            TensorData::new((0..10i64).collect::<Vec<_>>(), [10]),
            &device,
        ),
    };
    let model = VitConfig::new()
        .with_d_model(32)
        .with_n_layers(2)
        .with_d_ff(64)
        .with_dropout(0.0)
        .init::<AB>(&device);
    assert_overfits(model, batch, 40, 3e-3);
}
