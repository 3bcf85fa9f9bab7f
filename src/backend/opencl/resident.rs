//! Tensors that stay on the device between device nodes. A device kernel's output is a
//! [`ClTensor`] inside the tensor's storage ([`Tensor::on_device`]): the next device node reads
//! the buffer as it is, and the host gets the elements only when something there reads them (a
//! CPU node, the caller), once. A host tensor a device node reads is uploaded once and the copy
//! attached to its storage, so weights (constants, attached at prepare) and inputs read by several
//! device nodes cross the bus once. Every tensor transfer is counted on the context
//! ([`Context::transfers`]) and logged at debug level.
//!
//! With float16 storage (`Context::half_storage`) the buffers hold halves: uploads round the
//! f32 elements, downloads widen them back; the tensor's dtype stays f32.

use super::{Buffer, Context};
use crate::ir::storage::DeviceBuffer;
use crate::ir::tensor::TensorData;
use crate::ir::{DType, Data, Tensor};
use crate::Result;
use half::f16;
use std::any::Any;
use std::sync::Arc;

/// `len` f32 elements in a device buffer of one context (as f32 or as f16, per the context).
pub struct ClTensor {
    buffer: Buffer,
    len: usize,
    label: String,
}

impl std::fmt::Debug for ClTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({} elements)", self.label, self.len)
    }
}

impl ClTensor {
    /// Room for `len` elements in the context's storage format, contents undefined.
    pub fn alloc(ctx: &Arc<Context>, len: usize) -> Result<ClTensor> {
        let buffer = if ctx.half_storage { ctx.alloc::<u16>(len)? } else { ctx.alloc::<f32>(len)? };
        Ok(ClTensor::wrap(buffer, len))
    }

    fn wrap(buffer: Buffer, len: usize) -> ClTensor {
        let label = format!("opencl:{}", buffer.context().device.name);
        ClTensor { buffer, len, label }
    }

    /// A copy of `data` on the device (counted as an upload).
    pub fn upload(ctx: &Arc<Context>, data: &[f32]) -> Result<ClTensor> {
        let buffer = if ctx.half_storage {
            let halves: Vec<u16> = data.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
            ctx.upload(&halves)?
        } else {
            ctx.upload(data)?
        };
        ctx.count_upload(buffer.bytes());
        log::debug!("uploaded {} f32 elements to {}", data.len(), ctx.device.name);
        Ok(ClTensor::wrap(buffer, data.len()))
    }

    pub fn buffer(&self) -> &Buffer {
        &self.buffer
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements on the host (counted as a download).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let ctx = self.buffer.context();
        let v = if ctx.half_storage {
            self.buffer.to_vec::<u16>(self.len)?.into_iter().map(|h| f16::from_bits(h).to_f32()).collect()
        } else {
            self.buffer.to_vec::<f32>(self.len)?
        };
        ctx.count_download(self.len * ctx.element_bytes());
        Ok(v)
    }

    /// This tensor as the output of a device node: an f32 tensor of `shape` that lives here.
    pub fn into_data(self, shape: Vec<usize>) -> Result<Data> {
        Ok(Data::Tensor(Tensor::on_device(DType::F32, shape, Arc::new(self))?))
    }
}

impl DeviceBuffer for ClTensor {
    fn device(&self) -> &str {
        &self.label
    }

    fn download(&self) -> Result<TensorData> {
        Ok(TensorData::F32(self.to_vec()?))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A device tensor a kernel reads: one the storage holds, or one made for this read.
pub enum Input {
    Held(Arc<dyn DeviceBuffer>),
    Own(ClTensor),
}

impl Input {
    pub fn tensor(&self) -> &ClTensor {
        match self {
            Input::Held(b) => b.as_any().downcast_ref::<ClTensor>().expect("checked when made"),
            Input::Own(t) => t,
        }
    }

    pub fn buffer(&self) -> &Buffer {
        self.tensor().buffer()
    }
}

/// `t` (an f32 tensor) on `ctx`'s device: the buffer its storage already has there when it has
/// one, else an upload, which is attached to the storage when `t` views all of it and is not lent
/// memory (so later nodes and runs reuse it). A view of a device tensor is copied on the device.
pub fn input(ctx: &Arc<Context>, t: &Tensor) -> Result<Input> {
    let storage = t.storage();
    let whole = t.offset() == 0 && t.len() == storage.len();
    if let Some(held) = storage.device_buffer().filter(|b| is_ours(ctx, b)) {
        if whole {
            return Ok(Input::Held(held.clone()));
        }
        let src = held.as_any().downcast_ref::<ClTensor>().expect("is_ours checked it");
        let eb = ctx.element_bytes();
        let part = src.buffer.copy_range(t.offset() * eb, t.len() * eb)?;
        return Ok(Input::Own(ClTensor::wrap(part, t.len())));
    }
    if storage.device_buffer().is_some() && !storage.is_on_host() {
        log::debug!("a tensor on another device is read through the host");
    }
    let up = ClTensor::upload(ctx, t.as_slice::<f32>()?)?;
    // Lent memory may change between runs (the C ABI's borrowed tensors): never keep its copy.
    if whole && !storage.is_borrowed() && storage.device_buffer().is_none() {
        let kept = storage.attach_device(Arc::new(up));
        if is_ours(ctx, kept) {
            return Ok(Input::Held(kept.clone()));
        }
        return input(ctx, t);
    }
    Ok(Input::Own(up))
}

/// Whether `b` is a buffer of `ctx` (not of another session's context or another backend).
fn is_ours(ctx: &Arc<Context>, b: &Arc<dyn DeviceBuffer>) -> bool {
    b.as_any().downcast_ref::<ClTensor>().is_some_and(|c| Arc::ptr_eq(c.buffer.context(), ctx))
}
