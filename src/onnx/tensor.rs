//! `TensorProto` to [`Tensor`]: every dtype the IR has, from `raw_data` (little-endian), from the
//! typed fields, or from an external data file. The element count the dims declare is checked
//! against the data actually present before anything is allocated, so a tiny file cannot ask for a
//! huge tensor.

use super::model::{value_type, OptionalProto, SequenceProto, TensorProto, DATA_LOCATION_EXTERNAL};
use crate::error::ResultExt;
use crate::ir::bytes;
use crate::ir::tensor::{checked_len, TensorData};
use crate::ir::{DType, Data, Sequence, Tensor, ValueKind};
use crate::{bail, err, Result};
use half::{bf16, f16};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

/// ONNX's name for a `TensorProto.DataType` code, including the types crx580 does not support.
pub fn onnx_dtype_name(code: i32) -> String {
    match crate::ir::dtype::onnx_type_name(code) {
        Some(name) => name.to_string(),
        None => format!("unknown data type {code}"),
    }
}

/// The dtype of a tensor or type declaration; Unsupported (naming the type) for codes the IR lacks.
pub fn dtype_from_code(code: i32) -> Result<DType> {
    match DType::from_onnx_code(code) {
        Some(dt) => Ok(dt),
        None if code == 0 => bail!(InvalidModel, "data type is not set"),
        None => bail!(Unsupported, "data type {} is not supported", onnx_dtype_name(code)),
    }
}

/// Converts a `TensorProto`. `base_dir` is where external data files are looked up (the model's
/// directory); without one, the current directory.
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor> {
    convert(t, base_dir).context(
        || {
            if t.name.is_empty() {
                "tensor".to_string()
            } else {
                format!("tensor '{}'", t.name)
            }
        },
    )
}

/// A tensor's dims as sizes (a negative dim is an invalid model).
fn dims_of(t: &TensorProto) -> Result<Vec<usize>> {
    t.dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| err!(InvalidModel, "negative dim {d} in dims {:?}", t.dims)))
        .collect()
}

fn convert(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor> {
    let dtype = dtype_from_code(t.data_type)?;
    if t.has_segment {
        bail!(Unsupported, "segmented tensors are not supported");
    }
    let shape = dims_of(t)?;
    let n = checked_len(&shape, dtype)?;
    let external = t.data_location == DATA_LOCATION_EXTERNAL || (!t.external_data.is_empty() && t.raw_data.is_none());
    let data = if external {
        let bytes = read_external(t, base_dir, raw_len(dtype, n)?)?;
        from_raw(dtype, n, &shape, &bytes)?
    } else if let Some(raw) = t.raw_data.as_deref() {
        from_raw(dtype, n, &shape, raw)?
    } else {
        from_typed(t, dtype, n, &shape)?
    };
    Tensor::from_data(shape, data)
}

/// Bytes that `n` elements take in `raw_data`.
fn raw_len(dtype: DType, n: usize) -> Result<usize> {
    if dtype == DType::String {
        bail!(InvalidModel, "string tensors keep their data in string_data, not raw or external data");
    }
    bytes::byte_len(dtype, n)
}

fn from_raw(dtype: DType, n: usize, shape: &[usize], raw: &[u8]) -> Result<TensorData> {
    let expected = raw_len(dtype, n)?;
    if raw.len() != expected {
        bail!(InvalidModel, "raw data has {} bytes, shape {shape:?} of {dtype} needs {expected}", raw.len());
    }
    bytes::from_le_bytes(dtype, n, raw)
}

/// The typed field ONNX stores a dtype in when `raw_data` is not used.
fn typed_field(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float_data",
        DType::F64 => "double_data",
        DType::I64 => "int64_data",
        DType::U32 | DType::U64 => "uint64_data",
        DType::String => "string_data",
        _ => "int32_data",
    }
}

