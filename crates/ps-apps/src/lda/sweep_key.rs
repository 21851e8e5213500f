//! [`SweepKey`]: which sweep a worker runs, and the one uniform per token
//! that every LDA engine draws in it, from the counter-based Philox
//! generator ([`crate::philox`]) so that the CUDA kernel can draw the very
//! same numbers on the device.

use serde::{Deserialize, Serialize};

use crate::philox;

/// Identifies one worker sweep, and with it the sweep's uniforms.
///
/// # The uniforms of a sweep
/// Every engine ([`CpuLda`](super::CpuLda), [`SparseLda`](super::SparseLda),
/// the CUDA engine in worker-gpu) draws exactly one uniform per token. The
/// uniform of the token at position `t` of
/// [`LdaWorkerState::tokens`](super::LdaWorkerState::tokens) (documents are
/// contiguous and in order, so `t` is also the token's rank in sweep order)
/// is [`SweepKey::uniform`]`(t)`, the Philox-4x32-10 uniform
/// ([`crate::philox::uniform`])
///
/// ```text
/// philox::uniform(seed, stream = worker, index = (clock << 32) + t)
/// ```
///
/// as an `f64` (exact: a multiple of 2^-24 in [0, 1 - 2^-24]). The key is
/// the job seed; the worker picks the Philox stream; the clock picks a
/// disjoint range of 2^32 indices within it, so no two `(worker, clock, t)`
/// with `t < 2^32` share a uniform (a worker holds at most
/// [`MAX_WORKER_TOKENS`](super::MAX_WORKER_TOKENS) = 2^30 tokens). Being
/// counter-based, the uniforms need no state and no order:
/// `kernels/lda_gibbs.cu` computes the same bits on the device from
/// `(seed, stream, first index + t)` (`philox.cuh`), so the host never
/// ships uniforms and the CPU oracle and the sequential CUDA engine replay
/// the same chain.
///
/// The uniforms lie on a grid of 2^24 points, so the inverse-CDF draw gives
/// each topic its conditional probability up to an error below 2^-24 (it
/// matters only for topics whose share is of that order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepKey {
    /// Job-wide seed (the Philox key).
    pub seed: u64,
    /// Global worker index (the Philox stream).
    pub worker: u32,
    /// Clock number (sweeps run on clocks `>= 1`; the high word of the
    /// Philox index).
    pub clock: u32,
}

impl SweepKey {
    /// The Philox stream of this sweep's uniforms: the worker index.
    pub fn philox_stream(&self) -> u32 {
        self.worker
    }

    /// The Philox index of the uniform of token `t`: `(clock << 32) + t`
    /// (wrapping; distinct across clocks for `t < 2^32`).
    pub fn philox_index(&self, t: u64) -> u64 {
        (u64::from(self.clock) << 32).wrapping_add(t)
    }

    /// The uniform in [0, 1) of the token at position `t` of the worker's
    /// state in this sweep (see the type's documentation): the Philox `f32`
    /// uniform, converted exactly to `f64`.
    pub fn uniform(&self, t: u64) -> f64 {
        f64::from(philox::uniform(
            self.seed,
            self.philox_stream(),
            self.philox_index(t),
        ))
    }

    /// A reader of this sweep's uniforms that computes each Philox block
    /// once while tokens are visited in order (what the engines use).
    pub fn uniforms(&self) -> SweepUniforms {
        SweepUniforms {
            key: *self,
            block: None,
            words: [0; 4],
        }
    }
}

/// The uniforms of one sweep ([`SweepKey::uniform`]), caching the last
/// Philox block: `get(t)` equals `key.uniform(t)` for any `t`, in any
/// order, and costs one Philox evaluation per four consecutive tokens.
#[derive(Debug, Clone)]
pub struct SweepUniforms {
    key: SweepKey,
    block: Option<u64>,
    words: [u32; 4],
}

