//! Pooling: MaxPool (with optional Indices), AveragePool, LpPool, their global forms, and
//! MaxUnpool.
//!
//! Windows follow the ONNX reference: a window covers the explicitly padded input; with
//! `ceil_mode` it may run past the end padding, and those positions never count. AveragePool
//! divides by the taps inside the input, or with `count_include_pad` by the taps inside the padded
//! input.

use super::binary::{narrow, widen};
use super::real::{from_real, to_real, wants_f64, Real};
use super::window::{three_axes, Axis, WindowAttrs};
use super::{input, BuildCtx, Op, Registry};
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{Attr, Attributes, DType, Dim, Fact, Scalar, Tensor};
use crate::{bail, dispatch, err, Result};

pub fn register(r: &mut Registry) {
    r.add("MaxPool", |ctx| {
        let column_major = ctx.attrs.int_or("storage_order", 0)? != 0;
        Pool::build(ctx, Kind::Max { column_major })
    });
    r.add("AveragePool", |ctx| {
        Pool::build(ctx, Kind::Average { count_include_pad: ctx.attrs.int_or("count_include_pad", 0)? != 0 })
    });
    r.add("LpPool", |ctx| Pool::build(ctx, Kind::Lp { p: p_attr(ctx.attrs)? }));
    r.add("GlobalMaxPool", |_| Ok(Box::new(GlobalPool { kind: Kind::Max { column_major: false } })));
    r.add("GlobalAveragePool", |_| Ok(Box::new(GlobalPool { kind: Kind::Average { count_include_pad: false } })));
    r.add("MaxUnpool", build_max_unpool);
    r.add("GlobalLpPool", |ctx| Ok(Box::new(GlobalPool { kind: Kind::Lp { p: p_attr(ctx.attrs)? } })));
}

/// The `p` of LpPool: a float in opset 1, an int from opset 2.
fn p_attr(attrs: &Attributes) -> Result<f64> {
    let p = match attrs.get("p") {
        None => 2.0,
        Some(Attr::Int(p)) => *p as f64,
        Some(Attr::Float(p)) => f64::from(*p),
        Some(_) => bail!(InvalidModel, "attribute 'p' should be a number"),
    };
    if !(p > 0.0 && p.is_finite()) {
        bail!(InvalidModel, "attribute 'p' must be positive, got {p}");
    }
    Ok(p)
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `column_major`: MaxPool's `storage_order` = 1, which numbers Indices with the first
    /// spatial axis fastest.
    Max {
        column_major: bool,
    },
    Average {
        count_include_pad: bool,
    },
    Lp {
        p: f64,
    },
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Max { .. } => "MaxPool",
            Kind::Average { .. } => "AveragePool",
            Kind::Lp { .. } => "LpPool",
        }
    }
}

/// One pooling window: per axis, the taps inside the input, and how many lie inside the padded
/// input.
struct Window<'a> {
    g: &'a [Axis; 3],
    out: [usize; 3],
    taps: [(usize, usize); 3],
    padded_taps: usize,
}

impl Window<'_> {
    fn size(&self) -> usize {
        self.taps.iter().map(|(lo, hi)| hi - lo).product()
    }

    /// Calls `f` with the in-plane (row-major) index of every input element of the window.
    fn visit(&self, mut f: impl FnMut(usize)) {
        let [d, h, w] = self.g;
        let [(d_lo, d_hi), (h_lo, h_hi), (w_lo, w_hi)] = self.taps;
        for kd in d_lo..d_hi {
            let id = d.input_position(self.out[0], kd);
            for kh in h_lo..h_hi {
                let row = (id * h.input + h.input_position(self.out[1], kh)) * w.input;
                for kw in w_lo..w_hi {
                    f(row + w.input_position(self.out[2], kw));
                }
            }
        }
    }
}

