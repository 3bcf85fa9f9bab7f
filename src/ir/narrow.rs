//! Narrow element types: bit layouts and conversions to/from f32.
//!
//! In memory every element takes one byte (the 4- and 2-bit types are packed only in files), held
//! by a newtype so that generic kernels cannot mistake the bits for a `u8` value. The float
//! formats follow ONNX's definitions (onnx.proto, the Cast operator's tables) and agree bit for
//! bit with `ml_dtypes`, which the ONNX reference implementation uses.

use std::cmp::Ordering;

/// How a small float format spends its top exponent code and its negative zero.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Specials {
    /// IEEE 754 style: the top exponent is infinity (mantissa 0) or NaN (float8e5m2).
    Ieee,
    /// No infinity; only S.1111.111 is NaN, the rest of the top exponent is finite (float8e4m3fn).
    NanAllOnes,
    /// "fnuz": no infinity, no negative zero; 0x80 is the only NaN (float8e4m3fnuz, float8e5m2fnuz).
    Fnuz,
    /// Neither infinity nor NaN: every code is a finite number (float4e2m1).
    FiniteOnly,
}

/// A sign-exponent-mantissa float format of at most 8 bits.
#[derive(Debug, Clone, Copy)]
struct Format {
    exp_bits: u32,
    man_bits: u32,
    bias: i32,
    specials: Specials,
}

const E4M3FN: Format = Format { exp_bits: 4, man_bits: 3, bias: 7, specials: Specials::NanAllOnes };
const E4M3FNUZ: Format = Format { exp_bits: 4, man_bits: 3, bias: 8, specials: Specials::Fnuz };
const E5M2: Format = Format { exp_bits: 5, man_bits: 2, bias: 15, specials: Specials::Ieee };
const E5M2FNUZ: Format = Format { exp_bits: 5, man_bits: 2, bias: 16, specials: Specials::Fnuz };
const E2M1: Format = Format { exp_bits: 2, man_bits: 1, bias: 1, specials: Specials::FiniteOnly };

/// 2^k as an f64, exactly, for k in f64's normal exponent range.
fn exp2i(k: i32) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

impl Format {
    fn sign_bit(self) -> u8 {
        1 << (self.exp_bits + self.man_bits)
    }

    fn man_mask(self) -> u8 {
        (1u8 << self.man_bits) - 1
    }

    fn top_exp(self) -> u8 {
        (1u8 << self.exp_bits) - 1
    }

    /// The code of the largest finite value, positive.
    fn max_code(self) -> u8 {
        match self.specials {
            Specials::Ieee => ((self.top_exp() - 1) << self.man_bits) | self.man_mask(),
            Specials::NanAllOnes => (self.top_exp() << self.man_bits) | (self.man_mask() - 1),
            Specials::Fnuz | Specials::FiniteOnly => (self.top_exp() << self.man_bits) | self.man_mask(),
        }
    }

    fn nan_code(self, negative: bool) -> u8 {
        let sign = if negative { self.sign_bit() } else { 0 };
        match self.specials {
            // The quiet NaN, as ml_dtypes writes it.
            Specials::Ieee => sign | (self.top_exp() << self.man_bits) | (1 << (self.man_bits - 1)),
            Specials::NanAllOnes => sign | (self.top_exp() << self.man_bits) | self.man_mask(),
            Specials::Fnuz => 0x80,
            // float4e2m1 has no NaN; ml_dtypes (and so the ONNX reference) turns NaN into a zero
            // with the opposite sign bit.
            Specials::FiniteOnly => {
                if negative {
                    0
                } else {
                    self.sign_bit()
                }
            }
        }
    }

