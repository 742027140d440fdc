"""Figures as files: stand-alone HTML that links one shared plotly.min.js, and static images (PNG, SVG,
PDF) through plotly's own `write_image`, so a picture in the README is the figure the report shows."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import plotly.graph_objects as go

__all__ = ["NO_BROWSER", "NO_KALEIDO", "PLOTLYJS", "export_figure", "plotlyjs_src", "save_html", "write_plotlyjs"]

PLOTLYJS = "plotly.min.js"
NO_BROWSER = ("plotly's image export (kaleido) found no Chrome / Chromium to draw {path} with. Install one: "
              "`sudo apt-get install chromium` (Debian / Ubuntu) or `plotly_get_chrome`; or point BROWSER_PATH "
              "at one. kaleido itself comes with `make setup`.")
NO_KALEIDO = "plotly's image export needs kaleido >= 1 to write {path}: run `make setup` (pip install -e .)."


def write_plotlyjs(folder: str | Path) -> Path:
    """plotly.js (4.6 MB) into `folder`, once: HTML figures there and below link to it."""
    target = Path(folder) / PLOTLYJS
    if not target.exists():
        from plotly.offline import get_plotlyjs  # 4.6 MB of JS; deferred until it is written
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(get_plotlyjs())
    return target


def plotlyjs_src(folder: Path, levels: int = 4) -> str:
    """Relative link to the nearest plotly.min.js in `folder` or up to `levels` folders above (a
    sweep keeps one at its root for all its runs); a new copy in `folder` if there is none."""
    for up, d in enumerate([folder, *folder.parents][:levels + 1]):
        if (d / PLOTLYJS).exists():
            return "../" * up + PLOTLYJS
    write_plotlyjs(folder)
    return PLOTLYJS


def save_html(fig: go.Figure, path: str | Path) -> Path:
    """A stand-alone HTML file that works offline, linking a shared plotly.min.js (`plotlyjs_src`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=plotlyjs_src(path.parent), full_html=True)
    return path


# the child process of export_figure: read the figure's JSON, write the image
_EXPORT = ("import sys, plotly.io as pio; pio.read_json(sys.argv[1]).write_image(sys.argv[2], width=int(sys.argv[3]), "
           "height=int(sys.argv[4]), scale=float(sys.argv[5]))")


def export_figure(fig: go.Figure, path: str | Path, *, width: int = 900, height: int | None = None,
                  scale: float = 2, timeout: float = 90, tries: int = 3) -> Path:
    """`fig` as a static image, its format from the suffix (.png, .svg, .pdf, ...), by plotly's
    `write_image` (kaleido drives a headless Chrome / Chromium). kaleido now and then never returns
    (plotly/Kaleido#134, #110; here about one call in five on a loaded machine), so each try runs in a
    child process stopped after `timeout` s. Without a browser or kaleido: a RuntimeError naming the fix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "figure.json"
        spec.write_text(fig.to_json())
        cmd = [sys.executable, "-c", _EXPORT, str(spec), str(path), str(width),
               str(height or fig.layout.height or 500), str(scale)]
        for _ in range(tries):
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:   # the hang: killed; kaleido's browser goes with its pipe
                continue
            if done.returncode == 0:
                return path
            if "Chrome" in done.stderr:   # plotly's message when kaleido finds no browser
                raise RuntimeError(NO_BROWSER.format(path=path))
            if "Kaleido" in done.stderr and "install" in done.stderr:
                raise RuntimeError(NO_KALEIDO.format(path=path))
            raise RuntimeError(f"plotly's write_image failed for {path}:\n{done.stderr[-2000:]}")
    raise TimeoutError(f"plotly's write_image did not finish {path} in {tries} tries of {timeout:g} s (kaleido hangs "
                       "now and then on a loaded machine): run it again.")
