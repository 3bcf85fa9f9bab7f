//! The fused attention kernel against the reference Attention op (the oracle) on odd shapes, and
//! written-out attention compiled (fused) against the unfused graph.

use super::tests::{build_at, check, compile_and_compare, tensor, In};
use crate::ir::{Attr, Tensor};
use crate::passes::attention::tests::{graph, Variant};

/// Q, K, V for `b` items: 3-D `[b, s, h*d]` when `three_d`, else 4-D `[b, h, s, d]`.
fn qkv(
    b: usize,
    (hq, hkv): (usize, usize),
    (sq, skv): (usize, usize),
    (d, dv): (usize, usize),
    three_d: bool,
) -> [Tensor; 3] {
    let shape = |h: usize, s: usize, w: usize| if three_d { vec![b, s, h * w] } else { vec![b, h, s, w] };
    let scaled = |seed, shape: Vec<usize>| {
        let t = tensor(seed, &shape);
        Tensor::new(shape, t.as_slice::<f32>().unwrap().iter().map(|v| v * 2.0).collect::<Vec<f32>>()).unwrap()
    };
    [scaled(1, shape(hq, sq, d)), scaled(2, shape(hkv, skv, d)), scaled(3, shape(hkv, skv, dv))]
}

fn attention(
    three_d: bool,
    heads: (usize, usize),
    mut attrs: Vec<(&'static str, Attr)>,
) -> std::sync::Arc<dyn crate::ir::Op> {
    if three_d {
        attrs.push(("q_num_heads", Attr::Int(heads.0 as i64)));
        attrs.push(("kv_num_heads", Attr::Int(heads.1 as i64)));
    }
    build_at("Attention", 23, attrs, 4)
}

#[test]
fn fused_attention_matches_the_reference() {
    // (batch, heads, lengths, widths, 3-D)
    let cases = [
        (1, (1, 1), (1, 1), (4, 4), true),
        (1, (3, 3), (7, 7), (8, 8), true),
        (2, (2, 2), (67, 67), (16, 16), true),
        (1, (12, 12), (130, 130), (32, 32), true),
        (2, (4, 2), (5, 9), (8, 6), false),
        (1, (2, 1), (65, 33), (3, 5), false),
    ];
    for (b, heads, (sq, skv), widths, three_d) in cases {
        let [q, k, v] = qkv(b, heads, (sq, skv), widths, three_d);
        let name = format!("b={b} heads={heads:?} sq={sq} skv={skv} widths={widths:?} 3d={three_d}");
        let fed = |q: &Tensor, k: &Tensor, v: &Tensor| vec![In::Fed(q.clone()), In::Fed(k.clone()), In::Fed(v.clone())];
        let op = attention(three_d, heads, vec![]);
        assert_eq!(check(&name, op.clone(), fed(&q, &k, &v)), "attention", "{name}");
        // An additive padding mask per batch item [b, 1, 1, skv]: the last key of item 0 masked.
        let pad: Vec<f32> = (0..b * skv).map(|i| if i == skv - 1 && skv > 1 { -10000.0 } else { 0.0 }).collect();
        let mut inputs = fed(&q, &k, &v);
        inputs.push(In::Fed(Tensor::new(vec![b, 1, 1, skv], pad).unwrap()));
        assert_eq!(check(&name, op.clone(), inputs), "attention", "{name} with a padding mask");
        // A full additive mask [sq, skv] and a boolean one hiding some keys of every query.
        let mut inputs = fed(&q, &k, &v);
        inputs.push(In::Fed(tensor(4, &[sq, skv])));
        assert_eq!(check(&name, op.clone(), inputs), "attention", "{name} with an [sq, skv] mask");
        let keep: Vec<bool> = (0..sq * skv).map(|i| i % 3 != 1).collect();
        let mut inputs = fed(&q, &k, &v);
        inputs.push(In::Fed(Tensor::new(vec![sq, skv], keep).unwrap()));
        assert_eq!(check(&name, op, inputs), "attention", "{name} with a boolean mask");
        // Causal with a scale, and with a mask shorter than the keys (the keys past it masked).
        let op = attention(three_d, heads, vec![("is_causal", Attr::Int(1)), ("scale", Attr::Float(0.3))]);
        let short = skv.div_ceil(2);
        let mut inputs = fed(&q, &k, &v);
        inputs.push(In::Fed(tensor(5, &[1, short])));
        assert_eq!(check(&name, op, inputs), "attention", "{name} causal with a short mask");
    }
}

#[test]
fn other_attention_forms_run_the_reference() {
    let [q, k, v] = qkv(1, (2, 2), (3, 3), (4, 4), false);
    let op = build_at("Attention", 23, vec![("softcap", Attr::Float(2.0))], 3);
    assert_eq!(check("softcap", op, vec![In::Fed(q), In::Fed(k), In::Fed(v)]), "reference");
}

#[test]
fn written_out_attention_runs_as_one_kernel() {
    for (s, h, d) in [(7, 2, 4), (16, 4, 8), (70, 3, 8)] {
        for variant in [Variant::Exact, Variant::MulNoMask, Variant::Named] {
            let mut g = graph(s, h, d, variant);
            let x = tensor(6, &[1, s, h * d]);
            let (kernels, _) = compile_and_compare(&mut g, &[&x], 1e-5);
            let count = |k: &str| kernels.iter().filter(|n| **n == k).count();
            assert_eq!((count("attention"), count("matmul-packed")), (1, 3), "{variant:?}: {kernels:?}");
            assert!(!kernels.contains(&"softmax") && !kernels.contains(&"transpose"), "{variant:?}: {kernels:?}");
        }
    }
}
