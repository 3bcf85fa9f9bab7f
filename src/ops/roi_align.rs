//! RoiAlign (opsets 10, 16, 22): pools each region of interest of a feature map into a fixed
//! `output_height` x `output_width` grid, sampling every bin at `sampling_ratio`^2 bilinearly
//! interpolated points (or adaptively many when it is 0) and averaging them or taking their maximum.
//!
//! Follows the ONNX reference, which mirrors onnxruntime: in max mode the maximum is taken over the
//! four *weighted* corner values of each sample, and samples that fall more than one pixel outside
//! the map count as 0. Opset 10 has no `coordinate_transformation_mode`; it behaves as
//! `output_half_pixel`, while opset 16 defaults to `half_pixel`.

use super::real::{from_real, to_real, wants_f64, Real};
use super::{input, BuildCtx, Op, Registry};
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{Dim, Fact, Tensor};
use crate::{bail, Result};

pub fn register(r: &mut Registry) {
    r.add("RoiAlign", build_roi_align);
}

/// With `sampling_ratio` 0 the samples per bin grow with the roi's size, which comes from data: this
/// bound keeps an absurd roi from running (practically) forever.
const MAX_SAMPLES_PER_BIN: usize = 1 << 24;

#[derive(Debug)]
pub struct RoiAlign {
    max: bool,
    half_pixel: bool,
    output_height: usize,
    output_width: usize,
    sampling_ratio: usize,
    spatial_scale: f64,
}

fn build_roi_align(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    let max = match a.string_or("mode", "avg".into())?.as_str() {
        "avg" => false,
        "max" => true,
        other => bail!(Unsupported, "RoiAlign: mode '{other}' is not one of avg, max"),
    };
    let default_transform = if ctx.opset < 16 { "output_half_pixel" } else { "half_pixel" };
    let half_pixel = match a.string_or("coordinate_transformation_mode", default_transform.into())?.as_str() {
        "half_pixel" => true,
        "output_half_pixel" => false,
        other => bail!(
            Unsupported,
            "RoiAlign: coordinate_transformation_mode '{other}' is not one of half_pixel, output_half_pixel"
        ),
    };
    let positive = |name: &str| -> Result<usize> {
        let v = a.int_or(name, 1)?;
        if v < 1 {
            bail!(InvalidModel, "RoiAlign: attribute '{name}' must be at least 1, got {v}");
        }
        usize::try_from(v).map_err(|_| crate::err!(InvalidModel, "RoiAlign: attribute '{name}' is too large"))
    };
    let sampling_ratio = a.int_or("sampling_ratio", 0)?;
    if sampling_ratio < 0 {
        bail!(InvalidModel, "RoiAlign: sampling_ratio must not be negative, got {sampling_ratio}");
    }
    let spatial_scale = f64::from(a.float_or("spatial_scale", 1.0)?);
    if !spatial_scale.is_finite() {
        bail!(InvalidModel, "RoiAlign: spatial_scale must be finite, got {spatial_scale}");
    }
    Ok(Box::new(RoiAlign {
        max,
        half_pixel,
        output_height: positive("output_height")?,
        output_width: positive("output_width")?,
        sampling_ratio: sampling_ratio as usize,
        spatial_scale,
    }))
}

/// A bilinear sample: four element offsets in the plane and their weights.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    pos: [usize; 4],
    w: [f64; 4],
}

/// The bilinear sample at `(y, x)` of a `height` x `width` plane; all-zero weights when the
/// point lies more than a pixel outside.
fn bilinear(y: f64, x: f64, height: usize, width: usize) -> Sample {
    let (hf, wf) = (height as f64, width as f64);
    let inside = (-1.0..=hf).contains(&y) && (-1.0..=wf).contains(&x);
    if !inside || height == 0 || width == 0 {
        return Sample::default();
    }
    let axis = |v: f64, n: usize| -> (usize, usize, f64) {
        let v = v.max(0.0);
        let low = v as usize;
        if low >= n - 1 {
            (n - 1, n - 1, 0.0)
        } else {
            (low, low + 1, v - low as f64)
        }
    };
    let (y_low, y_high, ly) = axis(y, height);
    let (x_low, x_high, lx) = axis(x, width);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    Sample {
        pos: [y_low * width + x_low, y_low * width + x_high, y_high * width + x_low, y_high * width + x_high],
        w: [hy * hx, hy * lx, ly * hx, ly * lx],
    }
}

