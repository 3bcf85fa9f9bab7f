//! Elementwise activations ([`Activation`], described in `ops::fused`) applied in place: the fused epilogue of GEMM and convolution, and the
//! kernels of the standalone activation ops. exp and erf are polynomial approximations accurate
//! to a few ulp (well inside the conformance tolerances), written branch-free so the compiler
//! vectorises them; each slice function is compiled once per instruction set and chosen by
//! [`isa`](super::isa::isa).

use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;

pub use crate::ops::fused::Activation;

/// The vectorised forms of [`Activation`].
pub trait ActivationExt {
    fn apply(self, x: &mut [f32]);
    fn eval(self, v: f32) -> f32;
    /// [`ActivationExt::eval`] with its polynomials in fused multiply-adds where `FMA` (only
    /// for callers compiled with FMA: else `mul_add` is a libm call); without, the same bits.
    fn eval_with<const FMA: bool>(self, v: f32) -> f32;
}

impl ActivationExt for Activation {
    /// Applies the activation to every element of `x`.
    fn apply(self, x: &mut [f32]) {
        if self == Activation::None || x.is_empty() {
            return;
        }
        match isa() {
            // SAFETY: isa() only names instruction sets this CPU supports.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { apply_avx512(self, x) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { apply_avx2(self, x) },
            _ => apply_portable(self, x),
        }
    }

    /// The activation of one value (the arithmetic of [`Activation::apply`] without FMA: the
    /// instruction sets with it round their polynomials once a step, within an ulp or two).
    #[inline(always)]
    fn eval(self, v: f32) -> f32 {
        self.eval_with::<false>(v)
    }

    #[inline(always)]
    fn eval_with<const FMA: bool>(self, v: f32) -> f32 {
        match self {
            Activation::None => v,
            Activation::Relu => v.max(0.0),
            Activation::Clip(lo, hi) => v.max(lo).min(hi),
            Activation::LeakyRelu(a) => {
                if v < 0.0 {
                    v * a
                } else {
                    v
                }
            }
            Activation::Sigmoid => sigmoid::<FMA>(v),
            Activation::Silu => v * sigmoid::<FMA>(v),
            Activation::HardSigmoid(a, b) => (a * v + b).clamp(0.0, 1.0),
            Activation::HardSwish => v * (v * (1.0 / 6.0) + 0.5).clamp(0.0, 1.0),
            Activation::Tanh => tanh::<FMA>(v),
            Activation::Gelu => 0.5 * v * (1.0 + erf::<FMA>(v * std::f32::consts::FRAC_1_SQRT_2)),
            Activation::GeluTanh => {
                let inner = 0.797_884_6 * (v + 0.044_715 * v * v * v);
                0.5 * v * (1.0 + tanh::<FMA>(inner))
            }
            Activation::Erf => erf::<FMA>(v),
            Activation::Sqrt => v.sqrt(),
            // exp saturates below f32::MAX; past ln(f32::MAX) the true value is infinite.
            Activation::Exp => {
                if v > 88.722_84 {
                    f32::INFINITY
                } else {
                    exp_with::<FMA>(v)
                }
            }
        }
    }
}

#[inline(always)]
fn apply_generic<const FMA: bool>(act: Activation, x: &mut [f32]) {
    // One loop per variant, so each inner loop is a straight vectorisable body.
    macro_rules! each {
        ($a:expr) => {
            for v in x.iter_mut() {
                *v = $a.eval_with::<FMA>(*v);
            }
        };
    }
    match act {
        Activation::None => {}
        Activation::Relu => each!(Activation::Relu),
        Activation::Clip(lo, hi) => each!(Activation::Clip(lo, hi)),
        Activation::LeakyRelu(a) => each!(Activation::LeakyRelu(a)),
        Activation::Sigmoid => each!(Activation::Sigmoid),
        Activation::Silu => each!(Activation::Silu),
        Activation::HardSigmoid(a, b) => each!(Activation::HardSigmoid(a, b)),
        Activation::HardSwish => each!(Activation::HardSwish),
        Activation::Tanh => each!(Activation::Tanh),
        Activation::Gelu => each!(Activation::Gelu),
        Activation::GeluTanh => each!(Activation::GeluTanh),
        Activation::Erf => each!(Activation::Erf),
        Activation::Sqrt => each!(Activation::Sqrt),
        Activation::Exp => each!(Activation::Exp),
    }
}

fn apply_portable(act: Activation, x: &mut [f32]) {
    apply_generic::<false>(act, x)
}

/// # Safety
/// Needs AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn apply_avx512(act: Activation, x: &mut [f32]) {
    apply_generic::<true>(act, x)
}

