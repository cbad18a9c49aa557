"""Settings for `kumo data`: one dataclass per stage, loaded from a YAML file.

`configs/data_filter.yaml` lists every key with its default; a file only needs the keys it
changes. Unknown keys and values of the wrong type are user errors (`KumoInputError`), so a
typo in a threshold never silently falls back to the default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kumovideo.geometry import DEFAULT_GEOMETRY
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.numbers import COUNT_MAX, FPS_MAX, NumberRange

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp")


@dataclass
class ScanConfig:
    """`kumo data scan`: probing and per-clip analysis, done in one decode pass per video."""

    extensions: list[str] = field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    # Frames are scaled (by the decoder, cheaply) to this width for scene, overlay and motion
    # analysis. 256 px is what PySceneDetect itself downscales to; detail beyond that adds
    # cost, not accuracy, for these measures. Smaller inputs are analysed at native width.
    analysis_width: int = 256
    # Clips shorter than this (after removing transition frames) are dropped at scan time.
    min_clip_seconds: float = 1.0
    # --- scene transitions (scenes.py) ---
    # PySceneDetect ContentDetector threshold (HSV change score, 0-255). Its default of 27.
    content_threshold: float = 27.0
    # PySceneDetect AdaptiveDetector: ratio of a frame's change score to its neighbours'.
    adaptive_threshold: float = 3.0
    # Mean pixel level (0-255) under which a frame counts as faded to black, provided nothing
    # in it is bright either (scenes.DARK_PEAK_RATIO): a dark background with a bright
    # subject on it is content, not a fade.
    fade_threshold: float = 12.0
    # Frame-difference confirmation of a ContentDetector cut: the luma difference at the cut
    # must be this many times the median of its neighbours (fast motion is high everywhere,
    # a cut is a spike), or the colour histograms either side must differ by this much.
    cut_spike_ratio: float = 2.5
    cut_hist_distance: float = 0.35
    # Candidate boundaries from different detectors closer than this (frames) are one boundary.
    merge_frames: int = 4
    # Longest fade (frames, each side of the dark point) trimmed out of the neighbouring clips.
    max_fade_frames: int = 48
    # --- motion (motion.py, camera.py) ---
    flow_method: str = "dis"  # "dis" (OpenCV DIS, fast) or "farneback"
    flow_width: int = 160  # optical flow runs on frames scaled to this width
    flow_pairs_per_second: float = 6.0  # frame pairs per second of video that get a flow field
    # --- overlays (overlays.py) ---
    overlay_samples_per_second: float = 4.0
    # Cap on the frames kept in memory per open clip; beyond it every other one is dropped,
    # which keeps memory bounded for hour-long shots.
    max_overlay_samples: int = 96
    # --- quality (quality.py) ---
    quality_samples_per_second: float = 2.0
    # --- captions (captions.py) ---
    # "module:Class" of a `Captioner` to caption clips that have no sidecar caption.
    captioner: str | None = None


@dataclass
class FilterConfig:
    """`kumo data filter`: which clips to keep. A check whose threshold is null is skipped."""

    min_seconds: float = 2.0
    # Longer clips are split into equal pieces no longer than this (null: keep whole).
    max_seconds: float | None = 20.0
    min_width: int = 0
    min_height: int = 0
    min_fps: float = 0.0
    # Combined visual quality in [0, 1] (quality.py); ~0.4 rejects blurred, noisy, badly
    # exposed or heavily compressed footage while keeping ordinary phone and web video.
    min_quality: float | None = 0.4
    # Dynamic score, in percent of the frame width moved per second (motion.py). Under ~1 the
    # clip is a still image in all but name; over ~80 it is mostly blur and whip pans.
    min_motion: float | None = 1.0
    max_motion: float | None = 80.0
    # Static overlays (logos, watermarks): largest total area allowed as a fraction of the
    # frame; 0 rejects any detected overlay, null disables the check.
    max_overlay_area: float | None = 0.0
    reject_subtitles: bool = True
    # Camera-movement classes to keep (null: all).
    cameras: list[str] | None = None
    # Keep only clips whose caption came from a sidecar, the container or a captioning model
    # (not the weight-free attribute caption).
    require_caption: bool = False


@dataclass
class CutConfig:
    """`kumo data cut`: how kept clips are written."""

    # Target frame rate and size; null keeps the source's. When both are kept and the clip
    # starts on a keyframe, packets are copied without re-encoding.
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    stream_copy: bool = True
    crf: int = 18  # x264 constant-rate factor for re-encoded clips (18: visually lossless)
    preset: str = "veryfast"
    # Keep the source's sound for the clip's time range (copied, or re-encoded as AAC), so
    # video-to-audio training finds (video, audio) pairs; false writes silent clips.
    keep_audio: bool = True


@dataclass
class EncodeConfig:
    """`kumo data encode`: VAE latents written to shards."""

    # Frames per clip fed to the VAE; must be 4k+1 (the CogVideoX VAE compresses time 4x and
    # keeps the first frame). Shorter clips use the largest 4k+1 that fits.
    frames: int = 49
    # Pixel size fed to the VAE (multiples of 8); null: the clip's own size rounded down.
    width: int | None = None
    height: int | None = None
    # Any aspect ratio (Lumina-Video): an area in pixels (65536 = 256x256); each clip is scaled
    # to cover the aspect bucket nearest its own aspect and centre-cropped (never stretched).
    # Buckets: sides multiples of the VAE's stride x patch 2 (16), area at most this, aspect
    # 1:2 .. 2:1 (`kumovideo.geometry.aspect_buckets`). null: off. Excludes width / height.
    aspect_buckets: int | None = None
    shard_size: int = 64  # clips per safetensors shard
    dtype: str = "float32"  # dtype the VAE runs in ("float32", "bfloat16", "float16")


@dataclass
class DataConfig:
    scan: ScanConfig = field(default_factory=ScanConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    cut: CutConfig = field(default_factory=CutConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_type(where: str, value: Any, default: Any, annotation: str) -> Any:
    """Coerce ints to floats where a float is expected; reject anything else that differs."""
    if value is None:
        if "None" in annotation:
            return None
        raise KumoInputError(f"{where} may not be null; give a value or remove the key")
    if isinstance(default, bool) or annotation == "bool":
        if not isinstance(value, bool):
            raise KumoInputError(f"{where} must be true or false, got {value!r}")
        return value
    if annotation.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise KumoInputError(f"{where} must be a number, got {value!r}")
        return float(value)
    if annotation.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise KumoInputError(f"{where} must be a whole number, got {value!r}")
        return value
    if annotation.startswith("list"):
        if not isinstance(value, list):
            raise KumoInputError(f"{where} must be a list, got {value!r}")
        return [str(v) for v in value]
    if annotation.startswith("str"):
        if not isinstance(value, str):
            raise KumoInputError(f"{where} must be a string, got {value!r}")
        return value
    return value


def config_from_dict(data: dict[str, Any] | None, source: str = "config") -> DataConfig:
    """Build a `DataConfig` from nested dicts, rejecting unknown keys and wrong types."""
    cfg = DataConfig()
    if data is None:
        return cfg
    if not isinstance(data, dict):
        raise KumoInputError(f"{source}: expected a mapping with sections scan/filter/cut/encode")
    sections = {f.name: f for f in dataclasses.fields(DataConfig)}
    for name, values in data.items():
        if name not in sections:
            raise KumoInputError(f"{source}: unknown section {name!r}; known sections: {', '.join(sections)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise KumoInputError(f"{source}: section {name!r} must be a mapping of keys to values")
        section = getattr(cfg, name)
        fields = {f.name: f for f in dataclasses.fields(section)}
        for key, value in values.items():
            if key not in fields:
                raise KumoInputError(f"{source}: unknown key {name}.{key}; known keys in {name}: {', '.join(fields)}")
            annotation = str(fields[key].type)
            setattr(section, key, _check_type(f"{source}: {name}.{key}", value, getattr(section, key), annotation))
    _validate(cfg, source)
    return cfg


# x264's presets (x264.h `x264_preset_names`); any other name fails every re-encoded clip.
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)


_PER_SECOND = NumberRange(0, above_low=True)
_NON_NEGATIVE = NumberRange(0)
_SHARE = NumberRange(0, 1)  # a fraction of the frame, or a 0-1 score
# Values handed to OpenCV, PyAV and x264 as C integers: bounded, so a typo is a one-line
# error here and not an overflow deep inside a worker after the scan has started.
SIDE_MAX = 16384  # pixels per side, beyond any frame the pipeline resizes to
# Aspect-bucket areas in pixels. `--aspect-buckets` alone means 256x256: the default size is
# each clip's own, which has no one area, so the default is a small budget (65536 px, 256
# tokens per latent frame with the CogVideoX VAE and patch 2) to raise for larger training.
# The largest is 4096x4096, beyond a 4K frame (3840x2160).
ASPECT_BUCKET_AREA = 256 * 256
ASPECT_BUCKET_AREA_MAX = 4096 * 4096
_FRAME_RATE = NumberRange(0, FPS_MAX, above_low=True)

# Every numeric key and the values that make sense for it (null is always allowed where the
# key may be null). Checked in one place so a typo such as `min_quality: 5` (the score is
# 0-1) is an error instead of a run that silently keeps nothing.
RANGES: dict[str, NumberRange] = {
    "scan.analysis_width": NumberRange(16, SIDE_MAX),
    "scan.min_clip_seconds": _NON_NEGATIVE,
    "scan.content_threshold": NumberRange(0, 255),
    "scan.adaptive_threshold": NumberRange(0, above_low=True),
    "scan.fade_threshold": NumberRange(0, 255),
    "scan.cut_spike_ratio": NumberRange(0, above_low=True),
    "scan.cut_hist_distance": _SHARE,
    "scan.merge_frames": _NON_NEGATIVE,
    "scan.max_fade_frames": _NON_NEGATIVE,
    "scan.flow_width": NumberRange(16, SIDE_MAX),
    "scan.flow_pairs_per_second": _PER_SECOND,
    "scan.overlay_samples_per_second": _PER_SECOND,
    "scan.max_overlay_samples": NumberRange(2, COUNT_MAX),
    "scan.quality_samples_per_second": _PER_SECOND,
    "filter.min_seconds": _NON_NEGATIVE,
    "filter.max_seconds": NumberRange(0, above_low=True),
    "filter.min_width": _NON_NEGATIVE,
    "filter.min_height": _NON_NEGATIVE,
    "filter.min_fps": _NON_NEGATIVE,
    "filter.min_quality": _SHARE,
    "filter.min_motion": _NON_NEGATIVE,
    "filter.max_motion": _NON_NEGATIVE,
    "filter.max_overlay_area": _SHARE,
    "cut.fps": _FRAME_RATE,
    "cut.width": NumberRange(2, SIDE_MAX),
    "cut.height": NumberRange(2, SIDE_MAX),
    "cut.crf": NumberRange(0, 51),  # x264's scale for 8-bit video
    "encode.frames": NumberRange(1, COUNT_MAX),
    "encode.width": NumberRange(8, SIDE_MAX),
    "encode.height": NumberRange(8, SIDE_MAX),
    "encode.shard_size": NumberRange(1, COUNT_MAX),
    "encode.aspect_buckets": NumberRange(DEFAULT_GEOMETRY.side_multiple**2, ASPECT_BUCKET_AREA_MAX),
}


def _validate(cfg: DataConfig, source: str) -> None:
    """Check values (types are already checked): ranges, choices, and keys that must agree."""
    for name, allowed in RANGES.items():
        section, key = name.split(".")
        value = getattr(getattr(cfg, section), key)
        if value is not None and not allowed.admits(value):
            raise KumoInputError(f"{source}: {name} must be {allowed.describe()}, got {value}")
    if cfg.scan.flow_method not in ("dis", "farneback"):
        raise KumoInputError(f"{source}: scan.flow_method must be 'dis' or 'farneback', got {cfg.scan.flow_method!r}")
    if cfg.scan.captioner is not None and ":" not in cfg.scan.captioner:
        raise KumoInputError(f"{source}: scan.captioner must be 'module:ClassName', got {cfg.scan.captioner!r}")
    f = cfg.filter
    if f.max_seconds is not None and f.min_seconds > f.max_seconds:
        raise KumoInputError(
            f"{source}: filter.min_seconds ({f.min_seconds:g}) is greater than "
            f"filter.max_seconds ({f.max_seconds:g}), so every clip would be "
            "rejected; lower min_seconds or raise max_seconds"
        )
    if f.min_motion is not None and f.max_motion is not None and f.min_motion > f.max_motion:
        raise KumoInputError(
            f"{source}: filter.min_motion ({f.min_motion:g}) is greater than "
            f"filter.max_motion ({f.max_motion:g}), so every clip would be "
            "rejected; lower min_motion or raise max_motion"
        )
    if cfg.cut.preset.lower() not in X264_PRESETS:
        raise KumoInputError(
            f"{source}: cut.preset must be an x264 preset ({', '.join(X264_PRESETS)}), got {cfg.cut.preset!r}"
        )
    if not DEFAULT_GEOMETRY.is_encodable_frames(cfg.encode.frames):
        raise KumoInputError(f"{source}: encode.frames must be 4k+1 (e.g. 17, 33, 49), got {cfg.encode.frames}")
    for key in ("width", "height"):
        value = getattr(cfg.encode, key)
        if value is not None and not DEFAULT_GEOMETRY.is_encodable_side(value):
            raise KumoInputError(f"{source}: encode.{key} must be a multiple of 8, got {value}")
    e = cfg.encode
    if e.aspect_buckets is not None and (e.width is not None or e.height is not None):
        raise KumoInputError(
            f"{source}: encode.aspect_buckets ({e.aspect_buckets}) and encode.width/height exclude each other "
            "(each clip goes to its own bucket, or every clip to one size); set one of them to null"
        )
    if cfg.encode.dtype not in ("float32", "bfloat16", "float16"):
        raise KumoInputError(f"{source}: encode.dtype must be float32, bfloat16 or float16")
    from kumovideo.data.pipeline.camera import CAMERA_CLASSES

    for cam in cfg.filter.cameras or []:
        if cam not in CAMERA_CLASSES:
            raise KumoInputError(
                f"{source}: filter.cameras has unknown class {cam!r}; known: {', '.join(CAMERA_CLASSES)}"
            )


def _yaml_problem(exc) -> str:
    """PyYAML's error in one line: what it found and where (its own text spans lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return problem
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def load_config(path: str | Path | None) -> DataConfig:
    """Read a YAML config (None: the built-in defaults)."""
    if path is None:
        return DataConfig()
    path = Path(path)
    if not path.is_file():
        raise KumoInputError(
            f"config file {path} not found; pass an existing YAML file (see configs/data_filter.yaml)"
        )
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise KumoInputError(
            f"config file {path} is not a text file; pass a YAML file (see configs/data_filter.yaml)"
        ) from None
    except yaml.YAMLError as exc:
        raise KumoInputError(f"{path} is not valid YAML ({_yaml_problem(exc)}); fix the syntax") from None
    return config_from_dict(data, source=str(path))
