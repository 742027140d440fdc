"""taetlib: adversarial training on long-tailed data (TAET, CVPR 2025, and its baselines).

The modules that fill the registries RunConfig checks names against (augment, dataset, method,
model) are imported here, so those registries are full whichever taetlib module is imported first.
"""
from . import batches, data, methods, models  # noqa: F401  (they fill errors.REGISTRIES)

__version__ = "0.1.0"   # the one version string: pyproject.toml reads it
__all__ = ["__version__"]
