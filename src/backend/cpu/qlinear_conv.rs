//! QLinearConv and ConvInteger on the integer GEMM (`gemm_i8`), 1-D and 2-D, any group count.
//!
//! The weights are the GEMM's A: constant, so brought into the uint8 domain (an int8 weight
//! plus 128), padded to rows of a multiple of four bytes and summed once at prepare time. The
//! input is its B, packed per run: a 1x1 stride-1 unpadded convolution reads the input planes as
//! they are; any other goes through a uint8 im2col whose padding holds the input's zero point
//! (so that it adds nothing). Output channels are rows of the product, so the result comes out
//! in NCHW order: ConvInteger's int32 sums go straight to the output, QLinearConv's through the
//! GEMM's requantizing epilogue (`gemm_i8::Out::Bytes`, the reference's rounding) with the bias
//! added and one multiplier per output channel.
//!
//! The GEMM takes one zero point for all of A: weights with a zero point per output channel
//! that are not all equal stay on the reference kernel, as do scales or zero points given at
//! run time rather than as constants.

use super::constant;
use super::gemm_i8::{self, Lhs, Micro8, Out, PackedView, Requant};
use super::int8::{bytes_of, bytes_tensor, or_reference, widen};
use super::isa::isa;
use super::qlinear_depthwise::{Planes, QDepthwise};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::tensor::checked_len;
use crate::ir::{DType, Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::conv::ConvAttrs;
use crate::ops::quant_conv::{ConvInteger, QLinearConv};
use crate::ops::window::Axis;
use crate::Result;
use std::sync::Arc;

/// Where the operator keeps each input.
struct Slots {
    w: usize,
    x_zero: usize,
    w_zero: usize,
}

const QLINEAR: Slots = Slots { w: 3, x_zero: 2, w_zero: 5 };
const INTEGER: Slots = Slots { w: 1, x_zero: 2, w_zero: 3 };

pub fn prepare(graph: &Graph, node: &Node) -> Result<Option<Box<dyn Kernel>>> {
    let (attrs, slots) = if let Some(q) = node.op.downcast_ref::<QLinearConv>() {
        (&q.attrs, QLINEAR)
    } else if let Some(c) = node.op.downcast_ref::<ConvInteger>() {
        (&c.attrs, INTEGER)
    } else {
        return Ok(None);
    };
    let Some(w) = constant(graph, node, slots.w) else { return Ok(None) };
    let Some(wv) = widen(w) else { return Ok(None) };
    let ws = w.shape();
    let (co, group) = (ws.first().copied().unwrap_or(0), attrs.group);
    if !matches!(ws.len(), 3 | 4) || co == 0 || !co.is_multiple_of(group) {
        return Ok(None);
    }
    let (kh, kw) = if ws.len() == 4 { (ws[2], ws[3]) } else { (1, ws[2]) };
    let k = ws[1] * kh * kw;
    // The weights' zero point, per output channel.
    let wz = match optional(graph, node, slots.w_zero) {
        Param::Absent => vec![0; co],
        Param::Const(z) if z.dtype() == w.dtype() && (z.len() == 1 || z.len() == co) => match widen(z) {
            Some(v) => (0..co).map(|c| v[if v.len() == 1 { 0 } else { c }]).collect(),
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    let x_zero = match optional(graph, node, slots.x_zero) {
        Param::Absent => None,
        Param::Const(z) if z.len() == 1 && matches!(z.dtype(), DType::U8 | DType::I8) => Some(z),
        _ => return Ok(None),
    };
    let x_zero = x_zero.map(|z| (z.dtype(), widen(z).map_or(0, |v| v[0])));
    let requant = match slots.w {
        3 => match requant_params(graph, node, co) {
            Some(r) => Some(r),
            None => return Ok(None),
        },
        _ => None,
    };
    // A depthwise QLinearConv: its own kernel, which takes a zero point per channel.
    if let (Some(r), true) = (&requant, ws[1] == 1 && group == co && k > 0) {
        let taps = wv.chunks_exact(k.max(1)).zip(&wz).flat_map(|(ch, &z)| ch.iter().map(move |&v| v - z)).collect();
        let depthwise = QDepthwise {
            channels: co,
            kh,
            kw,
            taps,
            bias: r.bias.clone(),
            mult: r.mult.clone(),
            out: r.out,
            dtype: r.dtype,
        };
        return Ok(Some(Box::new(DepthwiseKernel {
            op: node.op.clone(),
            attrs: ConvAttrs { window: attrs.window.clone(), group },
            kh,
            kw,
            x_zero,
            depthwise,
        })));
    }
    // The GEMM takes one zero point for all of A: per tensor, or per channel with every value
    // the same.
    if wz.iter().any(|&z| z != wz[0]) {
        return Ok(None);
    }
    let wz = wz[0];
    // The weights in the uint8 domain, rows padded to whole groups of four.
    let shift = if w.dtype() == DType::I8 { 128 } else { 0 };
    let lda = k.div_ceil(4) * 4;
    let mut weights = vec![0u8; co * lda];
    for (dst, src) in weights.chunks_exact_mut(lda).zip(wv.chunks_exact(k.max(1))) {
        dst.iter_mut().zip(src).for_each(|(d, &v)| *d = (v + shift) as u8);
    }
    let mut rowsum = vec![0i32; co];
    gemm_i8::row_sums(&weights, lda, &mut rowsum);
    Ok(Some(Box::new(QLinearConvKernel {
        op: node.op.clone(),
        attrs: ConvAttrs { window: attrs.window.clone(), group: attrs.group },
        weights,
        rowsum,
        co,
        kh,
        kw,
        k,
        lda,
        w_zero: wz + shift,
        x_zero,
        requant,
        micro: gemm_i8::micro_for(isa()),
    })))
}

/// An optional input: left out, a constant, or given at run time.
enum Param<'g> {
    Absent,
    Const(&'g Tensor),
    Fed,
}

fn optional<'g>(graph: &'g Graph, node: &Node, i: usize) -> Param<'g> {
    match node.inputs.get(i).copied().flatten() {
        None => Param::Absent,
        Some(_) => constant(graph, node, i).map_or(Param::Fed, Param::Const),
    }
}

/// QLinearConv's steps after the sums: bias, multiplier per output channel, output type.
#[derive(Debug)]
struct ToBytes {
    bias: Vec<i32>,
    mult: Vec<f32>,
    out: Requant,
    dtype: DType,
}

/// The multipliers `x_scale * w_scale[c] / y_scale` as the reference computes them (finite, or
/// the reference runs), the bias and the output's type and zero point, all constant.
fn requant_params(graph: &Graph, node: &Node, co: usize) -> Option<ToBytes> {
    let f32s = |i: usize| -> Option<Vec<f32>> {
        let t = constant(graph, node, i).filter(|t| t.dtype() == DType::F32)?;
        Some(t.as_slice::<f32>().ok()?.to_vec())
    };
    let (xs, ws, ys) = (f32s(1)?, f32s(4)?, f32s(6)?);
    if xs.len() != 1 || ys.len() != 1 || !(ws.len() == 1 || ws.len() == co) {
        return None;
    }
    let mult: Vec<f32> = (0..co).map(|c| xs[0] * ws[if ws.len() == 1 { 0 } else { c }] / ys[0]).collect();
    if mult.iter().any(|m| !m.is_finite()) {
        return None;
    }
    let (dtype, zero_point) = match optional(graph, node, 7) {
        Param::Const(z) if z.len() == 1 => (z.dtype(), widen(z)?[0]),
        // The output takes X's type; known from the graph, else left to the reference.
        Param::Absent => (graph.values[node.inputs[0]?].fact.dtype?, 0),
        _ => return None,
    };
    let out = Requant::new(dtype, zero_point)?;
    let bias = match optional(graph, node, 8) {
        Param::Absent => vec![0; co],
        Param::Const(b) if b.dtype() == DType::I32 && b.shape() == [co] => b.as_slice::<i32>().ok()?.to_vec(),
        _ => return None,
    };
    Some(ToBytes { bias, mult, out, dtype })
}

#[derive(Debug)]
struct QLinearConvKernel {
    op: Arc<dyn Op>,
    attrs: ConvAttrs,
    /// `co` rows of `lda` bytes in the uint8 domain, zero past k.
    weights: Vec<u8>,
    rowsum: Vec<i32>,
    co: usize,
    kh: usize,
    kw: usize,
    /// Input channels per group times kernel taps.
    k: usize,
    lda: usize,
    /// In the uint8 domain.
    w_zero: i32,
    /// X's zero point as given (type and value); none: 0 in X's type.
    x_zero: Option<(DType, i32)>,
    /// QLinearConv's requantization; none for ConvInteger.
    requant: Option<ToBytes>,
    micro: Micro8,
}

impl Kernel for QLinearConvKernel {
    fn name(&self) -> &'static str {
        match self.requant {
            Some(_) => "qlinear-conv",
            None => "conv-integer",
        }
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        or_reference(self.try_run(ctx, inputs)?, &self.op, ctx, inputs)
    }
}

