"""tomotopy LDAModel (collapsed Gibbs sampling) on the exported LDA corpus.

tw = TermWeight.ONE, k = --topics, alpha = 0.1, eta = 0.01 (our engine's priors), no
hyper-parameter optimisation (optim_interval = 0, as our engine has none), workers = --threads,
parallel scheme --parallel (tomotopy's DEFAULT picks one by model). After --warmup untimed
iterations (the first also initialises), one train(--reps) call is timed:
    rate = tokens x reps / time
with tokens = model.num_words (every token, TermWeight.ONE); per-iteration times come from
tomotopy's training callback and give rate_best / rate_median.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402

ap = c.parser("tomotopy LDA peer (tokens/s)", warmup=5, reps=10)
ap.add_argument("--topics", type=int, default=50)
ap.add_argument("--parallel", choices=["default", "partition", "copy_merge", "none"],
                default="default")
args = c.parse_and_limit_threads(ap)

import tomotopy as tp  # noqa: E402

meta = c.load_meta(args.data, "lda")
with open(os.path.join(args.data, "docs.txt")) as f:
    docs = [line.split() for line in f]
mdl = tp.LDAModel(tw=tp.TermWeight.ONE, k=args.topics, alpha=0.1, eta=0.01, seed=args.seed)
for d in docs:
    mdl.add_doc(d)
del docs
mdl.optim_interval = 0
mdl.burn_in = 0
scheme = {
    "default": tp.ParallelScheme.DEFAULT,
    "partition": tp.ParallelScheme.PARTITION,
    "copy_merge": tp.ParallelScheme.COPY_MERGE,
    "none": tp.ParallelScheme.NONE,
}[args.parallel]
t = time.perf_counter()
mdl.train(args.warmup, workers=args.threads, parallel=scheme)
c.log(f"  tomotopy warm-up {args.warmup} iterations (with init): {time.perf_counter() - t:.2f} s")
tokens = mdl.num_words
if tokens != meta["tokens"]:
    sys.exit(f"tomotopy counts {tokens} tokens, meta.json says {meta['tokens']}")
stamps = []


def tick(_model, _cur, _total):
    stamps.append(time.perf_counter())


t = time.perf_counter()
mdl.train(args.reps, workers=args.threads, parallel=scheme, callback_interval=1, callback=tick)
total = time.perf_counter() - t
per = [b - a for a, b in zip(stamps, stamps[1:])]
c.log(f"  tomotopy {args.reps} iterations: {total:.2f} s")
r = c.rates(tokens, per) if len(per) == args.reps else {}
r.update({"rate": tokens * args.reps / total, "seconds": total, "reps": args.reps})
c.emit(meta, {
    "engine": "tomotopy", "version": tp.__version__, "isa": tp.isa, "measure": "train",
    "threads": args.threads, "topics": args.topics, "alpha": 0.1, "beta": 0.01,
    "parallel": args.parallel, "warmup": args.warmup, "unit": "tokens/s",
    "ll_per_word": mdl.ll_per_word, **r,
})
