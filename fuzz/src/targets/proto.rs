// The wire decoders of ps-proto, one function per fuzz target: each takes the fuzzer's bytes,
// runs them through the decoders and checks what the decoders promise (re-encoding, lengths,
// ranges). A decoder may return an error for any input; it must never panic, hang or allocate
// more than the input and the limits justify.
//
// Shared word for word by the fuzz harness (fuzz/src/targets/mod.rs) and the regression test
// crates/ps-proto/tests/fuzz_regressions.rs (through `include!`), so the committed corpus and
// crashers are replayed through exactly these calls by `cargo test -p ps-proto`. Plain `//`
// comments only: this file is included inside a module.

use ps_proto::codec::{
    decode, decode_add, default_key_hash, read_varint, varint_len, write_varint, CodecChain,
    Decoded, KeyCacheReceiver, KeyCacheSender, Keys, DEFAULT_KEY_CACHE_IDS,
};
use ps_proto::report::{ClockSummary, JobResult};
use ps_proto::{
    is_range, Assign, ClockReport, Codec, ControlEvent, Done, Frame, Header, KeyForm, Kind, Limits,
    Register, Shutdown, HEADER_LEN,
};

/// A fuzz target: its name and the function that runs one input.
pub type Entry = (&'static str, fn(&[u8]));

/// The targets of this file.
pub const PROTO_TARGETS: &[Entry] = &[
    ("header", header),
    ("frame", frame),
    ("frame_stream", frame_stream),
    ("control", control),
    ("codec", codec),
    ("codec_chain", codec_chain),
    ("varint", varint),
    ("key_cache", key_cache),
];

/// The limits nodes run with unless told otherwise (`--max-frame-mib 64`).
fn limits() -> Limits {
    Limits::default()
}

/// Blocks up to this many values get the full set of cross-checks (larger ones are decoded,
/// not compared, to keep each input fast).
const CHECK_VALUES: usize = 1 << 16;

/// `Header::decode` under the default limits, and under limits read from the 12 bytes after
/// the header when present (`max_frame_bytes` u64, `max_width` u32, little-endian; callers
/// pick their own limits). A valid header re-encodes to its bytes and its lengths agree
/// (checked in u128, so no arithmetic can wrap).
pub fn header(data: &[u8]) {
    check_header(data, &limits());
    if let Some(l) = data.get(HEADER_LEN..HEADER_LEN + 12) {
        let mut b = [0u8; 8];
        b.copy_from_slice(&l[..8]);
        let custom = Limits {
            max_frame_bytes: u64::from_le_bytes(b),
            max_width: u32::from_le_bytes([l[8], l[9], l[10], l[11]]),
        };
        check_header(data, &custom);
    }
}

fn check_header(data: &[u8], l: &Limits) {
    let Ok(h) = Header::decode(data, l) else {
        return;
    };
    assert_eq!(&h.to_bytes()[..], &data[..HEADER_LEN], "header re-encodes");
    assert_eq!(h.validate(l), Ok(()));
    let cap = u128::from(l.max_frame_bytes);
    let keys = u128::from(h.key_count);
    assert!(keys * 8 <= cap, "listed keys within the cap");
    assert!(u128::from(h.key_section_len()) + u128::from(h.payload_len) <= cap);
    assert_eq!(
        u128::from(h.body_len()),
        u128::from(h.key_section_len()) + u128::from(h.payload_len)
    );
    if h.kind.carries_values() {
        assert!(h.width >= 1 && h.width <= l.max_width);
        let raw = keys * u128::from(h.width) * 4;
        let payload = u128::from(h.payload_len);
        if h.codec == Codec::RawF32 {
            assert_eq!(payload, raw, "raw payload is key_count x width x 4");
        } else {
            assert!(raw <= cap && payload <= raw + 16 * (keys + 1));
        }
    }
}

/// `Frame::decode` of one buffer, then everything a receiver does with a frame.
pub fn frame(data: &[u8]) {
    let Ok(f) = Frame::decode(data, &limits()) else {
        return;
    };
    assert_eq!(f.encode(), data, "a decoded frame re-encodes to its bytes");
    assert_eq!(f.wire_len(), data.len() as u64);
    use_frame(&f);
}

/// A stream of frames read the way `ps_transport::read_frame` reads them (header, then the key
/// section and payload into their own buffers, then `Frame::from_sections`), with the keys of
/// the cached forms resolved through one connection's key cache, as the shard does.
pub fn frame_stream(data: &[u8]) {
    let l = limits();
    let mut cache = KeyCacheReceiver::new(DEFAULT_KEY_CACHE_IDS);
    let mut rest = data;
    while rest.len() >= HEADER_LEN {
        let Ok(h) = Header::decode(&rest[..HEADER_LEN], &l) else {
            return;
        };
        let body = &rest[HEADER_LEN..];
        let (Ok(k), Ok(p)) = (
            usize::try_from(h.key_section_len()),
            usize::try_from(h.payload_len),
        ) else {
            return;
        };
        let Some(end) = k.checked_add(p).filter(|&e| e <= body.len()) else {
            return;
        };
        rest = &body[end..];
        let Ok(mut f) = Frame::from_sections(h, &body[..k], body[k..end].to_vec()) else {
            continue;
        };
        if f.resolve_keys(&mut cache).is_err() {
            continue;
        }
        use_frame(&f);
    }
}

/// A control message's JSON, parsed as the kind the first byte picks (as a frame of that kind).
pub fn control(data: &[u8]) {
    let Some((&pick, json)) = data.split_first() else {
        return;
    };
    const KINDS: [Kind; 7] = [
        Kind::Register,
        Kind::Assign,
        Kind::Report,
        Kind::Done,
        Kind::Shutdown,
        Kind::Error,
        Kind::Event,
    ];
    let kind = KINDS[pick as usize % KINDS.len()];
    let mut h = Header::new(kind);
    h.payload_len = json.len() as u64;
    if kind == Kind::Error {
        h.aux = u64::from(pick);
    }
    let f = Frame {
        header: h,
        keys: Vec::new(),
        payload: json.to_vec(),
        key_form: KeyForm::List,
    };
    use_frame(&f);
}

/// What a node does with a frame it has read: values of a data frame (dense, sparse, applied
/// in place), the parsed message of a control frame, the parts of an error frame.
fn use_frame(f: &Frame) {
    let h = &f.header;
    match f.key_form {
        KeyForm::Cached { .. } if f.keys.is_empty() => {}
        KeyForm::Range => {
            assert_eq!(f.keys.len() as u64, u64::from(h.key_count));
            assert!(is_range(&f.keys));
        }
        _ => assert_eq!(f.keys.len() as u64, u64::from(h.key_count)),
    }
    if h.kind.carries_values() {
        use_values(f);
    }
    if h.kind.is_control() {
        use_control(f);
    }
    if let Some((code, _message)) = f.error_parts() {
        assert_eq!(code.map(|c| c as u64), code.map(|_| h.aux));
    }
}

fn use_values(f: &Frame) {
    let n = f.header.key_count as usize * f.header.width as usize;
    let decoded = f.decoded();
    let values = f.values();
    assert_eq!(decoded.is_ok(), values.is_ok(), "decoded and values agree");
    if let Ok(v) = &values {
        assert_eq!(v.len(), n);
    }
    if let Some(raw) = f.raw_f32() {
        assert_eq!(raw.len(), n);
    }
    if let (Ok(d), Ok(v)) = (decoded, values) {
        if n <= CHECK_VALUES {
            check_block(&d, n);
            assert!(same(&d.into_dense(n).unwrap_or_default(), &v));
        }
    }
}

fn use_control(f: &Frame) {
    match f.header.kind {
        Kind::Register => {
            let _ = f.parse_control::<Register>(Kind::Register);
        }
        Kind::Assign => {
            if let Ok(a) = f.parse_control::<Assign>(Kind::Assign) {
                for t in &a.shard_map.tables {
                    let _ = t.validate();
                    let _ = t.rule.validate();
                    let _ = a.shard_map.table(t.id);
                }
            }
        }
        Kind::Report => {
            if let Ok(r) = f.parse_control::<ClockReport>(Kind::Report) {
                let _ = ClockSummary::from_reports(&[r.clone(), r], 2);
            }
        }
        Kind::Done => {
            if let Ok(d) = f.parse_control::<Done>(Kind::Done) {
                JobResult::default().add_done(vec![d.clone(), d]);
            }
        }
        Kind::Shutdown => {
            let _ = f.parse_control::<Shutdown>(Kind::Shutdown);
        }
        Kind::Event => {
            if let Ok(ControlEvent::Restored { worker_clocks, .. })
            | Ok(ControlEvent::ShardRestarted { worker_clocks, .. }) =
                f.parse_control::<ControlEvent>(Kind::Event)
            {
                // What a worker does with it: its own entry, any id.
                let _ = worker_clocks.get(u32::MAX as usize);
            }
        }
        _ => {}
    }
}

/// A decoded block's shape: dense of `n`, or sparse with strictly increasing indices `< n`.
fn check_block(d: &Decoded, n: usize) {
    match d {
        Decoded::Dense(v) => assert_eq!(v.len(), n),
        Decoded::Sparse { indices, values } => {
            assert_eq!(indices.len(), values.len());
            assert!(indices.windows(2).all(|w| w[0] < w[1]), "indices increase");
            assert!(
                indices.iter().all(|&i| (i as usize) < n),
                "indices in range"
            );
        }
    }
}

/// Equal values, NaN equal to NaN (and 0.0 to -0.0).
fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
}