/// One run's shapes; a 1-D input (N, C, L) is seen as (N, C, 1, L).
struct Geometry {
    images: usize,
    channels: usize,
    h: Axis,
    w: Axis,
    out_shape: Vec<usize>,
}

/// The shapes of a run with input `x`, for a kernel of `co` output channels in `attrs.group`
/// groups of `cg` input channels, kh x kw (kh 1 for a 1-D one); `None` where the reference
/// should run (and report what is wrong).
fn geometry(attrs: &ConvAttrs, co: usize, cg: usize, kh: usize, kw: usize, x: &Tensor) -> Option<Geometry> {
    let xs = x.shape();
    let one_d = xs.len() == 3 && kh == 1;
    if !(xs.len() == 4 || one_d) || xs[1] != cg * attrs.group || (xs.len() == 3) != one_d {
        return None;
    }
    let window = &attrs.window;
    let kernel: &[usize] = if one_d { &[kw] } else { &[kh, kw] };
    if window.kernel_shape.as_ref().is_some_and(|k| k[..] != *kernel) {
        return None;
    }
    // Errors (a window larger than the padded input) are the reference's to report.
    let (h, w) = if one_d {
        (Axis::UNIT, window.forward_axis(0, xs[2], kw).ok()?)
    } else {
        (window.forward_axis(0, xs[2], kh).ok()?, window.forward_axis(1, xs[3], kw).ok()?)
    };
    let mut out_shape = vec![xs[0], co];
    if !one_d {
        out_shape.push(h.output);
    }
    out_shape.push(w.output);
    Some(Geometry { images: xs[0], channels: xs[1], h, w, out_shape })
}

