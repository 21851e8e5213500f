//! Error feedback: what a lossy codec does not send stays in a per-block residual and is added to
//! the next delta, so nothing is lost, only delayed.

use super::{check_inputs, encode_checked, format, CodecChain};
use crate::error::ProtoError;

/// The residual of one block (one table's rows on one worker, as the caller lays them out).
///
/// Invariant, over any sequence of `compress` calls with finite deltas:
/// `sum(decoded payloads) + residual == sum(deltas)` up to float rounding. A non-finite entry
/// that is sent (±inf or NaN, transmitted as-is; a block format sends its whole group as NaN)
/// leaves a residual of 0 rather than NaN, for it and for the rest of such a group.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorFeedback {
    residual: Vec<f32>,
}

impl ErrorFeedback {
    /// A zero residual for a block of `n` values.
    pub fn new(n: usize) -> Self {
        ErrorFeedback {
            residual: vec![0.0; n],
        }
    }

    pub fn residual(&self) -> &[f32] {
        &self.residual
    }

    pub fn len(&self) -> usize {
        self.residual.len()
    }

    pub fn is_empty(&self) -> bool {
        self.residual.is_empty()
    }

    /// Forgets the residual (e.g. after the table was reset).
    pub fn clear(&mut self) {
        self.residual.fill(0.0);
    }

    /// `residual += delta`; encodes the residual with `chain` into `out`; `residual -= decoded(sent)`.
    /// Returns the bytes appended. `current` is for a filter stage. Errors (bad chain, wrong
    /// lengths, missing `current`) are reported before anything changes.
    pub fn compress(
        &mut self,
        chain: &CodecChain,
        delta: &[f32],
        current: Option<&[f32]>,
        out: &mut Vec<u8>,
    ) -> Result<usize, ProtoError> {
        let n = self.residual.len();
        if delta.len() != n {
            return Err(ProtoError::Codec(format!(
                "delta of {} values for a residual of {n}",
                delta.len()
            )));
        }
        check_inputs(chain, n, current)?;
        for (r, d) in self.residual.iter_mut().zip(delta) {
            *r += *d;
        }
        let start = out.len();
        let sent = encode_checked(chain, &self.residual, current, out);
        // What the receiver will add: the values decoded back from the bytes just written.
        let m = if sent.dense_values { n } else { sent.count };
        let mut q = vec![0f32; m];
        format::read_values(sent.format, &out[sent.values_at..], &mut q)?;
        #[inline(always)]
        fn take(r: &mut f32, q: f32) {
            *r = if r.is_finite() && q.is_finite() {
                *r - q
            } else {
                0.0
            };
        }
        match (&sent.selection, sent.dense_values) {
            (None, _) => {
                for (r, &q) in self.residual.iter_mut().zip(&q) {
                    take(r, q);
                }
            }
            (Some(sel), true) => {
                for &i in sel {
                    take(&mut self.residual[i as usize], q[i as usize]);
                }
            }
            (Some(sel), false) => {
                for (&i, &q) in sel.iter().zip(&q) {
                    take(&mut self.residual[i as usize], q);
                }
            }
        }
        Ok(out.len() - start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, Decoded};

    #[test]
    fn residual_keeps_what_was_not_sent() {
        let chain: CodecChain = "topk:1".parse().unwrap();
        let mut ef = ErrorFeedback::new(3);
        let mut out = Vec::new();
        ef.compress(&chain, &[1.0, -3.0, 2.0], None, &mut out)
            .unwrap();
        assert_eq!(ef.residual(), &[1.0, 0.0, 2.0]);
        assert_eq!(
            decode(chain.wire_id(), &out, 3).unwrap(),
            Decoded::Sparse {
                indices: vec![1],
                values: vec![-3.0]
            }
        );
        out.clear();
        ef.compress(&chain, &[0.5, 0.0, 0.0], None, &mut out)
            .unwrap();
        assert_eq!(ef.residual(), &[1.5, 0.0, 0.0]);
    }

    #[test]
    fn saturation_and_non_finite() {
        let chain: CodecChain = "f16".parse().unwrap();
        let mut ef = ErrorFeedback::new(3);
        let mut out = Vec::new();
        ef.compress(&chain, &[70000.0, f32::INFINITY, f32::NAN], None, &mut out)
            .unwrap();
        assert_eq!(ef.residual(), &[70000.0 - 65504.0, 0.0, 0.0]);
        let Decoded::Dense(d) = decode(2, &out, 3).unwrap() else {
            panic!()
        };
        assert_eq!(d[0], 65504.0);
        assert_eq!(d[1], f32::INFINITY);
        assert!(d[2].is_nan());
    }

    #[test]
    fn errors_change_nothing() {
        let mut ef = ErrorFeedback::new(2);
        let mut out = Vec::new();
        let f: CodecChain = "filter:0.1".parse().unwrap();
        assert!(ef.compress(&f, &[1.0, 1.0], None, &mut out).is_err());
        assert!(ef.compress(&f, &[1.0], Some(&[1.0]), &mut out).is_err());
        assert_eq!(ef.residual(), &[0.0, 0.0]);
        assert!(out.is_empty());
    }
}
