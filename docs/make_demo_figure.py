"""Draws docs/demo.png, the demo's figure in docs/results.md: the first figure of the sweep report
(`report.tradeoff_figure`: balanced accuracy vs balanced robustness under PGD-20, one point per arm, 95 %
intervals both ways) on the balanced test set, written by plotly's own `write_image`
(`figure_files.export_figure`).

    python docs/make_demo_figure.py                          # from docs/demo_aggregate.csv (committed)
    python docs/make_demo_figure.py runs/demo/aggregate.csv  # from a fresh `make demo` (copied there first)

Needs kaleido (`make setup`) and a Chrome / Chromium (`sudo apt-get install chromium`).
"""
import shutil
import sys
from pathlib import Path

import pandas as pd

from taetlib import figure_files, report

DOCS = Path(__file__).resolve().parent
NUMBERS = DOCS / "demo_aggregate.csv"
FIGURE = DOCS / "demo.png"
PROTOCOL = "balanced"


def figure(agg: pd.DataFrame):
    return report.tradeoff_figure(agg, PROTOCOL)


def main(argv: list[str]) -> Path:
    source = Path(argv[0]) if argv else NUMBERS
    if source.resolve() != NUMBERS.resolve():
        shutil.copyfile(source, NUMBERS)
    return figure_files.export_figure(figure(pd.read_csv(NUMBERS)), FIGURE, width=820, height=460)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
