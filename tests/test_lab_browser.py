"""JupyterLab in a real browser: the five notebooks, opened in Lab and run with Run > Run All Cells as a
user would (widgets and live figures on, as `interactive=None` picks in Lab), in order on one set of
folders (02's run dir is 03's, 04 evaluates it, 05 plots it), with smoke parameters on synthetic data.

Checked per notebook: every code cell ran, no cell shows a traceback or an error, and the notebook Lab
saved holds no error output. Notebook 03: its live figure gains points while training runs. Notebook 05:
another protocol picked in the dropdown redraws the figures.

Needs Chromium (Debian's /usr/bin/chromium, launched by path: Playwright cannot download browsers here)
and pytest-playwright; skipped, saying so, without either. Screenshots go to pytest's tmp_path (their
folder is printed when a test fails); TAET_LAB_SCREENSHOTS=docs also writes docs/notebooks.md's to docs/.
"""
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nbformat
import psutil
import pytest
from conftest import free_port
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook
from test_notebooks import smoke

PlaywrightTimeout = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").TimeoutError
pytest.importorskip("pytest_playwright", reason="pytest-playwright is not installed")

pytestmark = [pytest.mark.slow,  # pytest-playwright's own base_url fixture, not fixable here:
              pytest.mark.filterwarnings("ignore:Session-scoped fixtures defined as instance methods")]

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking"]
SHOTS_ENV = "TAET_LAB_SCREENSHOTS"  # e.g. docs: where docs/notebooks.md's screenshots are written
RUN_TIMEOUT_MS = 300_000           # one notebook's Run All; a stall fails, not the whole CI budget
# Lab's own settings for this server: every cell in the DOM (no virtual scrolling), no news pop-up
LAB_SETTINGS = {"@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
                "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                    {"fetchNews": "false", "checkForUpdates": False}}


# ------------------------------------------------------------------------------ browser (pytest-playwright)
@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (make setup does it as root)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": FLAGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1280, "height": 900}}


@pytest.fixture(scope="module")
def browser(launch_browser):
    """This module's browser, closed after it (pytest-playwright's lives until the session ends)."""
    b = launch_browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def lab_page(browser, browser_context_args):
    """One page for the five notebooks: Lab's scripts load from the cache after the first."""
    context = browser.new_context(**browser_context_args)
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


# ------------------------------------------------------------------------------ the Lab server
@dataclass
class Lab:
    url: str
    token: str
    root: Path  # Lab's root dir: the parameterised notebooks, data/, run/
    log: Path

    def api(self, method: str, path: str):
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self):
        for k in self.api("GET", "/api/kernels"):
            try:
                self.api("DELETE", f"/api/kernels/{k['id']}")
            except OSError:  # gone meanwhile (404)
                pass


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """`jupyter lab` on a free localhost port with a random token, its own settings and runtime folders;
    shut down (kernels first, then the server, killed if it lingers) however the tests end."""
    home = tmp_path_factory.mktemp("lab")
    for rel, value in LAB_SETTINGS.items():
        (home / "settings" / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / "settings" / rel).write_text(json.dumps(value))
    (home / "root").mkdir()
    (home / "config").mkdir()  # this server's JUPYTER_CONFIG_DIR: no user config; LSP and terminals off
    (home / "config" / "jupyter_server_config.json").write_text(json.dumps({"ServerApp": {"jpserver_extensions": {
        "jupyter_lsp": False, "jupyter_server_terminals": False}}}))
    port, token = free_port(), secrets.token_hex(16)
    lab = Lab(f"http://127.0.0.1:{port}", token, home / "root", home / "server.log")
    env = {**os.environ, "OMP_NUM_THREADS": "1",  # the kernels' tiny models: one thread is fastest
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTER_CONFIG_DIR": str(home / "config")}
    env.pop("TAET_HEADLESS", None)  # Lab's kernels are interactive, as for a user
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={lab.root}",
           f"--LabApp.user_settings_dir={home / 'settings'}", f"--LabApp.workspaces_dir={home / 'workspaces'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    with open(lab.log, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=lab.root)
        try:
            deadline = time.monotonic() + 180
            while True:
                assert proc.poll() is None, f"jupyter lab exited ({proc.returncode}):\n{lab.log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"jupyter lab did not answer:\n{lab.log.read_text()[-3000:]}"
                try:
                    lab.api("GET", "/api/status")
                    break
                except OSError:
                    time.sleep(0.5)
            yield lab
        finally:
            stop(proc, lab)


def stop(proc: subprocess.Popen, lab: Lab) -> None:
    children = []
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
        lab.shut_down_kernels()
    except (OSError, psutil.Error):
        pass
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:  # seen: 10 s after "Shutting down 5 extensions", kernels already gone
        proc.kill()
        proc.wait()
    for c in children:  # kernels run in their own sessions: not in the server's process group
        try:
            c.kill()
        except psutil.NoSuchProcess:
            pass


# ------------------------------------------------------------------------------ driving Lab
@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("lab_screenshots")


@pytest.fixture
def nb_page(lab_page, lab, shots, request):
    """The page; on failure a screenshot of it, its folder printed; the notebook's kernel shut down after."""
    failed_before = request.session.testsfailed
    yield lab_page
    if request.session.testsfailed > failed_before:  # the call's report is counted before teardown runs
        try:
            lab_page.screenshot(path=str(shots / f"FAILED_{request.node.name}.png"))
        except Exception as e:  # noqa: BLE001  (the browser may be what failed)
            shots = f"{shots} (none of the failure: {e})"
        # to the terminal: output captured during teardown is not shown with the failure
        with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
            print(f"\n{request.node.name} failed; Lab screenshots: {shots}; server log: {lab.log}")
    lab.shut_down_kernels()


KERNEL_IDLE = """() => { const t = document.querySelector('.jp-StatusBar-TextItem[title^="Change kernel"]');
                         return t !== null && /\\| Idle/.test(t.textContent) && !/No Kernel/.test(t.textContent); }"""
# Run All has finished: the first code cell has a number (the run began; Lab marks every cell [*] at once),
# no cell is [*] (queued or running), and the kernel is idle. A cell that raised stops the run: the cells
# after it stay [ ], which the checks then report.
RUN_DONE = """() => { const p = Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt'),
                                        e => e.textContent.trim());
                      return p.length > 0 && /^\\[\\d+\\]:$/.test(p[0]) && !p.some(x => x.includes('*'))
                             && (""" + KERNEL_IDLE + """)(); }"""


def write_notebook(lab: Lab, name: str, params: dict) -> Path:
    """The committed notebook with `params` injected as papermill does it, into Lab's root."""
    nb = parameterize_notebook(load_notebook_node(str(NB_DIR / f"{name}.ipynb")), params)
    path = lab.root / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def open_notebook(page, lab: Lab, name: str) -> None:
    page.goto(f"{lab.url}/lab/tree/{name}.ipynb?reset&token={lab.token}")  # reset: no earlier tabs
    page.wait_for_selector(".jp-Notebook .jp-CodeCell .jp-InputPrompt")
    page.wait_for_function(KERNEL_IDLE, timeout=120_000)  # Run All before the kernel is up asks for one
    if page.locator("#jp-left-stack").is_visible():
        page.keyboard.press("Control+b")  # file browser closed: the notebook fills the screenshots


def run_all(page) -> None:
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
    page.wait_for_function(RUN_DONE, timeout=RUN_TIMEOUT_MS, polling=250)


def save(page) -> None:
    page.keyboard.press("Control+s")
    page.wait_for_selector(".lm-TabBar-tab.jp-mod-current:not(.jp-mod-dirty)")


def problems(page, path: Path) -> list[str]:
    """What went wrong in the run shown on `page` and in the notebook Lab saved to `path`."""
    out = []
    prompts = page.eval_on_selector_all(".jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent.trim())")
    out += [f"code cell {i} did not run (prompt {p})" for i, p in enumerate(prompts)
            if not re.fullmatch(r"\[\d+\]:", p)]
    stderr = page.eval_on_selector_all('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]',
                                       "els => els.map(e => e.textContent)")
    out += [f"error shown: {t[-1500:]}" for t in stderr if re.search(r"Traceback|Error", t)]
    saved = nbformat.read(path, as_version=4)
    for i, c in enumerate(c for c in saved.cells if c.cell_type == "code"):
        if c.execution_count is None:
            out.append(f"saved code cell {i} has no execution count")
        out += [f"saved code cell {i}: {o.ename}: {o.evalue}" for o in c.outputs if o.output_type == "error"]
    return out


def run_in_lab(page, lab: Lab, name: str, params: dict, before_run=None) -> None:
    """Open the parameterised notebook, Run All Cells, save it; fail on any cell that did not run or errored."""
    path = write_notebook(lab, name, params)
    open_notebook(page, lab, name)
    if before_run is not None:
        before_run(page)
    run_all(page)
    save(page)
    found = problems(page, path)
    assert not found, f"{name} in Lab:\n" + "\n".join(found)


def screenshot(page, shots: Path, name: str, readme_name: str | None = None) -> None:
    page.screenshot(path=str(shots / f"{name}.png"))
    target = os.environ.get(SHOTS_ENV)
    if target and readme_name:
        folder = Path(target) if Path(target).is_absolute() else ROOT / target
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / readme_name))


