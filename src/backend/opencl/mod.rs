//! The OpenCL backend: the entry points loaded at run time (`loader`), devices, a context and
//! queue per device with buffers (`context`), programs built from `kernels/*.cl` with an on-disk
//! binary cache (`program`, `cache`), per-device kernel parameters (`tuning`), tensors that stay
//! on the device between nodes (`resident`), and one launcher per kernel file (`gemm`,
//! `elementwise`, `conv`, `pool`, `norm`, `movement`, `reduce`, `resize`, `rnn`; `activation` and
//! `storage.cl` are their prelude).

pub mod activation;
pub mod backend;
pub mod cache;
pub mod context;
pub mod conv;
pub mod conv_transpose;
pub mod device;
pub mod elementwise;
pub mod gemm;
pub mod loader;
pub mod movement;
pub mod norm;
pub mod pool;
pub mod program;
pub mod reduce;
pub mod resident;
pub mod resize;
pub mod rnn;
pub mod sys;
pub mod tune;
pub mod tuning;

pub use backend::{OpenClBackend, OpenClOptions};
pub use context::{Buffer, Context, Transfers};
pub use device::{devices, DeviceInfo};
