//! A host without OpenCL: the library loads libOpenCL at run time (once per process), so this
//! runs in a process of its own, pointed at a library that does not exist before anything asks.

use crx580::{Device, ErrorKind, Model, Session, SessionOptions};
use std::path::Path;

#[test]
fn without_opencl_auto_runs_on_the_cpu_and_opencl_is_a_clear_error() {
    std::env::set_var("CRX580_OPENCL_LIB", "libcrx580-no-such-opencl.so.1");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/golden/mlp/model.onnx");
    let model = Model::load(path).unwrap();
    let auto = SessionOptions { device: Device::Auto, threads: 1, ..SessionOptions::default() };
    let session = Session::new(model.clone(), &auto).expect("auto falls back to the CPU");
    assert!(session.kernels().iter().all(|(_, _, backend)| *backend == "cpu"), "{:?}", session.kernels());
    let opencl = SessionOptions { device: Device::OpenCl, threads: 1, ..SessionOptions::default() };
    let e = Session::new(model, &opencl).err().expect("no OpenCL library, so no OpenCL session");
    assert_eq!(e.kind, ErrorKind::Unsupported);
}
