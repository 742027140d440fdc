"""`python -m taetlib doctor [--device cuda]`: one command that checks a machine and records what it measured.

On a GPU (the full check, sized for at most 8 minutes on one recent GPU):
  1. the CUDA tests (`pytest -k cuda tests/`);
  2. benchmarks/train_throughput.py: ResNet-18, PGD-10, CIFAR-shaped data, batch 128, in every configuration
     (fp32, bf16, channels_last, both, compile, all three), each against its floor, with peak memory;
  3. one short epoch of every registered method and of TAET + RobustLT on synthetic CIFAR-shaped data, in
     what precision=auto picks there, with every host sync in the step made an error
     (torch.cuda.set_sync_debug_mode('error'));
  4. one model evaluated with every attack of the evaluation suite (fp32, as evaluation always is).
On a CPU the same steps run smaller (small_cnn, a few batches, a tiny test set, no compile rows: inductor's
C++ build alone takes minutes there) in under 2 minutes; the CUDA tests are not run.
It writes one JSON record (machine, versions, numerics, figures; results/doctor-<device>.json unless --out)
and prints a table. The figures are for reading, not for asserting: speed lives in benchmarks/.
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import numerics
from .attack_suite import ATTACKS
from .batches import Batches, Split
from .config import RunConfig
from .data import DATASETS, LTData, longtail_counts
from .distributed import resolve_device
from .errors import REGISTRIES
from .evaluate import evaluate
from .methods import build_objective, model_head
from .models import create_model
from .paths import PROJECT_ROOT
from .train import train_epoch

__all__ = ["CPU_AUTOATTACK", "CPU_CONFIGS", "FAST_ANCHOR", "FP32_ANCHOR", "SIZES", "Size", "add_cli", "anchors",
           "cuda_tests", "doctor", "every_attack", "host_sync_is_an_error", "machine", "method_config", "method_epochs",
           "synthetic_cifar", "table", "throughput", "versions"]

FP32_ANCHOR = 720   # img/s: a published fp32 ResNet-18 PGD-10 training benchmark on one GPU
FAST_ANCHOR = "several thousand img/s (H100/H200, bf16 + channels_last + compile)"
CPU_CONFIGS = ["fp32", "bf16 autocast", "channels_last", "bf16+chlast"]


@dataclass(frozen=True)
class Size:
    model: str
    batch: int
    images: int          # synthetic training images of a method's epoch
    steps: int           # K, the attack steps
    bench_batches: int
    bench_rounds: int
    eval_per_class: int  # test images per class of the every-attack evaluation


SIZES = {"cuda": Size("resnet18", 128, 1024, 10, 8, 3, 50),
         "cpu": Size("small_cnn", 8, 16, 2, 1, 1, 1)}
# CPU: a short AutoAttack (every sub-attack, fewer iterations and queries); a GPU runs the standard one
CPU_AUTOATTACK = {"apgd.n_iter": 10, "apgd_targeted.n_iter": 10, "fab.n_iter": 10, "square.n_queries": 50}


# ---------------------------------------------------------------- the record's parts
def machine(device: torch.device) -> dict:
    info: dict = {"host": platform.node(), "cpu": numerics.cpu_name(), "cores": os.cpu_count(),
                  "torch_threads": torch.get_num_threads(), "cpu_bf16_flags": list(numerics.cpu_bf16_flags()),
                  "torch_isa": torch.backends.cpu.get_cpu_capability()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                    gpus=torch.cuda.device_count())
    return info


def versions() -> dict:
    import pyautoattack  # heavy optional import, deferred for start-up time
    return {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "numpy": np.__version__, "pyautoattack": getattr(pyautoattack, "__version__", "?")}


def cuda_tests(device: torch.device, timeout: float) -> dict:
    """pytest -k cuda over the suite, in a fresh process; on a CPU they would only skip."""
    if device.type != "cuda":
        return {"status": "not run: no CUDA device"}
    if not (PROJECT_ROOT / "tests").is_dir():
        return {"status": f"not run: no tests/ under {PROJECT_ROOT}"}
    t0 = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider", "tests"],
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout:.0f} s", "seconds": timeout}
    last = (out.stdout.strip().splitlines() or ["no output"])[-1]
    return {"status": "passed" if out.returncode == 0 else f"failed (exit {out.returncode})", "summary": last,
            "seconds": round(time.perf_counter() - t0, 1), "tail": out.stdout[-3000:] if out.returncode else ""}


def throughput(device: torch.device, size: Size, timeout: float) -> dict:
    """benchmarks/train_throughput.py in every configuration (each in its own process), against its floor."""
    script = PROJECT_ROOT / "benchmarks" / "train_throughput.py"
    if not script.exists():
        return {"status": f"not run: {script} not found (a source checkout has it)"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, str(script), "--device", str(device), "--model", size.model, "--batch", str(size.batch),
               "--steps", str(size.steps), "--batches", str(size.bench_batches), "--rounds", str(size.bench_rounds),
               "--json", str(out), "--timeout", str(int(timeout))]
        if device.type != "cuda":
            cmd += ["--only", *CPU_CONFIGS]
        t0 = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * 8)
        if run.returncode != 0 or not out.exists():
            return {"status": f"failed (exit {run.returncode})", "tail": (run.stderr or run.stdout)[-2000:]}
        rec = json.loads(out.read_text())
    rows = []
    for name, r in rec["rows"].items():
        if "skipped" in r:
            rows.append({"config": name, "skipped": r["skipped"]})
            continue
        rows.append({"config": name, "img_s": size.batch / r["step_s"], "ms_step": 1e3 * r["step_s"],
                     "x_floor": r["step_s"] / r["floor_s"], "peak_mib": r["peak_mib"], "warmup_s": r["warmup_s"]})
    fp32 = next((r["img_s"] for r in rows if r["config"] == "fp32" and "img_s" in r), None)
    for r in rows:
        if "img_s" in r and fp32:
            r["x_fp32"] = r["img_s"] / fp32
    return {"status": "done", "seconds": round(time.perf_counter() - t0, 1), "model": size.model,
            "batch": size.batch, "steps": size.steps, "rows": rows}


@contextmanager
def host_sync_is_an_error(device: torch.device):
    """Inside, on CUDA: any call that synchronises with the host raises RuntimeError."""
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def synthetic_cifar(n: int, seed: int = 0) -> Split:
    """n CIFAR-shaped uint8 images with CIFAR-10-LT IR-10 label frequencies."""
    g = torch.Generator().manual_seed(seed)
    p = torch.tensor(longtail_counts(5000, 10, 10), dtype=torch.float)
    y = torch.multinomial(p / p.sum(), n, replacement=True, generator=g)
    return Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), y)


def method_config(method: str, robustlt: bool, device: torch.device, size: Size) -> RunConfig:
    return RunConfig(dataset="cifar10", model=size.model, method=method, robustlt=robustlt, epochs=2,
                     stabilization_epochs=1, budget_rule="released", attack_steps=size.steps, eps=8 / 255,
                     step_size=2 / 255, batch_size=size.batch, device=str(device), lasat_interval=2,
                     lasat_strategy_model=size.model, lasat_reward_early_stop=False,   # (its early stop syncs)
                     eval_every=0, precision="auto", memory_format="auto")


def method_epochs(device: torch.device, size: Size) -> tuple[list[dict], torch.nn.Module | None]:
    """One short adversarial epoch of every registered method (and TAET + RobustLT) in what auto picks;
    returns the rows and the PGD-AT model (the evaluation's)."""
    spec, split = DATASETS["cifar10"], synthetic_cifar(size.images)
    counts = split.counts(10)
    rows, kept = [], None
    for method, robustlt in [(m, False) for m in sorted(REGISTRIES["method"])] + [("taet", True)]:
        cfg = method_config(method, robustlt, device, size)
        num = numerics.resolve(cfg, device)
        torch.manual_seed(0)
        model = numerics.in_format(create_model(cfg.model, 10, 3, spec.mean, spec.std, head=model_head(cfg))
                                   .to(device), num.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        objective = build_objective(cfg, counts, spec.default_eps)
        objective.bind(opt)
        batches = Batches(split, cfg.batch_size, device, shuffle=True, augment="crop_flip", seed=0)
        row = {"method": method + ("+robustlt" if robustlt else ""), "precision": num.precision,
               "memory_format": num.memory_format}
        try:
            if device.type == "cuda":   # warm-up: per-class constants reach the device before the checked epoch
                train_epoch(model, objective, opt, batches, 1, cfg, 10, device)
            sync = host_sync_is_an_error(device) if device.type == "cuda" else nullcontext()
            t0 = time.perf_counter()
            with sync:
                loss_sum, _, _, _ = train_epoch(model, objective, opt, batches, 2, cfg, 10, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            loss = loss_sum.item() / len(batches)
            row.update(status="ok" if math.isfinite(loss) else "non-finite loss", loss=loss,
                       img_s=len(split) / (time.perf_counter() - t0), host_sync_checked=device.type == "cuda")
        except Exception as e:   # a method that fails is a finding of the check, not the end of it
            row.update(status="failed", error=f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
        rows.append(row)
        if method == "pgd_at":
            kept = model
    return rows, kept


def every_attack(model: torch.nn.Module, device: torch.device, size: Size) -> dict:
    """evaluate() of one model with every attack in ATTACKS on a small synthetic CIFAR-shaped test set."""
    spec = DATASETS["cifar10"]
    test = synthetic_cifar(10 * size.eval_per_class * 2, seed=1)
    train = synthetic_cifar(size.images)
    data = LTData(spec, tuple(f"class{c}" for c in range(10)), train, {"balanced": test}, train.counts(10), {})
    params = {} if device.type == "cuda" else {"autoattack": dict(CPU_AUTOATTACK)}
    t0 = time.perf_counter()
    try:
        result = evaluate(model, data, list(ATTACKS), ("balanced",), per_class=size.eval_per_class, device=device,
                          attack_params=params or None, batch_size=256)
    except Exception as e:
        return {"status": "failed", "error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
    s = result.summary
    return {"status": "done", "seconds": round(time.perf_counter() - t0, 1), "dtype": result.config["dtype"],
            "n": int(len(test.subset_per_class(size.eval_per_class, 0))), "attack_params": params,
            "attacks": {r.attack: {"accuracy": float(r.overall), "seconds": float(r.seconds)}
                        for r in s.itertuples()}}


# ---------------------------------------------------------------- the command
def doctor(device: str = "auto", out: str | Path | None = None, timeout: float = 300) -> dict:
    """Run every check on `device`, write the JSON record, return it."""
    dev = resolve_device(device)
    size = SIZES["cuda" if dev.type == "cuda" else "cpu"]
    t0 = time.perf_counter()
    record: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": str(dev),
              "machine": machine(dev), "versions": versions(), "size": asdict(size),
              "numerics_auto": numerics.resolve(RunConfig(device=str(dev), precision="auto"), dev).to_dict()}
    record["cuda_tests"] = cuda_tests(dev, timeout)
    record["throughput"] = throughput(dev, size, timeout)
    record["methods"], model = method_epochs(dev, size)
    record["evaluation"] = every_attack(model, dev, size) if model is not None else {"status": "no PGD-AT model"}
    record["anchors"] = anchors(record["throughput"], size)
    record["seconds"] = round(time.perf_counter() - t0, 1)
    path = Path(out) if out else PROJECT_ROOT / "results" / f"doctor-{dev.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    record["path"] = str(path)
    return record


def anchors(tp: dict, size: Size) -> dict:
    """The measured ResNet-18 PGD-10 figures against the published fp32 one and the fast-path expectation."""
    if size.model != "resnet18" or tp.get("status") != "done":
        return {"note": f"anchors are for ResNet-18 PGD-10 on a GPU; this record trained {size.model}"}
    got = {r["config"]: r["img_s"] for r in tp["rows"] if "img_s" in r}
    best = max(got, key=lambda k: got[k]) if got else None
    return {"fp32_img_s": got.get("fp32"), "fp32_anchor_img_s": FP32_ANCHOR,
            "fp32_vs_anchor": got["fp32"] / FP32_ANCHOR if "fp32" in got else None,
            "best_config": best, "best_img_s": got.get(best), "fast_anchor": FAST_ANCHOR}


def table(record: dict) -> str:
    """The record as the lines a person reads."""
    m = record["machine"]
    lines = [f"doctor: {record['device']} | {m.get('gpu', m['cpu'])} | torch {record['versions']['torch']} | "
             f"auto -> {record['numerics_auto']['precision']} + {record['numerics_auto']['memory_format']} "
             f"({record['numerics_auto']['hardware']})",
             f"CUDA tests: {record['cuda_tests']['status']} {record['cuda_tests'].get('summary', '')}".rstrip()]
    tp = record["throughput"]
    if tp.get("status") == "done":
        lines.append(f"\ntraining throughput ({tp['model']}, batch {tp['batch']}, PGD-{tp['steps']}):")
        lines.append(f"  {'configuration':<17} {'img/s':>8} {'x fp32':>7} {'x floor':>8} {'peak MiB':>9}")
        for r in tp["rows"]:
            lines.append(f"  {r['config']:<17} not measured: {r['skipped']}" if "skipped" in r else
                         f"  {r['config']:<17} {r['img_s']:8.0f} {r.get('x_fp32', float('nan')):7.2f} "
                         f"{r['x_floor']:8.3f} {r['peak_mib']:9.0f}")
    else:
        lines.append(f"training throughput: {tp.get('status')}")
    lines.append("\none epoch of every method (auto numerics" +
                 (", host sync = error):" if record["device"].startswith("cuda") else "):"))
    for r in record["methods"]:
        lines.append(f"  {r['method']:<16} {r['status']:<8} " +
                     (f"loss {r['loss']:.4f}  {r['img_s']:.0f} img/s" if "loss" in r else r.get("error", "")))
    ev = record["evaluation"]
    if ev.get("status") == "done":
        lines.append(f"\nevaluation, every attack ({ev['dtype']}, {ev['n']} images, {ev['seconds']:.0f} s):")
        lines += [f"  {a:<12} accuracy {v['accuracy']:.3f}  {v['seconds']:.1f} s" for a, v in ev["attacks"].items()]
    else:
        lines.append(f"evaluation: {ev.get('status')} {ev.get('error', '')}")
    lines.append(f"\nanchors: {json.dumps(record['anchors'])}")
    lines.append(f"{record['seconds']:.0f} s in all; record: {record.get('path', '-')}")
    return "\n".join(lines)


def add_cli(subparsers) -> None:
    """Register `python -m taetlib doctor [--device cuda] [--out FILE]`."""
    p = subparsers.add_parser("doctor", help="check this machine (GPU: CUDA tests, throughput, every method, every "
                                             "attack); writes one JSON record and prints a table")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", help="the JSON record (default results/doctor-<cpu|cuda>.json)")
    p.add_argument("--timeout", type=float, default=300, help="seconds for the CUDA tests / one benchmark row")
    p.set_defaults(func=_cmd_doctor)


def _cmd_doctor(args) -> int:
    record = doctor(args.device, args.out, args.timeout)
    print(table(record))
    failed = [r["method"] for r in record["methods"] if r["status"] != "ok"]
    bad_parts = [k for k in ("throughput", "evaluation") if record[k].get("status") not in ("done",)]
    bad_parts += ["cuda_tests"] if record["cuda_tests"]["status"].startswith(("failed", "timed")) else []
    return 1 if failed or bad_parts else 0
