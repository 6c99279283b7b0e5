"""Result formats in and out: YouTube-VIS JSON, DAVIS indexed PNGs, MOTS txt, CVAT XML (and FiftyOne).

One module per format, each with a reader and a writer around the canonical
:class:`s2d.types.VideoSegmentation` / :class:`s2d.types.FrameResult`:

* :mod:`~s2d.io.formats.ytvis` — results lists and dataset (GT) dicts with COCO RLE masks;
* :mod:`~s2d.io.formats.davis` — one palette PNG per frame (streaming :class:`DavisWriter`);
* :mod:`~s2d.io.formats.mots` — one txt line per object per frame (streaming :class:`MotsWriter`);
* :mod:`~s2d.io.formats.cvat` — CVAT for video 1.1 XML, for correcting labels in CVAT (streaming :class:`CvatWriter`);
* :mod:`~s2d.io.formats.fiftyone` — FiftyOne video datasets (optional extra; not imported here).

Every writer is atomic (temp file + rename, :mod:`s2d.io.atomic`); every reader turns bad input
into a one-line :class:`s2d.errors.InputError` naming the file. Overlay videos live in
:mod:`s2d.io.overlay`. Importing this package only imports numpy, Pillow and pycocotools.
"""

from s2d.io.formats.cvat import CvatWriter, read_cvat, write_cvat
from s2d.io.formats.davis import DavisWriter, davis_palette, read_davis, write_davis
from s2d.io.formats.mots import MotsWriter, read_mots, write_mots
from s2d.io.formats.ytvis import (
    YtvisResultsWriter,
    from_ytvis,
    read_ytvis,
    to_ytvis_dataset,
    to_ytvis_results,
    write_ytvis_dataset,
    write_ytvis_results,
)

__all__ = [
    "read_ytvis",
    "write_ytvis_results",
    "write_ytvis_dataset",
    "YtvisResultsWriter",
    "from_ytvis",
    "to_ytvis_results",
    "to_ytvis_dataset",
    "read_davis",
    "write_davis",
    "DavisWriter",
    "davis_palette",
    "read_mots",
    "write_mots",
    "MotsWriter",
    "read_cvat",
    "write_cvat",
    "CvatWriter",
]
