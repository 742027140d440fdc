"""The sections of a study's README (study.py assembles them): how far it is (per arm and seed), the
commands, the time it took (runs, sweep sessions, tuning), the design and its power, the tuning's choices
or progress, the class order, and the per-radius and per-attack tables. Pure readers of the sweep folder
and the tables study.py has read; nothing here writes a file."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from . import compare, data, presets, report, verdicts
from .config import RunConfig
from .history import compute_seconds, read_history
from .markdown_table import markdown
from .plan import POINT_FILE, TUNING_FILE, Sweep
from .run_files import reused_text
from .runs import DONE
from .schedule import budget
from .sessions import read_sessions, wall_seconds
from .tuning_choices import tuning_record
from .worst_case import NAME as WORST

__all__ = ["PENDING", "TUNING_RUNNING", "attack_table", "class_table", "commands", "design_section", "finished_runs",
           "machines_text", "per_machine", "planned", "progress_table", "progress_text", "radius_images",
           "radius_table", "run_seconds", "sessions_text", "tuning_lines", "tuning_progress", "wall_text"]

PENDING = "not finished"
TUNING_RUNNING = "The tuning is running:"


def planned(sweep: Sweep) -> list:
    """The sweep's runs; while it still tunes, with the preset's values (no run has started then)."""
    return sweep.plan(tuned=(Path(sweep.root) / TUNING_FILE).exists() or not sweep.tuning)


def finished_runs(status: pd.DataFrame) -> pd.DataFrame:
    return status[status["status"] == "done"]


def progress_text(status: pd.DataFrame) -> str:
    counts = status["status"].value_counts()
    done, failed = int(counts.get("done", 0)), int(counts.get("failed", 0))
    text = f"{done} of {len(status)} runs have finished"
    if failed:
        text += f", {failed} failed"
    if done + failed < len(status):
        left = len(status) - done - failed
        text += (f", {left} {'has' if left == 1 else 'have'} not finished yet (queued or running): this is a "
                 "partial reading, and only the finished runs are read")
    return text + "."


def progress_table(status: pd.DataFrame) -> pd.DataFrame:
    """Arms x seeds: done, failed or not finished, with each arm's count of finished runs."""
    cell = status.assign(cell=status["status"].map({"done": "done", "failed": "FAILED"}).fillna("-"))
    wide = cell.pivot_table(index=["imbalance_ratio", "arm"], columns="seed", values="cell", aggfunc="first",
                            sort=False)
    wide.columns = [f"seed {s}" for s in wide.columns]
    n = status.groupby(["imbalance_ratio", "arm"], sort=False)["status"].agg(
        lambda s: f"{(s == 'done').sum()} of {len(s)}")
    wide = wide.assign(finished=n).reset_index()
    return wide.assign(imbalance_ratio=[f"{v:g}" for v in wide["imbalance_ratio"]])


def commands(preset: str, root: str, out: str, tunes: bool = True) -> str:
    return (f"python -m taetlib restore --preset {preset} --root {root} --out {out}   # the finished runs, from git\n"
            + (f"nice -n 10 python -m taetlib tune --preset {preset} --out {root} --jobs 2\n" if tunes else "")
            + f"nice -n 10 python -m taetlib sweep --preset {preset} --out {root} --jobs 2   # resumes what finished\n"
            + f"python -m taetlib study --preset {preset} --root {root} --out {out}")


def run_seconds(run_dir: str | Path) -> float:
    """A run's elapsed seconds: its epochs (history, every session counted) and its attacks (eval_config.json's
    seconds, one per attack: the protocols share one run of each). Not CPU time: shared cores lengthen it."""
    run_dir = Path(run_dir)
    ev = run_dir / "eval" / "eval_config.json"
    attacks = json.loads(ev.read_text()).get("seconds", {}) if ev.exists() else {}
    per_attack = {key.split("/", 1)[-1]: s for key, s in attacks.items()}
    per_attack.pop(WORST, None)   # the worst case runs no attack: its seconds are its parts' sum
    return compute_seconds(read_history(run_dir)) + float(sum(per_attack.values()))


