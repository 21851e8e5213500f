//! Runnable examples: `mf_local.rs` (the main job) and `lasso.rs` (a sixth model written only
//! against the public API).
