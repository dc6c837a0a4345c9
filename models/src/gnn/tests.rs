//! The graph layers against their dense matrix formulas on a small graph.

use super::*;
use crate::TestBackend as B;
use burn::tensor::activation::leaky_relu;
use burn::tensor::{TensorData, Tolerance};

fn small_graph() -> (Tensor<B, 2>, Tensor<B, 2, Int>) {
    let device = Default::default();
    // 5 nodes; links 0-1, 0-2, 1-2, 2-3 (both directions), node 4 alone.
    let pairs = [(0, 1), (0, 2), (1, 2), (2, 3)];
    let (s, t): (Vec<i64>, Vec<i64>) = pairs.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).unzip();
    let edges = Tensor::from_data(TensorData::new([s, t].concat(), [2, 8]), &device);
    let x = Tensor::random(
        [5, 3],
        burn::tensor::Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    (x, edges)
}

fn dense_adjacency(edge_index: &Tensor<B, 2, Int>, n: usize) -> Tensor<B, 2> {
    let e = edge_index.to_data().to_vec::<i64>().unwrap();
    let m = e.len() / 2;
    let mut a = vec![0f32; n * n];
    for k in 0..m {
        a[e[m + k] as usize * n + e[k] as usize] = 1.0; // row = target, column = source
    }
    Tensor::from_data(TensorData::new(a, [n, n]), &Default::default())
}

#[test]
fn scatter_gcn_equals_the_dense_formula() {
    let (x, edges) = small_graph();
    let conv = GcnConvConfig::new(3, 4).init::<B>(&Default::default());
    let a_hat = dense_adjacency(&edges, 5) + Tensor::eye(5, &Default::default());
    let d = a_hat.clone().sum_dim(1).powf_scalar(-0.5); // [5, 1]
    let norm = d.clone() * a_hat * d.transpose();
    let dense = norm.matmul(x.clone().matmul(conv.weight.val())) + conv.bias.val().unsqueeze();
    conv.forward(x, edges)
        .into_data()
        .assert_approx_eq::<f32>(&dense.into_data(), Tolerance::absolute(1e-5));
}

#[test]
fn sage_equals_self_plus_neighbour_mean() {
    let (x, edges) = small_graph();
    let conv = SageConvConfig::new(3, 2).init::<B>(&Default::default());
    let a = dense_adjacency(&edges, 5);
    let mean = (a.clone() / a.sum_dim(1).clamp_min(1.0)).matmul(x.clone());
    let expected = conv.root.forward(x.clone()) + conv.neighbours.forward(mean);
    conv.forward(x, edges)
        .into_data()
        .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
}

#[test]
fn gat_equals_dense_masked_softmax_attention() {
    let (x, edges) = small_graph();
    let device = Default::default();
    let conv = GatConvConfig::new(3, 2, 2)
        .with_dropout(0.0)
        .init::<B>(&device);
    let mask = dense_adjacency(&edges, 5) + Tensor::eye(5, &device); // [target, source]
    let h = x.clone().matmul(conv.weight.val()).reshape([5, 2, 2]);
    let mut heads = Vec::new();
    for k in 0..2 {
        let hk = h.clone().slice([0..5, k..k + 1, 0..2]).reshape([5, 2]);
        let a_s = conv.att_source.val().slice([k..k + 1, 0..2]); // [1, 2]
        let a_t = conv.att_target.val().slice([k..k + 1, 0..2]);
        let s = hk.clone().matmul(a_s.transpose()); // [5, 1]
        let t = hk.clone().matmul(a_t.transpose()); // [5, 1]
        let e = leaky_relu(t + s.transpose(), 0.2); // [target, source]
        let e = e.mask_fill(mask.clone().equal_elem(0.0), f32::NEG_INFINITY);
        let alpha = burn::tensor::activation::softmax(e, 1);
        heads.push(alpha.matmul(hk));
    }
    let expected = Tensor::cat(heads, 1) + conv.bias.val().unsqueeze();
    conv.forward(x, edges)
        .into_data()
        .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
}

#[test]
fn models_give_one_row_of_logits_per_node() {
    let (x, edges) = small_graph();
    let device = Default::default();
    let gcn = GcnConfig::new(3, 4).init::<B>(&device);
    assert_eq!(gcn.forward(x.clone(), edges.clone()).dims(), [5, 4]);
    let sage = SageConfig::new(3, 4).init::<B>(&device);
    assert_eq!(sage.forward(x.clone(), edges.clone()).dims(), [5, 4]);
    let gat = GatConfig::new(3, 4)
        .with_n_heads_output(2)
        .init::<B>(&device);
    assert_eq!(gat.forward(x, edges).dims(), [5, 4]);
}

#[test]
fn cora_models_have_the_papers_parameter_counts() {
    let device = Default::default();
    // GCN: 1433*16 + 16 + 16*7 + 7.
    let gcn = GcnConfig::cora().init::<B>(&device);
    assert_eq!(gcn.num_params(), 23_063);
    // GAT: 1433*64 + 2*64 + 64, then 64*7 + 2*7 + 7.
    let gat = GatConfig::cora().init::<B>(&device);
    assert_eq!(gat.num_params(), 91_712 + 128 + 64 + 448 + 14 + 7);
}

#[test]
fn bad_configs_are_rejected() {
    assert!(GcnConfig::new(0, 7).validate().is_err());
    assert!(GcnConfig::cora().with_dropout(1.0).validate().is_err());
    assert!(SageConfig::cora().with_d_hidden(0).validate().is_err());
    assert!(GatConfig::cora().with_n_heads(0).validate().is_err());
    assert!(
        GatConfig::cora()
            .with_attention_dropout(-0.1)
            .validate()
            .is_err()
    );
}
