//! Comparisons (Equal, Less, Greater, LessOrEqual, GreaterOrEqual), boolean logic (And, Or, Xor,
//! Not) and Where, all with numpy broadcasting.

use super::binary::{broadcast_fact, check_dtype, common_dtype, eval_pair, infer_pair, widen, zip, Align};
use super::unary::{map, map_fact};
use super::{broadcast, input, BuildCtx, Op, Registry};
use crate::ir::limits::with_capacity;
use crate::ir::shape::broadcast_shapes;
use crate::ir::tensor::checked_len;
use crate::ir::words::Word;
use crate::ir::{DType, Elem, Fact, Tensor};
use crate::{bail, dispatch, dispatch_words, Result};
use std::cmp::Ordering;

pub fn register(r: &mut Registry) {
    r.add("Equal", |c| Predicate::build(c, Pred::Equal));
    r.add("Less", |c| Predicate::build(c, Pred::Less));
    r.add("Greater", |c| Predicate::build(c, Pred::Greater));
    r.add("LessOrEqual", |c| Predicate::build(c, Pred::LessOrEqual));
    r.add("GreaterOrEqual", |c| Predicate::build(c, Pred::GreaterOrEqual));
    r.add("And", |c| Predicate::build(c, Pred::And));
    r.add("Or", |c| Predicate::build(c, Pred::Or));
    r.add("Xor", |c| Predicate::build(c, Pred::Xor));
    r.add("Not", |_| Ok(Box::new(NotOp)));
    r.add("Where", |_| Ok(Box::new(Where)));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pred {
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
    And,
    Or,
    Xor,
}

impl Pred {
    fn op_name(self) -> &'static str {
        match self {
            Pred::Equal => "Equal",
            Pred::Less => "Less",
            Pred::Greater => "Greater",
            Pred::LessOrEqual => "LessOrEqual",
            Pred::GreaterOrEqual => "GreaterOrEqual",
            Pred::And => "And",
            Pred::Or => "Or",
            Pred::Xor => "Xor",
        }
    }

    fn takes(self, dt: DType) -> bool {
        match self {
            Pred::Equal => true,
            Pred::And | Pred::Or | Pred::Xor => dt == DType::Bool,
            _ => dt != DType::String,
        }
    }
}

/// A two-input op with a bool result; both inputs share one dtype.
#[derive(Debug)]
struct Predicate {
    pred: Pred,
    align: Align,
}

impl Predicate {
    fn build(c: &BuildCtx, pred: Pred) -> Result<Box<dyn Op>> {
        Ok(Box::new(Predicate { pred, align: Align::from_ctx(c)? }))
    }
}

impl Op for Predicate {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        infer_pair(self.pred.op_name(), self.align, inputs, |d| self.pred.takes(d), Some(DType::Bool))
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let name = self.pred.op_name();
        let (a, b, dt) = eval_pair(name, self.align, inputs, |d| self.pred.takes(d))?;
        let out = match self.pred {
            Pred::And => zip(a, &b, |x: bool, y| x && y)?,
            Pred::Or => zip(a, &b, |x: bool, y| x || y)?,
            Pred::Xor => zip(a, &b, |x: bool, y| x != y)?,
            // Integers compare in i64, float16 and bfloat16 in f32: widening keeps every order
            // and equality, and each comparison compiles for 16 element types rather than 24.
            pred => {
                let (a, b) = (widen(a)?, widen(&b)?);
                dispatch!(a.dtype(); T => compare::<T>(pred, dt, &a, &b)?;
                    I64 | U64 | F32 | F64 | Bool | String
                    | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | U4 | I4 | F4E2M1 | F8E8M0 | U2 | I2;
                    else => bail!(Unsupported, "{name} does not take {dt} inputs"))
            }
        };
        Ok(vec![out])
    }
}

/// One closure for every comparison: each predicate is the set of orderings it accepts (a bit each
/// for less, equal, greater; unordered NaN pairs accept none), so each dtype compiles one broadcast
/// loop rather than five.
fn compare<T: Elem + PartialOrd>(pred: Pred, dt: DType, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (less, equal, greater) = (1u8, 2u8, 4u8);
    let accepts = match pred {
        Pred::Equal => equal,
        Pred::Less => less,
        Pred::Greater => greater,
        Pred::LessOrEqual => less | equal,
        Pred::GreaterOrEqual => greater | equal,
        _ => bail!(Unsupported, "{} does not take {dt} inputs", pred.op_name()),
    };
    broadcast::binary(a, b, |x: &T, y: &T| {
        let bit = match x.partial_cmp(y) {
            Some(Ordering::Less) => less,
            Some(Ordering::Equal) => equal,
            Some(Ordering::Greater) => greater,
            None => 0,
        };
        accepts & bit != 0
    })
}

