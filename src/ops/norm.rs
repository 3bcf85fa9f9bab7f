//! Normalizations: BatchNormalization (inference and training mode), InstanceNormalization,
//! GroupNormalization, LayerNormalization, RMSNormalization, LpNormalization, LRN and
//! MeanVarianceNormalization.
//!
//! Statistics are computed in two passes (mean, then squared deviations), so the variance never
//! goes negative from cancellation.

use super::broadcast::for_each_index;
use super::real::{from_real, to_real, wants_f64, Real};
use super::{input, opt_input, same_as_input, BuildCtx, Op, Registry};
use crate::ir::shape::normalize_axis;
use crate::ir::tensor::try_vec;
use crate::ir::{DType, Dim, Fact, Scalar, Tensor};
use crate::{bail, Result};

pub fn register(r: &mut Registry) {
    r.add("BatchNormalization", build_batch_norm);
    r.add("InstanceNormalization", |ctx| Ok(Box::new(InstanceNorm { epsilon: epsilon(ctx)? })));
    r.add("LayerNormalization", |ctx| build_layer_norm(ctx, false));
    r.add("RMSNormalization", |ctx| build_layer_norm(ctx, true));
    r.add("GroupNormalization", |ctx| {
        let groups = ctx.attrs.req_int("num_groups")?;
        if groups < 1 {
            bail!(InvalidModel, "GroupNormalization attribute 'num_groups' must be at least 1, got {groups}");
        }
        Ok(Box::new(GroupNorm { groups: groups as usize, epsilon: epsilon(ctx)? }))
    });
    r.add("LpNormalization", |ctx| {
        let p = ctx.attrs.int_or("p", 2)?;
        if p != 1 && p != 2 {
            bail!(InvalidModel, "LpNormalization supports p = 1 or 2, got {p}");
        }
        Ok(Box::new(LpNorm { axis: ctx.attrs.int_or("axis", -1)?, p }))
    });
    r.add("LRN", build_lrn);
    r.add("MeanVarianceNormalization", |ctx| {
        Ok(Box::new(MeanVarianceNorm { axes: ctx.attrs.ints_or("axes", vec![0, 2, 3])? }))
    });
}

fn epsilon(ctx: &BuildCtx) -> Result<f64> {
    Ok(f64::from(ctx.attrs.float_or("epsilon", 1e-5)?))
}

/// Runs `$body` with `$R` the compute type for `$x`'s float dtype.
macro_rules! with_real {
    ($op:expr, $x:expr, $R:ident => $body:expr) => {
        if wants_f64($op, $x.dtype())? {
            type $R = f64;
            $body
        } else {
            type $R = f32;
            $body
        }
    };
}

/// `shape` with the reduced axes set to 1: the shape of per-group statistics.
fn kept_shape(shape: &[usize], reduce: &[bool]) -> Vec<usize> {
    shape.iter().zip(reduce).map(|(&d, &r)| if r { 1 } else { d }).collect()
}

/// Mean and biased variance of `x` (of `shape`) over the axes marked in `reduce`: one pair per
/// position of the kept axes, in row-major order of those positions.
fn moments<R: Real>(x: &[R], shape: &[usize], reduce: &[bool]) -> Result<(Vec<R>, Vec<R>)> {
    let kept = kept_shape(shape, reduce);
    let groups: usize = kept.iter().product();
    let count = x.len().checked_div(groups).unwrap_or(0);
    let n = R::from_f64(count.max(1) as f64);
    let mut mean = try_vec(groups, R::zero())?;
    for_each_index([&kept], shape, |i, [g]| mean[g] += x[i]);
    mean.iter_mut().for_each(|m| *m = *m / n);
    let mut var = try_vec(groups, R::zero())?;
    for_each_index([&kept], shape, |i, [g]| {
        let d = x[i] - mean[g];
        var[g] += d * d;
    });
    var.iter_mut().for_each(|v| *v = *v / n);
    Ok((mean, var))
}

