//! Ops that write updates into a copy of their data at positions read from tensor data:
//! ScatterElements, Scatter (its deprecated opset 9-10 name) and ScatterND, with the reductions
//! none, add, mul, max and min. Index checking comes from gather.rs. Also TensorScatter, which
//! writes a block of sequence steps per batch entry (KV cache updates).

use super::gather::{element_offsets, nd_offsets};
use super::reduce::Wide;
use super::reshape::fold_small;
use super::{input, same_as_input, BuildCtx, Op, Registry};
use crate::ir::shape::normalize_axis;
use crate::ir::words::Word;
use crate::ir::{Elem, Fact, Scalar, Tensor};
use crate::{bail, dispatch, dispatch_words, err, Result};

pub fn register(r: &mut Registry) {
    r.add("ScatterElements", |ctx| build_scatter(ctx, false));
    r.add("Scatter", |ctx| build_scatter(ctx, false));
    r.add("ScatterND", |ctx| build_scatter(ctx, true));
    r.add("TensorScatter", build_tensor_scatter);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

#[derive(Debug)]
pub struct Scatter {
    /// ScatterND when true, ScatterElements otherwise.
    nd: bool,
    axis: i64,
    reduction: Reduction,
}

fn build_scatter(ctx: &BuildCtx, nd: bool) -> Result<Box<dyn Op>> {
    let reduction = match ctx.attrs.string_or("reduction", "none".into())?.as_str() {
        "none" => Reduction::None,
        "add" => Reduction::Add,
        "mul" => Reduction::Mul,
        "max" => Reduction::Max,
        "min" => Reduction::Min,
        r => bail!(Unsupported, "{}: reduction '{r}' is not supported", ctx.op_type),
    };
    Ok(Box::new(Scatter { nd, axis: ctx.attrs.int_or("axis", 0)?, reduction }))
}

/// `a` combined with `b` by a reduction, computed in `W`.
fn combine<T: Scalar, W: Wide>(r: Reduction, a: T, b: T) -> T {
    match r {
        Reduction::None => b,
        Reduction::Add => W::of(a).add(W::of(b)).to(),
        Reduction::Mul => W::of(a).mul(W::of(b)).to(),
        Reduction::Max if b > a => b,
        Reduction::Min if b < a => b,
        Reduction::Max | Reduction::Min => a,
    }
}

/// Applies `f(slot, update)` for update `u * len + j` at slot `offsets[u] + j`.
fn scatter_into<T: Elem>(
    slots: &mut [T],
    updates: &[T],
    offsets: &[usize],
    len: usize,
    f: impl Fn(&mut T, &T),
) -> Result<()> {
    let total = slots.len();
    for (&off, chunk) in offsets.iter().zip(updates.chunks(len.max(1))) {
        let target = slots.get_mut(off..off.saturating_add(len));
        for (slot, u) in
            target.ok_or_else(|| err!(Runtime, "slice at {off} leaves {total} elements"))?.iter_mut().zip(chunk)
        {
            f(slot, u);
        }
    }
    Ok(())
}

/// A copy of `data` with updates written over it (no reduction: only words move).
fn assign<W: Word>(data: &Tensor, updates: &Tensor, offsets: &[usize], len: usize) -> Result<Tensor> {
    let mut slots = data.as_words::<W>()?.to_vec();
    scatter_into(&mut slots, updates.as_words::<W>()?, offsets, len, |s: &mut W, u| s.clone_from(u))?;
    Tensor::from_words(data.dtype(), data.shape().to_vec(), slots)
}

impl Scatter {
    fn name(&self) -> &'static str {
        if self.nd {
            "ScatterND"
        } else {
            "ScatterElements"
        }
    }

    fn reduce<T: Scalar>(&self, data: &Tensor, updates: &Tensor, offsets: &[usize], len: usize) -> Result<Tensor> {
        let r = self.reduction;
        let mut out = data.clone();
        let (slots, updates) = (out.as_mut_slice::<T>()?, updates.as_slice::<T>()?);
        if T::DTYPE.is_float() {
            scatter_into::<T>(slots, updates, offsets, len, |s, &u| *s = combine::<T, f64>(r, *s, u))?;
        } else {
            scatter_into::<T>(slots, updates, offsets, len, |s, &u| *s = combine::<T, i64>(r, *s, u))?;
        }
        Ok(out)
    }
}