def wall_text(status: pd.DataFrame, root: Path) -> str:
    """The runs' elapsed time (each run's training and attacks, summed over every session it needed), the
    sweep's wall time (the union of its sessions, sessions.py), the tuning's cost (tuning.json, once chosen)
    and its wall time (its own sessions, from its first)."""
    done = finished_runs(status)
    parts = []
    if len(done):
        compute = np.array([run_seconds(d) for d in done["run"]])
        parts.append(f"the {len(done)} finished runs took {compute.sum() / 3600:.1f} h (the elapsed time of their "
                     "training and attacks, every session of a resumed run counted, so other work sharing the cores "
                     f"slows it; {compute.mean() / 60:.0f} min each on average{per_machine(done, compute)})")
    parts.append(sessions_text("the sweep", read_sessions(root)))
    tuning = root / TUNING_FILE
    if tuning.exists():
        cost = json.loads(tuning.read_text())["cost"]
        parts.append(f"the tuning took {cost['runs']} runs and {cost['seconds'] / 3600:.1f} h of training "
                     f"({cost['sgd_steps']} SGD steps)")
    parts.append(sessions_text("the tuning", read_sessions(tuning.parent)))   # also while it still runs
    parts = [p for p in parts if p]
    return (("Time: " + "; ".join(parts) + ".") if parts else "Time: no run has finished yet.") + \
        reused_text(root, "runs")


def per_machine(done: pd.DataFrame, seconds: np.ndarray) -> str:
    """The runs' mean time by the machine that finished each (DONE.json's `machine`), where any recorded one:
    a study's runs may land on machines of different speed."""
    where = pd.Series([json.loads((Path(d) / DONE).read_text()).get("machine", "") for d in done["run"]])
    if not where.astype(bool).any():
        return ""
    means = pd.Series(seconds).groupby(where.to_numpy()).agg(["size", "mean"])
    order = sorted(means.index, key=lambda m: (not m, -means.at[m, "size"], m))   # most runs first, unknown last
    return "; by the machine that finished them: " + ", ".join(
        f"{means.at[m, 'size']} on {m or 'a machine not recorded'} ({means.at[m, 'mean'] / 60:.0f} min each)"
        for m in order)


def sessions_text(who: str, sessions: list[dict]) -> str:
    """How long `who` has run: the union of its sessions' spans, pauses between them not counted."""
    if not sessions:
        return ""
    by_hand = sum(bool(r.get("reconstructed")) for r in sessions)
    note = f", {by_hand} of them reconstructed afterwards, each with its source in the note column" if by_hand else ""
    return (f"{who} has run {wall_seconds(sessions) / 3600:.1f} h of wall time over {len(sessions)} "
            f"session{'s' if len(sessions) != 1 else ''} (sessions.csv{note}; pauses between sessions not counted)"
            + machines_text(sessions))


def machines_text(sessions: list[dict]) -> str:
    """Which machines the sessions ran on, with how many each: their times compare only on one machine."""
    counts = Counter(r.get("machine", "") for r in sessions)
    named = [(m, n) for m, n in sorted(counts.items(), key=lambda kv: -kv[1]) if m]
    if not named:
        return ""
    text = ", " + " and ".join(f"{n}{' of them' if k == 0 else ''} on {m}" for k, (m, n) in enumerate(named))
    return text + (f" (the other {counts['']} did not record their machine)" if counts[""] else "")


def _training_images(cfg: RunConfig) -> int:
    C = data.DATASETS[cfg.dataset].num_classes
    return int(sum(data.longtail_counts(cfg.n_max, C, cfg.imbalance_ratio))) if cfg.n_max else 0


