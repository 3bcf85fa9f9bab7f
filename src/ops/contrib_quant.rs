//! The `com.microsoft` dynamically quantized ops that onnxruntime's `quantize_dynamic` writes:
//! DynamicQuantizeLSTM, DynamicQuantizeMatMul and MatMulIntegerToFloat.
//!
//! They follow onnxruntime's CPU arithmetic rather than a float model of it: activations are
//! quantized to uint8 at run time with one scale per product (the range of the whole left
//! operand, widened to hold 0), multiplied in exact integers, and the int32 sums scaled in f32
//! by `a_scale * b_scale`. Dequantizing the weights and computing in float instead differs from
//! onnxruntime by about 1% on an LSTM.

use super::matmul::matmul_shape;
use super::quant_conv::matmul_i32;
use super::rnn::{param, sequence_lengths, Recurrent};
use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{DType, Fact, Tensor};
use crate::{bail, Result};

const MS: &str = "com.microsoft";

pub fn register(r: &mut Registry) {
    r.add_in(MS, "DynamicQuantizeLSTM", build_lstm);
    r.add_in(MS, "DynamicQuantizeMatMul", |_| Ok(Box::new(IntegerMatMul { dynamic: true })));
    r.add_in(MS, "MatMulIntegerToFloat", |_| Ok(Box::new(IntegerMatMul { dynamic: false })));
}

/// Quantizes `values` to uint8 as onnxruntime's dynamic quantization does: the range is
/// `[min(x, 0), max(x, 0)]` over all of `values`, scale `range / 255` (1 for an all-zero input),
/// and `q = clamp(round_half_even(x / scale) + zero_point, 0, 255)`, all in f32.
fn quantize_u8(values: &[f32], out: &mut Vec<i32>) -> (f32, i32) {
    let max = values.iter().fold(0f32, |m, &v| m.max(v));
    let min = values.iter().fold(0f32, |m, &v| m.min(v));
    let scale = if max == min { 1.0 } else { (max - min) / 255.0 };
    let zero_point = (0.0 - min / scale).clamp(0.0, 255.0).round_ties_even();
    out.clear();
    out.extend(values.iter().map(|&v| ((v / scale).round_ties_even() + zero_point).clamp(0.0, 255.0) as i32));
    (scale, zero_point as i32)
}

/// Quantized weights `[dirs, K, N]` (uint8 or int8) with their zero points subtracted, and the
/// scales per direction, each one value or one per column.
struct QuantWeights {
    centered: Vec<i32>,
    scales: Vec<f32>,
    per_column: bool,
    k: usize,
    n: usize,
}

impl QuantWeights {
    fn new(what: &str, w: &Tensor, scale: &Tensor, zero_point: &Tensor, dims: [usize; 3]) -> Result<QuantWeights> {
        const OP: &str = "DynamicQuantizeLSTM";
        let [dirs, k, n] = dims;
        if !matches!(w.dtype(), DType::U8 | DType::I8) {
            bail!(Unsupported, "{OP}: {what} must be uint8 or int8, got {}", w.dtype());
        }
        if w.shape() != dims {
            bail!(Shape, "{OP}: {what} has shape {:?}, expected {dims:?}", w.shape());
        }
        if zero_point.dtype() != w.dtype() || scale.dtype() != DType::F32 {
            bail!(
                InvalidModel,
                "{OP}: {what} needs a float scale and a {} zero point, got {} and {}",
                w.dtype(),
                scale.dtype(),
                zero_point.dtype()
            );
        }
        let per_column = match (scale.shape(), zero_point.shape()) {
            ([d], [z]) if *d == dirs && *z == dirs => false,
            ([d, c], [zd, zc]) if (*d, *c, *zd, *zc) == (dirs, n, dirs, n) => true,
            (s, z) => {
                bail!(Shape, "{OP}: {what} scale {s:?} and zero point {z:?} must both be [{dirs}] or [{dirs}, {n}]")
            }
        };
        let zps = zero_point.to_i64_vec()?;
        let per_direction = if per_column { n } else { 1 };
        // onnxruntime's integer kernel takes one zero point per direction.
        for d in 0..dirs {
            let zs = &zps[d * per_direction..(d + 1) * per_direction];
            if zs.iter().any(|&z| z != zs[0]) {
                bail!(Unsupported, "{OP}: per-column {what} zero points must all be equal");
            }
        }
        let values = w.to_i64_vec()?;
        let centered = values
            .chunks_exact(k * n)
            .zip(0..dirs)
            .flat_map(|(block, d)| {
                let zp = zps[d * per_direction];
                block.iter().map(move |&v| (v - zp) as i32)
            })
            .collect();
        Ok(QuantWeights { centered, scales: scale.as_slice::<f32>()?.to_vec(), per_column, k, n })
    }

