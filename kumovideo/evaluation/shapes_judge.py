"""Judge whether a ShapesWorld clip matches its caption.

Implements the spec's "What counts as matching the prompt" (shapes-world.md): the
background is the named colour; each named object is a blob of its colour visible in
nearly every frame, its silhouette is the named shape, and its centre or size changes
the named way. Colours are judged by nearest palette entry, so compression shifts and
anti-aliased edges don't matter.

How an object is measured, frame by frame:
  1. "core" pixels: nearest palette colour is the named colour and close to it; the
     largest connected core blob is the object (stray pixels elsewhere are ignored);
  2. a soft coverage map (alpha in [0, 1]) around the blob, from where each pixel lies
     between the background colour and the object colour, so blended edges count for
     the fraction they are covered;
  3. centre and radius from the alpha map's row and column profiles, area = sum(alpha);
  4. shape = the ideal circle, square or triangle (drawn by the renderer at that centre
     and radius) that overlaps the alpha map best (soft IoU). Comparing with rendered
     templates makes it work at 64 px, where a small shape is only ~9 pixels across.
Motion is read from straight-line fits of centre and sqrt(area) against time.

Any aspect (spec v1.1): frames may be W x H. Left/right displacement is a fraction of W,
up/down of H; radii and areas are relative to S = min(W, H). The match thresholds are
v1's (motion amount m = 1); `ObjectJudgement.motion_amount` measures m itself.
"""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kumovideo.data.shapes_world import (
    ALL_COLOURS,
    BACKGROUNDS,
    MOTION_DIRECTIONS,
    RADIUS_SCALES,
    SHAPES,
    SIZES,
    TRAVEL,
    parse_caption,
    shape_coverage,
)

# Every palette entry, backgrounds first, the held-back cyan last (so a fine-tuned model's
# cyan is judged like any colour). A pixel is "of" a palette colour when that colour is the
# nearest one and closer than COLOUR_TOLERANCE (RGB distance). The closest two entries
# (gray and green) are ~110 apart, so a 50/50 edge blend is >= 55 from both ends; 60 keeps
# most blends out of the cores while forgiving compression shifts. Cyan is >= 122 from
# every other entry (blue is nearest), so a pixel within 60 of another entry is never
# nearer cyan: every pixel that is "of" a base colour stayed so when cyan was added.
PALETTE_NAMES: tuple[str, ...] = tuple(BACKGROUNDS) + tuple(ALL_COLOURS)
PALETTE_RGB = np.array([*BACKGROUNDS.values(), *ALL_COLOURS.values()], dtype=np.float32)
COLOUR_TOLERANCE = 60.0

# An object is visible in a frame when its soft area is at least this fraction of S^2
# (S = min(W, H))
# (the smallest object of the world, a small triangle at the end of "shrinks", covers
# ~0.0098 S^2), and "nearly every frame" means at least this fraction of frames.
MIN_AREA = 0.004
MIN_VISIBLE_FRACTION = 0.8

# A silhouette is a shape only if its best template overlap reaches this soft IoU
# (a circle vs. its square template overlaps pi/4 ~ 0.785; the correct one ~0.9+).
MIN_SHAPE_IOU = 0.6

# Motion tolerances, as fractions of the side travelled along (displacement: x of W, y of H)
# and of area (size change). Ideal values at m = 1: travel 0.40, grows area x4.6, shrinks
# area x0.22; they stay v1's whatever the motion amount (`motion_amount` measures m).
STILL_MAX_DISPLACEMENT = 0.15
MOVE_MIN_TRAVEL = TRAVEL - 0.15
MOVE_MAX_TRAVEL = TRAVEL + 0.20
GROW_MIN_AREA_RATIO = 2.0
SHRINK_MAX_AREA_RATIO = 0.5
# Between these the size counts as unchanged (moving or still objects); between them and
# the grow/shrink limits the size changed, but too little to call it either.
STEADY_AREA_RATIO = (0.67, 1.5)

# "small" r = 0.10 S and "large" r = 0.16 S; the boundary sits halfway between them.
SIZE_BOUNDARY = (SIZES["small"] + SIZES["large"]) / 2