/// # Safety
/// Needs AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn apply_avx2(act: Activation, x: &mut [f32]) {
    apply_generic::<true>(act, x)
}

/// e^x for f32 (Cephes' expf polynomial after reducing by powers of two); relative error about
/// 2e-7, saturating below -87.3 and above 88.7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp_with::<false>(x)
}

/// `a * b + c`, fused where `FMA` (callers compiled with FMA only: else a libm call); unfused,
/// the bits of the plain expression.
#[inline(always)]
pub(super) fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// e^(x - n ln2) by Cephes' expf polynomial, for a whole `n` near x / ln2: the part of e^x left
/// once the power of two is taken out. Steps fused where `FMA`.
#[inline(always)]
pub(super) fn exp_reduced<const FMA: bool>(x: f32, n: f32) -> f32 {
    // x - n ln2 in two parts for precision.
    let r = fmadd::<FMA>(n, -0.693_359_4, x);
    let r = fmadd::<FMA>(n, 2.121_944_4e-4, r);
    let p = 1.987_569_1e-4_f32;
    let p = fmadd::<FMA>(p, r, 1.398_199_9e-3);
    let p = fmadd::<FMA>(p, r, 8.333_452e-3);
    let p = fmadd::<FMA>(p, r, 4.166_579_6e-2);
    let p = fmadd::<FMA>(p, r, 1.666_666_5e-1);
    let p = fmadd::<FMA>(p, r, 5e-1);
    fmadd::<FMA>(p * r, r, r) + 1.0
}

/// [`exp`], its steps in fused multiply-adds where `FMA` (half the instructions of the
/// polynomial; Gelu's erf is mostly this).
#[inline(always)]
fn exp_with<const FMA: bool>(x: f32) -> f32 {
    let x = x.clamp(-87.336_54, 88.722_83);
    let n = fmadd::<FMA>(x, std::f32::consts::LOG2_E, 0.5).floor();
    let e = exp_reduced::<FMA>(x, n);
    // 2^n built in the exponent bits, as 2^(n-1) * 2 so that n = 128 stays finite.
    // n is a whole number in [-126, 128]: adding 1.5 * 2^23 puts it in the low mantissa bits, an
    // integer conversion that stays in vector lanes (`n as i32` saturates, lane by lane in
    // scalar code: it made Softmax and Erf several times slower).
    let whole = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000) as i32;
    let bits = ((whole + 126).clamp(0, 254) as u32) << 23;
    e * f32::from_bits(bits) * 2.0
}

/// The lowest input the sigmoid takes as it is: below it 1 / (1 + e^-x) falls under f32's least
/// normal number (1.2e-38), and every denormal result or product costs the CPU a microcode
/// assist (a YOLOv8 stem conv whose inputs to SiLU reach -500 ran 5x slower than with small
/// ones). Lower inputs give sigmoid(-87) = 1.6e-38 instead: zero to any tolerance.
const SIGMOID_LOWEST: f32 = -87.0;

#[inline(always)]
fn sigmoid<const FMA: bool>(x: f32) -> f32 {
    // A NaN stays (the comparison is false for it).
    let x = if x < SIGMOID_LOWEST { SIGMOID_LOWEST } else { x };
    1.0 / (1.0 + exp_with::<FMA>(-x))
}

/// tanh through e^{-2|x|}, keeping the sign; exact to ~2 ulp near 0 by the x - x^3/3 branch-free
/// blend below |x| < 0.004.
#[inline(always)]
fn tanh<const FMA: bool>(x: f32) -> f32 {
    let a = x.abs();
    let e = exp_with::<FMA>(-2.0 * a);
    let t = (1.0 - e) / (1.0 + e);
    let small = a * (1.0 - a * a * (1.0 / 3.0));
    let t = if a < 0.004 { small } else { t };
    t.copysign(x)
}

/// erf(x), Abramowitz and Stegun 7.1.26 (absolute error under 1.5e-7, 3.5e-7 with rounding).
#[inline(always)]
fn erf<const FMA: bool>(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / fmadd::<FMA>(0.327_591_1, a, 1.0);
    let y = fmadd::<FMA>(t, 1.061_405_4, -1.453_152_1);
    let y = fmadd::<FMA>(t, y, 1.421_413_8);
    let y = fmadd::<FMA>(t, y, -0.284_496_72);
    let y = fmadd::<FMA>(t, y, 0.254_829_6);
    let r = 1.0 - t * y * exp_with::<FMA>(-a * a);
    r.copysign(x)
}

/// Whether the AVX-512 kernels compute `act` in registers as they store their sums
/// ([`avx512::apply`]); any other is applied by a pass over the output after.
pub fn in_registers(act: Activation) -> bool {
    piecewise(act) || matches!(act, Activation::Sigmoid | Activation::Silu)
}

