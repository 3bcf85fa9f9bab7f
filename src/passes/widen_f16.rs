//! Runs float16 regions in float32 on backends that compute float16 no faster than float32 (the
//! CPU backend: its fast kernels are f32, float16 nodes would run on reference kernels).
//!
//! A region is a connected set of float16 nodes of the type-generic ops below that contains at
//! least one matrix product or convolution (where the fast kernels pay). Its float16 constants
//! become f32 constants (so weights are widened once, then packed like any f32 weight), its
//! float16 values become f32, and Casts appear only at its edges: to f32 where a value comes in
//! from outside (a graph input, a node left as it is), back to float16 where one leaves (a graph
//! output, any other reader). Graph inputs and outputs keep their types, and Cast nodes the model
//! wrote are never part of a region, so their rounding (and saturation) stays.
//!
//! Numerics: inside a region intermediate results are not rounded to float16 after every node,
//! so results are at least as accurate as float16 arithmetic's (the rounding of the region's
//! outputs to float16 is kept). Models whose float16 semantics matter bit for bit are measured
//! with the backend option that leaves float16 as written (`DeviceOptions::f16_as_written`).

use super::Pass;
use crate::ir::{Attr, Attributes, DType, Fact, Graph, Node, ValueId, ValueKind};
use crate::ops::BuildCtx;
use crate::Result;
use std::collections::HashMap;
use std::sync::Arc;

pub struct WidenF16;

/// Ops whose meaning does not depend on the float type they run in (no dtype attribute, outputs
/// typed like their float inputs), so running them in f32 only removes roundings.
const TYPE_GENERIC: &[&str] = &[
    // Products and convolutions: the reason for the pass.
    "Conv",
    "ConvTranspose",
    "MatMul",
    "Gemm",
    // Elementwise arithmetic and activations.
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "Neg",
    "Abs",
    "Sqrt",
    "Reciprocal",
    "Exp",
    "Log",
    "Erf",
    "Tanh",
    "Sigmoid",
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Celu",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Clip",
    "Where",
    // Normalisation, pooling, reductions (the f32 sums are the more accurate ones).
    "BatchNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "Softmax",
    "LogSoftmax",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    // Data movement.
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "Expand",
    "Tile",
    "Pad",
    "Identity",
    "Resize",
    "Upsample",
    "DepthToSpace",
    "SpaceToDepth",
];

/// The ops a region must contain, with a constant float16 weight, to be widened: weights are then
/// widened and packed once, and the products run on the fast kernels. Regions of products between
/// activations only (the ONNX attention node tests, written out) stay as written: widened, they
/// come out more accurate than float16 arithmetic but outside those tests' float16 bounds.
const HEAVY: &[&str] = &["Conv", "ConvTranspose", "MatMul", "Gemm"];

impl Pass for WidenF16 {
    fn name(&self) -> &'static str {
        "widen-f16"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let region = regions(graph);
        if !region.iter().any(|&r| r) {
            return Ok(false);
        }
        widen(graph, &region)?;
        Ok(true)
    }
}

/// Inputs of `op_type` that keep their own type: Resize's roi and scales (float32 scales whatever
/// the data's type).
fn keeps_type(op_type: &str, input: usize) -> bool {
    matches!(op_type, "Resize" | "Upsample") && input >= 1
}

fn is_f16(graph: &Graph, v: ValueId) -> bool {
    graph.values[v].fact.dtype == Some(DType::F16)
}

