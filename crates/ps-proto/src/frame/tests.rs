//! Frame tests: round trips of every frame shape, rejection of bad headers and payloads, and
//! property tests that arbitrary bytes never panic the decoder.

use super::*;

#[test]
fn raw_values_borrow_the_payload() {
    let f = FrameBuilder::push(1, 0, 0, 2, &[4, 5], &[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(f.raw_f32(), Some(&[1.0, 2.0, 3.0, 4.0][..]));
    let mut short = f.clone();
    short.payload.truncate(8);
    assert_eq!(
        short.raw_f32(),
        None,
        "a payload of the wrong length is not borrowed"
    );
}
use crate::header::{Codec, RawHeader, MAGIC, VERSION};
use proptest::prelude::*;

fn limits() -> Limits {
    Limits {
        max_frame_bytes: 1 << 20,
        max_width: 4096,
    }
}

#[test]
fn push_round_trips() {
    let f = FrameBuilder::push(3, 1, 7, 2, &[5, 9], &[1.0, 2.0, 3.0, -4.5]);
    let bytes = f.encode();
    let g = Frame::decode(&bytes, &limits()).unwrap();
    assert_eq!(f, g);
    assert_eq!(g.values().unwrap(), vec![1.0, 2.0, 3.0, -4.5]);
}

#[test]
fn decodes_from_misaligned_buffer() {
    let f = FrameBuilder::pull_reply(1, 0, 2, 3, 3, &[1], &[0.5, 0.25, 8.0]);
    let mut bytes = vec![0u8];
    bytes.extend(f.encode());
    let g = Frame::decode(&bytes[1..], &limits()).unwrap();
    assert_eq!(f, g);
}

#[test]
fn control_round_trips() {
    let s = crate::Shutdown {
        ok: false,
        reason: "worker 1 died".into(),
    };
    let f = Frame::control(Kind::Shutdown, &s);
    let g = Frame::decode(&f.encode(), &limits()).unwrap();
    assert_eq!(
        g.parse_control::<crate::Shutdown>(Kind::Shutdown).unwrap(),
        s
    );
    assert!(g.parse_control::<crate::Shutdown>(Kind::Assign).is_err());
}

fn raw(kind: u16) -> RawHeader {
    RawHeader {
        magic: MAGIC,
        version: VERSION,
        kind,
        table: 0,
        codec: 0,
        flags: 0,
        clock: 0,
        aux: 0,
        worker: 0,
        key_count: 0,
        width: 0,
        reserved: 0,
        payload_len: 0,
    }
}

fn decode_raw(r: RawHeader, body: &[u8]) -> Result<Frame, ProtoError> {
    let mut b = bytemuck::bytes_of(&r).to_vec();
    b.extend_from_slice(body);
    Frame::decode(&b, &limits())
}

#[test]
fn rejects_each_kind_of_bad_header() {
    let mut r = raw(Kind::Heartbeat as u16);
    assert!(decode_raw(r, &[]).is_ok());
    r.magic = 0xdead_beef;
    assert!(matches!(
        decode_raw(r, &[]),
        Err(ProtoError::BadMagic(0xdead_beef))
    ));
    let mut r = raw(Kind::Heartbeat as u16);
    r.version = 9;
    assert!(matches!(decode_raw(r, &[]), Err(ProtoError::BadVersion(9))));
    let r = raw(99);
    assert!(matches!(
        decode_raw(r, &[]),
        Err(ProtoError::UnknownKind(99))
    ));
    let mut r = raw(Kind::Push as u16);
    r.codec = 1;
    r.width = 2;
    r.key_count = 1;
    r.payload_len = 4; // should be 8
    assert!(matches!(
        decode_raw(r, &[0; 12]),
        Err(ProtoError::Malformed(_))
    ));
    let mut r = raw(Kind::Push as u16);
    r.codec = 10;
    assert!(matches!(
        decode_raw(r, &[]),
        Err(ProtoError::BadCodec { .. })
    ));
    let mut r = raw(Kind::Register as u16);
    r.payload_len = 1 << 40;
    assert!(matches!(
        decode_raw(r, &[]),
        Err(ProtoError::TooLarge { .. })
    ));
    let mut r = raw(Kind::Pull as u16);
    r.width = 1;
    r.key_count = 2;
    assert!(matches!(
        decode_raw(r, &[0; 9]),
        Err(ProtoError::Truncated { .. })
    ));
    assert!(matches!(
        Frame::decode(&[1, 2, 3], &limits()),
        Err(ProtoError::Truncated { .. })
    ));
    let mut r = raw(Kind::Heartbeat as u16);
    r.flags = 1;
    assert!(decode_raw(r, &[]).is_err());
    let r = raw(Kind::Heartbeat as u16);
    assert!(decode_raw(r, &[0]).is_err(), "trailing bytes");
}

#[test]
fn encoded_frames_round_trip() {
    use crate::codec::{encode, CodecChain, Decoded};
    let values: Vec<f32> = (0..24).map(|i| (i as f32 - 11.0) * 0.75).collect();
    for s in [
        "raw",
        "f16",
        "bf16",
        "topk:2,f16",
        "topk:0.5",
        "topk:20,bf16",
    ] {
        let chain: CodecChain = s.parse().unwrap();
        let mut payload = Vec::new();
        encode(&chain, &values, None, &mut payload).unwrap();
        let f = FrameBuilder::push_encoded(
            2,
            1,
            5,
            4,
            &[7, 8, 9, 10, 11, 12],
            chain.wire_id(),
            payload,
        );
        let g = Frame::decode(&f.encode(), &limits()).unwrap();
        assert_eq!(f, g, "{s}");
        let dense = g.values().unwrap();
        assert_eq!(dense.len(), 24);
        let decoded = g.decoded().unwrap();
        assert_eq!(decoded.clone().into_dense(24).unwrap(), dense);
        if chain.is_lossless() {
            assert_eq!(dense, values);
            assert_eq!(g.header.codec, Codec::RawF32);
            assert_eq!(
                g,
                FrameBuilder::push(2, 1, 5, 4, &[7, 8, 9, 10, 11, 12], &values)
            );
        }
        if s == "topk:2,f16" {
            // 9.0 (index 23), then -8.25 (index 0) and 8.25 (index 22) tie: lower index wins.
            assert_eq!(
                decoded,
                Decoded::Sparse {
                    indices: vec![0, 23],
                    values: vec![-8.25, 9.0]
                }
            );
        }
    }
    let r = FrameBuilder::pull_reply_encoded(1, 0, 2, 3, 2, &[4], 2, vec![0, 0x3c, 0, 0x3c]);
    let g = Frame::decode(&r.encode(), &limits()).unwrap();
    assert_eq!(g.values().unwrap(), vec![1.0, 1.0]);
}

#[test]
fn encoded_payload_length_rules() {
    let mut r = raw(Kind::Push as u16);
    r.codec = 0x12;
    r.width = 4;
    r.key_count = 2;
    // Over raw + 16 * (keys + 1).
    r.payload_len = 2 * 4 * 4 + 16 * 3 + 1;
    let body = vec![0u8; 16 + r.payload_len as usize];
    assert!(matches!(
        decode_raw(r, &body),
        Err(ProtoError::Malformed(_))
    ));
    // Within the bound: the header passes, the payload is decoded later.
    r.payload_len = 3;
    let f = decode_raw(r, &[0u8; 19]).unwrap();
    assert!(f.decoded().is_err());
    assert!(f.values().is_err());
    // A tiny compressed frame may not stand for more values than a raw frame could hold.
    r.width = 4096;
    r.key_count = 100;
    r.payload_len = 1;
    assert!(matches!(
        decode_raw(r, &[0u8; 801]),
        Err(ProtoError::TooLarge { .. })
    ));
    // Compressed codecs only on value frames; unknown ids stay unknown.
    let mut r = raw(Kind::Pull as u16);
    r.codec = 2;
    r.width = 1;
    assert!(matches!(
        decode_raw(r, &[]),
        Err(ProtoError::BadCodec { .. })
    ));
    for bad in [10u16, 0x0F, 0x10, 0x1A, 0x21, 0xFFFF] {
        let mut r = raw(Kind::Push as u16);
        r.codec = bad;
        r.width = 1;
        assert!(
            matches!(decode_raw(r, &[]), Err(ProtoError::BadCodec { .. })),
            "{bad}"
        );
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Frame::decode(&bytes, &limits());
    }

    #[test]
    fn arbitrary_headers_never_panic(magic in prop_oneof![Just(MAGIC), any::<u32>()], version in 0u16..3,
        kind in 0u16..14, codec in prop_oneof![0u16..11, 0x10u16..0x1B], key_count in 0u32..8, width in 0u32..8, payload_len in 0u64..80,
        body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut r = raw(kind);
        r.magic = magic; r.version = version; r.codec = codec; r.key_count = key_count;
        r.width = width; r.payload_len = payload_len;
        if let Ok(f) = decode_raw(r, &body) {
            // Whatever decodes re-encodes to the same bytes.
            let mut b = bytemuck::bytes_of(&r).to_vec();
            b.extend_from_slice(&body);
            prop_assert_eq!(f.encode(), b);
            if f.header.kind.carries_values() {
                let _ = f.values();
                let _ = f.decoded();
            }
        }
    }

    #[test]
    fn rows_round_trip(keys in proptest::collection::vec(any::<u64>(), 0..20), width in 1u32..6, seed in any::<u32>()) {
        let values: Vec<f32> = (0..keys.len() * width as usize).map(|i| (i as f32) * 0.5 + seed as f32).collect();
        let f = FrameBuilder::push(1, 2, 3, width, &keys, &values);
        let g = Frame::decode(&f.encode(), &limits()).unwrap();
        prop_assert_eq!(g.values().unwrap(), values);
        prop_assert_eq!(g.keys, keys);
    }
}

#[test]
fn raw_f32s_decode_alike_at_any_alignment() {
    let values = [
        1.5f32,
        -0.0,
        f32::MIN_POSITIVE,
        f32::from_bits(0x7fc0_1234),
        3.0e38,
    ];
    let bytes = encode_f32s(&values);
    // The same bytes at every offset from an aligned start: one of them is aligned, the others
    // take the value-by-value path.
    let mut buf = vec![0u8; bytes.len() + 8];
    for off in 0..4 {
        buf[off..off + bytes.len()].copy_from_slice(&bytes);
        let got = decode_f32s(&buf[off..off + bytes.len()]).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&values), "offset {off}");
    }
    assert!(decode_f32s(&[]).unwrap().is_empty());
    assert!(decode_f32s(&bytes[..7]).is_err(), "7 bytes are not f32s");
}
