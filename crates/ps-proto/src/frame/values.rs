//! Reading a data frame's values (raw f32 or codec-encoded), and the raw little-endian f32
//! payload format itself.

use super::Frame;
use crate::codec::{self, Decoded};
use crate::error::ProtoError;
use crate::header::Codec;

impl Frame {
    /// The values of a Push or PullReply frame as f32s (aligned copy): raw f32 as is, f16/bf16
    /// widened, sparse payloads densified to `key_count * width` values (use
    /// [`Frame::decoded`] to apply a sparse payload without densifying).
    pub fn values(&self) -> Result<Vec<f32>, ProtoError> {
        match self.header.codec {
            Codec::RawF32 => decode_f32s(&self.payload),
            Codec::Encoded(_) => self.decoded()?.into_dense(self.block_len()?),
            Codec::None => Err(ProtoError::BadCodec {
                codec: self.header.codec.to_u16(),
                kind: self.header.kind.name(),
            }),
        }
    }

    /// The values of a raw f32 Push or PullReply frame, borrowed from the payload without a
    /// copy where this machine can (little-endian, payload 4-byte aligned, length right);
    /// `None` otherwise (use [`Frame::values`]).
    pub fn raw_f32(&self) -> Option<&[f32]> {
        if self.header.codec != Codec::RawF32 || cfg!(target_endian = "big") {
            return None;
        }
        let v: &[f32] = bytemuck::try_cast_slice(&self.payload).ok()?;
        (Some(v.len()) == self.block_len().ok()).then_some(v)
    }

    /// The values of a Push or PullReply frame as one block of `key_count * width` values
    /// (row-major), dense or sparse as the codec sent them.
    pub fn decoded(&self) -> Result<Decoded, ProtoError> {
        let n = self.block_len()?;
        match self.header.codec {
            Codec::RawF32 => {
                let v = decode_f32s(&self.payload)?;
                if v.len() != n {
                    return Err(ProtoError::Malformed(format!(
                        "raw payload of {} values, expected {n}",
                        v.len()
                    )));
                }
                Ok(Decoded::Dense(v))
            }
            Codec::Encoded(id) => codec::decode(id, &self.payload, n),
            Codec::None => Err(ProtoError::BadCodec {
                codec: 0,
                kind: self.header.kind.name(),
            }),
        }
    }

    /// `key_count * width`.
    fn block_len(&self) -> Result<usize, ProtoError> {
        usize::try_from(self.header.key_count as u64 * self.header.width as u64)
            .map_err(|_| ProtoError::Malformed("block too large for this machine".into()))
    }
}

/// f32s as little-endian bytes.
pub fn encode_f32s(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    extend_f32s(&mut out, values);
    out
}

/// Appends `values` as little-endian bytes (the raw f32 payload) to `out`.
pub fn extend_f32s(out: &mut Vec<u8>, values: &[f32]) {
    if cfg!(target_endian = "little") {
        out.extend_from_slice(bytemuck::cast_slice(values));
    } else {
        out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
}

/// Little-endian bytes (possibly misaligned) to f32s.
pub fn decode_f32s(bytes: &[u8]) -> Result<Vec<f32>, ProtoError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(ProtoError::Malformed(format!(
            "f32 payload of {} bytes is not a multiple of 4",
            bytes.len()
        )));
    }
    // One pass that writes each value once: no zero-filled vector first (a shard decoding a
    // raw push spent as long zeroing the block as copying it). Aligned little-endian bytes are
    // one copy; anything else goes value by value.
    if cfg!(target_endian = "little") {
        if let Ok(aligned) = bytemuck::try_cast_slice::<u8, f32>(bytes) {
            return Ok(aligned.to_vec());
        }
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}
