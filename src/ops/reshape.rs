//! Ops that change only a tensor's shape: Reshape, Flatten, Squeeze, Unsqueeze, and the shape
//! readers Shape and Size. Their inference works on symbolic dims and, for constant inputs, on
//! values, so the Shape -> Gather -> Concat -> Reshape chains that exporters emit resolve at load
//! time.
//!
//! Also home to helpers the other shape and index ops share: reading constant integer inputs,
//! `axes` given as an attribute or an input, and folding small constants during inference.

use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::limits::{max_tensor_bytes, with_max_tensor_bytes, with_time_limit};
use crate::ir::shape::normalize_axis;
use crate::ir::{DType, Dim, Fact, Tensor};
use crate::{bail, err, Result};
use std::sync::Arc;

pub fn register(r: &mut Registry) {
    r.add("Reshape", build_reshape);
    r.add("Flatten", |ctx| Ok(Box::new(Flatten { axis: ctx.attrs.int_or("axis", 1)? })));
    r.add("Squeeze", |ctx| Ok(Box::new(Squeeze { axes: IntsArg::parse(ctx, "axes", 13, 1)? })));
    r.add("Unsqueeze", |ctx| Ok(Box::new(Unsqueeze { axes: IntsArg::parse(ctx, "axes", 13, 1)? })));
    r.add("Shape", build_shape);
    r.add("Size", |_| Ok(Box::new(Size)));
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// The values of a constant integer input, when inference knows them.
pub(crate) fn const_ints(fact: Option<&Fact>) -> Result<Option<Vec<i64>>> {
    match fact.and_then(|f| f.value.as_ref()) {
        Some(t) => Ok(Some(t.to_i64_vec()?)),
        None => Ok(None),
    }
}

/// Where an op finds a list of ints such as `axes` or `split`: an attribute in older opsets, an
/// optional input in newer ones.
#[derive(Debug, Clone)]
pub(crate) enum IntsArg {
    Attr(Option<Vec<i64>>),
    Input(usize),
}

impl IntsArg {
    /// Attribute `name` before opset `input_since`, input `index` from then on. An attribute
    /// found in a newer opset is still honoured: some exporters write one.
    pub(crate) fn parse(ctx: &BuildCtx, name: &str, input_since: i64, index: usize) -> Result<IntsArg> {
        if ctx.opset >= input_since && !ctx.attrs.has(name) {
            Ok(IntsArg::Input(index))
        } else {
            Ok(IntsArg::Attr(ctx.attrs.ints(name)?))
        }
    }

    /// The values during inference: `None` while they come from an input whose value is not
    /// known, `Some(None)` when none were given.
    pub(crate) fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Option<Option<Vec<i64>>>> {
        match self {
            IntsArg::Attr(a) => Ok(Some(a.clone())),
            IntsArg::Input(i) => match opt_input(inputs, *i) {
                None => Ok(Some(None)),
                Some(f) => Ok(const_ints(Some(f))?.map(Some)),
            },
        }
    }

    /// The values at run time, `None` when none were given.
    pub(crate) fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Option<Vec<i64>>> {
        match self {
            IntsArg::Attr(a) => Ok(a.clone()),
            IntsArg::Input(i) => opt_input(inputs, *i).map(|t| t.to_i64_vec()).transpose(),
        }
    }
}

/// The single integer of a scalar or one-element tensor (an axis or a count given as an input).
pub(crate) fn scalar_int(op: &str, what: &str, t: &Tensor) -> Result<i64> {
    match t.to_i64_vec()?.as_slice() {
        &[v] => Ok(v),
        v => bail!(Shape, "{op}: {what} must hold one integer, got {} values", v.len()),
    }
}

/// Resolves a possibly negative axis that `op` read from tensor data.
pub(crate) fn resolve_axis(op: &str, axis: i64, rank: usize) -> Result<usize> {
    normalize_axis(axis, rank).map_err(|_| {
        err!(
            Shape,
            "{op}: axis {axis} is out of range for rank {rank} (valid: {} to {})",
            -(rank as i64),
            rank as i64 - 1
        )
    })
}

/// Resolves possibly negative axes against a rank, refusing repeats.
pub(crate) fn normalize_axes(op: &str, axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = resolve_axis(op, a, rank)?;
        if out.contains(&n) {
            bail!(Shape, "{op}: axis {a} appears twice in axes {axes:?}");
        }
        out.push(n);
    }
    Ok(out)
}

