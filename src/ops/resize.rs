//! Resize (opsets 10-19) and its predecessor Upsample (opsets 7 and 9).
//!
//! Interpolation is separable, so the kernel resamples one axis at a time: for each axis it builds a
//! table of taps (source index, weight) per output position from the coordinate transformation and
//! the interpolation kernel, then applies it to every lane of that axis. The arithmetic is done in
//! f64 like the ONNX reference, and integer outputs are rounded half to even and saturated.

use super::reshape::{const_ints, normalize_axes, numel};
use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::limits::check_alloc;
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{Dim, Fact, Scalar, Tensor};
use crate::{bail, dispatch, Result};

pub fn register(r: &mut Registry) {
    r.add("Resize", build_resize);
    r.add("Upsample", build_upsample);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

/// How an output index maps back to a (fractional) input coordinate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Coord {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
    TfCropAndResize,
}

/// How nearest mode rounds a fractional coordinate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rounding {
    PreferFloor,
    PreferCeil,
    Floor,
    Ceil,
}

/// How `sizes` is reconciled with the input's aspect ratio (opset 18).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Policy {
    Stretch,
    NotLarger,
    NotSmaller,
}

/// Where the scales, sizes and roi come from in this opset.
#[derive(Debug, Clone)]
enum Source {
    /// Upsample-7: scales is an attribute.
    ScalesAttr(Vec<f32>),
    /// Upsample-9 and Resize-10: scales is input 1.
    ScalesInput,
    /// Resize-11 and later: roi, scales, sizes are inputs 1, 2, 3.
    Full,
}

#[derive(Debug)]
pub struct Resize {
    mode: Mode,
    coord: Coord,
    rounding: Rounding,
    cubic_a: f64,
    exclude_outside: bool,
    extrapolation: f64,
    antialias: bool,
    axes: Option<Vec<i64>>,
    policy: Policy,
    source: Source,
}

fn parse_mode(op: &str, mode: &str) -> Result<Mode> {
    Ok(match mode {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" => Mode::Linear,
        "cubic" if op == "Resize" => Mode::Cubic,
        other => bail!(Unsupported, "{op}: mode '{other}' is not supported"),
    })
}

/// The settings Upsample and Resize-10 imply: asymmetric coordinates, nearest rounds down.
fn legacy(mode: Mode, source: Source) -> Resize {
    Resize {
        mode,
        coord: Coord::Asymmetric,
        rounding: Rounding::Floor,
        cubic_a: -0.75,
        exclude_outside: false,
        extrapolation: 0.0,
        antialias: false,
        axes: None,
        policy: Policy::Stretch,
        source,
    }
}

fn build_upsample(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    if ctx.opset < 7 {
        return Err(ctx.unsupported_version());
    }
    let mode = parse_mode("Upsample", &ctx.attrs.string_or("mode", "nearest".into())?)?;
    let source = if ctx.opset < 9 {
        Source::ScalesAttr(ctx.attrs.required("scales", ctx.attrs.floats("scales"))?)
    } else {
        Source::ScalesInput
    };
    Ok(Box::new(legacy(mode, source)))
}

fn build_resize(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    let mode = parse_mode("Resize", &a.string_or("mode", "nearest".into())?)?;
    if ctx.opset < 11 {
        if ctx.opset < 10 {
            return Err(ctx.unsupported_version());
        }
        return Ok(Box::new(legacy(mode, Source::ScalesInput)));
    }
    let coord = match a.string_or("coordinate_transformation_mode", "half_pixel".into())?.as_str() {
        "half_pixel" => Coord::HalfPixel,
        "half_pixel_symmetric" if ctx.opset >= 19 => Coord::HalfPixelSymmetric,
        "pytorch_half_pixel" => Coord::PytorchHalfPixel,
        "align_corners" => Coord::AlignCorners,
        "asymmetric" => Coord::Asymmetric,
        "tf_half_pixel_for_nn" if ctx.opset < 13 => Coord::TfHalfPixelForNn,
        "tf_crop_and_resize" => Coord::TfCropAndResize,
        other => bail!(Unsupported, "Resize-{}: coordinate_transformation_mode '{other}' is not supported", ctx.opset),
    };
    let rounding = match a.string_or("nearest_mode", "round_prefer_floor".into())?.as_str() {
        "round_prefer_floor" => Rounding::PreferFloor,
        "round_prefer_ceil" => Rounding::PreferCeil,
        "floor" => Rounding::Floor,
        "ceil" => Rounding::Ceil,
        other => bail!(Unsupported, "Resize: nearest_mode '{other}' is not supported"),
    };
    let policy = match a.string_or("keep_aspect_ratio_policy", "stretch".into())?.as_str() {
        "stretch" => Policy::Stretch,
        "not_larger" => Policy::NotLarger,
        "not_smaller" => Policy::NotSmaller,
        other => bail!(Unsupported, "Resize: keep_aspect_ratio_policy '{other}' is not supported"),
    };
    Ok(Box::new(Resize {
        mode,
        coord,
        rounding,
        cubic_a: f64::from(a.float_or("cubic_coeff_a", -0.75)?),
        exclude_outside: a.int_or("exclude_outside", 0)? != 0,
        extrapolation: f64::from(a.float_or("extrapolation_value", 0.0)?),
        antialias: a.int_or("antialias", 0)? != 0,
        axes: a.ints("axes")?,
        policy,
        source: Source::Full,
    }))
}

