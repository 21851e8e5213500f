//! Deltas compressed where they are computed. An engine that keeps a worker's state on a device
//! can run the push codec there too, so that only the encoded delta crosses the bus: it keeps
//! error feedback's residual itself, selects each block's top k, and hands back one payload per
//! block, the bytes the worker library's own encoder would have made of the same values
//! (`ps_proto::push_plan`, `DeltaSink::push_plan`).
//!
//! What runs on a device ([`device_chain`]): a chain of one top-k stage (fraction or count) and
//! any value format but the integer ones ([`DeviceChain::TopK`]: the device selects, codes the
//! chosen indices and encodes their values, the host writes the opening of the index part from
//! the indices' measure; a dense layout's selection is encoded on the host,
//! [`selection_payload`]), a chain of one energy stage (`energy:E`) in the same formats
//! ([`DeviceChain::Energy`]: as a top-k, its count found on the device, [`Keep::Energy`]), or a
//! chain that selects nothing and sends every value in a lossy format, `f16`, `bf16`, `q8`,
//! `q4`, `q2` or `sign` ([`DeviceChain::Dense`]: the whole payload is made on the device, so
//! only it crosses the bus). Anything else (filters, whole rows, several stages, momentum) is
//! encoded by the worker library from the plain delta, as before.
//!
//! [`ResidualKeeper`] is the host half and the oracle: the residual per table, added to the rows
//! a worker reads (its view includes what it has not sent yet, as the library's own residual
//! is), and each block encoded with `ps_proto::codec::ErrorFeedback`, exactly the library's
//! encoder. A device engine's payloads must equal it byte for byte, for finite values (a GPU's
//! addition turns any NaN into the canonical one, where the host keeps its payload bits).

use crate::error::ComputeError;
use ps_proto::codec::{self, CodecChain, ErrorFeedback, ValueFormat};

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

/// One block of an engine's delta: rows `[first_row, first_row + rows)` of table `table`, of
/// which the top `k` values go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaBlock {
    pub table: u32,
    pub first_row: usize,
    pub rows: usize,
    pub k: usize,
}

/// One block of a keyed delta (MF's item rows): positions `rows` of the clock's key list, as the
/// worker library's push plan cuts it, of which the top `k` values go (all of them for a chain
/// with no top-k: [`block_k`] of the block's values; an energy stage counts its own,
/// [`DeviceChain::keep`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedBlock {
    pub rows: std::ops::Range<usize>,
    pub k: usize,
}

