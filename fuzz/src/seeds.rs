//! Seed inputs of every target, made with the project's own encoders (frame builders, codecs,
//! key cache, serde) or written out by hand for the text formats: small, valid examples of
//! every form a decoder accepts, which the fuzzer then mutates. `ps-fuzz-tool --write-corpus`
//! writes them to `fuzz/corpus/<target>/`.

use std::collections::BTreeMap;

use crate::targets::proto::CODEC_IDS;

use ps_proto::codec::{
    encode, encode_exact_selection, write_varint, CodecChain, KeyCacheSender, Keys,
};
use ps_proto::{
    Assign, ClockReport, ControlEvent, Done, ErrorCode, Frame, FrameBuilder, Init, JobSpec,
    KeyForm, Kind, Layout, Register, Role, ShardMap, Shutdown, TableSpec, UpdateRule,
};

mod files;
pub use files::{
    lda_ldac, lda_uci, lda_vocab, lr_libsvm, mf_ratings, mlp_idx_images, mlp_idx_labels,
};

type Seeds = Vec<(String, Vec<u8>)>;

fn named<S: Into<String>>(list: impl IntoIterator<Item = (S, Vec<u8>)>) -> Seeds {
    list.into_iter().map(|(n, b)| (n.into(), b)).collect()
}

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37) % 23) as f32 * 0.25 - 2.5)
        .collect()
}

fn chain(s: &str) -> CodecChain {
    s.parse().unwrap_or_default()
}

fn encoded(c: &CodecChain, v: &[f32]) -> Vec<u8> {
    let current: Vec<f32> = v.iter().map(|x| x * 3.0 + 1.0).collect();
    let mut out = Vec::new();
    // Seeds are made from fixed, valid chains and blocks: encoding cannot fail.
    let _ = encode(c, v, Some(&current), &mut out);
    out
}

fn register() -> Register {
    Register {
        role: Role::Server,
        listen_addr: Some("10.0.0.7:7100".into()),
        host: "node-a".into(),
        pid: 4242,
        requested_id: Some(1),
    }
}

fn assign() -> Assign {
    let table = |id, rule, init, layout, push: &str, pull: &str| TableSpec {
        id,
        name: format!("t{id}"),
        rows: if layout == Layout::Sparse {
            u64::MAX
        } else {
            1000
        },
        width: 8,
        rule,
        init,
        staleness: Some(1),
        layout,
        push_codec: chain(push),
        pull_codec: chain(pull),
    };
    Assign {
        role: Role::Worker,
        id: 1,
        num_servers: 2,
        num_workers: 2,
        deterministic: true,
        shard_map: ShardMap {
            shards: vec!["10.0.0.7:7100".into(), "10.0.0.8:7100".into()],
            tables: vec![
                table(
                    0,
                    UpdateRule::Add,
                    Init::Normal { std: 0.1, seed: 7 },
                    Layout::Dense,
                    "topk:0.01,f16",
                    "bf16",
                ),
                table(
                    1,
                    UpdateRule::Ftrl {
                        alpha: 0.1,
                        beta: 1.0,
                        l1: 0.5,
                        l2: 0.0,
                    },
                    Init::Zeros,
                    Layout::Sparse,
                    "filter:0.01,topk:100",
                    "raw",
                ),
                table(
                    2,
                    UpdateRule::Adagrad {
                        lr: 0.1,
                        eps: 1e-8,
                        initial_accumulator: 0.1,
                    },
                    Init::Uniform {
                        low: -0.5,
                        high: 0.5,
                        seed: 3,
                    },
                    Layout::Dense,
                    "raw",
                    "f16",
                ),
                table(
                    3,
                    UpdateRule::Sgd { lr: 0.5 },
                    Init::Zeros,
                    Layout::Dense,
                    "f16",
                    "raw",
                ),
            ],
        },
        job: JobSpec {
            app: "mf".into(),
            clocks: 20,
            settings: serde_json::json!({"rank": 8, "data": null, "lr": 0.05}),
            overlap: true,
            overlapped_reads: false,
            driver: serde_json::json!({"kill_worker": [1, 3]}),
        },
        heartbeat_ms: 500,
        max_frame_bytes: 64 << 20,
        recovery: ps_proto::Recovery {
            checkpoint_every: 5,
            keep: 3,
            restart_timeout_ms: 30_000,
            on_worker_failure: ps_proto::WorkerFailure::Wait,
            job_nonce: 0x1234_5678_9abc,
            resume: true,
        },
    }
}

