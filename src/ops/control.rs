//! Control flow: If and Loop, and the subgraph machinery they share with Scan (scan.rs) and
//! SequenceMap (sequence.rs). Subgraphs are inferred once, when the op is built; they run through
//! the [`GraphExec`] the runner passes to [`Op::eval_with`] (a backend optimises and compiles them
//! with the graph that holds the op; the reference interpreter runs them as they are). Outer
//! values a subgraph captures arrive as trailing node inputs (the convention described at [`Op`]).

use super::{input, opt_input, subgraph_captures, BuildCtx, Op, Registry};
use crate::error::ResultExt;
use crate::ir::infer::infer_facts;
use crate::ir::interp::Interpreter;
use crate::ir::tensor::checked_len;
use crate::ir::{Data, DataRef, Dim, Fact, Graph, GraphExec, Tensor, ValueKind};
use crate::{bail, dispatch_words, err, Result};
use std::sync::Arc;

pub fn register(r: &mut Registry) {
    r.add("If", If::build);
    r.add("Loop", Loop::build);
}

/// A Loop stops with an error after this many iterations. A trip count or condition that comes
/// from data could otherwise make it run, and grow its scan outputs, without bound.
pub const MAX_LOOP_ITERATIONS: i64 = 1 << 24;

/// A graph attribute ready to run: inferred on its own, plus which node input carries each value
/// it captures.
#[derive(Debug)]
pub(crate) struct Body {
    graph: Arc<Graph>,
    /// For each of the graph's `captures`, the index of the node input that carries it.
    capture_inputs: Vec<usize>,
}

impl Body {
    pub(crate) fn build(ctx: &BuildCtx, attr: &str) -> Result<Body> {
        let graph = ctx.attrs.req_graph(attr)?;
        let names = subgraph_captures(ctx.attrs);
        let capture_inputs = graph
            .captures
            .iter()
            .map(|&c| {
                let name = &graph.values[c].name;
                let k = names.iter().position(|n| n == name);
                k.map(|k| ctx.num_inputs + k).ok_or_else(|| err!(InvalidModel, "captured value '{name}' has no input"))
            })
            .collect::<Result<_>>()?;
        // A branch that is never taken may contradict the facts of the values it captures (an
        // If that handles the 2-D and 3-D cases of one input, say): such a subgraph runs as
        // imported, and fails only if it ever runs.
        let mut prepared = Graph::clone(&graph);
        let graph = match infer_facts(&mut prepared) {
            Ok(()) => Arc::new(prepared),
            Err(e) => {
                log::debug!("subgraph '{attr}' stays as imported: {e}");
                graph.clone()
            }
        };
        Ok(Body { graph, capture_inputs })
    }

    fn graph(&self) -> &Graph {
        &self.graph
    }

    pub(crate) fn graph_arc(&self) -> &Arc<Graph> {
        &self.graph
    }

    pub(crate) fn num_inputs(&self) -> usize {
        self.graph().inputs.len()
    }

    pub(crate) fn num_outputs(&self) -> usize {
        self.graph().outputs.len()
    }

    pub(super) fn output_fact(&self, k: usize) -> Fact {
        let g = self.graph();
        g.outputs.get(k).map_or_else(Fact::unknown, |&o| g.values[o].fact.clone())
    }

    /// Runs the graph on `inputs` with `exec`, taking its captured values from the node's inputs.
    pub(super) fn run_data(
        &self,
        exec: &dyn GraphExec,
        inputs: &[DataRef],
        node_inputs: &[Option<DataRef>],
    ) -> Result<Vec<Data>> {
        let captures: Vec<DataRef> =
            self.capture_inputs.iter().map(|&i| value_input(node_inputs, i)).collect::<Result<_>>()?;
        exec.run_graph(&self.graph, inputs, &captures)
    }

    /// [`Body::run_data`] for tensors only.
    pub(crate) fn run(
        &self,
        exec: &dyn GraphExec,
        inputs: &[&Tensor],
        node_inputs: &[Option<DataRef>],
    ) -> Result<Vec<Tensor>> {
        let inputs: Vec<DataRef> = inputs.iter().map(|&t| DataRef::Tensor(t)).collect();
        self.run_data(exec, &inputs, node_inputs)?.into_iter().map(Data::into_tensor).collect()
    }

