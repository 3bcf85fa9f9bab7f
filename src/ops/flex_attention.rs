//! ai.onnx.preview FlexAttention (version 1): scaled dot-product attention over 4-D
//! `[batch, heads, seq, size]` inputs whose scores and probabilities may each be rewritten by a
//! subgraph (`score_mod`, `prob_mod`), as PyTorch's flex_attention does. Query head `h` uses K/V
//! head `h / (q_heads / kv_heads)`.
//!
//! The subgraphs see the whole `[batch, q_heads, q_seq, kv_seq]` tensor in the softmax precision
//! (float32 unless the inputs are double or `softmax_precision` says otherwise) and run through
//! the control-flow ops' [`Body`].

use super::attention::Rounding;
use super::control::Body;
use super::matmul::gemm;
use super::real::{from_real, to_real, wants_f64};
use super::softmax::softmax_in_place;
use super::{input, BuildCtx, Op, Registry};
use crate::ir::interp::Interpreter;
use crate::ir::tensor::try_vec;
use crate::ir::DataRef;
use crate::ir::{DType, Fact, Tensor};
use crate::{bail, Result};

pub const PREVIEW: &str = "ai.onnx.preview";

pub fn register(r: &mut Registry) {
    r.add_in(PREVIEW, "FlexAttention", build);
}

#[derive(Debug)]
struct FlexAttention {
    scale: Option<f32>,
    score_mod: Option<Body>,
    prob_mod: Option<Body>,
    /// The type scores and probabilities are computed and handed to the subgraphs in; `None`:
    /// float32, or double for double inputs.
    softmax_precision: Option<DType>,
}

fn modifier(ctx: &BuildCtx, name: &str) -> Result<Option<Body>> {
    if !ctx.attrs.has(name) {
        return Ok(None);
    }
    let body = Body::build(ctx, name)?;
    if body.num_inputs() != 1 || body.num_outputs() != 1 {
        bail!(
            InvalidModel,
            "FlexAttention {name} must take one input and give one output, it has {} and {}",
            body.num_inputs(),
            body.num_outputs()
        );
    }
    Ok(Some(body))
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let softmax_precision = match ctx.attrs.int("softmax_precision")? {
        None => None,
        Some(1) => Some(DType::F32),
        Some(10) => Some(DType::F16),
        Some(16) => Some(DType::BF16),
        Some(11) => Some(DType::F64),
        Some(p) => bail!(Unsupported, "FlexAttention softmax_precision {p} is not float, float16, bfloat16 or double"),
    };
    Ok(Box::new(FlexAttention {
        scale: ctx.attrs.float("scale")?,
        score_mod: modifier(ctx, "score_mod")?,
        prob_mod: modifier(ctx, "prob_mod")?,
        softmax_precision,
    }))
}

impl FlexAttention {
    /// Runs a modifier on `values` (shape `shape`, stored as `dtype`) and reads back its result,
    /// which must keep the shape.
    fn modify(
        &self,
        body: &Body,
        name: &str,
        dtype: DType,
        shape: &[usize],
        values: Vec<f64>,
        node_inputs: &[Option<&Tensor>],
    ) -> Result<Vec<f64>> {
        let t = from_real(dtype, shape.to_vec(), values)?;
        let node_inputs: Vec<Option<DataRef>> = node_inputs.iter().map(|t| t.map(DataRef::Tensor)).collect();
        // The modifiers are small elementwise graphs: the reference interpreter runs them.
        let out = body.run(&Interpreter, &[&t], &node_inputs)?;
        let Some(y) = out.first() else { bail!(Runtime, "FlexAttention {name} gave no output") };
        if y.shape() != shape {
            bail!(Shape, "FlexAttention {name} must keep the shape {shape:?}, it gave {:?}", y.shape());
        }
        Ok(to_real::<f64>(y)?.into_owned())
    }
}