fn report() -> ClockReport {
    ClockReport {
        worker: 1,
        clock: 4,
        compute_s: 0.25,
        comm_s: 0.125,
        blocked_s: 0.0625,
        overlap_s: 0.0625,
        bytes_sent: 123_456,
        bytes_received: 654_321,
        bytes_logical: 999_999,
        push_bytes: 100_000,
        push_bytes_logical: 400_000,
        sums: BTreeMap::from([("train_se".into(), 12.5), ("train_n".into(), 1000.0)]),
    }
}

fn done() -> Done {
    Done {
        worker: 0,
        sums: BTreeMap::from([("test_se".into(), 3.5), ("test_n".into(), 100.0)]),
        facts: BTreeMap::from([
            ("model_hash".into(), serde_json::json!("9f3a")),
            ("sizes".into(), serde_json::json!([1, 2, {"k": null}])),
        ]),
    }
}

fn shutdown() -> Shutdown {
    Shutdown {
        ok: false,
        reason: "worker 1 died".into(),
    }
}

/// Frames of every kind and key form, raw and with every codec.
fn frame_list() -> Vec<(String, Frame)> {
    let mut out: Vec<(String, Frame)> = Vec::new();
    let keys6 = [7u64, 8, 9, 10, 11, 12];
    out.push((
        "pull-list".into(),
        FrameBuilder::pull(1, 0, 3, 4, &[3, 9, 27]),
    ));
    let mut range = FrameBuilder::pull(1, 0, 3, 4, &[100, 101, 102, 103]);
    range.compact_keys();
    out.push(("pull-range".into(), range));
    let push = FrameBuilder::push(2, 1, 5, 3, &[1, 5], &values(6));
    out.push(("push-raw".into(), push.clone()));
    let mut end = push;
    end.end_clock(3);
    out.push(("push-end-clock".into(), end));
    for s in [
        "f16",
        "bf16",
        "topk:2",
        "topk:2,f16",
        "topk:0.9,bf16",
        "filter:0.5,topk:0.25",
        "q4",
        "topk:0.5,sign",
    ] {
        let c = chain(s);
        let f =
            FrameBuilder::push_encoded(2, 1, 5, 4, &keys6, c.wire_id(), encoded(&c, &values(24)));
        out.push((format!("push-{}", s.replace([':', ','], "_")), f));
    }
    let reply = FrameBuilder::pull_reply(1, 0, 2, 3, 2, &[4, 6], &values(4));
    out.push(("pull-reply-raw".into(), reply));
    let c = chain("bf16");
    let reply =
        FrameBuilder::pull_reply_encoded(1, 0, 2, 3, 2, &[4, 6], 3, encoded(&c, &values(4)));
    out.push(("pull-reply-bf16".into(), reply));
    let mut assigned = FrameBuilder::push(2, 1, 5, 1, &[40, 2, 17], &values(3));
    assigned.set_key_form(KeyForm::Assign(0));
    out.push(("push-key-assign".into(), assigned.clone()));
    let mut cached = assigned;
    cached.set_key_form(KeyForm::Cached {
        id: 0,
        hash: ps_proto::codec::default_key_hash(&[40, 2, 17]),
    });
    out.push(("push-key-cached".into(), cached));
    out.push(("clock".into(), FrameBuilder::clock(1, 5, 2)));
    out.push(("ack".into(), FrameBuilder::ack(1, 4, 5)));
    out.push(("heartbeat".into(), FrameBuilder::heartbeat(3, 9)));
    out.push((
        "register".into(),
        Frame::control(Kind::Register, &register()),
    ));
    out.push(("assign".into(), Frame::control(Kind::Assign, &assign())));
    out.push(("report".into(), Frame::control(Kind::Report, &report())));
    out.push(("done".into(), Frame::control(Kind::Done, &done())));
    out.push((
        "shutdown".into(),
        Frame::control(Kind::Shutdown, &shutdown()),
    ));
    out.push((
        "error".into(),
        Frame::error(ErrorCode::WrongWidth, "wrong width 3 for table 1 (width 4)"),
    ));
    out
}

/// Every frame's header; a few also under limits of their own (the 12 bytes after the header:
/// `max_frame_bytes` u64, `max_width` u32).
pub fn headers() -> Seeds {
    let mut out: Seeds = frame_list()
        .into_iter()
        .map(|(n, f)| (n, f.header.to_bytes().to_vec()))
        .collect();
    let wide = [
        (1u64 << 30).to_le_bytes().to_vec(),
        (1u32 << 24).to_le_bytes().to_vec(),
    ]
    .concat();
    for (n, f) in frame_list() {
        if matches!(n.as_str(), "push-raw" | "push-topk_2_f16" | "pull-range") {
            out.push((
                format!("{n}-limits"),
                [&f.header.to_bytes()[..], &wide].concat(),
            ));
        }
    }
    out
}

