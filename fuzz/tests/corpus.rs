//! The committed corpus is what the seed functions write, every seed is a valid input of its
//! decoder, and every directory of `corpus/` and `regressions/` names a target.

use std::path::{Path, PathBuf};

use ps_fuzz::{seeds, targets};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn committed_corpus_is_the_seeds() {
    for t in targets::all() {
        let dir = root().join("corpus").join(t.name);
        let mut want: Vec<(String, Vec<u8>)> = (t.seeds)();
        want.sort();
        let names: Vec<String> = want.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(
            names_in(&dir),
            names,
            "{}: run ps-fuzz-tool --write-corpus",
            t.name
        );
        for (name, bytes) in want {
            let got = std::fs::read(dir.join(&name)).unwrap_or_default();
            assert!(got == bytes, "{}/{name} differs from its seed", t.name);
            assert!(
                bytes.len() <= t.max_len,
                "{}/{name} is over max_len",
                t.name
            );
        }
    }
}

#[test]
fn every_directory_names_a_target() {
    let known: Vec<&str> = targets::all().iter().map(|t| t.name).collect();
    for kind in ["corpus", "regressions"] {
        for d in names_in(&root().join(kind)) {
            assert!(known.contains(&d.as_str()), "{kind}/{d} is no target");
        }
    }
}

#[test]
fn seeds_are_valid_inputs() {
    use ps_proto::{Frame, Header, Limits};
    let l = Limits::default();
    for (n, b) in seeds::frames() {
        assert!(Frame::decode(&b, &l).is_ok(), "frame {n}");
    }
    for (n, b) in seeds::headers() {
        assert!(Header::decode(&b, &l).is_ok(), "header {n}");
    }
    for (n, b) in seeds::codecs() {
        let len = u16::from_le_bytes([b[1], b[2]]) as usize;
        let id = targets::proto::CODEC_IDS[b[0] as usize];
        let r = ps_proto::codec::decode(id, &b[3..], len);
        assert!(r.is_ok(), "codec {n}");
    }
    for (n, b) in seeds::codec_chains() {
        let s = String::from_utf8(b).unwrap_or_default();
        assert!(
            s.parse::<ps_proto::codec::CodecChain>().is_ok(),
            "chain {n}"
        );
    }
    let p = "seed";
    for (n, b) in seeds::mf_ratings() {
        assert!(ps_apps::mf::parse_ratings(&b[..], p).is_ok(), "mf {n}");
    }
    for (n, b) in seeds::lda_uci() {
        assert!(
            ps_apps::lda::parse_uci_docword(&b[..], p).is_ok(),
            "uci {n}"
        );
    }
    for (n, b) in seeds::lda_ldac() {
        assert!(
            ps_apps::lda::parse_ldac(&b[..], p, None).is_ok(),
            "ldac {n}"
        );
    }
    for (n, b) in seeds::lda_vocab() {
        assert!(ps_apps::lda::parse_vocab(&b[..], p).is_ok(), "vocab {n}");
    }
    for (n, b) in seeds::lr_libsvm() {
        assert!(
            ps_apps::lr::parse_libsvm_values(&b[..], p).is_ok(),
            "libsvm {n}"
        );
    }
    for (n, b) in seeds::mlp_idx_images() {
        assert!(ps_apps::mlp::parse_idx_images(p, &b).is_ok(), "images {n}");
    }
    for (n, b) in seeds::mlp_idx_labels() {
        assert!(
            ps_apps::mlp::parse_idx_labels(p, &b, 10).is_ok(),
            "labels {n}"
        );
    }
}
