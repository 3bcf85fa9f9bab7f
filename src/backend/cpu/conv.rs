//! 2-D convolution in f32: weights packed once per group at prepare time; at run time each
//! (image, group) is one GEMM of the packed weights with the image read through an implicit
//! im2col (the packing routine reads pixels straight from the input; no column matrix), or the
//! image itself for 1x1 stride-1 convolutions. Depthwise convolutions have their own direct
//! kernel. Bias, a residual (skip connection) and the activation are applied as the output is
//! written.

use super::activation::Activation;
use super::conv_direct::{self, Direct, DirectWeights};
use super::conv_narrow::{prefers_transposed, NarrowProduct, NarrowWeights};
use super::conv_pointwise::{self, Pointwise, PointwiseWeights};
use super::conv_stem::StemWeights;
use super::depthwise::{self, Depthwise};
use super::gemm::{self, Bias, Epilogue, Lhs, MatRef, PackB, PackedA, Problem, Rhs, Skip};
use super::isa::isa;
use super::pool::SharedMut;
use super::sparse::SparseWeights;
use super::winograd::{self, Winograd};
use super::{const_f32, copy_short, f32_input, maybe_f32, Reference};
use crate::backend::buffers::Output;
use crate::backend::{run_lent, ExecCtx, Kernel};
use crate::ir::tensor::checked_len;
use crate::ir::{Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::conv::Conv;
use crate::ops::fused::FusedConv;
use crate::ops::window::Axis;
use crate::Result;
use std::sync::Arc;

/// A prepared kernel for a Conv (or FusedConv) node whose weights (and bias, if any) are
/// constant f32 with 2 spatial axes; `None` for any other node.
pub fn prepare(graph: &Graph, node: &Node) -> Result<Option<Box<dyn Kernel>>> {
    let (conv, residual, act) = if let Some(f) = node.op.downcast_ref::<FusedConv>() {
        (f.conv(), f.residual, f.act)
    } else if let Some(c) = node.op.downcast_ref::<Conv>() {
        (c, false, Activation::None)
    } else {
        return Ok(None);
    };
    let Some(w) = const_f32(graph, node, 1) else { return Ok(None) };
    let bias = match node.inputs.get(2).copied().flatten() {
        None => None,
        Some(_) => match const_f32(graph, node, 2) {
            Some(b) => Some(b.as_slice::<f32>()?.to_vec()),
            None => return Ok(None),
        },
    };
    // A 1-D convolution runs as a 2-D one over a unit height.
    let ws: Vec<usize> = match w.shape() {
        &[m, c, k] => vec![m, c, 1, k],
        s => s.to_vec(),
    };
    let group = conv.attrs.group;
    if ws.len() != 4 || !maybe_f32(graph, node.inputs.first().copied().flatten()) || !ws[0].is_multiple_of(group) {
        return Ok(None);
    }
    if bias.as_ref().is_some_and(|b| b.len() != ws[0]) {
        return Ok(None);
    }
    let (m, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let mg = m / group;
    let k = cg * kh * kw;
    let wv = w.as_slice::<f32>()?;
    let micro = gemm::micro_for(isa());
    let depthwise = cg == 1 && mg == 1 && group > 1;
    let plane = out_plane(graph, node, conv, &ws);
    let (stride, width) = (conv.attrs.window.stride(1), plane.map(|(_, w)| w));
    let stem = StemWeights::new(wv, [m, cg, kh, kw], group, residual, stride, width);
    let direct = (stem.is_none() && direct_for(conv, &ws, plane)).then(|| DirectWeights::new(wv, [m, cg, kh, kw]));
    let winograd = (direct.is_none() && winograd_for(graph, node, conv, &ws)).then(|| Winograd::new(wv, m, cg, &micro));
    let packed = if depthwise || winograd.is_some() || direct.is_some() {
        Vec::new()
    } else {
        (0..group)
            .map(|g| PackedA::new(MatRef::row_major(&wv[g * mg * k..(g + 1) * mg * k], k), mg, k, &micro))
            .collect()
    };
    // A 1x1 window whose every axis maps an input of 64 onto 64 outputs without padding is plain
    // at any size.
    let plain = (0..w.shape().len() - 2).all(|a| {
        conv.attrs.window.forward_axis(a, 64, 1).is_ok_and(|ax| ax.stride == 1 && ax.pad_begin == 0 && ax.output == 64)
    });
    // Pruned 1x1 weights (mostly zeros) run on the sparse kernel, where the geometry is plain.
    let sparse = (kh == 1 && kw == 1 && group == 1 && plain).then(|| SparseWeights::new(wv, m, k)).flatten();
    let pointwise = (kh == 1 && kw == 1 && group == 1 && plain && sparse.is_none() && conv_pointwise::available(k))
        .then(|| PointwiseWeights::new(wv, m, k));
    Ok(Some(Box::new(ConvKernel {
        op: node.op.clone(),
        pointwise,
        sparse,
        stem,
        weights_shape: [m, cg, kh, kw],
        group,
        packed,
        winograd,
        depthwise_weights: if depthwise { wv.to_vec() } else { Vec::new() },
        weights: w.clone(),
        narrow: NarrowWeights::default(),
        direct,
        bias,
        residual,
        act,
        micro,
    })))
}

/// Whether a conv with weights of shape `ws` and output plane `plane` ([`out_plane`]) runs on the
/// direct kernel: one group, where [`conv_direct::wins`].
fn direct_for(conv: &Conv, ws: &[usize], plane: Option<(usize, usize)>) -> bool {
    let strided = (0..2).any(|a| conv.attrs.window.stride(a) > 1);
    conv.attrs.group == 1 && conv_direct::wins(ws[1], (ws[2], ws[3]), plane, strided)
}

/// The output plane's pixels and width, where the input's shape makes them known.
fn out_plane(graph: &Graph, node: &Node, conv: &Conv, ws: &[usize]) -> Option<(usize, usize)> {
    let input = node.inputs.first().copied().flatten();
    let shape = input.and_then(|v| graph.values[v].fact.shape.as_ref()).filter(|s| s.len() == 4);
    let window = &conv.attrs.window;
    shape.and_then(|s| {
        let h = window.forward_axis(0, s[2].known()?, ws[2]).ok()?;
        let w = window.forward_axis(1, s[3].known()?, ws[3]).ok()?;
        // Hostile shapes overflow; they never take the kernels that need it.
        Some((h.output.checked_mul(w.output)?, w.output))
    })
}

/// Whether `node` (weights of shape `ws`) runs by Winograd: a 3x3 window of stride 1 without
/// dilation over one group, with the channels and (if the input's shape is known) the plane
/// size where it beats the GEMM.
fn winograd_for(graph: &Graph, node: &Node, conv: &Conv, ws: &[usize]) -> bool {
    let window = &conv.attrs.window;
    let plain = (0..2).all(|a| window.stride(a) == 1 && window.dilation(a) == 1);
    if !(ws[2..] == [3, 3] && conv.attrs.group == 1 && plain) {
        return false;
    }
    let input = node.inputs.first().copied().flatten();
    // The plane's size, if known (the batch may be symbolic).
    let shape = input.and_then(|v| graph.values[v].fact.shape.as_ref());
    let tiles = shape.filter(|s| s.len() == 4).and_then(|s| {
        let h = window.forward_axis(0, s[2].known()?, 3).ok()?;
        let w = window.forward_axis(1, s[3].known()?, 3).ok()?;
        Some(h.output.div_ceil(4) * w.output.div_ceil(4))
    });
    winograd::wins(ws[1], ws[0], tiles)
}

#[derive(Debug)]
struct ConvKernel {
    /// The node's op: for the geometry, and the reference kernel for inputs this one does not take.
    op: Arc<dyn Op>,
    weights_shape: [usize; 4],
    group: usize,
    /// Per group, the weights as an (M/group) x (C/group * kh * kw) left operand.
    packed: Vec<PackedA>,
    /// For 3x3 stride-1 convolutions where Winograd wins: the transformed weights (`packed` is
    /// empty then).
    winograd: Option<Winograd>,
    /// For 1x1 convolutions over few input channels: the weights packed for
    /// [`conv_pointwise`], which runs them when the geometry is plain (stride 1, no padding).
    pointwise: Option<PointwiseWeights>,
    /// For 1x1 convolutions with mostly zero weights: the weights compressed for
    /// [`super::sparse`], which runs them when the geometry is plain (as `pointwise`).
    sparse: Option<SparseWeights>,
    /// For stems (few input channels, a large window): the direct kernel's weights.
    stem: Option<StemWeights>,
    /// For depthwise convolutions: the weights as they are, one kh x kw filter per channel.
    depthwise_weights: Vec<f32>,
    /// The weights tensor (sharing the graph's constant, not a copy), for packings made on first
    /// use.
    weights: Tensor,
    /// The weights packed for outputs of very few pixels (see [`super::conv_narrow`]).
    narrow: NarrowWeights,
    /// For convolutions over small planes where the direct kernel wins (see
    /// [`super::conv_direct`]): its weights, and no GEMM packing.
    direct: Option<DirectWeights>,
    bias: Option<Vec<f32>>,
    /// Whether input 3 (a tensor of the output's shape) is added before the activation.
    residual: bool,
    act: Activation,
    micro: gemm::Micro,
}

/// The geometry of one run.
#[derive(Clone, Copy)]
struct Geometry {
    channels: usize,
    h: Axis,
    w: Axis,
}

impl ConvKernel {
    fn conv(&self) -> &Conv {
        self.op
            .downcast_ref::<Conv>()
            .or_else(|| self.op.downcast_ref::<FusedConv>().map(|f| f.conv()))
            .expect("a conv")
    }

    /// The output's shape for input `x` (of geometry `geo`).
    fn out_shape(&self, x: &Tensor, geo: Geometry) -> Vec<usize> {
        let mut shape = vec![x.shape()[0], self.weights_shape[0], geo.h.output, geo.w.output];
        if x.rank() == 3 {
            shape.remove(2);
        }
        shape
    }

    /// The run's geometry; a 1-D input (N, C, L) is seen as (N, C, 1, L).
    fn geometry(&self, x: &Tensor) -> Result<Option<Geometry>> {
        let xs = x.shape();
        let [_, cg, kh, kw] = self.weights_shape;
        let one_d = xs.len() == 3 && kh == 1;
        if !(xs.len() == 4 || one_d) || xs[1] != cg * self.group {
            return Ok(None);
        }
        let window = &self.conv().attrs.window;
        let kernel: &[usize] = if one_d { &[kw] } else { &[kh, kw] };
        if window.kernel_shape.as_ref().is_some_and(|k| k[..] != *kernel) {
            return Ok(None);
        }
        let (h, w) = if one_d {
            (Axis::UNIT, window.forward_axis(0, xs[2], kw)?)
        } else {
            (window.forward_axis(0, xs[2], kh)?, window.forward_axis(1, xs[3], kw)?)
        };
        Ok(Some(Geometry { channels: xs[1], h, w }))
    }
}

impl Kernel for ConvKernel {
    fn name(&self) -> &'static str {
        if self.stem.is_some() {
            "conv-stem"
        } else if self.direct.is_some() {
            "conv-direct"
        } else if self.sparse.is_some() {
            "conv-sparse"
        } else if self.pointwise.is_some() {
            "conv-pointwise"
        } else if self.winograd.is_some() {
            "conv-winograd"
        } else if self.packed.is_empty() {
            "conv-depthwise"
        } else {
            "conv-gemm"
        }
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let geometry = match f32_input(inputs, 0) {
            Some(x) => self.geometry(x)?,
            None => None,
        };
        let (Some(x), Some(geo)) = (f32_input(inputs, 0), geometry) else {
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        };
        let m = self.weights_shape[0];
        let batch = x.shape()[0];
        let out_shape = self.out_shape(x, geo);
        let residual = match (self.residual, f32_input(inputs, 3)) {
            (false, _) => None,
            (true, Some(r)) if r.shape() == out_shape => Some(r.as_slice::<f32>()?),
            (true, _) => return Reference { op: self.op.clone() }.run(ctx, inputs),
        };
        if self.direct.as_ref().is_some_and(|d| !d.padding_fits(geo.h, geo.w)) {
            // The direct kernel would copy a vastly padded input; nothing else is prepared.
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        }
        let len = checked_len(&out_shape, crate::ir::DType::F32)?;
        let mut output = ctx.buffers.output(len)?;
        let y = &mut output[..];
        if let Some(stem) = &self.stem {
            stem.run(ctx, x.as_slice::<f32>()?, batch, geo.h, geo.w, self.bias.as_deref(), self.act, y);
        } else if let Some(direct) = &self.direct {
            let xv = x.as_slice::<f32>()?;
            let (in_plane, out_plane) = (geo.h.input * geo.w.input, geo.h.output * geo.w.output);
            let c = geo.channels;
            for (n, out) in y.chunks_exact_mut(m * out_plane).enumerate().take(batch) {
                let d = Direct {
                    x: &xv[n * c * in_plane..(n + 1) * c * in_plane],
                    h: geo.h,
                    w: geo.w,
                    bias: self.bias.as_deref(),
                    residual: residual.map(|r| &r[n * m * out_plane..(n + 1) * m * out_plane]),
                    act: self.act,
                };
                direct.run(ctx.pool, &d, out);
            }
        } else if let Some(wg) = &self.winograd {
            let (bias, act) = (self.bias.as_deref(), self.act);
            let run = winograd::Run { x: x.as_slice::<f32>()?, batch, h: geo.h, w: geo.w, bias, residual, act };
            wg.run(ctx.pool, &run, y);
        } else if self.packed.is_empty() {
            self.depthwise(ctx, x.as_slice::<f32>()?, batch, geo, residual, y);
        } else if (self.pointwise.is_some() || self.sparse.is_some()) && plain_pointwise(&geo) {
            self.pointwise(ctx, x.as_slice::<f32>()?, batch, geo, residual.map_or(Skip::None, Skip::Add), y);
        } else {
            self.gemm(ctx, x.as_slice::<f32>()?, batch, geo, residual.map_or(Skip::None, Skip::Add), y);
        }
        Ok(vec![Data::Tensor(output.into_tensor(out_shape)?)])
    }

    /// The GEMM and the pointwise kernel write over their skip connection (each output adds
    /// its own element of it as it is written); the others read it apart from where they write.
    fn in_place_input(&self) -> Option<usize> {
        (self.residual && matches!(self.name(), "conv-gemm" | "conv-pointwise")).then_some(3)
    }

    fn run_in_place(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>], donated: Tensor) -> Result<Vec<Data>> {
        let x = f32_input(inputs, 0);
        let geometry = match x {
            Some(x) => self.geometry(x)?,
            None => None,
        };
        let (Some(x), Some(geo)) = (x, geometry) else {
            return run_lent(self, ctx, inputs, donated);
        };
        let out_shape = self.out_shape(x, geo);
        if donated.shape() != out_shape {
            return run_lent(self, ctx, inputs, donated);
        }
        let mut output = match Output::over(donated) {
            Ok(output) => output,
            Err(donated) => return run_lent(self, ctx, inputs, donated),
        };
        let (xv, batch) = (x.as_slice::<f32>()?, x.shape()[0]);
        if self.pointwise.is_some() && plain_pointwise(&geo) {
            self.pointwise(ctx, xv, batch, geo, Skip::InOutput, &mut output);
        } else {
            self.gemm(ctx, xv, batch, geo, Skip::InOutput, &mut output);
        }
        Ok(vec![Data::Tensor(output.into_tensor(out_shape)?)])
    }
}

