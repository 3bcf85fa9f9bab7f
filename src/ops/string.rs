//! String ops: StringConcat (broadcast), StringSplit (Python `str.split` semantics, padded with ""),
//! and StringNormalizer (stopword removal and case change). TfIdfVectorizer is in `tfidf.rs`.

use super::broadcast::binary;
use super::{input, BuildCtx, Op, Registry};
use crate::ir::shape::broadcast_facts;
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{DType, Dim, Fact, Tensor};
use crate::{bail, Result};
use std::collections::HashSet;

pub fn register(r: &mut Registry) {
    r.add("StringConcat", |_| Ok(Box::new(StringConcat)));
    r.add("StringSplit", build_split);
    r.add("StringNormalizer", build_normalizer);
}

/// Errors unless a known input dtype is string.
fn expect_string(op: &str, dtype: Option<DType>) -> Result<()> {
    match dtype {
        Some(d) if d != DType::String => bail!(Shape, "{op} takes string tensors, got {d}"),
        _ => Ok(()),
    }
}

#[derive(Debug)]
struct StringConcat;

impl Op for StringConcat {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        expect_string("StringConcat", a.dtype)?;
        expect_string("StringConcat", b.dtype)?;
        Ok(vec![Fact { dtype: Some(DType::String), shape: broadcast_facts(&[a, b])?, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        expect_string("StringConcat", Some(a.dtype()))?;
        expect_string("StringConcat", Some(b.dtype()))?;
        Ok(vec![binary(a, b, |x: &String, y: &String| {
            let mut s = String::with_capacity(x.len() + y.len());
            s.push_str(x);
            s.push_str(y);
            s
        })?])
    }
}

#[derive(Debug)]
struct StringSplit {
    /// `None` splits on runs of whitespace, ignoring leading and trailing whitespace.
    delimiter: Option<String>,
    /// `None` splits as often as possible.
    maxsplit: Option<usize>,
}

fn build_split(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let delimiter = ctx.attrs.string("delimiter")?.filter(|d| !d.is_empty());
    // Python's convention: a negative maxsplit means no limit.
    let maxsplit = ctx.attrs.int("maxsplit")?.and_then(|m| usize::try_from(m).ok());
    Ok(Box::new(StringSplit { delimiter, maxsplit }))
}

/// `s.split(None, maxsplit)` in Python: whitespace runs separate, and once `maxsplit` splits are
/// made the rest (leading whitespace removed, trailing kept) is the last part.
fn split_whitespace<'s>(s: &'s str, maxsplit: Option<usize>, parts: &mut Vec<&'s str>) {
    let start = parts.len();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        if maxsplit == Some(parts.len() - start) {
            parts.push(rest);
            return;
        }
        match rest.find(char::is_whitespace) {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = rest[i..].trim_start();
            }
            None => {
                parts.push(rest);
                return;
            }
        }
    }
}

impl Op for StringSplit {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        expect_string("StringSplit", x.dtype)?;
        let parts_shape = x.shape.as_ref().map(|s| s.iter().cloned().chain([Dim::Unknown]).collect());
        Ok(vec![
            Fact { dtype: Some(DType::String), shape: parts_shape, value: None },
            Fact { dtype: Some(DType::I64), shape: x.shape.clone(), value: None },
        ])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let strings = x.as_slice::<String>()?;
        // All parts, flat, then each element's count: no allocation per element.
        let mut parts: Vec<&str> = vec![];
        let mut counts: Vec<i64> = try_vec(strings.len(), 0)?;
        for (s, count) in strings.iter().zip(&mut counts) {
            let before = parts.len();
            match (&self.delimiter, self.maxsplit) {
                (None, m) => split_whitespace(s, m, &mut parts),
                (Some(d), Some(m)) => parts.extend(s.splitn(m.saturating_add(1), d.as_str())),
                (Some(d), None) => parts.extend(s.split(d.as_str())),
            }
            *count = (parts.len() - before) as i64;
        }
        let width = counts.iter().copied().max().unwrap_or(0) as usize;
        let mut shape = x.shape().to_vec();
        shape.push(width);
        let mut out: Vec<String> = try_vec(checked_len(&shape, DType::String)?, String::new())?;
        let mut next = parts.iter();
        for (row, &count) in out.chunks_mut(width.max(1)).zip(&counts) {
            for (slot, part) in row.iter_mut().zip(next.by_ref().take(count as usize)) {
                *slot = part.to_string();
            }
        }
        Ok(vec![Tensor::new(shape, out)?, Tensor::new(x.shape().to_vec(), counts)?])
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CaseChange {
    None,
    Lower,
    Upper,
}

/// Casing follows Unicode's default (locale-independent) mappings, whatever the `locale` attribute.
#[derive(Debug)]
struct StringNormalizer {
    case_change: CaseChange,
    case_sensitive: bool,
    /// Lowercased when matching is case-insensitive.
    stopwords: HashSet<String>,
}

fn build_normalizer(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let case_change = match ctx.attrs.string_or("case_change_action", "NONE".into())?.as_str() {
        "NONE" => CaseChange::None,
        "LOWER" => CaseChange::Lower,
        "UPPER" => CaseChange::Upper,
        other => bail!(InvalidModel, "StringNormalizer case_change_action '{other}' is not NONE, LOWER or UPPER"),
    };
    let case_sensitive = ctx.attrs.int_or("is_case_sensitive", 0)? != 0;
    let stopwords = ctx.attrs.strings_or("stopwords", vec![])?;
    let stopwords = stopwords.into_iter().map(|w| if case_sensitive { w } else { w.to_lowercase() }).collect();
    Ok(Box::new(StringNormalizer { case_change, case_sensitive, stopwords }))
}

impl StringNormalizer {
    /// Input shape `[C]` or `[1, C]`: whether it has the leading 1.
    fn check_shape(&self, rank: usize, first: Option<usize>) -> Result<bool> {
        match (rank, first) {
            (1, _) => Ok(false),
            (2, Some(1) | None) => Ok(true),
            _ => bail!(Shape, "StringNormalizer takes a [C] or [1, C] tensor, got rank {rank} (first dim {first:?})"),
        }
    }

