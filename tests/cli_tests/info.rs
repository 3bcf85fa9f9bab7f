//! `crx580 info`: value kinds, opsets, parameters by dtype, FLOPs per op type (worked out by hand
//! from the model below), and the ops each device runs.

use super::*;

/// Conv, Relu, ConvTranspose, MatMul, Gemm (transA), Reshape and SequenceLength, with weights as
/// initializers: float32 W [4,3,3,3] (108) and CW [2,5,2,2] (40), int64 shape [1] (1).
fn stats_model(dir: &Path) -> PathBuf {
    let w: Vec<f32> = (0..108).map(|i| i as f32 / 108.0).collect();
    let cw: Vec<f32> = (0..40).map(|i| i as f32 / 40.0).collect();
    let bytes = model(
        &[
            node("Conv", &["x", "W"], &["c"], &[]),
            node("Relu", &["c"], &["r"], &[]),
            node("ConvTranspose", &["cx", "CW"], &["ct"], &[]),
            node("MatMul", &["a", "b"], &["mm"], &[]),
            node("Reshape", &["mm", "shape"], &["flat"], &[]),
            node("Gemm", &["ga", "gb"], &["gemm"], &[attr_int("transA", 1)]),
            node("SequenceLength", &["s"], &["len"], &[]),
        ],
        &[
            float_tensor("W", &[4, 3, 3, 3], &w),
            float_tensor("CW", &[2, 5, 2, 2], &cw),
            int64_tensor("shape", &[1], &[10]),
        ],
        &[
            tensor_value("x", FLOAT, Some(&[D::S("N"), D::N(3), D::N(8), D::N(8)])),
            tensor_value("cx", FLOAT, Some(&[D::N(1), D::N(2), D::N(3), D::N(3)])),
            tensor_value("a", FLOAT, Some(&[D::N(2), D::N(3)])),
            tensor_value("b", FLOAT, Some(&[D::N(3), D::N(5)])),
            tensor_value("ga", FLOAT, Some(&[D::N(3), D::N(2)])),
            tensor_value("gb", FLOAT, Some(&[D::N(3), D::N(4)])),
            sequence_value("s", FLOAT),
        ],
        &[
            tensor_value("r", FLOAT, None),
            tensor_value("ct", FLOAT, None),
            tensor_value("flat", FLOAT, None),
            tensor_value("gemm", FLOAT, None),
            tensor_value("len", INT64, Some(&[])),
        ],
        13,
    );
    let path = dir.join("stats.onnx");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn info_json_has_kinds_parameters_flops_and_devices() {
    let dir = temp_dir("info-stats");
    let m = stats_model(&dir);
    let o = crx580(&["info", m.to_str().unwrap(), "--json", "--dim", "N=1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = stdout(&o);
    assert!(j.contains("\"opsets\":{\"ai.onnx\":13}"), "{j}");
    assert!(j.contains("{\"name\":\"s\",\"dtype\":\"float32\",\"shape\":null,\"kind\":\"sequence\"}"), "{j}");
    assert!(j.contains("{\"name\":\"len\",\"dtype\":\"int64\",\"shape\":[],\"kind\":\"tensor\"}"), "{j}");
    assert!(j.contains("\"parameters\":149,\"parameter_bytes\":600,"), "{j}");
    assert!(
        j.contains(
            "\"parameters_by_dtype\":{\"float32\":{\"count\":148,\"bytes\":592},\"int64\":{\"count\":1,\"bytes\":8}}"
        ),
        "{j}"
    );
    // By hand, a multiply-add counting 2:
    //   Conv: out [1,4,6,6] = 144 elements x 3*3*3 products x 2 = 7776
    //   Relu: 144 elements = 144
    //   ConvTranspose: in [1,2,3,3] = 18 elements x 5*2*2 products x 2 = 720
    //   MatMul: out [2,5] = 10 x K=3 x 2 = 60
    //   Gemm with transA: A^T [2,3], out [2,4] = 8 x K=3 x 2 = 48
    let flops = "\"flops\":{\"Conv\":{\"flops\":7776,\"nodes\":1,\"unknown_nodes\":0},\
                 \"ConvTranspose\":{\"flops\":720,\"nodes\":1,\"unknown_nodes\":0},\
                 \"Gemm\":{\"flops\":48,\"nodes\":1,\"unknown_nodes\":0},\
                 \"MatMul\":{\"flops\":60,\"nodes\":1,\"unknown_nodes\":0},\
                 \"Relu\":{\"flops\":144,\"nodes\":1,\"unknown_nodes\":0}},\"flops_total\":8748,";
    assert!(j.contains(flops), "{j}");
    assert!(
        j.contains("\"devices\":[{\"device\":\"cpu\",\"available\":true,\"nodes\":7,\"runs\":[\"Conv\",\"ConvTranspose\",\"Gemm\",\"MatMul\",\"Relu\",\"Reshape\",\"SequenceLength\"],\"leaves_to_cpu\":[]},{\"device\":\"opencl\",\"available\":false,"),
        "{j}"
    );
}

#[test]
fn info_says_unknown_where_shapes_are_unknown() {
    let dir = temp_dir("info-unknown");
    let m = stats_model(&dir);
    let o = crx580(&["info", m.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = stdout(&o);
    assert!(j.contains("\"Conv\":{\"flops\":null,\"nodes\":1,\"unknown_nodes\":1}"), "{j}");
    assert!(j.contains("\"MatMul\":{\"flops\":60,"), "{j}");
    assert!(j.contains("\"flops_total\":null,"), "{j}");

    let o = crx580(&["info", m.to_str().unwrap()]);
    let text = stdout(&o);
    for want in [
        "opsets: ai.onnx 13",
        "  s: sequence float32 [unknown rank]",
        "  x: tensor float32 [N, 3, 8, 8]",
        "unknown: shapes of 1 of 1 nodes are not known",
        "unknown (at least 828 FLOP)",
        "(fix the input sizes with --shape NAME=DxDx... or --dim SYMBOL=N to count them all)",
        "parameters: 149 (600 B)",
        "  cpu: runs all 7 nodes: Conv, ConvTranspose, Gemm, MatMul, Relu, Reshape, SequenceLength",
        "  opencl: not available (",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let o = crx580(&["info", m.to_str().unwrap(), "--shape", "x=2x3x8x8"]);
    // Conv doubles with the batch: 2 x 7776.
    assert!(stdout(&o).contains("15.55 kFLOP"), "{}", stdout(&o));
}
