//! Ratings, file loaders, and train/test/worker splits (the synthetic generator is in
//! `synth.rs`).

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::seed::mix64;

/// One observed rating. `user` and `item` are dense 0-based indices.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    /// User index (global, or local to a worker inside a [`WorkerShard`]).
    pub user: u32,
    /// Global item index (row of the parameter-server item table).
    pub item: u32,
    /// Observed rating value.
    pub value: f32,
}

/// Users and items are dense 0-based indices after loading (file ids are
/// remapped: sorted unique ids -> 0..n, deterministic).
#[derive(Debug, Clone)]
pub struct RatingSet {
    /// All ratings.
    pub ratings: Vec<Rating>,
    /// Number of distinct users; every `Rating::user` is `< num_users`.
    pub num_users: u32,
    /// Number of distinct items; every `Rating::item` is `< num_items`.
    pub num_items: u32,
}

// ---------------------------------------------------------------------------
// Loaders
// ---------------------------------------------------------------------------

/// The on-disk rating formats understood by [`load_ratings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatingFormat {
    /// MovieLens 100k `u.data`: `user<TAB>item<TAB>rating<TAB>timestamp`.
    Tab,
    /// MovieLens `ratings.csv`: header `userId,movieId,rating,timestamp`, then
    /// `user,item,rating,timestamp`.
    CsvHeader,
    /// MovieLens 1M/10M `ratings.dat`: `user::item::rating::timestamp`.
    DoubleColon,
    /// Plain `user,item,rating` (no header).
    Plain3,
    /// Plain `user,item,rating,timestamp` (no header).
    Plain4,
}

impl RatingFormat {
    fn separator(self) -> &'static str {
        match self {
            RatingFormat::Tab => "\t",
            RatingFormat::DoubleColon => "::",
            RatingFormat::CsvHeader | RatingFormat::Plain3 | RatingFormat::Plain4 => ",",
        }
    }

    fn fields(self) -> usize {
        match self {
            RatingFormat::Plain3 => 3,
            _ => 4,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            RatingFormat::Tab => "tab-separated user item rating timestamp",
            RatingFormat::CsvHeader => "ratings.csv userId,movieId,rating,timestamp",
            RatingFormat::DoubleColon => "user::item::rating::timestamp",
            RatingFormat::Plain3 => "plain user,item,rating",
            RatingFormat::Plain4 => "plain user,item,rating,timestamp",
        }
    }
}