/// Computes `f(plane index, plane input, window)` for every window of every (image, channel)
/// plane of `x`, in the row-major order of `out_shape`.
fn pool_planes<T, O>(
    x: &[T],
    g: &[Axis; 3],
    out_shape: &[usize],
    mut f: impl FnMut(usize, &[T], &Window) -> O,
) -> Result<Vec<O>> {
    // The output's size bounds every per-position table below: check it first (pads of 2^40 make
    // 2^40 output positions).
    let len = checked_len(out_shape, DType::F64)?;
    // Per axis and output position: (taps inside the input, taps inside the padded input).
    let ranges: Vec<Vec<((usize, usize), usize)>> = g
        .iter()
        .map(|a| {
            (0..a.output)
                .map(|o| {
                    let inside = (a.taps_below(o, a.pad_begin), a.taps_below(o, a.pad_begin + a.input));
                    (inside, a.taps_below(o, a.pad_begin + a.input + a.pad_end))
                })
                .collect()
        })
        .collect();
    let in_plane: usize = g.iter().map(|a| a.input).product();
    let mut out = crate::ir::limits::with_capacity(len)?;
    let planes: usize = out_shape[..2].iter().product();
    for plane in 0..planes {
        let src = &x[plane * in_plane..(plane + 1) * in_plane];
        for (od, &(td, pd)) in ranges[0].iter().enumerate() {
            for (oh, &(th, ph)) in ranges[1].iter().enumerate() {
                for (ow, &(tw, pw)) in ranges[2].iter().enumerate() {
                    let window = Window { g, out: [od, oh, ow], taps: [td, th, tw], padded_taps: pd * ph * pw };
                    out.push(f(plane, src, &window));
                }
            }
        }
    }
    Ok(out)
}

#[derive(Debug)]
pub struct Pool {
    kind: Kind,
    window: WindowAttrs,
    /// MaxPool's optional second output.
    with_indices: bool,
}

impl Pool {
    fn build(ctx: &BuildCtx, kind: Kind) -> Result<Box<dyn Op>> {
        let window = WindowAttrs::parse(ctx.attrs)?;
        if window.kernel_shape.is_none() {
            bail!(InvalidModel, "{} requires attribute 'kernel_shape'", kind.name());
        }
        let with_indices = matches!(kind, Kind::Max { .. }) && ctx.num_outputs > 1;
        Ok(Box::new(Pool { kind, window, with_indices }))
    }

    fn kernel(&self) -> &[usize] {
        self.window.kernel_shape.as_deref().unwrap_or_default()
    }

    /// Whether this is MaxPool without its Indices output (for backends with a kernel for it).
    pub fn is_plain_max(&self) -> bool {
        matches!(self.kind, Kind::Max { .. }) && !self.with_indices
    }

    /// For AveragePool, whether taps in the padding count in the divisor (`count_include_pad`);
    /// `None` for the other pools (for backends with a kernel for it).
    pub fn average_counts_padding(&self) -> Option<bool> {
        match self.kind {
            Kind::Average { count_include_pad } => Some(count_include_pad),
            _ => None,
        }
    }

    /// The window of every spatial axis (unit axes in front below 3-D) and the output shape.
    pub fn windows(&self, x_shape: &[usize]) -> Result<([Axis; 3], Vec<usize>)> {
        self.geometry(x_shape)
    }

    /// Resolves the window of every spatial axis of `x_shape` and the output shape.
    fn geometry(&self, x_shape: &[usize]) -> Result<([Axis; 3], Vec<usize>)> {
        let spatial = self.kernel().len();
        if x_shape.len() != spatial + 2 {
            bail!(
                Shape,
                "{} with a {spatial}-D kernel needs an input of rank {}, got {x_shape:?}",
                self.kind.name(),
                spatial + 2
            );
        }
        self.window.check_rank(spatial)?;
        let axes: Vec<Axis> = self
            .kernel()
            .iter()
            .enumerate()
            .map(|(i, &k)| self.window.forward_axis(i, x_shape[i + 2], k))
            .collect::<Result<_>>()?;
        let mut out_shape = x_shape[..2].to_vec();
        out_shape.extend(axes.iter().map(|a| a.output));
        Ok((three_axes(&axes)?, out_shape))
    }
}