def scroll_to(page, marker: str) -> None:
    """The code cell whose source holds `marker` at the top of the notebook view."""
    page.locator(".jp-CodeCell", has=page.locator(".jp-InputArea", has_text=marker)).first.evaluate(
        "c => c.scrollIntoView({block: 'start'})")


# ------------------------------------------------------------------------------ the notebooks, in order
@pytest.fixture(scope="module")
def params(lab):
    """Each notebook's parameters: the papermill tests' smoke settings on one set of folders under Lab's
    root, and `interactive=None`, the notebooks' default (widgets in Lab)."""
    train = {**smoke(lab.root / "data"), "epochs": 4,  # 4 epochs: several live redraws to sample
             "run_dir": str(lab.root / "run"), "interactive": None}
    return {"01_dataset_creation": dict(dataset="synthetic", irs=[10.0, 5.0], n_max=60, test_per_class=20,
                                        data_root=str(lab.root / "data"), out_dir=str(lab.root / "datasets"),
                                        interactive=None),
            "02_stabilization_stage": train,
            "03_harl_stage": train,  # the same settings as 02: stage 2 checks stage 1 ran with them
            "04_evaluation": dict(run_dir=train["run_dir"], attacks=["clean", "pgd20"], per_class=5,
                                  attack_params={"pgd20": {"steps": 3}}, eps_sweep=[], interactive=None),
            "05_per_class_plots": dict(runs=[train["run_dir"]], attack="pgd20", protocol="balanced",
                                       out_dir=str(lab.root / "views"), interactive=None)}


