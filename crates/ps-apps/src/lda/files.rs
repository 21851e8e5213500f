//! LDA's corpus files: their two layouts, telling them apart, the vocabulary beside a UCI file,
//! and the top words of each topic for a vocabulary.

use crate::error::AppError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How a corpus file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CorpusFormat {
    /// UCI bag of words: `D`, `W`, `NNZ` header lines, then `doc word count` lines.
    Uci,
    /// lda-c (Blei): one document per line, `N id:count id:count ...`.
    Ldac,
}

/// UCI when the name says `docword` or the first line is a lone number (the `D` header);
/// lda-c otherwise (its lines are `N id:count ...`).
pub fn detect_format(path: &Path) -> Result<CorpusFormat, AppError> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase());
    if name.as_deref().is_some_and(|n| n.contains("docword")) {
        return Ok(CorpusFormat::Uci);
    }
    if name.as_deref().is_some_and(|n| n.ends_with(".gz")) {
        return Err(AppError::Settings(format!(
            "{}: cannot tell a gzipped corpus's format from its name; name it docword.*.gz for UCI",
            path.display()
        )));
    }
    let text = std::fs::read(path)
        .map_err(|e| AppError::Settings(format!("reading {}: {e}", path.display())))?;
    let first = text
        .split(|&b| b == b'\n')
        .map(|l| String::from_utf8_lossy(l).trim().to_string())
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    Ok(if first.parse::<u64>().is_ok() {
        CorpusFormat::Uci
    } else {
        CorpusFormat::Ldac
    })
}

/// `vocab.NAME.txt` beside `docword.NAME.txt[.gz]`, if it exists.
pub fn sibling_vocab(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix("docword.")?;
    let rest = rest.strip_suffix(".gz").unwrap_or(rest);
    let candidate = path.with_file_name(format!("vocab.{rest}"));
    candidate.is_file().then_some(candidate)
}

/// "topic K: word word ..." for each topic: its `n` most frequent words.
pub fn top_words(word_topic: &[f32], k: usize, vocab: &[String], n: usize) -> Vec<String> {
    (0..k)
        .map(|t| {
            let mut ids: Vec<usize> = (0..vocab.len()).collect();
            ids.sort_by(|&a, &b| word_topic[b * k + t].total_cmp(&word_topic[a * k + t]));
            let words: Vec<&str> = ids.iter().take(n).map(|&i| vocab[i].as_str()).collect();
            format!("topic {t:>3}: {}", words.join(" "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_format_from_name_or_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let uci = dir.path().join("corpus.txt");
        std::fs::write(&uci, "2\n3\n2\n1 1 2\n2 3 1\n").unwrap();
        assert_eq!(detect_format(&uci).unwrap(), CorpusFormat::Uci);
        let ldac = dir.path().join("corpus.dat");
        std::fs::write(&ldac, "2 0:1 2:3\n1 1:1\n").unwrap();
        assert_eq!(detect_format(&ldac).unwrap(), CorpusFormat::Ldac);
        let named = dir.path().join("docword.x.txt");
        std::fs::write(&named, "whatever").unwrap();
        assert_eq!(detect_format(&named).unwrap(), CorpusFormat::Uci);
        std::fs::write(dir.path().join("vocab.x.txt"), "a\n").unwrap();
        assert_eq!(
            sibling_vocab(&named).unwrap(),
            dir.path().join("vocab.x.txt")
        );
        assert!(sibling_vocab(&ldac).is_none());
    }

    #[test]
    fn top_words_orders_by_count() {
        let vocab: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        // 3 words x 2 topics.
        let wt = [1.0, 9.0, 5.0, 0.0, 3.0, 4.0];
        let lines = top_words(&wt, 2, &vocab, 2);
        assert_eq!(lines[0], "topic   0: b c");
        assert_eq!(lines[1], "topic   1: a c");
    }
}
