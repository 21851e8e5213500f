//! What the session suites share.

use ps_apps::app::JobCommon;

/// The job settings of the suites: 2 workers, staleness 0, raw codecs.
pub fn job(workers: u32) -> JobCommon {
    JobCommon {
        workers,
        seed: 42,
        threads: 1,
        staleness: Some(0),
        push_codec: Default::default(),
        pull_codec: Default::default(),
    }
}

/// Largest `|a - b| / max(|b|, floor)` over two equal-length slices.
pub fn max_rel(a: &[f32], b: &[f32], floor: f32) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(floor))
        .fold(0.0, f32::max)
}
