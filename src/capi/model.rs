//! Loading a model (`crx_model_load`, `crx_model_load_from_memory`) and describing its inputs and
//! outputs (`crx_model_input_info` and friends).

use super::boundary::{c_string, read_options, write_struct, CallError, CallResult};
use super::crx_status;
use super::handles::{lookup, register, release};
use super::tensor::crx_dtype;
use crate::{Dim, IoInfo, LoadOptions, Model, ValueKind};
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::PathBuf;

/// A loaded model: its graph after shape inference and optimisation. Made by `crx_model_load` or
/// `crx_model_load_from_memory`, freed by `crx_model_free`. Immutable: it may be used from many
/// threads at once, and freeing it does not affect sessions made from it.
pub struct crx_model {
    _opaque: [u8; 0],
}

/// How a model is loaded. Fill it with `crx_load_options_default`, then change fields.
/// Append-only: new fields are added at the end, and `struct_size` tells the library which ones the
/// caller knows about.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct crx_load_options {
    /// `sizeof(crx_load_options)` as the caller was compiled; set by `crx_load_options_default`.
    pub struct_size: usize,
    /// The only directory external data files may be read from (UTF-8, NUL-terminated, copied
    /// during the call). NULL: the model file's directory for `crx_model_load`; no external data
    /// at all for `crx_model_load_from_memory`.
    pub external_data_dir: *const c_char,
    /// The largest tensor, in bytes, that loading may decode or compute while folding constants;
    /// 0 means the default (4 GiB).
    pub max_tensor_bytes: u64,
}

/// What kind of value a model input or output is.
pub type crx_value_kind = i32;
pub const CRX_VALUE_TENSOR: crx_value_kind = 1;
/// An ONNX sequence of tensors (`dtype` and `dims` then describe its tensors). Sequences cannot be
/// passed through the C ABI yet: running such a model fails with `CRX_ERR_INVALID_INPUT`.
pub const CRX_VALUE_SEQUENCE: crx_value_kind = 2;
/// An ONNX optional (`dtype` and `dims` describe the value it may hold); not runnable through the
/// C ABI yet.
pub const CRX_VALUE_OPTIONAL: crx_value_kind = 3;

/// The description of one model input or output, filled by `crx_model_input_info` or
/// `crx_model_output_info`. Every pointer in it is owned by the model and valid until
/// `crx_model_free`. Append-only.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct crx_value_info {
    /// The value's name, UTF-8.
    pub name: *const c_char,
    /// `CRX_VALUE_TENSOR`, `CRX_VALUE_SEQUENCE` or `CRX_VALUE_OPTIONAL`.
    pub kind: crx_value_kind,
    /// Element type (`CRX_DTYPE_*`), or `CRX_DTYPE_UNDEFINED` when the model does not say.
    pub dtype: crx_dtype,
    /// Number of dims, or -1 when the rank is unknown (then `dims` and `dim_names` are NULL).
    pub rank: i64,
    /// `rank` sizes; -1 for a dim whose size is not fixed (symbolic or unknown).
    pub dims: *const i64,
    /// `rank` names: the symbol of a symbolic dim (such as `"batch"`), NULL for the others.
    pub dim_names: *const *const c_char,
}

/// A description with the C strings and arrays it points into, kept alive by the model entry.
struct ValueInfo {
    name: CString,
    kind: crx_value_kind,
    dtype: crx_dtype,
    dims: Option<Vec<i64>>,
    /// Never read: kept alive because `dim_names` points into it.
    #[allow(dead_code)]
    dim_name_strings: Vec<Option<CString>>,
    dim_names: Vec<*const c_char>,
}

// `dim_names` points into `dim_name_strings` of the same entry, which is never changed after it is
// made: sharing it between threads shares only immutable data.
unsafe impl Send for ValueInfo {}
unsafe impl Sync for ValueInfo {}

