//! The launcher of `kernels/resize.cl` and the device kernel of Resize and Upsample on f32
//! tensors: the reference's own per-axis taps ([`Resize::resampling`]: every mode and coordinate
//! transform) are computed on the host once per input shape and target, uploaded as tables, and
//! applied one axis at a time on the device.

use super::backend::{op_name, reference, tensors};
use super::context::{Buffer, Context};
use super::program::{Arg, Kernel as ClKernel, Program};
use super::resident::{self, ClTensor};
use crate::backend::cpu::f32_input;
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{Data, DataRef, Node, Op, Tensor};
use crate::ops::resize::{Resize, Taps};
use crate::Result;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct ResizeProgram {
    ctx: Arc<Context>,
    resample: ClKernel,
}

impl ResizeProgram {
    pub fn new(ctx: &Arc<Context>) -> Result<ResizeProgram> {
        let program = Program::build(ctx, "resize.cl", &[])?;
        Ok(ResizeProgram { ctx: ctx.clone(), resample: program.kernel("resample_axis")? })
    }
}

pub fn claims(node: &Node) -> bool {
    node.op.is::<Resize>()
}

pub fn prepare(node: &Node, program: Arc<ResizeProgram>) -> Result<Box<dyn Kernel>> {
    Ok(Box::new(ResizeKernel { op: node.op.clone(), program, tables: Mutex::new(None) }))
}

/// What the taps depend on: the input shape and the values of the other inputs (roi, scales,
/// sizes).
type Key = (Vec<usize>, Vec<Option<Vec<f64>>>);

/// The output shape and the tables of the axes that change, in order.
type Plan = Arc<(Vec<usize>, Vec<AxisTable>)>;

/// One resampled axis on the device: kernel tables in resize.cl's layout.
#[derive(Debug)]
struct AxisTable {
    axis: usize,
    out_len: usize,
    starts: Buffer,
    index: Buffer,
    weight: Buffer,
}

#[derive(Debug)]
struct ResizeKernel {
    op: Arc<dyn Op>,
    program: Arc<ResizeProgram>,
    /// The tables of the last key (a model resizes one shape per node, run after run).
    tables: Mutex<Option<(Key, Plan)>>,
}

/// resize.cl's tables for `taps`: an extrapolated position becomes one tap of index -1 whose
/// weight is its value. `None` when they do not fit the kernel's ints.
fn table(ctx: &Arc<Context>, axis: usize, taps: &Taps) -> Result<Option<AxisTable>> {
    let (mut starts, mut index, mut weight) = (vec![0i32], vec![], vec![]);
    for (p, fill) in taps.fill.iter().enumerate() {
        match fill {
            Some(v) => {
                index.push(-1);
                weight.push(*v as f32);
            }
            None => {
                for t in taps.starts[p]..taps.starts[p + 1] {
                    index.push(i32::try_from(taps.index[t]).unwrap_or(-1));
                    weight.push(taps.weight[t] as f32);
                }
            }
        }
        let Ok(end) = i32::try_from(index.len()) else { return Ok(None) };
        starts.push(end);
    }
    let uploaded = [ctx.upload(&starts)?, ctx.upload(&index)?, ctx.upload(&weight)?];
    for b in &uploaded {
        ctx.count_upload(b.bytes());
    }
    log::debug!("uploaded Resize tables of axis {axis} ({} taps) to {}", index.len(), ctx.device.name);
    let [starts, index, weight] = uploaded;
    Ok(Some(AxisTable { axis, out_len: taps.fill.len(), starts, index, weight }))
}

impl ResizeKernel {
    /// The output shape and tables for `x` and these inputs: the last ones when the key is the
    /// same, else computed (and kept). `None` when the reference should run.
    fn tables(&self, x: &Tensor, ts: &[Option<&Tensor>]) -> Result<Option<Plan>> {
        let values: Option<Vec<Option<Vec<f64>>>> =
            ts.iter().skip(1).map(|t| t.map(|t| t.to_f64_vec().ok()).map_or(Some(None), |v| v.map(Some))).collect();
        let Some(values) = values else { return Ok(None) };
        let key = (x.shape().to_vec(), values);
        let mut held = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, t)) = held.as_ref() {
            if *k == key {
                return Ok(Some(t.clone()));
            }
        }
        let r = self.op.downcast_ref::<Resize>().expect("claims checked it");
        let Ok((out_shape, axes)) = r.resampling(x.shape(), ts) else { return Ok(None) };
        let mut tables = vec![];
        for (axis, taps) in &axes {
            match table(&self.program.ctx, *axis, taps)? {
                Some(t) => tables.push(t),
                None => return Ok(None),
            }
        }
        let made = Arc::new((out_shape, tables));
        *held = Some((key, made.clone()));
        Ok(Some(made))
    }
}

impl Kernel for ResizeKernel {
    fn name(&self) -> &'static str {
        "opencl-resize"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let fallback = || reference(&self.op, &op_name(&self.op), ctx, inputs);
        let (Some(x), Some(ts)) = (f32_input(inputs, 0), tensors(inputs)) else { return fallback() };
        if x.is_empty() || x.len() > i32::MAX as usize {
            return fallback();
        }
        let Some(plan) = self.tables(x, &ts)? else { return fallback() };
        let (out_shape, tables) = (&plan.0, &plan.1);
        if tables.is_empty() || out_shape.iter().product::<usize>() > i32::MAX as usize {
            return fallback();
        }
        let dev = &self.program.ctx;
        let dx = resident::input(dev, x)?;
        let mut shape = x.shape().to_vec();
        let mut current: Option<ClTensor> = None;
        for t in tables.iter() {
            let (outer, len, inner) = (
                shape[..t.axis].iter().product::<usize>(),
                shape[t.axis],
                shape[t.axis + 1..].iter().product::<usize>(),
            );
            let y = ClTensor::alloc(dev, outer * t.out_len * inner)?;
            let src = current.as_ref().map_or(dx.buffer(), |c| c.buffer());
            let i = |v: usize| Arg::I32(v as i32);
            let args = [
                Arg::Buf(src),
                Arg::Buf(y.buffer()),
                Arg::Buf(&t.starts),
                Arg::Buf(&t.index),
                Arg::Buf(&t.weight),
                i(len),
                i(t.out_len),
                i(inner),
            ];
            self.program.resample.launch(&args, &[inner, t.out_len, outer], None)?;
            shape[t.axis] = t.out_len;
            current = Some(y);
        }
        let y = current.expect("at least one table");
        Ok(vec![y.into_data(out_shape.clone())?])
    }
}
