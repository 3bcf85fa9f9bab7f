//! Sessions: a model compiled for a device (`crx_session_create`), run with named inputs
//! (`crx_session_run`, `crx_session_run_into`).

use super::boundary::{read_options, write_struct, CallError, CallResult};
use super::crx_status;
use super::handles::{lookup, register, release};
use super::model::{crx_model, utf8};
use super::tensor::{check_capacity, crx_tensor, TensorEntry};
use crate::{Device, Session, SessionOptions, Tensor};
use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

/// A model ready to run on one device. Made by `crx_session_create`, freed by `crx_session_free`.
/// Thread-safe: any number of threads may call `crx_session_run` on one session at once. Freeing it
/// while runs are in flight is allowed: they finish first.
pub struct crx_session {
    _opaque: [u8; 0],
}

/// Which device a session runs on.
pub type crx_device = i32;
/// An OpenCL GPU when one is present, else the CPU (a CPU OpenCL platform such as PoCL is not
/// preferred over the native CPU backend).
pub const CRX_DEVICE_AUTO: crx_device = 0;
pub const CRX_DEVICE_CPU: crx_device = 1;
/// The first OpenCL device (GPUs first); nodes it has no kernel for run on the CPU. Without an
/// OpenCL driver (or in a build without the OpenCL backend) sessions asking for it fail with
/// `CRX_ERR_UNSUPPORTED`.
pub const CRX_DEVICE_OPENCL: crx_device = 2;

/// How a session is made. Fill it with `crx_session_options_default`, then change fields.
/// Append-only: new fields are added at the end, and `struct_size` tells the library which ones the
/// caller knows about.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct crx_session_options {
    /// `sizeof(crx_session_options)` as the caller was compiled; set by
    /// `crx_session_options_default`.
    pub struct_size: usize,
    /// `CRX_DEVICE_AUTO` (the default), `CRX_DEVICE_CPU` or `CRX_DEVICE_OPENCL`.
    pub device: crx_device,
    /// Worker threads for the CPU; 0 (the default) means one per core.
    pub threads: u32,
    /// The largest tensor or scratch buffer, in bytes, that a run may allocate; a run that needs
    /// more fails with `CRX_ERR_RESOURCE_LIMIT`. 0 means the default (4 GiB).
    pub max_tensor_bytes: u64,
    /// How long one run may take, in milliseconds; a run past it stops with
    /// `CRX_ERR_RESOURCE_LIMIT`. 0 (the default) means no limit.
    pub max_run_time_ms: u64,
    /// Non-zero: an OpenCL device stores float32 tensors (weights and activations) as float16,
    /// halving their memory and bandwidth; kernels still compute in float32, so results differ
    /// from float32 storage by float16 rounding (about 1e-3 relative). The CPU backend ignores
    /// it: its tensors stay float32. Default 0.
    pub fp16_storage: i32,
    /// Directory where the OpenCL backend keeps its compiled programs (UTF-8, copied during the
    /// call; created when missing). NULL (the default): the `CRX580_CACHE_DIR` environment
    /// variable, else `$XDG_CACHE_HOME/crx580/opencl` or `~/.cache/crx580/opencl`. The CPU backend
    /// ignores it.
    pub cache_dir: *const c_char,
}

fn default_session_options() -> crx_session_options {
    crx_session_options {
        struct_size: std::mem::size_of::<crx_session_options>(),
        device: CRX_DEVICE_AUTO,
        threads: 0,
        max_tensor_bytes: 0,
        max_run_time_ms: 0,
        fp16_storage: 0,
        cache_dir: std::ptr::null(),
    }
}

/// The first (and so far only) version of the struct.
const SESSION_OPTIONS_V1_SIZE: usize = std::mem::size_of::<crx_session_options>();

/// Fills `*options` with the defaults. `struct_size` is `sizeof(crx_session_options)` as the
/// caller was compiled (it is stored in `options->struct_size`).
///
/// # Safety
/// `options` must be NULL or point to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn crx_session_options_default(
    options: *mut crx_session_options,
    struct_size: usize,
) -> crx_status {
    ffi_boundary!("crx_session_options_default", non_null: [options], {
        let defaults = crx_session_options { struct_size, ..default_session_options() };
        write_struct(options, &defaults, struct_size, SESSION_OPTIONS_V1_SIZE)
    })
}

