//! The launcher of `kernels/rnn.cl` and the device kernel of RNN, GRU and LSTM layers with the
//! default activations, sequence-major layout and no per-entry sequence lengths (a sequence_lens
//! input whose entries all equal the sequence length is taken): one launch per time step for every
//! direction and batch entry at once (two for a GRU with linear_before_reset = 0).

use super::backend::{op_name, reference};
use super::context::Context;
use super::program::{Arg, Kernel as ClKernel, Program};
use super::resident::{self, ClTensor};
use crate::backend::cpu::f32_input;
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{Data, DataRef, Node, Op};
use crate::ops::rnn::{Activation, Cell, Direction, Recurrent};
use crate::Result;
use std::sync::Arc;

#[derive(Debug)]
pub struct RnnProgram {
    ctx: Arc<Context>,
    step: ClKernel,
    gru_reset: ClKernel,
}

impl RnnProgram {
    pub fn new(ctx: &Arc<Context>) -> Result<RnnProgram> {
        let program = Program::build(ctx, "rnn.cl", &[])?;
        Ok(RnnProgram {
            ctx: ctx.clone(),
            step: program.kernel("recurrent_step")?,
            gru_reset: program.kernel("gru_reset")?,
        })
    }
}

/// The kernel's cell code (`CELL_*` in rnn.cl), for the layers it takes.
fn cell_code(r: &Recurrent) -> Option<i32> {
    use Activation::{Sigmoid, Tanh};
    let (code, acts): (i32, &[Activation]) = match r.cell {
        Cell::Rnn => (0, &[Tanh]),
        Cell::Gru { .. } => (1, &[Sigmoid, Tanh]),
        Cell::Lstm { .. } => (2, &[Sigmoid, Tanh, Tanh]),
    };
    let defaults = r.activations.chunks(acts.len()).all(|c| c == acts);
    (defaults && !r.batch_first).then_some(code)
}

pub fn claims(node: &Node) -> bool {
    node.domain.is_empty() && node.op.downcast_ref::<Recurrent>().and_then(cell_code).is_some()
}

pub fn prepare(node: &Node, program: Arc<RnnProgram>) -> Result<Box<dyn Kernel>> {
    Ok(Box::new(RnnKernel { op: node.op.clone(), program }))
}

#[derive(Debug)]
struct RnnKernel {
    op: Arc<dyn Op>,
    program: Arc<RnnProgram>,
}

