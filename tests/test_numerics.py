"""Numeric settings: the auto policy by hardware, their record in config.json, resume refusing another
resolution, bf16 training staying close to fp32 training, and evaluation attacks in fp32."""
import json

import pytest
import torch

from taetlib import numerics
from taetlib.checkpoints import CheckpointError, load_checkpoint, load_model
from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.errors import ConfigError
from taetlib.evaluate import evaluate, evaluate_run
from taetlib.methods import model_head
from taetlib.models import create_model
from taetlib.train import fit


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def tiny(root, **kw):
    """~160 synthetic images, 3 batches of 64, 2 attack steps: an epoch in seconds."""
    base = dict(dataset="synthetic", data_root=str(root), imbalance_ratio=10.0, n_max=40, method="pgd_at",
                epochs=1, stabilization_epochs=0, attack_steps=2, batch_size=64, lr=0.05, eval_every=0,
                device="cpu", budget_rule="released")
    return RunConfig(**{**base, **kw})


@pytest.fixture
def native_bf16_cpu(monkeypatch):
    monkeypatch.setattr(numerics, "cpu_bf16_flags", lambda: ("avx512_bf16",))


@pytest.fixture
def emulated_bf16_cpu(monkeypatch):
    monkeypatch.setattr(numerics, "cpu_bf16_flags", lambda: ())


def test_auto_picks_bf16_and_channels_last_only_on_native_bf16(native_bf16_cpu):
    cpu = torch.device("cpu")
    fast = numerics.resolve(RunConfig(device="cpu", precision="auto", memory_format="auto"), cpu)
    assert (fast.precision, fast.memory_format, fast.eval_precision) == ("bf16", "channels_last", "fp32")
    assert "avx512_bf16" in fast.hardware
    asked = numerics.resolve(RunConfig(device="cpu", precision="fp32", memory_format="contiguous"), cpu)
    assert (asked.precision, asked.memory_format) == ("fp32", "contiguous")   # what is named is kept


def test_auto_picks_fp32_without_native_bf16(emulated_bf16_cpu):
    num = numerics.resolve(RunConfig(device="cpu", precision="auto", memory_format="auto"), torch.device("cpu"))
    assert (num.precision, num.memory_format) == ("fp32", "contiguous")
    assert "emulated" in num.hardware
    forced = numerics.resolve(RunConfig(device="cpu", precision="bf16"), torch.device("cpu"))
    assert forced.bf16   # bf16 can still be asked for by name


def test_cpu_flags_are_read_from_cpuinfo():
    flags = open("/proc/cpuinfo").read().split()
    assert set(numerics.cpu_bf16_flags()) == {f for f in numerics.CPU_BF16_FLAGS if f in flags}


@pytest.mark.parametrize("field, value", [("precision", "fp16"), ("memory_format", "nhwc"), ("eval_precision", "auto")])
def test_bad_numerics_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"{field}.*{value}"):
        RunConfig(**{field: value})


def test_configs_written_before_precision_read_as_what_they_ran():
    old = RunConfig().to_dict()
    for k in ("precision", "memory_format", "eval_precision", "resume_other_numerics"):
        old.pop(k)
    assert RunConfig.from_dict({**old, "bf16": False, "channels_last": False}).precision == "fp32"
    cfg = RunConfig.from_dict({**old, "bf16": True, "channels_last": True})
    assert (cfg.precision, cfg.memory_format) == ("bf16", "channels_last")


@pytest.mark.slow
def test_config_json_records_the_resolution_and_resume_refuses_another(root, tmp_path, native_bf16_cpu):
    cfg = tiny(root, epochs=1, stabilization_epochs=0, method="pgd_at", robustlt=False, precision="auto",
               memory_format="auto")
    data = load_lt(cfg)
    fit(cfg, data, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["numerics"]["precision"] == "bf16" and saved["numerics"]["memory_format"] == "channels_last"
    assert RunConfig.load(tmp_path / "config.json") == cfg   # the record is not a setting
    assert load_checkpoint(tmp_path / "last.pt")["numerics"]["precision"] == "bf16"
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}

    # the same settings on a machine where auto resolves to fp32: refused, nothing written
    numerics_now = numerics.cpu_bf16_flags
    try:
        numerics.cpu_bf16_flags = lambda: ()
        with pytest.raises(CheckpointError, match="other numerics.*precision.*'bf16', 'fp32'.*resume_other_numerics"):
            fit(cfg, data, tmp_path)
        assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
        fit(cfg.replace(precision="bf16", memory_format="channels_last"), data, tmp_path)   # named: the same
        fit(cfg.replace(resume_other_numerics=True), data, tmp_path)                        # told: accepted
    finally:
        numerics.cpu_bf16_flags = numerics_now


