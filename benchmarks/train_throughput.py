"""Images per second of a HARL-stage (TAET stage 2) epoch in four configurations, each against its floor,
and the step cost of a naive loop written the way the released code works.

    .venv/bin/python benchmarks/train_throughput.py [--device auto] [--model auto] [--batches 8]
                                                     [--rounds 3] [--steps 10] [--batch 128]

Shapes are CIFAR-10-LT IR 10 (3x32x32, 10 classes, labels drawn with the IR-10 class frequencies;
synthetic pixels). The HARL step is fit()'s own epoch loop (train.train_epoch: TAET objective at a
stage-2 epoch, K-step PGD, on-device crop+flip, per-class tallies), timed over --batches batches.

  floor  = K attack passes (forward + input gradient, BatchNorm in eval mode) + one training step on
           the same batches, in the same configuration: what any K-step adversarial method must pay.
  naive  = the released code's shape of a step: torchvision/PIL transforms image by image, a clean
           forward for logging, the PGD attack, a forward on x_adv for logging, the training
           forward, HARL's per-class losses in a Python loop over classes, and .item() reads each step.

Each configuration runs in a fresh process (its own peak memory, its own compile cache) and times
HARL and floor epochs interleaved, round by round, so drift in machine load hits both alike; figures
are medians over --rounds. Peak memory: torch.cuda.max_memory_allocated on CUDA; on CPU the process's
peak resident memory above its resident memory before the first step.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taetlib import numerics  # noqa: E402
from taetlib.attacks import bn_eval, pgd  # noqa: E402
from taetlib.batches import Batches, Split  # noqa: E402
from taetlib.config import RunConfig  # noqa: E402
from taetlib.data import longtail_counts  # noqa: E402
from taetlib.methods import build_objective  # noqa: E402
from taetlib.models import create_model  # noqa: E402
from taetlib.train import train_epoch  # noqa: E402

CIFAR10_LT_IR10 = longtail_counts(5000, 10, 10)   # 20431 training images
EPOCHS, STAGE1 = 100, 40                           # TAET's released schedule; timed at epoch 100 (stage 2)
FP32 = {"precision": "fp32", "memory_format": "contiguous"}
CONFIGS = {"fp32": FP32, "bf16 autocast": {**FP32, "precision": "bf16"},
           "channels_last": {**FP32, "memory_format": "channels_last"},
           "bf16+chlast": {"precision": "bf16", "memory_format": "channels_last"},   # what precision=auto picks
           "torch.compile": {**FP32, "compile": True},
           "bf16+chl+compile": {"precision": "bf16", "memory_format": "channels_last", "compile": True}}
NEEDS_GPU = {   # what a CPU row does not show
    "bf16 autocast": "bf16 tensor-core matmuls/convolutions (CPU autocast runs oneDNN bf16 kernels instead)",
    "channels_last": "cuDNN's NHWC convolution kernels (on CPU it is oneDNN's blocked layout either way)",
    "bf16+chlast": "both of the above together, where tensor cores want NHWC",
    "torch.compile": "inductor's Triton GPU kernels and CUDA graphs (on CPU inductor emits C++/OpenMP)",
}


# ---------------------------------------------------------------- the worker: one configuration
def setup(args, changes: dict):
    device = torch.device(args.device)
    torch.manual_seed(0)
    n = args.batches * args.batch
    p = torch.tensor(CIFAR10_LT_IR10, dtype=torch.float) / sum(CIFAR10_LT_IR10)
    y = torch.multinomial(p, n, replacement=True)
    split = Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), y)
    cfg = RunConfig(dataset="cifar10", model=args.model, method="taet", epochs=EPOCHS, stabilization_epochs=STAGE1,
                    attack_steps=args.steps, eps=8 / 255, step_size=2 / 255, batch_size=args.batch, device=args.device,
                    **changes)
    num = numerics.resolve(cfg, device)
    model = create_model(args.model, 10, 3, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)).to(device)
    numerics.in_format(model, num.channels_last)
    net = torch.compile(model) if cfg.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    batches = Batches(split, args.batch, device, shuffle=True, augment="crop_flip", seed=0)
    objective = build_objective(cfg, CIFAR10_LT_IR10, 8 / 255)
    return cfg, device, split, model, net, opt, batches, objective


def floor_epoch(net, opt, batches, cfg, device, k: int) -> None:
    net.train()
    num = numerics.resolve(cfg, device)
    for x, y in batches.epoch(EPOCHS):
        x = numerics.in_format(x, num.channels_last)
        with numerics.autocast(device, num.bf16):
            with bn_eval(net):
                for _ in range(k):
                    xr = x.detach().requires_grad_(True)
                    torch.autograd.grad(F.cross_entropy(net(xr), y, reduction="sum"), xr)
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def pil_batches(split: Split, batch: int, device):
    """A torchvision Dataset + DataLoader's work, in the training process: PIL crop, flip, ToTensor per image."""
    from PIL import Image
    from torchvision import transforms as T
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
    images = split.x.permute(0, 2, 3, 1).numpy()            # HWC uint8 arrays, as a Dataset holds them
    order = torch.randperm(len(split)).tolist()
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        yield torch.stack([tf(Image.fromarray(images[j])) for j in idx]).to(device), split.y[idx].to(device)


