//! Einsum (opset 12): a general tensor contraction given by an equation such as `bij,bjk->bik`.
//!
//! Each operand is first reduced to distinct labels (repeated labels take the diagonal) with the
//! labels no other operand or the output needs summed away. Operands are then folded left to right:
//! each pair is laid out as a batched matrix product `[batch, m, k] x [batch, k, n]`, which keeps the
//! common two-operand cases as fast as a matmul loop. Size-1 dims broadcast against their label.

use super::binary::narrow;
use super::reshape::numel;
use super::{BuildCtx, Op, Registry};
use crate::ir::shape::strides_of;
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{DType, Dim, Elem, Fact, Tensor};
use crate::{bail, err, Result};

pub fn register(r: &mut Registry) {
    r.add("Einsum", build_einsum);
}

/// Letters get ids 0..52; the dims an ellipsis stands for get ids from 52 on.
const ELLIPSIS_BASE: usize = 52;

#[derive(Debug)]
pub struct Einsum {
    equation: String,
}

fn build_einsum(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    if ctx.opset < 12 {
        return Err(ctx.unsupported_version());
    }
    let equation: String = ctx.attrs.required("equation", ctx.attrs.string("equation"))?;
    let equation: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    // Parse once here so that a malformed equation is a load-time error.
    parse_term(equation.split("->").next().unwrap_or(""))?;
    Ok(Box::new(Einsum { equation }))
}

/// One subscript term: its letters in order, with the position of `...` if there is one.
#[derive(Debug)]
struct Term {
    letters: Vec<usize>,
    ellipsis_at: Option<usize>,
}

fn parse_term(s: &str) -> Result<Vec<Term>> {
    s.split(',')
        .map(|t| {
            let mut letters = Vec::new();
            let mut ellipsis_at = None;
            let mut rest = t;
            while let Some(c) = rest.chars().next() {
                if let Some(after) = rest.strip_prefix("...") {
                    if ellipsis_at.is_some() {
                        bail!(InvalidModel, "Einsum: term '{t}' has more than one ellipsis");
                    }
                    ellipsis_at = Some(letters.len());
                    rest = after;
                    continue;
                }
                letters.push(match c {
                    'a'..='z' => c as usize - 'a' as usize,
                    'A'..='Z' => 26 + c as usize - 'A' as usize,
                    _ => bail!(InvalidModel, "Einsum: unexpected '{c}' in term '{t}'"),
                });
                rest = &rest[c.len_utf8()..];
            }
            Ok(Term { letters, ellipsis_at })
        })
        .collect()
}

/// The equation resolved against concrete input ranks.
#[derive(Debug)]
struct Plan {
    /// Label ids of each input's axes.
    inputs: Vec<Vec<usize>>,
    output: Vec<usize>,
}