impl Op for Scatter {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let out = same_as_input(inputs)?;
        fold_small(self, inputs, out)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (data, indices, updates) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let (offsets, len) = if self.nd {
            nd_offsets(self.name(), data.shape(), indices, 0)?
        } else {
            let axis = normalize_axis(self.axis, data.rank())?;
            (element_offsets(self.name(), data.shape(), indices, axis)?, 1)
        };
        let update_shape = if self.nd {
            let k = indices.shape().last().copied().unwrap_or(0);
            [&indices.shape()[..indices.rank() - 1], &data.shape()[k..]].concat()
        } else {
            indices.shape().to_vec()
        };
        if updates.shape() != update_shape {
            bail!(Shape, "{}: updates have shape {:?}, expected {update_shape:?}", self.name(), updates.shape());
        }
        if data.dtype() != updates.dtype() {
            bail!(Shape, "{}: updates are {}, data is {}", self.name(), updates.dtype(), data.dtype());
        }
        let out = if self.reduction == Reduction::None {
            dispatch_words!(data.dtype(); W => assign::<W>(data, updates, &offsets, len)?)
        } else {
            dispatch!(data.dtype(); T => self.reduce::<T>(data, updates, &offsets, len)?;
                F32 | F64 | F16 | BF16 | U8 | I8 | U16 | I16 | I32 | I64 | U32 | U64 | Bool;
                else => bail!(Unsupported, "{} with reduction does not take {}", self.name(), data.dtype()))
        };
        Ok(vec![out])
    }
}

// ---------------------------------------------------------------------------------------------
// TensorScatter

#[derive(Debug)]
pub struct TensorScatter {
    axis: i64,
    circular: bool,
}

fn build_tensor_scatter(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let circular = match ctx.attrs.string_or("mode", "linear".into())?.as_str() {
        "linear" => false,
        "circular" => true,
        other => bail!(Unsupported, "TensorScatter: mode '{other}' is not one of linear, circular"),
    };
    Ok(Box::new(TensorScatter { axis: ctx.attrs.int_or("axis", -2)?, circular }))
}

impl TensorScatter {
    fn run<W: Word>(&self, cache: &Tensor, update: &Tensor, axis: usize, starts: &[i64]) -> Result<Tensor> {
        let shape = cache.shape();
        let (max_len, seq_len) = (shape[axis], update.shape()[axis]);
        let inner: usize = shape[axis + 1..].iter().product();
        let per_batch: usize = shape[1..axis].iter().product();
        let outer: usize = shape[..axis].iter().product();
        let src = update.as_words::<W>()?;
        let mut dst = cache.as_words::<W>()?.to_vec();
        for o in 0..outer {
            let b = o / per_batch.max(1);
            let start = starts.get(b).copied().unwrap_or(0);
            for s in 0..seq_len {
                let mut at = start + s as i64;
                if self.circular {
                    at = at.rem_euclid(max_len as i64);
                }
                let at = usize::try_from(at).ok().filter(|&a| a < max_len).ok_or_else(|| {
                    err!(
                        Runtime,
                        "TensorScatter: write index {start} + {s} for batch {b} is outside the cache of length {max_len}"
                    )
                })?;
                let from = (o * seq_len + s) * inner;
                let to = (o * max_len + at) * inner;
                dst[to..to + inner].clone_from_slice(&src[from..from + inner]);
            }
        }
        Tensor::from_words(cache.dtype(), shape.to_vec(), dst)
    }
}

