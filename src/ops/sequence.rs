//! Sequence ops: SequenceConstruct, SequenceEmpty, SequenceAt, SequenceInsert, SequenceErase,
//! SequenceLength, SplitToSequence, ConcatFromSequence and SequenceMap. They work on [`Data`] and
//! run through [`Op::eval_data`]; positions come from data and are bounds-checked by [`Sequence`].

use super::control::{value_input, Body};
use super::reshape::numel;
use super::{input, opt_input, runs_on_data, BuildCtx, Op, Registry};
use crate::error::ResultExt;
use crate::ir::interp::Interpreter;
use crate::ir::limits::check_alloc;
use crate::ir::shape::normalize_axis;
use crate::ir::tensor::checked_len;
use crate::ir::{Attr, Attributes, DType, Data, DataRef, Fact, Graph, GraphExec, Sequence, Tensor};
use crate::{bail, dispatch_words, err, Result};
use std::sync::Arc;

pub fn register(r: &mut Registry) {
    r.add("SequenceConstruct", |_| Ok(Box::new(SequenceConstruct)));
    r.add("SequenceEmpty", |ctx| {
        let code = ctx.attrs.int_or("dtype", DType::F32.onnx_code() as i64)?;
        let dtype = i32::try_from(code)
            .ok()
            .and_then(DType::from_onnx_code)
            .ok_or_else(|| err!(Unsupported, "SequenceEmpty: dtype {code} is not supported"))?;
        Ok(Box::new(SequenceEmpty { dtype }))
    });
    r.add("SequenceAt", |_| Ok(Box::new(SequenceAt)));
    r.add("SequenceInsert", |_| Ok(Box::new(SequenceInsert)));
    r.add("SequenceErase", |_| Ok(Box::new(SequenceErase)));
    r.add("SequenceLength", |_| Ok(Box::new(SequenceLength)));
    r.add("SplitToSequence", |ctx| {
        let axis = ctx.attrs.int_or("axis", 0)?;
        let keepdims = ctx.attrs.int_or("keepdims", 1)? != 0;
        Ok(Box::new(SplitToSequence { axis, keepdims }))
    });
    r.add("ConcatFromSequence", |ctx| {
        let axis = ctx.attrs.req_int("axis")?;
        let new_axis = match ctx.attrs.int_or("new_axis", 0)? {
            0 => false,
            1 => true,
            v => bail!(InvalidModel, "ConcatFromSequence: new_axis must be 0 or 1, got {v}"),
        };
        let attrs = Attributes::new(vec![("axis".to_string(), Attr::Int(axis))]);
        let concat_ctx = BuildCtx { op_type: "Concat", attrs: &attrs, num_inputs: 1, num_outputs: 1, ..*ctx };
        let build_concat =
            super::registry().get("", "Concat").ok_or_else(|| err!(Runtime, "Concat is not registered"))?;
        let concat = build_concat(&concat_ctx)?;
        Ok(Box::new(ConcatFromSequence { axis, new_axis, concat }))
    });
    r.add("SequenceMap", SequenceMap::build);
}

/// The fact of a sequence whose elements are `dtype` tensors.
fn seq_fact(dtype: Option<DType>) -> Fact {
    Fact { dtype, shape: None, value: None }
}

/// The one element of a position (or split) tensor.
fn scalar_i64(t: &Tensor, what: &str) -> Result<i64> {
    if t.len() != 1 {
        bail!(InvalidInput, "{what} must have one element, it has shape {:?}", t.shape());
    }
    if !matches!(t.dtype(), DType::I32 | DType::I64) {
        bail!(InvalidInput, "{what} must be int32 or int64, got {}", t.dtype());
    }
    Ok(t.to_i64_vec()?[0])
}

fn seq_input<'a>(inputs: &[Option<&'a Data>], i: usize) -> Result<&'a Sequence> {
    input(inputs, i)?.as_sequence().context(|| format!("input {i}"))
}

fn tensor_input<'a>(inputs: &[Option<&'a Data>], i: usize) -> Result<&'a Tensor> {
    input(inputs, i)?.as_tensor().context(|| format!("input {i}"))
}

