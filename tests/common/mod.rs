//! Shared by the test programs: running a test case laid out as ONNX's backend tests are
//! (`model.onnx` + `test_data_set_*/input_*.pb, output_*.pb`) and comparing outputs.

#![allow(dead_code)]

use crx580::ir::{DType, Data, Tensor};
use crx580::{IoInfo, Model, Session, SessionOptions};
use std::path::{Path, PathBuf};

/// Closeness test: `|actual - expected| <= atol + rtol * |expected|`, NaN matches NaN; integers,
/// bools and strings must be equal. Integers are compared as integers (never through f64, which
/// cannot tell 2^53 from 2^53 + 1), and float8/float4 exactly by value (they come from a single
/// rounding).
pub fn compare(actual: &Tensor, expected: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    compare_scaled(actual, expected, rtol, &|_| atol)
}

/// [`compare`] with the absolute tolerance chosen per element: `atol(i)` for element `i` (flat,
/// C order).
pub fn compare_scaled(
    actual: &Tensor,
    expected: &Tensor,
    rtol: f64,
    atol: &dyn Fn(usize) -> f64,
) -> Result<(), String> {
    if actual.dtype() != expected.dtype() {
        return Err(format!("dtype {} != expected {}", actual.dtype(), expected.dtype()));
    }
    if actual.shape() != expected.shape() {
        return Err(format!("shape {:?} != expected {:?}", actual.shape(), expected.shape()));
    }
    if actual.dtype() == DType::String {
        return if actual == expected { Ok(()) } else { Err("strings differ".into()) };
    }
    if let (Some(a), Some(e)) = (integer_values(actual), integer_values(expected)) {
        return match a.iter().zip(&e).position(|(x, y)| x != y) {
            None => Ok(()),
            Some(i) => Err(format!("element {i}: got {}, expected {}", a[i], e[i])),
        };
    }
    let (a, e) = (actual.to_f64_vec().map_err(|e| e.to_string())?, expected.to_f64_vec().map_err(|e| e.to_string())?);
    let exact = actual.dtype().is_narrow_float();
    for (i, (&x, &y)) in a.iter().zip(&e).enumerate() {
        let ok = if exact {
            x == y || (x.is_nan() && y.is_nan())
        } else {
            (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= atol(i) + rtol * y.abs()
        };
        if !ok {
            return Err(format!("element {i}: got {x}, expected {y}"));
        }
    }
    Ok(())
}

/// The elements of an integer or bool tensor as exact integers; `None` for other dtypes.
pub fn integer_values(t: &Tensor) -> Option<Vec<i128>> {
    use crx580::ir::narrow::{I2, I4, U2, U4};
    fn all<T: crx580::ir::Elem + Copy>(t: &Tensor, f: impl Fn(T) -> i128) -> Option<Vec<i128>> {
        t.as_slice::<T>().ok().map(|s| s.iter().map(|&v| f(v)).collect())
    }
    match t.dtype() {
        DType::I8 => all(t, |v: i8| v.into()),
        DType::I16 => all(t, |v: i16| v.into()),
        DType::I32 => all(t, |v: i32| v.into()),
        DType::I64 => all(t, |v: i64| v.into()),
        DType::U8 => all(t, |v: u8| v.into()),
        DType::U16 => all(t, |v: u16| v.into()),
        DType::U32 => all(t, |v: u32| v.into()),
        DType::U64 => all(t, |v: u64| v.into()),
        DType::Bool => all(t, |v: bool| v.into()),
        DType::I4 => all(t, |v: I4| v.to_i64().into()),
        DType::U4 => all(t, |v: U4| v.to_i64().into()),
        DType::I2 => all(t, |v: I2| v.to_i64().into()),
        DType::U2 => all(t, |v: U2| v.to_i64().into()),
        _ => None,
    }
}

/// A generated test folder (node cases, model zoo): `$env_dir` or `target/<default>`. `None`, after
/// saying so loudly (even under the test harness), when it has not been generated; with
/// `$require=1` (as in CI) that exits 1.
pub fn generated_dir(env_dir: &str, default: &str, require: &str, what: &str, generator: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var(env_dir).map(PathBuf::from).unwrap_or_else(|_| root.join("target").join(default));
    if dir.join("VERSION").exists() {
        return Some(dir);
    }
    // Written to the process's stderr directly, not with eprintln!, which the test harness captures
    // and hides when the test passes.
    use std::io::Write;
    let _ = write!(
        std::io::stderr(),
        "\n!!! {what} NOT RUN: nothing generated in {}\n!!! generate it with: python {generator} --out {}\n\
         !!! (bash tests/run.sh does this for you; {require}=1 makes this a failure)\n\n",
        dir.display(),
        dir.display()
    );
    if std::env::var(require).is_ok_and(|v| v == "1") {
        std::process::exit(1);
    }
    None
}

/// The first non-flag command-line argument: a filter on case names.
pub fn name_filter() -> Option<String> {
    std::env::args().skip(1).find(|a| !a.starts_with('-'))
}

/// The case folders (those with a `model.onnx`) in `dir` whose name contains `filter`, sorted.
pub fn cases_in(dir: &Path, filter: Option<&str>) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").exists())
        .filter(|p| filter.is_none_or(|f| p.file_name().is_some_and(|n| n.to_string_lossy().contains(f))))
        .collect();
    cases.sort();
    cases
}

