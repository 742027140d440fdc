"""Where relative paths are taken from: the project root, so notebooks run from notebooks/ find data/."""
from __future__ import annotations

from pathlib import Path

__all__ = ["PROJECT_ROOT", "resolve"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def resolve(path: str | Path) -> Path:
    """Relative paths are taken from the project root, so notebooks run from notebooks/ find data/."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else PROJECT_ROOT / p
