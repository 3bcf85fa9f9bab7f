//! ONNX external data for `crx580 convert`: models whose initializers live in a side file
//! (`data_location = EXTERNAL`, the way models past protobuf's 2 GB limit are stored). Conversion
//! reads them into the model first ([`inline_external_data`], with the loader's checks: no path
//! out of the model's directory, no read past the file), and writes large initializers of a big
//! converted model back to a side file ([`move_to_external`]).

use crate::onnx::model::{ModelProto, StringStringEntryProto, DATA_LOCATION_EXTERNAL};
use crate::onnx::tensor::external_bytes;
use crate::{bail, Result};
use std::borrow::Cow;
use std::path::Path;

/// Protobuf refuses messages past 2 GiB; a converted model this close to it goes external.
pub const PROTOBUF_LIMIT: usize = (1 << 31) - (64 << 20);
/// Initializers smaller than this stay inside the model when others move to the side file.
pub const MIN_EXTERNAL_BYTES: usize = 1024;
/// Offsets in the side file are multiples of this (lets readers map tensors aligned).
const ALIGN: usize = 64;

/// Reads every external initializer of the main graph from its file under `dir` into the model;
/// returns how many there were.
pub fn inline_external_data(m: &mut ModelProto, dir: &Path) -> Result<usize> {
    let Some(g) = m.graph.as_mut() else { bail!(InvalidModel, "the model has no graph") };
    let mut count = 0;
    for t in &mut g.initializer {
        if t.data_location != DATA_LOCATION_EXTERNAL && (t.external_data.is_empty() || t.raw_data.is_some()) {
            continue;
        }
        let bytes = external_bytes(t, dir).map_err(|e| e.context(format!("initializer '{}'", t.name)))?;
        t.raw_data = Some(Cow::Owned(bytes));
        t.external_data.clear();
        t.data_location = 0;
        count += 1;
    }
    Ok(count)
}

/// Moves the raw data of every main-graph initializer of at least `min_bytes` into one side
/// buffer that the model refers to as `location` (a file name next to the model); returns the
/// buffer to write there.
pub fn move_to_external(m: &mut ModelProto, location: &str, min_bytes: usize) -> Result<Vec<u8>> {
    let Some(g) = m.graph.as_mut() else { bail!(InvalidModel, "the model has no graph") };
    let mut side = Vec::new();
    for t in &mut g.initializer {
        let Some(raw) = t.raw_data.take_if(|r| r.len() >= min_bytes.max(1)) else { continue };
        side.resize(side.len().next_multiple_of(ALIGN), 0);
        let entry = |key: &str, value: String| StringStringEntryProto { key: key.into(), value };
        t.external_data = vec![
            entry("location", location.into()),
            entry("offset", side.len().to_string()),
            entry("length", raw.len().to_string()),
        ];
        t.data_location = DATA_LOCATION_EXTERNAL;
        side.extend_from_slice(&raw);
    }
    Ok(side)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::model::{decode_model, GraphProto, TensorProto};
    use crate::onnx::write::encode_model;

    fn model_with(sizes: &[usize]) -> ModelProto<'static> {
        let initializer = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| TensorProto {
                name: format!("w{k}"),
                dims: vec![n as i64],
                data_type: crate::ir::DType::F32.onnx_code(),
                raw_data: Some(Cow::Owned((0..n * 4).map(|b| (b * 7 + k) as u8).collect())),
                ..Default::default()
            })
            .collect();
        ModelProto { graph: Some(GraphProto { initializer, ..Default::default() }), ..Default::default() }
    }

    #[test]
    fn large_initializers_round_trip_through_a_side_file() {
        let dir = std::env::temp_dir().join(format!("crx580-external-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // 3 and 1001 elements: the small one stays inside, the others move, at aligned offsets.
        let original = model_with(&[300, 3, 1001]);
        let mut m = original.clone();
        let side = move_to_external(&mut m, "model.onnx.data", MIN_EXTERNAL_BYTES).unwrap();
        let g = m.graph.as_ref().unwrap();
        let moved: Vec<bool> = g.initializer.iter().map(|t| t.data_location == DATA_LOCATION_EXTERNAL).collect();
        assert_eq!(moved, [true, false, true]);
        assert_eq!(g.initializer[2].external_data[1].value, "1216", "1200 rounded up to 64");
        assert_eq!(side.len(), 1216 + 4004);
        std::fs::write(dir.join("model.onnx.data"), &side).unwrap();
        // Written and read back, then inlined: the same tensors as before.
        let bytes = encode_model(&m);
        let mut back = decode_model(&bytes).unwrap();
        assert_eq!(inline_external_data(&mut back, &dir).unwrap(), 2);
        assert_eq!(back, original);
        // A side file shorter than the tensors it should hold, and a location out of the
        // directory, are errors, not reads.
        std::fs::write(dir.join("model.onnx.data"), &side[..3000]).unwrap();
        let mut short = decode_model(&bytes).unwrap();
        let e = inline_external_data(&mut short, &dir).unwrap_err();
        assert!(e.message.contains("w2") && e.message.contains("3000 bytes"), "{}", e.message);
        let mut escaping = m.clone();
        escaping.graph.as_mut().unwrap().initializer[0].external_data[0].value = "../model.onnx.data".into();
        assert!(inline_external_data(&mut escaping, &dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