    /// `out (+)= (qa - a_zero_point) · W[d] · a_scale * scale[d]` for `qa` of `m` rows; the
    /// int32 sums are scaled in f32, as onnxruntime's output processor does.
    fn product(&self, d: usize, qa: &[i32], (a_scale, a_zp): (f32, i32), acc: &mut [i64], out: &mut [f32], add: bool) {
        let (k, n) = (self.k, self.n);
        let w = &self.centered[d * k * n..(d + 1) * k * n];
        let scales = if self.per_column { &self.scales[d * n..(d + 1) * n] } else { &self.scales[d..d + 1] };
        for (row, out_row) in qa.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
            acc.fill(0);
            for (&a, w_row) in row.iter().zip(w.chunks_exact(n)) {
                let a = i64::from(a - a_zp);
                if a != 0 {
                    acc.iter_mut().zip(w_row).for_each(|(s, &b)| *s += a * i64::from(b));
                }
            }
            for (j, (o, &s)) in out_row.iter_mut().zip(acc.iter()).enumerate() {
                let v = s as i32 as f32 * (a_scale * scales[if self.per_column { j } else { 0 }]);
                *o = if add { *o + v } else { v };
            }
        }
    }
}

/// LSTM with uint8/int8 weights W `[dirs, input, 4H]` and R `[dirs, H, 4H]` (transposed against
/// ONNX LSTM's), scales and zero points as inputs 8 to 11.
#[derive(Debug)]
struct QuantLstm {
    lstm: Recurrent,
    num_outputs: usize,
}

fn build_lstm(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    if ctx.attrs.int_or("layout", 0)? != 0 {
        bail!(Unsupported, "DynamicQuantizeLSTM with layout 1 is not supported");
    }
    let lstm = Recurrent::parse(&BuildCtx { opset: 14, ..*ctx })?;
    if lstm.hidden_size().is_none() {
        bail!(InvalidModel, "DynamicQuantizeLSTM needs the hidden_size attribute");
    }
    Ok(Box::new(QuantLstm { lstm, num_outputs: ctx.num_outputs.max(1) }))
}

