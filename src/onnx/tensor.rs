//! (to be written)

/// Decodes a serialized TensorProto (`.pb` test data file) into a tensor and its stored name.
pub fn tensor_from_pb_bytes(_bytes: &[u8]) -> crate::Result<(crate::ir::Tensor, Option<String>)> {
    crate::bail!(Unsupported, "being written")
}
