//! Ops that cut tensors apart or put them together: Slice, Concat, Split, Pad.

use super::reshape::{const_ints, fact_of, fold_small, lanes, normalize_axes, numel, strides, with_capacity, IntsArg};
use super::transpose::copy_view;
use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::shape::normalize_axis;
use crate::ir::tensor::checked_len;
use crate::ir::{DType, Dim, Elem, Fact, Tensor};
use crate::{bail, dispatch_words, err, Result};

pub fn register(r: &mut Registry) {
    r.add("Slice", build_slice);
    r.add("Concat", |ctx| {
        // Concat-1 made the axis optional, defaulting to 1.
        let axis = if ctx.opset < 4 { ctx.attrs.int_or("axis", 1)? } else { ctx.attrs.req_int("axis")? };
        Ok(Box::new(Concat { axis }))
    });
    r.add("Split", build_split);
    r.add("Pad", build_pad);
}

/// Copies `len` elements starting at `start` of `src` (any dtype) onto the end of `out`.
fn take_range<T: Elem>(out: &mut Vec<T>, src: &[T], start: usize, len: usize) -> Result<()> {
    let chunk = src.get(start..start + len).ok_or_else(|| err!(Runtime, "range {start}+{len} leaves {}", src.len()))?;
    out.extend_from_slice(chunk);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Slice

/// Opsets 1-9 give starts, ends and axes as attributes; later ones take them, and steps, as inputs.
#[derive(Debug)]
pub struct Slice {
    starts: IntsArg,
    ends: IntsArg,
    axes: IntsArg,
    steps: IntsArg,
}

fn build_slice(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let arg = |name: &str, index: usize| IntsArg::parse(ctx, name, 10, index);
    let op = Slice { starts: arg("starts", 1)?, ends: arg("ends", 2)?, axes: arg("axes", 3)?, steps: arg("steps", 4)? };
    if matches!(op.starts, IntsArg::Attr(None)) || matches!(op.ends, IntsArg::Attr(None)) {
        bail!(InvalidModel, "Slice-{} needs the starts and ends attributes", ctx.opset);
    }
    Ok(Box::new(op))
}

/// One axis of a slice, after the spec's clamping.
#[derive(Debug, Clone, Copy)]
struct AxisSlice {
    axis: usize,
    start: i64,
    end: i64,
    step: i64,
}

impl AxisSlice {
    /// First index and element count along an axis of size `dim`.
    fn range(&self, dim: usize) -> (usize, usize) {
        let (d, step) = (dim as i128, self.step as i128);
        let adjust = |v: i64| if v < 0 { v as i128 + d } else { v as i128 };
        let (start, end) = (adjust(self.start), adjust(self.end));
        if step > 0 {
            let (s, e) = (start.clamp(0, d), end.clamp(0, d));
            (s as usize, if e > s { ((e - s - 1) / step + 1) as usize } else { 0 })
        } else if dim == 0 {
            (0, 0)
        } else {
            let (s, e) = (start.clamp(0, d - 1), end.clamp(-1, d - 1));
            (s as usize, if s > e { ((s - e - 1) / -step + 1) as usize } else { 0 })
        }
    }

    /// The output dim for an input dim that may be symbolic: whole-axis slices keep the symbol.
    fn dim(&self, dim: &Dim) -> Dim {
        match dim {
            Dim::Known(d) => Dim::Known(self.range(*d).1),
            _ if self.step == 1 && self.start == 0 && self.end >= i32::MAX as i64 => dim.clone(),
            _ if self.step == -1 && self.start == -1 && self.end <= i32::MIN as i64 => dim.clone(),
            _ => Dim::Unknown,
        }
    }
}

/// Pairs starts, ends, axes and steps into per-axis slices for a rank-`rank` input.
fn axis_slices(
    rank: usize,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Vec<AxisSlice>> {
    let n = starts.len();
    let default_axes: Vec<i64> = (0..n as i64).collect();
    let axes = normalize_axes("Slice", axes.unwrap_or(&default_axes), rank)?;
    if ends.len() != n || axes.len() != n || steps.is_some_and(|s| s.len() != n) {
        bail!(Shape, "Slice: starts, ends, axes and steps differ in length ({n} starts, {} ends)", ends.len());
    }
    (0..n)
        .map(|i| {
            let step = steps.map_or(1, |s| s[i]);
            if step == 0 {
                bail!(Shape, "Slice: step 0 on axis {}", axes[i]);
            }
            Ok(AxisSlice { axis: axes[i], start: starts[i], end: ends[i], step })
        })
        .collect()
}

impl Slice {
    /// The per-axis slices, or `None` during inference while an input's value is unknown.
    fn slices(
        &self,
        rank: usize,
        values: impl Fn(&IntsArg) -> Result<Option<Option<Vec<i64>>>>,
    ) -> Result<Option<Vec<AxisSlice>>> {
        let (Some(Some(starts)), Some(Some(ends)), Some(axes), Some(steps)) =
            (values(&self.starts)?, values(&self.ends)?, values(&self.axes)?, values(&self.steps)?)
        else {
            return Ok(None);
        };
        axis_slices(rank, &starts, &ends, axes.as_deref(), steps.as_deref()).map(Some)
    }
}

impl Slice {
    /// What the slice of an input of `shape` reads, given the op's `inputs` (starts, ends, axes,
    /// steps): the output shape, the flat offset of its first element and the input stride of
    /// each output axis (negative for negative steps). For backend kernels that slice themselves.
    pub fn view(&self, shape: &[usize], inputs: &[Option<&Tensor>]) -> Result<(Vec<usize>, isize, Vec<isize>)> {
        let values = |a: &IntsArg| a.eval(inputs).map(Some);
        let slices =
            self.slices(shape.len(), values)?.ok_or_else(|| err!(InvalidModel, "Slice needs starts and ends"))?;
        let mut view = shape.to_vec();
        let mut strides: Vec<isize> = strides(shape).into_iter().map(|s| s as isize).collect();
        let mut start = 0isize;
        for s in slices {
            let (first, count) = s.range(view[s.axis]);
            start = start.wrapping_add((first as isize).wrapping_mul(strides[s.axis]));
            view[s.axis] = count;
            // A huge step only ever reaches one element; its stride is then irrelevant.
            strides[s.axis] = if count > 1 { strides[s.axis].wrapping_mul(s.step as isize) } else { 0 };
        }
        Ok((view, start, strides))
    }
}

impl Op for Slice {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let Some(dims) = &x.shape else { return Ok(vec![fact_of(x.dtype, None)]) };
        let values = |a: &IntsArg| a.infer(inputs);
        let shape = match self.slices(dims.len(), values)? {
            Some(slices) => {
                let mut out = dims.clone();
                for s in slices {
                    out[s.axis] = s.dim(&dims[s.axis]);
                }
                out
            }
            None => vec![Dim::Unknown; dims.len()],
        };
        fold_small(self, inputs, vec![fact_of(x.dtype, Some(shape))])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let (view, start, strides) = self.view(x.shape(), inputs)?;
        Ok(vec![copy_view(x, view.clone(), &view, start, &strides)?])
    }
}

// ---------------------------------------------------------------------------------------------
// Concat

#[derive(Debug)]
pub struct Concat {
    axis: i64,
}

impl Concat {
    /// The axis as given (it may count from the end).
    pub fn axis(&self) -> i64 {
        self.axis
    }
}

impl Op for Concat {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let facts: Vec<&Fact> = inputs.iter().flatten().copied().collect();
        let dtype = facts.iter().find_map(|f| f.dtype);
        let Some(rank) = facts.iter().find_map(|f| f.rank()) else { return Ok(vec![fact_of(dtype, None)]) };
        let axis = normalize_axis(self.axis, rank)?;
        let mut out: Vec<Dim> = vec![Dim::Unknown; rank];
        let mut total = Some(0usize);
        for f in &facts {
            let Some(dims) = &f.shape else {
                total = None;
                continue;
            };
            if dims.len() != rank {
                bail!(Shape, "Concat: inputs have ranks {rank} and {}", dims.len());
            }
            for (i, d) in dims.iter().enumerate() {
                if i == axis {
                    total = total.zip(d.known()).and_then(|(t, d)| t.checked_add(d));
                    continue;
                }
                match (&out[i], d) {
                    (Dim::Known(a), Dim::Known(b)) if a != b => {
                        bail!(Shape, "Concat: inputs disagree on dim {i} ({a} vs {b}) outside axis {axis}")
                    }
                    (Dim::Known(_), _) | (_, Dim::Unknown) => {}
                    (Dim::Symbol(_), Dim::Symbol(_)) => {}
                    _ => out[i] = d.clone(),
                }
            }
        }
        out[axis] = match (total, facts.as_slice()) {
            (Some(t), _) => Dim::Known(t),
            (None, [only]) => only.shape.as_ref().map_or(Dim::Unknown, |s| s[axis].clone()),
            _ => Dim::Unknown,
        };
        fold_small(self, inputs, vec![fact_of(dtype, Some(out))])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let xs = (0..inputs.len()).map(|i| input(inputs, i)).collect::<Result<Vec<_>>>()?;
        let first = xs.first().ok_or_else(|| err!(InvalidModel, "Concat needs at least one input"))?;
        let axis = normalize_axis(self.axis, first.rank())?;
        let mut out_shape = first.shape().to_vec();
        out_shape[axis] = 0;
        for x in &xs {
            let same = x.rank() == first.rank()
                && x.shape().iter().zip(first.shape()).enumerate().all(|(i, (a, b))| i == axis || a == b);
            if !same {
                bail!(Shape, "Concat: shapes {:?} and {:?} differ outside axis {axis}", first.shape(), x.shape());
            }
            out_shape[axis] = out_shape[axis]
                .checked_add(x.shape()[axis])
                .ok_or_else(|| err!(ResourceLimit, "Concat: output dim overflows"))?;
        }
        if checked_len(&out_shape, first.dtype())? == 0 {
            return Ok(vec![Tensor::zeros(first.dtype(), out_shape)?]);
        }
        let (outer, _, inner) = lanes(first.shape(), axis);
        if let Some(x) = xs.iter().find(|x| x.dtype() != first.dtype()) {
            bail!(Shape, "Concat: inputs must have one dtype, got {} and {}", first.dtype(), x.dtype());
        }
        dispatch_words!(first.dtype(); W => {
            let mut out = with_capacity(checked_len(&out_shape, first.dtype())?)?;
            let slices = xs.iter().map(|x| x.as_words::<W>()).collect::<Result<Vec<_>>>()?;
            for o in 0..outer {
                for (x, src) in xs.iter().zip(&slices) {
                    let chunk = x.shape()[axis].saturating_mul(inner);
                    take_range(&mut out, src, o * chunk, chunk)?;
                }
            }
            Ok(vec![Tensor::from_words(first.dtype(), out_shape, out)?])
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Split

#[derive(Debug)]
pub struct Split {
    axis: i64,
    split: IntsArg,
    /// Opset 18's `num_outputs`: equal chunks, the last one smaller if need be.
    num_outputs: Option<i64>,
    outputs: usize,
    opset: i64,
}

fn build_split(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    // Split-1 takes `split` as an attribute or as input 1; 2 and 11 only as an attribute.
    let split = if ctx.opset < 2 { IntsArg::parse(ctx, "split", 1, 1)? } else { IntsArg::parse(ctx, "split", 13, 1)? };
    let num_outputs = if ctx.opset >= 18 { ctx.attrs.int("num_outputs")? } else { None };
    if num_outputs.is_some_and(|n| n != ctx.num_outputs as i64) {
        bail!(InvalidModel, "Split: num_outputs {:?} but the node has {} outputs", num_outputs, ctx.num_outputs);
    }
    let axis = ctx.attrs.int_or("axis", 0)?;
    Ok(Box::new(Split { axis, split, num_outputs, outputs: ctx.num_outputs, opset: ctx.opset }))
}

impl Split {
    /// The size of each output along an axis of size `dim`.
    fn sizes(&self, dim: usize, split: Option<&[i64]>) -> Result<Vec<usize>> {
        let n = self.outputs;
        if let Some(split) = split.filter(|s| !s.is_empty()) {
            let sizes = split
                .iter()
                .map(|&s| usize::try_from(s).map_err(|_| err!(Shape, "Split: negative size in split {split:?}")))
                .collect::<Result<Vec<_>>>()?;
            if sizes.len() != n || sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s)) != Some(dim) {
                bail!(Shape, "Split: split {split:?} does not cut a dim of {dim} into {n} outputs");
            }
            return Ok(sizes);
        }
        if n == 0 {
            bail!(InvalidModel, "Split has no outputs");
        }
        if dim.is_multiple_of(n) {
            return Ok(vec![dim / n; n]);
        }
        let chunk = dim.div_ceil(n);
        if (self.num_outputs.is_none() && self.opset < 18) || chunk * (n - 1) > dim {
            bail!(Shape, "Split: a dim of {dim} does not split into {n} outputs");
        }
        let mut sizes = vec![chunk; n];
        sizes[n - 1] = dim - chunk * (n - 1);
        Ok(sizes)
    }
}

impl Split {
    /// The axis of an input of `shape` and the size of each output along it, given the op's
    /// `inputs` (the split sizes). For backend kernels that split themselves.
    pub fn pieces(&self, shape: &[usize], inputs: &[Option<&Tensor>]) -> Result<(usize, Vec<usize>)> {
        let axis = normalize_axis(self.axis, shape.len())?;
        Ok((axis, self.sizes(shape[axis], self.split.eval(inputs)?.as_deref())?))
    }
}

impl Op for Split {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let Some(dims) = &x.shape else { return Ok(vec![fact_of(x.dtype, None); self.outputs]) };
        let axis = normalize_axis(self.axis, dims.len())?;
        let sizes: Vec<Dim> = match (&dims[axis], self.split.infer(inputs)?) {
            (Dim::Known(d), Some(split)) => self.sizes(*d, split.as_deref())?.into_iter().map(Dim::Known).collect(),
            (_, Some(Some(split))) if split.len() == self.outputs => {
                split.iter().map(|&s| Dim::Known(s.max(0) as usize)).collect()
            }
            _ => vec![Dim::Unknown; self.outputs],
        };
        let facts = sizes
            .into_iter()
            .map(|s| {
                let mut d = dims.clone();
                d[axis] = s;
                fact_of(x.dtype, Some(d))
            })
            .collect();
        fold_small(self, inputs, facts)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let axis = normalize_axis(self.axis, x.rank())?;
        let dim = x.shape()[axis];
        let sizes = self.sizes(dim, self.split.eval(inputs)?.as_deref())?;
        let shape_of = |size: usize| {
            let mut shape = x.shape().to_vec();
            shape[axis] = size;
            shape
        };
        if x.is_empty() {
            return sizes.iter().map(|&s| Tensor::zeros(x.dtype(), shape_of(s))).collect();
        }
        let (outer, _, inner) = lanes(x.shape(), axis);
        if outer == 1 {
            // Each output is one run of the input: a view, no copy.
            let mut start = 0;
            return sizes
                .iter()
                .map(|&size| {
                    let t = x.view(shape_of(size), start * inner);
                    start += size;
                    t
                })
                .collect();
        }
        dispatch_words!(x.dtype(); W => {
            let src = x.as_words::<W>()?;
            let mut offset = 0;
            sizes.iter().map(|&size| {
                let mut out = with_capacity(numel(&[outer, size, inner]))?;
                for o in 0..outer {
                    take_range(&mut out, src, (o * dim + offset) * inner, size * inner)?;
                }
                offset += size;
                Tensor::from_words(x.dtype(), shape_of(size), out)
            }).collect()
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Pad

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

#[derive(Debug)]
pub struct Pad {
    mode: PadMode,
    /// Opsets 1-10 give the pads (`paddings` in opset 1) and the fill value as attributes.
    legacy: Option<(Vec<i64>, f32)>,
    axes: IntsArg,
}

fn build_pad(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let mode = match ctx.attrs.string_or("mode", "constant".into())?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        m => bail!(Unsupported, "Pad: mode '{m}' is not supported"),
    };
    let legacy = if ctx.opset < 11 {
        let name = if ctx.opset < 2 { "paddings" } else { "pads" };
        Some((ctx.attrs.required(name, ctx.attrs.ints(name))?, ctx.attrs.float_or("value", 0.0)?))
    } else {
        None
    };
    let axes = if ctx.opset >= 18 { IntsArg::Input(3) } else { IntsArg::Attr(None) };
    Ok(Box::new(Pad { mode, legacy, axes }))
}

impl Pad {
    /// (begin, end) padding for every axis of a rank-`rank` input.
    fn per_axis(&self, rank: usize, pads: &[i64], axes: Option<&[i64]>) -> Result<Vec<(i64, i64)>> {
        let all: Vec<i64> = (0..rank as i64).collect();
        let axes = normalize_axes("Pad", axes.unwrap_or(&all), rank)?;
        if pads.len() != 2 * axes.len() {
            bail!(Shape, "Pad: {} pads for {} axes, expected twice as many", pads.len(), axes.len());
        }
        let mut out = vec![(0, 0); rank];
        for (i, &a) in axes.iter().enumerate() {
            out[a] = (pads[i], pads[i + axes.len()]);
        }
        Ok(out)
    }

    /// The padding of an f32 input of rank `rank` given the op's `inputs`: the mode, (begin, end)
    /// per axis and the fill value. For backend kernels that pad themselves.
    #[allow(clippy::type_complexity)]
    pub fn geometry(&self, rank: usize, inputs: &[Option<&Tensor>]) -> Result<(PadMode, Vec<(i64, i64)>, f32)> {
        let (pads, fill) = match &self.legacy {
            Some((p, v)) => (p.clone(), *v),
            None => {
                let fill = match opt_input(inputs, 2).filter(|v| !v.is_empty()) {
                    Some(v) => v.cast_numeric(DType::F32)?.as_slice::<f32>()?[0],
                    None => 0.0,
                };
                (input(inputs, 1)?.to_i64_vec()?, fill)
            }
        };
        Ok((self.mode, self.per_axis(rank, &pads, self.axes.eval(inputs)?.as_deref())?, fill))
    }

    fn out_dim(dim: usize, (begin, end): (i64, i64)) -> Result<usize> {
        let d = (dim as i128) + begin as i128 + end as i128;
        usize::try_from(d).map_err(|_| err!(Shape, "Pad: pads ({begin}, {end}) on a dim of {dim} leave {d} elements"))
    }
}

/// Where output position `i` (relative to the input's first element) reads from along an axis of
/// size `n`, or `None` for the fill value.
fn pad_source(mode: PadMode, i: i128, n: i128) -> Option<i128> {
    match mode {
        _ if (0..n).contains(&i) => Some(i),
        PadMode::Constant => None,
        PadMode::Edge => Some(i.clamp(0, n - 1)),
        PadMode::Wrap => Some(i.rem_euclid(n)),
        PadMode::Reflect if n == 1 => Some(0),
        PadMode::Reflect => {
            let m = i.rem_euclid(2 * (n - 1));
            Some(if m < n { m } else { 2 * (n - 1) - m })
        }
    }
}

/// Writes the padded output: `maps[d][i]` is the input offset contribution of output index `i` on
/// axis `d` (`None` for fill), `block[d]` the number of elements below axis `d`.
pub(super) fn pad_fill<T: Clone>(
    src: &[T],
    maps: &[Vec<Option<usize>>],
    block: &[usize],
    base: usize,
    fill: &T,
    out: &mut Vec<T>,
) {
    let Some((map, rest)) = maps.split_first() else {
        out.push(src[base].clone());
        return;
    };
    if rest.is_empty() {
        // The last axis: elements, not a call per element.
        out.extend(map.iter().map(|m| m.map_or(fill, |m| &src[base.wrapping_add(m)]).clone()));
        return;
    }
    for m in map {
        match m {
            Some(m) => pad_fill(src, rest, &block[1..], base.wrapping_add(*m), fill, out),
            None => out.extend(std::iter::repeat_n(fill, block[0]).cloned()),
        }
    }
}

impl Op for Pad {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let Some(dims) = &x.shape else { return Ok(vec![fact_of(x.dtype, None)]) };
        let pads = match &self.legacy {
            Some((p, _)) => Some(p.clone()),
            None => const_ints(Some(input(inputs, 1)?))?,
        };
        let shape = match (pads, self.axes.infer(inputs)?) {
            (Some(pads), Some(axes)) => {
                let per_axis = self.per_axis(dims.len(), &pads, axes.as_deref())?;
                let pad_dim = |(d, &p): (&Dim, &(i64, i64))| match d {
                    Dim::Known(n) => Pad::out_dim(*n, p).map(Dim::Known),
                    _ if p == (0, 0) => Ok(d.clone()),
                    _ => Ok(Dim::Unknown),
                };
                dims.iter().zip(&per_axis).map(pad_dim).collect::<Result<_>>()?
            }
            _ => vec![Dim::Unknown; dims.len()],
        };
        fold_small(self, inputs, vec![fact_of(x.dtype, Some(shape))])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let (pads, fill) = match &self.legacy {
            Some((p, _)) if x.dtype() == DType::String => (p.clone(), Tensor::scalar(String::new())),
            Some((p, v)) => (p.clone(), Tensor::scalar(*v).cast_numeric(x.dtype())?),
            None => {
                let fill = match opt_input(inputs, 2).filter(|v| !v.is_empty()) {
                    Some(v) => v.clone(),
                    None => Tensor::zeros(x.dtype(), vec![])?,
                };
                (input(inputs, 1)?.to_i64_vec()?, fill)
            }
        };
        let per_axis = self.per_axis(x.rank(), &pads, self.axes.eval(inputs)?.as_deref())?;
        let out_shape =
            x.shape().iter().zip(&per_axis).map(|(&d, &p)| Pad::out_dim(d, p)).collect::<Result<Vec<_>>>()?;
        let n = checked_len(&out_shape, x.dtype())?;
        if n == 0 {
            return Ok(vec![Tensor::zeros(x.dtype(), out_shape)?]);
        }
        let strides = strides(x.shape());
        let mut maps = Vec::with_capacity(x.rank());
        for (d, (&dim, &(begin, _))) in x.shape().iter().zip(&per_axis).enumerate() {
            if dim == 0 && self.mode != PadMode::Constant {
                bail!(Shape, "Pad: cannot pad empty axis {d} in {:?} mode", self.mode);
            }
            let mut map = with_capacity(out_shape[d])?;
            // i128: a huge negative begin and a huge end can cancel out into a small output dim.
            let source = |o: usize| {
                let source = pad_source(self.mode, o as i128 - begin as i128, dim as i128);
                source.map(|i| (i as usize).wrapping_mul(strides[d]))
            };
            map.extend((0..out_shape[d]).map(source));
            maps.push(map);
        }
        let block: Vec<usize> = (0..x.rank()).map(|d| numel(&out_shape[d + 1..])).collect();
        if fill.dtype() != x.dtype() {
            bail!(Shape, "Pad: constant_value is {}, the input {}", fill.dtype(), x.dtype());
        }
        dispatch_words!(x.dtype(); W => {
            let fill = fill.as_words::<W>()?.first().cloned().unwrap_or_default();
            let mut out = with_capacity(n)?;
            pad_fill(x.as_words::<W>()?, &maps, &block, 0, &fill, &mut out);
            Ok(vec![Tensor::from_words(x.dtype(), out_shape, out)?])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::reshape::testing::*;
    use super::*;
    use crate::ir::Attr;
    use crate::ErrorKind;
    use std::sync::Arc;

    fn v(values: &[i64]) -> Tensor {
        Tensor::vector(values.to_vec())
    }

    fn i64s(t: &Tensor) -> Vec<i64> {
        t.as_slice::<i64>().unwrap().to_vec()
    }

    #[test]
    fn contiguous_slices_share_their_input_and_others_copy() {
        let x = Tensor::new(vec![4, 5], (0..20).collect::<Vec<i64>>()).unwrap();
        let slice = |starts: &[i64], ends: &[i64], axes: &[i64], steps: &[i64]| {
            let inputs = [v(starts), v(ends), v(axes), v(steps)];
            run(
                "Slice",
                13,
                vec![],
                &[Some(&x), Some(&inputs[0]), Some(&inputs[1]), Some(&inputs[2]), Some(&inputs[3])],
            )
            .unwrap()
        };
        // Rows 1..3 (all columns), and one row's middle: one run each.
        let rows = slice(&[1], &[3], &[0], &[1]);
        assert_eq!((rows.shape(), i64s(&rows)), (&[2, 5][..], (5..15).collect::<Vec<_>>()));
        assert!(rows.shares_storage(&x));
        let part = slice(&[2, 1], &[3, 4], &[0, 1], &[1, 1]);
        assert_eq!((part.shape(), i64s(&part)), (&[1, 3][..], vec![11, 12, 13]));
        assert!(part.shares_storage(&x));
        // Columns of several rows, and steps, are strided: copied.
        let cols = slice(&[1], &[3], &[1], &[1]);
        assert_eq!(i64s(&cols), [1, 2, 6, 7, 11, 12, 16, 17]);
        assert!(!cols.shares_storage(&x));
        assert!(!slice(&[0], &[4], &[0], &[2]).shares_storage(&x));
    }

    #[test]
    fn slices_with_steps_and_clamping() {
        let x = Tensor::new(vec![4, 5], (0..20).collect::<Vec<i64>>()).unwrap();
        // x[3:0:-2, ::-3] with INT_MIN as "to the start" -> [[19, 16], [9, 6]]
        let inputs = [v(&[3, -1]), v(&[0, i64::MIN]), v(&[0, 1]), v(&[-2, -3])];
        let y = run(
            "Slice",
            13,
            vec![],
            &[Some(&x), Some(&inputs[0]), Some(&inputs[1]), Some(&inputs[2]), Some(&inputs[3])],
        )
        .unwrap();
        assert_eq!((y.shape(), i64s(&y)), (&[2, 2][..], vec![19, 16, 9, 6]));
        // x[-1:-100:-1, 1:1000] clamps both ends.
        let (axes, steps) = (v(&[0, 1]), v(&[-1, 1]));
        let y = run(
            "Slice",
            13,
            vec![],
            &[Some(&x), Some(&v(&[-1, 1])), Some(&v(&[-100, 1000])), Some(&axes), Some(&steps)],
        )
        .unwrap();
        assert_eq!(y.shape(), &[4, 4]);
        // Start past the end gives an empty axis; INT_MAX ends mean "to the end".
        let y =
            run("Slice", 13, vec![], &[Some(&x), Some(&v(&[1000])), Some(&v(&[i64::MAX])), Some(&v(&[1]))]).unwrap();
        assert_eq!(y.shape(), &[4, 0]);
        let attrs = vec![("starts", ints(&[1])), ("ends", ints(&[2])), ("axes", ints(&[1]))];
        let y = run("Slice", 1, attrs, &[Some(&x)]).unwrap();
        assert_eq!(i64s(&y), [1, 6, 11, 16]);
        assert!(build("Slice", 9, vec![("starts", ints(&[1]))], 1).is_err());
    }

    #[test]
    fn slice_errors_and_inference() {
        let x = Tensor::new(vec![4, 5], (0..20).collect::<Vec<i64>>()).unwrap();
        let e = run("Slice", 13, vec![], &[Some(&x), Some(&v(&[0])), Some(&v(&[2])), Some(&v(&[0])), Some(&v(&[0]))])
            .unwrap_err();
        assert!(e.message.contains("step 0"), "{e}");
        assert!(run("Slice", 13, vec![], &[Some(&x), Some(&v(&[0, 0])), Some(&v(&[2]))]).is_err());
        assert!(run("Slice", 13, vec![], &[Some(&x), Some(&v(&[0])), Some(&v(&[2])), Some(&v(&[2]))]).is_err());
        // A whole-axis slice keeps a symbolic dim; a partial one loses it.
        let f = Fact::new(DType::F32, vec![Dim::Symbol("N".into()), Dim::Known(10)]);
        let c = |t: Tensor| Fact::constant(Arc::new(t));
        let (starts, ends) = (c(v(&[0, 2])), c(v(&[i64::MAX, -2])));
        let out = build("Slice", 13, vec![], 1).unwrap().infer(&[Some(&f), Some(&starts), Some(&ends)]).unwrap();
        assert_eq!(out[0].shape, Some(vec![Dim::Symbol("N".into()), Dim::Known(6)]));
        let (starts, ends) = (c(v(&[1])), c(v(&[3])));
        let out = build("Slice", 13, vec![], 1).unwrap().infer(&[Some(&f), Some(&starts), Some(&ends)]).unwrap();
        assert_eq!(out[0].shape, Some(vec![Dim::Unknown, Dim::Known(10)]));
    }

    #[test]
    fn concatenates_any_dtype() {
        let a = Tensor::new(vec![1, 2], vec!["a".to_string(), "b".into()]).unwrap();
        let b = Tensor::new(vec![2, 2], vec!["c".to_string(), "d".into(), "e".into(), "f".into()]).unwrap();
        let y = run("Concat", 13, vec![("axis", Attr::Int(0))], &[Some(&a), Some(&b)]).unwrap();
        assert_eq!(y.shape(), &[3, 2]);
        assert_eq!(y.as_slice::<String>().unwrap(), &["a", "b", "c", "d", "e", "f"]);
        let x = iota(&[2, 2]);
        let y = run("Concat", 13, vec![("axis", Attr::Int(-1))], &[Some(&x), Some(&x)]).unwrap();
        assert_eq!(f32s(&y), [0., 1., 0., 1., 2., 3., 2., 3.]);
        let e = run("Concat", 13, vec![("axis", Attr::Int(1))], &[Some(&a), Some(&b)]).unwrap_err();
        assert!(e.message.contains("differ outside axis"), "{e}");
        assert!(run("Concat", 13, vec![("axis", Attr::Int(0))], &[Some(&x), Some(&iota(&[2]))]).is_err());
        let f = Fact::new(DType::F32, vec![Dim::Symbol("N".into()), Dim::Known(2)]);
        let g = Fact::concrete(DType::F32, &[3, 2]);
        let out = build("Concat", 13, vec![("axis", Attr::Int(1))], 1).unwrap();
        assert!(out.infer(&[Some(&f), Some(&g)]).unwrap()[0].shape == Some(vec![Dim::Known(3), Dim::Known(4)]));
    }

    #[test]
    fn splits_evenly_unevenly_and_by_sizes() {
        let x = iota(&[7]);
        let outs = build("Split", 18, vec![("num_outputs", Attr::Int(4))], 4).unwrap().eval(&[Some(&x)]).unwrap();
        let shapes: Vec<_> = outs.iter().map(|t| t.shape()[0]).collect();
        assert_eq!(shapes, [2, 2, 2, 1]);
        assert_eq!(f32s(&outs[3]), [6.]);
        let x = iota(&[2, 6]);
        let outs =
            build("Split", 13, vec![("axis", Attr::Int(1))], 2).unwrap().eval(&[Some(&x), Some(&v(&[2, 4]))]).unwrap();
        assert_eq!(f32s(&outs[0]), [0., 1., 6., 7.]);
        assert_eq!(f32s(&outs[1]), [2., 3., 4., 5., 8., 9., 10., 11.]);
        let outs = build("Split", 11, vec![("axis", Attr::Int(-1)), ("split", ints(&[5, 1]))], 2)
            .unwrap()
            .eval(&[Some(&x)])
            .unwrap();
        assert_eq!(outs[1].shape(), &[2, 1]);
        let outs = build("Split", 2, vec![("axis", Attr::Int(1))], 3).unwrap().eval(&[Some(&x)]).unwrap();
        assert_eq!(f32s(&outs[2]), [4., 5., 10., 11.]);
        let e = build("Split", 13, vec![], 2).unwrap().eval(&[Some(&iota(&[5]))]).unwrap_err();
        assert!(e.message.contains("does not split"), "{e}");
        assert!(build("Split", 13, vec![], 2).unwrap().eval(&[Some(&iota(&[5])), Some(&v(&[2, 2]))]).is_err());
        assert!(build("Split", 13, vec![], 2).unwrap().eval(&[Some(&iota(&[5])), Some(&v(&[6, -1]))]).is_err());
        assert!(build("Split", 18, vec![("num_outputs", Attr::Int(3))], 2).is_err());
    }

    #[test]
    fn pads_in_every_mode() {
        let x = Tensor::vector(vec![1i64, 2, 3]);
        let pad = |mode: &str| {
            let y = run("Pad", 19, vec![("mode", Attr::String(mode.into()))], &[Some(&x), Some(&v(&[4, 5]))]).unwrap();
            i64s(&y)
        };
        // np.pad([1, 2, 3], (4, 5), mode)
        assert_eq!(pad("reflect"), [1, 2, 3, 2, 1, 2, 3, 2, 1, 2, 3, 2]);
        assert_eq!(pad("wrap"), [3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2]);
        assert_eq!(pad("edge"), [1, 1, 1, 1, 1, 2, 3, 3, 3, 3, 3, 3]);
        let y = Tensor::new(vec![2, 3], (0..6).collect::<Vec<i64>>()).unwrap();
        let out = run("Pad", 11, vec![], &[Some(&y), Some(&v(&[1, 0, 0, 2])), Some(&Tensor::scalar(9i64))]).unwrap();
        assert_eq!(out.shape(), &[3, 5]);
        assert_eq!(i64s(&out), [9, 9, 9, 9, 9, 0, 1, 2, 9, 9, 3, 4, 5, 9, 9]);
        // Negative pads crop; axes pick which dims the pads are for.
        let out = run("Pad", 18, vec![], &[Some(&y), Some(&v(&[-1, 0])), None, Some(&v(&[-1]))]).unwrap();
        assert_eq!((out.shape(), i64s(&out)), (&[2, 2][..], vec![1, 2, 4, 5]));
        let out = run("Pad", 2, vec![("pads", ints(&[0, 1, 0, 0])), ("value", Attr::Float(7.0))], &[Some(&y)]).unwrap();
        assert_eq!(i64s(&out)[..4], [7, 0, 1, 2]);
    }

    #[test]
    fn bad_pads_are_errors() {
        let y = iota(&[2, 3]);
        let e = run("Pad", 11, vec![], &[Some(&y), Some(&v(&[1, 1]))]).unwrap_err();
        assert!(e.message.contains("2 pads for 2 axes"), "{e}");
        assert!(run("Pad", 11, vec![], &[Some(&y), Some(&v(&[-3, 0, 0, 0]))]).is_err());
        let empty = iota(&[0, 3]);
        let reflect = vec![("mode", Attr::String("reflect".into()))];
        assert!(run("Pad", 11, reflect, &[Some(&empty), Some(&v(&[1, 0, 1, 0]))]).is_err());
        let e = run("Pad", 11, vec![], &[Some(&y), Some(&v(&[1 << 40, 0, 0, 0]))]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResourceLimit);
        assert!(build("Pad", 11, vec![("mode", Attr::String("mirror".into()))], 1).is_err());
    }
}