/// What RMS normalization divides by, in the form [`normalize`] takes: a zero mean and the mean
/// square as the variance.
fn root_mean_square_moments<R: Real>(x: &[R], shape: &[usize], reduce: &[bool]) -> Result<(Vec<R>, Vec<R>)> {
    let kept = kept_shape(shape, reduce);
    let groups: usize = kept.iter().product();
    let n = R::from_f64(x.len().checked_div(groups).unwrap_or(0).max(1) as f64);
    let mut mean_square = try_vec(groups, R::zero())?;
    for_each_index([&kept], shape, |i, [g]| mean_square[g] += x[i] * x[i]);
    mean_square.iter_mut().for_each(|m| *m = *m / n);
    Ok((try_vec(groups, R::zero())?, mean_square))
}

/// `(x - mean) / sqrt(var + epsilon)` per group, times `scale[c]` plus `bias[c]`, where each group
/// (as from [`moments`] over `reduce`) belongs to channel `group % channels`.
#[allow(clippy::too_many_arguments)]
fn normalize<R: Real>(
    x: &[R],
    shape: &[usize],
    reduce: &[bool],
    mean: &[R],
    var: &[R],
    epsilon: R,
    scale_bias: Option<(&[R], &[R])>,
    out: &mut [R],
) {
    let kept = kept_shape(shape, reduce);
    let inv_std: Vec<R> = var.iter().map(|&v| (v + epsilon).sqrt().recip()).collect();
    let channels = scale_bias.map_or(1, |(s, _)| s.len().max(1));
    for_each_index([&kept], shape, |i, [g]| {
        let y = (x[i] - mean[g]) * inv_std[g];
        out[i] = match scale_bias {
            Some((s, b)) => y * s[g % channels] + b[g % channels],
            None => y,
        };
    });
}

/// Checks that a per-channel parameter has `len` elements.
fn check_len(op: &str, name: &str, t: &Tensor, len: usize) -> Result<()> {
    if t.len() != len {
        bail!(Shape, "{op}: {name} has shape {:?}, expected {len} elements", t.shape());
    }
    Ok(())
}

fn build_batch_norm(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    let training = if ctx.opset >= 14 {
        a.int_or("training_mode", 0)? != 0
    } else {
        // Before opset 14 the outputs decide; opset 6 and earlier could also say is_test.
        ctx.num_outputs > 1 && a.int_or("is_test", 0)? == 0
    };
    let spatial = a.int_or("spatial", 1)? != 0;
    if training && !spatial {
        bail!(Unsupported, "BatchNormalization in training mode with spatial = 0 is not supported");
    }
    Ok(Box::new(BatchNorm {
        epsilon: epsilon(ctx)?,
        momentum: f64::from(a.float_or("momentum", 0.9)?),
        training,
        spatial,
        num_outputs: ctx.num_outputs.max(1),
    }))
}

/// BatchNormalization. In inference mode it applies the given statistics; in training mode it
/// normalizes with the batch's own and also returns updated running statistics (opset 14+:
/// running mean and var; before: running mean, var, then the batch mean and var).
#[derive(Debug)]
pub struct BatchNorm {
    pub epsilon: f64,
    pub momentum: f64,
    pub training: bool,
    /// Opset < 9 `spatial = 0`: one parameter per channel and spatial position.
    pub spatial: bool,
    pub num_outputs: usize,
}

impl Op for BatchNorm {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        if x.rank().is_some_and(|r| r < 2) {
            bail!(Shape, "BatchNormalization needs an input of rank 2 or more");
        }
        let mut facts = same_as_input(inputs)?;
        let stats_dtype = inputs.get(3).copied().flatten().and_then(|f| f.dtype).or(x.dtype);
        let channels = x.shape.as_ref().map_or(Dim::Unknown, |s| s[1].clone());
        facts.resize(self.num_outputs, Fact { dtype: stats_dtype, shape: Some(vec![channels]), value: None });
        Ok(facts)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        with_real!("BatchNormalization", x, R => self.run::<R>(inputs))
    }
}

