//! A record's moves as they lie in the file: the tokens that moved, then their new topics.
//! Pure; no I/O.
//!
//! The body starts with a layout byte. [`GAPS`]: the tokens as varint gaps (the first as it
//! is, each next one as `token - previous - 1`), about a byte a token where most tokens move
//! and a few where few do. [`BITMAP`]: one bit a token of the worker (`tokens / 8` bytes, bit
//! `t % 8` of byte `t / 8`, least significant first; the bits past the last token zero), set
//! where the token moved. The encoder takes the smaller (ties: gaps). The topics follow, one a
//! move in token order, little-endian in as few bytes as the topic count needs: 1 up to 256
//! topics, 2 up to 65,536, else 4. So a move costs 1 to 3 bytes at K 1,000 instead of 8.

use super::Move;
use ps_proto::codec::{read_varint, varint_len, write_varint};

/// The layout byte of tokens as varint gaps.
pub const GAPS: u8 = 0;
/// The layout byte of tokens as a bitmap.
pub const BITMAP: u8 = 1;

/// Bytes a topic takes among `topics`.
pub(super) fn topic_width(topics: u32) -> usize {
    match topics {
        0..=256 => 1,
        257..=65_536 => 2,
        _ => 4,
    }
}

/// The gap before each move's token (the first token as it is).
fn gaps(moves: &[Move]) -> impl Iterator<Item = u64> + '_ {
    (moves.iter().enumerate()).map(move |(i, &(t, _))| match i {
        0 => u64::from(t),
        _ => u64::from(t - moves[i - 1].0 - 1),
    })
}

/// The body of `moves` (tokens strictly increasing and below `tokens`, topics below `topics`;
/// `Err` naming the first that is not) of a worker with `tokens` tokens.
pub fn encode(moves: &[Move], tokens: u32, topics: u32) -> Result<Vec<u8>, String> {
    for (i, &(t, k)) in moves.iter().enumerate() {
        if t >= tokens || k >= topics || (i > 0 && t <= moves[i - 1].0) {
            return Err(format!(
                "move {i} (token {t}, topic {k}) is not of a token after the last below {tokens} \
                 and a topic below {topics}"
            ));
        }
    }
    let bitmap = (tokens as usize).div_ceil(8);
    let listed: usize = gaps(moves).map(varint_len).sum();
    let width = topic_width(topics);
    let mut out = Vec::with_capacity(1 + listed.min(bitmap) + width * moves.len());
    if bitmap < listed {
        out.push(BITMAP);
        let at = out.len();
        out.resize(at + bitmap, 0);
        for &(t, _) in moves {
            out[at + t as usize / 8] |= 1 << (t % 8);
        }
    } else {
        out.push(GAPS);
        gaps(moves).for_each(|g| write_varint(g, &mut out));
    }
    for &(_, k) in moves {
        out.extend_from_slice(&k.to_le_bytes()[..width]);
    }
    Ok(out)
}