fn from_typed(t: &TensorProto, dtype: DType, n: usize, shape: &[usize]) -> Result<TensorData> {
    if dtype.is_narrow() {
        // int32_data holds the bytes raw_data would: one element each for the 8-bit types, two
        // or four packed ones for the 4- and 2-bit types.
        let expected = raw_len(dtype, n)?;
        if t.int32_data.len() != expected {
            bail!(
                InvalidModel,
                "int32_data has {} values, shape {shape:?} of {dtype} needs {expected}{}",
                t.int32_data.len(),
                if t.int32_data.is_empty() { " (and there is no raw_data)" } else { "" }
            );
        }
        let bytes: Vec<u8> = t.int32_data.iter().map(|&v| v as u8).collect();
        return from_raw(dtype, n, shape, &bytes);
    }
    let present = match dtype {
        DType::F32 => t.float_data.len(),
        DType::F64 => t.double_data.len(),
        DType::I64 => t.int64_data.len(),
        DType::U32 | DType::U64 => t.uint64_data.len(),
        DType::String => t.string_data.len(),
        _ => t.int32_data.len(),
    };
    if present != n {
        bail!(
            InvalidModel,
            "{} has {present} values, shape {shape:?} of {dtype} needs {n}{}",
            typed_field(dtype),
            if present == 0 { " (and there is no raw_data)" } else { "" }
        );
    }
    let ints = &t.int32_data;
    Ok(match dtype {
        DType::F32 => TensorData::F32(t.float_data.clone()),
        DType::F64 => TensorData::F64(t.double_data.clone()),
        DType::I64 => TensorData::I64(t.int64_data.clone()),
        DType::U64 => TensorData::U64(t.uint64_data.clone()),
        // Narrow types sit in wider fields; the casts keep the low bits as ONNX specifies.
        DType::U32 => TensorData::U32(t.uint64_data.iter().map(|&v| v as u32).collect()),
        DType::I32 => TensorData::I32(ints.clone()),
        DType::I16 => TensorData::I16(ints.iter().map(|&v| v as i16).collect()),
        DType::I8 => TensorData::I8(ints.iter().map(|&v| v as i8).collect()),
        DType::U16 => TensorData::U16(ints.iter().map(|&v| v as u16).collect()),
        DType::U8 => TensorData::U8(ints.iter().map(|&v| v as u8).collect()),
        DType::Bool => TensorData::Bool(ints.iter().map(|&v| v != 0).collect()),
        DType::F16 => TensorData::F16(ints.iter().map(|&v| f16::from_bits(v as u16)).collect()),
        DType::BF16 => TensorData::BF16(ints.iter().map(|&v| bf16::from_bits(v as u16)).collect()),
        DType::String => {
            TensorData::String(t.string_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
        }
        narrow => bail!(Unsupported, "data type {narrow} is not read from typed fields here"),
    })
}

/// Checks that an external data location stays inside the model's directory: relative, and no `..`
/// that climbs out of it. (Symlinks are checked once the file exists, in [`resolve_inside`].)
fn safe_relative_path(location: &str) -> Result<PathBuf> {
    let path = Path::new(location);
    if location.is_empty() {
        bail!(InvalidModel, "external data has an empty location");
    }
    let mut depth = 0usize;
    for c in path.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            Component::ParentDir => {
                bail!(InvalidModel, "external data location '{location}' leaves the model directory")
            }
            Component::RootDir | Component::Prefix(_) => {
                bail!(InvalidModel, "external data location '{location}' must be a relative path")
            }
        }
    }
    if depth == 0 {
        bail!(InvalidModel, "external data location '{location}' does not name a file");
    }
    Ok(path.to_path_buf())
}

/// `base/relative`, with every symlink resolved, if it exists and stays inside `base`: a link that
/// points out of the model's directory (to /etc, to another user's files) is refused.
fn resolve_inside(base: &Path, relative: &Path, location: &str) -> Result<PathBuf> {
    let io = |p: &Path, e: std::io::Error| err!(Io, "cannot read external data file {}: {e}", p.display());
    let joined = base.join(relative);
    let real_base = base.canonicalize().map_err(|e| io(base, e))?;
    let real = joined.canonicalize().map_err(|e| io(&joined, e))?;
    if !real.starts_with(&real_base) {
        bail!(InvalidModel, "external data location '{location}' links out of the model directory");
    }
    Ok(real)
}

fn parse_size(key: &str, value: &str) -> Result<u64> {
    value.trim().parse::<u64>().map_err(|_| err!(InvalidModel, "external data {key} '{value}' is not a byte count"))
}

