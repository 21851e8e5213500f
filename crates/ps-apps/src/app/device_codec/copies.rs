//! What a device's top-k encoder copies across the bus, predicted on the host: the CPU oracles
//! of the resident engines count it as `worker-gpu`'s `DeviceTopK::push_encoded_view` copies
//! it, so that a job on `--device cpu-resident` reports the PCIe bytes a GPU would move.
//!
//! The device selects as the library does (the same sampled threshold, lowered the same way;
//! `ps_proto::codec::top_k`'s choice), so every copy follows from the block's values: a 4-byte
//! count per candidate pass (one more when a pass overflowed the candidate buffers, which then
//! grow, and the threshold when a pass found too few), then the chosen indices' measure (64
//! bytes: the device picked the k, with one block's sort up to [`TRIM_CAP`] candidates and a
//! radix select past it), their codes in the layout the host picks from it (whole words) and
//! the values' bytes; or, where the layout is dense, the chosen indices and values out (8 bytes
//! each) and the chosen indices and decoded values in (8 bytes each). An energy stage makes no
//! candidate pass: its count comes back ([`ENERGY_BYTES`]: the 5 words of the count's search,
//! `est`), then the rest as for a top-k of that count.

use ps_proto::codec::{self, ValueFormat};

use super::{dense_device_bytes, Keep};

/// Most candidates one block trims (`CODEC_TRIM_CAP` in `kernels/codec_topk.cu`); past it the
/// device's radix select takes them (`kernels/codec_select.cu`), with the same copies.
pub const TRIM_CAP: usize = 4096;

/// Bytes of the chosen indices' measure (`codec_index_plan`: 8 words of 8 bytes).
pub const MEASURE_BYTES: u64 = 64;

/// Bytes an energy count copies back: the 5 words of 8 bytes of its search (`est` in
/// `kernels/codec_energy.cu`), the count among them.
pub const ENERGY_BYTES: u64 = 40;

/// A top-k encoder, as far as its copies go: the candidate buffers' size, kept from clock to
/// clock (and from block to block, for an encoder that serves blocks of several sizes) as the
/// device keeps them.
#[derive(Debug, Clone)]
pub struct TopKCopies {
    n: usize,
    samples: Vec<u32>,
    capacity: usize,
}

impl TopKCopies {
    /// The encoder of a block of `n` values (its set-up copies nothing: the device makes the
    /// sample positions itself).
    pub fn new(n: usize) -> TopKCopies {
        let samples = if n > 0 {
            codec::sample_positions(n)
        } else {
            Vec::new()
        };
        TopKCopies {
            n,
            samples,
            capacity: 0,
        }
    }

    /// The bytes `(in, out)` one push copies, `values` the block's residual with the clock's
    /// delta added (what the device selects from), what `keep` says of it sent in `format`. A
    /// block of another size than the last has its sample positions made on the device (no
    /// copy).
    pub fn push(&mut self, values: &[f32], keep: Keep, format: ValueFormat) -> (u64, u64) {
        if values.len() != self.n {
            let capacity = self.capacity;
            *self = TopKCopies::new(values.len());
            self.capacity = capacity;
        }
        let n = self.n;
        let (k, mut out) = match keep {
            Keep::Count(k) => {
                let k = k.min(n);
                if k == 0 {
                    return (0, 0);
                }
                (k, self.candidates(values, k).1)
            }
            // The device counts where the values are and sends the count back; no candidate
            // pass (and nothing at all for an empty block).
            Keep::Energy(_) if n == 0 => return (0, 0),
            Keep::Energy(e) => (codec::k_of_energy(values, None, e), ENERGY_BYTES),
        };
        if k == 0 {
            return (0, out);
        }
        out += MEASURE_BYTES;
        let k64 = k as u64;
        let sel = codec::top_k(values, k);
        let layout = codec::index_layout(&codec::index_sizes(&sel), n, format);
        if layout.is_dense() {
            // The chosen indices and values come back, what they decode to goes in.
            return (8 * k64, out + 8 * k64);
        }
        out += 4 * layout.body_bytes.div_ceil(4);
        match format {
            ValueFormat::F32 => (0, out + 4 * k64),
            f => (0, out + dense_device_bytes(f, k).unwrap_or(4 * k64)),
        }
    }

