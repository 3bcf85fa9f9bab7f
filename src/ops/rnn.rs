//! Recurrent layers: RNN, GRU and LSTM (opsets 1, 3 (GRU), 7, 14, 22). One driver,
//! [`Recurrent::eval`], handles what the three share (directions, per-batch sequence lengths, the
//! batch-first layout, initial states, output assembly); [`Cell`] holds only the gate math.
//! Everything is computed in f64 and rounded once to the input's float type.

use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::shape::strides_of;
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{DType, Dim, Fact, Tensor};
use crate::{bail, Result};

pub fn register(r: &mut Registry) {
    for name in ["RNN", "GRU", "LSTM"] {
        r.add(name, build);
    }
}

/// Input positions, the same for the three ops up to `initial_h`.
const X: usize = 0;
const W: usize = 1;
const R: usize = 2;
const B: usize = 3;
const SEQUENCE_LENS: usize = 4;
const INITIAL_H: usize = 5;
const INITIAL_C: usize = 6;
const PEEPHOLES: usize = 7;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cell {
    Rnn,
    Gru { linear_before_reset: bool },
    Lstm { input_forget: bool },
}

impl Cell {
    fn name(self) -> &'static str {
        match self {
            Cell::Rnn => "RNN",
            Cell::Gru { .. } => "GRU",
            Cell::Lstm { .. } => "LSTM",
        }
    }

    /// Gates stacked along W's and R's rows: i (RNN); z, r, h (GRU); i, o, f, c (LSTM).
    fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Gru { .. } => 3,
            Cell::Lstm { .. } => 4,
        }
    }

    /// The activation functions of one direction: f (RNN); f, g (GRU); f, g, h (LSTM).
    fn default_activations(self) -> &'static [&'static str] {
        match self {
            Cell::Rnn => &["Tanh"],
            Cell::Gru { .. } => &["Sigmoid", "Tanh"],
            Cell::Lstm { .. } => &["Sigmoid", "Tanh", "Tanh"],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Activation {
    Relu,
    Tanh,
    Sigmoid,
    Affine { alpha: f64, beta: f64 },
    LeakyRelu { alpha: f64 },
    ThresholdedRelu { alpha: f64 },
    ScaledTanh { alpha: f64, beta: f64 },
    HardSigmoid { alpha: f64, beta: f64 },
    Elu { alpha: f64 },
    Softsign,
    Softplus,
}

impl Activation {
    fn apply(self, x: f64) -> f64 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Tanh => x.tanh(),
            // exp(-|x|) never overflows; the two halves are the same function.
            Activation::Sigmoid => {
                let e = (-x.abs()).exp();
                if x >= 0.0 {
                    1.0 / (1.0 + e)
                } else {
                    e / (1.0 + e)
                }
            }
            Activation::Affine { alpha, beta } => alpha * x + beta,
            Activation::LeakyRelu { alpha } => x.max(0.0) + alpha * x.min(0.0),
            Activation::ThresholdedRelu { alpha } => f64::from(u8::from(x > alpha)) * x,
            Activation::ScaledTanh { alpha, beta } => alpha * (beta * x).tanh(),
            Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::Elu { alpha } => x.max(0.0) + alpha * x.min(0.0).exp_m1(),
            Activation::Softsign => x / (1.0 + x.abs()),
            Activation::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
        }
    }
}

