//! DeformConv (opsets 19, 22): a 2-D convolution whose kernel taps are moved by learned per-output
//! offsets (and optionally scaled by a mask) before sampling the input bilinearly; and Col2Im
//! (opset 18), which sums sliding blocks of columns back into an image.
//!
//! DeformConv gathers its sampled taps into a column matrix, like Conv's im2col, and multiplies
//! it with W by [`gemm`]. Samples outside the input read zeros, as the ONNX reference's GridSample
//! with `align_corners=1` and zero padding does.

use super::conv::{add_bias, float_dtype};
use super::matmul::{gemm, MatElem};
use super::real::{from_real, to_real, wants_f64, Real};
use super::reshape::const_ints;
use super::window::WindowAttrs;
use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{Dim, Fact, Tensor};
use crate::{bail, err, Result};

pub fn register(r: &mut Registry) {
    r.add("DeformConv", build_deform_conv);
    r.add("Col2Im", build_col2im);
}

#[derive(Debug)]
pub struct DeformConv {
    window: WindowAttrs,
    group: usize,
    offset_group: usize,
}

fn build_deform_conv(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let count = |name: &str| -> Result<usize> {
        let v = ctx.attrs.int_or(name, 1)?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v >= 1)
            .ok_or_else(|| err!(InvalidModel, "DeformConv: attribute '{name}' must be at least 1, got {v}"))
    };
    Ok(Box::new(DeformConv {
        window: WindowAttrs::parse(ctx.attrs)?,
        group: count("group")?,
        offset_group: count("offset_group")?,
    }))
}

/// Bilinear interpolation of a `height` x `width` plane at `(y, x)`, zero outside.
fn bilinear<R: Real + MatElem>(plane: &[R], height: usize, width: usize, y: f64, x: f64) -> f64 {
    let (y0, x0) = (y.floor(), x.floor());
    let (ty, tx) = (y - y0, x - x0);
    let at = |yy: f64, xx: f64| -> f64 {
        if (0.0..height as f64).contains(&yy) && (0.0..width as f64).contains(&xx) {
            plane[yy as usize * width + xx as usize].to_f64()
        } else {
            0.0
        }
    };
    (1.0 - ty) * ((1.0 - tx) * at(y0, x0) + tx * at(y0, x0 + 1.0))
        + ty * ((1.0 - tx) * at(y0 + 1.0, x0) + tx * at(y0 + 1.0, x0 + 1.0))
}

