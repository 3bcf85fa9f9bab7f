//! Reductions: ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2,
//! ReduceLogSum, ReduceLogSumExp, ReduceSumSquare (one driver, [`fold`]), and ArgMax, ArgMin.
//!
//! Floats (f16 and bf16 included) are accumulated in f64 and integers in wrapping i64 ([`Wide`]),
//! which scatter reductions, CumSum and CumProd use too.

use super::binary::{narrow, widen};
use super::broadcast::for_each_index;
use super::reshape::{fact_of, fold_small, lanes, numel, resolve_axis, IntsArg};
use super::{input, BuildCtx, Op, Registry};
use crate::ir::shape::normalize_axis;
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{DType, Dim, Fact, Scalar, Tensor};
use crate::{bail, dispatch, Result};

pub fn register(r: &mut Registry) {
    r.add("ReduceSum", |ctx| build_reduce(ctx, ReduceKind::Sum));
    r.add("ReduceMean", |ctx| build_reduce(ctx, ReduceKind::Mean));
    r.add("ReduceMax", |ctx| build_reduce(ctx, ReduceKind::Max));
    r.add("ReduceMin", |ctx| build_reduce(ctx, ReduceKind::Min));
    r.add("ReduceProd", |ctx| build_reduce(ctx, ReduceKind::Prod));
    r.add("ReduceL1", |ctx| build_reduce(ctx, ReduceKind::L1));
    r.add("ReduceL2", |ctx| build_reduce(ctx, ReduceKind::L2));
    r.add("ReduceLogSum", |ctx| build_reduce(ctx, ReduceKind::LogSum));
    r.add("ReduceLogSumExp", |ctx| build_reduce(ctx, ReduceKind::LogSumExp));
    r.add("ReduceSumSquare", |ctx| build_reduce(ctx, ReduceKind::SumSquare));
    r.add("ArgMax", |ctx| build_arg(ctx, true));
    r.add("ArgMin", |ctx| build_arg(ctx, false));
}

/// The type a kernel accumulates in: f64 for floats, i64 with wrapping arithmetic for integers
/// (overflow wraps as in C instead of panicking; u64 survives through the same bits).
pub(crate) trait Wide: Copy {
    const ZERO: Self;
    const ONE: Self;
    fn of<T: Scalar>(v: T) -> Self;
    fn to<T: Scalar>(self) -> T;
    fn add(self, other: Self) -> Self;
    fn mul(self, other: Self) -> Self;
    /// |v|; unsigned values are their own magnitude.
    fn abs_of<T: Scalar>(v: T) -> Self;
    /// Division by an element count, for means.
    fn div_count(self, n: usize) -> Self;
}

impl Wide for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    fn of<T: Scalar>(v: T) -> f64 {
        v.to_f64()
    }
    fn to<T: Scalar>(self) -> T {
        T::from_f64(self)
    }
    fn add(self, other: f64) -> f64 {
        self + other
    }
    fn mul(self, other: f64) -> f64 {
        self * other
    }
    fn abs_of<T: Scalar>(v: T) -> f64 {
        v.to_f64().abs()
    }
    fn div_count(self, n: usize) -> f64 {
        self / n as f64
    }
}

impl Wide for i64 {
    const ZERO: i64 = 0;
    const ONE: i64 = 1;
    fn of<T: Scalar>(v: T) -> i64 {
        v.to_i64()
    }
    fn to<T: Scalar>(self) -> T {
        T::from_i64(self)
    }
    fn add(self, other: i64) -> i64 {
        self.wrapping_add(other)
    }
    fn mul(self, other: i64) -> i64 {
        self.wrapping_mul(other)
    }
    fn abs_of<T: Scalar>(v: T) -> i64 {
        if T::DTYPE.is_signed_int() {
            v.to_i64().wrapping_abs()
        } else {
            v.to_i64()
        }
    }
    fn div_count(self, n: usize) -> i64 {
        if n == 0 {
            0
        } else {
            self / n as i64
        }
    }
}

