//! GridSample (opset 16: 4-D, modes bilinear/nearest/bicubic; opset 20: N-D, modes
//! linear/nearest/cubic; both spellings are accepted at any opset) and AffineGrid (opset 20), which
//! makes the sampling grids GridSample reads.
//!
//! Sampling follows the ONNX reference (itself PyTorch's `grid_sampler`): a grid coordinate in
//! [-1, 1] is mapped to a pixel coordinate, out-of-range coordinates are clamped or reflected by
//! `padding_mode`, and the taps of the interpolation kernel are looked up with the same padding
//! rule. Coordinates are computed in the compute type of X (f32 for f32 and narrower), as the
//! reference does, so that nearest-mode rounding agrees on ties.

use super::real::{from_real, to_real, wants_f64, Real};
use super::reshape::const_ints;
use super::{input, BuildCtx, Op, Registry};
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{Dim, Fact, Tensor};
use crate::{bail, Result};

pub fn register(r: &mut Registry) {
    r.add("GridSample", build_grid_sample);
    r.add("AffineGrid", |ctx| Ok(Box::new(AffineGrid { align_corners: ctx.attrs.int_or("align_corners", 0)? != 0 })));
}

/// The float operations coordinate arithmetic needs beyond [`Real`].
pub(super) trait Float: Real {
    fn floor(self) -> Self;
    fn round_ties_even(self) -> Self;
    /// Truncation toward zero, saturating (NaN gives 0), as a C cast would on sane values.
    fn trunc_i64(self) -> i64;
}

