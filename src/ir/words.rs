//! Tensor elements seen as plain words of their size, for kernels that only move elements (gather,
//! transpose, concat, pad, ...): such a kernel compiles once per element width (`u8`, `u16`, `u32`,
//! `u64`, and `String`) instead of once for each of the 24 dtypes, which kept the shared library
//! over its size budget. Only bits move, so the results are those of the typed kernel.

use super::{DType, Elem, TensorData};

/// A word type: the storage of every dtype of its width, seen without its meaning.
pub trait Word: Elem {
    /// The elements of `data` as words, when its dtype has this width.
    fn view(data: &TensorData) -> Option<&[Self]>;
    /// Typed storage of `dtype` holding these words; `None` if `dtype` has another width.
    fn typed(dtype: DType, words: Vec<Self>) -> Option<TensorData>;
}

macro_rules! impl_word {
    ($w:ty: $($v:ident),*) => {
        impl Word for $w {
            fn view(data: &TensorData) -> Option<&[Self]> {
                match data {
                    $(TensorData::$v(v) => Some(bytemuck::cast_slice(v)),)*
                    _ => None,
                }
            }
            fn typed(dtype: DType, words: Vec<Self>) -> Option<TensorData> {
                match dtype {
                    $(DType::$v => Some(TensorData::$v(bytemuck::allocation::cast_vec(words))),)*
                    // bool is one byte but not every byte is a bool: words moved from a bool
                    // tensor are 0 or 1, and the test keeps it safe for any other.
                    DType::Bool if <$w>::DTYPE == DType::U8 => {
                        Some(TensorData::Bool(bytemuck::cast_vec::<$w, u8>(words).into_iter().map(|b| b != 0).collect()))
                    }
                    _ => None,
                }
            }
        }
    };
}

impl_word!(u8: U8, I8, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, U4, I4, F4E2M1, F8E8M0, U2, I2);
impl_word!(u16: U16, I16, F16, BF16);
impl_word!(u32: U32, I32, F32);
impl_word!(u64: U64, I64, F64);

impl Word for String {
    fn view(data: &TensorData) -> Option<&[Self]> {
        String::slice(data)
    }
    fn typed(dtype: DType, words: Vec<Self>) -> Option<TensorData> {
        (dtype == DType::String).then_some(TensorData::String(words))
    }
}

/// Runs `body` with `W` bound to the [`Word`] type of `dtype`: `u8`, `u16`, `u32`, `u64` (by
/// element size) or `String`. Kernels read with [`Tensor::as_words`](super::Tensor::as_words)
/// and build results with [`Tensor::from_words`](super::Tensor::from_words).
#[macro_export]
macro_rules! dispatch_words {
    ($dt:expr; $W:ident => $body:expr) => {
        match $dt.size() {
            1 => {
                #[allow(dead_code)]
                type $W = u8;
                $body
            }
            2 => {
                #[allow(dead_code)]
                type $W = u16;
                $body
            }
            4 => {
                #[allow(dead_code)]
                type $W = u32;
                $body
            }
            8 => {
                #[allow(dead_code)]
                type $W = u64;
                $body
            }
            _ => {
                #[allow(dead_code)]
                type $W = String;
                $body
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::ir::{DType, Tensor};
    use half::f16;

    #[test]
    fn words_move_the_bits_of_every_dtype() {
        let x = Tensor::vector(vec![f32::NAN, -0.0, 1.5]);
        let words = x.as_words::<u32>().unwrap();
        assert_eq!(words[1], 0x8000_0000);
        let back = Tensor::from_words(DType::F32, vec![3], words.iter().rev().copied().collect()).unwrap();
        let v = back.as_slice::<f32>().unwrap();
        assert!(v[0] == 1.5 && v[1].to_bits() == 0x8000_0000 && v[2].is_nan());
        let h = Tensor::vector(vec![f16::from_f32(2.0)]);
        assert_eq!(h.as_words::<u16>().unwrap(), &[0x4000]);
        let b = Tensor::from_words(DType::Bool, vec![2], vec![1u8, 0]).unwrap();
        assert_eq!(b.as_slice::<bool>().unwrap(), &[true, false]);
        let s = Tensor::vector(vec!["a".to_string()]);
        assert_eq!(s.as_words::<String>().unwrap(), &["a".to_string()]);
        // A word type of another width is an error, not a reinterpretation.
        assert!(x.as_words::<u64>().is_err());
        assert!(Tensor::from_words(DType::F64, vec![1], vec![0u32]).is_err());
    }
}
