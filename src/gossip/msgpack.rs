//! MessagePack as Serf's gossip speaks it: hashicorp/go-msgpack with `WriteExt=false`, the old
//! spec in which strings and byte slices are both "raw" (fixstr, str16, str32; never str8 or
//! bin). The decoder accepts every format of the current spec, so newer peers are understood;
//! the encoder writes only the old one, so Debian's serf 0.9.4 understands us.
//!
//! Decoding never panics and never allocates more than the input can justify: every length is
//! checked against the bytes left, and nesting is limited.

use std::fmt;

/// A decoded MessagePack value. Raw strings stay bytes: Go sends binary fields (`Addr`,
/// `Meta`, `Payload`) as strings holding non-UTF-8 bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// nil.
    Nil,
    /// true or false.
    Bool(bool),
    /// A signed integer that does not fit the unsigned case (negative).
    Int(i64),
    /// A non-negative integer.
    Uint(u64),
    /// A 32- or 64-bit float.
    Float(f64),
    /// A string or byte slice.
    Raw(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// A map, in wire order.
    Map(Vec<(Value, Value)>),
    /// An extension type (decoded for tolerance, never produced by Serf's gossip).
    Ext(i8, Vec<u8>),
}

/// Why bytes are not valid MessagePack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends inside a value.
    #[error("truncated at byte {0}")]
    Truncated(usize),
    /// A format byte that MessagePack does not define (0xc1).
    #[error("invalid format byte {0:#04x} at byte {1}")]
    BadFormat(u8, usize),
    /// Arrays and maps nested deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Deepest nesting accepted; Serf's messages use four levels at most.
pub const MAX_DEPTH: usize = 32;

