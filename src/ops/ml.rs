//! The `ai.onnx.ml` domain's elementwise and lookup ops: ArrayFeatureExtractor, Binarizer and
//! LabelEncoder (opsets 1, 2 and 4). TreeEnsemble is in `tree_ensemble.rs`.

use super::{input, BuildCtx, Op, Registry};
use crate::ir::tensor::checked_len;
use crate::ir::{DType, Dim, Elem, Fact, Scalar, Tensor};
use crate::{bail, dispatch, Result};
use std::collections::HashMap;

pub const ML: &str = "ai.onnx.ml";

pub fn register(r: &mut Registry) {
    r.add_in(ML, "ArrayFeatureExtractor", |_| Ok(Box::new(ArrayFeatureExtractor)));
    r.add_in(ML, "Binarizer", |ctx| Ok(Box::new(Binarizer { threshold: ctx.attrs.float_or("threshold", 0.0)? })));
    r.add_in(ML, "LabelEncoder", build_label_encoder);
}

/// Picks `X[..., indices]` from the last axis; a 1-D `X` gives a `[1, k]` result (as onnxruntime).
#[derive(Debug)]
struct ArrayFeatureExtractor;

impl Op for ArrayFeatureExtractor {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (x, y) = (input(inputs, 0)?, input(inputs, 1)?);
        let picked = match &y.shape {
            Some(s) => s
                .iter()
                .try_fold(1usize, |n, d| d.known().map(|d| n.saturating_mul(d)))
                .map_or(Dim::Unknown, Dim::Known),
            None => Dim::Unknown,
        };
        let shape = match x.shape.as_deref() {
            None => None,
            Some([]) => bail!(Shape, "ArrayFeatureExtractor needs an input of rank 1 or more, got a scalar"),
            Some([_]) => Some(vec![Dim::Known(1), picked]),
            Some([outer @ .., _]) => Some(outer.iter().cloned().chain([picked]).collect()),
        };
        Ok(vec![Fact { dtype: x.dtype, shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, y) = (input(inputs, 0)?, input(inputs, 1)?);
        let Some((&last, outer)) = x.shape().split_last() else {
            bail!(Shape, "ArrayFeatureExtractor needs an input of rank 1 or more, got a scalar")
        };
        let mut indices = Vec::with_capacity(y.len());
        for i in y.to_i64_vec()? {
            match usize::try_from(i) {
                Ok(i) if i < last => indices.push(i),
                _ => bail!(Runtime, "ArrayFeatureExtractor index {i} out of range for a last axis of size {last}"),
            }
        }
        let mut shape = if outer.is_empty() { vec![1] } else { outer.to_vec() };
        shape.push(indices.len());
        let out = dispatch!(x.dtype(); T => pick_columns::<T>(x, &indices, last, shape)?;
            all; else => bail!(Unsupported, "ArrayFeatureExtractor does not take {}", x.dtype()));
        Ok(vec![out])
    }
}

/// `x[..., indices]` over rows of `last` elements, with `indices` already checked against `last`.
fn pick_columns<T: Elem>(x: &Tensor, indices: &[usize], last: usize, shape: Vec<usize>) -> Result<Tensor> {
    let n = checked_len(&shape, x.dtype())?;
    let mut out: Vec<T> = crate::ir::limits::with_capacity(n)?;
    for row in x.as_slice::<T>()?.chunks_exact(last.max(1)) {
        out.extend(indices.iter().map(|&i| row[i].clone()));
    }
    Tensor::new(shape, out)
}

/// 1 where `x > threshold`, else 0, in the input's type.
#[derive(Debug)]
struct Binarizer {
    threshold: f32,
}

impl Op for Binarizer {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        super::same_as_input(inputs)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let t = f64::from(self.threshold);
        let y = dispatch!(x.dtype(); T => {
            let v = x.as_slice::<T>()?.iter().map(|&v| if v.to_f64() > t { T::one() } else { T::zero() }).collect();
            Tensor::new(x.shape().to_vec(), v)?
        }; F32 | F64 | I64 | I32; else => bail!(Unsupported, "Binarizer does not take {}", x.dtype()));
        Ok(vec![y])
    }
}

