//! Ops that pick elements by indices or masks read from tensor data: Gather, GatherElements,
//! GatherND, Compress, NonZero, OneHot, and Trilu's triangle masks. Every index is checked against
//! its axis; a bad one is an error naming the op, the index and the valid range. The index helpers
//! are shared with scatter.rs.

use super::reshape::{fact_of, fold_small, lanes, numel, scalar_int, strides, with_capacity};
use super::transpose::for_each_offset;
use super::{input, opt_input, same_as_input, Op, Registry};
use crate::ir::shape::normalize_axis;
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{DType, Dim, Elem, Fact, Tensor};
use crate::{bail, dispatch, dispatch_words, err, Result};

pub fn register(r: &mut Registry) {
    r.add("Gather", |ctx| Ok(Box::new(Gather { axis: ctx.attrs.int_or("axis", 0)? })));
    r.add("GatherElements", |ctx| Ok(Box::new(GatherElements { axis: ctx.attrs.int_or("axis", 0)? })));
    r.add("GatherND", |ctx| {
        let batch_dims = ctx.attrs.int_or("batch_dims", 0)?;
        let batch_dims =
            usize::try_from(batch_dims).map_err(|_| err!(InvalidModel, "GatherND: negative batch_dims"))?;
        Ok(Box::new(GatherND { batch_dims }))
    });
    r.add("Compress", |ctx| Ok(Box::new(Compress { axis: ctx.attrs.int("axis")? })));
    r.add("NonZero", |_| Ok(Box::new(NonZero)));
    r.add("OneHot", |ctx| Ok(Box::new(OneHot { axis: ctx.attrs.int_or("axis", -1)? })));
    r.add("Trilu", |ctx| Ok(Box::new(Trilu { upper: ctx.attrs.int_or("upper", 1)? != 0 })));
}

// ---------------------------------------------------------------------------------------------
// Index helpers

/// Resolves an index read from tensor data against an axis of size `dim`; negative ones count
/// from the end.
pub(crate) fn resolve_index(op: &str, index: i64, dim: usize) -> Result<usize> {
    let d = dim as i64;
    let i = if index < 0 { index + d } else { index };
    if i < 0 || i >= d {
        bail!(Runtime, "{op}: index {index} is out of range for an axis of size {dim} (valid: {} to {})", -d, d - 1);
    }
    Ok(i as usize)
}

/// For GatherElements and ScatterElements: the flat offset into `data` of every element of
/// `indices`, which has `data`'s rank and picks a position along `axis`.
pub(crate) fn element_offsets(op: &str, data: &[usize], indices: &Tensor, axis: usize) -> Result<Vec<usize>> {
    let shape = indices.shape();
    let fits = shape.len() == data.len() && shape.iter().zip(data).enumerate().all(|(d, (i, n))| d == axis || i <= n);
    if !fits {
        bail!(Shape, "{op}: indices of shape {shape:?} do not fit data of shape {data:?} on axis {axis}");
    }
    let picks =
        indices.to_i64_vec()?.into_iter().map(|i| resolve_index(op, i, data[axis])).collect::<Result<Vec<_>>>()?;
    let strides = strides(data);
    let mut view_strides: Vec<isize> = strides.iter().map(|&s| s as isize).collect();
    view_strides[axis] = 0;
    let mut offsets = with_capacity(picks.len())?;
    for_each_offset(shape, &view_strides, 0, |b| offsets.push(b as usize));
    for (off, p) in offsets.iter_mut().zip(picks) {
        *off = off.wrapping_add(p.wrapping_mul(strides[axis]));
    }
    Ok(offsets)
}

