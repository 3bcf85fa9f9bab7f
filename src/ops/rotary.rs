//! RotaryEmbedding (opset 23): rotates pairs of each head's first `rotary_embedding_dim` features
//! by position-dependent angles given as cos/sin caches. Input is `[batch, heads, seq, head]` or
//! `[batch, seq, heads*head]` (with `num_heads`); pairs are `(i, i + dim/2)`, or adjacent
//! `(2i, 2i+1)` when `interleaved`.

use super::real::{from_real, to_real, wants_f64};
use super::{input, opt_input, same_as_input, BuildCtx, Op, Registry};
use crate::ir::{Fact, Tensor};
use crate::{bail, Result};

pub fn register(r: &mut Registry) {
    r.add("RotaryEmbedding", build);
}

#[derive(Debug)]
pub struct RotaryEmbedding {
    interleaved: bool,
    /// 0: the whole head.
    rotary_dim: usize,
    num_heads: usize,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    if ctx.opset < 23 {
        return Err(ctx.unsupported_version());
    }
    let a = ctx.attrs;
    let non_negative = |name: &str| -> Result<usize> {
        let v = a.int_or(name, 0)?;
        if v < 0 {
            bail!(InvalidModel, "RotaryEmbedding {name} must not be negative, got {v}");
        }
        Ok(v as usize)
    };
    Ok(Box::new(RotaryEmbedding {
        interleaved: a.int_or("interleaved", 0)? != 0,
        rotary_dim: non_negative("rotary_embedding_dim")?,
        num_heads: non_negative("num_heads")?,
    }))
}

impl Op for RotaryEmbedding {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        same_as_input(inputs)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, cos_t, sin_t) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        wants_f64("RotaryEmbedding", x.dtype())?;
        // Element (b, s, h, k) of x is at b*bs + s*ss + h*hs + k.
        let (batch, seq, heads, head, strides) = match *x.shape() {
            [b, h, s, d] => (b, s, h, d, [h * s * d, d, s * d]),
            [b, s, hidden] => {
                let h = self.num_heads;
                if h == 0 || hidden % h != 0 {
                    bail!(
                        Shape,
                        "RotaryEmbedding needs num_heads dividing the hidden size {hidden} of 3-D input, got {h}"
                    );
                }
                (b, s, h, hidden / h, [s * hidden, hidden, hidden / h])
            }
            _ => bail!(Shape, "RotaryEmbedding input must be 3-D or 4-D, got shape {:?}", x.shape()),
        };
        let dim = if self.rotary_dim == 0 { head } else { self.rotary_dim };
        if dim > head || dim % 2 != 0 {
            bail!(Shape, "RotaryEmbedding rotary_embedding_dim {dim} must be even and at most the head size {head}");
        }
        let half = dim / 2;
        let (cos, sin) = (to_real::<f64>(cos_t)?, to_real::<f64>(sin_t)?);
        if cos_t.shape() != sin_t.shape() || cos_t.shape().last() != Some(&half) {
            bail!(Shape, "RotaryEmbedding caches {:?} and {:?} must both end in {half}", cos_t.shape(), sin_t.shape());
        }
        // The cache row for (b, s): indexed by position_ids, or the caches are [batch, seq, half].
        let rows = cos.len() / half.max(1);
        let row_of: Box<dyn Fn(usize, usize) -> Result<usize>> = match opt_input(inputs, 3) {
            Some(ids) => {
                let ids = ids.to_i64_vec()?;
                if ids.len() != batch * seq {
                    bail!(Shape, "RotaryEmbedding position_ids has {} entries for [{batch}, {seq}]", ids.len());
                }
                Box::new(move |b, s| match usize::try_from(ids[b * seq + s]) {
                    Ok(p) if p < rows => Ok(p),
                    _ => bail!(
                        Runtime,
                        "RotaryEmbedding position id {} is out of range for {rows} cache rows",
                        ids[b * seq + s]
                    ),
                })
            }
            None if rows == batch * seq => Box::new(move |b, s| Ok(b * seq + s)),
            None => bail!(
                Shape,
                "RotaryEmbedding caches without position_ids must be [{batch}, {seq}, {half}], got {:?}",
                cos_t.shape()
            ),
        };
        let src = to_real::<f64>(x)?;
        let mut out = src.to_vec();
        for b in 0..batch {
            for s in 0..seq {
                let row = row_of(b, s)? * half;
                let (c, sn) = (&cos[row..row + half], &sin[row..row + half]);
                for h in 0..heads {
                    let base = b * strides[0] + s * strides[1] + h * strides[2];
                    for i in 0..half {
                        let (i1, i2) = if self.interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
                        let (x1, x2) = (src[base + i1], src[base + i2]);
                        out[base + i1] = c[i] * x1 - sn[i] * x2;
                        out[base + i2] = sn[i] * x1 + c[i] * x2;
                    }
                }
            }
        }
        Ok(vec![from_real(x.dtype(), x.shape().to_vec(), out)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::ops::activation::test_util::{assert_close, build};

    // One head of 4 features at position 1 with angle 90°: (x0, x2) and (x1, x3) each rotate by
    // a quarter turn, so (1, 2, 3, 4) becomes (-3, -4, 1, 2); interleaved pairs (x0, x1) and
    // (x2, x3) give (-2, 1, -4, 3).
    #[test]
    fn quarter_turn() {
        let x = Tensor::new(vec![1, 1, 1, 4], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let cos = Tensor::new(vec![2, 2], vec![1.0f32, 1.0, 0.0, 0.0]).unwrap();
        let sin = Tensor::new(vec![2, 2], vec![0.0f32, 0.0, 1.0, 1.0]).unwrap();
        let ids = Tensor::new(vec![1, 1], vec![1i64]).unwrap();
        let op = build("RotaryEmbedding", 23, vec![], 1).unwrap();
        let y = op.eval(&[Some(&x), Some(&cos), Some(&sin), Some(&ids)]).unwrap();
        assert_close(y[0].as_slice::<f32>().unwrap(), &[-3.0, -4.0, 1.0, 2.0]);
        let op = build("RotaryEmbedding", 23, vec![("interleaved", Attr::Int(1))], 1).unwrap();
        let y = op.eval(&[Some(&x), Some(&cos), Some(&sin), Some(&ids)]).unwrap();
        assert_close(y[0].as_slice::<f32>().unwrap(), &[-2.0, 1.0, -4.0, 3.0]);
        let bad = Tensor::new(vec![1, 1], vec![5i64]).unwrap();
        assert!(op.eval(&[Some(&x), Some(&cos), Some(&sin), Some(&bad)]).is_err());
    }
}
