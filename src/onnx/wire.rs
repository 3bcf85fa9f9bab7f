//! Protobuf wire-format reader over a byte slice: keys, varints, fixed-width scalars,
//! length-delimited fields (strings, bytes, sub-messages, packed repeated scalars), and skipping of
//! unknown fields including the deprecated groups. Nothing here allocates more than the input holds.
//!
//! Errors carry the absolute byte offset where they happened and, as they travel up through the
//! message decoders, the path of messages and fields that led there; [`WireError::into_error`]
//! turns that into a crate error such as
//! `ModelProto.graph.node[3].attribute[0]: length 4000 past end of input at byte 812`.

use crate::{Error, ErrorKind};
use std::fmt;

/// How deep messages (and groups) may nest. Real models stay far below this (a subgraph costs three
/// levels: graph, node, attribute); the limit keeps hostile inputs from overflowing the stack.
pub const MAX_DEPTH: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    Varint,
    Fixed64,
    Len,
    StartGroup,
    EndGroup,
    Fixed32,
}

impl WireType {
    fn from_bits(bits: u64) -> Option<WireType> {
        Some(match bits {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::Len,
            3 => WireType::StartGroup,
            4 => WireType::EndGroup,
            5 => WireType::Fixed32,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            WireType::Varint => "varint",
            WireType::Fixed64 => "fixed64",
            WireType::Len => "length-delimited",
            WireType::StartGroup => "start-group",
            WireType::EndGroup => "end-group",
            WireType::Fixed32 => "fixed32",
        }
    }
}

impl fmt::Display for WireType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoding error: what went wrong, at which byte, and (filled in on the way up) under which
/// messages and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub offset: usize,
    pub message: String,
    /// Innermost segment first; segments are pushed as the error leaves each decoder.
    path: Vec<String>,
}

pub type WResult<T> = std::result::Result<T, WireError>;

impl WireError {
    pub fn new(offset: usize, message: impl Into<String>) -> WireError {
        WireError { offset, message: message.into(), path: Vec::new() }
    }

    /// True until some decoder has said where in the message tree the error happened.
    pub fn is_unplaced(&self) -> bool {
        self.path.is_empty()
    }

    pub fn push_segment(mut self, segment: impl Into<String>) -> WireError {
        self.path.push(segment.into());
        self
    }

    /// `root.outer.inner`, e.g. `ModelProto.graph.node[3]`.
    pub fn path(&self, root: &str) -> String {
        let mut s = root.to_string();
        for seg in self.path.iter().rev() {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(seg);
        }
        s
    }

    /// The crate error: kind InvalidModel, message `root.path: what at byte N`.
    pub fn into_error(self, root: &str) -> Error {
        Error::new(ErrorKind::InvalidModel, format!("{}: {} at byte {}", self.path(root), self.message, self.offset))
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path(""))?;
        }
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

/// Adds a path segment to the error of a `WResult`.
pub trait At<T> {
    fn at<S: Into<String>>(self, segment: impl FnOnce() -> S) -> WResult<T>;
}

impl<T> At<T> for WResult<T> {
    fn at<S: Into<String>>(self, segment: impl FnOnce() -> S) -> WResult<T> {
        self.map_err(|e| e.push_segment(segment()))
    }
}

