//! A sweep on the device and its delta out: as entries (the packed image, or triples above
//! 65,536 topics, unpacked on the host), or encoded on the device as the wire's payloads
//! ([`super::super::lda_wire`]), so that PCIe carries the wire's bytes.

use std::sync::Arc;

use ps_apps::lda::packed::MAX_PACKED_TOPICS;
use ps_apps::lda::wire::{wire_delta, Cut, WireDelta};
use ps_apps::lda::{LdaDelta, SweepKey};

use super::super::lda::{launch_gibbs, narrow};
use super::super::GpuError;
use super::{not_set_up, CudaLdaResident};

impl CudaLdaResident {
    pub(super) fn try_sweep(&mut self, key: SweepKey) -> Result<LdaDelta, GpuError> {
        let s = self.shape()?;
        if !self.run_sweep(key)? {
            return Ok(LdaDelta::none(s.topics));
        }
        let entries = if s.topics as usize <= MAX_PACKED_TOPICS {
            self.packed_delta.run(
                &self.gpu,
                &mut self.bus,
                &self.dev.wt_delta,
                &self.host_words,
                s.topics,
                s.tokens,
            )?
        } else {
            self.compaction.run(
                &self.gpu,
                &mut self.bus,
                Some(&self.timer),
                &self.dev.wt_delta,
                (&self.words, narrow(s.words, "number of distinct words")?),
                s.topics,
                s.tokens,
            )?
        };
        Ok(LdaDelta {
            topics: s.topics,
            entries,
            totals: self.download_totals()?,
        })
    }

    pub(super) fn try_sweep_wire(
        &mut self,
        key: SweepKey,
        cut: &mut Cut<'_>,
    ) -> Result<WireDelta, GpuError> {
        let s = self.shape()?;
        let on_host = |delta: LdaDelta, cut: &mut Cut<'_>| {
            wire_delta(delta, cut).map_err(|e| GpuError::Input(format!("LDA: {e}")))
        };
        // Above 65,536 topics the delta does not pack: the host encodes its entries.
        if s.topics as usize > MAX_PACKED_TOPICS {
            let delta = self.try_sweep(key)?;
            return on_host(delta, cut);
        }
        if !self.run_sweep(key)? {
            return on_host(LdaDelta::none(s.topics), cut);
        }
        let shape = self.packed_delta.pack(
            &self.gpu,
            &mut self.bus,
            &self.dev.wt_delta,
            &self.host_words,
            s.topics,
            s.tokens,
        )?;
        let (keys, blocks) = self.wire.run(
            &self.gpu,
            &mut self.bus,
            self.packed_delta.image(),
            shape,
            &self.host_words,
            s.topics,
            cut,
        )?;
        Ok(WireDelta {
            topics: s.topics,
            keys,
            blocks,
            totals: self.download_totals()?,
        })
    }

    /// One sweep of every token with the uniforms of `key`, the move counts left on the device;
    /// false when there are no tokens (nothing ran).
    fn run_sweep(&mut self, key: SweepKey) -> Result<bool, GpuError> {
        let s = self.shape()?;
        let k = s.topics as usize;
        if s.tokens == 0 {
            return Ok(false);
        }
        let stream = Arc::clone(&self.gpu.compute);
        self.dev.wt_delta.zero(&stream, s.words * k)?;
        self.dev.totals_delta.zero(&stream, k)?;
        let (grid, block) = self.shape_for(s.docs, self.sweep_blocks_per_sm);
        self.start_timer()?;
        match &mut self.word {
            Some((word, Some(p))) => word.launch(&self.gpu, &mut self.dev, p, key)?,
            Some((_, None)) => return Err(not_set_up()),
            None => launch_gibbs(
                &stream,
                (&self.sweep_fn, grid, block),
                &mut self.dev,
                &mut self.scratch,
                (s.docs, s.topics),
                (s.alpha, s.beta, s.vbeta),
                key,
            )?,
        }
        self.stop_timer()?;
        Ok(true)
    }

    /// The sweep's change of the totals, copied back; settles the bus.
    fn download_totals(&mut self) -> Result<Vec<i32>, GpuError> {
        let k = self.shape()?.topics as usize;
        let stream = Arc::clone(&self.gpu.compute);
        self.bus.d2h(&stream, || {
            self.h_totals_delta
                .download(&stream, self.dev.totals_delta.get(), k)?;
            Ok(4 * k as u64)
        })?;
        let totals = self.h_totals_delta.host()?.to_vec();
        self.bus.settle()?;
        Ok(totals)
    }
}
