"""Scorers equal to the official evaluation tools.

- :mod:`s2d.eval.ytvis`: YouTube-VIS AP/AR (video mask IoU, COCO protocol), equal to ``ytvoseval.py``.
- :mod:`s2d.eval.davis`: DAVIS J, F and J&F with recall and decay, equal to davis2017-evaluation.

Submodules are imported on demand so ``import s2d.eval`` stays cheap.
"""