impl ConvKernel {
    /// A plain 1x1 conv on the sparse or the pointwise kernel (whichever was prepared).
    fn pointwise(&self, ctx: &ExecCtx, x: &[f32], batch: usize, geo: Geometry, skip: Skip, y: &mut [f32]) {
        let pixels = geo.h.output * geo.w.output;
        let [m, k, _, _] = self.weights_shape;
        for (n, out) in y.chunks_exact_mut(m * pixels).enumerate().take(batch) {
            let p = Pointwise {
                x: &x[n * k * pixels..(n + 1) * k * pixels],
                pixels,
                bias: self.bias.as_deref(),
                skip: skip.part(n * m * pixels..(n + 1) * m * pixels),
                act: self.act,
            };
            match (&self.sparse, &self.pointwise) {
                (Some(sp), _) => sp.run(ctx.pool, &p, out),
                (_, Some(pw)) => pw.run(ctx.pool, &p, out),
                _ => unreachable!("a pointwise conv has the kernel's weights"),
            }
        }
    }

    fn gemm(&self, ctx: &ExecCtx, x: &[f32], batch: usize, geo: Geometry, skip: Skip, y: &mut [f32]) {
        let [_, _, kh, kw] = self.weights_shape;
        let out_plane = geo.h.output * geo.w.output;
        if matches!(skip, Skip::None) && prefers_transposed(&self.micro, out_plane) {
            return self.narrow_gemm(ctx, x, batch, geo, y);
        }
        if let Some(kept) = subsampled_pointwise(&geo, kh, kw) {
            // A strided 1x1 conv (ResNet's downsampling shortcuts) reads one pixel in stride²:
            // they are gathered once into planes of their own and the product reads those as a
            // stride-1 conv's image (gathering them again per panel was 1.3-1.4x slower).
            let Ok(mut planes) = ctx.buffers.output(batch * geo.channels * out_plane) else {
                return self.gemm_on(ctx, x, batch, geo, skip, y);
            };
            subsample(ctx, x, batch * geo.channels, geo, &mut planes);
            self.gemm_on(ctx, &planes, batch, kept, skip, y);
            ctx.buffers.give(planes.into_buffer());
            return;
        }
        self.gemm_on(ctx, x, batch, geo, skip, y)
    }

