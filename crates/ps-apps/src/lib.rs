//! Application model logic for the parameter server.
//!
//! This crate holds the applications' model logic, their data loaders, and
//! one compute trait per application together with its plain CPU backend.
//! The CPU backend is the *oracle*: every other backend (GPU kernels, SIMD,
//! ...) is checked against it.
//!
//! This crate must not depend on networking, async runtimes or the
//! parameter-server client: it is pure, deterministic, synchronous code that
//! the worker processes drive. Errors are typed ([`DataError`], built with
//! `thiserror`), and nothing in here panics on file content.
//!
//! Applications (each with its data loaders, built-in synthetic data, a
//! compute trait, a plain CPU oracle, and a fast CPU engine checked against it):
//! * [`mf`] — matrix factorisation trained with SGD, user factors local to
//!   each worker, item factors in a parameter-server table updated with an
//!   `add` rule.
//! * [`lda`] — LDA topic models by collapsed Gibbs sampling (oracle and
//!   SparseLDA), word-topic counts and topic totals in `add` tables.
//! * [`mlp`] — a dense ReLU network with softmax cross-entropy (oracle and
//!   GEMM engine), one table per layer.
//! * [`lr`] — L1 sparse logistic regression on u64 feature keys (oracle and
//!   fast engine); weights in a sparse table with the FTRL-proximal rule.

pub mod app;
pub mod error;
pub mod lda;
pub mod lr;
pub mod mf;
pub mod mlp;
pub mod seed;

pub use error::{AppError, ComputeError, DataError, SinkError};
