//! Runnable examples; see mf_local.rs.