/// The resampling of one axis: output length, scale (output over input) and roi.
#[derive(Debug, Clone, Copy, PartialEq)]
struct AxisPlan {
    out: usize,
    scale: f64,
    roi: (f64, f64),
}

/// Scales, sizes and roi as given (an empty tensor counts as not given).
#[derive(Debug, Default)]
struct Targets {
    scales: Option<Vec<f64>>,
    sizes: Option<Vec<i64>>,
    roi: Option<Vec<f64>>,
}

impl Resize {
    fn input_indices(&self) -> (Option<usize>, Option<usize>, Option<usize>) {
        match self.source {
            Source::ScalesAttr(_) => (None, None, None),
            Source::ScalesInput => (Some(1), None, None),
            Source::Full => (Some(2), Some(3), Some(1)),
        }
    }

    /// The targets from constant input facts; `None` when one that is given is not a constant.
    fn const_targets(&self, inputs: &[Option<&Fact>]) -> Result<Option<Targets>> {
        let (scales, sizes, _) = self.input_indices();
        let mut t = Targets::default();
        if let Source::ScalesAttr(s) = &self.source {
            t.scales = Some(s.iter().map(|&v| f64::from(v)).collect());
        }
        if let Some(f) = scales.and_then(|i| opt_input(inputs, i)) {
            match &f.value {
                Some(v) => t.scales = non_empty(v.to_f64_vec()?),
                None if f.concrete_shape().is_some_and(|s| numel(&s) == 0) => {}
                None => return Ok(None),
            }
        }
        if let Some(f) = sizes.and_then(|i| opt_input(inputs, i)) {
            match const_ints(Some(f))? {
                Some(v) => t.sizes = non_empty(v),
                None if f.concrete_shape().is_some_and(|s| numel(&s) == 0) => {}
                None => return Ok(None),
            }
        }
        Ok(Some(t))
    }

    fn targets(&self, inputs: &[Option<&Tensor>]) -> Result<Targets> {
        let (scales, sizes, roi) = self.input_indices();
        let get = |i: Option<usize>| i.and_then(|i| opt_input(inputs, i));
        let scales = match &self.source {
            Source::ScalesAttr(s) => Some(s.iter().map(|&v| f64::from(v)).collect()),
            _ => get(scales).map(|t| t.to_f64_vec()).transpose()?.and_then(non_empty),
        };
        Ok(Targets {
            scales,
            sizes: get(sizes).map(|t| t.to_i64_vec()).transpose()?.and_then(non_empty),
            roi: get(roi).map(|t| t.to_f64_vec()).transpose()?.and_then(non_empty),
        })
    }

    fn axes(&self, rank: usize) -> Result<Vec<usize>> {
        match &self.axes {
            Some(a) => normalize_axes("Resize", a, rank),
            None => Ok((0..rank).collect()),
        }
    }

