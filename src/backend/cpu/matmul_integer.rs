//! MatMulInteger (uint8/int8 A times a constant uint8/int8 B, with zero points) in exact int32
//! arithmetic, without widening the operands: the products `a * b` of raw bytes are summed by the
//! micro-kernel (AVX-512 VNNI's `vpdpbusd`, four u8 x s8 products per i32 lane, where the CPU has
//! it) and the zero points are applied afterwards through row and column sums:
//!
//! `sum_k (a - za)(b - zb) = sum_k a*b - zb * sum_k a - za * sum_k b + K * za * zb`
//!
//! To always have u8 x s8 products, an int8 A is flipped to uint8 (`a ^ 0x80 = a + 128`, its zero
//! point moved by +128) and a uint8 B to int8 (`b - 128`, zero point moved by -128): the
//! differences `a - za` and `b - zb` are unchanged. Every step wraps like the reference's i32
//! arithmetic, so the result equals the reference's bit for bit.
//!
//! B is packed once at prepare time into panels of [`NR`] columns, k in groups of four bytes
//! (a 32-column group of four k rows is two 64-byte vectors); A is copied per run into rows padded
//! to a multiple of four bytes, with its row sums.
//!
//! The same kernel runs FusedMatMulInteger (the product cast to f32, times a scalar scale, plus a
//! per-column bias), writing floats directly with the unfused graph's f32 steps.