impl Op for Pool {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let shape = match &x.shape {
            None => None,
            Some(s) => {
                let spatial = self.kernel().len();
                if s.len() != spatial + 2 {
                    bail!(
                        Shape,
                        "{} with a {spatial}-D kernel needs an input of rank {}, got rank {}",
                        self.kind.name(),
                        spatial + 2,
                        s.len()
                    );
                }
                self.window.check_rank(spatial)?;
                let mut out = s[..2].to_vec();
                for (i, &k) in self.kernel().iter().enumerate() {
                    out.push(self.window.forward_dim(i, &s[i + 2], k)?);
                }
                Some(out)
            }
        };
        let mut facts = vec![Fact { dtype: x.dtype, shape: shape.clone(), value: None }];
        if self.with_indices {
            facts.push(Fact { dtype: Some(DType::I64), shape, value: None });
        }
        Ok(facts)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let (g, out_shape) = self.geometry(x.shape())?;
        match self.kind {
            Kind::Max { column_major } => {
                let (dt, x) = (x.dtype(), widen(x)?);
                let mut outs = dispatch!(x.dtype(); T => {
                    let lowest = lowest(dt)?.as_slice::<T>()?[0];
                    max_pool::<T>(&x, &g, out_shape, self.with_indices, column_major, lowest)?
                }; I64 | U64 | F32 | F64; else => bail!(Unsupported, "MaxPool does not take {dt} tensors"));
                outs[0] = narrow(outs[0].clone(), dt)?;
                Ok(outs)
            }
            kind => {
                let y = if wants_f64(kind.name(), x.dtype())? {
                    mean_pool::<f64>(x, &g, out_shape, kind)?
                } else {
                    mean_pool::<f32>(x, &g, out_shape, kind)?
                };
                Ok(vec![y])
            }
        }
    }
}

/// The value of an all-padding (or empty) max window: -inf, or the lowest value of an integer
/// `dt`, as a scalar of its [`widen`]ed dtype. The max kernels compute in that dtype (i64, u64,
/// f32 or f64: they only compare and move values, which widening keeps exact), so each compiles
/// four times rather than twelve.
fn lowest(dt: DType) -> Result<Tensor> {
    widen(&Tensor::scalar(f64::NEG_INFINITY).cast_numeric(dt)?)
}

/// Whether `v` takes over from the running maximum `best`: NaN is skipped unless the whole window
/// is NaN, as in ONNX Runtime.
#[allow(clippy::eq_op)] // `best != best` detects NaN for every element type
fn replaces_max<T: PartialOrd>(best: T, v: T) -> bool {
    v > best || best != best
}

/// The in-plane index that MaxPool's Indices report for row-major in-plane index `i`.
fn storage_index(g: &[Axis; 3], i: usize, column_major: bool) -> usize {
    if !column_major {
        return i;
    }
    let [d, h, w] = [g[0].input, g[1].input, g[2].input];
    let (id, ih, iw) = (i / (h * w), (i / w) % h, i % w);
    // With unit leading axes this is the first real spatial axis varying fastest.
    id + ih * d + iw * d * h
}

fn max_pool<T: Scalar>(
    x: &Tensor,
    g: &[Axis; 3],
    out_shape: Vec<usize>,
    with_indices: bool,
    column_major: bool,
    lowest: T,
) -> Result<Vec<Tensor>> {
    let in_plane: usize = g.iter().map(|a| a.input).product();
    let best = pool_planes(x.as_slice::<T>()?, g, &out_shape, |plane, src, win| {
        let mut best: Option<(T, usize)> = None;
        win.visit(|i| {
            if best.is_none_or(|(b, _)| replaces_max(b, src[i])) {
                best = Some((src[i], i));
            }
        });
        // An all-padding window gives the lowest value and index -1.
        best.map_or((lowest, -1), |(v, i)| (v, (plane * in_plane + storage_index(g, i, column_major)) as i64))
    })?;
    let (y, indices): (Vec<T>, Vec<i64>) = best.into_iter().unzip();
    let mut outs = vec![Tensor::new(out_shape.clone(), y)?];
    if with_indices {
        outs.push(Tensor::new(out_shape, indices)?);
    }
    Ok(outs)
}

/// AveragePool and LpPool: a sum over the window, then the mean or the p-th root.
fn mean_pool<R: Real>(x: &Tensor, g: &[Axis; 3], out_shape: Vec<usize>, kind: Kind) -> Result<Tensor> {
    let y = pool_planes(&to_real::<R>(x)?, g, &out_shape, |_, src, win| {
        if let Kind::Lp { p } = kind {
            return lp_norm(p, |f| win.visit(|i| f(src[i])));
        }
        let mut sum = R::zero();
        win.visit(|i| sum += src[i]);
        let count =
            if matches!(kind, Kind::Average { count_include_pad: true }) { win.padded_taps } else { win.size() };
        sum / R::from_f64(count as f64)
    })?;
    from_real(x.dtype(), out_shape, y)
}

