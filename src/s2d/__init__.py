"""s2d — unsupervised video instance segmentation (Sparse-To-Dense Keymask Distillation).

The package is layered by concept (see SPEC §3): ``s2d.io`` reads frames and reads/writes result
formats, ``s2d.types`` holds the one canonical result type, ``s2d.eval`` scores results exactly
like the official YouTube-VIS and DAVIS tools. Importing ``s2d`` has no side effects.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
