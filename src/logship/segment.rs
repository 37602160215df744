//! The disk spool's segment format, pure: a segment file is a header (`MUSTER-SPOOL-1\n`)
//! followed by records, each `LEN (u32 LE) | CRC-32 of the payload (u32 LE) | payload` (the
//! payload is one formatted RFC 5424 message). Records are only ever appended, so the one
//! damage a crash or a full disk can leave is a torn last record: [`decode`] stops there and
//! says so. A record whose checksum does not match (or whose length is beyond
//! [`MAX_RECORD`]) ends the segment too, since nothing after it can be trusted: its bytes are
//! never taken for a message.

/// What every segment file starts with.
pub const HEADER: &[u8] = b"MUSTER-SPOOL-1\n";
/// Bytes of a record before its payload.
pub const RECORD_HEAD: usize = 8;
/// Largest payload a record may hold (lines are cut at 16 KiB; the RFC 5424 header adds a few
/// hundred bytes).
pub const MAX_RECORD: usize = 1 << 20;

/// Appends one record holding `payload` (at most [`MAX_RECORD`] bytes) to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= MAX_RECORD);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// How a segment's bytes ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// After the last whole record.
    Clean,
    /// Not a segment: the header is missing or wrong.
    NoHeader,
    /// A record cut short at this offset (a torn write): it and anything after are skipped.
    Torn(usize),
    /// A record at this offset fails its checksum or its length bound: it and anything after
    /// are skipped.
    Corrupt(usize),
}

/// The records of a segment, as byte ranges of `bytes` in order, and how it ended.
pub fn decode(bytes: &[u8]) -> (Vec<std::ops::Range<usize>>, End) {
    let mut records = Vec::new();
    if !bytes.starts_with(HEADER) {
        return (records, End::NoHeader);
    }
    let mut at = HEADER.len();
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < RECORD_HEAD {
            return (records, End::Torn(at));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let sum = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_RECORD {
            return (records, End::Corrupt(at));
        }
        if rest.len() - RECORD_HEAD < len {
            return (records, End::Torn(at));
        }
        let payload = at + RECORD_HEAD..at + RECORD_HEAD + len;
        if crc32(&bytes[payload.clone()]) != sum {
            return (records, End::Corrupt(at));
        }
        at = payload.end;
        records.push(payload);
    }
    (records, End::Clean)
}

/// The bytes a record of `len` payload bytes takes on disk.
pub fn record_size(len: usize) -> u64 {
    (RECORD_HEAD + len) as u64
}

/// The file name of segment `id`: its number, zero-padded so names sort as numbers do.
pub fn file_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// The id of a segment file name, if it is one.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

const CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE 802.3, as zlib's).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = HEADER.to_vec();
        for p in payloads {
            encode(p, &mut out);
        }
        out
    }

    fn check(bytes: &[u8], want: &[&[u8]], end: End) {
        let (ranges, got_end) = decode(bytes);
        let got: Vec<&[u8]> = ranges.into_iter().map(|r| &bytes[r]).collect();
        assert_eq!((got, got_end), (want.to_vec(), end));
    }

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_round_trip_in_order() {
        let msgs: [&[u8]; 4] = [b"<14>1 first", b"", b"\x00\xff binary\n", &[b'x'; 20_000]];
        check(&segment(&msgs), &msgs, End::Clean);
        check(HEADER, &[], End::Clean);
        assert_eq!(record_size(11), 19);
    }

    #[test]
    fn a_torn_tail_is_detected_at_every_cut_and_never_misparsed() {
        let msgs: [&[u8]; 2] = [b"one", b"two two"];
        let whole = segment(&msgs);
        let second = HEADER.len() + RECORD_HEAD + 3;
        for cut in HEADER.len()..whole.len() {
            let end = if cut < second {
                End::Torn(HEADER.len())
            } else {
                End::Torn(second)
            };
            let want: &[&[u8]] = if cut < second { &[] } else { &msgs[..1] };
            let end = if cut == HEADER.len() || cut == second {
                End::Clean
            } else {
                end
            };
            check(&whole[..cut], want, end);
        }
        check(&whole[..5], &[], End::NoHeader);
        check(b"not a segment", &[], End::NoHeader);
    }

    #[test]
    fn a_checksum_mismatch_or_an_absurd_length_ends_the_segment_there() {
        let msgs: [&[u8]; 3] = [b"one", b"two", b"three"];
        let mut bad = segment(&msgs);
        let second = HEADER.len() + RECORD_HEAD + 3;
        bad[second + RECORD_HEAD] ^= 0x20; // "two" -> "Two"
        check(&bad, &msgs[..1], End::Corrupt(second));
        let mut bad = segment(&msgs);
        bad[second + 4] ^= 1; // the checksum itself
        check(&bad, &msgs[..1], End::Corrupt(second));
        // A length over the bound is not believed (no allocation, no skipping ahead by it).
        let mut bad = segment(&msgs);
        bad[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        check(&bad, &msgs[..1], End::Corrupt(second));
        // A length that points inside the file, at bytes that are not a record: the checksum
        // catches it.
        let mut bad = segment(&msgs);
        bad[second..second + 4].copy_from_slice(&1u32.to_le_bytes());
        check(&bad, &msgs[..1], End::Corrupt(second));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_only_checked_records_come_out() {
        // xorshift64: deterministic, so a failure repeats.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..5000 {
            let mut bytes = HEADER.to_vec();
            let len = (next() % 200) as usize;
            if round % 2 == 0 {
                // Plausible records, then damage.
                for _ in 0..(next() % 4) {
                    let payload: Vec<u8> = (0..next() % 20).map(|_| next() as u8).collect();
                    encode(&payload, &mut bytes);
                }
                if !bytes.is_empty() {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] ^= (next() as u8) | 1;
                }
            } else {
                bytes.extend((0..len).map(|_| next() as u8));
            }
            let (ranges, _) = decode(&bytes);
            for r in ranges {
                assert!(r.end <= bytes.len());
                let sum = &bytes[r.start - 4..r.start];
                assert_eq!(
                    u32::from_le_bytes(sum.try_into().unwrap()),
                    crc32(&bytes[r])
                );
            }
        }
    }

    #[test]
    fn segment_names_sort_as_their_numbers() {
        assert_eq!(file_name(7), "00000000000000000007.seg");
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert!(file_name(9) < file_name(10));
        for bad in [
            "7.seg",
            "0000000000000000000x.seg",
            "00000000000000000007.tmp",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