def design_section(sweep: Sweep, p: presets.Preset, readings: list[dict]) -> list[str]:
    """The design (arms, IR, seeds, budget, attacks) and its power: the smallest difference each primary
    comparison can detect with 80 % power (intervals.detectable, from its standard error over the seeds
    finished so far) against the paper's claimed effect; and the power the preset declared beforehand."""
    runs = [r for r in planned(sweep) if not r.error]
    cfg = RunConfig.from_dict(runs[0].config)
    b, n = budget(cfg), _training_images(cfg)
    steps = f", {b['adversarial_epochs'] * math.ceil(n / cfg.batch_size)} SGD steps" if n else ""
    ev = sweep.evaluation
    taet = next((RunConfig.from_dict(r.config) for r in runs if r.config["method"] == "taet"), None)
    stage1 = (f"; TAET's {taet.clean_stage_epochs()} clean-CE epochs come first ({taet.clean_stage_epochs()} : "
              f"{budget(taet)['adversarial_epochs']}; the paper's proportion is 40 : 60)" if taet else "")
    lines = [f"- Arms: {', '.join(a.name for a in sweep.arms)}; IR {', '.join(f'{v:g}' for v in sweep.irs)}; "
             f"{len(sweep.seeds)} seed{'s' if len(sweep.seeds) > 1 else ''}, each drawing its own subsample.",
             f"- Budget per run: {b['adversarial_epochs']} adversarial epochs of {n} training images in batches of "
             f"{cfg.batch_size}{steps}; {cfg.attack_steps}-step PGD in training{stage1}.",
             f"- Evaluation: {', '.join(ev.get('attacks', []))} on {cfg.test_per_class} test images per class; "
             f"{'the claims read' if sweep.primary else 'robustness is read on'} {sweep.robust_attack or 'pgd20'}"
             + (f" (robust only if robust to each of {', '.join(ev['worst_case'])}, image by image)"
                if ev.get("worst_case") else "") + "; PGD-20 radius sweep "
             + (", ".join(f"{e:g}" for e in ev.get("eps_sweep") or []) or "none") + "."]
    if "seeds" in p.sources:
        lines.append(f"- Declared before the runs: {p.sources['seeds']}.")
    rows = []
    for r in readings:
        mde, claimed = r.get("mde", np.nan), r.get("claimed")
        reach = ("-" if claimed is None or not np.isfinite(mde) else "within reach" if abs(claimed) >= mde
                 else "out of reach")
        rows.append({"comparison": f"{r['a']} - {r['b']}, {r['label']} (IR {r['imbalance_ratio']:g}, {r['protocol']})",
                     "paper's claim": "none" if claimed is None else verdicts.pts(claimed),
                     "seeds read": r["k"],
                     "smallest detectable (80 % power)": verdicts.pts(mde, False) if np.isfinite(mde) else "-",
                     "the claim is": reach})
    if rows:
        read = (f"all {len(sweep.seeds)} declared seeds" if all(r["k"] == len(sweep.seeds) for r in readings)
                else "the seeds finished so far")
        lines += ["", f"Measured on {read} (two-sided t over seeds at 0.05, the seed spread of "
                  "the paired differences; points):", "", markdown(pd.DataFrame(rows))]
    return lines


def tuning_progress(sweep: Sweep) -> pd.DataFrame:
    """While the tuning runs: each tuning run begun (IR, arm, value) with its status (point.json's, else how
    many epochs its history holds) and validation readings. A reading reused from another study says from
    which, with the epochs of its config and that study's seconds ("-" where its record kept none)."""
    rows = []
    for d in sorted((Path(sweep.root) / TUNING_FILE).parent.glob("*/*/*/")):
        point = json.loads((d / POINT_FILE).read_text()) if (d / POINT_FILE).exists() else {}
        rec = point.get("result", {})
        history = d / "history.jsonl"
        epochs: int | str = len(history.read_text().splitlines()) if history.exists() else 0
        status = rec.get("status", "training")
        seconds: int | str = round(compute_seconds(read_history(d)))   # every session's epochs
        if rec.get("reused_from"):
            src = Path(rec["reused_from"])   # .../<study>/tuning/tuning.json: name the study
            study = src.parts[src.parts.index("tuning") - 1] if "tuning" in src.parts else src
            status = f"{status}, reused from {study}"
            # adopted without its history: a finished reading ran the epochs of its config; a diverged one, unknown
            done = rec.get("status") == "done"
            epochs = epochs or (done and point.get("config", {}).get("epochs")) or "-"
            seconds = seconds or round(rec.get("train_seconds") or 0) or "-"
        rows.append({"data": d.parent.parent.name, "arm": d.parent.name, "value": d.name, "status": status,
                     "epochs": epochs, "val_balanced_robustness": rec.get("val_balanced_robustness", np.nan),
                     "val_balanced_accuracy": rec.get("val_balanced_accuracy", np.nan), "train_seconds": seconds})
    return pd.DataFrame(rows, columns=["data", "arm", "value", "status", "epochs", "val_balanced_robustness",
                                       "val_balanced_accuracy", "train_seconds"])