def needs(path: Path, notebook: str) -> None:
    if not path.exists():
        pytest.skip(f"needs {path.name}, which notebook {notebook} writes: it failed or did not run (run the module)")


def test_01_dataset_creation(nb_page, lab, params, shots):
    run_in_lab(nb_page, lab, "01_dataset_creation", params["01_dataset_creation"])
    assert len(list((lab.root / "data" / "splits").glob("synthetic-ir*.json"))) == 2
    assert nb_page.locator(".js-plotly-plot").count() == 2  # counts and samples, drawn by plotly.js
    screenshot(nb_page, shots, "01_dataset_creation")


def test_02_stabilization_stage(nb_page, lab, params, shots):
    run_in_lab(nb_page, lab, "02_stabilization_stage", params["02_stabilization_stage"])
    assert (lab.root / "run" / "stage1" / "last.pt").exists()
    screenshot(nb_page, shots, "02_stabilization_stage")


# Records, at every change of the notebook's DOM, how many epochs each plotly figure in the cell whose
# source holds `marker` shows (its longest trace): a figure redrawn each epoch passes through 1, 2, ...;
# one drawn once shows all its epochs at once (its traces may appear one by one, each full length).
SAMPLER = """(marker) => { window.taetSamples = [];
    const record = () => {
        const cell = Array.from(document.querySelectorAll('.jp-CodeCell'))
                          .find(c => c.querySelector('.jp-InputArea').textContent.includes(marker));
        if (!cell) return;
        const running = cell.querySelector('.jp-InputPrompt').textContent.includes('*');
        const epochs = Array.from(cell.querySelectorAll('.js-plotly-plot'),
                                  g => Math.max(0, ...(g.data || []).map(t => (t.x || []).length || 0)));
        const s = window.taetSamples, last = s[s.length - 1];
        if (!last || JSON.stringify(last.epochs) !== JSON.stringify(epochs)) s.push({running, epochs});
    };
    window.taetObserver = new MutationObserver(record);
    window.taetObserver.observe(document.querySelector('.jp-Notebook'),
                                {childList: true, subtree: true, characterData: true, attributes: true});
}"""


