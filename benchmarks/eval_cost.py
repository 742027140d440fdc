"""Cost of PGD evaluation: last-iterate vs any-iterate, as ratios to each other and to the floor.

floor = the passes any-iterate cannot avoid: one forward + input-gradient pass per step over the images
still unbroken when the step starts, and one forward over those left at x_K (their counts come from the
any-iterate run itself). Last-iterate pays K + 1 passes over every image. All three are timed on the
same model, images and seed, interleaved round by round so drift in machine load hits every row alike.
The robust accuracies of both readings are printed too (any-iterate is never above last-iterate).

Default model: the demo's PGD-AT run (run `make demo` first), on the demo's balanced test set.

    .venv/bin/python benchmarks/eval_cost.py [--run runs/demo/fashion_mnist-ir10/pgd_at/seed0]
        [--attack pgd20] [--rounds 3] [--threads 2] [--batch 256]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from taetlib.attack_suite import resolve_attacks
from taetlib.attacks import bn_eval, pgd, pgd_any
from taetlib.checkpoints import load_model
from taetlib.config import RunConfig
from taetlib.data import load_lt

KEYS = ("eps", "step", "steps", "loss", "random_start")


def batches(x, y, size):
    for i in range(0, len(y), size):
        yield x[i:i + size].float().div(255), y[i:i + size]


def last_iterate(model, x, y, p, size):
    right = 0
    for xb, yb in batches(x, y, size):
        x_adv = pgd(model, xb, yb, **p)
        with torch.no_grad():
            right += int((model(x_adv).argmax(1) == yb).sum())
    return right / len(y)


def any_iterate(model, x, y, p, size, counts: list):
    right = 0
    for xb, yb in batches(x, y, size):
        _, pred, c = pgd_any(model, xb, yb, **p, return_counts=True)
        right += int((pred == yb).sum())
        counts.append(c)
    return right / len(y)


def floor(model, x, y, counts, size):
    """The passes any-iterate must make, at the batch sizes it made them, and nothing else."""
    for (xb, yb), c in zip(batches(x, y, size), counts):
        for n in c[:-1].tolist():
            if n:
                xs = xb[:n].clone().requires_grad_(True)
                torch.autograd.grad(F.cross_entropy(model(xs), yb[:n], reduction="sum"), xs)
        with torch.no_grad():
            model(xb[:int(c[-1])])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo/fashion_mnist-ir10/pgd_at/seed0")
    ap.add_argument("--attack", default="pgd20", choices=("pgd20", "pgd100", "cw20"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    run = Path(args.run)
    if not (run / "config.json").exists():
        print(f"--run {run}: no trained run there (config.json missing); run `make demo` first, or pass a run folder.",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RunConfig.load(run / "config.json")
    data, model = load_lt(cfg), load_model(run)
    test = data.test["balanced"]
    x, y = test.x, test.y
    p = resolve_attacks([args.attack], None, float(data.spec.default_eps if cfg.eps is None else cfg.eps),
                        data.num_classes)[args.attack]
    p = {k: p[k] for k in KEYS}
    times = {"last-iterate": [], "any-iterate": [], "floor (unbroken passes)": []}
    acc, counts = {}, []
    with bn_eval(model):
        for r in range(args.rounds):
            for name in times:
                torch.manual_seed(r)
                t0 = time.perf_counter()
                if name == "last-iterate":
                    acc[name] = last_iterate(model, x, y, p, args.batch)
                elif name == "any-iterate":
                    counts.clear()
                    acc[name] = any_iterate(model, x, y, p, args.batch, counts)
                else:
                    floor(model, x, y, counts, args.batch)
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    passes = sum(int(c[:-1].sum()) for c in counts)
    print(f"{args.attack} on {len(y)} balanced test images of {run} ({cfg.dataset}, eps {p['eps']:.4g}), "
          f"{torch.get_num_threads()} threads, median of {args.rounds} rounds")
    print(f"any-iterate: {passes} gradient passes of {p['steps'] * len(y)} "
          f"({passes / (p['steps'] * len(y)):.2f} of last-iterate's)")
    print(f"{'reading':26s} {'seconds':>8s} {'/ last':>7s} {'/ floor':>8s} {'robust acc':>11s}")
    for k, s in med.items():
        a = f"{acc[k]:.4f}" if k in acc else ""
        print(f"{k:26s} {s:8.2f} {s / med['last-iterate']:7.2f} {s / med['floor (unbroken passes)']:8.2f} {a:>11s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