    /// [`Self::gemm`] once the image is what the product reads.
    fn gemm_on(&self, ctx: &ExecCtx, x: &[f32], batch: usize, geo: Geometry, skip: Skip, y: &mut [f32]) {
        let [m, cg, kh, kw] = self.weights_shape;
        let (group, mg) = (self.group, m / self.group);
        let (in_plane, out_plane) = (geo.h.input * geo.w.input, geo.h.output * geo.w.output);
        let pointwise = kh == 1
            && kw == 1
            && [geo.h, geo.w].iter().all(|a| a.stride == 1 && a.pad_begin == 0 && a.output == a.input);
        let sources: Vec<Im2col> = (0..batch * group)
            .map(|i| {
                let (n, g) = (i / group, i % group);
                let start = (n * geo.channels + g * cg) * in_plane;
                Im2col { x: &x[start..start + cg * in_plane], kh, kw, h: geo.h, w: geo.w }
            })
            .collect();
        let plain: Vec<MatRef> =
            if pointwise { sources.iter().map(|s| MatRef::row_major(s.x, in_plane)).collect() } else { Vec::new() };
        let problem = |i: usize| {
            let g = i % group;
            Problem {
                m: mg,
                n: out_plane,
                k: cg * kh * kw,
                a: Lhs::Packed(&self.packed[g]),
                b: if pointwise { Rhs::Source(&plain[i]) } else { Rhs::Source(&sources[i]) },
                epilogue: Epilogue {
                    bias: self.bias.as_ref().map_or(Bias::None, |b| Bias::PerRow(&b[g * mg..(g + 1) * mg])),
                    // Product i writes C at y[i * mg * out_plane..]; its skip connection is laid
                    // out alike.
                    skip: skip.part(i * mg * out_plane..(i + 1) * mg * out_plane),
                    act: self.act,
                },
            }
        };
        gemm::run_batch(ctx.pool, &self.micro, batch * group, &problem, y, mg * out_plane, out_plane);
    }