/// The lowest (`high` false) or highest value of `T`: infinities for floats, the integer limits,
/// false and true for bool. Max and min reductions start from these, so empty sets give them.
fn extreme<T: Scalar>(high: bool) -> T {
    if T::DTYPE == DType::Bool {
        T::from_i64(high as i64)
    } else {
        T::from_f64(if high { f64::INFINITY } else { f64::NEG_INFINITY })
    }
}

/// Folds every element of `data` (of shape `shape`) into the accumulator of the output element it
/// reduces to; `kept` is `shape` with reduced dims set to 1. Reduced dims of size 0 leave `init`.
pub(crate) fn fold<T: Copy, A: Copy>(
    data: &[T],
    shape: &[usize],
    kept: &[usize],
    init: A,
    step: impl Fn(A, T) -> A,
) -> Result<Vec<A>> {
    let mut acc = try_vec(checked_len(kept, DType::F64)?, init)?;
    if !data.is_empty() {
        for_each_index([kept], shape, |i, [o]| acc[o] = step(acc[o], data[i]));
    }
    Ok(acc)
}

// ---------------------------------------------------------------------------------------------
// Reduce*

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

impl ReduceKind {
    fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "ReduceSum",
            ReduceKind::Mean => "ReduceMean",
            ReduceKind::Max => "ReduceMax",
            ReduceKind::Min => "ReduceMin",
            ReduceKind::Prod => "ReduceProd",
            ReduceKind::L1 => "ReduceL1",
            ReduceKind::L2 => "ReduceL2",
            ReduceKind::LogSum => "ReduceLogSum",
            ReduceKind::LogSumExp => "ReduceLogSumExp",
            ReduceKind::SumSquare => "ReduceSumSquare",
        }
    }
}

#[derive(Debug)]
pub struct Reduce {
    kind: ReduceKind,
    axes: IntsArg,
    keepdims: bool,
    noop_with_empty_axes: bool,
}

fn build_reduce(ctx: &BuildCtx, kind: ReduceKind) -> Result<Box<dyn Op>> {
    // ReduceSum took its axes as an input from opset 13, the others from 18.
    let input_since = if kind == ReduceKind::Sum { 13 } else { 18 };
    Ok(Box::new(Reduce {
        kind,
        axes: IntsArg::parse(ctx, "axes", input_since, 1)?,
        keepdims: ctx.attrs.int_or("keepdims", 1)? != 0,
        noop_with_empty_axes: ctx.attrs.int_or("noop_with_empty_axes", 0)? != 0,
    }))
}

impl Reduce {
    /// Which reduction this is (for backends with kernels for some).
    pub fn kind(&self) -> ReduceKind {
        self.kind
    }

    /// Whether this is ReduceMean (for backends with a kernel for it).
    pub fn is_mean(&self) -> bool {
        self.kind == ReduceKind::Mean
    }

    /// The reduced dims of an input of rank `rank` with the op's `inputs` (for the axes input),
    /// or `None` when the op is the identity; and the output dims for `dims`.
    pub fn reduced(&self, dims: &[usize], inputs: &[Option<&Tensor>]) -> Result<Option<(Vec<bool>, Vec<usize>)>> {
        Ok(self.mask(dims.len(), self.axes.eval(inputs)?.as_deref())?.map(|m| {
            let out = self.out_dims(dims, &m, 1);
            (m, out)
        }))
    }

    /// Which dims are reduced, or `None` when the op is the identity (no axes and
    /// `noop_with_empty_axes`). Repeated axes are accepted.
    fn mask(&self, rank: usize, axes: Option<&[i64]>) -> Result<Option<Vec<bool>>> {
        match axes {
            Some(axes) if !axes.is_empty() => {
                let mut mask = vec![false; rank];
                for &a in axes {
                    mask[resolve_axis(self.kind.name(), a, rank)?] = true;
                }
                Ok(Some(mask))
            }
            _ if self.noop_with_empty_axes => Ok(None),
            _ => Ok(Some(vec![true; rank])),
        }
    }

