//! Calibration for static quantization: the float ranges of chosen intermediate tensors over a
//! set of input batches. The model is copied with those tensors added as graph outputs, run
//! through the public [`Session`] API, and each tensor's values are summarised; a method then
//! picks each tensor's range from the summary:
//!
//! - `MinMax`: the smallest and largest value seen (onnxruntime's default);
//! - `Percentile(p)`: cuts (100 - p)/2 percent of the values off each end of a 2048-bin histogram
//!   over [-t, t], t the largest magnitude seen (onnxruntime's percentile calibrator);
//! - `Entropy`: the symmetric threshold whose 128-level quantization of a 2048-bin histogram has
//!   the least KL divergence from it (the TensorRT method, which onnxruntime's entropy calibrator
//!   implements; its default of 128 bins leaves it a single candidate, so we use 2048).
//!
//! Histogram methods run the batches twice (ranges first, then histograms over them), so that
//! memory stays one batch's tensors however many batches there are.

use crate::onnx::model::{decode_model, ValueInfoProto};
use crate::onnx::write::encode_model;
use crate::{bail, Model, Result, Session, SessionOptions, Tensor};
use std::collections::HashMap;

/// How a tensor's quantization range is chosen from its calibration values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    MinMax,
    /// Keep this percentage of the values inside the range (e.g. 99.999).
    Percentile(f64),
    Entropy,
}

/// One input batch: a tensor for each model input, by name.
pub type Batch = Vec<(String, Tensor)>;

const HISTOGRAM_BINS: usize = 2048;
const QUANTIZED_BINS: usize = 128;

/// The float range `(min, max)` of each tensor in `tensors` (graph inputs or node outputs of the
/// model in `model_bytes`) over `batches`, by `method`. `tick` is called after each batch run.
pub fn calibrate(
    model_bytes: &[u8],
    tensors: &[String],
    batches: &[Batch],
    method: Method,
    options: &SessionOptions,
    tick: &mut dyn FnMut(),
) -> Result<HashMap<String, (f32, f32)>> {
    if batches.is_empty() {
        bail!(InvalidInput, "no calibration batches");
    }
    let observer = Observer::new(model_bytes, tensors, options)?;
    let mut ranges: HashMap<String, (f32, f32)> = HashMap::new();
    for batch in batches {
        observer.run(batch, &mut |name, values| {
            let r = ranges.entry(name.to_string()).or_insert((f32::INFINITY, f32::NEG_INFINITY));
            for &v in values.iter().filter(|v| v.is_finite()) {
                r.0 = r.0.min(v);
                r.1 = r.1.max(v);
            }
        })?;
        tick();
    }
    // A tensor that held no finite value gets an empty range at 0.
    for r in ranges.values_mut() {
        if r.0 > r.1 {
            *r = (0.0, 0.0);
        }
    }
    if method == Method::MinMax {
        return Ok(ranges);
    }
    let mut histograms: HashMap<String, Histogram> =
        ranges.iter().map(|(n, &(lo, hi))| (n.clone(), Histogram::new(lo.abs().max(hi.abs())))).collect();
    for batch in batches {
        observer.run(batch, &mut |name, values| {
            if let Some(h) = histograms.get_mut(name) {
                h.add(values);
            }
        })?;
        tick();
    }
    Ok(ranges
        .into_iter()
        .map(|(name, (lo, hi))| {
            let h = &histograms[&name];
            let (a, b) = match method {
                Method::Percentile(p) => h.percentile_range(p),
                _ => h.entropy_range(),
            };
            (name, (a.max(lo), b.min(hi)))
        })
        .collect())
}

/// A session over a copy of the model whose outputs are the tensors observed (graph inputs among
/// them are read from the batch itself).
struct Observer {
    session: Session,
    outputs: Vec<String>,
    inputs: Vec<String>,
}

