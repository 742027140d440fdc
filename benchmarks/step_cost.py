"""Median cost of one training step per objective, as a ratio to a clean step and to the floor.

floor = K attack passes (forward + input gradient, BatchNorm in eval mode) + one clean training step:
what any K-step adversarial objective must pay. Each method is also held against its own floor (the
row's last column says what it holds): the floor plus what the method needs beyond it:
- trades, mart, robal: a second training pass (on x as well as x_adv);
- awp: the floor + one train-mode forward and weight-gradient pass (the proxy step that finds v);
- adt: steps x samples eval-mode passes (forward + gradient to the input) + one clean training step;
- las_at (step): max(K choices) attack passes + one strategy-network forward + one clean training step;
- las_at (update): the step every `lasat_interval`-th, which first updates the strategy network: the
  step's own floor + a strategy forward/backward + another max(K) attack + one look-ahead training step
  + the reward PGD (steps x 2 restarts, train mode) + five no-grad forwards (the reward's loss,
  each restart's loss, robust and clean accuracy).
  The amortised LAS-AT cost, ((interval - 1) * step + update) / interval, is printed below the table.
All timings come from the same run, interleaved round by round so that drift in machine load hits
every row alike.

    .venv/bin/python benchmarks/step_cost.py [--rounds 15] [--threads 2] [--device cpu] [--clock wall]

On a machine shared with other jobs, wall time mostly measures the others: `--threads 1 --clock cpu`
times the process's own CPU seconds instead.
"""
from __future__ import annotations

import argparse
import copy
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
    "awp": dict(method="awp"),
    "adt": dict(method="adt"),
    "las_at (step)": dict(method="las_at", lasat_interval=10**9),
    "las_at (update)": dict(method="las_at", lasat_interval=1),
}
OWN = RunConfig(method="las_at")   # AWP, ADT and LAS-AT defaults, for the own floors
LASAT_K = max(OWN.lasat_iter_choices)
OWN_FLOOR = {  # row -> (own floor's label, what it holds)
    "awp": ("floor+proxy", "K attack + proxy fwd/bwd + step"),
    "adt": ("floor(ADT)", f"{OWN.adt_steps}x{OWN.adt_samples} passes + step"),
    "las_at (step)": ("floor(LAS step)", f"{LASAT_K} attack + strategy fwd + step"),
    "las_at (update)": ("floor(LAS update)", f"+ strategy fwd/bwd + {LASAT_K} attack + look-ahead step "
                                             f"+ {OWN.lasat_reward_steps}x2 PGD + 5 fwd"),
}
# rows whose training step runs the model on x and on x_adv: their own floor has one clean step more
TWO_PASSES = ("trades", "mart", "robal")


def train_step(model, opt, loss_of, after=None):
    def step(x, y):
        loss = loss_of(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after is not None:
            after(model)
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


def input_grads(model, x, y, k):
    """k passes of forward + gradient to the input, BatchNorm in eval mode."""
    with bn_eval(model):
        for _ in range(k):
            xr = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)


def own_floors(model, opt, k, strategy):
    """The AWP, ADT and LAS-AT rows' own floors (module docstring); strategy: the LAS-AT strategy network."""
    clean = train_step(model, opt, lambda x, y: F.cross_entropy(model(x), y))

    def awp(x, y):
        input_grads(model, x, y, k)
        torch.autograd.grad(F.cross_entropy(model(x), y), [p for p in model.parameters()])   # the proxy pass
        clean(x, y)

    def adt(x, y):
        input_grads(model, x, y, OWN.adt_steps * OWN.adt_samples)
        clean(x, y)

    def las_step(x, y):
        with torch.no_grad():
            strategy.eval()(x)
        input_grads(model, x, y, LASAT_K)
        clean(x, y)

    def las_update(x, y):
        strategy.train()
        sum(h.sum() for h in strategy(x)).backward()
        input_grads(model, x, y, LASAT_K)
        ahead = copy.deepcopy(model).train()
        F.cross_entropy(ahead(x), y).backward()
        for _ in range(2 * OWN.lasat_reward_steps):   # train mode, as the reward PGD
            xr = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(ahead(xr), y), xr)
        with torch.no_grad():
            for _ in range(5):
                ahead(x)
        las_step(x, y)

    return {"floor+proxy": awp, "floor(ADT)": adt, "floor(LAS step)": las_step, "floor(LAS update)": las_update}


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
        objective.bind(opt)
        steps[label] = train_step(model, opt, lambda x, y, o=objective, m=model: o.step(m, x, y, EPOCHS).loss,
                                  after=objective.after_step)
        if label.startswith("las_at"):
            objective.policy.to(device)
            strategy = objective.policy
    model, opt = fresh()
    steps.update(own_floors(model, opt, args.steps, copy.deepcopy(strategy)))

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
    print(f"{'objective':<18} {'ms/step':>9} {'x clean':>8} {'x floor':>8} {'x own floor':>12}  own floor")
    for k, t in med.items():
        if k in OWN_FLOOR:
            own, what = med[OWN_FLOOR[k][0]], f"{OWN_FLOOR[k][0]} = {OWN_FLOOR[k][1]}"
        elif k in ("clean step", "floor") or k.startswith("floor"):
            own, what = t, ""
        else:
            extra = 1 if k in TWO_PASSES else 0
            own = med["clean step"] if k == "ce" else med["floor"] + extra * med["clean step"]
            what = ("1 training pass, no attack" if k == "ce" else
                    f"K attack passes + {1 + extra} training pass{'es (x, x_adv)' if extra else ''}")
        print(f"{k:<18} {1e3 * t:9.1f} {t / med['clean step']:8.2f} {t / med['floor']:8.3f} {t / own:12.3f}  {what}")
    n = OWN.lasat_interval
    amortised = ((n - 1) * med["las_at (step)"] + med["las_at (update)"]) / n
    own = ((n - 1) * med["floor(LAS step)"] + med["floor(LAS update)"]) / n
    print(f"las_at amortised over its interval of {n} steps: {1e3 * amortised:.1f} ms/step, "
          f"{amortised / med['floor']:.3f} x floor, {amortised / own:.3f} x its own floor")


if __name__ == "__main__":
    main()