/// Constants up to this many elements are computed during inference.
const FOLD_LIMIT: usize = 1 << 12;

/// The most one such computation may allocate, scratch included, and the longest it may take (a
/// Loop with a scalar output can still run 2^24 iterations).
const FOLD_SCRATCH_BYTES: usize = 16 << 20;
const FOLD_TIME: std::time::Duration = std::time::Duration::from_millis(100);

/// When every input is a small constant and every output is small, runs `op` so that the output
/// facts carry their values: later nodes' inference (Reshape's target shape, say) can then use them.
pub(crate) fn fold_small(op: &dyn Op, inputs: &[Option<&Fact>], facts: Vec<Fact>) -> Result<Vec<Fact>> {
    let small_inputs = inputs.iter().flatten().all(|f| f.value.as_ref().is_some_and(|v| v.len() <= FOLD_LIMIT));
    let small_outputs = facts.iter().all(|f| {
        f.concrete_shape()
            .and_then(|s| s.iter().try_fold(1usize, |n, &d| n.checked_mul(d)))
            .is_some_and(|n| n <= FOLD_LIMIT)
    });
    if !small_inputs || !small_outputs || !op.is_deterministic() {
        return Ok(facts);
    }
    let tensors: Vec<Option<&Tensor>> = inputs.iter().map(|f| f.and_then(|f| f.value.as_deref())).collect();
    // Scratch that an attribute asks for counts too: a small fold may not allocate much either,
    // and one that would is left to run time, where the session's limit decides.
    let eval = || with_time_limit(Some(FOLD_TIME), || op.eval(&tensors));
    match with_max_tensor_bytes(FOLD_SCRATCH_BYTES.min(max_tensor_bytes()), eval) {
        Ok(outputs) => Ok(outputs.into_iter().map(|t| Fact::constant(Arc::new(t))).collect()),
        Err(e) if e.kind == crate::ErrorKind::ResourceLimit => Ok(facts),
        Err(e) => Err(e),
    }
}

/// The product of some dims: known when all are, the symbol when it is the only dim that is not
/// 1, unknown otherwise.
pub(crate) fn dims_product(dims: &[Dim]) -> Dim {
    let mut known = 1usize;
    let mut other = None;
    for d in dims {
        match d {
            Dim::Known(n) => match known.checked_mul(*n) {
                Some(k) => known = k,
                None => return Dim::Unknown,
            },
            _ if other.is_some() => return Dim::Unknown,
            _ => other = Some(d),
        }
    }
    match other {
        None => Dim::Known(known),
        Some(_) if known == 0 => Dim::Known(0),
        Some(d) if known == 1 => d.clone(),
        Some(_) => Dim::Unknown,
    }
}

/// Element count of a shape. It saturates instead of overflowing, which only happens for shapes
/// that also hold a 0 (a tensor of shape [0, 2^40, 2^40] exists and is empty), whose count is 0.
pub(crate) fn numel(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |n, &d| n.saturating_mul(d))
}

/// Row-major strides. Like [`numel`] they never overflow: products wrap for the empty shapes where
/// they would, and nothing indexes an empty tensor.
pub(crate) fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1].wrapping_mul(dims[i + 1]);
    }
    s
}

/// `(outer, dim, inner)` for work along `axis`: how many lanes come before it, the lane length,
/// and the stride between a lane's elements (also the number of lanes after it).
pub(crate) fn lanes(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (numel(&shape[..axis]), shape[axis], numel(&shape[axis + 1..]))
}

pub(crate) use crate::ir::limits::with_capacity;

pub(crate) fn known_dims(shape: &[usize]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::Known(d)).collect()
}

/// Concrete dims from inferred ones; at run time every dim is known, so an unknown one is a bug in
/// the op's own dim logic and reported as such rather than a panic.
pub(crate) fn concrete(dims: &[Dim]) -> Result<Vec<usize>> {
    dims.iter().map(|d| d.known().ok_or_else(|| err!(Runtime, "dim {d} is not known at run time"))).collect()
}