/// Parses `activations`; the `activation_alpha`/`activation_beta` lists are consumed in order by
/// the functions that take a parameter, and the ONNX op's default fills in when a list runs out.
fn parse_activations(names: &[String], alphas: &[f32], betas: &[f32]) -> Result<Vec<Activation>> {
    let mut alphas = alphas.iter().map(|&v| f64::from(v));
    let mut betas = betas.iter().map(|&v| f64::from(v));
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let act = match name.to_ascii_lowercase().as_str() {
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            "softsign" => Activation::Softsign,
            "softplus" => Activation::Softplus,
            "affine" => Activation::Affine { alpha: alphas.next().unwrap_or(1.0), beta: betas.next().unwrap_or(0.0) },
            "leakyrelu" => Activation::LeakyRelu { alpha: alphas.next().unwrap_or(0.01) },
            "thresholdedrelu" => Activation::ThresholdedRelu { alpha: alphas.next().unwrap_or(1.0) },
            "scaledtanh" => {
                Activation::ScaledTanh { alpha: alphas.next().unwrap_or(1.0), beta: betas.next().unwrap_or(1.0) }
            }
            "hardsigmoid" => {
                Activation::HardSigmoid { alpha: alphas.next().unwrap_or(0.2), beta: betas.next().unwrap_or(0.5) }
            }
            "elu" => Activation::Elu { alpha: alphas.next().unwrap_or(1.0) },
            _ => bail!(Unsupported, "unknown recurrent activation function '{name}'"),
        };
        out.push(act);
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Direction {
    Forward,
    Reverse,
    Bidirectional,
}

impl Direction {
    pub(crate) fn count(self) -> usize {
        if self == Direction::Bidirectional {
            2
        } else {
            1
        }
    }

    /// Whether direction index `d` walks the sequence from its end.
    pub(crate) fn is_reversed(self, d: usize) -> bool {
        self == Direction::Reverse || d == 1
    }
}

#[derive(Debug)]
pub struct Recurrent {
    pub(crate) cell: Cell,
    pub(crate) direction: Direction,
    pub(crate) hidden_size: Option<usize>,
    /// Opset 14's `layout = 1`: X, states and outputs have the batch dimension first.
    pub(crate) batch_first: bool,
    pub(crate) clip: Option<f64>,
    /// `activations.len() / num_directions` functions per direction, forward direction first.
    pub(crate) activations: Vec<Activation>,
    pub(crate) num_outputs: usize,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    Ok(Box::new(Recurrent::parse(ctx)?))
}

impl Recurrent {
    /// Parses the attributes of RNN, GRU or LSTM (`ctx.op_type`); com.microsoft
    /// DynamicQuantizeLSTM parses its attributes as LSTM's.
    pub(super) fn parse(ctx: &BuildCtx) -> Result<Recurrent> {
        let a = ctx.attrs;
        let name = ctx.op_type;
        let cell = match name {
            "RNN" => Cell::Rnn,
            // GRU-1 had no linear_before_reset: it always reset before the linear transform.
            "GRU" => Cell::Gru { linear_before_reset: ctx.opset >= 3 && a.int_or("linear_before_reset", 0)? != 0 },
            "LSTM" | "DynamicQuantizeLSTM" => Cell::Lstm { input_forget: a.int_or("input_forget", 0)? != 0 },
            _ => bail!(Unsupported, "{name} is not a recurrent op"),
        };
        let direction = match a.string("direction")?.as_deref() {
            None | Some("forward") => Direction::Forward,
            Some("reverse") => Direction::Reverse,
            Some("bidirectional") => Direction::Bidirectional,
            Some(other) => bail!(InvalidModel, "{name}: direction '{other}' is not forward, reverse or bidirectional"),
        };
        let hidden_size = match a.int("hidden_size")? {
            None => None,
            Some(h) if h >= 1 => Some(h as usize),
            Some(h) => bail!(InvalidModel, "{name}: hidden_size {h} is not positive"),
        };
        let layout = if ctx.opset >= 14 { a.int_or("layout", 0)? } else { 0 };
        if layout != 0 && layout != 1 {
            bail!(InvalidModel, "{name}: layout {layout} is not 0 or 1");
        }
        let clip = match a.float("clip")? {
            Some(c) if c.is_nan() || c < 0.0 => bail!(InvalidModel, "{name}: clip {c} is negative"),
            c => c.map(f64::from),
        };
        let per_direction = cell.default_activations().len();
        let names = match a.strings("activations")? {
            Some(names) => names,
            None => cell.default_activations().iter().map(|s| s.to_string()).collect(),
        };
        let names = match names.len() {
            // One set for both directions of a bidirectional layer.
            n if n == per_direction => names.iter().cycle().take(n * direction.count()).cloned().collect(),
            n if n == per_direction * direction.count() => names,
            n => bail!(
                InvalidModel,
                "{name}: {n} activations given, expected {} ({per_direction} per direction)",
                per_direction * direction.count()
            ),
        };
        let activations = parse_activations(
            &names,
            &a.floats_or("activation_alpha", vec![])?,
            &a.floats_or("activation_beta", vec![])?,
        )?;
        Ok(Recurrent {
            cell,
            direction,
            hidden_size,
            batch_first: layout == 1,
            clip,
            activations,
            num_outputs: ctx.num_outputs.max(1),
        })
    }
}

/// One direction's parameters as f64 slices: W `[gates*H, I]`, R `[gates*H, H]`, the two bias
/// halves `[gates*H]` and the LSTM peepholes `[3H]` (i, o, f).
struct Params<'a> {
    w: &'a [f64],
    r: &'a [f64],
    wb: &'a [f64],
    rb: &'a [f64],
    peepholes: &'a [f64],
    acts: &'a [Activation],
}