/// Whether `node` may run in f32: a type-generic op of the default domain, every tensor input and
/// output of known dtype, the float ones all float16 (apart from inputs that keep their type),
/// and at least one of them float16.
fn eligible(graph: &Graph, node: &Node) -> bool {
    if !(node.domain.is_empty() || node.domain == "ai.onnx") || !TYPE_GENERIC.contains(&node.op_type.as_str()) {
        return false;
    }
    let mut any_f16 = false;
    let ins = node.inputs.iter().enumerate().filter(|(i, _)| !keeps_type(&node.op_type, *i)).filter_map(|(_, v)| *v);
    for v in ins.chain(node.outputs.iter().copied()) {
        let value = &graph.values[v];
        let Some(dtype) = value.fact.dtype else { return false };
        if !matches!(value.kind, ValueKind::Tensor) || (dtype.is_float() && dtype != DType::F16) {
            return false;
        }
        any_f16 |= dtype == DType::F16;
    }
    any_f16
}

/// For each node, whether it is in a region to widen: eligible nodes joined through the float16
/// values between them, kept where the joined set holds a heavy op.
fn regions(graph: &Graph) -> Vec<bool> {
    let ok: Vec<bool> = graph.nodes.iter().map(|n| eligible(graph, n)).collect();
    let mut parent: Vec<usize> = (0..graph.nodes.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let producers = graph.producers();
    for (i, node) in graph.nodes.iter().enumerate() {
        if !ok[i] {
            continue;
        }
        for &v in node.inputs.iter().flatten() {
            if let Some(p) = producers[v].filter(|&p| ok[p] && is_f16(graph, v)) {
                let (a, b) = (root(&mut parent, p), root(&mut parent, i));
                parent[a] = b;
            }
        }
    }
    let mut heavy = vec![false; graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        let weighted = node.inputs.iter().flatten().any(|&v| is_f16(graph, v) && graph.values[v].constant().is_some());
        if ok[i] && weighted && HEAVY.contains(&node.op_type.as_str()) {
            let r = root(&mut parent, i);
            heavy[r] = true;
        }
    }
    (0..graph.nodes.len()).map(|i| ok[i] && heavy[root(&mut parent, i)]).collect()
}

/// A Cast of `input` to `to` into `output`, as the importer would build it.
fn cast_node(name: String, to: DType, input: ValueId, output: ValueId) -> Result<Node> {
    let attrs = Attributes::new(vec![("to".to_string(), Attr::Int(to.onnx_code() as i64))]);
    let ctx = BuildCtx { op_type: "Cast", domain: "", opset: 19, attrs: &attrs, num_inputs: 1, num_outputs: 1 };
    let build = crate::ops::registry().get("", "Cast").expect("Cast is registered");
    let op = Arc::from(build(&ctx)?);
    Ok(Node {
        name,
        domain: String::new(),
        op_type: "Cast".into(),
        attrs,
        op,
        inputs: vec![Some(input)],
        outputs: vec![output],
    })
}

/// The same fact with dtype f32 (no value: region outputs are not constants).
fn f32_fact(fact: &Fact) -> Fact {
    Fact { dtype: Some(DType::F32), shape: fact.shape.clone(), value: None }
}

fn widen(graph: &mut Graph, region: &[bool]) -> Result<()> {
    // Each float16 value a region node writes gets an f32 twin that the region uses instead.
    let mut twin: HashMap<ValueId, ValueId> = HashMap::new();
    let mut written = Vec::new();
    for i in (0..graph.nodes.len()).filter(|&i| region[i]) {
        for k in 0..graph.nodes[i].outputs.len() {
            let v = graph.nodes[i].outputs[k];
            if is_f16(graph, v) {
                let name = format!("{}::f32", graph.values[v].name);
                let w = graph.add_value(name, f32_fact(&graph.values[v].fact));
                graph.nodes[i].outputs[k] = w;
                twin.insert(v, w);
                written.push((v, w));
            }
        }
    }
    // Float16 values read from outside: constants widened once, others through one Cast each.
    let mut casts = Vec::new();
    for i in (0..graph.nodes.len()).filter(|&i| region[i]) {
        for k in 0..graph.nodes[i].inputs.len() {
            let Some(v) = graph.nodes[i].inputs[k] else { continue };
            if keeps_type(&graph.nodes[i].op_type, k) || !is_f16(graph, v) {
                continue;
            }
            let w = match twin.get(&v) {
                Some(&w) => w,
                None => {
                    let name = format!("{}::f32", graph.values[v].name);
                    let w = match graph.values[v].constant() {
                        Some(t) => {
                            let wide = crate::ops::cast::cast(t, DType::F32)?;
                            graph.add_value(name, Fact::constant(Arc::new(wide)))
                        }
                        None => {
                            let w = graph.add_value(name.clone(), f32_fact(&graph.values[v].fact));
                            casts.push(cast_node(name, DType::F32, v, w)?);
                            w
                        }
                    };
                    twin.insert(v, w);
                    w
                }
            };
            graph.nodes[i].inputs[k] = Some(w);
        }
    }
    // Region outputs read outside the region (or by the caller) go back to float16 under their
    // own value, which every outside reader still names (region readers were moved to the twin).
    let read: std::collections::HashSet<ValueId> = graph
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().flatten().copied())
        .chain(graph.outputs.iter().copied())
        .collect();
    for (v, w) in written {
        if read.contains(&v) {
            let name = format!("{}::f16", graph.values[v].name);
            casts.push(cast_node(name, DType::F16, w, v)?);
        }
    }
    graph.nodes.extend(casts);
    graph.sort_nodes()?;
    crate::ir::infer::infer_facts(graph)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::pool::ThreadPool;
    use crate::backend::{backends_with, compile, Device, DeviceOptions};
    use crate::ir::infer::infer_facts;
    use crate::ir::interp::Interpreter;
    use crate::ir::{DataRef, Tensor};
    use crate::ops::activation::test_util::build;
    use half::f16;

    use super::super::chain::push_node as add_node;

    fn halves(n: usize, seed: f32) -> Vec<f16> {
        (0..n).map(|i| f16::from_f32(((i as f32 * 0.37 + seed).sin() * 1.5).round() / 4.0 + 0.125)).collect()
    }

    /// y = Relu(x @ W + b) in float16 (odd sizes 3x5 @ 5x7), also read by a Cast to float32 the
    /// model wrote: graph outputs y (f16) and z (f32).
    fn matmul_graph() -> (Graph, Tensor) {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::concrete(DType::F16, &[3, 5]));
        g.inputs = vec![x];
        let w = g.add_value("w", Fact::constant(Arc::new(Tensor::new(vec![5, 7], halves(35, 1.0)).unwrap())));
        let b = g.add_value("b", Fact::constant(Arc::new(Tensor::new(vec![7], halves(7, 2.0)).unwrap())));
        let m = add_node(&mut g, "MatMul", vec![], vec![x, w]);
        let a = add_node(&mut g, "Add", vec![], vec![m, b]);
        let y = add_node(&mut g, "Relu", vec![], vec![a]);
        let z = add_node(&mut g, "Cast", vec![("to", Attr::Int(DType::F32.onnx_code() as i64))], vec![y]);
        g.outputs = vec![y, z];
        infer_facts(&mut g).unwrap();
        (g, Tensor::new(vec![3, 5], halves(15, 3.0)).unwrap())
    }

    #[test]
    fn widens_a_region_with_casts_at_its_edges_only() {
        let (mut g, _) = matmul_graph();
        assert!(WidenF16.run(&mut g).unwrap());
        let ops: Vec<&str> = g.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Cast", "MatMul", "Add", "Relu", "Cast", "Cast"]);
        // The weights are f32 constants now; the region computes in f32.
        let matmul = &g.nodes[1];
        let w = g.values[matmul.inputs[1].unwrap()].constant().unwrap();
        assert_eq!(w.dtype(), DType::F32);
        assert_eq!(g.values[matmul.outputs[0]].fact.dtype, Some(DType::F32));
        // The outputs keep their values and types: y float16 (from the boundary Cast), and the
        // model's own Cast still reads the float16 y.
        let (y, z) = (g.outputs[0], g.outputs[1]);
        assert_eq!(g.values[y].fact.dtype, Some(DType::F16));
        assert_eq!(g.values[z].fact.dtype, Some(DType::F32));
        let user_cast = g.nodes.iter().find(|n| n.outputs == [z]).unwrap();
        assert_eq!(user_cast.inputs, [Some(y)]);
        assert!(!WidenF16.run(&mut g).unwrap(), "nothing float16 is left to widen");
    }

    #[test]
    fn leaves_regions_without_products_and_mixed_nodes_alone() {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::concrete(DType::F16, &[4]));
        let s = g.add_value("s", Fact::concrete(DType::F32, &[4]));
        g.inputs = vec![x, s];
        let r = add_node(&mut g, "Relu", vec![], vec![x]);
        let e = add_node(&mut g, "Exp", vec![], vec![r]);
        g.outputs = vec![e];
        infer_facts(&mut g).unwrap();
        assert!(!WidenF16.run(&mut g).unwrap(), "elementwise only: not worth the casts");
        assert!(regions(&g).iter().all(|&r| !r));
        // A product of two activations (no weights to widen once) stays as written.
        let y = g.add_value("y", Fact::concrete(DType::F16, &[4, 2]));
        g.inputs.push(y);
        let p = add_node(&mut g, "MatMul", vec![], vec![e, y]);
        g.outputs.push(p);
        infer_facts(&mut g).unwrap();
        assert!(!WidenF16.run(&mut g).unwrap(), "no constant weights");
        // A float16 x float32 product (not a valid ONNX node, but a mixed one) is never eligible.
        let w = g.add_value("w", Fact::constant(Arc::new(Tensor::new(vec![4, 3], vec![0.5f32; 12]).unwrap())));
        let node = Node {
            name: "mixed".into(),
            domain: String::new(),
            op_type: "MatMul".into(),
            attrs: Attributes::default(),
            op: Arc::from(build("MatMul", 19, vec![], 1).unwrap()),
            inputs: vec![Some(x), Some(w)],
            outputs: vec![g.add_value("m", Fact::of_dtype(DType::F16))],
        };
        assert!(!eligible(&g, &node));
    }

    #[test]
    fn cpu_runs_the_widened_graph_on_fast_kernels_within_float16_rounding() {
        let (g, x) = matmul_graph();
        let want = Interpreter.run(&g, &[DataRef::Tensor(&x)], &[]).unwrap();
        let pool = ThreadPool::new(2);
        for as_written in [false, true] {
            let options = DeviceOptions { f16_as_written: as_written, ..Default::default() };
            let compiled = compile(&g, &backends_with(Device::Cpu, &options).unwrap()).unwrap();
            let kernels: Vec<&str> = compiled.kernel_names().into_iter().map(|(k, _)| k).collect();
            // Widened, the product runs on a fast kernel; as written, everything but the model's
            // Cast (a fast kernel either way) on the reference.
            let on_reference = kernels.iter().filter(|&&k| k != "cast-f16").all(|&k| k == "reference");
            assert_eq!(on_reference, as_written, "{kernels:?}");
            let got = compiled.run(&pool, &[DataRef::Tensor(&x)], &[], None).unwrap();
            for (got, want) in got.into_iter().zip(&want) {
                let (got, want) = (got.into_tensor().unwrap(), want.clone().into_tensor().unwrap());
                assert_eq!((got.dtype(), got.shape()), (want.dtype(), want.shape()));
                let (a, b) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
                let scale = b.iter().fold(1f64, |m, v| m.max(v.abs()));
                for (p, q) in a.iter().zip(&b) {
                    // One float16 rounding of the result apart at most (the reference rounds
                    // after the product and after the sum).
                    assert!((p - q).abs() <= 2.0 * scale / 1024.0, "{p} vs {q} (as written: {as_written})");
                }
            }
        }
    }
}
