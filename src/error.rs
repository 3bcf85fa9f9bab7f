//! One error type for the whole crate. Every error has a kind (what class of failure, stable for the
//! later C ABI's status codes) and a message that says what went wrong and where.

use std::fmt;

/// The class of an error. Stable: the C ABI maps these to status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The model bytes are not a well-formed ONNX model (truncated, bad wire data, inconsistent sizes).
    InvalidModel,
    /// The model is well-formed but uses an operator, dtype or opset this build cannot run.
    Unsupported,
    /// The caller passed inputs that do not fit the model (missing name, wrong dtype or shape).
    InvalidInput,
    /// Shapes or types inside the graph do not agree (found during inference or at run time).
    Shape,
    /// A kernel failed while running (e.g. an index out of range in the data).
    Runtime,
    /// A file could not be read or written.
    Io,
    /// A size limit protects the process from an allocation the input cannot justify.
    ResourceLimit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into() }
    }

    /// Prefixes the message with where it happened, e.g. `node 'conv1' (Conv): ...`.
    pub fn context(mut self, place: impl fmt::Display) -> Error {
        self.message = format!("{place}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::new(ErrorKind::Io, e.to_string())
    }
}

/// Adds a place to the error of a `Result`, lazily.
pub trait ResultExt<T> {
    fn context<D: fmt::Display>(self, place: impl FnOnce() -> D) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context<D: fmt::Display>(self, place: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.context(place()))
    }
}

/// Runs `f`, turning a panic inside it into a `Runtime` error: a kernel bug, at load (constant
/// folding runs kernels) or at run time, must come back as an error and never take the host
/// process down.
pub fn catch_panics<T>(doing: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(Error::new(ErrorKind::Runtime, format!("internal error (panic) while {doing}: {msg}")))
    })
}

/// `bail!(Kind, "fmt", args)` returns an error of that kind from the current function.
#[macro_export]
macro_rules! bail {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::Error::new($crate::ErrorKind::$kind, format!($($arg)*)))
    };
}

/// `err!(Kind, "fmt", args)` builds an error of that kind.
#[macro_export]
macro_rules! err {
    ($kind:ident, $($arg:tt)*) => {
        $crate::Error::new($crate::ErrorKind::$kind, format!($($arg)*))
    };
}
