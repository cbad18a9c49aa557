"""Loading KumoVideo checkpoint folders: the original layout and the one this package saves.

An original `model_index.json` names the original's own module paths
(`["models.transformer", "KumoTransformer3DModel"]`, `["models.vae", "KumoAutoencoderKL"]`,
...). Each name maps to the class that runs it here; the VAE's block type names are
mapped to diffusers' CogVideoX ones. Folders saved by this package name `kumovideo`,
`diffusers` and `transformers` classes and load the same way.

Weights load from safetensors only; a folder with only pickle weights is refused.
Every problem a user can fix (missing part, corrupt file) raises `KumoInputError` with
a one-line message naming the part.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch

from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.numbers import is_int, is_real

COMPONENTS = ("tokenizer", "text_encoder", "vae", "transformer", "scheduler")
# model_index.json's _class_name of a video-to-audio folder (pipelines/pipeline_kumo_v2a.py),
# which holds none of COMPONENTS.
V2A_PIPELINE = "KumoV2APipeline"

# Original class names -> (library, class) here.
ORIGINAL_CLASSES = {
    "KumoTransformer3DModel": ("kumovideo", "KumoTransformer3DModel"),
    "KumoAutoencoderKL": ("diffusers", "AutoencoderKLCogVideoX"),
    "KumoDDIMScheduler": ("kumovideo", "KumoDDIMScheduler"),
    "KumoLCMScheduler": ("kumovideo", "KumoLCMScheduler"),
}
ORIGINAL_VAE_BLOCKS = {
    "KumoDownBlock3D": "CogVideoXDownBlock3D",
    "KumoUpBlock3D": "CogVideoXUpBlock3D",
}

_WEIGHT_FILES = {
    "transformer": "diffusion_pytorch_model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
}
_CONFIG_FILES = {
    "transformer": "config.json",
    "vae": "config.json",
    "text_encoder": "config.json",
    "scheduler": "scheduler_config.json",
}

# Tokenizer classes that need a vocabulary file, and the files that can hold it.
_TOKENIZER_VOCAB = {
    "T5Tokenizer": ("spiece.model", "tokenizer.json"),
    "T5TokenizerFast": ("tokenizer.json", "spiece.model"),
}


def read_json(path: Path) -> dict[str, Any]:
    """A checkpoint's JSON file; a KumoInputError naming it when it is not valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise KumoInputError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); re-save the checkpoint"
        ) from None


def resolve_class(library: str, class_name: str):
    """The class that loads a component named `[library, class_name]` in model_index.json."""
    if class_name in ORIGINAL_CLASSES:
        library, class_name = ORIGINAL_CLASSES[class_name]
    elif library.startswith("models"):
        raise KumoInputError(f"unknown original component class {class_name!r} from {library!r}")
    import importlib

    try:
        module = importlib.import_module(library)
        return getattr(module, class_name)
    except (ImportError, AttributeError):
        raise KumoInputError(
            f"component class {library}.{class_name} is not available; is the package installed?"
        ) from None


def _check_weights(folder: Path, name: str) -> None:
    """Fail early, with the part named, on missing, pickle-only, sharded-missing or corrupt weights."""
    weights = _WEIGHT_FILES.get(name)
    if weights is None:
        return
    part = folder / name
    single = part / weights
    index = part / (weights + ".index.json")
    if index.exists():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        files = [part / s for s in shards]
    elif single.exists():
        files = [single]
    else:
        pickles = [p.name for p in part.glob("*.bin")] + [p.name for p in part.glob("*.pt")]
        if pickles:
            raise KumoInputError(
                f"{part} has only pickle weights ({', '.join(pickles)}); KumoVideo loads safetensors only "
                "(convert them with safetensors.torch.save_file)"
            )
        raise KumoInputError(f"checkpoint folder {folder} is missing {name}/{weights}")
    from safetensors import safe_open

    for file in files:
        if not file.exists():
            raise KumoInputError(
                f"checkpoint folder {folder} is missing {name}/{file.name} (listed in the shard index)"
            )
        try:
            with safe_open(str(file), framework="pt") as f:
                keys = list(f.keys())
                if keys:  # touching one tensor catches some truncated files
                    f.get_slice(keys[-1])
        except Exception as exc:  # safetensors raises its own error types
            raise KumoInputError(
                f"{file} is not a valid safetensors file ({str(exc).splitlines()[0]}); re-download or re-save it"
            ) from None
        check_safetensors_complete(file)


