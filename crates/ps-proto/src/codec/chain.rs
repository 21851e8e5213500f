//! Codec chains: selection stages, an optional sparsity warm-up, and a value format, written as
//! strings (`topk:0.01,warmup:4,q4`). Pure; no I/O.

use super::format::ValueFormat;
use crate::error::ProtoError;
use std::fmt;
use std::str::FromStr;

/// Wire-id bit set for chains with selection stages (sparse payloads).
pub const WIRE_SPARSE: u16 = 0x10;

/// A selection stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Selector {
    /// Keep `ceil(fraction * n)` entries of largest magnitude; fraction in (0, 1].
    TopKFraction(f32),
    /// Keep `min(count, n)` entries of largest magnitude.
    TopKCount(u32),
    /// Keep entries with `delta != 0 && !(|delta| < rel * |current|)`; rel >= 0.
    Filter { rel: f32 },
    /// Keep whole rows: the `ceil(fraction * rows)` rows of `width` values with the largest L2
    /// norm (of the entries earlier stages kept), every entry of them; fraction in (0, 1]. One
    /// index a value still goes on the wire, but runs of consecutive indices cost about a bit
    /// each (Rice). `width` is not in the codec string: the encoder sets it
    /// ([`CodecChain::for_rows`]); 0 until then, and encoding refuses that.
    RowsFraction { fraction: f32, width: u32 },
    /// Keep the fewest entries of largest magnitude whose squares add up to at least `E` of the
    /// block's (of earlier stages' survivors'); E in (0, 1]. The count adapts to the block:
    /// a few large entries go alone, a flat block sends many. A block holding a non-finite
    /// value sends every entry (so divergence shows). The squares are integers in the largest
    /// entry's scale, summed exactly ([`super::k_of_energy`]), so a device finds the same count.
    Energy(f32),
}

impl Selector {
    fn validate(&self) -> Result<(), ProtoError> {
        match *self {
            Selector::TopKFraction(f) if !(f > 0.0 && f <= 1.0) => Err(ProtoError::Codec(format!(
                "top-k fraction {f} is not in (0, 1]"
            ))),
            Selector::Filter { rel } if !(rel.is_finite() && rel >= 0.0) => Err(ProtoError::Codec(
                format!("filter ratio {rel} is not finite and >= 0"),
            )),
            Selector::RowsFraction { fraction, .. } if !(fraction > 0.0 && fraction <= 1.0) => Err(
                ProtoError::Codec(format!("rows fraction {fraction} is not in (0, 1]")),
            ),
            Selector::Energy(e) if !(e > 0.0 && e <= 1.0) => Err(ProtoError::Codec(format!(
                "energy fraction {e} is not in (0, 1]"
            ))),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Selector::TopKFraction(x) => {
                // f32's Display is the shortest string that parses back to the same value; make
                // sure it reads as a fraction, not a count.
                let s = x.to_string();
                if s.contains(['.', 'e', 'E']) {
                    write!(f, "topk:{s}")
                } else {
                    write!(f, "topk:{s}.0")
                }
            }
            Selector::TopKCount(k) => write!(f, "topk:{k}"),
            Selector::Filter { rel } => write!(f, "filter:{rel}"),
            Selector::RowsFraction { fraction, .. } => write!(f, "rows:{fraction}"),
            Selector::Energy(e) => write!(f, "energy:{e}"),
        }
    }
}

/// Selection stages then a value format. See the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct CodecChain {
    pub selectors: Vec<Selector>,
    /// Sparsity warm-up: over clocks `0..warmup` every top-k fraction `F` is relaxed to
    /// `F^((c + 1) / (warmup + 1))` at clock `c` (with `F = 0.001` and 4 clocks: 25%, 6.3%,
    /// 1.6%, 0.4%, then 0.1%: a geometric ramp), as Deep Gradient Compression does over its first epochs. 0: none.
    /// Not on the wire: only the sender uses it (see [`CodecChain::at_clock`]).
    pub warmup: u32,
    /// Momentum correction (Deep Gradient Compression): the encoder keeps a velocity per entry,
    /// `u = momentum * u + delta`, feeds `u` (not the delta) into error feedback, and zeroes `u`
    /// where an entry was sent (momentum-factor masking). 0: none; in [0, 1). Not on the wire.
    /// A chain that sends every entry masks every velocity, so there it changes nothing.
    pub momentum: f32,
    pub format: ValueFormat,
}

impl Default for CodecChain {
    fn default() -> Self {
        CodecChain::raw()
    }
}

