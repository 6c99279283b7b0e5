"""`s2d report`: the page of a real (tiny-model) segment run, checked in headless Chromium, and its parts.

The browser test opens the page from disk in Debian's Chromium through Selenium and chromedriver (the
README's install block installs both): one table row per object id, and the overlay video loads
(``readyState >= 1``, no error, ``duration > 0``). Its screenshot is kept in pytest's tmp folder and its path
printed (``pytest -s`` shows it), never in git.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, List

import numpy as np
import pytest

from s2d.cli import main
from s2d.io.formats import read_ytvis, write_davis, write_ytvis_dataset
from s2d.io.video import VideoWriter
from s2d.types import Track, VideoSegmentation
from tests.helpers import moving_square

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FAST = ["--score-threshold", "0", "--max-side", "64", "--chunk", "4", "--overlap", "1", "--max-objects", "3"]


def _clip(n: int = 12, h: int = 48, w: int = 64) -> List[np.ndarray]:
    return moving_square(n, h, w)


def _gt(n: int = 12, h: int = 48, w: int = 64) -> VideoSegmentation:
    masks = []
    for t in range(n):
        m = np.zeros((h, w), bool)
        m[12:28, 4 + 2 * t:20 + 2 * t] = True
        masks.append(m)
    return VideoSegmentation(h, w, n, [Track(1, masks)], name="cars")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def segment_run(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`s2d segment` of a 12-frame clip with the tiny model (all formats), and `s2d eval davis` beside it."""
    root = tmp_path_factory.mktemp("report")
    frames = _clip()
    with VideoWriter(root / "cars.mp4", 10, 64, 48) as w:
        for f in frames:
            w.write(f)
    out = root / "out"
    assert main(["segment", str(root / "cars.mp4"), "-o", str(out), "--model", str(tiny_ckpt),
                 "--format", "ytvis,davis,overlay", *FAST]) == 0
    write_davis(root / "gt" / "cars", _gt())
    assert main(["eval", "davis", "--gt", str(root / "gt"), "--pred", str(out), "--json", str(out / "jf.json")]) == 0
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium driven by chromedriver; fails (not skips) where they are not installed."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed: apt-get install -y chromium chromium-driver "
                    "(the README's install block does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1100,1400"):
        opts.add_argument(arg)
    profile = tempfile.mkdtemp(prefix="s2d-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_report_renders_object_rows_and_plays_the_overlay(segment_run: Path, browser, tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    assert main(["report", str(segment_run)]) == 0
    html = segment_run / "report.html"
    (video,) = read_ytvis(segment_run / "cars" / "results.json")  # type: ignore[misc]
    assert video.tracks, "score threshold 0 gives objects"

    browser.get(html.resolve().as_uri())  # type: ignore[attr-defined]
    rows = browser.execute_script(  # type: ignore[attr-defined]
        "return [...document.querySelectorAll('section.video tr.object-row')].map(r => +r.dataset.id)")
    assert sorted(rows) == sorted(video.ids)
    state = WebDriverWait(browser, 20, poll_frequency=0.2).until(lambda d: d.execute_script(
        "const v = document.querySelector('video');"
        "return (v.readyState >= 1 || v.error) ? [v.readyState, v.duration, v.error && v.error.code] : null"))
    ready, duration, error = state
    assert error is None and ready >= 1 and duration > 0, state
    broken = browser.execute_script(  # type: ignore[attr-defined]
        "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    assert broken == []
    assert browser.execute_script("return document.querySelectorAll('section.eval img.plot').length") >= 2  # type: ignore[attr-defined]
    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.stat().st_size > 1000
    print(f"report screenshot: {shot}")


def test_page_is_static_and_links_are_relative(segment_run: Path) -> None:
    import re

    assert main(["report", str(segment_run), "-o", str(segment_run / "page.html")]) == 0
    html = (segment_run / "page.html").read_text()
    assert "<script" not in html
    links = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert 'cars/overlay.mp4' in links and any(link.startswith("page_files/") for link in links)
    assert all(not link.startswith(("/", "file:", "http")) for link in links)  # the folder can move


def test_eval_j_per_frame_means_are_the_reported_j(segment_run: Path) -> None:
    from s2d.eval.davis import frame_j
    from s2d.report.evaldata import find_eval_reports

    ((path, report),) = find_eval_reports(segment_run)
    for seq in report["sequences"]:
        frames, values = frame_j(report, seq)
        assert len(frames) == 12
        for obj, j in zip(seq["objects"], values.values()):
            assert float(np.mean(j)) == pytest.approx(obj["J-Mean"], abs=1e-12)


def test_discover_output_shows_keymasks_and_saliency(tmp_path: Path) -> None:
    """A pseudo_labels.json (the layout `s2d discover` writes) with its settings.json root and video."""
    from s2d.keymasks.run import labelset_video_fields

    frames = _clip()
    with VideoWriter(tmp_path / "data" / "cars.mp4", 10, 64, 48) as w:
        for f in frames:
            w.write(f)
    gt = _gt()
    keymask = [m if t % 4 == 0 else None for t, m in enumerate(gt.tracks[0].masks)]
    video = gt.with_tracks([Track(1, keymask, extra={"saliency": 0.75, "num_keymasks": 3})])
    run = tmp_path / "disc"
    fields = labelset_video_fields(str(tmp_path / "data" / "cars.mp4"), video.num_frames)
    write_ytvis_dataset(run / "pseudo_labels.json", [video], video_fields=[fields])
    (run / "settings.json").write_text(json.dumps({"root": str(tmp_path / "data"), "settings": {}}))
    html = (run / "report.html")
    assert main(["report", str(run)]) == 0
    text = html.read_text()
    assert text.count('class="object-row"') == 1 and ">0.75<" in text
    assert text.count("alt=\"object 1 frame") == 3  # keymask frames 0, 4, 8
    assert "source frames not found" not in text
    assert len(list((run / "report_files").rglob("key_1_*.jpg"))) == 3


def test_nothing_to_report_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 2 and "nothing to report" in err[0] and "no such folder" in err[1]
    (tmp_path / "jf.json").write_text("{}")
    assert main(["report", str(tmp_path), "--eval", str(tmp_path / "jf.json")]) == 2
    assert "not an `s2d eval davis --json` report" in capsys.readouterr().err