def check_safetensors_complete(file: Path) -> None:
    """`file` holds every byte its safetensors header lists: a copy cut short can still
    open, and then fails deep inside a loader."""
    truncated = f"{file} is truncated; re-download or re-save it"
    size = file.stat().st_size
    with open(file, "rb") as fh:
        header_size = int.from_bytes(
            fh.read(8), "little"
        )  # the format: 8 bytes of header length, a JSON header, the data
        if 8 + header_size > size:
            raise KumoInputError(truncated)
        header = fh.read(header_size)
    try:
        entries = [entry for key, entry in json.loads(header).items() if key != "__metadata__"]
        data_end = max((entry["data_offsets"][1] for entry in entries), default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        raise KumoInputError(truncated) from None
    if 8 + header_size + data_end > size:
        raise KumoInputError(truncated)


def check_checkpoint_folder(folder: str | os.PathLike) -> dict[str, Any]:
    """Validate a pipeline folder before loading anything. Returns its model_index."""
    folder = Path(folder)
    if not folder.exists():
        raise KumoInputError(
            f"checkpoint folder {folder} does not exist; pass --model with a KumoVideo pipeline folder"
        )
    if not folder.is_dir():
        raise KumoInputError(f"{folder} is not a folder; pass a KumoVideo pipeline folder (with model_index.json)")
    index_path = folder / "model_index.json"
    if not index_path.exists():
        raise KumoInputError(
            f"checkpoint folder {folder} is missing model_index.json; is it a KumoVideo pipeline folder?"
        )
    index = read_json(index_path)
    if isinstance(index, dict) and index.get("_class_name") == V2A_PIPELINE:
        raise KumoInputError(
            f"{folder} holds a video-to-audio model ({V2A_PIPELINE}), not a text-to-video one; "
            "use it with kumo v2a (or generate --audio --audio-model)"
        )
    for name in COMPONENTS:
        if name not in index or index[name] is None or index[name][0] is None:
            raise KumoInputError(f"checkpoint folder {folder}: model_index.json does not name the {name} component")
        if not (folder / name).is_dir():
            raise KumoInputError(f"checkpoint folder {folder} is missing the {name}/ folder")
        config = _CONFIG_FILES.get(name)
        if config and not (folder / name / config).exists():
            raise KumoInputError(f"checkpoint folder {folder} is missing {name}/{config}")
        if config:
            read_json(folder / name / config)  # a corrupt config is named here, not as a traceback later
        vocab = _TOKENIZER_VOCAB.get(index[name][1]) if name == "tokenizer" else None
        if vocab and not any((folder / name / v).exists() for v in vocab):
            # T5Tokenizer without its vocabulary loads "fine" and maps every word to <unk>.
            raise KumoInputError(
                f"checkpoint folder {folder} is missing tokenizer/{vocab[0]} (the tokenizer's vocabulary)"
            )
        _check_weights(folder, name)
    return index


def load_vae(folder: str | os.PathLike, torch_dtype: torch.dtype | None = None):
    """Load a 3D causal VAE, original (`KumoAutoencoderKL`) or diffusers-saved, into diffusers'
    `AutoencoderKLCogVideoX`, its CPU 3D convolutions routed to oneDNN (`kumovideo.models.cpu_conv`)."""
    from diffusers import AutoencoderKLCogVideoX

    from kumovideo.models.cpu_conv import route_conv3d_to_onednn

    folder = check_vae_folder(folder)
    config = read_json(folder / "config.json")
    overrides = {
        key: [ORIGINAL_VAE_BLOCKS.get(b, b) for b in config[key]]
        for key in ("down_block_types", "up_block_types")
        if key in config
    }
    vae = AutoencoderKLCogVideoX.from_pretrained(folder, torch_dtype=torch_dtype, use_safetensors=True, **overrides)
    route_conv3d_to_onednn(vae)
    return vae


def check_vae_folder(folder: str | os.PathLike, what: str = "") -> Path:
    """A VAE folder: a folder, with its config.json and .safetensors weights (pickled weights
    are never loaded). `what` names where the path came from (e.g. "--vae")."""
    folder = Path(folder)
    named = f"{what} {folder}" if what else str(folder)
    if not folder.is_dir():
        raise KumoInputError(f"{named} is not a folder; pass a trained VAE folder (e.g. runs/builtin-vae/vae)")
    if not (folder / "config.json").is_file():
        raise KumoInputError(
            f"{named} is not a VAE folder (no config.json); pass the folder holding "
            "the VAE's config.json and .safetensors weights"
        )
    if not any(folder.glob("*.safetensors")):
        raise KumoInputError(
            f"{named} has no .safetensors weights; pickled weights (.bin/.pt) are never "
            "loaded (they can run code): re-save the VAE with save_pretrained(safe_serialization=True)"
        )
    return folder


def load_component(folder: Path, name: str, library: str, class_name: str, torch_dtype: torch.dtype | None):
    """One component. A config that does not fit its weights (edited, or files from two saves)
    makes the libraries raise long multi-line errors; the user gets one line naming the part."""
    try:
        return _load_component(folder, name, library, class_name, torch_dtype)
    except KumoInputError:
        raise
    except (ValueError, RuntimeError, TypeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if len(first) > 200:
            first = first[:200] + "..."
        raise KumoInputError(
            f"{folder / name} could not be loaded ({first}); its config and weights must come "
            "from the same save: re-save or re-download the checkpoint"
        ) from None


def _load_component(folder: Path, name: str, library: str, class_name: str, torch_dtype: torch.dtype | None):
    part = folder / name
    if name == "vae":
        return load_vae(part, torch_dtype)
    cls = resolve_class(library, class_name)
    if name == "scheduler":
        return cls.from_pretrained(part)
    if name == "tokenizer":
        return cls.from_pretrained(part)
    if name == "text_encoder":
        return cls.from_pretrained(part, torch_dtype=torch_dtype or torch.float32, use_safetensors=True)
    return cls.from_pretrained(part, torch_dtype=torch_dtype, use_safetensors=True)


def load_pipeline_components(folder: str | os.PathLike, torch_dtype: torch.dtype | None = None, **overrides):
    """Load every component of a pipeline folder; components passed in `overrides` are used as given."""
    folder = Path(folder)
    index = check_checkpoint_folder(folder)
    components = {}
    for name in COMPONENTS:
        if name in overrides:
            components[name] = overrides[name]
            continue
        library, class_name = index[name]
        components[name] = load_component(folder, name, library, class_name, torch_dtype)
    return components


# ------------------------------------------------------------------ sampling defaults


def _range(value, above: float) -> bool:
    """A recorded [low, high]: two finite numbers > `above`, low <= high."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and all(is_real(x) and above < x < math.inf for x in value)
        and value[0] <= value[1]
    )


# What a checkpoint's kumo_defaults.json may recommend, and the check each value must pass.
SAMPLING_DEFAULT_KEYS = {
    "num_inference_steps": ("a whole number of steps >= 1", lambda v: is_int(v) and v >= 1),
    "turbo_steps": ("a whole number of steps >= 1", lambda v: is_int(v) and v >= 1),
    "guidance_scale": ("a finite number", lambda v: is_real(v) and math.isfinite(v)),
    "turbo_guidance_scale": ("a finite number", lambda v: is_real(v) and math.isfinite(v)),
    "guidance_rescale": ("a number from 0 to 1", lambda v: is_real(v) and 0 <= v <= 1),
    "turbo_guidance_rescale": ("a number from 0 to 1", lambda v: is_real(v) and 0 <= v <= 1),
    # Conditioned models: steps for interpolation (the keyframes pin most of the clip; fewer suffice).
    "interpolation_steps": ("a whole number of steps >= 1", lambda v: is_int(v) and v >= 1),
    # ... and their text (with a prompt) and image guidance: the keyframes carry the clip.
    "interpolation_guidance_scale": ("a finite number", lambda v: is_real(v) and math.isfinite(v)),
    "interpolation_image_guidance_scale": ("a finite number", lambda v: is_real(v) and math.isfinite(v)),
    "fps": ("a whole number of frames per second >= 1", lambda v: is_int(v) and v >= 1),
    # The tokenizer knows only lowercase words (the built-in model's): prompts are lowercased first.
    "lowercase_prompts": ("true or false", lambda v: isinstance(v, bool)),
    # Multi-scale models (multiscale_patch_sizes): the share of the steps sampled at the coarsest scale.
    "multiscale_split": ("a fraction of the steps in (0, 1]", lambda v: is_real(v) and 0 < v <= 1),
    # ... and the noise level (t / T) where those coarse steps end (absent: the steps evenly spaced).
    "multiscale_handoff": ("a noise level t / T in (0, 1)", lambda v: is_real(v) and 0 < v < 1),
    # Models trained in aspect buckets: the width / height ratios seen, [low, high]; others warn.
    "aspect_range": ("a list [low, high] of positive numbers (width / height), low <= high", lambda v: _range(v, 0)),
    # Models trained at some sizes: the frame areas seen (width x height pixels), [low, high]; others warn.
    "area_range": ("a list [low, high] of positive numbers (pixels a frame), low <= high", lambda v: _range(v, 0)),
    # Motion-conditioned models: the motion scores seen in training, [low, high]; others are clamped.
    "motion_score_range": ("a list [low, high] of finite numbers, low <= high", lambda v: _range(v, -math.inf)),
    # ... and the share of the first steps motion guidance (negative_motion_score) runs for.
    "negative_motion_end": ("a fraction of the steps in (0, 1]", lambda v: is_real(v) and 0 < v <= 1),
    # Video-to-video (remix, --video): the share of the steps run on a source clip.
    "video_strength": ("a fraction of the steps in (0, 1]", lambda v: is_real(v) and 0 < v <= 1),
    # the layout planner (kumovideo.pipelines.layout.resolve_planner)
    "layout": (
        "'kumovideo.<module>:<function>'",
        lambda v: isinstance(v, str) and v.startswith("kumovideo.") and ":" in v,
    ),
    # the share of the steps that decide a layout (layout.FILL_STEPS where left out)
    "layout_fill": ("a fraction of the steps in (0, 1)", lambda v: is_real(v) and 0 < v < 1),
}


class CaptionVocabulary(NamedTuple):
    """What a checkpoint's training captions hold: their words, and the pairs of words that
    stood side by side in them (a caption of known words in an order never seen, "a white
    background" to the built-in model, is not followed either)."""

    words: frozenset[str]
    pairs: frozenset[tuple[str, str]]

    def unknown_words(self, words: list[str]) -> list[str]:
        return list(dict.fromkeys(w for w in words if w not in self.words))

    def unseen_pairs(self, words: list[str]) -> list[str]:
        return list(dict.fromkeys(f"{a} {b}" for a, b in zip(words, words[1:]) if (a, b) not in self.pairs))

    def merged(self, other: CaptionVocabulary) -> CaptionVocabulary:
        """What a model knows with an adapter trained on `other`'s captions loaded."""
        return CaptionVocabulary(self.words | other.words, self.pairs | other.pairs)


CAPTIONS_FILE = "training_captions.txt"  # one caption a line, written by `kumo train`


def read_training_captions(folder: str | os.PathLike) -> str | None:
    """The text of a checkpoint's `training_captions.txt`, or None when it has none."""
    path = Path(folder) / CAPTIONS_FILE
    return path.read_text(encoding="utf-8") if path.is_file() else None


def write_training_captions(folder: str | os.PathLike, captions: str | None) -> None:
    """`captions` as the folder's `training_captions.txt` (None: no file)."""
    if captions is None:
        return
    from kumovideo.utils.atomic import atomic_file

    with atomic_file(Path(folder) / CAPTIONS_FILE) as fh:
        fh.write(captions.encode("utf-8"))


def caption_vocabulary_of(captions: str | None) -> CaptionVocabulary | None:
    """The vocabulary of training captions (one a line); None for None."""
    if captions is None:
        return None
    words, pairs = set(), set()
    for line in captions.splitlines():
        line_words = line.split()
        words.update(line_words)
        pairs.update(zip(line_words, line_words[1:]))
    return CaptionVocabulary(frozenset(words), frozenset(pairs))


def read_caption_vocabulary(folder: str | os.PathLike) -> CaptionVocabulary | None:
    """The vocabulary of the captions a checkpoint was trained on (`training_captions.txt`,
    one caption a line, written by `kumo train`), or None when the folder has no such file."""
    return caption_vocabulary_of(read_training_captions(folder))


def write_sampling_defaults(folder: str | os.PathLike, defaults: dict) -> None:
    """A checkpoint's recommended sampling settings as its kumo_defaults.json (none: no file)."""
    if not defaults:
        return
    from kumovideo.utils.atomic import atomic_file

    with atomic_file(Path(folder) / "kumo_defaults.json", "w") as fh:
        fh.write(json.dumps(defaults, indent=2) + "\n")


def read_sampling_defaults(folder: str | os.PathLike) -> dict:
    """Sampling defaults a checkpoint recommends (kumo_defaults.json), if it has them;
    checked here, so that a bad file is named before any work and not met mid-run."""
    path = Path(folder) / "kumo_defaults.json"
    if not path.exists():
        return {}
    try:
        defaults = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KumoInputError(
            f"{path} is not valid JSON ({exc}); fix it or delete it to use the built-in defaults"
        ) from None
    if not isinstance(defaults, dict):
        raise KumoInputError(f"{path} must hold a JSON object of sampling defaults; fix it or delete it")
    for key, value in defaults.items():
        if key in SAMPLING_DEFAULT_KEYS and not SAMPLING_DEFAULT_KEYS[key][1](value):
            raise KumoInputError(
                f"{path}: {key} is {value!r}, but must be {SAMPLING_DEFAULT_KEYS[key][0]}; fix or remove it"
            )
    return defaults
