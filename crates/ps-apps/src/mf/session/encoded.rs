//! The resident path's pushes encoded by the engine itself (`device_codec`): when the worker
//! library plans the clock's item rows with a chain the engine runs (a dense lossy format:
//! `f16`, `bf16`, `q8`, `q4`, `q2`, `sign`; or one top-k or energy stage in any of them, as
//! `topk:0.15,warmup:1,sign` is once warmed up, or in f32, whose last clock hands the engine's
//! delta and what it holds back to the library as plain rows), the engine keeps the loaded
//! rows, runs the waves,
//! and hands back only the payloads of the rows' delta; its residual stays with it, row by row,
//! and shows in what it loads. Once the library has encoded a lossy delta itself (or
//! `PS_DEVICE_CODEC=off`), it keeps doing so: its residual would otherwise be sent beside the
//! engine's payloads. Each clock pushes, as the library would, the clock's rows and every row
//! it still holds something of, touched or not (their delta is zero): with an epoch split over
//! clocks (each pushing the items of its own ratings) those differ, and the engine says which
//! rows it holds after each push ([`crate::mf::MfResident::held_rows`], a bit a row).

use super::{ClockPlan, MfSession, Path, ITEMS};
use crate::app::device_codec::{block_k, device_chain, KeyedBlock};
use crate::app::DeltaSink;
use crate::error::AppError;
use crate::mf::resident::Traffic;

impl MfSession {
    /// Runs the clock's waves and pushes the delta as the engine encoded it, returning the
    /// training squared error and the clock's bus traffic; or `None`, having done nothing,
    /// where the library is to encode the plain delta.
    pub(super) fn engine_push(
        &mut self,
        p: &ClockPlan,
        out: &mut dyn DeltaSink,
    ) -> Result<Option<(f64, Traffic)>, AppError> {
        let hyper = self.settings.hyper;
        let lr = hyper.lr_at(self.key(p.clock).clock);
        let Path::Resident(r) = &mut self.path else {
            return Ok(None);
        };
        // An epoch split over clocks pushes again the rows held back from earlier clocks.
        let split = self.settings.clocks_per_epoch > 1;
        let keys = if split && !r.held.is_empty() {
            union_sorted(&p.touched, &r.held)
        } else {
            p.touched.clone()
        };
        let Some(plan) = out.push_plan(ITEMS, &keys)? else {
            return Ok(None);
        };
        let chain = device_chain(&plan.chain).filter(|&c| r.dev.encodes(c));
        let lossy = !plan.chain.is_lossless();
        let chain = match chain {
            Some(c) if self.encoder.engine_encodes(true, lossy) => c,
            None if self.engine_holds && !lossy => {
                // The last clock of a selection in f32 sends plain rows: the engine's delta and
                // what it holds back go to the library as such, which sends them as they are.
                r.dev.keep_before(&keys)?;
                let se = r.dev.run_waves(&p.waves, lr, hyper.reg)?;
                r.dev.delta_with_held(&keys, out.rows(ITEMS, &keys)?)?;
                r.held.clear();
                let now = r.dev.traffic();
                let t = now.since(&r.before);
                r.before = now;
                return Ok(Some((se, t)));
            }
            other => {
                if other.is_none() && self.engine_holds {
                    return Err(AppError::Settings(format!(
                        "the MF engine holds back part of its encoded pushes, but clock {}'s \
                         chain {} is not one it encodes",
                        p.clock, plan.chain
                    )));
                }
                self.encoder.engine_encodes(false, lossy);
                return Ok(None);
            }
        };
        r.dev.keep_before(&keys)?;
        let se = r.dev.run_waves(&p.waves, lr, hyper.reg)?;
        let w = self.layout.width();
        let blocks: Vec<KeyedBlock> = plan
            .blocks
            .iter()
            .map(|b| KeyedBlock {
                rows: b.rows.clone(),
                k: block_k(&plan.chain, b.rows.len() * w),
            })
            .collect();
        let mut payloads = Vec::with_capacity(blocks.len());
        r.dev.delta_encoded(&keys, chain, &blocks, &mut payloads)?;
        let id = plan.chain.wire_id();
        for (b, payload) in blocks.into_iter().zip(payloads) {
            out.encoded(ITEMS, &keys[b.rows], id, payload)?;
        }
        if split {
            r.held = r.dev.held_rows(&keys)?;
        }
        self.engine_holds = true;
        let now = r.dev.traffic();
        let t = now.since(&r.before);
        r.before = now;
        Ok(Some((se, t)))
    }

    /// Copies the cold ratings' item rows back from the engine: where it encodes its pushes,
    /// the host's copy of the item rows is not kept after the waves.
    pub(super) fn refresh_cold_items(&mut self) -> Result<(), AppError> {
        let Path::Resident(r) = &mut self.path else {
            return Ok(());
        };
        if !self.engine_holds || self.cold_items.is_empty() {
            return Ok(());
        }
        let w = self.layout.width();
        let mut rows = vec![0.0; self.cold_items.len() * w];
        r.dev.item_rows(&self.cold_items, &mut rows)?;
        for (&k, row) in self.cold_items.iter().zip(rows.chunks_exact(w)) {
            self.items[k as usize * w..(k as usize + 1) * w].copy_from_slice(row);
        }
        Ok(())
    }
}

/// The sorted union of two sorted, distinct key lists.
fn union_sorted(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_union_of_sorted_lists_is_sorted_and_distinct() {
        assert_eq!(
            super::union_sorted(&[1, 4, 9], &[2, 4, 10, 11]),
            [1, 2, 4, 9, 10, 11]
        );
        assert_eq!(super::union_sorted(&[], &[3]), [3]);
        assert_eq!(super::union_sorted(&[3], &[]), [3]);
    }
}