fn opt_position(inputs: &[Option<&Data>], i: usize) -> Result<Option<i64>> {
    opt_input(inputs, i).map(|d| scalar_i64(d.as_tensor()?, "the position")).transpose()
}

#[derive(Debug)]
struct SequenceConstruct;

impl Op for SequenceConstruct {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        Ok(vec![seq_fact(inputs.iter().flatten().find_map(|f| f.dtype))])
    }

    runs_on_data!("SequenceConstruct");

    fn eval_data(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>> {
        let items = (0..inputs.len()).map(|i| tensor_input(inputs, i).cloned()).collect::<Result<Vec<_>>>()?;
        let Some(first) = items.first() else { bail!(InvalidModel, "SequenceConstruct needs at least one input") };
        Ok(vec![Data::Sequence(Sequence::new(first.dtype(), items)?)])
    }
}

#[derive(Debug)]
struct SequenceEmpty {
    dtype: DType,
}

impl Op for SequenceEmpty {
    fn infer(&self, _: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        Ok(vec![seq_fact(Some(self.dtype))])
    }

    runs_on_data!("SequenceEmpty");

    fn eval_data(&self, _: &[Option<&Data>]) -> Result<Vec<Data>> {
        Ok(vec![Data::Sequence(Sequence::empty(self.dtype))])
    }
}

#[derive(Debug)]
struct SequenceAt;

impl Op for SequenceAt {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        Ok(vec![seq_fact(input(inputs, 0)?.dtype)])
    }

    runs_on_data!("SequenceAt");

    fn eval_data(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>> {
        let seq = seq_input(inputs, 0)?;
        let position = scalar_i64(tensor_input(inputs, 1)?, "the position")?;
        Ok(vec![Data::Tensor(seq.get(position)?.clone())])
    }
}

#[derive(Debug)]
struct SequenceInsert;

impl Op for SequenceInsert {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        Ok(vec![seq_fact(input(inputs, 0)?.dtype.or(opt_input(inputs, 1).and_then(|f| f.dtype)))])
    }

    runs_on_data!("SequenceInsert");

    fn eval_data(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>> {
        let mut seq = seq_input(inputs, 0)?.clone();
        let t = tensor_input(inputs, 1)?;
        seq.insert(opt_position(inputs, 2)?, t.clone())?;
        Ok(vec![Data::Sequence(seq)])
    }
}

#[derive(Debug)]
struct SequenceErase;

impl Op for SequenceErase {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        Ok(vec![seq_fact(input(inputs, 0)?.dtype)])
    }

    runs_on_data!("SequenceErase");

    fn eval_data(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>> {
        let mut seq = seq_input(inputs, 0)?.clone();
        seq.remove(opt_position(inputs, 1)?)?;
        Ok(vec![Data::Sequence(seq)])
    }
}

#[derive(Debug)]
struct SequenceLength;

impl Op for SequenceLength {
    fn infer(&self, _: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        Ok(vec![Fact::concrete(DType::I64, &[])])
    }

    runs_on_data!("SequenceLength");

