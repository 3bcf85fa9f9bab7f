//! float32 islands for `fp16` chosen from calibration data (what onnxconverter-common's
//! `auto_mixed_precision` does by converting one node at a time, but in a few dozen runs):
//!
//! 1. Ranges: one run of the float model over the batches records every value a float16 node
//!    would read or write; a node that meets a value beyond float16's range (with headroom for
//!    unseen data) or entirely below its normal range stays float32.
//! 2. Measurement, one node at a time: the model is converted with those islands and run on the
//!    batches twice, with float16 computed as written (every result rounded, as engines with
//!    float16 kernels compute) and widened (float16 regions computed in float32, as crx580's CPU
//!    path and engines that widen internally compute), and scored by the worse of the two: a
//!    choice must hold in every engine, and on a deep network the two roundings' max errors differ
//!    by up to 50% either way. While the outputs are further from the float model's than the
//!    tolerance (max error over the largest
//!    reference magnitude, per output), a binary search over the float16 nodes in graph order
//!    finds the first node whose conversion takes them past the tolerance, and that node stays
//!    float32. Each island found this way costs about log2(nodes) runs.
//!
//!    Past `max_evaluations`, every node from the last search's failing point on stays float32,
//!    which is known to be within the tolerance. When [`STALL_ISLANDS`] islands in a row fail to
//!    halve the error, the error is float16's rounding spread over the graph rather than a few
//!    fragile nodes: the search stops, drops that streak of islands, and says the tolerance was
//!    not met ([`AutoChoice::diffuse`]).
//!
//!    The searches aim at the tolerance times a headroom ([`HEADROOM`], 3/4 by default): the
//!    max-error metric over inputs not seen grows past its value on a few calibration batches
//!    (the max of more samples), and on a random-weight deep network it moves by up to 50%
//!    between roundings that are equally accurate on average.
//! 3. A float32 prefix: deep networks amplify what is rounded early (a random-weight or
//!    poorly conditioned backbone grows a perturbation layer after layer), so the rounding that
//!    matters is spread over the first layers, which hold few weights. A binary search finds the
//!    shortest prefix of the float16 nodes (graph order) that, kept float32, brings the outputs
//!    within the tolerance (about log2(nodes) runs). Most of a prefix's weights sit in a few
//!    nodes whose rounding matters less than their inputs' (the activations a prefix keeps f32
//!    are what count), so the prefix's heaviest nodes then go back to float16, as many as keep
//!    the outputs within the tolerance (a binary search over the count, heaviest first, repeated
//!    past a node that breaks it). Of searches 2 and 3, the one within the
//!    tolerance that keeps fewer weight elements float32 is taken (DBNet: the prefix).

use super::calibrate::{calibrate, Batch, Method};
use super::edit::constant_initializers;
use super::fp16::{half_nodes, to_fp16, Fp16Options};
use super::ValueTypes;
use crate::convert::accuracy::Comparison;
use crate::ir::order::sort_positions;
use crate::ir::DType;
use crate::onnx::model::{decode_model, ModelProto};
use crate::onnx::write::encode_model;
use crate::{bail, Model, Result, Session, SessionOptions, Tensor};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// float16's largest finite value and smallest normal one.
const HALF_MAX: f32 = 65504.0;
const HALF_MIN_NORMAL: f32 = 6.103_515_6e-5;
/// Values seen in calibration may grow on other data: a value within this factor of float16's
/// largest keeps its nodes float32.
const RANGE_HEADROOM: f32 = 2.0;
/// The default [`AutoOptions::headroom`]: on the zoo's DBNet, the max error over 16 held-out
/// images was 0.96-1.5x the max over the 4 calibration images (benches/RESULTS.md).
pub const HEADROOM: f64 = 0.75;
/// How often search 3 skips a node that breaks the tolerance and goes on with lighter ones.
const GIVE_BACK_ROUNDS: usize = 4;
/// Islands in a row that may fail to halve the error before the search stops (module docs).
pub const STALL_ISLANDS: usize = 4;

#[derive(Debug, Clone)]
pub struct AutoOptions {
    /// The largest output error accepted, relative to the float model's largest output magnitude.
    pub tolerance: f64,
    /// The searches aim at `tolerance * headroom` on the calibration batches: the max error over
    /// inputs not seen grows past the max over a few batches (module docs).
    pub headroom: f64,
    /// The most converted models to run before settling (see the module docs).
    pub max_evaluations: usize,
}

