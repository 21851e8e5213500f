//! Block quantization: values in groups of [`GROUP`], each group one f32 scale and a few bits per
//! value. Pure; no I/O.
//!
//! * `q8`, `q4`, `q2`: symmetric uniform levels. With `L = 2^(bits-1) - 1` (127, 7, 1), a group's
//!   scale is `max|x| / L` and a value is sent as the integer `round(x / scale)` in `[-L, L]`, so
//!   it comes back as `code * scale`. `q2` is ternary: `{-s, 0, s}`.
//! * `sign`: one bit per value and the group's mean magnitude as its scale: a value comes back as
//!   `+scale` or `-scale` (scaled sign, as in error-feedback signSGD).
//!
//! Rounding is to nearest and deterministic; under error feedback what rounding loses stays in
//! the residual. A group holding a non-finite value (±inf, NaN) is sent with a NaN scale, so it
//! comes back as NaN throughout: a diverged model shows, rather than losing the value quietly.
//!
//! Layout of `m` values: `ceil(m / GROUP)` little-endian f32 scales, then the codes packed
//! least-significant bits first (`bits` in 1, 2, 4, 8 divides 8: no code crosses a byte), the
//! last byte's unused bits zero. Codes are two's complement; `-(L + 1)` never occurs, and a
//! decoder refuses it, a negative or infinite scale, and non-zero padding.

use crate::error::ProtoError;

/// Values per scale.
pub const GROUP: usize = 128;

/// A block-quantized value format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quant {
    /// Symmetric uniform, `bits` in 2, 4, 8.
    Levels { bits: u32 },
    /// One bit per value, scale = mean magnitude.
    Sign,
}

impl Quant {
    pub fn bits(self) -> u32 {
        match self {
            Quant::Levels { bits } => bits,
            Quant::Sign => 1,
        }
    }

    /// Largest code magnitude (`L`).
    fn levels(self) -> i32 {
        match self {
            Quant::Levels { bits } => (1 << (bits - 1)) - 1,
            Quant::Sign => 1,
        }
    }

    /// Bytes of `m` values.
    pub fn encoded_len(self, m: usize) -> usize {
        m.div_ceil(GROUP) * 4 + (m * self.bits() as usize).div_ceil(8)
    }

    fn scale_of(self, group: &[f32]) -> f32 {
        if group.iter().any(|v| !v.is_finite()) {
            return f32::NAN;
        }
        match self {
            Quant::Levels { .. } => {
                let max = group.iter().fold(0f32, |m, v| m.max(v.abs()));
                max / self.levels() as f32
            }
            Quant::Sign => {
                let sum: f64 = group.iter().map(|v| v.abs() as f64).sum();
                (sum / group.len().max(1) as f64) as f32
            }
        }
    }

    fn code_of(self, v: f32, scale: f32) -> i32 {
        match self {
            Quant::Sign => i32::from(v < 0.0),
            Quant::Levels { .. } => {
                if scale > 0.0 && scale.is_finite() {
                    let l = self.levels();
                    ((v / scale).round() as i32).clamp(-l, l)
                } else {
                    0
                }
            }
        }
    }

    fn value_of(self, code: i32, scale: f32) -> f32 {
        match self {
            Quant::Sign if code != 0 => -scale,
            Quant::Sign => scale,
            Quant::Levels { .. } => code as f32 * scale,
        }
    }

    /// What `v` becomes when it is a group of its own.
    pub fn quantize_one(self, v: f32) -> f32 {
        let s = self.scale_of(&[v]);
        self.value_of(self.code_of(v, s), s)
    }

    /// Appends `src` (scales, then codes).
    pub fn write(self, src: &[f32], out: &mut Vec<u8>) {
        out.reserve(self.encoded_len(src.len()));
        let scales: Vec<f32> = src.chunks(GROUP).map(|g| self.scale_of(g)).collect();
        for s in &scales {
            out.extend_from_slice(&s.to_le_bytes());
        }
        let bits = self.bits();
        let mask = (1u32 << bits) - 1;
        let (mut acc, mut filled) = (0u32, 0u32);
        for (g, &scale) in src.chunks(GROUP).zip(&scales) {
            for &v in g {
                acc |= (self.code_of(v, scale) as u32 & mask) << filled;
                filled += bits;
                if filled == 8 {
                    out.push(acc as u8);
                    (acc, filled) = (0, 0);
                }
            }
        }
        if filled > 0 {
            out.push(acc as u8);
        }
    }