/// `(sum |v|^p)^(1/p)` over the values `each` produces.
fn lp_norm<R: Real>(p: f64, each: impl FnOnce(&mut dyn FnMut(R))) -> R {
    let mut sum = R::zero();
    if p == 2.0 {
        each(&mut |v| sum += v * v);
        sum.sqrt()
    } else {
        let rp = R::from_f64(p);
        each(&mut |v| sum += v.abs().powf(rp));
        sum.powf(R::from_f64(1.0 / p))
    }
}

/// Pools over all spatial axes: output `[N, C, 1, ...]`.
#[derive(Debug)]
pub struct GlobalPool {
    kind: Kind,
}

impl GlobalPool {
    /// Whether this is GlobalAveragePool (for backends with a kernel for it).
    pub fn is_average(&self) -> bool {
        matches!(self.kind, Kind::Average { .. })
    }

    fn name(&self) -> String {
        format!("Global{}", self.kind.name())
    }
}

impl Op for GlobalPool {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        if x.rank().is_some_and(|r| r < 2) {
            bail!(Shape, "{} needs an input of rank 2 or more", self.name());
        }
        let shape = x
            .shape
            .as_ref()
            .map(|s| s.iter().enumerate().map(|(i, d)| if i < 2 { d.clone() } else { Dim::Known(1) }).collect());
        Ok(vec![Fact { dtype: x.dtype, shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        if x.rank() < 2 {
            bail!(Shape, "{} needs an input of rank 2 or more, got {:?}", self.name(), x.shape());
        }
        let out_shape: Vec<usize> = x.shape().iter().enumerate().map(|(i, &d)| if i < 2 { d } else { 1 }).collect();
        let plane: usize = x.shape()[2..].iter().product();
        let y = match self.kind {
            Kind::Max { .. } => {
                let (dt, x) = (x.dtype(), widen(x)?);
                let y = dispatch!(x.dtype(); T => {
                    let (xv, lowest) = (x.as_slice::<T>()?, lowest(dt)?.as_slice::<T>()?[0]);
                    let planes = out_shape[..2].iter().product::<usize>();
                    let maxima = (0..planes).map(|p| {
                        let values = xv[p * plane..(p + 1) * plane].iter().copied();
                        values.reduce(|b, v| if replaces_max(b, v) { v } else { b }).unwrap_or(lowest)
                    });
                    Tensor::new(out_shape, maxima.collect())?
                }; I64 | U64 | F32 | F64; else => bail!(Unsupported, "GlobalMaxPool does not take {dt} tensors"));
                narrow(y, dt)?
            }
            kind => {
                if wants_f64(&self.name(), x.dtype())? {
                    global_mean::<f64>(x, out_shape, plane, kind)?
                } else {
                    global_mean::<f32>(x, out_shape, plane, kind)?
                }
            }
        };
        Ok(vec![y])
    }
}

fn global_mean<R: Real>(x: &Tensor, out_shape: Vec<usize>, plane: usize, kind: Kind) -> Result<Tensor> {
    let xv = to_real::<R>(x)?;
    let planes = out_shape[..2].iter().product::<usize>();
    let mut y = Vec::with_capacity(planes);
    for p in 0..planes {
        let values = &xv[p * plane..(p + 1) * plane];
        y.push(match kind {
            Kind::Lp { p } => lp_norm(p, |f| values.iter().for_each(|&v| f(v))),
            _ => values.iter().fold(R::zero(), |s, &v| s + v) / R::from_f64(plane as f64),
        });
    }
    from_real(x.dtype(), out_shape, y)
}

/// MaxUnpool (opsets 9, 11): scatters X into zeros at the flat positions `I` that MaxPool reported.
///
/// Like the ONNX reference (and its node tests), the indices address the tensor of the shape the
/// attributes imply, `(in - 1) * stride - pads + kernel` per axis; a larger `output_shape` input then
/// receives that tensor in its leading corner, zeros elsewhere.
#[derive(Debug)]
pub struct MaxUnpool {
    kernel: Vec<usize>,
    strides: Vec<usize>,
    /// All begins, then all ends.
    pads: Vec<usize>,
}

fn build_max_unpool(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    let list = |name: &str, min: i64| -> Result<Option<Vec<usize>>> {
        a.ints(name)?
            .map(|v| {
                v.iter()
                    .map(|&x| {
                        usize::try_from(x).ok().filter(|&x| x as i64 >= min).ok_or_else(|| {
                            err!(InvalidModel, "MaxUnpool: attribute '{name}' has {x}, values must be at least {min}")
                        })
                    })
                    .collect()
            })
            .transpose()
    };
    let kernel = a.required("kernel_shape", list("kernel_shape", 1))?;
    let n = kernel.len();
    let strides = list("strides", 1)?.unwrap_or_else(|| vec![1; n]);
    let pads = list("pads", 0)?.unwrap_or_else(|| vec![0; 2 * n]);
    if strides.len() != n || pads.len() != 2 * n {
        bail!(
            InvalidModel,
            "MaxUnpool: kernel_shape {kernel:?}, strides {strides:?} and pads {pads:?} disagree in length"
        );
    }
    Ok(Box::new(MaxUnpool { kernel, strides, pads }))
}

impl MaxUnpool {
    /// The unpooled size of spatial axis `i` whose pooled size is `input`.
    fn unpooled(&self, i: usize, input: usize) -> Result<usize> {
        let n = self.kernel.len();
        let d = (input as i128 - 1) * self.strides[i] as i128 - (self.pads[i] + self.pads[i + n]) as i128
            + self.kernel[i] as i128;
        usize::try_from(d).map_err(|_| err!(Shape, "MaxUnpool: spatial axis {i} of size {input} unpools to {d}"))
    }

    fn check_rank(&self, rank: usize) -> Result<()> {
        if rank != self.kernel.len() + 2 {
            bail!(
                Shape,
                "MaxUnpool with a {}-D kernel needs X of rank {}, got {rank}",
                self.kernel.len(),
                self.kernel.len() + 2
            );
        }
        Ok(())
    }
}

impl Op for MaxUnpool {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let shape = if let Some(out) = super::opt_input(inputs, 2) {
            match super::reshape::const_ints(Some(out))? {
                Some(v) => Some(v.iter().map(|&d| usize::try_from(d).map_or(Dim::Unknown, Dim::Known)).collect()),
                None => out.shape.as_ref().and_then(|s| s.first()?.known()).map(|r| vec![Dim::Unknown; r]),
            }
        } else if let Some(s) = &x.shape {
            self.check_rank(s.len())?;
            let mut out = s[..2].to_vec();
            for (i, d) in s[2..].iter().enumerate() {
                out.push(match d {
                    Dim::Known(n) => Dim::Known(self.unpooled(i, *n)?),
                    _ => Dim::Unknown,
                });
            }
            Some(out)
        } else {
            None
        };
        Ok(vec![Fact { dtype: x.dtype, shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, indices) = (input(inputs, 0)?, input(inputs, 1)?);
        self.check_rank(x.rank())?;
        if indices.shape() != x.shape() {
            bail!(Shape, "MaxUnpool: indices of shape {:?} do not match X of shape {:?}", indices.shape(), x.shape());
        }
        let mut inner = x.shape()[..2].to_vec();
        for (i, &d) in x.shape()[2..].iter().enumerate() {
            inner.push(self.unpooled(i, d)?);
        }
        let out_shape = match super::opt_input(inputs, 2) {
            None => inner.clone(),
            Some(t) => {
                let v = t.to_i64_vec()?;
                let fits = v.len() == inner.len()
                    && v.iter()
                        .zip(&inner)
                        .enumerate()
                        .all(|(i, (&o, &n))| if i < 2 { o == n as i64 } else { o >= n as i64 });
                if !fits {
                    bail!(Shape, "MaxUnpool: output_shape {v:?} must keep N and C and be at least {inner:?}");
                }
                v.iter().map(|&d| d as usize).collect()
            }
        };
        let positions = indices.to_i64_vec()?;
        // In the widened dtype: unpooling only moves values (see `lowest`).
        let (dt, x) = (x.dtype(), widen(x)?);
        let y = dispatch!(x.dtype(); T => {
            let len = checked_len(&inner, x.dtype())?;
            let mut y = try_vec(len, T::zero())?;
            for (&i, &v) in positions.iter().zip(x.as_slice::<T>()?) {
                let slot = usize::try_from(i).ok().and_then(|i| y.get_mut(i)).ok_or_else(|| {
                    err!(Runtime, "MaxUnpool: index {i} is out of range for an output of {len} elements")
                })?;
                *slot = v;
            }
            let y = if out_shape == inner { y } else { embed(&y, &inner, &out_shape)? };
            Tensor::new(out_shape, y)?
        }; I64 | U64 | F32 | F64; else => bail!(Unsupported, "MaxUnpool does not take {dt} tensors"));
        Ok(vec![narrow(y, dt)?])
    }
}

/// Copies `src` (of shape `from`) into the leading corner of a zero tensor of the larger shape `to`.
fn embed<T: Scalar>(src: &[T], from: &[usize], to: &[usize]) -> Result<Vec<T>> {
    let mut out = try_vec(checked_len(to, T::DTYPE)?, T::zero())?;
    let (row, rank) = (from[from.len() - 1], from.len());
    if row == 0 || src.is_empty() {
        return Ok(out);
    }
    let mut index = vec![0usize; rank - 1];
    for chunk in src.chunks_exact(row) {
        let start = index.iter().zip(&to[..rank - 1]).fold(0, |acc, (&i, &d)| acc * d + i) * to[rank - 1];
        out[start..start + row].copy_from_slice(chunk);
        for a in (0..rank - 1).rev() {
            index[a] += 1;
            if index[a] < from[a] {
                break;
            }
            index[a] = 0;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::conv::test_util::*;
    use super::*;

    fn pool(op_type: &str, attrs: Vec<(&str, Attr)>, x: &Tensor) -> Result<Tensor> {
        let op = build_named(op_type, 22, attrs, 1)?;
        Ok(run(&*op, &[Some(x)])?.remove(0))
    }

    fn k(v: Vec<i64>) -> (&'static str, Attr) {
        ("kernel_shape", Attr::Ints(v))
    }

    #[test]
    fn max_pool_with_padding_and_column_major_indices() {
        // ONNX test_maxpool_with_argmax_2d_precomputed_strides: arange(1, 26) 5x5, k 2, s 2.
        let x = Tensor::new(vec![1, 1, 5, 5], (1..26).map(|v| v as f32).collect()).unwrap();
        let attrs = vec![k(vec![2, 2]), ("strides", Attr::Ints(vec![2, 2])), ("storage_order", Attr::Int(1))];
        let op = build_named("MaxPool", 12, attrs, 2).unwrap();
        let outs = run(&*op, &[Some(&x)]).unwrap();
        assert_eq!(f32s(&outs[0]), vec![7., 9., 17., 19.]);
        assert_eq!(outs[1].as_slice::<i64>().unwrap(), &[6, 16, 8, 18]);
        // test_maxpool_2d_pads on uint8: 5x5 kernel with 2 pads over arange(1, 26).
        let x = Tensor::new(vec![1, 1, 5, 5], (1..26).map(|v| v as u8).collect()).unwrap();
        let y = pool("MaxPool", vec![k(vec![5, 5]), ("pads", Attr::Ints(vec![2, 2, 2, 2]))], &x).unwrap();
        assert_eq!(
            y.as_slice::<u8>().unwrap(),
            &[13, 14, 15, 15, 15, 18, 19, 20, 20, 20, 23, 24, 25, 25, 25, 23, 24, 25, 25, 25, 23, 24, 25, 25, 25]
        );
    }

    #[test]
    fn max_pool_ceil_mode_and_dilations() {
        // ONNX test_maxpool_2d_ceil: 4x4 arange(1, 17), k 3, s 2, ceil -> [[11, 12], [15, 16]].
        let x = Tensor::new(vec![1, 1, 4, 4], (1..17).map(|v| v as f32).collect()).unwrap();
        let attrs = vec![k(vec![3, 3]), ("strides", Attr::Ints(vec![2, 2])), ("ceil_mode", Attr::Int(1))];
        assert_eq!(f32s(&pool("MaxPool", attrs, &x).unwrap()), vec![11., 12., 15., 16.]);
        // test_maxpool_2d_dilations: k 2, dilation 2 -> [[11, 12], [15, 16]].
        let attrs = vec![k(vec![2, 2]), ("dilations", Attr::Ints(vec![2, 2]))];
        assert_eq!(f32s(&pool("MaxPool", attrs, &x).unwrap()), vec![11., 12., 15., 16.]);
    }

    #[test]
    fn average_pool_counts_padding_only_when_asked() {
        // onnx.reference: arange(9) 3x3, k 2, pads 1 on every side, s 2.
        let x = ramp(vec![1, 1, 3, 3]);
        let base = || vec![k(vec![2, 2]), ("pads", Attr::Ints(vec![1, 1, 1, 1])), ("strides", Attr::Ints(vec![2, 2]))];
        assert_close(&f32s(&pool("AveragePool", base(), &x).unwrap()), &[0., 1.5, 4.5, 6.]);
        let mut attrs = base();
        attrs.push(("count_include_pad", Attr::Int(1)));
        assert_close(&f32s(&pool("AveragePool", attrs, &x).unwrap()), &[0., 0.75, 2.25, 6.]);
        // test_averagepool_2d_ceil_last_window_starts_on_pad (onnx.reference): 4x4 arange(1,17),
        // k 3, s 3, pads 1, ceil, count_include_pad.
        let x = Tensor::new(vec![1, 1, 4, 4], (1..17).map(|v| v as f32).collect()).unwrap();
        let attrs = vec![
            k(vec![3, 3]),
            ("strides", Attr::Ints(vec![3, 3])),
            ("pads", Attr::Ints(vec![1, 1, 1, 1])),
            ("ceil_mode", Attr::Int(1)),
            ("count_include_pad", Attr::Int(1)),
        ];
        assert_close(&f32s(&pool("AveragePool", attrs, &x).unwrap()), &[1.5555556, 2.4444444, 5.111111, 6.0]);
    }

    /// Max pooling computes in the widened dtype; an empty plane still gives the lowest value of
    /// the tensor's own dtype.
    #[test]
    fn max_pools_on_narrow_types() {
        let x = Tensor::new(vec![1, 2, 0], Vec::<i8>::new()).unwrap();
        assert_eq!(pool("GlobalMaxPool", vec![], &x).unwrap().as_slice::<i8>().unwrap(), &[i8::MIN, i8::MIN]);
        let x = Tensor::new(vec![1, 1, 4], vec![-3i8, -128, 5, 127]).unwrap();
        let y = pool("MaxPool", vec![k(vec![2]), ("strides", Attr::Ints(vec![1]))], &x).unwrap();
        assert_eq!(y.as_slice::<i8>().unwrap(), &[-3, 5, 127]);
        let x = Tensor::new(vec![1, 1, 3], vec![half::f16::from_f32(0.1), half::f16::from_f32(-2.), half::f16::NAN])
            .unwrap();
        let y = pool("MaxPool", vec![k(vec![2]), ("strides", Attr::Ints(vec![1]))], &x).unwrap();
        assert_eq!(y.as_slice::<half::f16>().unwrap()[0], half::f16::from_f32(0.1));
    }

    #[test]
    fn lp_pool_and_globals() {
        // sqrt(0 + 1 + 9 + 16) and sqrt(1 + 4 + 16 + 25) for a 1-D LpPool; L1 with p = 1.
        let x = Tensor::new(vec![1, 1, 4], vec![0f32, 1., -3., 4.]).unwrap();
        let y = pool("LpPool", vec![k(vec![3]), ("strides", Attr::Ints(vec![1]))], &x).unwrap();
        assert_close(&f32s(&y), &[10f32.sqrt(), 26f32.sqrt()]);
        let y = pool("LpPool", vec![k(vec![4]), ("p", Attr::Int(1))], &x).unwrap();
        assert_close(&f32s(&y), &[8.]);
        let x = ramp(vec![1, 2, 2, 2]);
        let avg = pool("GlobalAveragePool", vec![], &x).unwrap();
        assert_eq!((avg.shape(), f32s(&avg)), (&[1, 2, 1, 1][..], vec![1.5, 5.5]));
        assert_eq!(f32s(&pool("GlobalMaxPool", vec![], &x).unwrap()), vec![3., 7.]);
        assert_close(&f32s(&pool("GlobalLpPool", vec![], &x).unwrap()), &[14f32.sqrt(), 126f32.sqrt()]);
    }

    #[test]
    fn pool_inference_keeps_symbols() {
        let op = build_named("MaxPool", 12, vec![k(vec![3, 3]), ("auto_pad", Attr::String("SAME_UPPER".into()))], 2)
            .unwrap();
        let n = Dim::Symbol("N".into());
        let x = Fact::new(DType::F32, vec![n.clone(), Dim::Known(3), Dim::Symbol("H".into()), Dim::Known(7)]);
        let out = op.infer(&[Some(&x)]).unwrap();
        assert_eq!(out[0].shape, Some(vec![n.clone(), Dim::Known(3), Dim::Symbol("H".into()), Dim::Known(7)]));
        assert_eq!(out[1].dtype, Some(DType::I64));
        let global = build_named("GlobalAveragePool", 1, vec![], 1).unwrap();
        let out = global.infer(&[Some(&x)]).unwrap();
        assert_eq!(out[0].shape, Some(vec![n, Dim::Known(3), Dim::Known(1), Dim::Known(1)]));
    }

    #[test]
    fn pool_rejects_bad_inputs() {
        assert!(build_named("MaxPool", 12, vec![], 1).is_err());
        let x = ramp(vec![1, 1, 4, 4]);
        assert!(pool("MaxPool", vec![k(vec![3])], &x).is_err());
        assert!(pool("AveragePool", vec![k(vec![5, 5])], &x).is_err());
        let ints = Tensor::new(vec![1, 1, 2], vec![1i32, 2]).unwrap();
        assert!(pool("AveragePool", vec![k(vec![2])], &ints).is_err());
        assert!(build_named("LpPool", 18, vec![k(vec![2]), ("p", Attr::Int(0))], 1).is_err());
    }

    #[test]
    fn max_unpool_with_and_without_output_shape() {
        // The ONNX node tests test_maxunpool_export_without_output_shape / _with_output_shape.
        let attrs = || vec![k(vec![2, 2]), ("strides", Attr::Ints(vec![2, 2]))];
        let op = build_named("MaxUnpool", 11, attrs(), 1).unwrap();
        let x = tensor(vec![1, 1, 2, 2], &[1., 2., 3., 4.]);
        let i = Tensor::new(vec![1, 1, 2, 2], vec![5i64, 7, 13, 15]).unwrap();
        let y = run(&*op, &[Some(&x), Some(&i)]).unwrap().remove(0);
        assert_eq!(y.shape(), &[1, 1, 4, 4]);
        assert_eq!(f32s(&y), [0., 0., 0., 0., 0., 1., 0., 2., 0., 0., 0., 0., 0., 3., 0., 4.]);
        let shape = Tensor::vector(vec![1i64, 1, 5, 5]);
        let y = run(&*op, &[Some(&x), Some(&i), Some(&shape)]).unwrap().remove(0);
        let mut want = [0f32; 25];
        (want[6], want[8], want[16], want[18]) = (1., 2., 3., 4.);
        assert_eq!(f32s(&y), want);
        let facts =
            op.infer(&[Some(&Fact::new(DType::F32, vec![Dim::Unknown, Dim::Known(3), Dim::Known(5), Dim::Unknown]))]);
        assert_eq!(facts.unwrap()[0].shape, Some(vec![Dim::Unknown, Dim::Known(3), Dim::Known(10), Dim::Unknown]));
    }

    #[test]
    fn max_unpool_rejects_bad_indices_and_shapes() {
        let op = build_named("MaxUnpool", 11, vec![k(vec![2, 2]), ("strides", Attr::Ints(vec![2, 2]))], 1).unwrap();
        let x = tensor(vec![1, 1, 2, 2], &[1., 2., 3., 4.]);
        let i = Tensor::new(vec![1, 1, 2, 2], vec![5i64, 7, 16, 15]).unwrap();
        let e = run(&*op, &[Some(&x), Some(&i)]).unwrap_err();
        assert!(e.message.contains("index 16 is out of range"), "{e}");
        let i = Tensor::new(vec![1, 1, 2, 2], vec![5i64, -7, 1, 15]).unwrap();
        assert!(run(&*op, &[Some(&x), Some(&i)]).is_err());
        let i = Tensor::new(vec![1, 1, 2, 2], vec![5i64, 7, 13, 15]).unwrap();
        let small = Tensor::vector(vec![1i64, 1, 3, 3]);
        assert!(run(&*op, &[Some(&x), Some(&i), Some(&small)]).is_err());
        assert!(build_named("MaxUnpool", 11, vec![], 1).is_err());
    }
}
