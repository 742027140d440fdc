"""`python -m taetlib COMMAND`: the workbench from a shell; `COMMAND --help` lists a command's options."""
from __future__ import annotations

import argparse
import json
import sys
import time

import pandas as pd

from . import data, dataset_files, evaluate, presets, results, sweep, train
from .checkpoints import CheckpointError
from .config import RunConfig, parse_sets
from .data import ManifestError
from .dataset_files import MissingDataError
from .errors import REGISTRIES, ConfigError, check_choice
from .fit_state import TrainingDiverged
from .method_spec import METHODS
from .paths import resolve
from .plan import Sweep, from_preset
from .plugins import PluginNotFound, load_plugins
from .report import METRICS, robust_attack_in

EXIT_REFUSED, EXIT_DIVERGED = 2, 3   # docs/reliability.md lists every exit status

__all__ = ["DEMO_OUT", "EXIT_DIVERGED", "EXIT_REFUSED", "cmd_demo", "cmd_list", "cmd_presets",
           "cmd_readme_section", "cmd_train", "main", "preset_sweep", "summary_frame", "train_config",
           "with_plugins", "write_demo_section"]


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


def cmd_list(args) -> int:
    """The names a registry holds (after --plugin imports); methods with their own settings and defaults."""
    if args.registry is None:
        print("\n".join(f"{name}: {len(reg)}" for name, reg in sorted(REGISTRIES.items())))
        return 0
    which = args.registry if args.registry in REGISTRIES else args.registry.removesuffix("s")   # methods: method
    check_choice("registry", which, REGISTRIES)
    for name in REGISTRIES[which]:
        spec = METHODS[name] if which == "method" else None
        print(name if spec is None else f"{name}: {spec.summary}\n    method_args {spec.defaults()}")
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


def with_plugins(cfg: RunConfig, plugins: list[str]) -> RunConfig:
    """cfg recording the --plugin modules too (config.json names them: notebooks and jobs import them)."""
    new = [p for p in load_plugins(plugins) if p not in cfg.plugins]
    return cfg.replace(plugins=[*cfg.plugins, *new]) if new else cfg


def cmd_train(args) -> int:
    sets = parse_sets(args.set)
    if args.config and args.preset:
        raise ConfigError(f"train --config {args.config} --preset {args.preset}: give one of them "
                          "(--set adds to either).")
    if args.config:   # a whole RunConfig (a sweep run's, under torchrun), --set on top
        cfg = RunConfig.load(args.config).replace(**sets)
    else:
        cfg = train_config(args.preset, sets)
    cfg = with_plugins(cfg, args.plugin)
    train.fit(cfg, data.load_lt(cfg), args.run, stage=args.stage, init_checkpoint=args.init,
              stop_after=args.stop_after, new_plan=args.new_plan)
    return 0


def summary_frame(aggregate):
    """The demo's closing table: one row per method and protocol, the five headline metrics in %."""
    if aggregate is None or len(aggregate) == 0:
        return pd.DataFrame()
    t = aggregate.pivot_table(index=["protocol", "arm"], columns="metric", values="mean", sort=False)
    return (t[[m for m in METRICS if m in t.columns]] * 100).round(2)


def preset_sweep(name: str, out: str) -> Sweep:
    """A preset's whole sweep into `out`, on real Fashion-MNIST (installed first where it can be)."""
    folder = dataset_files.ensure_fashion_mnist(log=lambda m: print(m, flush=True))
    p = presets.get(name)
    print(f"Fashion-MNIST: {folder}\n{p.description}", flush=True)
    return from_preset(p, resolve(out))


def cmd_demo(args) -> int:
    t0 = time.time()
    result = sweep.run_sweep(preset_sweep("fmnist_lt_demo", args.out), jobs=args.jobs)
    table = summary_frame(result["aggregate"])
    attack = robust_attack_in(result["aggregate"])
    print(f"\nSummary (%; robust = {attack}, tail = the rarest third of the classes):")
    print(table.to_string())
    print(f"\nreport: {result['report']}\nwall time: {time.time() - t0:.0f} s")
    if result["ok"] and args.out == DEMO_OUT:   # the README's verdicts come from this run, never by hand
        write_demo_section(args.out)
    return 0 if result["ok"] else 1


