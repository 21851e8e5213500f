//! Small helpers the apps share for their flags, facts and figures.

use crate::app::DeviceFigures;
use crate::error::AppError;
use std::path::Path;

/// A flag that must be a finite number `> 0`.
pub fn positive(flag: &str, v: f64) -> Result<(), AppError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(AppError::Settings(format!(
            "{flag} must be a positive number, got {v}"
        )))
    }
}

/// A flag that must be a finite number `>= 0`.
pub fn non_negative(flag: &str, v: f64) -> Result<(), AppError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(AppError::Settings(format!("{flag} must be >= 0, got {v}")))
    }
}

/// A flag that must lie in `lo..=hi`.
pub fn in_range<T: PartialOrd + std::fmt::Display>(
    flag: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), AppError> {
    if v >= lo && v <= hi {
        Ok(())
    } else {
        Err(AppError::Settings(format!(
            "{flag} must be in {lo}..={hi}, got {v}"
        )))
    }
}

/// A learning-rate decay: in `(0, 1]`.
pub fn decay(flag: &str, v: f64) -> Result<(), AppError> {
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        Err(AppError::Settings(format!(
            "{flag} must be in (0, 1], got {v}"
        )))
    }
}

/// A fraction strictly between 0 and 1.
pub fn fraction(flag: &str, v: f64) -> Result<(), AppError> {
    if v > 0.0 && v < 1.0 {
        Ok(())
    } else {
        Err(AppError::Settings(format!(
            "{flag} must be in (0, 1), got {v}"
        )))
    }
}

/// A path made absolute (workers may run elsewhere in the file system) and checked to exist.
pub fn absolute(path: Option<&Path>, what: &str) -> Result<Option<String>, AppError> {
    match path {
        Some(p) => Ok(Some(
            std::fs::canonicalize(p)
                .map_err(|e| AppError::Settings(format!("{what} {}: {e}", p.display())))?
                .display()
                .to_string(),
        )),
        None => Ok(None),
    }
}

/// The `data` fact of a summary: the file or directory the job read, or the built-in set.
pub fn data_fact(data: &Option<String>) -> serde_json::Value {
    data.clone()
        .map(Into::into)
        .unwrap_or_else(|| "builtin-synthetic".into())
}

/// An f32 as JSON through its decimal text, so 0.025 prints as 0.025 rather than its f32
/// widening.
pub fn decimal(x: f32) -> serde_json::Value {
    x.to_string().parse::<f64>().unwrap_or(x as f64).into()
}

/// A JSON number, or null.
pub fn num(v: Option<f64>) -> serde_json::Value {
    v.map(serde_json::Value::from)
        .unwrap_or(serde_json::Value::Null)
}

