//! The comparison rules the golden, conformance and zoo tests judge crx580 by (tests/common): each
//! must catch the error it exists to catch.

mod common;

use crx580::ir::narrow::I4;
use crx580::ir::Tensor;

#[test]
fn integers_are_compared_exactly_beyond_the_53_bits_of_a_double() {
    let want = Tensor::vector(vec![1i64 << 53, i64::MAX, i64::MIN]);
    assert_eq!(common::compare(&want, &want, 0.0, 0.0), Ok(()));
    // Both 2^53 + 1 and i64::MAX - 1 round to the same double as the value expected.
    let got = Tensor::vector(vec![(1i64 << 53) + 1, i64::MAX, i64::MIN]);
    assert_eq!(
        common::compare(&got, &want, 0.0, 0.0),
        Err("element 0: got 9007199254740993, expected 9007199254740992".into())
    );
    let got = Tensor::vector(vec![1i64 << 53, i64::MAX - 1, i64::MIN]);
    assert!(common::compare(&got, &want, 1e-3, 1e-4).is_err(), "a tolerance does not apply to integers");
    let (got, want) = (Tensor::vector(vec![u64::MAX - 1]), Tensor::vector(vec![u64::MAX]));
    assert_eq!(
        common::compare(&got, &want, 0.0, 0.0),
        Err(format!("element 0: got {}, expected {}", u64::MAX - 1, u64::MAX))
    );
    let (got, want) = (Tensor::vector(vec![I4(-8), I4(7)]), Tensor::vector(vec![I4(-8), I4(-7)]));
    assert_eq!(common::compare(&got, &want, 0.0, 0.0), Err("element 1: got 7, expected -7".into()));
}

#[test]
fn floats_are_compared_within_the_tolerance() {
    let want = Tensor::vector(vec![1.0f32, f32::NAN, -100.0]);
    let got = Tensor::vector(vec![1.0f32 + 1.5e-4, f32::NAN, -100.05]);
    assert_eq!(common::compare(&got, &want, 1e-3, 1e-4), Ok(()));
    let got = Tensor::vector(vec![1.0f32 + 1e-3, f32::NAN, -100.0]);
    assert!(common::compare(&got, &want, 1e-4, 1e-5).is_err());
    let got = Tensor::vector(vec![1.0f32, 0.0, -100.0]);
    assert!(common::compare(&got, &want, 1e-3, 1e-4).is_err(), "a number for NaN");
}

/// Detector rows `[x, y, w, h, score]` with coordinates near 640: the scores' tolerance is their
/// own column's (max(1, 0.9) * 1e-4), not the whole tensor's (640 * 1e-4 = 0.064).
fn detections(score_error: f32) -> (Tensor, Tensor) {
    let want: Vec<f32> = [[612.0, 630.5, 120.0, 88.0, 0.91], [14.25, 640.0, 33.0, 17.5, 0.02]].concat();
    let mut got = want.clone();
    got[4] += score_error;
    (Tensor::new(vec![1, 2, 5], got).unwrap(), Tensor::new(vec![1, 2, 5], want).unwrap())
}

#[test]
fn the_zoo_tolerance_is_per_component() {
    let (got, want) = detections(0.06);
    let e = common::compare_zoo(&got, &want, Some(2)).unwrap_err();
    assert!(e.starts_with("element 4: got 0.97"), "{e}");
    // The same rows laid out as YOLOv8 writes them, `[1, 5, boxes]`: components along axis 1.
    let transpose = |t: &Tensor| {
        let v = t.as_slice::<f32>().unwrap();
        Tensor::new(vec![1, 5, 2], (0..10).map(|i| v[(i % 2) * 5 + i / 2]).collect()).unwrap()
    };
    assert!(common::compare_zoo(&transpose(&got), &transpose(&want), Some(1)).is_err());
    // Within the column's own tolerance, and a coordinate off by less than 640's: both pass.
    let (got, want) = detections(8e-4);
    let ratio = common::compare_zoo(&got, &want, Some(2)).unwrap();
    assert!((0.7..1.0).contains(&ratio), "worst error / allowed = {ratio}");
    let mut coords = want.as_slice::<f32>().unwrap().to_vec();
    coords[1] += 0.6;
    assert!(common::compare_zoo(&Tensor::new(vec![1, 2, 5], coords).unwrap(), &want, Some(2)).is_ok());
    // Without a component axis the output is one component (the old rule); integers are exact.
    assert!(common::compare_zoo(&detections(0.06).0, &detections(0.06).1, None).is_ok());
    assert!(common::compare_zoo(&Tensor::scalar(640.05f32), &Tensor::scalar(640.0f32), None).is_ok());
    assert!(common::compare_zoo(&Tensor::vector(vec![5i64]), &Tensor::vector(vec![6i64]), None).is_err());
}