    fn decode(self, bits: u8) -> f32 {
        let negative = bits & self.sign_bit() != 0;
        let exp = (bits >> self.man_bits) & self.top_exp();
        let man = bits & self.man_mask();
        let special = match self.specials {
            Specials::Ieee if exp == self.top_exp() => Some(if man == 0 { f32::INFINITY } else { f32::NAN }),
            Specials::NanAllOnes if exp == self.top_exp() && man == self.man_mask() => Some(f32::NAN),
            Specials::Fnuz if bits == 0x80 => Some(f32::NAN),
            _ => None,
        };
        let magnitude = special.unwrap_or_else(|| {
            let m = self.man_bits as i32;
            let value = if exp == 0 {
                f64::from(man) * exp2i(1 - self.bias - m)
            } else {
                f64::from(man | (1 << self.man_bits)) * exp2i(i32::from(exp) - self.bias - m)
            };
            value as f32
        });
        if negative {
            -magnitude
        } else {
            magnitude
        }
    }

    /// Rounds to nearest, ties to even. Out of range values (and infinities) become the largest
    /// finite value when `saturate`, otherwise infinity or NaN as the format has them; formats
    /// with neither always saturate.
    fn encode(self, v: f64, saturate: bool) -> u8 {
        let negative = v.is_sign_negative();
        if v.is_nan() {
            return self.nan_code(negative);
        }
        let sign = if negative { self.sign_bit() } else { 0 };
        let overflow = || {
            if saturate || self.specials == Specials::FiniteOnly {
                sign | self.max_code()
            } else if self.specials == Specials::Ieee {
                sign | (self.top_exp() << self.man_bits)
            } else {
                self.nan_code(negative)
            }
        };
        let a = v.abs();
        if a.is_infinite() {
            return overflow();
        }
        let m = self.man_bits as i32;
        let min_exp = 1 - self.bias;
        // f64 subnormals are far below half the smallest subnormal of any of these formats.
        let exp = ((a.to_bits() >> 52) as i32 - 1023).max(min_exp);
        let quantum = exp2i(exp - m);
        // Exact: dividing and multiplying by a power of two, and the quotient is below 2^54.
        let rounded = (a / quantum).round_ties_even() * quantum;
        if rounded > f64::from(self.decode(self.max_code())) {
            return overflow();
        }
        if rounded == 0.0 {
            return if self.specials == Specials::Fnuz { 0 } else { sign };
        }
        let exp = ((rounded.to_bits() >> 52) as i32 - 1023).max(min_exp);
        let scaled = (rounded / exp2i(exp - m)) as u32; // < 2^(m+1), exactly
        let code = if scaled < (1 << m) {
            scaled // subnormal: exponent field 0
        } else {
            (((exp + self.bias) as u32) << m) | (scaled - (1 << m))
        };
        sign | code as u8
    }
}

/// The narrow types, seen as their storage byte.
pub trait NarrowBits: Copy {
    /// Bits per element in packed form (8, 4 or 2).
    const BITS: u32;
    /// The element's code in the low `BITS` bits.
    fn to_bits(self) -> u8;
    /// The element with the code in the low `BITS` bits (higher bits are ignored).
    fn from_bits(bits: u8) -> Self;
}

macro_rules! narrow_float {
    ($($(#[$doc:meta])* $name:ident: $format:expr, $bits:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        #[repr(transparent)]
        pub struct $name(pub u8);

        // SAFETY: one u8 behind repr(transparent): no padding, and every bit pattern is a value.
        unsafe impl bytemuck::Zeroable for $name {}
        unsafe impl bytemuck::Pod for $name {}

        impl $name {
            pub fn to_f32(self) -> f32 {
                $format.decode(self.0)
            }
            /// From a wider float, rounding to nearest even; see [`Format::encode`] for `saturate`.
            pub fn from_f64(v: f64, saturate: bool) -> Self {
                $name($format.encode(v, saturate))
            }
            /// The largest finite value.
            pub fn max_value() -> Self {
                $name($format.max_code())
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.to_f32() == other.to_f32()
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                self.to_f32().partial_cmp(&other.to_f32())
            }
        }

        impl NarrowBits for $name {
            const BITS: u32 = $bits;
            fn to_bits(self) -> u8 {
                self.0
            }
            fn from_bits(bits: u8) -> Self {
                $name(bits & ((1u16 << $bits) - 1) as u8)
            }
        }
    )*};
}

narrow_float! {
    /// float8e4m3fn: 4 exponent bits (bias 7), 3 mantissa bits, NaN but no infinity; max 448.
    F8E4M3FN: E4M3FN, 8;
    /// float8e4m3fnuz: bias 8, no infinity, no negative zero (0x80 is NaN); max 240.
    F8E4M3FNUZ: E4M3FNUZ, 8;
    /// float8e5m2: IEEE-like with bias 15; max 57344.
    F8E5M2: E5M2, 8;
    /// float8e5m2fnuz: bias 16, no infinity, no negative zero (0x80 is NaN); max 57344.
    F8E5M2FNUZ: E5M2FNUZ, 8;
    /// float4e2m1: 2 exponent bits (bias 1), 1 mantissa bit, no infinity or NaN; max 6.
    F4E2M1: E2M1, 4;
}

/// How Cast rounds to float8e8m0, which holds only powers of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundMode {
    /// Away from zero: any fraction bumps the exponent.
    Up,
    /// Toward zero: the exponent of the input as it is.
    Down,
    /// To the nearer power of two, ties up.
    Nearest,
}

