"""LIBMF (through the `libmf` pip package's ctypes binding) on the exported MF data.

LIBMF reports no per-iteration time, and `fit` includes set-up (copies, scaling, shuffling,
the block grid), so the rate is taken from the difference of two fits on the same data:
    rate = reps x nnz / (time(fit with 1 + reps iterations) - time(fit with 1 iteration))
(`--pairs` such pairs, summed). The first iteration is left out on purpose: with L1 terms
zero, LIBMF updates only the first SIMD lane group in iteration 0 ("slow_only"), so it is
cheaper than the others. Parameters: LIBMF's own defaults (l2 0.1 on P and Q, eta 0.1,
26 bins), k = rank, nr_threads = --threads.

`--so PATH` loads another build of the same LIBMF sources (e.g. the AVX build that
benches/peers.sh compiles from the package's sdist) through the binding's LIBMF_OBJ hook.
"""

import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402

ap = c.parser("LIBMF peer (updates/s)", warmup=1, reps=5)
ap.add_argument("--rank", type=int, default=32)
ap.add_argument("--pairs", type=int, default=1)
ap.add_argument("--so", help="LIBMF shared object to load instead of the pip build")
ap.add_argument("--name", default="libmf-pip", help="engine name to report")
args = c.parse_and_limit_threads(ap)
if args.so:
    os.environ["LIBMF_OBJ"] = os.path.abspath(args.so)

import numpy as np  # noqa: E402

with contextlib.redirect_stdout(sys.stderr):  # the binding prints which .so it loaded
    from libmf import mf

from importlib.metadata import version  # noqa: E402

meta = c.load_meta(args.data, "mf")
rec = np.fromfile(
    os.path.join(args.data, "ratings.bin"),
    dtype=np.dtype([("u", "<u4"), ("i", "<u4"), ("r", "<f4")]),
)
n = rec.shape[0]
if n != meta["ratings"]:
    sys.exit(f"ratings.bin holds {n} records, meta.json says {meta['ratings']}")
X = np.empty((n, 3), dtype=np.float32)  # the binding's layout: (user, item, value) as f32
X[:, 0] = rec["u"]
X[:, 1] = rec["i"]
X[:, 2] = rec["r"]
del rec
c.log(f"libmf: {n} ratings loaded, {meta['users']} x {meta['items']}")


def fit(iters):
    m = mf.MF(
        fun=0, k=args.rank, nr_threads=args.threads, nr_bins=26, nr_iters=iters,
        lambda_p1=0.0, lambda_q1=0.0, lambda_p2=0.1, lambda_q2=0.1, eta=0.1,
        do_nmf=False, quiet=True, copy_data=True,
    )
    t = time.perf_counter()
    m.fit(X)
    dt = time.perf_counter() - t
    return dt, m


for _ in range(args.warmup):
    dt, _m = fit(1)
    c.log(f"  libmf warm-up fit(1): {dt:.2f} s")
diffs = []
for p in range(args.pairs):
    t1, _m = fit(1)
    tn, m = fit(1 + args.reps)
    c.log(f"  libmf pair {p + 1}: fit(1) {t1:.2f} s, fit({1 + args.reps}) {tn:.2f} s")
    if tn <= t1:
        sys.exit("libmf: the longer fit was not slower; timing is unusable")
    diffs.append((tn - t1) / args.reps)  # seconds per full iteration
# Sanity: the model must predict finite values.
pred = m.predict(X[:1000, :2])
if not np.all(np.isfinite(pred)):
    sys.exit("libmf: non-finite predictions")
rmse = float(np.sqrt(np.mean((pred - X[:1000, 2]) ** 2)))
r = c.rates(n, diffs)
r["reps"] = args.reps * args.pairs
c.emit(meta, {
    "engine": args.name, "version": version("libmf"), "measure": "train",
    "threads": args.threads, "rank": args.rank, "warmup": args.warmup, "unit": "updates/s",
    "so": os.path.basename(os.environ.get("LIBMF_OBJ", "")) or "pip",
    "train_rmse_sample": rmse, **r,
})
