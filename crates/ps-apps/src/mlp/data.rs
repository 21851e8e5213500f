//! Data sets: the IDX (MNIST / Fashion-MNIST) loader, standardisation and splits (the
//! synthetic generator is in `synth.rs`).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::DataError;
use crate::seed::mix64;

/// Number of classes of MNIST and Fashion-MNIST.
pub const MNIST_CLASSES: usize = 10;

/// Largest IDX payload (bytes after the header) accepted: 1 GiB. MNIST's
/// training images are 47 MB; the cap stops hostile headers (and gzip
/// bombs) from driving huge allocations.
pub const MAX_IDX_PAYLOAD: u64 = 1 << 30;

/// A classification data set held in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Features, row-major `n × d`.
    pub x: Vec<f32>,
    /// Labels, `n` values, each `< classes`.
    pub y: Vec<u8>,
    /// Number of samples.
    pub n: usize,
    /// Number of features per sample.
    pub d: usize,
    /// Number of classes.
    pub classes: usize,
}

impl Dataset {
    /// Features of sample `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.d..(i + 1) * self.d]
    }

    /// Copies the samples `idx` into `x` (`idx.len() × d`) and `y`,
    /// replacing their contents (capacity is reused).
    ///
    /// # Panics
    /// If an index is `>= n`.
    pub fn gather(&self, idx: &[usize], x: &mut Vec<f32>, y: &mut Vec<u8>) {
        x.clear();
        y.clear();
        for &i in idx {
            x.extend_from_slice(self.row(i));
            y.push(self.y[i]);
        }
    }

    /// Worker `worker`'s share of the set: its samples [`super::worker_split`], in order (the
    /// set itself when there is one worker).
    pub fn into_share(self, workers: usize, worker: usize) -> Dataset {
        if workers == 1 && worker == 0 {
            return self;
        }
        self.subset(&super::worker_split(self.n, workers, worker))
    }

    /// A new data set holding the samples `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let mut x = Vec::with_capacity(idx.len() * self.d);
        let mut y = Vec::with_capacity(idx.len());
        self.gather(idx, &mut x, &mut y);
        Dataset {
            x,
            y,
            n: idx.len(),
            d: self.d,
            classes: self.classes,
        }
    }

    /// Number of samples of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0usize; self.classes];
        for &l in &self.y {
            if let Some(v) = c.get_mut(usize::from(l)) {
                *v += 1;
            }
        }
        c
    }
}

// ---------------------------------------------------------------------------
// IDX loader
// ---------------------------------------------------------------------------

/// A decoded unsigned-byte IDX image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub n: usize,
    /// Dimensions of one image (`[rows, cols]` for magic `0x00000803`,
    /// `[d]` for `0x00000802`).
    pub dims: Vec<usize>,
    /// Pixels, `n × Π dims` bytes, row-major.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Values per image (`Π dims`).
    pub fn d(&self) -> usize {
        self.dims.iter().product()
    }
}

