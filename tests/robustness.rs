//! Hostile model files: truncations and byte flips of a real model must give errors, never panics,
//! through the whole load path (decode, import, inference, folding) and a run.

use crx580::{Model, Session, SessionOptions, Tensor};
use std::path::Path;

fn model_bytes() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits/digits.onnx")).unwrap()
}

/// Loads and, if that works, runs once; any panic fails the test with the mutation that caused it.
fn load_and_run(bytes: &[u8]) {
    if let Ok(model) = Model::from_bytes(bytes) {
        if let Ok(session) = Session::new(model, &SessionOptions::default()) {
            let x = Tensor::new(vec![2, 1, 8, 8], vec![0.5f32; 128]).unwrap();
            let _ = session.run(&[("image", &x)]);
        }
    }
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = model_bytes();
    for cut in 0..bytes.len() {
        let r = std::panic::catch_unwind(|| Model::from_bytes(&bytes[..cut]).map(|_| ()));
        match r {
            Ok(Ok(())) => {} // a prefix can end exactly between fields and still be a (smaller) valid model
            Ok(Err(_)) => {}
            Err(_) => panic!("truncation at byte {cut} panicked"),
        }
    }
}

#[test]
fn byte_flips_never_panic() {
    let original = model_bytes();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..1500 {
        let mut bytes = original.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        if std::panic::catch_unwind(|| load_and_run(&bytes)).is_err() {
            panic!("mutation round {round} panicked");
        }
    }
}
