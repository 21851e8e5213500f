"""scikit-learn MLPClassifier on the exported MLP data (784-256-256-10, ReLU, softmax).

solver='sgd', batch_size=64, learning_rate_init=0.05, momentum=0 (plain SGD, like our
engine's sgd_step), default alpha (l2 1e-4), float32 input (sklearn keeps float32).
One epoch = one partial_fit call over all samples (shuffled); after --warmup untimed epochs,
--reps epochs are timed one by one: rate = samples x reps / time. The matrix products run in
numpy's BLAS (OpenBLAS in the pip wheels) limited to --threads threads.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402

ap = c.parser("scikit-learn MLPClassifier peer (samples/s)", warmup=1, reps=3)
ap.add_argument("--batch", type=int, default=64)
args = c.parse_and_limit_threads(ap)

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

meta = c.load_meta(args.data, "mlp")
n, d = meta["samples"], meta["input"]
X = np.fromfile(os.path.join(args.data, "x.u8"), dtype=np.uint8)
y = np.fromfile(os.path.join(args.data, "y.u8"), dtype=np.uint8)
if X.size != n * d or y.size != n:
    sys.exit("x.u8 / y.u8 sizes do not match meta.json")
X = X.reshape(n, d).astype(np.float32) / np.float32(255.0)
hidden = tuple(meta["hidden"])
clf = MLPClassifier(hidden_layer_sizes=hidden, activation="relu", solver="sgd",
                    batch_size=args.batch, learning_rate_init=0.05, momentum=0.0,
                    max_iter=1, shuffle=True, random_state=args.seed)
classes = np.arange(meta["classes"])
secs = []
with threadpool_limits(limits=args.threads):
    for i in range(args.warmup + args.reps):
        t = time.perf_counter()
        clf.partial_fit(X, y, classes=classes)
        dt = time.perf_counter() - t
        c.log(f"  sklearn-mlp epoch {i + 1}: {dt:.2f} s")
        if i >= args.warmup:
            secs.append(dt)
    blas = c.blas_info()
c.emit(meta, {
    "engine": "sklearn-mlp", "version": sklearn.__version__, "measure": "train",
    "threads": args.threads, "batch": args.batch, "warmup": args.warmup, "reps": args.reps,
    "unit": "samples/s", "train_loss": float(clf.loss_), "dtype": str(clf.coefs_[0].dtype),
    "blas": blas, **c.rates(n, secs),
})
