//! Corpora: the bag-of-words loaders and the worker split (the synthetic generator is in
//! `synth.rs`).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};

use crate::error::DataError;

/// Largest count accepted on a single line of a corpus file (one word in
/// one document). Larger counts are rejected as malformed.
pub const MAX_COUNT: u64 = 1_000_000;
/// Largest total number of tokens a corpus file may hold (2^31; 8 GiB of
/// `u32` word ids). A file that declares more is rejected as malformed at
/// the line that crosses the limit, before the memory is allocated.
pub const MAX_TOKENS: u64 = 1 << 31;
/// Largest number of documents a corpus file may declare (2^24).
pub const MAX_DOCS: u64 = 1 << 24;
/// Largest vocabulary size a corpus file may declare or use (2^24 rows in
/// the word-topic table).
pub const MAX_VOCAB: u64 = 1 << 24;

/// A bag-of-words corpus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Corpus {
    /// One entry per document: its tokens as word ids (`< vocab_size`), a
    /// word repeated once per occurrence.
    pub docs: Vec<Vec<u32>>,
    /// Number of rows of the word-topic table; every word id is below it.
    pub vocab_size: u32,
    /// The words (`vocab[id]`), when a vocabulary file was given.
    pub vocab: Option<Vec<String>>,
}

impl Corpus {
    /// Total number of tokens over all documents.
    pub fn num_tokens(&self) -> u64 {
        self.docs.iter().map(|d| d.len() as u64).sum()
    }

    /// Number of documents (including empty ones).
    pub fn num_docs(&self) -> usize {
        self.docs.len()
    }
}

// ---------------------------------------------------------------------------
// Line reading helpers
// ---------------------------------------------------------------------------

