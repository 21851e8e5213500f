//! Which push chains a device encoder runs ([`device_chain`]), and how each block's selection
//! is sized ([`Keep`]: a count the library computes, or an energy fraction the device turns
//! into a count where the values are).

use ps_proto::codec::{self, CodecChain, Selector, ValueFormat};

/// An energy fraction in (0, 1] (`energy:E`), kept as its f32 bits so that chains compare
/// exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fraction(u32);

impl Fraction {
    pub fn new(e: f32) -> Fraction {
        Fraction(e.to_bits())
    }

    pub fn get(self) -> f32 {
        f32::from_bits(self.0)
    }
}

/// How many of a block's values a device selection keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Keep {
    /// The `k` largest (`topk:`; the library's count for the block, [`block_k`]).
    Count(usize),
    /// The fewest largest holding this fraction of the block's energy (`energy:E`;
    /// `ps_proto::codec::k_of_energy`, found on the device).
    Energy(f32),
}

/// What a device encoder runs of a push chain (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChain {
    /// One top-k stage: each block's `k` largest values, sent in a format (`f32`, `f16`,
    /// `bf16`, `q8`, `q4`, `q2` or `sign`). The device selects, codes the indices and encodes
    /// the values; where the smallest layout is dense the host encodes the selection
    /// ([`super::selection_payload`]) and hands back what to subtract from the residual.
    TopK(ValueFormat),
    /// One energy stage (`energy:E`): as `TopK`, the count found on the device from the
    /// block's values (`kernels/codec_energy.cu`), so the host need not see them.
    Energy(Fraction, ValueFormat),
    /// No selection: every value of a block, in a lossy format.
    Dense(ValueFormat),
}

impl DeviceChain {
    /// The value format it sends.
    pub fn format(self) -> ValueFormat {
        match self {
            DeviceChain::TopK(f) | DeviceChain::Energy(_, f) | DeviceChain::Dense(f) => f,
        }
    }

    /// Whether a device selects (a top-k or an energy stage) rather than sending every value.
    pub fn selects(self) -> bool {
        !matches!(self, DeviceChain::Dense(_))
    }

    /// What a block's selection keeps, `k` the block's count as the session planned it
    /// ([`block_k`]; what an energy stage or a dense chain ignores).
    pub fn keep(self, k: usize) -> Keep {
        match self {
            DeviceChain::Energy(e, _) => Keep::Energy(e.get()),
            DeviceChain::TopK(_) | DeviceChain::Dense(_) => Keep::Count(k),
        }
    }

    /// The chain the worker library would encode a block with, `k` of its values selected
    /// (ignored by a dense or an energy chain).
    pub fn chain(self, k: usize) -> CodecChain {
        let selectors = match self {
            DeviceChain::TopK(_) => vec![Selector::TopKCount(k.min(u32::MAX as usize) as u32)],
            DeviceChain::Energy(e, _) => vec![Selector::Energy(e.get())],
            DeviceChain::Dense(_) => Vec::new(),
        };
        CodecChain {
            selectors,
            format: self.format(),
            ..CodecChain::raw()
        }
    }
}

/// What a device encoder runs of `chain` (as planned for the clock: warm-up applied), or
/// `None` when the worker library has to encode it.
pub fn device_chain(chain: &CodecChain) -> Option<DeviceChain> {
    if chain.momentum != 0.0 || chain.warmup != 0 {
        return None;
    }
    let lossy = matches!(
        chain.format,
        ValueFormat::F16
            | ValueFormat::Bf16
            | ValueFormat::Q8
            | ValueFormat::Q4
            | ValueFormat::Q2
            | ValueFormat::Sign
    );
    let selects = lossy || chain.format == ValueFormat::F32;
    match chain.selectors.as_slice() {
        [Selector::TopKFraction(_)] | [Selector::TopKCount(_)] if selects => {
            Some(DeviceChain::TopK(chain.format))
        }
        [Selector::Energy(e)] if selects => {
            Some(DeviceChain::Energy(Fraction::new(*e), chain.format))
        }
        [] if lossy => Some(DeviceChain::Dense(chain.format)),
        _ => None,
    }
}

/// Bytes a device copies back for a block of `n` values encoded whole in `format`
/// ([`DeviceChain::Dense`]): 2 a value for f16 and bf16; for a block format its scales and codes
/// as whole 4-byte words (at most 3 bytes past the payload). `None` for a format no device
/// encodes whole.
pub fn dense_device_bytes(format: ValueFormat, n: usize) -> Option<u64> {
    let bits = match format {
        ValueFormat::F16 | ValueFormat::Bf16 => return Some(2 * n as u64),
        ValueFormat::Q8 => 8,
        ValueFormat::Q4 => 4,
        ValueFormat::Q2 => 2,
        ValueFormat::Sign => 1,
        ValueFormat::F32 | ValueFormat::I8 | ValueFormat::I16 => return None,
    };
    let words = n.div_ceil(codec::QUANT_GROUP) + (n * bits).div_ceil(32);
    Some(4 * words as u64)
}

/// How many of a block of `n` values `chain`'s top-k keeps (`n` without a top-k stage).
pub fn block_k(chain: &CodecChain, n: usize) -> usize {
    chain
        .selectors
        .iter()
        .find_map(|s| match *s {
            Selector::TopKFraction(f) => Some(codec::k_of_fraction(f, n)),
            Selector::TopKCount(c) => Some((c as usize).min(n)),
            _ => None,
        })
        .unwrap_or(n)
}