/// Buffers reused across steps so that the time loop allocates nothing.
struct Scratch {
    from_x: Vec<f64>,
    from_h: Vec<f64>,
    reset_h: Vec<f64>,
}

/// `out = m · v + bias`, `m` row-major with `v.len()` columns.
fn affine(m: &[f64], v: &[f64], bias: &[f64], out: &mut [f64]) {
    let cols = v.len();
    for (k, (o, b)) in out.iter_mut().zip(bias).enumerate() {
        *o = b + m[k * cols..(k + 1) * cols].iter().zip(v).map(|(a, b)| a * b).sum::<f64>();
    }
}

impl Recurrent {
    fn clip(&self, x: f64) -> f64 {
        match self.clip {
            Some(c) => x.clamp(-c, c),
            None => x,
        }
    }

    /// Activation `k` of `p` applied to a clipped pre-activation.
    fn act(&self, p: &Params, k: usize, x: f64) -> f64 {
        p.acts[k].apply(self.clip(x))
    }

    /// One time step of one sequence: reads `x`, updates `h` (and `c` for LSTM) in place.
    fn step(&self, p: &Params, x: &[f64], h: &mut [f64], c: &mut [f64], s: &mut Scratch) {
        let hs = h.len();
        affine(p.w, x, p.wb, &mut s.from_x);
        match self.cell {
            Cell::Rnn => {
                affine(p.r, h, p.rb, &mut s.from_h);
                for (j, hj) in h.iter_mut().enumerate() {
                    *hj = self.act(p, 0, s.from_x[j] + s.from_h[j]);
                }
            }
            Cell::Gru { linear_before_reset } => {
                let (r_zr, r_h) = p.r.split_at(2 * hs * hs);
                let (from_h_zr, from_h_h) = s.from_h.split_at_mut(2 * hs);
                affine(r_zr, h, &p.rb[..2 * hs], from_h_zr);
                let reset = |j: usize| self.act(p, 0, s.from_x[hs + j] + from_h_zr[hs + j]);
                if linear_before_reset {
                    affine(r_h, h, &p.rb[2 * hs..], from_h_h);
                    for (j, v) in from_h_h.iter_mut().enumerate() {
                        *v *= reset(j);
                    }
                } else {
                    for (j, v) in s.reset_h.iter_mut().enumerate() {
                        *v = reset(j) * h[j];
                    }
                    affine(r_h, &s.reset_h, &p.rb[2 * hs..], from_h_h);
                }
                for (j, hj) in h.iter_mut().enumerate() {
                    let z = self.act(p, 0, s.from_x[j] + from_h_zr[j]);
                    let candidate = self.act(p, 1, s.from_x[2 * hs + j] + from_h_h[j]);
                    *hj = (1.0 - z) * candidate + z * *hj;
                }
            }
            Cell::Lstm { input_forget } => {
                affine(p.r, h, p.rb, &mut s.from_h);
                s.from_x.iter_mut().zip(&s.from_h).for_each(|(x, h)| *x += h);
                let cell = LstmCell { acts: p.acts, clip: self.clip, input_forget, peepholes: p.peepholes };
                cell.update(&s.from_x, c, h);
            }
        }
    }

    /// Output dims `(Y, Y_h)` in this op's layout from the sequence, batch and hidden dims.
    fn output_dims<T: Clone>(&self, seq: T, batch: T, hidden: T, directions: T) -> (Vec<T>, Vec<T>) {
        if self.batch_first {
            (vec![batch.clone(), seq, directions.clone(), hidden.clone()], vec![batch, directions, hidden])
        } else {
            (vec![seq, directions.clone(), batch.clone(), hidden.clone()], vec![directions, batch, hidden])
        }
    }
}

/// The LSTM state update of one sequence and direction. com.microsoft DynamicQuantizeLSTM shares
/// it, computing the gate pre-activations with its own quantized products.
pub(super) struct LstmCell<'a> {
    /// f, g, h.
    acts: &'a [Activation],
    clip: Option<f64>,
    input_forget: bool,
    /// `[3H]` (i, o, f), or empty for none.
    peepholes: &'a [f64],
}