    fn eval_data(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>> {
        Ok(vec![Data::Tensor(Tensor::scalar(seq_input(inputs, 0)?.len() as i64))])
    }
}

#[derive(Debug)]
struct SplitToSequence {
    axis: i64,
    keepdims: bool,
}

impl SplitToSequence {
    /// The length of each piece along an axis of size `dim`: `split` is one chunk length (the
    /// last piece may be shorter) or every piece's length; without it, pieces of length 1.
    fn lengths(dim: usize, rank: usize, split: Option<&Tensor>) -> Result<Vec<usize>> {
        let Some(split) = split else {
            check_pieces(dim, rank)?;
            return Ok(vec![1; dim]);
        };
        if !matches!(split.dtype(), DType::I32 | DType::I64) {
            bail!(InvalidInput, "split must be int32 or int64, got {}", split.dtype());
        }
        let values = split.to_i64_vec()?;
        if split.rank() == 0 {
            let chunk = usize::try_from(values[0]).ok().filter(|&c| c > 0);
            let Some(chunk) = chunk else { bail!(InvalidInput, "split {} must be positive", values[0]) };
            check_pieces(dim / chunk + 1, rank)?;
            let mut lengths = vec![chunk; dim / chunk];
            if !dim.is_multiple_of(chunk) {
                lengths.push(dim % chunk);
            }
            return Ok(lengths);
        }
        if split.rank() != 1 {
            bail!(InvalidInput, "split must be a scalar or 1-D, it has shape {:?}", split.shape());
        }
        let lengths = values
            .iter()
            .map(|&s| usize::try_from(s).map_err(|_| err!(InvalidInput, "negative length in split {values:?}")))
            .collect::<Result<Vec<_>>>()?;
        if lengths.iter().try_fold(0usize, |a, &s| a.checked_add(s)) != Some(dim) {
            bail!(InvalidInput, "split {values:?} does not add up to the axis length {dim}");
        }
        Ok(lengths)
    }
}

/// Checks that a sequence of `count` tensors of rank `rank` fits under the size limit: the pieces
/// of an empty tensor hold no data, but a dim of 2^40 would still make 2^40 of them.
fn check_pieces(count: usize, rank: usize) -> Result<()> {
    let piece_bytes = std::mem::size_of::<Tensor>() + rank * std::mem::size_of::<usize>();
    check_alloc(count, piece_bytes, "the sequence's tensors")
}

/// `x` cut along `axis` into consecutive pieces of the given lengths (which add up to the dim).
fn split_along(x: &Tensor, axis: usize, lengths: &[usize]) -> Result<Vec<Tensor>> {
    let shape = x.shape();
    check_pieces(lengths.len(), shape.len())?;
    let dim = shape[axis];
    let (outer, inner) = (numel(&shape[..axis]), numel(&shape[axis + 1..]));
    let mut pieces = Vec::with_capacity(lengths.len());
    let mut start = 0;
    for &len in lengths {
        let mut piece_shape = shape.to_vec();
        piece_shape[axis] = len;
        let n = checked_len(&piece_shape, x.dtype())?;
        let piece = dispatch_words!(x.dtype(); W => {
            let src = x.as_words::<W>()?;
            let mut data: Vec<W> = Vec::with_capacity(n);
            for o in 0..outer {
                let from = (o * dim + start) * inner;
                data.extend_from_slice(&src[from..from + len * inner]);
            }
            Tensor::from_words(x.dtype(), piece_shape, data)?
        });
        pieces.push(piece);
        start += len;
    }
    Ok(pieces)
}

impl Op for SplitToSequence {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        Ok(vec![seq_fact(input(inputs, 0)?.dtype)])
    }

    runs_on_data!("SplitToSequence");

    fn eval_data(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>> {
        let x = tensor_input(inputs, 0)?;
        let split = opt_input(inputs, 1).map(|d| d.as_tensor()).transpose()?;
        let axis = normalize_axis(self.axis, x.rank())?;
        let lengths = Self::lengths(x.shape()[axis], x.rank(), split)?;
        let mut pieces = split_along(x, axis, &lengths)?;
        if split.is_none() && !self.keepdims {
            let mut shape = x.shape().to_vec();
            shape.remove(axis);
            pieces = pieces.into_iter().map(|p| p.reshape(shape.clone())).collect::<Result<_>>()?;
        }
        Ok(vec![Data::Sequence(Sequence::new(x.dtype(), pieces)?)])
    }
}

#[derive(Debug)]
struct ConcatFromSequence {
    axis: i64,
    new_axis: bool,
    /// The Concat kernel, with the same axis.
    concat: Box<dyn Op>,
}

impl Op for ConcatFromSequence {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        Ok(vec![seq_fact(input(inputs, 0)?.dtype)])
    }

    runs_on_data!("ConcatFromSequence");