#[derive(Debug)]
struct NotOp;

impl Op for NotOp {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        map_fact("Not", input(inputs, 0)?, |d| d == DType::Bool, None)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        check_dtype("Not", Some(x.dtype()), |d| d == DType::Bool)?;
        Ok(vec![map(x, |v: bool| !v)?])
    }
}

/// `condition ? x : y`, the three broadcast together; x and y may have any one dtype.
#[derive(Debug)]
struct Where;

impl Op for Where {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (c, x, y) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        check_dtype("Where (condition)", c.dtype, |d| d == DType::Bool)?;
        let dt = common_dtype("Where", [x.dtype, y.dtype])?;
        Ok(vec![broadcast_fact(dt, &[c, x, y])?])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (c, x, y) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        check_dtype("Where (condition)", Some(c.dtype()), |d| d == DType::Bool)?;
        let dt = x.dtype();
        common_dtype("Where", [Some(dt), Some(y.dtype())])?;
        // Where only moves elements: it compiles once per element width ([`Word`]); bool, which
        // words do not view, has its own copy.
        let out = match dt {
            DType::Bool => broadcast::ternary(c, x, y, |&c: &bool, &x: &bool, &y: &bool| if c { x } else { y })?,
            _ => dispatch_words!(dt; W => select::<W>(c, x, y)?),
        };
        Ok(vec![out])
    }
}

fn select<W: Word>(c: &Tensor, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let out_shape = broadcast_shapes(&broadcast_shapes(c.shape(), x.shape())?, y.shape())?;
    let (cv, xv, yv) = (c.as_slice::<bool>()?, x.as_words::<W>()?, y.as_words::<W>()?);
    let mut out = with_capacity(checked_len(&out_shape, x.dtype())?)?;
    broadcast::for_each_run([c.shape(), x.shape(), y.shape()], &out_shape, &mut |_, [i, j, k], [si, sj, sk], len| {
        out.extend((0..len).map(|t| if cv[i + t * si] { xv[j + t * sj].clone() } else { yv[k + t * sk].clone() }));
    });
    Tensor::from_words(x.dtype(), out_shape, out)
}

#[cfg(test)]
mod tests {
    use super::super::binary::testing::{infer, run, run_at, v, values};
    use crate::ir::{Attr, DType, Dim, Fact, Tensor};
    use crate::ErrorKind;
    use half::f16;

    fn bools(op: &str, a: &Tensor, b: &Tensor) -> Vec<bool> {
        values(&run(op, vec![], &[a, b]).unwrap())
    }

    #[test]
    fn comparisons_across_dtypes() {
        let a = v(vec![1f32, 2., f32::NAN]);
        let b = v(vec![2f32, 2., f32::NAN]);
        assert_eq!(bools("Equal", &a, &b), [false, true, false]);
        assert_eq!(bools("Less", &a, &b), [true, false, false]);
        assert_eq!(bools("Greater", &a, &b), [false, false, false]);
        assert_eq!(bools("LessOrEqual", &a, &b), [true, true, false]);
        assert_eq!(bools("GreaterOrEqual", &a, &b), [false, true, false]);
        let (a, b) = (v(vec![u64::MAX, 3]), v(vec![1u64, 3]));
        assert_eq!(bools("Greater", &a, &b), [true, false]);
        let (a, b) = (v(vec![f16::from_f32(-1.0)]), v(vec![f16::from_f32(0.5)]));
        assert_eq!(bools("Less", &a, &b), [true]);
        assert_eq!(bools("Equal", &v(vec![true, false]), &v(vec![true, true])), [true, false]);
        // Zeros of both signs are equal; NaN against a number is unordered too.
        let (a, b) = (v(vec![-0.0f64, f64::NAN, 1.0]), v(vec![0.0f64, 1.0, f64::NAN]));
        assert_eq!(bools("Equal", &a, &b), [true, false, false]);
        assert_eq!(bools("GreaterOrEqual", &a, &b), [true, false, false]);
        let (a, b) = (v(vec![i64::MIN, i64::MAX]), v(vec![i64::MAX, i64::MAX - 1]));
        assert_eq!(bools("Less", &a, &b), [true, false]);
        let (a, b) = (v(vec!["b".to_string(), "a".into()]), v(vec!["a".to_string(), "a".into()]));
        assert_eq!(bools("Equal", &a, &b), [false, true]);
    }

