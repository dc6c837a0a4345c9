//! Parity of [`crate::AdamW`]'s host step with Burn's `AdamW`.

use super::{Agreement, compare_values, pseudo_random};
use crate::adamw::AdamWConfig;
use crate::backend::host_kernels;
use crate::rng::SplitMix64;
use burn::optim::{AdamWState, SimpleOptimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

/// Checks that AdamW's step runs on backend `B`'s inner backend on the host and agrees with
/// Burn's `AdamW` over four steps with fresh gradients, weight decay 0.05 and none, on a
/// `[300, 211]` weight (large enough for all cores), a `[37, 5]` one and a `[13]` bias: the
/// parameter's change per unit of learning rate and both moments (each scaled to about 1), after
/// every step.
///
/// # Errors
/// That the backend has no host kernels, or the first differing element.
pub fn check_adamw<B: AutodiffBackend>(device: &B::Device) -> Result<(), String> {
    if !host_kernels::<B>() {
        return Err("this backend has no host AdamW step".into());
    }
    let mut rng = SplitMix64::new(71);
    for weight_decay in [0.05, 0.0] {
        let config = AdamWConfig::new().with_weight_decay(weight_decay);
        let ours = config.build();
        let burns = burn::optim::AdamWConfig::new()
            .with_weight_decay(weight_decay)
            .build();
        check_steps::<B::InnerBackend, 2>(&ours, &burns, [300, 211], &mut rng, device)?;
        check_steps::<B::InnerBackend, 2>(&ours, &burns, [37, 5], &mut rng, device)?;
        check_steps::<B::InnerBackend, 1>(&ours, &burns, [13], &mut rng, device)?;
    }
    Ok(())
}

/// Four steps of both optimisers from the same parameter with the same gradients.
fn check_steps<B: Backend, const D: usize>(
    ours: &crate::AdamW,
    burns: &burn::optim::AdamW,
    dims: [usize; D],
    rng: &mut SplitMix64,
    device: &B::Device,
) -> Result<(), String> {
    let lr = 3e-2;
    let start = pseudo_random::<B, D>(rng, dims, device);
    let (mut x_ours, mut x_burns) = (start.clone(), start);
    let (mut state_ours, mut state_burns): (Option<AdamWState<B, D>>, _) = (None, None);
    for step in 1..=4 {
        let case = format!("AdamW step {step} of a {dims:?} parameter");
        let grad = pseudo_random::<B, D>(rng, dims, device);
        let (before_ours, before_burns) = (x_ours.clone(), x_burns.clone());
        (x_ours, state_ours) = ours.step(lr, x_ours, grad.clone(), state_ours);
        (x_burns, state_burns) = burns.step(lr, x_burns, grad, state_burns);
        let change = |after: &Tensor<B, D>, before: Tensor<B, D>| {
            (after.clone() - before).div_scalar(lr).into_data()
        };
        compare_values(
            &case,
            "change per unit of learning rate",
            change(&x_ours, before_ours),
            change(&x_burns, before_burns),
            Agreement::Close,
        )?;
        let moments = |state: &Option<AdamWState<B, D>>| {
            let momentum = &state.as_ref().expect("AdamW keeps a state").momentum;
            (
                momentum.time,
                momentum.moment_1.clone().mul_scalar(10.0).into_data(),
                momentum.moment_2.clone().mul_scalar(1000.0).into_data(),
            )
        };
        let (ours_m, burns_m) = (moments(&state_ours), moments(&state_burns));
        if ours_m.0 != burns_m.0 {
            return Err(format!("{case}: time {}, Burn's {}", ours_m.0, burns_m.0));
        }
        compare_values(&case, "first moment", ours_m.1, burns_m.1, Agreement::Close)?;
        compare_values(
            &case,
            "second moment",
            ours_m.2,
            burns_m.2,
            Agreement::Close,
        )?;
    }
    Ok(())
}
