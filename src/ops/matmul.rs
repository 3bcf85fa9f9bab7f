//! Matrix products: MatMul (numpy semantics) and Gemm, and the row-major [`gemm`] / [`sgemm`]
//! helpers that Conv and ConvTranspose also use.

use super::binary::Arith;
use super::broadcast::for_each_index;
use super::real::{from_real, to_real};
use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::shape::{broadcast_dims, broadcast_shapes};
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{DType, Dim, Fact, Scalar, Tensor};
use crate::{bail, Result};

pub fn register(r: &mut Registry) {
    r.add("MatMul", |_| Ok(Box::new(MatMul)));
    r.add("Gemm", build_gemm);
}

/// Element types the matrix kernels multiply natively (integer products wrap, as in [`Arith`]).
pub trait MatElem: Arith {
    /// `self * factor`, for Gemm's alpha and beta.
    fn scaled(self, factor: f64) -> Self;
}

impl MatElem for f32 {
    fn scaled(self, factor: f64) -> Self {
        self * factor as f32
    }
}

impl MatElem for f64 {
    fn scaled(self, factor: f64) -> Self {
        self * factor
    }
}

macro_rules! impl_mat_int {
    ($($t:ty),*) => {$(
        impl MatElem for $t {
            fn scaled(self, factor: f64) -> Self {
                if factor == 1.0 { self } else { Self::from_f64(self as f64 * factor) }
            }
        }
    )*};
}
impl_mat_int!(i32, i64, u32, u64);

/// Columns of C updated together, so that a block of a C row stays in L1 while the k loop runs.
const COLUMN_BLOCK: usize = 512;

/// Row-major `C += op(A) · op(B)` where op(A) is m×k and op(B) is k×n. With `trans_a`, `a` holds A
/// as k×m; with `trans_b`, `b` holds B as n×k. Errors if a slice is shorter than its matrix.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: MatElem>(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    b: &[T],
    c: &mut [T],
) -> Result<()> {
    let (need_a, need_b, need_c) = (m.saturating_mul(k), k.saturating_mul(n), m.saturating_mul(n));
    if a.len() < need_a || b.len() < need_b || c.len() < need_c {
        bail!(Runtime, "gemm {m}x{k} by {k}x{n}: got {} elements of A, {} of B, {} of C", a.len(), b.len(), c.len());
    }
    // Transposed operands are copied once into plain row-major form (O(mk + kn) against the O(mkn)
    // product), so that only the vectorisable i-k-j loop is needed.
    let a_plain = if trans_a { transpose(&a[..need_a], k, m)? } else { Vec::new() };
    let b_plain = if trans_b { transpose(&b[..need_b], n, k)? } else { Vec::new() };
    let a = if trans_a { &a_plain[..] } else { &a[..need_a] };
    let b = if trans_b { &b_plain[..] } else { &b[..need_b] };
    if n == 0 || k == 0 {
        return Ok(());
    }
    for (a_row, c_row) in a.chunks_exact(k).zip(c.chunks_exact_mut(n)) {
        for j0 in (0..n).step_by(COLUMN_BLOCK) {
            let j1 = (j0 + COLUMN_BLOCK).min(n);
            let c_block = &mut c_row[j0..j1];
            for (&av, b_row) in a_row.iter().zip(b.chunks_exact(n)) {
                for (cv, &bv) in c_block.iter_mut().zip(&b_row[j0..j1]) {
                    *cv = cv.add(av.mul(bv));
                }
            }
        }
    }
    Ok(())
}

/// Row-major f32 `C += op(A) · op(B)`; see [`gemm`].
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) -> Result<()> {
    gemm(trans_a, trans_b, m, n, k, a, b, c)
}

/// The transpose of a rows×cols row-major matrix.
pub fn transpose<T: Copy + Default>(x: &[T], rows: usize, cols: usize) -> Result<Vec<T>> {
    let mut out = try_vec(rows * cols, T::default())?;
    for (r, row) in x.chunks_exact(cols.max(1)).take(rows).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    Ok(out)
}

/// Runs an integer-or-float matrix kernel in its natural type: floats narrower than f32 go through
/// f32, and the result is stored back as `dtype`.
macro_rules! with_mat_type {
    ($op:expr, $dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::F16 | DType::BF16 => {
                type $T = f32;
                $body
            }
            other => crate::dispatch!(other; $T => $body; F32 | F64 | I32 | I64 | U32 | U64;
                else => bail!(Unsupported, "{} does not take {other} tensors", $op)),
        }
    };
}