impl Default for AutoOptions {
    fn default() -> Self {
        AutoOptions { tolerance: 1e-2, headroom: HEADROOM, max_evaluations: 200 }
    }
}

/// The islands chosen and what they bought.
#[derive(Debug, Clone)]
pub struct AutoChoice {
    /// Node index -> why it stays float32; pass as `Fp16Options::float_nodes`.
    pub float_nodes: HashMap<usize, String>,
    /// Islands chosen from value ranges, and by measurement.
    pub by_range: usize,
    pub by_measurement: usize,
    /// The relative output error with only the default rules, and with the islands (the worse of
    /// the two semantics), and the islands' error in each.
    pub error_default: f64,
    pub error: f64,
    pub scored: Scored,
    /// Converted models run.
    pub evaluations: usize,
    /// Whether `max_evaluations` ran out (the rest of the graph was then kept float32).
    pub budget_ran_out: bool,
    /// Whether the search stopped because islands stopped halving the error: `error` is then
    /// above the tolerance, spread over the graph.
    pub diffuse: bool,
}

/// Chooses float32 islands for converting the model in `model_bytes` to float16 with `base`
/// options, so that its outputs on `batches` stay within `auto.tolerance` of the float model's.
/// `tick` is called after each calibration run and each converted model evaluated.
pub fn choose_float_islands(
    model_bytes: &[u8],
    types: &ValueTypes,
    base: &Fp16Options,
    batches: &[Batch],
    auto: &AutoOptions,
    options: &SessionOptions,
    tick: &mut dyn FnMut(),
) -> Result<AutoChoice> {
    if batches.is_empty() {
        bail!(InvalidInput, "no calibration batches");
    }
    if auto.tolerance.is_nan() || auto.tolerance <= 0.0 {
        bail!(InvalidInput, "the tolerance must be above 0 (got {})", auto.tolerance);
    }
    if auto.headroom.is_nan() || auto.headroom <= 0.0 || auto.headroom > 1.0 {
        bail!(InvalidInput, "the headroom must be in (0, 1] (got {})", auto.headroom);
    }
    // From here on, `tolerance` is what the searches aim at on the calibration batches.
    let auto = &AutoOptions { tolerance: auto.tolerance * auto.headroom, ..auto.clone() };
    let original = decode_model(model_bytes)?;
    let half = half_nodes(&original, types, base)?;
    let mut float_nodes = base.float_nodes.clone();
    float_nodes.extend(range_islands(model_bytes, &original, types, &half, batches, options, tick)?);
    let by_range = float_nodes.len() - base.float_nodes.len();

    let reference = Session::new(Model::from_bytes(model_bytes)?, options)?;
    let wants = batches.iter().map(|b| reference.run(&feed(b))).collect::<Result<Vec<_>>>()?;
    let mut eval = Evaluator {
        original: &original,
        types,
        base,
        batches,
        wants,
        reference,
        options,
        runs: 0,
        scored: HashMap::new(),
    };
    let error_default = eval.error(&base.float_nodes, tick)?;
    let error = if by_range == 0 { error_default } else { eval.error(&float_nodes, tick)? };
    // Two searches, each within the tolerance when it succeeds; the one that leaves more weights
    // in float16 wins (module docs).
    let ranged = (float_nodes.clone(), error);
    let one_by_one = if error > auto.tolerance {
        Some(islands_one_by_one(&mut eval, &half, ranged.clone(), auto, tick)?)
    } else {
        None
    };
    let weights = weight_elements(&original)?;
    let prefix = match one_by_one {
        Some(_) => match float_prefix(&mut eval, &half, &ranged, auto, tick)? {
            Some(p) => Some(heaviest_back_to_half(&mut eval, p, &ranged.0, &weights, auto, tick)?),
            None => None,
        },
        None => None,
    };
    let float_weights = |islands: &HashMap<usize, String>| islands.keys().map(|&k| weights[k]).sum::<usize>();
    let (float_nodes, by_measurement, error, budget_ran_out, diffuse) = match (one_by_one, prefix) {
        (Some(a), Some(b)) if a.2 > auto.tolerance || float_weights(&b.0) < float_weights(&a.0) => {
            let n = b.0.len() - ranged.0.len();
            (b.0, n, b.1, false, false)
        }
        (Some(a), _) => a,
        (None, _) => (ranged.0, 0, ranged.1, false, false),
    };
    let scored = eval.score(&float_nodes, tick)?;
    Ok(AutoChoice {
        scored,
        float_nodes,
        by_range,
        by_measurement,
        error_default,
        error,
        evaluations: eval.runs,
        budget_ran_out,
        diffuse,
    })
}