/// The bytes of a tensor stored as external data, read from the file its `location` names under
/// `base_dir` (checked as when a model loads: inside `base_dir`, within the file's size, the length
/// its dims need). For `crx580 convert`, which inlines them before converting.
pub fn external_bytes(t: &TensorProto, base_dir: &Path) -> Result<Vec<u8>> {
    let dtype = dtype_from_code(t.data_type)?;
    let shape = dims_of(t)?;
    let n = checked_len(&shape, dtype)?;
    read_external(t, Some(base_dir), raw_len(dtype, n)?)
}

/// Reads `expected` bytes of external data, after checking the declared location, offset and
/// length against the file so that nothing is allocated for data that is not there.
fn read_external(t: &TensorProto, base_dir: Option<&Path>, expected: usize) -> Result<Vec<u8>> {
    let (mut location, mut offset, mut length) = (None, 0u64, None);
    for entry in &t.external_data {
        match entry.key.as_str() {
            "location" => location = Some(entry.value.as_str()),
            "offset" => offset = parse_size("offset", &entry.value)?,
            "length" => length = Some(parse_size("length", &entry.value)?),
            _ => {} // "checksum" and future keys do not change where the bytes are
        }
    }
    let Some(location) = location else {
        bail!(InvalidModel, "external data has no location");
    };
    let Some(base_dir) = base_dir else {
        bail!(
            InvalidModel,
            "the tensor's data is in external file '{location}', and no directory was given to read it from \
             (load the model from its file, or name the directory: Model::from_bytes_with_dir)"
        )
    };
    let path = resolve_inside(base_dir, &safe_relative_path(location)?, location)?;
    if let Some(length) = length {
        if length != expected as u64 {
            bail!(InvalidModel, "external data length {length} does not match the {expected} bytes its shape needs");
        }
    }
    let open_error = |e: std::io::Error| err!(Io, "cannot read external data file {}: {e}", path.display());
    let mut file = File::open(&path).map_err(open_error)?;
    let file_len = file.metadata().map_err(open_error)?.len();
    if offset.checked_add(expected as u64).is_none_or(|end| end > file_len) {
        bail!(
            InvalidModel,
            "external data file {} has {file_len} bytes, the tensor needs {expected} bytes at offset {offset}",
            path.display()
        );
    }
    let mut bytes = crate::ir::limits::with_capacity(expected)?;
    file.seek(SeekFrom::Start(offset)).map_err(open_error)?;
    (&mut file).take(expected as u64).read_to_end(&mut bytes).map_err(open_error)?;
    if bytes.len() != expected {
        bail!(Io, "external data file {} ended early (read {} of {expected} bytes)", path.display(), bytes.len());
    }
    Ok(bytes)
}

/// Decodes a serialized TensorProto (a `.pb` test data file) into a tensor and its stored name.
/// It may not refer to external data: nothing is read from the file system.
pub fn tensor_from_pb_bytes(bytes: &[u8]) -> Result<(Tensor, Option<String>)> {
    let proto = crate::onnx::model::decode_tensor(bytes)?;
    let name = (!proto.name.is_empty()).then(|| proto.name.clone());
    Ok((tensor_from_proto(&proto, None)?, name))
}

/// Decodes a test data file of a value declared as `kind`: a TensorProto, a SequenceProto or an
/// OptionalProto. `elem_dtype` (the declared element type) types a sequence that has no elements.
pub fn data_from_pb_bytes(bytes: &[u8], kind: &ValueKind, elem_dtype: Option<DType>) -> Result<(Data, Option<String>)> {
    let named = |name: &str| (!name.is_empty()).then(|| name.to_string());
    match kind {
        ValueKind::Tensor => tensor_from_pb_bytes(bytes).map(|(t, name)| (Data::Tensor(t), name)),
        ValueKind::Sequence => {
            let proto = crate::onnx::model::decode_sequence(bytes)?;
            Ok((Data::Sequence(sequence_from_proto(&proto, elem_dtype)?), named(&proto.name)))
        }
        ValueKind::Optional(inner) => {
            let proto = crate::onnx::model::decode_optional(bytes)?;
            Ok((optional_from_proto(&proto, inner, elem_dtype)?, named(&proto.name)))
        }
    }
}

