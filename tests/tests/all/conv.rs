//! `pdl_models::conv`'s custom backward equals Burn's conv2d on the flex backend, over the grid
//! of shapes the models crate also runs on ndarray (and `wgpu.rs` on wgpu).

use burn::backend::{Autodiff, Flex};
use pdl_models::conv::check_gradients;

#[test]
fn the_custom_conv_backward_equals_burns_on_flex() {
    check_gradients::<Autodiff<Flex>>(&Default::default()).unwrap();
}
