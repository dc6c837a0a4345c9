//! Parity of [`crate::Linear`]'s host passes with Burn's `linear`.

use super::{Agreement, compare_gradients, compare_values, pseudo_random};
use crate::backend::host_kernels;
use crate::linear::linear_rows;
use crate::rng::SplitMix64;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::module::linear;

/// Checks that a fully connected layer runs on backend `B`'s host passes and agrees with Burn's
/// `linear` on `[rows, d_input] x [d_input, d_output] + [d_output]`: 700 rows of 37 to 29 (more
/// rows than one block of the forward pass takes, and than one of the bias's sums), 5 rows of 64
/// to 130, and 41 rows of 19 to 23 transposed in memory; the output, and the gradients of the
/// input, `W` and `b` of `sum(output r)` for a fixed pseudo-random `r`, then the same without the
/// input's gradient (a first layer). Then the inference pass on `B`'s inner backend.
///
/// # Errors
/// That the backend has no host pass, or the first differing element.
pub fn check_linear<B: AutodiffBackend>(device: &B::Device) -> Result<(), String> {
    if !host_kernels::<B>() {
        return Err("this backend has no host linear layer".into());
    }
    let mut rng = SplitMix64::new(53);
    for (rows, d_input, d_output, transposed) in [
        (700, 37, 29, false),
        (5, 64, 130, false),
        (41, 19, 23, true),
    ] {
        let x = match transposed {
            true => pseudo_random::<B, 2>(&mut rng, [d_input, rows], device).transpose(),
            false => pseudo_random::<B, 2>(&mut rng, [rows, d_input], device),
        };
        let weight = pseudo_random::<B, 2>(&mut rng, [d_input, d_output], device);
        let bias = pseudo_random::<B, 1>(&mut rng, [d_output], device);
        let r = pseudo_random::<B, 2>(&mut rng, [rows, d_output], device);
        for input_grad in [true, false] {
            let case = format!(
                "linear of [{rows}, {d_input}] to {d_output}, transposed {transposed}, input \
                 gradient {input_grad}"
            );
            let run = |ours: bool| {
                let (w, b) = (weight.clone().require_grad(), bias.clone().require_grad());
                let x = match input_grad {
                    true => x.clone().require_grad(),
                    false => x.clone(),
                };
                let y = if ours {
                    linear_rows(x.clone(), w.clone(), b.clone())
                        .ok_or_else(|| format!("{case}: the host pass did not run"))?
                } else {
                    linear(x.clone(), w.clone(), Some(b.clone()))
                };
                let grads = (y.clone() * r.clone()).sum().backward();
                let gradients = [
                    x.grad(&grads).map(|t| t.into_data()),
                    w.grad(&grads).map(|t| t.into_data()),
                    b.grad(&grads).map(|t| t.into_data()),
                ];
                Ok::<_, String>((y.into_data(), gradients))
            };
            let (ours, burns) = (run(true)?, run(false)?);
            compare_values(&case, "output", ours.0, burns.0, Agreement::Close)?;
            let names = ["input", "W", "b"];
            compare_gradients(&case, names, (ours.1, burns.1), Agreement::Close)?;
        }
        let case = format!("linear of [{rows}, {d_input}] to {d_output} in inference");
        let (x, weight, bias) = (x.inner(), weight.inner(), bias.inner());
        let ours = linear_rows(x.clone(), weight.clone(), bias.clone())
            .ok_or_else(|| format!("{case}: the host pass did not run"))?;
        let burns = linear(x, weight, Some(bias));
        compare_values(
            &case,
            "output",
            ours.into_data(),
            burns.into_data(),
            Agreement::Close,
        )?;
    }
    Ok(())
}