/// Islands, how many were added, error, whether the budget ran out, whether the search stopped
/// as diffuse.
type Searched = (HashMap<usize, String>, usize, f64, bool, bool);

/// Search 1 (module docs): one node at a time, the first (in graph order) whose conversion takes
/// the outputs past the tolerance, until they are within it.
fn islands_one_by_one(
    eval: &mut Evaluator,
    half: &[bool],
    (mut float_nodes, mut error): (HashMap<usize, String>, f64),
    auto: &AutoOptions,
    tick: &mut dyn FnMut(),
) -> Result<Searched> {
    let mut by_measurement = 0;
    let mut budget_ran_out = false;
    let mut diffuse = false;
    // The islands, count and error when the error last halved.
    let mut last_halving = (float_nodes.clone(), by_measurement, error);
    while error > auto.tolerance {
        let candidates: Vec<usize> = (0..half.len()).filter(|k| half[*k] && !float_nodes.contains_key(k)).collect();
        if candidates.is_empty() {
            break; // every node is float32 already: the error is not float16's
        }
        // Prefix `lo` of the candidates in float16 is within the tolerance (0: the float model),
        // prefix `hi` is not.
        let (mut lo, mut hi, mut error_hi) = (0, candidates.len(), error);
        while hi - lo > 1 && eval.runs < auto.max_evaluations {
            let mid = (lo + hi) / 2;
            let e = eval.error(&with(&float_nodes, &candidates[mid..], "trial"), tick)?;
            if e > auto.tolerance {
                (hi, error_hi) = (mid, e);
            } else {
                lo = mid;
            }
        }
        if hi - lo > 1 {
            // Out of runs: from the last point within tolerance on,
            // everything stays float32.
            let why = format!(
                "fp16 auto: past the run budget of {}, the rest of the graph stays float32",
                auto.max_evaluations
            );
            for &k in &candidates[lo..] {
                float_nodes.insert(k, why.clone());
            }
            by_measurement += candidates.len() - lo;
            error = eval.error(&float_nodes, tick)?;
            budget_ran_out = true;
            break;
        }
        float_nodes.insert(
            candidates[lo],
            format!(
                "fp16 auto: in float16 it takes the outputs' relative error to {error_hi:.2e}, past the search's target {:.2e}",
                auto.tolerance
            ),
        );
        by_measurement += 1;
        error = eval.error(&float_nodes, tick)?;
        if error <= last_halving.2 / 2.0 {
            last_halving = (float_nodes.clone(), by_measurement, error);
        } else if by_measurement - last_halving.1 >= STALL_ISLANDS {
            (float_nodes, by_measurement, error) = last_halving;
            diffuse = true;
            break;
        }
    }
    Ok((float_nodes, by_measurement, error, budget_ran_out, diffuse))
}

/// Search 2 (module docs): the shortest prefix of the float16 nodes, in graph order, that kept
/// float32 brings the outputs within the tolerance; `None` when only the whole graph does.
fn float_prefix(
    eval: &mut Evaluator,
    half: &[bool],
    (float_nodes, error): &(HashMap<usize, String>, f64),
    auto: &AutoOptions,
    tick: &mut dyn FnMut(),
) -> Result<Option<(HashMap<usize, String>, f64)>> {
    let candidates: Vec<usize> = (0..half.len()).filter(|k| half[*k] && !float_nodes.contains_key(k)).collect();
    // Prefix `lo` kept float32 is past the tolerance; prefix `hi` is within it (the whole graph
    // float32 is taken to be, and never chosen).
    let (mut lo, mut hi, mut error_hi) = (0, candidates.len(), *error);
    while hi - lo > 1 && eval.runs < auto.max_evaluations {
        let mid = (lo + hi) / 2;
        let e = eval.error(&with(float_nodes, &candidates[..mid], "trial"), tick)?;
        if e <= auto.tolerance {
            (hi, error_hi) = (mid, e);
        } else {
            lo = mid;
        }
    }
    if hi == candidates.len() || hi - lo > 1 {
        return Ok(None);
    }
    let why = format!(
        "fp16 auto: among the first {hi} float16 nodes, where rounding grows the most on the way to the outputs; \
         kept float32 they take the outputs' relative error to {error_hi:.2e}"
    );
    Ok(Some((with(float_nodes, &candidates[..hi], &why), error_hi)))
}