/// A fact that knows the dtype, and the shape if `shape` is `Some`.
pub(crate) fn fact_of(dtype: Option<DType>, shape: Option<Vec<Dim>>) -> Fact {
    Fact { dtype, shape, value: None }
}

// ---------------------------------------------------------------------------------------------
// Reshape

#[derive(Debug)]
pub struct Reshape {
    /// Opsets 1-4 give the target shape as an attribute.
    shape_attr: Option<Vec<i64>>,
    allowzero: bool,
}

fn build_reshape(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let shape_attr = if ctx.opset < 5 { ctx.attrs.ints("shape")? } else { None };
    let allowzero = ctx.opset >= 14 && ctx.attrs.int_or("allowzero", 0)? != 0;
    Ok(Box::new(Reshape { shape_attr, allowzero }))
}

/// Longest shape input whose length alone is used to give an output rank.
pub(crate) const MAX_RANK: usize = 1024;

impl Op for Reshape {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let target = match &self.shape_attr {
            Some(s) => Some(s.clone()),
            None => const_ints(Some(input(inputs, 1)?))?,
        };
        let shape = match target {
            Some(t) => Some(reshape_dims(x.shape.as_deref(), &t, self.allowzero)?),
            // Without the target's values, its length still gives the rank.
            None => match input(inputs, 1)?.concrete_shape().as_deref() {
                Some(&[n]) if n <= MAX_RANK => Some(vec![Dim::Unknown; n]),
                _ => None,
            },
        };
        fold_small(self, inputs, vec![fact_of(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let target = match &self.shape_attr {
            Some(s) => s.clone(),
            None => input(inputs, 1)?.to_i64_vec()?,
        };
        let dims = reshape_dims(Some(&known_dims(x.shape())), &target, self.allowzero)?;
        Ok(vec![x.clone().reshape(concrete(&dims)?)?])
    }
}

/// Known part and symbols of a product of dims; `None` if a dim is unknown or the product overflows.
fn factor(dims: &[&Dim]) -> Option<(usize, Vec<String>)> {
    let mut known = 1usize;
    let mut symbols = vec![];
    for d in dims {
        match d {
            Dim::Known(n) => known = known.checked_mul(*n)?,
            Dim::Symbol(s) => symbols.push(s.clone()),
            Dim::Unknown => return None,
        }
    }
    Some((known, symbols))
}

/// The dims Reshape gives `input` (`None`: rank unknown) for a target shape with ONNX's 0 (copy the
/// input dim, unless `allowzero`) and -1 (whatever the element count leaves).
fn reshape_dims(input: Option<&[Dim]>, target: &[i64], allowzero: bool) -> Result<Vec<Dim>> {
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &t) in target.iter().enumerate() {
        out.push(match t {
            -1 => {
                if infer_at.replace(i).is_some() {
                    bail!(Shape, "Reshape: shape {target:?} has more than one -1");
                }
                Dim::Unknown
            }
            0 if !allowzero => match input {
                Some(dims) => dims.get(i).cloned().ok_or_else(|| {
                    err!(
                        Shape,
                        "Reshape: the 0 at position {i} of shape {target:?} copies a dim the rank-{} input lacks",
                        dims.len()
                    )
                })?,
                None => Dim::Unknown,
            },
            t if t < 0 => bail!(Shape, "Reshape: invalid dim {t} in shape {target:?}"),
            t => Dim::Known(t as usize),
        });
    }
    if allowzero && infer_at.is_some() && target.contains(&0) {
        bail!(Shape, "Reshape: shape {target:?} has both 0 and -1 with allowzero set");
    }
    let Some(dims) = input else { return Ok(out) };
    let in_factors = factor(&dims.iter().collect::<Vec<_>>());
    let others: Vec<&Dim> = out.iter().enumerate().filter(|&(i, _)| Some(i) != infer_at).map(|(_, d)| d).collect();
    let (Some((in_known, mut in_syms)), Some((out_known, out_syms))) = (in_factors, factor(&others)) else {
        return Ok(out);
    };
    // Symbols cancel out: what is left of the input's symbols must make up the -1 (or nothing).
    for s in &out_syms {
        match in_syms.iter().position(|x| x == s) {
            Some(p) => {
                in_syms.swap_remove(p);
            }
            None => return Ok(out),
        }
    }
    match infer_at {
        Some(p) => {
            if out_known == 0 {
                bail!(Shape, "Reshape: cannot infer the -1 in {target:?}: the other dims hold no elements");
            }
            out[p] = match in_syms.as_slice() {
                [] if in_known % out_known == 0 => Dim::Known(in_known / out_known),
                [] => bail!(
                    Shape,
                    "Reshape: cannot reshape {dims:?} to {target:?}: {in_known} elements do not divide by {out_known}"
                ),
                [s] if in_known == out_known => Dim::Symbol(s.clone()),
                _ => Dim::Unknown,
            };
        }
        None if in_syms.is_empty() && in_known != out_known => {
            bail!(Shape, "Reshape: cannot reshape {dims:?} ({in_known} elements) to {target:?} ({out_known} elements)")
        }
        None => {}
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Flatten

#[derive(Debug)]
pub struct Flatten {
    axis: i64,
}

impl Flatten {
    fn dims(&self, dims: &[Dim]) -> Result<Vec<Dim>> {
        let rank = dims.len() as i64;
        let axis = if self.axis < 0 { self.axis + rank } else { self.axis };
        if !(0..=rank).contains(&axis) {
            bail!(Shape, "Flatten: axis {} is out of range for rank {rank}", self.axis);
        }
        let (outer, inner) = dims.split_at(axis as usize);
        Ok(vec![dims_product(outer), dims_product(inner)])
    }
}

impl Op for Flatten {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let shape = x.shape.as_deref().map(|d| self.dims(d)).transpose()?;
        fold_small(self, inputs, vec![fact_of(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let dims = self.dims(&known_dims(x.shape()))?;
        Ok(vec![x.clone().reshape(concrete(&dims)?)?])
    }
}

// ---------------------------------------------------------------------------------------------
// Squeeze, Unsqueeze

#[derive(Debug)]
pub struct Squeeze {
    axes: IntsArg,
}

/// Squeeze's output dims; `None` when the rank cannot be known (no axes and a dim that might be 1).
fn squeeze_dims(dims: &[Dim], axes: Option<&[i64]>) -> Result<Option<Vec<Dim>>> {
    match axes {
        Some(axes) if !axes.is_empty() => {
            let axes = normalize_axes("Squeeze", axes, dims.len())?;
            for &a in &axes {
                if let Dim::Known(n) = dims[a] {
                    if n != 1 {
                        bail!(Shape, "Squeeze: axis {a} has size {n}, not 1");
                    }
                }
            }
            Ok(Some(dims.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, d)| d.clone()).collect()))
        }
        _ if dims.iter().any(|d| d.known().is_none()) => Ok(None),
        _ => Ok(Some(dims.iter().filter(|d| **d != Dim::Known(1)).cloned().collect())),
    }
}

impl Op for Squeeze {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let shape = match (&x.shape, self.axes.infer(inputs)?) {
            (Some(dims), Some(axes)) => squeeze_dims(dims, axes.as_deref())?,
            _ => None,
        };
        fold_small(self, inputs, vec![fact_of(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let axes = self.axes.eval(inputs)?;
        let dims = squeeze_dims(&known_dims(x.shape()), axes.as_deref())?.unwrap_or_default();
        Ok(vec![x.clone().reshape(concrete(&dims)?)?])
    }
}

#[derive(Debug)]
pub struct Unsqueeze {
    axes: IntsArg,
}

fn unsqueeze_dims(dims: &[Dim], axes: Option<&[i64]>) -> Result<Vec<Dim>> {
    let Some(axes) = axes else { bail!(InvalidModel, "Unsqueeze needs axes") };
    let axes = normalize_axes("Unsqueeze", axes, dims.len() + axes.len())?;
    let mut rest = dims.iter();
    let out = (0..dims.len() + axes.len())
        .map(|i| if axes.contains(&i) { Some(Dim::Known(1)) } else { rest.next().cloned() })
        .collect::<Option<Vec<Dim>>>();
    out.ok_or_else(|| err!(Shape, "Unsqueeze: axes {axes:?} do not fit rank {}", dims.len()))
}

impl Op for Unsqueeze {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let shape = match (&x.shape, self.axes.infer(inputs)?) {
            (Some(dims), Some(axes)) => Some(unsqueeze_dims(dims, axes.as_deref())?),
            _ => None,
        };
        fold_small(self, inputs, vec![fact_of(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let dims = unsqueeze_dims(&known_dims(x.shape()), self.axes.eval(inputs)?.as_deref())?;
        Ok(vec![x.clone().reshape(concrete(&dims)?)?])
    }
}

// ---------------------------------------------------------------------------------------------
// Shape, Size

#[derive(Debug)]
pub struct Shape {
    start: i64,
    end: Option<i64>,
}

fn build_shape(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let (start, end) = if ctx.opset >= 15 { (ctx.attrs.int_or("start", 0)?, ctx.attrs.int("end")?) } else { (0, None) };
    Ok(Box::new(Shape { start, end }))
}

impl Shape {
    /// The range of dims reported, clamped to the rank as the spec asks.
    fn range(&self, rank: usize) -> std::ops::Range<usize> {
        let r = rank as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let start = clamp(self.start);
        let end = clamp(self.end.unwrap_or(r));
        start..end.max(start)
    }
}

impl Op for Shape {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let Some(dims) = &x.shape else { return Ok(vec![Fact::new(DType::I64, vec![Dim::Unknown])]) };
        let dims = &dims[self.range(dims.len())];
        Ok(vec![match concrete(dims) {
            Ok(d) => Fact::constant(Arc::new(Tensor::vector(d.into_iter().map(|v| v as i64).collect()))),
            Err(_) => Fact::concrete(DType::I64, &[dims.len()]),
        }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let dims = &x.shape()[self.range(x.rank())];
        Ok(vec![Tensor::vector(dims.iter().map(|&v| v as i64).collect())])
    }
}

#[derive(Debug)]
pub struct Size;

impl Op for Size {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        Ok(vec![match x.shape.as_deref().map(dims_product) {
            Some(Dim::Known(n)) => Fact::constant(Arc::new(Tensor::scalar(n as i64))),
            _ => Fact::new(DType::I64, vec![]),
        }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![Tensor::scalar(input(inputs, 0)?.len() as i64)])
    }
}

/// Building ops and running them in unit tests, shared by every shape and index op file.
#[cfg(test)]
pub(crate) mod testing {
    use crate::ir::{Attr, Tensor};
    pub use crate::ops::activation::test_util::build;
    use crate::Result;

    /// Builds a single-output op and runs it.
    pub fn run(op_type: &str, opset: i64, attrs: Vec<(&str, Attr)>, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
        Ok(build(op_type, opset, attrs, 1)?.eval(inputs)?.remove(0))
    }

    pub fn ints(v: &[i64]) -> Attr {
        Attr::Ints(v.to_vec())
    }

    /// 0, 1, 2, ... as f32 in the given shape.
    pub fn iota(shape: &[usize]) -> Tensor {
        let n = shape.iter().product::<usize>();
        Tensor::new(shape.to_vec(), (0..n).map(|v| v as f32).collect()).unwrap()
    }

    pub fn f32s(t: &Tensor) -> Vec<f32> {
        t.as_slice::<f32>().unwrap().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::ir::Attr;

    fn sym(s: &str) -> Dim {
        Dim::Symbol(s.into())
    }

    #[test]
    fn reshape_handles_zero_and_minus_one() {
        let x = iota(&[2, 3, 4]);
        let shape = |v: &[i64]| Tensor::vector(v.to_vec());
        for (target, want) in [
            (vec![2, 0, 4, 1], vec![2, 3, 4, 1]),
            (vec![2, 0, 1, -1], vec![2, 3, 1, 4]),
            (vec![-1, 2, 3, 4], vec![1, 2, 3, 4]),
            (vec![2, -1, 2], vec![2, 6, 2]),
        ] {
            let y = run("Reshape", 21, vec![], &[Some(&x), Some(&shape(&target))]).unwrap();
            assert_eq!(y.shape(), &want[..]);
        }
        let x0 = Tensor::new(vec![0, 3, 4], Vec::<f32>::new()).unwrap();
        let y = run("Reshape", 14, vec![("allowzero", Attr::Int(1))], &[Some(&x0), Some(&shape(&[3, 4, 0]))]).unwrap();
        assert_eq!(y.shape(), &[3, 4, 0]);
        let y = run("Reshape", 1, vec![("shape", ints(&[4, -1]))], &[Some(&x)]).unwrap();
        assert_eq!(y.shape(), &[4, 6]);
    }

    #[test]
    fn reshape_rejects_bad_shapes() {
        let x = iota(&[2, 3]);
        for bad in [vec![4, 2], vec![-1, -1], vec![-2, 3], vec![0, 0, 0]] {
            let e = run("Reshape", 13, vec![], &[Some(&x), Some(&Tensor::vector(bad.clone()))]).unwrap_err();
            assert!(e.message.contains("Reshape"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn reshape_infers_symbolic_dims() {
        let x = Fact::new(DType::F32, vec![sym("N"), Dim::Known(3), Dim::Known(4)]);
        let op = build("Reshape", 13, vec![], 1).unwrap();
        let shape = |v: Vec<i64>| Fact::constant(Arc::new(Tensor::vector(v)));
        let out = op.infer(&[Some(&x), Some(&shape(vec![0, -1]))]).unwrap();
        assert_eq!(out[0].shape, Some(vec![sym("N"), Dim::Known(12)]));
        let out = op.infer(&[Some(&x), Some(&shape(vec![12, -1]))]).unwrap();
        assert_eq!(out[0].shape, Some(vec![Dim::Known(12), sym("N")]));
        let out = op.infer(&[Some(&x), Some(&shape(vec![2, -1]))]).unwrap();
        assert_eq!(out[0].shape, Some(vec![Dim::Known(2), Dim::Unknown]));
        // A shape computed at run time still gives the rank.
        let dynamic = Fact::concrete(DType::I64, &[3]);
        let out = op.infer(&[Some(&x), Some(&dynamic)]).unwrap();
        assert_eq!(out[0].shape, Some(vec![Dim::Unknown; 3]));
    }

    #[test]
    fn shape_subgraph_folds_during_inference() {
        // Shape(x) with x fully known is a constant; Reshape to it then has a known shape.
        let x = Fact::concrete(DType::F32, &[2, 3, 4]);
        let shape = build("Shape", 15, vec![("start", Attr::Int(1))], 1).unwrap().infer(&[Some(&x)]).unwrap();
        assert_eq!(shape[0].value.as_ref().unwrap().as_slice::<i64>().unwrap(), &[3, 4]);
        let y = Fact::concrete(DType::F32, &[12]);
        let out = build("Reshape", 13, vec![], 1).unwrap().infer(&[Some(&y), Some(&shape[0])]).unwrap();
        assert_eq!(out[0].concrete_shape(), Some(vec![3, 4]));
        let size = build("Size", 13, vec![], 1).unwrap().infer(&[Some(&x)]).unwrap();
        assert_eq!(size[0].value.as_ref().unwrap().as_slice::<i64>().unwrap(), &[24]);
        // A symbolic dim outside the requested range does not stop the value.
        let xs = Fact::new(DType::F32, vec![sym("N"), Dim::Known(3)]);
        let op = build("Shape", 15, vec![("start", Attr::Int(-1))], 1).unwrap();
        assert_eq!(op.infer(&[Some(&xs)]).unwrap()[0].value.as_ref().unwrap().as_slice::<i64>().unwrap(), &[3]);
        let op = build("Shape", 13, vec![], 1).unwrap();
        assert!(op.infer(&[Some(&xs)]).unwrap()[0].value.is_none());
    }

    #[test]
    fn shape_clamps_start_and_end() {
        let x = iota(&[3, 4, 5]);
        let cases = [(Some(-10), None, vec![3, 4, 5]), (None, Some(10), vec![3, 4, 5]), (Some(2), Some(1), vec![])];
        for (start, end, want) in cases {
            let mut attrs = vec![];
            if let Some(s) = start {
                attrs.push(("start", Attr::Int(s)));
            }
            if let Some(e) = end {
                attrs.push(("end", Attr::Int(e)));
            }
            let y = run("Shape", 15, attrs, &[Some(&x)]).unwrap();
            assert_eq!(y.as_slice::<i64>().unwrap(), &want[..]);
        }
        let s = run("Size", 1, vec![], &[Some(&x)]).unwrap();
        assert_eq!((s.shape(), s.as_slice::<i64>().unwrap()), (&[][..], &[60i64][..]));
    }

    #[test]
    fn flatten_axes() {
        let x = iota(&[2, 3, 4, 5]);
        for (axis, want) in [(0, [1, 120]), (1, [2, 60]), (3, [24, 5]), (4, [120, 1]), (-1, [24, 5]), (-4, [1, 120])] {
            let y = run("Flatten", 13, vec![("axis", Attr::Int(axis))], &[Some(&x)]).unwrap();
            assert_eq!(y.shape(), &want);
        }
        assert!(run("Flatten", 13, vec![("axis", Attr::Int(5))], &[Some(&x)]).is_err());
        let f = Fact::new(DType::F32, vec![sym("N"), Dim::Known(3), Dim::Known(4)]);
        let out = build("Flatten", 13, vec![], 1).unwrap().infer(&[Some(&f)]).unwrap();
        assert_eq!(out[0].shape, Some(vec![sym("N"), Dim::Known(12)]));
    }

    #[test]
    fn squeeze_and_unsqueeze() {
        let x = iota(&[1, 3, 1, 5]);
        let axes = Tensor::vector(vec![-2i64]);
        assert_eq!(run("Squeeze", 13, vec![], &[Some(&x), Some(&axes)]).unwrap().shape(), &[1, 3, 5]);
        assert_eq!(run("Squeeze", 13, vec![], &[Some(&x)]).unwrap().shape(), &[3, 5]);
        assert_eq!(run("Squeeze", 11, vec![("axes", ints(&[0]))], &[Some(&x)]).unwrap().shape(), &[3, 1, 5]);
        let e = run("Squeeze", 13, vec![], &[Some(&x), Some(&Tensor::vector(vec![1i64]))]).unwrap_err();
        assert!(e.message.contains("not 1"), "{e}");

        let x = iota(&[3, 4, 5]);
        let axes = Tensor::vector(vec![5i64, 4, 2]);
        assert_eq!(run("Unsqueeze", 13, vec![], &[Some(&x), Some(&axes)]).unwrap().shape(), &[3, 4, 1, 5, 1, 1]);
        assert_eq!(run("Unsqueeze", 1, vec![("axes", ints(&[0]))], &[Some(&x)]).unwrap().shape(), &[1, 3, 4, 5]);
        let e = run("Unsqueeze", 13, vec![], &[Some(&x), Some(&Tensor::vector(vec![1i64, 1]))]).unwrap_err();
        assert!(e.message.contains("twice"), "{e}");
        assert!(run("Unsqueeze", 13, vec![], &[Some(&x), Some(&Tensor::vector(vec![4i64]))]).is_err());
        // Symbolic dims pass through; unknown axes leave the rank unknown.
        let f = Fact::new(DType::F32, vec![sym("N")]);
        let op = build("Unsqueeze", 13, vec![], 1).unwrap();
        let axes = Fact::constant(Arc::new(Tensor::vector(vec![0i64])));
        assert_eq!(op.infer(&[Some(&f), Some(&axes)]).unwrap()[0].shape, Some(vec![Dim::Known(1), sym("N")]));
        let axes = Fact::concrete(DType::I64, &[1]);
        assert_eq!(op.infer(&[Some(&f), Some(&axes)]).unwrap()[0].shape, None);
    }

    #[test]
    fn unsqueeze_of_constants_folds() {
        let c = Fact::constant(Arc::new(Tensor::scalar(7i64)));
        let axes = Fact::constant(Arc::new(Tensor::vector(vec![0i64])));
        let out = build("Unsqueeze", 13, vec![], 1).unwrap().infer(&[Some(&c), Some(&axes)]).unwrap();
        let v = out[0].value.as_ref().unwrap();
        assert_eq!((v.shape(), v.as_slice::<i64>().unwrap()), (&[1][..], &[7i64][..]));
    }
}
