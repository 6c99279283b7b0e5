"""FiftyOne export: the box/mask geometry (always), FiftyOne's own Detection round trip (where fiftyone is
installed), and the one-line error where it is not.

FiftyOne is not in the dev extra: it installs opencv-python-headless, whose cv2 shadows the contrib build s2d
needs. Its database round trip (``write_fiftyone`` then ``read_fiftyone``) needs a MongoDB server, which
fiftyone-db downloads at install time; where that works, the last test runs it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import List, Optional

import numpy as np
import pytest

from s2d.cli import main
from s2d.io.formats import write_ytvis_results
from s2d.io.formats.fiftyone import box_crop_to_mask, mask_to_box_crop
from s2d.types import Track, VideoSegmentation

HAS_FIFTYONE = importlib.util.find_spec("fiftyone") is not None


def _video(T: int = 4, h: int = 10, w: int = 14) -> VideoSegmentation:
    a: List[Optional[np.ndarray]] = []
    b: List[Optional[np.ndarray]] = []
    for t in range(T):
        m = np.zeros((h, w), bool)
        m[1:4, t:t + 5] = True
        m[2, t + 2] = False  # a hole
        a.append(m)
        n = np.zeros((h, w), bool)
        n[5:9, 9:13] = True
        b.append(n if t % 2 else None)
    return VideoSegmentation(h, w, T, [Track(2, a, 0.8), Track(9, b, 0.6)], name="clip")  # type: ignore[arg-type]


@pytest.mark.parametrize("shape, box", [((10, 14), (slice(1, 4), slice(0, 5))), ((7, 3), (slice(0, 7), slice(2, 3))),
                                        ((480, 854), (slice(100, 333), slice(17, 851)))])
def test_box_and_crop_give_back_the_exact_mask(shape, box) -> None:
    mask = np.zeros(shape, bool)
    mask[box] = True
    mask[box[0].start, box[1].start] = False  # not a plain rectangle
    mask[box[0].stop - 1, box[1].stop - 1] = True
    rel, crop = mask_to_box_crop(mask)
    assert all(0 <= v <= 1 for v in rel)
    assert (box_crop_to_mask(rel, crop, shape) == mask).all()


def test_empty_mask_has_no_box_and_a_coarse_crop_is_resized() -> None:
    assert mask_to_box_crop(np.zeros((4, 4), bool)) is None
    full = box_crop_to_mask([0.25, 0.5, 0.5, 0.5], np.ones((1, 1), bool), (4, 4))
    assert full.sum() == 4 and full[2:, 1:3].all()


@pytest.mark.skipif(HAS_FIFTYONE, reason="fiftyone is installed here")
def test_without_fiftyone_the_export_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    write_ytvis_results(tmp_path / "r.json", [_video()])
    (tmp_path / "clip.mp4").write_bytes(b"")  # never read: the missing package is said first
    rc = main(["export", str(tmp_path / "r.json"), "--to", "fiftyone", "--video", str(tmp_path / "clip.mp4"),
               "-o", "clip"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and err == ["s2d: error: FiftyOne export needs the fiftyone package: pip install 's2d[fiftyone]'"]


@pytest.mark.skipif(not HAS_FIFTYONE, reason="fiftyone is not installed (pip install 's2d[fiftyone]')")
def test_fiftyone_needs_a_video(tmp_path: Path, capsys) -> None:
    write_ytvis_results(tmp_path / "r.json", [_video()])
    assert main(["export", str(tmp_path / "r.json"), "--to", "fiftyone", "-o", "clip"]) == 2
    assert "--to fiftyone needs --video" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_FIFTYONE, reason="fiftyone is not installed (pip install 's2d[fiftyone]')")
def test_detections_round_trip_through_fiftyones_own_serialisation() -> None:
    """Each frame's fo.Detection list, stored and loaded as FiftyOne stores labels, gives the same masks."""
    import fiftyone as fo

    from s2d.io.formats.fiftyone import detections_to_frame, frame_detections

    video = _video()
    frames, cats = [], {"object": 1}
    for number, dets in frame_detections(video):
        assert all(isinstance(d.index, int) and d.mask.dtype == bool for d in dets)
        stored = [fo.Detection.from_dict(json.loads(json.dumps(d.to_dict(extended=True)))) for d in dets]
        frames.append(detections_to_frame(number - 1, stored, video.size, cats))
    back = VideoSegmentation.from_frames(frames, video.height, video.width, num_frames=video.num_frames)
    assert back.ids == video.ids
    for ta, tb in zip(back.tracks, video.tracks):
        for t in range(video.num_frames):
            ma, mb = ta.mask(t), tb.mask(t)
            assert (ma is None) == (mb is None) and (ma is None or (ma == mb).all())
    assert [t.score for t in back.tracks] == pytest.approx([0.8, 0.6])


def _database_works() -> bool:
    if not HAS_FIFTYONE:
        return False
    try:
        import fiftyone as fo

        fo.list_datasets()
    except Exception:  # no MongoDB: fiftyone-db could not download it, and no database_uri is set
        return False
    return True


@pytest.mark.skipif(not _database_works(), reason="FiftyOne's database (MongoDB) does not start here")
def test_dataset_round_trip_through_fiftyone(tmp_path: Path) -> None:  # pragma: no cover - needs MongoDB
    from helpers import make_frames, make_video

    from s2d.io.formats.fiftyone import read_fiftyone, write_fiftyone

    video = _video()
    src = make_video(tmp_path / "clip.mp4", make_frames(video.num_frames, video.height, video.width), fps=10)
    dataset = write_fiftyone("s2d-test-round-trip", [(video, src)], persistent=False)
    try:
        (back,) = read_fiftyone(dataset)
        assert back.ids == video.ids and back.num_frames == video.num_frames
        for ta, tb in zip(back.tracks, video.tracks):
            for t in range(video.num_frames):
                ma, mb = ta.mask(t), tb.mask(t)
                assert (ma is None) == (mb is None) and (ma is None or (ma == mb).all())
    finally:
        dataset.delete()