pub(crate) unsafe fn session_options(options: *const crx_session_options) -> CallResult<SessionOptions> {
    let o = if options.is_null() {
        default_session_options()
    } else {
        read_options(options, default_session_options(), SESSION_OPTIONS_V1_SIZE)?
    };
    let device = match o.device {
        CRX_DEVICE_AUTO => Device::Auto,
        CRX_DEVICE_CPU => Device::Cpu,
        CRX_DEVICE_OPENCL => Device::OpenCl,
        d => return Err(CallError::invalid_argument(format!("options->device is {d}, not a CRX_DEVICE_* code"))),
    };
    let mut session = SessionOptions { device, threads: o.threads as usize, ..SessionOptions::default() };
    session.device_options.fp16_storage = o.fp16_storage != 0;
    if !o.cache_dir.is_null() {
        session.device_options.cache_dir = Some(utf8(o.cache_dir, "options->cache_dir")?.into());
    }
    if o.max_tensor_bytes != 0 {
        session.max_tensor_bytes = usize::try_from(o.max_tensor_bytes).unwrap_or(usize::MAX);
    }
    if o.max_run_time_ms != 0 {
        session.max_run_time = Some(Duration::from_millis(o.max_run_time_ms));
    }
    Ok(session)
}

pub(crate) struct SessionEntry {
    session: Session,
}

/// Compiles `model` for the device in `options` (NULL for the defaults). The model is not
/// consumed: free it when no more sessions are to be made from it. On success `*session` is a new
/// handle the caller frees with `crx_session_free`; on error it is untouched.
///
/// # Safety
/// `options` must be NULL or filled by `crx_session_options_default`; `session` must point to
/// writable memory.
#[no_mangle]
pub unsafe extern "C" fn crx_session_create(
    model: *const crx_model,
    options: *const crx_session_options,
    session: *mut *mut crx_session,
) -> crx_status {
    ffi_boundary!("crx_session_create", non_null: [session], {
        let model = lookup(model, "model")?;
        let made = Session::new(model.model.clone(), &session_options(options)?)?;
        *session = register(SessionEntry { session: made });
        Ok(())
    })
}

/// Frees a session. NULL is a no-op; so is a handle already freed. Runs in flight on other threads
/// finish first.
///
/// # Safety
/// `session` must be NULL or a handle from this library.
#[no_mangle]
pub unsafe extern "C" fn crx_session_free(session: *mut crx_session) {
    ffi_boundary!("crx_session_free", non_null: [], { release(session, "session") });
}

/// A C array argument of `count` items as a slice; NULL is allowed only when `count` is 0.
unsafe fn c_array<'a, T>(items: *const T, count: usize, argument: &str) -> CallResult<&'a [T]> {
    match (items.is_null(), count) {
        (_, 0) => Ok(&[]),
        (true, _) => Err(CallError::null(argument)),
        (false, n) => Ok(std::slice::from_raw_parts(items, n)),
    }
}

/// Runs the session with named inputs; returns the outputs in the model's output order.
unsafe fn run(
    session: *const crx_session,
    input_names: *const *const c_char,
    inputs: *const *const crx_tensor,
    input_count: usize,
    output_count: usize,
) -> CallResult<Vec<Tensor>> {
    let session = lookup(session, "session")?;
    let names = c_array(input_names, input_count, "input_names")?;
    let handles = c_array(inputs, input_count, "inputs")?;
    let expected = session.session.model().outputs().len();
    if output_count != expected {
        return Err(CallError::invalid_argument(format!(
            "output_count is {output_count}, the model has {expected} outputs"
        )));
    }
    let mut entries: Vec<Arc<TensorEntry>> = Vec::with_capacity(input_count);
    let mut input_strs: Vec<&str> = Vec::with_capacity(input_count);
    for (k, (&name, &handle)) in names.iter().zip(handles).enumerate() {
        if name.is_null() {
            return Err(CallError::null(&format!("input_names[{k}]")));
        }
        input_strs.push(utf8(name, &format!("input_names[{k}]"))?);
        entries.push(lookup(handle, &format!("inputs[{k}]"))?);
    }
    let tensors = entries.iter().map(|e| e.tensor()).collect::<CallResult<Vec<_>>>()?;
    let named: Vec<(&str, &Tensor)> = input_strs.iter().zip(&tensors).map(|(&n, t)| (n, t.as_ref())).collect();
    Ok(session.session.run(&named)?)
}

