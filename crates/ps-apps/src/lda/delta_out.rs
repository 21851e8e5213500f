//! A clock's count changes, out to the sink: the changed words' rows as entries (a few topics of
//! each row change; the rows stay sparse all the way to the wire), or, from a resident engine,
//! already encoded as the wire's payloads where they were made ([`super::wire`]); then the
//! totals row.

use super::app::{TOTALS, WORD_TOPIC};
use super::flat_delta::flat_entries;
use super::resident::LdaResident;
use super::wire::WireDelta;
use super::{LdaDelta, SweepKey};
use crate::app::DeltaSink;
use crate::error::{AppError, ComputeError};

/// A clock's count changes: entries for the session to write, or a resident engine's delta
/// already encoded for the wire.
pub(super) enum Swept {
    Entries(LdaDelta),
    Wire(WireDelta),
}

/// A resident engine's sweep: its delta encoded where it was made when the sink says how the
/// library would cut it into frames, else as entries.
pub(super) fn sweep_resident(
    dev: &mut dyn LdaResident,
    key: SweepKey,
    out: &mut dyn DeltaSink,
) -> Result<Swept, AppError> {
    if out.entries_blocks(WORD_TOPIC, &[])?.is_none() {
        return Ok(Swept::Entries(dev.sweep(key)?));
    }
    let mut cut = |keys: &[u64]| match out.entries_blocks(WORD_TOPIC, keys) {
        Ok(Some(cut)) => Ok(cut),
        Ok(None) => Err("the sink no longer cuts entries".to_string()),
        Err(e) => Err(e.to_string()),
    };
    Ok(Swept::Wire(dev.sweep_wire(key, &mut cut)?))
}

/// A sweep's (or the initial) count changes of `k` topics as entries, and the totals row.
pub(super) fn write_entries(
    delta: &LdaDelta,
    k: u64,
    out: &mut dyn DeltaSink,
) -> Result<(), AppError> {
    let (touched, at, values) = flat_entries(&delta.entries, k).map_err(|message| {
        AppError::from(ComputeError {
            engine: "lda",
            message,
        })
    })?;
    if !touched.is_empty() {
        out.entries(WORD_TOPIC, touched, at, values)?;
    }
    write_totals(&delta.totals, out)
}

/// A delta encoded where it was made: each frame block's payload as it is, then the totals row.
pub(super) fn write_wire(wire: WireDelta, out: &mut dyn DeltaSink) -> Result<(), AppError> {
    for b in wire.blocks {
        out.encoded(WORD_TOPIC, &wire.keys[b.rows], b.wire_id, b.payload)?;
    }
    write_totals(&wire.totals, out)
}

/// The totals' change, as the totals row (nothing when it does not change).
fn write_totals(totals: &[i32], out: &mut dyn DeltaSink) -> Result<(), AppError> {
    if totals.iter().any(|&c| c != 0) {
        let row = out.rows(TOTALS, &[0])?;
        row.iter_mut().zip(totals).for_each(|(r, &c)| *r = c as f32);
    }
    Ok(())
}
