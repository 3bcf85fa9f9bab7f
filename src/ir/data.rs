//! What one graph value holds at run time: a tensor, a sequence of tensors, or an optional value.
//! Most ops see tensors only; sequence and optional ops (and the control-flow ops that pass such
//! values through) work on [`Data`].

use super::dtype::DType;
use super::tensor::Tensor;
use crate::{bail, Result};
use std::borrow::Cow;
use std::fmt;

/// What one graph value holds at run time.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Tensor(Tensor),
    Sequence(Sequence),
    /// An optional value: `None` is an empty optional.
    Optional(Option<Box<Data>>),
}

/// An ordered list of tensors of one element type. An empty sequence still knows that type.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    elem_dtype: DType,
    items: Vec<Tensor>,
}

impl Sequence {
    pub fn empty(elem_dtype: DType) -> Sequence {
        Sequence { elem_dtype, items: vec![] }
    }

    /// A sequence of `items`, which must all be `elem_dtype` tensors.
    pub fn new(elem_dtype: DType, items: Vec<Tensor>) -> Result<Sequence> {
        if let Some((i, t)) = items.iter().enumerate().find(|(_, t)| t.dtype() != elem_dtype) {
            bail!(InvalidInput, "sequence element {i} is {}, the sequence holds {elem_dtype}", t.dtype());
        }
        Ok(Sequence { elem_dtype, items })
    }

    pub fn elem_dtype(&self) -> DType {
        self.elem_dtype
    }

    pub fn items(&self) -> &[Tensor] {
        &self.items
    }

    pub fn into_items(self) -> Vec<Tensor> {
        self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The item at `position`, which may count from the end (-1 is the last).
    pub fn get(&self, position: i64) -> Result<&Tensor> {
        let i = self.index(position, false)?;
        Ok(&self.items[i])
    }

    /// Inserts `t` before `position` (which may count from the end); `None` appends.
    pub fn insert(&mut self, position: Option<i64>, t: Tensor) -> Result<()> {
        if t.dtype() != self.elem_dtype {
            bail!(InvalidInput, "cannot insert a {} tensor into a sequence of {}", t.dtype(), self.elem_dtype);
        }
        let i = match position {
            Some(p) => self.index(p, true)?,
            None => self.items.len(),
        };
        self.items.insert(i, t);
        Ok(())
    }

    /// Removes the item at `position` (which may count from the end); `None` removes the last.
    pub fn remove(&mut self, position: Option<i64>) -> Result<Tensor> {
        let i = match position {
            Some(p) => self.index(p, false)?,
            None if self.items.is_empty() => bail!(InvalidInput, "cannot erase from an empty sequence"),
            None => self.items.len() - 1,
        };
        Ok(self.items.remove(i))
    }

    /// `position` as an index: in `-len..len`, or in `-len..=len` when inserting (`len` appends).
    fn index(&self, position: i64, inserting: bool) -> Result<usize> {
        let len = self.items.len() as i64;
        let last = if inserting { len } else { len - 1 };
        if position < -len || position > last {
            bail!(InvalidInput, "position {position} is out of range for a sequence of length {len}");
        }
        Ok((if position < 0 { position + len } else { position }) as usize)
    }
}

/// The kind of value a graph value is declared to hold; the element dtype lives in its fact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ValueKind {
    #[default]
    Tensor,
    Sequence,
    Optional(Box<ValueKind>),
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueKind::Tensor => f.write_str("tensor"),
            ValueKind::Sequence => f.write_str("sequence"),
            ValueKind::Optional(inner) => write!(f, "optional({inner})"),
        }
    }
}

impl Data {
    /// This value with every tensor in it copied out of lent memory ([`Tensor::detached`]).
    pub fn detached(self) -> Result<Data> {
        Ok(match self {
            Data::Tensor(t) => Data::Tensor(t.detached()?),
            Data::Sequence(s) => {
                let dtype = s.elem_dtype();
                let items = s.into_items().into_iter().map(Tensor::detached).collect::<Result<_>>()?;
                Data::Sequence(Sequence { elem_dtype: dtype, items })
            }
            Data::Optional(Some(d)) => Data::Optional(Some(Box::new(d.detached()?))),
            Data::Optional(None) => Data::Optional(None),
        })
    }

    pub fn as_tensor(&self) -> Result<&Tensor> {
        match self {
            Data::Tensor(t) => Ok(t),
            other => bail!(InvalidInput, "expected a tensor, got {}", other.describe()),
        }
    }

    pub fn into_tensor(self) -> Result<Tensor> {
        match self {
            Data::Tensor(t) => Ok(t),
            other => bail!(InvalidInput, "expected a tensor, got {}", other.describe()),
        }
    }

    pub fn as_sequence(&self) -> Result<&Sequence> {
        match self {
            Data::Sequence(s) => Ok(s),
            other => bail!(InvalidInput, "expected a sequence, got {}", other.describe()),
        }
    }

    pub fn into_sequence(self) -> Result<Sequence> {
        match self {
            Data::Sequence(s) => Ok(s),
            other => bail!(InvalidInput, "expected a sequence, got {}", other.describe()),
        }
    }

    /// The type in ONNX's notation: `tensor(float32)`, `seq(tensor(int64))`, `optional(...)`. An
    /// empty optional does not know its element type and says `optional(?)`.
    pub fn type_name(&self) -> String {
        match self {
            Data::Tensor(t) => format!("tensor({})", t.dtype()),
            Data::Sequence(s) => format!("seq(tensor({}))", s.elem_dtype),
            Data::Optional(Some(d)) => format!("optional({})", d.type_name()),
            Data::Optional(None) => "optional(?)".to_string(),
        }
    }

