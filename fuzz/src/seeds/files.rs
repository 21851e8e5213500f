//! Seeds of the data files a user hands the applications (ratings, bags of words, LIBSVM rows,
//! IDX images and labels), written out by hand, plain and gzipped.

use std::io::Write;

use super::{named, Seeds};

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

fn text(list: &[(&str, &str)]) -> Seeds {
    named(list.iter().map(|(n, t)| (*n, t.as_bytes().to_vec())))
}

pub fn mf_ratings() -> Seeds {
    text(&[
        (
            "tab",
            "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n",
        ),
        (
            "csv-header",
            "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n",
        ),
        (
            "double-colon",
            "1::1193::5::978300760\r\n1::661::3::978302109\r\n",
        ),
        ("plain3", "# comment\n\n0,0,1.5\n0,2,-0.5\n3,1,2\n"),
        ("plain4", "5,6,3.5,100\n7,6,1,-5\n"),
    ])
}

pub fn lda_uci() -> Seeds {
    text(&[
        ("small", "3\n5\n4\n1 1 2\n1 3 1\n2 2 5\n3 5 1\n"),
        ("empty-doc", "4\n3\n2\n\n4 3 1\n1 1 7\n"),
    ])
}

pub fn lda_ldac() -> Seeds {
    text(&[
        ("small", "2 0:1 3:2\n1 4:1\n"),
        ("blank", "\n3 0:1 1:1 2:1\r\n\n1 7:3\n"),
    ])
}

pub fn lda_vocab() -> Seeds {
    text(&[("words", "apple\nbanana\r\n cherry \n\n")])
}

pub fn lr_libsvm() -> Seeds {
    let a = "+1 1:0.5 3:1\n-1 2:1.5 # comment\n# only a comment\n\n+1 3:-2 1:1e-3\n";
    let v = "0.5 1:1 2:2\n-3.25 7:0.125\n2 1:0\n";
    named([
        ("two-class", a.as_bytes().to_vec()),
        ("values", v.as_bytes().to_vec()),
        ("two-class-gz", gz(a.as_bytes())),
    ])
}

fn idx(magic: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, magic];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

pub fn mlp_idx_images() -> Seeds {
    let px: Vec<u8> = (0..18u8).map(|i| i.wrapping_mul(29)).collect();
    let three = idx(3, &[2, 3, 3], &px);
    named([
        ("idx3", three.clone()),
        ("idx2", idx(2, &[3, 4], &px[..12])),
        ("idx3-gz", gz(&three)),
    ])
}

pub fn mlp_idx_labels() -> Seeds {
    let l = idx(1, &[5], &[7, 0, 9, 3, 3]);
    named([("labels", l.clone()), ("labels-gz", gz(&l))])
}
