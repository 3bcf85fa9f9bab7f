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
    assert_eq!(common::compare(&got, &want, 0.0, 0.0), Err("element 0: got 9007199254740993, expected 9007199254740992".into()));
    let got = Tensor::vector(vec![1i64 << 53, i64::MAX - 1, i64::MIN]);
    assert!(common::compare(&got, &want, 1e-3, 1e-4).is_err(), "a tolerance does not apply to integers");
    let (got, want) = (Tensor::vector(vec![u64::MAX - 1]), Tensor::vector(vec![u64::MAX]));
    assert_eq!(common::compare(&got, &want, 0.0, 0.0), Err(format!("element 0: got {}, expected {}", u64::MAX - 1, u64::MAX)));
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
