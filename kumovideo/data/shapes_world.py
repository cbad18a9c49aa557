"""ShapesWorld v1.1: the procedural video world the built-in models are trained on.

The world is fixed by the ShapesWorld v1 spec (shared/specs/shapes-world.md): solid backgrounds, one or two filled
shapes (circle, square, triangle) that move or change size linearly in time, and a small
caption grammar that names everything. Because every clip is rendered from a `ClipSpec`,
whether a generated video matches its prompt can be measured
(`kumovideo.evaluation.shapes_judge`).

v1.1 adds any aspect (W x H, each a multiple of 16, within 1:2 .. 2:1; sizes relative to
S = min(W, H)), a motion amount m in [0.5, 1.5] that scales travel and growth, the held-back
colour cyan and sound; a v1 clip is a v1.1 clip with W = H = S and m = 1.

Coordinates: x grows to the right, y grows downwards (image rows), pixel (i, j) covers
the unit square [j, j+1) x [i, i+1) so its centre is (j + 0.5, i + 0.5). "Moves up" means
the centre's y decreases.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from kumovideo.geometry import check_aspect
from kumovideo.utils.errors import KumoInputError

# ----------------------------------------------------------------------------------------
# The world's constants (spec: "Palettes", "Objects")
# ----------------------------------------------------------------------------------------

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (110, 110, 110),
    "navy": (20, 30, 80),
    "forest": (20, 70, 30),
}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (60, 200, 70),
    "blue": (50, 100, 240),
    "yellow": (245, 215, 40),
    "white": (240, 240, 240),
    "purple": (170, 70, 210),
}

# v1.1 "A colour held back for fine-tuning": never in a base model's training clips, so that
# teaching a model a new concept (LoRA or full fine-tuning) can be measured. Kept out of
# COLOURS, which every base-model draw samples from; a draw takes it only when asked
# (`sample_clip_spec(include=...)`); HELD_BACK is the one the `--held-back` flags include.
HELD_BACK = "cyan"
HELD_BACK_COLOURS: dict[str, tuple[int, int, int]] = {HELD_BACK: (40, 220, 220)}

# Every colour an object may have: what rendering, captions and the judge know.
ALL_COLOURS: dict[str, tuple[int, int, int]] = {**COLOURS, **HELD_BACK_COLOURS}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# Base radius r as a fraction of the frame side S.
SIZES: dict[str, float] = {"small": 0.10, "large": 0.16}

MOTIONS: tuple[str, ...] = (
    "moves left",
    "moves right",
    "moves up",
    "moves down",
    "stays still",
    "grows",
    "shrinks",
)

# Distance the centre travels over the clip, as a fraction of S.
TRAVEL = 0.40

# Unit direction (x, y) of each moving phrase; y points down the image.
MOTION_DIRECTIONS: dict[str, tuple[int, int]] = {
    "moves left": (-1, 0),
    "moves right": (1, 0),
    "moves up": (0, -1),
    "moves down": (0, 1),
    "stays still": (0, 0),
    "grows": (0, 0),
    "shrinks": (0, 0),
}

# Radius scale (first frame, last frame) of each phrase, as multiples of r, at motion amount 1.
RADIUS_SCALES: dict[str, tuple[float, float]] = {
    "grows": (0.7, 1.5),
    "shrinks": (1.5, 0.7),
}

# v1.1 "Motion amount": m scales travel (0.40 m W or H) and growth (0.7 r -> (0.7 + 0.8 m) r).
MOTION_AMOUNT_RANGE = (0.5, 1.5)


def radius_scales(motion: str, motion_amount: float = 1.0) -> tuple[float, float]:
    """(first, last) radius of a phrase as multiples of r: grows 0.7 -> 0.7 + 0.8 m, shrinks the reverse."""
    if motion not in RADIUS_SCALES:
        return 1.0, 1.0
    big = 0.7 + 0.8 * motion_amount
    return (0.7, big) if motion == "grows" else (big, 0.7)


# v1.1 "Sound": each colour's tone (Hz, perfect fourths apart; cyan is the held-back colour).
PITCHES: dict[str, float] = {
    "red": 220.0,
    "green": 293.7,
    "blue": 392.0,
    "yellow": 523.3,
    "white": 698.5,
    "purple": 932.3,
    "cyan": 1244.5,
}
SAMPLE_RATE = 16_000
GLIDE_SEMITONES = 2.0  # pitch change per 0.40 * H of upward travel
LOUDEST_AMPLITUDE = 0.2  # amplitude of an object of radius 0.16 * S

DEFAULT_SIZE = 128
DEFAULT_NUM_FRAMES = 17
DEFAULT_FPS = 8


def motion_score_of(motion_amount: float, num_frames: int = DEFAULT_NUM_FRAMES, fps: float = DEFAULT_FPS) -> float:
    """The motion score the built-in models are conditioned on for a clip of amount m: the
    travel of a left/right move, 0.40 m W over the clip, in the data pipeline's dynamic-score
    unit (percent of the frame width per second): 20 m for 17 frames at 8 fps. The measured
    dynamic score (mean flow over every pixel) mixes speed with object size and count
    (Spearman 0.39 with m over 300 clips), so the world's own number is the cleaner signal."""
    seconds = max(num_frames - 1, 1) / fps
    return 100.0 * TRAVEL * motion_amount / seconds


