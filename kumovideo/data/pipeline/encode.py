"""`kumo data encode`: pre-extract VAE latents into sharded safetensors files with an index.

Training a latent video model spends much of its time in the VAE encoder if clips are
encoded on the fly. Encoding once, here, turns every later epoch into a file read
(Lumina-Video trains on pre-extracted latents for this reason).

The VAE is diffusers' `AutoencoderKLCogVideoX` (a causal 3D VAE: for the CogVideoX one 8x8
spatial and 4x temporal compression, the first frame kept, so the frame count must be 4k+1;
the factors are read from the VAE's config, `kumovideo.geometry`). For each clip we keep
the **posterior** rather than one sample: ``latent_dist.mean`` and ``latent_dist.std``,
both (C, F_latent, H/8, W/8) float16. Training then draws a fresh
sample every time it sees the clip, which is what on-the-fly encoding would have done::

    latent = (mean + std * torch.randn_like(std)) * scaling_factor

(`scaling_factor` is in the index; it is the VAE config's).

Layout of the output folder::

    shard-00000.safetensors   tensors "<clip id>/mean" and "<clip id>/std", `shard_size` clips
                              (with --frame-latents also "<clip id>/frames": the posterior mean
                              of frames 0, 2, 4, ... each encoded alone, (F_even, C, h, w), for
                              conditioning frames: kumovideo.pipelines.conditioning)
    shard-00001.safetensors
    index.json                {"format", "version", "vae": {...}, "clips": [{"id", "caption",
                               "shard", "shape", "fps", "num_frames", "size", "motion_score",
                               "camera", "quality"[, "bucket"]}], "shards": [...]
                               [, "aspect_buckets": {"area", "unit", "max_ratio"}]}

Any aspect ratio (Lumina-Video; `--aspect-buckets [AREA]`, `encode.aspect_buckets`): instead
of one size for every clip, each clip goes to the aspect bucket nearest its own aspect
(`kumovideo.geometry.aspect_buckets(AREA, unit)`, unit = the VAE's stride x patch 2, 16 for
the CogVideoX VAE), scaled to cover it and centre-cropped (never stretched); its entry
records `bucket` [W, H] next to `size` [H, W]. `LatentShardDataset.indices_by_shape` groups
clips by latent shape, so a training loop can draw each batch from one bucket.

Without a size, each clip keeps its own, centre-cropped to multiples of the VAE's stride x
patch 2 (16 for the CogVideoX VAE), so every latent patchifies.

Captions: a clip's caption is its `<id>.txt` beside it in the cut folder (`kumo data cut`
writes it; editing captions is editing those files), else, with a warning, the cut manifest's.
A re-run also refreshes the captions of clips already encoded (only the index changes).

Shards and the index are written to temp files and renamed into place; the index is
rewritten after every shard, so a killed run keeps every finished shard and a re-run
continues with the clips not yet in the index. The index records the settings that shape the
latents (`settings`: VAE, frames, size or buckets, frame latents, dtype); a re-run with
others is refused (`resume.py`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from kumovideo.data.pipeline.captions import read_caption_file
from kumovideo.data.pipeline.config import EncodeConfig
from kumovideo.data.pipeline.manifest import atomic_write_bytes, atomic_write_json
from kumovideo.data.pipeline.resume import Setting, check_same_settings, remove_temp_files
from kumovideo.geometry import DEFAULT_GEOMETRY, MAX_ASPECT, ClipGeometry, aspect_buckets, nearest_bucket
from kumovideo.pipelines.conditioning import even_frame_latents
from kumovideo.utils.dtypes import DTYPES
from kumovideo.utils.errors import KumoInputError

INDEX_FORMAT = "kumovideo-latents"
INDEX_VERSION = 1

log = logging.getLogger(__name__)


def is_latent_file(name: str) -> bool:
    """Whether a file name is one `kumo data encode` writes: index.json or a shard."""
    return name == "index.json" or re.fullmatch(r"shard-\d{5}\.safetensors", name) is not None


def frames_for_vae(n: int, wanted: int, geometry: ClipGeometry = DEFAULT_GEOMETRY) -> int:
    """Largest tk+1 (t the VAE's time compression: 4k+1) not above min(n, wanted) (0 if the clip is empty)."""
    return geometry.encodable_frames(min(n, wanted))


def load_vae(path: str | Path, dtype: str = "float32", device: str = "cpu"):
    """The VAE for `kumo data encode`: loaded as every pipeline loads it (safetensors only,
    original block names mapped, CPU 3D convolutions on oneDNN), in eval mode on `device`."""
    from kumovideo.pipelines.loading import load_vae as load_pipeline_vae

    try:
        vae = load_pipeline_vae(path, DTYPES[dtype])
    except KumoInputError:
        raise
    except (OSError, ValueError) as exc:  # truncated or corrupt weights, weights that do not fit
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise KumoInputError(f"--vae {path}: cannot load the VAE ({reason}); re-download or re-save it") from None
    return vae.to(device).eval()


def read_clip(
    path: str | Path,
    num_frames: int,
    width: int | None,
    height: int | None,
    geometry: ClipGeometry = DEFAULT_GEOMETRY,
    buckets: list[tuple[int, int]] | None = None,
) -> tuple[torch.Tensor, float]:
    """The first `num_frames` frames of a clip as a (3, F, H, W) float tensor in [-1, 1].

    Without a size, the clip's own size rounded down to multiples of the VAE's stride x patch
    2 (16; centre crop), which every latent patchifies at; with one, scaled to cover it and
    centre-cropped. With `buckets` ((W, H)
    pairs; width and height are then ignored), the bucket nearest the clip's aspect, scaled
    to cover and centre-cropped the same way. Returns (video, fps).
    """
    frames = []
    import av  # here, not at import: training reads latent shards on machines without PyAV

    from kumovideo.utils.video_io import to_rgb

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate or 0)
        for frame in c.decode(s):
            frames.append(to_rgb(frame))  # upright, also for a clip that kept a display matrix
            if len(frames) == num_frames:
                break
    if not frames:
        raise ValueError("no frames")
    ih, iw = frames[0].shape[:2]
    unit = geometry.side_multiple
    if buckets:
        width, height = nearest_bucket(iw, ih, buckets)
    w = width or (iw // unit) * unit
    h = height or (ih // unit) * unit
    if w < unit or h < unit:
        raise ValueError(f"clip is {iw}x{ih}, smaller than one {unit}x{unit} latent patch")
    from kumovideo.data.pipeline.cut import _fit

    video = np.stack([_fit(f, w, h) for f in frames])  # (F, H, W, 3) uint8
    x = torch.from_numpy(video).permute(3, 0, 1, 2).float() / 127.5 - 1.0
    return x, fps


def load_index(out_dir: Path) -> dict[str, Any] | None:
    """The latent index already in `out_dir` (a run to resume), None if there is none."""
    path = out_dir / "index.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        raise KumoInputError(f"{path} is not a kumovideo latent index; choose an empty output folder")
    return data


def new_index(vae, vae_path: str, source: dict | None = None) -> dict[str, Any]:
    """An empty latent index for clips encoded by `vae`: its scaling and compression factors."""
    geometry = ClipGeometry.from_configs(vae.config)
    return {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "vae": {
            "path": str(vae_path),
            "scaling_factor": float(vae.config.scaling_factor),
            "latent_channels": geometry.latent_channels,
            "temporal_compression": geometry.temporal,
            "spatial_compression": geometry.spatial,
        },
        "storage_dtype": "float16",
        "sampling": "latent = (mean + std * randn) * scaling_factor",
        **({"source": source} if source else {}),
        "clips": [],
        "shards": [],
    }


class LatentShardWriter:
    """Appends encoded clips to a latent folder: shards of `shard_size` clips, each written
    atomically, and the index rewritten after every shard (so a killed run keeps every
    finished shard and resumes after them). Used by `kumo data encode` and by
    `kumo train cache-latents`."""

    def __init__(self, out_dir: Path, vae, vae_path: str, shard_size: int, source: dict | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.index = load_index(self.out_dir) or new_index(vae, vae_path, source)
        self._tensors: dict[str, torch.Tensor] = {}
        self._meta: list[dict] = []

    @property
    def done_ids(self) -> set[str]:
        return {c["id"] for c in self.index["clips"]}

    def add(
        self, clip_id: str, mean: torch.Tensor, std: torch.Tensor, meta: dict, frames: torch.Tensor | None = None
    ) -> None:
        """One clip's posterior (C, F, h, w), stored float16, and its index entry; `frames`, the
        image latents of its even frames (F_even, C, h, w), when the cache keeps them."""
        self._tensors[f"{clip_id}/mean"] = mean.to("cpu", torch.float16).contiguous()
        self._tensors[f"{clip_id}/std"] = std.to("cpu", torch.float16).contiguous()
        if frames is not None:
            self._tensors[f"{clip_id}/frames"] = frames.to("cpu", torch.float16).contiguous()
            meta = {**meta, "frame_latents": list(range(0, 2 * len(frames), 2))}
        self._meta.append({"id": clip_id, **meta, "shape": list(mean.shape)})
        if len(self._meta) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        from safetensors.torch import save

        if self._meta:
            name = f"shard-{len(self.index['shards']):05d}.safetensors"
            atomic_write_bytes(self.out_dir / name, save(self._tensors, metadata={"format": INDEX_FORMAT}))
            for m in self._meta:
                m["shard"] = name
            self.index["shards"].append(name)
            self.index["clips"].extend(self._meta)
            self._tensors.clear()
            self._meta.clear()
        atomic_write_json(self.out_dir / "index.json", self.index)


def bucket_settings(cfg: EncodeConfig, geometry: ClipGeometry) -> dict[str, Any] | None:
    """The aspect buckets `cfg` asks for, as the index records them ({"area", "unit",
    "max_ratio"}; unit = the VAE's stride x patch 2, 16 for the CogVideoX VAE), None when off."""
    if cfg.aspect_buckets is None:
        return None
    return {"area": int(cfg.aspect_buckets), "unit": geometry.side_multiple, "max_ratio": MAX_ASPECT}


def encode_settings(cfg: EncodeConfig, vae_path: str | Path, frame_latents: bool = False) -> dict[str, Any]:
    """The settings that shape a latent folder, as its index records them (`settings`)."""
    return {
        "vae": str(Path(vae_path).resolve()),
        "width": cfg.width,
        "height": cfg.height,
        "aspect_buckets": cfg.aspect_buckets,
        "frames": cfg.frames,
        "frame_latents": frame_latents,
        "dtype": cfg.dtype,
    }


def _sizing(s: dict) -> str:
    if s.get("aspect_buckets"):
        return f"--aspect-buckets {s['aspect_buckets']}"
    if s.get("width") and s.get("height"):
        return f"--size {s['width']}x{s['height']}"
    return "each clip's own size (no --size)"


# How each recorded encode setting reads in a message (check_same_settings).
ENCODE_SETTINGS = [
    Setting(("vae",), lambda s: f"--vae {s.get('vae')}"),
    Setting(("width", "height", "aspect_buckets"), _sizing),
    Setting(("frames",), lambda s: f"--frames {s.get('frames')}"),
    Setting(("frame_latents",), lambda s: "--frame-latents" if s.get("frame_latents") else "no --frame-latents"),
    Setting(("dtype",), lambda s: f"encode.dtype {s.get('dtype')}"),
]


def check_encode_resume(index: dict[str, Any] | None, settings: dict[str, Any], out_dir: Path) -> None:
    """A latent folder that already holds clips is resumed only with the settings it was
    encoded with (else its clips would mix two sizes, frame counts or VAEs); raises
    KumoInputError naming the first that differs."""
    if index and index["clips"]:
        check_same_settings(out_dir, [index.get("settings")], settings, ENCODE_SETTINGS, "latents encoded")


def clip_caption(entry: dict, clip_dir: Path) -> tuple[str, str | None]:
    """(caption, caption_source) of a cut clip: its `<id>.txt` beside the video (the file a
    user edits), else the cut manifest's caption, with a warning naming the file. The source
    is the manifest's, or "edited" where the .txt says something else."""
    txt = clip_dir / Path(entry["file"]).with_suffix(".txt")
    text = read_caption_file(txt)
    if text is None:
        problem = "is empty" if txt.is_file() else "is missing"
        log.warning("%s %s; using the clip's caption in the cut manifest instead", txt, problem)
        return entry["caption"], entry.get("caption_source")
    return text, entry.get("caption_source") if text == entry["caption"] else "edited"


def encode_clips(
    entries: list[dict],
    clip_dir: Path,
    vae,
    vae_path: str,
    out_dir: Path,
    cfg: EncodeConfig,
    device: str = "cpu",
    quiet: bool = False,
    frame_latents: bool = False,
) -> dict[str, Any]:
    """Encode cut clips (entries of the cut manifest) into shards; returns a summary.
    `frame_latents` also keeps the image latents of the even frames (conditioning frames)."""
    from kumovideo.data.pipeline.runner import run_tasks

    geometry = ClipGeometry.from_configs(vae.config)
    buckets = bucket_settings(cfg, geometry)
    # (W, H) pairs; KumoInputError, before anything is written, for an area below one unit.
    sizes = aspect_buckets(buckets["area"], buckets["unit"], buckets["max_ratio"]) if buckets else None
    settings = encode_settings(cfg, vae_path, frame_latents)
    check_encode_resume(load_index(Path(out_dir)), settings, out_dir)
    remove_temp_files(Path(out_dir), is_latent_file)  # a killed run's
    writer = LatentShardWriter(out_dir, vae, vae_path, cfg.shard_size)
    if not writer.index["clips"]:  # a new index records the settings its clips follow
        writer.index.pop("aspect_buckets", None)
        if buckets:
            writer.index["aspect_buckets"] = buckets
        writer.index["settings"] = settings
    usable = [e for e in entries if e.get("status", "ok") == "ok"]
    captions = {e["id"]: clip_caption(e, clip_dir) for e in usable}
    # Clips already encoded take their current caption too: only the index changes.
    refreshed = 0
    for clip in writer.index["clips"]:
        if clip["id"] in captions and (clip["caption"], clip.get("caption_source")) != captions[clip["id"]]:
            clip["caption"], clip["caption_source"] = captions[clip["id"]]
            refreshed += 1
    done = writer.done_ids
    todo = [e for e in usable if e["id"] not in done]
    dtype = DTYPES[cfg.dtype]
    errors: list[tuple[str, str]] = []
    t0 = time.perf_counter()

    def encode_one(entry: dict) -> dict:
        path = clip_dir / entry["file"]
        n = frames_for_vae(int(entry.get("out_frames") or 0) or 10**9, cfg.frames, geometry)
        try:
            x, fps = read_clip(path, n, cfg.width, cfg.height, geometry, buckets=sizes)
            n = frames_for_vae(x.shape[1], cfg.frames, geometry)
            x = x[:, :n]
            with torch.no_grad():
                clip = x.unsqueeze(0).to(device=device, dtype=dtype)
                dist = vae.encode(clip).latent_dist
                frames = even_frame_latents(vae, clip)[0] if frame_latents else None
            mean, std = dist.mean[0], dist.std[0]
        except Exception as exc:  # a bad clip is reported, the rest are encoded
            return {"id": entry["id"], "error": f"{type(exc).__name__}: {exc}"}
        return {
            "id": entry["id"],
            "mean": mean,
            "std": std,
            "frames": frames,
            "fps": fps,
            "num_frames": n,
            "size": [int(x.shape[2]), int(x.shape[3])],
        }

    for entry, res in zip(todo, run_tasks(encode_one, todo, workers=1, desc="encode", quiet=quiet)):
        if "error" in res:
            errors.append((entry["id"], res["error"]))
            continue
        writer.add(
            entry["id"],
            res["mean"],
            res["std"],
            {
                "caption": captions[entry["id"]][0],
                "caption_source": captions[entry["id"]][1],
                "fps": res["fps"],
                "num_frames": res["num_frames"],
                "size": res["size"],
                "motion_score": entry.get("motion_score"),
                "camera": (entry.get("camera") or {}).get("label"),
                "quality": (entry.get("quality") or {}).get("score"),
                "source": entry.get("video"),
                "file": entry.get("file"),
                **({"bucket": res["size"][::-1]} if sizes else {}),
            },
            frames=res["frames"],
        )
    writer.flush()
    index = writer.index
    return {
        "encoded": len(todo) - len(errors),
        "skipped": len(usable) - len(todo),
        "captions_refreshed": refreshed,
        "errors": errors,
        "shards": len(index["shards"]),
        "clips": len(index["clips"]),
        "seconds": time.perf_counter() - t0,
    }


class LatentShardDataset(Dataset):
    """Pre-extracted latents written by `kumo data encode`.

    Each item is {"latent_mean": (C, F, h, w), "latent_std": (C, F, h, w), "caption": str,
    "motion_score": float} with tensors in `dtype` (float32 by default; stored as float16).
    Draw a training latent with `sample_latent`, i.e. ``(mean + std * randn) *
    scaling_factor``. Shards are opened lazily and memory-mapped by safetensors, so a
    DataLoader's workers each read only what they index.
    """

    def __init__(self, index_path: str | Path, dtype: torch.dtype = torch.float32):
        self.index_path = Path(index_path)
        if self.index_path.is_dir():
            self.index_path = self.index_path / "index.json"
        if not self.index_path.is_file():
            raise KumoInputError(
                f"latent index {self.index_path} not found; run `kumo data encode` first or pass the folder it wrote"
            )
        self.index = json.loads(self.index_path.read_text())
        if self.index.get("format") != INDEX_FORMAT:
            raise KumoInputError(f"{self.index_path} is not a kumovideo latent index")
        self.root = self.index_path.parent
        self.clips = self.index["clips"]
        self.dtype = dtype
        self.scaling_factor = float(self.index["vae"]["scaling_factor"])
        self._handles: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def _shard(self, name: str):
        from safetensors import safe_open

        if name not in self._handles:
            self._handles[name] = safe_open(str(self.root / name), framework="pt")
        return self._handles[name]

    def __getitem__(self, i: int) -> dict[str, Any]:
        meta = self.clips[i]
        f = self._shard(meta["shard"])
        return {
            "latent_mean": f.get_tensor(f"{meta['id']}/mean").to(self.dtype),
            "latent_std": f.get_tensor(f"{meta['id']}/std").to(self.dtype),
            "caption": meta["caption"],
            "motion_score": float(meta["motion_score"] or 0.0),
        }

    def indices_by_shape(self) -> dict[tuple[int, ...], list[int]]:
        """Clip indices grouped by latent shape (C, F, h, w), each list in index order, the
        shapes in order of first appearance. With `--aspect-buckets` every aspect bucket (and
        frame count) is one group: a training loop draws each batch from one group, so its
        latents stack into one tensor."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, clip in enumerate(self.clips):
            groups.setdefault(tuple(int(v) for v in clip["shape"]), []).append(i)
        return groups

    def has_frame_latents(self) -> bool:
        """Whether every clip keeps the image latents of its even frames (`--frame-latents`)."""
        return bool(self.clips) and all("frame_latents" in clip for clip in self.clips)

    def frame_latents(self, i: int) -> torch.Tensor:
        """Unscaled image latents of clip i's frames 0, 2, 4, ...: (F_even, C, h, w)."""
        meta = self.clips[i]
        return self._shard(meta["shard"]).get_tensor(f"{meta['id']}/frames").to(self.dtype)

    def sample_latent(self, item: dict[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
        """A scaled latent sample from an item's posterior (what the DiT is trained on)."""
        noise = torch.randn(item["latent_std"].shape, generator=generator, dtype=item["latent_std"].dtype)
        return (item["latent_mean"] + item["latent_std"] * noise) * self.scaling_factor

    def __getstate__(self):  # safetensors handles do not pickle (DataLoader workers)
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state
