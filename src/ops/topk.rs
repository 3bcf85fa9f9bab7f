//! Ops that work lane by lane along one axis: TopK sorts each lane, CumSum and CumProd scan it.

use super::reduce::Wide;
use super::reshape::{const_ints, fact_of, fold_small, lanes, numel, resolve_axis, scalar_int, with_capacity};
use super::{input, same_as_input, BuildCtx, Op, Registry};
use crate::ir::shape::normalize_axis;
use crate::ir::tensor::try_vec;
use crate::ir::{DType, Dim, Fact, Scalar, Tensor};
use crate::{bail, dispatch, err, Result};
use std::cmp::Ordering;

pub fn register(r: &mut Registry) {
    r.add("TopK", build_topk);
    r.add("CumSum", build_cumulative);
    r.add("CumProd", build_cumulative);
}

// ---------------------------------------------------------------------------------------------
// TopK

#[derive(Debug)]
pub struct TopK {
    /// TopK-1 gives k as an attribute; later opsets as input 1.
    k_attr: Option<i64>,
    axis: i64,
    largest: bool,
}

fn build_topk(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let k_attr = if ctx.opset < 10 { Some(ctx.attrs.req_int("k")?) } else { None };
    // `sorted = 0` allows any order, so the sorted output serves it too.
    Ok(Box::new(TopK { k_attr, axis: ctx.attrs.int_or("axis", -1)?, largest: ctx.attrs.int_or("largest", 1)? != 0 }))
}

/// Orders values with NaN above every number, so NaNs count as the largest.
#[allow(clippy::eq_op)]
fn nan_last<T: Scalar>(a: &T, b: &T) -> Ordering {
    a.partial_cmp(b).unwrap_or_else(|| (a != a).cmp(&(b != b)))
}

impl TopK {
    fn k(&self, inputs_k: Option<&Tensor>) -> Result<i64> {
        match (self.k_attr, inputs_k) {
            (Some(k), _) => Ok(k),
            (None, Some(t)) => scalar_int("TopK", "K", t),
            (None, None) => bail!(InvalidModel, "TopK needs input K"),
        }
    }

    /// The positions along the axis of each lane's top `k`, ordered by `key(flat index)`. Keys are
    /// f64 (exact for every dtype but the 64-bit integers) or i64, so two sorts serve all dtypes.
    fn top<K: Scalar>(&self, shape: &[usize], axis: usize, k: usize, key: &dyn Fn(usize) -> K) -> Result<Vec<i64>> {
        let (outer, dim, inner) = lanes(shape, axis);
        let mut indices = try_vec(numel(&[outer, k, inner]), 0i64)?;
        let mut lane: Vec<(K, usize)> = Vec::with_capacity(dim);
        for o in 0..outer {
            for i in 0..inner {
                lane.clear();
                lane.extend((0..dim).map(|j| (key((o * dim + j) * inner + i), j)));
                // Stable on the index: among equal values the lower index comes first.
                let order = |a: &(K, usize), b: &(K, usize)| {
                    let by_value = nan_last(&a.0, &b.0);
                    (if self.largest { by_value.reverse() } else { by_value }).then(a.1.cmp(&b.1))
                };
                if k < dim {
                    lane.select_nth_unstable_by(k, order);
                }
                lane[..k].sort_unstable_by(order);
                for (r, &(_, j)) in lane[..k].iter().enumerate() {
                    indices[(o * k + r) * inner + i] = j as i64;
                }
            }
        }
        Ok(indices)
    }

    /// The top `k` values and their positions along the axis.
    fn values_and_indices<T: Scalar>(&self, x: &Tensor, axis: usize, k: usize) -> Result<(Vec<T>, Vec<i64>)> {
        let data = x.as_slice::<T>()?;
        let indices = match T::DTYPE {
            DType::I64 => self.top(x.shape(), axis, k, &|i| data[i].to_i64())?,
            // Flipping the sign bit maps u64 onto i64 in order.
            DType::U64 => self.top(x.shape(), axis, k, &|i| data[i].to_i64() ^ i64::MIN)?,
            _ => self.top(x.shape(), axis, k, &|i| data[i].to_f64())?,
        };
        let (_, dim, inner) = lanes(x.shape(), axis);
        let mut values = with_capacity(indices.len())?;
        values.extend(indices.iter().enumerate().map(|(p, &j)| {
            let (o, i) = (p / (k * inner), p % inner);
            data[(o * dim + j as usize) * inner + i]
        }));
        Ok((values, indices))
    }
}