    fn eval_data(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>> {
        let seq = seq_input(inputs, 0)?;
        let Some(first) = seq.items().first() else { bail!(InvalidInput, "cannot concatenate an empty sequence") };
        let outputs = if self.new_axis {
            // A new axis anywhere in 0..=rank: each item gains a dim of 1 there, then Concat joins them.
            let at = normalize_axis(self.axis, first.rank() + 1)?;
            let items = seq
                .items()
                .iter()
                .map(|t| {
                    let mut shape = t.shape().to_vec();
                    shape.insert(at.min(shape.len()), 1);
                    t.clone().reshape(shape)
                })
                .collect::<Result<Vec<_>>>()?;
            self.concat.eval(&items.iter().map(Some).collect::<Vec<_>>())?
        } else {
            self.concat.eval(&seq.items().iter().map(Some).collect::<Vec<_>>())?
        };
        Ok(outputs.into_iter().map(Data::Tensor).collect())
    }
}

/// SequenceMap: runs `body` once per element of the input sequence. Each body input takes the
/// element of the same index from a sequence input, or a tensor input as is; each body output
/// becomes a sequence.
#[derive(Debug)]
struct SequenceMap {
    body: Body,
    /// The node's own inputs (before the captured values).
    inputs: usize,
}

impl SequenceMap {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
        let body = Body::build(ctx, "body")?;
        if body.num_inputs() != ctx.num_inputs {
            bail!(InvalidModel, "the body has {} inputs, the node has {}", body.num_inputs(), ctx.num_inputs);
        }
        if body.num_outputs() != ctx.num_outputs {
            bail!(InvalidModel, "the body has {} outputs, the node has {}", body.num_outputs(), ctx.num_outputs);
        }
        Ok(Box::new(SequenceMap { body, inputs: ctx.num_inputs }))
    }
}

impl Op for SequenceMap {
    fn infer(&self, _: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        Ok((0..self.body.num_outputs()).map(|k| seq_fact(self.body.output_fact(k).dtype)).collect())
    }

    runs_on_data!("SequenceMap");

