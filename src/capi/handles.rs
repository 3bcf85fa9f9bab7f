//! The registry of live handles. A C handle (`crx_model *` and the like) is the address of the
//! object's reference-counted allocation, but it is never dereferenced: each call looks it up here
//! and takes a counted reference to the object, so that
//! - a freed, forged or wrong-type handle is an error (`CRX_ERR_INVALID_HANDLE`), not a crash, and
//!   freeing one twice is a no-op, as long as the allocator has not handed its address to a new
//!   object since (that much use-after-free cannot be told from a valid call);
//! - freeing a handle while another thread is using it (e.g. running a session) does not pull the
//!   object out from under that call: it lives, and keeps its address, until the call ends.
//!
//! Handles are real heap addresses rather than small counters because hosts may keep them in
//! pointer-typed variables that their runtime inspects (Go's stack copier rejects pointer values
//! below 4096, its collector ones that fall inside its heap).

use super::boundary::{CallError, CallResult, CRX_ERR_INVALID_HANDLE};
use super::model::{crx_model, ModelEntry};
use super::server::{crx_server, ServerEntry};
use super::session::{crx_session, SessionEntry};
use super::tensor::{crx_tensor, TensorEntry};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

pub(crate) enum Object {
    Model(Arc<ModelEntry>),
    Session(Arc<SessionEntry>),
    Tensor(Arc<TensorEntry>),
    Server(Arc<ServerEntry>),
}

impl Object {
    fn type_name(&self) -> &'static str {
        match self {
            Object::Model(_) => "crx_model",
            Object::Session(_) => "crx_session",
            Object::Tensor(_) => "crx_tensor",
            Object::Server(_) => "crx_server",
        }
    }
}

/// A C handle type and the entry it stands for.
pub(crate) trait Handle {
    type Entry;
    const TYPE_NAME: &'static str;
    fn wrap(entry: Arc<Self::Entry>) -> Object;
    fn entry(object: &Object) -> Option<&Arc<Self::Entry>>;
}

macro_rules! handle {
    ($handle:ty, $entry:ty, $variant:ident, $name:literal) => {
        impl Handle for $handle {
            type Entry = $entry;
            const TYPE_NAME: &'static str = $name;
            fn wrap(entry: Arc<$entry>) -> Object {
                Object::$variant(entry)
            }
            fn entry(object: &Object) -> Option<&Arc<$entry>> {
                match object {
                    Object::$variant(e) => Some(e),
                    _ => None,
                }
            }
        }
    };
}

handle!(crx_model, ModelEntry, Model, "crx_model");
handle!(crx_session, SessionEntry, Session, "crx_session");
handle!(crx_tensor, TensorEntry, Tensor, "crx_tensor");
handle!(crx_server, ServerEntry, Server, "crx_server");

static LIVE: LazyLock<RwLock<HashMap<usize, Object>>> = LazyLock::new(|| RwLock::new(HashMap::new()));

fn live() -> std::sync::RwLockReadGuard<'static, HashMap<usize, Object>> {
    // A panic never happens while the lock is held (only map operations run under it), but a
    // poisoned lock still holds a consistent map.
    LIVE.read().unwrap_or_else(|p| p.into_inner())
}

fn live_mut() -> std::sync::RwLockWriteGuard<'static, HashMap<usize, Object>> {
    LIVE.write().unwrap_or_else(|p| p.into_inner())
}

/// Registers an entry and returns its new handle.
pub(crate) fn register<H: Handle>(entry: H::Entry) -> *mut H {
    let entry = Arc::new(entry);
    let handle = Arc::as_ptr(&entry).cast_mut().cast::<H>();
    live_mut().insert(handle.addr(), H::wrap(entry));
    handle
}

/// The entry behind a handle; `argument` names the parameter in the error message.
pub(crate) fn lookup<H: Handle>(handle: *const H, argument: &str) -> CallResult<Arc<H::Entry>> {
    if handle.is_null() {
        return Err(CallError::null(argument));
    }
    let map = live();
    match map.get(&handle.addr()) {
        Some(object) => H::entry(object).cloned().ok_or_else(|| {
            CallError::new(
                CRX_ERR_INVALID_HANDLE,
                format!("argument '{argument}' is a {}, not a {}", object.type_name(), H::TYPE_NAME),
            )
        }),
        None => Err(CallError::new(
            CRX_ERR_INVALID_HANDLE,
            format!("argument '{argument}' is not a live {} (already freed, or not made by crx580)", H::TYPE_NAME),
        )),
    }
}

/// Unregisters a handle. NULL, an already freed handle and one of another type are left alone
/// (the latter two with an error message for `crx_last_error_message`); the object itself is
/// dropped when the last call using it ends.
pub(crate) fn release<H: Handle>(handle: *mut H, argument: &str) -> CallResult {
    if handle.is_null() {
        return Ok(());
    }
    lookup(handle, argument)?;
    let removed = live_mut().remove(&handle.addr());
    // Dropped here, outside the lock: dropping a session may take a while.
    drop(removed);
    Ok(())
}

/// How many handles are live: the C tests check that everything they made was freed.
pub(crate) fn live_count() -> usize {
    live().len()
}
