//! The host's last step of [`super::DeviceTopK::push`]'s selection: the `k` of the candidates
//! the device copied back.

/// The `k` candidates of largest magnitude (ties by lower index), as (indices ascending, their
/// values): the host's last step of the device selection. Candidates are any entries that
/// include the true top k (those at or above a threshold), so the result is
/// `ps_proto::codec::top_k`'s.
pub(crate) fn best_of_candidates(idx: &[u32], val: &[f32], k: usize) -> (Vec<u32>, Vec<f32>) {
    let mut keyed: Vec<(u64, f32)> = idx
        .iter()
        .zip(val)
        .map(|(&i, &v)| {
            let key = (u64::from(v.to_bits() & 0x7FFF_FFFF) << 32) | u64::from(u32::MAX - i);
            (key, v)
        })
        .collect();
    let k = k.min(keyed.len());
    if keyed.len() > k {
        // Keys are distinct (they hold the index): the k largest lie after position len - k.
        let pos = keyed.len() - k;
        keyed.select_nth_unstable_by_key(pos, |p| p.0);
        keyed.drain(..pos);
    }
    keyed.sort_unstable_by_key(|p| u32::MAX - p.0 as u32);
    keyed
        .into_iter()
        .map(|(key, v)| (u32::MAX - key as u32, v))
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::best_of_candidates;
    use ps_proto::codec::top_k;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Whatever superset of the top k the device hands back (every entry at or above some
    /// threshold below the k-th magnitude), the host's pick is the library's top k.
    #[test]
    fn the_host_pick_of_any_candidate_superset_is_the_librarys_top_k() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        for case in 0..200 {
            let n = rng.gen_range(1..3000);
            // Few distinct magnitudes on some cases, so that ties decide.
            let levels = if case % 3 == 0 { 7 } else { 1 << 20 };
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    let m = rng.gen_range(0..levels) as f32 / levels as f32;
                    if rng.gen_bool(0.5) {
                        -m
                    } else {
                        m
                    }
                })
                .collect();
            let k = rng.gen_range(0..=n);
            let want = top_k(&values, k);
            let kth = want
                .iter()
                .map(|&i| values[i as usize].abs())
                .fold(f32::INFINITY, f32::min);
            let t = if k == 0 {
                1.0
            } else {
                kth * rng.gen_range(0.0f32..=1.0)
            };
            let idx: Vec<u32> = (0..n as u32)
                .filter(|&i| values[i as usize].abs() >= t)
                .collect();
            let val: Vec<f32> = idx.iter().map(|&i| values[i as usize]).collect();
            let (got, got_val) = best_of_candidates(&idx, &val, k);
            assert_eq!(got, want, "case {case}: n {n} k {k}");
            let want_val: Vec<f32> = want.iter().map(|&i| values[i as usize]).collect();
            assert_eq!(got_val, want_val, "case {case}");
        }
    }
}
