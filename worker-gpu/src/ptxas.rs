//! Reading the resource usage that `ptxas -v` reports for each function it assembles.
//!
//! ptxas (CUDA 12) prints, per function:
//!
//! ```text
//! ptxas info    : Compiling entry function 'mf_sgd' for 'sm_90'
//! ptxas info    : Function properties for mf_sgd
//!     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
//! ptxas info    : Used 40 registers, used 0 barriers, 8320 bytes smem, 400 bytes cmem[0]
//! ```
//!
//! (fields that are zero may be left out of the `Used` line). Non-inlined device functions get a
//! `Function properties` block without `Compiling entry function`; they are reported too, with
//! `entry == false`, because their spills cost as much as an entry's.

/// What ptxas reports for one function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Function name (the mangled name for a non-`extern "C"` function).
    pub function: String,
    /// Whether it is a kernel entry point (`.entry`), rather than a device function.
    pub entry: bool,
    /// Registers per thread.
    pub registers: u32,
    /// Static shared memory per block, in bytes.
    pub smem_bytes: u64,
    /// Stack frame per thread, in bytes.
    pub stack_bytes: u64,
    /// Bytes stored to local memory by register spills, per thread.
    pub spill_stores: u64,
    /// Bytes loaded from local memory by register spills, per thread.
    pub spill_loads: u64,
}

impl Usage {
    /// Whether ptxas had to spill registers to local memory.
    pub fn spills(&self) -> bool {
        self.spill_stores > 0 || self.spill_loads > 0
    }
}

/// The number right before `suffix` in `line` (e.g. `"40"` in `"Used 40 registers"`).
fn number_before(line: &str, suffix: &str) -> Option<u64> {
    let at = line.find(suffix)?;
    let head = line[..at].trim_end();
    let start = head
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    head[start..].parse().ok()
}

fn quoted(s: &str) -> Option<&str> {
    let a = s.find('\'')?;
    let b = s[a + 1..].find('\'')?;
    Some(&s[a + 1..a + 1 + b])
}

/// Parses the `-v` output of one ptxas run (stdout and stderr together), in order of appearance.
pub fn parse(output: &str) -> Vec<Usage> {
    let mut out: Vec<Usage> = Vec::new();
    // Index in `out` of the function the next property / `Used` lines belong to.
    let mut current: Option<usize> = None;
    let find_or_add = |out: &mut Vec<Usage>, name: &str, entry: bool| -> usize {
        if let Some(i) = out.iter().position(|u| u.function == name) {
            out[i].entry |= entry;
            i
        } else {
            out.push(Usage {
                function: name.to_string(),
                entry,
                ..Usage::default()
            });
            out.len() - 1
        }
    };
    for line in output.lines() {
        let body = line.split_once(" : ").map_or(line, |(_, b)| b).trim();
        if let Some(rest) = body.strip_prefix("Compiling entry function") {
            if let Some(name) = quoted(rest) {
                current = Some(find_or_add(&mut out, name, true));
            }
        } else if let Some(rest) = body.strip_prefix("Function properties for") {
            let name = rest.trim();
            if !name.is_empty() {
                current = Some(find_or_add(&mut out, name, false));
            }
        } else if body.contains("bytes stack frame") {
            if let Some(i) = current {
                let u = &mut out[i];
                u.stack_bytes = number_before(body, "bytes stack frame").unwrap_or(0);
                u.spill_stores = number_before(body, "bytes spill stores").unwrap_or(0);
                u.spill_loads = number_before(body, "bytes spill loads").unwrap_or(0);
            }
        } else if body.starts_with("Used ") && body.contains("registers") {
            if let Some(i) = current {
                let u = &mut out[i];
                u.registers = number_before(body, "registers").unwrap_or(0) as u32;
                u.smem_bytes = number_before(body, "bytes smem").unwrap_or(0);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'codec_topk_threshold' for 'sm_90'
ptxas info    : Function properties for codec_topk_threshold
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 18 registers, used 1 barriers, 16384 bytes smem
ptxas info    : Compile time = 3.900 ms
ptxas info    : Function properties for _Z6helperPf
    24 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Compiling entry function 'mlp_sgemm' for 'sm_90'
ptxas info    : Function properties for mlp_sgemm
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 80 registers, 8320 bytes smem, 400 bytes cmem[0]
";

    #[test]
    fn parses_entries_and_device_functions() {
        let u = parse(SAMPLE);
        assert_eq!(u.len(), 3);
        assert_eq!(
            u[0],
            Usage {
                function: "codec_topk_threshold".into(),
                entry: true,
                registers: 18,
                smem_bytes: 16384,
                stack_bytes: 0,
                spill_stores: 0,
                spill_loads: 0,
            }
        );
        assert_eq!(u[1].function, "_Z6helperPf");
        assert!(!u[1].entry);
        assert_eq!(
            (u[1].stack_bytes, u[1].spill_stores, u[1].spill_loads),
            (24, 8, 12)
        );
        assert!(u[1].spills() && !u[0].spills());
        assert_eq!((u[2].registers, u[2].smem_bytes), (80, 8320));
    }

    #[test]
    fn tolerates_noise() {
        assert!(parse("").is_empty());
        assert!(parse("ptxas fatal   : Unresolved extern function 'x'\n").is_empty());
        assert_eq!(number_before("Used 7 registers", "registers"), Some(7));
        assert_eq!(number_before("registers", "registers"), None);
    }
}
