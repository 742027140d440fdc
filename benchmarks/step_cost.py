"""Median cost of one training step per objective, as a ratio to a clean step and to the floor.

floor = K attack passes (forward + input gradient, BatchNorm in eval mode) + one clean training step:
what any K-step adversarial objective must pay. "own floor" adds what a method needs beyond that
(TRADES, MART, RoBal: a second training pass, on x as well as x_adv) and says so in its row.
All timings come from the same run, interleaved round by round so that drift in machine load hits
every row alike.

    .venv/bin/python benchmarks/step_cost.py [--rounds 15] [--threads 2] [--device cpu] [--clock wall]

On a machine shared with other jobs, wall time mostly measures the others: `--threads 1 --clock cpu`
times the process's own CPU seconds instead.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
import torch.nn.functional as F

from taetlib.attacks import bn_eval
from taetlib.config import RunConfig
from taetlib.data import longtail_counts
from taetlib.methods import build_objective, model_head
from taetlib.models import create_model

EPOCHS, STAGE1 = 100, 40   # TAET's released schedule; steps are timed at the last epoch (stage 2, full AIW ramp)
ROWS = {  # label -> config changes
    "ce": dict(method="ce"),
    "pgd_at": dict(method="pgd_at"),
    "trades": dict(method="trades"),
    "mart": dict(method="mart"),
    "at_bsl": dict(method="at_bsl"),
    "taet (stage 2)": dict(method="taet"),
    "robustlt(taet)": dict(method="taet", robustlt=True, robustlt_b=1.0),
    "reat": dict(method="reat"),
    "robal": dict(method="robal"),
    "he": dict(method="he"),
    "gairat": dict(method="gairat", gairat_begin_epoch=1),   # timed with the GAIR weights on
}
# rows whose training step runs the model on x and on x_adv: their own floor has one clean step more
TWO_PASSES = ("trades", "mart", "robal")


def train_step(model, opt, loss_of):
    def step(x, y):
        loss = loss_of(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def floor_step(model, opt, k):
    clean = train_step(model, opt, lambda x, y: F.cross_entropy(model(x), y))

    def step(x, y):
        with bn_eval(model):
            for _ in range(k):
                xr = x.detach().requires_grad_(True)
                torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
        clean(x, y)
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="K, the attack steps")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu = this process's CPU time")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    counts = longtail_counts(5000, 10, 10)

    def fresh(head="fc"):
        torch.manual_seed(0)
        model = create_model("small_cnn", 10, 1, head=head).to(device).train()
        return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    steps = {}
    model, opt = fresh()
    steps["clean step"] = train_step(model, opt, lambda x, y: F.cross_entropy(model(x), y))
    model, opt = fresh()
    steps["floor"] = floor_step(model, opt, args.steps)
    for label, change in ROWS.items():
        cfg = RunConfig(dataset="synthetic", epochs=EPOCHS, stabilization_epochs=STAGE1, attack_steps=args.steps,
                        **change)
        objective = build_objective(cfg, counts, default_eps=0.1)
        model, opt = fresh(model_head(cfg))
        steps[label] = train_step(model, opt, lambda x, y, o=objective, m=model: o.step(m, x, y, EPOCHS).loss)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times = {k: [] for k in steps}
    order = list(steps)
    for r in range(args.warmup + args.rounds):
        random.Random(r).shuffle(order)
        for k in order:
            sync()
            t0 = clock()
            steps[k](x, y)
            sync()
            if r >= args.warmup:
                times[k].append(clock() - t0)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"small_cnn, batch {args.batch}, 1x28x28, 10 classes, K={args.steps}, {args.device}, "
          f"{torch.get_num_threads()} threads, {args.clock} clock, median of {args.rounds} rounds")
    print(f"{'objective':<16} {'ms/step':>9} {'x clean':>8} {'x floor':>8} {'x own floor':>11}  own floor")
    for k, t in med.items():
        extra = 1 if k in TWO_PASSES else 0
        own = med["clean step"] if k == "ce" else med["floor"] + extra * med["clean step"]
        what = ("" if k in ("clean step", "floor") else "1 training pass, no attack" if k == "ce" else
                f"K attack passes + {1 + extra} training pass{'es (x, x_adv)' if extra else ''}")
        print(f"{k:<16} {1e3 * t:9.1f} {t / med['clean step']:8.2f} {t / med['floor']:8.3f} {t / own:11.3f}  {what}")


if __name__ == "__main__":
    main()
