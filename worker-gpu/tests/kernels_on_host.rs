//! The device's code on the CPU: kernel headers and kernel files compiled by the host's C++
//! compiler behind shims (`host_cxx`), run on an emulated grid (with one lane, on a warp of 32
//! host threads in lockstep, or as whole kernels on blocks of such warps) and checked bit for
//! bit against their Rust halves and oracles. One test binary for all of them (each binary
//! links the whole crate). What such a run cannot catch is a difference between NVRTC and the
//! host compiler, or a race between blocks: the GPU conformance tests check those where there
//! is a GPU.

#[path = "kernels_on_host/codec_dense_grid.rs"]
mod codec_dense_grid;
#[path = "kernels_on_host/codec_energy_grid.rs"]
mod codec_energy_grid;
#[path = "kernels_on_host/codec_index_grid.rs"]
mod codec_index_grid;
#[path = "kernels_on_host/codec_levels_grid.rs"]
mod codec_levels_grid;
#[path = "kernels_on_host/codec_select_grid.rs"]
mod codec_select_grid;
#[path = "kernels_on_host/codec_topk_grid.rs"]
mod codec_topk_grid;
#[path = "kernels_on_host/headers.rs"]
mod headers;
#[path = "kernels_on_host/host_cxx.rs"]
mod host_cxx;
#[path = "kernels_on_host/lda_gibbs.rs"]
mod lda_gibbs;
#[path = "kernels_on_host/lda_gibbs_grid.rs"]
mod lda_gibbs_grid;
#[path = "kernels_on_host/lda_loglik_grid.rs"]
mod lda_loglik_grid;
#[path = "kernels_on_host/lda_rice.rs"]
mod lda_rice;
#[path = "kernels_on_host/lda_wire_grid.rs"]
mod lda_wire_grid;
#[path = "kernels_on_host/lda_word.rs"]
mod lda_word;
#[path = "kernels_on_host/lda_word_grid.rs"]
mod lda_word_grid;
#[path = "kernels_on_host/lr_grid.rs"]
mod lr_grid;
#[path = "kernels_on_host/mf_waves_grid.rs"]
mod mf_waves_grid;
#[path = "kernels_on_host/mf_window.rs"]
mod mf_window;
#[path = "kernels_on_host/mlp_init_grid.rs"]
mod mlp_init_grid;
