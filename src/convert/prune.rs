//! Magnitude pruning of Conv, ConvTranspose, Gemm and MatMul weights: the smallest weights are
//! set to zero, in place, keeping the model's structure (a dense model with zeros, which any
//! engine runs, and whose file compresses well). crx580's CPU backend runs 1x1 stride-1 Convs
//! whose weights are at least 65% zeros on a sparse kernel (`backend::cpu::sparse`: 1.06-1.8x
//! the dense speed per layer at 70%, 2.1-3.8x at 90%; 2:4's 50% does not pay and stays dense);
//! MatMul, Gemm and other Convs run dense, so pruning them only shrinks the compressed file.
//!
//! Patterns: `Unstructured` zeroes the fraction `sparsity` of each layer's weights with the
//! smallest magnitude; `TwoOfFour` keeps the 2 largest of every 4 consecutive weights along the
//! reduction (input) dimension, the N:M form sparse tensor cores run (always 50%);
//! `Channel` zeroes whole output channels, those of smallest L2 norm.

use super::edit::{attr_i, constant_initializers, f32_values, tensor_f32};
use crate::ir::order::sort_positions;
use crate::onnx::model::ModelProto;
use crate::{bail, Result};
use std::collections::HashSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Unstructured,
    TwoOfFour,
    Channel,
}

/// One pruned weight: the node that reads it first, its size and its zeros before and after.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSparsity {
    pub node: String,
    pub weight: String,
    pub elements: usize,
    pub zeros_before: usize,
    pub zeros_after: usize,
}

/// Prunes every constant float weight of Conv/ConvTranspose/Gemm/MatMul in `m` (except nodes
/// named or typed in `keep`) to `sparsity` (0..1) by `pattern`.
pub fn prune(m: &mut ModelProto, sparsity: f64, pattern: Pattern, keep: &[String]) -> Result<Vec<LayerSparsity>> {
    if !(0.0..1.0).contains(&sparsity) {
        bail!(InvalidInput, "--prune {sparsity}: the sparsity must be at least 0 and below 1");
    }
    if pattern == Pattern::TwoOfFour && sparsity != 0.5 {
        bail!(InvalidInput, "the 2:4 pattern keeps 2 of every 4 weights: its sparsity is 0.5, not {sparsity}");
    }
    let Some(g) = m.graph.as_mut() else { bail!(InvalidModel, "the model has no graph") };
    let weights = constant_initializers(g);
    let mut done = HashSet::new();
    let mut layers = vec![];
    for n in &g.node {
        let std_domain = n.domain.is_empty() || n.domain == "ai.onnx";
        if !std_domain || !matches!(n.op_type.as_str(), "Conv" | "ConvTranspose" | "Gemm" | "MatMul") {
            continue;
        }
        if keep.iter().any(|k| *k == n.name || *k == n.op_type) {
            continue;
        }
        let Some(w) = n.input.get(1) else { continue };
        let Some(&wi) = weights.get(w) else { continue };
        // ConvTranspose reduces over its first axis, across kernel positions: no 2:4 layout.
        if pattern == Pattern::TwoOfFour && n.op_type == "ConvTranspose" {
            continue;
        }
        if !done.insert(w.clone()) || g.initializer[wi].data_type != crate::ir::DType::F32.onnx_code() {
            continue;
        }
        let (dims, mut values) = f32_values(&g.initializer[wi])?;
        if values.is_empty() || dims.len() < 2 {
            continue;
        }
        // The output-channel axis and whether the reduction runs along the contiguous last axis.
        let (out_axis, reduce_last) = match n.op_type.as_str() {
            "Conv" => (0, true),
            "ConvTranspose" => (1, false),
            "Gemm" if attr_i(n, "transB", 0) != 0 => (0, true),
            _ => (dims.len() - 1, false),
        };
        let zeros_before = values.iter().filter(|v| **v == 0.0).count();
        match pattern {
            Pattern::Unstructured => unstructured(&mut values, sparsity),
            Pattern::TwoOfFour => two_of_four(&mut values, &dims, reduce_last),
            Pattern::Channel => channels(&mut values, &dims, out_axis, sparsity),
        }
        let zeros_after = values.iter().filter(|v| **v == 0.0).count();
        let name = if n.name.is_empty() { n.op_type.clone() } else { n.name.clone() };
        layers.push(LayerSparsity { node: name, weight: w.clone(), elements: values.len(), zeros_before, zeros_after });
        g.initializer[wi] = tensor_f32(w, &dims, &values);
    }
    Ok(layers)
}

