//! Ops that make tensors from attributes or from shapes: Constant, ConstantOfShape, Range, EyeLike,
//! and Identity.

use super::{input, BuildCtx, Op, Registry};
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{Attr, DType, Dim, Elem, Fact, Scalar, Tensor};
use crate::{bail, dispatch, Result};
use std::sync::Arc;

pub fn register(r: &mut Registry) {
    r.add("Constant", build_constant);
    r.add("ConstantOfShape", build_constant_of_shape);
    r.add("Range", build_range);
    r.add("EyeLike", build_eye_like);
    r.add("Identity", |_| Ok(Box::new(Identity)));
}

fn build_constant(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let mut found = Vec::new();
    for (name, attr) in ctx.attrs.iter() {
        let tensor = match (name, attr) {
            ("value", Attr::Tensor(t)) => t.clone(),
            ("value_float", Attr::Float(v)) => Arc::new(Tensor::scalar(*v)),
            ("value_floats", Attr::Floats(v)) => Arc::new(Tensor::vector(v.clone())),
            ("value_int", Attr::Int(v)) => Arc::new(Tensor::scalar(*v)),
            ("value_ints", Attr::Ints(v)) => Arc::new(Tensor::vector(v.clone())),
            ("value_string", Attr::String(v)) => Arc::new(Tensor::scalar(v.clone())),
            ("value_strings", Attr::Strings(v)) => Arc::new(Tensor::vector(v.clone())),
            ("sparse_value", _) => bail!(Unsupported, "Constant with a sparse_value is not supported"),
            (name, _) => bail!(InvalidModel, "Constant attribute '{name}' is unknown or of the wrong kind"),
        };
        found.push(tensor);
    }
    match <[Arc<Tensor>; 1]>::try_from(found) {
        Ok([value]) => Ok(Box::new(Constant { value })),
        Err(found) => bail!(InvalidModel, "Constant needs exactly one value attribute, it has {}", found.len()),
    }
}

#[derive(Debug)]
pub struct Constant {
    value: Arc<Tensor>,
}

impl Op for Constant {
    fn infer(&self, _inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        Ok(vec![Fact::constant(self.value.clone())])
    }

    fn eval(&self, _inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![self.value.as_ref().clone()])
    }
}

fn build_constant_of_shape(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let value = match ctx.attrs.tensor("value")? {
        Some(t) if t.len() == 1 => t.as_ref().clone().reshape(vec![])?,
        Some(t) => bail!(InvalidModel, "ConstantOfShape value must hold one element, it has shape {:?}", t.shape()),
        None => Tensor::scalar(0f32),
    };
    Ok(Box::new(ConstantOfShape { value }))
}

#[derive(Debug)]
pub struct ConstantOfShape {
    /// The fill value, as a scalar.
    value: Tensor,
}

/// The dims of a shape tensor (a 1-D integer tensor), refusing negative ones.
fn dims_of(shape: &Tensor) -> Result<Vec<usize>> {
    if shape.rank() != 1 {
        bail!(Shape, "ConstantOfShape input must be a 1-D shape, got shape {:?}", shape.shape());
    }
    shape
        .to_i64_vec()?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| crate::err!(Shape, "ConstantOfShape dims must be >= 0, got {d}")))
        .collect()
}

/// A tensor of `shape` filled with the one element of `value`.
fn filled<T: Elem>(shape: Vec<usize>, value: &Tensor) -> Result<Tensor> {
    let Some(v) = value.as_slice::<T>()?.first() else { bail!(InvalidModel, "ConstantOfShape value is empty") };
    let n = checked_len(&shape, T::DTYPE)?;
    Tensor::new(shape, try_vec(n, v.clone())?)
}