impl ValueInfo {
    fn new(info: &IoInfo) -> ValueInfo {
        let kind = match info.kind {
            ValueKind::Tensor => CRX_VALUE_TENSOR,
            ValueKind::Sequence => CRX_VALUE_SEQUENCE,
            ValueKind::Optional(_) => CRX_VALUE_OPTIONAL,
        };
        let dims = info.shape.as_ref().map(|s| s.iter().map(|d| d.known().map_or(-1, |n| n as i64)).collect());
        let dim_name_strings: Vec<Option<CString>> = info.shape.iter().flatten().map(symbol_name).collect();
        let dim_names = dim_name_strings.iter().map(|s| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())).collect();
        ValueInfo {
            name: c_string(info.name.clone()),
            kind,
            dtype: info.dtype.map_or(super::tensor::CRX_DTYPE_UNDEFINED, |d| d.onnx_code()),
            dims,
            dim_name_strings,
            dim_names,
        }
    }

    fn to_c(&self) -> crx_value_info {
        let (rank, dims, dim_names) = match &self.dims {
            Some(d) => (d.len() as i64, d.as_ptr(), self.dim_names.as_ptr()),
            None => (-1, std::ptr::null(), std::ptr::null()),
        };
        crx_value_info { name: self.name.as_ptr(), kind: self.kind, dtype: self.dtype, rank, dims, dim_names }
    }
}

fn symbol_name(d: &Dim) -> Option<CString> {
    match d {
        Dim::Symbol(s) => Some(c_string(s.clone())),
        _ => None,
    }
}

pub(crate) struct ModelEntry {
    pub model: Model,
    inputs: Vec<ValueInfo>,
    outputs: Vec<ValueInfo>,
}

impl ModelEntry {
    fn new(model: Model) -> ModelEntry {
        let inputs = model.inputs().iter().map(ValueInfo::new).collect();
        let outputs = model.outputs().iter().map(ValueInfo::new).collect();
        ModelEntry { model, inputs, outputs }
    }
}

fn default_load_options() -> crx_load_options {
    crx_load_options {
        struct_size: std::mem::size_of::<crx_load_options>(),
        external_data_dir: std::ptr::null(),
        max_tensor_bytes: 0,
    }
}

/// The first (and so far only) version of the struct.
const LOAD_OPTIONS_V1_SIZE: usize = std::mem::size_of::<crx_load_options>();

/// Fills `*options` with the defaults. `struct_size` is `sizeof(crx_load_options)` as the caller
/// was compiled (it is stored in `options->struct_size`).
///
/// # Safety
/// `options` must be NULL or point to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn crx_load_options_default(options: *mut crx_load_options, struct_size: usize) -> crx_status {
    ffi_boundary!("crx_load_options_default", non_null: [options], {
        let defaults = crx_load_options { struct_size, ..default_load_options() };
        write_struct(options, &defaults, struct_size, LOAD_OPTIONS_V1_SIZE)
    })
}

/// A UTF-8 C string argument as `&str`.
///
/// # Safety
/// `s` must be non-NULL and NUL-terminated.
pub unsafe fn utf8<'a>(s: *const c_char, argument: &str) -> CallResult<&'a str> {
    CStr::from_ptr(s).to_str().map_err(|_| CallError::invalid_argument(format!("argument '{argument}' is not UTF-8")))
}

unsafe fn load_options(options: *const crx_load_options) -> CallResult<LoadOptions> {
    let o = if options.is_null() {
        default_load_options()
    } else {
        read_options(options, default_load_options(), LOAD_OPTIONS_V1_SIZE)?
    };
    let mut load = LoadOptions::default();
    if !o.external_data_dir.is_null() {
        load.external_data_dir = Some(PathBuf::from(utf8(o.external_data_dir, "options->external_data_dir")?));
    }
    if o.max_tensor_bytes != 0 {
        load.max_tensor_bytes = usize::try_from(o.max_tensor_bytes).unwrap_or(usize::MAX);
    }
    Ok(load)
}

/// Loads a `.onnx` file (path in UTF-8). `options` may be NULL for the defaults. On success
/// `*model` is a new handle the caller frees with `crx_model_free`; on error it is untouched.
/// The file is mapped while it is decoded: it must not be truncated or rewritten during the call
/// (for a file that may change, read it and use `crx_model_load_from_memory`).
///
/// # Safety
/// `path` must be a NUL-terminated string; `options` NULL or filled by `crx_load_options_default`;
/// `model` must point to writable memory.
#[no_mangle]
pub unsafe extern "C" fn crx_model_load(
    path: *const c_char,
    options: *const crx_load_options,
    model: *mut *mut crx_model,
) -> crx_status {
    ffi_boundary!("crx_model_load", non_null: [path, model], {
        let path = utf8(path, "path")?;
        let loaded = Model::load_with(path, &load_options(options)?)?;
        *model = register(ModelEntry::new(loaded));
        Ok(())
    })
}

