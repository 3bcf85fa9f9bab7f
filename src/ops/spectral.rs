//! Signal processing: the window generators (HannWindow, HammingWindow, BlackmanWindow), DFT,
//! STFT and MelWeightMatrix. Complex tensors are real tensors with a trailing dim of 2 (real,
//! imaginary); a trailing dim of 1 is a real signal. Transforms run in f64 through [`super::fft`].

use super::fft::{Complex, Fft};
use super::reshape::{const_ints, fact_of, fold_small, lanes, scalar_int, with_capacity};
use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{DType, Dim, Fact, Scalar, Tensor};
use crate::{bail, dispatch, err, Result};
use std::f64::consts::PI;

pub fn register(r: &mut Registry) {
    r.add("HannWindow", build_window);
    r.add("HammingWindow", build_window);
    r.add("BlackmanWindow", build_window);
    r.add("DFT", build_dft);
    r.add("STFT", |ctx| Ok(Box::new(Stft { onesided: ctx.attrs.int_or("onesided", 1)? != 0 })));
    r.add("MelWeightMatrix", |ctx| Ok(Box::new(MelWeightMatrix { dtype: output_datatype(ctx, "MelWeightMatrix")? })));
}

/// The `output_datatype` attribute of the generators: FLOAT unless told, any number type.
fn output_datatype(ctx: &BuildCtx, op: &str) -> Result<DType> {
    let code = ctx.attrs.int_or("output_datatype", 1)?;
    match i32::try_from(code).ok().and_then(DType::from_onnx_code) {
        Some(dt) if dt != DType::String && dt != DType::Bool => Ok(dt),
        _ => bail!(Unsupported, "{op}: output_datatype {code} is not a supported number type"),
    }
}

/// A count read from a scalar input, which must be at least `min`.
fn count_input(op: &str, what: &str, t: &Tensor, min: i64) -> Result<usize> {
    let v = scalar_int(op, what, t)?;
    if v < min {
        bail!(Runtime, "{op}: {what} is {v}, it must be at least {min}");
    }
    usize::try_from(v).map_err(|_| err!(ResourceLimit, "{op}: {what} {v} is too large"))
}

/// A number tensor of `dtype` from f64 values.
fn from_f64(dtype: DType, shape: Vec<usize>, values: Vec<f64>) -> Result<Tensor> {
    dispatch!(dtype; T => Tensor::new(shape, values.into_iter().map(T::from_f64).collect::<Vec<T>>());
        numeric; else => bail!(Unsupported, "cannot produce a {dtype} tensor here"))
}

// ---------------------------------------------------------------------------------------------
// Windows

#[derive(Debug, Clone, Copy, PartialEq)]
enum WindowKind {
    Hann,
    Hamming,
    Blackman,
}

#[derive(Debug)]
pub struct Window {
    kind: WindowKind,
    periodic: bool,
    dtype: DType,
}

fn build_window(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let kind = match ctx.op_type {
        "HannWindow" => WindowKind::Hann,
        "HammingWindow" => WindowKind::Hamming,
        _ => WindowKind::Blackman,
    };
    Ok(Box::new(Window {
        kind,
        periodic: ctx.attrs.int_or("periodic", 1)? != 0,
        dtype: output_datatype(ctx, ctx.op_type)?,
    }))
}

impl Window {
    /// Sample `n` of a window whose cosines have period `period`: `size` when periodic, `size - 1`
    /// when symmetric.
    fn sample(&self, n: usize, period: usize) -> f64 {
        // A symmetric window of one sample has no period; it is the window's peak, as in PyTorch.
        if period == 0 {
            return 1.0;
        }
        let phase = 2.0 * PI * n as f64 / period as f64;
        match self.kind {
            WindowKind::Hann => 0.5 - 0.5 * phase.cos(),
            // The exact α = 25/46 of the spec rather than the rounded 0.54.
            WindowKind::Hamming => 25.0 / 46.0 - (21.0 / 46.0) * phase.cos(),
            WindowKind::Blackman => 0.42 - 0.5 * phase.cos() + 0.08 * (2.0 * phase).cos(),
        }
    }
}