/// For GatherND and ScatterND: the flat offset into `data` of the slice every index tuple (the last
/// axis of `indices`) selects, after `batch_dims` leading dims shared by both; and the slice length.
pub(crate) fn nd_offsets(op: &str, data: &[usize], indices: &Tensor, batch_dims: usize) -> Result<(Vec<usize>, usize)> {
    let shape = indices.shape();
    let Some((&k, lead)) = shape.split_last() else { bail!(Shape, "{op}: indices must have rank 1 or more") };
    if batch_dims > lead.len() || batch_dims >= data.len() || k > data.len() - batch_dims {
        bail!(Shape, "{op}: indices of shape {shape:?} do not fit data of shape {data:?} (batch_dims {batch_dims})");
    }
    if lead[..batch_dims] != data[..batch_dims] {
        bail!(Shape, "{op}: batch dims of indices {shape:?} and data {data:?} differ");
    }
    let len = numel(&data[batch_dims + k..]);
    let tuples = numel(lead);
    if len == 0 || tuples == 0 {
        return Ok((vec![], len));
    }
    let idx = indices.to_i64_vec()?;
    let strides = strides(data);
    let batch_stride = numel(&data[batch_dims..]);
    let per_batch = numel(&lead[batch_dims..]);
    let mut offsets = with_capacity(tuples)?;
    for t in 0..tuples {
        let mut off = (t / per_batch).wrapping_mul(batch_stride);
        for (j, &i) in idx[t * k..(t + 1) * k].iter().enumerate() {
            let axis = batch_dims + j;
            off = off.wrapping_add(resolve_index(op, i, data[axis])?.wrapping_mul(strides[axis]));
        }
        offsets.push(off);
    }
    Ok((offsets, len))
}

/// `x` with positions `picks` taken along `axis`, the picks laid out in shape `picks_shape`.
fn take_along_axis(x: &Tensor, axis: usize, picks: &[usize], picks_shape: &[usize]) -> Result<Tensor> {
    let shape = x.shape();
    let out_shape = [&shape[..axis], picks_shape, &shape[axis + 1..]].concat();
    let (outer, dim, inner) = lanes(shape, axis);
    let n = checked_len(&out_shape, x.dtype())?;
    if n == 0 {
        return Tensor::zeros(x.dtype(), out_shape);
    }
    dispatch_words!(x.dtype(); W => {
        let src = x.as_words::<W>()?;
        let mut out = with_capacity(n)?;
        for o in 0..outer {
            for &p in picks {
                out.extend_from_slice(&src[(o * dim + p) * inner..][..inner]);
            }
        }
        Tensor::from_words(x.dtype(), out_shape, out)
    })
}

