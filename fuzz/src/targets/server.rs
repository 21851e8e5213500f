// The shard checkpoint decoder of ps-server, one function per fuzz target: bytes read back
// from a checkpoint file (possibly torn, corrupt, or someone else's) go through
// `checkpoint::decode`; what it accepts must be a consistent snapshot that encodes back to the
// same bytes. It may return an error for any input; it must never panic, hang or allocate more
// than the input justifies.
//
// Shared word for word by the fuzz harness (fuzz/src/targets/mod.rs) and the regression test
// ps-server/tests/fuzz_regressions.rs (through `include!`). Plain `//` comments only: this file
// is included inside a module.

use ps_server::checkpoint::{decode, encode};

/// A fuzz target: its name and the function that runs one input.
pub type Entry = (&'static str, fn(&[u8]));

/// The targets of this file.
pub const SERVER_TARGETS: &[Entry] = &[("checkpoint", checkpoint)];

pub fn checkpoint(data: &[u8]) {
    let Ok(snap) = decode(data) else {
        return;
    };
    assert!(
        snap.validate().is_ok(),
        "decode accepted an inconsistent snapshot"
    );
    assert!(
        encode(&snap) == data,
        "an accepted checkpoint does not encode back to its bytes"
    );
}