    /// Whether every input and output of the graph is declared a tensor, so that the op may be
    /// folded like a tensor op.
    fn tensors_only(&self) -> bool {
        let g = self.graph();
        g.inputs.iter().chain(&g.outputs).all(|&v| g.values[v].kind == ValueKind::Tensor)
    }
}

/// Input `i` of a node that takes values of any kind, which must be present.
pub(super) fn value_input<'a>(inputs: &[Option<DataRef<'a>>], i: usize) -> Result<DataRef<'a>> {
    inputs.get(i).copied().flatten().ok_or_else(|| err!(InvalidModel, "input {i} is required but missing"))
}

/// What holds for a value that is either `a` or `b`: common dtype, dims that agree.
fn either(a: &Fact, b: &Fact) -> Fact {
    let shape = match (&a.shape, &b.shape) {
        (Some(x), Some(y)) if x.len() == y.len() => {
            Some(x.iter().zip(y).map(|(p, q)| if p == q { p.clone() } else { Dim::Unknown }).collect())
        }
        _ => None,
    };
    let dtype = if a.dtype == b.dtype { a.dtype } else { a.dtype.or(b.dtype) };
    Fact { dtype, shape, value: None }
}

/// `fact` with a dim inserted at `axis` (none when the rank is unknown or `axis` too large).
pub(super) fn with_dim(fact: &Fact, axis: usize, dim: Dim) -> Fact {
    let shape = fact.shape.as_ref().filter(|s| axis <= s.len()).map(|s| {
        let mut s = s.clone();
        s.insert(axis, dim);
        s
    });
    Fact { dtype: fact.dtype, shape, value: None }
}

/// The truth of a single-element condition tensor.
fn truth(t: &Tensor, what: &str) -> Result<bool> {
    if t.len() != 1 {
        bail!(InvalidInput, "{what} must have one element, it has shape {:?}", t.shape());
    }
    Ok(t.to_f64_vec().context(|| what.to_string())?[0] != 0.0)
}

/// Equally shaped tensors stacked along a new axis `axis`, last one first when `reverse`.
pub(super) fn stack(parts: &[Tensor], axis: usize, reverse: bool) -> Result<Tensor> {
    let Some(first) = parts.first() else { bail!(Runtime, "nothing to stack") };
    let shape = first.shape();
    if axis > shape.len() {
        bail!(InvalidModel, "axis {axis} is out of range for scan outputs of rank {}", shape.len());
    }
    let mut out_shape = shape.to_vec();
    out_shape.insert(axis, parts.len());
    let n = checked_len(&out_shape, first.dtype())?;
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis..].iter().product();
    for (t, p) in parts.iter().enumerate() {
        if p.shape() != shape || p.dtype() != first.dtype() {
            bail!(
                Runtime,
                "scan output of iteration {t} is {} {:?}, the first one was {} {shape:?}",
                p.dtype(),
                p.shape(),
                first.dtype()
            );
        }
    }
    dispatch_words!(first.dtype(); W => {
        let slices = parts.iter().map(|p| p.as_words::<W>()).collect::<Result<Vec<&[W]>>>()?;
        let mut data: Vec<W> = crate::ir::limits::with_capacity(n)?;
        for o in 0..outer {
            for t in 0..slices.len() {
                let s = slices[if reverse { slices.len() - 1 - t } else { t }];
                data.extend_from_slice(&s[o * inner..(o + 1) * inner]);
            }
        }
        Tensor::from_words(first.dtype(), out_shape, data)
    })
}

/// A scan output of zero iterations: the body's declared element shape (unknown dims as 0) with a
/// 0-sized dim at `axis`.
pub(super) fn empty_scan_output(fact: &Fact, axis: usize) -> Result<Tensor> {
    let Some(dtype) = fact.dtype else {
        bail!(Runtime, "zero iterations, and the dtype of a scan output is not known")
    };
    let mut shape: Vec<usize> = fact.shape.iter().flatten().map(|d| d.known().unwrap_or(0)).collect();
    shape.insert(axis.min(shape.len()), 0);
    Tensor::zeros(dtype, shape)
}

/// Per-iteration scan output values, with their total size kept under the tensor size limit.
pub(super) struct ScanOutputs {
    pub(super) steps: Vec<Vec<Tensor>>,
}

impl ScanOutputs {
    pub(super) fn new(k: usize) -> ScanOutputs {
        ScanOutputs { steps: (0..k).map(|_| vec![]).collect() }
    }