/// [`compare`] for values of any kind: sequences element by element, optionals by contents (an
/// empty optional equals an empty optional).
pub fn compare_data(actual: &Data, expected: &Data, rtol: f64, atol: f64) -> Result<(), String> {
    match (actual, expected) {
        (Data::Tensor(a), Data::Tensor(e)) => compare(a, e, rtol, atol),
        (Data::Sequence(a), Data::Sequence(e)) => {
            if a.elem_dtype() != e.elem_dtype() {
                return Err(format!("{} != expected {}", actual.type_name(), expected.type_name()));
            }
            if a.len() != e.len() {
                return Err(format!("sequence of {} elements, expected {}", a.len(), e.len()));
            }
            for (i, (x, y)) in a.items().iter().zip(e.items()).enumerate() {
                compare(x, y, rtol, atol).map_err(|m| format!("sequence element {i}: {m}"))?;
            }
            Ok(())
        }
        (Data::Optional(None), Data::Optional(None)) => Ok(()),
        (Data::Optional(Some(a)), Data::Optional(Some(e))) => compare_data(a, e, rtol, atol),
        _ => Err(format!("got {}, expected {}", actual.describe(), expected.describe())),
    }
}

/// The `test_data_set_*` folders of a case, sorted.
pub fn data_sets(case: &Path) -> Vec<PathBuf> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(case)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    sets.retain(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_")));
    sets.sort();
    sets
}

fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    (0..).map(|k| dir.join(format!("{prefix}_{k}.pb"))).take_while(|p| p.exists()).collect()
}

/// The inputs and expected outputs of one `test_data_set_*` folder.
pub fn read_data_set(set: &Path) -> Result<(Vec<Tensor>, Vec<Tensor>), String> {
    let read = |p: &PathBuf| crx580::io::read_tensor_file(p).map(|(t, _)| t).map_err(|e| format!("data: {e}"));
    let inputs: Vec<Tensor> = numbered(set, "input").iter().map(read).collect::<Result<_, _>>()?;
    let expected: Vec<Tensor> = numbered(set, "output").iter().map(read).collect::<Result<_, _>>()?;
    Ok((inputs, expected))
}

/// The inputs and expected outputs of one `test_data_set_*` folder, each file read as the
/// model declares the value (a tensor, a sequence or an optional).
pub fn read_data_set_as(set: &Path, inputs: &[IoInfo], outputs: &[IoInfo]) -> Result<(Vec<Data>, Vec<Data>), String> {
    let read = |files: Vec<PathBuf>, infos: &[IoInfo], what: &str| -> Result<Vec<Data>, String> {
        if files.len() > infos.len() {
            return Err(format!("{} {what} files, the model has {} {what}s", files.len(), infos.len()));
        }
        files
            .iter()
            .zip(infos)
            .map(|(p, info)| {
                crx580::io::read_data_file(p, &info.kind, info.dtype).map(|(d, _)| d).map_err(|e| format!("data: {e}"))
            })
            .collect()
    };
    Ok((read(numbered(set, "input"), inputs, "input")?, read(numbered(set, "output"), outputs, "output")?))
}

/// Loads and runs one case on every data set; `Err` says what failed.
pub fn run_case(case: &Path, rtol: f64, atol: f64) -> Result<(), String> {
    run_case_with(case, &SessionOptions::default(), rtol, atol)
}

/// [`run_case`] with a session made with `options` (another device).
#[allow(dead_code)] // not every test target uses it
pub fn run_case_with(case: &Path, options: &SessionOptions, rtol: f64, atol: f64) -> Result<(), String> {
    let model = Model::load(case.join("model.onnx")).map_err(|e| format!("load: {e}"))?;
    let session = Session::new(model, options).map_err(|e| format!("session: {e}"))?;
    let sets = data_sets(case);
    if sets.is_empty() {
        return Err("no test_data_set_* folders".into());
    }
    for set in sets {
        let model = session.model();
        let (inputs, expected) = read_data_set_as(&set, &model.inputs(), &model.outputs())?;
        let refs: Vec<&Data> = inputs.iter().collect();
        let outputs = session.run_data_positional(&refs).map_err(|e| format!("run: {e}"))?;
        if outputs.len() != expected.len() {
            return Err(format!("{} outputs, expected {}", outputs.len(), expected.len()));
        }
        for (k, (o, e)) in outputs.iter().zip(&expected).enumerate() {
            compare_data(o, e, rtol, atol).map_err(|m| format!("output {k}: {m}"))?;
        }
    }
    Ok(())
}