# Two objects' bounding boxes keep at least this gap (fraction of S) in every frame, so
# their anti-aliased edges never touch. Two large growing objects side by side need
# 2 * 2 * 1.5 * 0.16 = 0.96 of the frame, so the gap must stay below 0.04.
_MIN_GAP = 0.02

# Rejection sampling of start positions: tries per placement, then placements per clip.
_PLACEMENT_TRIES = 100
_CLIP_TRIES = 100


# ----------------------------------------------------------------------------------------
# Clip descriptions
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectSpec:
    """One object: what it is, how it moves and where its centre starts (pixels)."""

    colour: str
    shape: str
    size: str  # "small" or "large"
    motion: str
    start_center: tuple[float, float]  # (x, y) in pixels at the first frame


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip.

    `name_size` says whether the caption names the size; it only applies to one-object
    clips (two-object captions never name sizes).
    """

    background: str
    objects: tuple[ObjectSpec, ...]
    size: int = DEFAULT_SIZE  # S = min(W, H); the side of a square clip
    num_frames: int = DEFAULT_NUM_FRAMES
    name_size: bool = False
    width: int | None = None  # v1.1 any aspect: W and H (None: S, a square clip)
    height: int | None = None
    motion_amount: float = 1.0  # v1.1 m in [0.5, 1.5], never named in the caption

    @property
    def frame(self) -> tuple[int, int]:
        """(W, H) in pixels."""
        return (self.width or self.size, self.height or self.size)


MAX_SIZE = 1024  # a 17-frame clip at this side is already 50 MB of uint8 frames


def check_size(size: int) -> None:
    """Raise KumoInputError unless `size` is a legal frame side."""
    if not isinstance(size, (int, np.integer)) or not 32 <= size <= MAX_SIZE or size % 16 != 0:
        raise KumoInputError(
            f"video size {size!r} is not allowed; use a multiple of 16 from 32 to {MAX_SIZE} "
            "(the built-in model uses 128, or 64 without an accelerator)"
        )


def frame_size(size: int, width: int | None = None, height: int | None = None) -> tuple[int, int]:
    """(W, H) of a clip from a square side and optional width / height, each checked, and
    the aspect within 1:2 .. 2:1 (spec v1.1 "Frame size")."""
    width, height = width or size, height or size
    check_size(width)
    check_size(height)
    check_aspect(width, height, what="frame ")  # v1.1 "Frame size": 1:2 .. 2:1, the aspect buckets' range
    return width, height


def check_motion_amount(motion_amount: float) -> None:
    """Raise KumoInputError unless m lies in the spec's [0.5, 1.5]."""
    low, high = MOTION_AMOUNT_RANGE
    if not isinstance(motion_amount, (int, float, np.floating)) or not low <= float(motion_amount) <= high:
        raise KumoInputError(f"motion amount {motion_amount!r} is outside ShapesWorld's [{low}, {high}]")


def parse_frame_sizes(text: str | None, flag: str = "--buckets") -> list[tuple[int, int]] | None:
    """'112x64,64x112' -> [(112, 64), (64, 112)]: frames (multiples of 16, within 1:2 .. 2:1);
    `flag` names the setting in the error."""
    if text is None:
        return None
    sizes = []
    for item in text.split(","):
        width, sep, height = item.strip().lower().partition("x")
        if not (sep and width.isdigit() and height.isdigit()):
            raise KumoInputError(f"{flag} {text!r}: write sizes as WxH separated by commas, e.g. 64x64,112x64")
        sizes.append(frame_size(int(width), int(width), int(height)))
    return sizes


def parse_motion_range(text: str | None, flag: str = "--motion-range") -> tuple[float, float] | None:
    """'0.5,1.5' -> (0.5, 1.5), both within the world's motion amounts; `flag` names the
    setting in the error."""
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise KumoInputError(f"{flag} {text!r}: give two numbers LO,HI, e.g. 0.5,1.5") from None
    check_motion_amount(low)
    check_motion_amount(high)
    if low > high:
        raise KumoInputError(f"{flag} {text!r}: LO must not exceed HI")
    return low, high


def check_num_frames(num_frames: int) -> None:
    """Raise KumoInputError unless `num_frames` is 4k+1 (1 is a still image)."""
    if not isinstance(num_frames, (int, np.integer)) or num_frames < 1 or (num_frames - 1) % 4 != 0:
        raise KumoInputError(f"frame count {num_frames!r} is not allowed; use 4k+1 frames such as 1, 9, 17 or 33")


