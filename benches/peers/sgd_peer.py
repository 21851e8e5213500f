"""scikit-learn SGDClassifier(loss='log_loss') on the exported sparse LR data (libsvm).

Per-sample SGD over the CSR matrix (sklearn's plain_sgd, Cython): default l2 penalty
(alpha 1e-4), 'optimal' learning rate, shuffle each epoch. One epoch = one partial_fit call;
after --warmup untimed epochs, --reps epochs are timed one by one:
    rate = rows x reps / time (samples/s).
Binary SGDClassifier is single-threaded whatever n_jobs says (n_jobs parallelises
one-vs-all over classes only), so --threads only sets the BLAS/OpenMP limits.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402

ap = c.parser("scikit-learn SGDClassifier peer (samples/s)", warmup=1, reps=10)
args = c.parse_and_limit_threads(ap)

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from sklearn.datasets import load_svmlight_file  # noqa: E402
from sklearn.linear_model import SGDClassifier  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

meta = c.load_meta(args.data, "lr")
X, y = load_svmlight_file(os.path.join(args.data, "train.svm"), n_features=meta["features"],
                          dtype=np.float64)
# SGDClassifier takes CSR with 32-bit indices only; the loader may give 64-bit ones.
X.indices = X.indices.astype(np.int32)
X.indptr = X.indptr.astype(np.int32)
if X.shape[0] != meta["rows"] or X.nnz != meta["nonzeros"]:
    sys.exit(f"train.svm: {X.shape[0]} rows / {X.nnz} nonzeros, meta.json says "
             f"{meta['rows']} / {meta['nonzeros']}")
clf = SGDClassifier(loss="log_loss", penalty="l2", alpha=1e-4, learning_rate="optimal",
                    shuffle=True, random_state=args.seed)
classes = np.array([0.0, 1.0])
secs = []
with threadpool_limits(limits=args.threads):
    for i in range(args.warmup + args.reps):
        t = time.perf_counter()
        clf.partial_fit(X, y, classes=classes)
        dt = time.perf_counter() - t
        if i >= args.warmup:
            secs.append(dt)
p = np.clip(clf.predict_proba(X)[:, 1], 1e-12, 1 - 1e-12)
logloss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
c.emit(meta, {
    "engine": "sklearn-sgd", "version": sklearn.__version__, "measure": "train",
    "threads": args.threads, "warmup": args.warmup, "reps": args.reps, "unit": "samples/s",
    "train_logloss": logloss, **c.rates(X.shape[0], secs),
})