impl Op for ConstantOfShape {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let shape = input(inputs, 0)?;
        let dims = match (&shape.value, shape.shape.as_deref()) {
            (Some(v), _) => Some(dims_of(v)?.into_iter().map(Dim::Known).collect()),
            (None, Some([Dim::Known(rank)])) => Some(vec![Dim::Unknown; *rank]),
            _ => None,
        };
        Ok(vec![Fact { dtype: Some(self.value.dtype()), shape: dims, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let shape = dims_of(input(inputs, 0)?)?;
        let v = &self.value;
        dispatch!(v.dtype(); T => Ok(vec![filled::<T>(shape, v)?]);
            all; else => bail!(Unsupported, "ConstantOfShape does not take {}", v.dtype()))
    }
}

fn build_range(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    // Opset 27's stash_type picks the precision f16/bf16 ranges are computed in; this kernel always
    // computes in f64, at least as precise as either allowed choice.
    match ctx.attrs.int_or("stash_type", 1)? {
        1 | 11 => Ok(Box::new(Range)),
        other => bail!(Unsupported, "Range stash_type {other} is not supported (only float and double)"),
    }
}

#[derive(Debug)]
pub struct Range;

/// Range's `(start, limit, delta)`, checked to be scalars of one type.
fn range_bounds<T: Scalar>(inputs: [&Tensor; 3]) -> Result<[T; 3]> {
    let mut out = [T::zero(); 3];
    for (i, (t, name)) in inputs.iter().zip(["start", "limit", "delta"]).enumerate() {
        if t.dtype() != T::DTYPE {
            bail!(Shape, "Range {name} is {}, start is {}", t.dtype(), T::DTYPE);
        }
        match t.as_slice::<T>()? {
            [v] => out[i] = *v,
            _ => bail!(Shape, "Range {name} must be a scalar, got shape {:?}", t.shape()),
        }
    }
    Ok(out)
}

/// The number of elements, `max(ceil((limit - start) / delta), 0)`, exact for integers.
fn range_len<T: Scalar>([start, limit, delta]: [T; 3]) -> Result<usize> {
    let n = if T::DTYPE.is_int() {
        let (s, l, d) = (i128::from(start.to_i64()), i128::from(limit.to_i64()), i128::from(delta.to_i64()));
        if d == 0 {
            bail!(Runtime, "Range delta must not be 0");
        }
        let (q, r) = ((l - s) / d, (l - s) % d);
        let n = if r != 0 && (r > 0) == (d > 0) { q + 1 } else { q };
        n.max(0) as f64
    } else {
        if delta.to_f64() == 0.0 {
            bail!(Runtime, "Range delta must not be 0");
        }
        let n = ((limit.to_f64() - start.to_f64()) / delta.to_f64()).ceil();
        if n.is_nan() || n == f64::INFINITY {
            bail!(Runtime, "Range from {:?} to {:?} by {:?} has no finite length", start, limit, delta);
        }
        n.max(0.0)
    };
    // Beyond 2^53 the count is not exact, and far beyond any allocation limit anyway.
    if n > (1u64 << 53) as f64 {
        bail!(ResourceLimit, "Range would have {n} elements");
    }
    let n = n as usize;
    checked_len(&[n], T::DTYPE)
}

fn range<T: Scalar>(bounds: [T; 3]) -> Result<Tensor> {
    let n = range_len(bounds)?;
    let [start, _, delta] = bounds;
    let values: Vec<T> = if T::DTYPE.is_int() {
        // Every value lies between start and limit, so it fits in T; only `i * delta` needs i128.
        let (start, delta) = (i128::from(start.to_i64()), i128::from(delta.to_i64()));
        (0..n as i128).map(|i| T::from_i64((start + i * delta) as i64)).collect()
    } else {
        (0..n).map(|i| T::from_f64(start.to_f64() + i as f64 * delta.to_f64())).collect()
    };
    Ok(Tensor::vector(values))
}

impl Op for Range {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let start = input(inputs, 0)?;
        let values: Option<Vec<&Tensor>> = (0..3).map(|i| input(inputs, i).ok()?.value.as_deref()).collect();
        let len = match values.as_deref() {
            Some(&[s, l, d]) => dispatch!(s.dtype(); T => Dim::Known(range_len(range_bounds::<T>([s, l, d])?)?);
                F32 | F64 | F16 | BF16 | I8 | I16 | I32 | I64 | U8 | U16 | U32; else => Dim::Unknown),
            _ => Dim::Unknown,
        };
        Ok(vec![Fact { dtype: start.dtype, shape: Some(vec![len]), value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let bounds = [input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?];
        let dt = bounds[0].dtype();
        // Not u64: bounds are read through i64.
        dispatch!(dt; T => Ok(vec![range(range_bounds::<T>(bounds)?)?]);
            F32 | F64 | F16 | BF16 | I8 | I16 | I32 | I64 | U8 | U16 | U32; else => bail!(Unsupported, "Range does not take {dt}"))
    }
}

fn build_eye_like(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let dtype = match ctx.attrs.int("dtype")? {
        None => None,
        Some(code) => match i32::try_from(code).ok().and_then(DType::from_onnx_code) {
            Some(DType::String) | None => bail!(Unsupported, "EyeLike dtype {code} is not supported"),
            dt => dt,
        },
    };
    Ok(Box::new(EyeLike { dtype, k: ctx.attrs.int_or("k", 0)? }))
}

#[derive(Debug)]
pub struct EyeLike {
    /// The output type; `None` keeps the input's.
    dtype: Option<DType>,
    /// Which diagonal holds the ones: 0 the main one, positive above it, negative below.
    k: i64,
}

fn eye<T: Scalar>(rows: usize, cols: usize, k: i64) -> Result<Tensor> {
    let mut out = try_vec(checked_len(&[rows, cols], T::DTYPE)?, T::zero())?;
    for r in 0..rows {
        let c = r as i64 + k;
        if (0..cols as i64).contains(&c) {
            out[r * cols + c as usize] = T::one();
        }
    }
    Tensor::new(vec![rows, cols], out)
}

impl Op for EyeLike {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        if let Some(rank) = x.rank().filter(|&r| r != 2) {
            bail!(Shape, "EyeLike needs a 2-D input, got rank {rank}");
        }
        Ok(vec![Fact { dtype: self.dtype.or(x.dtype), shape: x.shape.clone(), value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let &[rows, cols] = x.shape() else { bail!(Shape, "EyeLike needs a 2-D input, got shape {:?}", x.shape()) };
        let dt = self.dtype.unwrap_or(x.dtype());
        dispatch!(dt; T => Ok(vec![eye::<T>(rows, cols, self.k)?]);
            F32 | F64 | F16 | BF16 | U8 | I8 | U16 | I16 | I32 | I64 | U32 | U64 | Bool;
            else => bail!(Unsupported, "EyeLike does not make {dt}"))
    }
}

#[derive(Debug)]
pub struct Identity;

impl Op for Identity {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        Ok(vec![input(inputs, 0)?.clone()])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![input(inputs, 0)?.clone()])
    }

    /// Sequences and optionals pass through unchanged, like tensors.
    fn eval_data(&self, inputs: &[Option<&crate::ir::Data>]) -> Result<Vec<crate::ir::Data>> {
        Ok(vec![input(inputs, 0)?.clone()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use half::{bf16, f16};

    fn build(op_type: &str, attrs: Vec<(&str, Attr)>) -> Result<Box<dyn Op>> {
        crate::ops::activation::test_util::build(op_type, 21, attrs, 1)
    }

    fn run(op: &dyn Op, inputs: &[&Tensor]) -> Result<Tensor> {
        let inputs: Vec<Option<&Tensor>> = inputs.iter().map(|&t| Some(t)).collect();
        Ok(op.eval(&inputs)?.remove(0))
    }

    #[test]
    fn constant_from_each_attribute_kind() {
        let t = Arc::new(Tensor::new(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap());
        let cases: Vec<(&str, Attr, Tensor)> = vec![
            ("value", Attr::Tensor(t.clone()), t.as_ref().clone()),
            ("value_float", Attr::Float(1.5), Tensor::scalar(1.5f32)),
            ("value_floats", Attr::Floats(vec![1.0, 2.0]), Tensor::vector(vec![1.0f32, 2.0])),
            ("value_int", Attr::Int(7), Tensor::scalar(7i64)),
            ("value_ints", Attr::Ints(vec![1, -2]), Tensor::vector(vec![1i64, -2])),
            ("value_string", Attr::String("a".into()), Tensor::scalar("a".to_string())),
            ("value_strings", Attr::Strings(vec!["a".into()]), Tensor::vector(vec!["a".to_string()])),
        ];
        for (name, attr, want) in cases {
            let op = build("Constant", vec![(name, attr)]).unwrap();
            assert_eq!(run(op.as_ref(), &[]).unwrap(), want, "{name}");
            let fact = op.infer(&[]).unwrap().remove(0);
            assert_eq!(fact.value.as_deref(), Some(&want), "{name}");
            assert_eq!(fact.concrete_shape().unwrap(), want.shape());
        }
    }

    #[test]
    fn constant_needs_exactly_one_dense_value() {
        assert_eq!(build("Constant", vec![]).unwrap_err().kind, ErrorKind::InvalidModel);
        let two = vec![("value_int", Attr::Int(1)), ("value_float", Attr::Float(1.0))];
        assert_eq!(build("Constant", two).unwrap_err().kind, ErrorKind::InvalidModel);
        let sparse = vec![("sparse_value", Attr::Int(0))];
        assert_eq!(build("Constant", sparse).unwrap_err().kind, ErrorKind::Unsupported);
        let wrong_kind = vec![("value_int", Attr::Float(1.0))];
        assert_eq!(build("Constant", wrong_kind).unwrap_err().kind, ErrorKind::InvalidModel);
    }

    #[test]
    fn constant_of_shape_fills() {
        let one = Arc::new(Tensor::vector(vec![1i32]));
        let op = build("ConstantOfShape", vec![("value", Attr::Tensor(one))]).unwrap();
        let y = run(op.as_ref(), &[&Tensor::vector(vec![2i64, 3])]).unwrap();
        assert_eq!(y, Tensor::new(vec![2, 3], vec![1i32; 6]).unwrap());
        let y = run(op.as_ref(), &[&Tensor::vector(vec![0i64])]).unwrap();
        assert_eq!(y.shape(), &[0]);
        let default = build("ConstantOfShape", vec![]).unwrap();
        let y = run(default.as_ref(), &[&Tensor::vector(Vec::<i64>::new())]).unwrap();
        assert_eq!(y, Tensor::scalar(0f32));
    }

    #[test]
    fn constant_of_shape_infers_from_a_constant_shape() {
        let op = build("ConstantOfShape", vec![]).unwrap();
        let shape = Fact::constant(Arc::new(Tensor::vector(vec![4i64, 5])));
        assert_eq!(op.infer(&[Some(&shape)]).unwrap()[0].concrete_shape(), Some(vec![4, 5]));
        let unknown = Fact::concrete(DType::I64, &[3]);
        assert_eq!(op.infer(&[Some(&unknown)]).unwrap()[0].shape, Some(vec![Dim::Unknown; 3]));
        assert_eq!(op.infer(&[Some(&Fact::of_dtype(DType::I64))]).unwrap()[0].shape, None);
    }

    #[test]
    fn constant_of_shape_rejects_bad_shapes() {
        let op = build("ConstantOfShape", vec![]).unwrap();
        let e = run(op.as_ref(), &[&Tensor::vector(vec![2i64, -1])]).unwrap_err();
        assert!(e.message.contains(">= 0, got -1"), "{e}");
        let e = run(op.as_ref(), &[&Tensor::vector(vec![1i64 << 40, 1 << 40])]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResourceLimit);
        let two = Arc::new(Tensor::vector(vec![1f32, 2.0]));
        assert!(build("ConstantOfShape", vec![("value", Attr::Tensor(two))]).is_err());
    }

    #[test]
    fn range_of_each_type() {
        let op = build("Range", vec![]).unwrap();
        let f = |v: f32| Tensor::scalar(v);
        assert_eq!(run(op.as_ref(), &[&f(1.0), &f(5.0), &f(2.0)]).unwrap(), Tensor::vector(vec![1.0f32, 3.0]));
        let i = |v: i32| Tensor::scalar(v);
        assert_eq!(run(op.as_ref(), &[&i(10), &i(6), &i(-3)]).unwrap(), Tensor::vector(vec![10i32, 7]));
        assert_eq!(run(op.as_ref(), &[&i(3), &i(9), &i(3)]).unwrap(), Tensor::vector(vec![3i32, 6]));
        assert_eq!(run(op.as_ref(), &[&i(0), &i(5), &i(-1)]).unwrap().shape(), &[0]);
        let h = |v: f32| Tensor::scalar(f16::from_f32(v));
        let want: Vec<f16> = [1.0, 3.0].map(f16::from_f32).to_vec();
        assert_eq!(run(op.as_ref(), &[&h(1.0), &h(5.0), &h(2.0)]).unwrap(), Tensor::vector(want));
        let b = |v: f32| Tensor::scalar(bf16::from_f32(v));
        assert_eq!(run(op.as_ref(), &[&b(0.0), &b(1.0), &b(0.5)]).unwrap().len(), 2);
        let big = [Tensor::scalar(i64::MIN), Tensor::scalar(i64::MAX), Tensor::scalar(i64::MAX)];
        assert_eq!(
            run(op.as_ref(), &[&big[0], &big[1], &big[2]]).unwrap(),
            Tensor::vector(vec![i64::MIN, -1, 9223372036854775806])
        );
    }

    #[test]
    fn range_infers_length_from_constants() {
        let op = build("Range", vec![]).unwrap();
        let c = |v: i64| Fact::constant(Arc::new(Tensor::scalar(v)));
        let facts = op.infer(&[Some(&c(0)), Some(&c(10)), Some(&c(3))]).unwrap();
        assert_eq!(facts[0].concrete_shape(), Some(vec![4]));
        let unknown = Fact::concrete(DType::I64, &[]);
        let facts = op.infer(&[Some(&c(0)), Some(&unknown), Some(&c(3))]).unwrap();
        assert_eq!(facts[0].shape, Some(vec![Dim::Unknown]));
    }

    #[test]
    fn range_rejects_bad_inputs() {
        let op = build("Range", vec![]).unwrap();
        let (zero, one) = (Tensor::scalar(0i64), Tensor::scalar(1i64));
        assert!(run(op.as_ref(), &[&zero, &one, &zero]).unwrap_err().message.contains("delta must not be 0"));
        let e = run(op.as_ref(), &[&zero, &Tensor::scalar(1f32), &one]).unwrap_err();
        assert!(e.message.contains("limit is float32"), "{e}");
        let e = run(op.as_ref(), &[&zero, &Tensor::vector(vec![1i64, 2]), &one]).unwrap_err();
        assert!(e.message.contains("must be a scalar"), "{e}");
        let huge = [Tensor::scalar(0f32), Tensor::scalar(1e30f32), Tensor::scalar(1f32)];
        assert_eq!(run(op.as_ref(), &[&huge[0], &huge[1], &huge[2]]).unwrap_err().kind, ErrorKind::ResourceLimit);
        let nan = Tensor::scalar(f32::NAN);
        assert!(run(op.as_ref(), &[&huge[0], &nan, &huge[2]]).is_err());
        assert!(run(op.as_ref(), &[&huge[0], &huge[2], &Tensor::scalar(0f32)]).is_err());
        assert!(build("Range", vec![("stash_type", Attr::Int(10))]).is_err());
    }

    #[test]
    fn eye_like_places_the_diagonal() {
        let x = Tensor::new(vec![3, 4], vec![7i32; 12]).unwrap();
        let y = run(build("EyeLike", vec![]).unwrap().as_ref(), &[&x]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]);
        let op = build("EyeLike", vec![("k", Attr::Int(1)), ("dtype", Attr::Int(11))]).unwrap();
        let y = run(op.as_ref(), &[&x]).unwrap();
        assert_eq!(y.as_slice::<f64>().unwrap(), &[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        let op = build("EyeLike", vec![("k", Attr::Int(-2)), ("dtype", Attr::Int(9))]).unwrap();
        let y = run(op.as_ref(), &[&x]).unwrap();
        assert_eq!(y.as_slice::<bool>().unwrap().iter().filter(|&&b| b).count(), 1);
        assert_eq!(op.infer(&[Some(&Fact::concrete(DType::I32, &[3, 4]))]).unwrap()[0].dtype, Some(DType::Bool));
    }

    #[test]
    fn eye_like_needs_two_dims() {
        let op = build("EyeLike", vec![]).unwrap();
        assert_eq!(run(op.as_ref(), &[&Tensor::vector(vec![1f32])]).unwrap_err().kind, ErrorKind::Shape);
        assert!(op.infer(&[Some(&Fact::concrete(DType::F32, &[1]))]).is_err());
        assert!(build("EyeLike", vec![("dtype", Attr::Int(8))]).is_err());
    }

    #[test]
    fn identity_passes_values_through() {
        let op = build("Identity", vec![]).unwrap();
        let x = Tensor::vector(vec!["a".to_string()]);
        assert_eq!(run(op.as_ref(), &[&x]).unwrap(), x);
        let fact = Fact::constant(Arc::new(x.clone()));
        assert_eq!(op.infer(&[Some(&fact)]).unwrap()[0].value.as_deref(), Some(&x));
    }
}
