//! MatMulInteger (uint8/int8 A times a constant uint8/int8 B, with zero points),
//! FusedMatMulInteger (the product cast to f32, times a scalar scale, plus a per-column bias) and
//! QLinearMatMul (the product requantized to uint8/int8 with per-tensor scales, as the reference
//! rounds) on the integer GEMM (`gemm_i8`): B is brought into the int8 domain and packed once at prepare
//! time; per run, A is read in place when it is uint8 with k a multiple of four (a dynamically
//! quantised transformer's activations), else copied into padded uint8 rows, and the float
//! epilogue writes the unfused graph's floats bit for bit.

use super::gemm_i8::{self, Lhs, Micro8, Out, PackedB8, Requant};
use super::int8::{bytes_of, bytes_tensor, or_reference, widen};
use super::isa::isa;
use super::{const_f32, constant, f32_input};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::tensor::checked_len;
use crate::ir::{DType, Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::fused::FusedMatMulInteger;
use crate::ops::quant_conv::{MatMulInteger, QLinearMatMul};
use crate::Result;
use std::sync::Arc;

pub fn prepare(graph: &Graph, node: &Node) -> Result<Option<Box<dyn Kernel>>> {
    let fused = node.op.downcast_ref::<FusedMatMulInteger>();
    let qlinear = node.op.is::<QLinearMatMul>();
    if !node.op.is::<MatMulInteger>() && fused.is_none() && !qlinear {
        return Ok(None);
    }
    // QLinearMatMul keeps B and its zero point two places later, after A's scale and zero point.
    let (b_at, zb_at) = if qlinear { (3, 5) } else { (1, 3) };
    let Some(b) = constant(graph, node, b_at) else { return Ok(None) };
    if b.rank() != 2 {
        return Ok(None);
    }
    let (k, n) = (b.shape()[0], b.shape()[1]);
    let epilogue = match fused {
        None if qlinear => match to_bytes(graph, node, n) {
            Some(e) => e,
            None => return Ok(None),
        },
        None => Epilogue::Int,
        Some(f) => {
            let bias = match f.biased {
                false => None,
                true => match const_f32(graph, node, 5) {
                    Some(t) if t.len() == n => Some(t.as_slice::<f32>()?.to_vec()),
                    _ => return Ok(None),
                },
            };
            let bias = bias.map(|mut b| {
                b.resize(n.div_ceil(gemm_i8::NR) * gemm_i8::NR, 0.0);
                b
            });
            // Constant scales, one per column, are kept; a scalar one is read per run.
            let column_scales = match const_f32(graph, node, 4) {
                Some(t) if f.scaled && t.len() == n && n != 1 => {
                    let mut s = t.as_slice::<f32>()?.to_vec();
                    s.resize(n.div_ceil(gemm_i8::NR) * gemm_i8::NR, 0.0);
                    Some(s)
                }
                _ => None,
            };
            Epilogue::Float(ToFloat { scaled: f.scaled, column_scales, bias })
        }
    };
    let zb = match node.inputs.get(zb_at).copied().flatten() {
        None => vec![0],
        Some(_) => match constant(graph, node, zb_at) {
            Some(z) if z.dtype() == b.dtype() && (z.len() == 1 || (z.rank() == 1 && z.len() == n)) => match widen(z) {
                Some(v) => v,
                None => return Ok(None),
            },
            _ => return Ok(None),
        },
    };
    // B in the int8 domain: a uint8 B and its zero point move down by 128.
    let Some(bytes) = bytes_of(b) else { return Ok(None) };
    let (flip, shift) = if b.dtype() == DType::U8 { (0x80, 128) } else { (0, 0) };
    let b = PackedB8::from_bytes(k, n, flip, |kk| &bytes[kk * n..]);
    // Padded to whole panels with zeros, like B.
    let zb: Vec<i32> =
        (0..b.padded_n()).map(|j| if j < n { zb[if zb.len() == 1 { 0 } else { j }] - shift } else { 0 }).collect();
    let micro = gemm_i8::micro_for(isa());
    Ok(Some(Box::new(MatMulIntegerKernel { op: node.op.clone(), b, zb, micro, epilogue })))
}

/// What becomes of the int32 product.
#[derive(Debug)]
enum Epilogue {
    /// MatMulInteger: the sums themselves.
    Int,
    Float(ToFloat),
    /// QLinearMatMul: requantized with one multiplier, or one per column (B's scale per
    /// column), padded to whole panels.
    Bytes {
        mult: f32,
        columns: Option<Vec<f32>>,
        out: Requant,
        dtype: DType,
    },
}

/// QLinearMatMul's requantization, where its scales and the output zero point are constants
/// of one value each, B's scale possibly one per column (others run on the reference): the
/// multipliers as the reference computes them, which must be finite.
fn to_bytes(graph: &Graph, node: &Node, n: usize) -> Option<Epilogue> {
    let scalar = |i: usize| -> Option<f32> {
        let t = const_f32(graph, node, i).filter(|t| t.len() == 1)?;
        Some(t.as_slice::<f32>().ok()?[0])
    };
    let (a_scale, y_scale) = (scalar(1)?, scalar(6)?);
    let b_scale = const_f32(graph, node, 4).filter(|t| t.len() == 1 || (t.rank() == 1 && t.len() == n))?;
    let b_scale = b_scale.as_slice::<f32>().ok()?;
    let columns = match b_scale.len() {
        1 => None,
        _ => {
            let mut m: Vec<f32> = b_scale.iter().map(|s| a_scale * s / y_scale).collect();
            if m.iter().any(|m| !m.is_finite()) {
                return None;
            }
            m.resize(n.div_ceil(gemm_i8::NR) * gemm_i8::NR, 0.0);
            Some(m)
        }
    };
    let mult = a_scale * b_scale[0] / y_scale;
    let (dtype, zero_point) = match node.inputs.get(7).copied().flatten() {
        None => (graph.values[node.inputs[0]?].fact.dtype?, 0),
        Some(_) => {
            let z = constant(graph, node, 7).filter(|z| z.len() == 1)?;
            (z.dtype(), widen(z)?[0])
        }
    };
    let out = Requant::new(dtype, zero_point)?;
    Some(Epilogue::Bytes { mult: mult.is_finite().then_some(mult)?, columns, out, dtype })
}

/// FusedMatMulInteger's steps after the product.
#[derive(Debug)]
struct ToFloat {
    /// Multiplied by input 4: a scalar given per run, or constant scales per column (padded to
    /// whole panels).
    scaled: bool,
    column_scales: Option<Vec<f32>>,
    /// Added per column; padded to whole panels.
    bias: Option<Vec<f32>>,
}

#[derive(Debug)]
struct MatMulIntegerKernel {
    op: Arc<dyn Op>,
    b: PackedB8,
    /// B's zero point per column, in the int8 domain, padded to whole panels.
    zb: Vec<i32>,
    micro: Micro8,
    epilogue: Epilogue,
}

impl Kernel for MatMulIntegerKernel {
    fn name(&self) -> &'static str {
        match self.epilogue {
            Epilogue::Bytes { .. } => "qlinear-matmul",
            _ => "matmul-integer",
        }
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        or_reference(self.try_run(ctx, inputs)?, &self.op, ctx, inputs)
    }
}