fn is_header(line: &str) -> bool {
    let fields: Vec<String> = line
        .split(',')
        .map(|f| f.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    fields.first().map(String::as_str) == Some("userid")
}

/// Detects the format from the first non-empty, non-comment line. Returns
/// `Err(reason)` when the line matches no known format.
fn detect_format(first: &str) -> Result<RatingFormat, String> {
    if first.contains("::") {
        Ok(RatingFormat::DoubleColon)
    } else if first.contains('\t') {
        Ok(RatingFormat::Tab)
    } else if first.contains(',') {
        if is_header(first) {
            let fields: Vec<String> = first
                .split(',')
                .map(|f| f.trim().trim_matches('"').to_ascii_lowercase())
                .collect();
            if fields.len() == 4 && fields[1] == "movieid" && fields[2] == "rating" {
                Ok(RatingFormat::CsvHeader)
            } else {
                Err(format!(
                    "unrecognised header {first:?} (expected userId,movieId,rating,timestamp)"
                ))
            }
        } else {
            match first.split(',').count() {
                3 => Ok(RatingFormat::Plain3),
                4 => Ok(RatingFormat::Plain4),
                n => Err(format!(
                    "cannot detect format: comma-separated line has {n} fields \
                     (expected user,item,rating or user,item,rating,timestamp)"
                )),
            }
        }
    } else {
        Err(format!(
            "cannot detect format from first line {first:?} \
             (expected tab, '::' or comma separated fields)"
        ))
    }
}

/// A rating with its original (file) ids.
struct RawRating {
    user: u64,
    item: u64,
    value: f32,
}

fn parse_line(line: &str, format: RatingFormat) -> Result<RawRating, String> {
    let fields: Vec<&str> = line.split(format.separator()).map(str::trim).collect();
    if fields.len() != format.fields() {
        return Err(format!(
            "wrong field count: expected {} fields ({}), found {}",
            format.fields(),
            format.describe(),
            fields.len()
        ));
    }
    let user = fields[0]
        .parse::<u64>()
        .map_err(|_| format!("non-numeric user id {:?}", fields[0]))?;
    let item = fields[1]
        .parse::<u64>()
        .map_err(|_| format!("non-numeric item id {:?}", fields[1]))?;
    let value = fields[2]
        .parse::<f32>()
        .map_err(|_| format!("non-numeric rating {:?}", fields[2]))?;
    if !value.is_finite() {
        return Err(format!("non-finite rating {:?}", fields[2]));
    }
    if let Some(ts) = fields.get(3) {
        ts.parse::<i64>()
            .map_err(|_| format!("non-integer timestamp {ts:?}"))?;
    }
    Ok(RawRating { user, item, value })
}

/// Sorted unique ids -> dense index via binary search.
fn dense_ids(path: &str, what: &'static str, ids: &mut Vec<u64>) -> Result<u32, DataError> {
    ids.sort_unstable();
    ids.dedup();
    u32::try_from(ids.len()).map_err(|_| DataError::TooManyIds {
        path: path.to_string(),
        what,
        count: ids.len(),
    })
}

/// Loads MovieLens `u.data` (tab-separated `user item rating timestamp`),
/// `ratings.csv` (comma, header line `userId,movieId,rating,timestamp`),
/// `ratings.dat` (`user::item::rating::timestamp`) and plain
/// `user,item,rating` (comma, no header; `user,item,rating,timestamp` is also
/// accepted).
///
/// The format is detected from the content (the first non-empty line that is
/// not a `#` comment). Blank lines and lines starting with `#` are skipped in
/// every format; `\r\n` line endings are accepted and fields are trimmed.
/// User and item ids must be non-negative integers and are remapped to dense
/// indices (sorted unique ids -> `0..n`). Duplicate (user, item) pairs are
/// kept as they are.
///
/// Every malformed line yields [`DataError::Malformed`] naming the file path,
/// the 1-based line number and what is wrong (wrong field count, non-numeric
/// id, non-finite rating, non-integer timestamp, invalid UTF-8). A file
/// without ratings yields [`DataError::Empty`].
pub fn load_ratings(path: &Path) -> Result<RatingSet, DataError> {
    let path_str = path.display().to_string();
    Ok(densify(&path_str, &read_raw(path)?)?.0)
}

/// [`load_ratings`] on an in-memory or already open file; `path` only names it in errors.
pub fn parse_ratings<R: BufRead>(reader: R, path: &str) -> Result<RatingSet, DataError> {
    Ok(densify(path, &read_raw_from(reader, path)?)?.0)
}

/// Ratings with dense ids (sorted unique ids -> `0..n`), and the sorted user and item ids.
fn densify(path: &str, raw: &[RawRating]) -> Result<(RatingSet, Vec<u64>, Vec<u64>), DataError> {
    let mut user_ids: Vec<u64> = raw.iter().map(|r| r.user).collect();
    let mut item_ids: Vec<u64> = raw.iter().map(|r| r.item).collect();
    let num_users = dense_ids(path, "user", &mut user_ids)?;
    let num_items = dense_ids(path, "item", &mut item_ids)?;
    let ratings = raw
        .iter()
        .map(|r| Rating {
            // The ids are present by construction; binary_search cannot miss.
            user: user_ids.binary_search(&r.user).unwrap_or(0) as u32,
            item: item_ids.binary_search(&r.item).unwrap_or(0) as u32,
            value: r.value,
        })
        .collect();
    let set = RatingSet {
        ratings,
        num_users,
        num_items,
    };
    Ok((set, user_ids, item_ids))
}

/// A held-out rating whose user, item or both never occur in the training file: the model
/// has no factors for it and predicts it from the mean and the biases it has
/// ([`super::Layout::predict_cold`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColdRating {
    /// Dense user index, if the user has training ratings (global, or local to a worker
    /// inside [`WorkerShard::cold`]).
    pub user: Option<u32>,
    /// Dense item index, if the item has training ratings.
    pub item: Option<u32>,
    /// The user's id in the file (places an unknown user on a worker).
    pub file_user: u64,
    pub value: f32,
}