impl Op for Window {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let size = const_ints(Some(input(inputs, 0)?))?.and_then(|v| v.first().copied());
        let dim = size.and_then(|s| usize::try_from(s).ok()).map_or(Dim::Unknown, Dim::Known);
        fold_small(self, inputs, vec![fact_of(Some(self.dtype), Some(vec![dim]))])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let op = match self.kind {
            WindowKind::Hann => "HannWindow",
            WindowKind::Hamming => "HammingWindow",
            WindowKind::Blackman => "BlackmanWindow",
        };
        let size = count_input(op, "size", input(inputs, 0)?, 0)?;
        let len = checked_len(&[size], self.dtype)?;
        let period = if self.periodic { len } else { len.saturating_sub(1) };
        let mut values = try_vec(len, 0.0)?;
        for (n, v) in values.iter_mut().enumerate() {
            *v = self.sample(n, period);
        }
        Ok(vec![from_f64(self.dtype, vec![len], values)?])
    }
}

// ---------------------------------------------------------------------------------------------
// DFT

#[derive(Debug)]
pub struct Dft {
    /// DFT-17 gives the axis as an attribute; DFT-20 as optional input 2.
    axis_attr: Option<i64>,
    inverse: bool,
    onesided: bool,
}

fn build_dft(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    if ctx.opset < 17 {
        return Err(ctx.unsupported_version());
    }
    let axis_attr = if ctx.opset < 20 { Some(ctx.attrs.int_or("axis", 1)?) } else { None };
    Ok(Box::new(Dft {
        axis_attr,
        inverse: ctx.attrs.int_or("inverse", 0)? != 0,
        onesided: ctx.attrs.int_or("onesided", 0)? != 0,
    }))
}

/// What one DFT does to its input's shape.
#[derive(Debug, Clone, Copy)]
struct DftPlan {
    axis: usize,
    /// The transform length.
    n: usize,
    /// How many input values along the axis are read (the rest are zero).
    taken: usize,
    /// The output length along the axis.
    out_len: usize,
    /// Trailing dim of the output: 1 for a real result (inverse one-sided), else 2.
    out_parts: usize,
}

impl Dft {
    /// The signal axis: any axis but the trailing real/imaginary one, negative counted from the back.
    fn axis(&self, axis: i64, rank: usize) -> Result<usize> {
        if rank < 2 {
            bail!(Shape, "DFT: input needs rank 2 or more (signal dims, then real/imaginary), got rank {rank}");
        }
        let r = rank as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if !(0..r - 1).contains(&a) {
            bail!(Shape, "DFT: axis {axis} is out of range for rank {rank} (valid: {} to -2, 0 to {})", -r, r - 2);
        }
        Ok(a as usize)
    }

    fn default_axis(&self) -> i64 {
        self.axis_attr.unwrap_or(-2)
    }

    fn plan(&self, axis: usize, dim: usize, dft_length: Option<i64>) -> Result<DftPlan> {
        let irfft = self.inverse && self.onesided;
        let n = match dft_length {
            Some(v) if v < 1 => bail!(Runtime, "DFT: dft_length is {v}, it must be at least 1"),
            Some(v) => usize::try_from(v).map_err(|_| err!(ResourceLimit, "DFT: dft_length {v} is too large"))?,
            None if irfft => {
                if dim < 2 {
                    bail!(Shape, "DFT: an inverse one-sided transform needs dft_length or at least 2 bins, got {dim}");
                }
                2 * (dim - 1)
            }
            None => dim,
        };
        let (taken, out_len, out_parts) = if irfft {
            (dim.min(n / 2 + 1), n, 1)
        } else if self.onesided {
            (dim.min(n), n / 2 + 1, 2)
        } else {
            (dim.min(n), n, 2)
        };
        Ok(DftPlan { axis, n, taken, out_len, out_parts })
    }

