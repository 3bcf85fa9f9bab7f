//! The launcher of `kernels/gemm.cl`: batched C = act(alpha * op(A) op(B) + beta * bias) + residual
//! (or the residual inside the activation, a fused conv's order) with the device's tuned
//! parameters (`tuning.rs`).

use super::activation;
use super::context::{Buffer, Context};
use super::program::{Arg, Kernel, Program};
use super::tuning::{gemm_params, GemmParams};
use crate::ops::fused::Activation;
use crate::Result;
use std::sync::Arc;

/// How a bias operand is laid out: element (m, n) of batch b is at
/// `b * batch_stride + m * row_stride + n * col_stride` (0 strides broadcast).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BiasLayout {
    pub row_stride: usize,
    pub col_stride: usize,
    pub batch_stride: usize,
}

impl BiasLayout {
    /// One value per column (a MatMul + Add bias of shape [N]).
    pub fn per_column() -> BiasLayout {
        BiasLayout { row_stride: 0, col_stride: 1, batch_stride: 0 }
    }
    /// A full M x N matrix per batch.
    pub fn full(m: usize, n: usize) -> BiasLayout {
        BiasLayout { row_stride: n, col_stride: 1, batch_stride: m * n }
    }
}

/// One GEMM call's shape and epilogue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmCall {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    /// A holds K x M per batch (else M x K).
    pub trans_a: bool,
    /// B holds N x K per batch (else K x N).
    pub trans_b: bool,
    /// Whether A and B have one matrix per batch (else one shared by all batches).
    pub a_batched: bool,
    pub b_batched: bool,
    pub alpha: f32,
    pub beta: f32,
    pub act: Activation,
    /// The residual is added before the activation (FusedConv: act(conv + bias + residual)), else
    /// after it.
    pub residual_first: bool,
}

impl GemmCall {
    pub fn new(m: usize, n: usize, k: usize) -> GemmCall {
        GemmCall {
            m,
            n,
            k,
            batch: 1,
            trans_a: false,
            trans_b: false,
            a_batched: true,
            b_batched: true,
            alpha: 1.0,
            beta: 1.0,
            act: Activation::None,
            residual_first: false,
        }
    }
}

/// The compiled GEMM program of one context.
#[derive(Debug)]
pub struct Gemm {
    ctx: Arc<Context>,
    gemm: Kernel,
    transpose: Kernel,
    pub params: GemmParams,
    /// Whether the program came from the disk cache.
    pub from_cache: bool,
}

impl Gemm {
    /// Builds gemm.cl with the parameters `tuning.rs` gives the context's device (a tune file in
    /// the context's cache directory first, then the table).
    pub fn new(ctx: &Arc<Context>) -> Result<Gemm> {
        let (params, entry) = gemm_params(&ctx.device, ctx.cache_dir.as_deref())?;
        log::debug!("GEMM parameters for {}: {params:?} ({entry})", ctx.device.name);
        Gemm::with_params(ctx, params)
    }

