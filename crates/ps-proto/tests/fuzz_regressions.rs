//! Replays the fuzz corpus and every committed crasher of the wire decoders
//! (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) through the same calls the fuzz
//! targets make (`fuzz/src/targets/proto.rs`, included below): each must return, Ok or Err,
//! without panicking. See README.md, "Fuzzing".

#[allow(dead_code)]
mod targets {
    include!("../../../fuzz/src/targets/proto.rs");
}

mod replay {
    include!("../../../fuzz/src/replay.rs");
}

#[test]
fn corpus_and_crashers_decode_without_panicking() {
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    replay::replay(&fuzz, targets::PROTO_TARGETS);
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
