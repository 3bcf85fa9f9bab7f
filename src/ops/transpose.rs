//! Ops that copy elements into a new order: Transpose, DepthToSpace, SpaceToDepth, Expand, Tile,
//! and ReverseSequence.
//! Each is a strided view of its input (a stride of 0 repeats, a permuted stride transposes),
//! copied out by [`strided_copy`], which Slice also uses.

use super::reshape::{
    concrete, const_ints, fact_of, fold_small, known_dims, resolve_axis, strides, with_capacity, MAX_RANK,
};
use super::{input, same_as_input, BuildCtx, Op, Registry};
use crate::ir::shape::{broadcast_dims, broadcast_shapes, normalize_axis};
use crate::ir::tensor::checked_len;
use crate::ir::words::Word;
use crate::ir::{Dim, Elem, Fact, Tensor};
use crate::{bail, dispatch_words, err, Result};

pub fn register(r: &mut Registry) {
    r.add("Transpose", |ctx| Ok(Box::new(Transpose { perm: ctx.attrs.ints("perm")? })));
    r.add("DepthToSpace", |ctx| build_space_depth(ctx, true));
    r.add("SpaceToDepth", |ctx| build_space_depth(ctx, false));
    r.add("Expand", |_| Ok(Box::new(Expand)));
    r.add("Tile", |ctx| Ok(Box::new(Tile { legacy: ctx.opset < 6 })));
    r.add("ReverseSequence", build_reverse_sequence);
}

// ---------------------------------------------------------------------------------------------
// Strided views

/// Calls `f` with the offset of every element of a strided view, in row-major order of the view.
pub(crate) fn for_each_offset(shape: &[usize], strides: &[isize], start: isize, mut f: impl FnMut(isize)) {
    if shape.contains(&0) {
        return;
    }
    let Some((&inner, outer)) = shape.split_last() else {
        f(start);
        return;
    };
    let inner_stride = strides[outer.len()];
    let mut counter = vec![0usize; outer.len()];
    let mut base = start;
    loop {
        // Wrapping arithmetic: views are checked before use, so this only avoids a panic path.
        let mut off = base;
        for _ in 0..inner {
            f(off);
            off = off.wrapping_add(inner_stride);
        }
        let mut d = outer.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            counter[d] += 1;
            base = base.wrapping_add(strides[d]);
            if counter[d] < outer[d] {
                break;
            }
            base = base.wrapping_sub(strides[d].wrapping_mul(outer[d] as isize));
            counter[d] = 0;
        }
    }
}