    pub fn with_params(ctx: &Arc<Context>, params: GemmParams) -> Result<Gemm> {
        let program = Program::build(ctx, "gemm.cl", &params.defines(&ctx.device)?)?;
        Ok(Gemm {
            ctx: ctx.clone(),
            gemm: program.kernel("gemm")?,
            transpose: program.kernel("transpose")?,
            params,
            from_cache: program.from_cache,
        })
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Enqueues C = act(alpha * op(A) op(B) + beta * bias) + residual for every batch (the residual
    /// inside the activation with `residual_first`). C and the residual are `batch` row-major M x N
    /// matrices. Does not wait.
    pub fn run(
        &self,
        call: &GemmCall,
        a: &Buffer,
        b: &Buffer,
        bias: Option<(&Buffer, BiasLayout)>,
        residual: Option<&Buffer>,
        c: &Buffer,
    ) -> Result<()> {
        let GemmCall { m, n, k, batch, .. } = *call;
        let (a_mats, b_mats) = (if call.a_batched { batch } else { 1 }, if call.b_batched { batch } else { 1 });
        // Every index the kernel forms is an int: refuse what would overflow one.
        let biggest = [m * k * a_mats, k * n * b_mats, m * n * batch].into_iter().max().unwrap_or(0);
        if [m, n, k, batch].iter().any(|&d| d > i32::MAX as usize) || biggest > i32::MAX as usize {
            crate::bail!(
                ResourceLimit,
                "GEMM {m}x{n}x{k} (batch {batch}) is too large for the OpenCL kernel's 32-bit indices"
            );
        }
        let eb = self.ctx.element_bytes();
        let need = |buf: &Buffer, elems: usize, what: &str| -> Result<()> {
            if buf.bytes() < elems * eb {
                crate::bail!(
                    Runtime,
                    "GEMM {m}x{n}x{k}: the {what} buffer holds {} bytes, {} needed",
                    buf.bytes(),
                    elems * eb
                );
            }
            Ok(())
        };
        need(a, m * k * a_mats, "A")?;
        need(b, k * n * b_mats, "B")?;
        need(c, m * n * batch, "C")?;
        if let Some(r) = residual {
            need(r, m * n * batch, "residual")?;
        }
        if let Some((buf, l)) = bias {
            let last =
                (m.max(1) - 1) * l.row_stride + (n.max(1) - 1) * l.col_stride + (batch.max(1) - 1) * l.batch_stride;
            need(buf, last + 1, "bias")?;
        }
        if m == 0 || n == 0 || batch == 0 {
            return Ok(());
        }

        // The kernel reads B row-major: a transposed B is transposed once, here.
        let b_plain;
        let b = if call.trans_b {
            b_plain = self.ctx.alloc::<f32>(k * n * b_mats)?;
            let t = [Arg::I32(n as i32), Arg::I32(k as i32), Arg::Buf(b), Arg::Buf(&b_plain)];
            self.transpose.launch(&t, &[k, n, b_mats], None)?;
            &b_plain
        } else {
            b
        };
        let (a_rs, a_cs) = if call.trans_a { (1, m) } else { (k, 1) };
        let (code, act_a, act_b) = activation::args(call.act);
        let (bias_buf, bl) = bias.unwrap_or((c, BiasLayout { row_stride: 0, col_stride: 0, batch_stride: 0 }));
        let i = |v: usize| Arg::I32(v as i32);
        // The launch geometry, and for the register kernel its order and blocks per work-item.
        let (n_first, per, global, local) = match self.params {
            GemmParams::Registers { mwi, vw, nv } => {
                // One work-item per work-group: PoCL then runs the kernel's own vector code as
                // written instead of looping over (and trying to re-vectorise) work-items.
                // Consecutive blocks share the larger operand's block: B's panel (down M) unless A
                // is the taller (along N).
                let (m_blocks, n_blocks) = (m.div_ceil(mwi), n.div_ceil(vw * nv));
                let n_first = m > n;
                let (fast, slow) = if n_first { (n_blocks, m_blocks) } else { (m_blocks, n_blocks) };
                let per = blocks_per_item(fast, slow * batch, self.ctx.device.compute_units as usize);
                (n_first, per, [fast.div_ceil(per), slow, batch], [1, 1, 1])
            }
            GemmParams::Local { mwg, nwg, mwi, nwi, .. } => {
                let (tdx, tdy) = (nwg / nwi, mwg / mwi);
                (false, 1, [n.div_ceil(nwg) * tdx, m.div_ceil(mwg) * tdy, batch], [tdx, tdy, 1])
            }
        };
        let args = [
            i(m),
            i(n),
            i(k),
            Arg::Buf(a),
            i(a_rs),
            i(a_cs),
            i(if call.a_batched { m * k } else { 0 }),
            Arg::Buf(b),
            i(n),
            i(if call.b_batched { k * n } else { 0 }),
            Arg::Buf(c),
            i(n),
            i(m * n),
            Arg::F32(call.alpha),
            Arg::F32(call.beta),
            Arg::Buf(bias_buf),
            i(bl.row_stride),
            i(bl.col_stride),
            i(bl.batch_stride),
            Arg::I32(bias.is_some() as i32),
            Arg::Buf(residual.unwrap_or(c)),
            i(n),
            i(m * n),
            // 0: no residual, 1: added after the activation, 2: before it.
            Arg::I32(match (residual.is_some(), call.residual_first) {
                (false, _) => 0,
                (true, false) => 1,
                (true, true) => 2,
            }),
            Arg::I32(code),
            Arg::F32(act_a),
            Arg::F32(act_b),
            Arg::I32(n_first as i32),
            i(per),
        ];
        self.gemm.launch(&args, &global, Some(&local))
    }
}

/// How many consecutive register blocks one work-item of the register kernel computes: enough that
/// PoCL's per-work-group cost is spread over several blocks, few enough that every compute unit
/// still gets 16 work-items or more to balance.
fn blocks_per_item(fast: usize, slow: usize, compute_units: usize) -> usize {
    let items = fast * slow;
    (items / (compute_units.max(1) * 16)).clamp(1, 8).min(fast)
}
