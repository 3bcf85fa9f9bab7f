//! Conv (1-D to 3-D, groups, dilations, strides, pads, auto_pad, optional bias) as im2col plus
//! [`gemm`], and the pieces ConvTranspose shares with it.

use super::matmul::{gemm, MatElem};
use super::real::{from_real, to_real, wants_f64, Real};
use super::reshape::numel;
use super::window::{three_axes, Axis, WindowAttrs};
use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{Attributes, Dim, Fact, Scalar, Tensor};
use crate::{bail, Result};

pub fn register(r: &mut Registry) {
    r.add("Conv", |ctx: &BuildCtx| Ok(Box::new(Conv { attrs: ConvAttrs::parse(ctx.attrs)? })));
}

/// Attributes Conv and ConvTranspose share.
#[derive(Debug)]
pub struct ConvAttrs {
    pub window: WindowAttrs,
    pub group: usize,
}

impl ConvAttrs {
    pub fn parse(attrs: &Attributes) -> Result<ConvAttrs> {
        let group = attrs.int_or("group", 1)?;
        if group < 1 {
            bail!(InvalidModel, "attribute 'group' must be at least 1, got {group}");
        }
        Ok(ConvAttrs { window: WindowAttrs::parse(attrs)?, group: group as usize })
    }

    /// Checks X and W against each other and the attributes; returns the kernel's spatial shape.
    /// With `per_group` (Conv) W's axis 1 counts input channels per group; otherwise
    /// (ConvTranspose) W's axis 0 counts all input channels.
    pub fn check(&self, op: &str, x: &[usize], w: &[usize], per_group: bool) -> Result<Vec<usize>> {
        if x.len() < 3 || w.len() != x.len() {
            bail!(Shape, "{op} needs X of rank 3 or more and W of the same rank, got shapes {x:?} and {w:?}");
        }
        let spatial = x.len() - 2;
        self.window.check_rank(spatial)?;
        let w_channels = if per_group { w[1].checked_mul(self.group) } else { Some(w[0]) };
        if w_channels != Some(x[1]) || !x[1].is_multiple_of(self.group) {
            bail!(
                Shape,
                "{op}: X has {} channels but W of shape {w:?} with group {} expects {}",
                x[1],
                self.group,
                w_channels.map_or("too many".to_string(), |c| c.to_string())
            );
        }
        let kernel = w[2..].to_vec();
        if let Some(k) = &self.window.kernel_shape {
            if *k != kernel {
                bail!(Shape, "{op}: kernel_shape {k:?} does not match W's spatial shape {kernel:?}");
            }
        }
        Ok(kernel)
    }

    /// The kernel size of spatial axis `i` for inference: the attribute, else W's dim if known.
    pub fn kernel_dim(&self, w: Option<&[Dim]>, i: usize) -> Option<usize> {
        match &self.window.kernel_shape {
            Some(k) => k.get(i).copied(),
            None => w.and_then(|w| w.get(i + 2)).and_then(Dim::known),
        }
    }

    /// Inference checks shared by both ops: channel counts agree when known, and the spatial rank.
    /// Returns the spatial rank, if known.
    pub fn check_facts(
        &self,
        op: &str,
        x: Option<&[Dim]>,
        w: Option<&[Dim]>,
        per_group: bool,
    ) -> Result<Option<usize>> {
        if let (Some(x), Some(w)) = (x, w) {
            if x.len() != w.len() || x.len() < 3 {
                bail!(
                    Shape,
                    "{op} needs X of rank 3 or more and W of the same rank, got ranks {} and {}",
                    x.len(),
                    w.len()
                );
            }
            let w_channels = if per_group { w[1].known().map(|c| c * self.group) } else { w[0].known() };
            if let (Some(c), Some(wc)) = (x[1].known(), w_channels) {
                if c != wc {
                    bail!(Shape, "{op}: X has {c} channels but W with group {} expects {wc}", self.group);
                }
            }
        }
        let rank = x.or(w).map(|s| s.len());
        if let Some(r) = rank {
            if r < 3 {
                bail!(Shape, "{op} needs inputs of rank 3 or more, got {r}");
            }
            self.window.check_rank(r - 2)?;
        }
        Ok(rank.map(|r| r - 2))
    }