impl Einsum {
    fn plan(&self, ranks: &[usize]) -> Result<Plan> {
        let (lhs, rhs) = match self.equation.split_once("->") {
            Some((l, r)) => (l, Some(r)),
            None => (self.equation.as_str(), None),
        };
        let terms = parse_term(lhs)?;
        if terms.len() != ranks.len() {
            bail!(
                InvalidModel,
                "Einsum: equation '{}' has {} terms for {} inputs",
                self.equation,
                terms.len(),
                ranks.len()
            );
        }
        let mut ellipsis_rank = 0;
        let mut inputs = Vec::with_capacity(ranks.len());
        for (i, (term, &rank)) in terms.iter().zip(ranks).enumerate() {
            let covered = match term.ellipsis_at {
                Some(_) if rank >= term.letters.len() => rank - term.letters.len(),
                None if rank == term.letters.len() => 0,
                _ => bail!(
                    Shape,
                    "Einsum: input {i} has rank {rank}, which does not fit its term in '{}'",
                    self.equation
                ),
            };
            ellipsis_rank = ellipsis_rank.max(covered);
            inputs.push((term, covered));
        }
        let expand = |term: &Term, covered: usize| -> Vec<usize> {
            let mut ids = term.letters.clone();
            if let Some(at) = term.ellipsis_at {
                // Ellipsis dims broadcast aligned to the right, like numpy.
                let dims = (ellipsis_rank - covered..ellipsis_rank).map(|j| ELLIPSIS_BASE + j);
                ids.splice(at..at, dims);
            }
            ids
        };
        let inputs: Vec<Vec<usize>> = inputs.into_iter().map(|(t, c)| expand(t, c)).collect();
        let output = match rhs {
            Some(r) => {
                let mut terms = parse_term(r)?;
                if terms.len() != 1 {
                    bail!(InvalidModel, "Einsum: output of '{}' must be a single term", self.equation);
                }
                let term = terms.remove(0);
                // An output without `...` sums the ellipsis dims away, as numpy does.
                let out = expand(&term, ellipsis_rank);
                for (k, id) in out.iter().enumerate() {
                    if out[..k].contains(id) {
                        bail!(InvalidModel, "Einsum: output label repeats in '{}'", self.equation);
                    }
                    if !inputs.iter().any(|l| l.contains(id)) {
                        bail!(InvalidModel, "Einsum: output label is not in any input of '{}'", self.equation);
                    }
                }
                out
            }
            None => {
                // Implicit output: the ellipsis dims, then the letters used once, in alphabetical order.
                let mut out: Vec<usize> = (ELLIPSIS_BASE..ELLIPSIS_BASE + ellipsis_rank).collect();
                let count = |id: usize| inputs.iter().flatten().filter(|&&x| x == id).count();
                // Upper case sorts before lower case, as in ASCII.
                let order = (26..52).chain(0..26);
                out.extend(order.filter(|&id| count(id) == 1));
                out
            }
        };
        Ok(Plan { inputs, output })
    }
}

/// The size of every label, checking that its dims agree (1 broadcasts).
fn label_sizes(plan: &Plan, shapes: &[&[usize]]) -> Result<Vec<usize>> {
    let mut sizes: Vec<Option<usize>> = vec![None; ELLIPSIS_BASE + 64];
    for (labels, shape) in plan.inputs.iter().zip(shapes) {
        for (&id, &d) in labels.iter().zip(shape.iter()) {
            let slot = sizes.get_mut(id).ok_or_else(|| err!(Unsupported, "Einsum: too many ellipsis dims"))?;
            *slot = match *slot {
                None | Some(1) => Some(d),
                Some(s) if d == 1 || d == s => Some(s),
                Some(s) => bail!(Shape, "Einsum: a label has dims {s} and {d}, which do not broadcast"),
            };
        }
    }
    Ok(sizes.into_iter().map(|s| s.unwrap_or(1)).collect())
}

/// Arithmetic of the accumulator: floats as usual, integers wrapping like the C runtimes.
trait Acc: Copy + Default + Send + Sync {
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
}

impl Acc for f32 {
    fn add(self, o: f32) -> f32 {
        self + o
    }
    fn mul(self, o: f32) -> f32 {
        self * o
    }
}

impl Acc for f64 {
    fn add(self, o: f64) -> f64 {
        self + o
    }
    fn mul(self, o: f64) -> f64 {
        self * o
    }
}

impl Acc for i64 {
    fn add(self, o: i64) -> i64 {
        self.wrapping_add(o)
    }
    fn mul(self, o: i64) -> i64 {
        self.wrapping_mul(o)
    }
}

/// A tensor in the middle of the contraction: one axis per distinct label.
struct Operand<A> {
    labels: Vec<usize>,
    data: Vec<A>,
}