    pub(super) fn push(&mut self, values: impl Iterator<Item = Tensor>) -> Result<()> {
        for (steps, t) in self.steps.iter_mut().zip(values) {
            let mut total = vec![steps.len() + 1];
            total.extend_from_slice(t.shape());
            checked_len(&total, t.dtype()).context(|| "scan output")?;
            steps.push(t);
        }
        Ok(())
    }
}

#[derive(Debug)]
struct If {
    then_branch: Body,
    else_branch: Body,
}

impl If {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
        let then_branch = Body::build(ctx, "then_branch")?;
        let else_branch = Body::build(ctx, "else_branch")?;
        for (name, b) in [("then_branch", &then_branch), ("else_branch", &else_branch)] {
            if b.num_outputs() != ctx.num_outputs {
                bail!(InvalidModel, "{name} has {} outputs, the node has {}", b.num_outputs(), ctx.num_outputs);
            }
        }
        Ok(Box::new(If { then_branch, else_branch }))
    }
}

impl Op for If {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let chosen = match input(inputs, 0)?.value.as_deref().map(|c| truth(c, "the condition")) {
            Some(Ok(true)) => Some(&self.then_branch),
            Some(Ok(false)) => Some(&self.else_branch),
            _ => None,
        };
        Ok((0..self.then_branch.num_outputs())
            .map(|k| match chosen {
                Some(b) => b.output_fact(k),
                None => either(&self.then_branch.output_fact(k), &self.else_branch.output_fact(k)),
            })
            .collect())
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let refs: Vec<Option<DataRef>> = inputs.iter().map(|t| t.map(DataRef::Tensor)).collect();
        self.eval_refs(&refs)?.into_iter().map(Data::into_tensor).collect()
    }

    fn tensors_only(&self) -> bool {
        self.then_branch.tensors_only() && self.else_branch.tensors_only()
    }

    fn eval_data(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>> {
        self.eval_refs(&inputs.iter().map(|d| d.map(DataRef::Data)).collect::<Vec<_>>())
    }

    fn eval_refs(&self, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        self.eval_with(inputs, &Interpreter)
    }

    fn eval_with(&self, inputs: &[Option<DataRef>], exec: &dyn GraphExec) -> Result<Vec<Data>> {
        let cond =
            value_input(inputs, 0)?.tensor().ok_or_else(|| err!(InvalidInput, "the condition must be a tensor"))?;
        if truth(cond, "the condition")? {
            self.then_branch.run_data(exec, &[], inputs).context(|| "then_branch")
        } else {
            self.else_branch.run_data(exec, &[], inputs).context(|| "else_branch")
        }
    }

    fn subgraphs(&self) -> Vec<&Arc<Graph>> {
        vec![self.then_branch.graph_arc(), self.else_branch.graph_arc()]
    }
}

/// Loop: inputs (M, cond, v_initial...), body (iteration, cond, v...) -> (cond, v..., scan...).
#[derive(Debug)]
struct Loop {
    body: Body,
    /// Loop-carried values (N).
    carried: usize,
    /// Scan outputs (K).
    scans: usize,
    max_iterations: i64,
}

impl Loop {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
        Ok(Box::new(Loop::new(ctx, MAX_LOOP_ITERATIONS)?))
    }

    fn new(ctx: &BuildCtx, max_iterations: i64) -> Result<Loop> {
        let body = Body::build(ctx, "body")?;
        let carried = ctx.num_inputs.saturating_sub(2);
        if body.num_inputs() != carried + 2 {
            bail!(
                InvalidModel,
                "the body has {} inputs, expected {} (2 + loop-carried)",
                body.num_inputs(),
                carried + 2
            );
        }
        if body.num_outputs() < carried + 1 {
            bail!(InvalidModel, "the body has {} outputs, expected at least {}", body.num_outputs(), carried + 1);
        }
        let scans = body.num_outputs() - 1 - carried;
        if ctx.num_outputs > carried + scans {
            bail!(InvalidModel, "the node has {} outputs, the body gives {}", ctx.num_outputs, carried + scans);
        }
        Ok(Loop { body, carried, scans, max_iterations })
    }
}

