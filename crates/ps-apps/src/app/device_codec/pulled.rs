//! How the rows a worker pulled cross to its device: in the fewest bytes the device widens back
//! to them exactly. Rows of 16-bit values (an `f16` or `bf16` pull codec's) cross in 16 bits
//! ([`half_image`]); rows of codes and scales (a `q8`, `q4`, `q2` or `sign` pull codec's) as
//! codes ([`level_image`]); anything else as f32. The CUDA engines choose so, and the CPU
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
    /// The choice for `values`: 16 bits where they hold every value, else codes where those
    /// take fewer bytes than f32, else f32.
    pub fn of(values: &[f32]) -> PulledRows {
        if let Some((kind, bits)) = half_image(values) {
            return PulledRows::Halves(kind, bits);
        }
        match level_image(values) {
            Some(image) if image.bytes() < 4 * values.len() => PulledRows::Levels(image),
            _ => PulledRows::F32,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_rows_crosses_in_its_fewest_bytes() {
        assert_eq!(PulledRows::of(&[0.1, 0.2]), PulledRows::F32);
        assert_eq!(PulledRows::F32.bytes(10), 40);
        let halves = PulledRows::of(&[0.5, -2.0, 1024.0]);
        assert!(matches!(halves, PulledRows::Halves(Half::F16, _)));
        assert_eq!(halves.bytes(3), 6);
        // Codes of a scale that is no 16-bit value: 8 bytes for the run, then a code each.
        let s = 0.1f32;
        let values: Vec<f32> = (0..100).map(|i| ((i % 255) - 127) as f32 * s).collect();
        let levels = PulledRows::of(&values);
        let PulledRows::Levels(image) = &levels else {
            panic!("{levels:?}");
        };
        assert_eq!(image.bits, 8);
        assert_eq!(levels.bytes(100), 8 + 100);
        assert_eq!(image.widen(), values);
    }
}