/// `a / b` when `b > 0`.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// FNV-1a over the bit patterns of the values: a fingerprint of a model for reproducibility
/// checks.
pub fn hash_bits(values: &[f32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for b in v.to_bits().to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Slice `i` of `k` near-equal slices of `items` (the slices cover it once, in order).
pub fn slice_of<T>(items: &[T], i: usize, k: usize) -> &[T] {
    let (n, k) = (items.len(), k.max(1));
    let i = i.min(k - 1);
    &items[n * i / k..n * (i + 1) / k]
}

/// A resident engine's bus traffic, copy time and device time in a job's summary: totals over
/// the job (`pcie_bytes_h2d`, `pcie_bytes_d2h`, `pcie_h2d_s`, `pcie_d2h_s`,
/// `device_compute_s`), what moved outside the clocks (`pcie_setup_bytes_h2d`: the total less
/// the clocks': the set-up, and an engine's final evaluation such as LDA's last rows), and per
/// clock (`pcie_bytes_h2d_per_clock`, `pcie_bytes_d2h_per_clock`,
/// `pcie_h2d_s_per_clock`, `pcie_d2h_s_per_clock`, and `device_compute_s_clocks` over all
/// clocks). `clocks` is the clocks' figures added up, over `clock_count` clocks. Nothing when
/// no byte moved (a host engine).
pub fn device_figures(
    out: &mut serde_json::Map<String, serde_json::Value>,
    total: &DeviceFigures,
    clocks: &DeviceFigures,
    clock_count: u64,
) {
    if total.pcie_h2d + total.pcie_d2h <= 0.0 {
        return;
    }
    let n = clock_count.max(1) as f64;
    let mut put = |name: &str, x: f64| {
        out.insert(name.into(), num(Some(x)));
    };
    put("pcie_bytes_h2d", total.pcie_h2d);
    put("pcie_bytes_d2h", total.pcie_d2h);
    put("pcie_setup_bytes_h2d", total.pcie_h2d - clocks.pcie_h2d);
    put("pcie_bytes_h2d_per_clock", clocks.pcie_h2d / n);
    put("pcie_bytes_d2h_per_clock", clocks.pcie_d2h / n);
    put("pcie_h2d_s", total.pcie_h2d_s);
    put("pcie_d2h_s", total.pcie_d2h_s);
    put("pcie_h2d_s_per_clock", clocks.pcie_h2d_s / n);
    put("pcie_d2h_s_per_clock", clocks.pcie_d2h_s / n);
    put("device_compute_s", total.device_s);
    put("device_compute_s_clocks", clocks.device_s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_order_once() {
        let order: Vec<usize> = (0..10).collect();
        let parts: Vec<&[usize]> = (0..3).map(|i| slice_of(&order, i, 3)).collect();
        assert_eq!(parts.concat(), order);
        assert!(parts.iter().all(|p| p.len() == 3 || p.len() == 4));
    }

    #[test]
    fn flag_checks_name_the_flag() {
        assert!(positive("--lr", 0.1).is_ok());
        let e = positive("--lr", -1.0).unwrap_err().to_string();
        assert!(e.contains("--lr"), "{e}");
        assert!(decay("--lr-decay", 1.0).is_ok());
        assert!(decay("--lr-decay", 0.0).is_err());
        assert!(fraction("--test-fraction", 1.0).is_err());
        assert!(in_range("--rank", 0u32, 1, 4096).is_err());
        assert!(non_negative("--reg", f64::NAN).is_err());
    }

    #[test]
    fn hash_is_of_the_bits() {
        assert_ne!(hash_bits(&[0.0]), hash_bits(&[-0.0]));
        assert_eq!(hash_bits(&[1.5, 2.0]), hash_bits(&[1.5, 2.0]));
    }

    #[test]
    fn device_figures_split_set_up_from_clocks() {
        let mut out = serde_json::Map::new();
        let zero = DeviceFigures::default();
        device_figures(&mut out, &zero, &zero, 1);
        assert!(out.is_empty(), "a host engine reports nothing");
        // Two clocks: (10 B in, 4 B out, 0.25 s in, 0.125 s out, 0.5 s of compute) and
        // (10, 6, 0.5, 0.125, 0.25); the set-up moved 100 B in, in 1 s.
        let figures = |pcie_h2d, pcie_d2h, pcie_h2d_s, pcie_d2h_s, device_s| DeviceFigures {
            pcie_h2d,
            pcie_d2h,
            pcie_h2d_s,
            pcie_d2h_s,
            device_s,
        };
        let total = figures(120.0, 10.0, 1.75, 0.25, 1.0);
        let clocks = figures(20.0, 10.0, 0.75, 0.25, 0.75);
        device_figures(&mut out, &total, &clocks, 2);
        let get = |k: &str| out[k].as_f64().unwrap();
        assert_eq!(get("pcie_bytes_h2d"), 120.0);
        assert_eq!(get("pcie_setup_bytes_h2d"), 100.0);
        assert_eq!(get("pcie_bytes_h2d_per_clock"), 10.0);
        assert_eq!(get("pcie_bytes_d2h_per_clock"), 5.0);
        assert_eq!(get("pcie_h2d_s"), 1.75);
        assert_eq!(get("pcie_h2d_s_per_clock"), 0.375);
        assert_eq!(get("pcie_d2h_s_per_clock"), 0.125);
        assert_eq!(get("device_compute_s"), 1.0);
        assert_eq!(get("device_compute_s_clocks"), 0.75);
    }
}