/// Opens `path` for line reading, transparently decompressing gzip when the
/// name ends in `.gz` or the content starts with the gzip magic `1f 8b`.
fn open_text(path: &Path) -> Result<Box<dyn BufRead>, DataError> {
    let path_str = path.display().to_string();
    let io_err = |source| DataError::Io {
        path: path_str.clone(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let mut reader = BufReader::new(file);
    let magic = reader
        .fill_buf()
        .map_err(io_err)?
        .starts_with(&[0x1f, 0x8b]);
    let gz_name = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    if magic || gz_name {
        Ok(Box::new(BufReader::new(MultiGzDecoder::new(reader))))
    } else {
        Ok(Box::new(reader))
    }
}

/// A line reader that tracks 1-based line numbers and reports errors with
/// the file path.
struct LineReader<R> {
    reader: R,
    path: String,
    buf: Vec<u8>,
    line_no: u64,
}

impl<R: BufRead> LineReader<R> {
    fn new(reader: R, path: &str) -> Self {
        LineReader {
            reader,
            path: path.to_string(),
            buf: Vec::new(),
            line_no: 0,
        }
    }

    fn malformed(&self, line: u64, reason: impl Into<String>) -> DataError {
        DataError::Malformed {
            path: self.path.clone(),
            line,
            reason: reason.into(),
        }
    }

    /// The next line without its line terminator, or `None` at end of file.
    fn next_line(&mut self) -> Result<Option<&str>, DataError> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| DataError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        match std::str::from_utf8(&self.buf) {
            Ok(s) => Ok(Some(s.trim_end_matches(['\n', '\r']))),
            Err(e) => Err(DataError::Malformed {
                path: self.path.clone(),
                line: self.line_no,
                reason: format!("invalid UTF-8: {e}"),
            }),
        }
    }
}

fn parse_u64(field: &str, what: &str) -> Result<u64, String> {
    field
        .parse::<u64>()
        .map_err(|_| format!("invalid {what} {field:?} (expected a non-negative integer)"))
}

fn check_count(count: u64) -> Result<(), String> {
    if count == 0 {
        Err("count must be >= 1".to_string())
    } else if count > MAX_COUNT {
        Err(format!("count {count} exceeds the limit {MAX_COUNT}"))
    } else {
        Ok(())
    }
}

fn add_tokens(total: &mut u64, count: u64) -> Result<(), String> {
    *total += count;
    if *total > MAX_TOKENS {
        Err(format!("total token count exceeds the limit {MAX_TOKENS}"))
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// UCI bag-of-words
// ---------------------------------------------------------------------------

/// Parses the UCI bag-of-words `docword` format from a reader; `path` only
/// names the source in errors. See [`load_uci`].
pub fn parse_uci_docword<R: BufRead>(reader: R, path: &str) -> Result<Corpus, DataError> {
    let mut lines = LineReader::new(reader, path);
    let names = ["D (number of documents)", "W (vocabulary size)", "NNZ"];
    let mut header = [0u64; 3];
    let mut nnz_line = 0u64;
    let mut got = 0usize;
    while got < 3 {
        let line_no = lines.line_no + 1;
        let Some(text) = lines.next_line()? else {
            if got == 0 {
                return Err(DataError::Empty {
                    path: path.to_string(),
                });
            }
            return Err(lines.malformed(
                line_no,
                format!("unexpected end of file: missing header line {}", names[got]),
            ));
        };
        let t = text.trim();
        if t.is_empty() {
            continue;
        }
        let mut fields = t.split_ascii_whitespace();
        let v = fields
            .next()
            .ok_or_else(|| format!("missing header {}", names[got]))
            .and_then(|f| parse_u64(f, names[got]));
        let v = match v {
            Ok(v) if fields.next().is_none() => v,
            Ok(_) => {
                return Err(lines.malformed(
                    line_no,
                    format!("header line {} must hold a single integer", names[got]),
                ))
            }
            Err(r) => return Err(lines.malformed(line_no, r)),
        };
        header[got] = v;
        if got == 2 {
            nnz_line = line_no;
        }
        got += 1;
    }
    let [num_docs, vocab, nnz] = header;
    if num_docs > MAX_DOCS {
        return Err(lines.malformed(
            nnz_line - 2,
            format!("D = {num_docs} exceeds the limit {MAX_DOCS}"),
        ));
    }
    if vocab > MAX_VOCAB {
        return Err(lines.malformed(
            nnz_line - 1,
            format!("W = {vocab} exceeds the limit {MAX_VOCAB}"),
        ));
    }

    let mut entries: Vec<(u32, u32, u32)> = Vec::new();
    let mut total = 0u64;
    loop {
        let line_no = lines.line_no + 1;
        let Some(text) = lines.next_line()? else {
            break;
        };
        let t = text.trim();
        if t.is_empty() {
            continue;
        }
        let parsed = (|| -> Result<(u32, u32, u32), String> {
            if entries.len() as u64 >= nnz {
                return Err(format!("more entries than the header's NNZ = {nnz}"));
            }
            let f: Vec<&str> = t.split_ascii_whitespace().collect();
            if f.len() != 3 {
                return Err(format!(
                    "expected 3 fields `docID wordID count`, found {}",
                    f.len()
                ));
            }
            let d = parse_u64(f[0], "docID")?;
            let w = parse_u64(f[1], "wordID")?;
            let c = parse_u64(f[2], "count")?;
            if d == 0 || d > num_docs {
                return Err(format!("docID {d} out of range 1..={num_docs}"));
            }
            if w == 0 || w > vocab {
                return Err(format!("wordID {w} out of range 1..={vocab}"));
            }
            check_count(c)?;
            add_tokens(&mut total, c)?;
            Ok(((d - 1) as u32, (w - 1) as u32, c as u32))
        })();
        match parsed {
            Ok(e) => entries.push(e),
            Err(r) => return Err(lines.malformed(line_no, r)),
        }
    }
    if (entries.len() as u64) < nnz {
        return Err(lines.malformed(
            nnz_line,
            format!(
                "header declares NNZ = {nnz} but the file has {} entries",
                entries.len()
            ),
        ));
    }
    if total == 0 {
        return Err(DataError::Empty {
            path: path.to_string(),
        });
    }
    let mut docs: Vec<Vec<u32>> = vec![Vec::new(); num_docs as usize];
    for (d, w, c) in entries {
        let doc = &mut docs[d as usize];
        doc.resize(doc.len() + c as usize, w);
    }
    Ok(Corpus {
        docs,
        vocab_size: vocab as u32,
        vocab: None,
    })
}

/// Reads a vocabulary file: one word per line (line `i` is word id `i`,
/// 0-based), `\r\n` accepted, surrounding whitespace trimmed. A blank line
/// before the end of the file is malformed; trailing blank lines are ignored.
pub fn load_vocab(path: &Path) -> Result<Vec<String>, DataError> {
    parse_vocab(open_text(path)?, &path.display().to_string())
}

/// [`load_vocab`] on a reader; `path` only names the source in errors.
pub fn parse_vocab<R: BufRead>(reader: R, path: &str) -> Result<Vec<String>, DataError> {
    let path_str = path.to_string();
    let mut lines = LineReader::new(reader, &path_str);
    let mut words = Vec::new();
    let mut blank_at: Option<u64> = None;
    while let Some(text) = lines.next_line()? {
        let w = text.trim();
        if w.is_empty() {
            blank_at.get_or_insert(lines.line_no);
            continue;
        }
        if let Some(b) = blank_at {
            return Err(lines.malformed(b, "empty word"));
        }
        if words.len() as u64 >= MAX_VOCAB {
            return Err(lines.malformed(lines.line_no, format!("more than {MAX_VOCAB} words")));
        }
        words.push(w.to_string());
    }
    if words.is_empty() {
        return Err(DataError::Empty { path: path_str });
    }
    Ok(words)
}

/// Loads a UCI bag-of-words corpus (`docword.*.txt`, optionally gzipped:
/// a name ending in `.gz` or content starting with the gzip magic).
///
/// Format: three header lines `D`, `W`, `NNZ` (one integer each), then
/// `NNZ` lines `docID wordID count` with 1-based ids. Document `docID` becomes
/// `docs[docID - 1]` (so `docs.len() == D`, empty documents included) and
/// word `wordID` becomes id `wordID - 1`; `vocab_size == W`. Blank lines are
/// ignored; entries may come in any order (repeated pairs add up).
///
/// `vocab`, if given, is a file with one word per line ([`load_vocab`]) that
/// must have exactly `W` words ([`DataError::Mismatch`] otherwise).
///
/// Errors: a missing or non-numeric header line, a line without exactly
/// three non-negative integers, an id out of range for the header, a count
/// of 0 or above [`MAX_COUNT`], more or fewer entries than `NNZ` (reported at
/// the NNZ header line), a total above [`MAX_TOKENS`], `D` above
/// [`MAX_DOCS`] or `W` above [`MAX_VOCAB`] are all [`DataError::Malformed`]
/// naming the file and line. A file with no tokens is [`DataError::Empty`].
pub fn load_uci(docword: &Path, vocab: Option<&Path>) -> Result<Corpus, DataError> {
    let path_str = docword.display().to_string();
    let mut corpus = parse_uci_docword(open_text(docword)?, &path_str)?;
    if let Some(vp) = vocab {
        let words = load_vocab(vp)?;
        if words.len() as u64 != u64::from(corpus.vocab_size) {
            return Err(DataError::Mismatch {
                what: format!(
                    "{} has {} words but {path_str} declares W = {}",
                    vp.display(),
                    words.len(),
                    corpus.vocab_size
                ),
            });
        }
        corpus.vocab = Some(words);
    }
    Ok(corpus)
}

// ---------------------------------------------------------------------------
// lda-c
// ---------------------------------------------------------------------------

/// Parses the lda-c format from a reader; `path` only names the source in
/// errors. `vocab_len`, if given, bounds the word ids. See [`load_ldac`].
pub fn parse_ldac<R: BufRead>(
    reader: R,
    path: &str,
    vocab_len: Option<u64>,
) -> Result<Corpus, DataError> {
    let mut lines = LineReader::new(reader, path);
    let limit = vocab_len.unwrap_or(MAX_VOCAB).min(MAX_VOCAB);
    let mut docs: Vec<Vec<u32>> = Vec::new();
    let mut total = 0u64;
    let mut max_id: Option<u32> = None;
    loop {
        let line_no = lines.line_no + 1;
        let Some(text) = lines.next_line()? else {
            break;
        };
        let t = text.trim();
        if t.is_empty() {
            continue;
        }
        let parsed = (|| -> Result<Vec<u32>, String> {
            if docs.len() as u64 >= MAX_DOCS {
                return Err(format!("more than {MAX_DOCS} documents"));
            }
            let mut fields = t.split_ascii_whitespace();
            let n_field = fields.next().unwrap_or("");
            let n = parse_u64(n_field, "term count N")?;
            let mut doc = Vec::new();
            let mut pairs = 0u64;
            for f in fields {
                pairs += 1;
                let (id, c) = f
                    .split_once(':')
                    .ok_or_else(|| format!("expected `id:count`, found {f:?}"))?;
                let id = parse_u64(id, "word id")?;
                let c = parse_u64(c, "count")?;
                if id >= limit {
                    return Err(match vocab_len {
                        Some(v) if v <= MAX_VOCAB => {
                            format!("word id {id} out of range for a vocabulary of {v} words")
                        }
                        _ => format!("word id {id} exceeds the limit {}", MAX_VOCAB - 1),
                    });
                }
                check_count(c)?;
                add_tokens(&mut total, c)?;
                let id = id as u32;
                max_id = Some(max_id.map_or(id, |m| m.max(id)));
                doc.resize(doc.len() + c as usize, id);
            }
            if pairs != n {
                return Err(format!(
                    "line declares N = {n} terms but has {pairs} id:count pairs"
                ));
            }
            Ok(doc)
        })();
        match parsed {
            Ok(doc) => docs.push(doc),
            Err(r) => return Err(lines.malformed(line_no, r)),
        }
    }
    if total == 0 {
        return Err(DataError::Empty {
            path: path.to_string(),
        });
    }
    let from_ids = max_id.map_or(0, |m| m + 1);
    let vocab_size = match vocab_len {
        Some(v) => (v.min(MAX_VOCAB) as u32).max(from_ids),
        None => from_ids,
    };
    Ok(Corpus {
        docs,
        vocab_size,
        vocab: None,
    })
}

/// Loads an lda-c corpus (Blei's format; optionally gzipped like
/// [`load_uci`]): one document per line, `N id:count id:count ...` with `N`
/// the number of pairs and 0-based word ids. Blank lines are skipped.
///
/// Without `vocab`, `vocab_size` is the largest id + 1; with a vocabulary
/// file (one word per line, [`load_vocab`]) every id must be below its
/// length and `vocab_size` is that length.
///
/// Errors: a bad `N`, a pair that is not `id:count` with non-negative
/// integers, `N` differing from the number of pairs, an id out of range, a
/// count of 0 or above [`MAX_COUNT`], a total above [`MAX_TOKENS`] are
/// [`DataError::Malformed`] naming the file and line; a file with no tokens
/// is [`DataError::Empty`].
pub fn load_ldac(path: &Path, vocab: Option<&Path>) -> Result<Corpus, DataError> {
    let words = vocab.map(load_vocab).transpose()?;
    let path_str = path.display().to_string();
    let mut corpus = parse_ldac(
        open_text(path)?,
        &path_str,
        words.as_ref().map(|w| w.len() as u64),
    )?;
    corpus.vocab = words;
    Ok(corpus)
}

// ---------------------------------------------------------------------------
// Splits
// ---------------------------------------------------------------------------

/// The global indices of the documents of worker `w` of `workers`: round
/// robin, document `d` goes to worker `d % workers`. Ascending.
///
/// # Panics
/// If `workers == 0` or `w >= workers` (caller bug, not data-dependent).
pub fn worker_doc_ids(num_docs: usize, workers: u32, w: u32) -> Vec<usize> {
    assert!(workers > 0, "worker_doc_ids: workers must be > 0");
    assert!(
        w < workers,
        "worker_doc_ids: w ({w}) must be < workers ({workers})"
    );
    (w as usize..num_docs).step_by(workers as usize).collect()
}

/// The documents of worker `w` of `workers` (a copy, in the order of
/// [`worker_doc_ids`]). Deterministic; every document goes to exactly one
/// worker.
///
/// # Panics
/// If `workers == 0` or `w >= workers` (caller bug, not data-dependent).
pub fn split_docs(corpus: &Corpus, workers: u32, w: u32) -> Vec<Vec<u32>> {
    worker_doc_ids(corpus.docs.len(), workers, w)
        .into_iter()
        .map(|d| corpus.docs[d].clone())
        .collect()
}

/// [`split_docs`] of documents it may keep: worker `w`'s share of `docs`, moved, not copied.
///
/// # Panics
/// If `workers == 0` or `w >= workers` (caller bug, not data-dependent).
pub fn take_worker_docs(docs: Vec<Vec<u32>>, workers: u32, w: u32) -> Vec<Vec<u32>> {
    assert!(
        w < workers,
        "take_worker_docs: w ({w}) must be < workers ({workers})"
    );
    docs.into_iter()
        .skip(w as usize)
        .step_by(workers as usize)
        .collect()
}
