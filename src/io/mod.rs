//! Tensor files: `.npy` (numpy) and ONNX `TensorProto` `.pb`, as used by the CLI and tests.
