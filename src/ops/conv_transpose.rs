//! ConvTranspose: the adjoint of Conv, computed per group as `col = W^T · X` followed by col2im
//! (scatter-adding each column back onto the output positions its taps reach).

use super::conv::{add_bias, col2im, float_dtype, ConvAttrs};
use super::matmul::{gemm, MatElem};
use super::real::{from_real, to_real, Real};
use super::reshape::numel;
use super::window::{sizes_attr, three_axes, Axis};
use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{Dim, Fact, Tensor};
use crate::{bail, Result};

pub fn register(r: &mut Registry) {
    r.add("ConvTranspose", build);
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    Ok(Box::new(ConvTranspose {
        attrs: ConvAttrs::parse(ctx.attrs)?,
        output_padding: sizes_attr(ctx.attrs, "output_padding")?,
        output_shape: sizes_attr(ctx.attrs, "output_shape")?,
    }))
}

#[derive(Debug)]
pub struct ConvTranspose {
    attrs: ConvAttrs,
    output_padding: Option<Vec<usize>>,
    output_shape: Option<Vec<usize>>,
}

impl ConvTranspose {
    fn output_padding(&self, axis: usize) -> usize {
        self.output_padding.as_ref().and_then(|p| p.get(axis).copied()).unwrap_or(0)
    }

    /// The requested spatial output size of an axis. Some exporters write the full N, C, ... shape
    /// into `output_shape`; only its trailing spatial entries count.
    fn requested_output(&self, axis: usize, spatial: usize) -> Result<Option<usize>> {
        let Some(shape) = &self.output_shape else { return Ok(None) };
        if shape.len() < spatial {
            bail!(Shape, "output_shape {shape:?} has fewer entries than the {spatial} spatial axes");
        }
        Ok(Some(shape[shape.len() - spatial + axis]))
    }

    fn check_output_padding(&self, spatial: usize) -> Result<()> {
        match &self.output_padding {
            Some(p) if p.len() != spatial => {
                bail!(Shape, "output_padding has {} values, the input has {spatial} spatial axes", p.len())
            }
            _ => Ok(()),
        }
    }

    /// Geometry of spatial axis `axis` in the forward view (see `WindowAttrs::transposed_axis`).
    fn axis(&self, axis: usize, spatial: usize, input: usize, kernel: usize) -> Result<Axis> {
        let padding = self.output_padding(axis);
        if padding >= self.attrs.window.stride(axis).max(self.attrs.window.dilation(axis)) {
            bail!(Shape, "output_padding {padding} on spatial axis {axis} must be smaller than the stride or dilation");
        }
        self.attrs.window.transposed_axis(axis, input, kernel, padding, self.requested_output(axis, spatial)?)
    }
}

impl Op for ConvTranspose {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
        let dtype = x.dtype.or(w.dtype);
        let (xs, ws) = (x.shape.as_deref(), w.shape.as_deref());
        let Some(spatial) = self.attrs.check_facts("ConvTranspose", xs, ws, false)? else {
            return Ok(vec![Fact { dtype, shape: None, value: None }]);
        };
        self.check_output_padding(spatial)?;
        let maps = ws.and_then(|w| w[1].known()).map_or(Dim::Unknown, |m| Dim::Known(m * self.attrs.group));
        let mut shape = vec![xs.map_or(Dim::Unknown, |x| x[0].clone()), maps];
        for i in 0..spatial {
            let input = xs.and_then(|x| x[i + 2].known());
            shape.push(match (input, self.attrs.kernel_dim(ws, i), self.requested_output(i, spatial)?) {
                (_, _, Some(out)) => Dim::Known(out),
                (Some(n), Some(k), None) => Dim::Known(self.axis(i, spatial, n, k)?.input),
                _ => Dim::Unknown,
            });
        }
        Ok(vec![Fact { dtype, shape: Some(shape), value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, w, b) = (input(inputs, 0)?, input(inputs, 1)?, opt_input(inputs, 2));
        let out =
            if float_dtype("ConvTranspose", x, w, b)? { self.run::<f64>(x, w, b)? } else { self.run::<f32>(x, w, b)? };
        Ok(vec![out])
    }
}

impl ConvTranspose {
    pub fn group(&self) -> usize {
        self.attrs.group
    }

