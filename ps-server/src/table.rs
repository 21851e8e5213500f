//! A dense f32 table slice: the rows `range` of a `rows x width` table, held by one shard.

use crate::init;
use crate::rules;
use ps_proto::{KeyRange, ProtoError, TableSpec};

#[derive(Debug, Clone)]
pub struct DenseTable {
    pub spec: TableSpec,
    pub range: KeyRange,
    data: Vec<f32>,
}

impl DenseTable {
    pub fn new(spec: TableSpec, range: KeyRange) -> DenseTable {
        let width = spec.width as usize;
        let mut data = vec![0f32; range.len() as usize * width];
        init::fill(spec.init, spec.id, range.start, spec.width, &mut data);
        DenseTable { spec, range, data }
    }

    pub fn width(&self) -> u32 {
        self.spec.width
    }

    /// Checks that a request's width and keys fit this slice; nothing is changed.
    pub fn check(&self, width: u32, keys: &[u64]) -> Result<(), ProtoError> {
        if width != self.spec.width {
            return Err(ProtoError::WrongWidth {
                table: self.spec.id,
                expected: self.spec.width,
                got: width,
            });
        }
        if let Some(&key) = keys.iter().find(|k| !self.range.contains(**k)) {
            return Err(ProtoError::KeyOutOfRange {
                table: self.spec.id,
                key,
                start: self.range.start,
                end: self.range.end,
            });
        }
        Ok(())
    }

    fn row_mut(&mut self, key: u64) -> &mut [f32] {
        let w = self.spec.width as usize;
        let i = (key - self.range.start) as usize * w;
        &mut self.data[i..i + w]
    }

    /// Appends the rows of `keys` (already checked) to `out`.
    pub fn read_into(&self, keys: &[u64], out: &mut Vec<f32>) {
        let w = self.spec.width as usize;
        out.reserve(keys.len() * w);
        for &k in keys {
            let i = (k - self.range.start) as usize * w;
            out.extend_from_slice(&self.data[i..i + w]);
        }
    }

    /// Applies one delta row per key (already checked) with the table's rule.
    pub fn apply(&mut self, keys: &[u64], values: &[f32]) {
        let w = self.spec.width as usize;
        let rule = self.spec.rule;
        if keys.len() > 1 && keys.windows(2).all(|p| p[1] == p[0] + 1) {
            // Contiguous rows: one long slice operation.
            let i = (keys[0] - self.range.start) as usize * w;
            rules::apply(rule, &mut self.data[i..i + keys.len() * w], values);
            return;
        }
        for (k, d) in keys.iter().zip(values.chunks_exact(w)) {
            rules::apply(rule, self.row_mut(*k), d);
        }
    }

    /// The whole slice, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
}