def validate_video_shape(size: int, num_frames: int) -> None:
    """Raise KumoInputError unless (size, num_frames) is a legal ShapesWorld video shape."""
    check_size(size)
    check_num_frames(num_frames)


def _frame(clip_size: int | tuple[int, int]) -> tuple[int, int]:
    """(W, H) from a square side S or a (W, H) pair."""
    return (clip_size, clip_size) if isinstance(clip_size, (int, np.integer)) else tuple(clip_size)


def object_radius(obj: ObjectSpec, clip_size: int | tuple[int, int]) -> float:
    """Base radius r of an object in pixels (a fraction of S = min(W, H))."""
    return SIZES[obj.size] * min(_frame(clip_size))


def object_track(
    obj: ObjectSpec, clip_size: int | tuple[int, int], num_frames: int, motion_amount: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centre x, centre y and radius (pixels) of an object, each shape (F,).

    clip_size: S (square) or (W, H). Motion is linear in time from the first frame to the
    last: left/right travel 0.40 m W, up/down 0.40 m H; a one-frame clip is the first frame.
    """
    width, height = _frame(clip_size)
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    dir_x, dir_y = MOTION_DIRECTIONS[obj.motion]
    cx = obj.start_center[0] + dir_x * TRAVEL * motion_amount * width * t
    cy = obj.start_center[1] + dir_y * TRAVEL * motion_amount * height * t
    scale_first, scale_last = radius_scales(obj.motion, motion_amount)
    radius = object_radius(obj, clip_size) * (scale_first + (scale_last - scale_first) * t)
    return cx, cy, radius


# ----------------------------------------------------------------------------------------
# Sampling clips
# ----------------------------------------------------------------------------------------


def _start_range(
    motion: str, radius: float, clip_size: int | tuple[int, int], num_frames: int, motion_amount: float = 1.0
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Allowed start-centre ranges (x range, y range) that keep the object in frame.

    Centre and radius are linear in time, so the object is inside the frame in every
    frame exactly when it is inside at the first and the last frame.
    """
    dir_x, dir_y = MOTION_DIRECTIONS[motion]
    scale_first, scale_last = radius_scales(motion, motion_amount)
    if num_frames == 1:
        scale_last = scale_first
    ranges = []
    for direction, side in zip((dir_x, dir_y), _frame(clip_size)):
        travel = TRAVEL * motion_amount * side if num_frames > 1 else 0.0
        ends = [(0.0, radius * scale_first), (travel, radius * scale_last)]
        low = max(r - direction * d for d, r in ends)
        high = min(side - r - direction * d for d, r in ends)
        ranges.append((low, high))
    return ranges[0], ranges[1]


def boxes_apart(
    a: ObjectSpec,
    b: ObjectSpec,
    clip_size: int | tuple[int, int],
    num_frames: int,
    gap: float = 0.0,
    motion_amount: float = 1.0,
) -> bool:
    """True when the two objects' bounding boxes are at least `gap` pixels apart in every frame."""
    ax, ay, ar = object_track(a, clip_size, num_frames, motion_amount)
    bx, by, br = object_track(b, clip_size, num_frames, motion_amount)
    apart_x = np.abs(ax - bx) - (ar + br) >= gap
    apart_y = np.abs(ay - by) - (ar + br) >= gap
    return bool(np.all(apart_x | apart_y))


def _place_objects(
    rng: np.random.Generator,
    objects: list[dict],
    clip_size: int | tuple[int, int],
    num_frames: int,
    motion_amount: float = 1.0,
) -> tuple[ObjectSpec, ...] | None:
    """Draw start centres for objects given as dicts (colour, shape, size, motion).

    Returns None when no non-overlapping placement was found in the allowed tries; the
    caller then redraws.
    """
    placed: list[ObjectSpec] = []
    for attrs in objects:
        short_side = min(_frame(clip_size))
        radius = SIZES[attrs["size"]] * short_side
        (x_low, x_high), (y_low, y_high) = _start_range(attrs["motion"], radius, clip_size, num_frames, motion_amount)
        if x_low > x_high or y_low > y_high:
            return None  # cannot fit in the frame at all (not possible for S >= 32)
        for _ in range(_PLACEMENT_TRIES):
            start = (float(rng.uniform(x_low, x_high)), float(rng.uniform(y_low, y_high)))
            candidate = ObjectSpec(attrs["colour"], attrs["shape"], attrs["size"], attrs["motion"], start)
            gap = _MIN_GAP * short_side
            if all(boxes_apart(candidate, other, clip_size, num_frames, gap, motion_amount) for other in placed):
                placed.append(candidate)
                break
        else:
            return None
    return tuple(placed)


def _choice(rng: np.random.Generator, options) -> str:
    options = list(options)
    return options[int(rng.integers(len(options)))]


def sample_clip_spec(
    rng: np.random.Generator,
    size: int = DEFAULT_SIZE,
    num_frames: int = DEFAULT_NUM_FRAMES,
    num_objects: int | None = None,
    name_size: bool | None = None,
    width: int | None = None,
    height: int | None = None,
    motion_amount: float = 1.0,
    include: str | None = None,
) -> ClipSpec:
    """Draw a random clip of the world.

    num_objects: 1 or 2 (None: either, equally likely). name_size: whether a one-object
    caption names the size (None: a coin flip). Two objects never share a colour.
    width / height (v1.1): a W x H frame instead of S x S; motion_amount: m. Objects that
    find no room at that amount are redrawn (the spec: they are not drawn together).
    include: a colour of ALL_COLOURS one object must have (e.g. the held-back cyan): the
    object of a one-object clip; for two, one of them at a random place in the caption, the
    other drawn from COLOURS. None draws colours from COLOURS only, with the same rng calls
    as before `include` existed, so every seeded stream is unchanged.
    """
    validate_video_shape(size, num_frames)
    frame = frame_size(size, width, height)
    check_motion_amount(motion_amount)
    if include is not None and include not in ALL_COLOURS:
        raise ValueError(f"unknown colour {include!r} to include; colours are {', '.join(ALL_COLOURS)}")
    if num_objects is None:
        num_objects = int(rng.integers(1, 3))
    if num_objects not in (1, 2):
        raise ValueError(f"num_objects must be 1 or 2, got {num_objects!r}")
    for _ in range(_CLIP_TRIES):
        background = _choice(rng, BACKGROUNDS)
        colours = _draw_colours(rng, num_objects, include)
        attrs = [
            {
                "colour": colour,
                "shape": _choice(rng, SHAPES),
                "size": _choice(rng, SIZES),
                "motion": _choice(rng, MOTIONS),
            }
            for colour in colours
        ]
        objects = _place_objects(rng, attrs, frame, num_frames, motion_amount)
        if objects is not None:
            break
    else:
        raise RuntimeError("could not place the objects of a random clip; this is a bug")
    if num_objects == 2:
        name_size = False
    elif name_size is None:
        name_size = bool(rng.integers(2))
    return _spec(background, objects, frame, num_frames, bool(name_size), motion_amount)


def _draw_colours(rng: np.random.Generator, num_objects: int, include: str | None) -> list[str]:
    """The objects' colours, never repeated: from COLOURS, or `include` plus (for two
    objects) another from COLOURS, with `include` first or second by a coin flip."""
    if include is None:
        return [str(colour) for colour in rng.choice(list(COLOURS), size=num_objects, replace=False)]
    if num_objects == 1:
        return [include]
    other = _choice(rng, [colour for colour in COLOURS if colour != include])
    return [include, other] if rng.integers(2) == 0 else [other, include]


def _spec(background, objects, frame, num_frames, name_size, motion_amount) -> ClipSpec:
    """A ClipSpec for a (W, H) frame: a square one keeps width/height None (a v1 clip)."""
    width, height = frame
    square = width == height
    return ClipSpec(
        background,
        objects,
        min(width, height),
        num_frames,
        name_size,
        None if square else width,
        None if square else height,
        float(motion_amount),
    )


def clip_spec_from_caption(
    caption_text: str,
    rng: np.random.Generator,
    size: int = DEFAULT_SIZE,
    num_frames: int = DEFAULT_NUM_FRAMES,
    width: int | None = None,
    height: int | None = None,
    motion_amount: float = 1.0,
) -> ClipSpec:
    """A random clip that satisfies `caption_text` (sizes not named are drawn at random),
    in a W x H frame (v1.1; default S x S) at motion amount m."""
    validate_video_shape(size, num_frames)
    frame = frame_size(size, width, height)
    check_motion_amount(motion_amount)
    parsed = parse_caption(caption_text)
    for _ in range(_CLIP_TRIES):
        attrs = [dict(obj, size=obj["size"] or _choice(rng, SIZES)) for obj in parsed["objects"]]
        objects = _place_objects(rng, attrs, frame, num_frames, motion_amount)
        if objects is not None:
            break
    else:
        raise KumoInputError(
            f"the objects of {caption_text!r} find no room in a {frame[0]}x{frame[1]} frame at motion amount "
            f"{motion_amount:g}; lower the motion amount or use a larger frame"
        )
    name_size = len(objects) == 1 and parsed["objects"][0]["size"] is not None
    return _spec(parsed["background"], objects, frame, num_frames, name_size, motion_amount)


def placed_boxes(
    objects: list[dict], rng: np.random.Generator, width: int, height: int, num_frames: int
) -> list[tuple[ObjectSpec, np.ndarray]] | None:
    """Objects given as dicts (colour, shape, size, motion) placed by this world's rules
    (inside the frame, apart in every frame), each with its box per frame, (F, 4) x0, y0, x1,
    y1 as fractions of W and H; None when there is no room at this size."""
    frame = (width, height)
    for _ in range(_CLIP_TRIES):
        placed = _place_objects(rng, objects, frame, num_frames)
        if placed is not None:
            break
    else:
        return None
    tracks = []
    for obj in placed:
        cx, cy, r = object_track(obj, frame, num_frames)
        boxes = np.stack([(cx - r) / width, (cy - r) / height, (cx + r) / width, (cy + r) / height], axis=1)
        tracks.append((obj, boxes))
    return tracks


def plan_object_boxes(
    caption_text: str, rng: np.random.Generator, width: int, height: int, num_frames: int
) -> list[tuple[str, np.ndarray]] | None:
    """A layout for a two-object caption: for each object, its one-object caption (the clause
    on the caption's background) and its box per frame (`placed_boxes`), placed as if both
    objects were large, so that either size fits its box. None for a one-object caption or
    text outside the grammar (nothing to bind)."""
    try:
        parsed = parse_caption(caption_text)
    except ValueError:
        return None
    if len(parsed["objects"]) != 2:
        return None
    tracks = placed_boxes([dict(obj, size="large") for obj in parsed["objects"]], rng, width, height, num_frames)
    if tracks is None:
        return None  # no room at this size: generate without a layout
    background = parsed["background"]
    return [(f"a {obj.colour} {obj.shape} {obj.motion} on a {background} background", boxes) for obj, boxes in tracks]


# ----------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------


def caption(spec: ClipSpec, name_size: bool | None = None) -> str:
    """The caption of a clip in the spec's grammar.

    name_size overrides `spec.name_size`; sizes are never named for two objects.
    """
    if name_size is None:
        name_size = spec.name_size
    if len(spec.objects) == 1:
        obj = spec.objects[0]
        size_word = f"{obj.size} " if name_size else ""
        return f"a {size_word}{obj.colour} {obj.shape} {obj.motion} on a {spec.background} background"
    if len(spec.objects) == 2:
        words = [(obj.colour, obj.shape, obj.motion) for obj in spec.objects]
        return _two_object_caption(words, spec.background)
    raise ValueError(f"a clip has one or two objects, this one has {len(spec.objects)}")


def attribute_swaps(text: str) -> list[str]:
    """`text` with its two objects' shapes exchanged, and with their motions exchanged (each only
    where the two differ): the same words, other pairs. Hard negatives for binding, as NegCLIP's
    swapped-attribute captions (Yuksekgonul et al. 2023): a model that reads the caption as a bag
    of words cannot tell them from `text`. Empty for a one-object caption, two objects alike in
    both, or text outside the grammar."""
    try:
        parsed = parse_caption(text)
    except ValueError:
        return []
    if len(parsed["objects"]) != 2:
        return []
    swaps = []
    for attribute in ("shape", "motion"):
        first, second = (dict(obj) for obj in parsed["objects"])
        if first[attribute] != second[attribute]:
            first[attribute], second[attribute] = second[attribute], first[attribute]
            words = [(o["colour"], o["shape"], o["motion"]) for o in (first, second)]
            swaps.append(_two_object_caption(words, parsed["background"]))
    return swaps


def swapped_caption(text: str, rng: np.random.Generator) -> str | None:
    """One of `attribute_swaps(text)`, drawn by `rng`; None where there is none."""
    swaps = attribute_swaps(text)
    return swaps[int(rng.integers(len(swaps)))] if swaps else None


def _two_object_caption(words: list[tuple[str, str, str]], background: str) -> str:
    """The two-object caption of (colour, shape, motion) per object, in the grammar's order."""
    first, second = (" ".join(w) for w in words)
    return f"a {first} and a {second} on a {background} background"


HELD_OUT_BUCKETS = 8


def is_held_out(text: str) -> bool:
    """Whether a caption belongs to the held-out split (about 1 in 8 captions).

    The split is a fixed hash of the caption text, so it is the same on every machine and
    in every run: a training run that drops these captions (`holdout_captions: true`) never
    sees them as-is, and `kumo eval shapes` can judge on captions that are new to the model
    even when the training stream has covered most of the grammar (the one-object grammar
    has only 1,512 captions).
    """
    return zlib.crc32(text.encode("utf-8")) % HELD_OUT_BUCKETS == 0


def _alternatives(words) -> str:
    return "|".join(re.escape(word) for word in words)


_OBJECT_NO_SIZE = rf"({_alternatives(ALL_COLOURS)}) ({_alternatives(SHAPES)}) ({_alternatives(MOTIONS)})"
_ONE_OBJECT_RE = re.compile(
    rf"a (?:({_alternatives(SIZES)}) )?{_OBJECT_NO_SIZE} on a ({_alternatives(BACKGROUNDS)}) background"
)
_TWO_OBJECTS_RE = re.compile(
    rf"a {_OBJECT_NO_SIZE} and a {_OBJECT_NO_SIZE} on a ({_alternatives(BACKGROUNDS)}) background"
)
_GRAMMAR = (
    "'a [small|large] COLOUR SHAPE MOTION on a BACKGROUND background' or "
    "'a COLOUR SHAPE MOTION and a COLOUR SHAPE MOTION on a BACKGROUND background'"
)
_VOCABULARY = (
    {"a", "and", "on", "background", "moves", "left", "right", "up", "down", "stays", "still", "grows", "shrinks"}
    | set(SIZES)
    | set(ALL_COLOURS)
    | set(SHAPES)
    | set(BACKGROUNDS)
)


def parse_caption(text: str) -> dict:
    """Invert `caption`: {"background": str, "objects": [{"colour", "shape", "size", "motion"}]}.

    "size" is None when the caption does not name it. Raises ValueError for text outside
    the grammar (surrounding whitespace is ignored, nothing else is forgiven).
    """
    if not isinstance(text, str):
        raise ValueError(f"a caption must be a string, got {type(text).__name__}")
    stripped = text.strip()
    match = _ONE_OBJECT_RE.fullmatch(stripped)
    if match:
        size, colour, shape, motion, background = match.groups()
        objects = [{"colour": colour, "shape": shape, "size": size, "motion": motion}]
        return {"background": background, "objects": objects}
    match = _TWO_OBJECTS_RE.fullmatch(stripped)
    if match:
        colour1, shape1, motion1, colour2, shape2, motion2, background = match.groups()
        if colour1 == colour2:
            raise ValueError(f"caption {text!r} names two {colour1} objects; two objects never share a colour")
        objects = [
            {"colour": colour1, "shape": shape1, "size": None, "motion": motion1},
            {"colour": colour2, "shape": shape2, "size": None, "motion": motion2},
        ]
        return {"background": background, "objects": objects}
    raise ValueError(f"caption {text!r} is not in the ShapesWorld grammar {_GRAMMAR}{_caption_hint(stripped)}")


def _caption_hint(text: str) -> str:
    """A short reason why `text` failed to parse, to make the error actionable."""
    unknown = [word for word in text.split(" ") if word not in _VOCABULARY]
    if text != text.lower():
        return "; captions are lowercase"
    if unknown:
        return (
            f"; unknown words {unknown}: colours are {', '.join(ALL_COLOURS)}; shapes are {', '.join(SHAPES)}; "
            f"backgrounds are {', '.join(BACKGROUNDS)}"
        )
    if " and " in text and any(f"{size} " in text for size in SIZES):
        return "; two-object captions never name sizes"
    return "; the words are known but not in grammar order"


# ----------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------


def shape_signed_distance(
    shape: str, x: np.ndarray, y: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray
) -> np.ndarray:
    """Signed distance in pixels from points (x, y) to a shape's edge (negative inside).

    Inside the shape this is exact; outside near corners it is the distance to the
    nearest edge line, which is all anti-aliasing needs.
    """
    dx = x - cx
    dy = y - cy
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - radius
    if shape == "square":
        return np.maximum(np.abs(dx) - radius, np.abs(dy) - radius)
    if shape == "triangle":
        # Apex (cx, cy - r); base from (cx - r, cy + r) to (cx + r, cy + r). The slanted
        # sides rise 2r over r, so their outward normals are (-+2, -1) / sqrt(5).
        inv_sqrt5 = 1.0 / np.sqrt(5.0)
        base = dy - radius
        left = (-2.0 * (dx + radius) - (dy - radius)) * inv_sqrt5
        right = (2.0 * (dx - radius) - (dy - radius)) * inv_sqrt5
        return np.maximum(base, np.maximum(left, right))
    raise ValueError(f"unknown shape {shape!r}; shapes are {', '.join(SHAPES)}")


def shape_coverage(
    shape: str, size: int | tuple[int, int], cx: np.ndarray, cy: np.ndarray, radius: np.ndarray
) -> np.ndarray:
    """Fraction of each pixel covered by the shape, shape (F, H, W), in [0, 1].

    size: S (square) or (W, H). cx, cy, radius: per-frame values, shape (F,). Coverage is the
    signed distance at the pixel centre mapped through a one-pixel ramp: a cheap, smooth
    anti-aliased edge.
    """
    width, height = _frame(size)
    x = (np.arange(width, dtype=np.float32) + 0.5)[None, None, :]
    y = (np.arange(height, dtype=np.float32) + 0.5)[None, :, None]
    cx = np.asarray(cx, dtype=np.float32)[:, None, None]
    cy = np.asarray(cy, dtype=np.float32)[:, None, None]
    radius = np.asarray(radius, dtype=np.float32)[:, None, None]
    distance = shape_signed_distance(shape, x, y, cx, cy, radius)
    return np.clip(0.5 - distance, 0.0, 1.0)


def render_clip(spec: ClipSpec) -> np.ndarray:
    """Render a clip to uint8 RGB frames, shape (F, H, W, 3)."""
    (width, height), num_frames = spec.frame, spec.num_frames
    frames = np.empty((num_frames, height, width, 3), dtype=np.float32)
    frames[:] = np.asarray(BACKGROUNDS[spec.background], dtype=np.float32)
    for obj in spec.objects:
        cx, cy, radius = object_track(obj, spec.frame, num_frames, spec.motion_amount)
        alpha = shape_coverage(obj.shape, spec.frame, cx, cy, radius)[..., None]
        colour = np.asarray(ALL_COLOURS[obj.colour], dtype=np.float32)
        frames += alpha * (colour - frames)  # "over" compositing
    return np.rint(frames).astype(np.uint8)


def num_audio_samples(num_frames: int, fps: float = DEFAULT_FPS, sample_rate: int = SAMPLE_RATE) -> int:
    """Samples in a soundtrack as long as the clip: F / fps seconds."""
    return round(num_frames * sample_rate / fps)


def render_sound(spec: ClipSpec, fps: float = DEFAULT_FPS, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The clip's soundtrack (spec v1.1 "Sound"): mono float32 in [-1, 1], shape (F / fps * sr,).

    Each object is one sine tone: pitch from its colour, gliding 2 semitones per 0.40 * H of
    upward travel; amplitude 0.2 * (r_t / 0.16 S)^2; phase continuous. Frame i shows the
    motion at t = i / (F - 1) from time i / fps on, so audio time tau maps to
    t = tau * fps / (F - 1), held at 1 through the last frame.
    """
    n = num_audio_samples(spec.num_frames, fps, sample_rate)
    tau = np.arange(n, dtype=np.float64) / sample_rate
    t = np.clip(tau * fps / (spec.num_frames - 1), 0.0, 1.0) if spec.num_frames > 1 else np.zeros(n)
    sound = np.zeros(n, dtype=np.float64)
    for obj in spec.objects:
        dir_x, dir_y = MOTION_DIRECTIONS[obj.motion]
        rise = -dir_y * spec.motion_amount * t  # upward travel in units of 0.40 * H (y grows downwards)
        frequency = PITCHES[obj.colour] * 2.0 ** (rise * GLIDE_SEMITONES / 12.0)
        scale_first, scale_last = radius_scales(obj.motion, spec.motion_amount)
        radius = SIZES[obj.size] * (scale_first + (scale_last - scale_first) * t)  # fraction of S
        amplitude = LOUDEST_AMPLITUDE * (radius / SIZES["large"]) ** 2
        phase = 2.0 * np.pi * np.cumsum(frequency) / sample_rate
        sound += amplitude * np.sin(phase - phase[0])
    return sound.astype(np.float32)


# ----------------------------------------------------------------------------------------
# Seeded examples, the training dataset and clips on disk
# ----------------------------------------------------------------------------------------


# Tags the generator of an example's object count under a two-object share, [seed, index, tag].
_TWO_OBJECT_TAG = 37


def sample_example(
    seed: int,
    index: int,
    size: int = DEFAULT_SIZE,
    num_frames: int = DEFAULT_NUM_FRAMES,
    image_prob: float = 0.0,
    width: int | None = None,
    height: int | None = None,
    motion_amounts: tuple[float, float] | None = None,
    include: str | None = None,
    two_object_share: float | None = None,
) -> tuple[ClipSpec, str]:
    """Example `index` of the stream with `seed`: its spec (to render) and caption.

    Each example has its own generator seeded by (seed, index), so any shard of the
    stream can be produced without producing the rest. With probability `image_prob`
    the example is a still image: the first frame of the clip, with the clip's caption.
    v1.1: a W x H frame (`width`, `height`), and m drawn uniformly from `motion_amounts`
    (None: m = 1, and the stream is v1's); `include`, a colour one object must have
    (`sample_clip_spec`; None: the base palette only). `two_object_share`: the chance the
    example shows two objects (None: one or two, equally likely, and the stream is as ever).
    """
    rng = np.random.default_rng([seed, index])
    is_image = rng.random() < image_prob
    motion_amount = 1.0 if motion_amounts is None else float(rng.uniform(*motion_amounts))
    num_objects = None
    if two_object_share is not None:  # drawn apart from `rng`, as `include` is chosen apart
        num_objects = 2 if np.random.default_rng([seed, index, _TWO_OBJECT_TAG]).random() < two_object_share else 1
    spec = sample_clip_spec(
        rng,
        size=size,
        num_frames=num_frames,
        num_objects=num_objects,
        width=width,
        height=height,
        motion_amount=motion_amount,
        include=include,
    )
    text = caption(spec)
    if is_image:
        spec = dataclasses.replace(spec, num_frames=1)
    return spec, text


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) frames -> float tensor (F, 3, H, W) in [-1, 1]."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    return video / 127.5 - 1.0


class ShapesWorldDataset(IterableDataset):
    """Random ShapesWorld clips with captions, rendered on the fly.

    Yields {"video": float tensor (F, 3, S, S) in [-1, 1], "caption": str}; still
    images (image_prob of the examples) have F = 1, so batch them apart from videos.

    The stream is the examples 0, 1, 2, ... of `sample_example(seed, index)` (infinite
    when `length` is None). It is split between torch.distributed ranks and DataLoader
    workers by index (example i goes to shard i mod num_shards), so shards never repeat
    each other and the same seed always gives the same examples.
    """

    def __init__(
        self,
        size: int = DEFAULT_SIZE,
        num_frames: int = DEFAULT_NUM_FRAMES,
        image_prob: float = 0.0,
        seed: int = 0,
        length: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        validate_video_shape(size, num_frames)
        if not 0.0 <= image_prob <= 1.0:
            raise KumoInputError(f"image_prob {image_prob!r} must be between 0 and 1")
        if length is not None and length < 0:
            raise KumoInputError(f"length {length!r} must be None (infinite) or at least 0")
        self.size = size
        self.num_frames = num_frames
        self.image_prob = image_prob
        self.seed = seed
        self.length = length
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("an infinite ShapesWorldDataset has no length")
        return self.length

    def _shard(self) -> tuple[int, int]:
        """(this shard's id, number of shards) over distributed ranks x loader workers."""
        rank, world_size = self.rank, self.world_size
        if rank is None or world_size is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if distributed else 0
            world_size = torch.distributed.get_world_size() if distributed else 1
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        return rank * num_workers + worker_id, world_size * num_workers

    def __iter__(self):
        shard, num_shards = self._shard()
        index = shard
        while self.length is None or index < self.length:
            spec, text = sample_example(self.seed, index, self.size, self.num_frames, self.image_prob)
            yield {"video": frames_to_tensor(render_clip(spec)), "caption": text}
            index += num_shards


def render_to_disk(
    n: int,
    out_dir: str | os.PathLike,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    num_frames: int = DEFAULT_NUM_FRAMES,
    fps: int = DEFAULT_FPS,
    progress: bool = False,
    width: int | None = None,
    height: int | None = None,
    motion_amounts: tuple[float, float] | None = None,
    include: str | None = None,
) -> list[Path]:
    """Render examples 0..n-1 of the stream `seed` to out_dir as clip_NNNNN.mp4 + .txt.

    The clips are those of `ShapesWorldDataset(seed=seed, image_prob=0)`, as H.264 yuv420p
    mp4. Each file is written to a temporary name and then renamed, so a reader never
    sees half a file. With v1.1's settings (a W x H frame, m drawn from `motion_amounts`)
    each clip also gets clip_NNNNN.json: {"motion_amount", "motion_score", "width", "height"}.
    `include`: a colour every clip shows (`sample_example`), e.g. the held-back cyan.
    Returns the mp4 paths.
    """
    import json

    from tqdm import tqdm

    from kumovideo.utils.atomic import atomic_file
    from kumovideo.utils.video_io import write_video

    validate_video_shape(size, num_frames)
    frame = frame_size(size, width, height)
    v11 = width is not None or height is not None or motion_amounts is not None
    if n < 1:
        raise KumoInputError(f"number of clips {n!r} must be at least 1")
    if fps < 1:
        raise KumoInputError(f"fps {fps!r} must be at least 1")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise KumoInputError(f"{out_dir} is an existing file, not a folder; pass a folder path")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in tqdm(range(n), desc="rendering ShapesWorld clips", unit="clip", disable=not progress):
        spec, text = sample_example(
            seed, index, size, num_frames, width=width, height=height, motion_amounts=motion_amounts, include=include
        )
        video_path = out_dir / f"clip_{index:05d}.mp4"
        write_video(render_clip(spec), video_path, fps=fps)  # H.264 yuv420p (sides are even)
        with atomic_file(out_dir / f"clip_{index:05d}.txt", mode="w") as caption_file:
            caption_file.write(text + "\n")
        if v11:
            sidecar = {
                "motion_amount": spec.motion_amount,
                "motion_score": round(motion_score_of(spec.motion_amount, num_frames, fps), 4),
                "width": frame[0],
                "height": frame[1],
            }
            with atomic_file(out_dir / f"clip_{index:05d}.json", mode="w") as sidecar_file:
                sidecar_file.write(json.dumps(sidecar) + "\n")
        paths.append(video_path)
    return paths
