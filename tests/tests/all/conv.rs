//! The CNN layers' fast paths equal Burn's ops on the flex backend: `pdl_models::conv`'s custom
//! backward and host forward over the grid of shapes the models crate also runs on ndarray (and
//! `wgpu.rs` on wgpu), `pdl_models::pool`'s host max pooling over its grid of windows, and
//! `pdl_kernels::norm`'s batch norm in training over ranks and layouts.

use burn::backend::{Autodiff, Flex};
use pdl_kernels::parity::{check_batch_norm, check_gradients, check_pool};

#[test]
fn the_custom_conv_backward_equals_burns_on_flex() {
    check_gradients::<Autodiff<Flex>>(&Default::default()).unwrap();
}

#[test]
fn the_host_max_pool_equals_burns_on_flex() {
    check_pool::<Autodiff<Flex>>(&Default::default()).unwrap();
}

#[test]
fn the_host_batch_norm_equals_burns_on_flex() {
    check_batch_norm::<Autodiff<Flex>>(&Default::default()).unwrap();
}
