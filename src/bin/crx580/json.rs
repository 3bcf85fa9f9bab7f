//! The few JSON documents the CLI prints, written by hand: the core crate stays dependency-lean and
//! these are flat objects of strings and numbers.

use crx580::ir::Dim;
use crx580::onnx::ImportedModel;
use crx580::IoInfo;

/// A JSON string literal.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn io_list(list: &[IoInfo]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|i| {
            let dtype = i.dtype.map_or("null".into(), |d| string(d.name()));
            let shape = match &i.shape {
                None => "null".to_string(),
                Some(dims) => {
                    let d: Vec<String> = dims
                        .iter()
                        .map(|d| match d {
                            Dim::Known(n) => n.to_string(),
                            Dim::Symbol(s) => string(s),
                            Dim::Unknown => "null".into(),
                        })
                        .collect();
                    format!("[{}]", d.join(","))
                }
            };
            format!("{{\"name\":{},\"dtype\":{dtype},\"shape\":{shape}}}", string(&i.name))
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// `crx580 info --json`: dims are numbers, symbol names (strings) or null when unknown.
pub fn info(
    m: &ImportedModel,
    inputs: &[IoInfo],
    outputs: &[IoInfo],
    ops: &[(String, usize)],
    params: usize,
) -> String {
    let opsets: Vec<String> =
        m.opsets.iter().map(|(d, v)| format!("{}:{v}", string(if d.is_empty() { "ai.onnx" } else { d }))).collect();
    let ops: Vec<String> = ops.iter().map(|(o, n)| format!("{}:{n}", string(o))).collect();
    format!(
        "{{\"ir_version\":{},\"producer\":{},\"opsets\":{{{}}},\"inputs\":{},\"outputs\":{},\"operators\":{{{}}},\"nodes\":{},\"parameters\":{params}}}",
        m.ir_version,
        string(&m.producer),
        opsets.join(","),
        io_list(inputs),
        io_list(outputs),
        ops.join(","),
        m.graph.nodes.len()
    )
}