/// The `m` moves of `body` (of a worker with `tokens` tokens and `topics` topics) into `moves`
/// (cleared first): `Err` unless the body is exactly a valid encoding of `m` moves.
pub fn decode(
    body: &[u8],
    m: usize,
    tokens: u32,
    topics: u32,
    moves: &mut Vec<Move>,
) -> Result<(), String> {
    moves.clear();
    let width = topic_width(topics);
    let (&layout, rest) = body.split_first().ok_or("an empty body")?;
    let topic_bytes = m.checked_mul(width).filter(|&b| b <= rest.len());
    let Some(topic_bytes) = topic_bytes else {
        return Err(format!("{} bytes for {m} moves", body.len()));
    };
    let (token_part, topic_part) = rest.split_at(rest.len() - topic_bytes);
    moves.reserve(m);
    match layout {
        GAPS => {
            let mut pos = 0;
            let mut next = 0u64;
            while pos < token_part.len() {
                let g = read_varint(token_part, &mut pos).map_err(|e| e.to_string())?;
                let t = next.checked_add(g).filter(|&t| t < u64::from(tokens));
                let Some(t) = t else {
                    return Err(format!("a token past the worker's {tokens}"));
                };
                moves.push((t as u32, 0));
                next = t + 1;
            }
        }
        BITMAP => {
            if token_part.len() != (tokens as usize).div_ceil(8) {
                return Err(format!(
                    "a bitmap of {} bytes for {tokens} tokens",
                    token_part.len()
                ));
            }
            for (i, &byte) in token_part.iter().enumerate() {
                let mut bits = byte;
                while bits != 0 {
                    let t = i * 8 + bits.trailing_zeros() as usize;
                    if t >= tokens as usize {
                        return Err(format!("a token past the worker's {tokens}"));
                    }
                    moves.push((t as u32, 0));
                    bits &= bits - 1;
                }
            }
        }
        other => return Err(format!("layout {other}")),
    }
    if moves.len() != m {
        return Err(format!("{} tokens for {m} moves", moves.len()));
    }
    for (mv, k) in moves.iter_mut().zip(topic_part.chunks_exact(width)) {
        let mut b = [0u8; 4];
        b[..width].copy_from_slice(k);
        mv.1 = u32::from_le_bytes(b);
        if mv.1 >= topics {
            return Err(format!("topic {} of {topics}", mv.1));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn round_trip(moves: &[Move], tokens: u32, topics: u32) -> Vec<u8> {
        let body = encode(moves, tokens, topics).unwrap();
        let mut back = Vec::new();
        decode(&body, moves.len(), tokens, topics, &mut back).unwrap();
        assert_eq!(back, moves);
        body
    }

    #[test]
    fn moves_come_back_in_the_smaller_layout() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for (tokens, topics, p) in [(1000, 8, 0.98), (1000, 1000, 0.02), (77, 70_000, 0.5)] {
            let moved: Vec<u32> = (0..tokens).filter(|_| rng.gen_bool(p)).collect();
            let moves: Vec<Move> = moved
                .into_iter()
                .map(|t| (t, rng.gen_range(0..topics)))
                .collect();
            let body = round_trip(&moves, tokens, topics);
            let width = topic_width(topics);
            let listed: usize = gaps(&moves).map(varint_len).sum();
            let bitmap = (tokens as usize).div_ceil(8);
            assert_eq!(body.len(), 1 + listed.min(bitmap) + width * moves.len());
            assert_eq!(body[0], if bitmap < listed { BITMAP } else { GAPS });
        }
        // Nearly every token moving at K 1,000: a bit and two bytes a move, not 8 bytes.
        let all: Vec<Move> = (0..8000).map(|t| (t, t % 1000)).collect();
        assert_eq!(round_trip(&all, 8000, 1000).len(), 1 + 1000 + 16_000);
        round_trip(&[], 10, 4);
        round_trip(&[(0, 0), (u32::MAX - 1, 3)], u32::MAX, u32::MAX);
    }

    #[test]
    fn bad_moves_and_bodies_are_refused() {
        assert!(
            encode(&[(3, 1), (3, 2)], 10, 4).is_err(),
            "a repeated token"
        );
        assert!(encode(&[(5, 1), (3, 2)], 10, 4).is_err(), "out of order");
        assert!(
            encode(&[(10, 1)], 10, 4).is_err(),
            "a token past the worker's"
        );
        assert!(encode(&[(1, 4)], 10, 4).is_err(), "a topic past K");
        let body = encode(&[(1, 2), (6, 3)], 10, 4).unwrap();
        let mut out = Vec::new();
        let refused = |b: &[u8], m: usize, out: &mut Vec<Move>| decode(b, m, 10, 4, out).is_err();
        assert!(refused(&body, 3, &mut out), "another count");
        assert!(refused(&body, 1, &mut out), "another count");
        assert!(refused(&body[..body.len() - 1], 2, &mut out), "cut short");
        assert!(refused(&[], 0, &mut out), "empty");
        assert!(refused(&[9], 0, &mut out), "an unknown layout");
        let mut topic = body.clone();
        *topic.last_mut().unwrap() = 4;
        assert!(refused(&topic, 2, &mut out), "a topic past K");
        assert!(
            refused(&[GAPS, 10, 0], 1, &mut out),
            "a token past the worker's"
        );
        assert!(
            refused(&[BITMAP, 0, 4, 0], 1, &mut out),
            "a bit past the tokens"
        );
        assert!(
            refused(&[BITMAP, 1, 0, 0, 0], 1, &mut out),
            "a bitmap too long"
        );
        assert!(refused(&[GAPS, 0x80, 0], 1, &mut out), "a varint cut short");
        let padded = [GAPS, 0x80, 0, 0];
        assert!(refused(&padded, 1, &mut out), "a varint not canonical");
        decode(&body, 2, 10, 4, &mut out).unwrap();
        assert_eq!(out, vec![(1, 2), (6, 3)]);
    }

    /// Whatever a file holds, decoding ends in moves the worker can apply or an error: never a
    /// panic, and never a token or topic out of range or tokens out of order.
    #[test]
    fn random_bodies_decode_to_valid_moves_or_an_error() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut out = Vec::new();
        let mut decoded = 0;
        for _ in 0..20_000 {
            let (tokens, topics) = (
                rng.gen_range(1..40u32),
                [3, 300, 70_000][rng.gen_range(0..3)],
            );
            let len = rng.gen_range(0..24);
            let mut body: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if let Some(b) = body.first_mut() {
                *b %= 3;
            }
            let m = rng.gen_range(0..8);
            if decode(&body, m, tokens, topics, &mut out).is_ok() {
                decoded += 1;
                assert_eq!(out.len(), m);
                assert!(out.iter().all(|&(t, k)| t < tokens && k < topics));
                assert!(out.windows(2).all(|p| p[0].0 < p[1].0));
            }
        }
        assert!(decoded > 0, "no random body decoded");
    }
}
