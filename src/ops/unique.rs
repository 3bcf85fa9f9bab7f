//! Unique: the distinct values of a tensor, or its distinct slices along one axis, with where each
//! first occurs, which one every input item became, and how often each occurs.

use super::reshape::{fact_of, lanes, normalize_axes, with_capacity};
use super::{input, BuildCtx, Op, Registry};
use crate::ir::order::sort_positions;
use crate::ir::shape::normalize_axis;
use crate::ir::{DType, Dim, Fact, Tensor};
use crate::{dispatch, Result};
use std::cmp::Ordering;

pub fn register(r: &mut Registry) {
    r.add("Unique", build_unique);
}

#[derive(Debug)]
pub struct Unique {
    axis: Option<i64>,
    sorted: bool,
}

fn build_unique(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    Ok(Box::new(Unique { axis: ctx.attrs.int("axis")?, sorted: ctx.attrs.int_or("sorted", 1)? != 0 }))
}

/// Orders values with NaN above every number and all NaNs equal, as numpy.unique does.
#[allow(clippy::eq_op)]
fn compare<T: PartialOrd>(a: &T, b: &T) -> Ordering {
    a.partial_cmp(b).unwrap_or_else(|| (a != a).cmp(&(b != b)))
}

/// The grouping of `count` items into equal classes under `cmp`.
struct Groups {
    /// Per output position: the first item of the class, and how many items it has.
    first: Vec<usize>,
    counts: Vec<i64>,
    /// Per item: the output position of its class.
    inverse: Vec<i64>,
}

/// `cmp` is a trait object so that one sort serves every dtype (a sort per element type and axis
/// mode made Unique the library's largest kernel).
#[inline(never)]
fn group(count: usize, sorted: bool, cmp: &dyn Fn(usize, usize) -> Ordering) -> Result<Groups> {
    let mut order: Vec<usize> = with_capacity(count)?;
    order.extend(0..count);
    // Ties broken by position, so each class starts with its first occurrence.
    sort_positions(&mut order, &|a, b| cmp(a, b).then(a.cmp(&b)));
    let (mut first, mut counts): (Vec<usize>, Vec<i64>) = (vec![], vec![]);
    let mut class_of = vec![0usize; count];
    for (k, &item) in order.iter().enumerate() {
        if k == 0 || cmp(order[k - 1], item) != Ordering::Equal {
            first.push(item);
            counts.push(0);
        }
        let class = first.len() - 1;
        class_of[item] = class;
        counts[class] += 1;
    }
    // Classes come out in sorted order; unsorted output lists them by first occurrence.
    let mut position: Vec<usize> = (0..first.len()).collect();
    if !sorted {
        let mut by_occurrence: Vec<usize> = (0..first.len()).collect();
        sort_positions(&mut by_occurrence, &|a, b| first[a].cmp(&first[b]));
        for (p, &c) in by_occurrence.iter().enumerate() {
            position[c] = p;
        }
        first = by_occurrence.iter().map(|&c| first[c]).collect();
        counts = by_occurrence.iter().map(|&c| counts[c]).collect();
    }
    let inverse = class_of.iter().map(|&c| position[c] as i64).collect();
    Ok(Groups { first, counts, inverse })
}

impl Unique {
    /// Not generic: the element type comes in as `cmp`, which orders two elements by their flat
    /// index, and `take`, which builds a tensor of the given shape from the elements at flat
    /// indices (one copy of this for all 24 dtypes was ~60 KB of the shared library).
    fn run(
        &self,
        x: &Tensor,
        cmp: &dyn Fn(usize, usize) -> Ordering,
        take: &dyn Fn(Vec<usize>, Vec<usize>) -> Result<Tensor>,
    ) -> Result<Vec<Tensor>> {
        let (y, groups) = match self.axis {
            None => {
                let groups = group(x.len(), self.sorted, cmp)?;
                (take(groups.first.clone(), vec![groups.first.len()])?, groups)
            }
            Some(axis) => {
                let axis = normalize_axes("Unique", &[axis], x.rank())?[0];
                let (outer, dim, inner) = lanes(x.shape(), axis);
                // Element `e` of slice `s` along the axis, in row-major order.
                let element = |s: usize, e: usize| ((e / inner) * dim + s) * inner + e % inner;
                let slice_len = outer * inner;
                let groups = group(dim, self.sorted, &|a, b| {
                    (0..slice_len)
                        .map(|e| cmp(element(a, e), element(b, e)))
                        .find(|o| o.is_ne())
                        .unwrap_or(Ordering::Equal)
                })?;
                let kept = groups.first.len();
                let mut picks: Vec<usize> = with_capacity(outer * kept * inner)?;
                for o in 0..outer {
                    for &s in &groups.first {
                        picks.extend((o * dim + s) * inner..(o * dim + s + 1) * inner);
                    }
                }
                let mut shape = x.shape().to_vec();
                shape[axis] = kept;
                (take(picks, shape)?, groups)
            }
        };
        let indices = groups.first.iter().map(|&i| i as i64).collect();
        Ok(vec![y, Tensor::vector(indices), Tensor::vector(groups.inverse), Tensor::vector(groups.counts)])
    }
}

