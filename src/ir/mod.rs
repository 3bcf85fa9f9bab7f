//! The graph IR: dtypes, shapes and facts, tensor storage, run-time values (tensors, sequences,
//! optionals), attributes, the op-definition trait, the graph itself, shape inference over it and
//! the reference interpreter. Nothing here knows about protobuf or about the op families in `ops`.

pub mod attr;
pub mod bytes;
pub mod data;
pub mod dtype;
pub mod graph;
pub mod infer;
pub mod interp;
pub mod limits;
pub mod narrow;
pub mod op;
pub mod order;
pub mod shape;
pub mod storage;
pub mod tensor;
pub mod words;

pub use attr::{Attr, Attributes};
pub use data::{Data, DataRef, Sequence, ValueKind};
pub use dtype::DType;
pub use graph::{Graph, Node, Value, ValueId};
pub use op::{GraphExec, Op};
pub use shape::{Dim, Fact};
pub use storage::{DeviceBuffer, Storage};
pub use tensor::{Elem, Scalar, Tensor, TensorData};