/// The elements of the view of `src` that starts at `start` and steps by `strides` (negative to go
/// backwards, 0 to repeat), in the view's row-major order.
pub(crate) fn strided_copy<T: Elem>(src: &[T], shape: &[usize], start: isize, strides: &[isize]) -> Result<Vec<T>> {
    let n = checked_len(shape, T::DTYPE)?;
    let mut out = with_capacity(n)?;
    if n == 0 {
        return Ok(out);
    }
    // Checking the view's two extreme offsets proves every element lies inside `src`.
    let (mut lo, mut hi) = (start as i128, start as i128);
    for (&d, &s) in shape.iter().zip(strides) {
        let span = (d as i128 - 1) * s as i128;
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    if strides.len() != shape.len() || lo < 0 || hi >= src.len() as i128 {
        bail!(Runtime, "view {shape:?} (start {start}, strides {strides:?}) leaves a buffer of {} elements", src.len());
    }
    for_each_offset(shape, strides, start, |off| out.push(src[off as usize].clone()));
    Ok(out)
}

/// Copies a strided view of `x` (any dtype) into a tensor of shape `out_shape`, which has the
/// view's element count.
pub(crate) fn copy_view(
    x: &Tensor,
    out_shape: Vec<usize>,
    view: &[usize],
    start: isize,
    strides: &[isize],
) -> Result<Tensor> {
    if let Some(start) = contiguous_start(view, start, strides) {
        return x.view(out_shape, start);
    }
    dispatch_words!(x.dtype(); W => {
        Tensor::from_words(x.dtype(), out_shape, strided_copy::<W>(x.as_words::<W>()?, view, start, strides)?)
    })
}

/// Where a strided view starts when its elements are one row-major run (a Slice of leading rows, a
/// Transpose that only moves dims of size 1): then it can share its input's storage.
fn contiguous_start(view: &[usize], start: isize, strides: &[isize]) -> Option<usize> {
    if view.contains(&0) {
        return None;
    }
    let mut expected = 1isize;
    for (&n, &stride) in view.iter().zip(strides).rev() {
        if n == 1 {
            continue;
        }
        if stride != expected {
            return None;
        }
        expected = expected.checked_mul(n as isize)?;
    }
    usize::try_from(start).ok()
}

/// `x`'s elements, seen with shape `shape`, transposed by `perm`.
fn transposed(x: &Tensor, shape: &[usize], perm: &[usize], out_shape: Vec<usize>) -> Result<Tensor> {
    let strides = strides(shape);
    let view: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let view_strides: Vec<isize> = perm.iter().map(|&p| strides[p] as isize).collect();
    copy_view(x, out_shape, &view, 0, &view_strides)
}

// ---------------------------------------------------------------------------------------------
// Transpose

#[derive(Debug)]
pub struct Transpose {
    perm: Option<Vec<i64>>,
}

impl Transpose {
    /// The permutation for a given rank: the attribute, checked, or the reversed axes.
    pub fn perm(&self, rank: usize) -> Result<Vec<usize>> {
        let Some(perm) = &self.perm else { return Ok((0..rank).rev().collect()) };
        let mut seen = vec![false; rank];
        let mut out = Vec::with_capacity(rank);
        for &p in perm {
            let a = normalize_axis(p, rank)?;
            if std::mem::replace(&mut seen[a], true) {
                bail!(Shape, "Transpose: perm {perm:?} repeats axis {p}");
            }
            out.push(a);
        }
        if out.len() != rank {
            bail!(Shape, "Transpose: perm {perm:?} does not fit rank {rank}");
        }
        Ok(out)
    }
}

impl Op for Transpose {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let shape = match &x.shape {
            Some(dims) => Some(self.perm(dims.len())?.iter().map(|&p| dims[p].clone()).collect()),
            None => None,
        };
        fold_small(self, inputs, vec![fact_of(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let perm = self.perm(x.rank())?;
        let out_shape = perm.iter().map(|&p| x.shape()[p]).collect();
        Ok(vec![transposed(x, x.shape(), &perm, out_shape)?])
    }
}

// ---------------------------------------------------------------------------------------------
// DepthToSpace, SpaceToDepth

#[derive(Debug)]
pub struct SpaceDepth {
    /// DepthToSpace when true, SpaceToDepth otherwise.
    to_space: bool,
    blocksize: usize,
    /// blocksize², the channels one output pixel block holds.
    area: usize,
    /// Channel order within a block: depth-column-row (`DCR`) or column-row-depth (`CRD`).
    crd: bool,
}

fn build_space_depth(ctx: &BuildCtx, to_space: bool) -> Result<Box<dyn Op>> {
    let blocksize = ctx.attrs.req_int("blocksize")?;
    let area = usize::try_from(blocksize).ok().filter(|&b| b > 0).and_then(|b| b.checked_mul(b));
    let Some(area) = area else { bail!(InvalidModel, "{}: invalid blocksize {blocksize}", ctx.op_type) };
    let crd = match ctx.attrs.string_or("mode", "DCR".into())?.as_str() {
        "DCR" => false,
        "CRD" => true,
        m => bail!(Unsupported, "{}: mode '{m}' is not DCR or CRD", ctx.op_type),
    };
    Ok(Box::new(SpaceDepth { to_space, blocksize: blocksize as usize, area, crd }))
}

impl SpaceDepth {
    fn name(&self) -> &'static str {
        if self.to_space {
            "DepthToSpace"
        } else {
            "SpaceToDepth"
        }
    }

    /// Output dims for input dims `[n, c, h, w]`.
    fn dims(&self, dims: &[Dim]) -> Result<Vec<Dim>> {
        let [n, c, h, w] = dims else { bail!(Shape, "{} needs a rank-4 input, got rank {}", self.name(), dims.len()) };
        let (b, b2) = (self.blocksize, self.area);
        let scale = |d: &Dim, up: usize, down: usize, what: &str| -> Result<Dim> {
            Ok(match d {
                Dim::Known(v) if v % down != 0 => {
                    bail!(Shape, "{}: {what} {v} is not a multiple of {down}", self.name())
                }
                Dim::Known(v) => Dim::Known((v / down).checked_mul(up).ok_or_else(|| err!(Shape, "dims overflow"))?),
                _ => Dim::Unknown,
            })
        };
        Ok(if self.to_space {
            vec![n.clone(), scale(c, 1, b2, "channel count")?, scale(h, b, 1, "height")?, scale(w, b, 1, "width")?]
        } else {
            vec![n.clone(), scale(c, b2, 1, "channel count")?, scale(h, 1, b, "height")?, scale(w, 1, b, "width")?]
        })
    }
}

impl Op for SpaceDepth {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let shape = x.shape.as_deref().map(|d| self.dims(d)).transpose()?;
        Ok(vec![fact_of(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let out_shape = concrete(&self.dims(&known_dims(x.shape()))?)?;
        let (&[n, c, h, w], b) = (x.shape(), self.blocksize) else { bail!(Shape, "rank-4 input expected") };
        // The 6-D view of the input and the axis order of the output, as in the spec's numpy.
        let (view, perm): ([usize; 6], [usize; 6]) = match (self.to_space, self.crd) {
            (true, false) => ([n, b, b, c / self.area, h, w], [0, 3, 4, 1, 5, 2]),
            (true, true) => ([n, c / self.area, b, b, h, w], [0, 1, 4, 2, 5, 3]),
            (false, false) => ([n, c, h / b, b, w / b, b], [0, 3, 5, 1, 2, 4]),
            (false, true) => ([n, c, h / b, b, w / b, b], [0, 1, 3, 5, 2, 4]),
        };
        Ok(vec![transposed(x, &view, &perm, out_shape)?])
    }
}

// ---------------------------------------------------------------------------------------------
// Expand

#[derive(Debug)]
pub struct Expand;

fn shape_values(v: &[i64]) -> Result<Vec<usize>> {
    v.iter().map(|&d| usize::try_from(d).map_err(|_| err!(Shape, "negative dim {d} in shape {v:?}"))).collect()
}

impl Op for Expand {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (x, shape) = (input(inputs, 0)?, input(inputs, 1)?);
        let out = match (&x.shape, const_ints(Some(shape))?) {
            (Some(dims), Some(target)) => {
                let target: Vec<Dim> = shape_values(&target)?.into_iter().map(Dim::Known).collect();
                Some(broadcast_dims(dims, &target)?)
            }
            // Without the target's values, its length and the input's rank still give the rank.
            (Some(dims), None) => match shape.concrete_shape().as_deref() {
                Some(&[n]) if n <= MAX_RANK => Some(vec![Dim::Unknown; n.max(dims.len())]),
                _ => None,
            },
            _ => None,
        };
        fold_small(self, inputs, vec![fact_of(x.dtype, out)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let target = shape_values(&input(inputs, 1)?.to_i64_vec()?)?;
        let out_shape = broadcast_shapes(x.shape(), &target)?;
        let strides = strides(x.shape());
        let lead = out_shape.len() - x.rank();
        let view_strides: Vec<isize> = (0..out_shape.len())
            .map(|i| if i < lead || x.shape()[i - lead] == 1 { 0 } else { strides[i - lead] as isize })
            .collect();
        Ok(vec![copy_view(x, out_shape.clone(), &out_shape, 0, &view_strides)?])
    }
}

// ---------------------------------------------------------------------------------------------
// Tile

#[derive(Debug)]
pub struct Tile {
    /// Tile-1 takes a count and an axis (inputs 1 and 2) instead of one repeat per axis.
    legacy: bool,
}

impl Tile {
    fn repeats(&self, rank: usize, repeats: &[i64], axis: Option<&[i64]>) -> Result<Vec<usize>> {
        let repeats = if self.legacy {
            let (&[count], Some(&[axis])) = (repeats, axis) else {
                bail!(Shape, "Tile-1: tiles and axis must be scalars")
            };
            let axis = resolve_axis("Tile", axis, rank)?;
            (0..rank).map(|i| if i == axis { count } else { 1 }).collect()
        } else {
            repeats.to_vec()
        };
        if repeats.len() != rank {
            bail!(Shape, "Tile: {} repeats for a rank-{rank} input", repeats.len());
        }
        repeats.iter().map(|&r| usize::try_from(r).map_err(|_| err!(Shape, "Tile: negative repeat {r}"))).collect()
    }
}

impl Op for Tile {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let repeats = const_ints(Some(input(inputs, 1)?))?;
        let axis = if self.legacy { const_ints(Some(input(inputs, 2)?))? } else { None };
        let shape = match (&x.shape, repeats) {
            (Some(dims), Some(r)) if !self.legacy || axis.is_some() => {
                let r = self.repeats(dims.len(), &r, axis.as_deref())?;
                let tile = |(d, r): (&Dim, usize)| match d {
                    Dim::Known(v) => v.checked_mul(r).map(Dim::Known).ok_or_else(|| err!(Shape, "Tile: dims overflow")),
                    _ if r == 1 => Ok(d.clone()),
                    _ => Ok(Dim::Unknown),
                };
                Some(dims.iter().zip(r).map(tile).collect::<Result<_>>()?)
            }
            (Some(dims), _) => Some(vec![Dim::Unknown; dims.len()]),
            _ => None,
        };
        fold_small(self, inputs, vec![fact_of(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let axis = if self.legacy { Some(input(inputs, 2)?.to_i64_vec()?) } else { None };
        let repeats = self.repeats(x.rank(), &input(inputs, 1)?.to_i64_vec()?, axis.as_deref())?;
        // View [r0, d0, r1, d1, ...] with stride 0 on every repeat axis.
        let strides = strides(x.shape());
        let mut view = Vec::with_capacity(2 * x.rank());
        let mut view_strides = Vec::with_capacity(2 * x.rank());
        let mut out_shape = Vec::with_capacity(x.rank());
        for ((&d, &s), &r) in x.shape().iter().zip(&strides).zip(&repeats) {
            view.extend([r, d]);
            view_strides.extend([0, s as isize]);
            out_shape
                .push(d.checked_mul(r).ok_or_else(|| err!(ResourceLimit, "Tile: output dim {d} x {r} overflows"))?);
        }
        Ok(vec![copy_view(x, out_shape, &view, 0, &view_strides)?])
    }
}

// ---------------------------------------------------------------------------------------------
// ReverseSequence

/// Reverses the first `sequence_lens[b]` steps of each batch entry `b`; batch and time are axes 0
/// and 1, in either order.
#[derive(Debug)]
pub struct ReverseSequence {
    batch_axis: usize,
}

fn build_reverse_sequence(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let batch_axis = ctx.attrs.int_or("batch_axis", 1)?;
    let time_axis = ctx.attrs.int_or("time_axis", 0)?;
    match (batch_axis, time_axis) {
        (0, 1) => Ok(Box::new(ReverseSequence { batch_axis: 0 })),
        (1, 0) => Ok(Box::new(ReverseSequence { batch_axis: 1 })),
        _ => bail!(
            InvalidModel,
            "ReverseSequence: batch_axis {batch_axis} and time_axis {time_axis} must be 0 and 1 in some order"
        ),
    }
}

impl ReverseSequence {
    fn run<W: Word>(&self, x: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let shape = x.shape();
        let inner = shape[2..].iter().product::<usize>();
        let (batch, time) = if self.batch_axis == 0 { (shape[0], shape[1]) } else { (shape[1], shape[0]) };
        let block = |b: usize, t: usize| {
            let at = if self.batch_axis == 0 { b * time + t } else { t * batch + b };
            at * inner..(at + 1) * inner
        };
        let data = x.as_words::<W>()?;
        let mut y = with_capacity(data.len())?;
        y.extend_from_slice(data);
        for (b, &len) in lens.iter().enumerate() {
            for t in 0..len {
                y[block(b, t)].clone_from_slice(&data[block(b, len - 1 - t)]);
            }
        }
        Tensor::from_words(x.dtype(), shape.to_vec(), y)
    }
}

impl Op for ReverseSequence {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let out = same_as_input(inputs)?;
        fold_small(self, inputs, out)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        if x.rank() < 2 {
            bail!(Shape, "ReverseSequence: input needs rank 2 or more, got rank {}", x.rank());
        }
        let (batch, time) = (x.shape()[self.batch_axis], x.shape()[1 - self.batch_axis]);
        let lens = input(inputs, 1)?.to_i64_vec()?;
        if lens.len() != batch {
            bail!(Shape, "ReverseSequence: sequence_lens has {} entries, the batch has {batch}", lens.len());
        }
        let lens = lens
            .iter()
            .enumerate()
            .map(|(b, &len)| {
                usize::try_from(len).ok().filter(|&l| l <= time).ok_or_else(|| {
                    err!(Runtime, "ReverseSequence: sequence_lens[{b}] = {len} is out of range (valid: 0 to {time})")
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let y = dispatch_words!(x.dtype(); W => self.run::<W>(x, &lens)?);
        Ok(vec![y])
    }
}

#[cfg(test)]
mod tests {
    use super::super::reshape::testing::*;
    use super::*;
    use crate::ir::{Attr, DType};

    #[test]
    fn transposes_with_and_without_perm() {
        let x = iota(&[2, 3]);
        let y = run("Transpose", 13, vec![], &[Some(&x)]).unwrap();
        assert_eq!(y.shape(), &[3, 2]);
        assert_eq!(f32s(&y), [0., 3., 1., 4., 2., 5.]);
        // np.transpose(np.arange(24).reshape(2,3,4), (1,2,0)).flatten()[:8]
        let x = iota(&[2, 3, 4]);
        let y = run("Transpose", 13, vec![("perm", ints(&[1, 2, 0]))], &[Some(&x)]).unwrap();
        assert_eq!(y.shape(), &[3, 4, 2]);
        assert_eq!(f32s(&y)[..8], [0., 12., 1., 13., 2., 14., 3., 15.]);
        let s = Tensor::new(vec![2, 1], vec!["a".to_string(), "b".to_string()]).unwrap();
        let y = run("Transpose", 13, vec![], &[Some(&s)]).unwrap();
        assert_eq!(y.shape(), &[1, 2]);
        for bad in [vec![0, 0, 1], vec![0, 1], vec![0, 1, 3]] {
            assert!(run("Transpose", 13, vec![("perm", ints(&bad))], &[Some(&x)]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn depth_to_space_modes() {
        // The spec's DCR and CRD examples: x = 0..8 channels of [[0,1,2],[3,4,5]] + 9c.
        let x = Tensor::new(
            vec![1, 8, 2, 3],
            (0..8).flat_map(|c| (0..6).map(move |i| (9 * c + i) as f32)).collect::<Vec<_>>(),
        )
        .unwrap();
        let y = run("DepthToSpace", 13, vec![("blocksize", Attr::Int(2))], &[Some(&x)]).unwrap();
        assert_eq!(y.shape(), &[1, 2, 4, 6]);
        assert_eq!(f32s(&y)[..12], [0., 18., 1., 19., 2., 20., 36., 54., 37., 55., 38., 56.]);
        let attrs = vec![("blocksize", Attr::Int(2)), ("mode", Attr::String("CRD".into()))];
        let y = run("DepthToSpace", 13, attrs.clone(), &[Some(&x)]).unwrap();
        assert_eq!(f32s(&y)[..12], [0., 9., 1., 10., 2., 11., 18., 27., 19., 28., 20., 29.]);
        // SpaceToDepth undoes DepthToSpace in the same mode.
        let back = run("SpaceToDepth", 28, attrs, &[Some(&y)]).unwrap();
        assert_eq!(back, x);
        let y = run("DepthToSpace", 13, vec![("blocksize", Attr::Int(2))], &[Some(&x)]).unwrap();
        let back = run("SpaceToDepth", 13, vec![("blocksize", Attr::Int(2))], &[Some(&y)]).unwrap();
        assert_eq!(back, x);
        let e = run("DepthToSpace", 13, vec![("blocksize", Attr::Int(3))], &[Some(&x)]).unwrap_err();
        assert!(e.message.contains("multiple of 9"), "{e}");
        assert!(run("SpaceToDepth", 13, vec![("blocksize", Attr::Int(2))], &[Some(&iota(&[2, 3]))]).is_err());
    }

    #[test]
    fn expands_both_ways() {
        let x = iota(&[3, 1]);
        let y = run("Expand", 13, vec![], &[Some(&x), Some(&Tensor::vector(vec![2i64, 1, 6]))]).unwrap();
        assert_eq!(y.shape(), &[2, 3, 6]);
        assert_eq!(f32s(&y)[..8], [0., 0., 0., 0., 0., 0., 1., 1.]);
        // A 1 in the shape keeps the input's dim.
        let y = run("Expand", 13, vec![], &[Some(&x), Some(&Tensor::vector(vec![1i64, 1]))]).unwrap();
        assert_eq!(y.shape(), &[3, 1]);
        assert!(run("Expand", 13, vec![], &[Some(&x), Some(&Tensor::vector(vec![2i64, 2]))]).is_err());
        assert!(run("Expand", 13, vec![], &[Some(&x), Some(&Tensor::vector(vec![-1i64, 1]))]).is_err());
        let huge = Tensor::vector(vec![1i64 << 40, 1 << 40, 3, 1]);
        assert_eq!(
            run("Expand", 13, vec![], &[Some(&x), Some(&huge)]).unwrap_err().kind,
            crate::ErrorKind::ResourceLimit
        );
        let f = Fact::new(DType::F32, vec![Dim::Symbol("N".into()), Dim::Known(1)]);
        let shape = Fact::constant(std::sync::Arc::new(Tensor::vector(vec![1i64, 4])));
        let out = build("Expand", 13, vec![], 1).unwrap().infer(&[Some(&f), Some(&shape)]).unwrap();
        assert_eq!(out[0].shape, Some(vec![Dim::Symbol("N".into()), Dim::Known(4)]));
    }

    #[test]
    fn tiles() {
        let x = iota(&[2, 2]);
        let y = run("Tile", 13, vec![], &[Some(&x), Some(&Tensor::vector(vec![2i64, 2]))]).unwrap();
        assert_eq!(y.shape(), &[4, 4]);
        assert_eq!(f32s(&y), [0., 1., 0., 1., 2., 3., 2., 3., 0., 1., 0., 1., 2., 3., 2., 3.]);
        let y = run("Tile", 1, vec![], &[Some(&x), Some(&Tensor::scalar(3i64)), Some(&Tensor::scalar(1i64))]).unwrap();
        assert_eq!(y.shape(), &[2, 6]);
        assert_eq!(f32s(&y)[..6], [0., 1., 0., 1., 0., 1.]);
        assert!(run("Tile", 13, vec![], &[Some(&x), Some(&Tensor::vector(vec![2i64]))]).is_err());
        assert!(run("Tile", 13, vec![], &[Some(&x), Some(&Tensor::vector(vec![-1i64, 2]))]).is_err());
        let huge = Tensor::vector(vec![1i64 << 40, 1 << 40]);
        assert!(run("Tile", 13, vec![], &[Some(&x), Some(&huge)]).is_err());
        let y = run("Tile", 13, vec![], &[Some(&x), Some(&Tensor::vector(vec![0i64, 2]))]).unwrap();
        assert_eq!(y.shape(), &[0, 4]);
    }

    #[test]
    fn strided_copy_refuses_views_outside_the_buffer() {
        let src = [1, 2, 3];
        assert_eq!(strided_copy(&src, &[3], 2, &[-1]).unwrap(), [3, 2, 1]);
        assert!(strided_copy(&src, &[3], 1, &[1]).is_err());
        assert!(strided_copy(&src, &[2], 0, &[-1]).is_err());
        assert_eq!(strided_copy(&src, &[], 1, &[]).unwrap(), [2]);
    }

    #[test]
    fn reverse_sequence_on_either_axis() {
        // The two examples of the ONNX spec.
        let x = iota(&[4, 4]);
        let lens = Tensor::vector(vec![4i64, 3, 2, 1]);
        let y = run("ReverseSequence", 10, vec![], &[Some(&x), Some(&lens)]).unwrap();
        // time_axis 0, batch_axis 1: column b reverses its first lens[b] rows.
        assert_eq!(f32s(&y), [12., 9., 6., 3., 8., 5., 2., 7., 4., 1., 10., 11., 0., 13., 14., 15.]);
        let lens = Tensor::vector(vec![1i64, 2, 3, 4]);
        let attrs = vec![("batch_axis", Attr::Int(0)), ("time_axis", Attr::Int(1))];
        let y = run("ReverseSequence", 10, attrs, &[Some(&x), Some(&lens)]).unwrap();
        assert_eq!(f32s(&y), [0., 1., 2., 3., 5., 4., 6., 7., 10., 9., 8., 11., 15., 14., 13., 12.]);
        let e =
            run("ReverseSequence", 10, vec![], &[Some(&x), Some(&Tensor::vector(vec![5i64, 1, 1, 1]))]).unwrap_err();
        assert!(e.message.contains("sequence_lens[0] = 5"), "{e}");
        assert!(run("ReverseSequence", 10, vec![], &[Some(&x), Some(&Tensor::vector(vec![1i64]))]).is_err());
        assert!(build("ReverseSequence", 10, vec![("batch_axis", Attr::Int(0))], 1).is_err());
    }
}