pub fn frames() -> Seeds {
    frame_list()
        .into_iter()
        .map(|(n, f)| (n, f.encode()))
        .collect()
}

/// Pushes whose keys go through a key cache sender, as a worker sends them.
fn cached_pushes(lists: &[&[u64]]) -> Vec<u8> {
    let mut sender = KeyCacheSender::new(4);
    let mut out = Vec::new();
    for keys in lists {
        let mut f = FrameBuilder::push(0, 1, 2, 2, keys, &values(keys.len() * 2));
        match sender.keys(keys) {
            Keys::Full { assign, .. } => f.set_key_form(KeyForm::Assign(assign)),
            Keys::Cached { id, hash } => f.set_key_form(KeyForm::Cached { id, hash }),
        }
        out.extend(f.encode());
    }
    out.extend(FrameBuilder::clock(1, 2, lists.len() as u64).encode());
    out
}

pub fn frame_streams() -> Seeds {
    let cat = |frames: Vec<Frame>| frames.iter().flat_map(Frame::encode).collect::<Vec<u8>>();
    let mut range = FrameBuilder::pull(0, 1, 0, 2, &[5, 6, 7]);
    range.compact_keys();
    named([
        (
            "cached-pushes",
            cached_pushes(&[&[1, 2, 3], &[1, 2, 3], &[9], &[1, 2, 3]]),
        ),
        (
            "evicted",
            cached_pushes(&[&[1], &[2], &[3], &[4], &[5], &[1]]),
        ),
        (
            "control",
            cat(vec![
                Frame::control(Kind::Register, &register()),
                Frame::control(Kind::Assign, &assign()),
                Frame::control(Kind::Shutdown, &shutdown()),
            ]),
        ),
        (
            "pulls",
            cat(vec![
                FrameBuilder::pull(0, 1, 0, 2, &[1, 4]),
                range,
                FrameBuilder::pull_reply(0, 1, 0, 0, 2, &[1, 4], &values(4)),
                FrameBuilder::ack(1, 0, 1),
            ]),
        ),
    ])
}

fn message<T: serde::Serialize>(pick: u8, msg: &T) -> Vec<u8> {
    let mut out = vec![pick];
    // Plain data structs always serialise.
    out.extend(serde_json::to_vec(msg).unwrap_or_default());
    out
}

pub fn controls() -> Seeds {
    let mut worker = register();
    worker.requested_id = None;
    worker.role = Role::Worker;
    worker.listen_addr = None;
    named([
        ("register", message(0, &register())),
        ("register-worker", message(0, &worker)),
        ("assign", message(1, &assign())),
        ("report", message(2, &report())),
        ("done", message(3, &done())),
        ("shutdown", message(4, &shutdown())),
        ("error", [&[5u8][..], b"unknown table 7"].concat()),
        (
            "event",
            message(
                6,
                &ControlEvent::ShardRestarted {
                    shard: 1,
                    addr: "127.0.0.1:7001".into(),
                    worker_clocks: vec![5, 7],
                },
            ),
        ),
        (
            "event-evict",
            message(6, &ControlEvent::Evict { worker: 3 }),
        ),
    ])
}

/// Byte 0 of a `codec` input that picks wire id `id`.
fn pick_of(id: u16) -> u8 {
    let at = CODEC_IDS.iter().position(|&i| i == id);
    at.expect("a valid wire id") as u8
}

pub fn codecs() -> Seeds {
    let mut out = Seeds::new();
    for s in [
        "raw",
        "f16",
        "bf16",
        "topk:3",
        "topk:3,f16",
        "topk:0.9,bf16",
        "filter:0.5,topk:0.1",
        "q8",
        "q4",
        "q2",
        "sign",
        "topk:0.3,sign",
        "topk:0.1,q4",
        "topk:0.05,warmup:2,q2",
    ] {
        let c = chain(s);
        // The index of the wire id in the target's table (proto::codec).
        let id = c.wire_id();
        let pick = pick_of(id);
        for n in [1u16, 37, 300] {
            let mut b = vec![pick];
            b.extend_from_slice(&n.to_le_bytes());
            b.extend(encoded(&c, &values(n as usize)));
            out.push((format!("{}-{n}", s.replace([':', ','], "_")), b));
        }
    }
    // The exact codec's whole-number payloads (i8 and i16 values), as LDA's counts travel.
    for (name, scale) in [("exact-i8", 1.0f32), ("exact-i16", 300.0)] {
        for n in [37u16, 300] {
            let sel: Vec<u32> = (0..u32::from(n)).step_by(3).collect();
            let vals: Vec<f32> = sel.iter().map(|&i| (i % 9) as f32 - 4.0).collect();
            let vals: Vec<f32> = vals.iter().map(|v| v * scale).collect();
            let mut payload = Vec::new();
            let id = encode_exact_selection(usize::from(n), &sel, &vals, &mut payload).unwrap();
            let mut b = vec![pick_of(id)];
            b.extend_from_slice(&n.to_le_bytes());
            b.extend(payload);
            out.push((format!("{name}-{n}"), b));
        }
    }
    out
}

