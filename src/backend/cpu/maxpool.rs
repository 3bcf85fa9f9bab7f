//! MaxPool in f32 (1-D and 2-D, without the Indices output): for each output row, each kernel
//! tap adds one strided row of the input to a running maximum over the outputs that tap reaches
//! inside the input, so the inner loop is a plain vectorisable compare-and-select. Taps are
//! visited in the reference's order with its NaN rule (a NaN is replaced unless every tap is
//! NaN); an all-padding window gives -inf. Planes are spread over the pool.

use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::pool::SharedMut;
use super::{f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::tensor::checked_len;
use crate::ir::{DType, Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::pool::Pool;
use crate::ops::window::Axis;
use crate::Result;
use std::sync::Arc;

pub fn prepare(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    if !node.op.downcast_ref::<Pool>()?.is_plain_max() || !maybe_f32(graph, node.inputs.first().copied().flatten()) {
        return None;
    }
    Some(Box::new(MaxPoolKernel { op: node.op.clone() }))
}

#[derive(Debug)]
struct MaxPoolKernel {
    op: Arc<dyn Op>,
}

impl Kernel for MaxPoolKernel {
    fn name(&self) -> &'static str {
        "max-pool"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let pool = self.op.downcast_ref::<Pool>().expect("prepared for a Pool");
        let windows = f32_input(inputs, 0).and_then(|x| Some((x, pool.windows(x.shape()).ok()?)));
        let Some((x, ([d, h, w], out_shape))) = windows else {
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        };
        // 3-D pooling runs the reference.
        if (d.input, d.kernel, d.output) != (1, 1, 1) {
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        }
        let xv = x.as_slice::<f32>()?;
        // Pads and strides come from the model: the output's size is checked against the tensor
        // size limit before anything is multiplied or allocated.
        let mut y = ctx.buffers.for_overwrite(checked_len(&out_shape, DType::F32)?)?;
        let (in_plane, out_plane) = (h.input * w.input, h.output * w.output);
        let planes: usize = out_shape[..2].iter().product();
        let out = SharedMut(y.as_mut_ptr());
        let unreached = Unreached::of(&h, &w);
        ctx.pool.parallel_for_work(planes, out_plane.saturating_mul(h.kernel).saturating_mul(w.kernel), &|p| {
            let o = out;
            // SAFETY: each task writes its own output plane.
            let dst = unsafe { std::slice::from_raw_parts_mut(o.0.add(p * out_plane), out_plane) };
            max_plane(&xv[p * in_plane..(p + 1) * in_plane], &h, &w, dst);
            unreached.fill(dst);
        });
        Ok(vec![Data::Tensor(Tensor::new(out_shape, y)?)])
    }
}

/// One plane's max pooling (`x`: `h.input x w.input`, `out`: `h.output x w.output`), windows
/// entirely in the padding left NaN; public for the bandwidth measurement in `benches/peak`.
pub fn max_plane(x: &[f32], h: &Axis, w: &Axis, out: &mut [f32]) {
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => unsafe { max_plane_avx2(x, h, w, out) },
        _ => max_plane_generic(x, h, w, out),
    }
}

/// # Safety
/// Needs AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn max_plane_avx2(x: &[f32], h: &Axis, w: &Axis, out: &mut [f32]) {
    max_plane_generic(x, h, w, out)
}

/// Columns of each half of a stride-2 row split on the stack (rows up to 1024 wide).
const SPLIT_MAX: usize = 512;

#[inline(always)]
fn max_plane_generic(x: &[f32], h: &Axis, w: &Axis, out: &mut [f32]) {
    // NaN until the first tap: the reference starts from its first tap, which any value replaces
    // when it is NaN, exactly as `v > NaN || NaN != NaN` does.
    out.fill(f32::NAN);
    // Stride 2: each input row is split into its even and odd columns first, so that every tap
    // reads a contiguous run (a strided read does not vectorise).
    let halves = w.stride == 2 && w.input <= 2 * SPLIT_MAX;
    let mut split = [[0f32; SPLIT_MAX]; 2];
    for kh in 0..h.kernel {
        let (h_lo, h_hi) = h.outputs_reading_input(kh);
        for oh in h_lo..h_hi {
            let ih = h.input_position(oh, kh);
            let row = &x[ih * w.input..(ih + 1) * w.input];
            let dst = &mut out[oh * w.output..(oh + 1) * w.output];
            if halves {
                let [even, odd] = &mut split;
                let pairs = w.input / 2;
                for ((e, o), p) in even.iter_mut().zip(odd.iter_mut()).zip(row.chunks_exact(2)) {
                    (*e, *o) = (p[0], p[1]);
                }
                if w.input % 2 == 1 {
                    even[pairs] = row[w.input - 1];
                }
            }
            for kw in 0..w.kernel {
                let (lo, hi) = w.outputs_reading_input(kw);
                if lo >= hi {
                    continue;
                }
                let first = w.input_position(lo, kw);
                // `f32::max` keeps the non-NaN operand: a NaN running maximum takes v, a NaN v is
                // skipped, as the reference's `v > b || b is NaN` rule does (ties of +0 and -0 may
                // keep either). Written as that condition, the compiler made the store
                // conditional: a masked store per vector, 3x slower on AMD's cores.
                let take = |b: &mut f32, v: f32| *b = b.max(v);
                if w.stride == 1 {
                    dst[lo..hi].iter_mut().zip(&row[first..first + hi - lo]).for_each(|(b, &v)| take(b, v));
                } else if halves {
                    let half = &split[first % 2][first / 2..first / 2 + hi - lo];
                    dst[lo..hi].iter_mut().zip(half).for_each(|(b, &v)| take(b, v));
                } else {
                    dst[lo..hi].iter_mut().zip(row[first..].iter().step_by(w.stride)).for_each(|(b, &v)| take(b, v));
                }
            }
        }
    }
}

/// Windows entirely in the padding (rare: pads as large as the kernel), found once per run.
struct Unreached {
    /// Per output row, and per output column: whether none of its taps lands inside the input.
    rows: Vec<bool>,
    cols: Vec<bool>,
}

impl Unreached {
    fn of(h: &Axis, w: &Axis) -> Unreached {
        Unreached { rows: unreached(h), cols: unreached(w) }
    }

    /// Sets the outputs whose window is all padding to -inf, as the reference does.
    fn fill(&self, out: &mut [f32]) {
        if !self.rows.iter().chain(&self.cols).any(|&e| e) {
            return;
        }
        for (oh, &row_empty) in self.rows.iter().enumerate() {
            for (ow, &col_empty) in self.cols.iter().enumerate() {
                if row_empty || col_empty {
                    out[oh * self.cols.len() + ow] = f32::NEG_INFINITY;
                }
            }
        }
    }
}

/// For each output of axis `a`, whether none of its taps lands inside the input.
fn unreached(a: &Axis) -> Vec<bool> {
    let mut empty = vec![true; a.output];
    for k in 0..a.kernel {
        let (lo, hi) = a.outputs_reading_input(k);
        empty[lo..hi].iter_mut().for_each(|e| *e = false);
    }
    empty
}