    /// Each (image, group) as a transposed product: for outputs of very few pixels.
    fn narrow_gemm(&self, ctx: &ExecCtx, x: &[f32], batch: usize, geo: Geometry, y: &mut [f32]) {
        let [m, cg, kh, kw] = self.weights_shape;
        let (group, mg) = (self.group, m / self.group);
        let (in_plane, out_plane) = (geo.h.input * geo.w.input, geo.h.output * geo.w.output);
        let weights = self.weights.as_slice::<f32>().expect("prepared from f32 weights");
        for (i, out) in y.chunks_exact_mut(mg * out_plane).enumerate().take(batch * group) {
            let (n, g) = (i / group, i % group);
            let start = (n * geo.channels + g * cg) * in_plane;
            let product = NarrowProduct {
                cols: Im2col { x: &x[start..start + cg * in_plane], kh, kw, h: geo.h, w: geo.w },
                channels: mg,
                pixels: out_plane,
                k: cg * kh * kw,
                bias: self.bias.as_ref().map(|b| &b[g * mg..(g + 1) * mg]),
                act: self.act,
            };
            self.narrow.run(ctx.pool, &self.micro, weights, group, g, &product, out);
        }
    }

    /// One filter per channel: the depthwise kernel.
    fn depthwise(
        &self,
        ctx: &ExecCtx,
        x: &[f32],
        batch: usize,
        geo: Geometry,
        residual: Option<&[f32]>,
        y: &mut [f32],
    ) {
        let [m, _, _, _] = self.weights_shape;
        let problem = Depthwise {
            x,
            weights: &self.depthwise_weights,
            bias: self.bias.as_deref(),
            residual,
            act: self.act,
            channels: m,
            h: geo.h,
            w: geo.w,
        };
        depthwise::run(ctx.pool, &problem, batch * m, y);
    }
}