pub fn codec_chains() -> Seeds {
    [
        "raw",
        "f32",
        "f16",
        "bf16",
        "topk:0.01,f16",
        "topk:100",
        "topk:1e-3,bf16",
        "filter:0.01,topk:0.05,bf16",
        "filter:0, topk:3 ,raw",
        "topk:0.001,warmup:4,sign",
        "q4",
        "topk:0.1,q2",
        "energy:0.4,sign",
        "topk:0.5,energy:0.9,f16",
    ]
    .iter()
    .enumerate()
    .map(|(i, s)| (format!("chain-{i}"), s.as_bytes().to_vec()))
    .collect()
}

pub fn varints() -> Seeds {
    let run = |vs: &[u64]| {
        let mut out = Vec::new();
        for &v in vs {
            write_varint(v, &mut out);
        }
        out
    };
    named([
        ("small", run(&[0, 1, 127, 128, 300])),
        (
            "wide",
            run(&[1 << 32, u64::MAX, (1 << 63) + 5, 16_383, 16_384]),
        ),
    ])
}

pub fn key_caches() -> Seeds {
    // Op byte: low 2 bits the op (0 send, 1 hostile full, 2 hostile reference, 3 reset), top 3
    // bits the number of key bytes that follow.
    named([
        (
            "send-repeat",
            vec![0x60, 1, 2, 3, 0x60, 1, 2, 3, 0x20, 9, 0x60, 1, 2, 3],
        ),
        (
            "evict",
            vec![0x20, 1, 0x20, 2, 0x20, 3, 0x20, 4, 0x20, 5, 0x20, 1],
        ),
        (
            "hostile",
            vec![
                0x41, 5, 6, 0, 0, 0, 0, 0x42, 5, 6, 0, 0, 0x22, 7, 1, 9, 0x07,
            ],
        ),
    ])
}

/// Shard checkpoints as `ps-server` writes them: dense add and adagrad tables and a sparse ftrl
/// one, after a few clock batches, in both modes; and one with an evicted worker.
pub fn checkpoints() -> Seeds {
    use ps_server::{checkpoint::encode, PushRows, Shard};
    let spec = |id, rows, width, rule, layout| TableSpec {
        id,
        name: format!("t{id}"),
        rows,
        width,
        rule,
        init: Init::Zeros,
        staleness: Some(0),
        layout,
        push_codec: Default::default(),
        pull_codec: Default::default(),
    };
    let tables = vec![
        spec(1, 12, 3, UpdateRule::Add, Layout::Dense),
        spec(
            2,
            8,
            2,
            UpdateRule::Adagrad {
                lr: 0.1,
                eps: 1e-6,
                initial_accumulator: 0.1,
            },
            Layout::Dense,
        ),
        spec(
            3,
            u64::MAX,
            1,
            UpdateRule::Ftrl {
                alpha: 0.1,
                beta: 1.0,
                l1: 0.01,
                l2: 0.0,
            },
            Layout::Sparse,
        ),
    ];
    let mut out = Seeds::new();
    for (name, deterministic, evict) in [
        ("det", true, false),
        ("free", false, false),
        ("evicted", false, true),
    ] {
        let mut shard = Shard::new(1, 2, &tables, 2, deterministic);
        for clock in 0..3u64 {
            for w in 0..2u32 {
                let batch = vec![
                    PushRows::dense(1, vec![6, 9], values(6)),
                    PushRows::dense(2, vec![4, 7], values(4)),
                    PushRows::dense(3, vec![1 << 63, (1 << 63) + clock], values(2)),
                ];
                let _ = shard.submit(w, clock, batch);
            }
        }
        if evict {
            let _ = shard.evict(1);
        }
        out.push((format!("ckpt-{name}"), encode(&shard.snapshot(0x5eed))));
    }
    out
}