    pub fn out_dims<D: Clone>(&self, dims: &[D], mask: &[bool], one: D) -> Vec<D> {
        let mut out = Vec::with_capacity(dims.len());
        for (d, &m) in dims.iter().zip(mask) {
            match (m, self.keepdims) {
                (false, _) => out.push(d.clone()),
                (true, true) => out.push(one.clone()),
                (true, false) => {}
            }
        }
        out
    }
}

impl Op for Reduce {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let shape = match (&x.shape, self.axes.infer(inputs)?) {
            (Some(dims), Some(axes)) => match self.mask(dims.len(), axes.as_deref())? {
                Some(mask) => Some(self.out_dims(dims, &mask, Dim::Known(1))),
                None => Some(dims.clone()),
            },
            (Some(dims), None) if self.keepdims => Some(vec![Dim::Unknown; dims.len()]),
            _ => None,
        };
        fold_small(self, inputs, vec![fact_of(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let Some(mask) = self.mask(x.rank(), self.axes.eval(inputs)?.as_deref())? else {
            return Ok(vec![x.clone()]);
        };
        let kept: Vec<usize> = x.shape().iter().zip(&mask).map(|(&d, &m)| if m { 1 } else { d }).collect();
        let reduced: Vec<usize> = x.shape().iter().zip(&mask).filter(|(_, &m)| m).map(|(&d, _)| d).collect();
        let count = numel(&reduced);
        // The kernel compiles for five element types rather than thirteen: float16 and bfloat16
        // reduce in f64 (as they accumulated anyway; rounded once on the way back); narrower
        // integers in wrapping i64 where the result wraps, and in f64 (exact for them) where it
        // saturates back (max and min, whose empty-set extremes saturate too, and the float ones).
        let dt = x.dtype();
        let wide = match dt {
            DType::F16 | DType::BF16 => DType::F64,
            DType::U8 | DType::I8 | DType::U16 | DType::I16 | DType::U32 | DType::I32 => match self.kind {
                ReduceKind::Max | ReduceKind::Min | ReduceKind::L2 | ReduceKind::LogSum | ReduceKind::LogSumExp => {
                    DType::F64
                }
                _ => DType::I64,
            },
            other => other,
        };
        let x_wide = x.cast_numeric(wide)?;
        let out = dispatch!(wide; T => {
            let data = reduce_typed::<T>(self.kind, x_wide.as_slice::<T>()?, x.shape(), &kept, count)?;
            Tensor::new(kept, data)?
        }; F32 | F64 | I64 | U64 | Bool;
            else => bail!(Unsupported, "{} does not take {dt}", self.kind.name()));
        Ok(vec![narrow(out, dt)?.reshape(self.out_dims(x.shape(), &mask, 1))?])
    }
}

/// One reduction of `data` (of `shape`) down to `kept`, which folds `count` elements into each output.
fn reduce_typed<T: Scalar>(
    kind: ReduceKind,
    data: &[T],
    shape: &[usize],
    kept: &[usize],
    count: usize,
) -> Result<Vec<T>> {
    // NaN wins a max or min, as in numpy: `v != v` only holds for NaN.
    #[allow(clippy::eq_op)]
    let out = match kind {
        ReduceKind::Max => fold(data, shape, kept, extreme::<T>(false), |a, v| if v > a || v != v { v } else { a })?,
        ReduceKind::Min => fold(data, shape, kept, extreme::<T>(true), |a, v| if v < a || v != v { v } else { a })?,
        _ if T::DTYPE == DType::Bool => bail!(Unsupported, "{} does not take bool", kind.name()),
        ReduceKind::L2 => {
            let acc = fold(data, shape, kept, 0.0, |a, v| a + v.to_f64() * v.to_f64())?;
            acc.into_iter().map(|a| T::from_f64(a.sqrt())).collect()
        }
        ReduceKind::LogSum => {
            let acc = fold(data, shape, kept, 0.0, |a, v| a + v.to_f64())?;
            acc.into_iter().map(|a| T::from_f64(a.ln())).collect()
        }
        ReduceKind::LogSumExp => {
            // Running (max, sum of exp(x - max)): one pass, no overflow for large inputs.
            let acc = fold(data, shape, kept, (f64::NEG_INFINITY, 0.0), |(m, s), v| {
                let v = v.to_f64();
                if v == f64::NEG_INFINITY {
                    (m, s)
                } else if v > m {
                    (v, s * (m - v).exp() + 1.0)
                } else {
                    (m, s + (v - m).exp())
                }
            })?;
            acc.into_iter().map(|(m, s)| T::from_f64(m + s.ln())).collect()
        }
        _ if T::DTYPE.is_float() => sum_like::<T, f64>(kind, data, shape, kept, count)?,
        _ => sum_like::<T, i64>(kind, data, shape, kept, count)?,
    };
    Ok(out)
}

/// Sum, Mean, Prod, L1 and SumSquare, accumulated in `W`.
fn sum_like<T: Scalar, W: Wide>(
    kind: ReduceKind,
    data: &[T],
    shape: &[usize],
    kept: &[usize],
    count: usize,
) -> Result<Vec<T>> {
    let init = if kind == ReduceKind::Prod { W::ONE } else { W::ZERO };
    let acc = fold(data, shape, kept, init, |a, v| match kind {
        ReduceKind::Prod => a.mul(W::of(v)),
        ReduceKind::L1 => a.add(W::abs_of(v)),
        ReduceKind::SumSquare => a.add(W::of(v).mul(W::of(v))),
        _ => a.add(W::of(v)),
    })?;
    Ok(acc.into_iter().map(|a| if kind == ReduceKind::Mean { a.div_count(count) } else { a }.to::<T>()).collect())
}

// ---------------------------------------------------------------------------------------------
// ArgMax, ArgMin

#[derive(Debug)]
pub struct ArgReduce {
    pub max: bool,
    pub axis: i64,
    pub keepdims: bool,
    pub select_last_index: bool,
}

fn build_arg(ctx: &BuildCtx, max: bool) -> Result<Box<dyn Op>> {
    Ok(Box::new(ArgReduce {
        max,
        axis: ctx.attrs.int_or("axis", 0)?,
        keepdims: ctx.attrs.int_or("keepdims", 1)? != 0,
        select_last_index: ctx.attrs.int_or("select_last_index", 0)? != 0,
    }))
}

impl ArgReduce {
    pub fn out_dims<D: Clone>(&self, dims: &[D], axis: usize, one: D) -> Vec<D> {
        let mut out = dims.to_vec();
        if self.keepdims {
            out[axis] = one;
        } else {
            out.remove(axis);
        }
        out
    }

    /// Index of the winner in each lane along the axis.
    #[allow(clippy::eq_op)]
    fn winners<T: Scalar>(&self, data: &[T], outer: usize, dim: usize, inner: usize) -> Vec<i64> {
        let better = |v: T, best: T| {
            let strictly = if self.max { v > best } else { v < best };
            // The first NaN wins, as numpy's argmax/argmin.
            strictly || (v != v && best == best) || (self.select_last_index && v == best)
        };
        let mut out = vec![0i64; outer * inner];
        // Lanes side by side, the axis walked row by row: each row is read in order (a lane of
        // a wide inner axis read one value per row misses the cache on every step).
        for o in 0..outer {
            let block = &data[o * dim * inner..(o + 1) * dim * inner];
            let mut best: Vec<T> = block[..inner].to_vec();
            let index = &mut out[o * inner..(o + 1) * inner];
            for (k, row) in block.chunks_exact(inner).enumerate().skip(1) {
                for ((b, i), &v) in best.iter_mut().zip(index.iter_mut()).zip(row) {
                    if better(v, *b) {
                        *b = v;
                        *i = k as i64;
                    }
                }
            }
        }
        out
    }
}

impl Op for ArgReduce {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let shape = match &x.shape {
            Some(dims) => Some(self.out_dims(dims, normalize_axis(self.axis, dims.len())?, Dim::Known(1))),
            None => None,
        };
        fold_small(self, inputs, vec![fact_of(Some(DType::I64), shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let axis = normalize_axis(self.axis, x.rank())?;
        let dim = x.shape()[axis];
        let name = if self.max { "ArgMax" } else { "ArgMin" };
        if dim == 0 {
            bail!(Shape, "{name}: axis {axis} of shape {:?} is empty", x.shape());
        }
        if x.is_empty() {
            return Ok(vec![Tensor::zeros(DType::I64, self.out_dims(x.shape(), axis, 1))?]);
        }
        let (outer, _, inner) = lanes(x.shape(), axis);
        // Compared in the widened dtype, which keeps every order (five copies, not thirteen).
        let (dt, x) = (x.dtype(), widen(x)?);
        let out = dispatch!(x.dtype(); T => self.winners::<T>(x.as_slice::<T>()?, outer, dim, inner);
            F32 | F64 | I64 | U64 | Bool; else => bail!(Unsupported, "{name} does not take {dt}"));
        Ok(vec![Tensor::new(self.out_dims(x.shape(), axis, 1), out)?])
    }
}

#[cfg(test)]
mod tests {
    use super::super::reshape::testing::*;
    use super::*;
    use crate::ir::Attr;
    use half::f16;

    fn data() -> Tensor {
        // [[[5, 1], [20, 2]], [[30, 1], [40, 2]], [[55, 1], [60, 2]]], the spec's example.
        Tensor::new(vec![3, 2, 2], vec![5f32, 1., 20., 2., 30., 1., 40., 2., 55., 1., 60., 2.]).unwrap()
    }

    fn reduce(op: &str, opset: i64, x: &Tensor, axes: Option<&[i64]>, keepdims: i64) -> Result<Tensor> {
        let axes_t = axes.map(|a| Tensor::vector(a.to_vec()));
        run(op, opset, vec![("keepdims", Attr::Int(keepdims))], &[Some(x), axes_t.as_ref()])
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn reductions_match_numpy() {
        let x = data();
        // np.<op>(x, axis=1) for the example above.
        let cases: [(&str, [f32; 6]); 8] = [
            ("ReduceSum", [25., 3., 70., 3., 115., 3.]),
            ("ReduceMean", [12.5, 1.5, 35., 1.5, 57.5, 1.5]),
            ("ReduceMax", [20., 2., 40., 2., 60., 2.]),
            ("ReduceMin", [5., 1., 30., 1., 55., 1.]),
            ("ReduceProd", [100., 2., 1200., 2., 3300., 2.]),
            ("ReduceL1", [25., 3., 70., 3., 115., 3.]),
            ("ReduceSumSquare", [425., 5., 2500., 5., 6625., 5.]),
            ("ReduceL2", [20.615528, 2.236068, 50., 2.236068, 81.394104, 2.236068]),
        ];
        for (op, want) in cases {
            let y = reduce(op, 18, &x, Some(&[1]), 0).unwrap();
            assert_eq!(y.shape(), &[3, 2], "{op}");
            for (g, w) in f32s(&y).iter().zip(want) {
                assert!((g - w).abs() <= 1e-4 * w.abs(), "{op}: {g} vs {w}");
            }
        }
        // np.log(np.sum(np.exp(x), axis=1))
        let y = reduce("ReduceLogSumExp", 18, &x, Some(&[1]), 1).unwrap();
        assert_eq!(y.shape(), &[3, 1, 2]);
        let want = [20.000000, 2.3132617, 40.000046, 2.3132617, 60.006714, 2.3132617];
        assert!(f32s(&y).iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-5), "{y:?}");
        let y = reduce("ReduceLogSum", 18, &x, None, 1).unwrap();
        assert_eq!(y.shape(), &[1, 1, 1]);
        assert!((f32s(&y)[0] - 219f32.ln()).abs() < 1e-5);
    }

    #[test]
    fn axes_attribute_in_old_opsets() {
        let x = data();
        let attrs = vec![("axes", ints(&[-2])), ("keepdims", Attr::Int(1))];
        let y = run("ReduceMean", 13, attrs.clone(), &[Some(&x)]).unwrap();
        assert_eq!((y.shape(), f32s(&y)[0]), (&[3, 1, 2][..], 12.5));
        let y = run("ReduceSum", 11, attrs, &[Some(&x)]).unwrap();
        assert_eq!(f32s(&y)[0], 25.);
        let y = run("ReduceSum", 1, vec![("keepdims", Attr::Int(0))], &[Some(&x)]).unwrap();
        assert_eq!((y.shape(), f32s(&y)[0]), (&[][..], 219.));
    }

    #[test]
    fn empty_axes_and_empty_sets() {
        let x = data();
        let noop = vec![("noop_with_empty_axes", Attr::Int(1))];
        let empty = Tensor::vector(Vec::<i64>::new());
        assert_eq!(run("ReduceSum", 13, noop, &[Some(&x), Some(&empty)]).unwrap(), x);
        assert_eq!(run("ReduceSum", 13, vec![], &[Some(&x), Some(&empty)]).unwrap().shape(), &[1, 1, 1]);

        let e = Tensor::new(vec![2, 0, 4], Vec::<f32>::new()).unwrap();
        let first = |op: &str| f32s(&reduce(op, 18, &e, Some(&[1]), 1).unwrap())[0];
        assert_eq!(first("ReduceSum"), 0.0);
        assert_eq!(first("ReduceProd"), 1.0);
        assert_eq!(first("ReduceL2"), 0.0);
        assert_eq!(first("ReduceMax"), f32::NEG_INFINITY);
        assert_eq!(first("ReduceMin"), f32::INFINITY);
        assert_eq!(first("ReduceLogSum"), f32::NEG_INFINITY);
        assert_eq!(first("ReduceLogSumExp"), f32::NEG_INFINITY);
        let b = Tensor::new(vec![2, 0], Vec::<bool>::new()).unwrap();
        assert_eq!(reduce("ReduceMax", 20, &b, Some(&[1]), 0).unwrap().as_slice::<bool>().unwrap(), &[false, false]);
        assert_eq!(reduce("ReduceMin", 20, &b, Some(&[1]), 0).unwrap().as_slice::<bool>().unwrap(), &[true, true]);
        let i = Tensor::new(vec![0], Vec::<u8>::new()).unwrap();
        assert_eq!(reduce("ReduceMax", 18, &i, None, 0).unwrap().as_slice::<u8>().unwrap(), &[0]);
        assert_eq!(reduce("ReduceMin", 18, &i, None, 0).unwrap().as_slice::<u8>().unwrap(), &[255]);
    }

    #[test]
    fn integer_and_half_reductions() {
        // Integer overflow wraps instead of panicking; means truncate.
        let x = Tensor::vector(vec![i32::MAX, 1, 2]);
        assert_eq!(reduce("ReduceSum", 13, &x, None, 0).unwrap().as_slice::<i32>().unwrap(), &[i32::MIN + 2]);
        assert_eq!(
            reduce("ReduceMean", 18, &Tensor::vector(vec![1i64, 2]), None, 0).unwrap().as_slice::<i64>().unwrap(),
            &[1]
        );
        assert_eq!(
            reduce("ReduceL1", 18, &Tensor::vector(vec![-3i8, 4]), None, 0).unwrap().as_slice::<i8>().unwrap(),
            &[7]
        );
        let h = Tensor::vector(vec![f16::from_f32(1.5), f16::from_f32(2.25)]);
        assert_eq!(reduce("ReduceSum", 13, &h, None, 0).unwrap().as_slice::<f16>().unwrap(), &[f16::from_f32(3.75)]);
        let e = reduce("ReduceSum", 13, &Tensor::vector(vec![true]), None, 0).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Unsupported);
    }

    #[test]
    fn bad_axes_are_errors() {
        let x = data();
        let e = reduce("ReduceSum", 13, &x, Some(&[3]), 1).unwrap_err();
        assert!(e.message.contains("axis 3"), "{e}");
        assert!(reduce("ReduceMax", 18, &x, Some(&[-4]), 1).is_err());
        assert!(run("ArgMax", 13, vec![("axis", Attr::Int(5))], &[Some(&x)]).is_err());
        let empty = Tensor::new(vec![0, 2], Vec::<f32>::new()).unwrap();
        assert!(run("ArgMin", 13, vec![], &[Some(&empty)]).is_err());
    }

    #[test]
    fn inference_with_unknown_axes() {
        let x = Fact::new(DType::F32, vec![Dim::Symbol("N".into()), Dim::Known(4)]);
        let axes = Fact::concrete(DType::I64, &[1]);
        let op = build("ReduceMean", 18, vec![], 1).unwrap();
        assert_eq!(op.infer(&[Some(&x), Some(&axes)]).unwrap()[0].shape, Some(vec![Dim::Unknown; 2]));
        let axes = Fact::constant(std::sync::Arc::new(Tensor::vector(vec![1i64])));
        assert_eq!(
            op.infer(&[Some(&x), Some(&axes)]).unwrap()[0].shape,
            Some(vec![Dim::Symbol("N".into()), Dim::Known(1)])
        );
    }

    #[test]
    fn arg_max_and_min() {
        let x = Tensor::new(vec![2, 3], vec![2f32, 7., 7., 9., 1., 9.]).unwrap();
        let arg = |op: &str, attrs: Vec<(&str, Attr)>| run(op, 13, attrs, &[Some(&x)]).unwrap();
        let y = arg("ArgMax", vec![("axis", Attr::Int(1))]);
        assert_eq!((y.shape(), y.as_slice::<i64>().unwrap()), (&[2, 1][..], &[1i64, 0][..]));
        let y = arg(
            "ArgMax",
            vec![("axis", Attr::Int(-1)), ("select_last_index", Attr::Int(1)), ("keepdims", Attr::Int(0))],
        );
        assert_eq!((y.shape(), y.as_slice::<i64>().unwrap()), (&[2][..], &[2i64, 2][..]));
        let y = arg("ArgMin", vec![]);
        assert_eq!(y.as_slice::<i64>().unwrap(), &[0, 1, 0]);
    }

    /// Narrow dtypes reduce in a wider one (see Reduce::eval): wrapping where their own kernel
    /// wrapped, saturating where it saturated, float16 rounded once.
    #[test]
    fn widened_reductions_keep_their_own_results() {
        let x = Tensor::vector(vec![100i8, 100, -128]);
        assert_eq!(reduce("ReduceSum", 13, &x, None, 0).unwrap().as_slice::<i8>().unwrap(), &[72]);
        assert_eq!(reduce("ReduceL2", 18, &x, None, 0).unwrap().as_slice::<i8>().unwrap(), &[127]);
        assert_eq!(reduce("ReduceL1", 18, &x, None, 0).unwrap().as_slice::<i8>().unwrap(), &[72]);
        assert_eq!(reduce("ReduceMin", 18, &x, None, 0).unwrap().as_slice::<i8>().unwrap(), &[-128]);
        let empty = Tensor::new(vec![2, 0], Vec::<u16>::new()).unwrap();
        let y = reduce("ReduceMax", 18, &empty, Some(&[1]), 0).unwrap();
        assert_eq!(y.as_slice::<u16>().unwrap(), &[0, 0]);
        let y = reduce("ReduceMin", 18, &empty, Some(&[1]), 0).unwrap();
        assert_eq!(y.as_slice::<u16>().unwrap(), &[u16::MAX, u16::MAX]);
        let h = Tensor::vector(vec![f16::from_f32(2048.), f16::from_f32(1.), f16::from_f32(1.)]);
        let y = reduce("ReduceSum", 13, &h, None, 0).unwrap();
        assert_eq!(y.as_slice::<f16>().unwrap(), &[f16::from_f32(2050.)]);
        let x = Tensor::vector(vec![3u32, u32::MAX, 7]);
        let arg = build_arg_op(true).eval(&[Some(&x)]).unwrap().remove(0);
        assert_eq!(arg.as_slice::<i64>().unwrap(), &[1]);
    }

    fn build_arg_op(max: bool) -> ArgReduce {
        ArgReduce { max, axis: 0, keepdims: false, select_last_index: false }
    }
}