/// float8e8m0: an unsigned power of two 2^(e - 127) for e in 0..=254; 0xFF is NaN.
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd)]
#[repr(transparent)]
pub struct F8E8M0(pub u8);

// SAFETY: one u8 behind repr(transparent): no padding, and every bit pattern is a value.
unsafe impl bytemuck::Zeroable for F8E8M0 {}
unsafe impl bytemuck::Pod for F8E8M0 {}

impl F8E8M0 {
    pub fn to_f32(self) -> f32 {
        if self.0 == 0xFF {
            f32::NAN
        } else {
            exp2i(i32::from(self.0) - 127) as f32
        }
    }

    /// ONNX's `to_float8e8m0` (onnx/numpy_helper.py) on the float32 bits: the sign is ignored,
    /// NaN and infinity become NaN, and with `saturate` rounding never goes past 2^127.
    pub fn from_f32(v: f32, saturate: bool, mode: RoundMode) -> Self {
        let bits = v.to_bits();
        let exp = ((bits >> 23) & 0xFF) as u16;
        if exp == 0xFF {
            return F8E8M0(0xFF);
        }
        let round_up = match mode {
            RoundMode::Down => false,
            RoundMode::Up => bits & 0x7F_FFFF != 0,
            RoundMode::Nearest => {
                let guard = bits & 0x40_0000 != 0;
                let round = bits & 0x20_0000 != 0;
                let sticky = bits & 0x1F_FFFF != 0;
                guard && (round || sticky || exp > 0)
            }
        };
        let bump = round_up && !(saturate && exp == 0xFE);
        F8E8M0((exp + u16::from(bump)) as u8)
    }
}

impl NarrowBits for F8E8M0 {
    const BITS: u32 = 8;
    fn to_bits(self) -> u8 {
        self.0
    }
    fn from_bits(bits: u8) -> Self {
        F8E8M0(bits)
    }
}

/// Converts a float to an integer for a narrow integer type, as ONNX's 4-bit types note
/// (onnx/docs/technical/int4.md, "Cast") says: round to the nearest integer, ties to even; the
/// caller then keeps the low bits. NaN, infinities and values beyond 32 bits give `i32::MIN`
/// (low bits all zero), as onnxruntime's conversion does.
fn round_i32(v: f64) -> i64 {
    let r = v.round_ties_even();
    if (-2_147_483_648.0..2_147_483_648.0).contains(&r) {
        r as i64
    } else {
        i64::from(i32::MIN)
    }
}