impl Op for Unique {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let list = || fact_of(Some(DType::I64), Some(vec![Dim::Unknown]));
        let (y_shape, inverse_len) = match (&x.shape, self.axis) {
            (None, None) => (Some(vec![Dim::Unknown]), Dim::Unknown),
            (Some(dims), None) => {
                let n = dims.iter().try_fold(1usize, |n, d| d.known().and_then(|d| n.checked_mul(d)));
                (Some(vec![Dim::Unknown]), n.map_or(Dim::Unknown, Dim::Known))
            }
            (None, Some(_)) => (None, Dim::Unknown),
            (Some(dims), Some(axis)) => {
                let axis = normalize_axis(axis, dims.len())?;
                let mut y = dims.clone();
                y[axis] = Dim::Unknown;
                (Some(y), dims[axis].clone())
            }
        };
        Ok(vec![fact_of(x.dtype, y_shape), list(), fact_of(Some(DType::I64), Some(vec![inverse_len])), list()])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        dispatch!(x.dtype(); T => {
            let data = x.as_slice::<T>()?;
            self.run(x, &|a, b| compare(&data[a], &data[b]), &|picks, shape| {
                Tensor::new(shape, picks.iter().map(|&i| Clone::clone(&data[i])).collect::<Vec<T>>())
            })
        }; all;
            else => crate::bail!(Unsupported, "Unique does not take {}", x.dtype()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::activation::test_util::build;
    use super::*;
    use crate::ir::Attr;

    fn unique(attrs: Vec<(&str, Attr)>, x: &Tensor) -> Result<Vec<Tensor>> {
        build("Unique", 11, attrs, 4)?.eval(&[Some(x)])
    }

    fn ints(t: &Tensor) -> Vec<i64> {
        t.as_slice::<i64>().unwrap().to_vec()
    }

    // The examples of the ONNX spec (computed there with numpy.unique).
    #[test]
    fn sorted_and_unsorted_values() {
        let x = Tensor::vector(vec![2f32, 1., 1., 3., 4., 3.]);
        let out = unique(vec![], &x).unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[1., 2., 3., 4.]);
        assert_eq!(
            (ints(&out[1]), ints(&out[2]), ints(&out[3])),
            (vec![1, 0, 3, 4], vec![1, 0, 0, 2, 3, 2], vec![2, 1, 2, 1])
        );
        let out = unique(vec![("sorted", Attr::Int(0))], &x).unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[2., 1., 3., 4.]);
        assert_eq!(
            (ints(&out[1]), ints(&out[2]), ints(&out[3])),
            (vec![0, 1, 3, 4], vec![0, 1, 1, 2, 3, 2], vec![1, 2, 2, 1])
        );
        let s = Tensor::vector(vec!["b".to_string(), "a".into(), "b".into()]);
        assert_eq!(unique(vec![], &s).unwrap()[0].as_slice::<String>().unwrap(), &["a".to_string(), "b".into()]);
    }

    #[test]
    fn slices_along_an_axis() {
        // Example 4: x of shape [2, 4, 2], axis 1.
        let x =
            Tensor::new(vec![2, 4, 2], vec![1f32, 1., 0., 1., 2., 1., 0., 1., 1., 1., 0., 1., 2., 1., 0., 1.]).unwrap();
        let out = unique(vec![("axis", Attr::Int(1))], &x).unwrap();
        assert_eq!(out[0].shape(), &[2, 3, 2]);
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[0., 1., 1., 1., 2., 1., 0., 1., 1., 1., 2., 1.]);
        assert_eq!((ints(&out[1]), ints(&out[2]), ints(&out[3])), (vec![1, 0, 2], vec![1, 0, 2, 0], vec![2, 1, 1]));
    }

    #[test]
    fn bad_axis_is_an_error() {
        let x = Tensor::vector(vec![1i32, 2]);
        let e = unique(vec![("axis", Attr::Int(1))], &x).unwrap_err();
        assert!(e.message.contains("axis 1 is out of range"), "{e}");
    }
}
