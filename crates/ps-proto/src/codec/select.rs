//! Selection stages: top-k by magnitude and the "significantly modified" filter.
//!
//! Top-k order: entries are ranked by magnitude `|v|`, larger first; entries of equal magnitude by
//! index, lower first. So `top_k` keeps exactly the `k` largest magnitudes and, among entries tied
//! with the k-th magnitude, the ones with the lowest indices. `+0.0` and `-0.0` tie. NaN ranks
//! above every number, infinities included (a NaN is sent, never hidden in a residual): the rank
//! key is the f32 bit pattern without its sign bit, which orders every non-NaN magnitude exactly
//! and puts NaNs above +inf (NaNs among themselves by payload bits, then index).
//!
//! The threshold is found by sampling: a few thousand magnitudes at pseudo-random positions
//! (fixed seed, so the work done is a pure function of the input), sorted; the sample quantile a
//! little above `k / n` is the threshold; one pass collects every entry at or above it; an exact
//! selection (`select_nth_unstable`) among those candidates trims to exactly `k`. If the pass
//! finds fewer than `k` candidates, the threshold is lowered and the pass repeated (ultimately
//! down to 0, which takes every entry), so the result is always exact; the sample only sets the
//! speed.

/// Sample size for the threshold estimate.
pub const SAMPLE: usize = 4096;
/// Blocks below this size are selected exactly without sampling.
pub const EXACT_BELOW: usize = 1 << 15;

/// Rank key of an entry: magnitude bits high, inverted index low, so a larger key ranks higher.
#[inline(always)]
fn rank_key(v: f32, i: usize) -> u64 {
    ((mag(v) as u64) << 32) | (u32::MAX - i as u32) as u64
}

#[inline(always)]
fn mag(v: f32) -> u32 {
    v.to_bits() & 0x7FFF_FFFF
}

#[inline(always)]
fn key_index(key: u64) -> u32 {
    u32::MAX - key as u32
}

/// Number of entries a top-k fraction keeps of a block of `n`: `ceil(fraction * n)`, at most `n`.
pub fn k_of_fraction(fraction: f32, n: usize) -> usize {
    let k = (fraction as f64 * n as f64).ceil();
    if k >= n as f64 {
        n
    } else if k > 0.0 {
        k as usize
    } else {
        0
    }
}

/// Indices (ascending) of the `k` entries of largest magnitude, ties by lower index; see the
/// module docs. `values.len()` must fit in u32 indices (`<= 2^32`).
pub fn top_k(values: &[f32], k: usize) -> Vec<u32> {
    let n = values.len();
    debug_assert!(n as u64 <= 1 << 32);
    if k == 0 {
        return Vec::new();
    }
    if k >= n {
        return (0..n as u64).map(|i| i as u32).collect();
    }
    if n < EXACT_BELOW {
        let cands: Vec<u64> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| rank_key(v, i))
            .collect();
        return finish(cands, k);
    }
    sampled(values, k, initial_above(n, k))
}

/// Indices (ascending) of every entry of the `k` rows (of `width` entries) with the largest L2
/// norm, ranked as [`top_k`] ranks magnitudes (a row with a NaN first). With `subset`, only its
/// entries count towards a norm and only they are returned.
pub(crate) fn top_rows(values: &[f32], width: usize, k: usize, subset: Option<&[u32]>) -> Vec<u32> {
    let rows = values.len() / width;
    let mut sq = vec![0f64; rows];
    let mut add = |i: usize| sq[i / width] += f64::from(values[i]) * f64::from(values[i]);
    match subset {
        Some(s) => s.iter().for_each(|&i| add(i as usize)),
        None => (0..rows * width).for_each(add),
    }
    let norms: Vec<f32> = sq.iter().map(|s| s.sqrt() as f32).collect();
    let chosen = top_k(&norms, k);
    match subset {
        Some(s) => s
            .iter()
            .copied()
            .filter(|&i| chosen.binary_search(&(i / width as u32)).is_ok())
            .collect(),
        None => chosen
            .iter()
            .flat_map(|&r| (r as usize * width..(r as usize + 1) * width).map(|i| i as u32))
            .collect(),
    }
}

