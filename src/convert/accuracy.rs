//! How closely a converted model follows the original: both run through the public Session API on
//! the same inputs, and each output is compared (max and mean absolute error, error relative to
//! the reference's largest magnitude, cosine similarity, and top-1 agreement for classifier-shaped
//! outputs `[N, C]`). Also the median latency of a session on one input set.

use crate::{bail, Result, Session, Tensor};
use std::time::Instant;

/// One output's agreement over all the input sets compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Agreement {
    pub output: String,
    pub max_abs: f64,
    pub mean_abs: f64,
    /// `max_abs` over the largest |reference| value.
    pub max_rel: f64,
    pub cosine: f64,
    /// Rows whose arg-max agrees, and rows compared, for outputs shaped `[N, C]` with C > 1.
    pub top1: Option<(usize, usize)>,
}

#[derive(Default)]
struct Sums {
    max_abs: f64,
    sum_abs: f64,
    count: usize,
    max_ref: f64,
    dot: f64,
    norm_ref: f64,
    norm_new: f64,
    top1: Option<(usize, usize)>,
}

/// Runs the reference on every input set and the candidate on the same sets as its inputs' types
/// want them (`candidate_sets`: the same values, cast where the converted model takes float16),
/// and compares their outputs, in graph-output order; `tick` is called after each set.
pub fn compare(
    reference: &Session,
    candidate: &Session,
    input_sets: &[Vec<(String, Tensor)>],
    candidate_sets: &[Vec<(String, Tensor)>],
    tick: &mut dyn FnMut(),
) -> Result<Vec<Agreement>> {
    let mut comparison = Comparison::new(reference);
    for (set, candidate_set) in input_sets.iter().zip(candidate_sets) {
        let inputs: Vec<(&str, &Tensor)> = set.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let candidate_inputs: Vec<(&str, &Tensor)> = candidate_set.iter().map(|(n, t)| (n.as_str(), t)).collect();
        comparison.add(&reference.run(&inputs)?, &candidate.run(&candidate_inputs)?)?;
        tick();
    }
    Ok(comparison.finish())
}

/// Agreement accumulated over input sets, one pair of output lists at a time (for callers that
/// keep the reference outputs and compare several candidates with them).
pub struct Comparison {
    names: Vec<String>,
    sums: Vec<Sums>,
}

impl Comparison {
    /// An empty comparison for the outputs of `reference`'s model.
    pub fn new(reference: &Session) -> Comparison {
        let names: Vec<String> = reference.model().outputs().into_iter().map(|o| o.name).collect();
        let sums = names.iter().map(|_| Sums::default()).collect();
        Comparison { names, sums }
    }

    /// Adds one input set's outputs: the reference's and the candidate's, in graph-output order.
    pub fn add(&mut self, want: &[Tensor], got: &[Tensor]) -> Result<()> {
        if want.len() != got.len() {
            bail!(Runtime, "the converted model has {} outputs, the original {}", got.len(), want.len());
        }
        for ((w, g), s) in want.iter().zip(got).zip(&mut self.sums) {
            accumulate(s, w, g)?;
        }
        Ok(())
    }

    pub fn finish(self) -> Vec<Agreement> {
        self.names
            .into_iter()
            .zip(self.sums)
            .map(|(output, s)| Agreement {
                output,
                max_abs: s.max_abs,
                mean_abs: s.sum_abs / s.count.max(1) as f64,
                max_rel: if s.max_ref > 0.0 { s.max_abs / s.max_ref } else { s.max_abs },
                cosine: if s.norm_ref > 0.0 && s.norm_new > 0.0 {
                    s.dot / (s.norm_ref.sqrt() * s.norm_new.sqrt())
                } else if s.norm_ref == s.norm_new {
                    1.0
                } else {
                    0.0
                },
                top1: s.top1,
            })
            .collect()
    }
}

fn accumulate(s: &mut Sums, want: &Tensor, got: &Tensor) -> Result<()> {
    if want.shape() != got.shape() {
        bail!(Runtime, "output shapes differ: original {:?}, converted {:?}", want.shape(), got.shape());
    }
    let (w, g) = (want.to_f64_vec()?, got.to_f64_vec()?);
    for (a, b) in w.iter().zip(&g) {
        let d = (a - b).abs();
        // NaN in either counts as the worst error.
        s.max_abs = if d.is_nan() { f64::INFINITY } else { s.max_abs.max(d) };
        s.sum_abs += if d.is_nan() { f64::INFINITY } else { d };
        s.max_ref = s.max_ref.max(a.abs());
        s.dot += a * b;
        s.norm_ref += a * a;
        s.norm_new += b * b;
    }
    s.count += w.len();
    if let [rows, cols] = *want.shape() {
        if cols > 1 {
            let argmax = |v: &[f64]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap_or(0);
            let agree = (0..rows)
                .filter(|r| argmax(&w[r * cols..(r + 1) * cols]) == argmax(&g[r * cols..(r + 1) * cols]))
                .count();
            let (a, n) = s.top1.unwrap_or((0, 0));
            s.top1 = Some((a + agree, n + rows));
        }
    }
    Ok(())
}

/// Median wall time of `runs` runs (after one untimed warm-up), in milliseconds.
pub fn latency_ms(session: &Session, inputs: &[(String, Tensor)], runs: usize) -> Result<f64> {
    let inputs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    session.run(&inputs)?;
    let mut times = vec![];
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        session.run(&inputs)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_give_errors_cosine_and_top1() {
        let mut s = Sums::default();
        let want = Tensor::new(vec![2, 3], vec![1.0f32, 2.0, 3.0, 3.0, 2.0, 1.0]).unwrap();
        let got = Tensor::new(vec![2, 3], vec![1.0f32, 2.0, 3.5, 3.0, 3.5, 1.0]).unwrap();
        accumulate(&mut s, &want, &got).unwrap();
        assert_eq!(s.max_abs, 1.5);
        assert_eq!(s.top1, Some((1, 2)));
        assert_eq!(s.max_ref, 3.0);
        let bad = Tensor::new(vec![3, 2], vec![0.0f32; 6]).unwrap();
        assert!(accumulate(&mut s, &want, &bad).is_err());
    }
}