macro_rules! narrow_int {
    ($($(#[$doc:meta])* $name:ident($inner:ty): $bits:literal, $signed:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(transparent)]
        pub struct $name(pub $inner);

        // SAFETY: one byte behind repr(transparent): no padding, and every bit pattern is a value.
        unsafe impl bytemuck::Zeroable for $name {}
        unsafe impl bytemuck::Pod for $name {}

        impl $name {
            pub const MIN: i64 = if $signed { -(1 << ($bits - 1)) } else { 0 };
            pub const MAX: i64 = if $signed { (1 << ($bits - 1)) - 1 } else { (1 << $bits) - 1 };

            /// The low bits of `v`, as a C cast to a narrower integer keeps them.
            pub fn wrapping(v: i64) -> Self {
                Self::from_bits(v as u8)
            }
            /// Rounds to nearest (ties to even), then wraps: out of range values are not clamped.
            pub fn from_f64(v: f64) -> Self {
                Self::wrapping(round_i32(v))
            }
            pub fn to_i64(self) -> i64 {
                // Read through the bits so that an out-of-range field still gives an in-range value.
                let bits = i64::from(self.to_bits());
                if $signed && bits >= 1 << ($bits - 1) { bits - (1 << $bits) } else { bits }
            }
        }

        impl NarrowBits for $name {
            const BITS: u32 = $bits;
            fn to_bits(self) -> u8 {
                (self.0 as u8) & ((1u8 << $bits) - 1)
            }
            fn from_bits(bits: u8) -> Self {
                let bits = bits & ((1u8 << $bits) - 1);
                let value = if $signed && bits >= 1 << ($bits - 1) { bits as i16 - (1 << $bits) } else { bits as i16 };
                $name(value as $inner)
            }
        }
    )*};
}

narrow_int! {
    /// uint4: 0..=15.
    U4(u8): 4, false;
    /// int4: -8..=7.
    I4(i8): 4, true;
    /// uint2: 0..=3.
    U2(u8): 2, false;
    /// int2: -2..=1.
    I2(i8): 2, true;
}

/// Unpacks `n` elements of `T::BITS` bits each from `bytes`, lowest bits first (ONNX's layout for
/// 4- and 2-bit types in raw_data, int32_data and external data). `None` if `bytes` is not exactly
/// the `ceil(n * BITS / 8)` bytes the elements take.
pub fn unpack<T: NarrowBits>(bytes: &[u8], n: usize) -> Option<Vec<T>> {
    let per_byte = (8 / T::BITS) as usize;
    if bytes.len() != n.div_ceil(per_byte) {
        return None;
    }
    let mask = ((1u16 << T::BITS) - 1) as u8;
    let mut out = crate::ir::limits::with_capacity(n).ok()?;
    out.extend(
        bytes
            .iter()
            .flat_map(|&b| (0..per_byte).map(move |k| T::from_bits((b >> (k as u32 * T::BITS)) & mask)))
            .take(n),
    );
    Some(out)
}

/// Packs elements `T::BITS` bits each, lowest bits first; a last partial byte is padded with zeros.
pub fn pack<T: NarrowBits>(values: &[T]) -> Vec<u8> {
    let per_byte = (8 / T::BITS) as usize;
    values
        .chunks(per_byte)
        .map(|chunk| chunk.iter().enumerate().fold(0u8, |b, (k, v)| b | (v.to_bits() << (k as u32 * T::BITS))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes decoded, against `np.arange(256, dtype=np.uint8).view(t).astype(np.float32)`.
    #[test]
    fn float8_codes_decode() {
        let cases: [(u8, f32, f32, f32, f32); 9] = [
            // code, e4m3fn, e4m3fnuz, e5m2, e5m2fnuz
            (0x00, 0.0, 0.0, 0.0, 0.0),
            (0x01, 0.001953125, 0.0009765625, 1.5258789e-05, 7.6293945e-06),
            (0x08, 0.015625, 0.0078125, 0.00012207031, 6.1035156e-05),
            (0x38, 1.0, 0.5, 0.5, 0.25),
            (0x3C, 1.5, 0.75, 1.0, 0.5),
            (0x7B, 352.0, 176.0, 57344.0, 28672.0),
            (0x7E, 448.0, 224.0, f32::NAN, 49152.0),
            (0x7F, f32::NAN, 240.0, f32::NAN, 57344.0),
            (0xC0, -2.0, -1.0, -2.0, -1.0),
        ];
        let same = |a: f32, b: f32| (a.is_nan() && b.is_nan()) || a == b;
        for (code, a, b, c, d) in cases {
            assert!(same(F8E4M3FN(code).to_f32(), a), "{code:#x}");
            assert!(same(F8E4M3FNUZ(code).to_f32(), b), "{code:#x}");
            assert!(same(F8E5M2(code).to_f32(), c), "{code:#x}");
            assert!(same(F8E5M2FNUZ(code).to_f32(), d), "{code:#x}");
        }
        assert_eq!(F8E5M2(0x7C).to_f32(), f32::INFINITY);
        assert_eq!(F8E5M2(0xFC).to_f32(), f32::NEG_INFINITY);
        assert!(F8E4M3FNUZ(0x80).to_f32().is_nan() && F8E5M2FNUZ(0x80).to_f32().is_nan());
        assert!(F8E4M3FN(0x80).to_f32().is_sign_negative());
        // float4e2m1: codes 0..16
        let want = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0];
        let got: Vec<f32> = (0..16).map(|c| F4E2M1(c).to_f32()).collect();
        assert_eq!(got, want);
    }

    /// `np.array(x, np.float32).astype(t).view(np.uint8)` (ml_dtypes 0.6: no saturation), and
    /// `onnx.numpy_helper.saturate_cast` for the saturating rows.
    #[test]
    fn float8_encode_matches_ml_dtypes() {
        let x = [
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e6,
            -1e6,
            -0.0,
            -1e-7,
            1e-7,
            0.47892547f32 as f64,
            464.0,
            465.0,
            -480.0,
            6.0,
            6.5,
            7.0,
            10.0,
            0.25,
            0.75,
            0.2f32 as f64,
        ];
        type Row = [u8; 20];
        let e4m3fn: Row = [
            0x7f, 0xff, 0x7f, 0xff, 0x7f, 0xff, 0x80, 0x80, 0x0, 0x2f, 0x7e, 0x7f, 0xff, 0x4c, 0x4d, 0x4e, 0x52, 0x28,
            0x34, 0x25,
        ];
        let e4m3fnuz: Row = [
            0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x0, 0x0, 0x0, 0x37, 0x80, 0x80, 0x80, 0x54, 0x55, 0x56, 0x5a, 0x30,
            0x3c, 0x2d,
        ];
        let e5m2: Row = [
            0x7e, 0xfe, 0x7c, 0xfc, 0x7c, 0xfc, 0x80, 0x80, 0x0, 0x38, 0x5f, 0x5f, 0xe0, 0x46, 0x46, 0x47, 0x49, 0x34,
            0x3a, 0x32,
        ];
        let e5m2fnuz: Row = [
            0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x0, 0x0, 0x0, 0x3c, 0x63, 0x63, 0xe4, 0x4a, 0x4a, 0x4b, 0x4d, 0x38,
            0x3e, 0x36,
        ];
        let e2m1: Row =
            [0x8, 0x0, 0x7, 0xf, 0x7, 0xf, 0x8, 0x8, 0x0, 0x1, 0x7, 0x7, 0xf, 0x7, 0x7, 0x7, 0x7, 0x0, 0x2, 0x0];
        for (i, &v) in x.iter().enumerate() {
            assert_eq!(F8E4M3FN::from_f64(v, false).0, e4m3fn[i], "e4m3fn {v}");
            assert_eq!(F8E4M3FNUZ::from_f64(v, false).0, e4m3fnuz[i], "e4m3fnuz {v}");
            assert_eq!(F8E5M2::from_f64(v, false).0, e5m2[i], "e5m2 {v}");
            assert_eq!(F8E5M2FNUZ::from_f64(v, false).0, e5m2fnuz[i], "e5m2fnuz {v}");
            assert_eq!(F4E2M1::from_f64(v, false).0, e2m1[i], "e2m1 {v}");
            assert_eq!(F4E2M1::from_f64(v, true).0, e2m1[i], "e2m1 saturating {v}");
        }
        // saturate_cast: infinities and overflow clamp to the largest finite value, NaN stays NaN.
        // e4m3fn: [inf, -inf, 1e6, 465, nan] -> [0x7e, 0xfe, 0x7e, 0x7e, 0x7f]
        let sat = [f64::INFINITY, f64::NEG_INFINITY, 1e6, 465.0, f64::NAN];
        let bits = |f: fn(f64, bool) -> u8| sat.map(|v| f(v, true));
        assert_eq!(bits(|v, s| F8E4M3FN::from_f64(v, s).0), [0x7e, 0xfe, 0x7e, 0x7e, 0x7f]);
        assert_eq!(bits(|v, s| F8E4M3FNUZ::from_f64(v, s).0), [0x7f, 0xff, 0x7f, 0x7f, 0x80]);
        assert_eq!(bits(|v, s| F8E5M2::from_f64(v, s).0), [0x7b, 0xfb, 0x7b, 0x5f, 0x7e]);
        assert_eq!(bits(|v, s| F8E5M2FNUZ::from_f64(v, s).0), [0x7f, 0xff, 0x7f, 0x63, 0x80]);
        assert_eq!(F8E4M3FN::max_value().to_f32(), 448.0);
        assert_eq!(F8E5M2FNUZ::max_value().to_f32(), 57344.0);
    }

    #[test]
    fn float8e8m0_follows_onnx_to_float8e8m0() {
        // onnx.numpy_helper.to_float8e8m0(x, saturate, mode).view(np.uint8)
        let x = [0.0f32, 0.124, 0.25, 0.5, 1.1, 2.0, 4.0, 8.0, 1.5, 3.0, f32::INFINITY, f32::NAN, 3e38, -2.0];
        let up_sat = [0x00, 0x7c, 0x7d, 0x7e, 0x80, 0x80, 0x81, 0x82, 0x80, 0x81, 0xff, 0xff, 0xfe, 0x80];
        let up_nosat = [0x00, 0x7c, 0x7d, 0x7e, 0x80, 0x80, 0x81, 0x82, 0x80, 0x81, 0xff, 0xff, 0xff, 0x80];
        let down = [0x00, 0x7b, 0x7d, 0x7e, 0x7f, 0x80, 0x81, 0x82, 0x7f, 0x80, 0xff, 0xff, 0xfe, 0x80];
        let nearest = [0x00, 0x7c, 0x7d, 0x7e, 0x7f, 0x80, 0x81, 0x82, 0x80, 0x81, 0xff, 0xff, 0xfe, 0x80];
        for (i, &v) in x.iter().enumerate() {
            assert_eq!(F8E8M0::from_f32(v, true, RoundMode::Up).0, up_sat[i], "up {v}");
            assert_eq!(F8E8M0::from_f32(v, false, RoundMode::Up).0, up_nosat[i], "up nosat {v}");
            assert_eq!(F8E8M0::from_f32(v, true, RoundMode::Down).0, down[i], "down {v}");
            assert_eq!(F8E8M0::from_f32(v, true, RoundMode::Nearest).0, nearest[i], "nearest {v}");
        }
        // np.array([0xff, 0x7f, 0x80, 0x00, 0x01], np.uint8).view(float8_e8m0fnu).astype(np.float32)
        assert!(F8E8M0(0xFF).to_f32().is_nan());
        let got = [0x7f, 0x80, 0x00, 0x01].map(|c| F8E8M0(c).to_f32());
        // 5.8774718e-39 and 1.1754944e-38 are 2^-127 (a float32 subnormal) and 2^-126.
        assert_eq!(got, [1.0, 2.0, f32::from_bits(0x0040_0000), f32::MIN_POSITIVE]);
    }

    /// Float to narrow int rounds to nearest even and keeps the low bits (ONNX's int4.md). Not
    /// ml_dtypes, which truncates, and then wraps (0.6) or gives 0 out of range (0.7).
    #[test]
    fn narrow_ints_round_to_even_then_wrap() {
        // In range and integral: what every reference agrees on (ONNX's test_cast_FLOAT_to_INT4
        // inputs np.arange(-9, 16) as ml_dtypes 0.6 and onnxruntime 1.32 convert them).
        let got: Vec<i64> = (-9..16).map(|v| I4::from_f64(v as f64).to_i64()).collect();
        let want = [7, -8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1];
        assert_eq!(got, want);
        let got: Vec<i64> = (-9..16).map(|v| U4::from_f64(v as f64).to_i64()).collect();
        let want = [7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        assert_eq!(got, want);
        assert_eq!((-3..4).map(|v| I2::from_f64(v as f64).to_i64()).collect::<Vec<_>>(), [1, -2, -1, 0, 1, -2, -1]);
        assert_eq!((-3..4).map(|v| U2::from_f64(v as f64).to_i64()).collect::<Vec<_>>(), [1, 2, 3, 0, 1, 2, 3]);
        // Out of range and fractional (no ties), as onnxruntime 1.32's Cast gives them: rounded, then
        // wrapped, never clamped; NaN, infinities and values beyond 32 bits give 0.
        let (nan, inf) = (f64::NAN, f64::INFINITY);
        let x = [-1e10, -20.0, -9.0, -8.6, -8.0, 7.6, 7.9, 8.0, 15.6, 16.0, 100.0, nan, inf, -inf];
        assert_eq!(x.map(|v| I4::from_f64(v).to_i64()), [0, -4, 7, 7, -8, -8, -8, -8, 0, 0, 4, 0, 0, 0]);
        assert_eq!(x.map(|v| U4::from_f64(v).to_i64()), [0, 12, 7, 7, 8, 8, 8, 8, 0, 0, 4, 0, 0, 0]);
        assert_eq!(x.map(|v| I2::from_f64(v).to_i64()), [0, 0, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(x.map(|v| U2::from_f64(v).to_i64()), [0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        // Ties go to even (the spec); onnxruntime 1.32 rounds them away from zero instead
        // (-8.5 -> 7, -2.5 -> -3, 0.5 -> 1, 2.5 -> 3, 8.5 -> -7).
        let ties = [-8.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 7.5, 8.5];
        assert_eq!(ties.map(|v| I4::from_f64(v).to_i64()), [-8, -2, -2, 0, 0, 2, 2, 4, -8, -8]);
        // Integers wrap: np.array([3, 5, -7, 300], np.int32).astype(uint4 / int2), and onnxruntime.
        assert_eq!([3, 5, -7, 300].map(|v| U4::wrapping(v).to_i64()), [3, 5, 9, 12]);
        assert_eq!([3, 5, -7, 300].map(|v| I2::wrapping(v).to_i64()), [-1, 1, 1, 0]);
        assert_eq!((I4::MIN, I4::MAX, U2::MIN, U2::MAX, I2::MIN, I2::MAX), (-8, 7, 0, 3, -2, 1));
    }

    #[test]
    fn packing_puts_the_first_element_in_the_low_bits() {
        // onnx.numpy_helper._pack_4bitx2(np.array([1, -2, 7], ml_dtypes.int4)) == [0xe1, 0x07]
        let v = [I4(1), I4(-2), I4(7)];
        assert_eq!(pack(&v), [0xe1, 0x07]);
        assert_eq!(unpack::<I4>(&[0xe1, 0x07], 3).unwrap(), v);
        // _pack_2bitx4(np.array([1, 2, 3, 0, 3], ml_dtypes.uint2)) == [0x39, 0x03]
        let v = [U2(1), U2(2), U2(3), U2(0), U2(3)];
        assert_eq!(pack(&v), [0x39, 0x03]);
        assert_eq!(unpack::<U2>(&[0x39, 0x03], 5).unwrap(), v);
        assert_eq!(unpack::<I2>(&[0x39, 0x03], 5).unwrap(), [I2(1), I2(-2), I2(-1), I2(0), I2(-1)]);
        // Too few or too many bytes for the count.
        assert!(unpack::<U4>(&[0x12], 3).is_none());
        assert!(unpack::<U4>(&[0x12, 0x34], 2).is_none());
        assert_eq!(unpack::<F8E5M2>(&[0x3c], 1).unwrap()[0].to_f32(), 1.0);
        assert_eq!(unpack::<U4>(&[], 0).unwrap(), []);
    }
}