impl BatchNorm {
    fn run<R: Real>(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let op = "BatchNormalization";
        let x = input(inputs, 0)?;
        let params: Vec<&Tensor> = (1..5).map(|i| input(inputs, i)).collect::<Result<_>>()?;
        let shape = x.shape();
        if shape.len() < 2 {
            bail!(Shape, "{op} needs an input of rank 2 or more, got {shape:?}");
        }
        let channels = shape[1];
        let inner: usize = shape[2..].iter().product();
        let per_channel = if self.spatial { channels } else { channels * inner };
        for (t, name) in params.iter().zip(["scale", "B", "mean", "var"]) {
            check_len(op, name, t, per_channel)?;
        }
        let [scale, bias, mean, var] = [0, 1, 2, 3].map(|i| to_real::<R>(params[i]));
        let (scale, bias, mean, var) = (scale?, bias?, mean?, var?);
        let xv = to_real::<R>(x)?;
        let mut y = try_vec(xv.len(), R::zero())?;
        let eps = R::from_f64(self.epsilon);
        if !self.training {
            // y = x * a + b with a = scale / sqrt(var + eps), b = B - mean * a.
            let a: Vec<R> = scale.iter().zip(var.iter()).map(|(&s, &v)| s / (v + eps).sqrt()).collect();
            let b: Vec<R> = bias.iter().zip(mean.iter()).zip(&a).map(|((&b, &m), &a)| b - m * a).collect();
            let block = if self.spatial { inner } else { 1 };
            for (i, (out, &v)) in y.iter_mut().zip(xv.iter()).enumerate() {
                let p = (i / block.max(1)) % per_channel;
                *out = v * a[p] + b[p];
            }
            let mut outs = vec![from_real(x.dtype(), shape.to_vec(), y)?];
            // Running statistics pass through unchanged when asked for outside training.
            outs.extend(params[2..].iter().map(|&t| t.clone()).cycle().take(self.num_outputs - 1));
            return Ok(outs);
        }
        let reduce: Vec<bool> = (0..shape.len()).map(|i| i != 1).collect();
        let (batch_mean, batch_var) = moments(&xv, shape, &reduce)?;
        normalize(&xv, shape, &reduce, &batch_mean, &batch_var, eps, Some((&scale, &bias)), &mut y);
        let momentum = R::from_f64(self.momentum);
        let keep = R::one() - momentum;
        let running = |given: &[R], batch: &[R]| -> Vec<R> {
            given.iter().zip(batch).map(|(&g, &b)| g * momentum + b * keep).collect()
        };
        let stats_dtype = params[2].dtype();
        let mut outs = vec![from_real(x.dtype(), shape.to_vec(), y)?];
        let extra = [running(&mean, &batch_mean), running(&var, &batch_var), batch_mean, batch_var];
        for values in extra.into_iter().take(self.num_outputs - 1) {
            outs.push(from_real(stats_dtype, vec![channels], values)?);
        }
        Ok(outs)
    }
}

/// InstanceNormalization: normalizes each (image, channel) plane over its spatial positions.
#[derive(Debug)]
pub struct InstanceNorm {
    epsilon: f64,
}

impl InstanceNorm {
    /// The epsilon added to each plane's variance (for backends with a kernel for it).
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }
}

impl Op for InstanceNorm {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        same_as_input(inputs)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, scale, bias) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let shape = x.shape();
        if shape.len() < 3 {
            bail!(Shape, "InstanceNormalization needs an input of rank 3 or more, got {shape:?}");
        }
        check_len("InstanceNormalization", "scale", scale, shape[1])?;
        check_len("InstanceNormalization", "B", bias, shape[1])?;
        with_real!("InstanceNormalization", x, R => {
            let (xv, s, b) = (to_real::<R>(x)?, to_real::<R>(scale)?, to_real::<R>(bias)?);
            let reduce: Vec<bool> = (0..shape.len()).map(|i| i >= 2).collect();
            let (mean, var) = moments(&xv, shape, &reduce)?;
            let mut y = try_vec(xv.len(), R::zero())?;
            normalize(&xv, shape, &reduce, &mean, &var, R::from_f64(self.epsilon), Some((&s, &b)), &mut y);
            Ok(vec![from_real(x.dtype(), shape.to_vec(), y)?])
        })
    }
}