/// The keys of one LabelEncoder mapping, each to its position in the values.
#[derive(Debug)]
enum Keys {
    Strings(HashMap<String, usize>),
    Ints(HashMap<i64, usize>),
    /// By [`float_key`], so that every NaN matches every NaN and -0 matches 0.
    Floats(HashMap<u64, usize>),
}

fn float_key(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else if v == 0.0 {
        0
    } else {
        v.to_bits()
    }
}

/// Keys, values (a 1-D tensor) and the default (one element of the values' dtype).
#[derive(Debug)]
struct Mapping {
    keys: Keys,
    values: Tensor,
    default: Tensor,
}

impl Mapping {
    /// A later repeat of a key wins, as the spec says.
    fn new(keys: Keys, values: Tensor, default: Tensor) -> Result<Mapping> {
        let n = match &keys {
            Keys::Strings(m) => m.values().max(),
            Keys::Ints(m) => m.values().max(),
            Keys::Floats(m) => m.values().max(),
        };
        if n.is_some_and(|&n| n >= values.len()) {
            bail!(InvalidModel, "LabelEncoder has more keys than values ({})", values.len());
        }
        Ok(Mapping { keys, values, default })
    }

    fn takes(&self, dtype: DType) -> bool {
        match self.keys {
            Keys::Strings(_) => dtype == DType::String,
            Keys::Ints(_) => matches!(dtype, DType::I64 | DType::I32 | DType::I16),
            Keys::Floats(_) => matches!(dtype, DType::F32 | DType::F64),
        }
    }

    fn positions(&self, x: &Tensor) -> Result<Vec<Option<usize>>> {
        Ok(match &self.keys {
            Keys::Strings(m) => x.as_slice::<String>()?.iter().map(|s| m.get(s).copied()).collect(),
            Keys::Ints(m) => x.to_i64_vec()?.iter().map(|k| m.get(k).copied()).collect(),
            Keys::Floats(m) => x.to_f64_vec()?.iter().map(|&k| m.get(&float_key(k)).copied()).collect(),
        })
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let positions = self.positions(x)?;
        dispatch!(self.values.dtype(); T => self.gather::<T>(x.shape(), &positions);
            all; else => bail!(Unsupported, "LabelEncoder values of type {}", self.values.dtype()))
    }

    /// The value at each position, or the default where there is none.
    fn gather<T: Elem>(&self, shape: &[usize], positions: &[Option<usize>]) -> Result<Tensor> {
        let values = self.values.as_slice::<T>()?;
        let Some(default) = self.default.as_slice::<T>()?.first() else {
            bail!(InvalidModel, "LabelEncoder has an empty default")
        };
        let out: Vec<T> = positions.iter().map(|p| p.map_or(default, |i| &values[i]).clone()).collect();
        Tensor::new(shape.to_vec(), out)
    }
}

/// Opset 1 maps strings to int64 or int64 to strings, depending on the input: one mapping each way.
#[derive(Debug)]
struct LabelEncoder {
    mappings: Vec<Mapping>,
}

impl LabelEncoder {
    fn mapping_for(&self, dtype: DType) -> Result<&Mapping> {
        match self.mappings.iter().find(|m| m.takes(dtype)) {
            Some(m) => Ok(m),
            None => bail!(Shape, "LabelEncoder's keys do not take {dtype} input"),
        }
    }
}

