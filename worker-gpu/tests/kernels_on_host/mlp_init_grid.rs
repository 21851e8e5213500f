//! `mlp_init_glorot` (`kernels/mlp_resident.cu`), never run on a GPU, on the CPU over an emulated
//! grid: each layer of a model made where it is used equals `ps_apps::mlp::init_layer`, the
//! table initialiser the shards and the host fill, bit for bit: layers of one to 785 columns,
//! several seeds and layer indices, grids of one to three blocks (so the grid stride wraps).

use crate::host_cxx::{self, bits};

use std::fmt::Write as _;

use ps_apps::mlp::{init_layer, layer_init};
use ps_proto::Init;

fn kernels() -> String {
    format!(
        "{}\n{}\n{}",
        host_cxx::BLOCKS_OF_WARPS,
        include_str!("../../../kernels/visit.cuh"),
        include_str!("../../../kernels/mlp_resident.cu"),
    )
}

#[test]
fn the_initial_model_made_on_the_device_is_the_hosts_bit_for_bit() {
    // (layer index, fan_in, fan_out, seed)
    let layers = [
        (0usize, 784usize, 3usize, 1u64),
        (1, 256, 17, 1),
        (2, 3, 40, 0xdead_beef),
        (7, 1, 1, u64::MAX),
        (0, 0, 5, 9),
        (3, 64, 10, 0x004d_4c50),
    ];
    let grids = [(1u32, 32u32), (2, 64), (3, 96)];
    let (mut body, mut want) = (String::new(), String::new());
    let mut nonzero = 0;
    for (case, &(layer, fan_in, fan_out, seed)) in layers.iter().enumerate() {
        let host = init_layer(layer, fan_in, fan_out, seed);
        nonzero += host.iter().filter(|v| **v != 0.0).count();
        for b in bits(&host) {
            writeln!(want, "{b:08x}").unwrap();
        }
        let Init::Glorot {
            bound,
            fan_in: f,
            seed: s,
        } = layer_init(fan_in, fan_out, seed)
        else {
            panic!("the MLP's layers are Glorot-initialised");
        };
        let n = host.len();
        let (grid, block) = grids[case % grids.len()];
        write!(
            body,
            "{{\nstatic float out[{n}];
            run_grid({grid}u, {block}u, [&] {{ mlp_init_glorot({s}ull, {layer}u, {f}u, {width}u, __uint_as_float({bound:#010x}u), {n}ull, out); }});
            for (unsigned int i = 0; i < {n}u; ++i) {{
                unsigned int b; memcpy(&b, &out[i], 4); printf(\"%08x\\n\", b);
            }}\n}}\n",
            width = fan_in + 1,
            bound = bound.to_bits(),
        )
        .unwrap();
    }
    assert!(nonzero > 7_000, "the cases hold weights, not only biases");
    host_cxx::check_on_host(&kernels(), &body, &want);
}