def naive_epoch(model, opt, split: Split, batch: int, k: int, device) -> None:
    """A step shaped like the released training loops (written here from their description)."""
    log = []
    for x, y in pil_batches(split, batch, device):
        model.eval()
        with torch.no_grad():
            clean_acc = (model(x).argmax(1) == y).float().mean().item()             # forward for logging only
        x_adv = pgd(model, x, y, eps=8 / 255, step=2 / 255, steps=k, random_start="normal")
        with torch.no_grad():
            adv_acc = (model(x_adv).argmax(1) == y).float().mean().item()           # forward for logging only
        model.train()
        per_sample = F.cross_entropy(model(x_adv), y, reduction="none")
        losses = []
        for c in range(10):                                                         # Python loop over classes
            mask = y == c
            losses.append(per_sample[mask].mean() if mask.sum().item() > 0 else per_sample.new_zeros(()))
        L = torch.stack(losses)
        bcl, hdl = L.mean(), ((L - L.mean()) ** 2).mean()
        rcel = ((L / L.sum()) ** 2).sum()
        loss = 0.1 * bcl + 0.1 * hdl + 0.1 * rcel
        opt.zero_grad()
        loss.backward()
        opt.step()
        log.append((loss.item(), clean_acc, adv_acc))


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.worker
    cfg, device, split, model, net, opt, batches, objective = setup(args, CONFIGS.get(name, {}))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    runs = {"harl": lambda: train_epoch(net, objective, opt, batches, EPOCHS, cfg, 10, device),
            "floor": lambda: floor_epoch(net, opt, batches, cfg, device, args.steps)}
    if name == "naive":
        runs["harl"] = lambda: naive_epoch(model, opt, split, args.batch, args.steps, device)
        runs["transforms"] = lambda: list(pil_batches(split, args.batch, device))   # its data part alone
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    t_start = time.perf_counter()
    for fn in runs.values():   # warm-up round: compilation, allocator, oneDNN primitive caches
        fn()
        sync()
    warmup = time.perf_counter() - t_start
    base = rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = {k: [] for k in runs}
    for r in range(args.rounds):
        for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            sync()
            t0 = clock()
            runs[k]()
            sync()
            times[k].append(clock() - t0)
    med = {k: statistics.median(v) / args.batches for k, v in times.items()}   # seconds per step
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)
    return {"config": name, "step_s": med["harl"], "floor_s": med["floor"], "peak_mib": peak,
            "transforms_s": med.get("transforms"), "warmup_s": warmup, "threads": torch.get_num_threads()}


# ---------------------------------------------------------------- the parent: all configurations
def machine(device: str) -> str:
    text = f"{numerics.cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"
    if device.startswith("cuda"):
        text = f"{torch.cuda.get_device_name(torch.device(device))}; host " + text
    else:
        text += ", no GPU used" if not torch.cuda.is_available() else ", GPU present but --device cpu"
    return text


