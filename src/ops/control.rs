//! Control flow: If, Loop and Scan. Their subgraphs are inferred and optimised once, when the op is
//! built, and run with the CPU backend's [`GraphRunner`]. Outer values a subgraph captures arrive
//! as trailing node inputs (the convention described at [`Op`]).

use super::{input, opt_input, subgraph_captures, BuildCtx, Op, Registry};
use crate::backend::cpu::GraphRunner;
use crate::error::ResultExt;
use crate::ir::infer::infer_facts;
use crate::ir::tensor::checked_len;
use crate::ir::{Dim, Fact, Graph, Tensor};
use crate::passes::{default_passes, optimize};
use crate::{bail, dispatch, err, Result};
use std::sync::Arc;

pub fn register(r: &mut Registry) {
    r.add("If", If::build);
    r.add("Loop", Loop::build);
    r.add("Scan", Scan::build);
}

/// A Loop stops with an error after this many iterations. A trip count or condition that comes
/// from data could otherwise make it run, and grow its scan outputs, without bound.
pub const MAX_LOOP_ITERATIONS: i64 = 1 << 24;

/// A graph attribute ready to run: inferred and optimised on its own (its captured constants fold
/// like local ones), plus which node input carries each value it captures.
#[derive(Debug)]
pub(crate) struct Body {
    runner: GraphRunner,
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
        let graph = match infer_facts(&mut prepared).and_then(|_| optimize(&mut prepared, &default_passes())) {
            Ok(()) => prepared,
            Err(e) => {
                log::debug!("subgraph '{attr}' stays unoptimised: {e}");
                Graph::clone(&graph)
            }
        };
        Ok(Body { runner: GraphRunner::new(Arc::new(graph)), capture_inputs })
    }

    fn graph(&self) -> &Graph {
        self.runner.graph()
    }

    pub(crate) fn num_inputs(&self) -> usize {
        self.graph().inputs.len()
    }

    pub(crate) fn num_outputs(&self) -> usize {
        self.graph().outputs.len()
    }

    fn output_fact(&self, k: usize) -> Fact {
        let g = self.graph();
        g.outputs.get(k).map_or_else(Fact::unknown, |&o| g.values[o].fact.clone())
    }

    /// Runs the graph on `inputs`, taking its captured values from the node's inputs.
    pub(crate) fn run(&self, inputs: &[&Tensor], node_inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let captures: Vec<&Tensor> =
            self.capture_inputs.iter().map(|&i| input(node_inputs, i)).collect::<Result<_>>()?;
        self.runner.run(inputs, &captures)
    }
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
fn with_dim(fact: &Fact, axis: usize, dim: Dim) -> Fact {
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
fn stack(parts: &[Tensor], axis: usize, reverse: bool) -> Result<Tensor> {
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
    dispatch!(first.dtype(); T => {
        let slices = parts.iter().map(|p| p.as_slice::<T>()).collect::<Result<Vec<&[T]>>>()?;
        let mut data: Vec<T> = Vec::new();
        data.try_reserve_exact(n).map_err(|_| err!(ResourceLimit, "cannot allocate {n} elements"))?;
        for o in 0..outer {
            for t in 0..slices.len() {
                let s = slices[if reverse { slices.len() - 1 - t } else { t }];
                data.extend_from_slice(&s[o * inner..(o + 1) * inner]);
            }
        }
        Tensor::new(out_shape, data)
    }; all; else => bail!(Unsupported, "cannot stack {} tensors", first.dtype()))
}

/// The sub-tensor at `index` along `axis` (one rank less).
fn take_along(t: &Tensor, axis: usize, index: usize) -> Result<Tensor> {
    let shape = t.shape();
    let Some(&len) = shape.get(axis) else { bail!(InvalidInput, "axis {axis} is out of range for shape {shape:?}") };
    if index >= len {
        bail!(InvalidInput, "index {index} is out of range for axis {axis} of shape {shape:?}");
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out_shape = shape.to_vec();
    out_shape.remove(axis);
    dispatch!(t.dtype(); T => {
        let src = t.as_slice::<T>()?;
        let mut data: Vec<T> = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            let start = (o * len + index) * inner;
            data.extend_from_slice(&src[start..start + inner]);
        }
        Tensor::new(out_shape, data)
    }; all; else => bail!(Unsupported, "cannot slice {} tensors", t.dtype()))
}

/// A scan output of zero iterations: the body's declared element shape (unknown dims as 0) with a
/// 0-sized dim at `axis`.
fn empty_scan_output(fact: &Fact, axis: usize) -> Result<Tensor> {
    let Some(dtype) = fact.dtype else {
        bail!(Runtime, "zero iterations, and the dtype of a scan output is not known")
    };
    let mut shape: Vec<usize> = fact.shape.iter().flatten().map(|d| d.known().unwrap_or(0)).collect();
    shape.insert(axis.min(shape.len()), 0);
    Tensor::zeros(dtype, shape)
}

/// Per-iteration scan output values, with their total size kept under the tensor size limit.
struct ScanOutputs {
    steps: Vec<Vec<Tensor>>,
}

impl ScanOutputs {
    fn new(k: usize) -> ScanOutputs {
        ScanOutputs { steps: (0..k).map(|_| vec![]).collect() }
    }

    fn push(&mut self, values: impl Iterator<Item = Tensor>) -> Result<()> {
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
        if truth(input(inputs, 0)?, "the condition")? {
            self.then_branch.run(&[], inputs).context(|| "then_branch")
        } else {
            self.else_branch.run(&[], inputs).context(|| "else_branch")
        }
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
        let trip_count = match opt_input(inputs, 0) {
            None => None,
            Some(m) if m.len() == 1 => Some(m.to_i64_vec().context(|| "trip count M")?[0]),
            Some(m) => bail!(InvalidInput, "trip count M must have one element, it has shape {:?}", m.shape()),
        };
        let cond_given = opt_input(inputs, 1).is_some();
        let mut cond = match opt_input(inputs, 1) {
            Some(c) => truth(c, "the condition")?,
            None => true,
        };
        let mut carried: Vec<Tensor> =
            (0..self.carried).map(|k| input(inputs, 2 + k).cloned()).collect::<Result<_>>()?;
        let mut scans = ScanOutputs::new(self.scans);
        let mut i: i64 = 0;
        while cond && trip_count.is_none_or(|m| i < m) {
            if i >= self.max_iterations {
                bail!(ResourceLimit, "the loop did not finish within {} iterations", self.max_iterations);
            }
            let (iteration, cond_in) = (Tensor::scalar(i), Tensor::scalar(cond));
            let mut args = vec![&iteration, &cond_in];
            args.extend(carried.iter());
            let mut outs = self.body.run(&args, inputs).context(|| format!("body, iteration {i}"))?.into_iter();
            let cond_out = outs.next().ok_or_else(|| err!(InvalidModel, "the body gave no condition"))?;
            // Without a condition input, the body's condition is computed but ignored (spec).
            if cond_given {
                cond = truth(&cond_out, "the body's condition")?;
            }
            carried = outs.by_ref().take(self.carried).collect();
            scans.push(outs)?;
            i += 1;
        }
        for (k, steps) in scans.steps.iter().enumerate() {
            carried.push(if steps.is_empty() {
                empty_scan_output(&self.body.output_fact(1 + self.carried + k), 0)?
            } else {
                stack(steps, 0, false)?
            });
        }
        Ok(carried)
    }
}

/// Where one scan input or output runs: its axis (normalised at run time) and direction.
#[derive(Debug, Clone, Copy)]
struct Axis {
    axis: i64,
    reverse: bool,
}

/// Scan. From opset 9 on: inputs (state..., scan_input...), each scan input and output along its
/// own axis and direction. Opset 8: inputs (sequence_lens, state..., scan_input...), with a batch
/// axis 0 on every input and output and the scan axis 1.
#[derive(Debug)]
struct Scan {
    body: Body,
    /// State variables (N).
    states: usize,
    inputs: Vec<Axis>,
    outputs: Vec<Axis>,
    batched: bool,
}

impl Scan {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
        let body = Body::build(ctx, "body")?;
        let m = usize::try_from(ctx.attrs.req_int("num_scan_inputs")?)
            .ok()
            .filter(|&m| m > 0)
            .ok_or_else(|| err!(InvalidModel, "num_scan_inputs must be positive"))?;
        let batched = ctx.opset < 9;
        let leading = usize::from(batched); // opset 8's sequence_lens
        let Some(states) = ctx.num_inputs.checked_sub(m + leading) else {
            bail!(InvalidModel, "the node has {} inputs, fewer than num_scan_inputs {m}", ctx.num_inputs);
        };
        if body.num_inputs() != states + m {
            bail!(InvalidModel, "the body has {} inputs, expected {}", body.num_inputs(), states + m);
        }
        let Some(k) = body.num_outputs().checked_sub(states) else {
            bail!(InvalidModel, "the body has {} outputs, fewer than the {states} states", body.num_outputs());
        };
        if ctx.num_outputs > states + k {
            bail!(InvalidModel, "the node has {} outputs, the body gives {}", ctx.num_outputs, states + k);
        }
        let list = |name: &str, n: usize| -> Result<Vec<i64>> {
            let v = ctx.attrs.ints_or(name, vec![0; n])?;
            if v.len() != n {
                bail!(InvalidModel, "attribute '{name}' has {} entries, expected {n}", v.len());
            }
            Ok(v)
        };
        let axes = |axes: Vec<i64>, dirs: Vec<i64>| -> Result<Vec<Axis>> {
            axes.into_iter()
                .zip(dirs)
                .map(|(axis, d)| match d {
                    0 | 1 => Ok(Axis { axis, reverse: d == 1 }),
                    _ => bail!(InvalidModel, "scan direction {d} is neither 0 (forward) nor 1 (reverse)"),
                })
                .collect()
        };
        let (inputs, outputs) = if batched {
            (axes(vec![0; m], list("directions", m)?)?, axes(vec![0; k], vec![0; k])?)
        } else {
            (
                axes(list("scan_input_axes", m)?, list("scan_input_directions", m)?)?,
                axes(list("scan_output_axes", k)?, list("scan_output_directions", k)?)?,
            )
        };
        Ok(Box::new(Scan { body, states, inputs, outputs, batched }))
    }

    /// Runs the body over `len` steps of the scan inputs; returns the final states and each scan
    /// output's per-step values in step order.
    fn steps(
        &self,
        mut states: Vec<Tensor>,
        scan_inputs: &[(&Tensor, usize, bool)],
        len: usize,
        node_inputs: &[Option<&Tensor>],
    ) -> Result<(Vec<Tensor>, ScanOutputs)> {
        let mut scans = ScanOutputs::new(self.outputs.len());
        for t in 0..len {
            let slices = scan_inputs
                .iter()
                .map(|&(x, axis, reverse)| take_along(x, axis, if reverse { len - 1 - t } else { t }))
                .collect::<Result<Vec<_>>>()?;
            let args: Vec<&Tensor> = states.iter().chain(&slices).collect();
            let mut outs = self.body.run(&args, node_inputs).context(|| format!("body, step {t}"))?.into_iter();
            states = outs.by_ref().take(self.states).collect();
            scans.push(outs)?;
        }
        Ok((states, scans))
    }

    /// Opset 9 on.
    fn eval_unbatched(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let states = (0..self.states).map(|k| input(inputs, k).cloned()).collect::<Result<Vec<_>>>()?;
        let mut scan_inputs = Vec::with_capacity(self.inputs.len());
        let mut len = None;
        for (j, a) in self.inputs.iter().enumerate() {
            let x = input(inputs, self.states + j)?;
            let axis = crate::ir::shape::normalize_axis(a.axis, x.rank()).context(|| format!("scan input {j}"))?;
            let n = x.shape()[axis];
            match len {
                Some(l) if l != n => {
                    bail!(InvalidInput, "scan input {j} has {n} steps along axis {axis}, input 0 has {l}")
                }
                _ => {}
            }
            len = Some(n);
            scan_inputs.push((x, axis, a.reverse));
        }
        let (mut out, scans) = self.steps(states, &scan_inputs, len.unwrap_or(0), inputs)?;
        for (k, (steps, a)) in scans.steps.iter().zip(&self.outputs).enumerate() {
            let fact = self.body.output_fact(self.states + k);
            let rank = steps.first().map(|s| s.rank()).or(fact.rank()).unwrap_or(0);
            let axis = crate::ir::shape::normalize_axis(a.axis, rank + 1).context(|| format!("scan output {k}"))?;
            out.push(if steps.is_empty() { empty_scan_output(&fact, axis)? } else { stack(steps, axis, a.reverse)? });
        }
        Ok(out)
    }

    /// Opset 8: each batch entry is scanned on its own, over its `sequence_lens` steps; scan outputs
    /// are padded with zeros to the longest sequence.
    fn eval_batched(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let first = input(inputs, 1 + self.states)?;
        if first.rank() < 2 {
            bail!(InvalidInput, "scan inputs need a batch and a sequence axis, got shape {:?}", first.shape());
        }
        let (batch, max_len) = (first.shape()[0], first.shape()[1]);
        let lens: Vec<usize> = match opt_input(inputs, 0) {
            None => vec![max_len; batch],
            Some(l) => {
                let l = l.to_i64_vec().context(|| "sequence_lens")?;
                if l.len() != batch {
                    bail!(InvalidInput, "sequence_lens has {} entries for a batch of {batch}", l.len());
                }
                l.into_iter()
                    .map(|n| {
                        usize::try_from(n)
                            .ok()
                            .filter(|&n| n <= max_len)
                            .ok_or_else(|| err!(InvalidInput, "sequence length {n} is outside 0..={max_len}"))
                    })
                    .collect::<Result<_>>()?
            }
        };
        let mut final_states: Vec<Vec<Tensor>> = (0..self.states).map(|_| vec![]).collect();
        let mut per_batch: Vec<ScanOutputs> = Vec::with_capacity(batch);
        for (b, &len) in lens.iter().enumerate() {
            let states = (0..self.states)
                .map(|k| take_along(input(inputs, 1 + k)?, 0, b).context(|| format!("initial state {k}")))
                .collect::<Result<Vec<_>>>()?;
            let rows = (0..self.inputs.len())
                .map(|j| {
                    let x = input(inputs, 1 + self.states + j)?;
                    if x.rank() < 2 || x.shape()[..2] != [batch, max_len] {
                        bail!(
                            InvalidInput,
                            "scan input {j} has shape {:?}, expected [{batch}, {max_len}, ...]",
                            x.shape()
                        );
                    }
                    take_along(x, 0, b)
                })
                .collect::<Result<Vec<_>>>()?;
            let scan_inputs: Vec<_> = rows.iter().zip(&self.inputs).map(|(x, a)| (x, 0, a.reverse)).collect();
            let (states, scans) = self.steps(states, &scan_inputs, len, inputs)?;
            for (all, s) in final_states.iter_mut().zip(states) {
                all.push(s);
            }
            per_batch.push(scans);
        }
        let mut out = Vec::with_capacity(self.states + self.outputs.len());
        for (k, parts) in final_states.iter().enumerate() {
            let fact = self.body.output_fact(k);
            out.push(if parts.is_empty() { empty_scan_output(&fact, 0)? } else { stack(parts, 0, false)? });
        }
        for k in 0..self.outputs.len() {
            let fact = self.body.output_fact(self.states + k);
            // Padding has the shape that the steps of any batch entry have.
            let Some(step) = per_batch.iter().find_map(|s| s.steps[k].first()) else {
                out.push(empty_scan_output(&with_dim(&fact, 0, Dim::Known(batch)), 1)?);
                continue;
            };
            let pad = Tensor::zeros(step.dtype(), step.shape().to_vec())?;
            let mut rows = Vec::with_capacity(batch);
            for scans in &mut per_batch {
                let steps = &mut scans.steps[k];
                steps.resize(max_len, pad.clone());
                rows.push(stack(steps, 0, false)?);
            }
            out.push(stack(&rows, 0, false)?);
        }
        Ok(out)
    }
}

