//! Conformance of the apps' sessions, clock by clock, with the parameter server played by the
//! in-memory test double (`ps_apps::app::testing`): each session on the oracle engines gives
//! exactly the updates and tables of a plain loop over the oracle written here, and on the fast
//! CPU engines stays within the tolerances each module states. Sessions refuse rows that are not
//! the ones they asked for, and the double refuses updates a real client would.

#[path = "sessions/common.rs"]
mod common;
#[path = "sessions/lda.rs"]
mod lda;
#[path = "sessions/lr.rs"]
mod lr;
#[path = "sessions/mf.rs"]
mod mf;
#[path = "sessions/mlp.rs"]
mod mlp;
