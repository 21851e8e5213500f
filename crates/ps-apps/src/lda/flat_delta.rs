//! An LDA delta's `(word, topic, change)` entries flattened into the form the worker library
//! takes (the session's push). Pure; no I/O.

/// A delta's entries as the worker library takes them: the words they touch (ascending), and
/// each entry's index in those words' rows (`row * k + topic`) and change. The engines give
/// their entries sorted by (word, topic), each pair once and no zero change, and then this is
/// one pass; other entries are sorted and merged first. A topic of `k` or more would land in
/// the next row unnoticed: it is an error, whatever the order.
pub(super) fn flat_entries(entries: &[(u32, u32, i32)], k: u64) -> Result<FlatEntries, String> {
    if let Some(flat) = flat_if_sorted(entries, k)? {
        return Ok(flat);
    }
    if let Some(&(w, t, _)) = entries.iter().find(|e| u64::from(e.1) >= k) {
        return Err(topic_outside(w, t, k));
    }
    let mut v = entries.to_vec();
    v.sort_unstable_by_key(|e| (e.0, e.1));
    let mut merged: Vec<(u32, u32, i32)> = Vec::with_capacity(v.len());
    for (w, t, c) in v {
        match merged.last_mut() {
            Some(last) if (last.0, last.1) == (w, t) => last.2 += c,
            _ => merged.push((w, t, c)),
        }
    }
    merged.retain(|e| e.2 != 0);
    flat_if_sorted(&merged, k)?.ok_or_else(|| "the sorted delta is out of order".into())
}

/// Touched words, flat indices, changes.
pub(super) type FlatEntries = (Vec<u64>, Vec<u64>, Vec<f32>);

fn topic_outside(w: u32, t: u32, k: u64) -> String {
    format!("the delta names topic {t} of word {w}, outside the {k} topics")
}

/// [`flat_entries`] of entries that are strictly sorted with no zero change; `None` at the
/// first that is not.
fn flat_if_sorted(entries: &[(u32, u32, i32)], k: u64) -> Result<Option<FlatEntries>, String> {
    let mut touched: Vec<u64> = Vec::new();
    let mut at = Vec::with_capacity(entries.len());
    let mut values = Vec::with_capacity(entries.len());
    let mut last: Option<(u32, u32)> = None;
    for &(w, t, c) in entries {
        if u64::from(t) >= k {
            return Err(topic_outside(w, t, k));
        }
        if c == 0 || last.is_some_and(|l| l >= (w, t)) {
            return Ok(None);
        }
        last = Some((w, t));
        if touched.last() != Some(&u64::from(w)) {
            touched.push(u64::from(w));
        }
        at.push((touched.len() as u64 - 1) * k + u64::from(t));
        values.push(c as f32);
    }
    Ok(Some((touched, at, values)))
}

#[cfg(test)]
mod tests {
    use super::{flat_entries, flat_if_sorted};

    #[test]
    fn engine_deltas_flatten_in_one_pass_and_others_are_sorted_and_merged() {
        let k = 5;
        let good = [(1, 0, 2), (1, 3, -1), (4, 2, 5)];
        let want = (vec![1, 4], vec![0, 3, 7], vec![2.0, -1.0, 5.0]);
        assert_eq!(flat_if_sorted(&good, k).unwrap(), Some(want.clone()));
        assert_eq!(flat_entries(&good, k).unwrap(), want);
        let messy = [(4, 2, 5), (1, 3, -1), (1, 0, 2), (1, 3, 1), (2, 2, 0)];
        assert_eq!(flat_if_sorted(&messy, k).unwrap(), None);
        assert_eq!(
            flat_entries(&messy, k).unwrap(),
            (vec![1, 4], vec![0, 7], vec![2.0, 5.0])
        );
        assert_eq!(flat_entries(&[], k).unwrap(), (vec![], vec![], vec![]));
        // A topic past K is an error, sorted or not, even where its changes cancel.
        assert!(flat_entries(&[(1, 0, 2), (1, 5, 1)], k).is_err());
        assert!(flat_entries(&[(4, 2, 5), (1, 9, 3), (1, 9, -3)], k).is_err());
    }
}
