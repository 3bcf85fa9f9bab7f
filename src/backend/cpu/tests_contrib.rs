//! The fast kernels of onnxruntime's `com.microsoft` ops and of ArgMax/ArgMin against their
//! reference ops (the oracle) on odd shapes: Attention and MultiHeadAttention on the fused
//! attention kernel, SkipLayerNormalization (and the simplified form), the Gelu family.

use super::attention_contrib::FALLBACKS;
use super::tests::{build_at, check, check_outputs, tensor, In};
use crate::ir::{Attr, Attributes, Op, Tensor};
use crate::ops::{registry, BuildCtx};
use std::sync::Arc;

fn ms(op_type: &str, attrs: Vec<(&str, Attr)>, num_outputs: usize) -> Arc<dyn Op> {
    let attrs = Attributes::new(attrs.into_iter().map(|(n, a)| (n.to_string(), a)).collect());
    let ctx = BuildCtx { op_type, domain: "com.microsoft", opset: 1, attrs: &attrs, num_inputs: 1, num_outputs };
    Arc::from(registry().get("com.microsoft", op_type).unwrap()(&ctx).unwrap())
}

fn ints(shape: &[usize], v: Vec<i32>) -> Tensor {
    Tensor::new(shape.to_vec(), v).unwrap()
}

/// `check` for the attention ops, which must also have taken the fused path.
fn fused(name: &str, op: Arc<dyn Op>, inputs: Vec<In>) {
    let before = FALLBACKS.with(|n| n.get());
    assert_eq!(check(name, op, inputs), "attention", "{name}");
    assert_eq!(FALLBACKS.with(|n| n.get()), before, "{name} fell back to the reference");
}

#[test]
fn packed_attention_matches_the_reference() {
    // (batch, seq, input width, heads, qkv sizes)
    let cases = [
        (1, 1, 4, 1, [4, 4, 4]),
        (2, 7, 10, 3, [15, 15, 15]),
        (2, 67, 12, 2, [16, 16, 10]),
        (1, 130, 9, 4, [32, 32, 32]),
    ];
    for (b, s, hin, heads, sizes) in cases {
        let w_out: usize = sizes.iter().sum();
        let x = tensor(1, &[b, s, hin]);
        let w = tensor(2, &[hin, w_out]);
        let bias = tensor(3, &[w_out]);
        let mut attrs = vec![("num_heads", Attr::Int(heads as i64))];
        if sizes[2] != sizes[0] {
            attrs.push(("qkv_hidden_sizes", Attr::Ints(sizes.iter().map(|&v| v as i64).collect())));
        }
        let name = format!("b={b} s={s} hin={hin} heads={heads} sizes={sizes:?}");
        let op = ms("Attention", attrs.clone(), 1);
        // Constant (packed) and fed weights, with and without the bias.
        fused(&name, op.clone(), vec![In::Fed(x.clone()), In::Const(w.clone()), In::Const(bias.clone())]);
        fused(&name, op.clone(), vec![In::Fed(x.clone()), In::Fed(w.clone())]);
        // Every mask_index form: lengths, end and start positions, 0/1 per key and per query.
        let lengths = ints(&[b], (0..b).map(|i| (s - i.min(s - 1)) as i32).collect());
        let spans =
            ints(&[2 * b], (0..2 * b).map(|i| if i < b { s as i32 } else { (i - b).min(s - 1) as i32 }).collect());
        let keys = ints(&[b, s], (0..b * s).map(|i| i32::from(i % 4 != 1 || s == 1)).collect());
        let per_query = ints(&[b, s, s], (0..b * s * s).map(|i| i32::from(i % 5 != 2 || s == 1)).collect());
        for mask in [lengths, spans, keys, per_query] {
            let what = format!("{name} mask {:?}", mask.shape());
            let inputs = vec![In::Fed(x.clone()), In::Const(w.clone()), In::Const(bias.clone()), In::Fed(mask)];
            fused(&what, op.clone(), inputs);
        }
        // Causal, with a scale and another filter value.
        attrs.extend([
            ("unidirectional", Attr::Int(1)),
            ("scale", Attr::Float(0.3)),
            ("mask_filter_value", Attr::Float(-500.0)),
        ]);
        let keys = ints(&[b, s], (0..b * s).map(|i| i32::from(i % 3 != 2 || s == 1)).collect());
        let inputs = vec![In::Fed(x.clone()), In::Const(w.clone()), In::Const(bias.clone()), In::Fed(keys)];
        fused(&format!("{name} causal"), ms("Attention", attrs, 1), inputs);
    }
}

