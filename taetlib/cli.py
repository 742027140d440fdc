"""`python -m taetlib ...`: presets, train, evaluate, sweep."""
from __future__ import annotations

import argparse
import json
import sys

from .config import ConfigError, RunConfig


def parse_sets(pairs: list[str]) -> dict:
    """`--set key=value`: values are JSON where they parse (numbers, true, null, lists), else strings."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set epochs=5")
        k, v = pair.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def cmd_presets(args) -> int:
    from . import presets
    if args.name:
        p = presets.get(args.name)
        print(json.dumps({"name": p.name, "description": p.description, "config": p.config, "sweep": p.sweep,
                          "method_overrides": p.method_overrides, "evaluation": p.evaluation,
                          "sources": p.sources, "reported": p.reported}, indent=2, default=str))
    else:
        print(presets.describe())
    return 0


def cmd_train(args) -> int:
    from . import data, presets, train
    base = dict(presets.get(args.preset).config) if args.preset else {}
    cfg = RunConfig.from_dict({**base, **parse_sets(args.set)})
    train.fit(cfg, data.load_lt(cfg), args.run, stage=args.stage)
    return 0


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
    p.add_argument("--stage", default="all", choices=["all", "stabilization", "adversarial"])
    p.set_defaults(func=cmd_train)

    from . import evaluate, sweep  # each registers its own subcommand
    evaluate.add_cli(sub)
    sweep.add_cli(sub)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:  # a user error: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