    #[test]
    fn equal_strings_broadcast() {
        let a = v(vec!["string1".to_string(), "string2".to_string()]);
        let b = v(vec!["string1".to_string()]);
        assert_eq!(bools("Equal", &a, &b), [true, false]);
        let e = run("Less", vec![], &[&a, &b]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
    }

    #[test]
    fn comparison_broadcasts_rows() {
        let a = Tensor::new(vec![2, 2], vec![1i32, 5, 3, 2]).unwrap();
        let b = v(vec![2i32, 4]);
        let c = run("Greater", vec![], &[&a, &b]).unwrap();
        assert_eq!(c.shape(), &[2, 2]);
        assert_eq!(values::<bool>(&c), [false, true, true, false]);
    }

    #[test]
    fn boolean_logic() {
        let a = v(vec![true, true, false, false]);
        let b = v(vec![true, false, true, false]);
        assert_eq!(bools("And", &a, &b), [true, false, false, false]);
        assert_eq!(bools("Or", &a, &b), [true, true, true, false]);
        assert_eq!(bools("Xor", &a, &b), [false, true, true, false]);
        assert_eq!(values::<bool>(&run("Not", vec![], &[&a]).unwrap()), [false, false, true, true]);
        let scalar = Tensor::scalar(true);
        assert_eq!(bools("And", &a, &scalar), [true, true, false, false]);
        let legacy = vec![("broadcast", Attr::Int(1))];
        assert_eq!(values::<bool>(&run_at("Or", 1, legacy, &[&b, &scalar]).unwrap()), [true; 4]);
    }

    #[test]
    fn where_selects_with_broadcast() {
        let c = Tensor::new(vec![2, 2], vec![true, false, true, true]).unwrap();
        let x = Tensor::new(vec![2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let y = Tensor::new(vec![2, 2], vec![9f32, 8., 7., 6.]).unwrap();
        assert_eq!(values::<f32>(&run("Where", vec![], &[&c, &x, &y]).unwrap()), [1., 8., 3., 4.]);
        let c = Tensor::new(vec![2, 1], vec![true, false]).unwrap();
        let x = v(vec!["a".to_string(), "b".to_string()]);
        let y = Tensor::scalar("z".to_string());
        let z = run("Where", vec![], &[&c, &x, &y]).unwrap();
        assert_eq!(z.shape(), &[2, 2]);
        assert_eq!(values::<String>(&z), ["a", "b", "z", "z"]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let e = run("And", vec![], &[&v(vec![1i32]), &v(vec![1i32])]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(run("Not", vec![], &[&v(vec![1f32])]).is_err());
        let e = run("Equal", vec![], &[&v(vec![1i32, 2]), &v(vec![1i32, 2, 3])]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
        assert!(run("Equal", vec![], &[&v(vec![1i32]), &v(vec![1i64])]).is_err());
        let (x, y) = (v(vec![1f32]), v(vec![2f32]));
        assert!(run("Where", vec![], &[&v(vec![1u8]), &x, &y]).is_err());
        assert!(run("Where", vec![], &[&v(vec![true]), &x, &v(vec![2f64])]).is_err());
    }

    #[test]
    fn infer_gives_bool_and_broadcast_shape() {
        let n = Dim::Symbol("N".into());
        let a = Fact::new(DType::F32, vec![n.clone(), Dim::Known(4)]);
        let b = Fact::new(DType::F32, vec![Dim::Known(4)]);
        let out = infer("LessOrEqual", &[&a, &b]).unwrap();
        assert_eq!((out.dtype, out.shape), (Some(DType::Bool), Some(vec![n.clone(), Dim::Known(4)])));
        let c = Fact::new(DType::Bool, vec![Dim::Known(1), Dim::Known(1)]);
        let out = infer("Where", &[&c, &Fact::of_dtype(DType::I64), &Fact::unknown()]).unwrap();
        assert_eq!((out.dtype, out.shape), (Some(DType::I64), None));
        let x = Fact::new(DType::I64, vec![Dim::Known(3)]);
        let out = infer("Where", &[&c, &x, &x]).unwrap();
        assert_eq!(out.shape, Some(vec![Dim::Known(1), Dim::Known(3)]));
        assert!(infer("Where", &[&x, &x, &x]).is_err());
    }
}