/// Bit-for-bit equal values.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Every valid wire id of a value payload, in the order byte 0 of a [`codec`] input picks them:
/// the seven formats a codec string names and the exact codec's i8 and i16, dense then sparse.
pub const CODEC_IDS: [u16; 18] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19,
];

/// `codec::decode` and `codec::decode_add` of a payload: byte 0 picks the wire id (one of the
/// eighteen valid ones, [`CODEC_IDS`], or an arbitrary one), bytes 1..3 the block length `n` (u16, little-endian),
/// the rest is the payload. Checks the block's shape and that `decode_add` adds exactly what
/// `decode` gives, leaving its destination unchanged on error.
pub fn codec(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let id = match data[0] as usize {
        i if i < CODEC_IDS.len() * 13 => CODEC_IDS[i % CODEC_IDS.len()],
        i => i as u16,
    };
    let n = u16::from_le_bytes([data[1], data[2]]) as usize;
    let payload = &data[3..];
    let start: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
    let decoded = decode(id, payload, n);
    let mut added = start.clone();
    let r = decode_add(id, payload, &mut added);
    assert_eq!(r.is_ok(), decoded.is_ok(), "decode_add and decode agree");
    match decoded {
        Ok(d) => {
            check_block(&d, n);
            let mut want = start;
            assert!(d.add_to(&mut want).is_ok());
            assert!(
                same_bits(&added, &want),
                "decode_add adds the decoded block"
            );
            assert_eq!(d.into_dense(n).map(|v| v.len()), Ok(n));
        }
        Err(_) => assert!(same_bits(&added, &start), "unchanged on error"),
    }
}