    fn is_stopword(&self, s: &str) -> bool {
        if self.stopwords.is_empty() {
            false
        } else if self.case_sensitive {
            self.stopwords.contains(s)
        } else {
            self.stopwords.contains(&s.to_lowercase())
        }
    }
}

impl Op for StringNormalizer {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        expect_string("StringNormalizer", x.dtype)?;
        let Some(shape) = &x.shape else { return Ok(vec![Fact::of_dtype(DType::String)]) };
        let leading_one = self.check_shape(shape.len(), shape.first().and_then(Dim::known))?;
        let shape = if self.stopwords.is_empty() {
            shape.clone()
        } else if leading_one {
            vec![Dim::Known(1), Dim::Unknown]
        } else {
            vec![Dim::Unknown]
        };
        Ok(vec![Fact::new(DType::String, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let leading_one = self.check_shape(x.rank(), x.shape().first().copied())?;
        let mut out: Vec<String> = crate::ir::limits::with_capacity(x.len())?;
        for s in x.as_slice::<String>()? {
            if self.is_stopword(s) {
                continue;
            }
            out.push(match self.case_change {
                CaseChange::None => s.clone(),
                CaseChange::Lower => s.to_lowercase(),
                CaseChange::Upper => s.to_uppercase(),
            });
        }
        // Everything dropped: the spec's "empty value" is a single empty string.
        if out.is_empty() {
            out.push(String::new());
        }
        let shape = if leading_one { vec![1, out.len()] } else { vec![out.len()] };
        Ok(vec![Tensor::new(shape, out)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::ops::activation::test_util::build;
    use crate::ErrorKind;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn st(shape: &[usize], v: &[&str]) -> Tensor {
        Tensor::new(shape.to_vec(), strings(v)).unwrap()
    }

    fn run(op: &str, attrs: Vec<(&str, Attr)>, inputs: &[&Tensor], outputs: usize) -> Result<Vec<Tensor>> {
        let op = build(op, 20, attrs, outputs)?;
        let inputs: Vec<Option<&Tensor>> = inputs.iter().map(|t| Some(*t)).collect();
        op.eval(&inputs)
    }

    // Expected values from the ONNX node tests (numpy.char semantics).
    #[test]
    fn concat_broadcasts() {
        let y = run("StringConcat", vec![], &[&st(&[3], &["cat", "dog", "snake"]), &st(&[1], &["s"])], 1).unwrap();
        assert_eq!(y[0], st(&[3], &["cats", "dogs", "snakes"]));
        let y = run("StringConcat", vec![], &[&st(&[], &["的"]), &st(&[], &["中"])], 1).unwrap();
        assert_eq!(y[0], st(&[], &["的中"]));
        let e = run("StringConcat", vec![], &[&st(&[2], &["a", "b"]), &st(&[3], &["a", "b", "c"])], 1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
        let e = run("StringConcat", vec![], &[&Tensor::vector(vec![1.0f32]), &st(&[1], &["s"])], 1).unwrap_err();
        assert!(e.message.contains("string"), "{e}");
    }

    #[test]
    fn split_with_delimiter_pads_and_counts() {
        let x = st(&[2], &["o-n-n--x-", "o-n----nx"]);
        let y = run("StringSplit", vec![("delimiter", Attr::String("-".into()))], &[&x], 2).unwrap();
        assert_eq!(y[0], st(&[2, 6], &["o", "n", "n", "", "x", "", "o", "n", "", "", "", "nx"]));
        assert_eq!(y[1], Tensor::vector(vec![6i64, 6]));
        // Python: "a.b.c".split(".", 1) == ["a", "b.c"]; "".split(".") == [""].
        let x = st(&[2], &["a.b.c", ""]);
        let attrs = vec![("delimiter", Attr::String(".".into())), ("maxsplit", Attr::Int(1))];
        let y = run("StringSplit", attrs, &[&x], 2).unwrap();
        assert_eq!(y[0], st(&[2, 2], &["a", "b.c", "", ""]));
        assert_eq!(y[1], Tensor::vector(vec![2i64, 1]));
    }

    #[test]
    fn split_on_whitespace_like_python() {
        let x = st(&[2, 2], &["hello world", "def.net", "o n n x", "the quick brown fox"]);
        let y = run("StringSplit", vec![("maxsplit", Attr::Int(2))], &[&x], 2).unwrap();
        let want = ["hello", "world", "", "def.net", "", "", "o", "n", "n x", "the", "quick", "brown fox"];
        assert_eq!(y[0], st(&[2, 2, 3], &want));
        assert_eq!(y[1], Tensor::new(vec![2, 2], vec![2i64, 1, 3, 3]).unwrap());
        // Python: "  a  b  ".split(None, 1) == ["a", "b  "]; "   ".split() == [].
        let x = st(&[2], &["  a  b  ", "   "]);
        let y =
            run("StringSplit", vec![("delimiter", Attr::String(String::new())), ("maxsplit", Attr::Int(1))], &[&x], 2)
                .unwrap();
        assert_eq!(y[0], st(&[2, 2], &["a", "b  ", "", ""]));
        assert_eq!(y[1], Tensor::vector(vec![2i64, 0]));
        let y = run("StringSplit", vec![], &[&st(&[0], &[])], 2).unwrap();
        assert_eq!(y[0].shape(), [0, 0]);
        assert_eq!(y[1].shape(), [0]);
    }

    #[test]
    fn normalizer_drops_stopwords_and_changes_case() {
        let stop = || ("stopwords", Attr::Strings(strings(&["monday"])));
        let x = st(&[1, 6], &["Monday", "tuesday", "wednesday", "Monday", "tuesday", "wednesday"]);
        let y = run("StringNormalizer", vec![stop(), ("case_change_action", Attr::String("UPPER".into()))], &[&x], 1)
            .unwrap();
        assert_eq!(y[0], st(&[1, 4], &["TUESDAY", "WEDNESDAY", "TUESDAY", "WEDNESDAY"]));
        // Case-sensitive: "Monday" is not the stopword "monday".
        let attrs =
            vec![stop(), ("is_case_sensitive", Attr::Int(1)), ("case_change_action", Attr::String("LOWER".into()))];
        let y = run("StringNormalizer", attrs, &[&st(&[3], &["monday", "Monday", "TUESDAY"])], 1).unwrap();
        assert_eq!(y[0], st(&[2], &["monday", "tuesday"]));
        let y = run("StringNormalizer", vec![stop()], &[&st(&[2], &["monday", "MONDAY"])], 1).unwrap();
        assert_eq!(y[0], st(&[1], &[""]));
    }

    #[test]
    fn normalizer_rejects_bad_shapes_and_actions() {
        let e = run("StringNormalizer", vec![], &[&st(&[2, 1], &["a", "b"])], 1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
        let e =
            build("StringNormalizer", 10, vec![("case_change_action", Attr::String("TITLE".into()))], 1).unwrap_err();
        assert!(e.message.contains("TITLE"), "{e}");
        let op = build("StringNormalizer", 10, vec![("stopwords", Attr::Strings(strings(&["a"])))], 1).unwrap();
        let f = op.infer(&[Some(&Fact::new(DType::String, vec![Dim::Known(1), Dim::Symbol("n".into())]))]).unwrap();
        assert_eq!(f[0].shape, Some(vec![Dim::Known(1), Dim::Unknown]));
    }
}
