"""`python -m taetlib ...`: presets, train, demo, results, evaluate, sweep, tune."""
from __future__ import annotations

import argparse
import json
import sys
import time

import pandas as pd

from . import data, evaluate, presets, results, sweep, train
from .checkpoints import CheckpointError
from .config import RunConfig, parse_sets
from .data import ManifestError, MissingDataError
from .errors import ConfigError
from .paths import resolve
from .plan import Sweep
from .report import METRICS, robust_attack_in

__all__ = ["RESULTS_COMMAND", "cmd_demo", "cmd_presets", "cmd_results", "cmd_train", "main", "preset_sweep",
           "summary_frame", "train_config"]


def cmd_presets(args) -> int:
    if args.name:
        p = presets.get(args.name)
        print(json.dumps({"name": p.name, "description": p.description, "config": p.config, "sweep": p.sweep,
                          "method_overrides": p.method_overrides, "evaluation": p.evaluation,
                          "sources": p.sources, "reported": p.reported, "tuning": p.tuning,
                          "robust_attack": p.robust_attack, "primary": p.primary}, indent=2, default=str))
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
        raise ConfigError(f"train --config {args.config} --preset {args.preset}: give one of them "
                          "(--set adds to either).")
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


def preset_sweep(name: str, out: str) -> Sweep:
    """A preset's whole sweep into `out`, on real Fashion-MNIST (installed first where it can be)."""
    folder = data.ensure_fashion_mnist(log=lambda m: print(m, flush=True))
    p = presets.get(name)
    print(f"Fashion-MNIST: {folder}\n{p.description}", flush=True)
    return Sweep(root=resolve(out), dataset=p.config["dataset"], irs=p.sweep["irs"],
                       arms=list(p.sweep["arms"]), seeds=p.sweep["seeds"],
                       config={k: v for k, v in p.config.items() if k != "dataset"},
                       method_overrides=p.method_overrides, ir_overrides=p.ir_overrides, evaluation=p.evaluation,
                       preset=p.name, tuning=p.tuning, robust_attack=p.robust_attack)


def cmd_demo(args) -> int:
    t0 = time.time()
    result = sweep.run_sweep(preset_sweep("fmnist_lt_demo", args.out), jobs=args.jobs)
    table = summary_frame(result["aggregate"])
    attack = robust_attack_in(result["aggregate"])
    print(f"\nSummary (%; robust = {attack}, tail = the rarest third of the classes):")
    print(table.to_string())
    print(f"\nreport: {result['report']}\nwall time: {time.time() - t0:.0f} s")
    return 0 if result["ok"] else 1


RESULTS_COMMAND = "make results   # = python -m taetlib results --jobs 2"


def cmd_results(args) -> int:
    """Run (or resume) preset fmnist_lt_results and write the published folder. The wall time is kept in
    OUT/timing.json from the invocation that ran every run, so a later resume or rewrite keeps it."""
    t0 = time.time()
    s = preset_sweep("fmnist_lt_results", args.runs)
    result = sweep.run_sweep(s, jobs=args.jobs)
    if not result["ok"]:
        print("some runs failed (runs.csv says which); the results folder is left as it was", file=sys.stderr)
        return 1
    out = resolve(args.out)
    timing = out / "timing.json"
    ran = int((result["status"]["status"] == "done").sum())
    if ran == len(result["status"]):   # this invocation ran the whole grid: its wall time is the grid's
        out.mkdir(parents=True, exist_ok=True)
        timing.write_text(json.dumps({"wall_seconds": round(time.time() - t0), "runs": ran, "jobs": args.jobs}))
    recorded = json.loads(timing.read_text()) if timing.exists() else {}
    wall = recorded.get("wall_seconds")
    written = results.write(s.root, out, command=RESULTS_COMMAND, wall_seconds=wall, notes=recorded.get("note", ""))
    readme = resolve("docs/results.md")   # the page that holds the generated section
    if readme.exists() and results.update_readme(readme, results.readme_section(written["aggregate"],
                                                                                written["claims"], wall)):
        print(f"updated the results section of {readme}")
    print("\n".join(results.verdict(written["claims"])))
    print(f"\nwritten: {out} (README.md, aggregate.csv, claims.csv, tradeoff.png)")
    return 0


def main(argv: list[str] | None = None, commands=()) -> int:
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

    p = sub.add_parser("results",
                       help="the published CPU table: run preset fmnist_lt_results, write results/fmnist_lt/")
    p.add_argument("--runs", default="runs/results/fmnist_lt", help="the sweep's folder (resumes what it holds)")
    p.add_argument("--out", default="results/fmnist_lt", help="the published folder (committed)")
    p.add_argument("--jobs", type=int, default=2)
    p.set_defaults(func=cmd_results)

    evaluate.add_cli(sub)  # each registers its own subcommand
    sweep.add_cli(sub)
    for add_cli in commands:   # those registered from above cli (__main__: tuning's tune)
        add_cli(sub)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ManifestError, MissingDataError, CheckpointError) as e:  # user errors: no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
