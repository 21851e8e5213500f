use super::*;
use ps_apps::mlp::CpuMlp;
use std::collections::HashMap;

/// The kernels' documented semantics on host vectors of exactly the planned sizes; buffers
/// the plan should write before reading start as NaN.
struct Emu {
    bufs: HashMap<Buf, Vec<f32>>,
    labels: Vec<u8>,
    pred: Vec<u8>,
    loss: f64,
    correct: u64,
}

impl Emu {
    fn get(&self, p: At, len: usize) -> &[f32] {
        let v = &self.bufs[&p.buf];
        assert!(p.off + len <= v.len(), "{p:?} + {len} > {}", v.len());
        &v[p.off..p.off + len]
    }

    fn run(&mut self, op: &Op, start: usize) {
        let (out, ins) = op.operands();
        if let Some((o, _)) = out {
            assert!(ins.iter().all(|(i, _)| i.buf != o.buf), "{op:?}");
        }
        match *op {
            Op::Gemm(g) => {
                // Every product a plan makes is one cuBLAS accepts too.
                if let Err(e) = super::gemm::cublas_config(&g) {
                    panic!("{g:?}: {e}");
                }
                if g.m == 0 || g.n == 0 {
                    return;
                }
                let a = self.get(g.a, g.extent_a()).to_vec();
                let b = self.get(g.b, g.extent_b()).to_vec();
                let bias = g
                    .bias
                    .map(|(p, s)| (self.get(p, g.extent_bias(s)).to_vec(), s));
                let ext = g.extent_c();
                let c = self.bufs.get_mut(&g.c.buf).expect("c");
                assert!(g.c.off + ext <= c.len());
                let c = &mut c[g.c.off..g.c.off + ext];
                for i in 0..g.m {
                    for j in 0..g.n {
                        let mut acc = 0.0f32;
                        for p in 0..g.k {
                            let av = if g.trans_a {
                                a[p * g.lda + i]
                            } else {
                                a[i * g.lda + p]
                            };
                            let bv = if g.trans_b {
                                b[j * g.ldb + p]
                            } else {
                                b[p * g.ldb + j]
                            };
                            acc = av.mul_add(bv, acc);
                        }
                        let out = &mut c[i * g.ldc + j];
                        let mut v = g.alpha * acc;
                        if g.beta != 0.0 {
                            v = g.beta.mul_add(*out, v);
                        }
                        if let Some((bv, s)) = &bias {
                            v += bv[j * s];
                        }
                        if g.relu {
                            v = v.max(0.0);
                        }
                        *out = v;
                    }
                }
            }
            Op::Softmax(s) => {
                let z = self.get(s.logits, s.rows * s.classes).to_vec();
                let mut dl = vec![0.0f32; s.rows * s.classes];
                for r in 0..s.rows {
                    let row = &z[r * s.classes..(r + 1) * s.classes];
                    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                    let best = ps_apps::mlp::argmax(row);
                    let sum: f32 = row.iter().map(|&v| (v - m).exp()).sum();
                    let label = s.labels.then(|| usize::from(self.labels[start + r]));
                    for (cl, &v) in row.iter().enumerate() {
                        let p = (v - m).exp() / sum;
                        let hot = if Some(cl) == label { 1.0 } else { 0.0 };
                        dl[r * s.classes + cl] = (p - hot) * s.inv_batch;
                    }
                    if s.pred {
                        self.pred[start + r] = best as u8;
                    }
                    if let Some(lab) = label {
                        self.loss += f64::from(m) + f64::from(sum).ln() - f64::from(row[lab]);
                        self.correct += u64::from(best == lab);
                    }
                }
                if let Some(d) = s.dlogits {
                    let v = self.bufs.get_mut(&d.buf).expect("dlogits");
                    v[d.off..d.off + dl.len()].copy_from_slice(&dl);
                }
            }
            Op::ReluBackward { grad, act, n } => {
                let a = self.get(act, n).to_vec();
                let g = self.bufs.get_mut(&grad.buf).expect("grad");
                for (gv, av) in g[grad.off..grad.off + n].iter_mut().zip(&a) {
                    if av.is_nan() || *av <= 0.0 {
                        *gv = 0.0;
                    }
                }
            }
            Op::BiasGrad {
                dz,
                rows,
                cols,
                out,
                out_stride,
            } => {
                let z = self.get(dz, rows * cols).to_vec();
                let o = self.bufs.get_mut(&out.buf).expect("out");
                for j in 0..cols {
                    o[out.off + j * out_stride] = (0..rows).map(|r| z[r * cols + j]).sum();
                }
            }
        }
    }
}