/// How many sample entries must lie at or above the first threshold for `k` of `n`: about three
/// standard deviations above the expected count, plus 4. (The GPU selection starts the same way.)
pub fn initial_above(n: usize, k: usize) -> usize {
    let p = k as f64 / n as f64;
    let sigma = (p * (1.0 - p) / SAMPLE as f64).sqrt();
    ((p + 3.0 * sigma) * SAMPLE as f64).ceil() as usize + 4
}

/// The [`SAMPLE`] positions sampled in a block of `n` entries: splitmix64 from a fixed seed, each
/// mapped to `[0, n)` by a 64 × 64 → 128-bit product. (The GPU selection samples the same ones.)
pub fn sample_positions(n: usize) -> Vec<u32> {
    let n = n as u128;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..SAMPLE)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z as u128 * n) >> 64) as u32
        })
        .collect()
}

/// Sampled selection starting with the threshold `above` entries from the top of the sample.
fn sampled(values: &[f32], k: usize, mut above: usize) -> Vec<u32> {
    let sample = sample_magnitudes(values);
    let s = sample.len();
    loop {
        let t = if above >= s { 0 } else { sample[s - above] };
        let cands = collect_at_least(values, t, k + k / 2 + 64);
        if cands.len() >= k || t == 0 {
            return finish(cands, k);
        }
        above = above.saturating_mul(4);
    }
}

/// Indices (ascending) among `subset` (ascending) of the `k` entries of largest magnitude.
pub(crate) fn top_k_subset(values: &[f32], subset: &[u32], k: usize) -> Vec<u32> {
    if k >= subset.len() {
        return subset.to_vec();
    }
    let cands: Vec<u64> = subset
        .iter()
        .map(|&i| rank_key(values[i as usize], i as usize))
        .collect();
    finish(cands, k)
}

/// The `k` largest keys of `cands` (ascending index order, `cands.len() >= k`), as indices in
/// the same order.
fn finish(cands: Vec<u64>, k: usize) -> Vec<u32> {
    debug_assert!(cands.len() >= k);
    if k == 0 {
        return Vec::new();
    }
    if cands.len() == k {
        return cands.into_iter().map(key_index).collect();
    }
    let mut scratch = cands.clone();
    let pos = scratch.len() - k;
    let (_, kth, _) = scratch.select_nth_unstable(pos);
    let kth = *kth;
    // Keys are distinct (they contain the index), so exactly k are >= the k-th largest.
    let mut out = Vec::with_capacity(k);
    out.extend(cands.iter().filter(|&&c| c >= kth).map(|&c| key_index(c)));
    debug_assert_eq!(out.len(), k);
    out
}

/// Sorted magnitudes at the [`sample_positions`].
fn sample_magnitudes(values: &[f32]) -> Vec<u32> {
    let mut sample: Vec<u32> = sample_positions(values.len())
        .into_iter()
        .map(|i| mag(values[i as usize]))
        .collect();
    sample.sort_unstable();
    sample
}

/// Rank keys of every entry with magnitude >= t, in index order.
fn collect_at_least(values: &[f32], t: u32, capacity: usize) -> Vec<u64> {
    const BLOCK: usize = 16;
    let mut out = Vec::with_capacity(capacity);
    let mut base = 0;
    for block in values.chunks(BLOCK) {
        // Branch-free test of the whole block first: most blocks have no candidate.
        let any = block.iter().fold(false, |a, &v| a | (mag(v) >= t));
        if any {
            for (j, &v) in block.iter().enumerate() {
                if mag(v) >= t {
                    out.push(rank_key(v, base + j));
                }
            }
        }
        base += BLOCK;
    }
    out
}