fn sequence_from_proto(s: &SequenceProto, elem_dtype: Option<DType>) -> Result<Sequence> {
    if s.other_values > 0 || !matches!(s.elem_type, value_type::TENSOR | value_type::UNDEFINED) {
        bail!(Unsupported, "sequences of anything but tensors are not supported (elem_type {})", s.elem_type);
    }
    let items: Vec<Tensor> = s
        .tensor_values
        .iter()
        .enumerate()
        .map(|(i, t)| tensor_from_proto(t, None).context(|| format!("sequence element {i}")))
        .collect::<Result<_>>()?;
    let dtype = match (items.first(), elem_dtype) {
        (Some(t), _) => t.dtype(),
        (None, Some(dt)) => dt,
        (None, None) => bail!(InvalidInput, "an empty sequence whose element type is not declared"),
    };
    Sequence::new(dtype, items)
}

fn optional_from_proto(o: &OptionalProto, inner: &ValueKind, elem_dtype: Option<DType>) -> Result<Data> {
    if o.other_value {
        bail!(Unsupported, "optionals holding maps or sparse tensors are not supported");
    }
    let value = match (o.elem_type, inner) {
        (value_type::UNDEFINED, _) => None,
        (value_type::TENSOR, ValueKind::Tensor) => {
            let t = o.tensor_value.as_ref().ok_or_else(|| err!(InvalidInput, "the optional has no tensor_value"))?;
            Some(Data::Tensor(tensor_from_proto(t, None)?))
        }
        (value_type::SEQUENCE, ValueKind::Sequence) => {
            let seq =
                o.sequence_value.as_ref().ok_or_else(|| err!(InvalidInput, "the optional has no sequence_value"))?;
            Some(Data::Sequence(sequence_from_proto(seq, elem_dtype)?))
        }
        (value_type::OPTIONAL, ValueKind::Optional(kind)) => {
            let opt =
                o.optional_value.as_ref().ok_or_else(|| err!(InvalidInput, "the optional has no optional_value"))?;
            Some(optional_from_proto(opt, kind, elem_dtype)?)
        }
        (code, _) => bail!(InvalidInput, "the optional holds elem_type {code}, the model declares optional({inner})"),
    };
    Ok(Data::Optional(value.map(Box::new)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::model::{decode_tensor, StringStringEntryProto};
    use crate::ErrorKind;
    use std::time::Instant;

    fn proto(data_type: i32, dims: &[i64]) -> TensorProto<'static> {
        TensorProto { data_type, dims: dims.to_vec(), name: "t".into(), ..TensorProto::default() }
    }

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("crx580-onnx-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn external(location: &str, extra: &[(&str, &str)]) -> Vec<StringStringEntryProto> {
        let mut v = vec![StringStringEntryProto { key: "location".into(), value: location.into() }];
        v.extend(extra.iter().map(|(k, v)| StringStringEntryProto { key: k.to_string(), value: v.to_string() }));
        v
    }

    #[test]
    fn typed_fields_convert() {
        let mut t = proto(10, &[2]);
        t.int32_data = vec![0x3c00, 0xc000];
        let x = tensor_from_proto(&t, None).unwrap();
        assert_eq!(x.as_slice::<f16>().unwrap(), &[f16::from_f32(1.0), f16::from_f32(-2.0)]);
        let mut t = proto(12, &[]);
        t.uint64_data = vec![4_000_000_000];
        let x = tensor_from_proto(&t, None).unwrap();
        assert_eq!((x.shape(), x.as_slice::<u32>().unwrap()), (&[][..], &[4_000_000_000u32][..]));
        let mut t = proto(9, &[3]);
        t.int32_data = vec![0, 1, 2];
        assert_eq!(tensor_from_proto(&t, None).unwrap().as_slice::<bool>().unwrap(), &[false, true, true]);
    }

    #[test]
    fn raw_data_wins_and_must_match_the_shape() {
        let raw = [0u8, 0, 128, 63, 0, 0, 0, 64];
        let mut t = proto(1, &[2]);
        t.raw_data = Some(raw[..].to_vec().into());
        t.float_data = vec![9.0];
        assert_eq!(tensor_from_proto(&t, None).unwrap().as_slice::<f32>().unwrap(), &[1.0, 2.0]);
        t.dims = vec![3];
        let e = tensor_from_proto(&t, None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidModel);
        assert_eq!(e.message, "tensor 't': raw data has 8 bytes, shape [3] of float32 needs 12");
    }

    #[test]
    fn missing_or_short_typed_data_is_an_error() {
        let t = proto(7, &[2, 2]);
        let e = tensor_from_proto(&t, None).unwrap_err();
        assert_eq!(
            e.message,
            "tensor 't': int64_data has 0 values, shape [2, 2] of int64 needs 4 (and there is no raw_data)"
        );
        let mut t = proto(8, &[2]);
        t.string_data = vec![b"a".to_vec()];
        assert!(tensor_from_proto(&t, None).unwrap_err().message.contains("string_data has 1 values"));
        t.raw_data = Some(b"ab"[..].into());
        assert!(tensor_from_proto(&t, None).unwrap_err().message.contains("string_data, not raw"));
    }

    #[test]
    fn huge_declared_shapes_fail_fast_without_allocating() {
        let start = Instant::now();
        // 2 GiB of float32 declared (under the limit), 4 bytes present.
        let mut t = proto(1, &[1 << 29]);
        t.raw_data = Some(vec![0u8; 4].into());
        let e = tensor_from_proto(&t, None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
        t.raw_data = None;
        t.float_data = vec![1.0];
        assert_eq!(tensor_from_proto(&t, None).unwrap_err().kind, ErrorKind::InvalidModel);
        // Over the allocation limit, and overflowing usize.
        let t = proto(1, &[1 << 40]);
        assert_eq!(tensor_from_proto(&t, None).unwrap_err().kind, ErrorKind::ResourceLimit);
        let t = proto(1, &[1 << 40, 1 << 40]);
        assert_eq!(tensor_from_proto(&t, None).unwrap_err().kind, ErrorKind::ResourceLimit);
        assert!(start.elapsed().as_secs() < 2);
    }

    #[test]
    fn bad_dims_and_dtypes_are_named() {
        let e = tensor_from_proto(&proto(1, &[2, -1]), None).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::InvalidModel, "tensor 't': negative dim -1 in dims [2, -1]")
        );
        for (code, name) in [(14, "complex64"), (15, "complex128"), (27, "float6e2m3"), (28, "float6e3m2")] {
            let e = tensor_from_proto(&proto(code, &[1]), None).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Unsupported);
            assert_eq!(e.message, format!("tensor 't': data type {name} is not supported"));
        }
        assert_eq!(tensor_from_proto(&proto(0, &[1]), None).unwrap_err().kind, ErrorKind::InvalidModel);
        assert_eq!(onnx_dtype_name(99), "unknown data type 99");
        let mut t = proto(1, &[1]);
        t.has_segment = true;
        assert_eq!(tensor_from_proto(&t, None).unwrap_err().kind, ErrorKind::Unsupported);
    }

    /// Protos as `onnx.helper.make_tensor` writes them (raw and typed) for the narrow types.
    #[test]
    fn narrow_types_unpack_from_raw_and_int32_data() {
        use crate::ir::narrow::{F8E4M3FN, I2, I4, U4};
        // make_tensor("x", INT4, [5], [0, 1, 7, -4, -8]).int32_data == [16, 199, 8]
        let mut t = proto(22, &[5]);
        t.int32_data = vec![16, 199, 8];
        let x = tensor_from_proto(&t, None).unwrap();
        assert_eq!(x.as_slice::<I4>().unwrap(), &[0, 1, 7, -4, -8].map(I4));
        // The same as raw_data, and a wrong byte count for an odd element count.
        let raw = [16u8, 199, 8];
        t.int32_data.clear();
        t.raw_data = Some(raw[..].to_vec().into());
        assert_eq!(tensor_from_proto(&t, None).unwrap(), x);
        t.dims = vec![7];
        let e = tensor_from_proto(&t, None).unwrap_err();
        assert_eq!(e.message, "tensor 't': raw data has 3 bytes, shape [7] of int4 needs 4");
        // make_tensor("x", UINT4, [2, 2], [1, 15, 0, 9], raw=True).raw_data == b"\xf1\x90"
        let mut t = proto(21, &[2, 2]);
        t.raw_data = Some(vec![0xf1u8, 0x90].into());
        assert_eq!(tensor_from_proto(&t, None).unwrap().as_slice::<U4>().unwrap(), &[1, 15, 0, 9].map(U4));
        // make_tensor("x", INT2, [3], [-2, 1, -1]).int32_data == [54]
        let mut t = proto(26, &[3]);
        t.int32_data = vec![54];
        assert_eq!(tensor_from_proto(&t, None).unwrap().as_slice::<I2>().unwrap(), &[I2(-2), I2(1), I2(-1)]);
        t.int32_data = vec![54, 0];
        assert!(tensor_from_proto(&t, None).unwrap_err().message.contains("int32_data has 2 values"));
        // make_tensor("x", FLOAT8E4M3FN, [2], [0.5, -448]).int32_data == [48, 254]
        let mut t = proto(17, &[2]);
        t.int32_data = vec![48, 254];
        let x = tensor_from_proto(&t, None).unwrap();
        assert_eq!(x.to_f64_vec().unwrap(), [0.5, -448.0]);
        assert_eq!(x.as_slice::<F8E4M3FN>().unwrap()[1].0, 254);
        // make_tensor("x", FLOAT4E2M1, [3], [0.5, -6, 3], raw=True).raw_data == b"\xf1\x05"
        let mut t = proto(23, &[3]);
        t.raw_data = Some(vec![0xf1u8, 0x05].into());
        assert_eq!(tensor_from_proto(&t, None).unwrap().to_f64_vec().unwrap(), [0.5, -6.0, 3.0]);
    }

    #[test]
    fn zero_size_and_scalar_tensors() {
        let t = proto(1, &[3, 0]);
        let x = tensor_from_proto(&t, None).unwrap();
        assert_eq!((x.shape(), x.len()), (&[3, 0][..], 0));
        let mut t = proto(7, &[]);
        t.int64_data = vec![-4];
        let x = tensor_from_proto(&t, None).unwrap();
        assert_eq!((x.shape(), x.as_slice::<i64>().unwrap()), (&[][..], &[-4i64][..]));
    }

    #[test]
    fn external_data_is_read_at_its_offset() {
        let dir = TempDir::new("ext");
        let mut bytes = vec![0xeeu8; 8];
        bytes.extend(7i64.to_le_bytes());
        bytes.extend((-1i64).to_le_bytes());
        std::fs::create_dir(dir.0.join("sub")).unwrap();
        std::fs::write(dir.0.join("sub/w.bin"), &bytes).unwrap();
        let mut t = proto(7, &[2]);
        t.data_location = DATA_LOCATION_EXTERNAL;
        t.external_data = external("./sub/../sub/w.bin", &[("offset", "8"), ("length", "16"), ("checksum", "x")]);
        let x = tensor_from_proto(&t, Some(&dir.0)).unwrap();
        assert_eq!(x.as_slice::<i64>().unwrap(), &[7, -1]);
        // Without a length, the shape says how much to read.
        t.external_data = external("sub/w.bin", &[("offset", "8")]);
        assert_eq!(tensor_from_proto(&t, Some(&dir.0)).unwrap().as_slice::<i64>().unwrap(), &[7, -1]);
    }

    #[test]
    fn external_data_needs_a_directory_and_stays_inside_it() {
        let dir = TempDir::new("ext-links");
        let outside = TempDir::new("ext-outside");
        std::fs::write(outside.0.join("secret.bin"), [1u8; 8]).unwrap();
        std::fs::write(dir.0.join("w.bin"), [2u8; 8]).unwrap();
        std::os::unix::fs::symlink(outside.0.join("secret.bin"), dir.0.join("out.bin")).unwrap();
        std::os::unix::fs::symlink(&outside.0, dir.0.join("outdir")).unwrap();
        std::os::unix::fs::symlink(dir.0.join("w.bin"), dir.0.join("in.bin")).unwrap();
        let read = |location: &str, base: Option<&Path>| {
            let mut t = proto(2, &[8]);
            t.data_location = DATA_LOCATION_EXTERNAL;
            t.external_data = external(location, &[]);
            tensor_from_proto(&t, base)
        };
        let e = read("w.bin", None).unwrap_err();
        assert!(e.message.contains("no directory was given"), "{e}");
        for link in ["out.bin", "outdir/secret.bin"] {
            let e = read(link, Some(&dir.0)).unwrap_err();
            assert!(e.message.contains("links out of the model directory"), "{link}: {e}");
        }
        // A link that stays inside is fine.
        assert_eq!(read("in.bin", Some(&dir.0)).unwrap().as_slice::<u8>().unwrap(), &[2u8; 8]);
    }

    #[test]
    fn external_data_is_checked_before_reading() {
        let dir = TempDir::new("ext-bad");
        std::fs::write(dir.0.join("w.bin"), [0u8; 16]).unwrap();
        let check = |dims: &[i64], entries: Vec<StringStringEntryProto>, kind: ErrorKind, text: &str| {
            let mut t = proto(1, dims);
            t.data_location = DATA_LOCATION_EXTERNAL;
            t.external_data = entries;
            let e = tensor_from_proto(&t, Some(&dir.0)).unwrap_err();
            assert_eq!(e.kind, kind, "{e}");
            assert!(e.message.contains(text), "{e}");
        };
        use ErrorKind::*;
        check(&[2], external("../w.bin", &[]), InvalidModel, "leaves the model directory");
        check(&[2], external("a/../../w.bin", &[]), InvalidModel, "leaves the model directory");
        check(&[2], external("/etc/passwd", &[]), InvalidModel, "must be a relative path");
        check(&[2], external("", &[]), InvalidModel, "empty location");
        check(&[2], external(".", &[]), InvalidModel, "does not name a file");
        check(&[2], vec![], InvalidModel, "no location");
        check(&[2], external("w.bin", &[("length", "4")]), InvalidModel, "length 4 does not match the 8 bytes");
        check(
            &[2],
            external("w.bin", &[("offset", "12")]),
            InvalidModel,
            "has 16 bytes, the tensor needs 8 bytes at offset 12",
        );
        check(&[2], external("w.bin", &[("offset", "-1")]), InvalidModel, "offset '-1' is not a byte count");
        check(&[2], external("w.bin", &[("offset", "18446744073709551615")]), InvalidModel, "has 16 bytes");
        // 1 GiB declared against a 16-byte file, and 16 GiB, over the size limit.
        check(&[1 << 28], external("w.bin", &[]), InvalidModel, "has 16 bytes");
        check(&[1 << 32], external("w.bin", &[]), ResourceLimit, "over the limit");
        check(&[2], external("missing.bin", &[]), Io, "cannot read external data file");
        // The proto's external data keys are enough even without data_location.
        let mut t = proto(1, &[4]);
        t.external_data = external("w.bin", &[]);
        assert_eq!(tensor_from_proto(&t, Some(&dir.0)).unwrap().len(), 4);
    }

    /// Every dtype, raw and typed, against the values numpy wrote (tests/models/decode/gen.py).
    #[test]
    fn every_dtype_matches_numpy() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/decode/tensors");
        let expected = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
        let mut checked = 0;
        for line in expected.lines() {
            let (head, values) = line.split_once('|').unwrap();
            let mut head = head.split(' ');
            let (file, code, dims) = (head.next().unwrap(), head.next().unwrap(), head.next().unwrap());
            let bytes = std::fs::read(dir.join(file)).unwrap();
            let t = tensor_from_proto(&decode_tensor(&bytes).unwrap(), None).unwrap();
            assert_eq!(t.dtype().onnx_code().to_string(), code, "{file}");
            let dims: Vec<usize> = dims.split(',').filter(|d| !d.is_empty()).map(|d| d.parse().unwrap()).collect();
            assert_eq!(t.shape(), &dims[..], "{file}");
            let values: Vec<&str> =
                if values.is_empty() && t.is_empty() { vec![] } else { values.split(' ').collect() };
            fn hex<T: crate::ir::Elem>(t: &Tensor, bits: fn(&T) -> u64) -> Vec<String> {
                t.as_slice::<T>().unwrap().iter().map(|x| format!("{:x}", bits(x))).collect()
            }
            let ours: Vec<String> = match t.dtype() {
                DType::F32 => hex(&t, |x: &f32| x.to_bits() as u64),
                DType::F64 => hex(&t, |x: &f64| x.to_bits()),
                DType::F16 => hex(&t, |x: &f16| x.to_bits() as u64),
                DType::BF16 => hex(&t, |x: &bf16| x.to_bits() as u64),
                DType::String => t
                    .as_slice::<String>()
                    .unwrap()
                    .iter()
                    .map(|s| s.bytes().map(|b| format!("{b:02x}")).collect::<String>())
                    .collect(),
                DType::Bool => t.as_slice::<bool>().unwrap().iter().map(|&b| (b as u8).to_string()).collect(),
                DType::U64 => t.as_slice::<u64>().unwrap().iter().map(|x| x.to_string()).collect(),
                _ => t.to_i64_vec().unwrap().iter().map(|v| v.to_string()).collect(),
            };
            assert_eq!(ours, values, "{file}");
            checked += 1;
        }
        assert_eq!(checked, 31);
    }
}