/// Loads a model from `size` bytes at `data` (copied during the call: the caller may free them
/// when it returns). `options` may be NULL. On success `*model` is a new handle the caller frees
/// with `crx_model_free`; on error it is untouched.
///
/// # Safety
/// `data` must point to `size` readable bytes; `model` to writable memory.
#[no_mangle]
pub unsafe extern "C" fn crx_model_load_from_memory(
    data: *const c_void,
    size: usize,
    options: *const crx_load_options,
    model: *mut *mut crx_model,
) -> crx_status {
    ffi_boundary!("crx_model_load_from_memory", non_null: [data, model], {
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), size);
        let loaded = Model::from_bytes_with(bytes, &load_options(options)?)?;
        *model = register(ModelEntry::new(loaded));
        Ok(())
    })
}

/// Frees a model. NULL is a no-op; so is a handle already freed (`crx_last_error_message` then
/// says so). Sessions made from the model stay valid.
///
/// # Safety
/// `model` must be NULL or a handle from this library.
#[no_mangle]
pub unsafe extern "C" fn crx_model_free(model: *mut crx_model) {
    ffi_boundary!("crx_model_free", non_null: [], { release(model, "model") });
}

/// Writes the number of model inputs (graph inputs that are not initializers) to `*count`.
///
/// # Safety
/// `count` must be NULL or point to writable memory.
#[no_mangle]
pub unsafe extern "C" fn crx_model_input_count(model: *const crx_model, count: *mut usize) -> crx_status {
    ffi_boundary!("crx_model_input_count", non_null: [count], {
        *count = lookup(model, "model")?.inputs.len();
        Ok(())
    })
}

/// Writes the number of model outputs to `*count`.
///
/// # Safety
/// `count` must be NULL or point to writable memory.
#[no_mangle]
pub unsafe extern "C" fn crx_model_output_count(model: *const crx_model, count: *mut usize) -> crx_status {
    ffi_boundary!("crx_model_output_count", non_null: [count], {
        *count = lookup(model, "model")?.outputs.len();
        Ok(())
    })
}

unsafe fn value_info(
    model: *const crx_model,
    index: usize,
    info: *mut crx_value_info,
    struct_size: usize,
    outputs: bool,
) -> CallResult {
    let entry = lookup(model, "model")?;
    let (values, what) = if outputs { (&entry.outputs, "output") } else { (&entry.inputs, "input") };
    let Some(v) = values.get(index) else {
        return Err(CallError::invalid_argument(format!(
            "{what} index {index} is out of range (count {})",
            values.len()
        )));
    };
    write_struct(info, &v.to_c(), struct_size, std::mem::size_of::<crx_value_info>())
}

/// Describes input `index` (0 <= index < `crx_model_input_count`, in the model's order) into
/// `*info`; `struct_size` is `sizeof(crx_value_info)`. The strings and arrays it points to are
/// owned by the model and valid until `crx_model_free`.
///
/// # Safety
/// `info` must be NULL or point to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn crx_model_input_info(
    model: *const crx_model,
    index: usize,
    info: *mut crx_value_info,
    struct_size: usize,
) -> crx_status {
    ffi_boundary!("crx_model_input_info", non_null: [info], { value_info(model, index, info, struct_size, false) })
}

/// Describes output `index` (in the model's order, the order `crx_session_run` writes outputs in)
/// into `*info`, as `crx_model_input_info` does for inputs.
///
/// # Safety
/// `info` must be NULL or point to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn crx_model_output_info(
    model: *const crx_model,
    index: usize,
    info: *mut crx_value_info,
    struct_size: usize,
) -> crx_status {
    ffi_boundary!("crx_model_output_info", non_null: [info], { value_info(model, index, info, struct_size, true) })
}