/// X's zero point as the kernels take it: the constant (0 where left out), if its type is x's.
fn x_zero_for(x_zero: Option<(DType, i32)>, x: &Tensor) -> Option<i32> {
    match x_zero {
        None => Some(0),
        Some((dtype, z)) => (dtype == x.dtype()).then_some(z),
    }
}

/// A depthwise QLinearConv on [`QDepthwise`].
#[derive(Debug)]
struct DepthwiseKernel {
    op: Arc<dyn Op>,
    attrs: ConvAttrs,
    kh: usize,
    kw: usize,
    x_zero: Option<(DType, i32)>,
    depthwise: QDepthwise,
}

impl Kernel for DepthwiseKernel {
    fn name(&self) -> &'static str {
        "qlinear-depthwise"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        or_reference(self.try_run(ctx, inputs)?, &self.op, ctx, inputs)
    }
}

impl DepthwiseKernel {
    fn try_run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Option<Tensor>> {
        let Some(x) = inputs.first().copied().flatten().and_then(|d| d.tensor()) else { return Ok(None) };
        let Some(x_zero) = x_zero_for(self.x_zero, x) else { return Ok(None) };
        let Some(g) = geometry(&self.attrs, self.depthwise.channels, 1, self.kh, self.kw, x) else { return Ok(None) };
        // An empty output or input: the reference's plain loops.
        if g.out_shape.contains(&0) || g.h.input == 0 || g.w.input == 0 {
            return Ok(None);
        }
        let planes = Planes { images: g.images, h: g.h, w: g.w, out_shape: g.out_shape };
        self.depthwise.run(ctx, x, x_zero, &planes)
    }
}