fn build_layer_norm(ctx: &BuildCtx, rms: bool) -> Result<Box<dyn Op>> {
    let stash = match ctx.attrs.int_or("stash_type", 1)? {
        1 => DType::F32,
        10 => DType::F16,
        11 => DType::F64,
        16 => DType::BF16,
        other => bail!(Unsupported, "LayerNormalization stash_type {other} is not supported"),
    };
    Ok(Box::new(LayerNorm {
        axis: ctx.attrs.int_or("axis", -1)?,
        epsilon: epsilon(ctx)?,
        stash,
        // RMSNormalization has no Mean / InvStdDev outputs.
        num_outputs: if rms { 1 } else { ctx.num_outputs.max(1) },
        rms,
    }))
}

/// LayerNormalization (opset 17): normalizes over the axes from `axis` on, then applies Scale and
/// optional B broadcast against X. Optional outputs Mean and InvStdDev have X's shape with the
/// normalized axes set to 1, in the `stash_type` dtype. With `rms` it is RMSNormalization (opset
/// 23): divides by the root mean square instead, without centering.
#[derive(Debug)]
pub struct LayerNorm {
    axis: i64,
    epsilon: f64,
    stash: DType,
    num_outputs: usize,
    rms: bool,
}

impl LayerNorm {
    /// For backends with a kernel for it: (axis as given, epsilon, whether it is RMSNormalization)
    /// when the node has only its first output (no Mean / InvStdDev) and keeps f32 or f64 statistics.
    pub fn single_output(&self) -> Option<(i64, f64, bool)> {
        let f32_stats = matches!(self.stash, DType::F32 | DType::F64);
        (self.num_outputs == 1 && f32_stats).then_some((self.axis, self.epsilon, self.rms))
    }
}

impl Op for LayerNorm {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let mut facts = same_as_input(inputs)?;
        let stats_shape = match &facts[0].shape {
            Some(s) => {
                let axis = normalize_axis(self.axis, s.len())?;
                Some(s.iter().enumerate().map(|(i, d)| if i < axis { d.clone() } else { Dim::Known(1) }).collect())
            }
            None => None,
        };
        facts.resize(self.num_outputs, Fact { dtype: Some(self.stash), shape: stats_shape, value: None });
        Ok(facts)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, scale, bias) = (input(inputs, 0)?, input(inputs, 1)?, opt_input(inputs, 2));
        // Compute in f64 when either X or the stash type asks for it.
        let wide = wants_f64(self.name(), x.dtype())? || self.stash == DType::F64;
        if wide {
            self.run::<f64>(x, scale, bias)
        } else {
            self.run::<f32>(x, scale, bias)
        }
    }
}