impl Observer {
    fn new(model_bytes: &[u8], tensors: &[String], options: &SessionOptions) -> Result<Observer> {
        let mut m = decode_model(model_bytes)?;
        let Some(g) = m.graph.as_mut() else { bail!(InvalidModel, "the model has no graph") };
        let graph_inputs: Vec<String> = g.input.iter().map(|v| v.name.clone()).collect();
        let (inputs, outputs): (Vec<String>, Vec<String>) =
            tensors.iter().cloned().partition(|t| graph_inputs.contains(t));
        // Only the observed tensors are outputs: the model's own ones would be computed for nothing.
        g.output =
            outputs.iter().map(|name| ValueInfoProto { name: name.clone(), ..ValueInfoProto::default() }).collect();
        let session = Session::new(Model::from_bytes(&encode_model(&m))?, options)?;
        Ok(Observer { session, outputs, inputs })
    }

    fn run(&self, batch: &Batch, see: &mut dyn FnMut(&str, &[f32])) -> Result<()> {
        let feed: Vec<(&str, &Tensor)> = batch.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let got = if self.outputs.is_empty() { vec![] } else { self.session.run(&feed)? };
        for (name, t) in self.outputs.iter().zip(&got) {
            see(name, t.as_slice::<f32>().map_err(|e| e.context(format!("calibration tensor '{name}'")))?);
        }
        for name in &self.inputs {
            if let Some((_, t)) = batch.iter().find(|(n, _)| n == name) {
                see(name, t.as_slice::<f32>().map_err(|e| e.context(format!("calibration input '{name}'")))?);
            }
        }
        Ok(())
    }
}

/// Counts of values in `HISTOGRAM_BINS` equal bins over [-threshold, threshold].
struct Histogram {
    threshold: f32,
    counts: Vec<u64>,
}

impl Histogram {
    fn new(threshold: f32) -> Histogram {
        Histogram { threshold, counts: vec![0; HISTOGRAM_BINS] }
    }

    fn add(&mut self, values: &[f32]) {
        if self.threshold <= 0.0 {
            return;
        }
        let per_bin = HISTOGRAM_BINS as f32 / (2.0 * self.threshold);
        for &v in values.iter().filter(|v| v.is_finite()) {
            let k = ((v + self.threshold) * per_bin).floor().clamp(0.0, (HISTOGRAM_BINS - 1) as f32) as usize;
            self.counts[k] += 1;
        }
    }

    /// The value at edge `k` of the bins (0 ..= HISTOGRAM_BINS).
    fn edge(&self, k: usize) -> f32 {
        -self.threshold + 2.0 * self.threshold * k as f32 / HISTOGRAM_BINS as f32
    }

    /// onnxruntime's asymmetric percentile: the edges where the cumulative share first reaches
    /// the cut and 1 - cut, cut = (100 - p) / 200.
    fn percentile_range(&self, percentile: f64) -> (f32, f32) {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return (0.0, 0.0);
        }
        let cut = (100.0 - percentile) / 200.0;
        let (mut lo, mut hi) = (None, None);
        let mut seen = 0u64;
        for (k, &c) in self.counts.iter().enumerate() {
            seen += c;
            let cdf = seen as f64 / total as f64;
            if lo.is_none() && cdf >= cut {
                lo = Some(k);
            }
            if hi.is_none() && cdf >= 1.0 - cut {
                hi = Some(k);
            }
        }
        (self.edge(lo.unwrap_or(0)), self.edge(hi.unwrap_or(HISTOGRAM_BINS)))
    }

    /// The symmetric range, grown from the middle 128 bins outwards, whose 128-level
    /// quantization loses the least information (KL divergence) about the histogram.
    fn entropy_range(&self) -> (f32, f32) {
        let (zero, half) = (HISTOGRAM_BINS / 2, QUANTIZED_BINS / 2);
        let mut best = (f64::INFINITY, (-self.threshold, self.threshold));
        for i in half..=zero {
            let (start, end) = (zero - i, (zero + i + 1).min(HISTOGRAM_BINS));
            let sliced = &self.counts[start..end];
            let mut p: Vec<f64> = sliced.iter().map(|&c| c as f64).collect();
            p[0] += self.counts[..start].iter().sum::<u64>() as f64;
            *p.last_mut().unwrap() += self.counts[end..].iter().sum::<u64>() as f64;
            let merged = sliced.len() / QUANTIZED_BINS;
            let mut q = vec![0f64; p.len()];
            for b in 0..QUANTIZED_BINS {
                let from = b * merged;
                let to = if b + 1 == QUANTIZED_BINS { sliced.len() } else { from + merged };
                let sum: f64 = sliced[from..to].iter().map(|&c| c as f64).sum();
                let nonzero = (from..to).filter(|&k| p[k] != 0.0).count();
                if nonzero > 0 {
                    (from..to).filter(|&k| p[k] != 0.0).for_each(|k| q[k] = sum / nonzero as f64);
                }
            }
            let kl = match (smooth(&p), smooth(&q)) {
                (Some(p), Some(q)) => kl_divergence(&p, &q),
                _ => f64::INFINITY,
            };
            if kl < best.0 {
                best = (kl, (self.edge(start), self.edge(end)));
            }
        }
        best.1
    }
}