    /// Per-axis plans for an input of shape `shape`; the roi (which does not change the output
    /// shape) is set by [`Resize::set_roi`].
    fn plan(&self, shape: &[usize], t: &Targets) -> Result<Vec<AxisPlan>> {
        let axes = self.axes(shape.len())?;
        let mut plans: Vec<AxisPlan> =
            shape.iter().map(|&d| AxisPlan { out: d, scale: 1.0, roi: (0.0, 1.0) }).collect();
        let check_len = |what: &str, n: usize| -> Result<()> {
            if n != axes.len() {
                bail!(Shape, "Resize: {what} has {n} values, expected one per resized axis ({})", axes.len());
            }
            Ok(())
        };
        match (&t.scales, &t.sizes) {
            (Some(_), Some(_)) => bail!(InvalidModel, "Resize: give scales or sizes, not both"),
            (None, None) => bail!(InvalidModel, "Resize needs scales or sizes"),
            (Some(scales), None) => {
                check_len("scales", scales.len())?;
                for (&axis, &s) in axes.iter().zip(scales) {
                    if !(s > 0.0 && s.is_finite()) {
                        bail!(Runtime, "Resize: scale {s} for axis {axis} must be a positive number");
                    }
                    let out = (s * shape[axis] as f64).floor();
                    if out > usize::MAX as f64 / 2.0 {
                        bail!(ResourceLimit, "Resize: scale {s} makes axis {axis} too long");
                    }
                    plans[axis].out = out as usize;
                    plans[axis].scale = s;
                }
            }
            (None, Some(sizes)) => {
                check_len("sizes", sizes.len())?;
                for (&axis, &n) in axes.iter().zip(sizes) {
                    if n < 0 {
                        bail!(Runtime, "Resize: size {n} for axis {axis} is negative");
                    }
                    if shape[axis] == 0 && n > 0 {
                        bail!(Runtime, "Resize: cannot resize empty axis {axis} to {n}");
                    }
                    plans[axis].out = n as usize;
                    plans[axis].scale = if shape[axis] == 0 { 1.0 } else { n as f64 / shape[axis] as f64 };
                }
                if self.policy != Policy::Stretch {
                    let chosen = axes.iter().map(|&a| plans[a].scale);
                    let scale = if self.policy == Policy::NotLarger {
                        chosen.fold(f64::INFINITY, f64::min)
                    } else {
                        chosen.fold(0.0, f64::max)
                    };
                    for &axis in &axes {
                        plans[axis].scale = scale;
                        plans[axis].out = (scale * shape[axis] as f64 + 0.5).floor() as usize;
                    }
                }
            }
        }
        Ok(plans)
    }

    fn set_roi(&self, plans: &mut [AxisPlan], roi: Option<&[f64]>) -> Result<()> {
        if self.coord != Coord::TfCropAndResize {
            return Ok(());
        }
        let Some(roi) = roi else { bail!(InvalidModel, "Resize: tf_crop_and_resize needs roi") };
        let axes = self.axes(plans.len())?;
        if roi.len() != 2 * axes.len() {
            bail!(Shape, "Resize: roi has {} values, expected 2 per resized axis ({})", roi.len(), axes.len());
        }
        for (i, &axis) in axes.iter().enumerate() {
            plans[axis].roi = (roi[i], roi[axes.len() + i]);
        }
        Ok(())
    }

    /// Maps output index `o` to a coordinate in the input axis of length `len`.
    fn source_coord(&self, o: usize, len: usize, p: &AxisPlan) -> f64 {
        let (o, len) = (o as f64, len as f64);
        let out_w = p.scale * len;
        match self.coord {
            Coord::HalfPixel => (o + 0.5) / p.scale - 0.5,
            Coord::HalfPixelSymmetric => {
                let offset = len / 2.0 * (1.0 - p.out as f64 / out_w);
                offset + (o + 0.5) / p.scale - 0.5
            }
            Coord::PytorchHalfPixel if out_w == 1.0 => 0.0,
            Coord::PytorchHalfPixel => (o + 0.5) / p.scale - 0.5,
            Coord::AlignCorners if out_w == 1.0 => 0.0,
            Coord::AlignCorners => o * (len - 1.0) / (out_w - 1.0),
            Coord::Asymmetric => o / p.scale,
            Coord::TfHalfPixelForNn => (o + 0.5) / p.scale,
            Coord::TfCropAndResize => {
                let (start, end) = p.roi;
                let x = if out_w == 1.0 {
                    (end - start) * (len - 1.0) / 2.0
                } else {
                    o * (end - start) * (len - 1.0) / (out_w - 1.0)
                };
                x + start * (len - 1.0)
            }
        }
    }

