//! Backends. A backend answers two questions (ggml's `supports_op`): can you run this node, and run
//! this compiled plan. The CPU backend runs everything; a later OpenCL backend takes the nodes it
//! supports and leaves the rest to the CPU.

use crate::ir::{Data, DataRef, Graph, Node};
use crate::Result;
use std::sync::Arc;

pub mod cpu;

/// Where a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    OpenCl,
    /// The best device this build can use (the CPU for now).
    Auto,
}

impl std::str::FromStr for Device {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Device> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "opencl" | "gpu" => Ok(Device::OpenCl),
            "auto" => Ok(Device::Auto),
            _ => crate::bail!(InvalidInput, "unknown device '{s}' (expected cpu, opencl or auto)"),
        }
    }
}

pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    /// Whether this backend can run `node` itself.
    fn supports(&self, node: &Node) -> bool;
    /// Prepares `graph` to run; the plan may be shared by many threads.
    fn compile(&self, graph: Arc<Graph>) -> Result<Box<dyn Plan>>;
}

/// A graph prepared to run on one backend.
pub trait Plan: Send + Sync {
    /// Runs with one value per graph input (graph input order); returns the graph outputs in order.
    fn run(&self, inputs: &[DataRef]) -> Result<Vec<Data>>;
}

/// The backend for a device in this build, or an error that says why there is none.
pub fn backend_for(device: Device, threads: usize) -> Result<Box<dyn Backend>> {
    match device {
        Device::Cpu | Device::Auto => Ok(Box::new(cpu::CpuBackend::new(threads))),
        Device::OpenCl => crate::bail!(Unsupported, "this build has no OpenCL backend yet; use --device cpu"),
    }
}

/// Human-readable names of the devices this build can run on (`crx580 devices`).
pub fn list_devices() -> Vec<String> {
    vec![cpu::describe_cpu()]
}
