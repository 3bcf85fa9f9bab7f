//! What is known about a value before running: its dtype, its shape (static, symbolic or unknown
//! dims), and for constants its value. Shape inference works on these facts.

use super::dtype::DType;
use super::tensor::Tensor;
use crate::{bail, Result};
use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(usize),
    /// A named dimension such as `batch`: unknown size, but equal wherever the name appears.
    Symbol(String),
    Unknown,
}

impl Dim {
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Symbol(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// Shape, dtype and (for constants) value of a graph value, as far as they are known.
#[derive(Debug, Clone, Default)]
pub struct Fact {
    pub dtype: Option<DType>,
    /// `None` when even the rank is unknown.
    pub shape: Option<Vec<Dim>>,
    pub value: Option<Arc<Tensor>>,
}

impl Fact {
    pub fn unknown() -> Fact {
        Fact::default()
    }

    pub fn new(dtype: DType, shape: Vec<Dim>) -> Fact {
        Fact { dtype: Some(dtype), shape: Some(shape), value: None }
    }

    /// A fact with known dtype and fully known shape.
    pub fn concrete(dtype: DType, shape: &[usize]) -> Fact {
        Fact::new(dtype, shape.iter().map(|&d| Dim::Known(d)).collect())
    }

    pub fn of_dtype(dtype: DType) -> Fact {
        Fact { dtype: Some(dtype), shape: None, value: None }
    }

    pub fn constant(t: Arc<Tensor>) -> Fact {
        Fact { dtype: Some(t.dtype()), shape: Some(t.shape().iter().map(|&d| Dim::Known(d)).collect()), value: Some(t) }
    }

    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(|s| s.len())
    }

    /// The shape when every dim is known.
    pub fn concrete_shape(&self) -> Option<Vec<usize>> {
        self.shape.as_ref()?.iter().map(|d| d.known()).collect()
    }

    pub fn with_shape(mut self, shape: Vec<Dim>) -> Fact {
        self.shape = Some(shape);
        self
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dtype {
            Some(d) => write!(f, "{d}")?,
            None => f.write_str("?")?,
        }
        match &self.shape {
            Some(s) => {
                let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
                write!(f, "[{}]", dims.join(","))
            }
            None => f.write_str("[...]"),
        }
    }
}

/// Numpy-style broadcast of two concrete shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => bail!(Shape, "shapes {a:?} and {b:?} do not broadcast"),
        });
    }
    Ok(out)
}

/// Numpy-style broadcast of two symbolic shapes. A dim that is 1 on one side takes the other's;
/// two different symbols give an unknown dim (either could be 1 at run time).
pub fn broadcast_dims(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>> {
    let rank = a.len().max(b.len());
    let one = Dim::Known(1);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = if i + a.len() >= rank { &a[i + a.len() - rank] } else { &one };
        let db = if i + b.len() >= rank { &b[i + b.len() - rank] } else { &one };
        out.push(match (da, db) {
            (x, y) if x == y => x.clone(),
            (Dim::Known(1), y) => y.clone(),
            (x, Dim::Known(1)) => x.clone(),
            (Dim::Known(x), Dim::Known(y)) => {
                bail!(Shape, "dims {x} and {y} do not broadcast (shapes {a:?} and {b:?})")
            }
            // A known dim other than 1 must be the result if the other side is symbolic.
            (Dim::Known(x), _) | (_, Dim::Known(x)) => Dim::Known(*x),
            _ => Dim::Unknown,
        });
    }
    Ok(out)
}

/// Broadcast of several facts' shapes; `None` if any rank is unknown.
pub fn broadcast_facts(facts: &[&Fact]) -> Result<Option<Vec<Dim>>> {
    let mut acc: Vec<Dim> = vec![];
    for f in facts {
        match &f.shape {
            Some(s) => acc = broadcast_dims(&acc, s)?,
            None => return Ok(None),
        }
    }
    Ok(Some(acc))
}

/// Resolves a possibly negative axis against a rank, with a clear error if it is out of range.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        bail!(Shape, "axis {axis} is out of range for rank {rank}");
    }
    Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
}

/// Row-major strides of a shape.
pub fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_like_numpy() {
        assert_eq!(broadcast_shapes(&[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
        assert_eq!(broadcast_shapes(&[], &[5]).unwrap(), vec![5]);
        assert!(broadcast_shapes(&[2], &[3]).is_err());
    }

    #[test]
    fn broadcasts_symbols() {
        let n = Dim::Symbol("N".into());
        let out = broadcast_dims(&[n.clone(), Dim::Known(1)], &[Dim::Known(4)]).unwrap();
        assert_eq!(out, vec![n, Dim::Known(4)]);
    }

    #[test]
    fn normalizes_axes() {
        assert_eq!(normalize_axis(-1, 3).unwrap(), 2);
        assert!(normalize_axis(3, 3).is_err());
        assert!(normalize_axis(-4, 3).is_err());
    }
}
