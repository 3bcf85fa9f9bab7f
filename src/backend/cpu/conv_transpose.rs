//! ConvTranspose in f32 with constant weights: per image and group, `col = W^T · X` on the fast
//! GEMM (W^T packed once at prepare time), then col2im scatters each output channel's columns
//! onto its plane (channels spread over the pool), starting from the bias. The geometry (strides,
//! pads, dilations, output_padding, output_shape, auto_pad) comes from the op, so every attribute
//! means what the reference means. A fused activation (FusedConvTranspose) is applied to each
//! output row right after the row is written where the taps do not overlap, else in one pass at
//! the end. Other dtypes, or an X that does not match the weights, run the reference.

use super::activation::{Activation, ActivationExt};
use super::gemm::{self, Epilogue, Lhs, MatRef, PackedA, Problem, Rhs};
use super::isa::isa;
use super::pool::SharedMut;
use super::{const_f32, f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::tensor::checked_len;
use crate::ir::{DType, Data, DataRef, Graph, Node, Op};
use crate::ops::conv::col2im;
use crate::ops::conv_transpose::ConvTranspose;
use crate::ops::fused::FusedConvTranspose;
use crate::ops::window::{three_axes, Axis};
use crate::Result;
use std::sync::Arc;

pub fn prepare(graph: &Graph, node: &Node) -> Result<Option<Box<dyn Kernel>>> {
    let (base, act) = match node.op.downcast_ref::<FusedConvTranspose>() {
        Some(f) => (f.conv_transpose.clone(), f.act),
        None => (node.op.clone(), Activation::None),
    };
    let Some(op) = base.downcast_ref::<ConvTranspose>() else { return Ok(None) };
    if !maybe_f32(graph, node.inputs.first().copied().flatten()) {
        return Ok(None);
    }
    let Some(w) = const_f32(graph, node, 1).filter(|w| w.rank() >= 3 && !w.is_empty()) else { return Ok(None) };
    let bias = match node.inputs.get(2).copied().flatten() {
        None => None,
        Some(_) => match const_f32(graph, node, 2) {
            Some(b) => Some(b.as_slice::<f32>()?.to_vec()),
            None => return Ok(None),
        },
    };
    let (ws, group) = (w.shape(), op.group());
    if ws[0] % group != 0 {
        return Ok(None);
    }
    // W is [C, M / group, taps...]: per group a (C / group) x (M / group * taps) matrix, whose
    // transpose maps each input pixel to the output taps it feeds.
    let (c_per_group, col_rows) = (ws[0] / group, w.len() / ws[0]);
    let micro = gemm::micro_for(isa());
    let wv = w.as_slice::<f32>()?;
    let packed = (0..group)
        .map(|g| {
            let slice = &wv[g * c_per_group * col_rows..(g + 1) * c_per_group * col_rows];
            PackedA::new(MatRef::transposed(slice, col_rows), col_rows, c_per_group, &micro)
        })
        .collect();
    let (op, w_shape) = (node.op.clone(), ws.to_vec());
    Ok(Some(Box::new(ConvTransposeKernel { op, base, act, w_shape, packed, bias, micro })))
}

#[derive(Debug)]
struct ConvTransposeKernel {
    /// The node's op: what the reference runs.
    op: Arc<dyn Op>,
    /// The ConvTranspose itself (the geometry).
    base: Arc<dyn Op>,
    /// Applied to the output.
    act: Activation,
    w_shape: Vec<usize>,
    /// W^T per group.
    packed: Vec<PackedA>,
    bias: Option<Vec<f32>>,
    micro: gemm::Micro,
}

impl Kernel for ConvTransposeKernel {
    fn name(&self) -> &'static str {
        "conv-transpose"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let x = match f32_input(inputs, 0) {
            Some(x) if !x.is_empty() => x,
            _ => return Reference { op: self.op.clone() }.run(ctx, inputs),
        };
        let op = self.base.downcast_ref::<ConvTranspose>().expect("prepared for a ConvTranspose");
        let (xs, ws) = (x.shape(), &self.w_shape[..]);
        let (group, axes) = op.geometry(xs, ws)?;
        let (batch, channels, m_per_group) = (xs[0], xs[1], ws[1]);
        let maps = m_per_group * group;
        if self.bias.as_ref().is_some_and(|b| b.len() != maps) || channels != ws[0] {
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        }
        let g = three_axes(&axes)?;
        let mut out_shape = vec![batch, maps];
        out_shape.extend(axes.iter().map(|a| a.input));
        // With a bias every output starts from it (filled below), else from zero.
        let len = checked_len(&out_shape, DType::F32)?;
        let disjoint =
            |a: &Axis| a.kernel == a.stride && a.dilation == 1 && a.pad_begin == 0 && a.input >= a.output * a.stride;
        let tiled = axes.len() <= 2 && g.iter().all(disjoint);
        // Without overlaps and without bias-only margins, the tiles write every output once.
        let exact = tiled && g.iter().all(|a| a.input == a.output * a.stride);
        let mut y = ctx.buffers.output(len)?;
        if self.bias.is_none() && !exact {
            y.fill(0.0);
        }
        let (in_plane, out_plane): (usize, usize) = (xs[2..].iter().product(), out_shape[2..].iter().product());
        let taps: usize = ws[2..].iter().product();
        let (c_per_group, col_rows) = (channels / group, m_per_group * taps);
        let xv = x.as_slice::<f32>()?;
        if let (Some(b), false) = (&self.bias, exact) {
            y.chunks_exact_mut(out_plane.max(1)).enumerate().for_each(|(i, p)| p.fill(b[i % maps]));
        }
        if tiled {
            // Each input pixel feeds its own block of outputs (output_padding or a larger
            // output_shape only adds bias-only rows and columns at the end): no overlap to add up.
            let dims = Tiling { g: &g, c_per_group, m_per_group, maps, in_plane, out_plane, exact };
            self.tiled(ctx, &dims, xv, &mut y)?;
            if !exact {
                self.act.apply(&mut y);
            }
            return Ok(vec![Data::Tensor(y.into_tensor(out_shape)?)]);
        }
        // The products write every column.
        let mut col = ctx.buffers.output(checked_len(&[col_rows, in_plane], DType::F32)?)?;
        for n in 0..batch {
            for (grp, a) in self.packed.iter().enumerate() {
                let x_start = (n * channels + grp * c_per_group) * in_plane;
                let x_group = &xv[x_start..x_start + c_per_group * in_plane];
                let epilogue = Epilogue::default();
                let p = Problem {
                    m: col_rows,
                    n: in_plane,
                    k: c_per_group,
                    a: Lhs::Packed(a),
                    b: Rhs::Plain(MatRef::row_major(x_group, in_plane)),
                    epilogue,
                };
                gemm::run(ctx.pool, &self.micro, &p, &mut col, in_plane);
                let y_start = (n * maps + grp * m_per_group) * out_plane;
                let out = SharedMut(y[y_start..].as_mut_ptr());
                let col = &col;
                ctx.pool.parallel_for_work(m_per_group, taps * in_plane, &|m| {
                    let o = out;
                    // SAFETY: each task scatters into its own output channel's plane.
                    let plane = unsafe { std::slice::from_raw_parts_mut(o.0.add(m * out_plane), out_plane) };
                    col2im(&col[m * taps * in_plane..(m + 1) * taps * in_plane], 1, &g, plane);
                });
            }
        }
        ctx.buffers.give(col.into_buffer());
        self.act.apply(&mut y);
        Ok(vec![Data::Tensor(y.into_tensor(out_shape)?)])
    }
}