    fn run<T: Scalar>(&self, x: &Tensor, plan: DftPlan) -> Result<Tensor> {
        let shape = x.shape();
        let parts = shape[shape.len() - 1];
        let (outer, dim, inner) = lanes(&shape[..shape.len() - 1], plan.axis);
        let mut out_shape = shape.to_vec();
        out_shape[plan.axis] = plan.out_len;
        *out_shape.last_mut().unwrap_or(&mut 0) = plan.out_parts;
        let len = checked_len(&out_shape, x.dtype())?;
        let mut out = try_vec(len, T::zero())?;
        if len == 0 {
            return Tensor::new(out_shape, out);
        }
        let data = x.as_slice::<T>()?;
        let fft = Fft::new(plan.n, self.inverse)?;
        let scale = if self.inverse { 1.0 / plan.n as f64 } else { 1.0 };
        let mut buf = try_vec(plan.n, Complex::ZERO)?;
        let mut scratch = Vec::new();
        for o in 0..outer {
            for i in 0..inner {
                buf.fill(Complex::ZERO);
                for (k, b) in buf.iter_mut().enumerate().take(plan.taken) {
                    let at = ((o * dim + k) * inner + i) * parts;
                    let im = if parts == 2 { data[at + 1].to_f64() } else { 0.0 };
                    *b = Complex::new(data[at].to_f64(), im);
                }
                if self.inverse && self.onesided {
                    // The missing upper half of a real signal's spectrum mirrors the lower half.
                    for k in plan.n / 2 + 1..plan.n {
                        buf[k] = buf[plan.n - k].conj();
                    }
                }
                fft.run(&mut buf, &mut scratch)?;
                for (k, v) in buf.iter().enumerate().take(plan.out_len) {
                    let at = ((o * plan.out_len + k) * inner + i) * plan.out_parts;
                    out[at] = T::from_f64(v.re * scale);
                    if plan.out_parts == 2 {
                        out[at + 1] = T::from_f64(v.im * scale);
                    }
                }
            }
        }
        Tensor::new(out_shape, out)
    }
}

impl Op for Dft {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let Some(dims) = &x.shape else { return Ok(vec![fact_of(x.dtype, None)]) };
        let axis = match self.axis_attr {
            Some(a) => Some(a),
            None => match opt_input(inputs, 2) {
                Some(f) => const_ints(Some(f))?.and_then(|v| v.first().copied()),
                None => Some(self.default_axis()),
            },
        };
        let dft_length = match opt_input(inputs, 1) {
            Some(f) => const_ints(Some(f))?.map(|v| v.first().copied()),
            None => Some(None),
        };
        let mut out = dims.clone();
        let parts = if self.inverse && self.onesided { 1 } else { 2 };
        if let Some(last) = out.last_mut() {
            *last = Dim::Known(parts);
        }
        match (axis, dft_length) {
            (Some(a), Some(len)) => {
                let axis = self.axis(a, dims.len())?;
                out[axis] = match dims[axis].known() {
                    Some(dim) => Dim::Known(self.plan(axis, dim, len)?.out_len),
                    None if len.is_some() => Dim::Known(self.plan(axis, 0, len)?.out_len),
                    None => Dim::Unknown,
                };
            }
            // Which axis changes is not known: only the rank and the trailing dim are.
            _ => {
                let n = out.len();
                out[..n - 1].fill(Dim::Unknown);
            }
        }
        Ok(vec![fact_of(x.dtype, Some(out))])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let axis = match (self.axis_attr, opt_input(inputs, 2)) {
            (Some(a), _) => a,
            (None, Some(t)) => scalar_int("DFT", "axis", t)?,
            (None, None) => self.default_axis(),
        };
        let axis = self.axis(axis, x.rank())?;
        let parts = x.shape()[x.rank() - 1];
        if parts != 1 && parts != 2 {
            bail!(Shape, "DFT: the last input dim must be 1 (real) or 2 (complex), got {parts}");
        }
        let dft_length = opt_input(inputs, 1).map(|t| scalar_int("DFT", "dft_length", t)).transpose()?;
        let plan = self.plan(axis, x.shape()[axis], dft_length)?;
        let y = dispatch!(x.dtype(); T => self.run::<T>(x, plan)?; float;
            else => bail!(Unsupported, "DFT does not take {}", x.dtype()));
        Ok(vec![y])
    }
}