impl LstmCell<'_> {
    /// Updates `c` and `h` in place from `gates`, the pre-activations `W·x + R·h + Wb + Rb` in
    /// blocks i, o, f, c of `h.len()` each.
    pub(super) fn update(&self, gates: &[f64], c: &mut [f64], h: &mut [f64]) {
        let hs = h.len();
        let act = |k: usize, x: f64| self.acts[k].apply(self.clip.map_or(x, |c| x.clamp(-c, c)));
        let peephole = |g: usize, j: usize| self.peepholes.get(g * hs + j).copied().unwrap_or(0.0);
        for j in 0..hs {
            let c_prev = c[j];
            let i = act(0, gates[j] + peephole(0, j) * c_prev);
            let f = if self.input_forget { 1.0 - i } else { act(0, gates[2 * hs + j] + peephole(2, j) * c_prev) };
            let candidate = act(1, gates[3 * hs + j]);
            c[j] = f * c_prev + i * candidate;
            let o = act(0, gates[hs + j] + peephole(1, j) * c[j]);
            h[j] = o * self.acts[2].apply(c[j]);
        }
    }
}

impl Recurrent {
    pub(super) fn direction(&self) -> Direction {
        self.direction
    }

    pub(super) fn hidden_size(&self) -> Option<usize> {
        self.hidden_size
    }

    /// The LSTM update of direction `d` with its `[3H]` peepholes (or none). The caller built
    /// this op as an LSTM.
    pub(super) fn lstm_cell<'a>(&'a self, d: usize, peepholes: &'a [f64]) -> LstmCell<'a> {
        let per_direction = self.activations.len() / self.direction.count();
        LstmCell {
            acts: &self.activations[d * per_direction..(d + 1) * per_direction],
            clip: self.clip,
            input_forget: matches!(self.cell, Cell::Lstm { input_forget: true }),
            peepholes,
        }
    }
}

/// Reads an optional per-direction parameter, checking its shape.
pub(super) fn param(inputs: &[Option<&Tensor>], i: usize, what: &str, want: &[usize]) -> Result<Option<Vec<f64>>> {
    let Some(t) = opt_input(inputs, i) else { return Ok(None) };
    if t.shape() != want {
        bail!(Shape, "{what} has shape {:?}, expected {want:?}", t.shape());
    }
    Ok(Some(t.to_f64_vec()?))
}

/// The per-batch sequence lengths from `sequence_lens`, each in `0..=seq`; all `seq` without it.
pub(super) fn sequence_lengths(name: &str, lens: Option<&Tensor>, batch: usize, seq: usize) -> Result<Vec<usize>> {
    let Some(t) = lens else { return Ok(vec![seq; batch]) };
    if t.shape() != [batch] {
        bail!(Shape, "{name}: sequence_lens has shape {:?}, expected [{batch}]", t.shape());
    }
    let lens = t.to_i64_vec()?;
    if let Some(bad) = lens.iter().find(|&&l| l < 0 || l as usize > seq) {
        bail!(Runtime, "{name}: sequence length {bad} is outside 0..={seq}");
    }
    Ok(lens.into_iter().map(|l| l as usize).collect())
}