/// For a 1x1 convolution with a stride and no padding read, the geometry of the same conv on
/// its subsampled input (a plain product); `None` for any other.
fn subsampled_pointwise(geo: &Geometry, kh: usize, kw: usize) -> Option<Geometry> {
    let axes = [geo.h, geo.w];
    let strided = axes.iter().any(|a| a.stride > 1);
    let inside = axes.iter().all(|a| a.pad_begin == 0 && a.output > 0 && (a.output - 1) * a.stride < a.input);
    let plain = |a: Axis| Axis { input: a.output, kernel: 1, stride: 1, dilation: 1, pad_begin: 0, pad_end: 0, ..a };
    (kh == 1 && kw == 1 && strided && inside).then(|| Geometry {
        channels: geo.channels,
        h: plain(geo.h),
        w: plain(geo.w),
    })
}

/// Gathers the pixels a strided 1x1 conv reads: `planes` input planes of `x` into `out`, each
/// `geo.h.output x geo.w.output`, spread over the pool by planes.
fn subsample(ctx: &ExecCtx, x: &[f32], planes: usize, geo: Geometry, out: &mut [f32]) {
    let (iw, in_plane) = (geo.w.input, geo.h.input * geo.w.input);
    let (ow, out_plane) = (geo.w.output, geo.h.output * geo.w.output);
    let (sh, sw) = (geo.h.stride, geo.w.stride);
    assert!(x.len() >= planes * in_plane && out.len() >= planes * out_plane, "subsample: buffers too small");
    const PLANES_PER_TASK: usize = 16;
    let dst = SharedMut(out.as_mut_ptr());
    ctx.pool.parallel_for(planes.div_ceil(PLANES_PER_TASK), &|t| {
        let d = dst;
        for c in t * PLANES_PER_TASK..((t + 1) * PLANES_PER_TASK).min(planes) {
            // SAFETY: task t alone writes planes t * PLANES_PER_TASK.., inside `out` (checked above).
            let plane = unsafe { std::slice::from_raw_parts_mut(d.0.add(c * out_plane), out_plane) };
            let src = &x[c * in_plane..(c + 1) * in_plane];
            for (oy, row) in plane.chunks_exact_mut(ow).enumerate() {
                let in_row = &src[oy * sh * iw..];
                if sw == 2 {
                    depthwise::every_other(row, in_row);
                } else {
                    row.iter_mut().zip(in_row.iter().step_by(sw)).for_each(|(v, s)| *v = *s);
                }
            }
        }
    });
}

