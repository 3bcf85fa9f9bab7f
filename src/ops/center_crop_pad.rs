//! CenterCropPad (opset 18): crops or zero-pads the chosen axes to a target size, keeping the
//! content centered. An odd difference puts the extra element at the end, as the ONNX reference does.

use super::reshape::{const_ints, normalize_axes, numel, strides, with_capacity};
use super::slice::pad_fill;
use super::{input, BuildCtx, Op, Registry};
use crate::ir::tensor::checked_len;
use crate::ir::{Dim, Fact, Tensor};
use crate::{bail, dispatch_words, Result};

pub fn register(r: &mut Registry) {
    r.add("CenterCropPad", |ctx: &BuildCtx| Ok(Box::new(CenterCropPad { axes: ctx.attrs.ints("axes")? })));
}

#[derive(Debug)]
pub struct CenterCropPad {
    axes: Option<Vec<i64>>,
}

impl CenterCropPad {
    /// The target size of every axis of a rank-`rank` input (`None` for axes left alone).
    fn targets(&self, rank: usize, shape: &[i64]) -> Result<Vec<Option<usize>>> {
        let all: Vec<i64> = (0..rank as i64).collect();
        let axes = normalize_axes("CenterCropPad", self.axes.as_deref().unwrap_or(&all), rank)?;
        if shape.len() != axes.len() {
            bail!(Shape, "CenterCropPad: shape {shape:?} has {} entries for {} axes", shape.len(), axes.len());
        }
        let mut out = vec![None; rank];
        for (&a, &s) in axes.iter().zip(shape) {
            out[a] =
                Some(usize::try_from(s).map_err(|_| crate::err!(Shape, "CenterCropPad: target size {s} is negative"))?);
        }
        Ok(out)
    }
}

impl Op for CenterCropPad {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let Some(dims) = &x.shape else { return Ok(vec![Fact { dtype: x.dtype, shape: None, value: None }]) };
        let shape = match const_ints(Some(input(inputs, 1)?))? {
            Some(target) => {
                let t = self.targets(dims.len(), &target)?;
                dims.iter().zip(t).map(|(d, t)| t.map_or(d.clone(), Dim::Known)).collect()
            }
            None => vec![Dim::Unknown; dims.len()],
        };
        Ok(vec![Fact { dtype: x.dtype, shape: Some(shape), value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let targets = self.targets(x.rank(), &input(inputs, 1)?.to_i64_vec()?)?;
        let out_shape: Vec<usize> = x.shape().iter().zip(&targets).map(|(&d, t)| t.unwrap_or(d)).collect();
        let n = checked_len(&out_shape, x.dtype())?;
        if n == 0 {
            return Ok(vec![Tensor::zeros(x.dtype(), out_shape)?]);
        }
        let strides = strides(x.shape());
        let mut maps = Vec::with_capacity(x.rank());
        for (d, (&dim, &size)) in x.shape().iter().zip(&out_shape).enumerate() {
            // Output index o reads input index o + shift: a crop skips half the excess (rounded
            // down) at the start, a pad puts half the room (rounded down) before the data.
            let shift = if dim >= size { ((dim - size) / 2) as i128 } else { -(((size - dim) / 2) as i128) };
            let mut map = with_capacity(size)?;
            map.extend((0..size).map(|o| {
                let i = o as i128 + shift;
                (0..dim as i128).contains(&i).then(|| i as usize * strides[d])
            }));
            maps.push(map);
        }
        let block: Vec<usize> = (0..x.rank()).map(|d| numel(&out_shape[d + 1..])).collect();
        // Every dtype's zero (false, "") is the all-zero word.
        dispatch_words!(x.dtype(); W => {
            let mut out = with_capacity(n)?;
            pad_fill(x.as_words::<W>()?, &maps, &block, 0, &W::default(), &mut out);
            Ok(vec![Tensor::from_words(x.dtype(), out_shape, out)?])
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::{Attr, Tensor};
    use crate::ops::reshape::testing::{f32s, iota, run};

    fn crop_pad(x: &Tensor, shape: &[i64], axes: Option<&[i64]>) -> crate::Result<Tensor> {
        let attrs = axes.map(|a| vec![("axes", Attr::Ints(a.to_vec()))]).unwrap_or_default();
        run("CenterCropPad", 18, attrs, &[Some(x), Some(&Tensor::vector(shape.to_vec()))])
    }

    #[test]
    fn crops_and_pads_around_the_center() {
        // numpy / onnx.reference: arange(5) cropped to 2 keeps [1, 2]; padded to 8 is [0,0,0..4,0].
        assert_eq!(f32s(&crop_pad(&iota(&[5]), &[2], None).unwrap()), [1., 2.]);
        assert_eq!(f32s(&crop_pad(&iota(&[5]), &[3], None).unwrap()), [1., 2., 3.]);
        assert_eq!(f32s(&crop_pad(&iota(&[4]), &[1], None).unwrap()), [1.]);
        assert_eq!(f32s(&crop_pad(&iota(&[5]), &[8], None).unwrap()), [0., 0., 1., 2., 3., 4., 0., 0.]);
        assert_eq!(f32s(&crop_pad(&iota(&[2]), &[5], None).unwrap()), [0., 0., 1., 0., 0.]);
        // 2x3 -> crop axis 0 to 1 row, pad axis 1 to 4 columns (negative axes).
        let y = crop_pad(&iota(&[3, 3]), &[1, 4], Some(&[-2, -1])).unwrap();
        assert_eq!(y.shape(), &[1, 4]);
        assert_eq!(f32s(&y), [3., 4., 5., 0.]);
    }

    #[test]
    fn rejects_bad_shape_input() {
        assert!(crop_pad(&iota(&[3, 3]), &[1], None).unwrap_err().message.contains("has 1 entries"));
        assert!(crop_pad(&iota(&[3, 3]), &[1, -2], None).unwrap_err().message.contains("negative"));
        assert!(crop_pad(&iota(&[3, 3]), &[1], Some(&[2])).is_err());
    }
}
