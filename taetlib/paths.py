"""Where relative paths are taken from: the project root, so notebooks run from notebooks/ find data/."""
from __future__ import annotations

from pathlib import Path

__all__ = ["PROJECT_ROOT", "resolve", "within"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def resolve(path: str | Path) -> Path:
    """Relative paths are taken from the project root, so notebooks run from notebooks/ find data/."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else PROJECT_ROOT / p


def within(path: str | Path, root: str | Path) -> str:
    """`path` named from `root` (fashion_mnist-ir10/taet/seed0) where it lies inside it, else as given: a run
    folder's name that holds on any machine and under a study's published record/."""
    p, r = resolve(path), resolve(root)
    return p.relative_to(r).as_posix() if p.is_relative_to(r) else str(path)
