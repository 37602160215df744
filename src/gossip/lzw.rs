//! LZW as Go's `compress/lzw` writes it with LSB bit order and 8-bit literals (the GIF
//! variant): codes start 9 bits wide and grow to 12, 256 clears the table, 257 ends the data,
//! the first new code is 258. memberlist compresses packets and streams this way by default, so
//! decoding is required to talk to Serf; encoding is here so the decoder can be tested on
//! round trips and so muster may compress too.

const CLEAR: u16 = 256;
const EOF: u16 = 257;
const MAX_WIDTH: u32 = 12;
const TABLE: usize = 1 << MAX_WIDTH;

/// Why a compressed buffer cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LzwError {
    /// A code that is neither a literal, a control code nor a known entry.
    #[error("invalid code {0}")]
    BadCode(u16),
    /// The data ends before the end-of-data code.
    #[error("missing end-of-data code")]
    Truncated,
    /// The output would be larger than the caller allows.
    #[error("output larger than {0} bytes")]
    TooLarge(usize),
}

/// Decodes `input`, refusing to produce more than `limit` bytes.
pub fn decode(input: &[u8], limit: usize) -> Result<Vec<u8>, LzwError> {
    let mut prefix = vec![0u16; TABLE];
    let mut suffix = vec![0u8; TABLE];
    let mut out: Vec<u8> = Vec::new();
    let mut width = 9u32;
    let mut hi = EOF;
    let mut overflow: u16 = 1 << width;
    let mut last: Option<u16> = None;
    let (mut bits, mut nbits, mut pos) = (0u32, 0u32, 0usize);
    let mut chain = Vec::with_capacity(TABLE);
    loop {
        while nbits < width {
            let Some(&b) = input.get(pos) else {
                return Err(LzwError::Truncated);
            };
            pos += 1;
            bits |= u32::from(b) << nbits;
            nbits += 8;
        }
        let code = (bits & ((1 << width) - 1)) as u16;
        bits >>= width;
        nbits -= width;
        if code == CLEAR {
            width = 9;
            hi = EOF;
            overflow = 1 << width;
            last = None;
            continue;
        }
        if code == EOF {
            return Ok(out);
        }
        // Expand the code into `chain` (reversed), handling the code-equals-next case.
        chain.clear();
        let first = if code < CLEAR {
            chain.push(code as u8);
            code as u8
        } else if code <= hi {
            let mut c = code;
            if code == hi {
                // The entry being defined: the last expansion plus its own first byte.
                let Some(l) = last else {
                    return Err(LzwError::BadCode(code));
                };
                let mut head = l;
                while head >= CLEAR {
                    head = prefix[usize::from(head)];
                }
                chain.push(head as u8);
                c = l;
            }
            while c >= CLEAR {
                chain.push(suffix[usize::from(c)]);
                c = prefix[usize::from(c)];
            }
            chain.push(c as u8);
            c as u8
        } else {
            return Err(LzwError::BadCode(code));
        };
        if out.len() + chain.len() > limit {
            return Err(LzwError::TooLarge(limit));
        }
        out.extend(chain.iter().rev());
        if let Some(l) = last {
            suffix[usize::from(hi)] = first;
            prefix[usize::from(hi)] = l;
        }
        last = Some(code);
        hi += 1;
        if hi >= overflow {
            if width == MAX_WIDTH {
                last = None;
                hi -= 1;
            } else {
                width += 1;
                overflow = 1 << width;
            }
        }
    }
}

/// Encodes `input` so that Go's `compress/lzw` reader (LSB, 8) decodes it.
pub fn encode(input: &[u8]) -> Vec<u8> {
    let mut w = BitWriter::default();
    let mut table: std::collections::HashMap<(u16, u8), u16> = std::collections::HashMap::new();
    let mut width = 9u32;
    let mut hi = EOF;
    let mut overflow: u16 = 1 << width;
    let mut saved: Option<u16> = None;
    // Go's writer opens every stream with a clear code; doing the same gives identical bytes.
    w.put(u32::from(CLEAR), width);
    for &x in input {
        let Some(s) = saved else {
            saved = Some(u16::from(x));
            continue;
        };
        if let Some(&code) = table.get(&(s, x)) {
            saved = Some(code);
            continue;
        }
        w.put(u32::from(s), width);
        saved = Some(u16::from(x));
        // The same bookkeeping as Go's Writer.incHi.
        hi += 1;
        if hi == overflow {
            width += 1;
            overflow <<= 1;
        }
        if usize::from(hi) == TABLE - 1 {
            w.put(u32::from(CLEAR), width);
            width = 9;
            hi = EOF;
            overflow = 1 << width;
            table.clear();
            continue;
        }
        table.insert((s, x), hi);
    }
    if let Some(s) = saved {
        w.put(u32::from(s), width);
        hi += 1;
        if hi == overflow {
            width += 1;
        }
    }
    w.put(u32::from(EOF), width);
    w.finish()
}

#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    bits: u32,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, code: u32, width: u32) {
        self.bits |= code << self.n;
        self.n += width;
        while self.n >= 8 {
            self.out.push(self.bits as u8);
            self.bits >>= 8;
            self.n -= 8;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.bits as u8);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(data: &[u8]) {
        let packed = encode(data);
        assert_eq!(
            decode(&packed, data.len()).as_deref(),
            Ok(data),
            "len {}",
            data.len()
        );
    }

    #[test]
    fn round_trips_small_repetitive_and_table_filling_inputs() {
        round_trip(b"");
        round_trip(b"a");
        round_trip(b"abababababababab");
        round_trip(b"TOBEORNOTTOBEORTOBEORNOT");
        // Enough distinct sequences to fill the 12-bit table and force clears.
        let mut x = 12345u32;
        let noisy: Vec<u8> = (0..200_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        round_trip(&noisy);
        let text: Vec<u8> = (0..100_000)
            .map(|i| b"abcdefgh"[i % 7 + (i / 1000) % 2])
            .collect();
        round_trip(&text);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(decode(&[], 100), Err(LzwError::Truncated));
        // 9-bit code 300 with no table entry yet.
        assert_eq!(decode(&[0x2c, 0x01], 100), Err(LzwError::BadCode(300)));
        let big = encode(&[0u8; 10_000]);
        assert_eq!(decode(&big, 1000), Err(LzwError::TooLarge(1000)));
    }
}
