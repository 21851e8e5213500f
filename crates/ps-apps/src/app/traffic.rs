//! What a resident engine (one that keeps a worker's state on its device for the whole job)
//! moved over the host-device bus, and its device's busy time: shared by the MF, MLP and LDA
//! resident engines and their sessions' figures.

/// What crossed between the host and the engine's device so far, and the device's busy time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    pub h2d_bytes: u64,
    pub d2h_bytes: u64,
    /// Seconds of device compute (kernels), measured on the device where it can.
    pub compute_s: f64,
}

impl Traffic {
    /// `self - before`, field by field.
    pub fn since(&self, before: &Traffic) -> Traffic {
        Traffic {
            h2d_bytes: self.h2d_bytes - before.h2d_bytes,
            d2h_bytes: self.d2h_bytes - before.d2h_bytes,
            compute_s: self.compute_s - before.compute_s,
        }
    }
}