    fn round(&self, x: f64) -> f64 {
        let frac = x - x.floor();
        if frac == 0.0 {
            return x;
        }
        match self.rounding {
            Rounding::Floor => x.floor(),
            Rounding::Ceil => x.ceil(),
            Rounding::PreferFloor if frac <= 0.5 => x.floor(),
            Rounding::PreferCeil if frac < 0.5 => x.floor(),
            _ => x.ceil(),
        }
    }

    fn kernel(&self, d: f64) -> f64 {
        let d = d.abs();
        match self.mode {
            Mode::Linear => (1.0 - d).max(0.0),
            _ => {
                let a = self.cubic_a;
                if d <= 1.0 {
                    ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
                } else if d < 2.0 {
                    ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
                } else {
                    0.0
                }
            }
        }
    }

    /// The taps for every output position of one axis.
    fn taps(&self, len: usize, p: &AxisPlan) -> Result<Taps> {
        let mut taps = Taps::default();
        let last = len as f64 - 1.0;
        let clamp = |i: f64| i.clamp(0.0, last) as usize;
        let radius = if self.mode == Mode::Cubic { 2.0 } else { 1.0 };
        // Antialiasing widens the kernel by 1/scale when downsampling.
        let stretch = if self.antialias { p.scale.min(1.0) } else { 1.0 };
        let first = (-radius / stretch).floor() + 1.0;
        let window = (2.0 - 2.0 * first) as usize;
        // Every output position holds `window` taps: a tiny antialiasing scale makes that huge.
        check_alloc(p.out.saturating_mul(window), std::mem::size_of::<(usize, f64)>(), "Resize filter taps")?;
        for o in 0..p.out {
            let x = self.source_coord(o, len, p);
            if self.coord == Coord::TfCropAndResize && !(0.0..=last).contains(&x) {
                taps.push_extrapolated(self.extrapolation);
                continue;
            }
            if self.mode == Mode::Nearest {
                taps.push(&[(clamp(self.round(x)), 1.0)])?;
                continue;
            }
            let base = x.floor() + first;
            let mut row: Vec<(usize, f64)> = Vec::with_capacity(window);
            for k in 0..window {
                let at = base + k as f64;
                let mut w = self.kernel(stretch * (at - x));
                if self.exclude_outside && !(0.0..=last).contains(&at) {
                    w = 0.0;
                }
                row.push((clamp(at), w));
            }
            if self.antialias || self.exclude_outside {
                let sum: f64 = row.iter().map(|r| r.1).sum();
                if sum != 0.0 {
                    row.iter_mut().for_each(|r| r.1 /= sum);
                }
            }
            taps.push(&row)?;
        }
        Ok(taps)
    }

    /// What [`Resize::eval`] does to a non-empty input of `shape` given these inputs, for
    /// backend kernels that resample themselves: the output shape and, for each axis that
    /// changes (in order), the taps of its output positions. Errors as `eval` does.
    pub fn resampling(&self, shape: &[usize], inputs: &[Option<&Tensor>]) -> Result<(Vec<usize>, Vec<AxisTaps>)> {
        let t = self.targets(inputs)?;
        let mut plans = self.plan(shape, &t)?;
        self.set_roi(&mut plans, t.roi.as_deref())?;
        let out_shape: Vec<usize> = plans.iter().map(|p| p.out).collect();
        checked_len(&out_shape, crate::ir::DType::F32)?;
        let mut axes = vec![];
        for (axis, p) in plans.iter().enumerate() {
            let identity = p.scale == 1.0 && p.out == shape[axis] && p.roi == (0.0, 1.0);
            if !identity && shape[axis] > 0 {
                axes.push((axis, self.taps(shape[axis], p)?));
            }
        }
        Ok((out_shape, axes))
    }

