//! The LR gradient kernels themselves on the CPU (`host_cxx::BLOCKS_OF_WARPS`): `lr_grad.cu`'s
//! `lr_gradient` (rows in CSR over the call's key list, keys outside it marked `LR_MISS`) and
//! `lr_resident.cu`'s `lr_gradient_rows` (rows named by index, columns dense over the worker's
//! keys), both on `lr.cuh`'s warp-per-row step, which changed after the last GPU run and has
//! never run on one. Launched on grids of several blocks of several warps, rows of more
//! nonzeros than a warp has lanes among them, and checked against the oracle `CpuLr` within
//! `FastLr`'s tolerance (the device adds the gradient's terms with atomics in any order, in f32).

use crate::host_cxx::{self, array};

use ps_apps::lr::{batch_keys, CpuLr, LrCompute, SparseRow, FAST_REL_TOL};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The kernels, with the headers they are compiled with.
fn kernels() -> String {
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        host_cxx::BLOCKS_OF_WARPS,
        include_str!("../../../kernels/lr.cuh"),
        include_str!("../../../kernels/visit.cuh"),
        include_str!("../../../kernels/slots.cuh"),
        include_str!("../../../kernels/lr_grad.cu"),
        include_str!("../../../kernels/lr_resident.cu"),
    )
}

/// Rows of 0 to 70 features over `pool`, repeated keys among them.
fn rows(rng: &mut ChaCha8Rng, n: usize, pool: &[u64]) -> Vec<SparseRow> {
    (0..n)
        .map(|_| SparseRow {
            label: f32::from(rng.gen_bool(0.4)),
            features: (0..rng.gen_range(0..=70))
                .map(|_| {
                    (
                        pool[rng.gen_range(0..pool.len())],
                        rng.gen_range(-1.5f32..1.5),
                    )
                })
                .collect(),
        })
        .collect()
}

/// A C array of floats, each exact.
fn floats(name: &str, v: &[f32]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:?}f")).collect();
    array("float", name, &items)
}