/// The sizes of a ConvTranspose whose taps never overlap (kernel = stride, no dilation, no pads
/// that trim): the output is the bias plus, per input pixel, its own block of taps.
struct Tiling<'a> {
    /// The spatial axes, forward view, the unused leading ones unit axes.
    g: &'a [Axis; 3],
    c_per_group: usize,
    m_per_group: usize,
    maps: usize,
    in_plane: usize,
    out_plane: usize,
    /// The tiles cover the whole output: rows are written (bias + taps, activated), not added to.
    exact: bool,
}

/// Input pixels per tile: its column block (all channel taps) stays in L2.
const TILE_PIXELS: usize = 2048;

impl ConvTransposeKernel {
    /// Per tile of whole input rows, `col = W^T · X` into a small buffer, then each column
    /// written straight to its output position (plus the bias already in `y`). Tiles write
    /// disjoint output rows, so they run in parallel.
    fn tiled(&self, ctx: &ExecCtx, t: &Tiling, xv: &[f32], y: &mut [f32]) -> Result<()> {
        let [_, h, w] = t.g;
        let (in_w, rows) = (w.output, h.output);
        let taps = h.kernel * w.kernel;
        let col_rows = t.m_per_group * taps;
        let rows_per_tile = (TILE_PIXELS / in_w.max(1)).clamp(1, rows.max(1));
        let tiles = rows.div_ceil(rows_per_tile);
        let batch = y.len().checked_div(t.maps * t.out_plane).unwrap_or(0);
        let groups = self.packed.len();
        let out = SharedMut(y.as_mut_ptr());
        let failed = std::sync::atomic::AtomicBool::new(false);
        let work = rows_per_tile * in_w * col_rows * t.c_per_group;
        ctx.pool.parallel_for_work(batch * groups * tiles, work, &|task| {
            let (image, rest) = (task / (groups * tiles), task % (groups * tiles));
            let (grp, tile) = (rest / tiles, rest % tiles);
            let (r0, r1) = (tile * rows_per_tile, ((tile + 1) * rows_per_tile).min(rows));
            let n = (r1 - r0) * in_w;
            // The product writes every column.
            let Ok(mut col) = ctx.buffers.output(col_rows * n) else {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                return;
            };
            let channels = t.c_per_group * groups;
            let x_start = (image * channels + grp * t.c_per_group) * t.in_plane + r0 * in_w;
            // X's rows r0..r1 of each channel: a k x n matrix with row stride in_plane.
            let b = MatRef { data: &xv[x_start..], rs: t.in_plane, cs: 1 };
            let epilogue = Epilogue::default();
            let p = Problem {
                m: col_rows,
                n,
                k: t.c_per_group,
                a: Lhs::Packed(&self.packed[grp]),
                b: Rhs::Plain(b),
                epilogue,
            };
            gemm::run(ctx.pool, &self.micro, &p, &mut col, n);
            let o = out;
            for m in 0..t.m_per_group {
                let channel = grp * t.m_per_group + m;
                let plane = (image * t.maps + channel) * t.out_plane;
                let bias = self.bias.as_ref().map_or(0.0, |b| b[channel]);
                for ky in 0..h.kernel {
                    // The columns of taps (ky, 0..kw) of channel m.
                    let first = (m * taps + ky * w.kernel) * n;
                    let block = &col[first..first + w.kernel * n];
                    for r in 0..r1 - r0 {
                        let oy = (r0 + r) * h.stride + ky;
                        // SAFETY: output rows r0 * stride..r1 * stride of this image and group
                        // belong to this task alone, and oy < h.input, in_w * stride <= w.input.
                        let row =
                            unsafe { std::slice::from_raw_parts_mut(o.0.add(plane + oy * w.input), in_w * w.stride) };
                        if t.exact {
                            write_row(row, block, n, r * in_w, in_w, w.kernel, bias);
                            self.act.apply(row);
                        } else {
                            scatter_row(row, block, n, r * in_w, in_w, w.kernel);
                        }
                    }
                }
            }
            ctx.buffers.give(col.into_buffer());
        });
        if failed.into_inner() {
            crate::bail!(ResourceLimit, "ConvTranspose: no memory for a tile of columns");
        }
        Ok(())
    }
}

