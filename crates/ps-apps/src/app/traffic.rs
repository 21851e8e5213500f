//! What a resident engine (one that keeps a worker's state on its device for the whole job)
//! moved over the host-device bus, the time those copies took, and its device's busy time:
//! shared by the resident engines and their sessions' figures.

use serde::{Deserialize, Serialize};

/// What crossed between the host and the engine's device so far, and the device's busy time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    pub h2d_bytes: u64,
    pub d2h_bytes: u64,
    /// Seconds the copies host to device took, timed on the device where it can.
    pub h2d_s: f64,
    /// Seconds the copies device to host took, timed on the device where it can.
    pub d2h_s: f64,
    /// Seconds of device compute (kernels), measured on the device where it can.
    pub compute_s: f64,
}

impl Traffic {
    /// Runs `f`, adding its time to `compute_s`: how a CPU oracle of a resident engine counts
    /// the work a device engine does on its device.
    pub fn timed<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let out = f();
        self.compute_s += started.elapsed().as_secs_f64();
        out
    }

    /// `self - before`, field by field.
    pub fn since(&self, before: &Traffic) -> Traffic {
        Traffic {
            h2d_bytes: self.h2d_bytes - before.h2d_bytes,
            d2h_bytes: self.d2h_bytes - before.d2h_bytes,
            h2d_s: self.h2d_s - before.h2d_s,
            d2h_s: self.d2h_s - before.d2h_s,
            compute_s: self.compute_s - before.compute_s,
        }
    }
}

/// A resident engine's [`Traffic`] as app figures, of a clock or of the whole job (set-up
/// included): every app's figures struct flattens it in, so the names are the same in all of
/// them and add up over workers like the others. Zero on the host path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceFigures {
    /// Bytes host to device.
    pub pcie_h2d: f64,
    /// Bytes device to host.
    pub pcie_d2h: f64,
    /// Seconds of the copies host to device.
    pub pcie_h2d_s: f64,
    /// Seconds of the copies device to host.
    pub pcie_d2h_s: f64,
    /// Seconds of device compute.
    pub device_s: f64,
}

impl From<Traffic> for DeviceFigures {
    fn from(t: Traffic) -> DeviceFigures {
        DeviceFigures {
            pcie_h2d: t.h2d_bytes as f64,
            pcie_d2h: t.d2h_bytes as f64,
            pcie_h2d_s: t.h2d_s,
            pcie_d2h_s: t.d2h_s,
            device_s: t.compute_s,
        }
    }
}

/// For `skip_serializing_if`: a figure that is zero is left out of a summary.
pub(crate) fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use ps_proto::report::{from_sums, to_sums};

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Figures {
        loss: f64,
        #[serde(flatten)]
        device: DeviceFigures,
    }

    #[test]
    fn device_figures_travel_flat_among_an_apps_figures() {
        let t = Traffic {
            h2d_bytes: 100,
            d2h_bytes: 40,
            h2d_s: 0.5,
            d2h_s: 0.25,
            compute_s: 2.0,
        };
        let before = Traffic {
            h2d_bytes: 60,
            d2h_bytes: 10,
            h2d_s: 0.25,
            d2h_s: 0.125,
            compute_s: 0.5,
        };
        let f = Figures {
            loss: 3.0,
            device: t.since(&before).into(),
        };
        let sums = to_sums(&f).unwrap();
        let names: Vec<&str> = sums.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "device_s",
                "loss",
                "pcie_d2h",
                "pcie_d2h_s",
                "pcie_h2d",
                "pcie_h2d_s"
            ]
        );
        assert_eq!(sums["pcie_h2d"], 40.0);
        assert_eq!(sums["pcie_d2h_s"], 0.125);
        assert_eq!(from_sums::<Figures>(&sums).unwrap(), f);
        // Figures from a worker that sent none of them (a host engine's, or an older one's).
        let bare = from_sums::<Figures>(&[("loss".to_string(), 1.0)].into()).unwrap();
        assert_eq!(bare.device, DeviceFigures::default());
    }
}