impl Op for TopK {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let k = match self.k_attr {
            Some(k) => Some(k),
            None => const_ints(Some(input(inputs, 1)?))?.and_then(|v| v.first().copied()),
        };
        let shape = match &x.shape {
            Some(dims) => {
                let axis = normalize_axis(self.axis, dims.len())?;
                let mut d = dims.clone();
                d[axis] = k.map_or(Dim::Unknown, |k| Dim::Known(k.max(0) as usize));
                Some(d)
            }
            None => None,
        };
        let out = vec![fact_of(x.dtype, shape.clone()), fact_of(Some(DType::I64), shape)];
        fold_small(self, inputs, out)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let axis = normalize_axis(self.axis, x.rank())?;
        let dim = x.shape()[axis];
        let k = self.k(inputs.get(1).copied().flatten())?;
        let k = usize::try_from(k).ok().filter(|&k| k <= dim).ok_or_else(|| {
            err!(Runtime, "TopK: k {k} is out of range for an axis of size {dim} (valid: 0 to {dim})")
        })?;
        let mut shape = x.shape().to_vec();
        shape[axis] = k;
        if x.is_empty() || k == 0 {
            return Ok(vec![Tensor::zeros(x.dtype(), shape.clone())?, Tensor::zeros(DType::I64, shape)?]);
        }
        dispatch!(x.dtype(); T => {
            let (values, indices) = self.values_and_indices::<T>(x, axis, k)?;
            Ok(vec![Tensor::new(shape.clone(), values)?, Tensor::new(shape, indices)?])
        }; F32 | F64 | F16 | BF16 | U8 | I8 | U16 | I16 | I32 | I64 | U32 | U64;
            else => bail!(Unsupported, "TopK does not take {}", x.dtype()))
    }
}

// ---------------------------------------------------------------------------------------------
// CumSum, CumProd

/// A running sum or product along one axis.
#[derive(Debug)]
pub struct Cumulative {
    product: bool,
    exclusive: bool,
    reverse: bool,
}

fn build_cumulative(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    Ok(Box::new(Cumulative {
        product: ctx.op_type == "CumProd",
        exclusive: ctx.attrs.int_or("exclusive", 0)? != 0,
        reverse: ctx.attrs.int_or("reverse", 0)? != 0,
    }))
}

