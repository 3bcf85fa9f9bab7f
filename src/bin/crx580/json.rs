//! The few JSON documents the CLI prints, written by hand: the core crate stays dependency-lean and
//! these are flat objects of strings and numbers.

use crx580::ir::Dim;
use crx580::onnx::ImportedModel;
use crx580::IoInfo;

use crate::bench::Report;
use crate::info::Summary;

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
            let kind = string(&i.kind.to_string());
            format!("{{\"name\":{},\"dtype\":{dtype},\"shape\":{shape},\"kind\":{kind}}}", string(&i.name))
        })
        .collect();
    format!("[{}]", items.join(","))
}

fn strings(list: &[String]) -> String {
    format!("[{}]", list.iter().map(|s| string(s)).collect::<Vec<_>>().join(","))
}

/// `crx580 bench --json`, one line; times in milliseconds. `median_ms`, `p90_ms`, `min_ms`, `runs`,
/// `load_ms` and `peak_rss_mb` are read by benches/compare.py: keep them.
pub fn bench(r: &Report) -> String {
    let inputs: Vec<String> = r
        .inputs
        .iter()
        .map(|(n, s)| format!("{}:[{}]", string(n), s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",")))
        .collect();
    let (p50, p90, p99) = (r.percentile(50.0), r.percentile(90.0), r.percentile(99.0));
    format!(
        "{{\"median_ms\":{p50:.4},\"p50_ms\":{p50:.4},\"p90_ms\":{p90:.4},\"p99_ms\":{p99:.4},\"min_ms\":{:.4},\"max_ms\":{:.4},\"mean_ms\":{:.4},\"cold_ms\":{:.4},\"runs\":{},\"warmup\":{},\"throughput_per_s\":{:.3},\"load_ms\":{:.3},\"peak_rss_mb\":{:.1},\"device_nodes\":{},\"total_nodes\":{},\"inputs\":{{{}}}}}",
        r.times[0],
        r.times[r.times.len() - 1],
        r.mean(),
        r.cold_ms,
        r.times.len(),
        r.warmup,
        r.throughput(),
        r.load_ms,
        r.peak_rss_mb,
        r.device_nodes,
        r.total_nodes,
        inputs.join(",")
    )
}

/// `crx580 info --json`: dims are numbers, symbol names (strings) or null when unknown; a FLOPs
/// count is null when some node's shapes are unknown.
pub fn info(m: &ImportedModel, s: &Summary) -> String {
    let opsets: Vec<String> =
        m.opsets.iter().map(|(d, v)| format!("{}:{v}", string(if d.is_empty() { "ai.onnx" } else { d }))).collect();
    let ops: Vec<String> = s.ops.iter().map(|(o, n)| format!("{}:{n}", string(o))).collect();
    let params: Vec<String> = s
        .params
        .iter()
        .map(|g| format!("{}:{{\"count\":{},\"bytes\":{}}}", string(g.dtype.name()), g.count, g.bytes))
        .collect();
    let (count, bytes) = s.params.iter().fold((0, 0), |(c, b), g| (c + g.count, b + g.bytes));
    let number = |f: Option<u64>| f.map_or("null".to_string(), |f| f.to_string());
    let flops: Vec<String> = s
        .flops
        .iter()
        .map(|(op, f)| {
            format!(
                "{}:{{\"flops\":{},\"nodes\":{},\"unknown_nodes\":{}}}",
                string(op),
                number(f.total()),
                f.nodes,
                f.unknown_nodes
            )
        })
        .collect();
    let total = s.flops.values().try_fold(0u64, |acc, f| Some(acc.saturating_add(f.total()?)));
    let devices: Vec<String> = s
        .devices
        .iter()
        .map(|d| match &d.available {
            Err(why) => format!("{{\"device\":{},\"available\":false,\"reason\":{}}}", string(d.device), string(why)),
            Ok(()) => format!(
                "{{\"device\":{},\"available\":true,\"nodes\":{},\"runs\":{},\"leaves_to_cpu\":{}}}",
                string(d.device),
                d.nodes,
                strings(&d.runs),
                strings(&d.leaves)
            ),
        })
        .collect();
    format!(
        "{{\"ir_version\":{},\"producer\":{},\"opsets\":{{{}}},\"inputs\":{},\"outputs\":{},\"operators\":{{{}}},\"nodes\":{},\"parameters\":{count},\"parameter_bytes\":{bytes},\"parameters_by_dtype\":{{{}}},\"flops\":{{{}}},\"flops_total\":{},\"devices\":[{}]}}",
        m.ir_version,
        string(&m.producer),
        opsets.join(","),
        io_list(&s.inputs),
        io_list(&s.outputs),
        ops.join(","),
        m.graph.nodes.len(),
        params.join(","),
        flops.join(","),
        number(total),
        devices.join(",")
    )
}
