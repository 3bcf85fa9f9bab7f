//! Cast between float32 and float16: the edges of the regions `passes::widen_f16` computes in f32,
//! and the Casts float16 models write around their float32 islands. Whole slices convert at once
//! through `half`, which uses the F16C instructions where the CPU has them (the reference Cast
//! goes element by element through f64). Both directions round as the reference does (to
//! nearest even; overflow to infinity, NaN kept).

use super::pool::SharedMut;
use super::{ExecCtx, Kernel, Reference};
use crate::ir::{DType, Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::cast::Cast;
use crate::Result;
use half::f16;
use half::slice::HalfFloatSliceExt;
use std::sync::Arc;

/// Elements per task.
const CHUNK: usize = 32 * 1024;

/// A kernel for a Cast from float32 to float16 or back.
pub fn prepare(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    let to = node.op.downcast_ref::<Cast>()?.target()?;
    let from = graph.values[node.inputs.first().copied().flatten()?].fact.dtype?;
    let widen = match (from, to) {
        (DType::F16, DType::F32) => true,
        (DType::F32, DType::F16) => false,
        _ => return None,
    };
    Some(Box::new(HalfCast { op: node.op.clone(), widen }))
}

#[derive(Debug)]
struct HalfCast {
    op: Arc<dyn Op>,
    /// float16 -> float32 (else float32 -> float16).
    widen: bool,
}

impl Kernel for HalfCast {
    fn name(&self) -> &'static str {
        "cast-f16"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let x = inputs.first().copied().flatten().and_then(|d| d.tensor());
        let from = if self.widen { DType::F16 } else { DType::F32 };
        let Some(x) = x.filter(|t| t.dtype() == from) else {
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        };
        let y = if self.widen {
            let src = x.as_slice::<f16>()?;
            let mut y = ctx.buffers.output(src.len())?;
            convert(ctx, src, &mut y, |s, d| s.convert_to_f32_slice(d));
            y.into_tensor(x.shape().to_vec())?
        } else {
            let src = x.as_slice::<f32>()?;
            let mut y = crate::ir::tensor::try_vec(src.len(), f16::ZERO)?;
            convert(ctx, src, &mut y, |s, d| d.convert_from_f32_slice(s));
            Tensor::new(x.shape().to_vec(), y)?
        };
        Ok(vec![Data::Tensor(y)])
    }
}

/// `f(src chunk, dst chunk)` over matching chunks of `src` and `dst` (of equal lengths), in
/// parallel.
fn convert<S: Sync, D: Send>(ctx: &ExecCtx, src: &[S], dst: &mut [D], f: impl Fn(&[S], &mut [D]) + Sync) {
    let len = dst.len();
    debug_assert_eq!(src.len(), len);
    let out = SharedMut(dst.as_mut_ptr());
    ctx.pool.parallel_for(len.div_ceil(CHUNK), &|i| {
        let o = out;
        let start = i * CHUNK;
        let n = CHUNK.min(len - start);
        // SAFETY: task i writes only dst[start..start + n], inside dst (start < len), and no
        // other task touches that range; dst outlives parallel_for, which returns when all ran.
        let chunk = unsafe { std::slice::from_raw_parts_mut(o.0.add(start), n) };
        f(&src[start..start + n], chunk);
    });
}

#[cfg(test)]
mod tests {
    use super::super::tests::{build, check, In};
    use crate::ir::{Attr, DType, Tensor};
    use half::f16;

    /// Values across float16's range: normals, subnormals, rounding ties, signed zeros, and with
    /// `beyond`, values past 65504 and infinities (check() compares f32 outputs relative to their
    /// largest, so the f16 -> f32 direction gets small ones, where a misplaced element shows; NaN is checked on its own).
    fn specials(n: usize, beyond: bool) -> Vec<f32> {
        let edge =
            [0.0, -0.0, 1.0, 6e-8, 3e-8, 1e-5, 65504.0, -65504.0, 65520.0, 1e6, f32::INFINITY, f32::NEG_INFINITY];
        let edge = if beyond { &edge[..] } else { &edge[..6] };
        (0..n)
            .map(|i| match i % 5 {
                0 => edge[i / 5 % edge.len()],
                1 => 1.0 + (i as f32) * 2f32.powi(-11), // ties between float16 neighbours
                _ => ((i as f32) * 0.618).sin() * 10f32.powi((i % 9) as i32 - 4),
            })
            .collect()
    }

    #[test]
    fn f32_and_f16_casts_match_the_reference_on_odd_sizes() {
        // Sizes around the chunk: one element, one less than a chunk, two chunks and a bit.
        for n in [1usize, super::CHUNK - 1, 2 * super::CHUNK + 37] {
            let x = Tensor::new(vec![n], specials(n, true)).unwrap();
            let to_half = build("Cast", vec![("to", Attr::Int(DType::F16.onnx_code() as i64))], 1);
            assert_eq!(check("Cast f32->f16", to_half, vec![In::Fed(x.clone())]), "cast-f16");
            let finite = Tensor::new(vec![n], specials(n, false)).unwrap();
            let halves = crate::ops::cast::cast(&finite, DType::F16).unwrap();
            let to_float = build("Cast", vec![("to", Attr::Int(DType::F32.onnx_code() as i64))], 1);
            assert_eq!(check("Cast f16->f32", to_float, vec![In::Fed(halves)]), "cast-f16");
        }
    }

    #[test]
    fn nan_stays_nan_both_ways() {
        let x = Tensor::new(vec![3], vec![1.5f32, f32::NAN, -2.0]).unwrap();
        let halves = crate::ops::cast::cast(&x, DType::F16).unwrap();
        let to_float = build("Cast", vec![("to", Attr::Int(DType::F32.onnx_code() as i64))], 1);
        // check() takes NaN as equal to NaN for f32 outputs.
        assert_eq!(check("Cast f16->f32 NaN", to_float, vec![In::Fed(halves)]), "cast-f16");
        let mut h = [f16::ZERO; 3];
        use half::slice::HalfFloatSliceExt;
        h.convert_from_f32_slice(x.as_slice::<f32>().unwrap());
        assert!(h[1].is_nan() && h[0] == f16::from_f32(1.5));
    }
}