impl Op for QuantLstm {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        self.lstm.infer(&inputs[..inputs.len().min(1)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        const OP: &str = "DynamicQuantizeLSTM";
        let x = input(inputs, 0)?;
        let Ok(xs) = x.as_slice::<f32>() else { bail!(Unsupported, "{OP} takes float32 X, got {}", x.dtype()) };
        let &[seq, batch, input_size] = x.shape() else {
            bail!(Shape, "{OP}: X must have rank 3, got shape {:?}", x.shape());
        };
        let dirs = self.lstm.direction().count();
        let hidden = self.lstm.hidden_size().unwrap_or(0);
        let gates = checked_len(&[4, hidden], DType::F64)?;
        let weights = |i: usize, what: &str, k: usize| -> Result<QuantWeights> {
            let (scale, zp) = (input(inputs, 2 * i + 6)?, input(inputs, 2 * i + 7)?);
            QuantWeights::new(what, input(inputs, i)?, scale, zp, [dirs, k, gates])
        };
        let (w, r) = (weights(1, "W", input_size)?, weights(2, "R", hidden)?);
        let b = param(inputs, 3, "B", &[dirs, 2 * gates])?;
        let lengths = sequence_lengths(OP, opt_input(inputs, 4), batch, seq)?;
        let state_shape = [dirs, batch, hidden];
        let state_len = checked_len(&state_shape, DType::F64)?;
        let h0 = param(inputs, 5, "initial_h", &state_shape)?.unwrap_or(try_vec(state_len, 0.0)?);
        let mut c = param(inputs, 6, "initial_c", &state_shape)?.unwrap_or(try_vec(state_len, 0.0)?);
        let peepholes = param(inputs, 7, "P", &[dirs, 3 * hidden])?.unwrap_or_default();

        let mut y = try_vec(checked_len(&[seq, dirs, batch, hidden], DType::F64)?, 0.0)?;
        let (mut final_h, mut final_c) = (try_vec(state_len, 0.0)?, try_vec(state_len, 0.0)?);
        let max_len = lengths.iter().copied().max().unwrap_or(0);
        // onnxruntime keeps a finished sequence's last state in the recurrent product's operand
        // (and so in its quantization range) only when Y is not an output; otherwise Y's zeros.
        let zero_finished = self.num_outputs >= 1;
        let (mut quantized, mut quantized_x) = (Vec::new(), Vec::new());
        let mut acc = vec![0i64; gates];
        // Both directions see steps 0..max_len of X (the reverse one reorders each sequence
        // within its length), so they share its quantization.
        let x_params = quantize_u8(&xs[..max_len * batch * input_size], &mut quantized_x);
        let mut from_x = try_vec(max_len * batch * gates, 0f32)?;
        let mut from_h = try_vec(batch * gates, 0f32)?;
        let mut pre = vec![0f64; gates];
        for d in 0..dirs {
            w.product(d, &quantized_x, x_params, &mut acc, &mut from_x, false);
            let bias = b.as_ref().map(|b| {
                let b = &b[d * 2 * gates..(d + 1) * 2 * gates];
                (0..gates).map(|j| f64::from(b[j] as f32 + b[gates + j] as f32)).collect::<Vec<_>>()
            });
            let cell = self.lstm.lstm_cell(d, peepholes.get(d * 3 * hidden..(d + 1) * 3 * hidden).unwrap_or(&[]));
            let states = d * batch * hidden..(d + 1) * batch * hidden;
            let mut h: Vec<f32> = h0[states.clone()].iter().map(|&v| v as f32).collect();
            let c = &mut c[states.clone()];
            let mut h_row = vec![0f64; hidden];
            for k in 0..max_len {
                let (h_scale, h_zp) = quantize_u8(&h, &mut quantized);
                r.product(d, &quantized, (h_scale, h_zp), &mut acc, &mut from_h, false);
                for (n, &len) in lengths.iter().enumerate() {
                    let row = n * hidden..(n + 1) * hidden;
                    if k >= len {
                        if zero_finished {
                            h[row].fill(0.0);
                        }
                        continue;
                    }
                    let t = if self.lstm.direction().is_reversed(d) { len - 1 - k } else { k };
                    let x_part = &from_x[(t * batch + n) * gates..(t * batch + n + 1) * gates];
                    for (j, p) in pre.iter_mut().enumerate() {
                        let sum = x_part[j] + from_h[n * gates + j];
                        *p = f64::from(sum) + bias.as_ref().map_or(0.0, |b| b[j]);
                    }
                    h_row.iter_mut().zip(&h[row.clone()]).for_each(|(o, &v)| *o = f64::from(v));
                    cell.update(&pre, &mut c[row.clone()], &mut h_row);
                    h[row.clone()].iter_mut().zip(&h_row).for_each(|(o, &v)| *o = v as f32);
                    let out = ((t * dirs + d) * batch + n) * hidden;
                    y[out..out + hidden].copy_from_slice(&h_row);
                    if k + 1 == len {
                        let state = states.start + n * hidden..states.start + (n + 1) * hidden;
                        final_h[state.clone()].copy_from_slice(&h_row);
                        final_c[state].copy_from_slice(&c[row]);
                    }
                }
            }
        }
        let mut outputs = vec![
            Tensor::new(vec![seq, dirs, batch, hidden], y)?,
            Tensor::new(state_shape.to_vec(), final_h)?,
            Tensor::new(state_shape.to_vec(), final_c)?,
        ];
        outputs.truncate(self.num_outputs);
        outputs.into_iter().map(|t| t.cast_numeric(DType::F32)).collect()
    }
}

/// DynamicQuantizeMatMul (inputs A float, B, b_scale, b_zero_point, bias; A is quantized at run
/// time) and MatMulIntegerToFloat (inputs A uint8, B, a_scale, b_scale, a_zero_point,
/// b_zero_point, bias): the numpy matmul of the zero-point-centred integers, times
/// `a_scale * b_scale` (per tensor or per column of B), plus a bias per column.
#[derive(Debug)]
struct IntegerMatMul {
    dynamic: bool,
}

impl IntegerMatMul {
    fn name(&self) -> &'static str {
        if self.dynamic {
            "DynamicQuantizeMatMul"
        } else {
            "MatMulIntegerToFloat"
        }
    }
}