/// Zeroes the `sparsity` fraction of values of smallest magnitude (ties broken by position).
fn unstructured(values: &mut [f32], sparsity: f64) {
    let k = (values.len() as f64 * sparsity).round() as usize;
    let mut order: Vec<usize> = (0..values.len()).collect();
    sort_positions(&mut order, &|a, b| values[a].abs().total_cmp(&values[b].abs()).then(a.cmp(&b)));
    order.into_iter().take(k).for_each(|i| values[i] = 0.0);
}

/// Keeps the 2 largest of every 4 consecutive weights along the reduction dimension: the last
/// axis (Conv's [O, C*kh*kw], a transposed Gemm's [N, K]), or the first of a [K, N] matrix.
fn two_of_four(values: &mut [f32], dims: &[usize], reduce_last: bool) {
    let (rows, len, stride): (usize, usize, usize) = if reduce_last {
        let len = values.len() / dims[0];
        (dims[0], len, 1)
    } else {
        let cols = dims[dims.len() - 1];
        // [.., K, N]: groups run down each column; batched weights prune each matrix alike.
        (values.len() / dims[dims.len() - 2], dims[dims.len() - 2], cols)
    };
    for r in 0..rows {
        let base = if reduce_last { r * len } else { (r / stride) * len * stride + r % stride };
        let mut k = 0;
        while k < len {
            let group: Vec<usize> = (k..(k + 4).min(len)).map(|j| base + j * stride).collect();
            let mut sorted = group.clone();
            sort_positions(&mut sorted, &|a, b| values[a].abs().total_cmp(&values[b].abs()).then(a.cmp(&b)));
            let drop = group.len().saturating_sub(2);
            sorted.into_iter().take(drop).for_each(|i| values[i] = 0.0);
            k += 4;
        }
    }
}

/// Zeroes whole channels along `axis`, the `sparsity` fraction of smallest L2 norm.
fn channels(values: &mut [f32], dims: &[usize], axis: usize, sparsity: f64) {
    let count = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let channel_of = |i: usize| (i / inner) % count;
    let mut norms = vec![0f64; count];
    for (i, v) in values.iter().enumerate() {
        norms[channel_of(i)] += f64::from(*v) * f64::from(*v);
    }
    let k = (count as f64 * sparsity).round() as usize;
    let mut order: Vec<usize> = (0..count).collect();
    sort_positions(&mut order, &|a, b| norms[a].total_cmp(&norms[b]).then(a.cmp(&b)));
    let pruned: HashSet<usize> = order.into_iter().take(k).collect();
    for (i, v) in values.iter_mut().enumerate() {
        if pruned.contains(&channel_of(i)) {
            *v = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unstructured_zeroes_the_smallest_fraction() {
        let mut v = vec![0.5, -0.1, 0.3, -0.9, 0.2, 0.05, -0.7, 0.8];
        unstructured(&mut v, 0.5);
        assert_eq!(v, [0.5, 0.0, 0.0, -0.9, 0.0, 0.0, -0.7, 0.8]);
    }

    #[test]
    fn two_of_four_keeps_the_two_largest_of_each_group_along_the_reduction() {
        // [O=2, K=4] reduced along the last axis.
        let mut v = vec![1.0, -4.0, 3.0, 2.0, 0.1, 0.2, -0.4, 0.3];
        two_of_four(&mut v, &[2, 4], true);
        assert_eq!(v, [0.0, -4.0, 3.0, 0.0, 0.0, 0.0, -0.4, 0.3]);
        // [K=4, N=2] reduced along the first axis: groups run down each column.
        let mut v = vec![1.0, 0.1, -4.0, 0.2, 3.0, -0.4, 2.0, 0.3];
        two_of_four(&mut v, &[4, 2], false);
        assert_eq!(v, [0.0, 0.0, -4.0, 0.0, 3.0, -0.4, 0.0, 0.3]);
    }

    #[test]
    fn channel_pruning_zeroes_whole_channels_of_smallest_norm() {
        // [K=2, N=3] with output channels along the last axis: column norms 1, 0.2, 3.
        let mut v = vec![1.0, 0.2, 3.0, 0.0, 0.0, 0.0];
        channels(&mut v, &[2, 3], 1, 0.34);
        assert_eq!(v, [1.0, 0.0, 3.0, 0.0, 0.0, 0.0]);
        let mut v = vec![1.0, 1.0, 0.1, 0.1];
        channels(&mut v, &[2, 2], 0, 0.5);
        assert_eq!(v, [1.0, 1.0, 0.0, 0.0]);
    }
}