impl LayerNorm {
    fn name(&self) -> &'static str {
        if self.rms {
            "RMSNormalization"
        } else {
            "LayerNormalization"
        }
    }

    fn run<R: Real>(&self, x: &Tensor, scale: &Tensor, bias: Option<&Tensor>) -> Result<Vec<Tensor>> {
        let shape = x.shape();
        let axis = normalize_axis(self.axis, shape.len())?;
        for (t, name) in [(Some(scale), "Scale"), (bias, "B")] {
            if let Some(t) = t {
                let fits = t.rank() <= shape.len()
                    && t.shape().iter().rev().zip(shape.iter().rev()).all(|(&p, &d)| p == 1 || p == d);
                if !fits {
                    bail!(Shape, "{}: {name} of shape {:?} does not broadcast to X {shape:?}", self.name(), t.shape());
                }
            }
        }
        let xv = to_real::<R>(x)?;
        let reduce: Vec<bool> = (0..shape.len()).map(|i| i >= axis).collect();
        let (mean, var) =
            if self.rms { root_mean_square_moments(&xv, shape, &reduce)? } else { moments(&xv, shape, &reduce)? };
        let mut y = try_vec(xv.len(), R::zero())?;
        let eps = R::from_f64(self.epsilon);
        normalize(&xv, shape, &reduce, &mean, &var, eps, None, &mut y);
        let s = to_real::<R>(scale)?;
        let b = match bias {
            Some(b) => to_real::<R>(b)?,
            None => std::borrow::Cow::Owned(vec![R::zero()]),
        };
        let b_shape = bias.map_or(&[][..], |b| b.shape());
        for_each_index([scale.shape(), b_shape], shape, |i, [si, bi]| y[i] = y[i] * s[si] + b[bi]);

        let mut outs = vec![from_real(x.dtype(), shape.to_vec(), y)?];
        let stats_shape: Vec<usize> = shape.iter().enumerate().map(|(i, &d)| if i < axis { d } else { 1 }).collect();
        if self.num_outputs > 1 {
            outs.push(from_real(self.stash, stats_shape.clone(), mean)?);
        }
        if self.num_outputs > 2 {
            let inv_std = var.into_iter().map(|v| (v + eps).sqrt().recip()).collect();
            outs.push(from_real(self.stash, stats_shape, inv_std)?);
        }
        Ok(outs)
    }
}

/// GroupNormalization: normalizes each group of `channels / groups` channels of an image over
/// those channels and all spatial positions, then scales per channel (opset 21) or per group
/// (opset 18, whose scale and bias have one entry per group).
#[derive(Debug)]
struct GroupNorm {
    groups: usize,
    epsilon: f64,
}

impl Op for GroupNorm {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        same_as_input(inputs)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let op = "GroupNormalization";
        let (x, scale, bias) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let shape = x.shape();
        if shape.len() < 2 || shape[1] % self.groups != 0 {
            bail!(Shape, "{op}: X of shape {shape:?} does not split into {} channel groups", self.groups);
        }
        let (channels, spatial) = (shape[1], shape[2..].iter().product::<usize>());
        let per_channel = scale.len() == channels;
        let params = if per_channel { channels } else { self.groups };
        check_len(op, "scale", scale, params)?;
        check_len(op, "bias", bias, params)?;
        let group_channels = channels / self.groups;
        with_real!(op, x, R => {
            let (xv, s, b) = (to_real::<R>(x)?, to_real::<R>(scale)?, to_real::<R>(bias)?);
            let grouped = [shape[0], self.groups, group_channels * spatial];
            let (mean, var) = moments(&xv, &grouped, &[false, false, true])?;
            let mut y = try_vec(xv.len(), R::zero())?;
            normalize(&xv, &grouped, &[false, false, true], &mean, &var, R::from_f64(self.epsilon), None, &mut y);
            for (i, v) in y.iter_mut().enumerate() {
                let c = (i / spatial.max(1)) % channels;
                let p = if per_channel { c } else { c / group_channels };
                *v = *v * s[p] + b[p];
            }
            Ok(vec![from_real(x.dtype(), shape.to_vec(), y)?])
        })
    }
}

/// LpNormalization: divides by the L1 or L2 norm along one axis (0 where the norm is 0).
#[derive(Debug)]
struct LpNorm {
    axis: i64,
    p: i64,
}

impl Op for LpNorm {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        if let Some(r) = input(inputs, 0)?.rank() {
            normalize_axis(self.axis, r)?;
        }
        same_as_input(inputs)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let shape = x.shape();
        let axis = normalize_axis(self.axis, shape.len().max(1))?;
        let (n, inner) =
            (shape.get(axis).copied().unwrap_or(1), shape.get(axis + 1..).map_or(1, |s| s.iter().product()));
        with_real!("LpNormalization", x, R => {
            let mut y = to_real::<R>(x)?.into_owned();
            for block in y.chunks_exact_mut((n * inner).max(1)) {
                for j in 0..inner {
                    let line = || (0..n).map(|k| k * inner + j);
                    let norm = if self.p == 1 {
                        line().fold(R::zero(), |s, i| s + block[i].abs())
                    } else {
                        line().fold(R::zero(), |s, i| s + block[i] * block[i]).sqrt()
                    };
                    let scale = if norm == R::zero() { R::zero() } else { norm.recip() };
                    line().for_each(|i| block[i] *= scale);
                }
            }
            Ok(vec![from_real(x.dtype(), shape.to_vec(), y)?])
        })
    }
}