impl Op for Loop {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let mut out = Vec::with_capacity(self.carried + self.scans);
        for k in 0..self.carried {
            // Zero iterations return the initial value, otherwise the body's last one.
            let body = self.body.output_fact(1 + k);
            out.push(match opt_input(inputs, 2 + k) {
                Some(initial) => either(initial, &body),
                None => Fact { value: None, ..body },
            });
        }
        for k in 0..self.scans {
            out.push(with_dim(&self.body.output_fact(1 + self.carried + k), 0, Dim::Unknown));
        }
        Ok(out)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let refs: Vec<Option<DataRef>> = inputs.iter().map(|t| t.map(DataRef::Tensor)).collect();
        self.eval_refs(&refs)?.into_iter().map(Data::into_tensor).collect()
    }

    fn tensors_only(&self) -> bool {
        self.body.tensors_only()
    }

    fn eval_data(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>> {
        self.eval_refs(&inputs.iter().map(|d| d.map(DataRef::Data)).collect::<Vec<_>>())
    }

    fn eval_refs(&self, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        self.eval_with(inputs, &Interpreter)
    }

    fn subgraphs(&self) -> Vec<&Arc<Graph>> {
        vec![self.body.graph_arc()]
    }

    /// Loop-carried values may be sequences or optionals; scan outputs are tensors.
    fn eval_with(&self, inputs: &[Option<DataRef>], exec: &dyn GraphExec) -> Result<Vec<Data>> {
        let tensor_input = |i: usize, what: &str| -> Result<Option<&Tensor>> {
            match inputs.get(i).copied().flatten() {
                None => Ok(None),
                Some(d) => d
                    .tensor()
                    .map(Some)
                    .ok_or_else(|| err!(InvalidInput, "{what} must be a tensor, got {}", d.describe())),
            }
        };
        let trip_count = match tensor_input(0, "trip count M")? {
            None => None,
            Some(m) if m.len() == 1 => Some(m.to_i64_vec().context(|| "trip count M")?[0]),
            Some(m) => bail!(InvalidInput, "trip count M must have one element, it has shape {:?}", m.shape()),
        };
        let cond_input = tensor_input(1, "the condition")?;
        let cond_given = cond_input.is_some();
        let mut cond = match cond_input {
            Some(c) => truth(c, "the condition")?,
            None => true,
        };
        let mut carried: Vec<Data> =
            (0..self.carried).map(|k| value_input(inputs, 2 + k).map(|d| d.to_owned())).collect::<Result<_>>()?;
        let mut scans = ScanOutputs::new(self.scans);
        let mut i: i64 = 0;
        while cond && trip_count.is_none_or(|m| i < m) {
            if i >= self.max_iterations {
                bail!(ResourceLimit, "the loop did not finish within {} iterations", self.max_iterations);
            }
            let (iteration, cond_in) = (Tensor::scalar(i), Tensor::scalar(cond));
            let mut args = vec![DataRef::Tensor(&iteration), DataRef::Tensor(&cond_in)];
            args.extend(carried.iter().map(DataRef::Data));
            let mut outs =
                self.body.run_data(exec, &args, inputs).context(|| format!("body, iteration {i}"))?.into_iter();
            let cond_out = outs.next().ok_or_else(|| err!(InvalidModel, "the body gave no condition"))?;
            // Without a condition input, the body's condition is computed but ignored (spec).
            if cond_given {
                cond = truth(cond_out.as_tensor().context(|| "the body's condition")?, "the body's condition")?;
            }
            carried = outs.by_ref().take(self.carried).collect();
            let scan_values = outs.map(|d| d.into_tensor().context(|| "scan output")).collect::<Result<Vec<_>>>()?;
            scans.push(scan_values.into_iter())?;
            i += 1;
        }
        for (k, steps) in scans.steps.iter().enumerate() {
            carried.push(Data::Tensor(if steps.is_empty() {
                empty_scan_output(&self.body.output_fact(1 + self.carried + k), 0)?
            } else {
                stack(steps, 0, false)?
            }));
        }
        Ok(carried)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ir::{Attr, Attributes, DType, Node};
    use crate::ErrorKind;

    /// A graph built by value names, with ops from the registry.
    #[derive(Default)]
    pub(in crate::ops) struct G(pub(in crate::ops) Graph);

    impl G {
        pub(in crate::ops) fn id(&mut self, name: &str) -> usize {
            self.0.find_value(name).unwrap_or_else(|| self.0.add_value(name, Fact::unknown()))
        }
        pub(in crate::ops) fn input(mut self, name: &str, fact: Fact) -> G {
            let id = self.0.add_value(name, fact);
            self.0.inputs.push(id);
            self
        }
        pub(in crate::ops) fn capture(mut self, name: &str, fact: Fact) -> G {
            let id = self.0.add_value(name, fact);
            self.0.captures.push(id);
            self
        }
        pub(in crate::ops) fn constant(mut self, name: &str, t: Tensor) -> G {
            self.0.add_value(name, Fact::constant(Arc::new(t)));
            self
        }
        pub(in crate::ops) fn node(mut self, op_type: &str, inputs: &[&str], outputs: &[&str]) -> G {
            let attrs = Attributes::default();
            let ctx = BuildCtx {
                op_type,
                domain: "",
                opset: 17,
                attrs: &attrs,
                num_inputs: inputs.len(),
                num_outputs: outputs.len(),
            };
            let op = crate::ops::registry().get("", op_type).unwrap()(&ctx).unwrap();
            let inputs = inputs.iter().map(|n| Some(self.id(n))).collect();
            let outputs = outputs.iter().map(|n| self.id(n)).collect();
            let (name, domain, op_type) = (String::new(), String::new(), op_type.to_string());
            self.0.nodes.push(Node { name, domain, op_type, attrs, op: Arc::from(op), inputs, outputs });
            self
        }
        /// Declares what value `name` holds.
        pub(in crate::ops) fn kind(mut self, name: &str, kind: ValueKind) -> G {
            let id = self.id(name);
            self.0.values[id].kind = kind;
            self
        }
        pub(in crate::ops) fn outputs(mut self, names: &[&str]) -> Arc<Graph> {
            self.0.outputs = names.iter().map(|n| self.id(n)).collect();
            Arc::new(self.0)
        }
    }

    pub(in crate::ops) fn attrs(items: Vec<(&str, Attr)>) -> Attributes {
        Attributes::new(items.into_iter().map(|(n, a)| (n.to_string(), a)).collect())
    }

    pub(in crate::ops) fn ctx<'a>(
        op_type: &'a str,
        opset: i64,
        attrs: &'a Attributes,
        ins: usize,
        outs: usize,
    ) -> BuildCtx<'a> {
        BuildCtx { op_type, domain: "", opset, attrs, num_inputs: ins, num_outputs: outs }
    }

    fn i64s(t: &Tensor) -> Vec<i64> {
        t.as_slice::<i64>().unwrap().to_vec()
    }

    pub(in crate::ops) fn f32_fact(shape: &[usize]) -> Fact {
        Fact::concrete(DType::F32, shape)
    }

    #[test]
    fn if_runs_the_chosen_branch_with_its_captures() {
        let then_branch = G::default()
            .capture("a", f32_fact(&[2]))
            .capture("b", f32_fact(&[2]))
            .node("Add", &["a", "b"], &["s"])
            .outputs(&["s"]);
        // A branch may return an outer value as is; its shape differs from the other branch's.
        let else_branch = G::default().capture("c", f32_fact(&[3])).outputs(&["c"]);
        let attrs = attrs(vec![("then_branch", Attr::Graph(then_branch)), ("else_branch", Attr::Graph(else_branch))]);
        assert_eq!(subgraph_captures(&attrs), ["a", "b", "c"]);
        let op = If::build(&ctx("If", 13, &attrs, 1, 1)).unwrap();
        let (a, b, c) =
            (Tensor::vector(vec![1f32, 2.]), Tensor::vector(vec![10f32, 20.]), Tensor::vector(vec![7f32; 3]));
        let run = |cond: bool| op.eval(&[Some(&Tensor::scalar(cond)), Some(&a), Some(&b), Some(&c)]).unwrap();
        assert_eq!(run(true)[0].as_slice::<f32>().unwrap(), &[11., 22.]);
        assert_eq!(run(false)[0], c);

        let (fa, fb, fc) = (f32_fact(&[2]), f32_fact(&[2]), f32_fact(&[3]));
        let unknown_cond = Fact::of_dtype(DType::Bool);
        let out = op.infer(&[Some(&unknown_cond), Some(&fa), Some(&fb), Some(&fc)]).unwrap();
        assert_eq!((out[0].dtype, out[0].shape.clone()), (Some(DType::F32), Some(vec![Dim::Unknown])));
        let known_cond = Fact::constant(Arc::new(Tensor::scalar(true)));
        let out = op.infer(&[Some(&known_cond), Some(&fa), Some(&fb), Some(&fc)]).unwrap();
        assert_eq!(out[0].concrete_shape(), Some(vec![2]));

        let e = op.eval(&[Some(&Tensor::vector(vec![true, false])), Some(&a), Some(&b), Some(&c)]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput);
        assert!(e.message.contains("the condition must have one element"), "{e}");
    }

    #[test]
    fn if_branches_must_match_the_node_outputs() {
        let one = || G::default().constant("k", Tensor::scalar(1i64)).outputs(&["k"]);
        let attrs = attrs(vec![("then_branch", Attr::Graph(one())), ("else_branch", Attr::Graph(one()))]);
        let e = If::build(&ctx("If", 13, &attrs, 1, 2)).unwrap_err();
        assert_eq!(e.message, "then_branch has 1 outputs, the node has 2");
    }

    /// Loop body (i, cond, v) -> (v + i < limit, v + i, v + i): v accumulates the iteration numbers.
    fn counting_loop(max_iterations: i64) -> Loop {
        let body = G::default()
            .input("i", Fact::concrete(DType::I64, &[]))
            .input("cond_in", Fact::concrete(DType::Bool, &[]))
            .input("v", Fact::concrete(DType::I64, &[]))
            .capture("limit", Fact::concrete(DType::I64, &[]))
            .node("Add", &["v", "i"], &["v_out"])
            .node("Less", &["v_out", "limit"], &["cond_out"])
            .outputs(&["cond_out", "v_out", "v_out"]);
        let attrs = attrs(vec![("body", Attr::Graph(body))]);
        Loop::new(&ctx("Loop", 16, &attrs, 3, 2), max_iterations).unwrap()
    }

    fn run_loop(op: &Loop, m: Option<i64>, cond: Option<bool>, limit: i64) -> Result<(Vec<i64>, Vec<i64>)> {
        let (m, cond) = (m.map(Tensor::scalar), cond.map(Tensor::scalar));
        let (v0, limit) = (Tensor::scalar(0i64), Tensor::scalar(limit));
        let out = op.eval(&[m.as_ref(), cond.as_ref(), Some(&v0), Some(&limit)])?;
        assert_eq!(out[1].shape(), &[out[1].len()]);
        Ok((i64s(&out[0]), i64s(&out[1])))
    }

    #[test]
    fn loop_modes_follow_the_spec_table() {
        let op = counting_loop(MAX_LOOP_ITERATIONS);
        // for-loop: the body's condition is computed but ignored.
        assert_eq!(run_loop(&op, Some(4), None, 0).unwrap(), (vec![6], vec![0, 1, 3, 6]));
        // while-loop: runs until v reaches 10.
        assert_eq!(run_loop(&op, None, Some(true), 10).unwrap(), (vec![10], vec![0, 1, 3, 6, 10]));
        // both: whichever ends first.
        assert_eq!(run_loop(&op, Some(3), Some(true), 10).unwrap(), (vec![3], vec![0, 1, 3]));
        assert_eq!(run_loop(&op, Some(30), Some(true), 2).unwrap(), (vec![3], vec![0, 1, 3]));
        // Zero iterations: the initial value, and empty scan outputs of the body's element shape.
        assert_eq!(run_loop(&op, Some(0), None, 10).unwrap(), (vec![0], vec![]));
        assert_eq!(run_loop(&op, Some(-5), Some(true), 10).unwrap(), (vec![0], vec![]));
        assert_eq!(run_loop(&op, None, Some(false), 10).unwrap(), (vec![0], vec![]));

        let (m, v0) = (Fact::concrete(DType::I64, &[]), Fact::concrete(DType::I64, &[]));
        let out = op.infer(&[Some(&m), None, Some(&v0), Some(&m)]).unwrap();
        assert_eq!(out[0].concrete_shape(), Some(vec![]));
        assert_eq!((out[1].dtype, out[1].shape.clone()), (Some(DType::I64), Some(vec![Dim::Unknown])));
    }

    #[test]
    fn endless_loops_stop_at_the_iteration_limit() {
        let e = run_loop(&counting_loop(50), None, None, 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResourceLimit);
        assert_eq!(e.message, "the loop did not finish within 50 iterations");
        let e = run_loop(&counting_loop(50), Some(i64::MAX), Some(true), i64::MAX).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResourceLimit);
        let e = run_loop(&counting_loop(50), Some(2), None, 0);
        assert!(e.is_ok());
    }

    #[test]
    fn loop_rejects_bad_trip_counts_and_bodies() {
        let op = counting_loop(MAX_LOOP_ITERATIONS);
        let (m, v0, limit) = (Tensor::vector(vec![1i64, 2]), Tensor::scalar(0i64), Tensor::scalar(9i64));
        let e = op.eval(&[Some(&m), None, Some(&v0), Some(&limit)]).unwrap_err();
        assert_eq!(e.message, "trip count M must have one element, it has shape [2]");
        let body = G::default().input("i", Fact::unknown()).outputs(&["i"]);
        let attrs = attrs(vec![("body", Attr::Graph(body))]);
        let e = Loop::build(&ctx("Loop", 16, &attrs, 2, 0)).unwrap_err();
        assert_eq!(e.message, "the body has 1 inputs, expected 2 (2 + loop-carried)");
    }

    #[test]
    fn stacked_scan_outputs_must_agree_in_shape() {
        let parts = [Tensor::vector(vec![1f32]), Tensor::vector(vec![1f32, 2.])];
        let e = stack(&parts, 0, false).unwrap_err();
        assert_eq!(e.message, "scan output of iteration 1 is float32 [2], the first one was float32 [1]");
    }

    #[test]
    fn loop_carries_a_sequence_and_if_returns_one() {
        use crate::ir::Sequence;
        // Loop body (i, cond, s) -> (cond, SequenceInsert(s, i)): s collects the iteration numbers.
        let body = G::default()
            .input("i", Fact::concrete(DType::I64, &[]))
            .input("cond_in", Fact::concrete(DType::Bool, &[]))
            .input("s", Fact::of_dtype(DType::I64))
            .node("SequenceInsert", &["s", "i"], &["s_out"])
            .node("Identity", &["cond_in"], &["cond_out"])
            .kind("s", ValueKind::Sequence)
            .kind("s_out", ValueKind::Sequence)
            .outputs(&["cond_out", "s_out"]);
        let attrs_loop = attrs(vec![("body", Attr::Graph(body))]);
        let op = Loop::build(&ctx("Loop", 16, &attrs_loop, 3, 1)).unwrap();
        assert!(!op.tensors_only());
        let (m, empty) = (Data::Tensor(Tensor::scalar(3i64)), Data::Sequence(Sequence::empty(DType::I64)));
        let out = op.eval_data(&[Some(&m), None, Some(&empty)]).unwrap();
        let got: Vec<i64> = out[0].as_sequence().unwrap().items().iter().flat_map(i64s).collect();
        assert_eq!(got, [0, 1, 2]);
        let e = op.eval_data(&[Some(&empty), None, Some(&empty)]).unwrap_err();
        assert_eq!(e.message, "trip count M must be a tensor, got a sequence of int64");

        let then_branch = G::default()
            .capture("a", f32_fact(&[2]))
            .node("SequenceConstruct", &["a"], &["s"])
            .kind("s", ValueKind::Sequence)
            .outputs(&["s"]);
        let else_branch =
            G::default().node("SequenceEmpty", &[], &["e"]).kind("e", ValueKind::Sequence).outputs(&["e"]);
        let attrs_if =
            attrs(vec![("then_branch", Attr::Graph(then_branch)), ("else_branch", Attr::Graph(else_branch))]);
        let op = If::build(&ctx("If", 13, &attrs_if, 1, 1)).unwrap();
        assert!(!op.tensors_only());
        let a = Tensor::vector(vec![1f32, 2.]);
        let (yes, no) = (Data::Tensor(Tensor::scalar(true)), Data::Tensor(Tensor::scalar(false)));
        let out = op.eval_refs(&[Some(DataRef::Data(&yes)), Some(DataRef::Tensor(&a))]).unwrap();
        assert_eq!(out[0].as_sequence().unwrap().items(), std::slice::from_ref(&a));
        let out = op.eval_refs(&[Some(DataRef::Data(&no)), Some(DataRef::Tensor(&a))]).unwrap();
        assert_eq!(out[0].type_name(), "seq(tensor(float32))");
        let e = op.eval(&[Some(&Tensor::scalar(true)), Some(&a)]).unwrap_err();
        assert_eq!(e.message, "expected a tensor, got a sequence of float32");
    }
}