impl MatMulIntegerKernel {
    /// The product, or `None` for inputs the reference should handle (a zero point per row,
    /// mismatched types or shapes: the reference reports those).
    fn try_run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Option<Tensor>> {
        let scale = match &self.epilogue {
            Epilogue::Float(ToFloat { column_scales: Some(_), .. }) => 1.0,
            Epilogue::Float(ToFloat { scaled: true, .. }) => match f32_input(inputs, 4).map(|t| t.as_slice::<f32>()) {
                Some(Ok(&[s])) => s,
                _ => return Ok(None),
            },
            _ => 1.0,
        };
        let tensor = |i: usize| inputs.get(i).copied().flatten().and_then(|d| d.tensor());
        let Some(a) = tensor(0) else { return Ok(None) };
        let (k, n) = (self.b.k, self.b.n);
        let s = a.shape();
        if s.is_empty() || s[s.len() - 1] != k {
            return Ok(None);
        }
        // A in the uint8 domain: an int8 A and its zero point move up by 128.
        let (flip, shift) = match a.dtype() {
            DType::U8 => (0u8, 0),
            DType::I8 => (0x80u8, 128),
            _ => return Ok(None),
        };
        let za = match tensor(2) {
            None => 0,
            Some(z) if z.dtype() == a.dtype() && z.len() == 1 => widen(z).map_or(0, |v| v[0]),
            Some(_) => return Ok(None),
        } + shift;
        let Some(bytes) = bytes_of(a) else { return Ok(None) };
        let m: usize = s[..s.len() - 1].iter().product();
        let mut out_shape = s[..s.len() - 1].to_vec();
        out_shape.push(n);
        let len = checked_len(&out_shape, DType::I32)?;
        // A as the GEMM reads it: in place, or in padded rows of a pool buffer (given back below).
        let lda = k.div_ceil(4) * 4;
        let mut scratch = None;
        let data: &[u8] = if flip == 0 && lda == k {
            bytes
        } else {
            let buf: &mut [u8] = bytemuck::cast_slice_mut(scratch.insert(ctx.buffers.zeroed((m * lda).div_ceil(4))?));
            for (dst, src) in buf.chunks_exact_mut(lda.max(1)).zip(bytes.chunks_exact(k.max(1))) {
                dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v ^ flip);
            }
            buf
        };
        let mut rowsum = vec![0i32; m];
        gemm_i8::row_sums(&data[..m * lda], lda, &mut rowsum);
        let lhs = Lhs { data, lda, rowsum: &rowsum };
        let mut offset = vec![0i32; self.b.padded_n()];
        let y = match &self.epilogue {
            Epilogue::Int => {
                let mut y = vec![0i32; len];
                gemm_i8::run(ctx.pool, self.micro, &lhs, m, self.b.view(), za, &self.zb, &mut offset, Out::Int(&mut y));
                Tensor::new(out_shape, y)?
            }
            Epilogue::Bytes { mult, columns, out, dtype } => {
                let mut y = ctx.buffers.bytes_for_overwrite(len)?;
                let (mult, bias) = (vec![*mult; m], vec![0; m]);
                let out = match columns {
                    None => Out::Bytes { y: &mut y, mult: &mult, bias: &bias, q: *out },
                    Some(columns) => Out::BytesByColumn { y: &mut y, mult: columns, q: *out },
                };
                gemm_i8::run(ctx.pool, self.micro, &lhs, m, self.b.view(), za, &self.zb, &mut offset, out);
                bytes_tensor(out_shape, *dtype, y)?
            }
            Epilogue::Float(f) => {
                // Every element is written (each row of each panel through the epilogue).
                let mut y = ctx.buffers.output(len)?;
                let scales;
                let scale = match &f.column_scales {
                    Some(s) => s,
                    None => {
                        scales = vec![scale; self.b.padded_n()];
                        &scales
                    }
                };
                let out = Out::Float { y: &mut y, scale, bias: f.bias.as_deref() };
                gemm_i8::run(ctx.pool, self.micro, &lhs, m, self.b.view(), za, &self.zb, &mut offset, out);
                y.into_tensor(out_shape)?
            }
        };
        if let Some(buf) = scratch {
            ctx.buffers.give(buf);
        }
        Ok(Some(y))
    }
}
