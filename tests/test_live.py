"""Live sources (issue #16): a stream on stdin, a stream served on the loopback interface, and Ctrl-C.

Streams are MPEG-TS written by PyAV (a container that can be read as it arrives, as from a camera or
``ffmpeg -f mpegts -``); the model is the tiny random-init video Mask2Former with ``--score-threshold 0``.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List

import av
import numpy as np
import pytest

from s2d.errors import InputError
from s2d.io.video import is_live_source, live_name, open_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ONLINE = ["--online", "--score-threshold", "0", "--max-side", "64", "--refine", "none"]


def frames(n: int, h: int = 48, w: int = 64) -> List[np.ndarray]:
    out = []
    for t in range(n):
        f = np.full((h, w, 3), 30, np.uint8)
        f[12:28, 4 + 2 * t:20 + 2 * t] = (250, 40, 40)
        out.append(f)
    return out


def ts_packets(imgs: List[np.ndarray], fps: int = 10) -> Iterator[bytes]:
    """MPEG-TS bytes of the frames, yielded as the muxer writes them (a stream, not a file)."""
    import io

    buf = io.BytesIO()
    c = av.open(buf, "w", format="mpegts")
    st = c.add_stream("mpeg4", rate=fps)
    st.width, st.height, st.pix_fmt = imgs[0].shape[1], imgs[0].shape[0], "yuv420p"
    for img in imgs:
        for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    for p in st.encode():
        c.mux(p)
    c.close()
    yield buf.getvalue()


def _ctrl_c_as_in_a_terminal() -> None:
    # a job started in the background by a non-interactive shell (as CI may be) inherits SIGINT ignored, and
    # Python then never turns it into KeyboardInterrupt; a user's Ctrl-C comes with the default disposition
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def s2d(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "s2d", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=_ctrl_c_as_in_a_terminal, **kw)


@pytest.mark.parametrize("source, live, name", [
    ("-", True, "stdin"), ("/dev/video2", True, "video2"), ("rtsp://127.0.0.1:8554/cam/live", True, "live"),
    ("http://127.0.0.1:8000/clip.ts", True, "clip"), ("udp://@:1234", True, "1234"),
    ("clip.mp4", False, None), ("/dev/videos", False, None)])
def test_live_source_names(source: str, live: bool, name: str):
    assert is_live_source(source) is live
    if live:
        assert live_name(source) == name


def test_stdin_pipe_segments_online(tmp_path: Path, tiny_ckpt: Path):
    data = b"".join(ts_packets(frames(10)))
    p = s2d("segment", "-", "-o", str(tmp_path / "out"), "--model", str(tiny_ckpt), *ONLINE,
            "--format", "ytvis,davis,mots", stdin=subprocess.PIPE)
    out, err = p.communicate(data, timeout=300)
    assert p.returncode == 0, err.decode()
    folder = tmp_path / "out" / "stdin"
    assert len(list((folder / "davis").glob("*.png"))) == 10
    res = json.loads((folder / "results.json").read_text())
    assert res and all(len(r["segmentations"]) == 10 for r in res)
    assert "stdin: 10 frames" in err.decode()


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving ``tmp_path``; yields its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_loopback_http_stream_reads_frame_by_frame(tmp_path: Path, loopback: str, tiny_ckpt: Path):
    (tmp_path / "cam.ts").write_bytes(b"".join(ts_packets(frames(8))))
    with open_video(f"{loopback}/cam.ts") as stream:
        assert stream.live and stream.info.kind == "stream" and stream.info.num_frames is None
        got = [f.index for f in stream]
        with pytest.raises(InputError, match="only once"):
            next(iter(stream))
    assert got == list(range(8))
    p = s2d("segment", f"{loopback}/cam.ts", "-o", str(tmp_path / "out"), "--model", str(tiny_ckpt), *ONLINE,
            "--format", "davis")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()
    assert len(list((tmp_path / "out" / "cam" / "davis").glob("*.png"))) == 8


def test_missing_stream_is_one_line(tmp_path: Path, loopback: str, tiny_ckpt: Path):
    p = s2d("segment", f"{loopback}/absent.ts", "-o", str(tmp_path / "out"), "--model", str(tiny_ckpt), *ONLINE)
    _, err = p.communicate(timeout=300)
    lines = err.decode().strip().splitlines()
    assert p.returncode == 1 and "Traceback" not in err.decode()
    assert any("absent.ts" in ln and "404" in ln for ln in lines)


def test_ctrl_c_on_a_live_stream_completes_the_outputs(tmp_path: Path, tiny_ckpt: Path):
    """A stream that never ends: after some frames Ctrl-C; every output holds the frames segmented so far."""
    p = s2d("segment", "-", "-o", str(tmp_path / "out"), "--model", str(tiny_ckpt), *ONLINE,
            "--format", "ytvis,davis,mots,overlay", stdin=subprocess.PIPE)
    assert p.stdin is not None
    pngs = tmp_path / "out" / "stdin" / "davis"
    chunks = ts_packets(frames(400))
    deadline = time.time() + 240
    while time.time() < deadline and len(list(pngs.glob("*.png"))) < 6:
        p.stdin.write(next(chunks))  # the stream goes on; the reader is live
        p.stdin.flush()
        time.sleep(0.05)
    assert len(list(pngs.glob("*.png"))) >= 6, "no per-frame output while the stream runs"
    p.send_signal(signal.SIGINT)
    deadline = time.time() + 120
    while p.poll() is None and time.time() < deadline:  # the stream goes on until s2d stops reading it
        try:
            p.stdin.write(next(chunks))
            p.stdin.flush()
        except (BrokenPipeError, StopIteration):
            break
        time.sleep(0.05)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err.decode()
    assert "Traceback" not in err.decode()
    n = len(list(pngs.glob("*.png")))
    folder = tmp_path / "out" / "stdin"
    res = json.loads((folder / "results.json").read_text())
    assert res and all(len(r["segmentations"]) == n for r in res)
    assert (folder / "mots.txt").is_file()
    with open_video(folder / "overlay.mp4") as ov:
        assert sum(1 for _ in ov) == n


class FakeCapture:
    """Stands in for ``cv2.VideoCapture`` on a machine without a camera: BGR frames, then the end."""

    released = False

    def __init__(self, index: int, backend: int) -> None:
        import cv2

        assert backend == cv2.CAP_V4L2
        self.index = index
        self.frames = [f[..., ::-1].copy() for f in frames(5)]  # BGR

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.index == 0

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def get(self, prop: int) -> float:
        return 15.0

    def release(self) -> None:
        FakeCapture.released = True


def test_camera_source_reads_rgb_frames_until_the_camera_stops(monkeypatch: pytest.MonkeyPatch):
    import cv2

    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    with open_video("/dev/video0", max_side=32) as cam:
        assert cam.live and cam.info.kind == "camera" and cam.info.fps == 15.0
        assert (cam.info.width, cam.info.height, cam.info.name) == (32, 24, "video0")
        got = list(cam)
    assert [f.index for f in got] == [0, 1, 2, 3, 4] and FakeCapture.released
    assert tuple(got[0].rgb[10, 5]) == (250, 40, 40)  # the red box comes out red: RGB, not BGR
    full = frames(5)[2]
    with open_video("/dev/video0") as cam:
        assert np.array_equal(list(cam)[2].rgb, full)
    with pytest.raises(InputError, match="/dev/video1: cannot read from the camera"):
        open_video("/dev/video1")
