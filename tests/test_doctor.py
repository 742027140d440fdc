"""`python -m taetlib doctor` on this machine's CPU: the small version of the GPU check runs end to end
and its JSON record holds every part (throughput per configuration, every method, every attack)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from taetlib import numerics
from taetlib.attack_suite import ATTACKS
from taetlib.config import RunConfig
from taetlib.doctor import CPU_CONFIGS
from taetlib.errors import REGISTRIES

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_doctor_on_cpu_writes_one_record_with_every_part(tmp_path):
    out = tmp_path / "doctor.json"
    run = subprocess.run([sys.executable, "-m", "taetlib", "doctor", "--device", "cpu", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rec = json.loads(out.read_text())
    assert rec["device"] == "cpu" and rec["versions"]["torch"] == torch.__version__
    auto = RunConfig(device="cpu", precision="auto")
    assert rec["numerics_auto"] == numerics.resolve(auto, torch.device("cpu")).to_dict()
    assert rec["cuda_tests"]["status"].startswith("not run")   # said, not skipped silently

    rows = {r["config"]: r for r in rec["throughput"]["rows"]}
    assert set(rows) == set(CPU_CONFIGS)
    for r in rows.values():
        assert r["img_s"] > 0 and r["x_floor"] > 0 and r["ms_step"] > 0

    methods = {r["method"]: r for r in rec["methods"]}
    assert set(methods) == set(REGISTRIES["method"]) | {"taet+robustlt"}
    assert all(r["status"] == "ok" for r in methods.values()), methods

    ev = rec["evaluation"]
    assert ev["dtype"] == "float32" and set(ev["attacks"]) == set(ATTACKS)
    assert all(0 <= a["accuracy"] <= 1 for a in ev["attacks"].values())
    assert ev["attacks"]["pgd100"]["accuracy"] <= ev["attacks"]["clean"]["accuracy"]   # a real attack
    assert "doctor: cpu" in run.stdout and "every method" in run.stdout