#[test]
fn multi_head_attention_matches_the_reference() {
    // (batch, query length, key length, heads, head size, value head size)
    for (b, sq, skv, n, h, hv) in [(1, 1, 1, 1, 4, 4), (2, 7, 9, 3, 5, 3), (1, 67, 67, 2, 8, 8), (2, 5, 70, 4, 3, 6)] {
        let (d, dv) = (n * h, n * hv);
        let name = format!("b={b} sq={sq} skv={skv} n={n} h={h} hv={hv}");
        let op = |attrs: Vec<(&str, Attr)>| {
            let mut all = vec![("num_heads", Attr::Int(n as i64))];
            all.extend(attrs);
            ms("MultiHeadAttention", all, 1)
        };
        let (q, k, v) = (tensor(1, &[b, sq, d]), tensor(2, &[b, skv, d]), tensor(3, &[b, skv, dv]));
        let bias = tensor(4, &[2 * d + dv]);
        let fed = |extra: Vec<In>| {
            let mut i = vec![In::Fed(q.clone()), In::Fed(k.clone()), In::Fed(v.clone())];
            i.extend(extra);
            i
        };
        fused(&name, op(vec![]), fed(vec![]));
        fused(&format!("{name} bias"), op(vec![]), fed(vec![In::Const(bias.clone())]));
        let lengths = ints(&[b], (0..b).map(|i| (skv - i.min(skv - 1)) as i32).collect());
        let keys = ints(&[b, skv], (0..b * skv).map(|i| i32::from(i % 4 != 3 || skv == 1)).collect());
        let per_query = ints(&[b, sq, skv], (0..b * sq * skv).map(|i| i32::from(i % 3 != 1 || skv == 1)).collect());
        for mask in [lengths, keys.clone(), per_query] {
            let what = format!("{name} key padding {:?}", mask.shape());
            fused(&what, op(vec![]), fed(vec![In::Const(bias.clone()), In::Fed(mask)]));
        }
        // attention_bias per head, per batch item, and with a key padding mask.
        for shape in [[1, n, sq, skv], [b, 1, sq, skv]] {
            let what = format!("{name} attention_bias {shape:?}");
            let ab = tensor(5, &shape);
            fused(&what, op(vec![]), fed(vec![In::Absent, In::Absent, In::Fed(ab.clone())]));
            fused(
                &what,
                op(vec![("scale", Attr::Float(0.2))]),
                fed(vec![In::Absent, In::Fed(keys.clone()), In::Fed(ab)]),
            );
        }
        // Packed QKV (self-attention), packed KV and head-split K/V.
        if sq == skv && h == hv {
            let qkv = tensor(6, &[b, sq, n, 3, h]);
            let what = format!("{name} packed QKV");
            fused(&what, op(vec![]), vec![In::Fed(qkv.clone())]);
            fused(&what, op(vec![]), vec![In::Fed(qkv.clone()), In::Absent, In::Absent, In::Const(bias.clone())]);
            let causal = op(vec![("unidirectional", Attr::Int(1))]);
            fused(&what, causal, vec![In::Fed(qkv), In::Absent, In::Absent, In::Absent, In::Fed(keys.clone())]);
        }
        if h == hv {
            let kv = tensor(7, &[b, skv, n, 2, h]);
            let what = format!("{name} packed KV");
            fused(&what, op(vec![]), vec![In::Fed(q.clone()), In::Fed(kv.clone())]);
            fused(&what, op(vec![]), vec![In::Fed(q.clone()), In::Fed(kv), In::Absent, In::Const(bias.clone())]);
        }
        let (ks, vs) = (tensor(8, &[b, n, skv, h]), tensor(9, &[b, n, skv, hv]));
        fused(&format!("{name} split KV"), op(vec![]), vec![In::Fed(q.clone()), In::Fed(ks), In::Fed(vs)]);
    }
}

#[test]
fn multi_head_attention_reference_forms() {
    // Past key/value and the present outputs run the reference, which appends them.
    let (b, s, p, n, h) = (1, 2, 3, 2, 4);
    let op = ms("MultiHeadAttention", vec![("num_heads", Attr::Int(n as i64))], 3);
    let (q, k, v) = (tensor(1, &[b, s, n * h]), tensor(2, &[b, s, n * h]), tensor(3, &[b, s, n * h]));
    let (pk, pv) = (tensor(4, &[b, n, p, h]), tensor(5, &[b, n, p, h]));
    let inputs = [Some(&q), Some(&k), Some(&v), None, None, None, Some(&pk), Some(&pv)];
    let out = op.eval(&inputs).unwrap();
    assert_eq!(out[1].shape(), &[b, n, p + s, h]);
    assert_eq!(&out[1].as_slice::<f32>().unwrap()[..p * h], &pk.as_slice::<f32>().unwrap()[..p * h]);
    // Packed QKV with a separate value does not fit.
    let packed = tensor(6, &[b, s, n, 3, h]);
    assert!(op.eval(&[Some(&packed), None, Some(&v)]).is_err());
}