impl SweepUniforms {
    /// The uniform of the token at position `t`: `key.uniform(t)`.
    #[inline]
    pub fn get(&mut self, t: u64) -> f64 {
        let index = self.key.philox_index(t);
        let b = index / 4;
        if self.block != Some(b) {
            self.words = philox::block(self.key.seed, self.key.philox_stream(), b);
            self.block = Some(b);
        }
        f64::from(philox::unit_f32(self.words[(index % 4) as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mapping of [`SweepKey`]'s documentation, spelled out on the raw
    /// Philox function: key = seed (low word first), counter = `[block low,
    /// block high, worker, 0]` with `block = ((clock << 32) + t) / 4`, word
    /// `((clock << 32) + t) % 4`, top 24 bits times 2^-24.
    fn by_hand(seed: u64, worker: u32, clock: u32, t: u64) -> f64 {
        let index = (u64::from(clock) << 32) + t;
        let b = index / 4;
        let words = philox::philox4x32_10(
            [b as u32, (b >> 32) as u32, worker, 0],
            [seed as u32, (seed >> 32) as u32],
        );
        f64::from(words[(index % 4) as usize] >> 8) / 16_777_216.0
    }

    #[test]
    fn sweep_uniforms_are_the_documented_philox_uniforms() {
        let cases = [
            (0u64, 0u32, 1u32, 0u64),
            (42, 1, 1, 3),
            (42, 1, 2, 3),
            (0x0123_4567_89ab_cdef, 7, 30, 12_345),
            (u64::MAX, u32::MAX, u32::MAX, (1 << 30) - 1),
        ];
        for (seed, worker, clock, t) in cases {
            let key = SweepKey {
                seed,
                worker,
                clock,
            };
            assert_eq!(key.philox_stream(), worker);
            assert_eq!(key.philox_index(t), (u64::from(clock) << 32) | t);
            let u = key.uniform(t);
            let p = philox::uniform(seed, worker, (u64::from(clock) << 32) | t);
            assert_eq!(u.to_bits(), f64::from(p).to_bits(), "{key:?} token {t}");
            assert_eq!(u.to_bits(), by_hand(seed, worker, clock, t).to_bits());
            assert!((0.0..1.0).contains(&u));
        }
    }

    /// Pinned values (the top 24 bits of the uniforms of tokens 0..6 of
    /// `(seed 42, worker 1, clock 3)`, computed independently with a
    /// Python transcription of Random123's Philox-4x32-10): a change of the
    /// mapping or of Philox changes every LDA chain, and must be deliberate.
    #[test]
    fn sweep_uniforms_pinned() {
        let key = SweepKey {
            seed: 42,
            worker: 1,
            clock: 3,
        };
        let got: Vec<u32> = (0..6u64)
            .map(|t| (key.uniform(t) * 16_777_216.0) as u32)
            .collect();
        assert_eq!(
            got,
            [15_259_219, 9_697_746, 8_862_109, 9_267_987, 2_321_830, 12_528_137]
        );
    }

    #[test]
    fn cached_reader_equals_single_draws_in_any_order() {
        let key = SweepKey {
            seed: 9,
            worker: 2,
            clock: 5,
        };
        let mut r = key.uniforms();
        for t in [0u64, 1, 2, 3, 4, 9, 8, 7, 1, 0, 1 << 29, (1 << 32) - 1] {
            assert_eq!(r.get(t).to_bits(), key.uniform(t).to_bits(), "token {t}");
        }
    }

    #[test]
    fn clocks_and_workers_draw_different_uniforms() {
        let key = |worker, clock| SweepKey {
            seed: 5,
            worker,
            clock,
        };
        let draws = |k: SweepKey| (0..64u64).map(|t| k.uniform(t)).collect::<Vec<_>>();
        let a = draws(key(0, 1));
        assert_ne!(a, draws(key(0, 2)));
        assert_ne!(a, draws(key(1, 1)));
        assert_ne!(
            a,
            draws(SweepKey {
                seed: 6,
                ..key(0, 1)
            })
        );
        // Clock c's indices end where clock c + 1's begin, never overlapping.
        assert_eq!(
            key(0, 1).philox_index((1 << 32) - 1) + 1,
            key(0, 2).philox_index(0)
        );
    }

    /// `CpuLda::sweep` consumes `key.uniform(i)` for token `i`: replaying
    /// the sweep token by token through `sample_token` with those uniforms
    /// (and applying each move) gives the same chain, bit for bit.
    #[test]
    fn the_oracle_sweep_draws_token_i_with_uniform_i() {
        use crate::lda::{CpuLda, LdaCompute, LdaHyper, LdaWorkerState};
        let hyper = LdaHyper {
            topics: 7,
            alpha: 0.3,
            beta: 0.05,
        };
        let docs: Vec<Vec<u32>> = (0..12u32)
            .map(|d| (0..(d * 5) % 23).map(|j| (d * 7 + j * 3) % 19).collect())
            .collect();
        let (state0, _) = LdaWorkerState::init(&docs, 19, &hyper, 11, 4).unwrap();
        let k = 7;
        // A stale copy: own counts plus a little noise, some negative.
        let wt0: Vec<f32> = state0
            .local_word_topic()
            .iter()
            .enumerate()
            .map(|(i, &c)| c as f32 + ((i * 5) % 7) as f32 - 2.0)
            .collect();
        let tot0: Vec<f32> = (0..k).map(|t| 40.0 + t as f32).collect();
        let key = SweepKey {
            seed: 123,
            worker: 4,
            clock: 2,
        };
        let (mut s1, mut w1, mut t1) = (state0.clone(), wt0.clone(), tot0.clone());
        CpuLda::new()
            .sweep(&mut s1, &mut w1, &mut t1, &hyper, key)
            .unwrap();
        let (mut s2, mut w2, mut t2) = (state0.clone(), wt0, tot0);
        let mut oracle = CpuLda::new();
        let mut moved = 0;
        for d in 0..s2.num_docs() {
            for i in s2.doc_offsets[d]..s2.doc_offsets[d + 1] {
                let pos = i - s2.doc_offsets[d];
                let u = key.uniform(i as u64);
                let new = oracle
                    .sample_token(&s2, &w2, &t2, &hyper, d, pos, u)
                    .unwrap() as usize;
                let (old, w) = (s2.z[i] as usize, s2.tokens[i] as usize);
                moved += usize::from(new != old);
                s2.doc_topic[d * k + old] -= 1;
                s2.doc_topic[d * k + new] += 1;
                w2[w * k + old] -= 1.0;
                w2[w * k + new] += 1.0;
                t2[old] -= 1.0;
                t2[new] += 1.0;
                s2.z[i] = new as u32;
            }
        }
        assert!(moved > 0, "no token moved");
        assert_eq!(s1, s2);
        assert_eq!(w1, w2);
        assert_eq!(t1, t2);
    }
}