/// Whether a 1x1 convolution's geometry is a plain product (stride 1, no padding).
fn plain_pointwise(geo: &Geometry) -> bool {
    [geo.h, geo.w].iter().all(|a| a.kernel == 1 && a.stride == 1 && a.pad_begin == 0 && a.output == a.input)
}

/// The output positions `o` of axis `a` whose input `o * stride + k * dilation - pad_begin` is
/// inside the input, as a range.
fn valid_outputs(a: &Axis, k: usize) -> std::ops::Range<usize> {
    let shift = k * a.dilation;
    // o * stride + shift >= pad_begin
    let lo = a.pad_begin.saturating_sub(shift).div_ceil(a.stride);
    // o * stride + shift < input + pad_begin
    let limit = a.input + a.pad_begin;
    let hi = if limit > shift { (limit - shift - 1) / a.stride + 1 } else { 0 };
    lo.min(a.output)..hi.min(a.output).max(lo.min(a.output))
}

/// The column matrix of one (image, group) as a B operand: row `k` is input channel
/// `k / (kh * kw)` shifted by tap `k % (kh * kw)`; column `n` is output pixel `n`.
pub(super) struct Im2col<'a> {
    pub x: &'a [f32],
    pub kh: usize,
    pub kw: usize,
    pub h: Axis,
    pub w: Axis,
}

