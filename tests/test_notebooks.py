"""The five notebooks, each executed headless by papermill (through sweep.execute, as the sweep runs
them) with smoke parameters on the synthetic dataset; their committed sources: test_notebook_sources.py."""
import asyncio
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest
from conftest import run_notebook

from taetlib import notebook_exec
from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.evaluate import evaluate_run
from taetlib.train import fit


def test_kernel_is_this_environment():
    notebook_exec.check_kernel()  # raises unless kernel 'python3' runs this venv's python


# ------------------------------------------------------------------------------ execution
# Each notebook test starts from folders its own fixtures build with the library (a stage-1 run, a
# trained run, an evaluated run), never from what another notebook test left: one failure stays one.
@pytest.fixture(scope="module", autouse=True)
def headless_kernels():
    """Kernels run headless (and inherit OMP_NUM_THREADS=1 from this process: conftest.one_thread)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TAET_HEADLESS", "1")  # sweep.execute sets it for its kernels; unset again after this module
        yield


def smoke(data_root: Path) -> dict:
    """Seconds-scale training on the synthetic dataset."""
    return dict(dataset="synthetic", n_max=60, test_per_class=20, data_root=str(data_root), epochs=2,
                stabilization_epochs=1, attack_steps=2, eval_every=1, eval_per_class=5, batch_size=64,
                device="cpu", extra={"eval_pgd_steps": 2}, interactive=False)


def execute(name, where: Path, **params):
    """The sweep's papermill call runs the notebook with `params`; the executed copy goes to `where`."""
    return nbformat.read(notebook_exec.execute(name, where / f"{name}.ipynb", params), as_version=4)


