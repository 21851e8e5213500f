#!/usr/bin/env python3
"""PyTorch peer of gpu-bench's MLP rows: one training step (forward, mean cross-entropy,
backward) of the 784-256-256-10 ReLU MLP in f32 on random inputs in [0, 1) and random labels, at
batch 64 and 1024, timed with CUDA events around each step: warm-up, then the median of many
repeats. The input needs no gradient, as in the Rust engine. Each step runs without an optimizer
update (against gpu-bench's gradient rows) and with torch.optim.SGD's step (against its
"mlp resident clock" row, whose clock runs the SGD step of every batch).

First with TF32 off (the same f32 arithmetic as our kernels), then with TF32 on. Prints one JSON
line per configuration:
  {"bench": "torch mlp train step", "batch": B, "tf32": false, "sgd": false, "samples_per_s": X}
Needs only torch and a CUDA device.
"""
import json
import statistics

import torch


def step_ms(model, x, y, opt=None, warmup=20, reps=200):
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        if opt is not None:
            opt.step()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    if not torch.cuda.is_available():
        raise SystemExit("torch_mlp.py: no CUDA device")
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    ).to(dev, torch.float32)
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        for batch in (64, 1024):
            x = torch.rand(batch, 784, device=dev, dtype=torch.float32)
            y = torch.randint(0, 10, (batch,), device=dev)
            for sgd in (False, True):
                opt = torch.optim.SGD(model.parameters(), lr=0.05) if sgd else None
                ms = step_ms(model, x, y, opt)
                print(
                    json.dumps(
                        {
                            "bench": "torch mlp train step",
                            "batch": batch,
                            "tf32": tf32,
                            "sgd": sgd,
                            "samples_per_s": batch / (ms * 1e-3),
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
