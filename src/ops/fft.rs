//! The discrete Fourier transform engine behind DFT and STFT: an iterative radix-2 FFT for
//! power-of-two lengths, a direct transform from a twiddle table for short other lengths, and
//! Bluestein's chirp-z algorithm (a convolution done with power-of-two FFTs) for long other
//! lengths. Everything runs in f64 whatever the tensor type.

use crate::ir::tensor::try_vec;
use crate::Result;
use std::f64::consts::PI;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Complex {
    pub re: f64,
    pub im: f64,
}

impl Complex {
    pub const ZERO: Complex = Complex { re: 0.0, im: 0.0 };

    pub fn new(re: f64, im: f64) -> Complex {
        Complex { re, im }
    }

    /// e^(i·angle).
    fn unit(angle: f64) -> Complex {
        Complex { re: angle.cos(), im: angle.sin() }
    }

    pub fn conj(self) -> Complex {
        Complex { re: self.re, im: -self.im }
    }

    fn add(self, o: Complex) -> Complex {
        Complex { re: self.re + o.re, im: self.im + o.im }
    }

    fn sub(self, o: Complex) -> Complex {
        Complex { re: self.re - o.re, im: self.im - o.im }
    }

    fn mul(self, o: Complex) -> Complex {
        Complex { re: self.re * o.re - self.im * o.im, im: self.re * o.im + self.im * o.re }
    }

    fn scale(self, s: f64) -> Complex {
        Complex { re: self.re * s, im: self.im * s }
    }
}

/// Below this length a non-power-of-two transform is done directly: n² multiply-adds are cheaper
/// there than Bluestein's three FFTs of at least twice the size, and slightly more accurate.
const DIRECT_MAX: usize = 32;

/// A transform of one length and direction, planned once and applied to many lanes.
#[derive(Debug)]
pub struct Fft {
    n: usize,
    plan: Plan,
}

#[derive(Debug)]
enum Plan {
    Radix2(Radix2),
    /// `twiddles[k] = e^(∓2πik/n)`; output j sums `x[k] · twiddles[(j·k) mod n]`.
    Direct {
        twiddles: Vec<Complex>,
    },
    Bluestein(Bluestein),
}

impl Fft {
    /// Plans the unnormalized transform `X[j] = Σ x[k] e^(∓2πijk/n)`: minus sign forward, plus
    /// sign when `inverse` (the caller divides by n if it wants the normalized inverse).
    pub fn new(n: usize, inverse: bool) -> Result<Fft> {
        let sign = if inverse { 1.0 } else { -1.0 };
        let plan = if n.is_power_of_two() || n == 0 {
            Plan::Radix2(Radix2::new(n, sign)?)
        } else if n <= DIRECT_MAX {
            let mut twiddles = try_vec(n, Complex::ZERO)?;
            for (k, t) in twiddles.iter_mut().enumerate() {
                *t = Complex::unit(sign * 2.0 * PI * k as f64 / n as f64);
            }
            Plan::Direct { twiddles }
        } else {
            Plan::Bluestein(Bluestein::new(n, sign)?)
        };
        Ok(Fft { n, plan })
    }