impl Op for TensorScatter {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        same_as_input(inputs)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (cache, update) = (input(inputs, 0)?, input(inputs, 1)?);
        let axis = normalize_axis(self.axis, cache.rank())?;
        if axis == 0 {
            bail!(InvalidModel, "TensorScatter: axis {} is the batch axis", self.axis);
        }
        let (cs, us) = (cache.shape(), update.shape());
        let fits = cs.len() == us.len()
            && cs.iter().zip(us).enumerate().all(|(i, (c, u))| if i == axis { u <= c } else { u == c });
        if !fits || update.dtype() != cache.dtype() {
            bail!(
                Shape,
                "TensorScatter: update {:?} ({}) does not fit cache {cs:?} ({}) on axis {axis}",
                us,
                update.dtype(),
                cache.dtype()
            );
        }
        let starts = match inputs.get(2).copied().flatten() {
            Some(w) => w.to_i64_vec()?,
            None => vec![0; cs[0]],
        };
        if starts.len() != cs[0] {
            bail!(Shape, "TensorScatter: write_indices has {} entries, the batch has {}", starts.len(), cs[0]);
        }
        if let Some((b, &w)) = starts.iter().enumerate().find(|(_, &w)| w < 0) {
            bail!(Runtime, "TensorScatter: write_indices[{b}] = {w} is negative");
        }
        let y = dispatch_words!(cache.dtype(); W => self.run::<W>(cache, update, axis, &starts)?);
        Ok(vec![y])
    }
}

#[cfg(test)]
mod tests {
    use super::super::reshape::testing::*;
    use super::*;
    use crate::ir::Attr;

    #[test]
    fn scatter_elements_with_reductions() {
        let data = Tensor::new(vec![1, 5], vec![1f32, 2., 3., 4., 5.]).unwrap();
        let idx = Tensor::new(vec![1, 2], vec![1i64, 1]).unwrap();
        let upd = Tensor::new(vec![1, 2], vec![1.1f32, 2.1]).unwrap();
        let scatter = |r: &str| {
            let attrs = vec![("axis", Attr::Int(1)), ("reduction", Attr::String(r.into()))];
            f32s(&run("ScatterElements", 18, attrs, &[Some(&data), Some(&idx), Some(&upd)]).unwrap())[1]
        };
        assert_eq!(scatter("none"), 2.1);
        assert!((scatter("add") - 5.2).abs() < 1e-6);
        assert!((scatter("mul") - 4.62).abs() < 1e-6);
        assert_eq!(scatter("max"), 2.1);
        assert_eq!(scatter("min"), 1.1);

        // The deprecated Scatter, without an axis, and negative indices.
        let data = Tensor::new(vec![3, 3], vec![0f32; 9]).unwrap();
        let idx = Tensor::new(vec![2, 3], vec![1i64, 0, 2, 0, 2, -2]).unwrap();
        let upd = Tensor::new(vec![2, 3], vec![1.0f32, 1.1, 1.2, 2.0, 2.1, 2.2]).unwrap();
        let y = run("Scatter", 9, vec![], &[Some(&data), Some(&idx), Some(&upd)]).unwrap();
        assert_eq!(f32s(&y), [2.0, 1.1, 0.0, 1.0, 0.0, 2.2, 0.0, 2.1, 1.2]);
    }