/// Zig-zag decoding of `sint64`.
pub fn zigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Zig-zag decoding of `sint32` (the value is a 32-bit varint).
pub fn zigzag32(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

/// A cursor over one message: `data[pos..end]`. Offsets are absolute positions in the whole input,
/// so every error can say where it is in the file.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    end: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0, end: data.len(), depth: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    /// The bytes from absolute offset `start` up to the cursor (a field just read, key included).
    pub fn since(&self, start: usize) -> &'a [u8] {
        &self.data[start..self.pos]
    }

    /// The bytes of this message not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..self.end]
    }

    /// How many messages enclose this one.
    pub fn depth(&self) -> usize {
        self.depth
    }

    fn error(&self, at: usize, message: impl Into<String>) -> WireError {
        WireError::new(at, message)
    }

    fn end_description(&self) -> String {
        if self.end == self.data.len() {
            "end of input".to_string()
        } else {
            format!("end of the enclosing message (byte {})", self.end)
        }
    }

    pub fn varint(&mut self) -> WResult<u64> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.data[..self.end].get(self.pos) else {
                return Err(self.error(start, format!("varint truncated by the {}", self.end_description())));
            };
            self.pos += 1;
            // The tenth byte holds only bit 63; anything more overflows 64 bits.
            if i == 9 && b > 1 {
                return Err(self.error(start, "varint overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error(start, "varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize, what: &str) -> WResult<&'a [u8]> {
        let start = self.pos;
        if n > self.remaining() {
            return Err(self.error(start, format!("{what} of {n} bytes past {}", self.end_description())));
        }
        self.pos += n;
        Ok(&self.data[start..start + n])
    }

    pub fn fixed32(&mut self) -> WResult<u32> {
        let b = self.take(4, "fixed32")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn fixed64(&mut self) -> WResult<u64> {
        let b = self.take(8, "fixed64")?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    /// A length prefix and the bytes it covers.
    pub fn len_delimited(&mut self) -> WResult<&'a [u8]> {
        let start = self.pos;
        let len = self.varint()?;
        if len > self.remaining() as u64 {
            return Err(self.error(start, format!("length {len} past {}", self.end_description())));
        }
        self.take(len as usize, "length-delimited field")
    }

    /// The next field's number and wire type, or `None` at the end of the message.
    pub fn next_field(&mut self) -> WResult<Option<(u32, WireType)>> {
        if self.at_end() {
            return Ok(None);
        }
        let start = self.pos;
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 || field > (1 << 29) - 1 {
            return Err(self.error(start, format!("invalid field number {field}")));
        }
        let Some(wt) = WireType::from_bits(key & 7) else {
            return Err(self.error(start, format!("field {field} has invalid wire type {}", key & 7)));
        };
        if wt == WireType::EndGroup {
            return Err(self.error(start, format!("end-group tag for field {field} without a matching start-group")));
        }
        Ok(Some((field as u32, wt)))
    }

    fn expect(&self, wt: WireType, expected: WireType) -> WResult<()> {
        if wt != expected {
            // The key was just read; point at the value that follows it.
            return Err(self.error(self.pos, format!("wire type {wt}, expected {expected}")));
        }
        Ok(())
    }

    pub fn uint64(&mut self, wt: WireType) -> WResult<u64> {
        self.expect(wt, WireType::Varint)?;
        self.varint()
    }

    pub fn int64(&mut self, wt: WireType) -> WResult<i64> {
        Ok(self.uint64(wt)? as i64)
    }

    /// `int32` and enums: protobuf writes negative values sign-extended to 64 bits, so truncating
    /// gives the value back.
    pub fn int32(&mut self, wt: WireType) -> WResult<i32> {
        Ok(self.uint64(wt)? as i32)
    }

    pub fn sint64(&mut self, wt: WireType) -> WResult<i64> {
        Ok(zigzag64(self.uint64(wt)?))
    }

    pub fn sint32(&mut self, wt: WireType) -> WResult<i32> {
        Ok(zigzag32(self.uint64(wt)? as u32))
    }

    pub fn bool(&mut self, wt: WireType) -> WResult<bool> {
        Ok(self.uint64(wt)? != 0)
    }

    pub fn float(&mut self, wt: WireType) -> WResult<f32> {
        self.expect(wt, WireType::Fixed32)?;
        Ok(f32::from_bits(self.fixed32()?))
    }

    pub fn double(&mut self, wt: WireType) -> WResult<f64> {
        self.expect(wt, WireType::Fixed64)?;
        Ok(f64::from_bits(self.fixed64()?))
    }

    pub fn bytes(&mut self, wt: WireType) -> WResult<&'a [u8]> {
        self.expect(wt, WireType::Len)?;
        self.len_delimited()
    }

    /// A `string` field. Invalid UTF-8 is replaced rather than rejected: names are only compared
    /// and shown, and a lossy name is more useful than a refused model.
    pub fn string(&mut self, wt: WireType) -> WResult<String> {
        Ok(String::from_utf8_lossy(self.bytes(wt)?).into_owned())
    }

    /// A sub-message: a reader over its bytes, one level deeper.
    pub fn message(&mut self, wt: WireType) -> WResult<Reader<'a>> {
        let start = self.pos;
        self.expect(wt, WireType::Len)?;
        if self.depth + 1 > MAX_DEPTH {
            return Err(self.error(start, format!("messages nest deeper than {MAX_DEPTH} levels")));
        }
        let body = self.len_delimited()?;
        let body_start = self.pos - body.len();
        Ok(Reader { data: self.data, pos: body_start, end: self.pos, depth: self.depth + 1 })
    }

    /// A repeated scalar field, packed (one length-delimited run) or not (one value per key).
    fn repeated<T>(
        &mut self,
        wt: WireType,
        scalar: WireType,
        fixed_size: usize,
        out: &mut Vec<T>,
        read: impl Fn(&mut Reader<'a>) -> WResult<T>,
    ) -> WResult<()> {
        if wt == scalar {
            out.push(read(self)?);
            return Ok(());
        }
        self.expect(wt, WireType::Len).map_err(|e| {
            WireError::new(e.offset, format!("wire type {wt}, expected {scalar} or packed ({})", WireType::Len))
        })?;
        let start = self.pos;
        let body = self.len_delimited()?;
        let body_start = self.pos - body.len();
        if fixed_size > 0 {
            if body.len() % fixed_size != 0 {
                return Err(self.error(
                    start,
                    format!("packed {scalar} run of {} bytes is not a multiple of {fixed_size}", body.len()),
                ));
            }
            out.reserve(body.len() / fixed_size);
        }
        let mut sub = Reader { data: self.data, pos: body_start, end: self.pos, depth: self.depth };
        while !sub.at_end() {
            out.push(read(&mut sub)?);
        }
        Ok(())
    }

    pub fn repeated_int64(&mut self, wt: WireType, out: &mut Vec<i64>) -> WResult<()> {
        self.repeated(wt, WireType::Varint, 0, out, |r| Ok(r.varint()? as i64))
    }

    pub fn repeated_uint64(&mut self, wt: WireType, out: &mut Vec<u64>) -> WResult<()> {
        self.repeated(wt, WireType::Varint, 0, out, |r| r.varint())
    }

    pub fn repeated_int32(&mut self, wt: WireType, out: &mut Vec<i32>) -> WResult<()> {
        self.repeated(wt, WireType::Varint, 0, out, |r| Ok(r.varint()? as i32))
    }

    pub fn repeated_sint64(&mut self, wt: WireType, out: &mut Vec<i64>) -> WResult<()> {
        self.repeated(wt, WireType::Varint, 0, out, |r| Ok(zigzag64(r.varint()?)))
    }

    pub fn repeated_float(&mut self, wt: WireType, out: &mut Vec<f32>) -> WResult<()> {
        self.repeated(wt, WireType::Fixed32, 4, out, |r| Ok(f32::from_bits(r.fixed32()?)))
    }

    pub fn repeated_double(&mut self, wt: WireType, out: &mut Vec<f64>) -> WResult<()> {
        self.repeated(wt, WireType::Fixed64, 8, out, |r| Ok(f64::from_bits(r.fixed64()?)))
    }

    /// Skips the value of a field this decoder does not know. Groups (wire types 3 and 4, deprecated
    /// but legal) are skipped up to their matching end tag, nested groups included.
    pub fn skip(&mut self, field: u32, wt: WireType) -> WResult<()> {
        match wt {
            WireType::Varint => self.varint().map(drop),
            WireType::Fixed64 => self.fixed64().map(drop),
            WireType::Fixed32 => self.fixed32().map(drop),
            WireType::Len => self.len_delimited().map(drop),
            WireType::EndGroup => Err(self.error(self.pos, format!("unexpected end-group tag for field {field}"))),
            WireType::StartGroup => self.skip_group(field),
        }
    }

    fn skip_group(&mut self, field: u32) -> WResult<()> {
        let start = self.pos;
        // Open groups' field numbers; iterative so that nesting cannot overflow the stack.
        let mut open = vec![field];
        while let Some(&innermost) = open.last() {
            if self.at_end() {
                return Err(self.error(start, format!("group of field {field} has no end tag")));
            }
            let key_at = self.pos;
            let key = self.varint()?;
            let f = key >> 3;
            match WireType::from_bits(key & 7) {
                Some(WireType::EndGroup) => {
                    if f != u64::from(innermost) {
                        return Err(self.error(
                            key_at,
                            format!("end-group tag for field {f} does not match the open group of field {innermost}"),
                        ));
                    }
                    open.pop();
                }
                Some(WireType::StartGroup) => {
                    if self.depth + open.len() + 1 > MAX_DEPTH {
                        return Err(self.error(key_at, format!("groups nest deeper than {MAX_DEPTH} levels")));
                    }
                    open.push(f as u32);
                }
                Some(other) => self.skip(f as u32, other)?,
                None => return Err(self.error(key_at, format!("field {f} has invalid wire type {}", key & 7))),
            }
        }
        Ok(())
    }
}