impl PackB for Im2col<'_> {
    fn pack_b(&self, k0: usize, kc: usize, n0: usize, nr: usize, n: usize, out: &mut [f32]) {
        let (ih, iw, ow) = (self.h.input, self.w.input, self.w.output);
        let valid = nr.min(n - n0);
        // The panel's columns as runs along output rows, (first column, oy, ox, length): the same
        // for every k, so found once.
        let mut runs = [(0usize, 0usize, 0usize, 0usize); MAX_RUNS];
        let mut count = 0;
        let (mut j, mut pos) = (0, n0);
        while j < valid {
            let (oy, ox) = (pos / ow, pos % ow);
            let len = (ow - ox).min(valid - j);
            if count == MAX_RUNS {
                // Very narrow outputs: more runs than the table holds; the general loop below.
                return self.pack_b_rows(k0, kc, n0, nr, valid, out);
            }
            runs[count] = (j, oy, ox, len);
            count += 1;
            j += len;
            pos += len;
        }
        // The output columns inside the input per kernel column, for the usual small kernels.
        let mut inside: [std::ops::Range<usize>; MAX_KW] = Default::default();
        if self.kw > MAX_KW {
            return self.pack_b_rows(k0, kc, n0, nr, valid, out);
        }
        for (kx, r) in inside.iter_mut().enumerate().take(self.kw) {
            *r = valid_outputs(&self.w, kx);
        }
        let taps = self.kh * self.kw;
        // Row k is channel k / taps at tap (ky, kx); all advance by counting, not dividing.
        let (mut c, tap) = (k0 / taps, k0 % taps);
        let (mut ky, mut kx) = (tap / self.kw, tap % self.kw);
        for row in out.chunks_exact_mut(nr).take(kc) {
            let plane = &self.x[c * ih * iw..(c + 1) * ih * iw];
            for &(j, oy, ox, len) in &runs[..count] {
                self.pack_run(plane, ky, kx, &inside[kx], oy, ox, &mut row[j..j + len]);
            }
            row[valid..].fill(0.0);
            kx += 1;
            if kx == self.kw {
                kx = 0;
                ky += 1;
                if ky == self.kh {
                    ky = 0;
                    c += 1;
                }
            }
        }
    }
}