// ---------------------------------------------------------------------------------------------
// STFT

#[derive(Debug)]
pub struct Stft {
    onesided: bool,
}

/// The frames of one STFT.
#[derive(Debug, Clone, Copy)]
struct StftPlan {
    frame_length: usize,
    step: usize,
    frames: usize,
    bins: usize,
}

impl Stft {
    fn plan(
        &self,
        signal_length: usize,
        step: i64,
        window: Option<usize>,
        frame_length: Option<i64>,
    ) -> Result<StftPlan> {
        if step < 1 {
            bail!(Runtime, "STFT: frame_step is {step}, it must be at least 1");
        }
        let step = usize::try_from(step).map_err(|_| err!(ResourceLimit, "STFT: frame_step {step} is too large"))?;
        let frame_length = match (frame_length, window) {
            (Some(f), _) if f < 1 => bail!(Runtime, "STFT: frame_length is {f}, it must be at least 1"),
            (Some(f), Some(w)) if f as u64 != w as u64 => {
                bail!(Shape, "STFT: frame_length {f} differs from the window length {w}")
            }
            (Some(f), _) => {
                usize::try_from(f).map_err(|_| err!(ResourceLimit, "STFT: frame_length {f} is too large"))?
            }
            (None, Some(w)) => w,
            (None, None) => signal_length,
        };
        if frame_length == 0 || frame_length > signal_length {
            bail!(Shape, "STFT: frame length {frame_length} does not fit a signal of length {signal_length}");
        }
        let frames = (signal_length - frame_length) / step + 1;
        let bins = if self.onesided { frame_length / 2 + 1 } else { frame_length };
        Ok(StftPlan { frame_length, step, frames, bins })
    }

    fn run<T: Scalar>(&self, signal: &Tensor, window: Option<&Tensor>, plan: StftPlan) -> Result<Tensor> {
        let (batch, length, parts) = (signal.shape()[0], signal.shape()[1], signal.shape()[2]);
        let out_shape = vec![batch, plan.frames, plan.bins, 2];
        let mut out = try_vec(checked_len(&out_shape, signal.dtype())?, T::zero())?;
        let data = signal.as_slice::<T>()?;
        let window: Option<&[T]> = window.map(|w| w.as_slice::<T>()).transpose()?;
        let fft = Fft::new(plan.frame_length, false)?;
        let mut buf = try_vec(plan.frame_length, Complex::ZERO)?;
        let mut scratch = Vec::new();
        for b in 0..batch {
            for f in 0..plan.frames {
                for (t, v) in buf.iter_mut().enumerate() {
                    let at = (b * length + f * plan.step + t) * parts;
                    let w = window.map_or(1.0, |w| w[t].to_f64());
                    let im = if parts == 2 { data[at + 1].to_f64() } else { 0.0 };
                    *v = Complex::new(data[at].to_f64() * w, im * w);
                }
                fft.run(&mut buf, &mut scratch)?;
                for (k, v) in buf.iter().enumerate().take(plan.bins) {
                    let at = ((b * plan.frames + f) * plan.bins + k) * 2;
                    out[at] = T::from_f64(v.re);
                    out[at + 1] = T::from_f64(v.im);
                }
            }
        }
        Tensor::new(out_shape, out)
    }
}

