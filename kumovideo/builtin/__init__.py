"""The built-in models: small KumoVideo pipelines trained on ShapesWorld, shipped in the package.

`kumo generate` uses them when no `--model` is given. If this build ships no trained
weights (a source checkout before training), a small random-weight pipeline is built once
into the user cache instead, and a warning says so: the clip is then noise.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
BUILTIN_DIRS = {False: PACKAGE_DIR / "kumo-shapes", True: PACKAGE_DIR / "kumo-shapes-turbo"}
# The 128x128 base fine-tuned with Lumina-Video's three ideas (configs/builtin-lumina-128.yaml):
# the built-in model for --multiscale, --motion-score and sizes other than 128x128, which the
# base was not trained for (docs/lumina.md).
LUMINA_DIR = PACKAGE_DIR / "kumo-shapes-lumina"


def cache_dir() -> Path:
    return Path(os.environ.get("KUMO_CACHE", Path.home() / ".cache" / "kumovideo"))


def is_trained(turbo: bool = False) -> bool:
    return (BUILTIN_DIRS[turbo] / "model_index.json").exists()


def lumina_request(multiscale: bool, motion_score: float | None, width: int | None, height: int | None) -> str | None:
    """What in a request only the built-in Lumina model was trained for (its flag, for the log
    line), or None: the base model serves it. The base was trained at its own size only (at
    64x64 it matches 10.9% of captions, docs/builtin-model.md), the Lumina model at sizes
    from 128x256 to 256x128, so any other size goes to the Lumina model."""
    if multiscale:
        return "--multiscale"
    if motion_score is not None:
        return "--motion-score"
    if (width is not None or height is not None) and is_trained():
        from kumovideo.pipelines.checks import folder_clip, recorded_range, trained_for_size
        from kumovideo.pipelines.loading import read_sampling_defaults

        base = BUILTIN_DIRS[False]
        _, (_, base_height, base_width) = folder_clip(base)
        aspect_range = recorded_range(read_sampling_defaults(base), "aspect_range")
        if not trained_for_size((base_width, base_height), aspect_range, width, height):
            return f"a size other than {base_width}x{base_height}"
    return None


def builtin_model_dir(turbo: bool = False, lumina: str | None = None) -> Path:
    """The folder of the built-in (Turbo) pipeline; a random stand-in if none is shipped.
    `lumina` (from `lumina_request`) picks the built-in Lumina model (the commands name the
    model they used in their output; a warning here would be a second line beside an error)."""
    if lumina and not turbo and (LUMINA_DIR / "model_index.json").exists():
        logger.info(
            "%s: using the built-in kumo-shapes-lumina model (the 128x128 base was not trained "
            "for it, docs/lumina.md)",
            lumina,
        )
        return LUMINA_DIR
    if is_trained(turbo):
        return BUILTIN_DIRS[turbo]
    if turbo and is_trained(False):
        logger.warning("no built-in Turbo model in this build; using the base built-in model")
        return BUILTIN_DIRS[False]
    stand_in = cache_dir() / "random-builtin"
    logger.warning(
        "no trained built-in model in this build: using a random-weight stand-in at %s "
        "(the clip will be noise; train one with `kumo train`, see docs/training.md)",
        stand_in,
    )
    if not (stand_in / "model_index.json").exists():
        from kumovideo.pipelines.factory import build_pipeline
        from kumovideo.utils.atomic import atomic_directory

        with atomic_directory(stand_in) as tmp:
            build_pipeline("kumo-builtin", seed=0).save_pretrained(tmp)
    return stand_in


V2A_DIR = PACKAGE_DIR / "kumo-shapes-v2a"


def builtin_v2a_dir() -> Path:
    """The folder of the built-in video-to-audio pipeline (trained on ShapesWorld's sound)."""
    if not (V2A_DIR / "model_index.json").exists():
        from kumovideo.utils.errors import KumoInputError

        raise KumoInputError(
            "this build ships no built-in video-to-audio model; pass --audio-model (or --model for `kumo v2a`) "
            "with a folder from `kumo train v2a` (docs/audio.md)"
        )
    return V2A_DIR


FRAMES_DIR = PACKAGE_DIR / "kumo-shapes-frames"


def builtin_frames_dir() -> Path:
    """The folder of the built-in conditioned pipeline (image-to-video and interpolation:
    the built-in model fine-tuned with configs/builtin-frames-128.yaml, docs/conditioning.md)."""
    if not (FRAMES_DIR / "model_index.json").exists():
        from kumovideo.utils.errors import KumoInputError

        raise KumoInputError(
            "this build ships no built-in conditioned model (kumo-shapes-frames) for --image / --interpolate; "
            "pass --model with a folder from `kumo train dit --config configs/builtin-frames-128.yaml` "
            "(docs/conditioning.md)"
        )
    return FRAMES_DIR
