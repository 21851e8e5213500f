//! Slurm host lists (`SLURM_JOB_NODELIST`): `node[01-03,07],gpu5,a[1-2]b` expands to `node01`,
//! `node02`, `node03`, `node07`, `gpu5`, `a1b`, `a2b`. Pure.
//!
//! The forms understood are Slurm's: comma-separated items (commas inside brackets belong to the
//! bracket), each a name with any number of bracket groups of numbers and ranges. A range keeps
//! the width of its first bound (`[08-10]` gives `08`, `09`, `10`); several groups in one item
//! give their product in order (`r[1-2]n[1-2]` gives `r1n1`, `r1n2`, `r2n1`, `r2n2`).

use thiserror::Error;

/// The most hosts one list may expand to (a typo such as `n[1-999999999]` is an error, not an
/// allocation).
pub const MAX_HOSTS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HostlistError {
    #[error("empty host list")]
    Empty,
    #[error("empty host name in {list:?}")]
    EmptyItem { list: String },
    #[error("unbalanced brackets in {item:?}")]
    Unbalanced { item: String },
    #[error("bad range {range:?} in {item:?}: {why}")]
    BadRange {
        item: String,
        range: String,
        why: &'static str,
    },
    #[error("host list expands to more than {MAX_HOSTS} hosts")]
    TooMany,
}

/// Expands a Slurm host list into host names, in order.
pub fn expand(list: &str) -> Result<Vec<String>, HostlistError> {
    let list = list.trim();
    if list.is_empty() {
        return Err(HostlistError::Empty);
    }
    let mut hosts = Vec::new();
    for item in split_top_level(list)? {
        if item.is_empty() {
            return Err(HostlistError::EmptyItem { list: list.into() });
        }
        expand_item(item, item, String::new(), &mut hosts)?;
    }
    Ok(hosts)
}

/// Splits at commas outside brackets.
fn split_top_level(list: &str) -> Result<Vec<&str>, HostlistError> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0u32, 0usize);
    for (i, c) in list.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            ']' if depth == 1 => depth = 0,
            '[' | ']' => return Err(HostlistError::Unbalanced { item: list.into() }),
            ',' if depth == 0 => {
                items.push(list[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(HostlistError::Unbalanced { item: list.into() });
    }
    items.push(list[start..].trim());
    Ok(items)
}

/// Appends every expansion of `rest` (the part of `item` after `prefix`) to `out`.
fn expand_item(
    item: &str,
    rest: &str,
    prefix: String,
    out: &mut Vec<String>,
) -> Result<(), HostlistError> {
    let Some(open) = rest.find('[') else {
        if rest.contains(']') {
            return Err(HostlistError::Unbalanced { item: item.into() });
        }
        if out.len() >= MAX_HOSTS {
            return Err(HostlistError::TooMany);
        }
        out.push(prefix + rest);
        return Ok(());
    };
    let close = rest[open..]
        .find(']')
        .map(|c| open + c)
        .ok_or_else(|| HostlistError::Unbalanced { item: item.into() })?;
    let head = &rest[..open];
    if head.contains(']') {
        return Err(HostlistError::Unbalanced { item: item.into() });
    }
    let tail = &rest[close + 1..];
    for value in expand_ranges(item, &rest[open + 1..close])? {
        expand_item(item, tail, format!("{prefix}{head}{value}"), out)?;
    }
    Ok(())
}

/// `01-03,07` -> `01`, `02`, `03`, `07`.
fn expand_ranges(item: &str, inner: &str) -> Result<Vec<String>, HostlistError> {
    let bad = |range: &str, why| HostlistError::BadRange {
        item: item.into(),
        range: range.into(),
        why,
    };
    let mut values = Vec::new();
    for range in inner.split(',').map(str::trim) {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(lo) || !digits(hi) {
            return Err(bad(range, "expected N or N-M with decimal numbers"));
        }
        let (a, b) = match (lo.parse::<u64>(), hi.parse::<u64>()) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return Err(bad(range, "number too large")),
        };
        if a > b {
            return Err(bad(range, "the range runs backwards"));
        }
        if b - a >= MAX_HOSTS as u64 || values.len() + (b - a) as usize >= MAX_HOSTS {
            return Err(HostlistError::TooMany);
        }
        let width = lo.len();
        values.extend((a..=b).map(|n| format!("{n:0width$}")));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(list: &str) -> Vec<String> {
        expand(list).unwrap_or_else(|e| panic!("{list}: {e}"))
    }

    #[test]
    fn single_names_and_plain_lists() {
        assert_eq!(ok("localhost"), ["localhost"]);
        assert_eq!(ok("gpu5"), ["gpu5"]);
        assert_eq!(ok("a,b.example.org, c"), ["a", "b.example.org", "c"]);
    }

    #[test]
    fn ranges_keep_padding_and_order() {
        assert_eq!(
            ok("node[01-03,07],gpu5,a[1-2]b"),
            ["node01", "node02", "node03", "node07", "gpu5", "a1b", "a2b"]
        );
        assert_eq!(ok("n[8-10]"), ["n8", "n9", "n10"]);
        assert_eq!(ok("n[08-10]"), ["n08", "n09", "n10"]);
        assert_eq!(ok("n[5]"), ["n5"]);
        assert_eq!(ok("n[098-101]"), ["n098", "n099", "n100", "n101"]);
    }

    #[test]
    fn several_groups_give_their_product() {
        assert_eq!(ok("r[1-2]n[1-2],x"), ["r1n1", "r1n2", "r2n1", "r2n2", "x"]);
    }

    #[test]
    fn malformed_lists_are_errors_not_panics() {
        for bad in [
            "",
            " ",
            "n[1-3",
            "n1-3]",
            "n[[1]]",
            "n[]",
            "n[a-b]",
            "n[3-1]",
            "n[1-]",
            "a,,b",
            "n[-1]",
            "n]1[",
            "n[1-99999999999999999999]",
        ] {
            assert!(expand(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            expand("n[3-1]").unwrap_err().to_string(),
            "bad range \"3-1\" in \"n[3-1]\": the range runs backwards"
        );
        assert_eq!(expand("n[1-1000000]"), Err(HostlistError::TooMany));
    }
}