/// Replaces zeros by a small epsilon taken from the non-zero entries (as onnxruntime does), so
/// that the KL divergence is finite; `None` for an all-zero distribution.
fn smooth(p: &[f64]) -> Option<Vec<f64>> {
    const EPS: f64 = 1e-4;
    let zeros = p.iter().filter(|&&v| v == 0.0).count();
    let nonzeros = p.len() - zeros;
    if nonzeros == 0 {
        return None;
    }
    let eps1 = EPS * zeros as f64 / nonzeros as f64;
    Some(p.iter().map(|&v| if v == 0.0 { EPS } else { v - eps1 }).collect())
}

/// KL(p || q) of two unnormalised distributions (each normalised here, as scipy's entropy does).
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let (a, b) = (a / sp, b / sq);
            if a > 0.0 {
                a * (a / b).ln()
            } else {
                0.0
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram_of(values: &[f32]) -> Histogram {
        let t = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut h = Histogram::new(t);
        h.add(values);
        h
    }

    #[test]
    fn percentile_cuts_rare_outliers_and_minmax_would_not() {
        // 100k values in [-1, 1] and one at 50: the 99.99th percentile ignores the outlier.
        let mut v: Vec<f32> = (0..100_000).map(|i| (i as f32 / 50_000.0) - 1.0).collect();
        v.push(50.0);
        let (lo, hi) = histogram_of(&v).percentile_range(99.99);
        assert!(lo > -1.1 && lo < -0.9, "{lo}");
        assert!(hi > 0.9 && hi < 1.1, "{hi}");
        // Keeping every value keeps the outlier.
        let (_, hi) = histogram_of(&v).percentile_range(100.0);
        assert!(hi >= 49.0, "{hi}");
    }

    #[test]
    fn entropy_clips_a_long_tail_but_keeps_the_bulk() {
        // A bell-shaped bulk within about ±3 and a sparse tail out to ±40.
        let mut v = vec![];
        for i in 0..200_000 {
            let u = (i as f32 + 0.5) / 200_000.0;
            v.push((u * 6.0 - 3.0) * (1.0 - (u - 0.5).abs()));
        }
        v.extend((0..20).map(|i| if i % 2 == 0 { 40.0 - i as f32 } else { -40.0 + i as f32 }));
        let (lo, hi) = histogram_of(&v).entropy_range();
        // Symmetric but for one bin: the range ends at the edge after the middle bins, as in
        // onnxruntime's thresholds.
        let bin = 2.0 * 40.0 / HISTOGRAM_BINS as f32;
        assert!((lo + hi - bin).abs() < 1e-4, "symmetric: {lo} {hi}");
        assert!(hi > 1.0 && hi < 20.0, "threshold {hi}");
    }

    #[test]
    fn smoothing_and_divergence() {
        assert!(smooth(&[0.0, 0.0]).is_none());
        let s = smooth(&[0.0, 2.0]).unwrap();
        assert!(s[0] > 0.0 && s[1] < 2.0);
        assert!(kl_divergence(&[1.0, 1.0], &[2.0, 2.0]).abs() < 1e-12);
        assert!(kl_divergence(&[1.0, 3.0], &[3.0, 1.0]) > 0.1);
    }
}