fn format_err(path: &str, reason: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// Maps an I/O error from the (possibly gzip) stream: corrupt compressed
/// data and premature ends are format problems, the rest I/O problems.
fn stream_err(path: &str, gz: bool, e: std::io::Error) -> DataError {
    use std::io::ErrorKind::*;
    match e.kind() {
        InvalidData | InvalidInput | UnexpectedEof if gz => {
            format_err(path, format!("corrupt gzip stream: {e}"))
        }
        UnexpectedEof => format_err(path, format!("truncated file: {e}")),
        _ => DataError::Io {
            path: path.to_string(),
            source: e,
        },
    }
}

/// Decodes an IDX stream: magic `00 00 08 ndims` with `ndims` in
/// `allowed_ndims`, big-endian `u32` dims, then the payload. `known_len` is
/// the total stream length when it is known up front (plain files), so a
/// header that does not match is rejected before anything is allocated.
fn decode_idx<R: Read>(
    path: &str,
    mut r: R,
    gz: bool,
    known_len: Option<u64>,
    allowed_ndims: &[u8],
    what: &str,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => format_err(
            path,
            if gz {
                "decompressed data too short for an IDX header"
            } else {
                "file too short for an IDX header"
            },
        ),
        _ => stream_err(path, gz, e),
    })?;
    let expected = allowed_ndims
        .iter()
        .map(|n| format!("0x0000080{n:x}"))
        .collect::<Vec<_>>()
        .join(" or ");
    if magic[0] != 0 || magic[1] != 0 {
        return Err(format_err(
            path,
            format!(
                "bad IDX magic 0x{:08x} (expected {expected} for {what})",
                u32::from_be_bytes(magic)
            ),
        ));
    }
    if magic[2] != 0x08 {
        return Err(format_err(
            path,
            format!(
                "unsupported IDX data type 0x{:02x} (only 0x08 = unsigned byte is supported)",
                magic[2]
            ),
        ));
    }
    let ndims = magic[3];
    if !allowed_ndims.contains(&ndims) {
        return Err(format_err(
            path,
            format!(
                "IDX file has {ndims} dimensions (magic 0x{:08x}), expected {expected} for {what}",
                u32::from_be_bytes(magic)
            ),
        ));
    }
    let mut dims = Vec::with_capacity(usize::from(ndims));
    let mut payload: u64 = 1;
    for k in 0..ndims {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                format_err(path, format!("truncated IDX header (dimension {k})"))
            }
            _ => stream_err(path, gz, e),
        })?;
        let v = u32::from_be_bytes(b);
        dims.push(v as usize);
        payload = payload.saturating_mul(u64::from(v));
    }
    let shape = dims
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("x");
    if payload > MAX_IDX_PAYLOAD {
        return Err(format_err(
            path,
            format!("declared shape {shape} needs {payload} bytes, over the {MAX_IDX_PAYLOAD}-byte limit"),
        ));
    }
    let header = 4 + 4 * u64::from(ndims);
    if let Some(total) = known_len {
        if total != header + payload {
            return Err(format_err(
                path,
                format!(
                    "declared shape {shape} needs {payload} data bytes but the file has {}",
                    total.saturating_sub(header)
                ),
            ));
        }
    }
    // For a plain file the size is verified; for gzip, grow as data arrives.
    let cap = if known_len.is_some() {
        payload
    } else {
        payload.min(1 << 24)
    };
    let mut data = Vec::with_capacity(cap as usize);
    r.take(payload + 1)
        .read_to_end(&mut data)
        .map_err(|e| stream_err(path, gz, e))?;
    if (data.len() as u64) < payload {
        return Err(format_err(
            path,
            format!(
                "truncated: declared shape {shape} needs {payload} data bytes, found {}",
                data.len()
            ),
        ));
    }
    if (data.len() as u64) > payload {
        return Err(format_err(
            path,
            format!("trailing data after the {payload} bytes of declared shape {shape}"),
        ));
    }
    Ok((dims, data))
}

/// Opens a file or byte slice, detecting gzip by its magic bytes `1f 8b`.
fn decode_idx_source<R: BufRead>(
    path: &str,
    mut r: R,
    len: Option<u64>,
    allowed_ndims: &[u8],
    what: &str,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let head = r.fill_buf().map_err(|e| DataError::Io {
        path: path.to_string(),
        source: e,
    })?;
    let gz = head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b;
    if gz {
        let dec = flate2::bufread::MultiGzDecoder::new(r);
        decode_idx(path, dec, true, None, allowed_ndims, what)
    } else {
        decode_idx(path, r, false, len, allowed_ndims, what)
    }
}

fn images_from(path: &str, dims: Vec<usize>, pixels: Vec<u8>) -> Result<IdxImages, DataError> {
    let n = dims[0];
    let rest = dims[1..].to_vec();
    if rest.contains(&0) {
        return Err(format_err(path, "image dimensions must be >= 1"));
    }
    Ok(IdxImages {
        n,
        dims: rest,
        pixels,
    })
}

fn labels_from(path: &str, labels: Vec<u8>, classes: usize) -> Result<Vec<u8>, DataError> {
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| usize::from(l) >= classes)
    {
        return Err(format_err(
            path,
            format!("label {l} at index {i} is out of range (classes = {classes})"),
        ));
    }
    Ok(labels)
}

fn open(path: &Path) -> Result<(String, BufReader<std::fs::File>, u64), DataError> {
    let p = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|e| DataError::Io {
        path: p.clone(),
        source: e,
    })?;
    let len = f
        .metadata()
        .map_err(|e| DataError::Io {
            path: p.clone(),
            source: e,
        })?
        .len();
    Ok((p, BufReader::new(f), len))
}

