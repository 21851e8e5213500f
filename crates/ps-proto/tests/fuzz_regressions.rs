//! Replays the fuzz corpus and every committed crasher of the wire decoders
//! (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) through the same calls the fuzz
//! targets make (`fuzz/src/targets/proto.rs`, included below): each must return, Ok or Err,
//! without panicking. See README.md, "Fuzzing".

use std::path::{Path, PathBuf};

#[allow(dead_code)]
mod targets {
    include!("../../../fuzz/src/targets/proto.rs");
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Files under `fuzz/<kind>/<target>/`, sorted; none if the directory is absent.
fn files(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

#[test]
fn corpus_and_crashers_decode_without_panicking() {
    let mut failed = Vec::new();
    for &(name, run) in targets::PROTO_TARGETS {
        let corpus = files("corpus", name);
        assert!(!corpus.is_empty(), "fuzz/corpus/{name}/ has no seeds");
        for file in corpus.iter().chain(&files("regressions", name)) {
            let data = std::fs::read(file).expect("read a fuzz input");
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "inputs that panicked: {failed:#?}");
}

/// Found by the `header` target: under limits that allow rows of 2^30 values or more, a push
/// header's `key_count * width * 4` overflowed u64 (a panic with overflow checks, a wrapped
/// length without). Now it is a typed error.
#[test]
fn raw_length_past_u64_is_too_large() {
    use ps_proto::{Codec, Header, Kind, Limits, ProtoError};
    let wide = Limits {
        max_frame_bytes: u64::MAX,
        max_width: u32::MAX,
    };
    for codec in [Codec::RawF32, Codec::Encoded(0x12)] {
        let mut h = Header::new(Kind::Push);
        h.codec = codec;
        h.key_count = u32::MAX;
        h.width = 1 << 31;
        h.payload_len = 8;
        assert!(
            matches!(h.validate(&wide), Err(ProtoError::TooLarge { .. })),
            "{codec:?}"
        );
        assert!(Header::decode(&h.to_bytes(), &wide).is_err());
    }
    // The largest block that still fits is judged on its length as before.
    let mut h = Header::new(Kind::Push);
    h.codec = Codec::Encoded(0x11);
    h.key_count = u32::MAX;
    h.width = 1 << 30;
    h.payload_len = 1;
    assert!(h.validate(&wide).is_ok());
}