    /// The device's candidate passes (`DeviceTopK::candidates`): how many candidates the last
    /// pass found, and the bytes its reads copied out.
    fn candidates(&mut self, values: &[f32], k: usize) -> (usize, u64) {
        let n = self.n;
        self.ensure(k + k / 2 + 64);
        let sampled = !self.samples.is_empty() && k < n;
        let mut above = sampled.then(|| codec::initial_above(n, k));
        let mut out = 0;
        loop {
            let t = above.map_or(0, |a| self.threshold(values, a));
            let count = values
                .iter()
                .filter(|v| v.to_bits() & 0x7fff_ffff >= t)
                .count();
            out += 4;
            if count > self.capacity {
                // The buffers grow and the pass runs again.
                self.ensure(count);
                out += 4;
            }
            if count >= k {
                return (count, out);
            }
            if above.is_some() {
                out += 4;
            }
            if t == 0 {
                return (count, out);
            }
            above = above.map(|a| a.saturating_mul(4));
        }
    }

    /// Room for `len` candidates, grown as `worker-gpu`'s device buffers grow (a quarter more
    /// than asked, never shrinking).
    fn ensure(&mut self, len: usize) {
        if self.capacity < len.max(1) {
            self.capacity = len.max(1).saturating_add(len / 4);
        }
    }