def tuning_lines(sweep: Sweep) -> list[str]:
    root = Path(sweep.root)
    got = tuning_record(root)
    if got is None and sweep.tuning:   # still tuning: what has finished so far; the sweep has not started
        begun = tuning_progress(sweep)
        planned = len(sweep.irs) * len(sweep.arms) * len(next(iter(sweep.tuning["factors"].values())))
        done = begun[begun["status"] != "training"]
        shown = begun.assign(**{c: [verdicts.pts(v, False) if np.isfinite(v) else "-" for v in begun[c]] for c in
                                ("val_balanced_robustness", "val_balanced_accuracy")})   # "-": still training
        return [f"{TUNING_RUNNING} {len(done)} of {planned} tuning runs have finished and "
                f"{len(begun) - len(done)} {'is' if len(begun) - len(done) == 1 else 'are'} training; no value has "
                "been chosen and no study run has started.", "",
                "Validation readings so far (%; the test set is not read):", "",
                markdown(shown) if len(shown) else "No tuning run has begun."]
    if got is None:
        return ["This sweep did not tune (no tuning/tuning.json)."]
    rows, text = got
    rows = rows.assign(value=[f"{v:.4g}" for v in rows["value"]], factor=[f"x{f:g}" for f in rows["factor"]],
                       val_balanced_robustness=[verdicts.pts(v, False) for v in rows["val_balanced_robustness"]])
    return [text, "", markdown(rows, {"val_balanced_robustness": "validation robustness (%)"})]


def class_table(tables: dict | None, status: pd.DataFrame) -> list[str]:
    """Per class order: the classes from the most to the least frequent, with their training counts."""
    lines = [report.class_order_text(status)]
    if tables is None:
        return lines
    pc = tables["per_class"]
    if "train_count" not in pc:
        return lines
    orders = dict(zip(status["run"].astype(str), status.get("class_order", pd.Series("label", index=status.index))))
    pc = pc.assign(class_order=pc["run"].astype(str).map(orders).fillna("label"))
    for order, g in pc.groupby("class_order", sort=False):
        counts = g.groupby("class_name")["train_count"].mean().sort_values(ascending=False)
        lines.append(f"- {order}: " + ", ".join(f"{c} {n:.0f}" for c, n in counts.items()) + " (mean training "
                     "images per class over the finished runs)")
    return lines


def radius_table(tables: dict | None, protocol: str = "balanced") -> pd.DataFrame:
    """The radius sweep per arm: each run's balanced robustness at each eps (the mean of its per-class
    recall), then the mean over seeds with its 95 % interval (compare.seed_means, logit scale)."""
    if tables is None or tables["curves"].empty:
        return pd.DataFrame(columns=["eps", "arm", "mean", "low", "high", "n"])
    c = tables["curves"]
    c = c[c["protocol"] == protocol]
    per_run = c.groupby(["arm", "seed", "eps"], as_index=False).agg(value=("recall", "mean"), images=("n", "sum"))
    return compare.seed_means(per_run, ["arm", "eps"], "value", n="images")


def radius_images(tables: dict, protocol: str = "balanced") -> str:
    """How many test images each run's radius sweep attacks (evaluate's curve_per_class, fewer than the
    study's): '500', or '400-500' where runs differ."""
    c = tables["curves"]
    n = c[c["protocol"] == protocol].groupby(["run", "eps"])["n"].sum()
    return f"{n.min():.0f}" if n.min() == n.max() else f"{n.min():.0f}-{n.max():.0f}"


def attack_table(tables: dict | None, protocol: str = "balanced") -> pd.DataFrame:
    """Balanced robustness per arm (with its seeds) under each attack and their worst case per image, % (mean
    over seeds [95 % interval], the engine on the logit scale): how much each attack alone would flatter an arm."""
    if tables is None or tables["summary"].empty:
        return pd.DataFrame()
    s = tables["summary"]
    s = s[(s["protocol"] == protocol) & (s["attack"] != "clean")]
    m = compare.seed_means(s, ["arm", "attack"], "balanced", "balanced_low", "balanced_high", n="n")
    m = m.assign(cell=[f"{100 * v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" for v, lo, hi in
                       zip(m["mean"], m["low"], m["high"])])
    wide = m.pivot_table(index="arm", columns="attack", values="cell", aggfunc="first", sort=False)
    wide.columns.name = None
    wide = wide.reset_index()
    seeds = m.groupby("arm", sort=False)["n"].max()   # as the aggregate table: a partial study mixes them
    wide.insert(1, "seeds", [int(seeds[a]) for a in wide["arm"]])
    return wide