impl Op for DeformConv {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (x, w, offset) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let dim = |f: &Fact, i: usize| f.shape.as_ref().and_then(|s| s.get(i).cloned()).unwrap_or(Dim::Unknown);
        let rank = x.rank().or(w.rank()).or(offset.rank());
        let shape = rank.map(|r| {
            let mut s = vec![dim(x, 0), dim(w, 0)];
            s.extend((2..r).map(|i| dim(offset, i)));
            s
        });
        Ok(vec![Fact { dtype: x.dtype.or(w.dtype), shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, w, offset) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let (b, mask) = (opt_input(inputs, 3), opt_input(inputs, 4));
        let wide = float_dtype("DeformConv", x, w, b)?;
        let out = if wide { self.run::<f64>(x, w, offset, b, mask)? } else { self.run::<f32>(x, w, offset, b, mask)? };
        Ok(vec![out])
    }
}

impl DeformConv {
    fn run<R: Real + MatElem>(
        &self,
        x: &Tensor,
        w: &Tensor,
        offset: &Tensor,
        b: Option<&Tensor>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (xs, ws) = (x.shape(), w.shape());
        if xs.len() != 4 || ws.len() != 4 {
            bail!(Unsupported, "DeformConv: only 2-D convolution is supported, got X {xs:?} and W {ws:?}");
        }
        self.window.check_rank(2)?;
        let (batch, channels, height, width) = (xs[0], xs[1], xs[2], xs[3]);
        let (maps, kh, kw) = (ws[0], ws[2], ws[3]);
        let group = self.group;
        if ws[1].checked_mul(group) != Some(channels) || maps % group != 0 || channels % self.offset_group != 0 {
            bail!(
                Shape,
                "DeformConv: X {xs:?} and W {ws:?} do not fit group {group} and offset_group {}",
                self.offset_group
            );
        }
        if let Some(k) = &self.window.kernel_shape {
            if *k != [kh, kw] {
                bail!(Shape, "DeformConv: kernel_shape {k:?} does not match W's spatial shape [{kh}, {kw}]");
            }
        }
        let ay = self.window.forward_axis(0, height, kh)?;
        let ax = self.window.forward_axis(1, width, kw)?;
        let (oh, ow) = (ay.output, ax.output);
        let taps = kh * kw;
        let want_offset = [batch, self.offset_group * taps * 2, oh, ow];
        if offset.shape() != want_offset {
            bail!(Shape, "DeformConv: offset has shape {:?}, expected {want_offset:?}", offset.shape());
        }
        let want_mask = [batch, self.offset_group * taps, oh, ow];
        if let Some(m) = mask.filter(|m| m.shape() != want_mask) {
            bail!(Shape, "DeformConv: mask has shape {:?}, expected {want_mask:?}", m.shape());
        }
        let (xv, wv, ov) = (to_real::<R>(x)?, to_real::<R>(w)?, to_real::<R>(offset)?);
        let mv = mask.map(to_real::<R>).transpose()?;
        let (c_per_group, m_per_group) = (channels / group, maps / group);
        let c_per_offset_group = channels / self.offset_group;
        let (in_plane, out_plane) = (height * width, oh * ow);
        let out_shape = vec![batch, maps, oh, ow];
        let mut y = try_vec(checked_len(&out_shape, x.dtype())?, R::zero())?;
        let mut col = try_vec(checked_len(&[c_per_group, taps, out_plane], x.dtype())?, R::zero())?;
        let w_group = m_per_group * c_per_group * taps;
        for n in 0..batch {
            for grp in 0..group {
                for c in 0..c_per_group {
                    let channel = grp * c_per_group + c;
                    let og = channel / c_per_offset_group;
                    let plane = &xv[(n * channels + channel) * in_plane..][..in_plane];
                    for tap in 0..taps {
                        let (ki, kj) = (tap / kw, tap % kw);
                        let off_base = ((n * self.offset_group + og) * taps + tap) * 2;
                        let dy = &ov[off_base * out_plane..][..out_plane];
                        let dx = &ov[(off_base + 1) * out_plane..][..out_plane];
                        let scale = mv.as_ref().map(|m| &m[((n * self.offset_group + og) * taps + tap) * out_plane..]);
                        let row = &mut col[(c * taps + tap) * out_plane..][..out_plane];
                        for (p, v) in row.iter_mut().enumerate() {
                            let (i, j) = (p / ow, p % ow);
                            let base_y = (i * ay.stride + ki * ay.dilation) as f64 - ay.pad_begin as f64;
                            let base_x = (j * ax.stride + kj * ax.dilation) as f64 - ax.pad_begin as f64;
                            let s = bilinear(plane, height, width, base_y + dy[p].to_f64(), base_x + dx[p].to_f64());
                            let m = scale.map_or(1.0, |m| m[p].to_f64());
                            *v = R::from_f64(s * m);
                        }
                    }
                }
                let y_group = &mut y[(n * maps + grp * m_per_group) * out_plane..][..m_per_group * out_plane];
                let w_slice = &wv[grp * w_group..(grp + 1) * w_group];
                gemm(false, false, m_per_group, out_plane, c_per_group * taps, w_slice, &col, y_group)?;
            }
        }
        let bias = b.map(to_real::<R>).transpose()?;
        add_bias("DeformConv", &mut y, bias.as_deref(), maps, out_plane)?;
        from_real(x.dtype(), out_shape, y)
    }
}

#[derive(Debug)]
pub struct Col2Im {
    dilations: Option<Vec<i64>>,
    pads: Option<Vec<i64>>,
    strides: Option<Vec<i64>>,
}

fn build_col2im(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    Ok(Box::new(Col2Im { dilations: a.ints("dilations")?, pads: a.ints("pads")?, strides: a.ints("strides")? }))
}

/// One spatial axis of Col2Im: image size, block size, and how blocks slide.
#[derive(Debug, Clone, Copy)]
struct BlockAxis {
    image: usize,
    block: usize,
    dilation: usize,
    stride: usize,
    pad_begin: i64,
    /// How many block positions fit along the axis.
    count: usize,
}

impl Col2Im {
    fn axes(&self, image: &[i64], block: &[i64]) -> Result<Vec<BlockAxis>> {
        let r = image.len();
        if block.len() != r || r == 0 {
            bail!(
                Shape,
                "Col2Im: image_shape {image:?} and block_shape {block:?} must have one equal, non-zero length"
            );
        }
        let list = |name: &str, v: &Option<Vec<i64>>, len: usize, default: i64| -> Result<Vec<i64>> {
            match v {
                Some(v) if v.len() != len => bail!(Shape, "Col2Im: '{name}' has {} values, expected {len}", v.len()),
                Some(v) => Ok(v.clone()),
                None => Ok(vec![default; len]),
            }
        };
        let (dil, pads, strides) = (
            list("dilations", &self.dilations, r, 1)?,
            list("pads", &self.pads, 2 * r, 0)?,
            list("strides", &self.strides, r, 1)?,
        );
        (0..r)
            .map(|i| {
                let bad = || err!(Shape, "Col2Im: axis {i} (image {}, block {}, dilation {}, pads {}+{}, stride {}) has no room for a block",
                    image[i], block[i], dil[i], pads[i], pads[i + r], strides[i]);
                if image[i] < 0 || block[i] < 1 || dil[i] < 1 || strides[i] < 1 || pads[i] < 0 || pads[i + r] < 0 {
                    return Err(bad());
                }
                let (img, blk, d, s) = (image[i] as i128, block[i] as i128, dil[i] as i128, strides[i] as i128);
                let room = img + pads[i] as i128 + pads[i + r] as i128 - (d * (blk - 1) + 1);
                if room < 0 {
                    return Err(bad());
                }
                let size = |v: i128| usize::try_from(v).map_err(|_| bad());
                Ok(BlockAxis {
                    image: size(img)?,
                    block: size(blk)?,
                    dilation: size(d)?,
                    stride: size(s)?,
                    pad_begin: pads[i],
                    count: size(room / s + 1)?,
                })
            })
            .collect()
    }
}

/// Advances a row-major multi-index over `dims`; false once it wraps around to all zeros.
fn next_index(index: &mut [usize], dims: impl Fn(usize) -> usize) -> bool {
    for a in (0..index.len()).rev() {
        index[a] += 1;
        if index[a] < dims(a) {
            return true;
        }
        index[a] = 0;
    }
    false
}

impl Op for Col2Im {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (x, image, block) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let xs = x.shape.as_deref();
        let batch = xs.and_then(|s| s.first().cloned()).unwrap_or(Dim::Unknown);
        let (image, block) = (const_ints(Some(image))?, const_ints(Some(block))?);
        let channels = match (xs.and_then(|s| s.get(1)).and_then(Dim::known), &block) {
            (Some(c), Some(b)) => {
                let k: i64 = b.iter().product();
                if k > 0 && c as i64 % k == 0 {
                    Dim::Known(c / k as usize)
                } else {
                    Dim::Unknown
                }
            }
            _ => Dim::Unknown,
        };
        let shape = image.map(|img| {
            let mut s = vec![batch, channels];
            s.extend(img.iter().map(|&d| usize::try_from(d).map_or(Dim::Unknown, Dim::Known)));
            s
        });
        Ok(vec![Fact { dtype: x.dtype, shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let (image, block) = (input(inputs, 1)?.to_i64_vec()?, input(inputs, 2)?.to_i64_vec()?);
        let axes = self.axes(&image, &block)?;
        let out =
            if wants_f64("Col2Im", x.dtype())? { run_col2im::<f64>(x, &axes)? } else { run_col2im::<f32>(x, &axes)? };
        Ok(vec![out])
    }
}

fn run_col2im<R: Real>(x: &Tensor, axes: &[BlockAxis]) -> Result<Tensor> {
    let xs = x.shape();
    // Saturating: a huge image_shape cannot match the input's block count anyway.
    let taps = axes.iter().fold(1usize, |n, a| n.saturating_mul(a.block));
    let blocks = axes.iter().fold(1usize, |n, a| n.saturating_mul(a.count));
    if xs.len() != 3 || !xs[1].is_multiple_of(taps) || xs[2] != blocks {
        bail!(
            Shape,
            "Col2Im: input of shape {xs:?} does not fit {taps} taps per block and {blocks} blocks (want [N, C*{taps}, {blocks}])"
        );
    }
    let (batch, channels) = (xs[0], xs[1] / taps);
    let mut out_shape = vec![batch, channels];
    out_shape.extend(axes.iter().map(|a| a.image));
    let mut out = try_vec(checked_len(&out_shape, x.dtype())?, R::zero())?;
    let image_len: usize = axes.iter().map(|a| a.image).product();
    if out.is_empty() || blocks == 0 {
        return from_real(x.dtype(), out_shape, out);
    }
    let xv = to_real::<R>(x)?;
    let r = axes.len();
    let (mut tap, mut pos) = (vec![0usize; r], vec![0usize; r]);
    for plane in 0..batch * channels {
        let dst = &mut out[plane * image_len..][..image_len];
        let src = &xv[plane * taps * blocks..][..taps * blocks];
        tap.fill(0);
        for row in src.chunks_exact(blocks) {
            pos.fill(0);
            for &v in row {
                let mut index = Some(0usize);
                for (a, axis) in axes.iter().enumerate() {
                    let at = (pos[a] * axis.stride + tap[a] * axis.dilation) as i64 - axis.pad_begin;
                    index =
                        index.filter(|_| (0..axis.image as i64).contains(&at)).map(|i| i * axis.image + at as usize);
                }
                if let Some(i) = index {
                    dst[i] += v;
                }
                next_index(&mut pos, |a| axes[a].count);
            }
            next_index(&mut tap, |a| axes[a].block);
        }
    }
    from_real(x.dtype(), out_shape, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, DType};
    use crate::ops::activation::test_util::{assert_close, build};

    fn ramp(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor::new(shape, (0..n).map(|v| v as f32).collect()).unwrap()
    }

    #[test]
    fn deform_conv_with_offsets_mask_and_bias() {
        // X = arange(9) 3x3, W = ones 2x2, no padding: output 2x2. Offsets move tap (0, 0) of output
        // (0, 0) down by 0.5 and tap (1, 0) of output (1, 1) left by 1; the mask halves tap (1, 1)
        // everywhere. Values from onnx.reference's DeformConv.
        let x = ramp(vec![1, 1, 3, 3]);
        let w = Tensor::new(vec![1, 1, 2, 2], vec![1f32; 4]).unwrap();
        let mut off = vec![0f32; 8 * 4];
        off[0] = 0.5; // tap 0, dy, output 0
        off[5 * 4 + 3] = -1.0; // tap 2, dx, output 3
        let offset = Tensor::new(vec![1, 8, 2, 2], off).unwrap();
        let mut m = vec![1f32; 16];
        m[12..16].fill(0.5);
        let mask = Tensor::new(vec![1, 4, 2, 2], m).unwrap();
        let b = Tensor::vector(vec![0.25f32]);
        let op = build("DeformConv", 19, vec![("kernel_shape", Attr::Ints(vec![2, 2]))], 1).unwrap();
        let y = op.eval(&[Some(&x), Some(&w), Some(&offset), Some(&b), Some(&mask)]).unwrap().remove(0);
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_close(y.as_slice::<f32>().unwrap(), &[7.75, 9.75, 16.75, 19.25]);
    }

    #[test]
    fn deform_conv_rejects_bad_offset_shape() {
        let x = ramp(vec![1, 1, 3, 3]);
        let w = Tensor::new(vec![1, 1, 2, 2], vec![1f32; 4]).unwrap();
        let offset = Tensor::new(vec![1, 8, 3, 3], vec![0f32; 72]).unwrap();
        let op = build("DeformConv", 19, vec![], 1).unwrap();
        let e = op.eval(&[Some(&x), Some(&w), Some(&offset)]).unwrap_err();
        assert!(e.message.contains("offset has shape"), "{e}");
        let f = op.infer(&[Some(&Fact::of_dtype(DType::F32)), Some(&Fact::unknown()), Some(&Fact::unknown())]).unwrap();
        assert_eq!(f[0].shape, None);
    }

    #[test]
    fn col2im_sums_overlapping_blocks() {
        // 1 channel, image 3x3, block 2x2, stride 1: 4 taps x 4 blocks; input = arange(16).
        // Values from onnx.reference's Col2Im.
        let op = build("Col2Im", 18, vec![], 1).unwrap();
        let x = ramp(vec![1, 4, 4]);
        let (image, block) = (Tensor::vector(vec![3i64, 3]), Tensor::vector(vec![2i64, 2]));
        let y = op.eval(&[Some(&x), Some(&image), Some(&block)]).unwrap().remove(0);
        assert_eq!(y.shape(), &[1, 1, 3, 3]);
        assert_close(y.as_slice::<f32>().unwrap(), &[0.0, 5.0, 5.0, 10.0, 30.0, 20.0, 10.0, 25.0, 15.0]);
        let pads = vec![("pads", Attr::Ints(vec![1, 0, 0, 0])), ("strides", Attr::Ints(vec![2, 1]))];
        let op = build("Col2Im", 18, pads, 1).unwrap();
        let y = op.eval(&[Some(&ramp(vec![1, 4, 4])), Some(&image), Some(&block)]).unwrap().remove(0);
        assert_close(y.as_slice::<f32>().unwrap(), &[8.0, 21.0, 13.0, 2.0, 9.0, 7.0, 10.0, 25.0, 15.0]);
    }

    #[test]
    fn col2im_rejects_bad_shapes() {
        let op = build("Col2Im", 18, vec![], 1).unwrap();
        let x = ramp(vec![1, 4, 4]);
        let block = Tensor::vector(vec![2i64, 2]);
        let e = op.eval(&[Some(&x), Some(&Tensor::vector(vec![4i64, 4])), Some(&block)]).unwrap_err();
        assert!(e.message.contains("does not fit"), "{e}");
        assert!(op.eval(&[Some(&x), Some(&Tensor::vector(vec![-3i64, 3])), Some(&block)]).is_err());
        assert!(op.eval(&[Some(&x), Some(&Tensor::vector(vec![1i64, 1])), Some(&block)]).is_err());
        assert!(op.eval(&[Some(&x), Some(&Tensor::vector(vec![3i64])), Some(&block)]).is_err());
    }
}