impl Op for Stft {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let signal = input(inputs, 0)?;
        let Some(dims) = &signal.shape else { return Ok(vec![fact_of(signal.dtype, None)]) };
        if dims.len() != 3 {
            bail!(Shape, "STFT: signal must have rank 3 [batch, length, 1 or 2], got rank {}", dims.len());
        }
        let step = const_ints(Some(input(inputs, 1)?))?.and_then(|v| v.first().copied());
        let window = match opt_input(inputs, 2) {
            Some(w) => w.shape.as_ref().and_then(|s| s.first()).and_then(|d| d.known()).map(Some),
            None => Some(None),
        };
        let frame_length = match opt_input(inputs, 3) {
            Some(f) => const_ints(Some(f))?.map(|v| v.first().copied()),
            None => Some(None),
        };
        let (frames, bins) = match (dims[1].known(), step, window, frame_length) {
            (Some(len), Some(step), Some(w), Some(f)) => {
                let plan = self.plan(len, step, w, f)?;
                (Dim::Known(plan.frames), Dim::Known(plan.bins))
            }
            _ => (Dim::Unknown, Dim::Unknown),
        };
        Ok(vec![fact_of(signal.dtype, Some(vec![dims[0].clone(), frames, bins, Dim::Known(2)]))])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let signal = input(inputs, 0)?;
        if signal.rank() != 3 || !(1..=2).contains(&signal.shape()[2]) {
            bail!(Shape, "STFT: signal must have shape [batch, length, 1 or 2], got {:?}", signal.shape());
        }
        let step = scalar_int("STFT", "frame_step", input(inputs, 1)?)?;
        let window = opt_input(inputs, 2);
        if let Some(w) = window {
            if w.rank() != 1 {
                bail!(Shape, "STFT: window must be 1-D, got shape {:?}", w.shape());
            }
            if w.dtype() != signal.dtype() {
                bail!(Shape, "STFT: window is {}, the signal {}", w.dtype(), signal.dtype());
            }
        }
        let frame_length = opt_input(inputs, 3).map(|t| scalar_int("STFT", "frame_length", t)).transpose()?;
        let plan = self.plan(signal.shape()[1], step, window.map(|w| w.len()), frame_length)?;
        let y = dispatch!(signal.dtype(); T => self.run::<T>(signal, window, plan)?; float;
            else => bail!(Unsupported, "STFT does not take {}", signal.dtype()));
        Ok(vec![y])
    }
}

// ---------------------------------------------------------------------------------------------
// MelWeightMatrix

#[derive(Debug)]
pub struct MelWeightMatrix {
    dtype: DType,
}

fn hz_to_mel(hz: f64) -> f64 {
    2595.0 * (hz / 700.0).ln_1p() / 10f64.ln()
}

fn mel_to_hz(mel: f64) -> f64 {
    700.0 * (mel / 2595.0 * 10f64.ln()).exp_m1()
}

impl MelWeightMatrix {
    /// The `[dft_length / 2 + 1, num_mel_bins]` triangles, as the ONNX reference builds them: band
    /// edges equally spaced in mel over `num_mel_bins + 2` steps, snapped down to DFT bins.
    fn weights(&self, mel_bins: usize, dft_length: usize, sample_rate: usize, low: f64, high: f64) -> Result<Vec<f64>> {
        let spectrogram_bins = dft_length / 2 + 1;
        let (low_mel, high_mel) = (hz_to_mel(low), hz_to_mel(high));
        // Check the output's size before anything is sized by num_mel_bins (2^40, say).
        let len = checked_len(&[spectrogram_bins, mel_bins], self.dtype)?;
        let edges = mel_bins.saturating_add(2);
        let step = (high_mel - low_mel) / edges as f64;
        let mut bin_of_edge = with_capacity(edges)?;
        for e in 0..edges {
            let hz = mel_to_hz(e as f64 * step + low_mel);
            let bin = ((dft_length as f64 + 1.0) * hz / sample_rate as f64).floor();
            if !(0.0..spectrogram_bins as f64).contains(&bin) {
                bail!(
                    Runtime,
                    "MelWeightMatrix: band edge {hz} Hz falls in DFT bin {bin}, outside 0..{spectrogram_bins} \
                     (check lower_edge_hertz, upper_edge_hertz and sample_rate)"
                );
            }
            bin_of_edge.push(bin as usize);
        }
        let mut out = try_vec(len, 0.0)?;
        for band in 0..mel_bins {
            let (lo, center, hi) = (bin_of_edge[band], bin_of_edge[band + 1], bin_of_edge[band + 2]);
            if center == lo {
                out[center * mel_bins + band] = 1.0;
            } else {
                for j in lo..=center {
                    out[j * mel_bins + band] = (j - lo) as f64 / (center - lo) as f64;
                }
            }
            for j in center..hi {
                out[j * mel_bins + band] = (hi - j) as f64 / (hi - center) as f64;
            }
        }
        Ok(out)
    }
}