/// Indices (ascending) of entries that are significantly modified: `delta != 0` and
/// `!(|delta| < rel * |current|)`. Zero deltas are never kept; NaN in either slice keeps the
/// entry (a comparison with NaN is false).
pub(crate) fn filter(
    values: &[f32],
    current: &[f32],
    rel: f32,
    subset: Option<&[u32]>,
) -> Vec<u32> {
    #[inline(always)]
    fn keep(v: f32, c: f32, rel: f32) -> bool {
        // Written so that a NaN on either side keeps the entry (the comparison is false).
        let insignificant = v.abs() < rel * c.abs();
        v != 0.0 && !insignificant
    }
    match subset {
        Some(s) => s
            .iter()
            .copied()
            .filter(|&i| keep(values[i as usize], current[i as usize], rel))
            .collect(),
        None => {
            // Branch-free compaction through a small buffer: the kept fraction is often a few
            // percent to tens of percent, where a branch per entry mispredicts a lot.
            const BLOCK: usize = 1024;
            let mut out = Vec::new();
            let mut buf = [0u32; BLOCK];
            for (b, (vs, cs)) in values.chunks(BLOCK).zip(current.chunks(BLOCK)).enumerate() {
                let base = (b * BLOCK) as u32;
                let mut c = 0;
                for (j, (&v, &cur)) in vs.iter().zip(cs).enumerate() {
                    buf[c] = base + j as u32;
                    c += keep(v, cur, rel) as usize;
                }
                out.extend_from_slice(&buf[..c]);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: full sort by (magnitude desc, index asc).
    pub(crate) fn reference(values: &[f32], k: usize) -> Vec<u32> {
        let mut idx: Vec<u32> = (0..values.len() as u32).collect();
        idx.sort_by_key(|&i| std::cmp::Reverse(rank_key(values[i as usize], i as usize)));
        idx.truncate(k);
        idx.sort_unstable();
        idx
    }

    fn lcg(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    #[test]
    fn large_blocks_match_a_full_sort() {
        for (n, k) in [
            (100_000, 1000),
            (70_000, 1),
            (50_000, 49_999),
            (200_000, 20_000),
        ] {
            let v = lcg(n as u64, n);
            assert_eq!(top_k(&v, k), reference(&v, k), "n {n} k {k}");
        }
    }

    #[test]
    fn adversarial_distribution_still_exact() {
        // Almost all entries zero, a few huge ones the sample misses: the threshold must drop.
        let n = 1 << 17;
        let mut v = vec![0f32; n];
        for i in (0..n).step_by(4099) {
            v[i] = 1.0 + i as f32;
        }
        for k in [1, 10, 32, 33, 100, 5000] {
            assert_eq!(top_k(&v, k), reference(&v, k), "k {k}");
        }
        // Many ties at the threshold.
        let w: Vec<f32> = (0..n)
            .map(|i| ((i % 3) as f32) * if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        for k in [1, 1000, n / 3, n / 2] {
            assert_eq!(top_k(&w, k), reference(&w, k), "k {k}");
        }
    }

    #[test]
    fn too_high_a_threshold_is_lowered() {
        let v = lcg(9, 100_000);
        for k in [1, 100, 5000, 99_999] {
            // Start at the sample maximum: too few candidates, the pass must be repeated.
            assert_eq!(sampled(&v, k, 1), reference(&v, k), "k {k}");
        }
    }

    #[test]
    fn fraction_rounds_up() {
        assert_eq!(k_of_fraction(0.01, 10), 1);
        assert_eq!(k_of_fraction(0.01, 100), 1);
        assert_eq!(k_of_fraction(0.01, 101), 2);
        assert_eq!(k_of_fraction(1.0, 7), 7);
        assert_eq!(k_of_fraction(0.5, 0), 0);
    }

    #[test]
    fn filter_rules() {
        let v = [0.0, -0.0, 0.5, 0.05, f32::NAN, 1.0, 0.2];
        let c = [1.0, 0.0, 1.0, 10.0, 1.0, f32::NAN, 0.0];
        assert_eq!(filter(&v, &c, 0.1, None), vec![2, 4, 5, 6]);
        assert_eq!(filter(&v, &c, 0.1, Some(&[0, 3, 4])), vec![4]);
        assert_eq!(filter(&v, &c, 0.0, None), vec![2, 3, 4, 5, 6]);
    }
}
