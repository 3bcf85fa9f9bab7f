//! Requantization: int32 sums to uint8/int8 as the QLinear reference ops (and onnxruntime's
//! MLAS) do it, `saturate(round_half_even((acc + bias) as f32 * multiplier) + zero_point)`,
//! with the multiplier `x_scale * w_scale / y_scale` in f32.

use crate::ir::DType;

/// The output's zero point and the range it saturates to.
#[derive(Clone, Copy, Debug)]
pub struct Requant {
    pub zero_point: i32,
    pub lo: i32,
    pub hi: i32,
}

impl Requant {
    /// For a uint8 or int8 output; `None` for other types.
    pub fn new(dtype: DType, zero_point: i32) -> Option<Requant> {
        let (lo, hi) = match dtype {
            DType::U8 => (0, 255),
            DType::I8 => (-128, 127),
            _ => return None,
        };
        Some(Requant { zero_point, lo, hi })
    }
}

/// `out[i] = saturate(round_half_even((acc[i] + bias) as f32 * mult) + zero_point)`, stored as
/// a byte (an int8 as its two's complement). `mult` must be finite: the product then rounds
/// and clamps as the reference's (an overflow to infinity saturates), with no NaN to handle.
/// Inlined into the GEMM's epilogue (and the depthwise kernel's), which compile it for each
/// instruction set's vectors.
#[inline(always)]
pub fn requantize_lanes(acc: &[i32], bias: i32, mult: f32, q: Requant, out: &mut [u8]) {
    // Clamped before the zero point is added: the bounds are integers, so this is the
    // reference's clamp after it, and the value fits an i32 on the way.
    let (lo, hi) = ((q.lo - q.zero_point) as f32, (q.hi - q.zero_point) as f32);
    for (d, &a) in out.iter_mut().zip(acc) {
        let v = (a.wrapping_add(bias) as f32 * mult).round_ties_even().max(lo).min(hi);
        *d = (v as i32 + q.zero_point) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_ties_to_even_and_saturates() {
        let q = Requant::new(DType::U8, 10).unwrap();
        // 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0, -1.5 -> -2, then + 10; far values saturate.
        let acc = [1, 3, 5, -1, -3, 1000, -1000, i32::MAX];
        let mut out = [0u8; 8];
        requantize_lanes(&acc, 0, 0.5, q, &mut out);
        assert_eq!(out, [10, 12, 12, 10, 8, 255, 0, 255]);
        let q = Requant::new(DType::I8, -3).unwrap();
        let mut out = [0u8; 3];
        // The bias is added in wrapping i32 before the scaling.
        requantize_lanes(&[100, -300, 7], 1, 1.0, q, &mut out);
        assert_eq!(out.map(|v| v as i8), [98, -128, 5]);
    }
}
