//! Deltas compressed where they are computed. An engine that keeps a worker's state on a device
//! can run the push codec there too, so that only the encoded delta crosses the bus: it keeps
//! error feedback's residual itself, selects each block's top k, and hands back one payload per
//! block, the bytes the worker library's own encoder would have made of the same values
//! (`ps_proto::push_plan`, `DeltaSink::push_plan`).
//!
//! What runs on a device ([`device_chain`]): a chain of one top-k stage (fraction or count) and
//! f32 or f16 values ([`DeviceChain::TopK`]), or a chain that selects nothing and sends every
//! value in a lossy format, `f16`, `bf16`, `q8`, `q4`, `q2` or `sign` ([`DeviceChain::Dense`]:
//! the whole payload is made on the device, so only it crosses the bus). Anything else (filters,
//! whole rows, energy, several stages, a top-k with a block format, momentum) is encoded by the
//! worker library from the plain delta, as before.
//!
//! [`ResidualKeeper`] is the host half and the oracle: the residual per table, added to the rows
//! a worker reads (its view includes what it has not sent yet, as the library's own residual
//! is), and each block encoded with `ps_proto::codec::ErrorFeedback`, exactly the library's
//! encoder. A device engine's payloads must equal it byte for byte, for finite values (a GPU's
//! addition turns any NaN into the canonical one, where the host keeps its payload bits).

use crate::error::ComputeError;
use ps_proto::codec::{self, CodecChain, ErrorFeedback, Selector, ValueFormat};

/// How selected values travel when a device encodes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentValues {
    F32,
    F16,
}

impl SentValues {
    pub fn format(self) -> ValueFormat {
        match self {
            SentValues::F32 => ValueFormat::F32,
            SentValues::F16 => ValueFormat::F16,
        }
    }
}

/// What a device encoder runs of a push chain (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChain {
    /// One top-k stage: each block's `k` largest values, sent as f32 or f16.
    TopK(SentValues),
    /// No selection: every value of a block, in a lossy format.
    Dense(ValueFormat),
}

impl DeviceChain {
    /// The chain the worker library would encode a block with, `k` of its values selected
    /// (ignored by a dense chain).
    pub fn chain(self, k: usize) -> CodecChain {
        match self {
            DeviceChain::TopK(f) => CodecChain {
                selectors: vec![Selector::TopKCount(k.min(u32::MAX as usize) as u32)],
                format: f.format(),
                ..CodecChain::raw()
            },
            DeviceChain::Dense(format) => CodecChain {
                format,
                ..CodecChain::raw()
            },
        }
    }
}

/// What a device encoder runs of `chain` (as planned for the clock: warm-up applied), or
/// `None` when the worker library has to encode it.
pub fn device_chain(chain: &CodecChain) -> Option<DeviceChain> {
    if chain.momentum != 0.0 || chain.warmup != 0 {
        return None;
    }
    match (chain.selectors.as_slice(), chain.format) {
        ([Selector::TopKFraction(_)] | [Selector::TopKCount(_)], ValueFormat::F32) => {
            Some(DeviceChain::TopK(SentValues::F32))
        }
        ([Selector::TopKFraction(_)] | [Selector::TopKCount(_)], ValueFormat::F16) => {
            Some(DeviceChain::TopK(SentValues::F16))
        }
        (
            [],
            f @ (ValueFormat::F16
            | ValueFormat::Bf16
            | ValueFormat::Q8
            | ValueFormat::Q4
            | ValueFormat::Q2
            | ValueFormat::Sign),
        ) => Some(DeviceChain::Dense(f)),
        _ => None,
    }
}

/// The environment variable that can keep engines from encoding their own pushes.
pub const ENV: &str = "PS_DEVICE_CODEC";

/// Whether engines may encode their own pushes: `PS_DEVICE_CODEC` unset, empty or `auto` (they
/// encode the chains they run), or `off` (the worker library encodes every chain from the plain
/// delta, as a comparison or a way around a device encoder); an error names anything else.
pub fn engines_encode() -> Result<bool, String> {
    match std::env::var(ENV) {
        Err(std::env::VarError::NotPresent) => encode_choice(None),
        Ok(v) => encode_choice(Some(&v)),
        Err(e) => Err(format!("{ENV}: {e}")),
    }
}