/// Writes one output row of a tile: `row[x * kw + kx] = bias + block[kx * n + start + x]`.
fn write_row(row: &mut [f32], block: &[f32], n: usize, start: usize, in_w: usize, kw: usize, bias: f32) {
    if kw == 2 {
        let (a, b) = (&block[start..start + in_w], &block[n + start..n + start + in_w]);
        for ((pair, &p), &q) in row.chunks_exact_mut(2).zip(a).zip(b) {
            pair[0] = bias + p;
            pair[1] = bias + q;
        }
        return;
    }
    for (x, out) in row.chunks_exact_mut(kw).take(in_w).enumerate() {
        for (kx, v) in out.iter_mut().enumerate() {
            *v = bias + block[kx * n + start + x];
        }
    }
}

/// Adds one output row of a tile: `row[x * kw + kx] += block[kx * n + start + x]` for the
/// row's `in_w` input pixels and `kw` taps, written in order.
fn scatter_row(row: &mut [f32], block: &[f32], n: usize, start: usize, in_w: usize, kw: usize) {
    if kw == 2 {
        let (a, b) = (&block[start..start + in_w], &block[n + start..n + start + in_w]);
        for ((pair, &p), &q) in row.chunks_exact_mut(2).zip(a).zip(b) {
            pair[0] += p;
            pair[1] += q;
        }
        return;
    }
    for (x, out) in row.chunks_exact_mut(kw).take(in_w).enumerate() {
        for (kx, v) in out.iter_mut().enumerate() {
            *v += block[kx * n + start + x];
        }
    }
}
