"""A run's numeric settings in one place: training precision, memory format, compile, evaluation precision.

RunConfig holds what was asked (precision auto | fp32 | bf16, memory_format auto | contiguous |
channels_last, compile, eval_precision fp32 | bf16); `resolve` turns it into what runs on a device.
`auto` picks bf16 + channels_last where the hardware runs bf16 fast (CPUs with AVX-512 BF16 or AMX,
CUDA GPUs of compute capability 8.0 or more, i.e. bf16 tensor cores) and fp32 + contiguous otherwise:
elsewhere bf16 is emulated and slower than fp32. fit() records the resolution in config.json and the
checkpoint, and a resume that would resolve differently is refused unless resume_other_numerics=True.

bf16 covers the training forward, backward and the training attack (autocast; weights, optimiser
state and BatchNorm statistics stay fp32). Evaluation attacks run in fp32 unless eval_precision=bf16
is named: a bf16 attack is a weaker attack, and evaluate() marks every table it makes under it.
channels_last changes no number, so it applies to evaluation as well.
"""
from __future__ import annotations

import platform
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch

__all__ = ["CPU_BF16_FLAGS", "EVAL_PRECISIONS", "MEMORY_FORMATS", "Numerics", "PRECISIONS", "RESOLVED_KEY", "autocast",
           "bf16_is_fast", "cpu_bf16_flags", "cpu_name", "in_format", "recorded", "resolve"]

PRECISIONS = ("auto", "fp32", "bf16")
MEMORY_FORMATS = ("auto", "contiguous", "channels_last")
EVAL_PRECISIONS = ("fp32", "bf16")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")   # /proc/cpuinfo flags of native bf16 dot products
RESOLVED_KEY = "numerics"   # config.json's and the checkpoint's record of the resolution (not a RunConfig field)


@dataclass(frozen=True)
class Numerics:
    """What a run computes in, resolved for one device."""
    precision: str          # fp32 | bf16: the training forward, backward and attack
    memory_format: str      # contiguous | channels_last: model and inputs, training and evaluation
    compile: bool
    eval_precision: str     # fp32 | bf16: the evaluation attacks
    hardware: str           # what the auto policy read, and its verdict

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    @property
    def channels_last(self) -> bool:
        return self.memory_format == "channels_last"

    def to_dict(self) -> dict:
        return asdict(self)

    def differs_from(self, record: dict) -> dict:
        """What auto resolves (precision, memory format) where it differs from a recorded resolution:
        name -> (recorded, now). compile may differ between a run and its resume, as before."""
        now = self.to_dict()
        return {k: (record.get(k), now[k]) for k in ("precision", "memory_format") if record.get(k) != now[k]}


@lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 flags this CPU reports (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)


def bf16_is_fast(device: torch.device) -> tuple[bool, str]:
    """Whether `device` runs bf16 natively, and a line saying what that rests on."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        fast = major >= 8
        cores = "bf16 tensor cores" if fast else "no bf16 tensor cores"
        return fast, f"{name}, compute capability {major}.{minor}: {cores}"
    if device.type == "cpu":
        flags = cpu_bf16_flags()
        isa = torch.backends.cpu.get_cpu_capability()
        if flags:
            return True, f"CPU with {', '.join(flags)} (torch ISA {isa})"
        return False, f"CPU without AVX-512 BF16 or AMX (torch ISA {isa}): bf16 would be emulated"
    return False, f"{device.type}: no bf16 policy for this device type"


def resolve(cfg, device: torch.device) -> Numerics:
    """cfg's numeric settings on `device`, `auto` decided by bf16_is_fast."""
    fast, hardware = bf16_is_fast(torch.device(device))
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if fast else "fp32")
    memory_format = cfg.memory_format if cfg.memory_format != "auto" else ("channels_last" if fast else "contiguous")
    return Numerics(precision, memory_format, bool(cfg.compile), cfg.eval_precision, hardware)


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on `device` when asked; otherwise nothing (fp32)."""
    return torch.autocast(torch.device(device).type, torch.bfloat16) if bf16 else nullcontext()


def in_format(t, channels_last: bool):
    """A 4-d input tensor or a module in channels_last when asked (other tensors as they are)."""
    if not channels_last:
        return t
    if isinstance(t, torch.nn.Module):
        return t.to(memory_format=torch.channels_last)
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def recorded(ck_cfg: dict, record: dict | None) -> dict:
    """The resolution a checkpoint recorded; one written before it was recorded ran what its flags said."""
    if record:
        return record
    return {"precision": "bf16" if ck_cfg.get("bf16") else "fp32",
            "memory_format": "channels_last" if ck_cfg.get("channels_last") else "contiguous",
            "compile": bool(ck_cfg.get("compile", False))}
