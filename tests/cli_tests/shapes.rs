//! `--shape NAME=DxDx...` and `--dim SYMBOL=N` on bench, run and info; bench refuses to make up
//! sizes other than a leading batch dim.

use super::*;

/// `y = GlobalAveragePool(x)`, x declared with the given dims; `y2 = Relu(t)` for a second input t
/// of shape [N, 5] sharing the name N.
fn pool_model(dir: &Path, file: &str, x_dims: Option<&[D]>) -> PathBuf {
    let bytes = model(
        &[node("GlobalAveragePool", &["x"], &["y"], &[]), node("Relu", &["t"], &["y2"], &[])],
        &[],
        &[tensor_value("x", FLOAT, x_dims), tensor_value("t", FLOAT, Some(&[D::S("N"), D::N(5)]))],
        &[tensor_value("y", FLOAT, None), tensor_value("y2", FLOAT, None)],
        13,
    );
    let path = dir.join(file);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn json_inputs(out: &str) -> &str {
    let at = out.find("\"inputs\":").expect("inputs in the JSON");
    &out[at..]
}

#[test]
fn bench_refuses_to_make_up_spatial_dims() {
    let dir = temp_dir("shape-refuse");
    let m = pool_model(&dir, "m.onnx", Some(&[D::S("N"), D::N(3), D::S("p2o.DynamicDimension.2"), D::U]));
    let o = crx580(&["bench", m.to_str().unwrap(), "--runs", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(
        e.contains("input 'x' [N, 3, p2o.DynamicDimension.2, ?] has unknown dims p2o.DynamicDimension.2, ?"),
        "{e}"
    );
    assert!(e.contains("--shape x=1x3x<p2o.DynamicDimension.2>x<dim3>"), "{e}");
    assert!(!e.contains("input 't'"), "t's only unknown dim is its batch: {e}");
    assert!(stdout(&o).is_empty());
}

#[test]
fn shape_by_input_name_sizes_bench_inputs() {
    let dir = temp_dir("shape-bench");
    let m = pool_model(&dir, "m.onnx", Some(&[D::S("N"), D::N(3), D::S("p2o.DynamicDimension.2"), D::U]));
    let o = crx580(&["bench", m.to_str().unwrap(), "--runs", "2", "--shape", "x=2x3x16x12", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // N is named, so fixing it through x also sizes t; the unnamed dim 3 comes from --shape alone.
    assert!(json_inputs(&stdout(&o)).starts_with("\"inputs\":{\"x\":[2,3,16,12],\"t\":[2,5]}"), "{}", stdout(&o));
    assert!(stderr(&o).is_empty(), "nothing was made up: {}", stderr(&o));

    // --dim for the named dims plus --shape for the rest agree.
    let o = crx580(&[
        "bench",
        m.to_str().unwrap(),
        "--runs",
        "1",
        "--dim",
        "p2o.DynamicDimension.2=7",
        "--shape",
        "x=1x3x7x9",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(json_inputs(&stdout(&o)).starts_with("\"inputs\":{\"x\":[1,3,7,9],\"t\":[1,5]}"), "{}", stdout(&o));
}

#[test]
fn a_leading_batch_dim_defaults_to_1_with_a_note() {
    let dir = temp_dir("shape-batch");
    let m = pool_model(&dir, "m.onnx", Some(&[D::S("N"), D::N(3), D::N(4), D::N(4)]));
    let o = crx580(&["bench", m.to_str().unwrap(), "--runs", "1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(json_inputs(&stdout(&o)).starts_with("\"inputs\":{\"x\":[1,3,4,4],\"t\":[1,5]}"), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(e.starts_with("crx580: note: batch dim 'N' of input 'x', 'N' of input 't' set to 1"), "{e}");
}

#[test]
fn shapes_that_contradict_the_model_are_refused() {
    let dir = temp_dir("shape-bad");
    let m = pool_model(&dir, "m.onnx", Some(&[D::S("N"), D::N(3), D::S("H"), D::S("W")]));
    let m = m.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--shape", "x=1x4x8x8"], "dim 1 of input 'x' is fixed at 3 by the model, not 4"),
        (&["--shape", "x=1x3x8"], "input 'x' has rank 4 ([N, 3, H, W]), not 3"),
        (&["--shape", "images=1x3x8x8"], "the model has no input 'images' (its inputs: x, t)"),
        (&["--shape", "x=1x3xbigx8"], "'1x3xbigx8' is not sizes joined by x"),
        (&["--shape", "x=2x3x8x8", "--shape", "t=3x5"], "dim 'N' is 2 by --shape x=2x3x8x8 but 3 by --shape t=3x5"),
        (&["--dim", "N=2", "--shape", "t=3x5"], "dim 'N' is 2 by --dim N=2 but 3 by --shape t=3x5"),
        (&["--dim", "batch=2"], "no input has a dim named 'batch' (named dims: H, N, W)"),
        (&["--shape", "x=1x3x8x8", "--shape", "x=1x3x8x8"], "--shape is given twice for input 'x'"),
    ];
    for (args, want) in cases {
        for cmd in ["bench", "info", "run"] {
            let mut all = vec![cmd, m];
            all.extend_from_slice(args);
            let o = crx580(&all);
            assert_eq!(o.status.code(), Some(1), "{all:?}");
            assert!(stderr(&o).contains(want), "{all:?}: {}", stderr(&o));
        }
    }
}

#[test]
fn info_shows_the_shapes_given() {
    let dir = temp_dir("shape-info");
    let m = pool_model(&dir, "m.onnx", Some(&[D::S("N"), D::N(3), D::S("H"), D::U]));
    let o = crx580(&["info", m.to_str().unwrap(), "--shape", "x=1x3x8x6", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = stdout(&o);
    assert!(j.contains("{\"name\":\"x\",\"dtype\":\"float32\",\"shape\":[1,3,8,6],\"kind\":\"tensor\"}"), "{j}");
    assert!(j.contains("{\"name\":\"t\",\"dtype\":\"float32\",\"shape\":[1,5],\"kind\":\"tensor\"}"), "{j}");
    // The unnamed dim given by --shape reaches the model, so the output's shape is known too.
    assert!(j.contains("{\"name\":\"y\",\"dtype\":\"float32\",\"shape\":[1,3,1,1],\"kind\":\"tensor\"}"), "{j}");
}

/// run: --shape fixes the model's dims, and an input file that disagrees is refused.
#[test]
fn run_checks_inputs_against_the_shapes_given() {
    let dir = temp_dir("shape-run");
    let m = pool_model(&dir, "m.onnx", Some(&[D::S("N"), D::N(3), D::S("H"), D::S("W")]));
    let x = crx580::Tensor::new(vec![1, 3, 2, 2], (0..12).map(|v| v as f32).collect::<Vec<_>>()).unwrap();
    let t = crx580::Tensor::new(vec![1, 5], vec![-1.0f32, 2.0, -3.0, 4.0, 0.0]).unwrap();
    crx580::io::write_npy(&dir.join("x.npy"), &x).unwrap();
    crx580::io::write_npy(&dir.join("t.npy"), &t).unwrap();
    let (xp, tp) = (dir.join("x.npy"), dir.join("t.npy"));
    let o = crx580(&["run", m.to_str().unwrap(), xp.to_str().unwrap(), tp.to_str().unwrap(), "--shape", "x=1x3x2x2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Channel means of 0..12 in blocks of 4: 1.5, 5.5, 9.5.
    assert!(stdout(&o).contains("y: float32 [1, 3, 1, 1] min=1.5000 max=9.5000"), "{}", stdout(&o));
    let o = crx580(&["run", m.to_str().unwrap(), xp.to_str().unwrap(), tp.to_str().unwrap(), "--shape", "x=1x3x4x4"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("'x'"), "{}", stderr(&o));
}