impl Op for Scan {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let leading = usize::from(self.batched);
        let first = opt_input(inputs, leading + self.states);
        let mut out = Vec::with_capacity(self.states + self.outputs.len());
        for k in 0..self.states {
            let mut body = self.body.output_fact(k);
            if self.batched {
                let batch = first.and_then(|f| f.shape.as_ref()?.first().cloned()).unwrap_or(Dim::Unknown);
                body = with_dim(&body, 0, batch);
            }
            // States keep their shape from step to step (spec), so the initial one tells it.
            out.push(match opt_input(inputs, leading + k) {
                Some(initial) => Fact {
                    dtype: initial.dtype.or(body.dtype),
                    shape: initial.shape.clone().or(body.shape),
                    value: None,
                },
                None => body,
            });
        }
        for (k, a) in self.outputs.iter().enumerate() {
            let fact = self.body.output_fact(self.states + k);
            let input_dim = |axis: i64| -> Dim {
                let shape = first.and_then(|f| f.shape.as_ref());
                let axis = shape.and_then(|s| crate::ir::shape::normalize_axis(axis, s.len()).ok());
                shape.zip(axis).map_or(Dim::Unknown, |(s, a)| s[a].clone())
            };
            out.push(if self.batched {
                let batched = with_dim(&fact, 0, input_dim(0));
                with_dim(&batched, 1, input_dim(1))
            } else {
                let steps = input_dim(self.inputs.first().map_or(0, |a| a.axis));
                match fact.rank().map(|r| crate::ir::shape::normalize_axis(a.axis, r + 1)) {
                    Some(Ok(axis)) => with_dim(&fact, axis, steps),
                    _ => Fact { dtype: fact.dtype, shape: None, value: None },
                }
            });
        }
        Ok(out)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        if self.batched {
            self.eval_batched(inputs)
        } else {
            self.eval_unbatched(inputs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, Attributes, DType, Node};
    use crate::ErrorKind;

    /// A graph built by value names, with ops from the registry.
    #[derive(Default)]
    struct G(Graph);

    impl G {
        fn id(&mut self, name: &str) -> usize {
            self.0.find_value(name).unwrap_or_else(|| self.0.add_value(name, Fact::unknown()))
        }
        fn input(mut self, name: &str, fact: Fact) -> G {
            let id = self.0.add_value(name, fact);
            self.0.inputs.push(id);
            self
        }
        fn capture(mut self, name: &str, fact: Fact) -> G {
            let id = self.0.add_value(name, fact);
            self.0.captures.push(id);
            self
        }
        fn constant(mut self, name: &str, t: Tensor) -> G {
            self.0.add_value(name, Fact::constant(Arc::new(t)));
            self
        }
        fn node(mut self, op_type: &str, inputs: &[&str], outputs: &[&str]) -> G {
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
        fn outputs(mut self, names: &[&str]) -> Arc<Graph> {
            self.0.outputs = names.iter().map(|n| self.id(n)).collect();
            Arc::new(self.0)
        }
    }

    fn attrs(items: Vec<(&str, Attr)>) -> Attributes {
        Attributes::new(items.into_iter().map(|(n, a)| (n.to_string(), a)).collect())
    }

    fn ctx<'a>(op_type: &'a str, opset: i64, attrs: &'a Attributes, ins: usize, outs: usize) -> BuildCtx<'a> {
        BuildCtx { op_type, domain: "", opset, attrs, num_inputs: ins, num_outputs: outs }
    }

    fn i64s(t: &Tensor) -> Vec<i64> {
        t.as_slice::<i64>().unwrap().to_vec()
    }

    fn f32_fact(shape: &[usize]) -> Fact {
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

    /// Scan body (s, x) -> (s + x, s + x).
    fn sum_body() -> Arc<Graph> {
        G::default()
            .input("s", Fact::of_dtype(DType::F32))
            .input("x", Fact::of_dtype(DType::F32))
            .node("Add", &["s", "x"], &["s_out"])
            .node("Identity", &["s_out"], &["y"])
            .outputs(&["s_out", "y"])
    }

    #[test]
    fn scan8_runs_each_batch_entry_over_its_sequence_length() {
        // Reference: onnxruntime 1.32, Scan-8 with directions=[1] and sequence_lens [2, 3].
        let attrs = attrs(vec![
            ("body", Attr::Graph(sum_body())),
            ("num_scan_inputs", Attr::Int(1)),
            ("directions", Attr::Ints(vec![1])),
        ]);
        let op = Scan::build(&ctx("Scan", 8, &attrs, 3, 2)).unwrap();
        let lens = Tensor::vector(vec![2i64, 3]);
        let s0 = Tensor::new(vec![2, 1], vec![0f32, 100.]).unwrap();
        let xs = Tensor::new(vec![2, 3, 1], vec![1f32, 2., 3., 10., 20., 30.]).unwrap();
        let out = op.eval(&[Some(&lens), Some(&s0), Some(&xs)]).unwrap();
        assert_eq!((out[0].shape(), out[0].as_slice::<f32>().unwrap()), (&[2, 1][..], &[3f32, 160.][..]));
        assert_eq!(out[1].shape(), &[2, 3, 1]);
        assert_eq!(out[1].as_slice::<f32>().unwrap(), &[2., 3., 0., 130., 150., 160.]);
        let e = op.eval(&[Some(&Tensor::vector(vec![2i64, 4])), Some(&s0), Some(&xs)]).unwrap_err();
        assert_eq!(e.message, "sequence length 4 is outside 0..=3");

        let facts = [None, Some(f32_fact(&[2, 1])), Some(f32_fact(&[2, 3, 1]))];
        let facts: Vec<Option<&Fact>> = facts.iter().map(|f| f.as_ref()).collect();
        let out = op.infer(&facts).unwrap();
        assert_eq!(out[0].concrete_shape(), Some(vec![2, 1]));
        assert_eq!(out[1].dtype, Some(DType::F32));
    }

    #[test]
    fn scan9_axes_and_directions() {
        // cumulative sums along axis 1 read from the end, written along axis 0 in reverse:
        // x = [[1, 2, 3], [4, 5, 6]]; steps see columns 3,6 then 2,5 then 1,4.
        let attrs = attrs(vec![
            ("body", Attr::Graph(sum_body())),
            ("num_scan_inputs", Attr::Int(1)),
            ("scan_input_axes", Attr::Ints(vec![-1])),
            ("scan_input_directions", Attr::Ints(vec![1])),
            ("scan_output_directions", Attr::Ints(vec![1])),
        ]);
        let op = Scan::build(&ctx("Scan", 16, &attrs, 2, 2)).unwrap();
        let s0 = Tensor::vector(vec![0f32, 0.]);
        let x = Tensor::new(vec![2, 3], vec![1f32, 2., 3., 4., 5., 6.]).unwrap();
        let out = op.eval(&[Some(&s0), Some(&x)]).unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[6., 15.]);
        assert_eq!(out[1].shape(), &[3, 2]);
        assert_eq!(out[1].as_slice::<f32>().unwrap(), &[6., 15., 5., 11., 3., 6.]);
        // No steps: the states come back, the scan output is empty.
        let empty = Tensor::new(vec![2, 0], Vec::<f32>::new()).unwrap();
        let out = op.eval(&[Some(&s0), Some(&empty)]).unwrap();
        assert_eq!((&out[0], out[1].len()), (&s0, 0));

        let bad = attrs_with_direction(2);
        let e = Scan::build(&ctx("Scan", 16, &bad, 2, 2)).unwrap_err();
        assert_eq!(e.message, "scan direction 2 is neither 0 (forward) nor 1 (reverse)");
        let x2 = Tensor::new(vec![3, 2], vec![0f32; 6]).unwrap();
        let two_inputs = attrs_two_scan_inputs();
        let op = Scan::build(&ctx("Scan", 16, &two_inputs, 2, 1)).unwrap();
        let e = op.eval(&[Some(&x), Some(&x2)]).unwrap_err();
        assert_eq!(e.message, "scan input 1 has 3 steps along axis 0, input 0 has 2");
    }

    fn attrs_with_direction(d: i64) -> Attributes {
        attrs(vec![
            ("body", Attr::Graph(sum_body())),
            ("num_scan_inputs", Attr::Int(1)),
            ("scan_input_directions", Attr::Ints(vec![d])),
        ])
    }

    /// Scan body (x, y) -> (x + y) with two scan inputs and no state.
    fn attrs_two_scan_inputs() -> Attributes {
        let body = G::default()
            .input("x", Fact::unknown())
            .input("y", Fact::unknown())
            .node("Add", &["x", "y"], &["z"])
            .outputs(&["z"]);
        attrs(vec![("body", Attr::Graph(body)), ("num_scan_inputs", Attr::Int(2))])
    }

    #[test]
    fn stacked_scan_outputs_must_agree_in_shape() {
        let parts = [Tensor::vector(vec![1f32]), Tensor::vector(vec![1f32, 2.])];
        let e = stack(&parts, 0, false).unwrap_err();
        assert_eq!(e.message, "scan output of iteration 1 is float32 [2], the first one was float32 [1]");
    }
}