def run_worker(args, name: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--device", args.device, "--model", args.model,
           "--batches", str(args.batches), "--rounds", str(args.rounds), "--steps", str(args.steps),
           "--batch", str(args.batch), "--threads", str(args.threads), "--clock", args.clock]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"config": name, "skipped": f"took longer than --timeout {args.timeout} s"}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"config": name, "skipped": f"failed here: {last[:160]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--model", default="auto", help="auto = resnet18 on CUDA, small_cnn on CPU; or any registered")
    p.add_argument("--batches", type=int, default=8, help="batches per timed mini-epoch")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (median) after one warm-up round")
    p.add_argument("--steps", type=int, default=10, help="K, the attack steps")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu = the worker's own CPU seconds: steadier on a machine shared with other jobs "
                        "(use with --threads 1)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per configuration")
    p.add_argument("--only", nargs="*", help="run these configurations only (names as printed)")
    p.add_argument("--json", help="also write the machine line and every row to this JSON file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.model == "auto":
        args.model = "resnet18" if args.device.startswith("cuda") else "small_cnn"
    if args.worker:
        print(json.dumps(worker(args)))
        return

    names = [n for n in [*CONFIGS, "naive"] if not args.only or n in args.only]
    print(f"machine: {machine(args.device)}")
    threads = args.threads or torch.get_num_threads()
    print(f"HARL stage (TAET epoch {EPOCHS}), {args.model}, batch {args.batch}, 3x32x32 CIFAR-10-LT IR 10 labels, "
          f"K={args.steps}, {args.device}, {threads} thread(s), {args.clock} clock; median of {args.rounds} rounds "
          f"x {args.batches} batches; one epoch = {sum(CIFAR10_LT_IR10)} images")
    rows = {}
    for name in names:
        rows[name] = r = run_worker(args, name)
        print(f"  ... {name}: " + (r["skipped"] if "skipped" in r else f"done (warm-up {r['warmup_s']:.0f} s)"),
              file=sys.stderr, flush=True)

    mem = "peak MiB" if args.device.startswith("cuda") else "peak RSS+ MiB"
    print(f"\n{'configuration':<17} {'img/s':>7} {'s/epoch':>8} {'ms/step':>8} {'floor ms':>9} {'x floor':>8} "
          f"{'x fp32':>7} {mem:>14}")
    fp32 = rows.get("fp32", {}).get("step_s")
    for name in CONFIGS:
        r = rows.get(name)
        if r is None:
            continue
        if "skipped" in r:
            print(f"{name:<17} not measured: {r['skipped']}")
            continue
        ips = args.batch / r["step_s"]
        print(f"{name:<17} {ips:7.0f} {sum(CIFAR10_LT_IR10) / ips:8.1f} {1e3 * r['step_s']:8.1f} "
              f"{1e3 * r['floor_s']:9.1f} {r['step_s'] / r['floor_s']:8.3f} "
              f"{(fp32 / r['step_s']) if fp32 else float('nan'):7.2f} {r['peak_mib']:14.0f}")
    if args.json:
        record = {"machine": machine(args.device), "model": args.model, "batch": args.batch, "steps": args.steps,
                  "rows": rows}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    n = rows.get("naive")
    if n and "skipped" not in n:
        print(f"\nnaive loop (released-code shape, fp32): {1e3 * n['step_s']:.1f} ms/step = "
              f"{n['step_s'] / n['floor_s']:.2f} x its floor ({1e3 * n['floor_s']:.1f} ms, same process), "
              f"{args.batch / n['step_s']:.0f} img/s; of it, per-image PIL transforms {1e3 * n['transforms_s']:.1f} "
              f"ms/step. taetlib fp32 above: {rows['fp32']['step_s'] / rows['fp32']['floor_s']:.2f} x its floor."
              if fp32 else "")
    elif n:
        print(f"\nnaive loop: not measured: {n['skipped']}")
    if not args.device.startswith("cuda"):
        print("\nNot measured here (no CUDA device on this machine): the issue's figures, ResNet-18 at batch 128 on a "
              "GPU, in all four configurations. What a CPU row cannot show:")
        for name, why in NEEDS_GPU.items():
            print(f"  - {name}: {why}")
        print("  Run on a GPU: python benchmarks/train_throughput.py --device cuda   (ResNet-18 by default there)")


if __name__ == "__main__":
    main()