/// [`engines_encode`] of the variable's value.
fn encode_choice(v: Option<&str>) -> Result<bool, String> {
    match v.map(str::trim) {
        None | Some("" | "auto") => Ok(true),
        Some("off") => Ok(false),
        Some(v) => Err(format!("{ENV}={v:?}: expected auto or off")),
    }
}

/// Who encodes a worker's lossy pushes, clock by clock: its engine, where it runs the clock's
/// chain, until the worker library has encoded a lossy delta itself; from then on the library,
/// whose residual would otherwise go out beside the engine's payloads. `PS_DEVICE_CODEC=off`
/// leaves it to the library from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushEncoder {
    library_holds: bool,
}

impl PushEncoder {
    /// As `PS_DEVICE_CODEC` says ([`engines_encode`]).
    pub fn from_env() -> Result<PushEncoder, String> {
        Ok(PushEncoder {
            library_holds: !engines_encode()?,
        })
    }

    /// Whether the engine encodes this clock's pushes, given whether it runs the clock's
    /// chains; where it does not, the library encodes them and, for a `lossy` chain, holds a
    /// residual from then on.
    pub fn engine_encodes(&mut self, runs: bool, lossy: bool) -> bool {
        if self.library_holds || !runs {
            self.library_holds |= lossy;
            return false;
        }
        true
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

/// One block of an engine's delta: rows `[first_row, first_row + rows)` of table `table`, of
/// which the top `k` values go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaBlock {
    pub table: u32,
    pub first_row: usize,
    pub rows: usize,
    pub k: usize,
}

/// Checks that `blocks` cover every row of every table exactly once (table `t` has `rows[t]`
/// rows). An engine that keeps one residual per block folds the old blocks' residual into the
/// clock's delta when the plan changes and sends it through the new blocks: with a gap, what
/// it held there would be lost; with an overlap, added twice to what the worker reads.
pub fn check_tiling(blocks: &[DeltaBlock], rows: &[usize]) -> Result<(), String> {
    let mut spans: Vec<(u32, usize, usize)> = blocks
        .iter()
        .map(|b| (b.table, b.first_row, b.first_row.saturating_add(b.rows)))
        .collect();
    spans.sort_unstable();
    let mut spans = spans.into_iter().peekable();
    for (t, &n) in rows.iter().enumerate() {
        let mut next = 0;
        while let Some(&(_, lo, hi)) = spans.peek().filter(|s| s.0 as usize == t) {
            if lo != next {
                let what = if lo < next { "overlap" } else { "leave a gap" };
                return Err(format!("push blocks {what} at row {next} of table {t}"));
            }
            next = hi;
            spans.next();
        }
        if next != n {
            return Err(format!(
                "push blocks cover rows 0..{next} of table {t}, which has {n}"
            ));
        }
    }
    match spans.next() {
        Some((t, lo, hi)) => Err(format!(
            "push block of rows {lo}..{hi} of table {t}, which does not exist"
        )),
        None => Ok(()),
    }
}

/// The f16 bits of `values` when every one of them is an f16 value (it converts to f16 and
/// back bit for bit, as rows pulled with an `f16` pull codec do), else `None` (found at the
/// first value that is not, so that f32 rows cost about one conversion): such rows cross to a
/// device as f16, half the bytes, and widen there exactly.
pub fn f16_image(values: &[f32]) -> Option<Vec<u16>> {
    let mut out = Vec::with_capacity(values.len());
    for &v in values {
        let h = half::f16::from_f32(v);
        if h.to_f32().to_bits() != v.to_bits() {
            return None;
        }
        out.push(h.to_bits());
    }
    Some(out)
}

/// Checks that `blocks` cut positions `0..n` into consecutive ranges, in order (a push plan's
/// blocks of a key list).
pub fn check_cut(blocks: &[std::ops::Range<usize>], n: usize) -> Result<(), String> {
    let mut next = 0;
    for b in blocks {
        if b.start != next || b.end < b.start || b.end > n {
            return Err(format!(
                "push blocks must cut the {n} rows in order: {b:?} after {next}"
            ));
        }
        next = b.end;
    }
    if next != n {
        return Err(format!("push blocks cover {next} of {n} rows"));
    }
    Ok(())
}

/// The payload of a selection a device made: `indices` ascending into a block of `n`, `values`
/// the values the receiver decodes (already rounded to `format`).
pub fn selection_payload(
    format: SentValues,
    n: usize,
    indices: &[u32],
    values: &[f32],
) -> Result<Vec<u8>, ComputeError> {
    let mut out = Vec::new();
    codec::encode_selection(format.format(), n, indices, values, &mut out).map_err(|e| {
        ComputeError {
            engine: "device-codec",
            message: e.to_string(),
        }
    })?;
    Ok(out)
}

/// The host oracle of an engine's own push encoding: per table a dense residual (`rows x
/// width`), what earlier clocks computed and did not send.
#[derive(Debug, Clone, Default)]
pub struct ResidualKeeper {
    /// Per table: (width, residual).
    tables: Vec<(usize, Vec<f32>)>,
}

/// Adds the rows of `residual` (of `width`) that hold some residual into `values`, as the
/// worker library does (it keeps only those rows).
fn add_held_rows(values: &mut [f32], residual: &[f32], width: usize) {
    for (v, r) in values
        .chunks_exact_mut(width)
        .zip(residual.chunks_exact(width))
    {
        if r.iter().any(|x| *x != 0.0) {
            v.iter_mut().zip(r).for_each(|(v, r)| *v += r);
        }
    }
}

/// Encodes `delta` plus the held rows of `residual` (rows of `width`) with `chain`, as the
/// library's error feedback does (adding the values to a zero residual), and leaves in
/// `residual` what was not sent.
fn encode_on(
    residual: &mut [f32],
    width: usize,
    chain: CodecChain,
    delta: &[f32],
) -> Result<Vec<u8>, ComputeError> {
    let mut values = delta.to_vec();
    add_held_rows(&mut values, residual, width.max(1));
    let mut ef = ErrorFeedback::new(delta.len());
    let mut out = Vec::new();
    ef.compress(&chain, &values, None, &mut out)
        .map_err(|e| bad("residual", e.to_string()))?;
    residual.copy_from_slice(ef.residual());
    Ok(out)
}

fn bad(engine: &'static str, message: String) -> ComputeError {
    ComputeError { engine, message }
}

impl ResidualKeeper {
    /// A zero residual for tables of `(rows, width)`.
    pub fn new(shapes: &[(usize, usize)]) -> ResidualKeeper {
        ResidualKeeper {
            tables: shapes.iter().map(|&(r, w)| (w, vec![0.0; r * w])).collect(),
        }
    }