/// Reads an IDX image file (magic `0x00000803`: `N × rows × cols`, or
/// `0x00000802`: `N × d`, unsigned bytes), plain or gzip-compressed (detected
/// by the bytes `1f 8b`).
///
/// Errors ([`DataError::Format`] naming the file unless noted): bad magic or
/// data type, wrong number of dimensions, a zero image dimension, a declared
/// size over [`MAX_IDX_PAYLOAD`], a declared size that disagrees with the
/// file length (checked before allocating for plain files), truncated or
/// trailing data, a corrupt gzip stream; [`DataError::Io`] if the file cannot
/// be read.
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DataError> {
    let (p, r, len) = open(path)?;
    let (dims, data) = decode_idx_source(&p, r, Some(len), &[3, 2], "images")?;
    images_from(&p, dims, data)
}

/// Reads an IDX label file (magic `0x00000801`, `N` unsigned bytes), plain or
/// gzip. Every label must be `< classes` ([`DataError::Format`] otherwise);
/// other errors as for [`read_idx_images`].
pub fn read_idx_labels(path: &Path, classes: usize) -> Result<Vec<u8>, DataError> {
    let (p, r, len) = open(path)?;
    let (_, data) = decode_idx_source(&p, r, Some(len), &[1], "labels")?;
    labels_from(&p, data, classes)
}

/// [`read_idx_images`] on an in-memory file; `path` only names it in errors.
pub fn parse_idx_images(path: &str, bytes: &[u8]) -> Result<IdxImages, DataError> {
    let (dims, data) = decode_idx_source(path, bytes, Some(bytes.len() as u64), &[3, 2], "images")?;
    images_from(path, dims, data)
}

/// [`read_idx_labels`] on an in-memory file; `path` only names it in errors.
pub fn parse_idx_labels(path: &str, bytes: &[u8], classes: usize) -> Result<Vec<u8>, DataError> {
    let (_, data) = decode_idx_source(path, bytes, Some(bytes.len() as u64), &[1], "labels")?;
    labels_from(path, data, classes)
}

/// Builds a [`Dataset`] from decoded images and labels (pixels `p` scaled to
/// `p / 255`).
fn pair_to_dataset(
    images: IdxImages,
    labels: Vec<u8>,
    images_path: &str,
    labels_path: &str,
    classes: usize,
) -> Result<Dataset, DataError> {
    if images.n != labels.len() {
        return Err(DataError::Mismatch {
            what: format!(
                "{images_path} holds {} images but {labels_path} holds {} labels",
                images.n,
                labels.len()
            ),
        });
    }
    if images.n == 0 {
        return Err(DataError::Empty {
            path: images_path.to_string(),
        });
    }
    let d = images.d();
    let x = images
        .pixels
        .iter()
        .map(|&p| f32::from(p) / 255.0)
        .collect();
    Ok(Dataset {
        x,
        y: labels,
        n: images.n,
        d,
        classes,
    })
}

/// Loads an IDX image file and its label file (10 classes; see
/// [`load_idx_pair_classes`]).
pub fn load_idx_pair(images_path: &Path, labels_path: &Path) -> Result<Dataset, DataError> {
    load_idx_pair_classes(images_path, labels_path, MNIST_CLASSES)
}

/// Loads an IDX image file and its label file (plain or gzip each) into a
/// [`Dataset`] with `d = rows · cols` features per image, each pixel byte `p`
/// scaled to `p / 255 ∈ [0, 1]` (no standardisation; see [`standardise`]).
///
/// Errors: those of [`read_idx_images`] / [`read_idx_labels`] (labels must be
/// `< classes`), [`DataError::Mismatch`] naming both files when the counts
/// differ, [`DataError::Empty`] for zero images.
pub fn load_idx_pair_classes(
    images_path: &Path,
    labels_path: &Path,
    classes: usize,
) -> Result<Dataset, DataError> {
    let images = read_idx_images(images_path)?;
    let labels = read_idx_labels(labels_path, classes)?;
    pair_to_dataset(
        images,
        labels,
        &images_path.display().to_string(),
        &labels_path.display().to_string(),
        classes,
    )
}