/// [`check_cut`] of keyed blocks' positions.
pub fn check_keyed(blocks: &[KeyedBlock], n: usize) -> Result<(), String> {
    let ranges: Vec<std::ops::Range<usize>> = blocks.iter().map(|b| b.rows.clone()).collect();
    check_cut(&ranges, n)
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

/// The payload of a selection a device made (`indices` ascending into a block of `n`, `values`
/// the selected residual values, unrounded), as the library encodes it in `format`, and per
/// selected entry the value a device subtracts from its residual there (`codec_ef_subtract`,
/// which zeroes a non-finite residual entry) to keep what error feedback keeps: what the
/// receiver decodes, or the value itself where that decodes non-finite (a block whose scale is
/// NaN), which leaves 0 as the library does.
pub fn selection_payload(
    format: ValueFormat,
    n: usize,
    indices: &[u32],
    values: &[f32],
) -> Result<(Vec<u8>, Vec<f32>), ComputeError> {
    let mut out = Vec::new();
    let decoded = codec::encode_selection_decoded(format, n, indices, values, &mut out)
        .map_err(|e| bad("device-codec", e.to_string()))?;
    let subtract = values
        .iter()
        .zip(decoded)
        .map(|(&v, q)| {
            if v.is_finite() && !q.is_finite() {
                v
            } else {
                q
            }
        })
        .collect();
    Ok((out, subtract))
}

/// Payloads, one per block, and the bytes `(in, out)` a device copied to make them.
pub type EncodedBlocks = (Vec<Vec<u8>>, (u64, u64));

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

    /// `delta` (whole rows from `first_row` of `table`) plus the residual those rows hold: the
    /// values a device encoder selects from (as [`ResidualKeeper::encode_blocks`] forms them).
    pub fn accumulated(
        &mut self,
        table: u32,
        first_row: usize,
        delta: &[f32],
    ) -> Result<Vec<f32>, ComputeError> {
        let mut values = delta.to_vec();
        self.add_to(table, first_row, &mut values)?;
        Ok(values)
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

    /// [`ResidualKeeper::keyed`] of rows `keys` that `len` values fill (an error otherwise).
    fn keyed_values(
        &self,
        table: u32,
        keys: &[u64],
        len: usize,
    ) -> Result<(usize, Vec<usize>), ComputeError> {
        let (w, starts) = self.keyed(table, keys)?;
        if len != keys.len() * w {
            return Err(bad(
                "residual",
                format!("{len} values for {} rows of {w}", keys.len()),
            ));
        }
        Ok((w, starts))
    }

    /// [`ResidualKeeper::add_to`] for the rows `keys` (`values` holds them in that order).
    pub fn add_keyed(
        &mut self,
        table: u32,
        keys: &[u64],
        values: &mut [f32],
    ) -> Result<(), ComputeError> {
        let (w, starts) = self.keyed_values(table, keys, values.len())?;
        let r = &self.tables[table as usize].1;
        for (v, &at) in values.chunks_exact_mut(w.max(1)).zip(&starts) {
            add_held_rows(v, &r[at..at + w], w);
        }
        Ok(())
    }

    /// Adds the residual of the rows `keys` of `table` into `values` (those rows, in that
    /// order) and forgets it: the rows go whole, as plain values.
    pub fn take_keyed(
        &mut self,
        table: u32,
        keys: &[u64],
        values: &mut [f32],
    ) -> Result<(), ComputeError> {
        let (w, starts) = self.keyed_values(table, keys, values.len())?;
        let r = &mut self.tables[table as usize].1;
        for (v, &at) in values.chunks_exact_mut(w.max(1)).zip(&starts) {
            for (v, r) in v.iter_mut().zip(&mut r[at..at + w]) {
                *v += std::mem::take(r);
            }
        }
        Ok(())
    }

    /// The rows `keys` of `table` whose residual holds a value other than zero (`-0.0` is zero,
    /// NaN is not), in the order of `keys`: the rows the worker library would keep a residual
    /// row for.
    pub fn held_keyed(&self, table: u32, keys: &[u64]) -> Result<Vec<u64>, ComputeError> {
        let (w, starts) = self.keyed(table, keys)?;
        let r = &self.tables[table as usize].1;
        Ok(keys
            .iter()
            .zip(&starts)
            .filter(|(_, &at)| r[at..at + w].iter().any(|x| *x != 0.0))
            .map(|(&k, _)| k)
            .collect())
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
        let (w, starts) = self.keyed_values(table, keys, delta.len())?;
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

    /// The bytes `(in, out)` a device engine copies across its bus to encode `delta` (the rows
    /// `keys` of `table`) with `chain` before [`ResidualKeeper::encode_keyed`] of the same
    /// block: a dense chain's payload as whole words; a top-k's copies of the values it selects
    /// from (the delta plus the residual its rows hold), as `copies` (one encoder serving every
    /// block) predicts them.
    pub fn keyed_copies(
        &mut self,
        copies: &mut TopKCopies,
        (table, keys): (u32, &[u64]),
        chain: DeviceChain,
        k: usize,
        delta: &[f32],
    ) -> Result<(u64, u64), ComputeError> {
        match chain {
            DeviceChain::Dense(format) => {
                Ok((0, dense_device_bytes(format, delta.len()).unwrap_or(0)))
            }
            DeviceChain::TopK(format) | DeviceChain::Energy(_, format) => {
                let mut values = delta.to_vec();
                self.add_keyed(table, keys, &mut values)?;
                Ok(copies.push(&values, chain.keep(k), format))
            }
        }
    }

    /// Each of `blocks` (positions in `keys`, rows of `table` of `width`) of `delta` encoded
    /// with `chain` as a device engine encodes it ([`ResidualKeeper::encode_keyed`]), and the
    /// bytes `(in, out)` its bus copies for all of them ([`ResidualKeeper::keyed_copies`]).
    pub fn encode_keyed_blocks(
        &mut self,
        copies: &mut TopKCopies,
        (table, keys, width): (u32, &[u64], usize),
        chain: DeviceChain,
        blocks: &[KeyedBlock],
        delta: &[f32],
    ) -> Result<EncodedBlocks, ComputeError> {
        let mut bytes = (0, 0);
        let mut payloads = Vec::with_capacity(blocks.len());
        for b in blocks {
            let rows = keys.get(b.rows.clone()).ok_or_else(|| {
                bad(
                    "residual",
                    format!("rows {:?} of {} keys", b.rows, keys.len()),
                )
            })?;
            let part = delta
                .get(b.rows.start * width..b.rows.end * width)
                .ok_or_else(|| bad("residual", format!("rows {:?} of the delta", b.rows)))?;
            let (i, o) = self.keyed_copies(copies, (table, rows), chain, b.k, part)?;
            bytes = (bytes.0 + i, bytes.1 + o);
            payloads.push(self.encode_keyed(table, rows, chain, b.k, part)?);
        }
        Ok((payloads, bytes))
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

mod chain;
mod copies;
mod halves;
mod levels;
mod pulled;
pub use chain::{block_k, dense_device_bytes, device_chain, DeviceChain, Fraction, Keep};
pub use copies::{TopKCopies, ENERGY_BYTES, TRIM_CAP};
pub use halves::{half_image, Half, HalfLoads};
pub use levels::{level_image, LevelImage};
pub use pulled::{narrower_codes, PulledRows};

#[cfg(test)]
mod tests;
