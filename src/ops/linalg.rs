//! Linear algebra on batches of matrices: Det.

use super::reshape::{fact_of, fold_small, numel};
use super::{input, Op, Registry};
use crate::ir::tensor::try_vec;
use crate::ir::{Dim, Fact, Scalar, Tensor};
use crate::{bail, dispatch, Result};

pub fn register(r: &mut Registry) {
    r.add("Det", |_| Ok(Box::new(Det)));
}

#[derive(Debug)]
pub struct Det;

/// The determinant of the `m × m` row-major matrix in `a`, by LU decomposition with partial
/// pivoting; `a` is overwritten.
fn determinant(a: &mut [f64], m: usize) -> f64 {
    let mut det = 1.0;
    for col in 0..m {
        let pivot = (col..m).max_by(|&i, &j| a[i * m + col].abs().total_cmp(&a[j * m + col].abs())).unwrap_or(col);
        let p = a[pivot * m + col];
        if p == 0.0 {
            return 0.0;
        }
        if pivot != col {
            for k in 0..m {
                a.swap(pivot * m + k, col * m + k);
            }
            det = -det;
        }
        det *= p;
        for row in col + 1..m {
            let factor = a[row * m + col] / p;
            if factor != 0.0 {
                for k in col + 1..m {
                    a[row * m + k] -= factor * a[col * m + k];
                }
            }
        }
    }
    det
}

impl Det {
    fn run<T: Scalar>(x: &Tensor) -> Result<Tensor> {
        let rank = x.rank();
        let m = x.shape()[rank - 1];
        let batch_shape = x.shape()[..rank - 2].to_vec();
        let data = x.as_slice::<T>()?;
        let mut out = try_vec(numel(&batch_shape), T::zero())?;
        let mut matrix = try_vec(m * m, 0.0)?;
        for (b, y) in out.iter_mut().enumerate() {
            for (v, &s) in matrix.iter_mut().zip(&data[b * m * m..(b + 1) * m * m]) {
                *v = s.to_f64();
            }
            *y = T::from_f64(determinant(&mut matrix, m));
        }
        Tensor::new(batch_shape, out)
    }
}

impl Op for Det {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let shape = match &x.shape {
            Some(dims) if dims.len() < 2 => bail!(Shape, "Det: input needs rank 2 or more, got rank {}", dims.len()),
            Some(dims) => {
                let (rows, cols) = (&dims[dims.len() - 2], &dims[dims.len() - 1]);
                if let (Dim::Known(r), Dim::Known(c)) = (rows, cols) {
                    if r != c {
                        bail!(Shape, "Det: matrices must be square, got {r} x {c}");
                    }
                }
                Some(dims[..dims.len() - 2].to_vec())
            }
            None => None,
        };
        fold_small(self, inputs, vec![fact_of(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let rank = x.rank();
        if rank < 2 || x.shape()[rank - 1] != x.shape()[rank - 2] {
            bail!(Shape, "Det: input must be a batch of square matrices [*, M, M], got shape {:?}", x.shape());
        }
        let y = dispatch!(x.dtype(); T => Det::run::<T>(x)?; float;
            else => bail!(Unsupported, "Det does not take {}", x.dtype()));
        Ok(vec![y])
    }
}

#[cfg(test)]
mod tests {
    use super::super::reshape::testing::*;
    use super::*;

    #[test]
    fn determinants_of_a_batch() {
        // numpy.linalg.det: [[1, 2], [3, 4]] -> -2; [[0, 1, 2], [3, 4, 5], [6, 7, 9]] -> -3 (needs a pivot swap).
        let x = Tensor::new(vec![2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let y = run("Det", 22, vec![], &[Some(&x)]).unwrap();
        assert_eq!(y.shape(), &[] as &[usize]);
        assert!((f32s(&y)[0] + 2.0).abs() < 1e-6);
        let x =
            Tensor::new(vec![2, 3, 3], vec![0f64, 1., 2., 3., 4., 5., 6., 7., 9., 2., 0., 0., 0., 3., 0., 0., 0., 4.])
                .unwrap();
        let y = run("Det", 11, vec![], &[Some(&x)]).unwrap();
        let got = y.as_slice::<f64>().unwrap();
        assert!((got[0] + 3.0).abs() < 1e-12 && (got[1] - 24.0).abs() < 1e-12, "{got:?}");
        // A singular matrix.
        let x = Tensor::new(vec![2, 2], vec![1f64, 2., 2., 4.]).unwrap();
        assert_eq!(run("Det", 22, vec![], &[Some(&x)]).unwrap().as_slice::<f64>().unwrap(), &[0.0]);
    }

    #[test]
    fn non_square_input_is_an_error() {
        let x = Tensor::new(vec![2, 3], vec![1f32; 6]).unwrap();
        let e = run("Det", 22, vec![], &[Some(&x)]).unwrap_err();
        assert!(e.message.contains("square"), "{e}");
        assert!(run("Det", 22, vec![], &[Some(&Tensor::vector(vec![1f32]))]).is_err());
    }
}