/// Lays `data` (axes `src`, dims `dims`) out with axes `dst` followed by `summed`, then sums the
/// `summed` block away. A label repeated in `src` reads its diagonal; a size-1 dim broadcasts.
fn rearrange<A: Acc>(
    data: &[A],
    src: &[usize],
    dims: &[usize],
    dst: &[usize],
    summed: &[usize],
    sizes: &[usize],
) -> Result<Vec<A>> {
    let src_strides = strides_of(dims);
    let stride_of = |id: usize| -> usize {
        src.iter().zip(dims).zip(&src_strides).filter(|((&l, &d), _)| l == id && d != 1).map(|(_, &s)| s).sum()
    };
    let all: Vec<usize> = dst.iter().chain(summed).copied().collect();
    let shape: Vec<usize> = all.iter().map(|&id| sizes[id]).collect();
    let strides: Vec<usize> = all.iter().map(|&id| stride_of(id)).collect();
    let kept = checked_len(&shape[..dst.len()], DType::F64)?;
    let block = numel(&shape[dst.len()..]);
    let mut out = try_vec(kept, A::default())?;
    if block == 0 {
        return Ok(out);
    }
    let mut index = vec![0usize; all.len()];
    let mut offset = 0usize;
    let mut acc = A::default();
    for step in 0..kept * block {
        acc = acc.add(data[offset]);
        if (step + 1) % block == 0 {
            out[step / block] = acc;
            acc = A::default();
        }
        // Odometer increment, keeping the source offset in step.
        for axis in (0..all.len()).rev() {
            index[axis] += 1;
            offset += strides[axis];
            if index[axis] < shape[axis] {
                break;
            }
            offset -= strides[axis] * shape[axis];
            index[axis] = 0;
        }
    }
    Ok(out)
}

/// `[batch, m, k] x [batch, k, n] -> [batch, m, n]`.
fn batched_matmul<A: Acc>(a: &[A], b: &[A], batch: usize, m: usize, k: usize, n: usize) -> Result<Vec<A>> {
    let mut out = try_vec(checked_len(&[batch, m, n], DType::F64)?, A::default())?;
    for p in 0..batch {
        let (a, b) = (&a[p * m * k..(p + 1) * m * k], &b[p * k * n..(p + 1) * k * n]);
        let c = &mut out[p * m * n..(p + 1) * m * n];
        for i in 0..m {
            let row = &mut c[i * n..(i + 1) * n];
            for (kk, &av) in a[i * k..(i + 1) * k].iter().enumerate() {
                row.iter_mut().zip(&b[kk * n..(kk + 1) * n]).for_each(|(r, &bv)| *r = r.add(av.mul(bv)));
            }
        }
    }
    Ok(out)
}

fn contract<A: Acc>(plan: &Plan, shapes: &[&[usize]], data: Vec<Vec<A>>, sizes: &[usize]) -> Result<Vec<A>> {
    let needed_after = |from: usize| -> Vec<usize> {
        plan.inputs[from.min(plan.inputs.len())..].iter().flatten().chain(&plan.output).copied().collect()
    };
    let distinct = |labels: &[usize]| -> Vec<usize> {
        let mut v: Vec<usize> = Vec::new();
        labels.iter().for_each(|&l| {
            if !v.contains(&l) {
                v.push(l)
            }
        });
        v
    };
    let mut operands = Vec::with_capacity(data.len());
    for (i, (labels, values)) in plan.inputs.iter().zip(data).enumerate() {
        let elsewhere: Vec<usize> = plan
            .inputs
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .flat_map(|(_, l)| l)
            .chain(&plan.output)
            .copied()
            .collect();
        let (keep, drop): (Vec<usize>, Vec<usize>) = distinct(labels).into_iter().partition(|l| elsewhere.contains(l));
        let values = rearrange(&values, labels, shapes[i], &keep, &drop, sizes)?;
        operands.push(Operand { labels: keep, data: values });
    }
    let mut operands = operands.into_iter();
    let mut acc = operands.next().ok_or_else(|| err!(InvalidModel, "Einsum needs at least one input"))?;
    for (step, b) in operands.enumerate() {
        let later = needed_after(step + 2);
        let batch: Vec<usize> =
            acc.labels.iter().filter(|l| b.labels.contains(l) && later.contains(l)).copied().collect();
        let inner: Vec<usize> =
            acc.labels.iter().filter(|l| b.labels.contains(l) && !later.contains(l)).copied().collect();
        let (a_keep, a_sum): (Vec<usize>, Vec<usize>) =
            acc.labels.iter().filter(|l| !b.labels.contains(l)).partition(|l| later.contains(l));
        let (b_keep, b_sum): (Vec<usize>, Vec<usize>) =
            b.labels.iter().filter(|l| !acc.labels.contains(l)).partition(|l| later.contains(l));
        let a_dst: Vec<usize> = batch.iter().chain(&a_keep).chain(&inner).copied().collect();
        let b_dst: Vec<usize> = batch.iter().chain(&inner).chain(&b_keep).copied().collect();
        let dims = |labels: &[usize]| -> Vec<usize> { labels.iter().map(|&l| sizes[l]).collect() };
        let a = rearrange(&acc.data, &acc.labels, &dims(&acc.labels), &a_dst, &a_sum, sizes)?;
        let bv = rearrange(&b.data, &b.labels, &dims(&b.labels), &b_dst, &b_sum, sizes)?;
        let size = |labels: &[usize]| labels.iter().map(|&l| sizes[l]).product::<usize>();
        let data = batched_matmul(&a, &bv, size(&batch), size(&a_keep), size(&inner), size(&b_keep))?;
        acc = Operand { labels: batch.into_iter().chain(a_keep).chain(b_keep).collect(), data };
    }
    let dims: Vec<usize> = acc.labels.iter().map(|&l| sizes[l]).collect();
    let rest: Vec<usize> = acc.labels.iter().filter(|l| !plan.output.contains(l)).copied().collect();
    rearrange(&acc.data, &acc.labels, &dims, &plan.output, &rest, sizes)
}

