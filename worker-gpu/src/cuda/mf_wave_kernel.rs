//! Which form of the MF wave kernel (`kernels/mf_sgd.cu`) the resident engine
//! ([`super::mf_resident::CudaMfResident`]) launches. Sessions use the default unless the
//! worker's environment names another in `PS_MF_WAVE_KERNEL` ([`MfWaveKernel::from_env`]), so
//! that a GPU run can time a whole job with each.

use std::str::FromStr;

/// How each warp of the wave kernel loads its ratings' rows (`kernels/mf_sgd.cu`). `NextRating`
/// loads the next rating's rows while the current one is computed (`mf_sgd_waves`); `Window2`
/// and `Window4` keep the rows of the next 2 or 4 ratings in flight (`mf_sgd_waves_w2`, `_w4`),
/// except for a rating that shares a row with one before it in the window, which loads after
/// that one's writes. All three run the same ratings in the same order with the same arithmetic,
/// so they give the same tables. The windows need more registers, so fewer warps fit on the
/// device ([`ps_apps::mf::MfResident::lanes`]). `NextRating` is the default until a GPU run shows which is
/// faster (gpu-bench times all three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MfWaveKernel {
    #[default]
    NextRating,
    Window2,
    Window4,
}

impl MfWaveKernel {
    /// Every kind, for benchmarks and conformance.
    pub const ALL: [MfWaveKernel; 3] = [
        MfWaveKernel::NextRating,
        MfWaveKernel::Window2,
        MfWaveKernel::Window4,
    ];

    /// The environment variable that picks the sessions' kernel.
    pub const ENV: &'static str = "PS_MF_WAVE_KERNEL";

    /// The kernel `PS_MF_WAVE_KERNEL` names (`None` where it is unset or empty), or an error
    /// that says which names there are.
    pub fn from_env() -> Result<Option<Self>, String> {
        match std::env::var(Self::ENV) {
            Ok(v) if !v.trim().is_empty() => v
                .parse()
                .map(Some)
                .map_err(|e| format!("{}={v:?}: {e}", Self::ENV)),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => Err(format!("{}: {e}", Self::ENV)),
        }
    }

    /// The resident engine's name with this kernel (the worker logs it).
    pub fn engine_name(self) -> &'static str {
        match self {
            MfWaveKernel::NextRating => "cuda-waves",
            MfWaveKernel::Window2 => "cuda-waves-w2",
            MfWaveKernel::Window4 => "cuda-waves-w4",
        }
    }

    /// A short name for tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            MfWaveKernel::NextRating => "next-rating",
            MfWaveKernel::Window2 => "window-2",
            MfWaveKernel::Window4 => "window-4",
        }
    }

    pub(crate) fn entry(self) -> &'static str {
        match self {
            MfWaveKernel::NextRating => "mf_sgd_waves",
            MfWaveKernel::Window2 => "mf_sgd_waves_w2",
            MfWaveKernel::Window4 => "mf_sgd_waves_w4",
        }
    }

    /// The driver call that launches it, for errors.
    pub(crate) fn launch(self) -> &'static str {
        match self {
            MfWaveKernel::NextRating => "cuLaunchKernel(mf_sgd_waves)",
            MfWaveKernel::Window2 => "cuLaunchKernel(mf_sgd_waves_w2)",
            MfWaveKernel::Window4 => "cuLaunchKernel(mf_sgd_waves_w4)",
        }
    }
}

impl FromStr for MfWaveKernel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "no MF wave kernel {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_ones_are_refused() {
        for k in MfWaveKernel::ALL {
            assert_eq!(k.name().parse::<MfWaveKernel>(), Ok(k));
            assert!(k.engine_name().starts_with("cuda-waves"));
        }
        assert_eq!(" window-4 ".parse(), Ok(MfWaveKernel::Window4));
        let e = "window-3".parse::<MfWaveKernel>().unwrap_err();
        assert!(
            e.contains("window-3") && e.contains("next-rating, window-2, window-4"),
            "{e}"
        );
    }
}