use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::pool::{SharedMut, ThreadPool};
use super::{const_f32, constant, f32_input, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::tensor::checked_len;
use crate::ir::{DType, Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::fused::FusedMatMulInteger;
use crate::ops::quant_conv::MatMulInteger;
use crate::Result;
use std::sync::Arc;

/// Columns of a packed B panel.
const NR: usize = 32;
/// Rows of one micro-kernel call.
const MR: usize = 8;
/// Rows of one task.
const MC: usize = 64;
/// Multiply-adds below which a product runs on the calling thread alone.
const SERIAL_WORK: usize = 1 << 18;

pub fn prepare(graph: &Graph, node: &Node) -> Result<Option<Box<dyn Kernel>>> {
    let fused = node.op.downcast_ref::<FusedMatMulInteger>();
    if !node.op.is::<MatMulInteger>() && fused.is_none() {
        return Ok(None);
    }
    let Some(b) = constant(graph, node, 1) else { return Ok(None) };
    if b.rank() != 2 {
        return Ok(None);
    }
    let (k, n) = (b.shape()[0], b.shape()[1]);
    let to_float = match fused {
        None => None,
        Some(f) => {
            let bias = match f.biased {
                false => None,
                true => match const_f32(graph, node, 5) {
                    Some(t) if t.len() == n => Some(t.as_slice::<f32>()?.to_vec()),
                    _ => return Ok(None),
                },
            };
            Some(ToFloat { scaled: f.scaled, bias })
        }
    };
    let zb = match node.inputs.get(3).copied().flatten() {
        None => vec![0],
        Some(_) => match constant(graph, node, 3) {
            Some(z) if z.dtype() == b.dtype() && (z.len() == 1 || (z.rank() == 1 && z.len() == n)) => match widen(z) {
                Some(v) => v,
                None => return Ok(None),
            },
            _ => return Ok(None),
        },
    };
    let Some(bv) = widen(b) else { return Ok(None) };
    // B in the int8 domain: a uint8 B and its zero point move down by 128.
    let shift = if b.dtype() == DType::U8 { 128 } else { 0 };
    let bs: Vec<i8> = bv.iter().map(|&v| (v - shift) as i8).collect();
    let zb: Vec<i32> = (0..n).map(|j| zb[if zb.len() == 1 { 0 } else { j }] - shift).collect();
    let b = PackedB8::new(&bs, k, n);
    Ok(Some(Box::new(MatMulIntegerKernel { op: node.op.clone(), b, zb, micro: micro(), to_float })))
}

/// FusedMatMulInteger's steps after the product.
#[derive(Debug)]
struct ToFloat {
    /// Multiplied by the scalar input 4.
    scaled: bool,
    /// Added per column.
    bias: Option<Vec<f32>>,
}

/// Where the results go: int32 for MatMulInteger, f32 (scaled, biased) for the fused form.
#[derive(Clone, Copy)]
enum Out<'a> {
    Int(SharedMut<i32>),
    Float(SharedMut<f32>, f32, Option<&'a [f32]>),
}
// SAFETY: the pointers are SharedMut (tasks write disjoint blocks); the bias is shared read-only.
unsafe impl Send for Out<'_> {}
unsafe impl Sync for Out<'_> {}

/// A u8/i8 tensor's values as i32; `None` for other types.
fn widen(t: &Tensor) -> Option<Vec<i32>> {
    match t.dtype() {
        DType::U8 => Some(t.as_slice::<u8>().ok()?.iter().map(|&v| v as i32).collect()),
        DType::I8 => Some(t.as_slice::<i8>().ok()?.iter().map(|&v| v as i32).collect()),
        _ => None,
    }
}

/// B (k x n, int8) in panels of NR columns: for each group of four k, NR x 4 bytes, column-major
/// within the group; zero past k and n. With the column sums over k.
#[derive(Debug)]
struct PackedB8 {
    k: usize,
    n: usize,
    data: Vec<i8>,
    colsum: Vec<i32>,
}

impl PackedB8 {
    fn new(b: &[i8], k: usize, n: usize) -> PackedB8 {
        let (kq, panels) = (k.div_ceil(4), n.div_ceil(NR));
        let mut data = vec![0i8; panels * kq * NR * 4];
        for p in 0..panels {
            for kk in 0..k {
                for j in 0..NR.min(n - p * NR) {
                    data[(p * kq + kk / 4) * NR * 4 + j * 4 + kk % 4] = b[kk * n + p * NR + j];
                }
            }
        }
        let mut colsum = vec![0i32; n];
        for row in b.chunks_exact(n.max(1)).take(k) {
            colsum.iter_mut().zip(row).for_each(|(s, &v)| *s = s.wrapping_add(v as i32));
        }
        PackedB8 { k, n, data, colsum }
    }

    fn panel(&self, p: usize) -> &[i8] {
        let len = self.k.div_ceil(4) * NR * 4;
        &self.data[p * len..(p + 1) * len]
    }
}

/// Sums MR rows of A (u8, `kq * 4` bytes each from the row pointers) times one packed B panel
/// into `out`.
type Micro8 = unsafe fn(kq: usize, a: &[*const u8; MR], b: *const i8, out: &mut [[i32; NR]; MR]);

fn micro() -> Micro8 {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw") => x86::vnni_8x32,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => x86::avx2_8x32,
        _ => portable_8x32,
    }
}

/// # Safety
/// `a[r]` is readable for `kq * 4` bytes, `b` for `kq * NR * 4`.
#[inline(always)]
unsafe fn generic_8x32(kq: usize, a: &[*const u8; MR], b: *const i8, out: &mut [[i32; NR]; MR]) {
    // SAFETY: the caller guarantees the sizes.
    let b = unsafe { std::slice::from_raw_parts(b, kq * NR * 4) };
    let rows: [&[u8]; MR] = std::array::from_fn(|r| unsafe { std::slice::from_raw_parts(a[r], kq * 4) });
    for (r, row) in rows.iter().enumerate() {
        let mut acc = [0i32; NR];
        for (aq, bq) in row.chunks_exact(4).zip(b.chunks_exact(NR * 4)) {
            for (j, bj) in bq.chunks_exact(4).enumerate() {
                let s: i32 = (0..4).map(|t| aq[t] as i32 * bj[t] as i32).sum();
                acc[j] = acc[j].wrapping_add(s);
            }
        }
        out[r] = acc;
    }
}

/// # Safety
/// See [`generic_8x32`].
unsafe fn portable_8x32(kq: usize, a: &[*const u8; MR], b: *const i8, out: &mut [[i32; NR]; MR]) {
    unsafe { generic_8x32(kq, a, b, out) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{generic_8x32, MR, NR};
    use std::arch::x86_64::*;

    /// The portable loop compiled for AVX2 (widening multiplies).
    ///
    /// # Safety
    /// See [`generic_8x32`]; needs AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2_8x32(kq: usize, a: &[*const u8; MR], b: *const i8, out: &mut [[i32; NR]; MR]) {
        unsafe { generic_8x32(kq, a, b, out) }
    }

    /// 8 rows x 32 columns in 16 zmm accumulators: per four k, two B loads, eight broadcasts of
    /// four A bytes and sixteen `vpdpbusd` (u8 x s8 products summed in fours, no saturation).
    ///
    /// # Safety
    /// See [`generic_8x32`]; needs AVX-512F/BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn vnni_8x32(kq: usize, a: &[*const u8; MR], b: *const i8, out: &mut [[i32; NR]; MR]) {
        unsafe {
            let mut acc = [[_mm512_setzero_si512(); 2]; MR];
            for q in 0..kq {
                let bq = b.add(q * NR * 4);
                let b0 = _mm512_loadu_si512(bq as *const __m512i);
                let b1 = _mm512_loadu_si512(bq.add(64) as *const __m512i);
                for r in 0..MR {
                    let av = _mm512_set1_epi32(std::ptr::read_unaligned(a[r].add(q * 4) as *const i32));
                    acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, b0);
                    acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, b1);
                }
            }
            for r in 0..MR {
                _mm512_storeu_si512(out[r].as_mut_ptr() as *mut __m512i, acc[r][0]);
                _mm512_storeu_si512(out[r].as_mut_ptr().add(16) as *mut __m512i, acc[r][1]);
            }
        }
    }
}