DEMO_OUT = "runs/demo"


def write_demo_section(run_dir: str) -> None:
    readme = resolve("README.md")
    if readme.exists() and results.update_section(readme, results.demo_section(resolve(run_dir)),
                                                  results.DEMO_MARKERS):
        print(f"updated the demo section of {readme}")


def cmd_readme_section(args) -> int:
    """The README's demo verdicts from a finished demo folder (or any sweep folder with the demo's arms)."""
    root = resolve(args.run_dir)
    if not (root / "aggregate.csv").exists():
        raise ConfigError(f"run_dir={args.run_dir!r}: no aggregate.csv there; give a finished demo folder "
                          "(`make demo` writes runs/demo).")
    section = results.demo_section(root)
    if args.print:
        print(section)
        return 0
    readme = resolve("README.md")
    if not results.update_section(readme, section, results.DEMO_MARKERS):
        raise ConfigError(f"README {readme}: no {results.DEMO_MARKERS[0]} ... {results.DEMO_MARKERS[1]} markers; add "
                          "them where the demo's verdicts belong.")
    print(f"updated the demo section of {readme}")
    return 0


def main(argv: list[str] | None = None, commands=()) -> int:
    parser = argparse.ArgumentParser(prog="python -m taetlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="list the presets, or show one in full")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("list", help="the names a registry holds: methods (with their settings), models, ...")
    p.add_argument("registry", nargs="?", help="method, model, dataset, head, augment, ... (none: every registry)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train one run into a run directory")
    p.add_argument("--run", required=True, help="run directory (resumes if it holds a checkpoint)")
    p.add_argument("--preset", help="start from a preset's settings")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="RunConfig overrides")
    p.add_argument("--config", help="a RunConfig JSON file (instead of --preset); --set overrides it")
    p.add_argument("--stage", default="all", choices=["all", "stabilization", "adversarial"])
    p.add_argument("--init", help="stage adversarial: the stage-1 run's last.pt to start from")
    p.add_argument("--stop-after", type=int, help="train at most N epochs now; the same command continues")
    p.add_argument("--new-plan", action="store_true",
                   help="extend a run although the new epochs/lr_milestones change the plan of epochs it trained")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="the main job: the TAET comparison on real Fashion-MNIST-LT (CPU)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--jobs", type=int, default=1)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("readme-section", help="write the README's demo verdicts from a finished demo folder")
    p.add_argument("run_dir", nargs="?", default=DEMO_OUT, help="the demo's sweep folder (default: runs/demo)")
    p.add_argument("--print", action="store_true", help="print the section instead of writing README.md")
    p.set_defaults(func=cmd_readme_section)

    evaluate.add_cli(sub)  # each registers its own subcommand
    sweep.add_cli(sub)
    for add_cli in commands:   # those registered from above cli (__main__: tuning's tune)
        add_cli(sub)

    plugin_parser = argparse.ArgumentParser(add_help=False)
    plugin_parser.add_argument("--plugin", action="append", default=[])
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
                        help="(anywhere on the line, repeatable) import a module or .py file that registers methods, "
                             "models or datasets; train and sweep record it in config.json / sweep.json")
    plugins, rest = plugin_parser.parse_known_args(argv)
    args = parser.parse_args(rest)
    args.plugin = plugins.plugin
    try:
        load_plugins(args.plugin)
        return int(args.func(args) or 0)
    except (ConfigError, ManifestError, MissingDataError, CheckpointError, PluginNotFound) as e:  # user errors
        print(f"error: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except TrainingDiverged as e:   # the loss went NaN / inf: the last good checkpoint is kept
        print(f"error: training diverged: {e}", file=sys.stderr)
        return EXIT_DIVERGED


if __name__ == "__main__":
    sys.exit(main())