@dataclass
class ObjectJudgement:
    """How one named object was found. Displacements are fractions of the frame's width (x)
    and height (y); radii fractions of S = min(W, H)."""

    colour: str
    shape: str
    motion: str
    size: str | None  # named size, None when the caption leaves it out
    colour_ok: bool  # a blob of the named colour is visible in nearly every frame
    shape_ok: bool
    motion_ok: bool
    size_ok: bool | None  # informational only: the spec's match does not judge size
    visible_fraction: float
    measured_shape: str | None = None
    shape_scores: dict[str, float] = field(default_factory=dict)  # mean soft IoU per shape
    measured_motion: str | None = None
    displacement: tuple[float, float] | None = None  # (dx / W, dy / H) first -> last frame
    area_ratio: float | None = None  # area at last frame / area at first frame
    measured_size: str | None = None
    radius: float | None = None  # base radius r / S implied by the named motion (at m = 1)
    # The motion amount m the clip shows (spec v1.1): a move's fitted travel along the named
    # direction / (0.40 x that side); grows / shrinks from the fitted radius ratio (sqrt of the
    # area ratio, 0.7 -> 0.7 + 0.8 m). None for "stays still" or when nothing was measurable.
    motion_amount: float | None = None

    @property
    def ok(self) -> bool:
        return self.colour_ok and self.shape_ok and self.motion_ok


@dataclass
class JudgeResult:
    """Whether a clip matches its caption, attribute by attribute."""

    caption: str
    match: bool
    background: str  # named
    background_measured: str  # nearest palette entry of the border colour
    background_ok: bool
    objects: list[ObjectJudgement]

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------
# Pixel classification
# ----------------------------------------------------------------------------------------


def nearest_palette(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index into PALETTE_NAMES of each pixel's nearest palette colour, and the distance."""
    channels = frames.reshape(-1, 3).T.astype(np.float32)  # (3, N): contiguous per channel
    best = np.full(channels.shape[1], np.inf, dtype=np.float32)
    labels = np.zeros(channels.shape[1], dtype=np.int64)
    # One palette entry at a time: eleven cheap elementwise passes beat an (N, 11) argmin.
    for index, rgb in enumerate(PALETTE_RGB):
        squared = np.square(channels[0] - rgb[0])
        squared += np.square(channels[1] - rgb[1])
        squared += np.square(channels[2] - rgb[2])
        closer = squared < best
        best = np.where(closer, squared, best)
        labels[closer] = index
    return labels.reshape(frames.shape[:-1]), np.sqrt(best).reshape(frames.shape[:-1])


def _border(array: np.ndarray, width: int) -> np.ndarray:
    """The pixels of a `width`-pixel ring around every frame, flattened over frames."""
    top, bottom = array[:, :width], array[:, -width:]
    left, right = array[:, width:-width, :width], array[:, width:-width, -width:]
    return np.concatenate([part.reshape(-1, *array.shape[3:]) for part in (top, bottom, left, right)])


def _neighbourhood(array: np.ndarray, fill, reduce) -> np.ndarray:
    """Reduce (np.minimum, np.logical_or, ...) each pixel's 3x3 neighbourhood, per frame."""
    height, width = array.shape[1:3]
    padded = np.pad(array, ((0, 0), (1, 1), (1, 1)), constant_values=fill)
    result = array.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy != 1 or dx != 1:
                reduce(result, padded[:, dy : dy + height, dx : dx + width], out=result)
    return result


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Per frame, the largest 8-connected blob of a (F, H, W) boolean mask.

    Label propagation: every pixel starts labelled with its own index, repeatedly takes
    the smallest label in its neighbourhood, then jumps to its label's label (which
    halves path lengths, so few passes are needed). At the fixpoint each blob carries
    one label.
    """
    num_frames, height, width = mask.shape
    result = np.zeros_like(mask)
    rows, cols = np.flatnonzero(mask.any((0, 2))), np.flatnonzero(mask.any((0, 1)))
    if rows.size == 0:
        return result
    # Work on the box that holds every masked pixel: objects are small, frames are not.
    box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    cropped = mask[box]
    sentinel = cropped.size
    labels = np.where(cropped, np.arange(cropped.size).reshape(cropped.shape), sentinel)
    while True:
        smallest = np.where(cropped, _neighbourhood(labels, sentinel, np.minimum), sentinel)
        smallest = np.append(smallest.ravel(), sentinel)[smallest]
        if np.array_equal(smallest, labels):
            break
        labels = smallest
    # A blob's label is a pixel index inside its own frame, so counts split per frame.
    frame_pixels = cropped[0].size
    counts = np.bincount(labels[cropped], minlength=cropped.size).reshape(num_frames, frame_pixels)
    biggest = counts.argmax(1) + np.arange(num_frames) * frame_pixels
    has_blob = counts.max(1) > 0
    result[box] = cropped & (labels == biggest[:, None, None]) & has_blob[:, None, None]
    return result


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        mask = _neighbourhood(mask, False, np.logical_or)
    return mask


# ----------------------------------------------------------------------------------------
# Measuring one object
# ----------------------------------------------------------------------------------------


def _alpha_map(
    frames: np.ndarray, region: np.ndarray, background_rgb: np.ndarray, object_rgb: np.ndarray
) -> np.ndarray:
    """Soft coverage of the object in [0, 1]: where each pixel lies from background to object."""
    axis = object_rgb - background_rgb
    along = (frames.astype(np.float32) - background_rgb) @ axis / max(float(axis @ axis), 1.0)
    return np.where(region, np.clip(along, 0.0, 1.0), 0.0).astype(np.float32)


def _profiles(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centre (x, y) and extents (width, height) in pixels from the max row/column
    profiles of an (F, H, W) alpha map."""
    x_coords = np.arange(alpha.shape[2], dtype=np.float32) + 0.5
    y_coords = np.arange(alpha.shape[1], dtype=np.float32) + 0.5
    columns = alpha.max(axis=1)  # (F, W): how covered each column is at best
    rows = alpha.max(axis=2)  # (F, H)
    width, height = columns.sum(1), rows.sum(1)
    cx = (columns * x_coords).sum(1) / np.maximum(width, 1e-6)
    cy = (rows * y_coords).sum(1) / np.maximum(height, 1e-6)
    return cx, cy, width, height