/// Training ratings from one file and held-out ratings from another.
#[derive(Debug, Clone)]
pub struct TrainTest {
    /// The training ratings; ids are dense over the training file alone.
    pub train: RatingSet,
    /// Held-out ratings of users and items that both occur in training.
    pub test: Vec<Rating>,
    /// Held-out ratings with a user or an item (or both) never seen in training.
    pub cold: Vec<ColdRating>,
}

/// Loads a training file and a held-out file (each in any format [`load_ratings`] reads).
/// Ids are made dense over the training file; a held-out rating of a user or item that is
/// not in it is kept in [`TrainTest::cold`], not dropped.
pub fn load_train_test(train: &Path, test: &Path) -> Result<TrainTest, DataError> {
    let (set, user_ids, item_ids) = densify(&train.display().to_string(), &read_raw(train)?)?;
    let mut held = Vec::new();
    let mut cold = Vec::new();
    for r in read_raw(test)? {
        let user = user_ids.binary_search(&r.user).ok().map(|i| i as u32);
        let item = item_ids.binary_search(&r.item).ok().map(|i| i as u32);
        match (user, item) {
            (Some(user), Some(item)) => held.push(Rating {
                user,
                item,
                value: r.value,
            }),
            _ => cold.push(ColdRating {
                user,
                item,
                file_user: r.user,
                value: r.value,
            }),
        }
    }
    Ok(TrainTest {
        train: set,
        test: held,
        cold,
    })
}

/// Every rating of a file, with the ids as written.
fn read_raw(path: &Path) -> Result<Vec<RawRating>, DataError> {
    let path_str = path.display().to_string();
    let io_err = |source| DataError::Io {
        path: path_str.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    read_raw_from(BufReader::new(file), &path_str)
}

/// Every rating of a reader, with the ids as written; `path_str` names it in errors.
fn read_raw_from<R: BufRead>(mut reader: R, path_str: &str) -> Result<Vec<RawRating>, DataError> {
    let io_err = |source| DataError::Io {
        path: path_str.to_string(),
        source,
    };
    let malformed = |line: u64, reason: String| DataError::Malformed {
        path: path_str.to_string(),
        line,
        reason,
    };

    let mut format: Option<RatingFormat> = None;
    let mut raw: Vec<RawRating> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut line_no: u64 = 0;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let text = std::str::from_utf8(&buf)
            .map_err(|e| malformed(line_no, format!("invalid UTF-8: {e}")))?;
        let text = text.trim_end_matches(['\n', '\r']);
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fmt = match format {
            Some(f) => f,
            None => {
                let f = detect_format(text).map_err(|r| malformed(line_no, r))?;
                format = Some(f);
                if f == RatingFormat::CsvHeader {
                    continue; // the header line itself
                }
                f
            }
        };
        let r = parse_line(text, fmt).map_err(|r| malformed(line_no, r))?;
        raw.push(r);
    }
    if raw.is_empty() {
        return Err(DataError::Empty {
            path: path_str.to_string(),
        });
    }
    Ok(raw)
}

// ---------------------------------------------------------------------------
// Splits
// ---------------------------------------------------------------------------

/// Deterministic (seeded hash of (user,item)) split: about `test_fraction`
/// of the ratings go to test (second element), the rest to train (first).
/// Relative order is preserved in both halves. `test_fraction <= 0` puts
/// everything in train, `>= 1` everything in test.
pub fn split_train_test(
    set: &RatingSet,
    test_fraction: f64,
    seed: u64,
) -> (Vec<Rating>, Vec<Rating>) {
    split_train_test_owned(set.ratings.clone(), test_fraction, seed)
}

/// [`split_train_test`] of ratings it owns: the training half is what is left of `ratings`,
/// so a set of 100 M ratings is not copied (a gigabyte, and seconds of page faults).
pub fn split_train_test_owned(
    mut ratings: Vec<Rating>,
    test_fraction: f64,
    seed: u64,
) -> (Vec<Rating>, Vec<Rating>) {
    let mut test = Vec::new();
    let salt = mix64(seed ^ 0x5EED_5EED_5EED_5EED);
    ratings.retain(|r| {
        let h = mix64(salt ^ mix64((u64::from(r.user) << 32) | u64::from(r.item)));
        // Top 53 bits -> uniform in [0, 1).
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        if u < test_fraction {
            test.push(*r);
        }
        u >= test_fraction
    });
    (ratings, test)
}