/// The most runs (output rows) one panel's columns are found on before packing falls back to
/// finding them per k.
const MAX_RUNS: usize = 8;
/// The widest kernel whose per-column ranges the fast packing keeps in a table.
const MAX_KW: usize = 8;

impl Im2col<'_> {
    /// The general packing: runs found again for every k.
    fn pack_b_rows(&self, k0: usize, kc: usize, n0: usize, nr: usize, valid: usize, out: &mut [f32]) {
        let (ih, iw, ow) = (self.h.input, self.w.input, self.w.output);
        let taps = self.kh * self.kw;
        let (mut c, mut tap) = (k0 / taps, k0 % taps);
        for row in out.chunks_exact_mut(nr).take(kc) {
            let (ky, kx) = (tap / self.kw, tap % self.kw);
            let plane = &self.x[c * ih * iw..(c + 1) * ih * iw];
            let xs = valid_outputs(&self.w, kx);
            let (mut j, mut pos) = (0, n0);
            while j < valid {
                let (oy, ox) = (pos / ow, pos % ow);
                let len = (ow - ox).min(valid - j);
                self.pack_run(plane, ky, kx, &xs, oy, ox, &mut row[j..j + len]);
                j += len;
                pos += len;
            }
            row[valid..].fill(0.0);
            tap += 1;
            if tap == taps {
                tap = 0;
                c += 1;
            }
        }
    }

    /// Output pixels `ox..ox + seg.len()` of output row `oy` at tap (ky, kx) of one input plane:
    /// zeros where the tap falls in the padding, input pixels elsewhere. `xs`: the output columns
    /// whose tap kx is inside the input.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn pack_run(
        &self,
        plane: &[f32],
        ky: usize,
        kx: usize,
        xs: &std::ops::Range<usize>,
        oy: usize,
        ox: usize,
        seg: &mut [f32],
    ) {
        let (ih, iw) = (self.h.input, self.w.input);
        let run = seg.len();
        let iy = (oy * self.h.stride + ky * self.h.dilation).wrapping_sub(self.h.pad_begin);
        if iy >= ih {
            seg.fill(0.0);
            return;
        }
        let in_row = &plane[iy * iw..(iy + 1) * iw];
        // Zeros left of the input, the covered pixels, zeros right of it.
        let lo = xs.start.clamp(ox, ox + run);
        let hi = xs.end.clamp(ox, ox + run).max(lo);
        seg[..lo - ox].fill(0.0);
        seg[hi - ox..].fill(0.0);
        if hi > lo {
            let first = lo * self.w.stride + kx * self.w.dilation - self.w.pad_begin;
            let dst = &mut seg[lo - ox..hi - ox];
            if self.w.stride == 1 {
                copy_short::<16>(dst, &in_row[first..first + (hi - lo)]);
            } else {
                let src = &in_row[first..];
                if self.w.stride == 2 && src.len() >= 2 * dst.len() {
                    dst.iter_mut().zip(src.chunks_exact(2)).for_each(|(v, pair)| *v = pair[0]);
                } else {
                    dst.iter_mut().zip(src.iter().step_by(self.w.stride)).for_each(|(v, s)| *v = *s);
                }
            }
        }
    }
}
