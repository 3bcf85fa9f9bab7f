//! Operators. One file per op family holds, for each op: attribute parsing (its builder), shape and
//! type inference, and the reference CPU kernel, with tests. The [`Registry`] maps an ONNX
//! `(domain, op_type)` to a builder; `onnx::import` is the only caller that knows about ONNX.

pub use crate::ir::op::Op;
use crate::ir::{Attributes, Fact};
use crate::{bail, err, Result};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::OnceLock;

pub mod broadcast;
pub mod real;
pub mod window;

pub mod activation;
pub mod attention;
pub mod binary;
pub mod cast;
pub mod causal_conv;
pub mod center_crop_pad;
pub mod constant;
pub mod contrib;
pub mod contrib_quant;
pub mod control;
pub mod conv;
pub mod conv_transpose;
pub mod deform_conv;
pub mod einsum;
pub mod fft;
pub mod flex_attention;
pub mod fused;
pub mod gather;
pub mod grid_sample;
pub mod linalg;
pub mod linear_attention;
pub mod logic;
pub mod loss;
pub mod matmul;
pub mod ml;
pub mod multi_head_attention;
pub mod nms;
pub mod norm;
pub mod optional;
pub mod pool;
pub mod quant;
pub mod quant_conv;
pub mod reduce;
pub mod reshape;
pub mod resize;
pub mod rnn;
pub mod roi_align;
pub mod rotary;
pub mod scan;
pub mod scatter;
pub mod sequence;
pub mod slice;
pub mod softmax;
pub mod spectral;
pub mod string;
pub mod tfidf;
pub mod topk;
pub mod training;
pub mod transpose;
pub mod tree_ensemble;
pub mod unary;
pub mod unique;

/// The two methods every sequence/optional op writes alike: `eval` refuses (these ops run through
/// `eval_data`), and `tensors_only` is false so that constant folding leaves them alone.
macro_rules! runs_on_data {
    ($op:literal) => {
        fn eval(&self, _: &[Option<&crate::ir::Tensor>]) -> crate::Result<Vec<crate::ir::Tensor>> {
            Err(crate::err!(Runtime, "{} works on sequences or optionals and runs through eval_data, not eval", $op))
        }

        fn tensors_only(&self) -> bool {
            false
        }
    };
}
pub(crate) use runs_on_data;

/// Input `i`, which must be present.
pub fn input<'a, T>(inputs: &[Option<&'a T>], i: usize) -> Result<&'a T> {
    match inputs.get(i) {
        Some(Some(t)) => Ok(t),
        _ => bail!(InvalidModel, "input {i} is required but missing"),
    }
}

/// Input `i` if it was given.
pub fn opt_input<'a, T>(inputs: &[Option<&'a T>], i: usize) -> Option<&'a T> {
    inputs.get(i).copied().flatten()
}

/// What a builder knows about the node it builds an op for.
#[derive(Debug)]
pub struct BuildCtx<'a> {
    pub op_type: &'a str,
    pub domain: &'a str,
    /// The model's opset version for this op's domain.
    pub opset: i64,
    pub attrs: &'a Attributes,
    pub num_inputs: usize,
    pub num_outputs: usize,
}

impl BuildCtx<'_> {
    /// The error for an opset version this op does not implement.
    pub fn unsupported_version(&self) -> crate::Error {
        err!(Unsupported, "{} is not supported at opset {}", self.op_type, self.opset)
    }
}

pub type Builder = fn(&BuildCtx) -> Result<Box<dyn Op>>;

/// Which builder makes which ONNX op.
#[derive(Default)]
pub struct Registry {
    builders: HashMap<(&'static str, &'static str), Builder>,
}

impl Registry {
    /// Registers a builder for an op of the default ONNX domain.
    pub fn add(&mut self, op_type: &'static str, build: Builder) {
        self.add_in("", op_type, build);
    }

