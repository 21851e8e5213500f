//! [`FrameBuilder`]: data, clock, ack and heartbeat frames built from their fields.

use super::{encode_f32s, Frame, KeyForm};
use crate::codec;
use crate::header::{Codec, Header, Kind};

/// Builds data frames without an intermediate copy of the values.
pub struct FrameBuilder;

impl FrameBuilder {
    pub fn pull(table: u32, worker: u32, min_clock: u64, width: u32, keys: &[u64]) -> Frame {
        let mut h = Header::new(Kind::Pull);
        h.table = table;
        h.worker = worker;
        h.clock = min_clock;
        h.width = width;
        h.key_count = keys.len() as u32;
        Frame {
            header: h,
            keys: keys.to_vec(),
            payload: Vec::new(),
            key_form: KeyForm::List,
        }
    }

    /// A push of row deltas tagged with the worker's `clock`.
    pub fn push(
        table: u32,
        worker: u32,
        clock: u64,
        width: u32,
        keys: &[u64],
        values: &[f32],
    ) -> Frame {
        Self::rows(Kind::Push, table, worker, (clock, 0), width, keys, values)
    }

    /// A pull reply: rows complete through `min_clock`, containing `worker_clock` of the
    /// requesting worker's clocks.
    pub fn pull_reply(
        table: u32,
        worker: u32,
        min_clock: u64,
        worker_clock: u64,
        width: u32,
        keys: &[u64],
        values: &[f32],
    ) -> Frame {
        Self::rows(
            Kind::PullReply,
            table,
            worker,
            (min_clock, worker_clock),
            width,
            keys,
            values,
        )
    }

    /// A push whose payload was made by [`codec::encode`] (or [`codec::ErrorFeedback`]) with a
    /// chain of wire id `wire_id`, over the rows of `keys` as one block of `keys.len() * width`.
    pub fn push_encoded(
        table: u32,
        worker: u32,
        clock: u64,
        width: u32,
        keys: &[u64],
        wire_id: u16,
        payload: Vec<u8>,
    ) -> Frame {
        Self::rows_encoded(
            Kind::Push,
            table,
            worker,
            (clock, 0),
            width,
            keys,
            wire_id,
            payload,
        )
    }

    /// A pull reply with an encoded payload; see [`FrameBuilder::push_encoded`].
    #[allow(clippy::too_many_arguments)]
    pub fn pull_reply_encoded(
        table: u32,
        worker: u32,
        min_clock: u64,
        worker_clock: u64,
        width: u32,
        keys: &[u64],
        wire_id: u16,
        payload: Vec<u8>,
    ) -> Frame {
        Self::rows_encoded(
            Kind::PullReply,
            table,
            worker,
            (min_clock, worker_clock),
            width,
            keys,
            wire_id,
            payload,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn rows_encoded(
        kind: Kind,
        table: u32,
        worker: u32,
        (clock, aux): (u64, u64),
        width: u32,
        keys: &[u64],
        wire_id: u16,
        payload: Vec<u8>,
    ) -> Frame {
        debug_assert!(codec::wire_format(wire_id).is_some(), "wire id {wire_id}");
        let mut h = Header::new(kind);
        h.table = table;
        h.worker = worker;
        h.clock = clock;
        h.aux = aux;
        h.width = width;
        h.codec = Codec::from_wire_id(wire_id);
        h.key_count = keys.len() as u32;
        h.payload_len = payload.len() as u64;
        Frame {
            header: h,
            keys: keys.to_vec(),
            payload,
            key_form: KeyForm::List,
        }
    }

    fn rows(
        kind: Kind,
        table: u32,
        worker: u32,
        (clock, aux): (u64, u64),
        width: u32,
        keys: &[u64],
        values: &[f32],
    ) -> Frame {
        debug_assert!(kind.carries_values());
        debug_assert_eq!(keys.len() * width as usize, values.len());
        // Wire id 1 is raw little-endian f32 (`Codec::RawF32`).
        Self::rows_encoded(
            kind,
            table,
            worker,
            (clock, aux),
            width,
            keys,
            1,
            encode_f32s(values),
        )
    }

    /// A frame that is its header alone: `kind`, `worker`, `clock` and `aux`.
    fn header_only(kind: Kind, worker: u32, clock: u64, aux: u64) -> Frame {
        let mut h = Header::new(kind);
        h.worker = worker;
        h.clock = clock;
        h.aux = aux;
        Frame {
            header: h,
            keys: Vec::new(),
            payload: Vec::new(),
            key_form: KeyForm::List,
        }
    }

    pub fn clock(worker: u32, clock: u64, pushes: u64) -> Frame {
        FrameBuilder::header_only(Kind::Clock, worker, clock, pushes)
    }

    pub fn ack(worker: u32, min_clock: u64, worker_clock: u64) -> Frame {
        FrameBuilder::header_only(Kind::Ack, worker, min_clock, worker_clock)
    }

    /// An ack that also says how many of the worker's clocks the shard's checkpoints cover.
    pub fn ack_covering(worker: u32, min_clock: u64, worker_clock: u64, covered: u64) -> Frame {
        let mut f = FrameBuilder::ack(worker, min_clock, worker_clock);
        f.payload = covered.to_le_bytes().to_vec();
        f.header.payload_len = 8;
        f
    }

    pub fn heartbeat(node: u32, clock: u64) -> Frame {
        FrameBuilder::header_only(Kind::Heartbeat, node, clock, 0)
    }
}