/// The C arrays of `rows` in CSR over `keys` (a column is a key's position, `LR_MISS` where
/// the key is not there), their labels, and `weights`.
fn csr_arrays(rows: &[SparseRow], keys: &[u64], weights: &[f32]) -> String {
    let mut row_ptr = vec![0u32];
    let (mut cols, mut vals, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows {
        for &(k, v) in &row.features {
            cols.push(keys.binary_search(&k).map_or(u32::MAX, |i| i as u32));
            vals.push(v);
        }
        row_ptr.push(cols.len() as u32);
        labels.push(row.label);
    }
    array("unsigned int", "row_ptr", &row_ptr)
        + &array("unsigned int", "cols", &cols)
        + &floats("vals", &vals)
        + &floats("labels", &labels)
        + &floats("weights", weights)
}

/// A C block: `arrays`, then `call` (which adds into `grad`, `m` floats, and `loss`) on a grid
/// of `(blocks, threads)`, then `grad` and `loss` printed for [`printed`].
fn program(arrays: &str, (grid, block): (u32, u32), call: &str, m: usize) -> String {
    format!(
        "{{\n{arrays}static float grad[{m}]; static double loss; loss = 0.0;
        for (int i = 0; i < {m}; ++i) grad[i] = 0.0f;
        run_grid({grid}u, {block}u, [&] {{ {call}; }});
        for (int i = 0; i < {m}; ++i) printf(\"%.9g\\n\", grad[i]);
        printf(\"%.17g\\nend\\n\", loss);
        }}\n",
        m = m.max(1),
    )
}

/// `(grad, loss)` printed by a program, in order.
fn printed(got: &str) -> Vec<(Vec<f32>, f64)> {
    got.split("end\n")
        .filter(|c| !c.trim().is_empty())
        .map(|case| {
            let mut lines: Vec<&str> = case.lines().collect();
            let loss = lines.pop().expect("a loss").parse().expect("the loss");
            let grad = lines.iter().map(|l| l.parse().expect("a value")).collect();
            (grad, loss)
        })
        .collect()
}

/// `got` against the oracle's `(want, loss)` for `batch` over `keys`, as FastLr is held to it.
fn check(
    case: usize,
    batch: &[SparseRow],
    keys: &[u64],
    got: &(Vec<f32>, f64),
    want: &(Vec<f32>, f64),
) {
    let n = batch.len().max(1) as f64;
    let mut mass = vec![0f64; keys.len()];
    for row in batch {
        for &(k, v) in &row.features {
            if let Ok(i) = keys.binary_search(&k) {
                mass[i] += f64::from(v.abs()) / n;
            }
        }
    }
    assert_eq!(got.0.len(), want.0.len(), "case {case}");
    for (i, (&g, &w)) in got.0.iter().zip(&want.0).enumerate() {
        let bound = FAST_REL_TOL * (f64::from(w).abs() + mass[i]) + 1e-7;
        assert!(
            (f64::from(g) - f64::from(w)).abs() <= bound,
            "case {case}, key {i}: the device's {g}, the oracle's {w}"
        );
    }
    assert!(
        (got.1 - want.1).abs() <= FAST_REL_TOL * (want.1.abs() + 1.0),
        "case {case}: loss {} against {}",
        got.1,
        want.1
    );
}

#[test]
fn the_lr_gradient_kernels_on_a_grid_are_the_oracles() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x4C52_4752);
    let pool: Vec<u64> = (0..90).map(|_| rng.gen_range(0..1_000_000)).collect();
    let grids = [(1u32, 32u32), (2, 64), (3, 96)];
    let mut body = String::new();
    let mut want = Vec::new();
    let mut cases = Vec::new();
    for case in 0..6 {
        let (grid, block) = grids[case % grids.len()];
        // lr_gradient: the batch over its keys but a few, which count as weight 0.
        let n = rng.gen_range(1..40);
        let batch = rows(&mut rng, n, &pool);
        let mut keys = batch_keys(&batch);
        keys.retain(|_| !rng.gen_bool(0.1));
        let weights: Vec<f32> = keys.iter().map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let mut g = vec![0f32; keys.len()];
        let loss = CpuLr.gradient(&batch, &keys, &weights, &mut g).unwrap();
        want.push((g, loss));
        cases.push((batch.clone(), keys.clone()));
        let inv_n = (1.0 / batch.len() as f64) as f32;
        body += &program(
            &csr_arrays(&batch, &keys, &weights),
            (grid, block),
            &format!(
                "lr_gradient(row_ptr, cols, vals, labels, {}u, weights, grad, {inv_n:?}f, &loss)",
                batch.len()
            ),
            keys.len(),
        );
        // lr_gradient_rows: the worker's rows, a batch of them named by index, columns dense
        // over the worker's keys.
        let worker = rows(&mut rng, 50, &pool);
        let all = batch_keys(&worker);
        let picked: Vec<u32> = (0..rng.gen_range(1..30))
            .map(|_| rng.gen_range(0..worker.len() as u32))
            .collect();
        let named: Vec<SparseRow> = picked.iter().map(|&i| worker[i as usize].clone()).collect();
        let weights: Vec<f32> = all.iter().map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let mut g = vec![0f32; all.len()];
        let loss = CpuLr.gradient(&named, &all, &weights, &mut g).unwrap();
        want.push((g, loss));
        cases.push((named.clone(), all.clone()));
        let inv_n = (1.0 / named.len() as f64) as f32;
        body += &program(
            &(csr_arrays(&worker, &all, &weights) + &array("unsigned int", "batch", &picked)),
            (grid, block),
            &format!(
                "lr_gradient_rows(row_ptr, cols, vals, labels, batch, {}u, weights, grad, \
                 {inv_n:?}f, &loss)",
                picked.len()
            ),
            all.len(),
        );
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some(got) = host_cxx::run_on_host(dir.path(), &kernels(), &body) else {
        return;
    };
    let got = printed(&got);
    assert_eq!(got.len(), want.len(), "cases printed");
    for (i, ((g, w), (batch, keys))) in got.iter().zip(&want).zip(&cases).enumerate() {
        let g = (g.0[..w.0.len()].to_vec(), g.1);
        check(i, batch, keys, &g, w);
    }
}
