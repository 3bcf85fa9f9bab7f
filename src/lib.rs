//! crx580: a lean ONNX inference runtime.
//!
//! ```no_run
//! use crx580::{Model, Session, SessionOptions, Tensor};
//! let model = Model::load("model.onnx")?;
//! let session = Session::new(model, &SessionOptions::default())?;
//! let x = Tensor::new(vec![1, 3], vec![1.0f32, 2.0, 3.0])?;
//! let outputs = session.run(&[("x", &x)])?;
//! # Ok::<(), crx580::Error>(())
//! ```
//!
//! Data flows top to bottom through the modules: `onnx` decodes a file into the `ir` graph, `ops`
//! give each node its semantics, `passes` simplify the graph, and a `backend` runs it.

pub mod backend;
pub mod capi;
pub mod convert;
pub mod error;
#[cfg(feature = "http")]
pub mod http;
pub mod io;
pub mod ir;
pub mod onnx;
pub mod ops;
pub mod passes;
mod session;

pub use backend::Device;
pub use error::{Error, ErrorKind, Result};
pub use ir::{DType, Data, Dim, Sequence, Tensor, ValueKind};
pub use session::{IoInfo, LoadOptions, Model, Session, SessionOptions};

/// The library version, `MAJOR.MINOR.PATCH`.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