#[cfg(test)]
mod data_tests {
    use super::*;
    use crate::onnx::wire::enc::Enc;
    use crate::ErrorKind;

    /// A float TensorProto of `values` (1-D).
    fn floats(values: &[f32]) -> Enc {
        Enc::new().packed_ints(1, &[values.len() as i64]).int(2, 1).packed_floats(4, values)
    }

    fn sequence(items: &[&[f32]]) -> Enc {
        items.iter().fold(Enc::new().str(1, "s").int(2, value_type::TENSOR as i64), |e, v| e.msg(3, floats(v)))
    }

    #[test]
    fn sequences_and_optionals_decode_as_declared() {
        let bytes = sequence(&[&[1.0, 2.0], &[3.0]]).finish();
        let (d, name) = data_from_pb_bytes(&bytes, &ValueKind::Sequence, None).unwrap();
        assert_eq!(name.as_deref(), Some("s"));
        let s = d.as_sequence().unwrap();
        assert_eq!((s.len(), s.items()[1].as_slice::<f32>().unwrap()), (2, &[3.0f32][..]));

        // An empty sequence takes the declared element type.
        let empty = Enc::new().int(2, value_type::TENSOR as i64).finish();
        let (d, _) = data_from_pb_bytes(&empty, &ValueKind::Sequence, Some(DType::I64)).unwrap();
        assert_eq!(d.type_name(), "seq(tensor(int64))");
        let e = data_from_pb_bytes(&empty, &ValueKind::Sequence, None).unwrap_err();
        assert_eq!(e.message, "an empty sequence whose element type is not declared");

        let opt_kind = ValueKind::Optional(Box::new(ValueKind::Tensor));
        let opt = Enc::new().str(1, "o").int(2, value_type::TENSOR as i64).msg(3, floats(&[5.0])).finish();
        let (d, _) = data_from_pb_bytes(&opt, &opt_kind, None).unwrap();
        assert_eq!(d, Data::Optional(Some(Box::new(Data::Tensor(Tensor::vector(vec![5f32]))))));
        let none = Enc::new().str(1, "o").int(2, 0).finish();
        assert_eq!(data_from_pb_bytes(&none, &opt_kind, None).unwrap().0, Data::Optional(None));
        let opt_seq = Enc::new().int(2, value_type::SEQUENCE as i64).msg(5, sequence(&[&[1.0]])).finish();
        let seq_kind = ValueKind::Optional(Box::new(ValueKind::Sequence));
        assert_eq!(
            data_from_pb_bytes(&opt_seq, &seq_kind, None).unwrap().0.type_name(),
            "optional(seq(tensor(float32)))"
        );
    }