    fn rows_mut(
        &mut self,
        table: u32,
        first_row: usize,
        values: usize,
    ) -> Result<(usize, &mut [f32]), ComputeError> {
        let (w, r) = self
            .tables
            .get_mut(table as usize)
            .ok_or_else(|| bad("residual", format!("no table {table}")))?;
        let (w, start) = (*w, first_row.saturating_mul(*w));
        let end = start.saturating_add(values);
        if !values.is_multiple_of(w.max(1)) || end > r.len() {
            return Err(bad(
                "residual",
                format!(
                    "{values} values from row {first_row} of table {table} (width {w}, {} rows)",
                    r.len() / w.max(1)
                ),
            ));
        }
        Ok((w, &mut r[start..end]))
    }

    /// Adds the residual of rows `[first_row, ..)` into `values` (whole rows), as the worker
    /// library adds its residual to a read: only rows holding some residual.
    pub fn add_to(
        &mut self,
        table: u32,
        first_row: usize,
        values: &mut [f32],
    ) -> Result<(), ComputeError> {
        let (w, r) = self.rows_mut(table, first_row, values.len())?;
        add_held_rows(values, r, w);
        Ok(())
    }

    /// Adds the residual of a whole table into `delta` (shaped like the table) and forgets it:
    /// the delta then goes out through the worker library, which keeps what it holds back.
    pub fn take_into(&mut self, table: u32, delta: &mut [f32]) -> Result<(), ComputeError> {
        let (_, r) = self.rows_mut(table, 0, delta.len())?;
        for (d, r) in delta.iter_mut().zip(r.iter_mut()) {
            *d += std::mem::take(r);
        }
        Ok(())
    }

    /// Encodes each block's values (`deltas[i]` for `blocks[i]`, whole rows) plus its
    /// residual with `chain` (a top-k keeps the block's `k`), keeping what is not sent; returns
    /// one payload per block. Blocks must not overlap.
    pub fn encode_blocks(
        &mut self,
        blocks: &[DeltaBlock],
        chain: DeviceChain,
        deltas: &[&[f32]],
    ) -> Result<Vec<Vec<u8>>, ComputeError> {
        if blocks.len() != deltas.len() {
            return Err(bad(
                "residual",
                format!("{} blocks with {} deltas", blocks.len(), deltas.len()),
            ));
        }
        blocks
            .iter()
            .zip(deltas)
            .map(|(block, delta)| self.encode(block, chain, delta))
            .collect()
    }