/// The model zoo's tolerance (tests/zoo.rs): `|got - ref| <= ZOO_RTOL*|ref| + ZOO_ATOL*scale`, where
/// `scale` is `max(1, max|ref|)` over the element's component. An output of one kind of quantity
/// (logits, a probability map, hidden states) is one component, so an element near zero is allowed
/// an error in proportion to the magnitudes it was computed with. An output that packs quantities of
/// different kinds along an axis (a detector's box coordinates in pixels, ~640, beside its 0-1
/// scores) has one component per index on that axis: otherwise the scores could be off by
/// 640 * ZOO_ATOL.
pub const ZOO_RTOL: f64 = 1e-3;
pub const ZOO_ATOL: f64 = 1e-4;

/// `max(1, max|ref|)` per index along `axis` of `want` (over all of `want` when `axis` is `None`),
/// and how to find an element's component: element `i` (flat, C order) has index
/// `(i / stride) % scales.len()`.
pub struct ComponentScale {
    scales: Vec<f64>,
    stride: usize,
}

impl ComponentScale {
    pub fn new(want: &Tensor, axis: Option<usize>) -> Result<ComponentScale, String> {
        let shape = want.shape();
        let (dim, stride) = match axis {
            None => (1, 1),
            Some(a) if a < shape.len() => (shape[a], shape[a + 1..].iter().product::<usize>().max(1)),
            Some(a) => return Err(format!("component axis {a} of a rank-{} output", shape.len())),
        };
        let mut scales = vec![1f64; dim];
        for (i, v) in want.to_f64_vec().map_err(|e| e.to_string())?.iter().enumerate() {
            let s = &mut scales[(i / stride) % dim];
            *s = s.max(v.abs());
        }
        Ok(ComponentScale { scales, stride })
    }

    pub fn at(&self, i: usize) -> f64 {
        self.scales[(i / self.stride) % self.scales.len()]
    }
}

/// Compares one zoo output by the zoo's rule, with components along `axis` (`None`: the whole output
/// is one); integers exactly. `Ok` carries the worst ratio of error to allowed error, how close it
/// came to failing.
pub fn compare_zoo(got: &Tensor, want: &Tensor, axis: Option<usize>) -> Result<f64, String> {
    if !want.dtype().is_float() {
        return compare(got, want, 0.0, 0.0).map(|()| 0.0);
    }
    let scale = ComponentScale::new(want, axis)?;
    let atol = |i: usize| ZOO_ATOL * scale.at(i);
    compare_scaled(got, want, ZOO_RTOL, &atol)?;
    let (g, w) = (got.to_f64_vec().map_err(|e| e.to_string())?, want.to_f64_vec().map_err(|e| e.to_string())?);
    Ok(g.iter()
        .zip(&w)
        .enumerate()
        .filter(|(_, (a, b))| a != b && !(a.is_nan() && b.is_nan()))
        .map(|(i, (a, b))| (a - b).abs() / (ZOO_RTOL * b.abs() + atol(i)))
        .fold(0.0, f64::max))
}

/// The case names a Python generator makes: the function names in its `MODELS = [...]` list (each
/// function's name is its case's name; see tests/models/gen_models.py `generate`).
pub fn generator_models(py: &Path) -> Vec<String> {
    python_list(py, "MODELS")
}

/// The items of a one-level Python list of names or string literals, `VAR = [...]` at the start of a
/// line in `py`, with quotes taken off.
pub fn python_list(py: &Path, var: &str) -> Vec<String> {
    let text = std::fs::read_to_string(py).unwrap_or_else(|e| panic!("{}: {e}", py.display()));
    let head = format!("\n{var} = [");
    let start = text.find(&head).unwrap_or_else(|| panic!("{} has no `{var} = [...]` list", py.display())) + head.len();
    let end = start + text[start..].find(']').unwrap_or_else(|| panic!("{}: {var} has no `]`", py.display()));
    let items: Vec<String> = text[start..end]
        .split(',')
        .map(|s| s.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    assert!(
        items.iter().all(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')),
        "{}: {var} is not a plain list of names: {items:?}",
        py.display()
    );
    items
}
