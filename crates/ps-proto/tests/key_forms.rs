//! Key forms on the wire (list, range, cache assign, cache reference) and the end-of-clock flag:
//! every form round-trips, and every malformed combination is an error, never a panic.

use ps_proto::codec::{default_key_hash, KeyCacheReceiver};
use ps_proto::{
    Frame, FrameBuilder, Header, KeyForm, Kind, Limits, ProtoError, FLAG_END_CLOCK,
    FLAG_KEY_ASSIGN, FLAG_KEY_CACHED, FLAG_KEY_RANGE, HEADER_LEN,
};

fn roundtrip(f: &Frame) -> Frame {
    Frame::decode(&f.encode(), &Limits::default()).unwrap()
}

#[test]
fn a_contiguous_list_goes_as_eight_bytes_and_comes_back_whole() {
    let keys: Vec<u64> = (1000..1500).collect();
    let values = vec![1.5f32; 500 * 2];
    let mut f = FrameBuilder::push(3, 1, 7, 2, &keys, &values);
    f.compact_keys();
    assert_eq!(f.key_form, KeyForm::Range);
    assert_eq!(f.encode().len(), HEADER_LEN + 8 + 4000);
    let back = roundtrip(&f);
    assert_eq!(back.keys, keys);
    assert_eq!(back.values().unwrap(), values);
    // Not a range: stays a list; a single key stays a list.
    let mut g = FrameBuilder::pull(3, 1, 0, 2, &[1, 2, 4]);
    g.compact_keys();
    assert_eq!(g.key_form, KeyForm::List);
    let mut h = FrameBuilder::pull(3, 1, 0, 2, &[9]);
    h.compact_keys();
    assert_eq!(h.key_form, KeyForm::List);
}

#[test]
fn cache_forms_resolve_through_the_receiver() {
    let keys: Vec<u64> = vec![5, 17, 99, 1 << 40];
    let mut rx = KeyCacheReceiver::new(4);
    let mut a = FrameBuilder::pull(1, 0, 0, 3, &keys);
    a.set_key_form(KeyForm::Assign(0));
    let mut a = roundtrip(&a);
    assert_eq!(a.key_form, KeyForm::Assign(0));
    a.resolve_keys(&mut rx).unwrap();
    assert_eq!(a.keys, keys);

    let mut c = FrameBuilder::pull(1, 0, 0, 3, &keys);
    let hash = default_key_hash(&keys);
    c.set_key_form(KeyForm::Cached { id: 0, hash });
    assert_eq!(c.encode().len(), HEADER_LEN + 16);
    let mut c = roundtrip(&c);
    assert!(c.keys.is_empty());
    c.resolve_keys(&mut rx).unwrap();
    assert_eq!(c.keys, keys);

    // A wrong hash, an unknown id, or a count that does not match the stored list: errors.
    for (id, hash, count) in [(0, hash ^ 1, 4), (1, hash, 4), (0, hash, 3)] {
        let mut bad = FrameBuilder::pull(1, 0, 0, 3, &keys[..count]);
        bad.set_key_form(KeyForm::Cached { id, hash });
        let mut bad = roundtrip(&bad);
        assert!(bad.resolve_keys(&mut rx).is_err(), "id {id} count {count}");
    }
}

#[test]
fn the_end_of_clock_flag_rides_on_a_push() {
    let mut f = FrameBuilder::push(0, 2, 9, 1, &[4, 8], &[1.0, 2.0]);
    f.end_clock(3);
    let back = roundtrip(&f);
    assert_eq!(back.header.flags & FLAG_END_CLOCK, FLAG_END_CLOCK);
    assert_eq!(back.header.aux, 3);
}

fn header_with(kind: Kind, flags: u16, keys: u32) -> Header {
    let mut h = Header::new(kind);
    h.flags = flags;
    h.key_count = keys;
    h.width = 1;
    if kind.carries_values() {
        h.codec = ps_proto::Codec::RawF32;
        h.payload_len = 4 * keys as u64;
    }
    h
}

#[test]
fn malformed_flag_combinations_are_errors() {
    let limits = Limits::default();
    let cases = [
        (Kind::Pull, FLAG_KEY_RANGE | FLAG_KEY_CACHED, 2),
        (Kind::Pull, FLAG_END_CLOCK, 2),
        (Kind::Ack, FLAG_KEY_RANGE, 0),
        (Kind::Clock, FLAG_END_CLOCK, 0),
        (Kind::Pull, FLAG_KEY_ASSIGN, 0),
        (Kind::Pull, 0x40, 1),
    ];
    for (kind, flags, keys) in cases {
        let h = header_with(kind, flags, keys);
        assert!(
            matches!(h.validate(&limits), Err(ProtoError::Malformed(_))),
            "{kind:?} flags {flags:#x}"
        );
    }
    // A range may not expand past what a listed frame could carry.
    let mut h = header_with(Kind::Pull, FLAG_KEY_RANGE, u32::MAX);
    h.payload_len = 0;
    assert!(h.validate(&limits).is_err());
}

#[test]
fn bad_key_sections_are_errors() {
    // A range that overflows u64.
    let h = header_with(Kind::Pull, FLAG_KEY_RANGE, 4);
    let mut bytes = h.to_bytes().to_vec();
    bytes.extend_from_slice(&(u64::MAX - 1).to_le_bytes());
    assert!(Frame::decode(&bytes, &Limits::default()).is_err());
    // A cache id over 32 bits.
    let h = header_with(Kind::Pull, FLAG_KEY_CACHED, 4);
    let mut bytes = h.to_bytes().to_vec();
    bytes.extend_from_slice(&(1u64 << 33).to_le_bytes());
    bytes.extend_from_slice(&7u64.to_le_bytes());
    assert!(Frame::decode(&bytes, &Limits::default()).is_err());
    // Truncated sections.
    let h = header_with(Kind::Pull, FLAG_KEY_ASSIGN, 2);
    let mut bytes = h.to_bytes().to_vec();
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    assert!(Frame::decode(&bytes, &Limits::default()).is_err());
}