impl Op for MelWeightMatrix {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let scalar = |i: usize| -> Result<Option<usize>> {
            Ok(const_ints(Some(input(inputs, i)?))?.and_then(|v| v.first().and_then(|&v| usize::try_from(v).ok())))
        };
        let dim = |v: Option<usize>| v.map_or(Dim::Unknown, Dim::Known);
        let shape = vec![dim(scalar(1)?.map(|d| d / 2 + 1)), dim(scalar(0)?)];
        fold_small(self, inputs, vec![fact_of(Some(self.dtype), Some(shape))])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let op = "MelWeightMatrix";
        let mel_bins = count_input(op, "num_mel_bins", input(inputs, 0)?, 0)?;
        let dft_length = count_input(op, "dft_length", input(inputs, 1)?, 1)?;
        let sample_rate = count_input(op, "sample_rate", input(inputs, 2)?, 1)?;
        let edge = |i: usize, what: &str| -> Result<f64> {
            match input(inputs, i)?.to_f64_vec()?.as_slice() {
                &[v] if v.is_finite() && v >= 0.0 => Ok(v),
                &[v] => bail!(Runtime, "{op}: {what} is {v}, it must be a finite frequency of at least 0"),
                v => bail!(Shape, "{op}: {what} must hold one value, got {}", v.len()),
            }
        };
        let (low, high) = (edge(3, "lower_edge_hertz")?, edge(4, "upper_edge_hertz")?);
        if low > high {
            bail!(Runtime, "{op}: lower_edge_hertz {low} is above upper_edge_hertz {high}");
        }
        let weights = self.weights(mel_bins, dft_length, sample_rate, low, high)?;
        Ok(vec![from_f64(self.dtype, vec![dft_length / 2 + 1, mel_bins], weights)?])
    }
}

#[cfg(test)]
mod tests {
    use super::super::reshape::testing::*;
    use super::*;
    use crate::ir::Attr;

