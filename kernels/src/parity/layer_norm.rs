//! Parity of [`crate::LayerNorm`]'s host passes with Burn's `layer_norm`.

use super::{Agreement, compare_gradients, compare_values, pseudo_random};
use crate::backend::host_kernels;
use crate::norm::{LayerNormConfig, layer_norm_rows};
use crate::rng::SplitMix64;
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::backend::AutodiffBackend;

/// Added to the variance, as burn-nn's default.
const EPSILON: f64 = 1e-5;

/// Checks that layer normalisation runs on backend `B`'s host passes and agrees with Burn's
/// `layer_norm` on `[rows, d]` inputs with pseudo-random `gamma` and `beta`: 111 rows of 41, 130
/// rows of 192 around 100 (more rows than one task takes, and a mean far from 0), and 41 rows of
/// 37 transposed in memory; the output and the gradients of the input, `gamma` and `beta` of
/// `sum(output r)` for a fixed pseudo-random `r`. Then [`crate::LayerNorm`] on a `[3, 37, 41]`
/// tensor against burn-nn's module with the same parameters.
///
/// # Errors
/// That the backend has no host pass, or the first differing element.
pub fn check_layer_norm<B: AutodiffBackend>(device: &B::Device) -> Result<(), String> {
    if !host_kernels::<B>() {
        return Err("this backend has no host layer norm".into());
    }
    let mut rng = SplitMix64::new(47);
    for (rows, d, transposed, offset) in [
        (111, 41, false, 0.0),
        (130, 192, false, 100.0),
        (41, 37, true, 0.0),
    ] {
        let case = format!("layer norm of [{rows}, {d}] around {offset}, transposed {transposed}");
        let x = match transposed {
            true => pseudo_random::<B, 2>(&mut rng, [d, rows], device).transpose(),
            false => pseudo_random::<B, 2>(&mut rng, [rows, d], device),
        } * 3.0
            + offset;
        let gamma = pseudo_random::<B, 1>(&mut rng, [d], device) + 1.0;
        let beta = pseudo_random::<B, 1>(&mut rng, [d], device);
        let r = pseudo_random::<B, 2>(&mut rng, [rows, d], device);
        let run = |ours: bool| {
            let [g, b] = [&gamma, &beta].map(|t| t.clone().require_grad());
            let x = x.clone().require_grad();
            let y = if ours {
                layer_norm_rows(x.clone(), g.clone(), b.clone(), EPSILON)
                    .ok_or_else(|| format!("{case}: the host pass did not run"))?
            } else {
                let [g, b] = [g.clone(), b.clone()].map(|t| t.into_primitive().tensor());
                let x = x.clone().into_primitive().tensor();
                Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
                    x,
                    g,
                    Some(b),
                    EPSILON,
                )))
            };
            let grads = (y.clone() * r.clone()).sum().backward();
            let gradients = [
                x.grad(&grads).map(|t| t.into_data()),
                g.grad(&grads).map(|t| t.into_data()),
                b.grad(&grads).map(|t| t.into_data()),
            ];
            Ok::<_, String>((y.into_data(), gradients))
        };
        let (ours, burns) = (run(true)?, run(false)?);
        compare_values(&case, "output", ours.0, burns.0, Agreement::Close)?;
        // The input's gradient on Burn's side goes back through nine ops, each rounding: it
        // measured 1.6e-4 of the largest value off the one-pass formula on ndarray. A wrong
        // formula is off by percent (dropping the variance's term: 2%).
        let [input, gamma, beta] = ours.1;
        let [burns_input, burns_gamma, burns_beta] = burns.1;
        compare_gradients(&case, ["input"], ([input], [burns_input]), Agreement::Loose)?;
        let names = ["gamma", "beta"];
        let params = ([gamma, beta], [burns_gamma, burns_beta]);
        compare_gradients(&case, names, params, Agreement::Close)?;
    }
    let mut ours = LayerNormConfig::new(41).init::<B>(device);
    ours.gamma = Param::from_tensor(pseudo_random::<B, 1>(&mut rng, [41], device) + 1.0);
    let mut burns = burn::nn::LayerNormConfig::new(41).init::<B>(device);
    burns.gamma = ours.gamma.clone();
    let x = pseudo_random::<B, 3>(&mut rng, [3, 37, 41], device);
    let case = "the LayerNorm module on [3, 37, 41]";
    let output = |y: Tensor<B, 3>| y.into_data();
    let (a, b) = (ours.forward(x.clone()), burns.forward(x));
    compare_values(case, "output", output(a), output(b), Agreement::Close)
}