/// Finds `{prefix}-{kind}-{idx}-ubyte` in `dir`, also accepting
/// `{prefix}-{kind}.{idx}-ubyte`, each optionally with `.gz`.
fn find_idx(dir: &Path, prefix: &str, kind: &str, idx: &str) -> Result<PathBuf, DataError> {
    let names = [
        format!("{prefix}-{kind}-{idx}-ubyte"),
        format!("{prefix}-{kind}.{idx}-ubyte"),
    ];
    for name in &names {
        for ext in ["", ".gz"] {
            let p = dir.join(format!("{name}{ext}"));
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(DataError::Io {
        path: dir.join(&names[0]).display().to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "none of {0}, {0}.gz, {1}, {1}.gz found in {2}",
                names[0],
                names[1],
                dir.display()
            ),
        ),
    })
}

/// Loads MNIST / Fashion-MNIST from a directory holding
/// `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` (each optionally
/// `.gz`; the `train-images.idx3-ubyte` spelling is also accepted). Returns
/// `(train, test)`, 10 classes, pixels scaled to `[0, 1]`.
///
/// A missing file is a [`DataError::Io`] (`NotFound`) naming the expected
/// names; the train and test image sizes must agree
/// ([`DataError::Mismatch`]).
pub fn load_mnist_dir(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let load = |prefix: &str| -> Result<Dataset, DataError> {
        let imgs = find_idx(dir, prefix, "images", "idx3")?;
        let labels = find_idx(dir, prefix, "labels", "idx1")?;
        load_idx_pair(&imgs, &labels)
    };
    let train = load("train")?;
    let test = load("t10k")?;
    if train.d != test.d {
        return Err(DataError::Mismatch {
            what: format!(
                "{}: training images have {} pixels but test images {}",
                dir.display(),
                train.d,
                test.d
            ),
        });
    }
    Ok((train, test))
}

/// Standardises every feature to zero mean and unit variance using the
/// mean and standard deviation of `train` (features with std < 1e-6 are only
/// centred), applied to `train` and each of `others`.
///
/// Optional: the MLP trains fine on `[0, 1]` pixels; standardising speeds up
/// early training somewhat.
pub fn standardise(train: &mut Dataset, others: &mut [&mut Dataset]) -> Result<(), DataError> {
    for o in others.iter() {
        if o.d != train.d {
            return Err(DataError::Mismatch {
                what: format!(
                    "cannot standardise: train has {} features, other set {}",
                    train.d, o.d
                ),
            });
        }
    }
    let d = train.d;
    let mut mean = vec![0.0f64; d];
    let mut sq = vec![0.0f64; d];
    for row in train.x.chunks_exact(d.max(1)) {
        for ((m, s), &v) in mean.iter_mut().zip(sq.iter_mut()).zip(row) {
            *m += f64::from(v);
            *s += f64::from(v) * f64::from(v);
        }
    }
    let n = train.n.max(1) as f64;
    let (mean, inv): (Vec<f32>, Vec<f32>) = mean
        .iter()
        .zip(&sq)
        .map(|(&m, &s)| {
            let mu = m / n;
            let var = (s / n - mu * mu).max(0.0);
            let sd = var.sqrt();
            (mu as f32, if sd < 1e-6 { 1.0 } else { (1.0 / sd) as f32 })
        })
        .unzip();
    let apply = |ds: &mut Dataset| {
        for row in ds.x.chunks_exact_mut(d.max(1)) {
            for ((v, &m), &s) in row.iter_mut().zip(&mean).zip(&inv) {
                *v = (*v - m) * s;
            }
        }
    };
    apply(train);
    for o in others.iter_mut() {
        apply(o);
    }
    Ok(())
}

/// Deterministic shuffled split: `round(n · test_fraction)` samples (a
/// seeded permutation) go to test (second), the rest to train (first), each
/// in ascending original order. `test_fraction` is clamped to `[0, 1]`.
pub fn split_train_test(ds: &Dataset, test_fraction: f64, seed: u64) -> (Dataset, Dataset) {
    let f = if test_fraction.is_finite() {
        test_fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let n_test = ((ds.n as f64) * f).round() as usize;
    let mut idx: Vec<usize> = (0..ds.n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(mix64(seed ^ 0x5B11_7000)));
    let (test, train) = idx.split_at_mut(n_test.min(ds.n));
    test.sort_unstable();
    train.sort_unstable();
    (ds.subset(train), ds.subset(test))
}