    fn close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "got {got:?}, want {want:?}");
        }
    }

    fn f64s(t: &Tensor) -> Vec<f64> {
        t.as_slice::<f64>().unwrap().to_vec()
    }

    /// Interleaves (re, im) pairs as a complex tensor stores them.
    fn pairs(v: &[(f64, f64)]) -> Vec<f64> {
        v.iter().flat_map(|&(re, im)| [re, im]).collect()
    }

    // Expected values from numpy (np.hanning-style formulas, np.fft).
    #[test]
    fn windows_periodic_symmetric_and_typed() {
        let four = Tensor::scalar(4i64);
        let f64_out = ("output_datatype", Attr::Int(11));
        let hann = run("HannWindow", 17, vec![f64_out.clone()], &[Some(&four)]).unwrap();
        close(&f64s(&hann), &[0.0, 0.5, 1.0, 0.5]);
        let hamming =
            run("HammingWindow", 17, vec![f64_out.clone(), ("periodic", Attr::Int(0))], &[Some(&four)]).unwrap();
        close(&f64s(&hamming), &[0.08695652173913043, 0.7717391304347826, 0.7717391304347826, 0.08695652173913043]);
        let blackman = run("BlackmanWindow", 17, vec![f64_out], &[Some(&four)]).unwrap();
        close(&f64s(&blackman), &[0.0, 0.34, 1.0, 0.34]);
        let float = run("HannWindow", 17, vec![], &[Some(&Tensor::scalar(2i32))]).unwrap();
        assert_eq!(float.as_slice::<f32>().unwrap(), &[0.0, 1.0]);
        let e = run("HannWindow", 17, vec![], &[Some(&Tensor::scalar(-1i64))]).unwrap_err();
        assert!(e.message.contains("size is -1"), "{e}");
        assert!(build("HannWindow", 17, vec![("output_datatype", Attr::Int(8))], 1).is_err());
    }

    fn dft(opset: i64, attrs: Vec<(&str, Attr)>, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
        run("DFT", opset, attrs, inputs)
    }

    #[test]
    fn dft_real_forward_full_and_onesided() {
        // np.fft.fft([1, 2, 0, -1, 3]), a length that is not a power of two.
        let x = Tensor::new(vec![1, 5, 1], vec![1f64, 2., 0., -1., 3.]).unwrap();
        let y = dft(20, vec![], &[Some(&x)]).unwrap();
        assert_eq!(y.shape(), &[1, 5, 2]);
        let want = pairs(&[
            (5.0, 0.0),
            (3.35410196624968, 0.3632712640026804),
            (-3.35410196624968, 1.5388417685876268),
            (-3.35410196624968, -1.5388417685876268),
            (3.35410196624968, -0.3632712640026804),
        ]);
        close(&f64s(&y), &want);
        // np.fft.rfft(x, n=4): dft_length truncates, onesided keeps 4 / 2 + 1 bins.
        let four = Tensor::scalar(4i64);
        let y = dft(20, vec![("onesided", Attr::Int(1))], &[Some(&x), Some(&four)]).unwrap();
        assert_eq!(y.shape(), &[1, 3, 2]);
        close(&f64s(&y), &pairs(&[(2.0, 0.0), (1.0, -3.0), (0.0, 0.0)]));
        // Opset 17 takes the axis as an attribute; the same transform along axis 1 of [1, 5, 1].
        let y = dft(17, vec![("axis", Attr::Int(1))], &[Some(&x)]).unwrap();
        close(&f64s(&y), &want);
    }

    #[test]
    fn dft_inverse_complex_and_one_sided() {
        // np.fft.ifft([1+1j, 2, 3-1j]) along axis 0 of a [3, 2] complex tensor.
        let x = Tensor::new(vec![3, 2], vec![1f64, 1., 2., 0., 3., -1.]).unwrap();
        let axis = Tensor::scalar(0i64);
        let y = dft(20, vec![("inverse", Attr::Int(1))], &[Some(&x), None, Some(&axis)]).unwrap();
        let want = pairs(&[
            (2.0, 0.0),
            (-0.7886751345948129, 0.21132486540518713),
            (-0.21132486540518713, 0.7886751345948129),
        ]);
        close(&f64s(&y), &want);
        // np.fft.irfft([1, 2-1j, 0.5j]): default length 2 * (3 - 1), real output.
        let x = Tensor::new(vec![3, 2], vec![1f64, 0., 2., -1., 0., 0.5]).unwrap();
        let inv = vec![("inverse", Attr::Int(1)), ("onesided", Attr::Int(1))];
        let y = dft(20, inv, &[Some(&x), None, Some(&axis)]).unwrap();
        assert_eq!(y.shape(), &[4, 1]);
        close(&f64s(&y), &[1.25, 0.75, -0.75, -0.25]);
    }

    #[test]
    fn dft_power_of_two_in_f32() {
        // A 64-point transform of an impulse at 1: e^(-2πik/64).
        let mut v = vec![0f32; 64];
        v[1] = 1.0;
        let x = Tensor::new(vec![64, 1], v).unwrap();
        let y = dft(20, vec![], &[Some(&x), None, Some(&Tensor::scalar(0i64))]).unwrap();
        let got = f32s(&y);
        for k in 0..64 {
            let angle = -2.0 * PI * k as f64 / 64.0;
            assert!(
                (got[2 * k] as f64 - angle.cos()).abs() < 1e-6 && (got[2 * k + 1] as f64 - angle.sin()).abs() < 1e-6
            );
        }
    }

    #[test]
    fn dft_bad_inputs_are_errors() {
        let x = Tensor::new(vec![4, 1], vec![1f32; 4]).unwrap();
        let e = dft(20, vec![], &[Some(&x), Some(&Tensor::scalar(0i64))]).unwrap_err();
        assert!(e.message.contains("dft_length is 0"), "{e}");
        let e = dft(20, vec![], &[Some(&x), None, Some(&Tensor::scalar(1i64))]).unwrap_err();
        assert!(e.message.contains("axis 1 is out of range"), "{e}");
        let three = Tensor::new(vec![2, 3], vec![1f32; 6]).unwrap();
        assert!(dft(20, vec![], &[Some(&three), None, Some(&Tensor::scalar(0i64))]).is_err());
        assert!(build("DFT", 16, vec![], 1).is_err());
    }

    #[test]
    fn stft_frames_with_window() {
        // Frames of arange(6) of length 4, step 2, times [1, .5, .25, .5], np.fft.fft()[:3].
        let signal = Tensor::new(vec![1, 6, 1], (0..6).map(|v| v as f64).collect()).unwrap();
        let window = Tensor::vector(vec![1f64, 0.5, 0.25, 0.5]);
        let step = Tensor::scalar(2i64);
        let y = run("STFT", 17, vec![], &[Some(&signal), Some(&step), Some(&window)]).unwrap();
        assert_eq!(y.shape(), &[1, 2, 3, 2]);
        close(&f64s(&y), &pairs(&[(2.5, 0.0), (-0.5, 1.0), (-1.5, 0.0), (7.0, 0.0), (1.0, 1.0), (-1.0, 0.0)]));
        let e = run("STFT", 17, vec![], &[Some(&signal), Some(&Tensor::scalar(0i64)), Some(&window)]).unwrap_err();
        assert!(e.message.contains("frame_step is 0"), "{e}");
        let long = Tensor::scalar(7i64);
        let e = run("STFT", 17, vec![], &[Some(&signal), Some(&step), None, Some(&long)]).unwrap_err();
        assert!(e.message.contains("does not fit"), "{e}");
        let e = run("STFT", 17, vec![], &[Some(&signal), Some(&step), Some(&window), Some(&Tensor::scalar(3i64))])
            .unwrap_err();
        assert!(e.message.contains("differs from the window length"), "{e}");
    }

    #[test]
    fn mel_weight_matrix_matches_the_reference() {
        // onnx.reference MelWeightMatrix(3, 20, 1000, 10, 500).
        let ints = [3i64, 20, 1000].map(Tensor::scalar);
        let (lo, hi) = (Tensor::scalar(10f32), Tensor::scalar(500f32));
        let inputs = [Some(&ints[0]), Some(&ints[1]), Some(&ints[2]), Some(&lo), Some(&hi)];
        let y = run("MelWeightMatrix", 17, vec![], &inputs).unwrap();
        assert_eq!(y.shape(), &[11, 3]);
        let mut want = vec![0f32; 33];
        for (at, v) in [(3, 1.0), (6, 0.5), (7, 0.5), (10, 1.0), (13, 0.5), (14, 0.5), (17, 1.0), (20, 0.5)] {
            want[at] = v;
        }
        assert_eq!(f32s(&y), want);
        // An upper edge far above the Nyquist frequency lands outside the spectrogram.
        let far = Tensor::scalar(5000f32);
        let bad = [Some(&ints[0]), Some(&ints[1]), Some(&ints[2]), Some(&lo), Some(&far)];
        let e = run("MelWeightMatrix", 17, vec![], &bad).unwrap_err();
        assert!(e.message.contains("outside"), "{e}");
    }
}