/// A protobuf writer for tests: builds messages by hand, including encodings that no well-behaved
/// serializer emits (unpacked repeated fields, groups, bad lengths).
#[cfg(test)]
pub(crate) mod enc {
    #[derive(Default, Clone, Debug)]
    pub struct Enc {
        pub buf: Vec<u8>,
    }

    pub fn varint(mut v: u64) -> Vec<u8> {
        let mut out = vec![];
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    impl Enc {
        pub fn new() -> Enc {
            Enc::default()
        }
        pub fn key(mut self, field: u32, wt: u8) -> Enc {
            self.buf.extend(varint((u64::from(field) << 3) | u64::from(wt)));
            self
        }
        pub fn raw(mut self, bytes: &[u8]) -> Enc {
            self.buf.extend_from_slice(bytes);
            self
        }
        pub fn uint(self, field: u32, v: u64) -> Enc {
            let mut e = self.key(field, 0);
            e.buf.extend(varint(v));
            e
        }
        pub fn int(self, field: u32, v: i64) -> Enc {
            self.uint(field, v as u64)
        }
        pub fn float(self, field: u32, v: f32) -> Enc {
            let mut e = self.key(field, 5);
            e.buf.extend(v.to_le_bytes());
            e
        }
        pub fn double(self, field: u32, v: f64) -> Enc {
            let mut e = self.key(field, 1);
            e.buf.extend(v.to_le_bytes());
            e
        }
        pub fn bytes(self, field: u32, v: &[u8]) -> Enc {
            let mut e = self.key(field, 2);
            e.buf.extend(varint(v.len() as u64));
            e.buf.extend_from_slice(v);
            e
        }
        pub fn str(self, field: u32, v: &str) -> Enc {
            self.bytes(field, v.as_bytes())
        }
        pub fn msg(self, field: u32, m: Enc) -> Enc {
            self.bytes(field, &m.buf)
        }
        pub fn packed_ints(self, field: u32, vs: &[i64]) -> Enc {
            let body: Vec<u8> = vs.iter().flat_map(|&v| varint(v as u64)).collect();
            self.bytes(field, &body)
        }
        pub fn packed_floats(self, field: u32, vs: &[f32]) -> Enc {
            let body: Vec<u8> = vs.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.bytes(field, &body)
        }
        pub fn finish(self) -> Vec<u8> {
            self.buf
        }
    }
}

#[cfg(test)]
mod tests {
    use super::enc::{varint, Enc};
    use super::*;

