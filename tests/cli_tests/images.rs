//! `crx580 run MODEL picture.png|jpg`: the pixels reach the model in the layout and scale asked for
//! (checked against the image the test wrote, element by element), and classifier outputs come out
//! as a top 5 with labels.

use super::*;

/// Scores = per-channel means of an NCHW float image: `GlobalAveragePool` then `Flatten`, so a solid
/// colour image gives its colour (after preprocessing) as the three class scores.
fn channel_mean_model(dir: &Path, dims: &[D]) -> PathBuf {
    let bytes = model(
        &[node("GlobalAveragePool", &["x"], &["pooled"], &[]), node("Flatten", &["pooled"], &["scores"], &[])],
        &[],
        &[tensor_value("x", FLOAT, Some(dims))],
        &[tensor_value("scores", FLOAT, None)],
        13,
    );
    let path = dir.join("mean.onnx");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `y = Identity(x)` with x declared as given, to see exactly what the image became.
fn identity_model(dir: &Path, file: &str, elem: u64, dims: &[D]) -> PathBuf {
    let bytes = model(
        &[node("Identity", &["x"], &["y"], &[])],
        &[],
        &[tensor_value("x", elem, Some(dims))],
        &[tensor_value("y", elem, None)],
        13,
    );
    let path = dir.join(file);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn solid_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(path).unwrap();
}

/// A 3x2 RGB image whose 18 bytes are all different: 10, 20, ..., 180 in row-major HWC order.
fn distinct_png(path: &Path) -> Vec<u8> {
    let raw: Vec<u8> = (1..=18).map(|i| i * 10).collect();
    image::RgbImage::from_raw(3, 2, raw.clone()).unwrap().save(path).unwrap();
    raw
}

/// `crx580 run MODEL PICTURE EXTRA... --output-dir OUT`, and its first output.
fn through(model: &Path, picture: &Path, extra: &[&str], out: &Path) -> crx580::Tensor {
    let mut args =
        vec!["run", model.to_str().unwrap(), picture.to_str().unwrap(), "--output-dir", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = crx580(&args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    crx580::io::read_tensor_file(&out.join("output_0.npy")).unwrap().0
}

#[test]
fn nhwc_and_nchw_layouts_place_each_pixel() {
    let dir = temp_dir("img-layout");
    let png = dir.join("pixels.png");
    let raw = distinct_png(&png);
    // NHWC by its shape (channels last): the output is the image's bytes in order.
    let nhwc = identity_model(&dir, "nhwc.onnx", FLOAT, &[D::N(1), D::N(2), D::N(3), D::N(3)]);
    let got = through(&nhwc, &png, &["--preprocess", "none"], &dir.join("nhwc"));
    assert_eq!(got.to_f64_vec().unwrap(), raw.iter().map(|&v| v as f64).collect::<Vec<_>>());
    // NCHW (channels second): channel c of pixel p is raw[p * 3 + c], at c * 6 + p.
    let nchw = identity_model(&dir, "nchw.onnx", FLOAT, &[D::S("N"), D::N(3), D::N(2), D::N(3)]);
    let got = through(&nchw, &png, &["--preprocess", "scale01"], &dir.join("nchw"));
    let want: Vec<f32> = (0..18).map(|i| raw[(i % 6) * 3 + i / 6] as f32 / 255.0).collect();
    assert_eq!(got.as_slice::<f32>().unwrap(), &want[..]);
    // uint8 inputs take the raw bytes.
    let u8_model = identity_model(&dir, "u8.onnx", UINT8, &[D::N(1), D::N(2), D::N(3), D::N(3)]);
    let t = through(&u8_model, &png, &[], &dir.join("u8"));
    assert_eq!(t.as_slice::<u8>().unwrap(), &raw[..]);
}

#[test]
fn a_classifier_prints_its_top_classes_with_labels() {
    let dir = temp_dir("img-top5");
    let png = dir.join("orange.png");
    solid_png(&png, 8, 12, [200, 50, 10]);
    let labels = dir.join("labels.txt");
    std::fs::write(&labels, "red\ngreen\nblue\n").unwrap();
    // Declared 4x6: the 8x12 picture is resized, and a solid colour stays itself.
    let m = channel_mean_model(&dir, &[D::N(1), D::N(3), D::N(6), D::N(4)]);
    let o = crx580(&[
        "run",
        m.to_str().unwrap(),
        png.to_str().unwrap(),
        "--preprocess",
        "none",
        "--labels",
        labels.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("scores: float32 [1, 3], top 5 of 3 classes:"), "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].contains("1. class 0     score 200.0000") && lines[0].ends_with("red"), "{out}");
    assert!(lines[1].contains("2. class 1     score 50.0000") && lines[1].ends_with("green"), "{out}");
    assert!(lines[2].contains("3. class 2     score 10.0000") && lines[2].ends_with("blue"), "{out}");
    // ImageNet normalisation, worked out by hand: (200/255 - 0.485) / 0.229 = 1.30705,
    // (50/255 - 0.456) / 0.224 = -1.1604, (10/255 - 0.406) / 0.225 = -1.6302.
    let o = crx580(&["run", m.to_str().unwrap(), png.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for want in ["class 0     score 1.3070", "class 1     score -1.1604", "class 2     score -1.6302"] {
        assert!(out.contains(want), "{want} in {out}");
    }
    // A labels file that does not fit the classes is refused.
    std::fs::write(&labels, "red\ngreen\n\n\n").unwrap();
    let o = crx580(&["run", m.to_str().unwrap(), png.to_str().unwrap(), "--labels", labels.to_str().unwrap()]);
    assert!(o.status.success(), "2 labels for 3 classes reads as background + 2: {}", stderr(&o));
    assert!(stdout(&o).contains("(background)"), "{}", stdout(&o));
    std::fs::write(&labels, "red\n").unwrap();
    let o = crx580(&["run", m.to_str().unwrap(), png.to_str().unwrap(), "--labels", labels.to_str().unwrap()]);
    assert!(stderr(&o).contains("the labels file has 1 lines but the output has 3 classes"), "{}", stderr(&o));
}

#[test]
fn jpeg_and_symbolic_sizes_decode_too() {
    let dir = temp_dir("img-jpeg");
    let jpg = dir.join("solid.jpg");
    image::RgbImage::from_pixel(16, 16, image::Rgb([200, 50, 10])).save(&jpg).unwrap();
    // H and W not fixed by the model: the image keeps its own 16x16, or takes --size.
    let m = channel_mean_model(&dir, &[D::N(1), D::N(3), D::S("H"), D::S("W")]);
    let scores = through(&m, &jpg, &["--preprocess", "none"], &dir.join("out")).into_vec::<f32>().unwrap();
    for (got, want) in scores.iter().zip([200.0f32, 50.0, 10.0]) {
        assert!((got - want).abs() <= 4.0, "JPEG is lossy but close: {scores:?}");
    }
    let o = crx580(&["run", m.to_str().unwrap(), jpg.to_str().unwrap(), "--size", "5x7", "--layout", "nchw"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Dims without names take their size from --shape: the picture is resized to 7 wide, 5 high.
    let unnamed = identity_model(&dir, "unnamed.onnx", FLOAT, &[D::N(1), D::N(3), D::U, D::U]);
    let o = crx580(&["run", unnamed.to_str().unwrap(), jpg.to_str().unwrap(), "--shape", "x=1x3x5x7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("y: float32 [1, 3, 5, 7] "), "{}", stdout(&o));
}

#[test]
fn images_that_do_not_fit_are_clear_errors() {
    let dir = temp_dir("img-errors");
    let png = dir.join("p.png");
    solid_png(&png, 4, 4, [1, 2, 3]);
    let garbage = dir.join("garbage.png");
    std::fs::write(&garbage, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let fixed = channel_mean_model(&dir, &[D::N(2), D::N(3), D::N(4), D::N(4)]);
    let u8_model = identity_model(&dir, "u8.onnx", UINT8, &[D::N(1), D::N(4), D::N(4), D::N(3)]);
    let five = identity_model(&dir, "five.onnx", FLOAT, &[D::N(1), D::N(5), D::N(4), D::N(4)]);
    let one = identity_model(&dir, "one.onnx", FLOAT, &[D::N(1), D::N(3), D::N(4), D::N(4)]);
    let missing = dir.join("missing.png");
    let (p, g) = (png.to_str().unwrap(), garbage.to_str().unwrap());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![fixed.to_str().unwrap(), p], "takes a batch of 2; one image is a batch of 1"),
        (vec![u8_model.to_str().unwrap(), p, "--preprocess", "imagenet"], "is uint8: it takes raw pixels"),
        (vec![five.to_str().unwrap(), p], "has 5 channels in nchw layout"),
        (vec![one.to_str().unwrap(), g], "garbage.png: not a PNG or JPEG image we can read"),
        (vec![one.to_str().unwrap(), p, "--size", "8x8"], "--size 8x8: the model's input has width 4"),
        (vec![one.to_str().unwrap(), p, "--size", "big"], "--size 'big' is not WIDTHxHEIGHT"),
        (vec![one.to_str().unwrap(), missing.to_str().unwrap()], "missing.png"),
    ];
    for (args, want) in cases {
        let mut all = vec!["run"];
        all.extend(args.iter().copied());
        let o = crx580(&all);
        assert_eq!(o.status.code(), Some(1), "{all:?}");
        assert!(stderr(&o).contains(want), "{all:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    }
}