#[test]
fn skip_layer_norm_matches_the_reference() {
    for (rows, n) in [(1, 1), (3, 15), (2 * 7, 387), (5, 16)] {
        let x = tensor(1, &[rows, n]);
        let (skip, gamma, beta, bias) = (tensor(2, &[rows, n]), tensor(3, &[n]), tensor(4, &[n]), tensor(5, &[n]));
        for simplified in [false, true] {
            let op_type = if simplified { "SkipSimplifiedLayerNormalization" } else { "SkipLayerNormalization" };
            let name = format!("{op_type} {rows}x{n}");
            let eps = vec![("epsilon", Attr::Float(1e-5))];
            // Every input and all four outputs.
            let mut inputs = vec![In::Fed(x.clone()), In::Fed(skip.clone()), In::Const(gamma.clone())];
            if !simplified {
                inputs.push(In::Const(beta.clone()));
            }
            inputs.push(In::Const(bias.clone()));
            assert_eq!(check_outputs(&name, ms(op_type, eps.clone(), 4), inputs, 4), "skip-layer-norm", "{name}");
            // Neither beta nor bias; one output.
            let inputs = vec![In::Fed(x.clone()), In::Fed(skip.clone()), In::Const(gamma.clone())];
            assert_eq!(check(&name, ms(op_type, vec![], 1), inputs), "skip-layer-norm", "{name}");
        }
    }
    // A [seq, hidden] skip repeated over the batch.
    let (x, skip, gamma) = (tensor(1, &[3, 5, 17]), tensor(2, &[5, 17]), tensor(3, &[17]));
    let inputs = vec![In::Fed(x), In::Fed(skip), In::Const(gamma)];
    assert_eq!(check("broadcast skip", ms("SkipLayerNormalization", vec![], 1), inputs), "skip-layer-norm");
}

#[test]
fn gelu_family_matches_the_reference() {
    for shape in [vec![1], vec![3, 17], vec![2, 5, 1031]] {
        let x = Tensor::new(
            shape.clone(),
            tensor(1, &shape).as_slice::<f32>().unwrap().iter().map(|v| v * 4.0).collect::<Vec<_>>(),
        )
        .unwrap();
        let bias = tensor(2, &shape[shape.len() - 1..]);
        for op_type in ["Gelu", "BiasGelu", "FastGelu"] {
            let name = format!("{op_type} {shape:?}");
            let op = ms(op_type, vec![], 1);
            if op_type != "BiasGelu" {
                assert_eq!(check(&name, op.clone(), vec![In::Fed(x.clone())]), "activation", "{name}");
            }
            if op_type != "Gelu" {
                let inputs = vec![In::Fed(x.clone()), In::Const(bias.clone())];
                assert_eq!(check(&name, op, inputs), "activation", "{name} with bias");
            }
        }
    }
    // QuickGelu has no fused form.
    assert_eq!(check("QuickGelu", ms("QuickGelu", vec![], 1), vec![In::Fed(tensor(1, &[4]))]), "reference");
}

#[test]
fn arg_max_and_min_match_the_reference() {
    // Values on a coarse grid so that ties are common; some rows hold NaNs.
    let data = |shape: &[usize], nans: bool| {
        let v: Vec<f32> = tensor(3, shape)
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, v)| if nans && i % 97 == 13 { f32::NAN } else { (v * 4.0).round() })
            .collect();
        Tensor::new(shape.to_vec(), v).unwrap()
    };
    let shapes: [&[usize]; 5] = [&[1], &[3, 37], &[2, 5, 600], &[4, 1, 33], &[7, 1031]];
    for shape in shapes {
        for nans in [false, true] {
            let x = data(shape, nans);
            for axis in 0..shape.len() as i64 {
                for (op_type, last, keep) in [("ArgMax", 0, 1), ("ArgMin", 0, 0), ("ArgMax", 1, 0), ("ArgMin", 1, 1)] {
                    let attrs = vec![
                        ("axis", Attr::Int(axis)),
                        ("select_last_index", Attr::Int(last)),
                        ("keepdims", Attr::Int(keep)),
                    ];
                    let name = format!("{op_type} {shape:?} axis {axis} last {last} keepdims {keep} nans {nans}");
                    assert_eq!(
                        check(&name, build_at(op_type, 13, attrs, 1), vec![In::Fed(x.clone())]),
                        "arg-reduce",
                        "{name}"
                    );
                }
            }
        }
    }
    // Infinities only, and -0 beside 0.
    let x =
        Tensor::new(vec![2, 3], vec![f32::NEG_INFINITY; 3].into_iter().chain([-0.0, 0.0, -0.0]).collect::<Vec<_>>())
            .unwrap();
    for (op_type, last) in [("ArgMax", 0), ("ArgMax", 1), ("ArgMin", 0), ("ArgMin", 1)] {
        let op = build_at(op_type, 13, vec![("axis", Attr::Int(1)), ("select_last_index", Attr::Int(last))], 1);
        assert_eq!(check(op_type, op, vec![In::Fed(x.clone())]), "arg-reduce");
    }
}