    fn run(&self, x: &Tensor, t: &Targets) -> Result<Tensor> {
        let mut shape = x.shape().to_vec();
        let mut plans = self.plan(&shape, t)?;
        self.set_roi(&mut plans, t.roi.as_deref())?;
        let out_shape: Vec<usize> = plans.iter().map(|p| p.out).collect();
        checked_len(&out_shape, x.dtype())?;
        if x.is_empty() {
            // Nothing to interpolate; the dims of an empty tensor (one may be 2^40) size no filter.
            return Tensor::zeros(x.dtype(), out_shape);
        }
        let mut data = x.to_f64_vec()?;
        for (axis, p) in plans.iter().enumerate() {
            let identity = p.scale == 1.0 && p.out == shape[axis] && p.roi == (0.0, 1.0);
            if identity {
                continue;
            }
            if shape[axis] == 0 {
                shape[axis] = p.out;
                continue;
            }
            let taps = self.taps(shape[axis], p)?;
            data = taps.apply(&data, &shape, axis)?;
            shape[axis] = p.out;
        }
        if data.len() != numel(&out_shape) {
            data = try_vec(numel(&out_shape), 0.0)?;
        }
        let int = x.dtype().is_int();
        dispatch!(x.dtype(); T => Tensor::new(out_shape, data.iter()
                .map(|&v| T::from_f64(if int { v.round_ties_even() } else { v }))
                .collect::<Vec<T>>());
            numeric; else => bail!(Unsupported, "Resize does not take {}", x.dtype()))
    }
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    if v.is_empty() {
        None
    } else {
        Some(v)
    }
}

/// A resampled axis and the taps of its output positions.
pub type AxisTaps = (usize, Taps);

/// Source taps per output position: `starts[o]..starts[o + 1]` index `index` and `weight`; an
/// extrapolated position has no taps and takes `fill[o]`.
#[derive(Debug, Default)]
pub struct Taps {
    pub starts: Vec<usize>,
    pub index: Vec<usize>,
    pub weight: Vec<f64>,
    pub fill: Vec<Option<f64>>,
}

impl Taps {
    fn push(&mut self, row: &[(usize, f64)]) -> Result<()> {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        self.index.try_reserve(row.len()).map_err(|_| crate::err!(ResourceLimit, "Resize: too many taps"))?;
        for &(i, w) in row {
            self.index.push(i);
            self.weight.push(w);
        }
        self.starts.push(self.index.len());
        self.fill.push(None);
        Ok(())
    }

    fn push_extrapolated(&mut self, value: f64) {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        self.starts.push(self.index.len());
        self.fill.push(Some(value));
    }

    /// Resamples `data` (of `shape`) along `axis`.
    fn apply(&self, data: &[f64], shape: &[usize], axis: usize) -> Result<Vec<f64>> {
        let (outer, len, inner) = (numel(&shape[..axis]), shape[axis], numel(&shape[axis + 1..]));
        let out_len = self.fill.len();
        let mut out = try_vec(outer * out_len * inner, 0.0)?;
        for b in 0..outer {
            let src = &data[b * len * inner..(b + 1) * len * inner];
            for (o, fill) in self.fill.iter().enumerate() {
                let dst = &mut out[(b * out_len + o) * inner..(b * out_len + o + 1) * inner];
                if let Some(v) = fill {
                    dst.fill(*v);
                    continue;
                }
                for t in self.starts[o]..self.starts[o + 1] {
                    let (i, w) = (self.index[t], self.weight[t]);
                    let lane = &src[i * inner..(i + 1) * inner];
                    dst.iter_mut().zip(lane).for_each(|(d, &s)| *d += w * s);
                }
            }
        }
        Ok(out)
    }
}