    fn read_varint(bytes: &[u8]) -> WResult<u64> {
        Reader::new(bytes).varint()
    }

    #[test]
    fn varints_decode_up_to_ten_bytes() {
        assert_eq!(read_varint(&[0]).unwrap(), 0);
        assert_eq!(read_varint(&[0x7f]).unwrap(), 127);
        assert_eq!(read_varint(&[0xac, 0x02]).unwrap(), 300);
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read_varint(&max).unwrap(), u64::MAX);
        assert_eq!(varint(u64::MAX), max);
        // Non-minimal encodings are legal.
        assert_eq!(read_varint(&[0x81, 0x80, 0x00]).unwrap(), 1);
        // -1 as int64 is ten bytes.
        let mut r = Reader::new(&max);
        assert_eq!(r.int64(WireType::Varint).unwrap(), -1);
        assert!(r.at_end());
    }

    #[test]
    fn varint_overflow_and_truncation_are_errors() {
        let e = read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).unwrap_err();
        assert!(e.message.contains("overflows"), "{e}");
        let e = read_varint(&[0x80; 11]).unwrap_err();
        assert!(e.message.contains("overflows") || e.message.contains("longer"), "{e}");
        let e = read_varint(&[0x80, 0x80]).unwrap_err();
        assert!(e.message.contains("truncated"), "{e}");
        assert_eq!(e.offset, 0);
    }

    #[test]
    fn zigzag_matches_protobuf() {
        assert_eq!(zigzag64(0), 0);
        assert_eq!(zigzag64(1), -1);
        assert_eq!(zigzag64(2), 1);
        assert_eq!(zigzag64(3), -2);
        assert_eq!(zigzag64(u64::MAX), i64::MIN);
        assert_eq!(zigzag64(u64::MAX - 1), i64::MAX);
        assert_eq!(zigzag32(u32::MAX), i32::MIN);
        assert_eq!(zigzag32(4294967294), i32::MAX);
        let bytes = Enc::new().uint(1, 3).uint(2, 4294967295).finish();
        let mut r = Reader::new(&bytes);
        let (_, wt) = r.next_field().unwrap().unwrap();
        assert_eq!(r.sint64(wt).unwrap(), -2);
        let (_, wt) = r.next_field().unwrap().unwrap();
        assert_eq!(r.sint32(wt).unwrap(), i32::MIN);
    }

    #[test]
    fn every_wire_type_reads() {
        let bytes = Enc::new()
            .uint(1, 150)
            .double(2, -2.5)
            .str(3, "hi")
            .float(5, 1.5)
            .int(6, -7)
            .uint(7, 1)
            .raw(&[0x45, 0x78, 0x56, 0x34, 0x12]) // field 8 fixed32
            .finish();
        let mut r = Reader::new(&bytes);
        let mut seen = vec![];
        while let Some((f, wt)) = r.next_field().unwrap() {
            match f {
                1 => assert_eq!(r.uint64(wt).unwrap(), 150),
                2 => assert_eq!(r.double(wt).unwrap(), -2.5),
                3 => assert_eq!(r.string(wt).unwrap(), "hi"),
                5 => assert_eq!(r.float(wt).unwrap(), 1.5),
                6 => assert_eq!(r.int32(wt).unwrap(), -7),
                7 => assert!(r.bool(wt).unwrap()),
                8 => {
                    assert_eq!(wt, WireType::Fixed32);
                    assert_eq!(r.fixed32().unwrap(), 0x12345678)
                }
                _ => unreachable!(),
            }
            seen.push(f);
        }
        assert_eq!(seen, [1, 2, 3, 5, 6, 7, 8]);
    }

    #[test]
    fn packed_and_unpacked_repeated_fields_mix() {
        let bytes = Enc::new()
            .packed_ints(1, &[1, -2, 300])
            .int(1, 4)
            .packed_floats(2, &[0.5, 2.0])
            .float(2, -1.0)
            .packed_ints(3, &[])
            .finish();
        let mut r = Reader::new(&bytes);
        let (mut ints, mut floats) = (vec![], vec![]);
        while let Some((f, wt)) = r.next_field().unwrap() {
            match f {
                1 | 3 => r.repeated_int64(wt, &mut ints).unwrap(),
                2 => r.repeated_float(wt, &mut floats).unwrap(),
                _ => unreachable!(),
            }
        }
        assert_eq!(ints, [1, -2, 300, 4]);
        assert_eq!(floats, [0.5, 2.0, -1.0]);

        let bytes = Enc::new().double(1, 1.0).bytes(1, &[0; 16]).finish();
        let mut r = Reader::new(&bytes);
        let mut doubles = vec![];
        while let Some((_, wt)) = r.next_field().unwrap() {
            r.repeated_double(wt, &mut doubles).unwrap();
        }
        assert_eq!(doubles, [1.0, 0.0, 0.0]);
    }

    #[test]
    fn packed_run_with_bad_length_is_an_error() {
        let bytes = Enc::new().bytes(1, &[0; 7]).finish();
        let mut r = Reader::new(&bytes);
        let (_, wt) = r.next_field().unwrap().unwrap();
        let e = r.repeated_float(wt, &mut vec![]).unwrap_err();
        assert!(e.message.contains("not a multiple of 4"), "{e}");
        // A varint cut off inside a packed run.
        let bytes = Enc::new().bytes(1, &[0x80]).uint(2, 0).finish();
        let mut r = Reader::new(&bytes);
        let (_, wt) = r.next_field().unwrap().unwrap();
        let e = r.repeated_int64(wt, &mut vec![]).unwrap_err();
        assert!(e.message.contains("truncated by the end of the enclosing message"), "{e}");
    }

    #[test]
    fn unknown_fields_of_every_wire_type_are_skipped() {
        let group = Enc::new()
            .key(9, 3)
            .uint(1, 5)
            .key(10, 3) // nested group
            .str(2, "x")
            .key(10, 4)
            .key(9, 4);
        let bytes = Enc::new()
            .uint(20, 1)
            .double(21, 0.0)
            .str(22, "skip me")
            .float(23, 0.0)
            .raw(&group.buf)
            .str(1, "kept")
            .finish();
        let mut r = Reader::new(&bytes);
        let mut kept = None;
        while let Some((f, wt)) = r.next_field().unwrap() {
            if f == 1 {
                kept = Some(r.string(wt).unwrap());
            } else {
                r.skip(f, wt).unwrap();
            }
        }
        assert_eq!(kept.as_deref(), Some("kept"));
    }

    #[test]
    fn malformed_groups_are_errors() {
        // Mismatched end tag.
        let bytes = Enc::new().key(9, 3).key(8, 4).finish();
        let mut r = Reader::new(&bytes);
        let (f, wt) = r.next_field().unwrap().unwrap();
        let e = r.skip(f, wt).unwrap_err();
        assert!(e.message.contains("does not match"), "{e}");
        // Unterminated.
        let bytes = Enc::new().key(9, 3).uint(1, 1).finish();
        let mut r = Reader::new(&bytes);
        let (f, wt) = r.next_field().unwrap().unwrap();
        assert!(r.skip(f, wt).unwrap_err().message.contains("no end tag"));
        // A stray end tag.
        let bytes = Enc::new().key(9, 4).finish();
        let e = Reader::new(&bytes).next_field().unwrap_err();
        assert!(e.message.contains("without a matching start-group"), "{e}");
        // Groups nested past the limit.
        let mut e = Enc::new();
        for _ in 0..=MAX_DEPTH {
            e = e.key(9, 3);
        }
        let bytes = e.finish();
        let mut r = Reader::new(&bytes);
        let (f, wt) = r.next_field().unwrap().unwrap();
        assert!(r.skip(f, wt).unwrap_err().message.contains("deeper"));
    }

    #[test]
    fn bad_keys_are_errors() {
        for wt in [6u8, 7] {
            let bytes = Enc::new().key(3, wt).finish();
            let e = Reader::new(&bytes).next_field().unwrap_err();
            assert_eq!(e.message, format!("field 3 has invalid wire type {wt}"));
        }
        let e = Reader::new(&[0x00]).next_field().unwrap_err();
        assert!(e.message.contains("invalid field number 0"), "{e}");
        // A key that does not fit 32 bits.
        let bytes = varint(1 << 40);
        assert!(Reader::new(&bytes).next_field().is_err());
    }

    #[test]
    fn lengths_past_the_end_are_errors() {
        let mut bytes = Enc::new().str(1, "abc").finish();
        bytes.truncate(4);
        let mut r = Reader::new(&bytes);
        let (_, wt) = r.next_field().unwrap().unwrap();
        let e = r.bytes(wt).unwrap_err();
        assert_eq!(e.message, "length 3 past end of input");
        assert_eq!(e.offset, 1);
        // Inside a sub-message, the limit is the sub-message's end, not the input's.
        let inner = Enc::new().key(1, 2).raw(&varint(10)).raw(b"abc");
        let bytes = Enc::new().msg(1, inner).str(2, "padding beyond").finish();
        let mut r = Reader::new(&bytes);
        let (_, wt) = r.next_field().unwrap().unwrap();
        let mut sub = r.message(wt).unwrap();
        let (_, wt) = sub.next_field().unwrap().unwrap();
        let e = sub.bytes(wt).unwrap_err();
        assert!(e.message.contains("past end of the enclosing message"), "{e}");
        assert_eq!(e.offset, 3);
        // A fixed value cut short.
        let bytes = Enc::new().key(1, 1).raw(&[1, 2, 3]).finish();
        let mut r = Reader::new(&bytes);
        let (_, wt) = r.next_field().unwrap().unwrap();
        assert!(r.double(wt).unwrap_err().message.contains("fixed64 of 8 bytes past end of input"));
    }

    #[test]
    fn wrong_wire_type_for_a_known_field_is_an_error() {
        let bytes = Enc::new().str(1, "x").finish();
        let mut r = Reader::new(&bytes);
        let (_, wt) = r.next_field().unwrap().unwrap();
        let e = r.clone().int64(wt).unwrap_err();
        assert_eq!(e.message, "wire type length-delimited, expected varint");
        let bytes = Enc::new().uint(1, 1).finish();
        let mut r = Reader::new(&bytes);
        let (_, wt) = r.next_field().unwrap().unwrap();
        assert!(r.clone().message(wt).is_err());
        assert!(r.repeated_float(wt, &mut vec![]).unwrap_err().message.contains("or packed"));
    }

    #[test]
    fn message_depth_is_limited() {
        let mut m = Enc::new();
        for _ in 0..MAX_DEPTH + 5 {
            m = Enc::new().msg(1, m);
        }
        let bytes = m.finish();
        let mut r = Reader::new(&bytes);
        let mut depth = 0;
        let e = loop {
            let (_, wt) = r.next_field().unwrap().unwrap();
            match r.message(wt) {
                Ok(sub) => r = sub,
                Err(e) => break e,
            }
            depth += 1;
        };
        assert_eq!(depth, MAX_DEPTH);
        assert!(e.message.contains("nest deeper"), "{e}");
    }

    #[test]
    fn errors_name_their_path() {
        let e = WireError::new(812, "length 4000 past end of input")
            .push_segment("attribute[0]")
            .push_segment("node[3]")
            .push_segment("graph")
            .into_error("ModelProto");
        assert_eq!(e.kind, ErrorKind::InvalidModel);
        assert_eq!(e.message, "ModelProto.graph.node[3].attribute[0]: length 4000 past end of input at byte 812");
    }
}
