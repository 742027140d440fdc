"""docs/evaluating-outside-models.md runs as written: its bash blocks through bash, its python blocks
as one script, in a fresh folder (the page writes everything under $PWD); then what it promises is
checked on the files it wrote. ```text blocks are shown, not run (joining a sweep needs a sweep)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "evaluating-outside-models.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```", PAGE.read_text(), re.M | re.S)


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.slow
def test_the_page_runs_as_written(tmp_path):
    python, bash = blocks("python"), blocks("bash")
    assert len(python) >= 4 and len(bash) >= 1
    # the first python block writes the weights the bash block reads; the rest use both
    first = subprocess.run([sys.executable, "-c", python[0]], cwd=tmp_path, env=env(), capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    for block in bash:
        done = subprocess.run(["bash", "-euc", block], cwd=tmp_path, env=env(), capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    rest = subprocess.run([sys.executable, "-c", "\n".join(python[1:])], cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=600)
    assert rest.returncode == 0, rest.stderr[-3000:]

    run = tmp_path / "runs" / "synthetic-ir10" / "my_cnn" / "seed0"
    assert {p.name for p in run.iterdir()} >= {"config.json", "arm.json", "eval"}
    assert json.loads((run / "arm.json").read_text())["label"] == "my_cnn"
    record = json.loads((run / "eval" / "robustbench.json").read_text())
    assert record["n_ex"] == 100 and record["threat_model"] == "Linf" and record["autoattack_acc"] is None
    assert len(record["per_class_robust_recall"]) == 10
    # the CLI and the Python call evaluated the same weights on the same images: the same predictions
    cli = (run / "eval" / "per_class.csv").read_text()
    py = (tmp_path / "runs" / "synthetic-ir10" / "my_cnn_py" / "seed0" / "eval" / "per_class.csv").read_text()
    assert cli == py
    assert (tmp_path / "runs" / "synthetic-ir10" / "mlp" / "seed0" / "eval" / "summary.csv").exists()
    assert list((tmp_path / "data" / "splits").glob("synthetic-ir10-nmax40-test20-seed0.json"))
    assert all(k.startswith("module.") for k in torch.load(tmp_path / "elsewhere.pt", weights_only=True)["state_dict"])
