//! The applications of the parameter server and the seam every application is written against.
//!
//! - [`app`]: the `App` trait (a model's flags, table plan, per-worker `Session`, clock line and
//!   summary), the `Engines` a session computes with, the erased `DynApp` a driver runs, and
//!   `app::testing`, an in-memory parameter server that runs sessions clock by clock.
//! - One module per application, each with its `App` (`app.rs`), data loaders, built-in
//!   synthetic data, a compute trait, a plain CPU oracle and a fast CPU engine checked against
//!   it: [`mf`] (matrix factorisation by SGD; user factors on their worker, item factors in an
//!   `add` table), [`lda`] (collapsed Gibbs sampling, oracle and SparseLDA; word-topic counts and
//!   topic totals in `add` tables), [`mlp`] (a dense ReLU network, oracle and GEMM engine; one
//!   table per layer), [`lr`] (L1 sparse logistic regression on u64 feature keys; a sparse table
//!   with the FTRL-proximal rule).
//! - [`philox`]: the counter-based generator Philox-4x32-10 and its uniforms in [0, 1), bit for
//!   bit the same as the CUDA kernel `rng_philox_uniforms` (`kernels/rng.cu`); the LDA engines
//!   draw their per-token uniforms from it ([`lda::SweepKey::uniform`]), as `lda_gibbs.cu` does.
//!
//! This crate must not depend on networking, async runtimes, the parameter-server client or
//! the server: sessions see rows going in and updates going out, never a connection, so
//! everything here is synchronous and deterministic, and the CUDA engines (`worker-gpu`) build
//! on it rather than the other way round. Errors are typed (`thiserror`), and nothing in here
//! panics on file content or on rows fed to a session.

pub mod app;
pub mod error;
pub mod lda;
pub mod lr;
pub mod mf;
pub mod mlp;
pub mod par;
pub mod philox;
pub mod prefetch;
pub mod seed;
pub mod visit;

pub use error::{AppError, ComputeError, DataError, SinkError};