impl QLinearConvKernel {
    /// The output, or `None` for inputs the reference should handle (and report).
    fn try_run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Option<Tensor>> {
        let Some(x) = inputs.first().copied().flatten().and_then(|d| d.tensor()) else { return Ok(None) };
        let flip = match x.dtype() {
            DType::U8 => 0x80u8,
            DType::I8 => 0,
            _ => return Ok(None),
        };
        let Some(x_zero) = x_zero_for(self.x_zero, x) else { return Ok(None) };
        let cg = self.k / (self.kh * self.kw).max(1);
        let Some(g) = geometry(&self.attrs, self.co, cg, self.kh, self.kw, x) else { return Ok(None) };
        let Some(bytes) = bytes_of(x) else { return Ok(None) };
        let group = self.attrs.group;
        let (cog, cg) = (self.co / group, g.channels / group);
        let len = checked_len(&g.out_shape, DType::I32)?;
        // An empty input may name planes whose size overflows: the reference reports those.
        let Some(plane) = g.h.input.checked_mul(g.w.input) else { return Ok(None) };
        if len == 0 || self.k == 0 || plane == 0 {
            // Nothing to compute, or sums of nothing: the reference's plain loops.
            return Ok(None);
        }
        // Within `len`, which checked_len bounded.
        let pixels = g.h.output * g.w.output;
        let pointwise =
            self.k == cg && [g.h, g.w].iter().all(|a| a.stride == 1 && a.pad_begin == 0 && a.output == a.input);
        // Scratch from the plan's pool, one buffer cut in four (no allocation once the pool
        // has buffers this size): the zero point of X in the GEMM's int8 domain for every
        // column, the GEMM's column offsets, the packed input's column sums, then the column
        // matrix (im2col) and the packed input, in bytes.
        let padded = pixels.div_ceil(gemm_i8::NR) * gemm_i8::NR;
        // The column matrix is bounded like a tensor of its size.
        let col_len = if pointwise { 0 } else { checked_len(&[self.k, pixels], DType::U8)? };
        let packed_len = PackedView::bytes_for(self.k, pixels);
        let words = 3 * padded + (col_len + packed_len).div_ceil(4);
        let mut scratch = ctx.buffers.output(words)?;
        let (ints, bytes_part) = bytemuck::cast_slice_mut::<f32, i32>(&mut scratch[..]).split_at_mut(3 * padded);
        let (zb, rest) = ints.split_at_mut(padded);
        let (offset, colsum) = rest.split_at_mut(padded);
        zb.fill(x_zero - if flip == 0 { 0 } else { 128 });
        let (col, packed) = bytemuck::cast_slice_mut::<i32, u8>(bytes_part).split_at_mut(col_len);
        let packed: &mut [i8] = bytemuck::cast_slice_mut(&mut packed[..packed_len]);
        // ConvInteger's int32 sums in a pool buffer, handed on as the output.
        let mut sums_buf = match self.requant {
            None => ctx.buffers.for_overwrite(len)?,
            Some(_) => vec![],
        };
        let sums: &mut [i32] = bytemuck::cast_slice_mut(&mut sums_buf[..]);
        // QLinearConv's output, every byte written by the GEMM.
        let mut y = match self.requant {
            Some(_) => ctx.buffers.bytes_for_overwrite(len)?,
            None => vec![],
        };
        for n in 0..g.images {
            for gi in 0..group {
                let x0 = (n * g.channels + gi * cg) * plane;
                let input = &bytes[x0..x0 + cg * plane];
                let b = if pointwise {
                    PackedView::pack_into(self.k, pixels, flip, |c| &input[c * plane..], packed, colsum)
                } else {
                    let taps = Taps { kh: self.kh, kw: self.kw, h: g.h, w: g.w };
                    taps.im2col(input, x_zero as u8, col);
                    PackedView::pack_into(self.k, pixels, flip, |r| &col[r * pixels..], packed, colsum)
                };
                let rows = gi * cog..(gi + 1) * cog;
                let a = Lhs {
                    data: &self.weights[rows.start * self.lda..],
                    lda: self.lda,
                    rowsum: &self.rowsum[rows.clone()],
                };
                let at = (n * self.co + rows.start) * pixels..(n * self.co + rows.end) * pixels;
                let out = match &self.requant {
                    None => Out::Int(&mut sums[at]),
                    Some(r) => Out::Bytes { y: &mut y[at], mult: &r.mult[rows.clone()], bias: &r.bias[rows], q: r.out },
                };
                gemm_i8::run(ctx.pool, self.micro, &a, cog, b, self.w_zero, zb, offset, out);
            }
        }
        ctx.buffers.give(scratch.into_buffer());
        Ok(Some(match &self.requant {
            None => Tensor::new(g.out_shape, bytemuck::allocation::cast_vec::<f32, i32>(sums_buf))?,
            Some(r) => bytes_tensor(g.out_shape, r.dtype, y)?,
        }))
    }
}

/// A 2-D window's taps over one group of input planes.
struct Taps {
    kh: usize,
    kw: usize,
    h: Axis,
    w: Axis,
}

impl Taps {
    /// The column matrix: row `c * kh * kw + ky * kw + kx` holds, for every output pixel, the
    /// input byte that tap (ky, kx) of channel c reads, or `pad` where it falls in the padding.
    fn im2col(&self, x: &[u8], pad: u8, col: &mut [u8]) {
        let (iw, plane) = (self.w.input, self.h.input * self.w.input);
        let (oh, ow) = (self.h.output, self.w.output);
        let mut rows = col.chunks_exact_mut(oh * ow);
        for c in 0..x.len() / plane.max(1) {
            let src = &x[c * plane..(c + 1) * plane];
            for ky in 0..self.kh {
                let (ylo, yhi) = self.h.outputs_reading_input(ky);
                for kx in 0..self.kw {
                    let row = rows.next().expect("a row per tap");
                    let (xlo, xhi) = self.w.outputs_reading_input(kx);
                    for (oy, seg) in row.chunks_exact_mut(ow).enumerate() {
                        if oy < ylo || oy >= yhi || xlo >= xhi {
                            seg.fill(pad);
                            continue;
                        }
                        let line = &src[self.h.input_position(oy, ky) * iw..][..iw];
                        seg[..xlo].fill(pad);
                        seg[xhi..].fill(pad);
                        let first = self.w.input_position(xlo, kx);
                        if self.w.stride == 1 {
                            seg[xlo..xhi].copy_from_slice(&line[first..first + xhi - xlo]);
                        } else {
                            let taps = line[first..].iter().step_by(self.w.stride);
                            seg[xlo..xhi].iter_mut().zip(taps).for_each(|(d, &v)| *d = v);
                        }
                    }
                }
            }
        }
    }
}