impl Cumulative {
    fn name(&self) -> &'static str {
        if self.product {
            "CumProd"
        } else {
            "CumSum"
        }
    }

    fn scan<T: Scalar, W: Wide>(&self, x: &Tensor, axis: usize) -> Result<Vec<T>> {
        let data = x.as_slice::<T>()?;
        let (outer, dim, inner) = lanes(x.shape(), axis);
        let (start, step_with): (W, fn(W, W) -> W) = if self.product { (W::ONE, W::mul) } else { (W::ZERO, W::add) };
        let mut out = with_capacity(data.len())?;
        out.extend_from_slice(data);
        for o in 0..outer {
            for i in 0..inner {
                let mut acc = start;
                for step in 0..dim {
                    let j = if self.reverse { dim - 1 - step } else { step };
                    let at = (o * dim + j) * inner + i;
                    let v = W::of(data[at]);
                    if self.exclusive {
                        out[at] = acc.to();
                        acc = step_with(acc, v);
                    } else {
                        acc = step_with(acc, v);
                        out[at] = acc.to();
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Op for Cumulative {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let out = same_as_input(inputs)?;
        fold_small(self, inputs, out)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let name = self.name();
        let x = input(inputs, 0)?;
        let axis = resolve_axis(name, scalar_int(name, "axis", input(inputs, 1)?)?, x.rank())?;
        if x.is_empty() {
            return Ok(vec![x.clone()]);
        }
        let out = dispatch!(x.dtype(); T => {
            let data = if x.dtype().is_float() { self.scan::<T, f64>(x, axis)? } else { self.scan::<T, i64>(x, axis)? };
            Tensor::new(x.shape().to_vec(), data)?
        }; F32 | F64 | F16 | BF16 | U8 | I8 | U16 | I16 | I32 | I64 | U32 | U64;
            else => bail!(Unsupported, "{name} does not take {}", x.dtype()));
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::super::reshape::testing::*;
    use super::*;
    use crate::ir::Attr;

    #[test]
    fn top_k_largest_smallest_and_ties() {
        let x = Tensor::new(vec![3, 4], vec![0f32, 1., 2., 3., 4., 5., 6., 7., 11., 10., 9., 8.]).unwrap();
        let k = Tensor::vector(vec![3i64]);
        let out = build("TopK", 11, vec![("axis", Attr::Int(1))], 2).unwrap().eval(&[Some(&x), Some(&k)]).unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[3., 2., 1., 7., 6., 5., 11., 10., 9.]);
        assert_eq!(out[1].as_slice::<i64>().unwrap(), &[3, 2, 1, 3, 2, 1, 0, 1, 2]);
        let out = build("TopK", 11, vec![("largest", Attr::Int(0))], 2).unwrap().eval(&[Some(&x), Some(&k)]).unwrap();
        assert_eq!(out[1].as_slice::<i64>().unwrap(), &[0, 1, 2, 0, 1, 2, 3, 2, 1]);
        // Equal values keep index order, whichever way the sort goes.
        let ties = Tensor::vector(vec![2i32, 1, 2, 1]);
        let k2 = Tensor::vector(vec![2i64]);
        let out = build("TopK", 11, vec![], 2).unwrap().eval(&[Some(&ties), Some(&k2)]).unwrap();
        assert_eq!(out[1].as_slice::<i64>().unwrap(), &[0, 2]);
        let out = build("TopK", 1, vec![("k", Attr::Int(2)), ("axis", Attr::Int(0))], 2)
            .unwrap()
            .eval(&[Some(&ties)])
            .unwrap();
        assert_eq!(out[0].as_slice::<i32>().unwrap(), &[2, 2]);
        let e =
            build("TopK", 11, vec![], 2).unwrap().eval(&[Some(&ties), Some(&Tensor::vector(vec![5i64]))]).unwrap_err();
        assert!(e.message.contains("TopK: k 5"), "{e}");
        assert!(build("TopK", 11, vec![], 2)
            .unwrap()
            .eval(&[Some(&ties), Some(&Tensor::vector(vec![-1i64]))])
            .is_err());
    }

    #[test]
    fn cumsum_modes() {
        let x = Tensor::vector(vec![1f64, 2., 3., 4., 5.]);
        let axis = Tensor::scalar(0i32);
        let cum = |attrs: Vec<(&str, Attr)>| {
            run("CumSum", 14, attrs, &[Some(&x), Some(&axis)]).unwrap().into_vec::<f64>().unwrap()
        };
        assert_eq!(cum(vec![]), [1., 3., 6., 10., 15.]);
        assert_eq!(cum(vec![("exclusive", Attr::Int(1))]), [0., 1., 3., 6., 10.]);
        assert_eq!(cum(vec![("reverse", Attr::Int(1))]), [15., 14., 12., 9., 5.]);
        assert_eq!(cum(vec![("reverse", Attr::Int(1)), ("exclusive", Attr::Int(1))]), [14., 12., 9., 5., 0.]);
        let m = Tensor::new(vec![2, 3], vec![1i32, 2, 3, 4, 5, 6]).unwrap();
        let y = run("CumSum", 11, vec![], &[Some(&m), Some(&Tensor::vector(vec![-1i64]))]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[1, 3, 6, 4, 9, 15]);
        assert!(run("CumSum", 11, vec![], &[Some(&m), Some(&Tensor::scalar(2i64))]).is_err());
        assert!(run("CumSum", 11, vec![], &[Some(&m), Some(&Tensor::vector(vec![0i64, 1]))]).is_err());
    }

    #[test]
    fn cumprod_modes() {
        let x = Tensor::vector(vec![1f64, 2., 3., 4., 5.]);
        let axis = Tensor::scalar(0i32);
        let cum = |attrs: Vec<(&str, Attr)>| {
            run("CumProd", 26, attrs, &[Some(&x), Some(&axis)]).unwrap().into_vec::<f64>().unwrap()
        };
        assert_eq!(cum(vec![]), [1., 2., 6., 24., 120.]);
        assert_eq!(cum(vec![("exclusive", Attr::Int(1))]), [1., 1., 2., 6., 24.]);
        assert_eq!(cum(vec![("reverse", Attr::Int(1))]), [120., 120., 60., 20., 5.]);
        assert_eq!(cum(vec![("reverse", Attr::Int(1)), ("exclusive", Attr::Int(1))]), [120., 60., 20., 5., 1.]);
        let m = Tensor::new(vec![2, 3], vec![1i32, 2, 3, 4, 5, 6]).unwrap();
        let y = run("CumProd", 26, vec![], &[Some(&m), Some(&Tensor::scalar(0i32))]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[1, 2, 3, 4, 10, 18]);
        let e = run("CumProd", 26, vec![], &[Some(&m), Some(&Tensor::scalar(-3i64))]).unwrap_err();
        assert!(e.message.contains("CumProd: axis -3"), "{e}");
    }
}
