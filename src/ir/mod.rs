//! The graph IR: dtypes, shapes and facts, tensor storage, run-time values (tensors, sequences,
//! optionals), attributes, the graph itself, and shape inference over it. Nothing here knows about
//! protobuf.

pub mod attr;
pub mod bytes;
pub mod data;
pub mod dtype;
pub mod graph;
pub mod infer;
pub mod limits;
pub mod narrow;
pub mod shape;
pub mod tensor;

pub use attr::{Attr, Attributes};
pub use data::{Data, DataRef, Sequence, ValueKind};
pub use dtype::DType;
pub use graph::{Graph, Node, Value, ValueId};
pub use shape::{Dim, Fact};
pub use tensor::{Elem, Scalar, Tensor, TensorData};