/// The ratings of worker `w` of `workers` (users assigned by
/// `user % workers == w`), for train and test.
///
/// Ratings in a `WorkerShard` use the LOCAL user index (position in
/// `users`) and the global item index.
#[derive(Debug, Clone)]
pub struct WorkerShard {
    /// Global user ids this worker owns, ascending (every owned user that
    /// appears in train or test).
    pub users: Vec<u32>,
    /// Training ratings (local user index, global item), in input order.
    pub train: Vec<Rating>,
    /// Test ratings (local user index, global item), in input order.
    pub test: Vec<Rating>,
    /// Held-out ratings with a user or item unseen in training (see [`worker_cold`]); empty
    /// until a caller adds them.
    pub cold: Vec<ColdRating>,
}

/// The worker of `workers` that owns `user` (its ratings and its factors): `user % workers`.
pub fn owner_of(user: u32, workers: u32) -> u32 {
    user % workers.max(1)
}

/// The cold ratings of worker `w` of `workers`, users made local to `shard`: a known user's
/// go to the worker that owns the user (`user % workers`), an unknown user's to
/// `file id % workers`, so each is counted once over the job.
pub fn worker_cold(
    cold: &[ColdRating],
    shard: &WorkerShard,
    workers: u32,
    w: u32,
) -> Vec<ColdRating> {
    let workers = workers.max(1);
    cold.iter()
        .filter_map(|c| match c.user {
            Some(u) if owner_of(u, workers) == w => Some(ColdRating {
                user: shard.users.binary_search(&u).ok().map(|i| i as u32),
                ..*c
            }),
            Some(_) => None,
            None => (c.file_user % u64::from(workers) == u64::from(w)).then_some(*c),
        })
        .collect()
}

/// Builds the shard of worker `w` of `workers`: the users with
/// `user % workers == w` that appear in `train` or `test`, and their ratings
/// re-indexed to local user indices (input order is preserved).
///
/// # Panics
/// If `workers == 0` or `w >= workers` (caller bug, not data-dependent).
pub fn worker_shard(train: &[Rating], test: &[Rating], workers: u32, w: u32) -> WorkerShard {
    worker_shard_owned(train.to_vec(), test.to_vec(), workers, w)
}

/// [`worker_shard`] of ratings it owns: the worker's ratings are what is left of `train` and
/// `test`, re-indexed in place (no copy of a 100 M-rating set).
///
/// # Panics
/// As [`worker_shard`].
pub fn worker_shard_owned(
    mut train: Vec<Rating>,
    mut test: Vec<Rating>,
    workers: u32,
    w: u32,
) -> WorkerShard {
    assert!(workers > 0, "worker_shard: workers must be > 0");
    assert!(
        w < workers,
        "worker_shard: w ({w}) must be < workers ({workers})"
    );
    let mine = |r: &Rating| owner_of(r.user, workers) == w;
    // Marks over the user ids, then each owned user's local index (linear: a sort of 100 M
    // user ids took seconds).
    let ids = train.iter().chain(&test).map(|r| r.user as usize + 1).max();
    let mut local = vec![u32::MAX; ids.unwrap_or(0)];
    for r in train.iter().chain(&test).filter(|r| mine(r)) {
        local[r.user as usize] = 0;
    }
    let mut users: Vec<u32> = Vec::new();
    for (u, l) in local.iter_mut().enumerate() {
        if *l != u32::MAX {
            *l = users.len() as u32;
            users.push(u as u32);
        }
    }
    for rs in [&mut train, &mut test] {
        rs.retain_mut(|r| {
            let keep = mine(r);
            if keep {
                r.user = local[r.user as usize];
            }
            keep
        });
        // What was the whole set's buffer shrinks to the worker's share (the session keeps
        // it all job: from a file, every worker reads every rating).
        rs.shrink_to_fit();
    }
    WorkerShard {
        users,
        train,
        test,
        cold: Vec::new(),
    }
}
