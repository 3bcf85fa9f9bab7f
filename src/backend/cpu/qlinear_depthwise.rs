//! Depthwise QLinearConv (one input and one output channel a group, as in MobileNet's int8
//! blocks) in integers: each output row is summed in int32 lanes from the input rows its taps
//! read, `(x - x_zero) * (w - w_zero[c])` per tap, and requantized as the reference does
//! (`gemm_i8::requantize_lanes`). The GEMM path would make a 1-row product per channel out of
//! an im2col; here the input is read in place, and padding (which holds x's zero point, so adds
//! nothing) is skipped. The weight zero point may differ per channel.

use super::gemm_i8::{requantize_lanes, Requant};
use super::int8::{bytes_of, bytes_tensor};
use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::pool::SharedMut;
use crate::backend::ExecCtx;
use crate::ir::tensor::checked_len;
use crate::ir::{DType, Tensor};
use crate::ops::window::Axis;
use crate::Result;

/// Output columns summed at once (a stack buffer: a run allocates nothing but its output).
const SPAN: usize = 256;

/// The prepared weights and requantization of one depthwise QLinearConv.
#[derive(Debug)]
pub struct QDepthwise {
    pub channels: usize,
    pub kh: usize,
    pub kw: usize,
    /// Per channel, its kh * kw taps less the channel's weight zero point.
    pub taps: Vec<i32>,
    pub bias: Vec<i32>,
    pub mult: Vec<f32>,
    pub out: Requant,
    pub dtype: DType,
}

/// One run's geometry: the input planes and the two axes (a 1-D problem has a unit h axis).
pub struct Planes {
    pub images: usize,
    pub h: Axis,
    pub w: Axis,
    pub out_shape: Vec<usize>,
}

impl QDepthwise {
    /// The output for input `x` (uint8 or int8, `images * channels` planes) with zero point
    /// `x_zero` (in x's type); `None` when x is neither.
    pub fn run(&self, ctx: &ExecCtx, x: &Tensor, x_zero: i32, g: &Planes) -> Result<Option<Tensor>> {
        let Some(bytes) = bytes_of(x) else { return Ok(None) };
        let signed = x.dtype() == DType::I8;
        let len = checked_len(&g.out_shape, DType::U8)?;
        let mut y = ctx.buffers.bytes_for_overwrite(len)?;
        let (in_plane, out_plane) = (g.h.input * g.w.input, g.h.output * g.w.output);
        let out = SharedMut(y.as_mut_ptr());
        let plane_fn = plane_fn(signed);
        ctx.pool.parallel_for_work(g.images * self.channels, out_plane * self.kh * self.kw, &|p| {
            let o = out;
            let c = p % self.channels;
            let src = &bytes[p * in_plane..(p + 1) * in_plane];
            // SAFETY: each task writes its own output plane.
            let dst = unsafe { std::slice::from_raw_parts_mut(o.0.add(p * out_plane), out_plane) };
            let job = Plane { depthwise: self, c, h: &g.h, w: &g.w, x_zero };
            // SAFETY: plane_fn is compiled for an instruction set this CPU runs.
            unsafe { plane_fn(&job, src, dst) };
        });
        Ok(Some(bytes_tensor(g.out_shape.clone(), self.dtype, y)?))
    }
}

/// One channel's plane.
struct Plane<'a> {
    depthwise: &'a QDepthwise,
    c: usize,
    h: &'a Axis,
    w: &'a Axis,
    x_zero: i32,
}

type PlaneFn = unsafe fn(&Plane, &[u8], &mut [u8]);

/// The plane loop for this CPU's vectors and x's signedness.
fn plane_fn(signed: bool) -> PlaneFn {
    match (isa(), signed) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, false) => x86::plane_avx512::<false>,
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, true) => x86::plane_avx512::<true>,
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, false) => x86::plane_avx2::<false>,
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, true) => x86::plane_avx2::<true>,
        (_, false) => plane_portable::<false>,
        (_, true) => plane_portable::<true>,
    }
}

/// # Safety
/// None beyond [`PlaneFn`]'s (plain Rust).
unsafe fn plane_portable<const SIGNED: bool>(job: &Plane, src: &[u8], dst: &mut [u8]) {
    plane::<SIGNED>(job, src, dst)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Plane;

    /// # Safety
    /// Needs AVX-512F/BW.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub unsafe fn plane_avx512<const SIGNED: bool>(job: &Plane, src: &[u8], dst: &mut [u8]) {
        super::plane::<SIGNED>(job, src, dst)
    }

    /// # Safety
    /// Needs AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn plane_avx2<const SIGNED: bool>(job: &Plane, src: &[u8], dst: &mut [u8]) {
        super::plane::<SIGNED>(job, src, dst)
    }
}

/// A byte of x as its value.
#[inline(always)]
fn value<const SIGNED: bool>(b: u8) -> i32 {
    if SIGNED {
        b as i8 as i32
    } else {
        b as i32
    }
}

/// Every output row of one plane, SPAN columns at a time: the taps inside the input add
/// `(x - x_zero) * tap` (stride 1: contiguous input, so the lanes vectorise), then the span is
/// requantized with the channel's bias and multiplier.
#[inline(always)]
fn plane<const SIGNED: bool>(job: &Plane, src: &[u8], dst: &mut [u8]) {
    let d = job.depthwise;
    let (h, w) = (job.h, job.w);
    let taps = &d.taps[job.c * d.kh * d.kw..][..d.kh * d.kw];
    let (bias, mult) = (d.bias[job.c], d.mult[job.c]);
    let mut acc = [0i32; SPAN];
    for oy in 0..h.output {
        for x0 in (0..w.output).step_by(SPAN) {
            let span = SPAN.min(w.output - x0);
            let acc = &mut acc[..span];
            acc.fill(0);
            for ky in 0..d.kh {
                let (ylo, yhi) = h.outputs_reading_input(ky);
                if oy < ylo || oy >= yhi {
                    continue;
                }
                let line = &src[h.input_position(oy, ky) * w.input..][..w.input];
                for kx in 0..d.kw {
                    let t = taps[ky * d.kw + kx];
                    let (xlo, xhi) = w.outputs_reading_input(kx);
                    // This span's outputs whose tap kx is inside the input.
                    let (lo, hi) = (xlo.max(x0), xhi.min(x0 + span));
                    if lo >= hi {
                        continue;
                    }
                    let first = w.input_position(lo, kx);
                    let lanes = &mut acc[lo - x0..hi - x0];
                    if w.stride == 1 {
                        for (a, &v) in lanes.iter_mut().zip(&line[first..first + (hi - lo)]) {
                            *a = a.wrapping_add((value::<SIGNED>(v) - job.x_zero) * t);
                        }
                    } else {
                        for (a, &v) in lanes.iter_mut().zip(line[first..].iter().step_by(w.stride)) {
                            *a = a.wrapping_add((value::<SIGNED>(v) - job.x_zero) * t);
                        }
                    }
                }
            }
            requantize_lanes(acc, bias, mult, d.out, &mut dst[oy * w.output + x0..][..span]);
        }
    }
}