/// Search 3 (module docs): of the nodes a float32 prefix holds, the ones with the most weight
/// elements go back to float16, as many as keep the outputs within the tolerance (a binary search
/// over the count, heaviest first); the one that breaks it stays float32 and the search repeats
/// on the lighter ones, [`GIVE_BACK_ROUNDS`] times at most.
fn heaviest_back_to_half(
    eval: &mut Evaluator,
    (mut float_nodes, mut error): (HashMap<usize, String>, f64),
    before: &HashMap<usize, String>,
    weights: &[usize],
    auto: &AutoOptions,
    tick: &mut dyn FnMut(),
) -> Result<(HashMap<usize, String>, f64)> {
    let mut heavy: Vec<usize> =
        float_nodes.keys().copied().filter(|k| !before.contains_key(k) && weights[*k] > 0).collect();
    // Heaviest first; graph order among equals, so that the search is deterministic.
    sort_positions(&mut heavy, &|a, b| weights[b].cmp(&weights[a]).then(a.cmp(&b)));
    for _ in 0..GIVE_BACK_ROUNDS {
        // `lo` of the heaviest back in float16 is within the tolerance; `hi` is taken not to be.
        let (mut lo, mut hi) = (0, heavy.len() + 1);
        while hi - lo > 1 && eval.runs < auto.max_evaluations {
            let mid = (lo + hi) / 2;
            let mut trial = float_nodes.clone();
            for k in &heavy[..mid] {
                trial.remove(k);
            }
            let e = eval.error(&trial, tick)?;
            if e <= auto.tolerance {
                (lo, error) = (mid, e);
            } else {
                hi = mid;
            }
        }
        for k in &heavy[..lo] {
            float_nodes.remove(k);
        }
        // heavy[lo] (when the search got that far) broke the tolerance: it stays float32.
        if hi - lo > 1 || lo + 1 >= heavy.len() {
            break;
        }
        heavy.drain(..=lo);
    }
    Ok((float_nodes, error))
}

/// Per node of the main graph, the elements of the float32 initializers it reads (what its
/// conversion halves).
fn weight_elements(m: &ModelProto) -> Result<Vec<usize>> {
    let Some(g) = m.graph.as_ref() else { bail!(InvalidModel, "the model has no graph") };
    let sizes: HashMap<&str, usize> = g
        .initializer
        .iter()
        .filter(|t| t.data_type == DType::F32.onnx_code())
        .map(|t| (t.name.as_str(), t.dims.iter().map(|&d| d.max(0) as usize).product()))
        .collect();
    Ok(g.node.iter().map(|n| n.input.iter().filter_map(|i| sizes.get(i.as_str())).sum()).collect())
}

fn with(float_nodes: &HashMap<usize, String>, more: &[usize], why: &str) -> HashMap<usize, String> {
    let mut all = float_nodes.clone();
    all.extend(more.iter().map(|&k| (k, why.to_string())));
    all
}

fn feed(batch: &Batch) -> Vec<(&str, &Tensor)> {
    batch.iter().map(|(n, t)| (n.as_str(), t)).collect()
}

