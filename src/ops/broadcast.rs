//! Numpy-style broadcasting for kernels: iterate the output of a broadcast and find, for each
//! element, the flat index into every input. Shared by binary math, comparisons, Where, PRelu, ...

use crate::ir::shape::{broadcast_shapes, strides_of};
use crate::ir::{Elem, Tensor};
use crate::Result;

/// For each input shape, strides into that input laid against the output shape (0 where the input
/// is broadcast).
fn broadcast_strides(input: &[usize], out: &[usize]) -> Vec<usize> {
    let s = strides_of(input);
    let off = out.len() - input.len();
    (0..out.len()).map(|i| if i < off || input[i - off] == 1 { 0 } else { s[i - off] }).collect()
}

/// Calls `f(out_index, [index into each input])` for every element of the broadcast output shape.
pub fn for_each_index<const N: usize>(shapes: [&[usize]; N], out: &[usize], mut f: impl FnMut(usize, [usize; N])) {
    let total: usize = out.iter().product();
    if total == 0 {
        return;
    }
    // Fast path: every input already has the output's shape.
    if shapes.iter().all(|s| *s == out) {
        for i in 0..total {
            f(i, [i; N]);
        }
        return;
    }
    let strides: Vec<Vec<usize>> = shapes.iter().map(|s| broadcast_strides(s, out)).collect();
    let rank = out.len();
    let mut counter = vec![0usize; rank];
    let mut idx = [0usize; N];
    for o in 0..total {
        f(o, idx);
        // Increment the multi-index, updating every input offset incrementally.
        for d in (0..rank).rev() {
            counter[d] += 1;
            for k in 0..N {
                idx[k] += strides[k][d];
            }
            if counter[d] < out[d] {
                break;
            }
            for k in 0..N {
                idx[k] -= strides[k][d] * out[d];
            }
            counter[d] = 0;
        }
    }
}

/// Elementwise `f(a, b)` with broadcasting.
pub fn binary<A: Elem, B: Elem, O: Elem>(a: &Tensor, b: &Tensor, f: impl Fn(&A, &B) -> O) -> Result<Tensor> {
    let out_shape = broadcast_shapes(a.shape(), b.shape())?;
    let (xa, xb) = (a.as_slice::<A>()?, b.as_slice::<B>()?);
    let n = crate::ir::tensor::checked_len(&out_shape, O::DTYPE)?;
    let mut out = crate::ir::limits::with_capacity(n)?;
    for_each_index([a.shape(), b.shape()], &out_shape, |_, [i, j]| out.push(f(&xa[i], &xb[j])));
    Tensor::new(out_shape, out)
}

/// Elementwise `f(a, b, c)` with broadcasting (Where, Clip with tensor bounds, ...).
pub fn ternary<A: Elem, B: Elem, C: Elem, O: Elem>(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    f: impl Fn(&A, &B, &C) -> O,
) -> Result<Tensor> {
    let out_shape = broadcast_shapes(&broadcast_shapes(a.shape(), b.shape())?, c.shape())?;
    let (xa, xb, xc) = (a.as_slice::<A>()?, b.as_slice::<B>()?, c.as_slice::<C>()?);
    let n = crate::ir::tensor::checked_len(&out_shape, O::DTYPE)?;
    let mut out = crate::ir::limits::with_capacity(n)?;
    for_each_index([a.shape(), b.shape(), c.shape()], &out_shape, |_, [i, j, k]| out.push(f(&xa[i], &xb[j], &xc[k])));
    Tensor::new(out_shape, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_row_and_column() {
        let a = Tensor::new(vec![2, 1], vec![10i64, 20]).unwrap();
        let b = Tensor::new(vec![3], vec![1i64, 2, 3]).unwrap();
        let c = binary::<i64, i64, i64>(&a, &b, |x, y| x + y).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(c.as_slice::<i64>().unwrap(), &[11, 12, 13, 21, 22, 23]);
    }

    #[test]
    fn scalar_with_empty_tensor() {
        let a = Tensor::new(vec![0, 3], Vec::<f32>::new()).unwrap();
        let b = Tensor::scalar(1f32);
        let c = binary::<f32, f32, f32>(&a, &b, |x, y| x + y).unwrap();
        assert_eq!(c.shape(), &[0, 3]);
    }
}