/// Copies `len` elements from each offset in turn.
fn copy_slices<T: Elem>(src: &[T], offsets: &[usize], len: usize, n: usize) -> Result<Vec<T>> {
    let mut out = with_capacity(n)?;
    for &off in offsets {
        let chunk = src.get(off..off.saturating_add(len));
        out.extend_from_slice(chunk.ok_or_else(|| err!(Runtime, "slice at {off} leaves {} elements", src.len()))?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Gather, GatherElements, GatherND

#[derive(Debug)]
pub struct Gather {
    axis: i64,
}

impl Gather {
    /// The axis as given (it may count from the end).
    pub fn axis(&self) -> i64 {
        self.axis
    }
}

impl Op for Gather {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (data, indices) = (input(inputs, 0)?, input(inputs, 1)?);
        let shape = match (&data.shape, &indices.shape) {
            (Some(d), Some(i)) => {
                let axis = normalize_axis(self.axis, d.len())?;
                Some([&d[..axis], i, &d[axis + 1..]].concat())
            }
            _ => None,
        };
        fold_small(self, inputs, vec![fact_of(data.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (data, indices) = (input(inputs, 0)?, input(inputs, 1)?);
        let axis = normalize_axis(self.axis, data.rank())?;
        let dim = data.shape()[axis];
        let picks =
            indices.to_i64_vec()?.into_iter().map(|i| resolve_index("Gather", i, dim)).collect::<Result<Vec<_>>>()?;
        Ok(vec![take_along_axis(data, axis, &picks, indices.shape())?])
    }
}

#[derive(Debug)]
pub struct GatherElements {
    axis: i64,
}

impl Op for GatherElements {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (data, indices) = (input(inputs, 0)?, input(inputs, 1)?);
        fold_small(self, inputs, vec![fact_of(data.dtype, indices.shape.clone())])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (data, indices) = (input(inputs, 0)?, input(inputs, 1)?);
        let axis = normalize_axis(self.axis, data.rank())?;
        let offsets = element_offsets("GatherElements", data.shape(), indices, axis)?;
        dispatch_words!(data.dtype(); W => {
            let out = copy_slices(data.as_words::<W>()?, &offsets, 1, offsets.len())?;
            Ok(vec![Tensor::from_words(data.dtype(), indices.shape().to_vec(), out)?])
        })
    }
}

#[derive(Debug)]
pub struct GatherND {
    batch_dims: usize,
}

impl Op for GatherND {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (data, indices) = (input(inputs, 0)?, input(inputs, 1)?);
        let shape = match (&data.shape, &indices.shape) {
            (Some(d), Some(i)) => match i.split_last() {
                Some((Dim::Known(k), lead)) if self.batch_dims + k <= d.len() => {
                    Some([lead, &d[self.batch_dims + k..]].concat())
                }
                Some((Dim::Known(k), _)) => bail!(Shape, "GatherND: tuples of {k} indices for rank-{} data", d.len()),
                _ => None,
            },
            _ => None,
        };
        fold_small(self, inputs, vec![fact_of(data.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (data, indices) = (input(inputs, 0)?, input(inputs, 1)?);
        let (offsets, len) = nd_offsets("GatherND", data.shape(), indices, self.batch_dims)?;
        let (_, lead) = indices.shape().split_last().unwrap_or((&0, &[]));
        let k = indices.shape().last().copied().unwrap_or(0);
        let out_shape = [lead, &data.shape()[self.batch_dims + k..]].concat();
        let n = checked_len(&out_shape, data.dtype())?;
        dispatch_words!(data.dtype(); W => {
            let out = copy_slices(data.as_words::<W>()?, &offsets, len, n)?;
            Ok(vec![Tensor::from_words(data.dtype(), out_shape, out)?])
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Compress, NonZero

#[derive(Debug)]
pub struct Compress {
    /// `None` flattens the input first.
    axis: Option<i64>,
}

impl Op for Compress {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let shape = match (self.axis, &x.shape) {
            (None, _) => Some(vec![Dim::Unknown]),
            (Some(axis), Some(dims)) => {
                let axis = normalize_axis(axis, dims.len())?;
                let mut d = dims.clone();
                d[axis] = Dim::Unknown;
                Some(d)
            }
            _ => None,
        };
        fold_small(self, inputs, vec![fact_of(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, condition) = (input(inputs, 0)?, input(inputs, 1)?);
        if condition.rank() != 1 {
            bail!(Shape, "Compress: condition must be 1-D, got shape {:?}", condition.shape());
        }
        let flat;
        let (x, axis) = match self.axis {
            Some(axis) => (x, normalize_axis(axis, x.rank())?),
            None => {
                flat = x.clone().reshape(vec![x.len()])?;
                (&flat, 0)
            }
        };
        let dim = x.shape()[axis];
        let mut picks = vec![];
        for (i, c) in condition.to_i64_vec()?.into_iter().enumerate() {
            if c != 0 {
                if i >= dim {
                    bail!(
                        Runtime,
                        "Compress: condition selects index {i} of an axis of size {dim} (valid: 0 to {})",
                        dim as i64 - 1
                    );
                }
                picks.push(i);
            }
        }
        Ok(vec![take_along_axis(x, axis, &picks, &[picks.len()])?])
    }
}

#[derive(Debug)]
pub struct NonZero;

impl Op for NonZero {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let rows = x.rank().map_or(Dim::Unknown, |r| Dim::Known(r.max(1)));
        fold_small(self, inputs, vec![Fact::new(DType::I64, vec![rows, Dim::Unknown])])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let hits: Vec<usize> = dispatch!(x.dtype(); T => {
            let zero = T::default();
            x.as_slice::<T>()?.iter().enumerate().filter(|(_, v)| **v != zero).map(|(i, _)| i).collect()
        }; all; else => bail!(Unsupported, "NonZero does not take {}", x.dtype()));
        // A scalar counts as a 1-element vector, as numpy and onnxruntime do.
        let shape = if x.rank() == 0 { vec![1] } else { x.shape().to_vec() };
        let strides = strides(&shape);
        let mut out = with_capacity(shape.len() * hits.len())?;
        for (&d, &s) in shape.iter().zip(&strides) {
            out.extend(hits.iter().map(|&h| ((h / s) % d) as i64));
        }
        Ok(vec![Tensor::new(vec![shape.len(), hits.len()], out)?])
    }
}

// ---------------------------------------------------------------------------------------------
// OneHot

#[derive(Debug)]
pub struct OneHot {
    axis: i64,
}

impl OneHot {
    fn depth(values: &[f64]) -> Result<usize> {
        match values {
            &[d] if d >= 0.0 && d <= usize::MAX as f64 => Ok(d as usize),
            _ => bail!(Shape, "OneHot: depth must be one non-negative number, got {values:?}"),
        }
    }
}

impl Op for OneHot {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (indices, depth, values) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let shape = match &indices.shape {
            Some(dims) => {
                let axis = normalize_axis(self.axis, dims.len() + 1)?;
                let depth = match &depth.value {
                    Some(d) => Dim::Known(OneHot::depth(&d.to_f64_vec()?)?),
                    None => Dim::Unknown,
                };
                Some([&dims[..axis], &[depth], &dims[axis..]].concat())
            }
            None => None,
        };
        fold_small(self, inputs, vec![fact_of(values.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (indices, depth, values) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let depth = OneHot::depth(&depth.to_f64_vec()?)?;
        let axis = normalize_axis(self.axis, indices.rank() + 1)?;
        let shape = indices.shape();
        let out_shape = [&shape[..axis], &[depth], &shape[axis..]].concat();
        let n = checked_len(&out_shape, values.dtype())?;
        let inner = numel(&shape[axis..]);
        // Indices may be floats; they are truncated like a cast to int64.
        let idx = indices.to_f64_vec()?;
        let mut hot = with_capacity(idx.len())?;
        for (p, &v) in idx.iter().enumerate() {
            let v = v.trunc() as i64;
            let v = if v < 0 { v + depth as i64 } else { v };
            // Out-of-range indices give an all-off row, as the spec says.
            if (0..depth as i64).contains(&v) {
                hot.push((p / inner * depth + v as usize) * inner + p % inner);
            }
        }
        let out = dispatch!(values.dtype(); T => Tensor::new(out_shape, one_hot_fill::<T>(values, n, &hot)?)?;
            all; else => bail!(Unsupported, "OneHot does not take {} values", values.dtype()));
        Ok(vec![out])
    }
}

/// `n` copies of the off value with the on value at the `hot` offsets; `values` is `[off, on]`.
fn one_hot_fill<T: Elem>(values: &Tensor, n: usize, hot: &[usize]) -> Result<Vec<T>> {
    let [off, on] = values.as_slice::<T>()? else {
        bail!(Shape, "OneHot: values must hold [off, on], got {} elements", values.len())
    };
    let mut out = try_vec(n, off.clone())?;
    for &h in hot {
        out[h] = on.clone();
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Trilu

#[derive(Debug)]
pub struct Trilu {
    upper: bool,
}

impl Op for Trilu {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let out = same_as_input(inputs)?;
        fold_small(self, inputs, out)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let k = opt_input(inputs, 1).map(|t| scalar_int("Trilu", "k", t)).transpose()?.unwrap_or(0);
        let &[.., rows, cols] = x.shape() else { bail!(Shape, "Trilu needs rank 2 or more, got {:?}", x.shape()) };
        // Element (r, c) stays when c - r >= k (upper) or c - r <= k (lower).
        let keep = |r: usize, c: usize| {
            let diagonal = c as i128 - r as i128;
            if self.upper {
                diagonal >= k as i128
            } else {
                diagonal <= k as i128
            }
        };
        // Every dtype's zero (false, "") is the all-zero word.
        dispatch_words!(x.dtype(); W => {
            let mut out = x.as_words::<W>()?.to_vec();
            for matrix in out.chunks_mut(rows.saturating_mul(cols).max(1)) {
                for (at, v) in matrix.iter_mut().enumerate() {
                    if !keep(at / cols, at % cols) {
                        *v = W::default();
                    }
                }
            }
            Ok(vec![Tensor::from_words(x.dtype(), x.shape().to_vec(), out)?])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::reshape::testing::*;
    use super::*;
    use crate::ir::Attr;
    use crate::ErrorKind;

    #[test]
    fn gathers_along_any_axis() {
        let x = iota(&[3, 4]);
        let idx = Tensor::new(vec![1, 2], vec![0i64, -1]).unwrap();
        let y = run("Gather", 13, vec![("axis", Attr::Int(1))], &[Some(&x), Some(&idx)]).unwrap();
        assert_eq!(y.shape(), &[3, 1, 2]);
        assert_eq!(f32s(&y), [0., 3., 4., 7., 8., 11.]);
        let y = run("Gather", 13, vec![], &[Some(&x), Some(&Tensor::scalar(2i32))]).unwrap();
        assert_eq!((y.shape(), f32s(&y)), (&[4][..], vec![8., 9., 10., 11.]));
        let e = run("Gather", 13, vec![], &[Some(&x), Some(&Tensor::vector(vec![3i64]))]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Runtime);
        assert!(e.message.contains("Gather: index 3") && e.message.contains("-3 to 2"), "{e}");
        assert!(run("Gather", 13, vec![], &[Some(&x), Some(&Tensor::vector(vec![-4i64]))]).is_err());
    }

    #[test]
    fn gather_of_a_constant_shape_folds() {
        let shape = Fact::constant(std::sync::Arc::new(Tensor::vector(vec![2i64, 3, 4])));
        let idx = Fact::constant(std::sync::Arc::new(Tensor::scalar(1i64)));
        let out = build("Gather", 13, vec![], 1).unwrap().infer(&[Some(&shape), Some(&idx)]).unwrap();
        assert_eq!(out[0].value.as_ref().unwrap().as_slice::<i64>().unwrap(), &[3]);
    }

    #[test]
    fn gather_elements() {
        // The spec's example: data [[1,2],[3,4]], indices [[0,0],[1,0]], axis 1.
        let x = Tensor::new(vec![2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let idx = Tensor::new(vec![2, 2], vec![0i64, 0, 1, 0]).unwrap();
        let y = run("GatherElements", 13, vec![("axis", Attr::Int(1))], &[Some(&x), Some(&idx)]).unwrap();
        assert_eq!(f32s(&y), [1., 1., 4., 3.]);
        let idx = Tensor::new(vec![1, 2], vec![-1i64, 0]).unwrap();
        let y = run("GatherElements", 13, vec![], &[Some(&x), Some(&idx)]).unwrap();
        assert_eq!(f32s(&y), [3., 2.]);
        let bad = Tensor::new(vec![1, 2], vec![2i64, 0]).unwrap();
        assert!(run("GatherElements", 13, vec![], &[Some(&x), Some(&bad)]).is_err());
        let wide = Tensor::new(vec![1, 3], vec![0i64, 0, 0]).unwrap();
        assert!(run("GatherElements", 13, vec![], &[Some(&x), Some(&wide)]).is_err());
    }

    #[test]
    fn gather_nd_with_batch_dims() {
        let x = Tensor::new(vec![2, 2, 2], (0..8).collect::<Vec<i32>>()).unwrap();
        let idx = Tensor::new(vec![2, 1, 2], vec![0i64, 1, 1, 0]).unwrap();
        let y = run("GatherND", 13, vec![], &[Some(&x), Some(&idx)]).unwrap();
        assert_eq!((y.shape(), y.as_slice::<i32>().unwrap()), (&[2, 1, 2][..], &[2, 3, 4, 5][..]));
        let idx = Tensor::new(vec![2, 1], vec![1i64, 0]).unwrap();
        let y = run("GatherND", 12, vec![("batch_dims", Attr::Int(1))], &[Some(&x), Some(&idx)]).unwrap();
        assert_eq!((y.shape(), y.as_slice::<i32>().unwrap()), (&[2, 2][..], &[2, 3, 4, 5][..]));
        let bad = Tensor::new(vec![1, 3], vec![0i64, 0, 2]).unwrap();
        let e = run("GatherND", 13, vec![], &[Some(&x), Some(&bad)]).unwrap_err();
        assert!(e.message.contains("GatherND: index 2"), "{e}");
        let long = Tensor::new(vec![1, 4], vec![0i64; 4]).unwrap();
        assert!(run("GatherND", 13, vec![], &[Some(&x), Some(&long)]).is_err());
    }

    #[test]
    fn compress_and_nonzero() {
        let x = Tensor::new(vec![3, 2], vec![1f32, 2., 3., 4., 5., 6.]).unwrap();
        let c = Tensor::vector(vec![false, true, true]);
        let y = run("Compress", 11, vec![("axis", Attr::Int(0))], &[Some(&x), Some(&c)]).unwrap();
        assert_eq!((y.shape(), f32s(&y)), (&[2, 2][..], vec![3., 4., 5., 6.]));
        let c = Tensor::vector(vec![false, true, false, false, true]);
        let y = run("Compress", 11, vec![], &[Some(&x), Some(&c)]).unwrap();
        assert_eq!(f32s(&y), [2., 5.]);
        let c = Tensor::vector(vec![false, false, true]);
        assert!(run("Compress", 11, vec![("axis", Attr::Int(1))], &[Some(&x), Some(&c)]).is_err());

        let b = Tensor::new(vec![2, 2], vec![true, false, true, true]).unwrap();
        let y = run("NonZero", 13, vec![], &[Some(&b)]).unwrap();
        assert_eq!((y.shape(), y.as_slice::<i64>().unwrap()), (&[2, 3][..], &[0i64, 1, 1, 0, 0, 1][..]));
    }

    #[test]
    fn one_hot() {
        // one_hot([1, -1, 5], depth 4, values [0, 9], axis 0) -> rows are classes.
        let idx = Tensor::vector(vec![1i64, -1, 5]);
        let vals = Tensor::vector(vec![0i32, 9]);
        let y =
            run("OneHot", 11, vec![("axis", Attr::Int(0))], &[Some(&idx), Some(&Tensor::scalar(4f32)), Some(&vals)])
                .unwrap();
        assert_eq!(y.shape(), &[4, 3]);
        assert_eq!(y.as_slice::<i32>().unwrap(), &[0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 9, 0]);
        let y = run("OneHot", 11, vec![], &[Some(&idx), Some(&Tensor::vector(vec![4i64])), Some(&vals)]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap()[..8], [0, 9, 0, 0, 0, 0, 0, 9]);
        let e = run("OneHot", 11, vec![], &[Some(&idx), Some(&Tensor::scalar(-2i64)), Some(&vals)]).unwrap_err();
        assert!(e.message.contains("depth"), "{e}");
        let huge = Tensor::scalar(1e15f64);
        let e = run("OneHot", 11, vec![], &[Some(&idx), Some(&huge), Some(&vals)]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResourceLimit);
        assert!(run("OneHot", 11, vec![], &[Some(&idx), Some(&Tensor::scalar(4i64)), Some(&Tensor::vector(vec![1]))])
            .is_err());
    }

    #[test]
    fn trilu_masks() {
        let x = Tensor::new(vec![3, 4], (1..=12).collect::<Vec<i64>>()).unwrap();
        let tri = |upper: i64, k: Option<i64>| {
            let k = k.map(Tensor::scalar);
            run("Trilu", 14, vec![("upper", Attr::Int(upper))], &[Some(&x), k.as_ref()])
                .unwrap()
                .into_vec::<i64>()
                .unwrap()
        };
        assert_eq!(tri(1, None), [1, 2, 3, 4, 0, 6, 7, 8, 0, 0, 11, 12]);
        assert_eq!(tri(1, Some(-1)), [1, 2, 3, 4, 5, 6, 7, 8, 0, 10, 11, 12]);
        assert_eq!(tri(0, None), [1, 0, 0, 0, 5, 6, 0, 0, 9, 10, 11, 0]);
        assert_eq!(tri(0, Some(2)), [1, 2, 3, 0, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(tri(0, Some(-7)), [0; 12]);
        assert!(run("Trilu", 14, vec![], &[Some(&Tensor::vector(vec![1i64]))]).is_err());
        let e = run("Trilu", 14, vec![], &[Some(&x), Some(&Tensor::vector(vec![1i64, 2]))]).unwrap_err();
        assert!(e.message.contains("Trilu: k"), "{e}");
    }
}
