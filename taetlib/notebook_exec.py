"""The notebooks run headless: papermill's parameters for a notebook, the Jupyter kernel it runs in,
and `execute`, which runs one into its executed copy (the run's record)."""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

from .errors import ConfigError
from .figure_show import HEADLESS_ENV
from .method_spec import METHODS
from .paths import PROJECT_ROOT

__all__ = ["KERNEL", "NOTEBOOK_DIR", "PACKAGE_DIR", "PROBE", "QuietShutdownKernelManager", "check_kernel",
           "declared_parameters", "error_text", "execute", "notebook_params"]

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
KERNEL = "python3"  # installed into the venv by `make setup` (ipykernel install --sys-prefix)


class QuietShutdownKernelManager(AsyncKernelManager):
    """The kernel manager of the sweep's notebooks. jupyter_client sends SIGINT to every kernel it shuts
    down, idle or not; a kernel caught inside a message handler then logs "[IPKernelApp] ERROR |
    KeyboardInterrupt caught in kernel." after a notebook that ran well (2 runs in 3 here). A finished
    notebook has nothing to interrupt, so shutdown goes by request alone; SIGTERM and then SIGKILL
    still follow a kernel that does not go."""

    async def _async_interrupt_kernel(self) -> None:
        if not self.shutting_down:
            await super()._async_interrupt_kernel()

    interrupt_kernel = _async_interrupt_kernel


@functools.cache   # a sweep checks its plan against them once per cell
def declared_parameters(notebook: str) -> frozenset[str]:
    import papermill as pm  # heavy optional import, deferred for start-up time
    return frozenset(pm.inspect_notebook(str(NOTEBOOK_DIR / f"{notebook}.ipynb")))


def notebook_params(notebook: str, config: dict, **other) -> dict:
    """Parameters for `notebook`: RunConfig fields it declares go in by name, the others in its
    `extra` dict; `other` (run_dir, attacks, ...) only where the notebook declares them."""
    declared = declared_parameters(notebook)
    config = _declared_method_args(config, declared)
    params = {k: v for k, v in config.items() if k in declared}
    rest = {k: v for k, v in config.items() if k not in declared}
    if "extra" in declared:
        params["extra"] = rest
    elif rest:
        raise ConfigError(f"notebook {notebook} takes no parameters {sorted(rest)} (and has no `extra`).")
    params.update({k: v for k, v in other.items() if k in declared})
    return params


def _declared_method_args(config: dict, declared: frozenset[str]) -> dict:
    """The method's own settings a notebook declares by name (notebook 02's stabilization_epochs: the spec's
    alias) taken out of method_args, so the parameter and method_args never say two things."""
    spec = METHODS.get(str(config.get("method")))
    if spec is None or not config.get("method_args"):
        return config
    args, out = dict(config["method_args"]), dict(config)
    for alias, name in spec.aliases.items():
        if alias in declared and name in args:
            out[alias] = args.pop(name)
    out["method_args"] = args
    return out


def execute(notebook: str, out: Path, params: dict, timeout: float | None = None) -> Path:
    """Runs notebooks/<notebook>.ipynb headless into `out` (kept: the run's inspectable record);
    `timeout`: seconds one cell may take (None: no limit)."""
    import papermill as pm  # heavy optional import, deferred for start-up time
    from traitlets.config import Config  # papermill's own dependency, deferred with it
    os.environ[HEADLESS_ENV] = "1"  # the kernel inherits it: static figures, no widgets
    out.parent.mkdir(parents=True, exist_ok=True)
    # The kernel's sockets are Unix sockets in a private folder, not TCP ports on localhost: nothing to
    # eavesdrop on, and no "running over TCP without encryption" warning from each kernel (Windows: TCP).
    with tempfile.TemporaryDirectory(prefix="taet-") as sockets:   # short: a socket path has ~100 bytes
        ipc = {"transport": "ipc", "ip": os.path.join(sockets, "k")} if os.name == "posix" else {}
        pm.execute_notebook(str(NOTEBOOK_DIR / f"{notebook}.ipynb"), str(out), parameters=params,
                            kernel_name=KERNEL, cwd=str(NOTEBOOK_DIR), progress_bar=False,
                            execution_timeout=timeout, stdout_file=sys.stdout,  # per-epoch lines stay visible
                            kernel_manager_class=QuietShutdownKernelManager, config=Config(KernelManager=ipc))
    return out


PACKAGE_DIR = Path(__file__).resolve().parent   # this checkout's taetlib: the one every kernel must import
PROBE = "import sys; print(sys.prefix, flush=True); import taetlib; print(taetlib.__file__)"


def check_kernel(name: str = KERNEL) -> None:
    """papermill runs the Jupyter kernel `name`: it must be this environment's Python (compared as
    resolved paths, so a venv reached through a symlink passes) and import this checkout's taetlib,
    with the kernel's own environment and working folder (a PYTHONPATH in its spec, another
    editable install would otherwise run another checkout's code under this one's name)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel  # deferred with papermill
    fix = f"{sys.executable} -m ipykernel install --sys-prefix --name {name}"
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        raise ConfigError(f"kernel={name!r}: no such Jupyter kernel. Fix: {fix}") from None
    out = subprocess.run([spec.argv[0], "-c", PROBE], capture_output=True, text=True, timeout=120,
                         cwd=NOTEBOOK_DIR, env={**os.environ, **(spec.env or {})})
    prefix, _, where = out.stdout.strip().partition("\n")
    if not prefix or Path(prefix).resolve() != Path(sys.prefix).resolve():
        raise ConfigError(f"kernel={name!r} runs {spec.argv[0]} (prefix {prefix or '?'}), not this environment "
                          f"({sys.prefix}). Fix: {fix}")
    if out.returncode != 0 or Path(where).resolve().parent != PACKAGE_DIR:
        found = Path(where).resolve().parent if where else (out.stderr.strip().splitlines() or ["?"])[-1]
        raise ConfigError(f"kernel={name!r} imports taetlib from {found}, not this checkout's {PACKAGE_DIR}, so the "
                          f"notebooks would run other code. Fix: remove the PYTHONPATH or other install that puts it "
                          f"first for the kernel (its spec: {spec.resource_dir}), then {fix}")


def error_text(e: BaseException) -> str:
    ename = getattr(e, "ename", None)   # PapermillExecutionError: the notebook's own exception
    if ename is not None:
        return f"{ename}: {getattr(e, 'evalue', '')}"
    return f"{type(e).__name__}: {e}"
