//! The OpenCL backend: the entry points loaded at run time (`loader`), devices, a context and
//! queue per device with buffers (`context`), programs built from `kernels/*.cl` with an on-disk
//! binary cache (`program`, `cache`), per-device kernel parameters (`tuning`), and one launcher
//! per kernel file (`gemm`, `elementwise`).

pub mod activation;
pub mod backend;
pub mod cache;
pub mod context;
pub mod device;
pub mod elementwise;
pub mod gemm;
pub mod loader;
pub mod program;
pub mod sys;
pub mod tuning;

pub use backend::OpenClBackend;
pub use context::{Buffer, Context};
pub use device::{devices, DeviceInfo};
