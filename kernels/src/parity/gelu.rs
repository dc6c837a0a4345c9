//! Parity of [`crate::gelu`] with GELU and QuickGELU written in Burn's ops.

use super::{Agreement, compare_gradients, compare_values, pseudo_random};
use crate::backend::host_kernels;
use crate::gelu::GeluKind;
use crate::rng::SplitMix64;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Checks that [`crate::gelu::gelu`] and [`crate::gelu::quick_gelu`] run on backend `B`'s host
/// pass and agree with `x (1 + erf(x / sqrt 2)) / 2` and `x sigmoid(1.702 x)` in Burn's ops on a
/// `[3, 37, 41]` tensor of values in `[-8, 8]` (plus 0 and ±30, where the CDF and the sigmoid
/// saturate), laid out contiguously and transposed in memory: the output and the input gradient
/// of `sum(output r)` for a fixed pseudo-random `r`.
///
/// # Errors
/// That the backend has no host pass, or the first differing element.
pub fn check_gelu<B: AutodiffBackend>(device: &B::Device) -> Result<(), String> {
    if !host_kernels::<B>() {
        return Err("this backend has no host GELU".into());
    }
    let mut rng = SplitMix64::new(31);
    let dims = [3, 37, 41];
    let edges = Tensor::<B, 1>::from_floats([0.0, 30.0, -30.0], device);
    for (kind, transposed) in [GeluKind::Exact, GeluKind::Quick]
        .into_iter()
        .flat_map(|kind| [(kind, false), (kind, true)])
    {
        let case = format!("{kind:?} GELU, transposed {transposed}");
        let x = if transposed {
            pseudo_random::<B, 3>(&mut rng, [3, 41, 37], device).swap_dims(1, 2)
        } else {
            pseudo_random::<B, 3>(&mut rng, dims, device)
        } * 8.0;
        let x = x.slice_assign([0..1, 0..1, 0..3], edges.clone().reshape([1, 1, 3]));
        let r = pseudo_random::<B, 3>(&mut rng, dims, device);
        let run = |ours: bool| {
            let x = x.clone().require_grad();
            let y = match (ours, kind) {
                (true, GeluKind::Exact) => crate::gelu::gelu(x.clone()),
                (true, GeluKind::Quick) => crate::gelu::quick_gelu(x.clone()),
                (false, kind) => kind.reference(x.clone()),
            };
            let grads = (y.clone() * r.clone()).sum().backward();
            (y.into_data(), x.grad(&grads).map(|g| g.into_data()))
        };
        let (ours, reference) = (run(true), run(false));
        compare_values(&case, "output", ours.0, reference.0, Agreement::Close)?;
        let gradients = ([ours.1], [reference.1]);
        compare_gradients(&case, ["input"], gradients, Agreement::Close)?;
    }
    Ok(())
}
