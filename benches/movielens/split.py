"""MovieLens 100K from the RecBole wheel, as u.data, plus a seeded 80/20 train/test split.

    python3 benches/movielens/split.py [--dir target/movielens] [--seed 42] [--test-fraction 0.2]

Standard library only (run it with any Python 3.8+; pip is used for the download).

1. Downloads recbole==1.2.1's wheel (pip download --no-deps) into DIR, unless it is there.
   The wheel ships the MovieLens 100K ratings as recbole/dataset_example/ml-100k/ml-100k.inter
   (RecBole's atomic-file format: a header `user_id:token item_id:token rating:float
   timestamp:float`, then the ratings, tab separated, in the order of GroupLens' u.data).
2. Checks the file: its SHA-256, 100,000 ratings, 943 users (ids 1..943), 1682 items
   (ids 1..1682), ratings in {1,..,5}, no (user, item) pair twice.
3. Writes DIR/ml-100k/u.data: the classic GroupLens format, `user<TAB>item<TAB>rating<TAB>time`,
   no header, the fields and their order exactly as in the file.
4. The split, a plain uniform random split of the ratings (no per-user stratification):
   indices 0..n-1 of the ratings in file order are shuffled with Python's
   `random.Random(seed).shuffle` (Fisher-Yates over MT19937; its output for an int seed is the
   same on every CPython 3.2+); the first n - ceil(test_fraction * n) shuffled ratings are the
   training set, the remaining ceil(test_fraction * n) the test set. This is what Surprise's
   `train_test_split(data, test_size=0.2, random_state=seed)` does, except that Surprise
   shuffles with numpy's RandomState, so the two splits are different draws of the same kind.
   train.data and test.data keep the ratings in file order (each is a subsequence of u.data),
   same format as u.data. With the default seed and fraction the files' SHA-256 are checked
   against the ones recorded below, so a changed split cannot pass silently.

Prints a summary on stderr and one JSON line on stdout.
"""

import argparse
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import zipfile

