//! The run-time codes of `kernels/activation.cl` for the fused activations of `ops::fused`.

use crate::ops::fused::Activation;

/// The kernel arguments (code, a, b) that make `crx_activate` compute `act`.
pub fn args(act: Activation) -> (i32, f32, f32) {
    match act {
        Activation::None => (0, 0.0, 0.0),
        Activation::Relu => (1, 0.0, 0.0),
        Activation::Clip(lo, hi) => (2, lo, hi),
        Activation::LeakyRelu(a) => (3, a, 0.0),
        Activation::Sigmoid => (4, 0.0, 0.0),
        Activation::Silu => (5, 0.0, 0.0),
        Activation::HardSigmoid(a, b) => (6, a, b),
        Activation::HardSwish => (7, 0.0, 0.0),
        Activation::Tanh => (8, 0.0, 0.0),
        Activation::Gelu => (9, 0.0, 0.0),
        Activation::GeluTanh => (10, 0.0, 0.0),
        Activation::Erf => (11, 0.0, 0.0),
        Activation::Sqrt => (12, 0.0, 0.0),
        Activation::Exp => (13, 0.0, 0.0),
    }
}