/// The elements of `t` as `T`: borrowed when `t` holds `T`, widened to f32 for f16/bf16.
fn mat_values<T: MatElem>(t: &Tensor) -> Result<std::borrow::Cow<'_, [T]>> {
    match t.as_slice::<T>() {
        Ok(s) => Ok(std::borrow::Cow::Borrowed(s)),
        Err(_) if T::DTYPE == DType::F32 => {
            let wide = to_real::<f32>(t)?.into_owned();
            Ok(std::borrow::Cow::Owned(wide.into_iter().map(|v| T::from_f64(f64::from(v))).collect()))
        }
        Err(e) => Err(e),
    }
}

/// Stores kernel results computed in `T` as a tensor of `dtype` (rounding f32 back to f16/bf16).
fn store<T: MatElem>(dtype: DType, shape: Vec<usize>, values: Vec<T>) -> Result<Tensor> {
    if dtype == T::DTYPE {
        return Tensor::new(shape, values);
    }
    from_real::<f64>(dtype, shape, values.into_iter().map(|v| v.to_f64()).collect())
}

fn check_same_dtype(op: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        bail!(Shape, "{op} inputs must have one dtype, got {} and {}", a.dtype(), b.dtype());
    }
    Ok(())
}

fn fact_dtype(op: &str, a: &Fact, b: &Fact) -> Result<Option<DType>> {
    match (a.dtype, b.dtype) {
        (Some(x), Some(y)) if x != y => bail!(Shape, "{op} inputs must have one dtype, got {x} and {y}"),
        (x, y) => Ok(x.or(y)),
    }
}

/// Two contraction dims must agree when both are known.
fn check_inner(op: &str, ka: &Dim, kb: &Dim) -> Result<()> {
    if let (Dim::Known(x), Dim::Known(y)) = (ka, kb) {
        if x != y {
            bail!(Shape, "{op}: inner dimensions differ ({x} vs {y})");
        }
    }
    Ok(())
}

/// Numpy matmul: 1-D operands are promoted to a row (A) or column (B) vector and the promoted
/// axis is dropped again; leading axes broadcast.
#[derive(Debug)]
pub struct MatMul;