/// Whether `act` is one of the activations made of a few min, max and multiplies
/// ([`avx512::apply_piecewise`]): the depthwise and pointwise kernels apply only these in
/// registers, as the exponential's code in their store loops cost their tiles registers
/// (MobileNetV2's depthwise layers 1.42-1.49 -> 1.82-1.84 ms with Sigmoid and SiLU there too).
pub fn piecewise(act: Activation) -> bool {
    matches!(act, Activation::None | Activation::Relu | Activation::Clip(..) | Activation::HardSwish)
}

/// Activations in AVX-512 registers, for kernels that apply them as they store their tiles:
/// the same arithmetic as [`ActivationExt::eval`] (unfused), operation for operation, so the
/// results are bit for bit those of `eval`; [`ActivationExt::apply`] on FMA machines rounds its
/// polynomials once a step and may differ in the last bit or two.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use super::Activation;
    use std::arch::x86_64::*;

    /// `act` of every lane of `v`, for the activations [`in_registers`](super::in_registers)
    /// names (any other comes back unchanged, for the caller to apply afterwards).
    ///
    /// # Safety
    /// Needs AVX-512F.
    #[inline(always)]
    pub unsafe fn apply(act: Activation, v: __m512) -> __m512 {
        match act {
            Activation::Sigmoid => unsafe { sigmoid(v) },
            Activation::Silu => _mm512_mul_ps(v, unsafe { sigmoid(v) }),
            _ => unsafe { apply_piecewise(act, v) },
        }
    }

    /// `act` of every lane of `v`, for the activations [`piecewise`](super::piecewise) names
    /// (any other comes back unchanged).
    ///
    /// # Safety
    /// Needs AVX-512F.
    #[inline(always)]
    pub unsafe fn apply_piecewise(act: Activation, v: __m512) -> __m512 {
        // max/min return their second operand where either is NaN: the constant goes first
        // where f32's methods keep a NaN, second where they drop it.
        match act {
            Activation::Relu => _mm512_max_ps(v, _mm512_setzero_ps()),
            Activation::Clip(lo, hi) => _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(lo)), _mm512_set1_ps(hi)),
            Activation::HardSwish => {
                let gate = _mm512_add_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.0 / 6.0)), _mm512_set1_ps(0.5));
                // clamp(gate, 0, 1) keeps a NaN gate: min/max with the NaN as second operand.
                let gate = _mm512_max_ps(_mm512_setzero_ps(), _mm512_min_ps(_mm512_set1_ps(1.0), gate));
                _mm512_mul_ps(v, gate)
            }
            _ => v,
        }
    }

    /// [`super::sigmoid`] lane by lane.
    ///
    /// # Safety
    /// Needs AVX-512F.
    #[inline(always)]
    pub unsafe fn sigmoid(v: __m512) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        // The NaN as the second operand: it stays, as in the scalar sigmoid.
        let v = _mm512_max_ps(_mm512_set1_ps(super::SIGMOID_LOWEST), v);
        let neg = _mm512_sub_ps(_mm512_setzero_ps(), v);
        _mm512_div_ps(one, _mm512_add_ps(one, unsafe { exp(neg) }))
    }

    /// [`super::exp`] lane by lane (without its saturation to infinity, as there).
    ///
    /// # Safety
    /// Needs AVX-512F.
    #[inline(always)]
    pub unsafe fn exp(x: __m512) -> __m512 {
        let s = _mm512_set1_ps;
        let (add, mul, sub) = (_mm512_add_ps, _mm512_mul_ps, _mm512_sub_ps);
        // f32::clamp keeps a NaN: the NaN as the second operand of both.
        let x = _mm512_max_ps(s(-87.336_54), _mm512_min_ps(s(88.722_83), x));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(add(
            mul(x, s(std::f32::consts::LOG2_E)),
            s(0.5),
        ));
        let r = add(sub(x, mul(n, s(0.693_359_4))), mul(n, s(2.121_944_4e-4)));
        let mut p = s(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5e-1] {
            p = add(mul(p, r), s(c));
        }
        let e = add(add(mul(mul(p, r), r), r), s(1.0));
        let whole = _mm512_sub_epi32(_mm512_castps_si512(add(n, s(12_582_912.0))), _mm512_set1_epi32(0x4B40_0000));
        let biased = _mm512_min_epi32(
            _mm512_max_epi32(_mm512_add_epi32(whole, _mm512_set1_epi32(126)), _mm512_setzero_si512()),
            _mm512_set1_epi32(254),
        );
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased));
        mul(mul(e, scale), s(2.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f32, want: f64, tol: f64) -> bool {
        ((got as f64) - want).abs() <= tol * (1.0 + want.abs())
    }

    #[test]
    fn approximations_match_libm() {
        let mut x = -30.0f32;
        while x < 30.0 {
            let xd = x as f64;
            assert!(close(exp(x), xd.exp(), 1e-6), "exp({x}) = {} vs {}", exp(x), xd.exp());
            assert!(close(exp_with::<true>(x), xd.exp(), 1e-6), "fused exp({x})");
            for t in [tanh::<false>(x), tanh::<true>(x)] {
                assert!(close(t, xd.tanh(), 1e-6), "tanh({x}) = {t}");
            }
            for s in [sigmoid::<false>(x), sigmoid::<true>(x)] {
                assert!(close(s, 1.0 / (1.0 + (-xd).exp()), 1e-6), "sigmoid({x}) = {s}");
            }
            x += 0.013;
        }
        for x in [-4.0f32, -1.0, -0.3, -1e-3, 0.0, 1e-5, 0.5, 2.0, 5.0] {
            let want = libm_erf(x as f64);
            for got in [erf::<false>(x), erf::<true>(x)] {
                assert!((got as f64 - want).abs() < 3e-7, "erf({x}) = {got} vs {want}");
            }
        }
        // Over a fine grid, both roundings stay within A&S 7.1.26's bound plus a few ulp.
        for i in 0..4000 {
            let x = (i as f32 - 2000.0) * 0.0025;
            let want = libm_erf(x as f64);
            for got in [erf::<false>(x), erf::<true>(x)] {
                assert!((got as f64 - want).abs() < 4e-7, "erf({x}) = {got} vs {want}");
            }
        }
        assert!(exp(-100.0) < 1.2e-38);
        assert!(exp(100.0) > 3e38);
    }

    /// erf by its Taylor series (|x| <= 5 converges fine in f64).
    fn libm_erf(x: f64) -> f64 {
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    /// Sigmoid and SiLU give no denormal results (each one costs the CPU a microcode assist),
    /// whether applied one value at a time or over a slice.
    #[test]
    fn sigmoids_far_below_zero_are_not_denormal() {
        let xs = [-87.0f32, -87.2, -87.5, -88.0, -90.0, -103.0, -150.0, -500.0, -1e30];
        for act in [Activation::Sigmoid, Activation::Silu] {
            let mut applied = xs;
            act.apply(&mut applied);
            for (&x, a) in xs.iter().zip(applied) {
                let y = act.eval(x);
                assert!(y.is_normal() && a.is_normal(), "{act:?}({x}) = {y} one by one, {a} over a slice");
                assert!(y.abs() < 1e-30 * x.abs().max(1.0), "{act:?}({x}) = {y}: about zero");
            }
        }
    }

    /// The register forms give exactly the scalar results, saturation and NaN included.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn registers_give_the_scalar_result_bit_for_bit() {
        use std::arch::x86_64::*;
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut xs: Vec<f32> = (0..4001).map(|i| (i as f32 - 2000.0) * 0.0537).collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 88.72, -87.33]);
        xs.resize(xs.len().next_multiple_of(16), 0.5);
        let acts = [
            Activation::None,
            Activation::Relu,
            Activation::Clip(-0.5, 6.0),
            Activation::Sigmoid,
            Activation::Silu,
            Activation::HardSwish,
        ];
        for act in acts {
            assert!(in_registers(act));
            for chunk in xs.chunks_exact(16) {
                let mut got = [0f32; 16];
                // SAFETY: AVX-512F was detected above; both pointers hold 16 floats.
                unsafe { _mm512_storeu_ps(got.as_mut_ptr(), avx512::apply(act, _mm512_loadu_ps(chunk.as_ptr()))) };
                for (&x, g) in chunk.iter().zip(got) {
                    let w = act.eval(x);
                    assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "{act:?}({x}): {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn every_isa_gives_the_scalar_result() {
        let acts = [
            Activation::Relu,
            Activation::Clip(0.0, 6.0),
            Activation::LeakyRelu(0.1),
            Activation::Sigmoid,
            Activation::Silu,
            Activation::HardSigmoid(0.2, 0.5),
            Activation::HardSwish,
            Activation::Tanh,
            Activation::Gelu,
            Activation::GeluTanh,
            Activation::Erf,
            Activation::Exp,
        ];
        let xs: Vec<f32> = (0..301).map(|i| (i as f32 - 150.0) * 0.07).collect();
        for act in acts {
            let want: Vec<f32> = xs.iter().map(|&v| act.eval(v)).collect();
            let mut got = xs.clone();
            act.apply(&mut got);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "{act:?}: {g} vs {w}");
            }
        }
    }
}
