"""A study's published folder (results/<preset>/) from its sweep folder, finished or not:
`python -m taetlib study --preset fmnist_lt_study_a --root runs/fmnist_lt_study_a --out results/fmnist_lt_study_a`.

It reads only the runs that finished (DONE.json made with the settings the sweep asks for), says how many
of how many have, per arm and seed, and writes README.md: the commands, the wall time (runs and tuning),
the design and its power against the paper's claimed effect, the health of every finished run (those that
did not train are named, never ranked), the verdicts of the preset's primary comparisons (Holm over them;
verdicts.sentence writes each), the tuning choices, the class order, the aggregate table with intervals,
figures exported by plotly, and, where the runs allow, Study B's analyses (study_b.py); the sections
themselves are written in study_sections.py and study_b_readme.py. Beside it:
progress.csv, health.csv, metrics.csv, aggregate.csv, claims.csv and the study B tables. Nothing in the
sweep folder is written.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import compare, headline, health, presets, report, results, verdicts
from .errors import ConfigError, bad
from .figure_files import export_figure
from .markdown_table import markdown
from .paths import PROJECT_ROOT, resolve, within
from .plan import SWEEP_FILE, TUNING_FILE, Sweep, from_preset, load_sweep, recorded
from .plots import MANY, arm_forest, radius_lines
from .record import RECORD_DIR, keep_record, restore_record, study_sessions
from .runs import DONE
from .sessions import sessions_table
from .study_b_readme import study_b_section, variants_of
from .study_sections import (
    PENDING,
    TUNING_RUNNING,
    attack_table,
    class_table,
    commands,
    design_section,
    finished_runs,
    planned,
    progress_table,
    progress_text,
    radius_images,
    radius_table,
    tuning_lines,
    wall_text,
)

__all__ = ["FIGURES", "MANY_ARMS", "add_cli", "cmd_restore", "cmd_study", "markers", "progress", "ranking_figure",
           "read_study", "readme", "study_sweep", "summary_section", "update_pages", "write"]

FIGURES = {"tradeoff.png": "Balanced accuracy vs balanced robustness per arm (balanced test set, 95 % intervals)",
           "per_class.png": "Robust recall per class and arm (balanced test set; hatched: each arm's weakest third)",
           "radius.png": "Balanced robustness vs the PGD-20 radius per arm (the radius sweep, 95 % intervals)",
           "recall_vs_count.png": "Robust recall per class against its training count (log), per arm",
           "ranking.png": "Balanced robustness per arm, highest mean first (balanced test set, 95 % intervals; "
                          "coloured by its seeds; runs that did not train left out)"}
# beyond plots.MANY arms bars and lines blur: cells of % with the interval beneath, and the ranking's figure
MANY_ARMS = {"per_class.png": "Robust recall per class and arm, arms by their mean (balanced test set; % with its 95 % "
                              "interval beneath; bold: each arm's weakest third)",
             "radius.png": "Balanced robustness per arm at each PGD-20 radius (the radius sweep; % with its 95 % "
                           "interval beneath)"}


# ------------------------------------------------------------------------------ what finished
def study_sweep(preset: str, root: str | Path) -> Sweep:
    """The sweep a study ran: its folder's sweep.json (what was asked) where it has one, else the preset's."""
    p, root = presets.get(preset), Path(root)
    if (root / SWEEP_FILE).exists():
        s = load_sweep(root)
        if s.preset != p.name:
            raise bad("--preset", preset, f"{root / SWEEP_FILE} records preset {s.preset!r}; give that one, or the "
                      "study's own folder as --root.")
        return s
    return from_preset(p, root)




def progress(sweep: Sweep) -> pd.DataFrame:
    """One row per planned run: its status (done, failed, or not finished: still queued or running), its
    seconds and when it finished (DONE.json's time). While the tuning runs, no run has started."""
    rows = []
    for run in planned(sweep):
        rec = recorded(run) or {**run.row(), "status": PENDING, "seconds": np.nan, "error": "", "notebook": ""}
        done = run.dir / DONE
        rows.append({**rec, "finished": done.stat().st_mtime if rec["status"] == "done" else np.nan})
    return pd.DataFrame(rows)








def read_study(sweep: Sweep, status: pd.DataFrame) -> dict:
    """The finished runs' health gate, metrics and aggregate (the sweep's own readers, on them alone)."""
    ended = status[status["status"] != PENDING]
    gate = health.sweep_health(ended, health.Rules.of(sweep.health))
    metrics = headline.collect(status, sweep.robust_attack, gate)
    agg = report.aggregate(metrics) if len(metrics) else pd.DataFrame()
    trained = gate[gate["trained"].astype(bool)]["run"].tolist()
    tables = report.load_runs(trained) if trained else None
    return {"health": gate, "metrics": metrics, "aggregate": agg, "tables": tables}


# ------------------------------------------------------------------------------ the README's sections






















def _claims_read(readings: list[dict]) -> list[str]:
    out = [verdicts.sentence({"kind": "summary", "readings": readings}), ""]
    return out + [f"- {verdicts.sentence(r)}" for r in readings]


def readme(*, title: str, command: str, status: pd.DataFrame, wall: str, design: list[str], readings: list[dict],
           gate: pd.DataFrame, tuning: list[str], classes: list[str], agg: pd.DataFrame, rankings: list[str],
           figures: list[str], extra: list[str], attack: str, attacks: pd.DataFrame) -> str:
    health_text = health.left_out(gate) if len(gate) else "No run has finished yet."
    gated = gate[["arm", "seed", "trained", "failed_checks", "reason"]] if len(gate) else gate
    parts = [f"# {title}\n", f"```bash\n{command}\n```\n",
             "## Progress\n", progress_text(status), "", markdown(progress_table(status)), "", wall, "",
             "## Design and power\n", *design, "",
             "## Primary comparisons\n",
             *([] if not readings else [
                 "The preset declared these and their seeds before the runs; only they can hold or be contradicted, "
                 f"Holm-adjusted over the {len(readings)} of them, and only once every declared seed has ended "
                 "(a - b per seed, combined over seeds by the interval engine; robustness read on "
                 f"{attack}).\n"]), *_claims_read(readings), "",
             "## Health of every finished run\n", health_text, "",
             *([markdown(gated), ""] if len(gated) else []),
             "## Tuning\n", *tuning, "", "## Class order\n", *classes, ""]
    if len(agg):
        arms = list(dict.fromkeys(status["arm"]))   # the sweep's order, as the progress table gives it
        parts += ["## Aggregate (balanced test set)\n",
                  f"% (mean over seeds [95 % interval]); robustness read on {attack}. Intervals hold: "
                  + "; ".join(dict.fromkeys(str(x) for x in agg["interval"].dropna() if x)) + ".\n",
                  markdown(results.table(agg, "balanced", arms=arms)), "", "## Aggregate (long-tailed test set)\n",
                  markdown(results.table(agg, "long_tailed", arms=arms)), "",
                  "## Robustness per attack (balanced test set, runs that trained)\n",
                  "Balanced robustness under each attack alone and under their worst case per image, % (mean over "
                  "seeds [95 % interval]): where an attack alone reads higher than the worst case, it flatters.\n",
                  markdown(attacks) if len(attacks) else "No finished run that trained yet.", "",
                  "## Rankings (descriptive; runs that did not train are left out)\n",
                  *[f"- {line}" for line in rankings], ""]
    parts += ["## Figures\n", *figures, "", *extra]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------ the folder
def ranking_figure(metrics: pd.DataFrame, attack: str, protocol: str = "balanced"):
    """Balanced robustness per arm, highest mean first, with its interval and seeds, read (as the rankings are)
    on the runs that trained alone; the runs left out are named in its title."""
    bad = ~metrics["trained"].astype(bool) if "trained" in metrics else pd.Series(False, index=metrics.index)
    gone = metrics[bad].drop_duplicates("run")
    left = ("<br><sup>left out, as they did not train: " + ", ".join(f"{a} seed {s}" for a, s in
                                                                     zip(gone["arm"], gone["seed"])) + "</sup>"
            if len(gone) else "")
    agg = report.aggregate(metrics[~bad].drop(columns="trained", errors="ignore"))
    return arm_forest(compare.tradeoff_from_aggregate(agg, protocol), "balanced_robustness",
                      f"Balanced robustness per arm, highest mean first ({attack}, {protocol} test set; 95 % "
                      f"intervals){left}")


def _figures(read: dict, attack: str, out: Path, two_orders: bool) -> list[str]:
    agg, tables = read["aggregate"], read["tables"]
    if not len(agg) or tables is None:
        return ["None yet: no finished run that trained."]
    figs = {"tradeoff.png": results.figure(agg, "balanced")}
    if agg["arm"].nunique() > MANY:   # that many arms crowd the scatter: the same readings in a column
        figs["ranking.png"] = ranking_figure(read["metrics"], attack)
    figs["per_class.png"] = report.cross_view(tables, "methods_per_class", attack, "balanced")
    radius = radius_table(tables)
    if radius["eps"].nunique() > 2:   # a radius sweep beyond the two every evaluation reads (0 and eps)
        figs["radius.png"] = radius_lines(radius, f"Balanced robustness vs the PGD-20 radius ({radius_images(tables)} "
                                                  "balanced test images, mean over seeds, 95 % intervals)")
    if two_orders:
        figs["recall_vs_count.png"] = report.cross_view(tables, "recall_vs_count", attack, "balanced")
    lines = []
    for name, fig in figs.items():
        export_figure(fig, out / name, width=1100, height=int(fig.layout.height or 600))
        cells = bool(fig.data) and fig.data[0].type == "heatmap"   # the caption says what was drawn
        lines += [f"![{MANY_ARMS[name] if cells else FIGURES[name]}]({name})", ""]
    return lines


def _save_csv(table: pd.DataFrame, path: Path, root: Path) -> None:
    """`table` as CSV with its run folders (and a failed run's notebook) named from the sweep folder (`within`)."""
    paths = {c: [within(v, root) if isinstance(v, str) else v for v in table[c]]
             for c in ("run", "dir", "notebook") if c in table}
    table.assign(**paths).to_csv(path, index=False)


def write(sweep: Sweep, out: str | Path, *, command: str) -> dict:
    """The study's folder `out` from what its sweep folder holds now (finished runs only)."""
    p = presets.get(sweep.preset) if sweep.preset else None
    status = progress(sweep)
    read = read_study(sweep, status)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    attack = sweep.robust_attack or "pgd20"
    labels = {**results.CLAIMS, **{m: report.METRIC_GROUPS[m] for m in report.METRIC_GROUPS if m not in
                                   results.CLAIMS}}
    metrics = read["metrics"] if len(read["metrics"]) else pd.DataFrame(
        columns=["arm", "seed", "imbalance_ratio", "protocol", "metric", "value"])
    readings = compare.primary_readings(metrics, sweep.primary, labels, declared=len(sweep.seeds))
    two_orders = status.get("class_order", pd.Series(dtype=str)).nunique() > 1   # planned, finished or not
    weights = any(a.method == "taet" for a in sweep.arms)
    extra: list[str] = []
    saved: dict[str, pd.DataFrame | None] = {}
    if two_orders or weights:
        extra, saved = study_b_section(read["tables"], finished_runs(status), attack, variants_of(sweep.arms),
                                       rarity=two_orders)
        head = "Rarity or difficulty, and HARL's negative class weights" if two_orders else \
            "HARL's negative class weights"
        extra = [f"## {head} (study B's analyses)\n", *extra]
    root = Path(sweep.root)
    _save_csv(status.drop(columns=["finished"]), out / "progress.csv", root)
    for name in ("health", "metrics", "aggregate"):
        _save_csv(read[name], out / f"{name}.csv", root)
    compare.readings_table(readings).to_csv(out / "claims.csv", index=False)
    sessions_table(study_sessions(root)).to_csv(out / "sessions.csv", index=False)   # the wall time's record
    for name, table in saved.items():
        if table is not None:
            _save_csv(table, out / f"{name}.csv", root)
    tuning = tuning_lines(sweep)
    rankings = compare.rankings(read["metrics"], "balanced_robustness", "balanced") if len(read["metrics"]) else []
    text = readme(title=p.description if p else f"Study {sweep.root.name}", command=command, status=status,
                  wall=wall_text(status, Path(sweep.root)), design=design_section(sweep, p, readings) if p else [],
                  readings=readings, gate=read["health"], tuning=tuning,
                  classes=class_table(read["tables"], finished_runs(status)), agg=read["aggregate"],
                  rankings=[verdicts.sentence(r) for r in rankings],
                  figures=_figures(read, attack, out, two_orders), extra=extra, attack=attack,
                  attacks=attack_table(read["tables"]))
    (out / "README.md").write_text(text)
    return {**read, "status": status, "claims": readings, "rankings": rankings, "readme": text,
            "tuning_note": tuning[0] if tuning[0].startswith(TUNING_RUNNING) else ""}


def markers(preset: str) -> tuple[str, str]:
    """Where a page holds a study's generated summary (README.md, docs/results.md): put them there once."""
    return f"<!-- study:{preset} -->", f"<!-- /study:{preset} -->"


def summary_section(preset: str, written: dict, link: str) -> str:
    """A study in a few lines, between its markers: how far it is, the verdicts of its primary comparisons
    (verdicts.sentence), and a link to its folder. A descriptive study (no primary comparison) shows its
    rankings instead, so that the page says what it found; either names the runs that did not train."""
    readings = written["claims"]
    lines = readings if any(r["kind"] == "claim" for r in readings) else written["rankings"]
    gate = [health.left_out(written["health"])] if len(written["health"]) else []
    return "\n".join([markers(preset)[0],
                      f"[{preset}]({link}): " + " ".join(t for t in (written.get("tuning_note", ""),
                                                                     progress_text(written["status"]),
                                                                     verdicts.sentence({"kind": "summary",
                                                                                        "readings": readings})) if t)
                      + "\n",
                      *[f"- {verdicts.sentence(r)}" for r in lines], *[f"- {g}" for g in gate], markers(preset)[1]])


def update_pages(preset: str, written: dict, out: Path) -> list[Path]:
    """The study's summary section of README.md and docs/results.md, where a page holds its markers."""
    done: list[Path] = []
    if not out.resolve().is_relative_to(PROJECT_ROOT):   # a folder outside the repository: nothing to link
        return done
    for page in (resolve("README.md"), resolve("docs/results.md")):
        if page.exists():
            link = os.path.relpath(out / "README.md", page.parent)
            if results.update_section(page, summary_section(preset, written, link), markers(preset)):
                done.append(page)
    return done


# ------------------------------------------------------------------------------ CLI
def add_cli(subparsers) -> None:
    for name, func, what, root, out in (
            ("study", cmd_study, "publish a study (fmnist_lt_study_a, _b, _c) from its sweep folder, finished or "
             "partial: results/<preset>/README.md, tables, figures, record/", "only read", "written"),
            ("restore", cmd_restore, "copy a study's record of finished runs (results/<preset>/record/, kept in git) "
             "back into its sweep folder, before the sweep resumes", "written", "only read")):
        p = subparsers.add_parser(name, help=what)
        p.add_argument("--preset", required=True, help="the study's preset (its sweep, primary comparisons, sources)")
        p.add_argument("--root", help=f"the study's sweep folder (default runs/<preset>); {root}")
        p.add_argument("--out", help=f"the published folder, with record/ (default results/<preset>); {out}")
        p.set_defaults(func=func)


def cmd_study(args) -> int:
    p = presets.get(args.preset)
    root = args.root or f"runs/{p.name}"
    out = args.out or f"results/{p.name}"
    if not p.tuning:
        raise ConfigError(f"--preset {p.name}: is no study (it does not tune); studies: " + ", ".join(
            sorted(n for n, q in presets.PRESETS.items() if q.tuning)) + ".")
    if not (resolve(root) / TUNING_FILE).parent.is_dir():
        fix = (f"run `python -m taetlib restore --preset {p.name} --root {root} --out {out}` first (its record is "
               "in git)" if (resolve(out) / RECORD_DIR / TUNING_FILE).exists() else   # a new machine
               f"run `python -m taetlib tune --preset {p.name} --out {root}` and the sweep first (a study publishes "
               "from its first tuning run on)")
        raise bad("--root", root, f"{'holds no tuning yet' if resolve(root).is_dir() else 'is no folder'}; {fix}.")
    t0 = time.time()
    written = write(study_sweep(p.name, resolve(root)), resolve(out), command=commands(p.name, root, out,
                                                                                       bool(p.tuning)))
    print(f"{progress_text(written['status'])}\nwritten: {resolve(out) / 'README.md'} ({time.time() - t0:.0f} s)")
    for page in update_pages(p.name, written, resolve(out)):
        print(f"updated the {p.name} section of {page}")
    n = keep_record(resolve(root), resolve(out) / RECORD_DIR)
    print(f"record: {n} files of the finished runs in {resolve(out) / RECORD_DIR} (commit it: `restore` brings them "
          "back on another machine)")
    return 0


def cmd_restore(args) -> int:
    p = presets.get(args.preset)
    root, out = resolve(args.root or f"runs/{p.name}"), resolve(args.out or f"results/{p.name}")
    if not (out / RECORD_DIR).is_dir():
        raise bad("--out", str(out), f"holds no {RECORD_DIR}/ folder; `python -m taetlib study --preset {p.name}` "
                  "writes it once a run has finished.")
    n = restore_record(out / RECORD_DIR, root)
    print(f"restored {n} files into {root}; the sweep and tune commands skip what finished")
    return 0