impl Op for FlexAttention {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (q, v) = (input(inputs, 0)?, input(inputs, 2)?);
        let shape = match (q.shape.as_deref(), v.shape.as_deref()) {
            (Some([b, h, l, _]), Some([_, _, _, ev])) => Some(vec![b.clone(), h.clone(), l.clone(), ev.clone()]),
            (Some(s), _) | (_, Some(s)) if s.len() != 4 => {
                bail!(Shape, "FlexAttention inputs must be rank 4, got rank {}", s.len())
            }
            _ => None,
        };
        Ok(vec![Fact { dtype: q.dtype, shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (qt, kt, vt) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let dtype = qt.dtype();
        let wide = wants_f64("FlexAttention", dtype)?;
        if kt.dtype() != dtype || vt.dtype() != dtype {
            bail!(
                InvalidModel,
                "FlexAttention Q, K and V must share one type, got {dtype}, {}, {}",
                kt.dtype(),
                vt.dtype()
            );
        }
        let (&[batch, hq, sq, d], &[kb, hkv, skv, kd], &[vb, vh, vs, dv]) = (qt.shape(), kt.shape(), vt.shape()) else {
            bail!(
                Shape,
                "FlexAttention Q, K and V must be rank 4, got {:?}, {:?}, {:?}",
                qt.shape(),
                kt.shape(),
                vt.shape()
            );
        };
        if kb != batch || vb != batch || kd != d || vh != hkv || vs != skv {
            bail!(Shape, "FlexAttention heads do not fit: Q {:?}, K {:?}, V {:?}", qt.shape(), kt.shape(), vt.shape());
        }
        if hkv == 0 || hq % hkv != 0 {
            bail!(Shape, "FlexAttention needs q heads ({hq}) to be a multiple of kv heads ({hkv})");
        }
        let group = hq / hkv;

        // As the reference: Q and K are each scaled by √scale (taken in float32) in the input
        // type, and their product is rounded to it before widening to the softmax precision.
        let round = Rounding::of(dtype);
        let scale = self.scale.unwrap_or(1.0 / (d as f32).sqrt());
        let root_scale = round.apply(f64::from(scale.sqrt()));
        let scaled = |t: &Tensor| -> Result<Vec<f64>> {
            Ok(to_real::<f64>(t)?.iter().map(|&x| round.apply(x * root_scale)).collect())
        };
        let (q, k) = (scaled(qt)?, scaled(kt)?);
        let precision = self.softmax_precision.unwrap_or(if wide { DType::F64 } else { DType::F32 });
        let inner = Rounding::of(precision);

        let score_shape = [batch, hq, sq, skv];
        let mut scores = try_vec(batch * hq * sq * skv, 0f64)?;
        for b in 0..batch {
            for h in 0..hq {
                let (head, kv) = (b * hq + h, b * hkv + h / group);
                let out = &mut scores[head * sq * skv..(head + 1) * sq * skv];
                gemm(
                    false,
                    true,
                    sq,
                    skv,
                    d,
                    &q[head * sq * d..(head + 1) * sq * d],
                    &k[kv * skv * d..(kv + 1) * skv * d],
                    out,
                )?;
                out.iter_mut().for_each(|s| *s = inner.apply(round.apply(*s)));
            }
        }
        if let Some(body) = &self.score_mod {
            scores = self.modify(body, "score_mod", precision, &score_shape, scores, inputs)?;
        }
        if skv > 0 {
            for row in scores.chunks_exact_mut(skv) {
                softmax_in_place(row);
                row.iter_mut().for_each(|p| *p = inner.apply(*p));
            }
        }
        let probs = match &self.prob_mod {
            Some(body) => self.modify(body, "prob_mod", precision, &score_shape, scores, inputs)?,
            None => scores,
        };
        let v: Vec<f64> = to_real::<f64>(vt)?.iter().map(|&x| inner.apply(x)).collect();
        let mut y = try_vec(batch * hq * sq * dv, 0f64)?;
        for b in 0..batch {
            for h in 0..hq {
                let (head, kv) = (b * hq + h, b * hkv + h / group);
                let p = &probs[head * sq * skv..(head + 1) * sq * skv];
                gemm(
                    false,
                    false,
                    sq,
                    dv,
                    skv,
                    p,
                    &v[kv * skv * dv..(kv + 1) * skv * dv],
                    &mut y[head * sq * dv..(head + 1) * sq * dv],
                )?;
            }
        }
        let y: Vec<f64> = y.into_iter().map(|x| inner.apply(x)).collect();
        Ok(vec![from_real(dtype, vec![batch, hq, sq, dv], y)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, Attributes, Graph, Node};
    use crate::ops::activation::test_util::assert_close;
    use crate::ErrorKind;
    use std::sync::Arc;

    fn flex(attrs: Vec<(&str, Attr)>) -> Result<Box<dyn Op>> {
        let attrs = Attributes::new(attrs.into_iter().map(|(n, a)| (n.to_string(), a)).collect());
        let ctx = BuildCtx {
            op_type: "FlexAttention",
            domain: PREVIEW,
            opset: 1,
            attrs: &attrs,
            num_inputs: 3,
            num_outputs: 1,
        };
        crate::ops::registry().get(PREVIEW, "FlexAttention").expect("registered")(&ctx)
    }

    /// `scores -> scores + bias` with a constant scalar bias.
    fn add_bias(bias: f32) -> Arc<Graph> {
        let mut g = Graph::default();
        let x = g.add_value("scores", Fact::of_dtype(DType::F32));
        let c = g.add_value("bias", Fact::constant(Arc::new(Tensor::scalar(bias))));
        let y = g.add_value("out", Fact::unknown());
        g.inputs.push(x);
        let attrs = Attributes::default();
        let ctx = BuildCtx { op_type: "Add", domain: "", opset: 17, attrs: &attrs, num_inputs: 2, num_outputs: 1 };
        let op = crate::ops::registry().get("", "Add").unwrap()(&ctx).unwrap();
        let (name, domain, op_type) = (String::new(), String::new(), "Add".to_string());
        g.nodes.push(Node {
            name,
            domain,
            op_type,
            attrs,
            op: Arc::from(op),
            inputs: vec![Some(x), Some(c)],
            outputs: vec![y],
        });
        g.outputs.push(y);
        Arc::new(g)
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.as_slice::<f32>().unwrap().to_vec()
    }

    // Two query heads sharing one K/V head, one query, two keys, scale 1. Head 0 scores [1, 0],
    // head 1 [0, 1]: weights [0.7310586, 0.2689414] and reversed, over values 10 and 20.
    #[test]
    fn gqa_scores() {
        let op = flex(vec![("scale", Attr::Float(1.0))]).unwrap();
        let q = Tensor::new(vec![1, 2, 1, 2], vec![1.0f32, 0.0, 0.0, 1.0]).unwrap();
        let k = Tensor::new(vec![1, 1, 2, 2], vec![1.0f32, 0.0, 0.0, 1.0]).unwrap();
        let v = Tensor::new(vec![1, 1, 2, 1], vec![10.0f32, 20.0]).unwrap();
        let y = op.eval(&[Some(&q), Some(&k), Some(&v)]).unwrap();
        assert_eq!(y[0].shape(), &[1, 2, 1, 1]);
        assert_close(&f32s(&y[0]), &[12.689414, 17.310586]);
    }

    // A score_mod adding a constant changes nothing after the softmax; a prob_mod adding 1 to
    // the probabilities [0.5, 0.5] over values 10 and 20 gives 1.5·10 + 1.5·20 = 45.
    #[test]
    fn modifiers_run() {
        let op =
            flex(vec![("score_mod", Attr::Graph(add_bias(5.0))), ("prob_mod", Attr::Graph(add_bias(1.0)))]).unwrap();
        let q = Tensor::new(vec![1, 1, 1, 1], vec![0.0f32]).unwrap();
        let k = Tensor::new(vec![1, 1, 2, 1], vec![1.0f32, 2.0]).unwrap();
        let v = Tensor::new(vec![1, 1, 2, 1], vec![10.0f32, 20.0]).unwrap();
        let y = op.eval(&[Some(&q), Some(&k), Some(&v)]).unwrap();
        assert_close(&f32s(&y[0]), &[45.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let op = flex(vec![]).unwrap();
        let q = Tensor::new(vec![1, 3, 1, 1], vec![1.0f32; 3]).unwrap();
        let kv = Tensor::new(vec![1, 2, 1, 1], vec![1.0f32; 2]).unwrap();
        assert_eq!(op.eval(&[Some(&q), Some(&kv), Some(&kv)]).unwrap_err().kind, ErrorKind::Shape);
        let flat = Tensor::new(vec![1, 1, 1], vec![1.0f32]).unwrap();
        assert_eq!(op.eval(&[Some(&flat), Some(&flat), Some(&flat)]).unwrap_err().kind, ErrorKind::Shape);
        assert!(flex(vec![("softmax_precision", Attr::Int(7))]).is_err());
    }
}