/// Runs the session. `input_names[k]` (UTF-8) names the model input that `inputs[k]` feeds; every
/// model input is given once, in any order. `output_count` must equal `crx_model_output_count`:
/// `outputs[k]` receives model output k as a new tensor the caller frees with `crx_tensor_free`.
/// On error nothing is written to `outputs`.
///
/// Thread-safe: many threads may run one session at once, with the same or different input
/// tensors.
///
/// # Safety
/// `input_names` and `inputs` must point to `input_count` items, `outputs` to `output_count`
/// writable items.
#[no_mangle]
pub unsafe extern "C" fn crx_session_run(
    session: *const crx_session,
    input_names: *const *const c_char,
    inputs: *const *const crx_tensor,
    input_count: usize,
    outputs: *mut *mut crx_tensor,
    output_count: usize,
) -> crx_status {
    ffi_boundary!("crx_session_run", non_null: [outputs], {
        let results = run(session, input_names, inputs, input_count, output_count)?;
        let handles: Vec<*mut crx_tensor> = results.into_iter().map(|t| register(TensorEntry::owned(t))).collect();
        std::ptr::copy_nonoverlapping(handles.as_ptr(), outputs, handles.len());
        Ok(())
    })
}

/// Runs the session as `crx_session_run` does, writing model output k's elements (memory form)
/// into `output_buffers[k]`, of `output_capacities[k]` bytes; a NULL buffer skips that output. If
/// any buffer is too small the call fails with `CRX_ERR_BUFFER_TOO_SMALL` (the message names the
/// output and the size it needs) and no buffer is written. `output_sizes`, when not NULL, receives
/// the byte size of each output (also of skipped ones).
///
/// # Safety
/// Input arguments as for `crx_session_run`; `output_buffers` and `output_capacities` must point to
/// `output_count` items, each buffer to its capacity in writable bytes; `output_sizes` NULL or
/// `output_count` writable items.
#[no_mangle]
pub unsafe extern "C" fn crx_session_run_into(
    session: *const crx_session,
    input_names: *const *const c_char,
    inputs: *const *const crx_tensor,
    input_count: usize,
    output_buffers: *const *mut c_void,
    output_capacities: *const usize,
    output_count: usize,
    output_sizes: *mut usize,
) -> crx_status {
    ffi_boundary!("crx_session_run_into", non_null: [output_buffers, output_capacities], {
        let results = run(session, input_names, inputs, input_count, output_count)?;
        let output_names = lookup(session, "session")?.session.model().outputs();
        let entries: Vec<TensorEntry> = results.into_iter().map(TensorEntry::owned).collect();
        let buffers = std::slice::from_raw_parts(output_buffers, output_count);
        let capacities = std::slice::from_raw_parts(output_capacities, output_count);
        let mut sizes = Vec::with_capacity(output_count);
        for (k, entry) in entries.iter().enumerate() {
            let bytes = entry.bytes()?;
            if !buffers[k].is_null() {
                check_capacity(bytes.len(), capacities[k], &format!("output '{}'", output_names[k].name))?;
            }
            sizes.push(bytes.len());
        }
        for (k, entry) in entries.iter().enumerate() {
            if !buffers[k].is_null() {
                let bytes = entry.bytes()?;
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffers[k].cast::<u8>(), bytes.len());
            }
        }
        if !output_sizes.is_null() {
            std::ptr::copy_nonoverlapping(sizes.as_ptr(), output_sizes, sizes.len());
        }
        Ok(())
    })
}
