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

/// Calls `run(out_start, starts, steps, len)` for runs of `len` consecutive output elements along
/// which the index into input `k` goes `starts[k]`, `starts[k] + steps[k]`, ... (step 0 where it is
/// broadcast). Dims that step alike in every input are merged, so runs are as long as the shapes
/// allow. Not generic over the element work, so this walk is compiled once per input count, and
/// each kernel keeps only its inner loop.
#[inline(never)]
pub fn for_each_run<const N: usize>(
    shapes: [&[usize]; N],
    out: &[usize],
    run: &mut dyn FnMut(usize, [usize; N], [usize; N], usize),
) {
    let total: usize = out.iter().product();
    if total == 0 {
        return;
    }
    if shapes.iter().all(|s| *s == out) {
        run(0, [0; N], [1; N], total);
        return;
    }
    let strides: Vec<Vec<usize>> = shapes.iter().map(|s| broadcast_strides(s, out)).collect();
    // Merged dims and their per-input strides, innermost first.
    let mut dims: Vec<(usize, [usize; N])> = Vec::with_capacity(out.len());
    for d in (0..out.len()).rev().filter(|&d| out[d] != 1) {
        let step: [usize; N] = std::array::from_fn(|k| strides[k][d]);
        match dims.last_mut() {
            Some((n, inner)) if (0..N).all(|k| step[k] == inner[k] * *n) => *n *= out[d],
            _ => dims.push((out[d], step)),
        }
    }
    let Some(&(len, steps)) = dims.first() else {
        run(0, [0; N], [0; N], 1);
        return;
    };
    let outer = &dims[1..];
    let mut counter = vec![0usize; outer.len()];
    let mut starts = [0usize; N];
    let mut o = 0;
    loop {
        run(o, starts, steps, len);
        o += len;
        // Increment the multi-index over the outer dims, updating every input offset incrementally.
        let mut d = 0;
        loop {
            let Some(&(n, step)) = outer.get(d) else { return };
            counter[d] += 1;
            for k in 0..N {
                starts[k] += step[k];
            }
            if counter[d] < n {
                break;
            }
            for k in 0..N {
                starts[k] -= step[k] * n;
            }
            counter[d] = 0;
            d += 1;
        }
    }
}

/// Calls `f(out_index, [index into each input])` for every element of the broadcast output shape.
pub fn for_each_index<const N: usize>(shapes: [&[usize]; N], out: &[usize], mut f: impl FnMut(usize, [usize; N])) {
    for_each_run(shapes, out, &mut |o, starts, steps, len| {
        for t in 0..len {
            f(o + t, std::array::from_fn(|k| starts[k] + t * steps[k]));
        }
    });
}

/// Elementwise `f(a, b)` with broadcasting.
pub fn binary<A: Elem, B: Elem, O: Elem>(a: &Tensor, b: &Tensor, f: impl Fn(&A, &B) -> O) -> Result<Tensor> {
    let out_shape = broadcast_shapes(a.shape(), b.shape())?;
    let (xa, xb) = (a.as_slice::<A>()?, b.as_slice::<B>()?);
    let n = crate::ir::tensor::checked_len(&out_shape, O::DTYPE)?;
    let mut out = crate::ir::limits::with_capacity(n)?;
    for_each_run([a.shape(), b.shape()], &out_shape, &mut |_, [i, j], [si, sj], len| {
        out.extend((0..len).map(|t| f(&xa[i + t * si], &xb[j + t * sj])));
    });
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
    for_each_run([a.shape(), b.shape(), c.shape()], &out_shape, &mut |_, [i, j, k], [si, sj, sk], len| {
        out.extend((0..len).map(|t| f(&xa[i + t * si], &xb[j + t * sj], &xc[k + t * sk])));
    });
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
    fn runs_merge_dims_that_step_alike() {
        let mut runs = vec![];
        for_each_run([&[2, 3, 4][..], &[3, 1][..]], &[2, 3, 4], &mut |o, starts, steps, len| {
            runs.push((o, starts, steps, len))
        });
        // Each row of 4 repeats one element of b; rows of a are contiguous.
        assert_eq!(runs[0], (0, [0, 0], [1, 0], 4));
        assert_eq!(runs[4], (16, [16, 1], [1, 0], 4));
        assert_eq!(runs.len(), 6);
        let mut runs = vec![];
        for_each_run([&[2, 3, 4][..], &[1, 1, 4][..]], &[2, 3, 4], &mut |o, starts, _, len| {
            runs.push((o, starts, len))
        });
        assert_eq!(runs.len(), 6);
        let mut runs = vec![];
        for_each_run([&[2, 3, 4][..], &[2, 1, 1][..]], &[2, 3, 4], &mut |o, starts, steps, len| {
            runs.push((o, starts, steps, len))
        });
        // The two inner dims merge: a run of 12 per element of b.
        assert_eq!(runs, [(0, [0, 0], [1, 0], 12), (12, [12, 1], [1, 0], 12)]);
    }

    #[test]
    fn scalar_with_empty_tensor() {
        let a = Tensor::new(vec![0, 3], Vec::<f32>::new()).unwrap();
        let b = Tensor::scalar(1f32);
        let c = binary::<f32, f32, f32>(&a, &b, |x, y| x + y).unwrap();
        assert_eq!(c.shape(), &[0, 3]);
    }
}