impl Op for LabelEncoder {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let dtype = match (x.dtype, self.mappings.as_slice()) {
            (Some(d), _) => self.mapping_for(d)?.values.dtype(),
            (None, [only]) => only.values.dtype(),
            (None, _) => return Ok(vec![Fact { dtype: None, shape: x.shape.clone(), value: None }]),
        };
        Ok(vec![Fact { dtype: Some(dtype), shape: x.shape.clone(), value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        Ok(vec![self.mapping_for(x.dtype())?.apply(x)?])
    }
}

fn positions<K: std::hash::Hash + Eq>(keys: impl IntoIterator<Item = K>) -> HashMap<K, usize> {
    keys.into_iter().enumerate().map(|(i, k)| (k, i)).collect()
}

/// The spec's default when no default attribute is given: "_Unused", -1 or -0.0 by type.
fn spec_default(dtype: DType) -> Result<Tensor> {
    match dtype {
        DType::String => Ok(Tensor::scalar("_Unused".to_string())),
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => Tensor::scalar(-0.0f64).cast_numeric(dtype),
        _ => Tensor::scalar(-1i64).cast_numeric(dtype),
    }
}

fn build_label_encoder(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    if ctx.opset < 2 {
        let classes = a.strings_or("classes_strings", vec![])?;
        let n = classes.len() as i64;
        let to_int = Mapping::new(
            Keys::Strings(positions(classes.iter().cloned())),
            Tensor::vector((0..n).collect::<Vec<i64>>()),
            Tensor::scalar(a.int_or("default_int64", -1)?),
        )?;
        let to_string = Mapping::new(
            Keys::Ints(positions(0..n)),
            Tensor::vector(classes),
            Tensor::scalar(a.string_or("default_string", "_Unused".into())?),
        )?;
        return Ok(Box::new(LabelEncoder { mappings: vec![to_int, to_string] }));
    }

    let mut keys = vec![];
    if let Some(k) = a.strings("keys_strings")? {
        keys.push(Keys::Strings(positions(k)));
    }
    if let Some(k) = a.ints("keys_int64s")? {
        keys.push(Keys::Ints(positions(k)));
    }
    if let Some(k) = a.floats("keys_floats")? {
        keys.push(Keys::Floats(positions(k.iter().map(|&v| float_key(f64::from(v))))));
    }
    if let Some(t) = a.tensor("keys_tensor")? {
        keys.push(match t.dtype() {
            DType::String => Keys::Strings(positions(t.as_slice::<String>()?.iter().cloned())),
            DType::I64 | DType::I32 | DType::I16 => Keys::Ints(positions(t.to_i64_vec()?)),
            DType::F32 | DType::F64 => Keys::Floats(positions(t.to_f64_vec()?.into_iter().map(float_key))),
            d => bail!(Unsupported, "LabelEncoder keys_tensor of type {d} is not supported"),
        });
    }
    let mut values = vec![];
    if let Some(v) = a.strings("values_strings")? {
        values.push((Tensor::vector(v), Tensor::scalar(a.string_or("default_string", "_Unused".into())?)));
    }
    if let Some(v) = a.ints("values_int64s")? {
        values.push((Tensor::vector(v), Tensor::scalar(a.int_or("default_int64", -1)?)));
    }
    if let Some(v) = a.floats("values_floats")? {
        values.push((Tensor::vector(v), Tensor::scalar(a.float_or("default_float", -0.0)?)));
    }
    if let Some(v) = a.tensor("values_tensor")? {
        if !matches!(v.dtype(), DType::String | DType::I64 | DType::I32 | DType::I16 | DType::F32 | DType::F64) {
            bail!(Unsupported, "LabelEncoder values_tensor of type {} is not supported", v.dtype());
        }
        let default = match a.tensor("default_tensor")? {
            Some(d) if d.dtype() != v.dtype() || d.len() != 1 => bail!(
                InvalidModel,
                "LabelEncoder default_tensor must be one {} value, got {} of shape {:?}",
                v.dtype(),
                d.dtype(),
                d.shape()
            ),
            Some(d) => d.as_ref().clone().reshape(vec![])?,
            None => spec_default(v.dtype())?,
        };
        values.push((v.as_ref().clone().reshape(vec![v.len()])?, default));
    }
    let (keys, (values, default)) = match (keys.len(), values.len()) {
        (1, 1) => (keys.remove(0), values.remove(0)),
        (k, v) => {
            bail!(InvalidModel, "LabelEncoder needs exactly one keys_* and one values_* attribute, got {k} and {v}")
        }
    };
    let key_count = match &keys {
        Keys::Strings(m) => m.values().max(),
        Keys::Ints(m) => m.values().max(),
        Keys::Floats(m) => m.values().max(),
    }
    .map_or(0, |&i| i + 1);
    if key_count != values.len() {
        bail!(InvalidModel, "LabelEncoder has {key_count} keys but {} values", values.len());
    }
    Ok(Box::new(LabelEncoder { mappings: vec![Mapping::new(keys, values, default)?] }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ir::{Attr, Attributes};
    use crate::ErrorKind;
    use std::sync::Arc;

    /// Builds an op of `domain` through the registry, as the importer would.
    pub fn build_in(
        domain: &str,
        op_type: &str,
        opset: i64,
        attrs: Vec<(&str, Attr)>,
        num_inputs: usize,
        num_outputs: usize,
    ) -> Result<Box<dyn Op>> {
        let attrs = Attributes::new(attrs.into_iter().map(|(n, a)| (n.to_string(), a)).collect());
        let ctx = BuildCtx { op_type, domain, opset, attrs: &attrs, num_inputs, num_outputs };
        let builder = crate::ops::registry().get(domain, op_type).expect("registered");
        builder(&ctx)
    }

    fn run(op_type: &str, opset: i64, attrs: Vec<(&str, Attr)>, inputs: &[&Tensor]) -> Result<Tensor> {
        let op = build_in(ML, op_type, opset, attrs, inputs.len(), 1)?;
        let inputs: Vec<Option<&Tensor>> = inputs.iter().map(|t| Some(*t)).collect();
        Ok(op.eval(&inputs)?.remove(0))
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    // Expected values from the ONNX node tests and onnx.reference.
    #[test]
    fn array_feature_extractor_picks_last_axis() {
        let x = Tensor::new(vec![3, 4], (0..12).map(|v| v as f32).collect()).unwrap();
        let y = run("ArrayFeatureExtractor", 1, vec![], &[&x, &Tensor::vector(vec![0i64, 1])]).unwrap();
        assert_eq!(y, Tensor::new(vec![3, 2], vec![0.0f32, 1., 4., 5., 8., 9.]).unwrap());
        let x = Tensor::vector(strings(&["a", "b", "c"]));
        let y = run("ArrayFeatureExtractor", 1, vec![], &[&x, &Tensor::vector(vec![2i64, 2, 0])]).unwrap();
        assert_eq!(y, Tensor::new(vec![1, 3], strings(&["c", "c", "a"])).unwrap());
        let e = run("ArrayFeatureExtractor", 1, vec![], &[&x, &Tensor::vector(vec![3i64])]).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::Runtime, "ArrayFeatureExtractor index 3 out of range for a last axis of size 3")
        );
        assert!(run("ArrayFeatureExtractor", 1, vec![], &[&x, &Tensor::vector(vec![-1i64])]).is_err());
    }

    #[test]
    fn binarizer_thresholds() {
        let x = Tensor::vector(vec![-1.0f32, 1.0, 1.5, f32::NAN]);
        let y = run("Binarizer", 1, vec![("threshold", Attr::Float(1.0))], &[&x]).unwrap();
        assert_eq!(y, Tensor::vector(vec![0.0f32, 0.0, 1.0, 0.0]));
        let y = run("Binarizer", 1, vec![], &[&Tensor::vector(vec![-2i64, 0, 3])]).unwrap();
        assert_eq!(y, Tensor::vector(vec![0i64, 0, 1]));
        assert!(run("Binarizer", 1, vec![], &[&Tensor::vector(strings(&["a"]))]).is_err());
    }

    #[test]
    fn label_encoder_lists_and_tensors() {
        let x = Tensor::vector(strings(&["a", "b", "d", "c", "g"]));
        let keys = || ("keys_strings", Attr::Strings(strings(&["a", "b", "c"])));
        let attrs = vec![keys(), ("values_int64s", Attr::Ints(vec![0, 1, 2])), ("default_int64", Attr::Int(42))];
        assert_eq!(run("LabelEncoder", 4, attrs, &[&x]).unwrap(), Tensor::vector(vec![0i64, 1, 42, 2, 42]));
        let attrs = vec![keys(), ("values_int64s", Attr::Ints(vec![0, 1, 2]))];
        assert_eq!(run("LabelEncoder", 2, attrs, &[&x]).unwrap(), Tensor::vector(vec![0i64, 1, -1, 2, -1]));
        let attrs = vec![
            ("keys_tensor", Attr::Tensor(Arc::new(Tensor::vector(strings(&["a", "b", "c"]))))),
            ("values_tensor", Attr::Tensor(Arc::new(Tensor::vector(vec![0i16, 1, 2])))),
            ("default_tensor", Attr::Tensor(Arc::new(Tensor::vector(vec![42i16])))),
        ];
        assert_eq!(run("LabelEncoder", 4, attrs, &[&x]).unwrap(), Tensor::vector(vec![0i16, 1, 42, 2, 42]));
        // Float keys: NaN matches NaN; the default float is -0.0; a repeated key's last value wins.
        let attrs = vec![
            ("keys_floats", Attr::Floats(vec![f32::NAN, 1.5, 1.5])),
            ("values_strings", Attr::Strings(strings(&["nan", "first", "second"]))),
        ];
        let y = run("LabelEncoder", 2, attrs, &[&Tensor::vector(vec![1.5f32, f32::NAN, 2.0])]).unwrap();
        assert_eq!(y, Tensor::vector(strings(&["second", "nan", "_Unused"])));
        let attrs = vec![("keys_int64s", Attr::Ints(vec![7])), ("values_floats", Attr::Floats(vec![0.5]))];
        let y = run("LabelEncoder", 2, attrs, &[&Tensor::vector(vec![7i64, 8])]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap()[0], 0.5);
        assert!(y.as_slice::<f32>().unwrap()[1].is_sign_negative());
    }

    #[test]
    fn label_encoder_opset1_maps_both_ways() {
        let attrs = || vec![("classes_strings", Attr::Strings(strings(&["x", "y"])))];
        let y = run("LabelEncoder", 1, attrs(), &[&Tensor::vector(strings(&["y", "z"]))]).unwrap();
        assert_eq!(y, Tensor::vector(vec![1i64, -1]));
        let y = run("LabelEncoder", 1, attrs(), &[&Tensor::vector(vec![0i64, 5])]).unwrap();
        assert_eq!(y, Tensor::vector(strings(&["x", "_Unused"])));
    }

    #[test]
    fn label_encoder_rejects_bad_attributes_and_inputs() {
        let e = run("LabelEncoder", 2, vec![("keys_int64s", Attr::Ints(vec![1, 2]))], &[]).unwrap_err();
        assert!(e.message.contains("exactly one"), "{e}");
        let attrs = vec![("keys_int64s", Attr::Ints(vec![1, 2])), ("values_int64s", Attr::Ints(vec![1]))];
        assert!(run("LabelEncoder", 2, attrs, &[]).unwrap_err().message.contains("2 keys but 1 values"));
        let attrs = vec![("keys_int64s", Attr::Ints(vec![1])), ("values_int64s", Attr::Ints(vec![1]))];
        let e = run("LabelEncoder", 2, attrs, &[&Tensor::vector(strings(&["a"]))]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
    }
}