def test_kernels_talk_over_unix_sockets_without_the_tcp_warning(tmp_path, monkeypatch, capfd):
    """notebook_exec.execute's kernel listens on ipc sockets: it says so itself, and the stderr it shares with its
    caller (file descriptor 2) holds no "[IPKernelApp] WARNING | Kernel is running over TCP without encryption"."""
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import sys\nfrom ipykernel.kernelapp import IPKernelApp\n"
                                  "print('transport:', IPKernelApp.instance().transport, x)\n"
                                  "print('to stderr', file=sys.stderr)")])
    nb.metadata.kernelspec = {"name": notebook_exec.KERNEL, "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "tiny.ipynb")
    monkeypatch.setattr(notebook_exec, "NOTEBOOK_DIR", tmp_path)
    monkeypatch.setenv("TAET_HEADLESS", "1")  # what execute sets, undone after the test
    capfd.readouterr()
    done = nbformat.read(notebook_exec.execute("tiny", tmp_path / "out" / "tiny.ipynb", {"x": 2}), as_version=4)
    seen = capfd.readouterr()
    assert "Kernel is running over TCP" not in seen.err, seen.err
    assert "transport: ipc 2" in seen.out                       # stdout_file: the kernel's prints still come through
    streams = {o.name: o.text for o in done.cells[-1].outputs}
    assert streams == {"stdout": "transport: ipc 2\n", "stderr": "to stderr\n"}   # and the notebook keeps both


def test_a_finished_notebook_shuts_its_kernel_down_without_an_interrupt(tmp_path, monkeypatch, capfd):
    """jupyter_client interrupts every kernel it shuts down; one caught in a handler printed "[IPKernelApp]
    ERROR | KeyboardInterrupt caught in kernel." after runs that went well. notebook_exec.execute's kernels are
    shut down by request alone (the signal itself counted here), and are gone after it."""
    from jupyter_client.manager import KernelManager
    sent, real = [], KernelManager._async_interrupt_kernel

    async def counted(self):
        sent.append(self.shutting_down)
        await real(self)
    monkeypatch.setattr(KernelManager, "_async_interrupt_kernel", counted)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os\nprint('pid', os.getpid())")])
    nb.metadata.kernelspec = {"name": notebook_exec.KERNEL, "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "tiny.ipynb")
    monkeypatch.setattr(notebook_exec, "NOTEBOOK_DIR", tmp_path)
    monkeypatch.setenv("TAET_HEADLESS", "1")
    for i in range(3):
        capfd.readouterr()
        done = nbformat.read(notebook_exec.execute("tiny", tmp_path / f"out{i}.ipynb", {}), as_version=4)
        err = capfd.readouterr().err
        assert sent == [] and "KeyboardInterrupt" not in err, (sent, err)
        pid = int(done.cells[-1].outputs[0].text.split()[1])
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    # outside a shutdown, interrupts go through (own thread: pytest-playwright may hold this one's event loop)
    with ThreadPoolExecutor(1) as pool:
        refused = pool.submit(asyncio.run, notebook_exec.QuietShutdownKernelManager().interrupt_kernel()).exception()
    assert "No kernel is running" in str(refused) and sent == [False]


def text_of(nb) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


@pytest.fixture
def stage1_run(tmp_path):
    """What notebook 02 leaves for notebook 03, made by fit(): <run>/stage1/ trained with the settings
    notebook 03's own validation cell builds from the smoke parameters."""
    run = tmp_path / "run"
    cfg = run_notebook("03_harl_stage", {**smoke(tmp_path / "data"), "run_dir": str(run)}, until="cfg")["cfg"]
    fit(cfg, load_lt(cfg), run / "stage1", stage="stabilization")
    return run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished PGD-AT run (config.json, history.jsonl, last.pt, model.pt), made by fit()."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = RunConfig(dataset="synthetic", n_max=60, test_per_class=20, data_root=str(tmp / "data"), method="pgd_at",
                    epochs=1, attack_steps=1, batch_size=64, eval_every=0, device="cpu")
    return fit(cfg, load_lt(cfg), tmp / "run").run_dir


@pytest.fixture(scope="module")
def evaluated_run(trained_run, tmp_path_factory):
    """The trained run with its eval/ tables, made by evaluate_run()."""
    run = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(trained_run, run)
    evaluate_run(run, ["clean", "pgd20"], ["balanced", "long_tailed"], per_class=5,
                 attack_params={"pgd20": {"steps": 3}}, eps_sweep=[])
    return run


@pytest.mark.slow
def test_01_dataset_creation(tmp_path):
    nb = execute("01_dataset_creation", tmp_path, dataset="synthetic", irs=[10.0, 5], n_max=60, test_per_class=20,
                 data_root=str(tmp_path / "data"), out_dir=str(tmp_path / "datasets"), interactive=False)
    splits = sorted(p.name for p in (tmp_path / "data" / "splits").glob("*.json"))
    assert splits == ["synthetic-ir10-nmax60-test20-seed0.json", "synthetic-ir5-nmax60-test20-seed0.json"]
    assert (tmp_path / "datasets" / "class_counts.html").exists() and (tmp_path / "datasets" / "samples.html").exists()
    assert "training images" in text_of(nb)


@pytest.mark.slow
def test_02_stabilization_stage(tmp_path):
    run = tmp_path / "run"
    nb = execute("02_stabilization_stage", tmp_path, **smoke(tmp_path / "data"), run_dir=str(run))
    assert (run / "stage1" / "last.pt").exists() and (run / "stage1" / "model.pt").exists()
    records = [json.loads(line) for line in (run / "stage1" / "history.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["stabilization"]
    assert (run / "figures" / "stage1_loss.html").exists()
    assert "[stabilization]" in text_of(nb)


@pytest.mark.slow
def test_03_harl_stage(stage1_run, tmp_path):
    run = stage1_run
    stage1 = (run / "stage1" / "history.jsonl").read_text().splitlines()
    execute("03_harl_stage", tmp_path, **smoke(tmp_path / "data"), run_dir=str(run))
    lines = (run / "history.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    # stage 1 carried over, then `epochs` HARL epochs (budget_rule equal_adversarial: stage 1 is extra)
    assert [r["stage"] for r in records] == ["stabilization", "adversarial", "adversarial"]
    assert lines[:1] == stage1                                                # as stage 1 wrote it
    assert {"loss_bcl", "loss_hdl", "loss_rcel"} <= set(records[-1])
    assert len(records[-1]["class_weight"]) == 10                             # HARL's w_c, recorded
    assert (run / "model.pt").exists() and (run / "figures" / "per_class.html").exists()
    assert (run / "figures" / "class_weight.html").exists()                   # and drawn


@pytest.mark.slow
def test_04_evaluation(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    execute("04_evaluation", tmp_path, run_dir=str(run), attacks=["clean", "pgd20"], per_class=5,
            attack_params={"pgd20": {"steps": 3}}, eps_sweep=[], interactive=False)
    for f in ("per_class.csv", "summary.csv", "flags.csv", "predictions.npz"):
        assert (run / "eval" / f).exists(), f
    summary = pd.read_csv(run / "eval" / "summary.csv")
    assert sorted(zip(summary.attack, summary.protocol)) == [("clean", "balanced"), ("clean", "long_tailed"),
                                                             ("pgd20", "balanced"), ("pgd20", "long_tailed")]
    assert (run / "figures" / "eval_per_class.html").exists()


@pytest.mark.slow
def test_05_per_class_plots(evaluated_run, tmp_path):
    execute("05_per_class_plots", tmp_path, runs=[str(evaluated_run)], attack="pgd20", out_dir=str(tmp_path / "views"),
            interactive=False)
    written = {p.name for p in (tmp_path / "views").rglob("*.html")}
    assert {"tradeoff_balanced_pgd20.html", "methods_per_class_long_tailed_pgd20.html",
            "confusion_balanced_pgd20.html", "eps_curves_long_tailed_pgd20.html"} <= written


@pytest.mark.slow
def test_wrong_parameter_type_names_the_parameter(tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as e:
        execute("02_stabilization_stage", tmp_path / "rejected",
                **{**smoke(tmp_path / "data"), "imbalance_ratio": "ten"}, run_dir=str(tmp_path / "bad"))
    assert e.value.ename == "ConfigError" and "imbalance_ratio='ten'" in e.value.evalue
    assert "expected float" in e.value.evalue
    with pytest.raises(pm.PapermillExecutionError) as e:
        execute("04_evaluation", tmp_path / "rejected", run_dir=str(tmp_path / "bad"), attacks="pgd20")
    assert e.value.ename == "ConfigError" and "attacks='pgd20'" in e.value.evalue
    assert not (tmp_path / "bad").exists()  # rejected before anything was written