macro_rules! impl_float {
    ($($t:ty),*) => {$(
        impl Float for $t {
            fn floor(self) -> Self { <$t>::floor(self) }
            fn round_ties_even(self) -> Self { <$t>::round_ties_even(self) }
            fn trunc_i64(self) -> i64 { self as i64 }
        }
    )*};
}
impl_float!(f32, f64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Padding {
    Zeros,
    Border,
    Reflection,
}

#[derive(Debug)]
pub struct GridSample {
    mode: Mode,
    padding: Padding,
    align_corners: bool,
}

fn build_grid_sample(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let default_mode = if ctx.opset < 20 { "bilinear" } else { "linear" };
    let mode = match ctx.attrs.string_or("mode", default_mode.into())?.as_str() {
        "bilinear" | "linear" => Mode::Linear,
        "nearest" => Mode::Nearest,
        "bicubic" | "cubic" => Mode::Cubic,
        other => bail!(Unsupported, "GridSample: mode '{other}' is not one of linear, nearest, cubic"),
    };
    let padding = match ctx.attrs.string_or("padding_mode", "zeros".into())?.as_str() {
        "zeros" => Padding::Zeros,
        "border" => Padding::Border,
        "reflection" => Padding::Reflection,
        other => bail!(Unsupported, "GridSample: padding_mode '{other}' is not one of zeros, border, reflection"),
    };
    Ok(Box::new(GridSample { mode, padding, align_corners: ctx.attrs.int_or("align_corners", 0)? != 0 }))
}

/// One spatial axis of X as GridSample sees it.
#[derive(Debug, Clone, Copy)]
struct SampleAxis<R> {
    size: usize,
    /// The coordinate range that counts as inside: pixel centers with `align_corners`, pixel edges
    /// without.
    lo: R,
    hi: R,
}

/// Folds `x` back into `[lo, hi]` by reflecting at the borders as often as needed.
pub(super) fn reflect<R: Float>(x: R, lo: R, hi: R) -> R {
    let range = hi - lo;
    // A single-position axis (or NaN borders) has nothing to reflect across.
    if range.partial_cmp(&R::zero()) != Some(std::cmp::Ordering::Greater) {
        return lo;
    }
    let two = R::from_f64(2.0);
    let (dx, from_low) = if x < lo {
        (lo - x, true)
    } else if x > hi {
        (x - hi, false)
    } else {
        return x;
    };
    let flips = (dx / range).floor();
    let r = dx - flips * range;
    let even = (flips - (flips / two).floor() * two) == R::zero();
    match (from_low, even) {
        (true, true) | (false, false) => lo + r,
        _ => hi - r,
    }
}

/// Keys' cubic convolution weights (alpha = -0.75) for taps at -1, 0, 1, 2 from `floor(x)`, where
/// `t = x - floor(x)`.
fn cubic_weights<R: Float>(t: R) -> [R; 4] {
    let a = R::from_f64(-0.75);
    let (one, two, three, four, five, eight) =
        (R::one(), R::from_f64(2.0), R::from_f64(3.0), R::from_f64(4.0), R::from_f64(5.0), R::from_f64(8.0));
    let outer = |x: R| ((a * x - five * a) * x + eight * a) * x - four * a;
    let inner = |x: R| ((a + two) * x - (a + three)) * x * x + one;
    [outer(t + one), inner(t), inner(one - t), outer(two - t)]
}

impl<R: Float> SampleAxis<R> {
    fn new(size: usize, align_corners: bool) -> Self {
        let n = R::from_f64(size as f64);
        if align_corners {
            SampleAxis { size, lo: R::zero(), hi: n - R::one() }
        } else {
            let half = R::from_f64(0.5);
            SampleAxis { size, lo: R::zero() - half, hi: n - half }
        }
    }

    /// The element a tap at integer position `i` reads, or `None` for a zero.
    fn pixel(&self, i: i64, padding: Padding) -> Option<usize> {
        let last = i64::try_from(self.size).ok()?.checked_sub(1)?;
        let i = match padding {
            Padding::Zeros => i,
            Padding::Border => i.clamp(0, last),
            // The reflected position is in range already; the clamp guards NaN and huge values.
            Padding::Reflection => reflect(R::from_i64(i), self.lo, self.hi).trunc_i64().clamp(0, last),
        };
        (0..=last).contains(&i).then_some(i as usize)
    }

    /// The taps `(element, weight)` of coordinate `g` in [-1, 1] along this axis; returns how many of
    /// `taps` it filled (taps that read a zero are left out).
    fn taps(&self, g: R, s: &GridSample, taps: &mut [(usize, R); 4]) -> usize {
        let (half, one) = (R::from_f64(0.5), R::one());
        let size = R::from_f64(self.size as f64);
        let mut x = if s.align_corners { (g + one) * half * (size - one) } else { ((g + one) * size - one) * half };
        if s.mode == Mode::Nearest {
            x = x.round_ties_even();
        }
        if x < self.lo || x > self.hi {
            match s.padding {
                Padding::Border if x < R::zero() => x = R::zero(),
                Padding::Border if x > size - one => x = size - one,
                Padding::Reflection => x = reflect(x, self.lo, self.hi),
                _ => {}
            }
        }
        let mut n = 0;
        let mut push = |i: i64, w: R| {
            if let Some(p) = self.pixel(i, s.padding) {
                taps[n] = (p, w);
                n += 1;
            }
        };
        match s.mode {
            Mode::Nearest => push(x.trunc_i64(), one),
            Mode::Linear => {
                let x0 = x.floor();
                let t = x - x0;
                let i = x0.trunc_i64();
                push(i, one - t);
                push(i.saturating_add(1), t);
            }
            Mode::Cubic => {
                let x0 = x.floor();
                let i = x0.trunc_i64();
                for (k, w) in cubic_weights(x - x0).into_iter().enumerate() {
                    push(i.saturating_add(k as i64 - 1), w);
                }
            }
        }
        n
    }
}

impl Op for GridSample {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (x, grid) = (input(inputs, 0)?, input(inputs, 1)?);
        let shape = match (x.shape.as_deref(), grid.shape.as_deref()) {
            (Some(xs), Some(gs)) => {
                if xs.len() < 3 || gs.len() != xs.len() {
                    bail!(Shape, "GridSample: X of rank {} needs a grid of the same rank, got {}", xs.len(), gs.len());
                }
                let spatial = xs.len() - 2;
                if let Some(k) = gs[gs.len() - 1].known() {
                    if k != spatial {
                        bail!(Shape, "GridSample: grid's last dim is {k}, X has {spatial} spatial axes");
                    }
                }
                let mut out = vec![xs[0].clone(), xs[1].clone()];
                out.extend(gs[1..gs.len() - 1].iter().cloned());
                Some(out)
            }
            (Some(xs), None) => Some(vec![Dim::Unknown; xs.len()]),
            (None, Some(gs)) => Some(vec![Dim::Unknown; gs.len()]),
            (None, None) => None,
        };
        Ok(vec![Fact { dtype: x.dtype, shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, grid) = (input(inputs, 0)?, input(inputs, 1)?);
        wants_f64("GridSample", grid.dtype())?;
        let out =
            if wants_f64("GridSample", x.dtype())? { self.run::<f64>(x, grid)? } else { self.run::<f32>(x, grid)? };
        Ok(vec![out])
    }
}

impl GridSample {
    fn run<R: Float>(&self, x: &Tensor, grid: &Tensor) -> Result<Tensor> {
        let (xs, gs) = (x.shape(), grid.shape());
        if xs.len() < 3 || gs.len() != xs.len() {
            bail!(Shape, "GridSample: X of shape {xs:?} needs a grid of the same rank, got {gs:?}");
        }
        let spatial = xs.len() - 2;
        if gs[0] != xs[0] || gs[spatial + 1] != spatial {
            bail!(Shape, "GridSample: grid of shape {gs:?} does not fit X of shape {xs:?} (want [N, ..., {spatial}])");
        }
        let (batch, channels) = (xs[0], xs[1]);
        let mut out_shape = vec![batch, channels];
        out_shape.extend_from_slice(&gs[1..=spatial]);
        let len = checked_len(&out_shape, x.dtype())?;
        let mut out = try_vec(len, R::zero())?;
        let points: usize = gs[1..=spatial].iter().product();
        if len == 0 {
            return from_real(x.dtype(), out_shape, out);
        }
        let (xv, gv) = (to_real::<R>(x)?, to_real::<R>(grid)?);
        let axes: Vec<SampleAxis<R>> = xs[2..].iter().map(|&n| SampleAxis::new(n, self.align_corners)).collect();
        let in_plane: usize = xs[2..].iter().product();
        // (offset in the plane, weight) of every tap of one output point, built axis by axis.
        let mut corners: Vec<(usize, R)> = Vec::new();
        let mut next: Vec<(usize, R)> = Vec::new();
        let mut taps = [(0, R::zero()); 4];
        for n in 0..batch {
            for p in 0..points {
                let coords = &gv[(n * points + p) * spatial..][..spatial];
                corners.clear();
                corners.push((0, R::one()));
                for (a, axis) in axes.iter().enumerate() {
                    // The grid lists coordinates innermost axis first (x, y, z).
                    let count = axis.taps(coords[spatial - 1 - a], self, &mut taps);
                    next.clear();
                    for &(offset, w) in &corners {
                        next.extend(taps[..count].iter().map(|&(i, tw)| (offset * axis.size + i, w * tw)));
                    }
                    std::mem::swap(&mut corners, &mut next);
                }
                for c in 0..channels {
                    let plane = &xv[(n * channels + c) * in_plane..][..in_plane];
                    let mut acc = R::zero();
                    for &(offset, w) in &corners {
                        acc += w * plane[offset];
                    }
                    out[(n * channels + c) * points + p] = acc;
                }
            }
        }
        from_real(x.dtype(), out_shape, out)
    }
}

#[derive(Debug)]
pub struct AffineGrid {
    align_corners: bool,
}

/// Checks AffineGrid's `size` ([N, C, H, W] or [N, C, D, H, W]) and returns the spatial sizes.
fn affine_sizes(size: &[i64]) -> Result<Vec<usize>> {
    if size.len() != 4 && size.len() != 5 {
        bail!(Shape, "AffineGrid: size must have 4 or 5 entries ([N, C, (D,) H, W]), got {size:?}");
    }
    size.iter()
        .map(|&d| usize::try_from(d).map_err(|_| crate::err!(Shape, "AffineGrid: size {size:?} has a negative entry")))
        .collect()
}

impl Op for AffineGrid {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (theta, size) = (input(inputs, 0)?, input(inputs, 1)?);
        let batch = theta.shape.as_ref().and_then(|s| s.first().cloned()).unwrap_or(Dim::Unknown);
        let shape = if let Some(sz) = const_ints(Some(size))? {
            let dims = affine_sizes(&sz)?;
            let mut out = vec![Dim::Known(dims[0])];
            out.extend(dims[2..].iter().map(|&d| Dim::Known(d)));
            out.push(Dim::Known(dims.len() - 2));
            Some(out)
        } else {
            match size.shape.as_deref() {
                Some([Dim::Known(k @ (4 | 5))]) => {
                    let mut out = vec![batch];
                    out.extend(vec![Dim::Unknown; k - 2]);
                    out.push(Dim::Known(k - 2));
                    Some(out)
                }
                _ => None,
            }
        };
        Ok(vec![Fact { dtype: theta.dtype, shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (theta, size) = (input(inputs, 0)?, input(inputs, 1)?);
        wants_f64("AffineGrid", theta.dtype())?;
        let dims = affine_sizes(&size.to_i64_vec()?)?;
        let spatial = dims.len() - 2;
        let ts = theta.shape();
        if ts != [dims[0], spatial, spatial + 1] {
            bail!(
                Shape,
                "AffineGrid: theta of shape {ts:?} does not fit size {dims:?} (want [{}, {spatial}, {}])",
                dims[0],
                spatial + 1
            );
        }
        let mut out_shape = vec![dims[0]];
        out_shape.extend_from_slice(&dims[2..]);
        out_shape.push(spatial);
        let len = checked_len(&out_shape, theta.dtype())?;
        let mut out = try_vec(len, 0f64)?;
        // The base grid's coordinates along each spatial axis, outermost first.
        let base: Vec<Vec<f64>> = dims[2..].iter().map(|&n| self.base_coords(n)).collect();
        let tv = to_real::<f64>(theta)?;
        let points: usize = dims[2..].iter().product();
        let mut homogeneous = vec![1.0; spatial + 1];
        let mut index = vec![0usize; spatial];
        for n in 0..dims[0] {
            let t = &tv[n * spatial * (spatial + 1)..][..spatial * (spatial + 1)];
            index.fill(0);
            for p in 0..points {
                // Homogeneous point (x, y[, z], 1): innermost axis first.
                for a in 0..spatial {
                    homogeneous[spatial - 1 - a] = base[a][index[a]];
                }
                let dst = &mut out[(n * points + p) * spatial..][..spatial];
                for (r, v) in dst.iter_mut().enumerate() {
                    *v = t[r * (spatial + 1)..][..spatial + 1].iter().zip(&homogeneous).map(|(a, b)| a * b).sum();
                }
                for a in (0..spatial).rev() {
                    index[a] += 1;
                    if index[a] < dims[a + 2] {
                        break;
                    }
                    index[a] = 0;
                }
            }
        }
        Ok(vec![from_real(theta.dtype(), out_shape, out)?])
    }
}

impl AffineGrid {
    /// Normalized coordinates of the `n` positions of an axis: pixel centers spread over [-1, 1]
    /// with `align_corners`, else centers of `n` equal cells of [-1, 1]. A single position sits at 0
    /// (PyTorch's choice; the ONNX reference divides by zero there).
    fn base_coords(&self, n: usize) -> Vec<f64> {
        let nf = n as f64;
        (0..n)
            .map(|i| {
                let i = i as f64;
                match (self.align_corners, n) {
                    (true, 1) => 0.0,
                    (true, _) => -1.0 + i * 2.0 / (nf - 1.0),
                    (false, _) => -1.0 + (2.0 * i + 1.0) / nf,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, DType};
    use crate::ops::activation::test_util::{assert_close, build};

    fn sample(attrs: Vec<(&str, Attr)>, x: &Tensor, grid: &Tensor) -> Result<Tensor> {
        let op = build("GridSample", 20, attrs, 1)?;
        Ok(op.eval(&[Some(x), Some(grid)])?.remove(0))
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.as_slice::<f32>().unwrap().to_vec()
    }

    fn s(v: &str) -> Attr {
        Attr::String(v.into())
    }

    // X = arange(6) as 1x1x2x3; expected values from onnx.reference's GridSample.
    fn x23() -> Tensor {
        Tensor::new(vec![1, 1, 2, 3], (0..6).map(|v| v as f32).collect()).unwrap()
    }

    fn grid(points: &[f32]) -> Tensor {
        Tensor::new(vec![1, 1, points.len() / 2, 2], points.to_vec()).unwrap()
    }

    #[test]
    fn bilinear_paddings_and_align_corners() {
        let g = grid(&[-1.0, -1.0, 0.5, 0.2, 1.2, -0.7, -1.3, 1.1]);
        let y = sample(vec![], &x23(), &g).unwrap();
        assert_eq!(y.shape(), &[1, 1, 1, 4]);
        assert_close(&f32s(&y), &[0.0, 3.85, 0.3199997, 0.0600001]);
        let y = sample(vec![("padding_mode", s("border"))], &x23(), &g).unwrap();
        assert_close(&f32s(&y), &[0.0, 3.85, 2.0, 3.0]);
        let y = sample(vec![("padding_mode", s("reflection"))], &x23(), &g).unwrap();
        assert_close(&f32s(&y), &[0.0, 3.85, 2.0, 3.0]);
        let y = sample(vec![("align_corners", Attr::Int(1))], &x23(), &g).unwrap();
        assert_close(&f32s(&y), &[0.0, 3.3, 1.96, 1.9950002]);
    }

    #[test]
    fn nearest_and_bicubic() {
        let g = grid(&[-1.0, -1.0, 0.5, 0.2, 1.2, -0.7, -1.3, 1.1]);
        let y = sample(vec![("mode", s("nearest"))], &x23(), &g).unwrap();
        assert_close(&f32s(&y), &[0.0, 5.0, 0.0, 0.0]);
        let y = sample(vec![("mode", s("bicubic"))], &x23(), &g).unwrap();
        assert_close(&f32s(&y), &[-0.1875, 5.09437, 0.25913584, 0.05355928]);
        let attrs = vec![("mode", s("cubic")), ("padding_mode", s("reflection")), ("align_corners", Attr::Int(1))];
        let y = sample(attrs, &x23(), &g).unwrap();
        assert_close(&f32s(&y), &[0.0, 3.6314988, 2.1262505, 3.0997486]);
        let y = sample(vec![("mode", s("nearest")), ("padding_mode", s("reflection"))], &x23(), &g).unwrap();
        assert_close(&f32s(&y), &[0.0, 5.0, 2.0, 3.0]);
    }

    #[test]
    fn volumetric_and_f64() {
        // X = arange(8) as 1x1x2x2x2, grid point (x, y, z) = (0.25, -0.5, 0.5), align_corners:
        // pixel coordinate (z, y, x) = (0.75, 0.25, 0.625), trilinear = 4z + 2y + x.
        let x = Tensor::new(vec![1, 1, 2, 2, 2], (0..8).map(|v| v as f64).collect()).unwrap();
        let g = Tensor::new(vec![1, 1, 1, 1, 3], vec![0.25f64, -0.5, 0.5]).unwrap();
        let y = sample(vec![("align_corners", Attr::Int(1))], &x, &g).unwrap();
        assert_eq!(y.shape(), &[1, 1, 1, 1, 1]);
        assert!((y.as_slice::<f64>().unwrap()[0] - 4.125).abs() < 1e-12);
    }

    #[test]
    fn grid_sample_rejects_mismatched_grid() {
        let bad = Tensor::new(vec![1, 1, 1, 3], vec![0f32; 3]).unwrap();
        let e = sample(vec![], &x23(), &bad).unwrap_err();
        assert!(e.message.contains("does not fit"), "{e}");
        let ints = Tensor::new(vec![1, 1, 1, 2], vec![0i64; 2]).unwrap();
        assert!(sample(vec![], &x23(), &ints).is_err());
        assert!(build("GridSample", 20, vec![("mode", s("area"))], 1).is_err());
    }

    #[test]
    fn infers_grid_sample_shape() {
        let op = build("GridSample", 16, vec![], 1).unwrap();
        let x = Fact::new(DType::F32, vec![Dim::Symbol("N".into()), Dim::Known(3), Dim::Unknown, Dim::Unknown]);
        let g = Fact::concrete(DType::F32, &[1, 7, 9, 2]);
        let out = op.infer(&[Some(&x), Some(&g)]).unwrap();
        assert_eq!(out[0].shape, Some(vec![Dim::Symbol("N".into()), Dim::Known(3), Dim::Known(7), Dim::Known(9)]));
    }

    #[test]
    fn affine_grid_2d_and_3d() {
        let op = build("AffineGrid", 20, vec![], 1).unwrap();
        // theta = [[1, 0, 0.5], [0, 2, 0]], size 1x1x2x2: base (x, y) = (+-0.5, +-0.5).
        let theta = Tensor::new(vec![1, 2, 3], vec![1f32, 0., 0.5, 0., 2., 0.]).unwrap();
        let size = Tensor::vector(vec![1i64, 1, 2, 2]);
        let y = op.eval(&[Some(&theta), Some(&size)]).unwrap().remove(0);
        assert_eq!(y.shape(), &[1, 2, 2, 2]);
        assert_close(&f32s(&y), &[0.0, -1.0, 1.0, -1.0, 0.0, 1.0, 1.0, 1.0]);
        let op = build("AffineGrid", 20, vec![("align_corners", Attr::Int(1))], 1).unwrap();
        let identity = Tensor::new(vec![1, 3, 4], vec![1f32, 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0.]).unwrap();
        let size = Tensor::vector(vec![1i64, 1, 2, 2, 3]);
        let y = op.eval(&[Some(&identity), Some(&size)]).unwrap().remove(0);
        assert_eq!(y.shape(), &[1, 2, 2, 3, 3]);
        assert_close(
            &f32s(&y),
            &[
                -1., -1., -1., 0., -1., -1., 1., -1., -1., -1., 1., -1., 0., 1., -1., 1., 1., -1., -1., -1., 1., 0.,
                -1., 1., 1., -1., 1., -1., 1., 1., 0., 1., 1., 1., 1., 1.,
            ],
        );
        let bad = Tensor::vector(vec![2i64, 1, 2, 2]);
        assert!(op.eval(&[Some(&theta), Some(&bad)]).is_err());
        let negative = Tensor::vector(vec![1i64, 1, -2, 2]);
        assert!(op.eval(&[Some(&theta), Some(&negative)]).unwrap_err().message.contains("negative"));
    }
}