/// `CodecChain`'s parser (the codec strings of a table spec, which travel in Assign): a chain
/// that parses prints back to a string that parses to it, and encodes a block that decodes.
pub fn codec_chain(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(chain) = s.parse::<CodecChain>() else {
        return;
    };
    let printed = chain.to_string();
    assert_eq!(
        printed.parse::<CodecChain>().as_ref(),
        Ok(&chain),
        "{printed}"
    );
    let n = 37;
    let values: Vec<f32> = (0..n).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
    let current: Vec<f32> = (0..n).map(|i| i as f32 - 18.0).collect();
    let mut out = Vec::new();
    let sent = ps_proto::codec::encode(&chain, &values, Some(&current), &mut out);
    assert!(sent.is_ok(), "a parsed chain encodes");
    match decode(chain.wire_id(), &out, n) {
        Ok(d) => check_block(&d, n),
        Err(e) => panic!("{printed}: its own payload does not decode: {e}"),
    }
}

/// `read_varint` over a run of varints: each value read re-encodes to exactly the bytes read.
pub fn varint(data: &[u8]) {
    let mut pos = 0;
    while pos < data.len() {
        let start = pos;
        let Ok(v) = read_varint(data, &mut pos) else {
            return;
        };
        let mut out = Vec::new();
        write_varint(v, &mut out);
        assert_eq!(&out[..], &data[start..pos], "canonical varint");
        assert_eq!(varint_len(v), pos - start);
    }
}

/// `KeyCacheReceiver::resolve` driven by a script: each op byte either sends a key list through
/// a sender (its receiver must resolve it to the same list), or feeds a hostile receiver an
/// arbitrary new list or reference (any result, but a resolved reference matches its hash).
pub fn key_cache(data: &[u8]) {
    let mut sender = KeyCacheSender::new(4);
    let mut synced = KeyCacheReceiver::new(4);
    let mut hostile = KeyCacheReceiver::new(4);
    let mut it = data.iter().copied();
    let mut next = |k: usize| -> Vec<u8> { it.by_ref().take(k).collect() };
    loop {
        let op = next(1);
        let Some(&op) = op.first() else {
            return;
        };
        let keys: Vec<u64> = next(usize::from(op >> 5))
            .into_iter()
            .map(u64::from)
            .collect();
        match op & 0x3 {
            0 => {
                let msg = sender.keys(&keys);
                let _ = hostile.resolve(msg.clone());
                assert_eq!(synced.resolve(msg).map(<[u64]>::to_vec), Ok(keys));
            }
            1 => {
                let b = next(4);
                let mut id = [0u8; 4];
                id[..b.len()].copy_from_slice(&b);
                let assign = u32::from_le_bytes(id) >> (((op >> 2) & 0x7) * 4);
                let _ = hostile.resolve(Keys::Full { keys, assign });
            }
            2 => {
                let b = next(2);
                let id = u32::from(b.first().copied().unwrap_or(0));
                let hash = match b.get(1) {
                    Some(&x) if x & 1 == 0 => default_key_hash(&keys),
                    Some(&x) => u64::from(x),
                    None => 0,
                };
                if let Ok(list) = hostile.resolve(Keys::Cached { id, hash }) {
                    assert_eq!(default_key_hash(list), hash, "reference matches its hash");
                }
            }
            _ => {
                sender.reset();
                synced.reset();
                if op & 0x4 != 0 {
                    hostile.reset();
                }
            }
        }
    }
}