    /// Transforms `data` (of the planned length) in place; `scratch` is reused between calls.
    pub fn run(&self, data: &mut [Complex], scratch: &mut Vec<Complex>) -> Result<()> {
        debug_assert_eq!(data.len(), self.n);
        match &self.plan {
            Plan::Radix2(r) => r.run(data),
            Plan::Direct { twiddles } => {
                scratch.clear();
                scratch.extend_from_slice(data);
                let n = self.n;
                for (j, out) in data.iter_mut().enumerate() {
                    let mut acc = Complex::ZERO;
                    for (k, &x) in scratch.iter().enumerate() {
                        acc = acc.add(x.mul(twiddles[(j * k) % n]));
                    }
                    *out = acc;
                }
            }
            Plan::Bluestein(b) => b.run(data, scratch)?,
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Radix2 {
    n: usize,
    /// `e^(±2πik/n)` for k < n/2: the twiddles of the last stage; stage with span s uses every
    /// (n/s)-th one.
    twiddles: Vec<Complex>,
}

impl Radix2 {
    fn new(n: usize, sign: f64) -> Result<Radix2> {
        let mut twiddles = try_vec(n / 2, Complex::ZERO)?;
        for (k, t) in twiddles.iter_mut().enumerate() {
            *t = Complex::unit(sign * 2.0 * PI * k as f64 / n as f64);
        }
        Ok(Radix2 { n, twiddles })
    }

    fn run(&self, data: &mut [Complex]) {
        let n = self.n;
        if n <= 1 {
            return;
        }
        let bits = n.trailing_zeros();
        for i in 0..n {
            let j = i.reverse_bits() >> (usize::BITS - bits);
            if j > i {
                data.swap(i, j);
            }
        }
        let mut span = 2;
        while span <= n {
            let half = span / 2;
            let stride = n / span;
            for block in data.chunks_exact_mut(span) {
                let (lo, hi) = block.split_at_mut(half);
                for (k, (a, b)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
                    let t = b.mul(self.twiddles[k * stride]);
                    *b = a.sub(t);
                    *a = a.add(t);
                }
            }
            span *= 2;
        }
    }
}

/// Bluestein: with `w[k] = e^(∓πik²/n)`, `X[j] = w[j] · Σ (x[k] w[k]) · conj(w[j-k])`, a
/// convolution that a power-of-two FFT of length `m >= 2n - 1` computes.
#[derive(Debug)]
struct Bluestein {
    n: usize,
    chirp: Vec<Complex>,
    /// FFT of the zero-padded, wrapped `conj(w)`, scaled by 1/m for the inverse to come.
    kernel: Vec<Complex>,
    forward: Radix2,
    backward: Radix2,
}

impl Bluestein {
    fn new(n: usize, sign: f64) -> Result<Bluestein> {
        let m = (2 * n - 1).next_power_of_two();
        let mut chirp = try_vec(n, Complex::ZERO)?;
        // k² mod 2n keeps the angle small, so large k lose no precision.
        let two_n = 2 * n as u128;
        for (k, c) in chirp.iter_mut().enumerate() {
            let k2 = (k as u128 * k as u128) % two_n;
            *c = Complex::unit(sign * PI * k2 as f64 / n as f64);
        }
        let forward = Radix2::new(m, -1.0)?;
        let backward = Radix2::new(m, 1.0)?;
        let mut kernel = try_vec(m, Complex::ZERO)?;
        let scale = 1.0 / m as f64;
        kernel[0] = chirp[0].conj().scale(scale);
        for k in 1..n {
            let c = chirp[k].conj().scale(scale);
            kernel[k] = c;
            kernel[m - k] = c;
        }
        forward.run(&mut kernel);
        Ok(Bluestein { n, chirp, kernel, forward, backward })
    }

    fn run(&self, data: &mut [Complex], scratch: &mut Vec<Complex>) -> Result<()> {
        let m = self.kernel.len();
        scratch.clear();
        crate::ir::limits::check_alloc(m, std::mem::size_of::<Complex>(), "Bluestein FFT scratch")?;
        scratch.try_reserve(m).map_err(|_| crate::err!(ResourceLimit, "cannot allocate {m} elements"))?;
        scratch.extend(data.iter().zip(&self.chirp).map(|(&x, &w)| x.mul(w)));
        scratch.resize(m, Complex::ZERO);
        self.forward.run(scratch);
        for (s, &k) in scratch.iter_mut().zip(&self.kernel) {
            *s = s.mul(k);
        }
        self.backward.run(scratch);
        for (j, out) in data.iter_mut().enumerate().take(self.n) {
            *out = scratch[j].mul(self.chirp[j]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook sum, as the independent check.
    fn naive(x: &[Complex], inverse: bool) -> Vec<Complex> {
        let n = x.len();
        let sign = if inverse { 1.0 } else { -1.0 };
        (0..n)
            .map(|j| {
                x.iter().enumerate().fold(Complex::ZERO, |acc, (k, &v)| {
                    acc.add(v.mul(Complex::unit(sign * 2.0 * PI * ((j * k) % n) as f64 / n as f64)))
                })
            })
            .collect()
    }

    fn signal(n: usize) -> Vec<Complex> {
        (0..n).map(|k| Complex::new((k as f64 * 0.37).sin() + 0.1 * k as f64, (k as f64 * 1.3).cos())).collect()
    }

    #[test]
    fn every_plan_matches_the_definition() {
        for n in [1, 2, 3, 8, 10, 31, 64, 33, 100, 257] {
            for inverse in [false, true] {
                let x = signal(n);
                let mut got = x.clone();
                Fft::new(n, inverse).unwrap().run(&mut got, &mut vec![]).unwrap();
                for (g, w) in got.iter().zip(naive(&x, inverse)) {
                    assert!((g.re - w.re).abs() < 1e-9 && (g.im - w.im).abs() < 1e-9, "n {n}: {g:?} vs {w:?}");
                }
            }
        }
    }

    #[test]
    fn known_spectrum() {
        // numpy.fft.fft([1, 2, 3, 4]) = [10, -2+2j, -2, -2-2j]
        let mut x: Vec<Complex> = [1.0, 2.0, 3.0, 4.0].iter().map(|&v| Complex::new(v, 0.0)).collect();
        Fft::new(4, false).unwrap().run(&mut x, &mut vec![]).unwrap();
        let want = [(10.0, 0.0), (-2.0, 2.0), (-2.0, 0.0), (-2.0, -2.0)];
        for (g, (re, im)) in x.iter().zip(want) {
            assert!((g.re - re).abs() < 1e-12 && (g.im - im).abs() < 1e-12, "{x:?}");
        }
    }
}