impl Op for Resize {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let Some(dims) = &x.shape else { return Ok(vec![Fact { dtype: x.dtype, shape: None, value: None }]) };
        let targets = self.const_targets(inputs)?;
        let shape = match (targets, x.concrete_shape()) {
            (Some(t), Some(s)) => self.plan(&s, &t)?.iter().map(|p| Dim::Known(p.out)).collect(),
            (Some(t), _) if self.policy == Policy::Stretch => {
                // Unknown input dims: sizes still fix their axes, and a scale of 1 keeps its dim.
                let mut out = dims.clone();
                let axes = self.axes(dims.len())?;
                for (i, &axis) in axes.iter().enumerate() {
                    if let Some(&n) = t.sizes.as_ref().and_then(|s| s.get(i)) {
                        out[axis] = usize::try_from(n).map_or(Dim::Unknown, Dim::Known);
                    } else if t.scales.as_ref().and_then(|s| s.get(i)) != Some(&1.0) {
                        out[axis] = Dim::Unknown;
                    }
                }
                out
            }
            _ => vec![Dim::Unknown; dims.len()],
        };
        Ok(vec![Fact { dtype: x.dtype, shape: Some(shape), value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let targets = self.targets(inputs)?;
        Ok(vec![self.run(x, &targets)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::ops::activation::test_util::assert_close;
    use crate::ops::reshape::testing::{f32s, run};
    use crate::ErrorKind;

    fn s(v: &str) -> Attr {
        Attr::String(v.into())
    }

    #[test]
    fn upsample_7_repeats_nearest() {
        let x = Tensor::new(vec![1, 1, 2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let y = run("Upsample", 7, vec![("scales", Attr::Floats(vec![1., 1., 2., 2.]))], &[Some(&x)]).unwrap();
        assert_eq!(y.shape(), &[1, 1, 4, 4]);
        let want = [1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.];
        assert_eq!(f32s(&y), want);
    }

    // Expected values from onnx.reference's _interpolate_nd.
    #[test]
    fn linear_half_pixel_by_sizes() {
        let x = Tensor::new(vec![1, 1, 2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let sizes = Tensor::vector(vec![1i64, 1, 3, 4]);
        let y = run("Resize", 13, vec![("mode", s("linear"))], &[Some(&x), None, None, Some(&sizes)]).unwrap();
        assert_eq!(y.shape(), &[1, 1, 3, 4]);
        assert_close(&f32s(&y), &[1.0, 1.25, 1.75, 2.0, 2.0, 2.25, 2.75, 3.0, 3.0, 3.25, 3.75, 4.0]);
    }

    #[test]
    fn cubic_align_corners_downsample() {
        let x = Tensor::new(vec![4, 4], (1..=16).map(|v| v as f32).collect()).unwrap();
        let scales = Tensor::vector(vec![0.8f32, 0.8]);
        let attrs = vec![("mode", s("cubic")), ("coordinate_transformation_mode", s("align_corners"))];
        let y = run("Resize", 11, attrs, &[Some(&x), None, Some(&scales)]).unwrap();
        assert_eq!(y.shape(), &[3, 3]);
        let want = [1.0, 2.3951916, 3.790383, 6.580_766, 7.975958, 9.37115, 12.161533, 13.556724, 14.951916];
        assert_close(&f32s(&y), &want);
    }

    #[test]
    fn integer_output_rounds_and_infers_shape() {
        let x = Tensor::new(vec![1, 2], vec![0u8, 255]).unwrap();
        let scales = Tensor::vector(vec![1f32, 2.0]);
        let attrs = vec![("mode", s("linear")), ("coordinate_transformation_mode", s("align_corners"))];
        let op = crate::ops::activation::test_util::build("Resize", 13, attrs, 1).unwrap();
        let y = op.eval(&[Some(&x), None, Some(&scales)]).unwrap().remove(0);
        // 255 * [0, 1/3, 2/3, 1] = [0, 85, 170, 255].
        assert_eq!(y.as_slice::<u8>().unwrap(), &[0, 85, 170, 255]);
        let facts = [Fact::new(crate::ir::DType::U8, vec![Dim::Symbol("n".into()), Dim::Known(2)])];
        let scales_fact = Fact::constant(std::sync::Arc::new(scales));
        let out = op.infer(&[Some(&facts[0]), None, Some(&scales_fact)]).unwrap();
        assert_eq!(out[0].shape, Some(vec![Dim::Symbol("n".into()), Dim::Unknown]));
    }

    #[test]
    fn bad_targets_are_errors() {
        let x = Tensor::new(vec![2, 2], vec![1f32; 4]).unwrap();
        let sizes = Tensor::vector(vec![2i64, -3]);
        let e = run("Resize", 13, vec![], &[Some(&x), None, None, Some(&sizes)]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Runtime, "{e}");
        let short = Tensor::vector(vec![2f32]);
        let e = run("Resize", 13, vec![], &[Some(&x), None, Some(&short)]).unwrap_err();
        assert!(e.message.contains("one per resized axis"), "{e}");
        let e = run("Resize", 13, vec![], &[Some(&x)]).unwrap_err();
        assert!(e.message.contains("scales or sizes"), "{e}");
        let nan = Tensor::vector(vec![1f32, f32::NAN]);
        assert!(run("Resize", 13, vec![], &[Some(&x), None, Some(&nan)]).is_err());
    }
}
