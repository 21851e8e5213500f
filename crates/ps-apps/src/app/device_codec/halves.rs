//! Rows of 16-bit values (an `f16` or `bf16` pull codec's) cross to a device in 16 bits, half
//! the bytes, and widen there exactly. The host knows them only as f32 values, so it checks
//! that each converts to the format and back bit for bit ([`half_image`]).

/// A 16-bit float format that widens to f32 exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    F16,
    Bf16,
}

impl Half {
    /// The bits of `v` in this format, when they widen back to `v` bit for bit.
    #[inline]
    pub fn exact_bits(self, v: f32) -> Option<u16> {
        match self {
            Half::F16 => {
                let h = half::f16::from_f32(v);
                (h.to_f32().to_bits() == v.to_bits()).then(|| h.to_bits())
            }
            // bf16 is f32's high half: exact when the low half is zero (a NaN's payload too).
            Half::Bf16 => {
                let b = v.to_bits();
                (b & 0xffff == 0).then_some((b >> 16) as u16)
            }
        }
    }

    /// `bits` widened to f32 (as the device's `codec_f16_to_f32` or `codec_bf16_to_f32`).
    pub fn widen(self, bits: u16) -> f32 {
        match self {
            Half::F16 => half::f16::from_bits(bits).to_f32(),
            Half::Bf16 => f32::from_bits(u32::from(bits) << 16),
        }
    }

    /// The bits of every value, or `None` at the first one that is not exact.
    pub fn image(self, values: &[f32]) -> Option<Vec<u16>> {
        values.iter().map(|&v| self.exact_bits(v)).collect()
    }

    /// Whether every value is exact in this format.
    pub fn holds(self, values: &[f32]) -> bool {
        values.iter().all(|&v| self.exact_bits(v).is_some())
    }
}

/// The 16-bit image of `values`: f16 bits when every value is an f16 value, else bf16 bits when
/// every value is a bf16 value, else `None` (f32 rows cost about one conversion: each check
/// stops at the first value that fails it).
pub fn half_image(values: &[f32]) -> Option<(Half, Vec<u16>)> {
    [Half::F16, Half::Bf16]
        .into_iter()
        .find_map(|h| h.image(values).map(|bits| (h, bits)))
}

/// Which 16-bit formats hold every value loaded since the last [`HalfLoads::take`]: a model
/// loaded in parts (an MLP's layers and row ranges) crosses in one format or as f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HalfLoads {
    f16: bool,
    bf16: bool,
}

impl Default for HalfLoads {
    fn default() -> Self {
        HalfLoads {
            f16: true,
            bf16: true,
        }
    }
}

impl HalfLoads {
    /// Notes a load of `values`; returns whether f16 still holds all of them (the caller may
    /// keep an f16 mirror while it does).
    pub fn note(&mut self, values: &[f32]) -> bool {
        self.f16 = self.f16 && Half::F16.holds(values);
        self.bf16 = self.bf16 && Half::Bf16.holds(values);
        self.f16
    }

    /// [`HalfLoads::note`] that also gives the load's f16 bits while f16 holds them all (for a
    /// caller keeping an f16 mirror), converting each value once.
    pub fn note_f16(&mut self, values: &[f32]) -> Option<Vec<u16>> {
        self.bf16 = self.bf16 && Half::Bf16.holds(values);
        let image = if self.f16 {
            Half::F16.image(values)
        } else {
            None
        };
        self.f16 = image.is_some();
        image
    }

    /// The format the loads cross in (f16 first), and a fresh start.
    pub fn take(&mut self) -> Option<Half> {
        let kind = if self.f16 {
            Some(Half::F16)
        } else if self.bf16 {
            Some(Half::Bf16)
        } else {
            None
        };
        *self = HalfLoads::default();
        kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rows_of_16_bit_values_have_an_image() {
        let exact = [0.0f32, -0.0, 1.5, -65504.0, 2.0f32.powi(-24), f32::INFINITY];
        let (kind, image) = half_image(&exact).unwrap();
        assert_eq!(kind, Half::F16);
        let back: Vec<u32> = image.iter().map(|&h| kind.widen(h).to_bits()).collect();
        assert_eq!(back, exact.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        assert_eq!(half_image(&[]), Some((Half::F16, Vec::new())));
        // bf16 values outside f16's range or precision: bf16 bits.
        let brain = [
            1.0f32,
            f32::from_bits(0x0d8c_0000),
            f32::from_bits(0x7f7f_0000),
            -0.0078125,
            f32::NEG_INFINITY,
        ];
        let (kind, image) = half_image(&brain).unwrap();
        assert_eq!(kind, Half::Bf16);
        let back: Vec<u32> = image.iter().map(|&h| kind.widen(h).to_bits()).collect();
        assert_eq!(back, brain.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        for other in [0.1f32, 1e-8, 1.0 + f32::EPSILON] {
            assert_eq!(half_image(&[1.0, other]), None, "{other}");
        }
        // 65536 is past f16's largest, but a bf16 value.
        assert_eq!(half_image(&[65536.0]).map(|h| h.0), Some(Half::Bf16));
        assert!(Half::Bf16.holds(&brain) && !Half::F16.holds(&brain));
    }

    #[test]
    fn loads_cross_in_the_format_that_holds_them_all() {
        let mut l = HalfLoads::default();
        assert!(l.note(&[1.0, 0.5]));
        assert!(!l.note(&[65536.0]), "not f16");
        assert_eq!(l.take(), Some(Half::Bf16));
        assert_eq!(l.note_f16(&[1.0, -2.0]), Some(vec![0x3c00, 0xc000]));
        assert_eq!(l.note_f16(&[65536.0]), None);
        assert_eq!(l.note_f16(&[1.0]), None, "f16 no longer holds every load");
        assert_eq!(l.take(), Some(Half::Bf16));
        assert_eq!(l.take(), Some(Half::F16), "nothing loaded: a fresh start");
        l.note(&[0.1]);
        assert_eq!(l.take(), None);
    }
}
