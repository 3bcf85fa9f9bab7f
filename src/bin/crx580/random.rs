//! Made-up inputs for `bench` and `convert --report`: floats uniform in [0, 1) from a xorshift
//! stream (reproducible, no dependency), every other type zeros (valid indices and sizes for any
//! model).

use crx580::ir::tensor::checked_len;
use crx580::{DType, Result, Tensor};

/// A xorshift64 stream of f64 in [0, 1).
pub struct Uniform(u64);

impl Uniform {
    pub fn new(seed: u64) -> Uniform {
        Uniform(seed)
    }

    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A tensor of `dtype` and `shape`: uniform floats drawn from `rng`, or zeros for other types.
/// Its size is checked against the tensor size limit before it is allocated.
pub fn random_tensor(dtype: DType, shape: &[usize], rng: &mut Uniform) -> Result<Tensor> {
    if !dtype.is_float() {
        return Tensor::zeros(dtype, shape.to_vec());
    }
    let len = checked_len(shape, DType::F32)?;
    let t = Tensor::new(shape.to_vec(), (0..len).map(|_| rng.next() as f32).collect::<Vec<f32>>())?;
    if dtype == DType::F32 {
        Ok(t)
    } else {
        t.cast_numeric(dtype)
    }
}