    /// `codec_topk_threshold`: the `above`-th largest magnitude bits among the samples (0, take
    /// everything, when `above` reaches their number).
    fn threshold(&self, values: &[f32], above: usize) -> u32 {
        let mut keys: Vec<u32> = self
            .samples
            .iter()
            .map(|&i| values[i as usize].to_bits() & 0x7fff_ffff)
            .collect();
        keys.sort_unstable();
        let s = keys.len();
        let a = above.clamp(1, u32::MAX as usize);
        if a >= s {
            0
        } else {
            keys[s - a]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn spread(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    }

    /// Bytes of the index codes of the top `k` of `v` (whole words), as the device copies
    /// them back.
    fn code_words(v: &[f32], k: usize, format: ValueFormat) -> u64 {
        let sel = codec::top_k(v, k);
        let layout = codec::index_layout(&codec::index_sizes(&sel), v.len(), format);
        assert!(!layout.is_dense());
        4 * layout.body_bytes.div_ceil(4)
    }

    /// The usual case: the first pass finds enough candidates (about 1.6% of 10,000 for a k of
    /// 1%), within the buffers, and the device trims: one count, the indices' measure, their
    /// codes and the values' bytes come back, nothing goes in. The codes (Rice gaps at 1%
    /// density, about 8 bits an index) are about a quarter of the indices.
    #[test]
    fn a_first_pass_that_finds_enough_is_a_count_then_the_index_codes_and_values() {
        let mut c = TopKCopies::new(10_000);
        let v = spread(10_000, 1);
        let codes = code_words(&v, 100, ValueFormat::Sign);
        assert!((80..=160).contains(&codes), "{codes}");
        for format in [ValueFormat::Sign, ValueFormat::Q4, ValueFormat::F16] {
            let values = dense_device_bytes(format, 100).unwrap();
            assert_eq!(
                c.push(&v, Keep::Count(100), format),
                (0, 4 + MEASURE_BYTES + codes + values),
                "{format:?}"
            );
        }
        assert_eq!(
            c.push(&v, Keep::Count(100), ValueFormat::F32),
            (0, 4 + MEASURE_BYTES + codes + 400)
        );
        assert_eq!(c.push(&v, Keep::Count(0), ValueFormat::Sign), (0, 0));
    }

    /// Mostly zeros: the sampled threshold is 0, every entry is a candidate, which overflows
    /// the buffers (a second count) and the one-block trim's cap: the device selects among them
    /// all the same, so only the measure, the index codes and the values' bytes come back. The
    /// grown buffers then hold them.
    #[test]
    fn too_many_candidates_for_one_block_are_still_selected_on_the_device() {
        let n = 10_000;
        let mut v = vec![0f32; n];
        v.iter_mut().step_by(200).for_each(|x| *x = 1.0);
        let mut c = TopKCopies::new(n);
        let values = dense_device_bytes(ValueFormat::Sign, 100).unwrap();
        let codes = code_words(&v, 100, ValueFormat::Sign);
        assert!(n > TRIM_CAP);
        assert_eq!(
            c.push(&v, Keep::Count(100), ValueFormat::Sign),
            (0, 4 + 4 + MEASURE_BYTES + codes + values)
        );
        assert_eq!(
            c.push(&v, Keep::Count(100), ValueFormat::Sign),
            (0, 4 + MEASURE_BYTES + codes + values)
        );
    }

    /// Blocks of several sizes through one encoder (MF's item blocks): each is counted as a
    /// block of its own size, the candidate buffers kept across them.
    #[test]
    fn blocks_of_several_sizes_share_the_buffers() {
        let (a, b) = (spread(10_000, 3), spread(2_000, 4));
        let mut one = TopKCopies::new(0);
        let first = one.push(&a, Keep::Count(100), ValueFormat::Q4);
        assert_eq!(
            first,
            TopKCopies::new(10_000).push(&a, Keep::Count(100), ValueFormat::Q4)
        );
        // The buffers (room for 100 + 50 + 64, a quarter more) hold the smaller block's too.
        let second = one.push(&b, Keep::Count(20), ValueFormat::Q4);
        let mut fresh = TopKCopies::new(2_000);
        fresh.push(&b, Keep::Count(100), ValueFormat::Q4);
        assert_eq!(second, fresh.push(&b, Keep::Count(20), ValueFormat::Q4));
    }

    /// A large fraction in a format with a zero: the layout is the whole block, so the chosen
    /// indices and values come back and what they decode to goes in.
    #[test]
    fn a_dense_layout_sends_the_values_back_and_the_decoded_in() {
        let n = 1000;
        let v = spread(n, 2);
        let mut c = TopKCopies::new(n);
        let dense = |k: usize| {
            let sel = codec::top_k(&v, k);
            codec::encode_selection_indices(ValueFormat::Q2, n, &sel, &mut Vec::new()).unwrap()
        };
        let k = (n / 2..n).find(|&k| dense(k)).expect("a dense layout");
        let (h2d, d2h) = c.push(&v, Keep::Count(k), ValueFormat::Q2);
        assert_eq!(h2d, 8 * k as u64);
        assert_eq!(d2h % 4, 0);
        assert!(d2h >= 4 + MEASURE_BYTES + 8 * k as u64, "{d2h}");
        // Sign lists its indices whatever their number: the device encodes it (at this
        // density, runs or Rice gaps of a few bits an index).
        let (h2d, d2h) = c.push(&v, Keep::Count(k), ValueFormat::Sign);
        assert_eq!(h2d, 0);
        let codes = code_words(&v, k, ValueFormat::Sign);
        let values = dense_device_bytes(ValueFormat::Sign, k).unwrap();
        assert!(d2h >= 4 + MEASURE_BYTES + codes + values, "{d2h}");
        assert!(codes < k as u64, "{codes} bytes of codes for {k} indices");
    }

    /// An energy stage: no candidate pass, the count and the radix state (40 bytes), then the
    /// copies of a top-k of that count; a block of zeros sends only the count.
    #[test]
    fn an_energy_stage_sends_its_count_then_what_a_top_k_of_it_sends() {
        let n = 10_000;
        let v = spread(n, 5);
        let k = codec::k_of_energy(&v, None, 0.4);
        assert!(k > 100 && k < n / 2, "{k}");
        let codes = code_words(&v, k, ValueFormat::Sign);
        let values = dense_device_bytes(ValueFormat::Sign, k).unwrap();
        let mut c = TopKCopies::new(n);
        assert_eq!(
            c.push(&v, Keep::Energy(0.4), ValueFormat::Sign),
            (0, ENERGY_BYTES + MEASURE_BYTES + codes + values)
        );
        assert_eq!(
            c.push(&vec![0.0; n], Keep::Energy(0.4), ValueFormat::Sign),
            (0, ENERGY_BYTES)
        );
    }

    #[test]
    fn an_empty_block_copies_nothing() {
        let mut c = TopKCopies::new(0);
        assert_eq!(c.push(&[], Keep::Energy(0.4), ValueFormat::Sign), (0, 0));
        assert_eq!(c.push(&[], Keep::Count(3), ValueFormat::Sign), (0, 0));
    }
}