    /// Decodes `dst.len()` values from exactly `encoded_len(dst.len())` bytes (the caller checks
    /// the length). Refuses what [`Quant::write`] never produces.
    pub fn read(self, bytes: &[u8], dst: &mut [f32]) -> Result<(), ProtoError> {
        let m = dst.len();
        let groups = m.div_ceil(GROUP);
        debug_assert_eq!(bytes.len(), self.encoded_len(m));
        let (scale_bytes, codes) = bytes.split_at(groups * 4);
        let bits = self.bits();
        let mask = (1u32 << bits) - 1;
        let sign_bit = 1u32 << (bits - 1);
        let l = self.levels();
        for (gi, (d, s)) in dst
            .chunks_mut(GROUP)
            .zip(scale_bytes.chunks_exact(4))
            .enumerate()
        {
            let scale = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            if scale.is_infinite() || scale < 0.0 {
                return Err(ProtoError::Malformed(format!(
                    "quantized group {gi}: scale {scale}"
                )));
            }
            for (j, o) in d.iter_mut().enumerate() {
                let at = (gi * GROUP + j) * bits as usize;
                let raw = (u32::from(codes[at / 8]) >> (at % 8)) & mask;
                let code = match self {
                    Quant::Sign => raw as i32,
                    Quant::Levels { .. } if raw & sign_bit != 0 => raw as i32 - (1 << bits),
                    Quant::Levels { .. } => raw as i32,
                };
                if code < -l {
                    return Err(ProtoError::Malformed(format!(
                        "quantized code {code} outside [-{l}, {l}]"
                    )));
                }
                *o = self.value_of(code, scale);
            }
        }
        let used = m * bits as usize;
        if !used.is_multiple_of(8) && codes.last().is_some_and(|b| b >> (used % 8) != 0) {
            return Err(ProtoError::Malformed(
                "quantized payload: non-zero padding bits".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Quant; 4] = [
        Quant::Levels { bits: 8 },
        Quant::Levels { bits: 4 },
        Quant::Levels { bits: 2 },
        Quant::Sign,
    ];

    fn round_trip(q: Quant, v: &[f32]) -> Vec<f32> {
        let mut b = Vec::new();
        q.write(v, &mut b);
        assert_eq!(b.len(), q.encoded_len(v.len()));
        let mut out = vec![0f32; v.len()];
        q.read(&b, &mut out).unwrap();
        out
    }

    #[test]
    fn levels_error_is_half_a_step() {
        let v: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        for q in ALL {
            let o = round_trip(q, &v);
            for (g, og) in v.chunks(GROUP).zip(o.chunks(GROUP)) {
                let max = g.iter().fold(0f32, |m, x| m.max(x.abs()));
                if let Quant::Levels { .. } = q {
                    let step = max / q.levels() as f32;
                    for (x, y) in g.iter().zip(og) {
                        assert!((x - y).abs() <= step / 2.0 * 1.0001, "{q:?} {x} {y}");
                    }
                } else {
                    let mean = g.iter().map(|x| x.abs()).sum::<f32>() / g.len() as f32;
                    for (x, y) in g.iter().zip(og) {
                        assert!((y.abs() - mean).abs() < 1e-6 && (*x < 0.0) == (*y < 0.0));
                    }
                }
            }
        }
    }

    #[test]
    fn sizes_and_edges() {
        assert_eq!(Quant::Levels { bits: 4 }.encoded_len(129), 8 + 65);
        assert_eq!(Quant::Sign.encoded_len(0), 0);
        assert_eq!(Quant::Sign.encoded_len(9), 4 + 2);
        for q in ALL {
            assert!(round_trip(q, &[]).is_empty());
            assert_eq!(round_trip(q, &[0.0, 0.0, 0.0]), vec![0.0; 3]);
            assert!((q.quantize_one(-2.5) + 2.5).abs() < 1e-6);
            let o = round_trip(q, &[1.0, f32::NAN, 2.0]);
            assert!(
                o.iter().all(|x| x.is_nan()),
                "{q:?}: non-finite groups come back NaN"
            );
            // The NaN stays in its group of GROUP.
            let mut v = vec![1.0f32; GROUP + 1];
            v[GROUP] = f32::INFINITY;
            let o = round_trip(q, &v);
            assert!(o[..GROUP].iter().all(|x| x.is_finite()));
            assert!(o[GROUP].is_nan());
        }
    }

    #[test]
    fn refuses_what_write_never_makes() {
        let q = Quant::Levels { bits: 4 };
        let mut b = Vec::new();
        q.write(&[1.0, -1.0, 0.5], &mut b);
        let mut out = [0f32; 3];
        let mut bad = b.clone();
        bad[4] = 0x08; // code -8
        assert!(q.read(&bad, &mut out).is_err());
        let mut bad = b.clone();
        bad[5] |= 0xF0; // padding
        assert!(q.read(&bad, &mut out).is_err());
        let mut bad = b.clone();
        bad[..4].copy_from_slice(&(-1.0f32).to_le_bytes());
        assert!(q.read(&bad, &mut out).is_err());
        bad[..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
        assert!(q.read(&bad, &mut out).is_err());
        assert!(q.read(&b, &mut out).is_ok());
    }
}