def test_03_harl_stage_live_figure_grows(nb_page, lab, params, shots):
    needs(lab.root / "run" / "stage1" / "last.pt", "02")
    marker = "nb.fit("  # the training cell; its live figures are plotly FigureWidgets redrawn each epoch
    run_in_lab(nb_page, lab, "03_harl_stage", params["03_harl_stage"],
               before_run=lambda page: page.evaluate(SAMPLER, marker))
    samples = nb_page.evaluate("() => { window.taetObserver.disconnect(); return window.taetSamples; }")
    figures = max((len(s["epochs"]) for s in samples), default=0)
    assert figures > 0, f"the training cell drew no figure: {samples}"
    # per figure, the epochs it showed over time (0: being redrawn): growing while training ran means
    # it showed fewer epochs first, which only a redraw before the last epoch can show
    shown = [[s["epochs"][f] for s in samples if len(s["epochs"]) > f and s["epochs"][f] > 0] for f in range(figures)]
    grew = [seq[0] < max(seq) for seq in shown if seq]
    assert any(grew), f"no live figure gained points while training ran (epochs shown per figure: {shown})"
    assert (lab.root / "run" / "model.pt").exists()
    scroll_to(nb_page, marker)
    screenshot(nb_page, shots, "03_harl_stage", "lab_03_harl.png")


def test_04_evaluation(nb_page, lab, params, shots):
    needs(lab.root / "run" / "model.pt", "03")
    run_in_lab(nb_page, lab, "04_evaluation", params["04_evaluation"])
    assert (lab.root / "run" / "eval" / "summary.csv").exists()
    screenshot(nb_page, shots, "04_evaluation")


# The figures under the explorer's dropdowns, as plotly.js holds them (trace types, names and values).
FIGURES = """(marker) => { const cell = Array.from(document.querySelectorAll('.jp-CodeCell'))
                              .find(c => c.querySelector('.jp-InputArea').textContent.includes(marker));
           return JSON.stringify(Array.from(cell.querySelectorAll('.js-plotly-plot'),
               g => (g.data || []).map(t => [t.type, t.name, t.x, t.y, t.z]))); }"""


def test_05_per_class_plots_dropdown_redraws(nb_page, lab, params, shots):
    needs(lab.root / "run" / "eval" / "summary.csv", "04")
    run_in_lab(nb_page, lab, "05_per_class_plots", params["05_per_class_plots"])
    marker = "nb.explorer("
    before = nb_page.evaluate(FIGURES, marker)
    assert before != "[]", "the explorer drew no figures"
    dropdown = nb_page.locator(".widget-dropdown", has=nb_page.locator("label", has_text="protocol")).locator("select")
    assert dropdown.input_value() == "balanced"
    dropdown.select_option("long_tailed")
    redrawn = f"""(before) => {{ const now = ({FIGURES})({json.dumps(marker)});
                                    return now !== before && JSON.parse(now).length === JSON.parse(before).length; }}"""
    try:  # as many figures as before (all redrawn), with other data
        nb_page.wait_for_function(redrawn, arg=before, timeout=60_000)
    except PlaywrightTimeout:
        pytest.fail("picking protocol long_tailed did not redraw the figures within 60 s")
    assert nb_page.evaluate(FIGURES, marker) != before
    scroll_to(nb_page, marker)
    screenshot(nb_page, shots, "05_per_class_plots", "lab_05_plots.png")