impl Op for RoiAlign {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (x, rois, indices) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        if let Some(r) = x.rank().filter(|&r| r != 4) {
            bail!(Shape, "RoiAlign: X must have rank 4 (N, C, H, W), got rank {r}");
        }
        let channels = x.shape.as_ref().map_or(Dim::Unknown, |s| s[1].clone());
        let count = match (&rois.shape, &indices.shape) {
            (Some(r), _) if !r.is_empty() => r[0].clone(),
            (_, Some(i)) if !i.is_empty() => i[0].clone(),
            _ => Dim::Unknown,
        };
        let shape = vec![count, channels, Dim::Known(self.output_height), Dim::Known(self.output_width)];
        Ok(vec![Fact { dtype: x.dtype, shape: Some(shape), value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, rois, indices) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let out = if wants_f64("RoiAlign", x.dtype())? {
            self.run::<f64>(x, rois, indices)?
        } else {
            self.run::<f32>(x, rois, indices)?
        };
        Ok(vec![out])
    }
}

impl RoiAlign {
    fn run<R: Real>(&self, x: &Tensor, rois: &Tensor, indices: &Tensor) -> Result<Tensor> {
        let xs = x.shape();
        if xs.len() != 4 {
            bail!(Shape, "RoiAlign: X must have rank 4 (N, C, H, W), got shape {xs:?}");
        }
        let (batch, channels, height, width) = (xs[0], xs[1], xs[2], xs[3]);
        let count = indices.len();
        if rois.shape() != [count, 4] || indices.rank() != 1 {
            bail!(
                Shape,
                "RoiAlign: rois of shape {:?} and batch_indices of shape {:?} do not agree (want [K, 4] and [K])",
                rois.shape(),
                indices.shape()
            );
        }
        let batch_of = indices.to_i64_vec()?;
        let boxes = rois.to_f64_vec()?;
        let (oh, ow) = (self.output_height, self.output_width);
        let out_shape = vec![count, channels, oh, ow];
        let mut out = try_vec(checked_len(&out_shape, x.dtype())?, R::zero())?;
        let xv = to_real::<R>(x)?;
        let plane = height * width;
        let bin_len = oh * ow;
        for (k, (&b, roi)) in batch_of.iter().zip(boxes.chunks_exact(4)).enumerate() {
            let image = usize::try_from(b).ok().filter(|&b| b < batch).ok_or_else(|| {
                crate::err!(Runtime, "RoiAlign: batch index {b} of roi {k} is out of range for a batch of {batch}")
            })?;
            if roi.iter().any(|v| !v.is_finite()) {
                bail!(Runtime, "RoiAlign: roi {k} has a non-finite coordinate: {roi:?}");
            }
            let offset = if self.half_pixel { 0.5 } else { 0.0 };
            let [x0, y0, x1, y1] = [0, 1, 2, 3].map(|i| roi[i] * self.spatial_scale - offset);
            let (mut roi_w, mut roi_h) = (x1 - x0, y1 - y0);
            if !self.half_pixel {
                // Malformed boxes are forced to 1x1.
                roi_w = roi_w.max(1.0);
                roi_h = roi_h.max(1.0);
            }
            let (bin_h, bin_w) = (roi_h / oh as f64, roi_w / ow as f64);
            let grid = |extent: f64, bins: usize| -> usize {
                if self.sampling_ratio > 0 {
                    self.sampling_ratio
                } else {
                    (extent / bins as f64).ceil().max(0.0) as usize
                }
            };
            let (grid_h, grid_w) = (grid(roi_h, oh), grid(roi_w, ow));
            let samples = grid_h.saturating_mul(grid_w);
            if samples > MAX_SAMPLES_PER_BIN {
                bail!(
                    ResourceLimit,
                    "RoiAlign: roi {k} {roi:?} needs {grid_h}x{grid_w} samples per bin, over the limit of {MAX_SAMPLES_PER_BIN}"
                );
            }
            let src = &xv[image * channels * plane..][..channels * plane];
            let dst = &mut out[k * channels * bin_len..][..channels * bin_len];
            for ph in 0..oh {
                for pw in 0..ow {
                    let bin = ph * ow + pw;
                    let mut first = true;
                    for iy in 0..grid_h {
                        let y = y0 + ph as f64 * bin_h + (iy as f64 + 0.5) * bin_h / grid_h as f64;
                        for ix in 0..grid_w {
                            let xx = x0 + pw as f64 * bin_w + (ix as f64 + 0.5) * bin_w / grid_w as f64;
                            let s = bilinear(y, xx, height, width);
                            for c in 0..channels {
                                let p = &src[c * plane..][..plane];
                                let v = &mut dst[c * bin_len + bin];
                                if self.max {
                                    let m =
                                        (0..4).map(|i| s.w[i] * p[s.pos[i]].to_f64()).fold(f64::NEG_INFINITY, f64::max);
                                    if first || m > v.to_f64() {
                                        *v = R::from_f64(m);
                                    }
                                } else {
                                    let sum: f64 = (0..4).map(|i| s.w[i] * p[s.pos[i]].to_f64()).sum();
                                    *v += R::from_f64(sum);
                                }
                            }
                            first = false;
                        }
                    }
                    if !self.max && samples > 1 {
                        let n = R::from_f64(samples as f64);
                        for c in 0..channels {
                            let v = &mut dst[c * bin_len + bin];
                            *v = *v / n;
                        }
                    }
                }
            }
        }
        from_real(x.dtype(), out_shape, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, DType};
    use crate::ops::activation::test_util::{assert_close, build};

    fn roi_align(opset: i64, attrs: Vec<(&str, Attr)>, x: &Tensor, rois: &[f32], batch: &[i64]) -> Result<Tensor> {
        let op = build("RoiAlign", opset, attrs, 1)?;
        let rois = Tensor::new(vec![rois.len() / 4, 4], rois.to_vec()).unwrap();
        let batch = Tensor::vector(batch.to_vec());
        Ok(op.eval(&[Some(x), Some(&rois), Some(&batch)])?.remove(0))
    }

    // X = arange(16) as 1x1x4x4; expected values from onnx.reference's RoiAlign.
    fn x44() -> Tensor {
        Tensor::new(vec![1, 1, 4, 4], (0..16).map(|v| v as f32).collect()).unwrap()
    }

    fn out2(extra: Vec<(&str, Attr)>) -> Vec<(&str, Attr)> {
        let mut a = vec![("output_height", Attr::Int(2)), ("output_width", Attr::Int(2))];
        a.extend(extra);
        a
    }

    #[test]
    fn avg_in_both_coordinate_modes() {
        let rois = [0.0, 0.0, 3.0, 3.0, 1.0, 0.5, 2.5, 4.0];
        let y = roi_align(10, out2(vec![("sampling_ratio", Attr::Int(2))]), &x44(), &rois, &[0, 0]).unwrap();
        assert_eq!(y.shape(), &[2, 1, 2, 2]);
        assert_close(y.as_slice::<f32>().unwrap(), &[3.75, 5.25, 9.75, 11.25, 6.875, 7.625, 12.75, 13.5]);
        let y = roi_align(16, out2(vec![]), &x44(), &rois, &[0, 0]).unwrap();
        assert_close(y.as_slice::<f32>().unwrap(), &[1.5625, 3.0, 7.3125, 8.75, 4.375, 5.125, 11.25, 12.0]);
    }

    #[test]
    fn max_mode_and_scale() {
        let attrs = out2(vec![("mode", Attr::String("max".into())), ("spatial_scale", Attr::Float(0.5))]);
        let y = roi_align(16, attrs, &x44(), &[0.0, 0.0, 6.0, 6.0], &[0]).unwrap();
        assert_close(y.as_slice::<f32>().unwrap(), &[2.5, 3.28125, 7.0, 7.65625]);
    }

    #[test]
    fn roi_align_rejects_bad_batch_index_and_shapes() {
        let e = roi_align(16, vec![], &x44(), &[0.0, 0.0, 1.0, 1.0], &[1]).unwrap_err();
        assert!(e.message.contains("batch index 1"), "{e}");
        assert!(roi_align(16, vec![], &x44(), &[0.0, 0.0, 1.0, 1.0], &[-1]).is_err());
        assert!(roi_align(16, vec![], &x44(), &[0.0, 0.0, 1.0, 1.0], &[0, 0]).is_err());
        assert!(roi_align(16, vec![], &x44(), &[0.0, f32::NAN, 1.0, 1.0], &[0]).is_err());
        let e = roi_align(16, vec![], &x44(), &[0.0, 0.0, 1e9, 1e9], &[0]).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::ResourceLimit, "{e}");
        assert!(build("RoiAlign", 16, vec![("mode", Attr::String("min".into()))], 1).is_err());
    }

    #[test]
    fn infers_roi_align_shape() {
        let op = build("RoiAlign", 16, out2(vec![]), 1).unwrap();
        let x = Fact::new(DType::F32, vec![Dim::Unknown, Dim::Known(256), Dim::Unknown, Dim::Unknown]);
        let rois = Fact::new(DType::F32, vec![Dim::Symbol("K".into()), Dim::Known(4)]);
        let idx = Fact::of_dtype(DType::I64);
        let out = op.infer(&[Some(&x), Some(&rois), Some(&idx)]).unwrap();
        let want = vec![Dim::Symbol("K".into()), Dim::Known(256), Dim::Known(2), Dim::Known(2)];
        assert_eq!(out[0].shape, Some(want));
    }
}
