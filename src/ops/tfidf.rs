//! TfIdfVectorizer: counts the pool's n-grams (optionally with skips) in each row of int or string
//! tokens and weights the counts (TF, IDF or TFIDF).

use super::{input, BuildCtx, Op, Registry};
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{DType, Dim, Fact, Tensor};
use crate::{bail, Result};
use std::collections::HashMap;

pub fn register(r: &mut Registry) {
    r.add("TfIdfVectorizer", build);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Weighting {
    Tf,
    Idf,
    TfIdf,
}

/// The pool's tokens: int64 values as they are, strings as their index in `vocabulary`, so that
/// both kinds of pool count n-grams of i64 tokens.
#[derive(Debug)]
enum Tokens {
    Ints,
    Strings { vocabulary: HashMap<String, i64> },
}

#[derive(Debug)]
struct TfIdfVectorizer {
    weighting: Weighting,
    min_gram: usize,
    max_gram: usize,
    max_skip: usize,
    tokens: Tokens,
    /// Each pool n-gram with a length in `min_gram..=max_gram`, to its output column.
    ngrams: HashMap<Vec<i64>, usize>,
    output_size: usize,
    weights: Option<Vec<f32>>,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    let weighting = match a.required("mode", a.string("mode"))?.as_str() {
        "TF" => Weighting::Tf,
        "IDF" => Weighting::Idf,
        "TFIDF" => Weighting::TfIdf,
        other => bail!(InvalidModel, "TfIdfVectorizer mode '{other}' is not TF, IDF or TFIDF"),
    };
    let length = |name: &str| -> Result<usize> {
        let v = a.req_int(name)?;
        usize::try_from(v).map_err(|_| crate::err!(InvalidModel, "TfIdfVectorizer {name} is negative ({v})"))
    };
    let (min_gram, max_gram, max_skip) =
        (length("min_gram_length")?, length("max_gram_length")?, length("max_skip_count")?);
    if min_gram == 0 || min_gram > max_gram {
        bail!(
            InvalidModel,
            "TfIdfVectorizer needs 1 <= min_gram_length <= max_gram_length, got {min_gram} and {max_gram}"
        );
    }
    let counts = a.required("ngram_counts", a.ints("ngram_counts"))?;
    let indexes = a.required("ngram_indexes", a.ints("ngram_indexes"))?;
    let (pool, tokens) = match (a.ints("pool_int64s")?, a.strings("pool_strings")?) {
        (Some(p), None) => (p, Tokens::Ints),
        (None, Some(p)) => {
            let mut vocabulary = HashMap::new();
            let mut pool = Vec::with_capacity(p.len());
            for s in p {
                let next = vocabulary.len() as i64;
                pool.push(*vocabulary.entry(s).or_insert(next));
            }
            (pool, Tokens::Strings { vocabulary })
        }
        _ => bail!(InvalidModel, "TfIdfVectorizer needs exactly one of pool_int64s and pool_strings"),
    };

    let mut output_size = 0usize;
    for &i in &indexes {
        let i = usize::try_from(i).map_err(|_| crate::err!(InvalidModel, "TfIdfVectorizer ngram_indexes has {i}"))?;
        output_size = output_size.max(i.saturating_add(1));
    }
    // N-grams are numbered through the whole pool, every length included; `ngram_indexes` maps
    // that number to the output column.
    let mut ngrams = HashMap::new();
    let mut number = 0usize;
    for (level, &start) in counts.iter().enumerate() {
        let n = level + 1;
        let end = counts.get(level + 1).copied().unwrap_or(pool.len() as i64);
        if start < 0 || end < start || end > pool.len() as i64 {
            bail!(InvalidModel, "TfIdfVectorizer ngram_counts {counts:?} do not fit a pool of {} items", pool.len());
        }
        let items = &pool[start as usize..end as usize];
        for gram in items.chunks_exact(n) {
            if (min_gram..=max_gram).contains(&n) {
                let Some(&column) = indexes.get(number) else {
                    bail!(
                        InvalidModel,
                        "TfIdfVectorizer ngram_indexes has {} entries, the pool more n-grams",
                        indexes.len()
                    )
                };
                // A repeated n-gram: the last one wins, as in onnxruntime.
                ngrams.insert(gram.to_vec(), column as usize);
            }
            number += 1;
        }
    }
    let weights = a.floats("weights")?;
    if let Some(w) = &weights {
        if weighting != Weighting::Tf && w.len() < output_size {
            bail!(InvalidModel, "TfIdfVectorizer has {} weights for {output_size} outputs", w.len());
        }
    }
    // No n-gram is longer than the pool's levels: a larger max_gram_length (2^40, say) would only
    // size buffers and loops for grams that cannot match.
    let max_gram = max_gram.min(counts.len());
    Ok(Box::new(TfIdfVectorizer { weighting, min_gram, max_gram, max_skip, tokens, ngrams, output_size, weights }))
}

impl TfIdfVectorizer {
    /// The input's tokens as i64 (strings not in the pool become -1, which matches nothing).
    fn tokens_of(&self, x: &Tensor) -> Result<Vec<i64>> {
        match (&self.tokens, x.dtype()) {
            (Tokens::Ints, DType::I32 | DType::I64) => x.to_i64_vec(),
            (Tokens::Strings { vocabulary }, DType::String) => {
                Ok(x.as_slice::<String>()?.iter().map(|s| vocabulary.get(s).copied().unwrap_or(-1)).collect())
            }
            (Tokens::Ints, d) => bail!(Shape, "TfIdfVectorizer with pool_int64s takes int32 or int64 input, got {d}"),
            (Tokens::Strings { .. }, d) => {
                bail!(Shape, "TfIdfVectorizer with pool_strings takes string input, got {d}")
            }
        }
    }

    /// Adds one row's n-gram counts to `freq` (one entry per output column).
    fn count_row(&self, row: &[i64], freq: &mut [u64], gram: &mut Vec<i64>) {
        let mut min_n = self.min_gram;
        // A skip past the row's end leaves only unigrams, which the first pass counted: looping
        // further (to a max_skip_count of 2^62, say) would change nothing.
        for skip in 0..=self.max_skip.min(row.len()) {
            let step = skip + 1;
            for start in 0..row.len() {
                gram.clear();
                for n in 1..=self.max_gram {
                    let Some(&token) = row.get(start + (n - 1) * step) else { break };
                    gram.push(token);
                    if n >= min_n {
                        if let Some(&column) = self.ngrams.get(gram.as_slice()) {
                            freq[column] += 1;
                        }
                    }
                }
            }
            // Unigrams do not depend on the skip: count them in the first pass only.
            if min_n == 1 {
                min_n = 2;
                if min_n > self.max_gram {
                    break;
                }
            }
        }
    }
}

impl Op for TfIdfVectorizer {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let shape = match x.shape.as_deref() {
            None => None,
            Some([] | [_]) => Some(vec![Dim::Known(self.output_size)]),
            Some([b, _]) => Some(vec![b.clone(), Dim::Known(self.output_size)]),
            Some(s) => bail!(Shape, "TfIdfVectorizer takes a [C] or [B, C] tensor, got rank {}", s.len()),
        };
        Ok(vec![Fact { dtype: Some(DType::F32), shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let (rows, width, out_shape) = match *x.shape() {
            [] => (1, 1, vec![self.output_size]),
            [c] => (1, c, vec![self.output_size]),
            [b, c] => (b, c, vec![b, self.output_size]),
            _ => bail!(Shape, "TfIdfVectorizer takes a [C] or [B, C] tensor, got shape {:?}", x.shape()),
        };
        let tokens = self.tokens_of(x)?;
        let mut freq = try_vec(checked_len(&out_shape, DType::F32)?, 0u64)?;
        let mut gram = Vec::with_capacity(self.max_gram);
        for r in 0..rows {
            let row = &tokens[r * width..(r + 1) * width];
            let out = &mut freq[r * self.output_size..(r + 1) * self.output_size];
            self.count_row(row, out, &mut gram);
        }
        let weight = |column: usize| self.weights.as_ref().map_or(1.0, |w| w[column]);
        let out: Vec<f32> = freq
            .iter()
            .enumerate()
            .map(|(i, &f)| {
                let column = i % self.output_size.max(1);
                match self.weighting {
                    Weighting::Tf => f as f32,
                    Weighting::Idf if f > 0 => weight(column),
                    Weighting::Idf => 0.0,
                    Weighting::TfIdf => f as f32 * weight(column),
                }
            })
            .collect();
        Ok(vec![Tensor::new(out_shape, out)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::ops::activation::test_util::build;

    const POOL: [i64; 10] = [2, 3, 5, 4, 5, 6, 7, 8, 6, 7];
    const ROW: [i32; 12] = [1, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8];

    fn attrs(mode: &str, min: i64, max: i64, skip: i64) -> Vec<(&'static str, Attr)> {
        vec![
            ("mode", Attr::String(mode.into())),
            ("min_gram_length", Attr::Int(min)),
            ("max_gram_length", Attr::Int(max)),
            ("max_skip_count", Attr::Int(skip)),
            ("ngram_counts", Attr::Ints(vec![0, 4])),
            ("ngram_indexes", Attr::Ints((0..7).collect())),
        ]
    }

    fn run(mut attrs: Vec<(&'static str, Attr)>, pool: Attr, x: &Tensor) -> Result<Tensor> {
        let name = if matches!(pool, Attr::Strings(_)) { "pool_strings" } else { "pool_int64s" };
        attrs.push((name, pool));
        let op = build("TfIdfVectorizer", 9, attrs, 1)?;
        Ok(op.eval(&[Some(x)])?.remove(0))
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.as_slice::<f32>().unwrap().to_vec()
    }

    // Expected values from the ONNX node tests (onnx.reference TfIdfVectorizer).
    #[test]
    fn counts_bigrams_with_and_without_skips() {
        let x = Tensor::vector(ROW.to_vec());
        let pool = || Attr::Ints(POOL.to_vec());
        assert_eq!(values(&run(attrs("TF", 2, 2, 0), pool(), &x).unwrap()), [0., 0., 0., 0., 1., 1., 1.]);
        assert_eq!(values(&run(attrs("TF", 2, 2, 5), pool(), &x).unwrap()), [0., 0., 0., 0., 1., 3., 1.]);
        assert_eq!(values(&run(attrs("TF", 1, 2, 5), pool(), &x).unwrap()), [0., 3., 1., 0., 1., 3., 1.]);
        let batch = Tensor::new(vec![2, 6], ROW.to_vec()).unwrap();
        let y = run(attrs("TF", 1, 2, 5), pool(), &batch).unwrap();
        assert_eq!(y.shape(), [2, 7]);
        assert_eq!(values(&y), [0., 3., 0., 0., 0., 0., 0., 0., 0., 1., 0., 1., 1., 1.]);
    }

    #[test]
    fn string_pool_and_weights() {
        // Pool unigrams [a b c d], bigrams [(b c) (c a)]; TFIDF with weights per column.
        let pool = Attr::Strings(["a", "b", "c", "d", "b", "c", "c", "a"].iter().map(|s| s.to_string()).collect());
        let mut a = attrs("TFIDF", 1, 2, 0);
        a.push(("weights", Attr::Floats(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])));
        a[5] = ("ngram_indexes", Attr::Ints((0..6).collect()));
        let x = Tensor::vector(["b", "c", "a", "x", "b", "c"].iter().map(|s| s.to_string()).collect::<Vec<_>>());
        // Counts: a 1, b 2, c 2, d 0, (b c) 2, (c a) 1.
        assert_eq!(values(&run(a.clone(), pool.clone(), &x).unwrap()), [1., 4., 6., 0., 10., 6.]);
        a[0] = ("mode", Attr::String("IDF".into()));
        assert_eq!(values(&run(a, pool, &x).unwrap()), [1., 2., 3., 0., 5., 6.]);
    }

    #[test]
    fn huge_gram_lengths_and_skips_cost_nothing() {
        // Found by reading the code: 2^40 aborted on a capacity, 2^61 overflowed, 2^62 skips hung.
        let x = Tensor::vector(ROW.to_vec());
        let want = values(&run(attrs("TF", 1, 2, 5), Attr::Ints(POOL.to_vec()), &x).unwrap());
        for (max, skip) in [(1 << 40, 5), (1 << 61, 5), (2, 1 << 62), (i64::MAX, i64::MAX)] {
            let got = run(attrs("TF", 1, max, skip), Attr::Ints(POOL.to_vec()), &x).unwrap();
            let expected = if skip == 5 {
                want.clone()
            } else {
                values(&run(attrs("TF", 1, max.min(2), 12), Attr::Ints(POOL.to_vec()), &x).unwrap())
            };
            assert_eq!(values(&got), expected, "max_gram_length {max}, max_skip_count {skip}");
        }
    }

    #[test]
    fn bad_attributes_and_inputs_are_errors() {
        let e = run(attrs("TF", 2, 2, 0), Attr::Ints(POOL.to_vec()), &Tensor::vector(vec![1.0f32])).unwrap_err();
        assert!(e.message.contains("int32 or int64"), "{e}");
        let mut a = attrs("TF", 2, 2, 0);
        a[4] = ("ngram_counts", Attr::Ints(vec![0, 40]));
        assert!(run(a, Attr::Ints(POOL.to_vec()), &Tensor::vector(vec![1i64])).is_err());
        let mut a = attrs("TF", 1, 2, 0);
        a[5] = ("ngram_indexes", Attr::Ints(vec![0, 1]));
        let e = run(a, Attr::Ints(POOL.to_vec()), &Tensor::vector(vec![1i64])).unwrap_err();
        assert!(e.message.contains("ngram_indexes"), "{e}");
        let e =
            run(attrs("TF", 2, 2, 0), Attr::Ints(POOL.to_vec()), &Tensor::zeros(DType::I64, vec![1, 1, 1]).unwrap())
                .unwrap_err();
        assert!(e.message.contains("[C] or [B, C]"), "{e}");
    }
}