RECBOLE = "recbole==1.2.1"
WHEEL = "recbole-1.2.1-py3-none-any.whl"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
INTER_SHA256 = "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
# What is known of ml-100k (GroupLens' README): 100,000 ratings (1-5) from 943 users on
# 1682 movies, users and items numbered consecutively from 1.
N_RATINGS, N_USERS, N_ITEMS = 100_000, 943, 1682
# The split's files for seed 42, test fraction 0.2 (recorded on the first run, CPython 3.11.7).
SPLIT_SHA256 = {
    (42, 0.2): {
        "train.data": "bad08884471f5237caf04e1b2ab09454732c7de2b1a7ee8a6dfcf636224f67aa",
        "test.data": "27ca21ba3f3580bf155dfdde931dfbe32411fe9c2fab1de14e7a7a066daf6b3b",
    }
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def die(msg):
    sys.exit(f"split.py: error: {msg}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="target/movielens")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    args = ap.parse_args()
    if not 0 < args.test_fraction < 1:
        die("--test-fraction must be in (0, 1)")

    os.makedirs(args.dir, exist_ok=True)
    wheel = os.path.join(args.dir, WHEEL)
    if os.path.exists(wheel):
        log(f"wheel: {wheel} (already there)")
    else:
        log(f"wheel: pip download --no-deps {RECBOLE} -d {args.dir}")
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
               "--no-deps", RECBOLE, "-d", args.dir]
        if subprocess.run(cmd, stdout=sys.stderr).returncode != 0 or not os.path.exists(wheel):
            die(f"could not download {RECBOLE} (command: {' '.join(cmd)})")

    with zipfile.ZipFile(wheel) as z:
        raw = z.read(MEMBER)
    got = sha256(raw)
    if got != INTER_SHA256:
        die(f"{MEMBER} has SHA-256 {got}, expected {INTER_SHA256}")
    lines = raw.decode("ascii").split("\n")
    if lines[-1] == "":
        lines.pop()
    if lines[0] != HEADER:
        die(f"unexpected header {lines[0]!r}")
    rows = [l.split("\t") for l in lines[1:]]

    # ---- checks against what is known of ml-100k
    bad = [r for r in rows if len(r) != 4 or not all(f.isdigit() for f in r)]
    if bad:
        die(f"{len(bad)} malformed lines, e.g. {bad[0]!r}")
    users = {int(r[0]) for r in rows}
    items = {int(r[1]) for r in rows}
    ratings = [int(r[2]) for r in rows]
    hist = {v: ratings.count(v) for v in range(1, 6)}
    pairs = len({(r[0], r[1]) for r in rows})
    stats = {
        "ratings": len(rows), "users": len(users), "items": len(items),
        "user_ids": [min(users), max(users)], "item_ids": [min(items), max(items)],
        "rating_range": [min(ratings), max(ratings)], "rating_hist": hist,
        "mean_rating": round(sum(ratings) / len(ratings), 6), "distinct_pairs": pairs,
    }
    log(f"ml-100k.inter: {stats['ratings']} ratings, {stats['users']} users "
        f"(ids {min(users)}..{max(users)}), {stats['items']} items (ids {min(items)}..{max(items)}), "
        f"ratings {min(ratings)}..{max(ratings)} (mean {stats['mean_rating']:.4f}), "
        f"{pairs} distinct (user, item) pairs")
    log(f"rating histogram: {hist}")
    expect = {"ratings": N_RATINGS, "users": N_USERS, "items": N_ITEMS,
              "user_ids": [1, N_USERS], "item_ids": [1, N_ITEMS], "rating_range": [1, 5],
              "distinct_pairs": N_RATINGS}
    for k, v in expect.items():
        if stats[k] != v:
            die(f"{k} is {stats[k]}, ml-100k has {v}")

    # ---- u.data and the split
    out = os.path.join(args.dir, "ml-100k")
    os.makedirs(out, exist_ok=True)
    n = len(rows)
    n_test = math.ceil(args.test_fraction * n)
    order = list(range(n))
    random.Random(args.seed).shuffle(order)
    test_idx = set(order[n - n_test:])
    files = {
        "u.data": rows,
        "train.data": [r for i, r in enumerate(rows) if i not in test_idx],
        "test.data": [r for i, r in enumerate(rows) if i in test_idx],
    }
    hashes = {}
    for name, part in files.items():
        data = "".join("\t".join(r) + "\n" for r in part).encode("ascii")
        hashes[name] = sha256(data)
        path = os.path.join(out, name)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        log(f"{path}: {len(part)} ratings, sha256 {hashes[name]}")

    train_users = {r[0] for r in files["train.data"]}
    train_items = {r[1] for r in files["train.data"]}
    test = files["test.data"]
    cold_u = sum(r[0] not in train_users for r in test)
    cold_i = sum(r[1] not in train_items for r in test)
    log(f"split: seed {args.seed}, test fraction {args.test_fraction}: train {len(files['train.data'])}"
        f" ratings ({len(train_users)} users, {len(train_items)} items), test {len(test)} ratings;"
        f" test ratings whose user / item is not in train: {cold_u} / {cold_i}")

    want = SPLIT_SHA256.get((args.seed, args.test_fraction))
    if want:
        for name in ("train.data", "test.data"):
            if want[name] and want[name] != hashes[name]:
                die(f"{name} has SHA-256 {hashes[name]}, but seed {args.seed} gave "
                    f"{want[name]} when this script was written: the split is not reproduced")

    print(json.dumps({
        "step": "data", "source": f"{RECBOLE}:{MEMBER}", "source_sha256": got, **stats,
        "split": "uniform random, Python random.Random(seed).shuffle, first n-ceil(f*n) train",
        "seed": args.seed, "test_fraction": args.test_fraction,
        "train": len(files["train.data"]), "test": len(test),
        "train_users": len(train_users), "train_items": len(train_items),
        "test_cold_users": cold_u, "test_cold_items": cold_i,
        "sha256": hashes, "python": sys.version.split()[0],
    }))


if __name__ == "__main__":
    main()
