//! Unsigned LEB128 varints: 7 bits per byte, least significant group first, high bit set on every
//! byte but the last. Decoding accepts only the canonical (shortest) encoding of a value and at
//! most 10 bytes whose value fits in a u64.

use crate::error::ProtoError;

/// Appends the LEB128 encoding of `v` (1 to 10 bytes).
#[inline]
pub fn write_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes `write_varint(v)` appends.
#[inline]
pub fn varint_len(v: u64) -> usize {
    // 1 + floor(bits / 7), with 0 taking one byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads one varint at `*pos` and advances `*pos` past it. Errors (leaving `*pos` unspecified) on
/// a truncated varint, one longer than 10 bytes or whose value exceeds u64::MAX (overflow), and a
/// non-canonical one (a redundant final zero group, e.g. `[0x80, 0x00]`).
#[inline]
pub fn read_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, ProtoError> {
    let mut result = 0u64;
    let mut shift = 0u32;
    loop {
        let Some(&b) = bytes.get(*pos) else {
            return Err(ProtoError::Malformed("truncated varint".into()));
        };
        *pos += 1;
        if shift == 63 && b > 1 {
            return Err(ProtoError::Malformed("varint overflows 64 bits".into()));
        }
        result |= ((b & 0x7F) as u64) << shift;
        if b & 0x80 == 0 {
            if b == 0 && shift > 0 {
                return Err(ProtoError::Malformed("non-canonical varint".into()));
            }
            return Ok(result);
        }
        shift += 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        for (v, bytes) in [
            (0u64, vec![0u8]),
            (1, vec![1]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xAC, 0x02]),
            (
                u64::MAX,
                vec![0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            write_varint(v, &mut out);
            assert_eq!(out, bytes);
            assert_eq!(varint_len(v), bytes.len());
            let mut pos = 0;
            assert_eq!(read_varint(&out, &mut pos).unwrap(), v);
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn rejects_overflow_truncation_and_overlong() {
        let bad: [&[u8]; 6] = [
            &[],
            &[0x80],
            &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02],
            &[
                0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x81, 0x00,
            ],
            &[0x80, 0x00],
            &[0xFF, 0x80, 0x00],
        ];
        for b in bad {
            assert!(read_varint(b, &mut 0).is_err(), "{b:?}");
        }
    }

    #[test]
    fn lengths_match_for_every_bit_width() {
        for bits in 0..64 {
            for v in [1u64 << bits, (1u64 << bits) - 1, (1u64 << bits) + 1] {
                let mut out = Vec::new();
                write_varint(v, &mut out);
                assert_eq!(out.len(), varint_len(v), "{v}");
            }
        }
    }
}
