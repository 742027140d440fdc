"""The notebooks run headless: papermill's parameters for a notebook, the Jupyter kernel it runs in,
and `execute`, which runs one into its executed copy (the run's record)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

from .errors import ConfigError
from .paths import PROJECT_ROOT

__all__ = ["KERNEL", "NOTEBOOK_DIR", "QuietShutdownKernelManager", "check_kernel", "declared_parameters", "error_text",
           "execute", "notebook_params"]

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


def declared_parameters(notebook: str) -> set[str]:
    import papermill as pm  # heavy optional import, deferred for start-up time
    return set(pm.inspect_notebook(str(NOTEBOOK_DIR / f"{notebook}.ipynb")))


def notebook_params(notebook: str, config: dict, **other) -> dict:
    """Parameters for `notebook`: RunConfig fields it declares go in by name, the others in its
    `extra` dict; `other` (run_dir, attacks, ...) only where the notebook declares them."""
    declared = declared_parameters(notebook)
    params = {k: v for k, v in config.items() if k in declared}
    rest = {k: v for k, v in config.items() if k not in declared}
    if "extra" in declared:
        params["extra"] = rest
    elif rest:
        raise ConfigError(f"notebook {notebook} takes no parameters {sorted(rest)} (and has no `extra`).")
    params.update({k: v for k, v in other.items() if k in declared})
    return params


def execute(notebook: str, out: Path, params: dict, timeout: float | None = None) -> Path:
    """Runs notebooks/<notebook>.ipynb headless into `out` (kept: the run's inspectable record);
    `timeout`: seconds one cell may take (None: no limit)."""
    import papermill as pm  # heavy optional import, deferred for start-up time
    from traitlets.config import Config  # papermill's own dependency, deferred with it
    os.environ["TAET_HEADLESS"] = "1"  # the kernel inherits it: static figures, no widgets
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


def check_kernel(name: str = KERNEL) -> None:
    """papermill runs the Jupyter kernel `name`: it must be this environment's Python, or the
    notebooks would import another taetlib (or none)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel  # deferred with papermill
    fix = f"{sys.executable} -m ipykernel install --sys-prefix --name {name}"
    try:
        argv = KernelSpecManager().get_kernel_spec(name).argv
    except NoSuchKernel:
        raise ConfigError(f"kernel={name!r}: no such Jupyter kernel. Fix: {fix}") from None
    out = subprocess.run([argv[0], "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                         timeout=120)
    if out.stdout.strip() != sys.prefix:
        raise ConfigError(f"kernel={name!r} runs {argv[0]} (prefix {out.stdout.strip() or '?'}), not this "
                          f"environment ({sys.prefix}). Fix: {fix}")


def error_text(e: BaseException) -> str:
    ename = getattr(e, "ename", None)   # PapermillExecutionError: the notebook's own exception
    if ename is not None:
        return f"{ename}: {getattr(e, 'evalue', '')}"
    return f"{type(e).__name__}: {e}"