    #[test]
    fn scatter_nd_slices_and_elements() {
        let data = Tensor::new(vec![2, 2], vec![1i64, 2, 3, 4]).unwrap();
        let idx = Tensor::new(vec![2, 1], vec![1i64, 1]).unwrap();
        let upd = Tensor::new(vec![2, 2], vec![10i64, 20, 30, 40]).unwrap();
        let y = run(
            "ScatterND",
            16,
            vec![("reduction", Attr::String("add".into()))],
            &[Some(&data), Some(&idx), Some(&upd)],
        )
        .unwrap();
        assert_eq!(y.as_slice::<i64>().unwrap(), &[1, 2, 43, 64]);
        let idx = Tensor::new(vec![2, 2], vec![0i64, 0, 1, 1]).unwrap();
        let upd = Tensor::vector(vec![5i64, 1]);
        let y = run(
            "ScatterND",
            18,
            vec![("reduction", Attr::String("min".into()))],
            &[Some(&data), Some(&idx), Some(&upd)],
        )
        .unwrap();
        assert_eq!(y.as_slice::<i64>().unwrap(), &[1, 2, 3, 1]);
        let s = Tensor::vector(vec!["a".to_string(), "b".to_string()]);
        let y = run(
            "ScatterND",
            13,
            vec![],
            &[
                Some(&s),
                Some(&Tensor::new(vec![1, 1], vec![1i64]).unwrap()),
                Some(&Tensor::vector(vec!["z".to_string()])),
            ],
        )
        .unwrap();
        assert_eq!(y.as_slice::<String>().unwrap(), &["a", "z"]);
    }

    #[test]
    fn bad_indices_and_updates_are_errors() {
        let data = Tensor::new(vec![2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let idx = Tensor::new(vec![1, 1], vec![2i64]).unwrap();
        let upd = Tensor::new(vec![1, 1], vec![9f32]).unwrap();
        let e = run("ScatterElements", 13, vec![], &[Some(&data), Some(&idx), Some(&upd)]).unwrap_err();
        assert!(e.message.contains("ScatterElements: index 2"), "{e}");
        let e = run(
            "ScatterND",
            13,
            vec![],
            &[
                Some(&data),
                Some(&Tensor::new(vec![1, 1], vec![-3i64]).unwrap()),
                Some(&Tensor::new(vec![1, 2], vec![0f32, 0.]).unwrap()),
            ],
        )
        .unwrap_err();
        assert!(e.message.contains("ScatterND: index -3"), "{e}");
        let wrong = Tensor::new(vec![1, 2], vec![9f32, 9.]).unwrap();
        assert!(run("ScatterElements", 13, vec![], &[Some(&data), Some(&idx), Some(&wrong)]).is_err());
        assert!(build("ScatterND", 16, vec![("reduction", Attr::String("avg".into()))], 1).is_err());
    }

    #[test]
    fn tensor_scatter_linear_and_circular() {
        // Cache [2, 4, 1] (batch, sequence, head dim), updates of 2 steps, as in the ONNX examples.
        let cache = Tensor::new(vec![2, 4, 1], vec![1f32, 2., 3., 4., 5., 6., 7., 8.]).unwrap();
        let update = Tensor::new(vec![2, 2, 1], vec![10f32, 11., 20., 21.]).unwrap();
        let starts = Tensor::vector(vec![1i64, 2]);
        let y = run("TensorScatter", 24, vec![], &[Some(&cache), Some(&update), Some(&starts)]).unwrap();
        assert_eq!(f32s(&y), [1., 10., 11., 4., 5., 6., 20., 21.]);
        let y = run("TensorScatter", 24, vec![], &[Some(&cache), Some(&update), None]).unwrap();
        assert_eq!(f32s(&y), [10., 11., 3., 4., 20., 21., 7., 8.]);
        let circular = vec![("mode", Attr::String("circular".into()))];
        let wrap = Tensor::vector(vec![3i64, 0]);
        let y = run("TensorScatter", 24, circular, &[Some(&cache), Some(&update), Some(&wrap)]).unwrap();
        assert_eq!(f32s(&y), [11., 2., 3., 10., 20., 21., 7., 8.]);
        let e = run("TensorScatter", 24, vec![], &[Some(&cache), Some(&update), Some(&wrap)]).unwrap_err();
        assert!(e.message.contains("outside the cache"), "{e}");
        let bad = Tensor::vector(vec![-1i64, 0]);
        assert!(run("TensorScatter", 24, vec![], &[Some(&cache), Some(&update), Some(&bad)]).is_err());
    }
}