    fn eval_data(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>> {
        let refs: Vec<Option<DataRef>> = inputs.iter().map(|d| d.map(DataRef::Data)).collect();
        self.eval_with(&refs, &Interpreter)
    }

    fn subgraphs(&self) -> Vec<&Arc<Graph>> {
        vec![self.body.graph_arc()]
    }

    fn eval_with(&self, refs: &[Option<DataRef>], exec: &dyn GraphExec) -> Result<Vec<Data>> {
        let owned: Vec<Option<std::borrow::Cow<Data>>> = refs.iter().map(|d| d.map(|d| d.to_data())).collect();
        let inputs: Vec<Option<&Data>> = owned.iter().map(|d| d.as_deref()).collect();
        let inputs = &inputs[..];
        let len = seq_input(inputs, 0)?.len();
        for i in 1..self.inputs {
            if let Data::Sequence(s) = input(inputs, i)? {
                if s.len() != len {
                    bail!(InvalidInput, "input sequence {i} has {} elements, input 0 has {len}", s.len());
                }
            }
        }
        let mut outputs: Vec<Vec<Tensor>> = vec![Vec::with_capacity(len); self.body.num_outputs()];
        for step in 0..len {
            let args = (0..self.inputs)
                .map(|i| match value_input(refs, i)? {
                    DataRef::Data(Data::Sequence(s)) => Ok(DataRef::Tensor(&s.items()[step])),
                    DataRef::Data(d @ Data::Tensor(_)) => Ok(DataRef::Data(d)),
                    DataRef::Tensor(t) => Ok(DataRef::Tensor(t)),
                    other => bail!(InvalidInput, "input {i} must be a sequence or a tensor, got {}", other.describe()),
                })
                .collect::<Result<Vec<_>>>()?;
            let outs = self.body.run_data(exec, &args, refs).context(|| format!("body, element {step}"))?;
            for (k, (out, d)) in outputs.iter_mut().zip(outs).enumerate() {
                out.push(d.into_tensor().context(|| format!("body output {k}"))?);
            }
        }
        outputs
            .into_iter()
            .enumerate()
            .map(|(k, items)| {
                let dtype = match (items.first(), self.body.output_fact(k).dtype) {
                    (Some(t), _) => t.dtype(),
                    (None, Some(dt)) => dt,
                    (None, None) => bail!(Runtime, "the input sequence is empty and body output {k} has no known type"),
                };
                Ok(Data::Sequence(Sequence::new(dtype, items)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::activation::test_util::{build, run_data_op as run};
    use crate::ErrorKind;

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.as_slice::<f32>().unwrap().to_vec()
    }

    fn iota(shape: &[usize]) -> Tensor {
        let n = shape.iter().product::<usize>();
        Tensor::new(shape.to_vec(), (0..n).map(|v| v as f32).collect()).unwrap()
    }

    fn t(v: Tensor) -> Data {
        Data::Tensor(v)
    }

    fn seq(items: Vec<Tensor>) -> Data {
        Data::Sequence(Sequence::new(items[0].dtype(), items).unwrap())
    }

    fn items(d: &Data) -> Vec<(Vec<usize>, Vec<f32>)> {
        d.as_sequence().unwrap().items().iter().map(|t| (t.shape().to_vec(), f32s(t))).collect()
    }

    #[test]
    fn construct_at_insert_erase_length() {
        let (a, b) = (t(Tensor::vector(vec![1i64, 2])), t(Tensor::vector(vec![3i64])));
        let s = run("SequenceConstruct", vec![], &[Some(&a), Some(&b)]).unwrap();
        assert_eq!(s.type_name(), "seq(tensor(int64))");
        let at = |p: i64| run("SequenceAt", vec![], &[Some(&s), Some(&t(Tensor::scalar(p)))]);
        assert_eq!(at(-1).unwrap(), b);
        assert_eq!(at(0).unwrap(), a);
        let e = at(2).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::InvalidInput, "position 2 is out of range for a sequence of length 2")
        );
        let pos32 = t(Tensor::scalar(1i32));
        assert_eq!(run("SequenceAt", vec![], &[Some(&s), Some(&pos32)]).unwrap(), b);

        // Insert at the front (position 0) and at the back (no position), as the ONNX tests do.
        let c = t(Tensor::vector(vec![9i64]));
        let front = run("SequenceInsert", vec![], &[Some(&s), Some(&c), Some(&t(Tensor::vector(vec![0i64])))]).unwrap();
        let back = run("SequenceInsert", vec![], &[Some(&s), Some(&c)]).unwrap();
        let firsts = |d: &Data| -> Vec<i64> {
            d.as_sequence().unwrap().items().iter().map(|t| t.as_slice::<i64>().unwrap()[0]).collect()
        };
        assert_eq!((firsts(&front), firsts(&back)), (vec![9, 1, 3], vec![1, 3, 9]));
        let e = run("SequenceInsert", vec![], &[Some(&s), Some(&c), Some(&t(Tensor::scalar(3i64)))]).unwrap_err();
        assert_eq!(e.message, "position 3 is out of range for a sequence of length 2");
        let wrong = t(Tensor::vector(vec![1f32]));
        assert!(run("SequenceInsert", vec![], &[Some(&s), Some(&wrong)]).is_err());

        let erased = run("SequenceErase", vec![], &[Some(&s), Some(&t(Tensor::scalar(-2i64)))]).unwrap();
        assert_eq!(firsts(&erased), [3]);
        assert_eq!(firsts(&run("SequenceErase", vec![], &[Some(&s)]).unwrap()), [1]);
        let len = run("SequenceLength", vec![], &[Some(&s)]).unwrap();
        assert_eq!(len, t(Tensor::scalar(2i64)));

        let empty = run("SequenceEmpty", vec![("dtype", Attr::Int(7))], &[]).unwrap();
        assert_eq!(empty.type_name(), "seq(tensor(int64))");
        assert_eq!(run("SequenceLength", vec![], &[Some(&empty)]).unwrap(), t(Tensor::scalar(0i64)));
        assert_eq!(run("SequenceEmpty", vec![], &[]).unwrap().type_name(), "seq(tensor(float32))");
        let e = run("SequenceErase", vec![], &[Some(&empty)]).unwrap_err();
        assert_eq!(e.message, "cannot erase from an empty sequence");
    }

    #[test]
    fn sequence_ops_reject_the_wrong_kinds() {
        let x = t(Tensor::scalar(1f32));
        let e = run("SequenceLength", vec![], &[Some(&x)]).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::InvalidInput, "input 0: expected a sequence, got a tensor of float32")
        );
        let s = seq(vec![iota(&[2])]);
        let e = run("SequenceConstruct", vec![], &[Some(&x), Some(&s)]).unwrap_err();
        assert_eq!(e.message, "input 1: expected a tensor, got a sequence of float32");
        let e = run("SequenceConstruct", vec![], &[Some(&x), Some(&t(Tensor::scalar(1i64)))]).unwrap_err();
        assert_eq!(e.message, "sequence element 1 is int64, the sequence holds float32");
        let e = run("SequenceAt", vec![], &[Some(&s), Some(&t(Tensor::vector(vec![0i64, 1])))]).unwrap_err();
        assert_eq!(e.message, "the position must have one element, it has shape [2]");
        let e = run("SequenceAt", vec![], &[Some(&s), Some(&x)]).unwrap_err();
        assert_eq!(e.message, "the position must be int32 or int64, got float32");
        // A tensor op handed a sequence names the input and what it got.
        let relu = build("Relu", 14, vec![], 1).unwrap();
        let e = relu.eval_data(&[Some(&s)]).unwrap_err();
        assert_eq!(e.message, "input 0 must be a tensor, got a sequence of float32");
    }

    #[test]
    fn split_to_sequence_matches_onnx_reference() {
        // Expected values from onnx.reference (onnx 1.23.2) on x = arange(12).reshape(3, 4).
        let x = t(iota(&[3, 4]));
        let chunk = t(Tensor::scalar(3i64));
        let y = run("SplitToSequence", vec![("axis", Attr::Int(1))], &[Some(&x), Some(&chunk)]).unwrap();
        assert_eq!(
            items(&y),
            [(vec![3, 3], vec![0., 1., 2., 4., 5., 6., 8., 9., 10.]), (vec![3, 1], vec![3., 7., 11.])]
        );
        let lengths = t(Tensor::vector(vec![1i64, 3]));
        let y = run("SplitToSequence", vec![("axis", Attr::Int(-1))], &[Some(&x), Some(&lengths)]).unwrap();
        assert_eq!(
            items(&y),
            [(vec![3, 1], vec![0., 4., 8.]), (vec![3, 3], vec![1., 2., 3., 5., 6., 7., 9., 10., 11.])]
        );
        let y = run("SplitToSequence", vec![("keepdims", Attr::Int(0))], &[Some(&x)]).unwrap();
        assert_eq!(
            items(&y),
            [(vec![4], vec![0., 1., 2., 3.]), (vec![4], vec![4., 5., 6., 7.]), (vec![4], vec![8., 9., 10., 11.])]
        );
        let y = run("SplitToSequence", vec![], &[Some(&x)]).unwrap();
        assert_eq!(items(&y)[2], (vec![1, 4], vec![8., 9., 10., 11.]));

        let bad = |split: Tensor| run("SplitToSequence", vec![], &[Some(&x), Some(&t(split))]).unwrap_err().message;
        assert_eq!(bad(Tensor::scalar(0i64)), "split 0 must be positive");
        assert_eq!(bad(Tensor::vector(vec![2i64, 2])), "split [2, 2] does not add up to the axis length 3");
        assert_eq!(bad(Tensor::vector(vec![4i64, -1])), "negative length in split [4, -1]");
        let e = run("SplitToSequence", vec![("axis", Attr::Int(2))], &[Some(&x)]).unwrap_err();
        assert_eq!(e.message, "axis 2 is out of range for rank 2");
    }

    #[test]
    fn concat_from_sequence_matches_onnx_reference() {
        // onnx.reference: a = arange(4).reshape(2, 2), b = a + 10.
        let a = iota(&[2, 2]);
        let b = Tensor::new(vec![2, 2], vec![10f32, 11., 12., 13.]).unwrap();
        let s = seq(vec![a, b]);
        let y = run("ConcatFromSequence", vec![("axis", Attr::Int(0))], &[Some(&s)]).unwrap().into_tensor().unwrap();
        assert_eq!((y.shape(), f32s(&y)), (&[4, 2][..], vec![0., 1., 2., 3., 10., 11., 12., 13.]));
        let attrs = vec![("axis", Attr::Int(-1)), ("new_axis", Attr::Int(1))];
        let y = run("ConcatFromSequence", attrs, &[Some(&s)]).unwrap().into_tensor().unwrap();
        assert_eq!((y.shape(), f32s(&y)), (&[2, 2, 2][..], vec![0., 10., 1., 11., 2., 12., 3., 13.]));

        let empty = Data::Sequence(Sequence::empty(DType::F32));
        let e = run("ConcatFromSequence", vec![("axis", Attr::Int(0))], &[Some(&empty)]).unwrap_err();
        assert_eq!(e.message, "cannot concatenate an empty sequence");
        let ragged = seq(vec![iota(&[2, 2]), iota(&[2, 3])]);
        assert!(run("ConcatFromSequence", vec![("axis", Attr::Int(0))], &[Some(&ragged)]).is_err());
        assert!(build("ConcatFromSequence", 11, vec![("axis", Attr::Int(0)), ("new_axis", Attr::Int(2))], 1).is_err());
    }

    /// A SequenceMap whose body adds its two inputs.
    fn add_map() -> Box<dyn Op> {
        use crate::ir::{Graph, Node};
        use std::sync::Arc;
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::of_dtype(DType::F32));
        let y = g.add_value("y", Fact::of_dtype(DType::F32));
        let z = g.add_value("z", Fact::of_dtype(DType::F32));
        let add = build("Add", 14, vec![], 1).unwrap();
        let (name, domain, op_type, attrs) = (String::new(), String::new(), "Add".to_string(), Attributes::default());
        g.nodes.push(Node {
            name,
            domain,
            op_type,
            attrs,
            op: Arc::from(add),
            inputs: vec![Some(x), Some(y)],
            outputs: vec![z],
        });
        (g.inputs, g.outputs) = (vec![x, y], vec![z]);
        let attrs = Attributes::new(vec![("body".to_string(), Attr::Graph(Arc::new(g)))]);
        let ctx =
            BuildCtx { op_type: "SequenceMap", domain: "", opset: 17, attrs: &attrs, num_inputs: 2, num_outputs: 1 };
        SequenceMap::build(&ctx).unwrap()
    }