@pytest.mark.slow
def test_bf16_training_stays_close_to_fp32(root, tmp_path):
    """2 epochs on tiny data, the same seed and batches: bf16 + channels_last against fp32.

    Tolerance: bf16 keeps 8 significant bits (unit roundoff 2^-8 = 0.4 %) in the forward, backward and
    attack, while weights, optimiser and BatchNorm statistics stay fp32. Over a dozen SGD steps the
    rounding moves the weights by a few per cent of their change from the start, and the mean training
    loss by well under 5 %. A second fp32 seed is the scale of a real difference: the bf16 run must lie
    within a fifth of that distance of the fp32 run. Broken autocast (e.g. bf16 weights, a lost gradient)
    or a changed trajectory would break either bound."""
    base = dict(epochs=2, stabilization_epochs=0, method="pgd_at", robustlt=False, memory_format="contiguous")
    cfg = tiny(root, precision="fp32", **base)
    data = load_lt(cfg)
    runs = {name: fit(c, data, tmp_path / name) for name, c in {
        "fp32": cfg, "bf16": cfg.replace(precision="bf16", memory_format="channels_last"),
        "fp32_seed1": cfg.replace(seed=1)}.items()}
    torch.manual_seed(cfg.seed)   # fit()'s initial weights
    start = create_model(cfg.model, 10, 1, data.spec.mean, data.spec.std, head=model_head(cfg)).state_dict()

    def flat(r):
        sd = r.model.state_dict()
        return torch.cat([sd[k].float().flatten() for k in sd if sd[k].is_floating_point()])

    w = {k: flat(r) for k, r in runs.items()}
    w0 = torch.cat([v.float().flatten() for v in start.values() if v.is_floating_point()])
    moved = (w["fp32"] - w0).norm()
    assert moved > 0
    assert (w["bf16"] - w["fp32"]).norm() < 0.2 * (w["fp32_seed1"] - w["fp32"]).norm()
    assert (w["bf16"] - w["fp32"]).norm() < 0.1 * moved
    for a, b in zip(runs["bf16"].history, runs["fp32"].history):
        assert abs(a["loss"] - b["loss"]) < 0.05 * b["loss"]
    assert all(p.dtype == torch.float32 for p in runs["bf16"].model.parameters())   # weights stay fp32


@pytest.mark.slow
def test_evaluation_attacks_run_in_fp32_after_bf16_training(root, tmp_path):
    """A run trained in bf16 is attacked in fp32 (no autocast, fp32 logits); bf16 evaluation only when
    named, and then every table says so."""
    cfg = tiny(root, epochs=1, stabilization_epochs=0, method="pgd_at", robustlt=False, precision="bf16",
               memory_format="channels_last", test_per_class=6)
    data = load_lt(cfg)
    fit(cfg, data, tmp_path)
    seen = []
    model = load_model(tmp_path)
    model.register_forward_hook(lambda m, i, out: seen.append((torch.is_autocast_enabled("cpu"), out.dtype)))
    result = evaluate(model, data, ["pgd20"], per_class=3)
    assert seen and set(seen) == {(False, torch.float32)}
    assert result.config["dtype"] == "float32" and "eval_precision" not in result.summary
    assert evaluate_run(tmp_path, ["pgd20"], ["balanced"], per_class=3).config["dtype"] == "float32"

    seen.clear()
    marked = evaluate(model, data, ["pgd20"], per_class=3, precision="bf16")
    assert (True, torch.bfloat16) in set(seen)
    for t in (marked.summary, marked.table, marked.curves):
        assert set(t["eval_precision"]) == {"bf16"}
