//! ONNX decoding, our own: the protobuf wire reader (`wire`), the ONNX messages we need (`model`),
//! TensorProto to tensor conversion (`tensor`), and the import of a model into the graph IR
//! (`import`). Nothing outside this module sees protobuf structs.

pub mod import;
pub mod model;
pub mod tensor;
pub mod wire;
pub mod write;

pub use import::{import_model, ImportedModel};