impl Kernel for RnnKernel {
    fn name(&self) -> &'static str {
        "opencl-rnn"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let fallback = || reference(&self.op, &op_name(&self.op), ctx, inputs);
        let r = self.op.downcast_ref::<Recurrent>().expect("claims checked it");
        let Some(cell) = cell_code(r) else { return fallback() };
        let given = |i: usize| inputs.get(i).copied().flatten().is_some();
        let (Some(x), Some(w), Some(rw)) = (f32_input(inputs, 0), f32_input(inputs, 1), f32_input(inputs, 2)) else {
            return fallback();
        };
        let &[seq, batch, input_size] = x.shape() else { return fallback() };
        let dirs = r.direction.count();
        let gates = match cell {
            0 => 1,
            1 => 3,
            _ => 4,
        };
        let Some(hidden) = r.hidden_size.or_else(|| rw.shape().get(2).copied()) else { return fallback() };
        let rows = gates * hidden;
        let is_lstm = cell == 2;
        // Every optional input given must be f32 (or all-full sequence lengths) of its exact shape.
        let optional = |i: usize, shape: &[usize]| match (given(i), f32_input(inputs, i)) {
            (false, _) => Some(None),
            (true, Some(t)) if t.shape() == shape => Some(Some(t)),
            _ => None,
        };
        let state = [dirs, batch, hidden];
        let (Some(b), Some(h0), Some(c0), Some(p)) = (
            optional(3, &[dirs, 2 * rows]),
            optional(5, &state),
            if is_lstm { optional(6, &state) } else { Some(None) },
            if is_lstm { optional(7, &[dirs, 3 * hidden]) } else { Some(None) },
        ) else {
            return fallback();
        };
        if given(4) {
            let lens = inputs[4].and_then(|d| d.tensor()).and_then(|t| t.to_i64_vec().ok());
            if !lens.is_some_and(|l| l.len() == batch && l.iter().all(|&n| n == seq as i64)) {
                return fallback();
            }
        }
        let extra_inputs = if is_lstm { 8 } else { 6 };
        let wrong_shape = w.shape() != [dirs, rows, input_size] || rw.shape() != [dirs, rows, hidden];
        if wrong_shape || inputs.len() > extra_inputs || seq == 0 || batch == 0 || x.len() > i32::MAX as usize {
            return fallback();
        }
        let dev = &self.program.ctx;
        let (dx, dw, dr) = (resident::input(dev, x)?, resident::input(dev, w)?, resident::input(dev, rw)?);
        let load = |t: Option<&crate::ir::Tensor>| t.map(|t| resident::input(dev, t)).transpose();
        let (db, dh0, dc0, dp) = (load(b)?, load(h0)?, load(c0)?, load(p)?);
        let y = ClTensor::alloc(dev, seq * dirs * batch * hidden)?;
        let hs = [ClTensor::alloc(dev, dirs * batch * hidden)?, ClTensor::alloc(dev, dirs * batch * hidden)?];
        let c = ClTensor::alloc(dev, dirs * batch * hidden)?;
        let reversed = match r.direction {
            Direction::Forward => -1,
            Direction::Reverse => 2,
            Direction::Bidirectional => 1,
        };
        let clip = r.clip.map_or(-1.0, |c| c as f32);
        let input_forget = matches!(r.cell, Cell::Lstm { input_forget: true });
        let reset_first = matches!(r.cell, Cell::Gru { linear_before_reset: false });
        let rh = if reset_first { Some(ClTensor::alloc(dev, dirs * batch * hidden)?) } else { None };
        let any = y.buffer(); // for parameters the kernel does not read
        let i = |v: usize| Arg::I32(v as i32);
        for k in 0..seq {
            let (h_in, h_out) = match (k, &dh0) {
                (0, Some(h)) => (h.buffer(), hs[0].buffer()),
                (0, None) => (any, hs[0].buffer()),
                _ => (hs[(k + 1) % 2].buffer(), hs[k % 2].buffer()),
            };
            let c_in = match (k, &dc0) {
                (0, Some(initial)) => initial.buffer(),
                _ => c.buffer(),
            };
            let zero_h = Arg::I32((k == 0 && dh0.is_none()) as i32);
            let has_b = Arg::I32(db.is_some() as i32);
            let b_buf = db.as_ref().map_or(any, |b| b.buffer());
            if let Some(rh) = &rh {
                let args = [
                    Arg::Buf(dx.buffer()),
                    Arg::Buf(dw.buffer()),
                    Arg::Buf(dr.buffer()),
                    Arg::Buf(b_buf),
                    Arg::Buf(h_in),
                    Arg::Buf(rh.buffer()),
                    i(seq),
                    i(batch),
                    i(input_size),
                    i(hidden),
                    i(k),
                    Arg::I32(reversed),
                    has_b,
                    zero_h,
                    Arg::F32(clip),
                ];
                self.program.gru_reset.launch(&args, &[hidden, batch, dirs], None)?;
            }
            let args = [
                Arg::Buf(dx.buffer()),
                Arg::Buf(dw.buffer()),
                Arg::Buf(dr.buffer()),
                Arg::Buf(b_buf),
                Arg::Buf(dp.as_ref().map_or(any, |p| p.buffer())),
                Arg::Buf(h_in),
                Arg::Buf(h_out),
                Arg::Buf(c_in),
                Arg::Buf(c.buffer()),
                Arg::Buf(y.buffer()),
                Arg::I32(cell),
                i(seq),
                i(batch),
                i(input_size),
                i(hidden),
                i(k),
                Arg::I32(reversed),
                has_b,
                Arg::I32(dp.is_some() as i32),
                zero_h,
                Arg::I32((k == 0 && dc0.is_none()) as i32),
                Arg::I32(input_forget as i32),
                Arg::F32(clip),
                Arg::Buf(rh.as_ref().map_or(any, |t| t.buffer())),
                Arg::I32(reset_first as i32),
            ];
            self.program.step.launch(&args, &[hidden, batch, dirs], None)?;
        }
        let [h_a, h_b] = hs;
        let h_last = if seq % 2 == 1 { h_a } else { h_b };
        let mut outs = vec![y.into_data(vec![seq, dirs, batch, hidden])?, h_last.into_data(state.to_vec())?];
        if is_lstm {
            outs.push(c.into_data(state.to_vec())?);
        }
        outs.truncate(r.num_outputs);
        Ok(outs)
    }
}
