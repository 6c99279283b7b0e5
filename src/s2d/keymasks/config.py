"""Typed settings of stage 2 (keymask discovery): :class:`KeymaskConfig`.

Every default is the value of the reference implementation (``leonsick/s2d@56cd406``,
``keymask_ident/``; see ``PAPER.md`` §2). The dataclass is flat so that it maps one-to-one to a YAML
mapping and to ``--set key=value`` overrides (:meth:`KeymaskConfig.with_overrides`).

Grid geometry. The reference builds CoTracker's query grid over the tracker's model resolution
(CoTracker3: 384×512) with a margin of ``W/64`` (8 px), nearest-resizes the mask to that resolution,
keeps the grid points that fall inside it, and maps them back to frame pixels with the
align-corners factor ``(W_frame - 1) / (512 - 1)``. :mod:`s2d.keymasks.grid` reproduces exactly that
point set at any frame size (``grid_model_height/width``, ``grid_margin``), independently of the
tracker we use, so a G×G grid is always G×G over the whole frame.

Area rule. The matching grid is ``G = clamp(floor(area / 800), 25, 50)``. The reference measures
``area`` in pixels of the mask PNG, i.e. at the *frame's own resolution* (the CutS3D masks; 480×854 on
DAVIS, mostly 720×1280 on YouTube-VIS) — not at the tracker's 384×512. We usually run stage 2 at a
reduced working resolution, so by default the area is rescaled to a DAVIS-480p frame
(``area_reference_pixels = 480 * 854``) before the rule is applied: ``area_ref = area * 409920 / (H*W)``.
On DAVIS masks at full resolution this is exactly the reference; at any other resolution it keeps
the same *fraction of the frame* per grid size. ``area_reference_pixels = None`` applies the rule to
the raw pixel count of the masks given (the reference's literal behaviour).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from s2d.errors import SettingError

__all__ = ["KeymaskConfig"]


@dataclass(frozen=True)
class KeymaskConfig:
    """How stage 2 turns noisy single-frame masks into keymasks with object identities.

    Point grids (:mod:`s2d.keymasks.grid`):
        visibility_grid: G of the G×G grid tracked for the visibility curves (reference 50).
        match_grid_min, match_grid_max, match_grid_area_step: the matching grid is
            ``clamp(floor(area / step), min, max)`` (reference 25, 50, 800 px²).
        area_reference_pixels: frame pixel count the area is rescaled to before the rule (default
            409920 = 480×854, DAVIS 480p); ``None`` = raw pixels of the given masks (see module doc).
        grid_model_height, grid_model_width: resolution the grid is laid out over (CoTracker3's
            model resolution 384×512).
        grid_margin: margin of the grid at that resolution in pixels; ``None`` = ``width / 64``.

    Instances (not in the reference, whose CutS3D masks are already instances):
        split_components: split every single-frame mask into its connected components before discovery, so
            that separate objects inside one motion mask (two cars, a juggler and a ball in the air) become
            separate masks, tracked and grouped on their own. Each component keeps its mask's score, and a
            component of a frame's top-scored mask counts as top-scored for the object's saliency.
        component_min_fraction: components smaller than this fraction of the frame are dropped (when
            splitting).

    Visibility grouping (:mod:`s2d.keymasks.visibility`):
        visibility_threshold: γ_thr; a mask counts as visible on frame t when the fraction of its
            tracked points visible there is ``> 0.3``.
        visibility_eps, visibility_min_samples: DBSCAN (Hamming) over the binary visibility vectors
            (0.2, 5).
        candidate_visible_fraction: a cluster member is a candidate of a majority-visible range
            when it is visible on ``> 0.3`` of the range's frames and its own frame lies in it.

    Propagate and match (:mod:`s2d.keymasks.matching`):
        matching_threshold: λ_J; a mask matches when ``> 0.5`` of the propagated points hit it.
        merge_vranges: match over ``[min start, max end]`` of a cluster's ranges (reference True)
            instead of each candidate's own range.
        one2x_threshold, one2x_min_frames: a candidate is flagged one-to-many ("one2x") when on at
            least 5 frames more than one mask has a point fraction ``> 0.25``.
        match_large_cols, match_large_eps, match_large_min_samples: DBSCAN (Hamming) over the cropped
            match matrix when it has more than 50 columns: eps 0.05, min_samples 5.
        match_small_cols, match_small_eps, match_small_min_samples: fewer than 10 columns: 0.1, 3.
        match_eps, match_min_samples: otherwise: 0.1, 5.
        match_all_rows: as the reference, cluster *every* row of the cropped match matrix — also the
            all-zero rows of masks inside the box that are not candidates of this cluster — and set
            rows without a match to noise afterwards (default True). All-zero rows then act as a
            dense core: candidate rows with at most ``eps × columns`` matches become density-reachable
            from them and end up in one shared group. ``False`` clusters only the candidates' rows.

    Output:
        one2x_filter: drop objects whose mean one2x (rounded to 2 decimals, as the reference stores
            it) is above this value; ``None`` keeps all (the reference's merge script filters only
            when given a threshold > 0; the value used in the paper is unconfirmed).
        seed: 777 as in the reference. Nothing in this stage is random (DBSCAN is deterministic); the
            seed is kept for trackers or future sampling.
    """

    visibility_grid: int = 50
    match_grid_min: int = 25
    match_grid_max: int = 50
    match_grid_area_step: float = 800.0
    area_reference_pixels: Optional[int] = 480 * 854
    grid_model_height: int = 384
    grid_model_width: int = 512
    grid_margin: Optional[float] = None
    visibility_threshold: float = 0.3
    visibility_eps: float = 0.2
    visibility_min_samples: int = 5
    candidate_visible_fraction: float = 0.3
    matching_threshold: float = 0.5
    merge_vranges: bool = True
    one2x_threshold: float = 0.25
    one2x_min_frames: int = 5
    match_large_cols: int = 50
    match_large_eps: float = 0.05
    match_large_min_samples: int = 5
    match_small_cols: int = 10
    match_small_eps: float = 0.1
    match_small_min_samples: int = 3
    match_eps: float = 0.1
    match_min_samples: int = 5
    match_all_rows: bool = True
    one2x_filter: Optional[float] = None
    seed: int = 777
    split_components: bool = False
    component_min_fraction: float = 0.0005

    def __post_init__(self) -> None:
        def integer(name: str, lo: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise SettingError(f"{name} must be an integer >= {lo}, got {v!r}")

        def number(name: str, lo: float, hi: Optional[float] = None, strict_lo: bool = False) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                raise SettingError(f"{name} must be a number, got {v!r}")
            if (v <= lo if strict_lo else v < lo) or (hi is not None and v > hi):
                rng = f"{'>' if strict_lo else '>='} {lo}" + ("" if hi is None else f" and <= {hi}")
                raise SettingError(f"{name} must be {rng}, got {v!r}")

        for n in ("visibility_grid", "match_grid_min", "match_grid_max"):
            integer(n, 1)
        if self.match_grid_min > self.match_grid_max:
            raise SettingError(f"match_grid_min ({self.match_grid_min}) must not exceed "
                               f"match_grid_max ({self.match_grid_max})")
        number("match_grid_area_step", 0.0, strict_lo=True)
        if self.area_reference_pixels is not None:
            integer("area_reference_pixels", 1)
        integer("grid_model_height", 2)
        integer("grid_model_width", 2)
        if self.grid_margin is not None:
            number("grid_margin", 0.0)
            if 2 * self.grid_margin >= min(self.grid_model_height, self.grid_model_width):
                raise SettingError(f"grid_margin {self.grid_margin!r} leaves no room for a grid on "
                                   f"{self.grid_model_height}×{self.grid_model_width}")
        for n in ("visibility_threshold", "candidate_visible_fraction", "matching_threshold",
                  "one2x_threshold"):
            number(n, 0.0, 1.0)
        for n in ("visibility_eps", "match_large_eps", "match_small_eps", "match_eps"):
            number(n, 0.0, 1.0, strict_lo=True)
        for n in ("visibility_min_samples", "match_large_min_samples", "match_small_min_samples",
                  "match_min_samples", "one2x_min_frames"):
            integer(n, 1)
        integer("match_large_cols", 0)
        integer("match_small_cols", 0)
        if self.match_small_cols > self.match_large_cols:
            raise SettingError(f"match_small_cols ({self.match_small_cols}) must not exceed "
                               f"match_large_cols ({self.match_large_cols})")
        number("component_min_fraction", 0.0, 1.0)
        for n in ("merge_vranges", "match_all_rows", "split_components"):
            if not isinstance(getattr(self, n), bool):
                raise SettingError(f"{n} must be true or false, got {getattr(self, n)!r}")
        if self.one2x_filter is not None:
            number("one2x_filter", 0.0, 1.0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise SettingError(f"seed must be an integer, got {self.seed!r}")

    # ------------------------------------------------------------------ derived values

    @property
    def grid_model_size(self) -> Tuple[int, int]:
        """``(height, width)`` the point grids are laid out over."""
        return (self.grid_model_height, self.grid_model_width)

    @property
    def margin(self) -> float:
        """Grid margin in model pixels (``width / 64`` unless set)."""
        return self.grid_model_width / 64.0 if self.grid_margin is None else float(self.grid_margin)

    def match_grid_size(self, area: float, frame_pixels: int) -> int:
        """G of the matching grid for a mask of ``area`` pixels on a frame of ``frame_pixels`` pixels.

        ``clamp(floor(area_ref / 800), 25, 50)`` with ``area_ref`` rescaled to
        ``area_reference_pixels`` (or the raw area when that is ``None``).
        """
        a = float(area)
        if self.area_reference_pixels is not None and frame_pixels > 0:
            a = a * self.area_reference_pixels / float(frame_pixels)
        g = int(a // self.match_grid_area_step)
        return max(min(g, self.match_grid_max), self.match_grid_min)

    def match_dbscan_params(self, num_cols: int) -> Tuple[float, int]:
        """``(eps, min_samples)`` of the match-matrix DBSCAN for a cropped matrix of ``num_cols`` columns."""
        if num_cols > self.match_large_cols:
            return self.match_large_eps, self.match_large_min_samples
        if num_cols < self.match_small_cols:
            return self.match_small_eps, self.match_small_min_samples
        return self.match_eps, self.match_min_samples

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "KeymaskConfig":
        """Build from a mapping (e.g. a YAML file's ``keymasks:`` section) through :mod:`s2d.settings`:
        unknown keys and values of the wrong type are errors."""
        from s2d.settings import from_mapping

        return from_mapping(cls, data, what="keymask")

    def with_overrides(self, items: Sequence[str]) -> "KeymaskConfig":
        """Apply ``key=value`` strings (as ``--set``); see :func:`s2d.settings.apply_overrides`."""
        from s2d.settings import apply_overrides

        return apply_overrides(self, items, "keymask")