impl Op for IntegerMatMul {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let shape = matmul_shape(self.name(), input(inputs, 0)?, input(inputs, 1)?)?;
        Ok(vec![Fact { dtype: Some(DType::F32), shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let op = self.name();
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        if !matches!(b.dtype(), DType::U8 | DType::I8) {
            bail!(Unsupported, "{op}: B must be uint8 or int8, got {}", b.dtype());
        }
        let (acc, a_scale, b_scale, bias) = if self.dynamic {
            let Ok(values) = a.as_slice::<f32>() else { bail!(Unsupported, "{op} takes float32 A, got {}", a.dtype()) };
            let mut q = Vec::new();
            let (scale, zp) = quantize_u8(values, &mut q);
            let qa = Tensor::new(a.shape().to_vec(), q.into_iter().map(|v| v as u8).collect::<Vec<_>>())?;
            let zp = Tensor::scalar(zp as u8);
            (matmul_i32(op, &qa, Some(&zp), b, opt_input(inputs, 3))?, scale, input(inputs, 2)?, opt_input(inputs, 4))
        } else {
            let a_scale = input(inputs, 2)?;
            let Ok(&[scale]) = a_scale.as_slice::<f32>() else {
                bail!(
                    Unsupported,
                    "{op}: a_scale must be a single float, got {} {:?}",
                    a_scale.dtype(),
                    a_scale.shape()
                );
            };
            let acc = matmul_i32(op, a, opt_input(inputs, 4), b, opt_input(inputs, 5))?;
            (acc, scale, input(inputs, 3)?, opt_input(inputs, 6))
        };
        let n = if b.rank() >= 2 { b.shape()[b.rank() - 1] } else { 1 };
        let Ok(b_scale) = b_scale.as_slice::<f32>() else { bail!(Unsupported, "{op}: b_scale must be float32") };
        if b_scale.len() != 1 && b_scale.len() != n {
            bail!(
                Unsupported,
                "{op}: b_scale of shape {:?} is neither per tensor nor per column of {n}",
                b_scale.len()
            );
        }
        let multipliers: Vec<f32> = b_scale.iter().map(|&s| a_scale * s).collect();
        let bias = match bias {
            None => None,
            Some(t) if t.len() == n => Some(t.as_slice::<f32>()?),
            Some(t) => bail!(Shape, "{op}: bias has shape {:?}, expected [{n}]", t.shape()),
        };
        let values = acc.as_slice::<i32>()?;
        let y: Vec<f32> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let j = i % n.max(1);
                let scaled = v as f32 * multipliers[if multipliers.len() == 1 { 0 } else { j }];
                bias.map_or(scaled, |b| scaled + b[j])
            })
            .collect();
        Ok(vec![Tensor::new(acc.shape().to_vec(), y)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, Attributes};
    use crate::ops::activation::test_util::assert_close;
    use crate::ErrorKind;

    fn build(op_type: &str, attrs: Vec<(&str, Attr)>, num_outputs: usize) -> Result<Box<dyn Op>> {
        let attrs = Attributes::new(attrs.into_iter().map(|(n, a)| (n.to_string(), a)).collect());
        let ctx = BuildCtx { op_type, domain: MS, opset: 1, attrs: &attrs, num_inputs: 12, num_outputs };
        (crate::ops::registry().get(MS, op_type).expect("registered"))(&ctx)
    }

    fn floats(t: &Tensor) -> Vec<f32> {
        t.as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn quantizes_like_onnxruntime() {
        // Range [-1, 2]: scale 3/255, zero point 85; 0.5 / scale is 42.5, which rounds to even.
        let mut q = Vec::new();
        let (scale, zp) = quantize_u8(&[-1.0, 0.5, 2.0], &mut q);
        assert_eq!((scale, zp, &q[..]), (3.0 / 255.0, 85, &[0, 127, 255][..]));
        assert_eq!(quantize_u8(&[0.0; 3], &mut q), (1.0, 0));
    }

    /// Hidden size 1, input size 1, X = [1, -2] over two steps. By hand for step 1: X quantizes
    /// with zero point 170, so x = 1 is 85 steps of 3/255 and W·x = 85·(50, 20, 100, -50)·(3/255)·0.01
    /// = (0.5, 0.2, 1, -0.5) for i, o, f, c; h0 = 0, so c1 = σ(0.5)·tanh(-0.5) = -0.28768 and
    /// h1 = σ(0.2)·tanh(c1) = -0.15394. The rest is onnxruntime 1.32's output.
    fn tiny_lstm_inputs() -> Vec<Tensor> {
        vec![
            Tensor::new(vec![2, 1, 1], vec![1.0f32, -2.0]).unwrap(),
            Tensor::new(vec![1, 1, 4], vec![178u8, 148, 228, 78]).unwrap(),
            Tensor::new(vec![1, 1, 4], vec![138u8, 118, 158, 98]).unwrap(),
            Tensor::vector(vec![0.01f32]),
            Tensor::vector(vec![128u8]),
            Tensor::vector(vec![0.02f32]),
            Tensor::vector(vec![128u8]),
        ]
    }

    fn lstm_args(i: &[Tensor]) -> Vec<Option<&Tensor>> {
        vec![Some(&i[0]), Some(&i[1]), Some(&i[2]), None, None, None, None, None]
            .into_iter()
            .chain(i[3..].iter().map(Some))
            .collect()
    }

    #[test]
    fn dynamic_quantize_lstm_matches_onnxruntime() {
        let op = build("DynamicQuantizeLSTM", vec![("hidden_size", Attr::Int(1))], 3).unwrap();
        let i = tiny_lstm_inputs();
        let out = op.eval(&lstm_args(&i)).unwrap();
        assert_eq!(out[0].shape(), [2, 1, 1, 1]);
        assert_close(&floats(&out[0]), &[-0.15393683, 0.07205671]);
        assert_close(&floats(&out[1]), &[0.07205671]);
        assert_close(&floats(&out[2]), &[0.17815481]);
    }

    #[test]
    fn dynamic_quantize_lstm_rejects_bad_inputs() {
        let kind = |r: Result<Box<dyn Op>>| r.err().map(|e| e.kind);
        assert_eq!(kind(build("DynamicQuantizeLSTM", vec![], 1)), Some(ErrorKind::InvalidModel));
        let op = build("DynamicQuantizeLSTM", vec![("hidden_size", Attr::Int(1))], 1).unwrap();
        let mut i = tiny_lstm_inputs();
        i[1] = Tensor::new(vec![1, 1, 4], vec![0f32; 4]).unwrap();
        assert_eq!(op.eval(&lstm_args(&i)).unwrap_err().kind, ErrorKind::Unsupported);
        // ONNX LSTM's W layout [dirs, 4H, input] is not this op's [dirs, input, 4H].
        let mut i = tiny_lstm_inputs();
        i[1] = Tensor::new(vec![1, 4, 1], vec![0u8; 4]).unwrap();
        let e = op.eval(&lstm_args(&i)).unwrap_err();
        assert!(e.kind == ErrorKind::Shape && e.message.contains("W has shape"), "{e}");
        let mut i = tiny_lstm_inputs();
        i[5] = Tensor::vector(vec![0.02f32, 0.02]);
        assert_eq!(op.eval(&lstm_args(&i)).unwrap_err().kind, ErrorKind::Shape);
        let mut i = tiny_lstm_inputs();
        i[6] = Tensor::vector(vec![0i8]);
        assert_eq!(op.eval(&lstm_args(&i)).unwrap_err().kind, ErrorKind::InvalidModel);
        let mut i = tiny_lstm_inputs();
        i[0] = Tensor::new(vec![2, 1, 2], vec![0f32; 4]).unwrap();
        assert_eq!(op.eval(&lstm_args(&i)).unwrap_err().kind, ErrorKind::Shape);
    }

    #[test]
    fn integer_matmuls() {
        // All-ones A quantizes to 255 with scale 1/255: 3 · 255 · (1/255) · 0.2 = 0.6 (onnxruntime).
        let op = build("DynamicQuantizeMatMul", vec![], 1).unwrap();
        let (a, b) = (Tensor::new(vec![2, 3], vec![1f32; 6]).unwrap(), Tensor::new(vec![3, 2], vec![1i8; 6]).unwrap());
        let scale = Tensor::scalar(0.2f32);
        assert_close(&floats(&op.eval(&[Some(&a), Some(&b), Some(&scale)]).unwrap()[0]), &[0.6; 4]);
        // (1 - 0) · 2 + (3 - 0) · 1 = 5 per column, times 0.5 · (1, 2), plus bias (1, -1).
        let op = build("MatMulIntegerToFloat", vec![], 1).unwrap();
        let a = Tensor::new(vec![1, 2], vec![1u8, 3]).unwrap();
        let b = Tensor::new(vec![2, 2], vec![2u8, 2, 1, 1]).unwrap();
        let (a_scale, b_scale) = (Tensor::scalar(0.5f32), Tensor::vector(vec![1f32, 2.0]));
        let bias = Tensor::vector(vec![1f32, -1.0]);
        let args = [Some(&a), Some(&b), Some(&a_scale), Some(&b_scale), None, None, Some(&bias)];
        assert_close(&floats(&op.eval(&args).unwrap()[0]), &[3.5, 4.0]);

        let short = Tensor::vector(vec![1f32]);
        let e = op.eval(&[Some(&a), Some(&b), Some(&a_scale), Some(&b_scale), None, None, Some(&short)]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
        let fb = Tensor::new(vec![2, 2], vec![1f32; 4]).unwrap();
        let e = op.eval(&[Some(&a), Some(&fb), Some(&a_scale), Some(&b_scale)]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        let three = Tensor::vector(vec![1f32; 3]);
        assert!(op.eval(&[Some(&a), Some(&b), Some(&a_scale), Some(&three)]).is_err());
    }
}