    /// The output shape of a forward (Conv-like) op from the facts of X and W; `None` while the
    /// spatial rank is unknown.
    pub fn forward_shape(&self, op: &str, x: &Fact, w: &Fact) -> Result<Option<Vec<Dim>>> {
        let (xs, ws) = (x.shape.as_deref(), w.shape.as_deref());
        let Some(spatial) = self.check_facts(op, xs, ws, true)? else {
            return Ok(None);
        };
        let mut shape = vec![xs.map_or(Dim::Unknown, |x| x[0].clone()), ws.map_or(Dim::Unknown, |w| w[0].clone())];
        for i in 0..spatial {
            shape.push(match (xs.map(|x| &x[i + 2]), self.kernel_dim(ws, i)) {
                (Some(d), Some(k)) => self.window.forward_dim(i, d, k)?,
                _ => Dim::Unknown,
            });
        }
        Ok(Some(shape))
    }
}

/// Checks that a Conv-like op's inputs share one float dtype; true when it computes in f64.
pub(super) fn float_dtype(op: &str, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<bool> {
    if w.dtype() != x.dtype() || b.is_some_and(|b| b.dtype() != x.dtype()) {
        bail!(Shape, "{op} inputs must have one dtype, got X {} and W {}", x.dtype(), w.dtype());
    }
    wants_f64(op, x.dtype())
}

/// Adds `bias[m]` to each of the `m` planes of `plane` elements in every image of `y`.
pub(super) fn add_bias<R: Real>(
    op: &str,
    y: &mut [R],
    bias: Option<&[R]>,
    channels: usize,
    plane: usize,
) -> Result<()> {
    let Some(bias) = bias else { return Ok(()) };
    if bias.len() != channels {
        bail!(Shape, "{op}: B has {} elements, expected one per output channel ({channels})", bias.len());
    }
    if plane == 0 {
        return Ok(());
    }
    for (i, p) in y.chunks_exact_mut(plane).enumerate() {
        let b = bias[i % channels];
        p.iter_mut().for_each(|v| *v += b);
    }
    Ok(())
}

/// One output row of the column matrix for one kernel tap: `width` entries at `col`, of which
/// `lo..hi` read the input row starting at `input` with step `stride` (the rest is padding).
struct RowSpan {
    col: usize,
    width: usize,
    /// `(index of the input element read by entry lo, lo, hi)`; `None` if the row is all padding.
    input: Option<(usize, usize, usize)>,
    stride: usize,
}

/// Visits every (channel, kernel tap, output row) of the column matrix of `channels` input planes
/// laid out by `g`: the shared traversal of im2col and its adjoint col2im. The column matrix has
/// one row per (channel, tap) and one column per output position.
fn for_each_row(g: &[Axis; 3], channels: usize, mut f: impl FnMut(RowSpan)) {
    let [d, h, w] = g;
    let in_plane = d.input * h.input * w.input;
    let out_len = d.output * h.output * w.output;
    let mut row = 0;
    for c in 0..channels {
        for kd in 0..d.kernel {
            let (d_lo, d_hi) = d.outputs_reading_input(kd);
            for kh in 0..h.kernel {
                let (h_lo, h_hi) = h.outputs_reading_input(kh);
                for kw in 0..w.kernel {
                    let (w_lo, w_hi) = w.outputs_reading_input(kw);
                    let mut col = row * out_len;
                    for od in 0..d.output {
                        for oh in 0..h.output {
                            let inside = (d_lo..d_hi).contains(&od) && (h_lo..h_hi).contains(&oh) && w_lo < w_hi;
                            let input = inside.then(|| {
                                let (id, ih) = (d.input_position(od, kd), h.input_position(oh, kh));
                                let start = c * in_plane + (id * h.input + ih) * w.input + w.input_position(w_lo, kw);
                                (start, w_lo, w_hi)
                            });
                            f(RowSpan { col, width: w.output, input, stride: w.stride });
                            col += w.output;
                        }
                    }
                    row += 1;
                }
            }
        }
    }
}

/// Lays out the windows of `x` (`channels` planes shaped by `g`) as a (channels * taps) x outputs
/// matrix, zeros for padding, so that a convolution becomes one matrix product.
pub(super) fn im2col<R: Scalar>(x: &[R], channels: usize, g: &[Axis; 3], col: &mut [R]) {
    for_each_row(g, channels, |span| {
        let row = &mut col[span.col..span.col + span.width];
        match span.input {
            None => row.fill(R::zero()),
            Some((start, lo, hi)) => {
                row[..lo].fill(R::zero());
                for (dst, src) in row[lo..hi].iter_mut().zip(x[start..].iter().step_by(span.stride)) {
                    *dst = *src;
                }
                row[hi..].fill(R::zero());
            }
        }
    });
}

/// The adjoint of [`im2col`]: adds each column-matrix entry back onto the input position it was
/// read from (what ConvTranspose needs).
pub(crate) fn col2im<R: Real>(col: &[R], channels: usize, g: &[Axis; 3], x: &mut [R]) {
    for_each_row(g, channels, |span| {
        if let Some((start, lo, hi)) = span.input {
            let row = &col[span.col + lo..span.col + hi];
            for (dst, src) in x[start..].iter_mut().step_by(span.stride).zip(row) {
                *dst += *src;
            }
        }
    });
}

/// A kernel that reads each input element exactly once in place: no column matrix is needed.
fn is_pointwise(g: &[Axis; 3]) -> bool {
    g.iter().all(|a| a.kernel == 1 && a.stride == 1 && a.pad_begin == 0 && a.output == a.input)
}

#[derive(Debug)]
pub struct Conv {
    pub attrs: ConvAttrs,
}

impl Op for Conv {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
        let shape = self.attrs.forward_shape("Conv", x, w)?;
        Ok(vec![Fact { dtype: x.dtype.or(w.dtype), shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, w, b) = (input(inputs, 0)?, input(inputs, 1)?, opt_input(inputs, 2));
        let out = if float_dtype("Conv", x, w, b)? { self.run::<f64>(x, w, b)? } else { self.run::<f32>(x, w, b)? };
        Ok(vec![out])
    }
}

impl Conv {
    fn run<R: Real + MatElem>(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let (xv, wv) = (to_real::<R>(x)?, to_real::<R>(w)?);
        let (out_shape, mut y) = conv_forward("Conv", &self.attrs, (&xv, x.shape()), (&wv, w.shape()))?;
        let out_plane: usize = out_shape[2..].iter().product();
        let bias = b.map(to_real::<R>).transpose()?;
        add_bias("Conv", &mut y, bias.as_deref(), out_shape[1], out_plane)?;
        from_real(x.dtype(), out_shape, y)
    }
}

/// The forward convolution (without bias) of X and W, each given as elements and shape, in the
/// compute type `T`: a float for Conv, i32 for the integer and quantized convolutions. Returns Y's
/// shape and elements.
pub(super) fn conv_forward<T: MatElem>(
    op: &str,
    attrs: &ConvAttrs,
    (xv, xs): (&[T], &[usize]),
    (wv, ws): (&[T], &[usize]),
) -> Result<(Vec<usize>, Vec<T>)> {
    let kernel = attrs.check(op, xs, ws, true)?;
    let axes: Vec<Axis> =
        kernel.iter().enumerate().map(|(i, &k)| attrs.window.forward_axis(i, xs[i + 2], k)).collect::<Result<_>>()?;
    let g = three_axes(&axes)?;
    let (batch, channels, maps) = (xs[0], xs[1], ws[0]);
    let group = attrs.group;
    if maps % group != 0 {
        bail!(Shape, "{op}: {maps} output channels do not split into {group} groups");
    }
    let (c_per_group, m_per_group) = (channels / group, maps / group);
    // The output's size is checked before any product of its dims (huge pads or dilations).
    let mut out_shape = vec![batch, maps];
    out_shape.extend(axes.iter().map(|a| a.output));
    let mut y = try_vec(checked_len(&out_shape, T::DTYPE)?, T::zero())?;
    let in_plane: usize = xs[2..].iter().product();
    let out_plane = numel(&out_shape[2..]);
    let taps: usize = kernel.iter().product();

    let pointwise = is_pointwise(&g);
    let col_len = if pointwise { 0 } else { checked_len(&[c_per_group, taps, out_plane], T::DTYPE)? };
    let mut col = try_vec(col_len, T::zero())?;
    let w_group = m_per_group * c_per_group * taps;
    for n in 0..batch {
        for grp in 0..group {
            let x_start = (n * channels + grp * c_per_group) * in_plane;
            let x_group = &xv[x_start..x_start + c_per_group * in_plane];
            let cols: &[T] = if pointwise {
                x_group
            } else {
                im2col(x_group, c_per_group, &g, &mut col);
                &col
            };
            let y_start = (n * maps + grp * m_per_group) * out_plane;
            let y_group = &mut y[y_start..y_start + m_per_group * out_plane];
            let w_slice = &wv[grp * w_group..(grp + 1) * w_group];
            gemm(false, false, m_per_group, out_plane, c_per_group * taps, w_slice, cols, y_group)?;
        }
    }
    Ok((out_shape, y))
}

/// Test helpers shared by the test modules of the NN op files.
#[cfg(test)]
pub(super) mod test_util {
    use super::*;
    use crate::ir::Attr;

    pub fn build_named(op_type: &str, opset: i64, attrs: Vec<(&str, Attr)>, num_outputs: usize) -> Result<Box<dyn Op>> {
        let attrs = Attributes::new(attrs.into_iter().map(|(n, a)| (n.to_string(), a)).collect());
        let ctx = BuildCtx { op_type, domain: "", opset, attrs: &attrs, num_inputs: 3, num_outputs };
        (super::super::registry().get("", op_type).expect("registered"))(&ctx)
    }

    pub fn run(op: &dyn Op, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        op.eval(inputs)
    }

    /// Evaluates with every input present.
    pub fn eval_all(op: &dyn Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        op.eval(&inputs.iter().map(|&t| Some(t)).collect::<Vec<_>>())
    }

    pub fn tensor(shape: Vec<usize>, values: &[f32]) -> Tensor {
        Tensor::new(shape, values.to_vec()).unwrap()
    }

    pub fn f32s(t: &Tensor) -> Vec<f32> {
        t.as_slice::<f32>().unwrap().to_vec()
    }

    pub fn assert_close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "element {i}: {g} vs {w}\n{got:?}\n{want:?}");
        }
    }

    pub fn ramp(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor::new(shape, (0..n).map(|v| v as f32).collect()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;
    use crate::ir::{Attr, DType};

    fn conv(attrs: Vec<(&str, Attr)>, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let op = build_named("Conv", 22, attrs, 1)?;
        Ok(run(&*op, &[Some(x), Some(w), b])?.remove(0))
    }

    #[test]
    fn conv_2d_padding_and_strides() {
        // ONNX test_basic_conv_with_padding / test_conv_with_strides_padding: x = arange(25) 5x5, W = ones 3x3.
        let x = ramp(vec![1, 1, 5, 5]);
        let w = Tensor::new(vec![1, 1, 3, 3], vec![1f32; 9]).unwrap();
        let y = conv(vec![("pads", Attr::Ints(vec![1, 1, 1, 1]))], &x, &w, None).unwrap();
        assert_eq!(y.shape(), &[1, 1, 5, 5]);
        assert_close(
            &f32s(&y),
            &[
                12., 21., 27., 33., 24., 33., 54., 63., 72., 51., 63., 99., 108., 117., 81., 93., 144., 153., 162.,
                111., 72., 111., 117., 123., 84.,
            ],
        );
        let attrs = vec![("pads", Attr::Ints(vec![1, 0, 1, 0])), ("strides", Attr::Ints(vec![2, 2]))];
        let y = conv(attrs, &ramp(vec![1, 1, 7, 5]), &w, None).unwrap();
        assert_eq!(y.shape(), &[1, 1, 4, 2]);
        assert_close(&f32s(&y), &[21., 33., 99., 117., 189., 207., 171., 183.]);
    }

    #[test]
    fn conv_same_lower_groups_dilation_and_bias() {
        // test_conv_with_autopad_same: SAME_LOWER, stride 2 on arange(25) 5x5 with ones 3x3.
        let w = Tensor::new(vec![1, 1, 3, 3], vec![1f32; 9]).unwrap();
        let attrs = vec![("auto_pad", Attr::String("SAME_LOWER".into())), ("strides", Attr::Ints(vec![2, 2]))];
        let y = conv(attrs, &ramp(vec![1, 1, 5, 5]), &w, None).unwrap();
        assert_close(&f32s(&y), &[12., 27., 24., 63., 108., 81., 72., 117., 84.]);
        // numpy: depthwise (group 2) 1-D conv, dilation 2, with bias.
        // x = arange(12).reshape(1,2,6); w = [[[1,-1]],[[2,1]]]; y[c] = w0*x[i] + w1*x[i+2] + b[c]
        let x = ramp(vec![1, 2, 6]);
        let w = Tensor::new(vec![2, 1, 2], vec![1f32, -1., 2., 1.]).unwrap();
        let b = Tensor::vector(vec![0.5f32, -1.]);
        let attrs = vec![("group", Attr::Int(2)), ("dilations", Attr::Ints(vec![2]))];
        let y = conv(attrs, &x, &w, Some(&b)).unwrap();
        assert_eq!(y.shape(), &[1, 2, 4]);
        assert_close(&f32s(&y), &[-1.5, -1.5, -1.5, -1.5, 19., 22., 25., 28.]);
    }

    #[test]
    fn conv_3d_and_pointwise_in_f64() {
        // Pointwise 1x1x1 conv mixing two channels: y0 = x0 + 2 x1, y1 = -x0.
        let x = Tensor::new(vec![1, 2, 1, 1, 2], vec![1f64, 2., 10., 20.]).unwrap();
        let w = Tensor::new(vec![2, 2, 1, 1, 1], vec![1f64, 2., -1., 0.]).unwrap();
        let op = build_named("Conv", 11, vec![], 1).unwrap();
        let y = run(&*op, &[Some(&x), Some(&w), None]).unwrap().remove(0);
        assert_eq!(y.shape(), &[1, 2, 1, 1, 2]);
        assert_eq!(y.as_slice::<f64>().unwrap(), &[21., 42., -1., -2.]);
    }

    #[test]
    fn conv_rejects_channel_mismatch_and_bad_kernel_shape() {
        let x = ramp(vec![1, 3, 4, 4]);
        let w = Tensor::new(vec![1, 2, 3, 3], vec![1f32; 18]).unwrap();
        let e = conv(vec![], &x, &w, None).unwrap_err();
        assert!(e.message.contains("X has 3 channels"), "{e}");
        let w = Tensor::new(vec![1, 3, 3, 3], vec![1f32; 27]).unwrap();
        assert!(conv(vec![("kernel_shape", Attr::Ints(vec![2, 2]))], &x, &w, None).is_err());
        let b = Tensor::vector(vec![1f32, 2.]);
        assert!(conv(vec![], &x, &w, Some(&b)).is_err());
        assert!(conv(vec![], &ramp(vec![1, 3, 2, 2]), &w, None).is_err());
        assert!(build_named("Conv", 22, vec![("group", Attr::Int(0))], 1).is_err());
    }

    #[test]
    fn conv_infers_symbolic_batch_and_spatial() {
        let op = build_named(
            "Conv",
            22,
            vec![("strides", Attr::Ints(vec![2, 2])), ("pads", Attr::Ints(vec![1, 1, 1, 1]))],
            1,
        )
        .unwrap();
        let n = Dim::Symbol("N".into());
        let x = Fact::new(DType::F32, vec![n.clone(), Dim::Known(3), Dim::Known(32), Dim::Symbol("W".into())]);
        let w = Fact::concrete(DType::F32, &[8, 3, 3, 3]);
        let out = op.infer(&[Some(&x), Some(&w), None]).unwrap();
        assert_eq!(out[0].shape, Some(vec![n, Dim::Known(8), Dim::Known(16), Dim::Unknown]));
        let bad = Fact::concrete(DType::F32, &[8, 4, 3, 3]);
        assert!(op.infer(&[Some(&x), Some(&bad), None]).is_err());
        assert_eq!(op.infer(&[Some(&Fact::unknown()), Some(&Fact::unknown())]).unwrap()[0].shape, None);
    }
}