    #[test]
    fn mismatched_or_unsupported_contents_are_errors() {
        let opt_kind = ValueKind::Optional(Box::new(ValueKind::Tensor));
        let opt_seq = Enc::new().int(2, value_type::SEQUENCE as i64).msg(5, sequence(&[&[1.0]])).finish();
        let e = data_from_pb_bytes(&opt_seq, &opt_kind, None).unwrap_err();
        assert_eq!(e.message, "the optional holds elem_type 3, the model declares optional(tensor)");
        let no_value = Enc::new().int(2, value_type::TENSOR as i64).finish();
        assert_eq!(
            data_from_pb_bytes(&no_value, &opt_kind, None).unwrap_err().message,
            "the optional has no tensor_value"
        );
        let nested = Enc::new().int(2, value_type::SEQUENCE as i64).msg(5, Enc::new()).finish();
        let e = data_from_pb_bytes(&nested, &ValueKind::Sequence, None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        let mixed = sequence(&[&[1.0]]).msg(3, Enc::new().packed_ints(1, &[1]).int(2, 7).packed_ints(7, &[1])).finish();
        let e = data_from_pb_bytes(&mixed, &ValueKind::Sequence, None).unwrap_err();
        assert_eq!(e.message, "sequence element 1 is int64, the sequence holds float32");
        assert!(data_from_pb_bytes(&[0xff, 0xff], &ValueKind::Sequence, None).is_err());
    }
}