    /// For messages: "a tensor of int64", "a sequence of float32", "an empty optional".
    pub fn describe(&self) -> String {
        match self {
            Data::Tensor(t) => format!("a tensor of {}", t.dtype()),
            Data::Sequence(s) => format!("a sequence of {}", s.elem_dtype),
            Data::Optional(Some(d)) => format!("an optional holding {}", d.describe()),
            Data::Optional(None) => "an empty optional".to_string(),
        }
    }

    /// Whether this value may be fed where `kind` is declared: the same kind, where an optional's
    /// contents match the declared element kind.
    pub fn matches(&self, kind: &ValueKind) -> bool {
        match (self, kind) {
            (Data::Tensor(_), ValueKind::Tensor) | (Data::Sequence(_), ValueKind::Sequence) => true,
            (Data::Optional(None), ValueKind::Optional(_)) => true,
            (Data::Optional(Some(d)), ValueKind::Optional(inner)) => d.matches(inner),
            _ => false,
        }
    }

    /// The element dtype: a tensor's dtype, a sequence's element dtype, what an optional holds.
    pub fn elem_dtype(&self) -> Option<DType> {
        match self {
            Data::Tensor(t) => Some(t.dtype()),
            Data::Sequence(s) => Some(s.elem_dtype),
            Data::Optional(d) => d.as_ref()?.elem_dtype(),
        }
    }
}

impl From<Tensor> for Data {
    fn from(t: Tensor) -> Data {
        Data::Tensor(t)
    }
}

impl From<Sequence> for Data {
    fn from(s: Sequence) -> Data {
        Data::Sequence(s)
    }
}

/// A borrowed view of one value, so that tensors that live elsewhere (a graph constant, a caller's
/// input) reach ops without being copied into a [`Data`].
#[derive(Debug, Clone, Copy)]
pub enum DataRef<'a> {
    Tensor(&'a Tensor),
    Data(&'a Data),
}

impl<'a> DataRef<'a> {
    /// The tensor, if this value is one.
    pub fn tensor(self) -> Option<&'a Tensor> {
        match self {
            DataRef::Tensor(t) | DataRef::Data(Data::Tensor(t)) => Some(t),
            DataRef::Data(_) => None,
        }
    }

    /// The value as data, copying a borrowed tensor.
    pub fn to_data(self) -> Cow<'a, Data> {
        match self {
            DataRef::Tensor(t) => Cow::Owned(Data::Tensor(t.clone())),
            DataRef::Data(d) => Cow::Borrowed(d),
        }
    }

    pub fn to_owned(self) -> Data {
        self.to_data().into_owned()
    }

    pub fn describe(self) -> String {
        match self {
            DataRef::Tensor(t) => format!("a tensor of {}", t.dtype()),
            DataRef::Data(d) => d.describe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn accessors_name_what_they_got() {
        let seq = Data::Sequence(Sequence::empty(DType::F32));
        let e = seq.as_tensor().unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::InvalidInput, "expected a tensor, got a sequence of float32")
        );
        assert_eq!(seq.type_name(), "seq(tensor(float32))");
        let opt = Data::Optional(Some(Box::new(Data::Tensor(Tensor::scalar(1i64)))));
        assert_eq!(opt.type_name(), "optional(tensor(int64))");
        assert_eq!(
            opt.clone().into_sequence().unwrap_err().message,
            "expected a sequence, got an optional holding a tensor of int64"
        );
        assert!(opt.matches(&ValueKind::Optional(Box::new(ValueKind::Tensor))));
        assert!(!opt.matches(&ValueKind::Optional(Box::new(ValueKind::Sequence))));
        assert!(Data::Optional(None).matches(&ValueKind::Optional(Box::new(ValueKind::Sequence))));
        assert!(!seq.matches(&ValueKind::Tensor));
    }

    #[test]
    fn positions_are_bounds_checked() {
        let mut s = Sequence::new(DType::I64, vec![Tensor::scalar(1i64), Tensor::scalar(2i64)]).unwrap();
        assert_eq!(s.get(-1).unwrap(), &Tensor::scalar(2i64));
        assert_eq!(s.get(2).unwrap_err().message, "position 2 is out of range for a sequence of length 2");
        assert_eq!(s.get(-3).unwrap_err().message, "position -3 is out of range for a sequence of length 2");
        s.insert(Some(2), Tensor::scalar(3i64)).unwrap();
        s.insert(Some(-3), Tensor::scalar(0i64)).unwrap();
        assert_eq!(s.items().iter().map(|t| t.as_slice::<i64>().unwrap()[0]).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert!(s.insert(Some(5), Tensor::scalar(9i64)).is_err());
        assert_eq!(
            s.insert(None, Tensor::scalar(1f32)).unwrap_err().message,
            "cannot insert a float32 tensor into a sequence of int64"
        );
        assert_eq!(s.remove(None).unwrap(), Tensor::scalar(3i64));
        let mut empty = Sequence::empty(DType::F32);
        assert_eq!(empty.remove(None).unwrap_err().message, "cannot erase from an empty sequence");
        assert!(Sequence::new(DType::F32, vec![Tensor::scalar(1i64)]).is_err());
    }
}