/// Reorders a row-major tensor's elements by `perm` (output dim k is input dim `perm[k]`).
fn permute(data: &[f64], shape: &[usize], perm: &[usize]) -> Vec<f64> {
    let strides = strides_of(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let mut index = vec![0usize; shape.len()];
    let mut out = Vec::with_capacity(data.len());
    for _ in 0..data.len() {
        out.push(data[perm.iter().zip(&index).map(|(&p, &i)| i * strides[p]).sum::<usize>()]);
        for k in (0..index.len()).rev() {
            index[k] += 1;
            if index[k] < out_shape[k] {
                break;
            }
            index[k] = 0;
        }
    }
    out
}

impl Op for Recurrent {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, X)?;
        let Some(dtype) = x.dtype else { return Ok(vec![Fact::unknown(); self.num_outputs]) };
        let Some(shape) = x.shape.as_ref().filter(|s| s.len() == 3) else {
            return Ok(vec![Fact::of_dtype(dtype); self.num_outputs]);
        };
        let (seq, batch) = if self.batch_first { (&shape[1], &shape[0]) } else { (&shape[0], &shape[1]) };
        let from_r = opt_input(inputs, R).and_then(|r| r.shape.as_ref()).and_then(|s| s.get(2).cloned());
        let hidden = match self.hidden_size {
            Some(h) => Dim::Known(h),
            None => from_r.unwrap_or(Dim::Unknown),
        };
        let directions = Dim::Known(self.direction.count());
        let (y, y_h) = self.output_dims(seq.clone(), batch.clone(), hidden, directions);
        let mut facts = vec![Fact::new(dtype, y), Fact::new(dtype, y_h.clone())];
        if matches!(self.cell, Cell::Lstm { .. }) {
            facts.push(Fact::new(dtype, y_h));
        }
        facts.truncate(self.num_outputs);
        Ok(facts)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let name = self.cell.name();
        let x = input(inputs, X)?;
        let dtype = x.dtype();
        if !matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
            bail!(Unsupported, "{name} does not take {dtype} input");
        }
        let &[d0, d1, input_size] = x.shape() else {
            bail!(Shape, "{name}: X must have rank 3, got shape {:?}", x.shape());
        };
        let (seq, batch) = if self.batch_first { (d1, d0) } else { (d0, d1) };
        input(inputs, W)?;
        let r = input(inputs, R)?;
        let dirs = self.direction.count();
        let hidden = match (self.hidden_size, r.shape()) {
            (Some(h), _) => h,
            (None, &[_, _, h]) => h,
            (None, s) => bail!(Shape, "{name}: R must have rank 3, got shape {s:?}"),
        };
        // Bounds the products below; R's shape check then ties them to memory the caller really holds.
        checked_len(&[dirs, 2 * self.cell.gates(), hidden], DType::F64)?;
        let rows = self.cell.gates() * hidden;
        let w = param(inputs, W, "W", &[dirs, rows, input_size])?.unwrap_or_default();
        let r = param(inputs, R, "R", &[dirs, rows, hidden])?.unwrap_or_default();
        let b = param(inputs, B, "B", &[dirs, 2 * rows])?.unwrap_or(try_vec(dirs * 2 * rows, 0.0)?);
        let state_shape = if self.batch_first { [batch, dirs, hidden] } else { [dirs, batch, hidden] };
        let to_seq_major = |v: Vec<f64>| if self.batch_first { permute(&v, &state_shape, &[1, 0, 2]) } else { v };
        let state_len = checked_len(&[dirs, batch, hidden], DType::F64)?;
        let mut h = match param(inputs, INITIAL_H, "initial_h", &state_shape)? {
            Some(v) => to_seq_major(v),
            None => try_vec(state_len, 0.0)?,
        };
        let is_lstm = matches!(self.cell, Cell::Lstm { .. });
        let (mut c, peepholes) = if is_lstm {
            let c = match param(inputs, INITIAL_C, "initial_c", &state_shape)? {
                Some(v) => to_seq_major(v),
                None => try_vec(state_len, 0.0)?,
            };
            (c, param(inputs, PEEPHOLES, "P", &[dirs, 3 * hidden])?.unwrap_or_default())
        } else {
            (try_vec(state_len, 0.0)?, vec![])
        };
        let lengths = sequence_lengths(name, opt_input(inputs, SEQUENCE_LENS), batch, seq)?;
        let xs = if self.batch_first { permute(&x.to_f64_vec()?, x.shape(), &[1, 0, 2]) } else { x.to_f64_vec()? };

        // Y is built sequence-major, [seq, dirs, batch, hidden]; steps past a length stay zero.
        let mut y = try_vec(checked_len(&[seq, dirs, batch, hidden], dtype)?, 0.0)?;
        let mut scratch = Scratch { from_x: vec![0.0; rows], from_h: vec![0.0; rows], reset_h: vec![0.0; hidden] };
        let per_direction = self.activations.len() / dirs;
        for d in 0..dirs {
            let bias = &b[d * 2 * rows..(d + 1) * 2 * rows];
            let params = Params {
                w: &w[d * rows * input_size..(d + 1) * rows * input_size],
                r: &r[d * rows * hidden..(d + 1) * rows * hidden],
                wb: &bias[..rows],
                rb: &bias[rows..],
                peepholes: peepholes.get(d * 3 * hidden..(d + 1) * 3 * hidden).unwrap_or(&[]),
                acts: &self.activations[d * per_direction..(d + 1) * per_direction],
            };
            for (n, &len) in lengths.iter().enumerate() {
                let state = (d * batch + n) * hidden..(d * batch + n + 1) * hidden;
                if len == 0 {
                    // onnxruntime's convention: an empty sequence ends in zero states, not the initial ones.
                    h[state.clone()].fill(0.0);
                    c[state.clone()].fill(0.0);
                }
                for k in 0..len {
                    let t = if self.direction.is_reversed(d) { len - 1 - k } else { k };
                    let x_t = &xs[(t * batch + n) * input_size..(t * batch + n + 1) * input_size];
                    self.step(&params, x_t, &mut h[state.clone()], &mut c[state.clone()], &mut scratch);
                    let out = ((t * dirs + d) * batch + n) * hidden;
                    y[out..out + hidden].copy_from_slice(&h[state.clone()]);
                }
            }
        }

        let (y_shape, state_out_shape) = self.output_dims(seq, batch, hidden, dirs);
        let from_seq_major = |v: Vec<f64>, shape: &[usize], perm: &[usize]| {
            if self.batch_first {
                permute(&v, shape, perm)
            } else {
                v
            }
        };
        let y = from_seq_major(y, &[seq, dirs, batch, hidden], &[2, 0, 1, 3]);
        let mut outputs =
            vec![(y, y_shape), (from_seq_major(h, &[dirs, batch, hidden], &[1, 0, 2]), state_out_shape.clone())];
        if is_lstm {
            outputs.push((from_seq_major(c, &[dirs, batch, hidden], &[1, 0, 2]), state_out_shape));
        }
        outputs.truncate(self.num_outputs);
        outputs.into_iter().map(|(data, shape)| Tensor::new(shape, data)?.cast_numeric(dtype)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::ops::activation::test_util::{assert_close, build};
    use crate::ErrorKind;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::new(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn floats(t: &Tensor) -> Vec<f32> {
        t.as_slice::<f32>().unwrap().to_vec()
    }

    fn s(v: &str) -> Attr {
        Attr::String(v.to_string())
    }

    // Expected values in these tests come from the numpy recurrences of
    // tests/models/gen_rnn_models.py (which agree with onnxruntime on the golden models).
    #[test]
    fn reverse_rnn_zeroes_steps_past_each_sequence_length() {
        let x: Vec<f32> = (0..12).map(|i| i as f32 * 0.1 - 0.5).collect();
        let x = t(&[3, 2, 2], &x);
        let w = t(&[1, 2, 2], &[0.5, -0.3, 0.2, 0.4]);
        let r = t(&[1, 2, 2], &[0.1, 0.2, -0.3, 0.5]);
        let b = t(&[1, 4], &[0.1, -0.1, 0.05, 0.0]);
        let lens = Tensor::vector(vec![3i32, 1]);
        let op = build("RNN", 14, vec![("hidden_size", Attr::Int(2)), ("direction", s("reverse"))], 2).unwrap();
        let out = op.eval(&[Some(&x), Some(&w), Some(&r), Some(&b), Some(&lens)]).unwrap();
        assert_eq!(out[0].shape(), [3, 1, 2, 2]);
        let y = [0.01143019, -0.42913616, 0.0599281, -0.23549575, 0.14075285, -0.11322303, 0.0, 0.0];
        assert_close(&floats(&out[0])[..8], &y);
        assert_close(&floats(&out[0])[8..], &[0.17808086, 0.11942732, 0.0, 0.0]);
        assert_close(&floats(&out[1]), &y[..4]);
    }

    #[test]
    fn empty_sequences_end_in_zero_states() {
        let i = lstm_inputs();
        let empty = Tensor::vector(vec![0i64]);
        let op = build("LSTM", 14, vec![], 3).unwrap();
        let out =
            op.eval(&[Some(&i[0]), Some(&i[1]), Some(&i[2]), None, Some(&empty), Some(&i[5]), Some(&i[5])]).unwrap();
        for o in &out {
            assert!(floats(o).iter().all(|&v| v == 0.0), "{o:?}");
        }
    }

    #[test]
    fn bidirectional_batch_first_gru_both_reset_orders() {
        let x = t(&[2, 2, 2], &[1.0, 2.0, 3.0, -1.0, 0.5, 0.5, -1.0, 0.0]);
        let w = t(&[2, 3, 2], &[0.1, 0.2, 0.3, -0.1, 0.2, 0.2, -0.2, 0.1, 0.1, 0.1, 0.4, -0.3]);
        let r = t(&[2, 3, 1], &[0.5, -0.5, 0.3, 0.2, 0.1, -0.4]);
        let b = t(&[2, 6], &[0.5; 12]);
        let h0 = t(&[2, 2, 1], &[0.1, -0.2, 0.3, 0.0]);
        let expected = [
            (0, [0.24443673, 0.3908926, 0.39323235, 0.31727615, 0.4183068, 0.3003057, 0.4894986, 0.12431366]),
            (1, [0.24073504, 0.37187466, 0.38744912, 0.31591904, 0.4091083, 0.26800796, 0.45562947, 0.09869844]),
        ];
        for (lbr, y) in expected {
            let attrs = vec![
                ("hidden_size", Attr::Int(1)),
                ("direction", s("bidirectional")),
                ("layout", Attr::Int(1)),
                ("linear_before_reset", Attr::Int(lbr)),
            ];
            let op = build("GRU", 14, attrs, 2).unwrap();
            let out = op.eval(&[Some(&x), Some(&w), Some(&r), Some(&b), None, Some(&h0)]).unwrap();
            assert_eq!(out[0].shape(), [2, 2, 2, 1]);
            assert_close(&floats(&out[0]), &y);
            assert_close(&floats(&out[1]), &[y[2], y[1], y[6], y[5]]);
        }
    }

    fn lstm_inputs() -> Vec<Tensor> {
        let w: Vec<f32> = (0..8).map(|i| (i as f32 - 3.0) * 0.2).collect();
        let r: Vec<f32> = (0..16).map(|i| ((i % 5) as f32 - 2.0) * 0.1).collect();
        let b: Vec<f32> = (0..16).map(|i| -0.2 + i as f32 * 0.5 / 15.0).collect();
        vec![
            t(&[2, 1, 1], &[1.0, -2.0]),
            t(&[1, 8, 1], &w),
            t(&[1, 8, 2], &r),
            t(&[1, 16], &b),
            t(&[1, 1, 2], &[0.0, 0.0]),
            t(&[1, 1, 2], &[0.5, -0.5]),
            t(&[1, 6], &[0.1, -0.2, 0.3, 0.05, 0.0, -0.1]),
        ]
    }

    #[test]
    fn lstm_with_peepholes_initial_cell_clip_and_input_forget() {
        let i = lstm_inputs();
        let args = [Some(&i[0]), Some(&i[1]), Some(&i[2]), Some(&i[3]), None, Some(&i[4]), Some(&i[5]), Some(&i[6])];
        let op = build("LSTM", 7, vec![("hidden_size", Attr::Int(2))], 3).unwrap();
        let out = op.eval(&args).unwrap();
        assert_close(&floats(&out[0]), &[0.23608714, 0.00204026, -0.17860436, -0.2579977]);
        assert_close(&floats(&out[1]), &[-0.17860436, -0.2579977]);
        assert_close(&floats(&out[2]), &[-0.3140748, -0.5657244]);
        let attrs = vec![("clip", Attr::Float(0.3)), ("input_forget", Attr::Int(1))];
        let out = build("LSTM", 22, attrs, 3).unwrap().eval(&args).unwrap();
        assert_close(&floats(&out[0]), &[0.18728285, -0.08327407, 0.00439054, -0.1183404]);
        assert_close(&floats(&out[2]), &[0.00764328, -0.23681503]);
    }

    #[test]
    fn computes_f64_and_f16_like_f32() {
        let i = lstm_inputs();
        let args = |v: &[Tensor]| -> Vec<Tensor> {
            let op = build("LSTM", 14, vec![], 2).unwrap();
            op.eval(&[Some(&v[0]), Some(&v[1]), Some(&v[2]), Some(&v[3])]).unwrap()
        };
        let want = floats(&args(&i)[0]);
        for dtype in [DType::F64, DType::F16] {
            let cast: Vec<Tensor> = i.iter().map(|t| t.cast_numeric(dtype).unwrap()).collect();
            let out = args(&cast);
            assert_eq!(out[0].dtype(), dtype);
            let got: Vec<f32> = out[0].to_f64_vec().unwrap().iter().map(|&v| v as f32).collect();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 2e-3, "{dtype}: {got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn activations_take_alpha_and_beta_in_order() {
        let names: Vec<String> = ["HardSigmoid", "LeakyRelu", "ScaledTanh"].iter().map(|s| s.to_string()).collect();
        let acts = parse_activations(&names, &[0.3, 0.05, 1.5], &[0.4, 0.7]).unwrap();
        assert_eq!(
            acts,
            [
                Activation::HardSigmoid { alpha: 0.3f32 as f64, beta: 0.4f32 as f64 },
                Activation::LeakyRelu { alpha: 0.05f32 as f64 },
                Activation::ScaledTanh { alpha: 1.5, beta: 0.7f32 as f64 },
            ]
        );
        let defaults = parse_activations(&["elu".to_string(), "Affine".to_string()], &[], &[]).unwrap();
        assert_eq!(defaults, [Activation::Elu { alpha: 1.0 }, Activation::Affine { alpha: 1.0, beta: 0.0 }]);
        let probe = [-2.0, 0.5, 3.0];
        let apply = |a: Activation| probe.map(|x| a.apply(x) as f32);
        assert_close(&apply(Activation::ThresholdedRelu { alpha: 1.0 }), &[0.0, 0.0, 3.0]);
        assert_close(&apply(Activation::Softsign), &[-0.6666667, 0.33333334, 0.75]);
        assert_close(&apply(Activation::Softplus), &[0.12692805, 0.974077, 3.0485873]);
        assert_close(&apply(Activation::Sigmoid), &[0.11920292, 0.62245935, 0.95257413]);
        assert_close(&apply(Activation::Elu { alpha: 2.0 }), &[-1.7293295, 0.5, 3.0]);
    }

    #[test]
    fn infers_symbolic_sequence_and_batch() {
        let sym = |s: &str| Dim::Symbol(s.to_string());
        let x = Fact::new(DType::F32, vec![sym("N"), sym("T"), Dim::Known(16)]);
        let r = Fact::concrete(DType::F32, &[2, 32, 8]);
        let attrs = vec![("direction", s("bidirectional")), ("layout", Attr::Int(1))];
        let facts = build("LSTM", 14, attrs, 3).unwrap().infer(&[Some(&x), None, Some(&r)]).unwrap();
        assert_eq!(facts.len(), 3);
        assert_eq!(facts[0].shape, Some(vec![sym("N"), sym("T"), Dim::Known(2), Dim::Known(8)]));
        assert_eq!(facts[2].shape, Some(vec![sym("N"), Dim::Known(2), Dim::Known(8)]));
        let x = Fact::new(DType::F16, vec![sym("T"), sym("N"), Dim::Known(3)]);
        let facts = build("GRU", 7, vec![("hidden_size", Attr::Int(5))], 2).unwrap().infer(&[Some(&x)]).unwrap();
        assert_eq!(facts[1].dtype, Some(DType::F16));
        assert_eq!(facts[1].shape, Some(vec![Dim::Known(1), sym("N"), Dim::Known(5)]));
        let unknown = build("RNN", 7, vec![], 2).unwrap().infer(&[Some(&Fact::of_dtype(DType::F32))]).unwrap();
        assert_eq!(unknown[0].shape, None);
    }

    #[test]
    fn rejects_bad_attributes_and_inputs() {
        let i = lstm_inputs();
        let kind = |r: Result<Box<dyn Op>>| r.err().map(|e| e.kind);
        assert_eq!(kind(build("RNN", 14, vec![("direction", s("sideways"))], 1)), Some(ErrorKind::InvalidModel));
        let two = Attr::Strings(vec!["Tanh".into(), "Tanh".into()]);
        assert_eq!(kind(build("RNN", 14, vec![("activations", two)], 1)), Some(ErrorKind::InvalidModel));
        let odd = Attr::Strings(vec!["Swish".into()]);
        assert_eq!(kind(build("RNN", 14, vec![("activations", odd)], 1)), Some(ErrorKind::Unsupported));
        assert_eq!(kind(build("GRU", 14, vec![("layout", Attr::Int(2))], 1)), Some(ErrorKind::InvalidModel));

        let op = build("LSTM", 14, vec![("hidden_size", Attr::Int(2))], 2).unwrap();
        let too_long = Tensor::vector(vec![3i32]);
        let e = op.eval(&[Some(&i[0]), Some(&i[1]), Some(&i[2]), None, Some(&too_long)]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Runtime, "{e}");
        let e = op.eval(&[Some(&i[0]), Some(&i[2]), Some(&i[2])]).unwrap_err();
        assert!(e.message.contains("W has shape"), "{e}");
        let e = op.eval(&[Some(&i[0]), Some(&i[1])]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidModel);
        let huge = build("LSTM", 14, vec![("hidden_size", Attr::Int(i64::MAX))], 2).unwrap();
        assert_eq!(huge.eval(&[Some(&i[0]), Some(&i[1]), Some(&i[2])]).unwrap_err().kind, ErrorKind::ResourceLimit);
        let ints = Tensor::new(vec![2, 1, 1], vec![1i64, 2]).unwrap();
        assert_eq!(op.eval(&[Some(&ints), Some(&i[1]), Some(&i[2])]).unwrap_err().kind, ErrorKind::Unsupported);
    }
}