/// The contraction of inputs that hold `A` elements (already in the accumulator's dtype).
fn run_typed<A: Acc + Elem>(inputs: &[Tensor], plan: &Plan) -> Result<Tensor> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    let sizes = label_sizes(plan, &shapes)?;
    let data = inputs.iter().map(|t| Ok(t.as_slice::<A>()?.to_vec())).collect::<Result<Vec<Vec<A>>>>()?;
    let out = contract(plan, &shapes, data, &sizes)?;
    let shape = plan.output.iter().map(|&l| sizes[l]).collect();
    Tensor::new(shape, out)
}

impl Op for Einsum {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let dtype = inputs.first().copied().flatten().and_then(|f| f.dtype);
        let ranks: Option<Vec<usize>> = inputs.iter().map(|f| f.and_then(|f| f.rank())).collect();
        let Some(ranks) = ranks else { return Ok(vec![Fact { dtype, shape: None, value: None }]) };
        let plan = self.plan(&ranks)?;
        let shape = plan
            .output
            .iter()
            .map(|&id| {
                // A label's dim is known when some input has it other than 1 (or every input has 1).
                let dims = plan.inputs.iter().zip(inputs).flat_map(|(labels, f)| {
                    let s = f.and_then(|f| f.shape.as_ref());
                    labels.iter().zip(s.into_iter().flatten()).filter(move |(&l, _)| l == id).map(|(_, d)| d.clone())
                });
                let dims: Vec<Dim> = dims.collect();
                dims.iter().find(|d| !matches!(d, Dim::Known(1))).cloned().unwrap_or(Dim::Known(1))
            })
            .collect();
        Ok(vec![Fact { dtype, shape: Some(shape), value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let inputs: Vec<&Tensor> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| t.ok_or_else(|| err!(InvalidModel, "Einsum: input {i} is missing")))
            .collect::<Result<_>>()?;
        let Some(first) = inputs.first() else { bail!(InvalidModel, "Einsum needs at least one input") };
        let dtype = first.dtype();
        if let Some(t) = inputs.iter().find(|t| t.dtype() != dtype) {
            bail!(Shape, "Einsum: inputs mix {dtype} and {}", t.dtype());
        }
        let ranks: Vec<usize> = inputs.iter().map(|t| t.rank()).collect();
        let plan = self.plan(&ranks)?;
        // Accumulate in f32 (float16, bfloat16 too, rounded once at the end), f64, or wrapping
        // i64 for every integer dtype (whose low bits are then those of its own arithmetic).
        let acc = match dtype {
            DType::F32 | DType::F16 | DType::BF16 => DType::F32,
            DType::F64 => DType::F64,
            d if d.is_int() => DType::I64,
            _ => bail!(Unsupported, "Einsum does not take {dtype}"),
        };
        let inputs = inputs.iter().map(|t| t.cast_numeric(acc)).collect::<Result<Vec<_>>>()?;
        let out = match acc {
            DType::F32 => run_typed::<f32>(&inputs, &plan)?,
            DType::F64 => run_typed::<f64>(&inputs, &plan)?,
            _ => run_typed::<i64>(&inputs, &plan)?,
        };
        Ok(vec![narrow(out, dtype)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::ops::activation::test_util::build;
    use crate::ErrorKind;

    fn einsum(eq: &str, inputs: &[&Tensor]) -> Result<Tensor> {
        let op = build("Einsum", 12, vec![("equation", Attr::String(eq.into()))], 1)?;
        let inputs: Vec<Option<&Tensor>> = inputs.iter().map(|&t| Some(t)).collect();
        Ok(op.eval(&inputs)?.remove(0))
    }

    fn m(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::new(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn matmul_diagonal_and_trace() {
        let a = m(&[2, 2], &[1., 2., 3., 4.]);
        let b = m(&[2, 2], &[5., 6., 7., 8.]);
        let y = einsum("ij,jk", &[&a, &b]).unwrap();
        assert_eq!((y.shape(), y.as_slice::<f32>().unwrap()), (&[2usize, 2][..], &[19f32, 22., 43., 50.][..]));
        let y = einsum("ij,kj->ki", &[&a, &b]).unwrap();
        // b @ a.T = [[5*1+6*2, 5*3+6*4], [7*1+8*2, 7*3+8*4]]
        assert_eq!(y.as_slice::<f32>().unwrap(), &[17., 39., 23., 53.]);
        assert_eq!(einsum("ii->i", &[&a]).unwrap().as_slice::<f32>().unwrap(), &[1., 4.]);
        let trace = einsum("ii", &[&a]).unwrap();
        assert_eq!((trace.shape(), trace.as_slice::<f32>().unwrap()), (&[][..], &[5f32][..]));
    }

    #[test]
    fn ellipsis_broadcast_and_three_operands() {
        let x = Tensor::new(vec![2, 3], (0..6i64).collect()).unwrap();
        let ones = Tensor::new(vec![1], vec![1i64]).unwrap();
        // The size-1 dim of `ones` broadcasts against i = 3.
        let y = einsum("...i,i", &[&x, &ones]).unwrap();
        assert_eq!(y.as_slice::<i64>().unwrap(), &[3, 12]);
        let (p, q, r) = (m(&[2], &[1., 2.]), m(&[2], &[3., 4.]), m(&[2], &[5., 6.]));
        assert_eq!(einsum("i,i,i->", &[&p, &q, &r]).unwrap().as_slice::<f32>().unwrap(), &[63.]);
        let outer = einsum("i,j->ij", &[&p, &q]).unwrap();
        assert_eq!(outer.as_slice::<f32>().unwrap(), &[3., 4., 6., 8.]);
    }

    #[test]
    fn bad_equations_are_errors() {
        let a = m(&[2, 2], &[1., 2., 3., 4.]);
        assert_eq!(einsum("ij->ik", &[&a]).unwrap_err().kind, ErrorKind::InvalidModel);
        assert_eq!(einsum("ijk->i", &[&a]).unwrap_err().kind, ErrorKind::Shape);
        assert!(einsum("i$", &[&a]).is_err());
        let b = m(&[3, 2], &[0.; 6]);
        assert_eq!(einsum("ij,jk", &[&a, &b]).unwrap_err().kind, ErrorKind::Shape);
    }
}