    fn encode(
        &mut self,
        block: &DeltaBlock,
        chain: DeviceChain,
        delta: &[f32],
    ) -> Result<Vec<u8>, ComputeError> {
        let (w, r) = self.rows_mut(block.table, block.first_row, delta.len())?;
        if delta.len() != block.rows * w {
            return Err(bad(
                "residual",
                format!("{} values for a block of {} rows", delta.len(), block.rows),
            ));
        }
        encode_on(r, w, chain.chain(block.k), delta)
    }

    /// The rows `keys` of `table` (each within it), as `(width, row starts)`.
    fn keyed(&self, table: u32, keys: &[u64]) -> Result<(usize, Vec<usize>), ComputeError> {
        let (w, r) = self
            .tables
            .get(table as usize)
            .ok_or_else(|| bad("residual", format!("no table {table}")))?;
        let rows = r.len() / (*w).max(1);
        let starts = keys
            .iter()
            .map(|&k| {
                usize::try_from(k)
                    .ok()
                    .filter(|&k| k < rows)
                    .map(|k| k * w)
                    .ok_or_else(|| {
                        bad(
                            "residual",
                            format!("row {k} of table {table} ({rows} rows)"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((*w, starts))
    }

    /// [`ResidualKeeper::add_to`] for the rows `keys` (`values` holds them in that order).
    pub fn add_keyed(
        &mut self,
        table: u32,
        keys: &[u64],
        values: &mut [f32],
    ) -> Result<(), ComputeError> {
        let (w, starts) = self.keyed(table, keys)?;
        if values.len() != keys.len() * w {
            return Err(bad(
                "residual",
                format!("{} values for {} rows of {w}", values.len(), keys.len()),
            ));
        }
        let r = &self.tables[table as usize].1;
        for (v, &at) in values.chunks_exact_mut(w.max(1)).zip(&starts) {
            add_held_rows(v, &r[at..at + w], w);
        }
        Ok(())
    }

    /// Encodes `delta` (the rows `keys` of `table`, in that order) plus their residual as one
    /// block with `chain` (a top-k keeps `k`), keeping what is not sent; returns the payload.
    /// Keys must be distinct.
    pub fn encode_keyed(
        &mut self,
        table: u32,
        keys: &[u64],
        chain: DeviceChain,
        k: usize,
        delta: &[f32],
    ) -> Result<Vec<u8>, ComputeError> {
        let (w, starts) = self.keyed(table, keys)?;
        if delta.len() != keys.len() * w {
            return Err(bad(
                "residual",
                format!("{} values for {} rows of {w}", delta.len(), keys.len()),
            ));
        }
        let r = &mut self.tables[table as usize].1;
        let mut gathered: Vec<f32> = starts
            .iter()
            .flat_map(|&at| &r[at..at + w])
            .copied()
            .collect();
        let out = encode_on(&mut gathered, w, chain.chain(k), delta)?;
        for (g, &at) in gathered.chunks_exact(w.max(1)).zip(&starts) {
            r[at..at + w].copy_from_slice(g);
        }
        Ok(out)
    }

    /// Sum of the residual's magnitudes.
    pub fn l1(&self) -> f64 {
        self.tables
            .iter()
            .flat_map(|(_, r)| r)
            .map(|v| f64::from(v.abs()))
            .sum()
    }
}

#[cfg(test)]
mod tiling_tests {
    use super::*;

    fn b(table: u32, first_row: usize, rows: usize) -> DeltaBlock {
        DeltaBlock {
            table,
            first_row,
            rows,
            k: 1,
        }
    }

    #[test]
    fn only_rows_of_f16_values_have_an_f16_image() {
        let exact = [0.0f32, -0.0, 1.5, -65504.0, 2.0f32.powi(-24), f32::INFINITY];
        let image = f16_image(&exact).unwrap();
        let back: Vec<u32> = image
            .iter()
            .map(|&h| half::f16::from_bits(h).to_f32().to_bits())
            .collect();
        assert_eq!(back, exact.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        assert_eq!(f16_image(&[]), Some(Vec::new()));
        for other in [0.1f32, 65520.0, 1e-8, 1.0 + f32::EPSILON] {
            assert_eq!(f16_image(&[1.0, other]), None, "{other}");
        }
    }

    #[test]
    fn a_cut_is_consecutive_and_whole() {
        assert_eq!(check_cut(&[0..2, 2..5], 5), Ok(()));
        assert_eq!(check_cut(&[], 0), Ok(()));
        assert!(check_cut(&[0..2, 3..5], 5).unwrap_err().contains("after 2"));
        assert!(check_cut(&[0..2, 2..6], 5).is_err());
        let short = std::slice::from_ref(&(0..2));
        assert!(check_cut(short, 5).unwrap_err().contains("cover 2 of 5"));
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = [0..2, 2..1];
        assert!(check_cut(&backwards, 1).is_err());
    }

    #[test]
    fn a_plan_must_cover_every_row_once() {
        let rows = [5, 0, 3];
        assert_eq!(
            check_tiling(&[b(2, 0, 3), b(0, 2, 3), b(0, 0, 2)], &rows),
            Ok(())
        );
        assert_eq!(check_tiling(&[], &[0, 0]), Ok(()));
        let gap = check_tiling(&[b(0, 0, 2), b(0, 3, 2), b(2, 0, 3)], &rows).unwrap_err();
        assert!(gap.contains("gap at row 2 of table 0"), "{gap}");
        let overlap = check_tiling(&[b(0, 0, 3), b(0, 2, 3), b(2, 0, 3)], &rows).unwrap_err();
        assert!(overlap.contains("overlap at row 3 of table 0"), "{overlap}");
        let short = check_tiling(&[b(0, 0, 5), b(2, 0, 2)], &rows).unwrap_err();
        assert!(
            short.contains("rows 0..2 of table 2, which has 3"),
            "{short}"
        );
        let missing = check_tiling(&[b(0, 0, 5)], &rows).unwrap_err();
        assert!(missing.contains("table 2"), "{missing}");
        let extra = check_tiling(&[b(0, 0, 5), b(2, 0, 3), b(3, 0, 1)], &rows).unwrap_err();
        assert!(extra.contains("does not exist"), "{extra}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn chain(s: &str) -> CodecChain {
        s.parse().unwrap()
    }

    #[test]
    fn a_device_runs_one_top_k_with_f32_or_f16_values_or_a_lossy_dense_format() {
        use DeviceChain::{Dense, TopK};
        assert_eq!(
            device_chain(&chain("topk:0.1")),
            Some(TopK(SentValues::F32))
        );
        assert_eq!(
            device_chain(&chain("topk:5,f16")),
            Some(TopK(SentValues::F16))
        );
        for (s, f) in [
            ("f16", ValueFormat::F16),
            ("bf16", ValueFormat::Bf16),
            ("q8", ValueFormat::Q8),
            ("q4", ValueFormat::Q4),
            ("q2", ValueFormat::Q2),
            ("sign", ValueFormat::Sign),
        ] {
            assert_eq!(device_chain(&chain(s)), Some(Dense(f)), "{s}");
        }
        for s in [
            // Lossless: the library sends the plain delta as it is.
            "raw",
            "topk:0.1,sign",
            "topk:0.1,bf16",
            "topk:0.1,q8",
            "filter:0.1,topk:0.1",
            "filter:0.1",
            "energy:0.5",
            "rows:0.1",
            "topk:0.1,momentum:0.5,f16",
            "momentum:0.5,f16",
            // A warm-up is applied to the clock's chain before a device sees it.
            "topk:0.1,warmup:2,f16",
        ] {
            assert_eq!(device_chain(&chain(s)), None, "{s}");
        }
        let warm = chain("topk:0.1,warmup:2,f16").at_clock(0);
        assert_eq!(device_chain(&warm), Some(TopK(SentValues::F16)));
        assert_eq!(block_k(&chain("topk:0.1"), 25), 3);
        assert_eq!(block_k(&chain("topk:5"), 3), 3);
        assert_eq!(block_k(&chain("f16"), 7), 7);
    }

    /// Over several clocks the keeper's payloads are those of one `ErrorFeedback` per block
    /// kept across clocks (the library's encoder), and what was sent plus what is kept is the
    /// sum of the deltas.
    #[test]
    fn the_keeper_encodes_as_error_feedback_and_loses_nothing() {
        use DeviceChain::{Dense, TopK};
        for dc in [
            TopK(SentValues::F16),
            TopK(SentValues::F32),
            Dense(ValueFormat::F16),
            Dense(ValueFormat::Bf16),
            Dense(ValueFormat::Q8),
            Dense(ValueFormat::Q4),
            Dense(ValueFormat::Q2),
            Dense(ValueFormat::Sign),
        ] {
            keeper_over_clocks(dc);
        }
    }

    fn keeper_over_clocks(dc: DeviceChain) {
        let (rows, w) = (30usize, 4usize);
        let blocks = [
            DeltaBlock {
                table: 1,
                first_row: 0,
                rows: 12,
                k: 5,
            },
            DeltaBlock {
                table: 1,
                first_row: 12,
                rows: 18,
                k: 9,
            },
        ];
        let mut keeper = ResidualKeeper::new(&[(2, 3), (rows, w)]);
        let mut reference: Vec<ErrorFeedback> = blocks
            .iter()
            .map(|b| ErrorFeedback::new(b.rows * w))
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut total = vec![0f64; rows * w];
        let mut sent = vec![0f64; rows * w];
        for clock in 0..6 {
            let delta: Vec<f32> = (0..rows * w).map(|_| rng.gen_range(-1.0..1.0)).collect();
            total
                .iter_mut()
                .zip(&delta)
                .for_each(|(t, d)| *t += f64::from(*d));
            let parts: Vec<&[f32]> = blocks
                .iter()
                .map(|b| &delta[b.first_row * w..(b.first_row + b.rows) * w])
                .collect();
            let got = keeper.encode_blocks(&blocks, dc, &parts).unwrap();
            for (i, b) in blocks.iter().enumerate() {
                let c = dc.chain(b.k);
                let mut want = Vec::new();
                reference[i]
                    .compress(&c, parts[i], None, &mut want)
                    .unwrap();
                assert_eq!(got[i], want, "{dc:?} clock {clock} block {i}");
                let n = b.rows * w;
                let d = codec::decode(c.wire_id(), &got[i], n)
                    .unwrap()
                    .into_dense(n)
                    .unwrap();
                for (s, v) in sent[b.first_row * w..].iter_mut().zip(d) {
                    *s += f64::from(v);
                }
            }
        }
        // What is kept shows in reads, and comes back whole from take_into.
        let mut read = vec![0f32; rows * w];
        keeper.add_to(1, 0, &mut read).unwrap();
        let mut back = vec![0f32; rows * w];
        keeper.take_into(1, &mut back).unwrap();
        assert_eq!(read, back);
        for i in 0..rows * w {
            let err = (sent[i] + f64::from(back[i]) - total[i]).abs();
            assert!(
                err < 1e-4,
                "{dc:?} entry {i}: sent + kept differs from the sum by {err}"
            );
        }
        assert_eq!(keeper.l1(), 0.0, "taken");
    }

    /// Rows named by key are the rows of a contiguous block: the same payloads, the same
    /// residual, the same reads; bad keys and lengths are refused.
    #[test]
    fn keyed_rows_encode_as_a_block_of_the_same_rows() {
        let (rows, w) = (9usize, 3usize);
        let keys = [1u64, 2, 3, 4];
        let block = DeltaBlock {
            table: 0,
            first_row: 1,
            rows: 4,
            k: 5,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for dc in [
            DeviceChain::TopK(SentValues::F32),
            DeviceChain::Dense(ValueFormat::Q4),
        ] {
            let (mut a, mut b) = (
                ResidualKeeper::new(&[(rows, w)]),
                ResidualKeeper::new(&[(rows, w)]),
            );
            for _ in 0..3 {
                let d: Vec<f32> = (0..4 * w).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let x = a.encode_blocks(&[block], dc, &[&d]).unwrap();
                let y = b.encode_keyed(0, &keys, dc, block.k, &d).unwrap();
                assert_eq!(x[0], y, "{dc:?}");
                let (mut ra, mut rb) = (vec![-0.0f32; 4 * w], vec![-0.0f32; 4 * w]);
                a.add_to(0, 1, &mut ra).unwrap();
                b.add_keyed(0, &keys, &mut rb).unwrap();
                assert_eq!(bits(&ra), bits(&rb), "{dc:?}");
            }
            assert_eq!(a.l1(), b.l1());
        }
        let mut k = ResidualKeeper::new(&[(rows, w)]);
        let dc = DeviceChain::Dense(ValueFormat::F16);
        assert!(
            k.encode_keyed(0, &[9], dc, 1, &[0.0; 3]).is_err(),
            "row 9 of 9"
        );
        assert!(
            k.encode_keyed(1, &[0], dc, 1, &[0.0; 3]).is_err(),
            "table 1"
        );
        assert!(
            k.encode_keyed(0, &[0], dc, 1, &[0.0; 2]).is_err(),
            "a partial row"
        );
        assert!(
            k.add_keyed(0, &[0, 1], &mut [0.0; 3]).is_err(),
            "one row for two"
        );
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn a_device_copies_back_whole_words_of_a_block_format() {
        assert_eq!(dense_device_bytes(ValueFormat::F16, 7), Some(14));
        assert_eq!(dense_device_bytes(ValueFormat::Bf16, 0), Some(0));
        // 129 values of q4: 2 scales, 65 bytes of codes in 17 words.
        assert_eq!(dense_device_bytes(ValueFormat::Q4, 129), Some(4 * (2 + 17)));
        assert_eq!(ValueFormat::Q4.encoded_len(129), 8 + 65);
        assert_eq!(dense_device_bytes(ValueFormat::Sign, 9), Some(8));
        assert_eq!(dense_device_bytes(ValueFormat::F32, 9), None);
        for (format, n) in [
            (ValueFormat::Q8, 1000),
            (ValueFormat::Q2, 77),
            (ValueFormat::Sign, 4),
        ] {
            let dev = dense_device_bytes(format, n).unwrap();
            let wire = format.encoded_len(n) as u64;
            assert!((wire..=wire + 3).contains(&dev), "{format:?} {n}");
        }
    }

    #[test]
    fn once_the_library_holds_a_residual_it_encodes_to_the_end() {
        let mut e = PushEncoder {
            library_holds: false,
        };
        assert!(e.engine_encodes(true, true));
        assert!(!e.engine_encodes(false, false), "a chain it does not run");
        assert!(
            e.engine_encodes(true, true),
            "a lossless clock left nothing behind"
        );
        assert!(!e.engine_encodes(false, true));
        assert!(
            !e.engine_encodes(true, true),
            "the library holds a residual now"
        );
    }

    #[test]
    fn the_switch_takes_auto_or_off() {
        assert_eq!(encode_choice(None), Ok(true));
        assert_eq!(encode_choice(Some(" auto ")), Ok(true));
        assert_eq!(encode_choice(Some("")), Ok(true));
        assert_eq!(encode_choice(Some("off")), Ok(false));
        let e = encode_choice(Some("no")).unwrap_err();
        assert!(
            e.contains("PS_DEVICE_CODEC") && e.contains("auto or off"),
            "{e}"
        );
    }

    #[test]
    fn only_rows_holding_a_residual_are_added_and_bad_blocks_are_refused() {
        let mut keeper = ResidualKeeper::new(&[(3, 2)]);
        let block = DeltaBlock {
            table: 0,
            first_row: 0,
            rows: 3,
            k: 1,
        };
        // Row 2 holds the largest value, rows 0 and 1 stay behind.
        let delta = [0.5, 0.0, 0.0, -0.25, 0.0, 9.0];
        keeper
            .encode_blocks(&[block], DeviceChain::TopK(SentValues::F32), &[&delta])
            .unwrap();
        let mut read = [-0.0f32; 6];
        keeper.add_to(0, 0, &mut read).unwrap();
        assert_eq!(read[..4], [0.5, 0.0, 0.0, -0.25]);
        assert!(
            read[4].is_sign_negative() && read[5].is_sign_negative(),
            "row 2 untouched"
        );
        let short = DeltaBlock { rows: 2, ..block };
        assert!(keeper
            .encode_blocks(&[short], DeviceChain::TopK(SentValues::F32), &[&delta])
            .is_err());
        let outside = DeltaBlock {
            first_row: 2,
            ..block
        };
        assert!(keeper
            .encode_blocks(&[outside], DeviceChain::TopK(SentValues::F32), &[&delta])
            .is_err());
        let other = DeltaBlock { table: 4, ..block };
        assert!(keeper
            .encode_blocks(&[other], DeviceChain::TopK(SentValues::F32), &[&delta])
            .is_err());
        assert!(keeper.add_to(0, 2, &mut [0.0; 4]).is_err());
    }
}
