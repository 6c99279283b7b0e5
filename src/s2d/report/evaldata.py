"""``s2d eval davis --json`` reports for the HTML report: finding and reading them.

An eval report belongs to a run folder when it lies in the folder (``OUTDIR/*.json``) or beside it (a JSON
in the folder's parent whose ``pred_dir`` is the folder), or when it is named with ``--eval``. The JSON
keeps per-sequence means only; J per frame is recomputed from the ground truth and the predicted PNGs the
report names by :func:`s2d.eval.davis.frame_j`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple


from s2d.errors import InputError

__all__ = ["is_davis_report", "find_eval_reports", "load_eval_report"]

_MAX_JSON_BYTES = 50 << 20  # eval reports are small; skip big JSONs (results) without reading them


def is_davis_report(data: Any) -> bool:
    """Whether parsed JSON is an ``s2d eval davis --json`` report."""
    return isinstance(data, Mapping) and {"protocol", "global", "sequences"} <= set(data) \
        and isinstance(data.get("sequences"), list)


def _try_load(path: Path) -> Optional[Dict[str, Any]]:
    try:
        if path.stat().st_size > _MAX_JSON_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if is_davis_report(data) else None


def load_eval_report(path: Path) -> Dict[str, Any]:
    """Read a report named by the user; a one-line :class:`InputError` when it is not one."""
    if not path.is_file():
        raise InputError(path, "no such file (expected the JSON of `s2d eval davis --json`)")
    data = _try_load(path)
    if data is None:
        raise InputError(path, "not an `s2d eval davis --json` report (needs 'protocol', 'global', 'sequences')")
    return data


def _same_dir(a: Any, b: Path) -> bool:
    try:
        return Path(str(a)).resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False


def find_eval_reports(outdir: Path, extra: Sequence[Path] = ()) -> List[Tuple[Path, Dict[str, Any]]]:
    """``(path, report)`` of the eval reports in or beside ``outdir``, then those in ``extra``."""
    found: List[Tuple[Path, Dict[str, Any]]] = []
    for p in sorted(outdir.glob("*.json")):
        data = _try_load(p)
        if data is not None:
            found.append((p, data))
    for p in sorted(outdir.parent.glob("*.json")) if outdir.resolve() != outdir.parent.resolve() else []:
        data = _try_load(p)
        if data is not None and _same_dir(data.get("pred_dir"), outdir):
            found.append((p, data))
    seen = {p.resolve() for p, _ in found}
    for p in extra:
        if p.resolve() not in seen:
            found.append((p, load_eval_report(p)))
            seen.add(p.resolve())
    return found
