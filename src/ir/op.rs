//! The op-definition trait that every operator implements: shape and type inference plus the
//! reference kernel (the oracle every backend kernel is tested against). It lives in `ir` so that
//! graphs hold ops without `ir` knowing the op families in `ops`.
//!
//! Backends and passes tell what a node is by downcasting (`node.op.downcast_ref::<Conv>()`) to the
//! op's struct and reading its typed fields, not by parsing attributes again.

use super::data::{Data, DataRef};
use super::graph::Graph;
use super::shape::Fact;
use super::tensor::Tensor;
use crate::{bail, Result};
use std::any::Any;
use std::borrow::Cow;
use std::fmt::Debug;
use std::sync::Arc;

/// Runs the subgraphs of control-flow ops (If, Loop, Scan, SequenceMap). The reference
/// [`Interpreter`](super::interp::Interpreter) walks the graph with reference kernels; a backend
/// passes its own, which runs the subgraph as it compiled it.
pub trait GraphExec {
    /// Runs `graph` (one of the op's [`Op::subgraphs`]) with one value per graph input and one per
    /// captured value; returns the graph outputs in order.
    fn run_graph(&self, graph: &Arc<Graph>, inputs: &[DataRef], captures: &[DataRef]) -> Result<Vec<Data>>;
}

/// An operator with its attributes already parsed.
///
/// Inputs come as a slice with one entry per declared input; `None` is an optional input that was
/// left out. Use `ops::input` and `ops::opt_input` to read them with good errors.
///
/// Ops with subgraph attributes (If, Loop, Scan) get, after their `BuildCtx::num_inputs` own
/// inputs, one trailing input per outer value their subgraphs capture, in the order of
/// `ops::subgraph_captures`. Being real inputs, captured values stay alive through dead-node removal,
/// order the node after their producers, and reach the op at run time like any other input.
pub trait Op: Any + Debug + Send + Sync {
    /// Output facts (dtype, shape, and value when it can be computed without running) from input
    /// facts. Unknown parts stay `None`; contradictions are errors.
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>>;

    /// The reference CPU kernel.
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>>;

    /// False for ops whose result may change between runs (random generators): they are never folded.
    fn is_deterministic(&self) -> bool {
        true
    }

    /// False for ops that take or give sequences or optionals: they run through [`Op::eval_data`]
    /// only, and constant folding (which makes tensor constants) leaves them alone.
    fn tensors_only(&self) -> bool {
        true
    }

    /// The kernel on run-time values of any kind. The default is for tensor ops: every input must
    /// be a tensor, and [`Op::eval`] computes the result.
    fn eval_data(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>> {
        Ok(tensors_to_data(self.eval(&data_to_tensors(inputs)?)?))
    }

    /// What the graph runner calls: tensors borrowed from constants and callers are not copied on
    /// the way to a tensor op. Ops that run subgraphs override this to pass values on unchanged.
    fn eval_refs(&self, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        if self.tensors_only() {
            if let Some(tensors) = refs_to_tensors(inputs) {
                return Ok(tensors_to_data(self.eval(&tensors)?));
            }
        }
        eval_owned(inputs, &|refs| self.eval_data(refs))
    }

    /// What runners call: [`Op::eval_refs`], with `exec` to run subgraphs. Control-flow ops
    /// override it; their other eval methods run subgraphs with the reference interpreter.
    fn eval_with(&self, inputs: &[Option<DataRef>], exec: &dyn GraphExec) -> Result<Vec<Data>> {
        let _ = exec;
        self.eval_refs(inputs)
    }

    /// The graphs this op runs (the bodies of control-flow ops), which backends compile with the
    /// graph that holds the op.
    fn subgraphs(&self) -> Vec<&Arc<Graph>> {
        Vec::new()
    }
}

// The default methods' work lives in these functions, compiled once rather than once per op type
// (the defaults are instantiated for each of the ~130 ops).

/// The inputs of a tensor op, or an error naming the first input that is not a tensor.
#[inline(never)]
fn data_to_tensors<'a>(inputs: &[Option<&'a Data>]) -> Result<Vec<Option<&'a Tensor>>> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            None => Ok(None),
            Some(Data::Tensor(t)) => Ok(Some(t)),
            Some(other) => bail!(InvalidInput, "input {i} must be a tensor, got {}", other.describe()),
        })
        .collect()
}

/// The inputs as tensors, when every given one is a tensor.
#[inline(never)]
fn refs_to_tensors<'a>(inputs: &[Option<DataRef<'a>>]) -> Option<Vec<Option<&'a Tensor>>> {
    inputs.iter().map(|d| d.map_or(Some(None), |d| d.tensor().map(Some))).collect()
}

#[inline(never)]
fn tensors_to_data(tensors: Vec<Tensor>) -> Vec<Data> {
    tensors.into_iter().map(Data::Tensor).collect()
}

/// An op's [`Op::eval_data`].
type EvalData<'a> = dyn Fn(&[Option<&Data>]) -> Result<Vec<Data>> + 'a;

/// Runs `eval_data` on owned copies of borrowed values (sequences, optionals).
#[inline(never)]
fn eval_owned(inputs: &[Option<DataRef>], eval_data: &EvalData) -> Result<Vec<Data>> {
    let owned: Vec<Option<Cow<Data>>> = inputs.iter().map(|d| d.map(|d| d.to_data())).collect();
    let refs: Vec<Option<&Data>> = owned.iter().map(|d| d.as_deref()).collect();
    eval_data(&refs)
}

impl dyn Op {
    /// The op as its concrete type, when it is a `T`.
    pub fn downcast_ref<T: Op>(&self) -> Option<&T> {
        (self as &dyn Any).downcast_ref::<T>()
    }

    pub fn is<T: Op>(&self) -> bool {
        self.downcast_ref::<T>().is_some()
    }
}
