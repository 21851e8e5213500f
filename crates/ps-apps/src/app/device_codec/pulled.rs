//! How the rows a worker pulled cross to its device: in the fewest bytes the device widens back
//! to them exactly. Rows of codes and scales (a `q8`, `q4`, `q2` or `sign` pull codec's) cross
//! as codes ([`level_image`]); rows of 16-bit values (an `f16` or `bf16` pull codec's) in 16
//! bits ([`half_image`]), unless codes take fewer bytes (rows of zeros, say); anything else as
//! f32. The CUDA engines choose so, and the CPU
//! oracles count the bytes of the same choice.

use super::halves::{half_image, Half};
use super::levels::{level_image, LevelImage};

/// Loaded rows as they cross.
#[derive(Debug, Clone, PartialEq)]
pub enum PulledRows {
    /// As they are, 4 bytes a value.
    F32,
    /// Their 16-bit images in a format that widens to them exactly.
    Halves(Half, Vec<u16>),
    /// Their codes and scales.
    Levels(LevelImage),
}

impl PulledRows {
    /// The choice for `values`: codes where they hold every value in fewer bytes than the
    /// other ways ([`narrower_codes`]), else 16 bits where they hold every value, else f32.
    pub fn of(values: &[f32]) -> PulledRows {
        let halves = half_image(values);
        match narrower_codes(values, halves.is_some()) {
            Some(image) => PulledRows::Levels(image),
            None => halves.map_or(PulledRows::F32, |(kind, bits)| {
                PulledRows::Halves(kind, bits)
            }),
        }
    }

    /// Bytes that cross for `n` values.
    pub fn bytes(&self, n: usize) -> u64 {
        match self {
            PulledRows::F32 => 4 * n as u64,
            PulledRows::Halves(..) => 2 * n as u64,
            PulledRows::Levels(image) => image.bytes() as u64,
        }
    }
}

/// The codes of `values` ([`level_image`]) where they take fewer bytes than the values would
/// in 16 bits (`halves`: a 16-bit format holds every value) or else in f32. An engine that
/// loads a model in parts, and knows load by load whether 16 bits hold it, asks this of the
/// whole model before it crosses.
pub fn narrower_codes(values: &[f32], halves: bool) -> Option<LevelImage> {
    let other = if halves { 2 } else { 4 } * values.len();
    level_image(values).filter(|image| image.bytes() < other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_rows_crosses_in_its_fewest_bytes() {
        let plain: Vec<f32> = (0..300).map(|i| (i as f32 * 0.37).sin() * 0.1).collect();
        assert_eq!(PulledRows::of(&plain), PulledRows::F32);
        assert_eq!(PulledRows::F32.bytes(10), 40);
        // f16 values of no few scales.
        let f16s: Vec<f32> = (0..300)
            .map(|i| half::f16::from_f32(((i * 7919) % 1000) as f32 * 1.37e-3 + 0.01).to_f32())
            .collect();
        let halves = PulledRows::of(&f16s);
        assert!(matches!(halves, PulledRows::Halves(Half::F16, _)));
        assert_eq!(halves.bytes(300), 600);
        // Zeros are f16 values too, but their codes take fewer bytes: a segment, a scale, 2
        // bits each.
        let zeros = PulledRows::of(&[0.0; 64]);
        assert!(matches!(zeros, PulledRows::Levels(_)));
        assert_eq!(zeros.bytes(64), 8 + 4 + 16);
        // Codes of a scale that is no 16-bit value: their segment, the scale of their one
        // group, then a code each.
        let s = 0.1f32;
        let values: Vec<f32> = (0..100).map(|i| ((i % 255) - 127) as f32 * s).collect();
        let levels = PulledRows::of(&values);
        let PulledRows::Levels(image) = &levels else {
            panic!("{levels:?}");
        };
        assert_eq!(image.bits(), 8);
        assert_eq!(levels.bytes(100), 8 + 4 + 100);
        assert_eq!(image.widen(), values);
    }
}