    /// The group count and the spatial axes (in the forward view col2im takes) of a run on X and
    /// W of these shapes, checked as `eval` checks them: for backend kernels.
    pub fn geometry(&self, xs: &[usize], ws: &[usize]) -> Result<(usize, Vec<Axis>)> {
        let kernel = self.attrs.check("ConvTranspose", xs, ws, false)?;
        let spatial = kernel.len();
        self.check_output_padding(spatial)?;
        let axes =
            kernel.iter().enumerate().map(|(i, &k)| self.axis(i, spatial, xs[i + 2], k)).collect::<Result<_>>()?;
        Ok((self.attrs.group, axes))
    }

    fn run<R: Real + MatElem>(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let (xs, ws) = (x.shape(), w.shape());
        let kernel = self.attrs.check("ConvTranspose", xs, ws, false)?;
        let spatial = kernel.len();
        self.check_output_padding(spatial)?;
        let axes: Vec<Axis> =
            kernel.iter().enumerate().map(|(i, &k)| self.axis(i, spatial, xs[i + 2], k)).collect::<Result<_>>()?;
        let g = three_axes(&axes)?;
        let group = self.attrs.group;
        let (batch, channels, m_per_group) = (xs[0], xs[1], ws[1]);
        let maps = m_per_group.saturating_mul(group);
        let c_per_group = channels / group;
        // The output's size is checked before any product of its dims (huge strides or an
        // output_shape of 2^40).
        let mut out_shape = vec![batch, maps];
        out_shape.extend(axes.iter().map(|a| a.input));
        let mut y = try_vec(checked_len(&out_shape, x.dtype())?, R::zero())?;
        let in_plane: usize = xs[2..].iter().product();
        let out_plane = numel(&out_shape[2..]);
        let taps: usize = kernel.iter().product();
        let (xv, wv) = (to_real::<R>(x)?, to_real::<R>(w)?);
        let col_rows = m_per_group * taps;
        let mut col = try_vec(checked_len(&[col_rows, in_plane], x.dtype())?, R::zero())?;
        let w_group = c_per_group * col_rows;
        for n in 0..batch {
            for grp in 0..group {
                let x_start = (n * channels + grp * c_per_group) * in_plane;
                let x_group = &xv[x_start..x_start + c_per_group * in_plane];
                // W's rows for this group form a (channels x maps*taps) matrix; its transpose maps
                // each input pixel to the output taps it feeds.
                let w_slice = &wv[grp * w_group..(grp + 1) * w_group];
                col.fill(R::zero());
                gemm(true, false, col_rows, in_plane, c_per_group, w_slice, x_group, &mut col)?;
                let y_start = (n * maps + grp * m_per_group) * out_plane;
                col2im(&col, m_per_group, &g, &mut y[y_start..y_start + m_per_group * out_plane]);
            }
        }
        let bias = b.map(to_real::<R>).transpose()?;
        add_bias("ConvTranspose", &mut y, bias.as_deref(), maps, out_plane)?;
        from_real(x.dtype(), out_shape, y)
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::test_util::*;
    use super::*;
    use crate::ir::{Attr, DType};

    fn conv_t(attrs: Vec<(&str, Attr)>, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let op = build_op(attrs)?;
        Ok(run(&*op, &[Some(x), Some(w), b])?.remove(0))
    }

    fn build_op(attrs: Vec<(&str, Attr)>) -> Result<Box<dyn Op>> {
        build_named("ConvTranspose", 22, attrs, 1)
    }

    #[test]
    fn transposed_1d_matches_onnx_example() {
        // ONNX test_convtranspose_1d: x = [0, 1, 2], W = ones (1, 2, 3).
        let x = Tensor::new(vec![1, 1, 3], vec![0f32, 1., 2.]).unwrap();
        let w = Tensor::new(vec![1, 2, 3], vec![1f32; 6]).unwrap();
        let y = conv_t(vec![], &x, &w, None).unwrap();
        assert_eq!(y.shape(), &[1, 2, 5]);
        assert_close(&f32s(&y), &[0., 1., 3., 3., 2., 0., 1., 3., 3., 2.]);
    }

    #[test]
    fn transposed_strides_pads_and_output_shape() {
        // onnxruntime: x = arange(1, 10) 3x3, W = ones 3x3 with W[0,0] = 5, strides 2.
        let x = Tensor::new(vec![1, 1, 3, 3], (1..10).map(|v| v as f32).collect()).unwrap();
        let mut wv = vec![1f32; 9];
        wv[0] = 5.;
        let w = Tensor::new(vec![1, 1, 3, 3], wv).unwrap();
        let s2 = || ("strides", Attr::Ints(vec![2, 2]));
        let y = conv_t(vec![s2()], &x, &w, None).unwrap();
        assert_eq!(y.shape(), &[1, 1, 7, 7]);
        assert_close(&f32s(&y)[..14], &[5., 1., 11., 2., 17., 3., 3., 1., 1., 3., 2., 5., 3., 3.]);
        // output_shape 6x6 trims one leading row/column (NOTSET puts the odd cell first).
        let y = conv_t(vec![s2(), ("output_shape", Attr::Ints(vec![6, 6]))], &x, &w, None).unwrap();
        assert_close(&f32s(&y)[..12], &[1., 3., 2., 5., 3., 3., 5., 32., 7., 40., 9., 9.]);
        // SAME_UPPER trims at the end instead.
        let y = conv_t(vec![s2(), ("auto_pad", Attr::String("SAME_UPPER".into()))], &x, &w, None).unwrap();
        assert_close(&f32s(&y)[..6], &[5., 1., 11., 2., 17., 3.]);
        // output_shape 8x8 appends zeros (plus bias).
        let b = Tensor::vector(vec![0.5f32]);
        let y = conv_t(vec![s2(), ("output_shape", Attr::Ints(vec![8, 8]))], &x, &w, Some(&b)).unwrap();
        assert_close(&f32s(&y)[..8], &[5.5, 1.5, 11.5, 2.5, 17.5, 3.5, 3.5, 0.5]);
    }

    #[test]
    fn transposed_groups() {
        // numpy: two groups of one channel each, W (2, 1, 2): y[g] = full correlation of x[g] and W[g].
        let x = Tensor::new(vec![1, 2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let w = Tensor::new(vec![2, 1, 2], vec![1f32, 10., -1., 1.]).unwrap();
        let y = conv_t(vec![("group", Attr::Int(2))], &x, &w, None).unwrap();
        assert_eq!(y.shape(), &[1, 2, 3]);
        assert_close(&f32s(&y), &[1., 12., 20., -3., -1., 4.]);
    }

    #[test]
    fn transposed_rejects_channel_mismatch_and_bad_output_padding() {
        let x = ramp(vec![1, 2, 3, 3]);
        let w = Tensor::new(vec![1, 1, 3, 3], vec![1f32; 9]).unwrap();
        let e = conv_t(vec![], &x, &w, None).unwrap_err();
        assert!(e.message.contains("X has 2 channels"), "{e}");
        let x = ramp(vec![1, 1, 3, 3]);
        assert!(conv_t(vec![("output_padding", Attr::Ints(vec![1, 1]))], &x, &w, None).is_err());
        assert!(conv_t(vec![("pads", Attr::Ints(vec![4, 4, 4, 4]))], &x, &w, None).is_err());
    }

    #[test]
    fn transposed_infers_shapes() {
        let op =
            build_op(vec![("strides", Attr::Ints(vec![3, 2])), ("output_padding", Attr::Ints(vec![1, 1]))]).unwrap();
        let n = Dim::Symbol("N".into());
        let x = Fact::new(DType::F32, vec![n.clone(), Dim::Known(1), Dim::Known(3), Dim::Unknown]);
        let w = Fact::concrete(DType::F32, &[1, 2, 3, 3]);
        let out = op.infer(&[Some(&x), Some(&w)]).unwrap();
        assert_eq!(out[0].shape, Some(vec![n, Dim::Known(2), Dim::Known(10), Dim::Unknown]));
    }
}
