"""YouTube-VIS JSON: results and dataset round trips, what the JSON looks like, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from s2d import rle
from s2d.errors import InputError, ValidationError
from s2d.io.formats import (
    from_ytvis,
    read_ytvis,
    to_ytvis_dataset,
    to_ytvis_results,
    write_ytvis_dataset,
    write_ytvis_results,
)
from s2d.types import Track, VideoSegmentation

# pycocotools' decode trips a harmless NumPy 2 DeprecationWarning; we call it directly on purpose
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W, T = 6, 8, 4


def box(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


A, B, C = box(0, 3, 0, 3), box(3, 6, 4, 8), box(1, 5, 1, 6)
EMPTY = np.zeros((H, W), bool)


def make_videos() -> list:
    v1 = VideoSegmentation(H, W, T, [
        Track(1, [A, A, None, A], 0.9, extra={"one2x": False}),
        Track(2, [B, None, B, EMPTY], 0.6, category_id=3),
        Track(7, [None, C, C, None], 0.3),   # overlaps track 1: YTVIS keeps overlaps as they are
    ], name="cat/clip1", video_id=11, frame_names=["f0", "f1", "f2", "f3"])
    v2 = VideoSegmentation(4, 5, 3, [Track(1, [None, box(0, 2, 0, 2, 4, 5), None], 1.0)],
                           name="dog", video_id=12)
    return [v1, v2]


def assert_same_tracks(a: VideoSegmentation, b: VideoSegmentation, scores: bool = True) -> None:
    assert (a.height, a.width, a.num_frames) == (b.height, b.width, b.num_frames)
    assert a.ids == b.ids
    for ta, tb in zip(a.tracks, b.tracks):
        assert ta.category_id == tb.category_id
        if scores:
            assert ta.score == pytest.approx(tb.score)
        for t in range(a.num_frames):
            ma, mb = ta.mask(t), tb.mask(t)
            assert (ma is None) == (mb is None), (ta.id, t)
            if ma is not None:
                assert np.array_equal(ma, mb), (ta.id, t)


def one_line_naming(exc: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    assert path.name in msg
    return msg


# ------------------------------------------------------------------------ results
def test_results_round_trip_in_memory():
    videos = make_videos()
    records = to_ytvis_results(videos)
    assert [r["video_id"] for r in records] == [11, 11, 11, 12]
    assert [r["track_id"] for r in records] == [1, 2, 7, 1]
    assert records[0]["one2x"] is False and records[1]["category_id"] == 3
    back = from_ytvis(records)
    assert [v.video_id for v in back] == [11, 12]
    for a, b in zip(videos, back):
        assert_same_tracks(a, b)
    assert back[0].tracks[0].extra == {"one2x": False}
    # a present-but-empty mask stays present (not null)
    assert back[0].tracks[1].masks[3] is not None and back[0].tracks[1].area(3) == 0


def test_results_file_is_plain_ytvis_json(tmp_path):
    path = write_ytvis_results(tmp_path / "out" / "results.json", make_videos())
    data = json.loads(path.read_text())
    assert isinstance(data, list) and len(data) == 4
    for rec in data:
        assert {"video_id", "category_id", "segmentations", "score"} <= set(rec)
        for seg in rec["segmentations"]:
            if seg is None:
                continue
            assert isinstance(seg["counts"], str)
            decoded = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()})
            assert decoded.shape == tuple(seg["size"])
    assert data[0]["segmentations"][2] is None
    assert np.array_equal(mask_utils.decode({"size": [H, W], "counts": data[0]["segmentations"][0]["counts"]}), A)
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]  # no temp file left
    back = read_ytvis(path)
    for a, b in zip(make_videos(), back):
        assert_same_tracks(a, b)


def test_results_ids_from_keys_or_record_order():
    seg = rle.encode(A)
    plain = [{"video_id": 1, "category_id": 1, "segmentations": [seg, None], "score": 0.5} for _ in range(3)]
    assert from_ytvis(plain)[0].ids == [1, 2, 3]
    with_id = [dict(r, id=10 + i) for i, r in enumerate(plain)]
    assert from_ytvis(with_id)[0].ids == [10, 11, 12]
    with_both = [dict(r, track_id=3 - i) for i, r in enumerate(with_id)]
    v = from_ytvis(with_both)[0]
    assert v.ids == [3, 2, 1] and v.tracks[0].extra == {"id": 10}
    partial = [dict(plain[0], track_id=5)] + plain[1:]  # not every record has one → 1..n
    assert from_ytvis(partial)[0].ids == [1, 2, 3]


def test_results_all_null_track_takes_size_from_videos_info(tmp_path):
    videos = make_videos()
    gt = to_ytvis_dataset(videos)
    results = [{"video_id": 12, "category_id": 1, "segmentations": [None, None, None], "score": 0.2}]
    with pytest.raises(InputError, match="frame size is unknown"):
        from_ytvis(results)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    for info in (gt, tmp_path / "gt.json"):
        (v,) = from_ytvis(results, videos_info=info)
        assert (v.height, v.width, v.num_frames, v.name, v.video_id) == (4, 5, 3, "dog", 12)
        assert v.tracks[0].masks == [None, None, None]
        assert v.frame_names == ["00000", "00001", "00002"]


def test_to_results_video_ids():
    videos = make_videos()
    assert {r["video_id"] for r in to_ytvis_results(videos, video_ids=[1, 2])} == {1, 2}
    anonymous = [v.with_tracks(v.tracks) for v in videos]
    anonymous[0].video_id = None
    anonymous[1].video_id = 1
    assert [r["video_id"] for r in to_ytvis_results(anonymous)] == [2, 2, 2, 1]
    with pytest.raises(ValidationError, match="duplicate video ids"):
        to_ytvis_results(videos, video_ids=[3, 3])
    # the VideoSegmentation delegates
    assert to_ytvis_results(videos[1], video_ids=[99])[0]["video_id"] == 99
    assert from_ytvis(to_ytvis_results(videos[1]))[0].ids == [1]


# ------------------------------------------------------------------------ dataset
def test_dataset_round_trip(tmp_path):
    videos = make_videos()
    path = write_ytvis_dataset(tmp_path / "gt.json", videos)
    data = json.loads(path.read_text())
    assert set(data) >= {"videos", "annotations", "categories"}
    assert data["categories"][0] == {"id": 1, "name": "object", "supercategory": "object"}
    assert {c["id"] for c in data["categories"]} == {1, 3}
    v0 = data["videos"][0]
    assert v0["id"] == 11 and (v0["width"], v0["height"], v0["length"]) == (W, H, T)
    assert v0["file_names"] == ["cat/clip1/f0.jpg", "cat/clip1/f1.jpg", "cat/clip1/f2.jpg", "cat/clip1/f3.jpg"]
    assert data["videos"][1]["file_names"][0] == "dog/00000.jpg"
    ann = data["annotations"]
    assert [a["id"] for a in ann] == [1, 2, 3, 4] and all(a["iscrowd"] == 0 for a in ann)
    for a in ann:
        for seg, area, bbox in zip(a["segmentations"], a["areas"], a["bboxes"]):
            if seg is None:
                assert area is None and bbox is None
                continue
            assert isinstance(seg["counts"], str)
            cseg = {"size": seg["size"], "counts": seg["counts"].encode()}
            assert area == int(mask_utils.area(cseg))
            assert bbox == (mask_utils.toBbox(cseg).tolist() if area else [0.0, 0.0, 0.0, 0.0])
    assert ann[0]["areas"] == [9, 9, None, 9] and ann[0]["bboxes"][0] == [0.0, 0.0, 3.0, 3.0]

    back = read_ytvis(path)
    assert [v.name for v in back] == ["cat/clip1", "dog"]
    assert back[0].frame_names == ["f0", "f1", "f2", "f3"]
    for a, b in zip(videos, back):
        assert_same_tracks(a, b, scores=False)
        assert all(t.score == 1.0 for t in b.tracks)


def test_dataset_foreign_layout():
    """Official-style GT: uncompressed RLE, global annotation ids, no track_id, no 'name'."""
    counts = rle.encode(B)
    uncompressed = {"size": [H, W], "counts": [18, 3, H * W - 21]}  # list counts, as in YTVIS train GT
    data = {
        "videos": [{"id": 5, "width": W, "height": H, "length": 2,
                    "file_names": ["abc123/00000.jpg", "abc123/00005.jpg"]},
                   {"id": 6, "width": W, "height": H, "length": 1, "file_names": ["empty/00000.jpg"]}],
        "annotations": [
            {"id": 900, "video_id": 5, "category_id": 4, "segmentations": [uncompressed, None], "iscrowd": 0},
            {"id": 901, "video_id": 5, "category_id": 4, "segmentations": [counts, counts], "iscrowd": 1},
        ],
        "categories": [{"id": 4, "name": "cat"}],
    }
    v, empty = from_ytvis(data)
    assert v.name == "abc123" and v.frame_names == ["00000", "00005"]
    assert v.ids == [1, 2] and [t.category_id for t in v.tracks] == [4, 4]
    assert v.tracks[0].mask(0).sum() == 3 and isinstance(v.tracks[0].masks[0]["counts"], str)
    assert v.tracks[1].extra == {"iscrowd": 1}
    assert empty.tracks == [] and empty.num_frames == 1
    out = to_ytvis_dataset([v])
    assert [a["iscrowd"] for a in out["annotations"]] == [0, 1]


def test_dataset_without_annotations_is_detected():
    (v,) = from_ytvis({"videos": [{"id": 1, "width": W, "height": H, "file_names": ["a/0.jpg"]}],
                       "categories": []})
    assert v.num_frames == 1 and v.tracks == []


# ------------------------------------------------------------------------ bad input
def _record(seg_list, vid=1, **kw):
    return dict({"video_id": vid, "category_id": 1, "segmentations": seg_list, "score": 0.5}, **kw)


SMALL = rle.encode(box(0, 1, 0, 1, 5, 8))
OK = rle.encode(A)
GT_ONE = {"videos": [{"id": 1, "width": W, "height": H, "length": 2, "file_names": ["v/0.jpg", "v/1.jpg"]}],
          "annotations": [], "categories": [{"id": 1, "name": "object"}]}

BAD_JSON = [
    ("malformed", '[{"video_id": 1,, }]', r"malformed JSON: line 1 column \d+"),
    ("truncated", '[{"video_id": 1, "segmentations": [', "malformed JSON"),
    ("not_ytvis", {"foo": 1}, "not YouTube-VIS JSON"),
    ("scalar", 3, "not YouTube-VIS JSON"),
    ("size_in_record", [_record([OK, SMALL])],
     r"video 1, record 0, frame 1: RLE size 5x8 does not match the video's 6x8"),
    ("size_across_records", [_record([OK, None]), _record([None, SMALL])],
     r"video 1, record 1, frame 1: RLE size 5x8 does not match the video's 6x8 .*record 0, frame 0"),
    ("length_across_records", [_record([OK, None]), _record([OK])],
     "video 1, record 1: 1 segmentations but the video has 2 frames"),
    ("not_a_list", [_record({"size": [H, W], "counts": "x"})], "'segmentations' must be a list"),
    ("bad_entry", [_record([OK, 7])], "video 1, record 0, frame 1: segmentation must be an RLE object or null"),
    ("bad_rle", [_record([{"size": [H], "counts": "x"}, None])], "video 1, record 0, frame 0: RLE 'size'"),
    ("bad_score", [_record([OK, None], score=2.0)], r"video 1, record 0: .*score must be in \[0, 1\]"),
    ("bad_video_id", [_record([OK, None], vid="one")], "record 0: 'video_id' must be an integer"),
    ("dup_track_id", [_record([OK, None], track_id=2), _record([OK, None], track_id=2)],
     "video 1: duplicate track_id 2 .records 0 and 1."),
    ("all_null", [_record([None, None])], "video 1: every segmentation is null"),
    ("gt_length", dict(GT_ONE, annotations=[{"id": 1, "video_id": 1, "category_id": 1, "segmentations": [OK]}]),
     "video 1, record 0: 1 segmentations but the video has 2 frames"),
    ("gt_size", dict(GT_ONE, annotations=[{"id": 1, "video_id": 1, "category_id": 1,
                                           "segmentations": [SMALL, None]}]),
     "video 1, record 0, frame 0: RLE size 5x8 does not match the video's 6x8"),
    ("gt_unknown_video", dict(GT_ONE, annotations=[{"id": 1, "video_id": 9, "segmentations": [OK, OK]}]),
     "annotation 0: video_id 9 is not in 'videos'"),
    ("gt_bad_video", {"videos": [{"id": 1, "width": W}], "annotations": []}, "video 1: 'height'"),
    ("gt_length_vs_files", {"videos": [{"id": 1, "width": W, "height": H, "length": 3, "file_names": ["a/0.jpg"]}],
                            "annotations": []}, "'length' is 3 but there are 1 file_names"),
]


@pytest.mark.parametrize("name, content, match", BAD_JSON, ids=[b[0] for b in BAD_JSON])
def test_bad_input_is_a_one_line_input_error(tmp_path, name, content, match):
    path = tmp_path / f"{name}.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(InputError, match=match) as exc:
        read_ytvis(path)
    one_line_naming(exc, path)


def test_results_against_videos_info_errors(tmp_path):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(GT_ONE))
    res = tmp_path / "res.json"
    cases = [
        ([_record([OK, None, None])],
         "video 1, record 0: 3 segmentations but the video has 2 frames .from the dataset."),
        ([_record([SMALL, None])], "video 1, record 0, frame 0: RLE size 5x8 does not match the video's 6x8"),
        ([_record([OK, None], vid=2)], "record 0: video_id 2 is not in the dataset's 'videos'"),
    ]
    for content, match in cases:
        res.write_text(json.dumps(content))
        with pytest.raises(InputError, match=match) as exc:
            read_ytvis(res, videos_info=gt)
        one_line_naming(exc, res)


@pytest.mark.parametrize("setup, match", [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "not UTF-8"),
])
def test_unreadable_files(tmp_path, setup, match):
    path = tmp_path / "x.json"
    setup(path)
    with pytest.raises(InputError, match=match) as exc:
        read_ytvis(path)
    one_line_naming(exc, path)


def test_failed_write_leaves_nothing(tmp_path):
    v = make_videos()[1]
    bad = v.with_tracks([Track(1, v.tracks[0].masks, extra={"obj": object()})])
    target = tmp_path / "results.json"
    with pytest.raises(TypeError):
        write_ytvis_results(target, [bad])
    assert list(tmp_path.iterdir()) == []
    # numpy values in extra serialise fine
    ok = v.with_tracks([Track(1, v.tracks[0].masks, extra={"n": np.int64(3), "a": np.arange(2)})])
    write_ytvis_results(target, ok)
    assert json.loads(target.read_text())[0]["n"] == 3


def test_streaming_results_writer_is_the_one_writer(tmp_path):
    """YtvisResultsWriter streams records (bytes or str counts, None for absent frames) into a file that
    appears only on close; an exception inside the block leaves an existing file untouched."""
    from s2d.io.formats import YtvisResultsWriter, read_ytvis

    m = box(2, 6, 3, 9)
    enc = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))  # counts as bytes
    path = tmp_path / "r.json"
    with YtvisResultsWriter(path) as w:
        assert not path.exists()
        w.write({"video_id": 1, "category_id": 1, "track_id": 4, "score": 0.5, "segmentations": [enc, None]})
        w.write({"video_id": 1, "category_id": 1, "track_id": 7, "score": 0.25, "segmentations": [None, rle.encode(m)]})
    data = json.loads(path.read_text())
    assert [r["track_id"] for r in data] == [4, 7] and data[0]["segmentations"][1] is None
    (video,) = read_ytvis(path)
    assert [t.id for t in video.tracks] == [4, 7]
    assert np.array_equal(rle.decode(video.tracks[0].masks[0]), m)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with YtvisResultsWriter(path) as w:
            w.write({"video_id": 1, "category_id": 1, "score": 1.0, "segmentations": [None, None]})
            raise RuntimeError("interrupted")
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]