fn build_lrn(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    let size = a.req_int("size")?;
    if size < 1 {
        bail!(InvalidModel, "LRN attribute 'size' must be at least 1, got {size}");
    }
    Ok(Box::new(Lrn {
        size: size as usize,
        alpha: f64::from(a.float_or("alpha", 1e-4)?),
        beta: f64::from(a.float_or("beta", 0.75)?),
        bias: f64::from(a.float_or("bias", 1.0)?),
    }))
}

/// Local response normalization across channels:
/// `y = x / (bias + alpha / size * sum of x^2 over nearby channels) ^ beta`.
#[derive(Debug)]
struct Lrn {
    size: usize,
    alpha: f64,
    beta: f64,
    bias: f64,
}

impl Op for Lrn {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        same_as_input(inputs)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let shape = x.shape();
        if shape.len() < 2 {
            bail!(Shape, "LRN needs an input of rank 2 or more, got {shape:?}");
        }
        let (channels, inner) = (shape[1], shape[2..].iter().product::<usize>());
        // The window of channel c is c - before ..= c + after.
        let (before, after) = ((self.size - 1) / 2, self.size / 2);
        with_real!("LRN", x, R => {
            let xv = to_real::<R>(x)?;
            let mut y = try_vec(xv.len(), R::zero())?;
            let (scale, beta, bias) = (R::from_f64(self.alpha / self.size as f64), R::from_f64(self.beta), R::from_f64(self.bias));
            for (src, dst) in xv.chunks_exact((channels * inner).max(1)).zip(y.chunks_exact_mut((channels * inner).max(1))) {
                for c in 0..channels {
                    let window = c.saturating_sub(before)..(c + after + 1).min(channels);
                    for j in 0..inner {
                        let sum = window.clone().fold(R::zero(), |s, k| s + src[k * inner + j] * src[k * inner + j]);
                        dst[c * inner + j] = src[c * inner + j] / (bias + scale * sum).powf(beta);
                    }
                }
            }
            Ok(vec![from_real(x.dtype(), shape.to_vec(), y)?])
        })
    }
}

/// MeanVarianceNormalization: `(x - mean) / (std + 1e-9)` over `axes` (the ONNX function body).
#[derive(Debug)]
struct MeanVarianceNorm {
    axes: Vec<i64>,
}