/// Nodes that would compute in float16 but read or write a value the calibration runs saw beyond
/// float16's range (with headroom), or wholly below its normal range; each with the reason.
fn range_islands(
    model_bytes: &[u8],
    m: &ModelProto,
    types: &ValueTypes,
    half: &[bool],
    batches: &[Batch],
    options: &SessionOptions,
    tick: &mut dyn FnMut(),
) -> Result<HashMap<usize, String>> {
    let Some(g) = m.graph.as_ref() else { bail!(InvalidModel, "the model has no graph") };
    let weights = constant_initializers(g);
    let values_of = |k: usize| {
        let n = &g.node[k];
        n.input.iter().chain(&n.output).filter(|v| {
            !v.is_empty() && !weights.contains_key(v.as_str()) && types.get(v.as_str()) == Some(&DType::F32)
        })
    };
    // BTreeMap: a stable order of observed tensors.
    let observed: BTreeMap<&str, ()> =
        (0..half.len()).filter(|&k| half[k]).flat_map(values_of).map(|v| (v.as_str(), ())).collect();
    let tensors: Vec<String> = observed.keys().map(|s| s.to_string()).collect();
    if tensors.is_empty() {
        return Ok(HashMap::new());
    }
    let ranges = calibrate(model_bytes, &tensors, batches, Method::MinMax, options, tick)?;
    let mut islands = HashMap::new();
    for k in (0..half.len()).filter(|&k| half[k]) {
        for v in values_of(k) {
            let Some(&(lo, hi)) = ranges.get(v.as_str()) else { continue };
            let largest = lo.abs().max(hi.abs());
            let why = if largest > HALF_MAX / RANGE_HEADROOM {
                format!(
                    "fp16 auto: '{v}' reaches {largest:.3e} on the calibration data, near or beyond float16's 65504"
                )
            } else if largest > 0.0 && largest < HALF_MIN_NORMAL {
                format!("fp16 auto: '{v}' stays below {largest:.3e}, under float16's normal range")
            } else {
                continue;
            };
            islands.insert(k, why);
            break;
        }
    }
    Ok(islands)
}

/// Runs converted models on the batches against the float model's outputs.
struct Evaluator<'m, 'b> {
    original: &'m ModelProto<'b>,
    types: &'m ValueTypes,
    base: &'m Fp16Options,
    batches: &'m [Batch],
    wants: Vec<Vec<Tensor>>,
    reference: Session,
    options: &'m SessionOptions,
    runs: usize,
    /// Errors already measured, per island set (searches revisit some).
    scored: HashMap<BTreeSet<usize>, Scored>,
}

/// A converted model's largest relative output error in each of the two ways engines compute
/// float16.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// Every float16 result rounded (engines that compute in float16; crx580 `--f16-as-written`).
    pub as_written: f64,
    /// float16 regions computed in float32 between their edges' Casts (crx580's CPU path; engines
    /// that widen float16 kernels internally come close to it).
    pub widened: f64,
}

impl Scored {
    /// What the searches compare with the tolerance: a choice must hold in both.
    pub fn worst(&self) -> f64 {
        self.as_written.max(self.widened)
    }
}

impl Evaluator<'_, '_> {
    /// The larger of the two semantics' errors of the model converted with `float_nodes` kept
    /// float32.
    fn error(&mut self, float_nodes: &HashMap<usize, String>, tick: &mut dyn FnMut()) -> Result<f64> {
        Ok(self.score(float_nodes, tick)?.worst())
    }

    /// The model converted with `float_nodes` kept float32, scored as written and widened.
    fn score(&mut self, float_nodes: &HashMap<usize, String>, tick: &mut dyn FnMut()) -> Result<Scored> {
        let key: BTreeSet<usize> = float_nodes.keys().copied().collect();
        if let Some(&s) = self.scored.get(&key) {
            return Ok(s);
        }
        let mut m = self.original.clone();
        let opts = Fp16Options { float_nodes: float_nodes.clone(), ..self.base.clone() };
        to_fp16(&mut m, self.types, &opts, &mut || {})?;
        let model = Model::from_bytes(&encode_model(&m))?;
        let mut errors = [0.0; 2];
        for (error, as_written) in errors.iter_mut().zip([true, false]) {
            let mut options = self.options.clone();
            options.device_options.f16_as_written = as_written;
            let session = Session::new(model.clone(), &options)?;
            let mut comparison = Comparison::new(&self.reference);
            for (batch, want) in self.batches.iter().zip(&self.wants) {
                comparison.add(want, &session.run(&feed(batch))?)?;
            }
            // NaN or infinite outputs count as infinitely wrong.
            *error = comparison
                .finish()
                .iter()
                .map(|a| if a.max_rel.is_nan() { f64::INFINITY } else { a.max_rel })
                .fold(0.0, f64::max);
        }
        self.runs += 1;
        tick();
        let s = Scored { as_written: errors[0], widened: errors[1] };
        self.scored.insert(key, s);
        Ok(s)
    }
}