    pub fn add_in(&mut self, domain: &'static str, op_type: &'static str, build: Builder) {
        self.builders.insert((domain, op_type), build);
    }

    pub fn get(&self, domain: &str, op_type: &str) -> Option<Builder> {
        let domain = if domain == "ai.onnx" { "" } else { domain };
        self.builders.get(&(domain, op_type)).copied()
    }

    /// Every registered `(domain, op_type)`, sorted.
    pub fn ops(&self) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = self.builders.keys().copied().collect();
        v.sort();
        v
    }
}

/// The registry of every op this build knows.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = Registry::default();
        activation::register(&mut r);
        attention::register(&mut r);
        binary::register(&mut r);
        cast::register(&mut r);
        center_crop_pad::register(&mut r);
        causal_conv::register(&mut r);
        constant::register(&mut r);
        deform_conv::register(&mut r);
        contrib::register(&mut r);
        contrib_quant::register(&mut r);
        control::register(&mut r);
        conv::register(&mut r);
        conv_transpose::register(&mut r);
        einsum::register(&mut r);
        flex_attention::register(&mut r);
        gather::register(&mut r);
        grid_sample::register(&mut r);
        linalg::register(&mut r);
        linear_attention::register(&mut r);
        logic::register(&mut r);
        loss::register(&mut r);
        matmul::register(&mut r);
        ml::register(&mut r);
        nms::register(&mut r);
        norm::register(&mut r);
        optional::register(&mut r);
        pool::register(&mut r);
        quant::register(&mut r);
        quant_conv::register(&mut r);
        reduce::register(&mut r);
        reshape::register(&mut r);
        rotary::register(&mut r);
        resize::register(&mut r);
        rnn::register(&mut r);
        roi_align::register(&mut r);
        scan::register(&mut r);
        scatter::register(&mut r);
        sequence::register(&mut r);
        slice::register(&mut r);
        softmax::register(&mut r);
        spectral::register(&mut r);
        string::register(&mut r);
        tfidf::register(&mut r);
        topk::register(&mut r);
        training::register(&mut r);
        transpose::register(&mut r);
        tree_ensemble::register(&mut r);
        unary::register(&mut r);
        unique::register(&mut r);
        r
    })
}

/// The names of the outer values that a node's subgraphs capture, without repeats: subgraphs in
/// attribute order, each one's captures in its own order. The importer appends these values to
/// the node's inputs in this order (see [`Op`]).
pub fn subgraph_captures(attrs: &Attributes) -> Vec<String> {
    let mut names: Vec<String> = vec![];
    for (_, attr) in attrs.iter() {
        let graphs: &[std::sync::Arc<crate::ir::Graph>] = match attr {
            crate::ir::Attr::Graph(g) => std::slice::from_ref(g),
            crate::ir::Attr::Graphs(gs) => gs,
            _ => &[],
        };
        for g in graphs {
            for &c in &g.captures {
                let name = &g.values[c].name;
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
    }
    names
}

/// Output fact for ops whose single output has the dtype and shape of input 0.
pub fn same_as_input(inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
    let x = input(inputs, 0)?;
    Ok(vec![Fact { dtype: x.dtype, shape: x.shape.clone(), value: None }])
}

#[cfg(test)]
mod tests {
    /// README.md lists the supported operators between two markers; this keeps it honest.
    #[test]
    fn readme_lists_every_registered_op() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let listed = readme
            .split("<!-- ops:begin -->")
            .nth(1)
            .and_then(|s| s.split("<!-- ops:end -->").next())
            .expect("README.md has an ops:begin/ops:end section");
        let names: Vec<String> = super::registry()
            .ops()
            .into_iter()
            .map(|(d, o)| if d.is_empty() { o.to_string() } else { format!("{d}:{o}") })
            .collect();
        let expected = format!("\n{} operators: {}.\n", names.len(), names.join(", "));
        assert_eq!(listed, expected, "update README.md's operator list to:{expected}");
    }
}