    #[test]
    fn sequence_map_pairs_elements_and_broadcasts_tensors() {
        let op = add_map();
        let xs = seq(vec![Tensor::vector(vec![1f32, 2.]), Tensor::vector(vec![10f32])]);
        let ys = seq(vec![Tensor::vector(vec![1f32, 1.]), Tensor::vector(vec![5f32])]);
        let out = op.eval_data(&[Some(&xs), Some(&ys)]).unwrap();
        assert_eq!(items(&out[0]), [(vec![2], vec![2., 3.]), (vec![1], vec![15.])]);
        let one = t(Tensor::vector(vec![100f32]));
        let out = op.eval_data(&[Some(&xs), Some(&one)]).unwrap();
        assert_eq!(items(&out[0]), [(vec![2], vec![101., 102.]), (vec![1], vec![110.])]);
        let empty = Data::Sequence(Sequence::empty(DType::F32));
        let out = op.eval_data(&[Some(&empty), Some(&one)]).unwrap();
        assert_eq!(out[0].type_name(), "seq(tensor(float32))");

        let short = seq(vec![Tensor::vector(vec![1f32])]);
        let e = op.eval_data(&[Some(&xs), Some(&short)]).unwrap_err();
        assert_eq!(e.message, "input sequence 1 has 1 elements, input 0 has 2");
        let e = op.eval_data(&[Some(&one), Some(&xs)]).unwrap_err();
        assert_eq!(e.message, "input 0: expected a sequence, got a tensor of float32");
    }
}