#[derive(Debug)]
struct MatMulIntegerKernel {
    op: Arc<dyn Op>,
    b: PackedB8,
    /// B's zero point per column, in the int8 domain.
    zb: Vec<i32>,
    micro: Micro8,
    to_float: Option<ToFloat>,
}

impl Kernel for MatMulIntegerKernel {
    fn name(&self) -> &'static str {
        "matmul-integer"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        match self.try_run(ctx.pool, inputs)? {
            Some(y) => Ok(vec![Data::Tensor(y)]),
            None => Reference { op: self.op.clone() }.run(ctx, inputs),
        }
    }
}

impl MatMulIntegerKernel {
    /// The product, or `None` for inputs the reference should handle (a zero point per row,
    /// mismatched types or shapes: the reference reports those).
    fn try_run(&self, pool: &ThreadPool, inputs: &[Option<DataRef>]) -> Result<Option<Tensor>> {
        let scale = match &self.to_float {
            Some(ToFloat { scaled: true, .. }) => match f32_input(inputs, 4).map(|t| t.as_slice::<f32>()) {
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
        let bytes: &[u8] = match a.dtype() {
            DType::U8 => a.as_slice::<u8>()?,
            // SAFETY: i8 and u8 have the same size and alignment; every bit pattern is valid.
            _ => unsafe { std::mem::transmute::<&[i8], &[u8]>(a.as_slice::<i8>()?) },
        };
        let m = a.len() / k.max(1);
        let mut out_shape = s[..s.len() - 1].to_vec();
        out_shape.push(n);
        let len = checked_len(&out_shape, DType::I32)?;
        let (mut yi, mut yf) = match self.to_float {
            None => (vec![0i32; len], vec![]),
            Some(_) => (vec![], vec![0f32; len]),
        };
        let out = match &self.to_float {
            None => Out::Int(SharedMut(yi.as_mut_ptr())),
            Some(f) => Out::Float(SharedMut(yf.as_mut_ptr()), scale, f.bias.as_deref()),
        };
        let done = |yi: Vec<i32>, yf: Vec<f32>| match self.to_float {
            None => Tensor::new(out_shape.clone(), yi),
            Some(_) => Tensor::new(out_shape.clone(), yf),
        };
        if m == 0 || n == 0 || k == 0 {
            // An empty sum is 0; the fused form still scales and adds its bias.
            if k == 0 {
                write_block(out, 0, m, 0, n, n, |_, _| 0);
            }
            return Ok(Some(done(yi, yf)?));
        }
        // A rows padded to whole groups of four bytes, and their sums.
        let lda = k.div_ceil(4) * 4;
        let mut ap = vec![0u8; m * lda];
        let mut rowsum = vec![0i32; m];
        for ((dst, src), sum) in ap.chunks_exact_mut(lda).zip(bytes.chunks_exact(k)).zip(&mut rowsum) {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v ^ flip;
            }
            *sum = dst.iter().fold(0i32, |acc, &v| acc.wrapping_add(v as i32));
        }
        let panels = n.div_ceil(NR);
        let blocks = m.div_ceil(MC);
        let task = |t: usize| {
            let (blk, p) = (t / panels, t % panels);
            let bp = self.b.panel(p).as_ptr();
            let (j0, cols) = (p * NR, NR.min(n - p * NR));
            let mut acc = [[0i32; NR]; MR];
            for i0 in (blk * MC..((blk + 1) * MC).min(m)).step_by(MR) {
                let rows = MR.min(m - i0);
                // Rows past m repeat the last one; their sums are not written.
                let ptrs: [*const u8; MR] = std::array::from_fn(|r| ap[(i0 + r.min(rows - 1)) * lda..].as_ptr());
                // SAFETY: each row pointer has lda = kq * 4 bytes, the panel kq * NR * 4; the
                // micro-kernel was chosen for this CPU.
                unsafe { (self.micro)(lda / 4, &ptrs, bp, &mut acc) };
                let value = |i: usize, j: usize| {
                    let (zb, cs) = (self.zb[j], self.b.colsum[j]);
                    acc[i - i0][j - j0]
                        .wrapping_sub(za.wrapping_mul(cs))
                        .wrapping_sub(zb.wrapping_mul(rowsum[i]))
                        .wrapping_add((k as i32).wrapping_mul(za).wrapping_mul(zb))
                };
                // Each task writes its own rows x columns block.
                write_block(out, i0, rows, j0, cols, n, value);
            }
        };
        if m * n * k < SERIAL_WORK {
            (0..blocks * panels).for_each(task);
        } else {
            pool.parallel_for(blocks * panels, &task);
        }
        Ok(Some(done(yi, yf)?))
    }
}

/// Writes rows `i0..i0+rows`, columns `j0..j0+cols` of the output (row length `n`) from the
/// exact sums `value(i, j)`: as they are, or as f32 times the scale plus the bias (the unfused
/// graph's Cast, Mul and Add, in that order).
#[inline(always)]
fn write_block(
    out: Out,
    i0: usize,
    rows: usize,
    j0: usize,
    cols: usize,
    n: usize,
    value: impl Fn(usize, usize) -> i32,
) {
    for i in i0..i0 + rows {
        match out {
            Out::Int(p) => {
                // SAFETY: the caller owns this block of the output.
                let dst = unsafe { std::slice::from_raw_parts_mut(p.0.add(i * n + j0), cols) };
                dst.iter_mut().enumerate().for_each(|(j, d)| *d = value(i, j0 + j));
            }
            Out::Float(p, scale, bias) => {
                // SAFETY: as above.
                let dst = unsafe { std::slice::from_raw_parts_mut(p.0.add(i * n + j0), cols) };
                for (j, d) in dst.iter_mut().enumerate() {
                    let mut v = value(i, j0 + j) as f32 * scale;
                    if let Some(b) = bias {
                        v += b[j0 + j];
                    }
                    *d = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every micro-kernel this CPU runs gives the portable one's sums (the parity table in
    /// `cpu::tests` only reaches the one `isa()` picks).
    #[test]
    fn every_micro_kernel_agrees() {
        let kq = 37;
        let a: Vec<u8> = (0..MR * kq * 4).map(|i| (i * 97 % 256) as u8).collect();
        let b: Vec<i8> = (0..kq * NR * 4).map(|i| (i * 61 % 256) as u8 as i8).collect();
        let ptrs: [*const u8; MR] = std::array::from_fn(|r| a[r * kq * 4..].as_ptr());
        let mut want = [[0i32; NR]; MR];
        // SAFETY: the rows and the panel have the sizes the kernels read.
        unsafe { portable_8x32(kq, &ptrs, b.as_ptr(), &mut want) };
        // The first element by hand.
        let first: i32 = (0..kq * 4).map(|t| a[t] as i32 * b[(t / 4) * NR * 4 + t % 4] as i32).sum();
        assert_eq!(want[0][0], first);
        #[allow(unused_mut)]
        let mut kernels: Vec<(&str, Micro8)> = vec![];
        #[cfg(target_arch = "x86_64")]
        {
            if Isa::Avx2.supported() {
                kernels.push(("avx2", x86::avx2_8x32));
            }
            if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw") {
                kernels.push(("vnni", x86::vnni_8x32));
            }
        }
        for (name, k) in kernels {
            let mut got = [[0i32; NR]; MR];
            // SAFETY: as above; only kernels this CPU supports are listed.
            unsafe { k(kq, &ptrs, b.as_ptr(), &mut got) };
            assert_eq!(got, want, "{name}");
        }
    }
}
