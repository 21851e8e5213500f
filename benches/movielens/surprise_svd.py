"""Surprise's SVD (and two reference models) on our MovieLens 100K train/test split.

    target/surprise-venv/bin/python benches/movielens/surprise_svd.py \
        [--dir target/movielens/ml-100k] [--seeds 0 1 2 3 4]

Trains on DIR/train.data and scores DIR/test.data (both `user<TAB>item<TAB>rating<TAB>time`,
written by split.py), through Surprise's own predefined-folds path:
`Dataset.load_from_folds([(train, test)], Reader(line_format='user item rating timestamp',
sep='\\t', rating_scale=(1, 5)))` and `PredefinedKFold`. Models, all with Surprise's defaults:

  SVD            biased (global mean + user/item biases + factors), n_factors=100, n_epochs=20,
                 lr_all=0.005, reg_all=0.02, init N(0, 0.1); one fit per seed (random_state)
  SVD-unbiased   the same with biased=False (factors only)
  BaselineOnly   biases only, fitted by ALS (Surprise's default: 10 epochs, reg_u=15,
                 reg_i=10); it has no randomness, so it is fitted once

Predictions are clipped to [1, 5] (Surprise's default); a test user or item unseen in training
gets the parts of the model it has (e.g. the global mean plus the known bias). RMSE and MAE
from surprise.accuracy. Per-seed lines on stderr; one JSON line per model on stdout with the
per-seed RMSEs and their mean.
"""

import argparse
import hashlib
import json
import os
import statistics
import sys
import time

import surprise
from surprise import SVD, BaselineOnly, Dataset, Reader, accuracy
from surprise.model_selection import PredefinedKFold


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="target/movielens/ml-100k")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = ap.parse_args()
    train_path = os.path.join(args.dir, "train.data")
    test_path = os.path.join(args.dir, "test.data")
    for p in (train_path, test_path):
        if not os.path.exists(p):
            sys.exit(f"surprise_svd.py: error: {p} is missing (run benches/movielens.sh data)")

    reader = Reader(line_format="user item rating timestamp", sep="\t", rating_scale=(1, 5))
    data = Dataset.load_from_folds([(train_path, test_path)], reader=reader)
    [(trainset, testset)] = list(PredefinedKFold().split(data))
    def known(to_inner, raw_id):
        try:
            to_inner(raw_id)
            return True
        except ValueError:
            return False

    cold = sum(1 for u, i, _ in testset
               if not (known(trainset.to_inner_uid, u) and known(trainset.to_inner_iid, i)))
    log(f"trainset: {trainset.n_ratings} ratings, {trainset.n_users} users, {trainset.n_items} "
        f"items, global mean {trainset.global_mean:.4f}; testset: {len(testset)} ratings "
        f"({cold} with a user or item unseen in training)")
    common = {
        "train": train_path, "test": test_path,
        "train_sha256": sha256(train_path), "test_sha256": sha256(test_path),
        "train_ratings": trainset.n_ratings, "test_ratings": len(testset),
        "surprise": surprise.__version__,
    }

    def run(name, make, seeds, params):
        rmses, maes, fit_s = [], [], []
        for seed in seeds:
            algo = make(seed)
            t0 = time.perf_counter()
            algo.fit(trainset)
            fit_s.append(round(time.perf_counter() - t0, 3))
            pred = algo.test(testset)
            rmses.append(accuracy.rmse(pred, verbose=False))
            maes.append(accuracy.mae(pred, verbose=False))
            log(f"  {name:13} seed {'-' if seed is None else seed}: test RMSE {rmses[-1]:.4f}  "
                f"MAE {maes[-1]:.4f}  (fit {fit_s[-1]:.1f} s)")
        mean = statistics.fmean(rmses)
        sd = statistics.stdev(rmses) if len(rmses) > 1 else 0.0
        log(f"  {name:13} mean test RMSE {mean:.4f} (sd {sd:.4f}, {len(rmses)} fit(s))")
        print(json.dumps({
            "step": "surprise", "model": name, "params": params, "seeds": seeds,
            "test_rmse": mean, "test_rmse_sd": sd, "test_rmse_per_seed": rmses,
            "test_mae": statistics.fmean(maes), "fit_s": fit_s, **common,
        }), flush=True)

    svd = {"n_factors": 100, "n_epochs": 20, "lr_all": 0.005, "reg_all": 0.02,
           "init_mean": 0, "init_std_dev": 0.1}
    # The defaults, spelled out so that a change of Surprise's defaults cannot go unnoticed.
    run("SVD", lambda s: SVD(biased=True, random_state=s, **svd), args.seeds,
        {"biased": True, **svd})
    run("SVD-unbiased", lambda s: SVD(biased=False, random_state=s, **svd), args.seeds,
        {"biased": False, **svd})
    als = {"method": "als", "n_epochs": 10, "reg_u": 15, "reg_i": 10}
    run("BaselineOnly", lambda s: BaselineOnly(bsl_options=dict(als), verbose=False), [None],
        {"bsl_options": als})


if __name__ == "__main__":
    main()
