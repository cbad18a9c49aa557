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


def cache_dir() -> Path:
    return Path(os.environ.get("KUMO_CACHE", Path.home() / ".cache" / "kumovideo"))


def is_trained(turbo: bool = False) -> bool:
    return (BUILTIN_DIRS[turbo] / "model_index.json").exists()


def builtin_model_dir(turbo: bool = False) -> Path:
    """The folder of the built-in (Turbo) pipeline; a random stand-in if none is shipped."""
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
    the built-in model fine-tuned with configs/builtin-frames.yaml, docs/conditioning.md)."""
    if not (FRAMES_DIR / "model_index.json").exists():
        from kumovideo.utils.errors import KumoInputError

        raise KumoInputError(
            "this build ships no built-in conditioned model (kumo-shapes-frames) for --image / --interpolate; "
            "pass --model with a folder from `kumo train dit --config configs/builtin-frames.yaml` (docs/conditioning.md)"
        )
    return FRAMES_DIR
