//! A fully connected layer, `y = x W + b`: burn-nn's `Linear` (same fields, same initialisation,
//! records load either way), applied to a tensor of any rank as one matrix product.
//!
//! Why not burn-nn's `Linear` on a `[batch, t, d]` tensor: Burn 0.21 multiplies it by the weight
//! as a *batched* matmul, broadcasting `W` over the batch, and its backward step computes the
//! weight's gradient as `batch` separate products `x_b^T dy_b` of `[d_in, d_out]` each, then sums
//! them over the batch. For `shakespeare-gpt`'s MLP (64 sequences of 64 positions, 128 -> 512)
//! that is 64 small gemms and a 16 MiB intermediate where one `[128, 4096] x [4096, 512]` gemm
//! does. Here the leading axes are flattened first, `[batch * t, d_in]`, so every product (the
//! output, both gradients) is one large gemm and the weight's gradient needs no sum; the output is
//! reshaped back. Both reshapes are free on a contiguous tensor.

use burn::module::{Content, DisplaySettings, Initializer, ModuleDisplay, Param};
use burn::prelude::*;
use burn::tensor::module::linear;

/// Configuration of a [`Linear`]: burn-nn's `LinearConfig` (row layout, `W` is
/// `[d_input, d_output]`).
#[derive(Config, Debug)]
pub struct LinearConfig {
    /// Width of each input vector.
    pub d_input: usize,
    /// Width of each output vector.
    pub d_output: usize,
    /// Whether the layer adds a bias `b`.
    #[config(default = true)]
    pub bias: bool,
    /// How `W` and `b` start: burn-nn's default, Kaiming-uniform with gain `1 / sqrt(3)`.
    #[config(
        default = "Initializer::KaimingUniform { gain: 1.0 / 3.0f64.sqrt(), fan_out_only: false }"
    )]
    pub initializer: Initializer,
}

impl LinearConfig {
    /// The layer, initialised exactly as burn-nn's `LinearConfig::init` initialises it.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Linear<B> {
        burn::nn::LinearConfig::new(self.d_input, self.d_output)
            .with_bias(self.bias)
            .with_initializer(self.initializer.clone())
            .init(device)
            .into()
    }
}

/// `y = x W + b` over the last axis. The fields are burn-nn's `Linear`'s.
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct Linear<B: Backend> {
    /// `W`, `[d_input, d_output]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `b`, `[d_output]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> From<burn::nn::Linear<B>> for Linear<B> {
    fn from(layer: burn::nn::Linear<B>) -> Self {
        Self {
            weight: layer.weight,
            bias: layer.bias,
        }
    }
}

impl<B: Backend> Linear<B> {
    /// `x W + b` for every vector along the last axis of `input`.
    ///
    /// # Shapes
    /// - input: `[..., d_input]`
    /// - output: `[..., d_output]`
    pub fn forward<const D: usize>(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        let weight = self.weight.val();
        let bias = self.bias.as_ref().map(|b| b.val());
        if D <= 2 {
            return linear(input, weight, bias);
        }
        let mut dims = input.dims();
        let [d_input, d_output] = weight.dims();
        let rows = dims[..D - 1].iter().product::<usize>();
        let output = linear(input.reshape([rows, d_input]), weight, bias);
        dims[D - 1] = d_output;
        output.reshape(dims)
    }
}

impl<B: Backend> ModuleDisplay for Linear<B> {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        crate::one_line_display()
    }

    // burn-nn's display, so a model prints the same whichever layer it holds.
    fn custom_content(&self, content: Content) -> Option<Content> {
        let [d_input, d_output] = self.weight.shape().dims();
        content
            .add("d_input", &d_input)
            .add("d_output", &d_output)
            .add("bias", &self.bias.is_some())
            .optional()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    use burn::tensor::{Distribution, Tolerance};

    type B = Autodiff<NdArray>;

    /// Burn's layer with its parameters drawn (they are drawn lazily, at first use, so two clones
    /// of an undrawn layer would draw different ones).
    fn burns_layer(d_input: usize, d_output: usize) -> burn::nn::Linear<B> {
        let layer = burn::nn::LinearConfig::new(d_input, d_output).init::<B>(&Default::default());
        let _ = (layer.weight.val(), layer.bias.as_ref().map(|b| b.val()));
        layer
    }

    #[test]
    fn records_load_both_ways_between_burn_and_pdl() {
        type Mpk = NamedMpkBytesRecorder<FullPrecisionSettings>;
        let (device, recorder) = (Default::default(), Mpk::default());
        let burns = burns_layer(5, 7);
        let bytes = recorder.record(burns.clone().into_record(), ()).unwrap();
        let record = recorder.load(bytes, &device).unwrap();
        let loaded = LinearConfig::new(5, 7)
            .init::<B>(&device)
            .load_record(record);
        assert_eq!(
            loaded.weight.val().into_data(),
            burns.weight.val().into_data()
        );
        let bias = |l: &Linear<B>| l.bias.as_ref().unwrap().val().into_data();
        assert_eq!(
            bias(&loaded),
            burns.bias.as_ref().unwrap().val().into_data()
        );

        let ours = Linear::from(burns_layer(5, 7));
        let bytes = recorder.record(ours.clone().into_record(), ()).unwrap();
        let record = recorder.load(bytes, &device).unwrap();
        let back = burn::nn::LinearConfig::new(5, 7)
            .init::<B>(&device)
            .load_record(record);
        assert_eq!(back.weight.val().into_data(), ours.weight.val().into_data());
        assert_eq!(format!("{back}"), format!("{ours}"), "the same display");
    }

    /// A `[2, 3, 4, 5]` input through both layers holding the same weights: the same output, and
    /// the same gradients for the input, the weight and the bias.
    #[test]
    fn equals_burns_linear_on_a_rank_4_input_in_values_and_gradients() {
        let device = Default::default();
        let burns = burns_layer(5, 6);
        let ours = Linear::from(burns.clone());
        let x = Tensor::<B, 4>::random([2, 3, 4, 5], Distribution::Default, &device);
        let r = Tensor::<B, 4>::random([2, 3, 4, 6], Distribution::Default, &device);
        let run = |ours_: bool| {
            let x = x.clone().require_grad();
            let y = if ours_ {
                ours.forward(x.clone())
            } else {
                burns.forward(x.clone())
            };
            let grads = (y.clone() * r.clone()).sum().backward();
            let weight = if ours_ { &ours.weight } else { &burns.weight };
            let bias = if ours_ { &ours.bias } else { &burns.bias };
            (
                y.into_data(),
                x.grad(&grads).unwrap().into_data(),
                weight.grad(&grads).unwrap().into_data(),
                bias.as_ref().unwrap().grad(&grads).unwrap().into_data(),
            )
        };
        let (a, b) = (run(true), run(false));
        let tolerance = Tolerance::<f32>::absolute(1e-5);
        a.0.assert_approx_eq::<f32>(&b.0, tolerance);
        a.1.assert_approx_eq::<f32>(&b.1, tolerance);
        a.2.assert_approx_eq::<f32>(&b.2, tolerance);
        a.3.assert_approx_eq::<f32>(&b.3, tolerance);
    }
}
