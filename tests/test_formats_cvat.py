"""CVAT for video 1.1 XML: the mask RLE on tiny arrays, the published structure, and round trips.

The structure checked is the one of CVAT's "XML annotation format" page (version 1.1, interpolation mode)
and CVAT's own writer (``dump_as_cvat_interpolation``): ``<annotations><version>1.1</version><meta><task>``
with ``size``, ``mode``, ``labels`` and ``original_size``, then ``<track id label source>`` elements holding
``<mask frame keyframe outside occluded rle left top width height z_order>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import List, Optional

import numpy as np
import pytest

from s2d.cli import main
from s2d.errors import InputError, ValidationError
from s2d.io.formats import read_ytvis, write_ytvis_results
from s2d.io.formats.cvat import CvatWriter, cvat_rle_to_mask, mask_to_cvat_rle, read_cvat, write_cvat
from s2d.types import Track, VideoSegmentation

MASK_ATTRS = {"frame", "keyframe", "outside", "occluded", "rle", "left", "top", "width", "height", "z_order"}


def _m(rows: List[str]) -> np.ndarray:
    return np.array([[c == "#" for c in r] for r in rows], dtype=bool)


# ----------------------------------------------------------------------------- RLE on tiny arrays
RLE_CASES = [
    # (frame rows, counts, left, top, width, height)
    (["....", ".#..", "...."], [0, 1], 1, 1, 1, 1),
    (["##", "##"], [0, 4], 0, 0, 2, 2),
    (["....", ".##.", ".#..", "...."], [0, 3, 1], 1, 1, 2, 2),
    (["#..#", "....", "#..#"], [0, 1, 2, 1, 4, 1, 2, 1], 0, 0, 4, 3),  # two corners apart: one box, holes
    ([".#.", "###", ".#."], [1, 1, 1, 3, 1, 1, 1], 0, 0, 3, 3),  # starts with background
    (["......", "..###.", "..#.#.", "..###."], [0, 4, 1, 4], 2, 1, 3, 3),
]


@pytest.mark.parametrize("rows, counts, left, top, width, height", RLE_CASES)
def test_rle_encodes_the_box_row_by_row_background_first(rows, counts, left, top, width, height) -> None:
    mask = _m(rows)
    assert mask_to_cvat_rle(mask) == (counts, left, top, width, height)
    assert (cvat_rle_to_mask(counts, left, top, width, height, mask.shape) == mask).all()


def test_empty_mask_has_no_rle() -> None:
    assert mask_to_cvat_rle(np.zeros((3, 4), bool)) is None


def test_the_example_of_cvats_format_page_decodes_to_its_box() -> None:
    """The `<mask … rle="3, 5, 7, …" left="707" top="888" width="13" height="15">` of the documentation."""
    text = "3, 5, 7, 7, 5, 9, 3, 11, 2, 11, 2, 12, 1, 12, 1, 26, 1, 12, 1, 12, 2, 11, 3, 9, 5, 7, 7, 5, 3"
    counts = [int(c) for c in text.split(",")]
    assert sum(counts) == 13 * 15
    mask = cvat_rle_to_mask(counts, 707, 888, 13, 15, (1200, 1600))
    ys, xs = np.nonzero(mask)
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (707, 888, 719, 902)  # fills its box edge to edge
    assert mask_to_cvat_rle(mask) == (counts, 707, 888, 13, 15)


@pytest.mark.parametrize("counts, box, match", [
    ([0, 5], (0, 0, 2, 2), "more than the box"),
    ([1], (3, 0, 2, 2), "not inside"),
    ([-1, 2], (0, 0, 2, 2), "negative"),
])
def test_bad_rle_is_an_error(counts, box, match) -> None:
    with pytest.raises(ValidationError, match=match):
        cvat_rle_to_mask(counts, *box, (4, 4))


# ----------------------------------------------------------------------------- files
def _video(T: int = 5, h: int = 12, w: int = 16) -> VideoSegmentation:
    """Object 3 moves right and leaves after frame 2; object 7 enters on frame 1 and has a hole."""
    a: List[Optional[np.ndarray]] = []
    b: List[Optional[np.ndarray]] = []
    for t in range(T):
        m = np.zeros((h, w), bool)
        m[1:5, t:t + 4] = True
        a.append(m if t <= 2 else None)
        n = np.zeros((h, w), bool)
        n[6:11, 8:14] = True
        n[8, 10] = False
        b.append(n if t >= 1 else None)
    return VideoSegmentation(h, w, T, [Track(3, a, 0.9), Track(7, b, 0.55)], name="clip")  # type: ignore[arg-type]


def _same_masks(a: VideoSegmentation, b: VideoSegmentation) -> bool:
    if (a.size, a.num_frames, a.ids) != (b.size, b.num_frames, b.ids):
        return False
    for ta, tb in zip(a.tracks, b.tracks):
        for t in range(a.num_frames):
            ma, mb = ta.mask(t), tb.mask(t)
            if (ma is None) != (mb is None) or (ma is not None and not (ma == mb).all()):
                return False
    return True


@pytest.mark.parametrize("layout", ["shapes", "tracks"])
def test_file_has_the_published_structure(tmp_path: Path, layout: str) -> None:
    path = write_cvat(tmp_path / "clip.xml", _video(), layout=layout)
    root = ET.parse(path).getroot()
    assert root.tag == "annotations" and root[0].tag == "version" and root[0].text == "1.1"
    task = root.find("meta/task")
    assert task is not None
    assert task.findtext("size") == "5" and task.findtext("mode") == "interpolation"
    assert task.findtext("original_size/width") == "16" and task.findtext("original_size/height") == "12"
    assert [lab.findtext("name") for lab in task.iterfind("labels/label")] == ["object"]
    attrs = {a.findtext("name") for a in task.iterfind("labels/label/attributes/attribute")}
    assert attrs == {"track_id", "score"}
    tracks = root.findall("track")
    assert tracks and all(set(tr.attrib) == {"id", "label", "source"} and tr.get("label") == "object" for tr in tracks)
    assert [tr.get("id") for tr in tracks] == [str(i) for i in range(len(tracks))]
    for mask in root.iter("mask"):
        assert set(mask.attrib) == MASK_ATTRS
        assert mask.get("outside") in ("0", "1") and mask.get("keyframe") == "1"
        counts = [int(c) for c in mask.get("rle", "").split(",")]
        assert sum(counts) <= int(mask.get("width", 0)) * int(mask.get("height", 0))
        assert {a.get("name") for a in mask.iterfind("attribute")} == {"track_id", "score"}


def test_shapes_layout_is_one_track_per_object_and_frame(tmp_path: Path) -> None:
    """What CVAT imports: each mask its own track, keyframe then an outside copy on the next frame."""
    root = ET.parse(write_cvat(tmp_path / "c.xml", _video())).getroot()
    tracks = root.findall("track")
    assert len(tracks) == 3 + 4  # object 3 on frames 0-2, object 7 on 1-4
    for tr in tracks:
        masks = tr.findall("mask")
        frame = int(masks[0].get("frame", -1))
        assert masks[0].get("outside") == "0"
        if frame < 4:
            assert len(masks) == 2 and masks[1].get("outside") == "1" and masks[1].get("frame") == str(frame + 1)
        else:
            assert len(masks) == 1  # no frame after the last one


def test_tracks_layout_is_one_track_per_object(tmp_path: Path) -> None:
    root = ET.parse(write_cvat(tmp_path / "c.xml", _video(), layout="tracks")).getroot()
    tracks = root.findall("track")
    assert len(tracks) == 2
    frames = [(m.get("frame"), m.get("outside")) for m in tracks[0].findall("mask")]
    assert frames == [("0", "0"), ("1", "0"), ("2", "0"), ("3", "1")]  # object 3 leaves after frame 2
    # z_order: the higher score is drawn on top
    assert tracks[0].find("mask").get("z_order") == "1" and tracks[1].find("mask").get("z_order") == "0"


@pytest.mark.parametrize("layout", ["shapes", "tracks"])
def test_round_trip_gives_identical_masks_ids_and_scores(tmp_path: Path, layout: str) -> None:
    video = _video()
    back = read_cvat(write_cvat(tmp_path / "c.xml", video, layout=layout))
    assert _same_masks(video, back)
    assert [t.score for t in back.tracks] == pytest.approx([0.9, 0.55])
    assert back.name == "clip"


def test_streaming_writer_equals_write_cvat(tmp_path: Path) -> None:
    video = _video()
    with CvatWriter(tmp_path / "s.xml", video.height, video.width, name="clip") as w:
        for fr in video.iter_frames():
            w.write(fr)
    assert _same_masks(video, read_cvat(tmp_path / "s.xml"))
    # an exception inside the block leaves nothing behind
    with pytest.raises(RuntimeError), CvatWriter(tmp_path / "x.xml", 12, 16) as w:
        raise RuntimeError
    assert not (tmp_path / "x.xml").exists() and not list(tmp_path.glob(".*"))


def _xml(tracks: str, *, size: int = 3, extra_meta: str = "") -> str:
    return (f'<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version><meta><task><size>{size}</size>'
            f"<mode>interpolation</mode><labels><label><name>object</name></label><label><name>car</name></label>"
            f"</labels><original_size><width>8</width><height>6</height></original_size>{extra_meta}</task></meta>"
            f"{tracks}</annotations>")


def test_reads_polygons_tracks_without_ids_and_merges_pieces(tmp_path: Path) -> None:
    """A file edited in CVAT: a polygon track (no track_id), and object 5 drawn in two pieces on frame 0."""
    p = tmp_path / "edited.xml"
    p.write_text(_xml(
        '<track id="0" label="car"><polygon frame="1" outside="0" occluded="0" keyframe="1" '
        'points="1.0,1.0;5.0,1.0;5.0,4.0;1.0,4.0" z_order="0"/></track>'
        '<track id="1" label="object"><mask frame="0" outside="0" occluded="0" keyframe="1" rle="0, 2" left="0" '
        'top="0" width="2" height="1" z_order="0"><attribute name="track_id">5</attribute></mask></track>'
        '<track id="2" label="object"><mask frame="0" outside="0" occluded="0" keyframe="1" rle="0, 1" left="6" '
        'top="5" width="1" height="1" z_order="0"><attribute name="track_id">5</attribute></mask>'
        '<mask frame="1" outside="1" occluded="0" keyframe="1" rle="0, 1" left="6" top="5" width="1" height="1" '
        'z_order="0"><attribute name="track_id">5</attribute></mask></track>'))
    v = read_cvat(p)
    assert (v.height, v.width, v.num_frames) == (6, 8, 3) and v.ids == [1, 5]
    car, five = v.tracks
    assert car.category_id == 2 and car.present_frames() == [1] and car.score == 1.0
    assert car.area(1) > 0
    assert five.present_frames() == [0]
    assert five.area(0) == 3 and five.mask(0)[0, :2].all() and five.mask(0)[5, 6]


@pytest.mark.parametrize("body, match", [
    ("<annotations>", "malformed XML"),
    ("<root/>", "expected <annotations>"),
    ("<annotations><version>1.1</version></annotations>", "no <meta>"),
    (_xml('<track id="0" label="object"><box frame="0" xtl="1" ytl="1" xbr="2" ybr="2" outside="0" '
          'occluded="0" keyframe="1"/></track>'), "<box> shapes are not masks"),
    (_xml('<track id="0" label="object"><mask frame="0" outside="0" rle="0, 4" left="6" top="0" width="4" '
          'height="1"/></track>'), "not inside the 8x6 frame"),
    (_xml('<track id="0" label="object"><mask frame="5" outside="0" rle="0, 1" left="0" top="0" width="1" '
          'height="1"/></track>'), "the task has 3 frames"),
    (_xml('<track id="0" label="object"><mask frame="0" outside="0" rle="0, 1" left="0" top="0" width="1" '
          'height="1"><attribute name="track_id">x</attribute></mask></track>'), "track_id must be an integer"),
    (_xml("").replace("<mode>interpolation</mode>", "<mode>annotation</mode>"), "CVAT-for-images"),
])
def test_bad_files_are_one_line_input_errors(tmp_path: Path, body: str, match: str) -> None:
    p = tmp_path / "bad.xml"
    p.write_text(body)
    with pytest.raises(InputError, match=match) as exc:
        read_cvat(p)
    assert "\n" not in str(exc.value) and str(p) in str(exc.value)


def test_cli_exports_to_cvat_and_back_to_a_labelset(tmp_path: Path, capsys) -> None:
    video = _video()
    write_ytvis_results(tmp_path / "results.json", [video])
    assert main(["export", str(tmp_path / "results.json"), "--to", "cvat", "-o", str(tmp_path / "c.xml")]) == 0
    assert main(["export", str(tmp_path / "c.xml"), "--to", "ytvis", "-o", str(tmp_path / "back.json")]) == 0
    back = read_ytvis(tmp_path / "back.json")
    back_video = back[0] if isinstance(back, list) else back
    assert _same_masks(video, back_video)
    (tmp_path / "bad.xml").write_text("<annotations>")
    assert main(["export", str(tmp_path / "bad.xml"), "--to", "ytvis", "-o", str(tmp_path / "x.json")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("s2d: error")]
    assert len(err) == 1 and "malformed XML" in err[0]
