//! Typed errors for data loading.

use thiserror::Error;

/// Errors produced while loading or validating application data.
///
/// The `Display` form of [`DataError::Malformed`] is `PATH:LINE: reason`
/// (1-based line numbers), so it points straight at the offending line.
#[derive(Debug, Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: I/O error: {source}")]
    Io {
        /// The file path as given by the caller.
        path: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of the file could not be parsed.
    #[error("{path}:{line}: {reason}")]
    Malformed {
        /// The file path as given by the caller.
        path: String,
        /// 1-based line number of the offending line.
        line: u64,
        /// What is wrong with the line.
        reason: String,
    },
    /// A binary file (or a whole-file property) is malformed, e.g. a bad IDX
    /// header or a length that does not match the declared shape.
    #[error("{path}: {reason}")]
    Format {
        /// The file path as given by the caller.
        path: String,
        /// What is wrong with the file.
        reason: String,
    },
    /// Two files that must agree do not (e.g. images and labels counts, or
    /// a test file with more features than the model).
    #[error("{what}")]
    Mismatch {
        /// What disagrees, naming both files.
        what: String,
    },
    /// The file holds no data rows (empty, or only blank/comment lines, or only a header).
    #[error("{path}: file contains no data rows")]
    Empty {
        /// The file path as given by the caller.
        path: String,
    },
    /// The file holds more distinct user or item ids than fit a dense `u32` index.
    #[error("{path}: too many distinct {what} ids ({count}) for a u32 index")]
    TooManyIds {
        /// The file path as given by the caller.
        path: String,
        /// `"user"` or `"item"`.
        what: &'static str,
        /// Number of distinct ids found.
        count: usize,
    },
}

/// A compute engine failed (a device error, say): the clock's work is lost, nothing else.
/// CPU engines never return it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{engine} engine: {message}")]
pub struct ComputeError {
    /// The engine's name, e.g. `"cuda-mf"`.
    pub engine: &'static str,
    /// What failed.
    pub message: String,
}

/// A sink refused a session's update (the parameter server's client said why).
#[derive(Debug, Error)]
#[error("table {table}: {reason}")]
pub struct SinkError {
    pub table: u32,
    pub reason: String,
}

/// What can go wrong in an application: its data, its flags, its engine, its input from the
/// parameter server, or its output.
#[derive(Debug, Error)]
pub enum AppError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Compute(#[from] ComputeError),
    #[error("update refused: {0}")]
    Sink(#[from] SinkError),
    /// Rows fed to a session that are not the ones it asked for, or of the wrong width.
    #[error("table {table}: {reason}")]
    Rows { table: u32, reason: String },
    /// A flag value or a settings combination the app cannot run with.
    #[error("{0}")]
    Settings(String),
    /// The worker's device cannot give the engine.
    #[error("device: {0}")]
    Device(String),
    /// Figures that do not convert to or from their struct.
    #[error("figures: {0}")]
    Figures(String),
}