impl Op for MeanVarianceNorm {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        if let Some(r) = input(inputs, 0)?.rank() {
            for &a in &self.axes {
                normalize_axis(a, r)?;
            }
        }
        same_as_input(inputs)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let shape = x.shape();
        let mut reduce = vec![false; shape.len()];
        for &a in &self.axes {
            reduce[normalize_axis(a, shape.len())?] = true;
        }
        with_real!("MeanVarianceNormalization", x, R => {
            let xv = to_real::<R>(x)?;
            let (mean, var) = moments(&xv, shape, &reduce)?;
            let kept = kept_shape(shape, &reduce);
            let denom: Vec<R> = var.iter().map(|&v| v.sqrt() + R::from_f64(1e-9)).collect();
            let mut y = try_vec(xv.len(), R::zero())?;
            for_each_index([&kept], shape, |i, [g]| y[i] = (xv[i] - mean[g]) / denom[g]);
            Ok(vec![from_real(x.dtype(), shape.to_vec(), y)?])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::test_util::*;
    use super::*;
    use crate::ir::Attr;

    fn close(got: &Tensor, want: &[f32]) {
        assert_close(&f32s(got), want);
    }

    #[test]
    fn batch_norm_inference_and_training() {
        // ONNX test_batchnorm_example inputs: x = [[[[-1, 0, 1]], [[2, 3, 4]]]], s = [1, 1.5],
        // bias = [0, 1], mean = [0, 3], var = [1, 1.5]; expected values from onnx.reference.
        let x = tensor(vec![1, 2, 1, 3], &[-1., 0., 1., 2., 3., 4.]);
        let (s, b, m, v) = (
            tensor(vec![2], &[1., 1.5]),
            tensor(vec![2], &[0., 1.]),
            tensor(vec![2], &[0., 3.]),
            tensor(vec![2], &[1., 1.5]),
        );
        let op = build_named("BatchNormalization", 15, vec![], 1).unwrap();
        let y = eval_all(&*op, &[&x, &s, &b, &m, &v]).unwrap();
        close(&y[0], &[-0.999995, 0., 0.999995, -0.22474074, 1., 2.2247407]);
        let op = build_named("BatchNormalization", 15, vec![("training_mode", Attr::Int(1))], 3).unwrap();
        let out = eval_all(&*op, &[&x, &s, &b, &m, &v]).unwrap();
        close(&out[0], &[-1.2247356, 0., 1.2247356, -0.8371035, 1., 2.8371034]);
        close(&out[1], &[0., 3.]);
        close(&out[2], &[0.96666664, 1.4166666]);
        // Opset 6 with is_test = 1 is inference even with extra outputs declared.
        let op = build_named("BatchNormalization", 6, vec![("is_test", Attr::Int(1))], 1).unwrap();
        close(
            &eval_all(&*op, &[&x, &s, &b, &m, &v]).unwrap()[0],
            &[-0.999995, 0., 0.999995, -0.22474074, 1., 2.2247407],
        );
    }

    #[test]
    fn batch_norm_rejects_wrong_parameter_length() {
        let x = tensor(vec![1, 2, 2], &[1., 2., 3., 4.]);
        let p3 = tensor(vec![3], &[1., 1., 1.]);
        let p2 = tensor(vec![2], &[1., 1.]);
        let op = build_named("BatchNormalization", 15, vec![], 1).unwrap();
        let e = eval_all(&*op, &[&x, &p3, &p2, &p2, &p2]).unwrap_err();
        assert!(e.message.contains("scale has shape [3]"), "{e}");
    }

    #[test]
    fn instance_and_layer_norm() {
        // numpy: per-row standardisation of [[1, 2, 3], [4, 6, 8]] with eps 0.
        let x = tensor(vec![1, 2, 3], &[1., 2., 3., 4., 6., 8.]);
        let op = build_named("InstanceNormalization", 6, vec![("epsilon", Attr::Float(0.))], 1).unwrap();
        let y = eval_all(&*op, &[&x, &tensor(vec![2], &[1., 2.]), &tensor(vec![2], &[0., 1.])]).unwrap();
        let r = 1.2247449f32; // 1 / std of (-1, 0, 1)
        close(&y[0], &[-r, 0., r, 1. - 2. * r, 1., 1. + 2. * r]);
        let op = build_named("LayerNormalization", 17, vec![("epsilon", Attr::Float(0.))], 3).unwrap();
        let out = eval_all(&*op, &[&x, &tensor(vec![3], &[1., 1., 2.]), &tensor(vec![1], &[0.5])]).unwrap();
        close(&out[0], &[0.5 - r, 0.5, 0.5 + 2. * r, 0.5 - r, 0.5, 0.5 + 2. * r]);
        assert_eq!(out[1].shape(), &[1, 2, 1]);
        close(&out[1], &[2., 6.]);
        close(&out[2], &[r, r / 2.]);
        assert!(eval_all(&*op, &[&x, &tensor(vec![2], &[1., 1.])]).is_err());
    }

    #[test]
    fn group_and_rms_norm() {
        // Groups [1, 3] and [10, 14] both standardise to (-1, 1) with epsilon 0.
        let x = tensor(vec![1, 4, 1], &[1., 3., 10., 14.]);
        let op =
            build_named("GroupNormalization", 21, vec![("num_groups", Attr::Int(2)), ("epsilon", Attr::Float(0.))], 1)
                .unwrap();
        let y =
            eval_all(&*op, &[&x, &tensor(vec![4], &[1., 2., 3., 4.]), &tensor(vec![4], &[0., 0., 0., 1.])]).unwrap();
        close(&y[0], &[-1., 2., -3., 5.]);
        // Opset 18 style: one scale and bias per group.
        let y = eval_all(&*op, &[&x, &tensor(vec![2], &[1., 10.]), &tensor(vec![2], &[0., 1.])]).unwrap();
        close(&y[0], &[-1., 1., -9., 11.]);
        assert!(eval_all(&*op, &[&x, &tensor(vec![3], &[1., 1., 1.]), &tensor(vec![3], &[0., 0., 0.])]).is_err());
        // RMS of [3, 4] is sqrt(12.5).
        let op = build_named("RMSNormalization", 23, vec![("epsilon", Attr::Float(0.))], 1).unwrap();
        let y = eval_all(&*op, &[&tensor(vec![1, 2], &[3., 4.]), &tensor(vec![2], &[1., 2.])]).unwrap();
        close(&y[0], &[0.8485281, 2.2627417]);
    }

    #[test]
    fn lp_norm_lrn_and_mvn() {
        let x = tensor(vec![2, 2], &[3., 4., 0., 0.]);
        let l2 = build_named("LpNormalization", 1, vec![], 1).unwrap();
        close(&eval_all(&*l2, &[&x]).unwrap()[0], &[0.6, 0.8, 0., 0.]);
        let l1 = build_named("LpNormalization", 1, vec![("p", Attr::Int(1)), ("axis", Attr::Int(0))], 1).unwrap();
        close(&eval_all(&*l1, &[&x]).unwrap()[0], &[1., 1., 0., 0.]);
        // LRN size 3 over channels [1, 2, 3] with alpha 3, beta 1, bias 1: y_c = x_c / (1 + window sum of squares).
        let x = tensor(vec![1, 3, 1, 1], &[1., 2., 3.]);
        let lrn = build_named(
            "LRN",
            13,
            vec![("size", Attr::Int(3)), ("alpha", Attr::Float(3.)), ("beta", Attr::Float(1.))],
            1,
        )
        .unwrap();
        close(&eval_all(&*lrn, &[&x]).unwrap()[0], &[1. / 6., 2. / 15., 3. / 14.]);
        // MVN over axis 1 only: rows [1, 3] and [2, 6] -> (-1, 1) each (std 1 and 2).
        let x = tensor(vec![2, 2], &[1., 3., 2., 6.]);
        let mvn = build_named("MeanVarianceNormalization", 13, vec![("axes", Attr::Ints(vec![1]))], 1).unwrap();
        close(&eval_all(&*mvn, &[&x]).unwrap()[0], &[-1., 1., -1., 1.]);
        assert!(build_named("LRN", 13, vec![], 1).is_err());
        assert!(eval_all(&*build_named("MeanVarianceNormalization", 13, vec![], 1).unwrap(), &[&x]).is_err());
    }

    #[test]
    fn norm_inference() {
        let n = Dim::Symbol("N".into());
        let x = Fact::new(DType::F16, vec![n.clone(), Dim::Known(4), Dim::Known(8)]);
        let ln = build_named("LayerNormalization", 17, vec![("axis", Attr::Int(1))], 3).unwrap();
        let out = ln.infer(&[Some(&x), None]).unwrap();
        assert_eq!(out[0].dtype, Some(DType::F16));
        assert_eq!(out[2].dtype, Some(DType::F32));
        assert_eq!(out[2].shape, Some(vec![n.clone(), Dim::Known(1), Dim::Known(1)]));
        let bn = build_named("BatchNormalization", 15, vec![("training_mode", Attr::Int(1))], 3).unwrap();
        let out = bn.infer(&[Some(&x)]).unwrap();
        assert_eq!(out[1].shape, Some(vec![Dim::Known(4)]));
    }
}
