"""taetlib: adversarial training on long-tailed data (TAET, CVPR 2025, and its baselines)."""
__version__ = "0.1.0"