/// Runs a call through the emulation like `CudaMlp::run` does; returns
/// (grads, stats, predictions).
fn emulate(
    arch: &Arch,
    params: &[Vec<f32>],
    x: &[f32],
    y: &[u8],
    kind: Kind,
    chunk: usize,
) -> (Vec<Vec<f32>>, BatchStats, Vec<u8>) {
    let b = y.len();
    let nl = arch.num_layers();
    let mut emu = Emu {
        bufs: HashMap::new(),
        labels: y.to_vec(),
        pred: vec![0xEE; b],
        loss: 0.0,
        correct: 0,
    };
    for (l, p) in params.iter().enumerate() {
        emu.bufs.insert(Buf::Param(l), p.clone());
        emu.bufs.insert(Buf::Grad(l), vec![f32::NAN; p.len()]);
    }
    for (start, rows, mode) in schedule(b, chunk, kind) {
        let d = arch.input;
        emu.bufs
            .insert(Buf::X, x[start * d..(start + rows) * d].to_vec());
        emu.bufs.insert(Buf::Ones, vec![1.0; rows]);
        for l in 0..nl {
            let fo = arch.layer(l).fan_out;
            emu.bufs.insert(Buf::Act(l), vec![f32::NAN; rows * fo]);
            emu.bufs.insert(Buf::Dz(l), vec![f32::NAN; rows * fo]);
        }
        for op in plan_chunk(arch, rows, mode) {
            emu.run(&op, start);
        }
    }
    let grads = (0..nl).map(|l| emu.bufs[&Buf::Grad(l)].clone()).collect();
    let stats = BatchStats {
        loss_sum: emu.loss,
        correct: emu.correct,
        count: b as u64,
    };
    (grads, stats, emu.pred)
}

/// splitmix64 in [-1, 1).
struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    let den: f64 = b.iter().map(|&y| f64::from(y).powi(2)).sum();
    if a.iter().any(|v| v.is_nan()) {
        return f64::INFINITY;
    }
    (num / den.max(1e-300)).sqrt()
}

#[test]
fn plans_match_the_cpu_oracle() {
    let mut rng = Rng(7);
    let archs = [
        Arch::new(20, &[], 3),
        Arch::new(33, &[37], 10),
        Arch::new(50, &[37, 65], 7),
    ];
    for arch in &archs {
        let params: Vec<Vec<f32>> = arch
            .layers()
            .iter()
            .map(|s| (0..s.len()).map(|_| rng.uniform() * 0.4).collect())
            .collect();
        for b in [1usize, 3, 64, 200] {
            let x: Vec<f32> = (0..b * arch.input).map(|_| rng.uniform()).collect();
            let y: Vec<u8> = (0..b)
                .map(|_| ((rng.uniform() + 1.0) * 0.5 * arch.classes as f32) as u8)
                .map(|v| v.min(arch.classes as u8 - 1))
                .collect();
            let mut want = arch.zeros();
            let want_stats = CpuMlp.gradient(arch, &params, &x, &y, &mut want).unwrap();
            let mut want_pred = vec![0u8; b];
            CpuMlp.predict(arch, &params, &x, &mut want_pred).unwrap();
            for chunk in [4096usize, 64, 7, 1] {
                let (g, st, _) = emulate(arch, &params, &x, &y, Kind::Gradient, chunk);
                for l in 0..arch.num_layers() {
                    let e = rel_err(&g[l], &want[l]);
                    assert!(e < 1e-5, "{arch:?} b {b} chunk {chunk} layer {l}: {e}");
                }
                assert_eq!(st.correct, want_stats.correct);
                assert!((st.loss_sum - want_stats.loss_sum).abs() <= 1e-5 * want_stats.loss_sum);
                let (_, ev, _) = emulate(arch, &params, &x, &y, Kind::Evaluate, chunk);
                assert_eq!(ev.correct, want_stats.correct);
                assert!((ev.loss_sum - want_stats.loss_sum).abs() <= 1e-5 * want_stats.loss_sum);
                let (_, pst, pred) = emulate(arch, &params, &x, &y, Kind::Predict, chunk);
                assert_eq!(pred, want_pred, "{arch:?} b {b} chunk {chunk}");
                assert_eq!((pst.loss_sum, pst.correct), (0.0, 0));
            }
        }
    }
}

#[test]
fn schedule_covers_the_batch() {
    let s = schedule(10_000, 4096, Kind::Gradient);
    assert_eq!(
        s.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
        vec![(0, 4096), (4096, 4096), (8192, 1808)]
    );
    assert!(matches!(
        s[0].2,
        Mode::Gradient {
            accumulate: false,
            ..
        }
    ));
    assert!(matches!(
        s[2].2,
        Mode::Gradient {
            accumulate: true,
            ..
        }
    ));
    assert!(schedule(0, 4096, Kind::Evaluate).is_empty());
}
