"""Shared helpers of the peer scripts (see benches/PEERS.md).

Each peer script reads a data set that `engines --export DIR` wrote, runs one reference tool
on it with the requested thread count and prints ONE JSON line on stdout, in the same shape as
the `engines` bench: {"app","engine","version","threads",...,"rate","unit","data_hash"}.
Everything else (progress, library chatter) goes to stderr.

The thread-count environment variables must be set before numpy (and its BLAS) is imported,
so the scripts call `parse_and_limit_threads` before importing anything heavy.
"""

import argparse
import json
import os
import sys

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def parser(description, warmup, reps):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", required=True, help="directory written by `engines --export`")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=warmup, help="untimed epochs/iterations first")
    ap.add_argument("--reps", type=int, default=reps, help="timed epochs/iterations")
    ap.add_argument("--seed", type=int, default=42)
    return ap


def parse_and_limit_threads(ap):
    args = ap.parse_args()
    args.threads = max(1, args.threads)
    args.reps = max(1, args.reps)
    for v in THREAD_VARS:
        os.environ[v] = str(args.threads)
    return args


def load_meta(data_dir, app):
    with open(os.path.join(data_dir, "meta.json")) as f:
        meta = json.load(f)
    if meta.get("app") != app:
        sys.exit(f"{data_dir}/meta.json is for app {meta.get('app')!r}, not {app!r}")
    return meta


def rates(work, secs):
    """Rate fields for `work` units per rep over the timed `secs` (one entry per rep)."""
    s = sorted(secs)
    return {
        "rate": work * len(secs) / sum(secs),
        "rate_best": work / s[0],
        "rate_median": work / s[len(s) // 2],
        "seconds": sum(secs),
    }


def blas_info():
    """The BLAS libraries numpy/scipy loaded and their thread counts (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info

        return [
            {k: i.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for i in threadpool_info()
        ]
    except Exception as e:  # informative only
        return str(e)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def emit(meta, fields):
    out = {k: meta[k] for k in meta if k != "format"}
    out.update(fields)
    print(json.dumps(out), flush=True)