def _shape_scores(alpha: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame soft IoU between the alpha map and each ideal shape at that place and size."""
    scores = {}
    for shape in SHAPES:
        template = shape_coverage(shape, (alpha.shape[2], alpha.shape[1]), cx, cy, radius)
        overlap = np.minimum(alpha, template).sum((1, 2))
        union = np.maximum(alpha, template).sum((1, 2))
        scores[shape] = overlap / np.maximum(union, 1e-6)
    return scores


def _fit_ends(times: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Straight-line fit of values against time in [0, 1]; the fitted first and last values."""
    slope, intercept = np.polyfit(times, values, 1)
    return float(intercept), float(intercept + slope)


def classify_motion(dx: float, dy: float, area_ratio: float) -> str:
    """The motion phrase that a displacement (dx / W, dy / H) and area ratio show, or "other"."""
    distance = math.hypot(dx, dy)
    if area_ratio >= GROW_MIN_AREA_RATIO or area_ratio <= SHRINK_MAX_AREA_RATIO:
        if distance > STILL_MAX_DISPLACEMENT:
            return "other"  # size and place both change: no phrase says that
        return "grows" if area_ratio >= GROW_MIN_AREA_RATIO else "shrinks"
    if not STEADY_AREA_RATIO[0] <= area_ratio <= STEADY_AREA_RATIO[1]:
        return "other"  # size changed, but not enough to call it growing or shrinking
    if distance <= STILL_MAX_DISPLACEMENT:
        return "stays still"
    for phrase, (dir_x, dir_y) in MOTION_DIRECTIONS.items():
        if dir_x == 0 and dir_y == 0:
            continue
        along = dx * dir_x + dy * dir_y
        across = abs(dx * dir_y - dy * dir_x)
        if MOVE_MIN_TRAVEL <= along <= MOVE_MAX_TRAVEL and across <= STILL_MAX_DISPLACEMENT:
            return phrase
    return "other"


def motion_amount_of(motion: str, displacement: tuple[float, float], area_ratio: float) -> float | None:
    """The motion amount m (spec v1.1) that a named motion's measurements show.

    A move: the travel along the named direction (displacement is (dx / W, dy / H)) over the
    spec's 0.40, so travelling the wrong way gives m < 0. grows / shrinks: from the radius
    ratio sqrt(area_ratio), r_last / r_first = (0.7 + 0.8 m) / 0.7 (grows) or its inverse
    (shrinks). None for "stays still" (it has no amount) or a vanished object.
    """
    if motion in RADIUS_SCALES:
        ratio = math.sqrt(max(area_ratio, 0.0))
        small = RADIUS_SCALES["grows"][0]  # 0.7: the small end of both
        growth = RADIUS_SCALES["grows"][1] - small  # 0.8: the big end's rise per unit of m
        if motion == "grows":
            return (small * ratio - small) / growth
        return None if ratio <= 0.0 else (small / ratio - small) / growth
    dir_x, dir_y = MOTION_DIRECTIONS[motion]
    if dir_x == 0 and dir_y == 0:
        return None
    return (displacement[0] * dir_x + displacement[1] * dir_y) / TRAVEL


def _judge_object(
    frames: np.ndarray,
    labels: np.ndarray,
    distance: np.ndarray,
    background_rgb: np.ndarray,
    named: dict,
    other_colours: list[str],
) -> ObjectJudgement:
    num_frames, frame_height, frame_width = frames.shape[:3]
    side = min(frame_width, frame_height)  # S: sizes and areas are relative to it
    colour_index = PALETTE_NAMES.index(named["colour"])
    confident = distance < COLOUR_TOLERANCE
    core = largest_component((labels == colour_index) & confident)

    # Pixels of another named object's colour are never this object's, even near it.
    others = np.zeros_like(core)
    for colour in other_colours:
        others |= (labels == PALETTE_NAMES.index(colour)) & confident
    # Two pixels around the core hold its anti-aliased (or blurred) edge.
    region = _dilate(core, 2) & ~others
    object_rgb = (
        np.median(frames[core].astype(np.float32), axis=0)
        if core.any()
        else np.asarray(ALL_COLOURS[named["colour"]], dtype=np.float32)
    )
    alpha = _alpha_map(frames, region, background_rgb, object_rgb)
    area = alpha.sum((1, 2))
    visible = area >= MIN_AREA * side * side
    visible_fraction = float(visible.mean())

    result = ObjectJudgement(
        colour=named["colour"],
        shape=named["shape"],
        motion=named["motion"],
        size=named["size"],
        colour_ok=visible_fraction >= MIN_VISIBLE_FRACTION,
        shape_ok=False,
        motion_ok=False,
        size_ok=None if named["size"] is None else False,
        visible_fraction=visible_fraction,
    )
    if not visible.any():
        return result

    alpha, area = alpha[visible], area[visible]
    cx, cy, width, height = _profiles(alpha)
    radius = (width + height) / 4.0

    scores = _shape_scores(alpha, cx, cy, radius)
    result.shape_scores = {shape: float(score.mean()) for shape, score in scores.items()}
    best = max(result.shape_scores, key=result.shape_scores.get)
    result.measured_shape = best if result.shape_scores[best] >= MIN_SHAPE_IOU else "other"
    result.shape_ok = result.measured_shape == named["shape"]

    # Size: the base radius r implied by the named motion's first-frame scale.
    times = np.flatnonzero(visible) / max(num_frames - 1, 1)
    if visible.sum() >= 2:
        radius_first, _ = _fit_ends(times, radius)
    else:
        radius_first = float(radius[0])
    start_scale = RADIUS_SCALES.get(named["motion"], (1.0, 1.0))[0]
    result.radius = radius_first / start_scale / side
    result.measured_size = "small" if result.radius < SIZE_BOUNDARY else "large"
    if named["size"] is not None:
        result.size_ok = result.measured_size == named["size"]

    if num_frames == 1:
        # A still image shows no motion: any phrase is consistent with its first frame.
        result.motion_ok = True
        return result
    if visible.sum() < 2:
        return result
    x_first, x_last = _fit_ends(times, cx)
    y_first, y_last = _fit_ends(times, cy)
    # sqrt(area) is linear in time when r is, so fit that rather than the area.
    root_first, root_last = _fit_ends(times, np.sqrt(area))
    result.displacement = ((x_last - x_first) / frame_width, (y_last - y_first) / frame_height)
    result.area_ratio = (max(root_last, 0.0) / max(root_first, 1e-6)) ** 2
    result.measured_motion = classify_motion(*result.displacement, result.area_ratio)
    result.motion_ok = result.measured_motion == named["motion"]
    result.motion_amount = motion_amount_of(named["motion"], result.displacement, result.area_ratio)
    return result


# ----------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------


def judge_clip(frames: np.ndarray, caption: str) -> JudgeResult:
    """Judge uint8 RGB frames (F, H, W, 3) (or one (H, W, 3) image) against a caption.

    Any aspect (spec v1.1): left/right is judged against W, up/down against H, sizes against
    S = min(W, H). Raises ValueError for a caption outside the grammar or frames of the
    wrong form (each side must be at least 8 pixels).
    """
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (F, H, W, 3) RGB, got {frames.dtype} {frames.shape}")
    if min(frames.shape[1:3]) < 8:
        raise ValueError(f"ShapesWorld frames are at least 8 px on each side, got {frames.shape[2]}x{frames.shape[1]}")
    parsed = parse_caption(caption)
    side = min(frames.shape[1:3])
    labels, distance = nearest_palette(frames)

    # Background: the commonest palette colour on the frame border (objects cover little of it).
    ring = max(1, side // 32)
    border_labels = _border(labels, ring)
    background_index = int(np.bincount(border_labels, minlength=len(PALETTE_NAMES)).argmax())
    background_measured = PALETTE_NAMES[background_index]
    # Its measured RGB (not the palette's) so the alpha maps follow any colour shift.
    background_rgb = _border(frames, ring)[border_labels == background_index].astype(np.float32).mean(0)

    named_colours = [obj["colour"] for obj in parsed["objects"]]
    objects = [
        _judge_object(
            frames,
            labels,
            distance,
            background_rgb,
            named,
            [colour for colour in named_colours if colour != named["colour"]],
        )
        for named in parsed["objects"]
    ]
    background_ok = background_measured == parsed["background"]
    return JudgeResult(
        caption=caption,
        match=background_ok and all(obj.ok for obj in objects),
        background=parsed["background"],
        background_measured=background_measured,
        background_ok=background_ok,
        objects=objects,
    )


def _rate(values: list[bool]) -> float | None:
    return float(np.mean(values)) if values else None


def summarise(results: list[JudgeResult]) -> dict:
    """Match rates: overall, by number of objects, and per attribute.

    Rates are fractions in [0, 1] (None when there is nothing to count). Background is
    counted per clip; colour, shape and motion per named object; size only for objects
    whose caption names it (informational, not part of "match").
    """
    one = [r for r in results if len(r.objects) == 1]
    two = [r for r in results if len(r.objects) == 2]
    objects = [obj for r in results for obj in r.objects]
    return {
        "n": len(results),
        "match_rate": _rate([r.match for r in results]),
        "one_object": {"n": len(one), "match_rate": _rate([r.match for r in one])},
        "two_objects": {"n": len(two), "match_rate": _rate([r.match for r in two])},
        "attributes": {
            "background": _rate([r.background_ok for r in results]),
            "colour": _rate([obj.colour_ok for obj in objects]),
            "shape": _rate([obj.shape_ok for obj in objects]),
            "motion": _rate([obj.motion_ok for obj in objects]),
            "size": _rate([obj.size_ok for obj in objects if obj.size_ok is not None]),
        },
    }


def contact_sheet(
    clips: list[np.ndarray],
    captions: list[str],
    path: str | os.PathLike,
    frames_per_clip: int = 5,
    tile: int | None = None,
) -> Path:
    """Write a PNG grid: one row per clip (evenly spaced frames), its caption underneath.

    clips: uint8 (F, H, W, 3) arrays (sizes may differ; frames are scaled so their longer
    side is `tile` pixels, default the largest clip side, keeping their aspect). Written atomically. Returns the path.
    """
    from PIL import Image, ImageDraw, ImageFont

    from kumovideo.utils.atomic import atomic_file

    if len(clips) != len(captions):
        raise ValueError(f"{len(clips)} clips but {len(captions)} captions; pass one caption per clip")
    if not clips:
        raise ValueError("no clips to draw")
    if frames_per_clip < 1:
        raise ValueError(f"frames_per_clip must be at least 1, got {frames_per_clip}")
    clips = [np.asarray(clip)[None] if np.asarray(clip).ndim == 3 else np.asarray(clip) for clip in clips]
    tile = tile or max(max(clip.shape[1:3]) for clip in clips)
    gap = 4
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_height = int(measure.textbbox((0, 0), "Ag", font=font)[3]) + 2
    sheet_width = frames_per_clip * (tile + gap) + gap
    # Wrap captions to the sheet width; the default font is roughly 6 px per character.
    chars_per_line = max(10, int((sheet_width - 2 * gap) / max(measure.textlength("x", font=font), 1)))
    wrapped = [textwrap.wrap(text, chars_per_line) or [""] for text in captions]
    row_heights = [tile + gap + len(lines) * line_height + gap for lines in wrapped]

    sheet = Image.new("RGB", (sheet_width, sum(row_heights) + gap), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    top = gap
    for clip, lines, row_height in zip(clips, wrapped, row_heights):
        picks = np.unique(np.rint(np.linspace(0, len(clip) - 1, frames_per_clip)).astype(int))
        # The longer side fills the tile; a non-square clip keeps its aspect (white beside it).
        scale = tile / max(clip.shape[1:3])
        fitted = (max(1, round(clip.shape[2] * scale)), max(1, round(clip.shape[1] * scale)))
        for column, frame_index in enumerate(picks):
            image = Image.fromarray(np.ascontiguousarray(clip[frame_index].astype(np.uint8)))
            image = image.resize(fitted, Image.NEAREST)
            sheet.paste(image, (gap + column * (tile + gap), top))
        for line_number, line in enumerate(lines):
            draw.text((gap, top + tile + gap + line_number * line_height), line, fill=(0, 0, 0), font=font)
        top += row_height

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, mode="wb") as png_file:
        sheet.save(png_file, format="PNG")
    return path