impl Op for MatMul {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let dtype = fact_dtype("MatMul", a, b)?;
        Ok(vec![Fact { dtype, shape: matmul_shape("MatMul", a, b)?, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        check_same_dtype("MatMul", a, b)?;
        with_mat_type!("MatMul", a.dtype(), T => {
            let (shape, values) = matmul::<T>(&mat_values::<T>(a)?, a.shape(), &mat_values::<T>(b)?, b.shape())?;
            Ok(vec![store(a.dtype(), shape, values)?])
        })
    }
}

/// The output shape of a numpy matmul of A and B; `None` while a rank is unknown.
pub(super) fn matmul_shape(op: &str, a: &Fact, b: &Fact) -> Result<Option<Vec<Dim>>> {
    let (Some(sa), Some(sb)) = (&a.shape, &b.shape) else {
        return Ok(None);
    };
    if sa.is_empty() || sb.is_empty() {
        bail!(Shape, "{op} does not take scalars");
    }
    let (ra, rb) = (sa.len(), sb.len());
    check_inner(op, &sa[ra - 1], &sb[if rb == 1 { 0 } else { rb - 2 }])?;
    let batch_a = &sa[..ra.saturating_sub(2)];
    let batch_b = &sb[..rb.saturating_sub(2)];
    let mut shape = broadcast_dims(batch_a, batch_b)?;
    if ra >= 2 {
        shape.push(sa[ra - 2].clone());
    }
    if rb >= 2 {
        shape.push(sb[rb - 1].clone());
    }
    Ok(Some(shape))
}

/// Numpy matmul of row-major `a` and `b` (floats, or i32 for the integer and quantized products);
/// returns the output shape and elements.
pub(super) fn matmul<T: MatElem>(
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
) -> Result<(Vec<usize>, Vec<T>)> {
    if a_shape.is_empty() || b_shape.is_empty() {
        bail!(Shape, "MatMul does not take scalars (shapes {a_shape:?} and {b_shape:?})");
    }
    // Promote 1-D operands to matrices.
    let a_mat: Vec<usize> = if a_shape.len() == 1 { vec![1, a_shape[0]] } else { a_shape.to_vec() };
    let b_mat: Vec<usize> = if b_shape.len() == 1 { vec![b_shape[0], 1] } else { b_shape.to_vec() };
    let (ra, rb) = (a_mat.len(), b_mat.len());
    let (m, k, kb, n) = (a_mat[ra - 2], a_mat[ra - 1], b_mat[rb - 2], b_mat[rb - 1]);
    if k != kb {
        bail!(Shape, "MatMul: inner dimensions differ ({k} vs {kb}) for shapes {a_shape:?} and {b_shape:?}");
    }
    let (batch_a, batch_b) = (&a_mat[..ra - 2], &b_mat[..rb - 2]);
    let batch = broadcast_shapes(batch_a, batch_b)?;
    let mut out_shape = batch.clone();
    if a_shape.len() >= 2 {
        out_shape.push(m);
    }
    if b_shape.len() >= 2 {
        out_shape.push(n);
    }
    let len = checked_len(&out_shape, T::DTYPE)?;
    let mut out = try_vec(len, T::zero())?;
    let mut pairs = Vec::new();
    for_each_index([batch_a, batch_b], &batch, |o, [ia, ib]| pairs.push((o, ia, ib)));
    for (o, ia, ib) in pairs {
        let (sa, sb, so) = (ia * m * k, ib * k * n, o * m * n);
        gemm(false, false, m, n, k, &a[sa..sa + m * k], &b[sb..sb + k * n], &mut out[so..so + m * n])?;
    }
    Ok((out_shape, out))
}

fn build_gemm(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    // Gemm-1/6 had a `broadcast` flag; broadcasting C is always allowed here, which is a superset.
    Ok(Box::new(Gemm {
        trans_a: a.int_or("transA", 0)? != 0,
        trans_b: a.int_or("transB", 0)? != 0,
        alpha: f64::from(a.float_or("alpha", 1.0)?),
        beta: f64::from(a.float_or("beta", 1.0)?),
    }))
}

/// `Y = alpha * op(A) · op(B) + beta * C`, with C broadcast to Y's shape (optional from opset 11).
#[derive(Debug)]
pub struct Gemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f64,
    pub beta: f64,
}

impl Op for Gemm {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let dtype = fact_dtype("Gemm", a, b)?;
        let (Some(sa), Some(sb)) = (&a.shape, &b.shape) else {
            return Ok(vec![Fact { dtype, shape: Some(vec![Dim::Unknown, Dim::Unknown]), value: None }]);
        };
        if sa.len() != 2 || sb.len() != 2 {
            bail!(Shape, "Gemm takes matrices, got ranks {} and {}", sa.len(), sb.len());
        }
        let (m, ka) = if self.trans_a { (&sa[1], &sa[0]) } else { (&sa[0], &sa[1]) };
        let (kb, n) = if self.trans_b { (&sb[1], &sb[0]) } else { (&sb[0], &sb[1]) };
        check_inner("Gemm", ka, kb)?;
        let shape = vec![m.clone(), n.clone()];
        if let Some(c_shape) = opt_input(inputs, 2).and_then(|c| c.shape.as_ref()) {
            let joint = broadcast_dims(&shape, c_shape)?;
            if joint.len() != 2
                || joint.iter().zip(&shape).any(|(j, s)| matches!((j, s), (Dim::Known(x), Dim::Known(y)) if x != y))
            {
                bail!(Shape, "Gemm: C does not broadcast to the output");
            }
        }
        Ok(vec![Fact { dtype, shape: Some(shape), value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        check_same_dtype("Gemm", a, b)?;
        let c = opt_input(inputs, 2);
        if let Some(c) = c {
            check_same_dtype("Gemm", a, c)?;
        }
        with_mat_type!("Gemm", a.dtype(), T => {
            let c_values = c.map(mat_values::<T>).transpose()?;
            let c_arg = c.zip(c_values.as_deref()).map(|(t, v)| (t.shape(), v));
            let (shape, values) = self.run::<T>((a.shape(), &mat_values::<T>(a)?), (b.shape(), &mat_values::<T>(b)?), c_arg)?;
            Ok(vec![store(a.dtype(), shape, values)?])
        })
    }
}

type Operand<'a, T> = (&'a [usize], &'a [T]);

impl Gemm {
    fn run<T: MatElem>(&self, a: Operand<T>, b: Operand<T>, c: Option<Operand<T>>) -> Result<(Vec<usize>, Vec<T>)> {
        let ((a_shape, a), (b_shape, b)) = (a, b);
        let (&[ar, ac], &[br, bc]) = (a_shape, b_shape) else {
            bail!(Shape, "Gemm takes matrices, got shapes {a_shape:?} and {b_shape:?}");
        };
        let (m, k) = if self.trans_a { (ac, ar) } else { (ar, ac) };
        let (kb, n) = if self.trans_b { (bc, br) } else { (br, bc) };
        if k != kb {
            bail!(Shape, "Gemm: inner dimensions differ ({k} vs {kb}) for shapes {a_shape:?} and {b_shape:?}");
        }
        let len = checked_len(&[m, n], T::DTYPE)?;
        let mut y = try_vec(len, T::zero())?;
        gemm(self.trans_a, self.trans_b, m, n, k, a, b, &mut y)?;
        if self.alpha != 1.0 {
            y.iter_mut().for_each(|v| *v = v.scaled(self.alpha));
        }
        if let Some((c_shape, c)) = c.filter(|_| self.beta != 0.0) {
            // Unidirectional broadcast: C is (), (n), (1|m, 1|n).
            let (cm, cn) = match *c_shape {
                [] => (1, 1),
                [cn] => (1, cn),
                [cm, cn] => (cm, cn),
                _ => bail!(Shape, "Gemm: C of shape {c_shape:?} does not broadcast to [{m}, {n}]"),
            };
            if (cm != 1 && cm != m) || (cn != 1 && cn != n) {
                bail!(Shape, "Gemm: C of shape {c_shape:?} does not broadcast to [{m}, {n}]");
            }
            for (i, row) in y.chunks_exact_mut(n.max(1)).enumerate() {
                let c_row = if cm == 1 { 0 } else { i * cn };
                for (j, v) in row.iter_mut().enumerate() {
                    let cv = c[c_row + if cn == 1 { 0 } else { j }];
                    *v = v.add(cv.scaled(self.beta));
                }
            }
        }
        Ok((vec![m, n], y))
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::test_util::{build_named, eval_all};
    use super::*;
    use crate::ir::Attr;

    fn gemm_op(attrs: Vec<(&str, Attr)>) -> Box<dyn Op> {
        build_named("Gemm", 13, attrs, 1).unwrap()
    }

    fn run(op: &dyn Op, inputs: &[&Tensor]) -> Result<Tensor> {
        Ok(eval_all(op, inputs)?.remove(0))
    }

    #[test]
    fn sgemm_all_transpose_combinations() {
        // A = [[1,2,3],[4,5,6]], B = [[7,8],[9,10],[11,12]] -> [[58,64],[139,154]]
        let a = [1., 2., 3., 4., 5., 6.];
        let b = [7., 8., 9., 10., 11., 12.];
        let at = [1., 4., 2., 5., 3., 6.];
        let bt = [7., 9., 11., 8., 10., 12.];
        for (ta, tb, a, b) in
            [(false, false, &a, &b), (true, false, &at, &b), (false, true, &a, &bt), (true, true, &at, &bt)]
        {
            let mut c = [1f32; 4];
            sgemm(ta, tb, 2, 2, 3, a, b, &mut c).unwrap();
            assert_eq!(c, [59., 65., 140., 155.], "transA={ta} transB={tb}");
        }
        assert!(sgemm(false, false, 2, 2, 3, &a[..5], &b, &mut [0.; 4]).is_err());
    }

    #[test]
    fn matmul_broadcasts_batches_and_promotes_vectors() {
        // np.matmul(np.arange(12).reshape(2,1,2,3), np.arange(6).reshape(3,2))
        let a = Tensor::new(vec![2, 1, 2, 3], (0..12).map(|v| v as f32).collect()).unwrap();
        let b = Tensor::new(vec![3, 2], (0..6).map(|v| v as f32).collect()).unwrap();
        let y = run(&MatMul, &[&a, &b]).unwrap();
        assert_eq!(y.shape(), &[2, 1, 2, 2]);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[10., 13., 28., 40., 46., 67., 64., 94.]);
        // 1-D @ 1-D is a scalar; 1-D @ 3-D drops the promoted axis.
        let v = Tensor::vector(vec![1i64, 2, 3]);
        let y = run(&MatMul, &[&v, &v]).unwrap();
        assert_eq!((y.shape(), y.as_slice::<i64>().unwrap()), (&[][..], &[14][..]));
        let b3 = Tensor::new(vec![2, 3, 2], (0..12).map(|v| v as i64).collect()).unwrap();
        let y = run(&MatMul, &[&v, &b3]).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.as_slice::<i64>().unwrap(), &[16, 22, 52, 58]);
    }

    #[test]
    fn matmul_half_and_wrapping_ints() {
        use half::f16;
        let a = Tensor::new(vec![1, 2], vec![f16::from_f32(1.5), f16::from_f32(2.0)]).unwrap();
        let b = Tensor::new(vec![2, 1], vec![f16::from_f32(2.0), f16::from_f32(0.25)]).unwrap();
        assert_eq!(run(&MatMul, &[&a, &b]).unwrap().as_slice::<f16>().unwrap(), &[f16::from_f32(3.5)]);
        let big = Tensor::new(vec![1, 1], vec![i32::MAX]).unwrap();
        let two = Tensor::new(vec![1, 1], vec![2i32]).unwrap();
        assert_eq!(run(&MatMul, &[&big, &two]).unwrap().as_slice::<i32>().unwrap(), &[-2]);
    }

    #[test]
    fn matmul_rejects_mismatched_inner_dims() {
        let a = Tensor::new(vec![2, 3], vec![0f32; 6]).unwrap();
        let e = run(&MatMul, &[&a, &a]).unwrap_err();
        assert!(e.message.contains("inner dimensions differ (3 vs 2)"), "{e}");
        let fa = Fact::new(DType::F32, vec![Dim::Symbol("N".into()), Dim::Known(3)]);
        let fb = Fact::concrete(DType::F32, &[4, 5]);
        assert!(MatMul.infer(&[Some(&fa), Some(&fb)]).is_err());
    }

    #[test]
    fn matmul_infers_symbolic_batch() {
        let n = Dim::Symbol("N".into());
        let fa = Fact::new(DType::F32, vec![n.clone(), Dim::Known(4), Dim::Known(3)]);
        let fb = Fact::concrete(DType::F32, &[3, 5]);
        let out = MatMul.infer(&[Some(&fa), Some(&fb)]).unwrap();
        assert_eq!(out[0].shape, Some(vec![n, Dim::Known(4), Dim::Known(5)]));
    }

    #[test]
    fn gemm_with_attributes_and_broadcast_bias() {
        // numpy: a = [[1,2],[3,4]]; b = [[5,6],[7,8]]; 0.5 * a.T @ b.T + 2 * [10, 20]
        let op = gemm_op(vec![
            ("transA", Attr::Int(1)),
            ("transB", Attr::Int(1)),
            ("alpha", Attr::Float(0.5)),
            ("beta", Attr::Float(2.0)),
        ]);
        let a = Tensor::new(vec![2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let b = Tensor::new(vec![2, 2], vec![5f32, 6., 7., 8.]).unwrap();
        let c = Tensor::vector(vec![10f32, 20.]);
        let y = run(&*op, &[&a, &b, &c]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[31.5, 55.5, 37., 63.]);
        // Without C (opset 11+), and with a column C.
        let y = run(&*gemm_op(vec![]), &[&a, &b]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[19., 22., 43., 50.]);
        let col = Tensor::new(vec![2, 1], vec![1f32, 2.]).unwrap();
        let y = run(&*gemm_op(vec![]), &[&a, &b, &col]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[20., 23., 45., 52.]);
    }

    #[test]
    fn gemm_rejects_bad_bias_and_ranks() {
        let a = Tensor::new(vec![2, 2], vec![1f32; 4]).unwrap();
        let c = Tensor::vector(vec![1f32; 3]);
        assert!(run(&*gemm_op(vec![]), &[&a, &a, &c]).is_err());
        let v = Tensor::vector(vec![1f32; 2]);
        assert!(run(&*gemm_op(vec![]), &[&v, &a]).is_err());
        let fa = Fact::new(DType::F32, vec![Dim::Symbol("N".into()), Dim::Known(3)]);
        let fb = Fact::concrete(DType::F32, &[4, 3]);
        let op = gemm_op(vec![("transB", Attr::Int(1))]);
        let out = op.infer(&[Some(&fa), Some(&fb), None]).unwrap();
        assert_eq!(out[0].shape, Some(vec![Dim::Symbol("N".into()), Dim::Known(4)]));
    }
}
