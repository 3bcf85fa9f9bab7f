//! Scan: runs a subgraph once per slice of its scan inputs, carrying state variables from step to
//! step and stacking per-step outputs. The subgraph machinery is shared with If and Loop
//! (control.rs).

use super::control::{empty_scan_output, stack, with_dim, Body, ScanOutputs};
use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::error::ResultExt;
use crate::ir::interp::Interpreter;
use crate::ir::{Data, DataRef, Dim, Fact, Graph, GraphExec, Tensor};
use crate::{bail, dispatch_words, err, Result};
use std::sync::Arc;

pub fn register(r: &mut Registry) {
    r.add("Scan", Scan::build);
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
    dispatch_words!(t.dtype(); W => {
        let src = t.as_words::<W>()?;
        let mut data: Vec<W> = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            let start = (o * len + index) * inner;
            data.extend_from_slice(&src[start..start + inner]);
        }
        Tensor::from_words(t.dtype(), out_shape, data)
    })
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
        exec: &dyn GraphExec,
    ) -> Result<(Vec<Tensor>, ScanOutputs)> {
        let node_refs: Vec<Option<DataRef>> = node_inputs.iter().map(|t| t.map(DataRef::Tensor)).collect();
        let mut scans = ScanOutputs::new(self.outputs.len());
        for t in 0..len {
            let slices = scan_inputs
                .iter()
                .map(|&(x, axis, reverse)| take_along(x, axis, if reverse { len - 1 - t } else { t }))
                .collect::<Result<Vec<_>>>()?;
            let args: Vec<&Tensor> = states.iter().chain(&slices).collect();
            let mut outs = self.body.run(exec, &args, &node_refs).context(|| format!("body, step {t}"))?.into_iter();
            states = outs.by_ref().take(self.states).collect();
            scans.push(outs)?;
        }
        Ok((states, scans))
    }

    /// Opset 9 on.
    fn eval_unbatched(&self, inputs: &[Option<&Tensor>], exec: &dyn GraphExec) -> Result<Vec<Tensor>> {
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
        let (mut out, scans) = self.steps(states, &scan_inputs, len.unwrap_or(0), inputs, exec)?;
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
    fn eval_batched(&self, inputs: &[Option<&Tensor>], exec: &dyn GraphExec) -> Result<Vec<Tensor>> {
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
            let (states, scans) = self.steps(states, &scan_inputs, len, inputs, exec)?;
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
        self.eval_tensors(inputs, &Interpreter)
    }

    fn eval_with(&self, inputs: &[Option<DataRef>], exec: &dyn GraphExec) -> Result<Vec<Data>> {
        let tensors = inputs
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                None => Ok(None),
                Some(d) => d.tensor().map(Some).ok_or_else(|| err!(InvalidInput, "input {i} must be a tensor")),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.eval_tensors(&tensors, exec)?.into_iter().map(Data::Tensor).collect())
    }

    fn subgraphs(&self) -> Vec<&Arc<Graph>> {
        vec![self.body.graph_arc()]
    }
}

impl Scan {
    fn eval_tensors(&self, inputs: &[Option<&Tensor>], exec: &dyn GraphExec) -> Result<Vec<Tensor>> {
        if self.batched {
            self.eval_batched(inputs, exec)
        } else {
            self.eval_unbatched(inputs, exec)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, Attributes, DType, Graph};
    use crate::ops::control::tests::{attrs, ctx, f32_fact, G};
    use std::sync::Arc;

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
}