impl CodecChain {
    /// Dense f32: the existing raw payload.
    pub fn raw() -> Self {
        CodecChain {
            selectors: Vec::new(),
            warmup: 0,
            momentum: 0.0,
            format: ValueFormat::F32,
        }
    }

    /// Decoding gives back exactly what was encoded, and the encoder keeps no state.
    pub fn is_lossless(&self) -> bool {
        self.selectors.is_empty() && self.format == ValueFormat::F32 && self.momentum == 0.0
    }

    /// The payload is sparse (the chain has selection stages).
    pub fn is_sparse(&self) -> bool {
        !self.selectors.is_empty()
    }

    /// Needs the current values (has a filter stage).
    pub fn needs_current(&self) -> bool {
        self.selectors
            .iter()
            .any(|s| matches!(s, Selector::Filter { .. }))
    }

    /// u16 for the frame header's codec field; 1 is raw f32 (`Codec::RawF32`).
    pub fn wire_id(&self) -> u16 {
        self.format.code() | if self.is_sparse() { WIRE_SPARSE } else { 0 }
    }

    /// Checks the stages' parameters (the fields are public, so a chain may be built by hand).
    pub fn validate(&self) -> Result<(), ProtoError> {
        self.selectors.iter().try_for_each(Selector::validate)?;
        if ValueFormat::INTS.contains(&self.format) {
            return Err(ProtoError::Codec(format!(
                "{} is the exact codec's own format, not a chain's",
                self.format.name()
            )));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(ProtoError::Codec(format!(
                "momentum {} is not in [0, 1)",
                self.momentum
            )));
        }
        let fraction =
            |s: &Selector| matches!(s, Selector::TopKFraction(_) | Selector::RowsFraction { .. });
        if self.warmup > 0 && !self.selectors.iter().any(fraction) {
            return Err(ProtoError::Codec(
                "warmup relaxes a top-k fraction (topk:F with a decimal point), and the chain has none"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The chain with the row width its `rows:F` stages select by (the encoder knows it).
    pub fn for_rows(mut self, width: u32) -> CodecChain {
        for s in &mut self.selectors {
            if let Selector::RowsFraction { width: w, .. } = s {
                *w = width;
            }
        }
        self
    }

    /// The chain an encoder uses at `clock`: the warm-up applied (and removed).
    pub fn at_clock(&self, clock: u64) -> CodecChain {
        let mut c = self.clone();
        c.warmup = 0;
        if clock < u64::from(self.warmup) {
            let e = (clock + 1) as f64 / (f64::from(self.warmup) + 1.0);
            for s in &mut c.selectors {
                if let Selector::TopKFraction(f) | Selector::RowsFraction { fraction: f, .. } = s {
                    *f = (f64::from(*f).powf(e) as f32).clamp(*f, 1.0);
                }
            }
        }
        c
    }
}

/// (value format, sparse) of a wire id; None for an id no chain produces.
pub fn wire_format(wire_id: u16) -> Option<(ValueFormat, bool)> {
    let sparse = match wire_id & !0x0F {
        0 => false,
        WIRE_SPARSE => true,
        _ => return None,
    };
    ValueFormat::from_code(wire_id & 0x0F).map(|f| (f, sparse))
}

impl fmt::Display for CodecChain {
    /// The stages, then the value format where it is not `raw` or nothing else is written
    /// (`raw`, `momentum:0.5`, `topk:0.01,warmup:4,f16`): parses back to the same chain.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut stages: Vec<String> = self.selectors.iter().map(|s| s.to_string()).collect();
        if self.warmup > 0 {
            stages.push(format!("warmup:{}", self.warmup));
        }
        if self.momentum > 0.0 {
            stages.push(format!("momentum:{}", self.momentum));
        }
        if stages.is_empty() || self.format != ValueFormat::F32 {
            stages.push(self.format.name().to_string());
        }
        f.write_str(&stages.join(","))
    }
}

impl FromStr for CodecChain {
    type Err = ProtoError;

    fn from_str(s: &str) -> Result<Self, ProtoError> {
        let bad = |why: String| ProtoError::Codec(format!("codec {s:?}: {why}"));
        let mut chain = CodecChain::raw();
        let mut format = None;
        for stage in s.split(',').map(str::trim) {
            if format.is_some() {
                return Err(bad(format!(
                    "stage {stage:?} after the value format (the format comes last)"
                )));
            }
            let (name, param) = match stage.split_once(':') {
                Some((n, p)) => (n.trim(), Some(p.trim())),
                None => (stage, None),
            };
            match (name, param) {
                (f, None) if ValueFormat::from_name(f).is_some() => {
                    format = ValueFormat::from_name(f)
                }
                ("warmup", Some(p)) => {
                    chain.warmup = p
                        .parse::<u32>()
                        .map_err(|e| bad(format!("warmup clocks {p:?}: {e}")))?;
                    if chain.warmup == 0 {
                        return Err(bad("warmup:0 warms nothing up (leave it out)".into()));
                    }
                }
                ("topk", Some(p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    let k = p
                        .parse::<u32>()
                        .map_err(|e| bad(format!("top-k count {p:?}: {e}")))?;
                    chain.selectors.push(Selector::TopKCount(k));
                }
                ("topk", Some(p)) => {
                    let f = p
                        .parse::<f32>()
                        .map_err(|e| bad(format!("top-k fraction {p:?}: {e}")))?;
                    chain.selectors.push(Selector::TopKFraction(f));
                }
                ("momentum", Some(p)) => {
                    chain.momentum = p
                        .parse::<f32>()
                        .map_err(|e| bad(format!("momentum {p:?}: {e}")))?;
                }
                ("rows", Some(p)) => {
                    let f = p
                        .parse::<f32>()
                        .map_err(|e| bad(format!("rows fraction {p:?}: {e}")))?;
                    chain.selectors.push(Selector::RowsFraction {
                        fraction: f,
                        width: 0,
                    });
                }
                ("energy", Some(p)) => {
                    let e = p
                        .parse::<f32>()
                        .map_err(|e| bad(format!("energy fraction {p:?}: {e}")))?;
                    chain.selectors.push(Selector::Energy(e));
                }
                ("filter", Some(p)) => {
                    let rel = p
                        .parse::<f32>()
                        .map_err(|e| bad(format!("filter ratio {p:?}: {e}")))?;
                    chain.selectors.push(Selector::Filter { rel });
                }
                ("topk" | "filter" | "warmup" | "rows" | "momentum" | "energy", None) => {
                    return Err(bad(format!("{name} needs a parameter ({name}:X)")))
                }
                _ => return Err(bad(format!("unknown stage {stage:?}"))),
            }
        }
        if let Some(f) = format {
            chain.format = f;
        }
        chain.validate().map_err(|e| bad(e.to_string()))?;
        Ok(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chain the stages can make prints as a string that parses back to it, so a chain
    /// survives the job's assignment (it travels as its string).
    #[test]
    fn every_chain_prints_back_as_it_parses() {
        let selections: [&[&str]; 7] = [
            &[],
            &["topk:0.01"],
            &["topk:100"],
            &["filter:0.01", "topk:0.05"],
            &["rows:0.1"],
            &["energy:0.4"],
            &["topk:0.1", "energy:0.9"],
        ];
        let mut checked = 0;
        for sel in selections {
            let fraction = sel
                .iter()
                .any(|s| s.starts_with("topk:0.") || s.starts_with("rows:"));
            let warmups: &[Option<&str>] = if fraction {
                &[None, Some("warmup:3")]
            } else {
                &[None]
            };
            for warmup in warmups {
                for momentum in [None, Some("momentum:0.5")] {
                    for format in ValueFormat::ALL {
                        let mut stages: Vec<&str> = sel.to_vec();
                        stages.extend(warmup.iter().copied());
                        stages.extend(momentum);
                        stages.push(format.name());
                        let written = stages.join(",");
                        let chain: CodecChain = written.parse().unwrap();
                        let printed = chain.to_string();
                        let again: CodecChain = printed
                            .parse()
                            .unwrap_or_else(|e| panic!("{written} printed as {printed}: {e}"));
                        assert_eq!(again, chain, "{written} printed as {printed}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100);
    }

    #[test]
    fn parses_and_displays() {
        for (s, want) in [
            ("raw", "raw"),
            ("f32", "raw"),
            ("f16", "f16"),
            ("bf16", "bf16"),
            ("topk:0.01,f16", "topk:0.01,f16"),
            ("topk:100", "topk:100"),
            ("topk:100,raw", "topk:100"),
            ("topk:1.0", "topk:1.0"),
            ("topk:1e-3", "topk:0.001"),
            ("filter:0.01,topk:100,bf16", "filter:0.01,topk:100,bf16"),
            ("filter:0.01, topk:0.05 ,bf16", "filter:0.01,topk:0.05,bf16"),
            ("filter:1", "filter:1"),
            ("q8", "q8"),
            ("topk:0.01,q4", "topk:0.01,q4"),
            ("topk:0.1,sign", "topk:0.1,sign"),
            ("q2", "q2"),
            ("topk:0.001,warmup:4,f16", "topk:0.001,warmup:4,f16"),
            ("warmup:3,topk:0.01", "topk:0.01,warmup:3"),
            ("rows:0.1,sign", "rows:0.1,sign"),
            ("momentum:0.9,topk:0.01,sign", "topk:0.01,momentum:0.9,sign"),
            ("momentum:0", "raw"),
            ("momentum:0.5", "momentum:0.5"),
            ("momentum:0.5,f16", "momentum:0.5,f16"),
            ("rows:0.05,warmup:2,q4", "rows:0.05,warmup:2,q4"),
            ("energy:0.5,sign", "energy:0.5,sign"),
            ("topk:0.1,energy:0.9", "topk:0.1,energy:0.9"),
        ] {
            let c: CodecChain = s.parse().unwrap();
            assert_eq!(c.to_string(), want, "{s}");
            assert_eq!(want.parse::<CodecChain>().unwrap(), c);
        }
        let c: CodecChain = "filter:0.01,topk:100,bf16".parse().unwrap();
        assert_eq!(
            c,
            CodecChain {
                selectors: vec![Selector::Filter { rel: 0.01 }, Selector::TopKCount(100)],
                warmup: 0,
                momentum: 0.0,
                format: ValueFormat::Bf16
            }
        );
        assert_eq!(
            "topk:1".parse::<CodecChain>().unwrap().selectors,
            vec![Selector::TopKCount(1)]
        );
        for bad in [
            "",
            "raw,",
            "f16,topk:0.1",
            "f16,bf16",
            "topk",
            "topk:",
            "topk:0.0",
            "topk:1.5",
            "topk:-1",
            "topk:nan",
            "filter:-0.1",
            "filter:inf",
            "filter",
            "zstd",
            "topk:0.1:2",
            "topk:99999999999",
            "warmup:2",
            "topk:10,warmup:2",
            "topk:0.1,warmup:0",
            "topk:0.1,warmup:-1",
            "topk:0.1,warmup",
            "q3",
            "sign,q4",
            "energy",
            "energy:0",
            "energy:1.5",
            "energy:nan",
            "energy:0.5,warmup:2",
            "rows:0",
            "momentum:1",
            "momentum:-0.1",
            "momentum:nan",
            "rows:1.5",
            "rows",
        ] {
            assert!(bad.parse::<CodecChain>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wire_ids() {
        let ids: Vec<u16> = [
            "raw",
            "f16",
            "bf16",
            "topk:1",
            "topk:1,f16",
            "filter:0,bf16",
        ]
        .iter()
        .map(|s| s.parse::<CodecChain>().unwrap().wire_id())
        .collect();
        let ids: Vec<u16> = ids
            .into_iter()
            .chain(
                ["q8", "q4", "q2", "sign", "topk:1,q8", "topk:1,sign"]
                    .map(|s| s.parse::<CodecChain>().unwrap().wire_id()),
            )
            .collect();
        assert_eq!(ids, vec![1, 2, 3, 0x11, 0x12, 0x13, 4, 5, 6, 7, 0x14, 0x17]);
        // And the exact codec's whole-number formats, i8 and i16, dense or sparse.
        let all: Vec<u16> = (1..=9).chain(0x11..=0x19).collect();
        for id in 0..=u16::MAX {
            assert_eq!(wire_format(id).is_some(), all.contains(&id), "{id}");
        }
        // The exact codec's whole-number formats are no chain's.
        for format in ValueFormat::INTS {
            let chain = CodecChain {
                format,
                ..CodecChain::raw()
            };
            assert!(chain.validate().is_err(), "{format:?}");
        }
        assert!(CodecChain::raw().is_lossless());
        assert!(!"f16".parse::<CodecChain>().unwrap().is_lossless());
        assert!("topk:3".parse::<CodecChain>().unwrap().is_sparse());
    }

    #[test]
    fn warmup_relaxes_the_fraction_geometrically() {
        let c: CodecChain = "topk:0.001,warmup:4,q4".parse().unwrap();
        let f = |clock| match c.at_clock(clock).selectors[0] {
            Selector::TopKFraction(f) => f,
            _ => unreachable!(),
        };
        // 0.001^(1/5) = 0.251, then 0.063, 0.016, 0.004, then 0.001 for good.
        for clock in 0..7u64 {
            let w = 0.001f64.powf(((clock + 1) as f64 / 5.0).min(1.0));
            assert!(
                (f(clock) as f64 / w - 1.0).abs() < 1e-5,
                "{clock}: {}",
                f(clock)
            );
        }
        assert_eq!(c.at_clock(0).warmup, 0);
        assert_eq!(c.at_clock(0).wire_id(), c.wire_id());
        assert_eq!(c.at_clock(9), "topk:0.001,q4".parse().unwrap());
    }
}
