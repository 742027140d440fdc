"""`python -m taetlib ...`: presets, train, evaluate, sweep."""
from __future__ import annotations

import argparse
import json
import sys
import time

import pandas as pd

from . import data, evaluate, presets, sweep, train
from .checkpoints import CheckpointError
from .config import ConfigError, RunConfig, parse_sets
from .data import ManifestError, MissingDataError
from .report import METRICS


def cmd_presets(args) -> int:
    if args.name:
        p = presets.get(args.name)
        print(json.dumps({"name": p.name, "description": p.description, "config": p.config, "sweep": p.sweep,
                          "method_overrides": p.method_overrides, "evaluation": p.evaluation,
                          "sources": p.sources, "reported": p.reported}, indent=2, default=str))
    else:
        print(presets.describe())
    return 0


def train_config(preset: str | None, sets: dict) -> RunConfig:
    """`train --preset P --set ...`: the preset's settings and those it gives the chosen method (RoBal's
    PGD-5, say), then the --set overrides."""
    base = {}
    if preset:
        p = presets.get(preset)
        method = sets.get("method", p.config.get("method", RunConfig.method))
        base = {**p.config, **p.method_overrides.get(method, {})}
    return RunConfig.from_dict({**base, **sets})


def cmd_train(args) -> int:
    sets = parse_sets(args.set)
    if args.config and args.preset:
        raise ConfigError(f"train --config {args.config} --preset {args.preset}: give one of them (--set adds to either).")
    if args.config:   # a whole RunConfig (a sweep run's, under torchrun), --set on top
        cfg = RunConfig.from_dict({**RunConfig.load(args.config).to_dict(), **sets})
    else:
        cfg = train_config(args.preset, sets)
    train.fit(cfg, data.load_lt(cfg), args.run, stage=args.stage, init_checkpoint=args.init)
    return 0


def summary_frame(aggregate):
    """The demo's closing table: one row per method and protocol, the five headline metrics in %."""
    if aggregate is None or len(aggregate) == 0:
        return pd.DataFrame()
    t = aggregate.pivot_table(index=["protocol", "arm"], columns="metric", values="mean", sort=False)
    return (t[[m for m in METRICS if m in t.columns]] * 100).round(2)


def cmd_demo(args) -> int:
    t0 = time.time()
    folder = data.ensure_fashion_mnist(log=lambda m: print(m, flush=True))
    p = presets.get("fmnist_lt_demo")
    print(f"Fashion-MNIST: {folder}\n{p.description}", flush=True)
    s = sweep.Sweep(root=data.resolve(args.out), dataset=p.config["dataset"], irs=p.sweep["irs"],
                    arms=list(p.sweep["arms"]), seeds=p.sweep["seeds"],
                    config={k: v for k, v in p.config.items() if k != "dataset"},
                    method_overrides=p.method_overrides, evaluation=p.evaluation, preset=p.name)
    result = sweep.run_sweep(s, jobs=args.jobs)
    table = summary_frame(result["aggregate"])
    attack = result["aggregate"]["robust_attack"].iloc[0] if len(result["aggregate"]) else "pgd20"
    print(f"\nSummary (%; robust = {attack}, tail = the rarest third of the classes):")
    print(table.to_string())
    print(f"\nreport: {result['report']}\nwall time: {time.time() - t0:.0f} s")
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taetlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="list the presets, or show one in full")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("train", help="train one run into a run directory")
    p.add_argument("--run", required=True, help="run directory (resumes if it holds a checkpoint)")
    p.add_argument("--preset", help="start from a preset's settings")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="RunConfig overrides")
    p.add_argument("--config", help="a RunConfig JSON file (instead of --preset); --set overrides it")
    p.add_argument("--stage", default="all", choices=["all", "stabilization", "adversarial"])
    p.add_argument("--init", help="stage adversarial: the stage-1 run's last.pt to start from")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="the main job: the TAET comparison on real Fashion-MNIST-LT (CPU)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--jobs", type=int, default=1)
    p.set_defaults(func=cmd_demo)

    evaluate.add_cli(sub)  # each registers its own subcommand
    sweep.add_cli(sub)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ManifestError, MissingDataError, CheckpointError) as e:  # user errors: no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