impl Value {
    /// Looks a key up in a map whose keys are strings (Go field names).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(k, Value::Raw(r) if r == key.as_bytes()))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Uint(n) => Some(n),
            Value::Int(n) => u64::try_from(n).ok(),
            _ => None,
        }
    }

    /// The value as bytes, if it is raw.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Raw(r) => Some(r),
            _ => None,
        }
    }

    /// The value as text, if it is raw and valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// A map with string keys, in the given order.
    pub fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::Raw(k.as_bytes().to_vec()), v))
                .collect(),
        )
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => write!(f, "nil"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Uint(n) => write!(f, "{n}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Raw(r) => match std::str::from_utf8(r) {
                Ok(s) => write!(f, "{s:?}"),
                Err(_) => write!(f, "0x{}", hex(r)),
            },
            Value::Array(items) => {
                write!(f, "[")?;
                for (i, v) in items.iter().enumerate() {
                    write!(f, "{}{v}", if i > 0 { ", " } else { "" })?;
                }
                write!(f, "]")
            }
            Value::Map(entries) => {
                write!(f, "{{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    write!(f, "{}{k}: {v}", if i > 0 { ", " } else { "" })?;
                }
                write!(f, "}}")
            }
            Value::Ext(t, d) => write!(f, "ext({t}, 0x{})", hex(d)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes one value from the front of `input`; returns it and the bytes it used.
pub fn decode(input: &[u8]) -> Result<(Value, usize), DecodeError> {
    let mut r = Reader { input, pos: 0 };
    let v = r.value(0)?;
    Ok((v, r.pos))
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.input.len())
            .ok_or(DecodeError::Truncated(self.pos))?;
        let s = &self.input[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// A container's element count, checked against what is left (each element needs a byte).
    fn count(&mut self, n: usize, per_item: usize) -> Result<usize, DecodeError> {
        let c = self.be(n)? as usize;
        let left = self.input.len() - self.pos;
        if c.saturating_mul(per_item) > left {
            return Err(DecodeError::Truncated(self.pos));
        }
        Ok(c)
    }

    fn raw(&mut self, len: usize) -> Result<Value, DecodeError> {
        Ok(Value::Raw(self.take(len)?.to_vec()))
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let v = self.value(depth + 1)?;
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }

    fn ext(&mut self, len: usize) -> Result<Value, DecodeError> {
        let t = self.take(1)?[0] as i8;
        Ok(Value::Ext(t, self.take(len)?.to_vec()))
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let at = self.pos;
        let b = self.take(1)?[0];
        Ok(match b {
            0x00..=0x7f => Value::Uint(u64::from(b)),
            0x80..=0x8f => {
                let n = usize::from(b & 0x0f);
                if n * 2 > self.input.len() - self.pos {
                    return Err(DecodeError::Truncated(self.pos));
                }
                self.map(n, depth)?
            }
            0x90..=0x9f => {
                let n = usize::from(b & 0x0f);
                if n > self.input.len() - self.pos {
                    return Err(DecodeError::Truncated(self.pos));
                }
                self.array(n, depth)?
            }
            0xa0..=0xbf => self.raw(usize::from(b & 0x1f))?,
            0xc0 => Value::Nil,
            0xc1 => return Err(DecodeError::BadFormat(b, at)),
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4 | 0xd9 => {
                let n = self.be(1)? as usize;
                self.raw(n)?
            }
            0xc5 | 0xda => {
                let n = self.be(2)? as usize;
                self.raw(n)?
            }
            0xc6 | 0xdb => {
                let n = self.be(4)? as usize;
                self.raw(n)?
            }
            0xc7 => {
                let n = self.be(1)? as usize;
                self.ext(n)?
            }
            0xc8 => {
                let n = self.be(2)? as usize;
                self.ext(n)?
            }
            0xc9 => {
                let n = self.be(4)? as usize;
                self.ext(n)?
            }
            0xca => Value::Float(f64::from(f32::from_bits(self.be(4)? as u32))),
            0xcb => Value::Float(f64::from_bits(self.be(8)?)),
            0xcc => Value::Uint(self.be(1)?),
            0xcd => Value::Uint(self.be(2)?),
            0xce => Value::Uint(self.be(4)?),
            0xcf => Value::Uint(self.be(8)?),
            0xd0 => int(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => int(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => int(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => int(self.be(8)? as i64),
            0xd4 => self.ext(1)?,
            0xd5 => self.ext(2)?,
            0xd6 => self.ext(4)?,
            0xd7 => self.ext(8)?,
            0xd8 => self.ext(16)?,
            0xdc => {
                let n = self.count(2, 1)?;
                self.array(n, depth)?
            }
            0xdd => {
                let n = self.count(4, 1)?;
                self.array(n, depth)?
            }
            0xde => {
                let n = self.count(2, 2)?;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.count(4, 2)?;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int(i64::from(b as i8)),
        })
    }
}

/// Signed values that are not negative are reported as unsigned, so equal numbers compare equal.
fn int(n: i64) -> Value {
    if n >= 0 {
        Value::Uint(n as u64)
    } else {
        Value::Int(n)
    }
}

/// Appends `v` in the old spec (raw strings only), with the smallest integer encodings.
pub fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Nil => out.push(0xc0),
        Value::Bool(false) => out.push(0xc2),
        Value::Bool(true) => out.push(0xc3),
        Value::Uint(n) => write_uint(*n, out),
        Value::Int(n) if *n >= 0 => write_uint(*n as u64, out),
        Value::Int(n) => {
            let n = *n;
            if n >= -32 {
                out.push(n as u8);
            } else if n >= i64::from(i8::MIN) {
                out.extend_from_slice(&[0xd0, n as u8]);
            } else if n >= i64::from(i16::MIN) {
                out.push(0xd1);
                out.extend_from_slice(&(n as i16).to_be_bytes());
            } else if n >= i64::from(i32::MIN) {
                out.push(0xd2);
                out.extend_from_slice(&(n as i32).to_be_bytes());
            } else {
                out.push(0xd3);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        Value::Float(x) => {
            out.push(0xcb);
            out.extend_from_slice(&x.to_bits().to_be_bytes());
        }
        Value::Raw(r) => write_raw(r, out),
        Value::Array(items) => {
            write_array_len(items.len(), out);
            for item in items {
                encode(item, out);
            }
        }
        Value::Map(entries) => {
            write_map_len(entries.len(), out);
            for (k, v) in entries {
                encode(k, out);
                encode(v, out);
            }
        }
        Value::Ext(t, d) => {
            // Serf never writes extensions; they are written back whole (ext 8/16/32).
            if d.len() <= 0xff {
                out.extend_from_slice(&[0xc7, d.len() as u8]);
            } else if d.len() <= 0xffff {
                out.push(0xc8);
                out.extend_from_slice(&(d.len() as u16).to_be_bytes());
            } else {
                out.push(0xc9);
                out.extend_from_slice(&(d.len() as u32).to_be_bytes());
            }
            out.push(*t as u8);
            out.extend_from_slice(d);
        }
    }
}

// The writers below are what `encode` writes for each kind of value; the codec's hot paths
// (memberlist messages, push/pull node states) call them directly instead of building a
// `Value` first.

/// Appends an unsigned integer in its smallest encoding.
pub fn write_uint(n: u64, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[0xcc, n as u8]);
    } else if n <= 0xffff {
        out.push(0xcd);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= 0xffff_ffff {
        out.push(0xce);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Appends a boolean.
pub fn write_bool(b: bool, out: &mut Vec<u8>) {
    out.push(if b { 0xc3 } else { 0xc2 });
}

/// Appends a string or byte slice as an old-spec raw.
pub fn write_raw(bytes: &[u8], out: &mut Vec<u8>) {
    write_raw_len(bytes.len(), out);
    out.extend_from_slice(bytes);
}

/// Appends the header of an array of `n` items (the items follow).
pub fn write_array_len(n: usize, out: &mut Vec<u8>) {
    write_header(n, 16, [0x90, 0xdc, 0xdd], out);
}

/// Appends the header of a map of `n` entries (keys and values follow, alternating).
pub fn write_map_len(n: usize, out: &mut Vec<u8>) {
    write_header(n, 16, [0x80, 0xde, 0xdf], out);
}

/// Old-spec raw header: fixstr, str16 or str32 (str8 did not exist in the old spec).
fn write_raw_len(n: usize, out: &mut Vec<u8>) {
    write_header(n, 32, [0xa0, 0xda, 0xdb], out);
}

/// A length header: `tags[0] | n` below `fixed`, else `tags[1]` and 16 bits, else `tags[2]`
/// and 32 bits.
fn write_header(n: usize, fixed: usize, tags: [u8; 3], out: &mut Vec<u8>) {
    if n < fixed {
        out.push(tags[0] | n as u8);
    } else if n <= 0xffff {
        out.push(tags[1]);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(tags[2]);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// Encodes one value into a new buffer.
pub fn to_vec(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8], expect: Value) {
        let (v, used) = decode(bytes).expect("decodes");
        assert_eq!(v, expect);
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn every_format_decodes() {
        check(&[0x05], Value::Uint(5));
        check(&[0xff], Value::Int(-1));
        check(&[0xd0, 0x80], Value::Int(-128));
        check(&[0xd1, 0x00, 0x05], Value::Uint(5));
        check(&[0xcd, 0x46, 0x1b], Value::Uint(17947));
        check(&[0xa2, b'h', b'i'], Value::Raw(b"hi".to_vec()));
        check(&[0xd9, 2, b'h', b'i'], Value::Raw(b"hi".to_vec()));
        check(&[0xc4, 1, 0xff], Value::Raw(vec![0xff]));
        check(
            &[0x92, 0xc0, 0xc3],
            Value::Array(vec![Value::Nil, Value::Bool(true)]),
        );
        check(
            &[0x81, 0xa1, b'a', 0x01],
            Value::map([("a", Value::Uint(1))]),
        );
        check(&[0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0], Value::Float(1.0));
        check(&[0xd4, 0x01, 0x02], Value::Ext(1, vec![2]));
    }

    #[test]
    fn long_extensions_are_written_back_whole() {
        // Found by tests/fuzz (target msgpack): ext bodies over 255 bytes were cut.
        for len in [0, 1, 255, 256, 70_000] {
            let v = Value::Ext(-3, vec![7; len]);
            let bytes = to_vec(&v);
            assert_eq!(decode(&bytes).unwrap(), (v, bytes.len()), "{len}");
        }
    }

    #[test]
    fn encoding_is_the_old_spec() {
        assert_eq!(to_vec(&Value::Raw(vec![b'x'; 40]))[..3], [0xda, 0x00, 40]);
        assert_eq!(to_vec(&Value::Raw(b"Node".to_vec())), b"\xa4Node");
        assert_eq!(to_vec(&Value::Uint(17947)), [0xcd, 0x46, 0x1b]);
        assert_eq!(to_vec(&Value::Int(-33)), [0xd0, 0xdf]);
    }

    #[test]
    fn the_writers_write_what_encode_writes() {
        for n in [
            0,
            1,
            0x7f,
            0x80,
            0xff,
            0x100,
            0xffff,
            0x1_0000,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_uint(n, &mut out);
            assert_eq!(out, to_vec(&Value::Uint(n)), "{n}");
        }
        for len in [0, 31, 32, 0xffff, 0x1_0000] {
            let raw = vec![b'x'; len];
            let mut out = Vec::new();
            write_raw(&raw, &mut out);
            assert_eq!(out, to_vec(&Value::Raw(raw)), "{len}");
            let items = vec![Value::Nil; len];
            let mut out = Vec::new();
            write_array_len(len, &mut out);
            out.extend(std::iter::repeat_n(0xc0, len));
            assert_eq!(out, to_vec(&Value::Array(items)), "{len}");
            let entries = vec![(Value::Nil, Value::Bool(true)); len];
            let mut out = Vec::new();
            write_map_len(len, &mut out);
            for _ in 0..len {
                out.push(0xc0);
                write_bool(true, &mut out);
            }
            assert_eq!(out, to_vec(&Value::Map(entries)), "{len}");
        }
    }

    #[test]
    fn round_trips() {
        let v = Value::map([
            ("Addr", Value::Raw(vec![127, 0, 0, 1])),
            ("Big", Value::Uint(u64::MAX)),
            ("Neg", Value::Int(i64::MIN)),
            ("List", Value::Array((0..20).map(Value::Uint).collect())),
            ("Long", Value::Raw(vec![7; 70_000])),
        ]);
        let bytes = to_vec(&v);
        assert_eq!(decode(&bytes), Ok((v, bytes.len())));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic_or_a_huge_allocation() {
        assert_eq!(decode(&[]), Err(DecodeError::Truncated(0)));
        assert_eq!(decode(&[0xc1]), Err(DecodeError::BadFormat(0xc1, 0)));
        assert!(decode(&[0xdb, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(
            decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err(),
            "4 G elements claimed"
        );
        assert!(decode(&[0xdf, 0x7f, 0xff, 0xff, 0xff, 0x01]).is_err());
        assert!(decode(&[0x8f]).is_err());
        assert_eq!(decode(&[0x91; 100]), Err(DecodeError::TooDeep));
    }
}
