"""What `kumo train` checks before any model or data work, and before it creates any file.

Everything a user can get wrong on disk (the output folder, the folders a config names,
the latent caches) is reported here as one `KumoInputError` line, so that a bad run
stops in a second and leaves nothing behind. The config's values themselves are checked
when it loads (`config.validate`).
"""

from __future__ import annotations

import json
from pathlib import Path

from kumovideo.geometry import DEFAULT_GEOMETRY, ClipGeometry
from kumovideo.training.checkpointing import checkpoint_kind, list_checkpoints, not_this_run
from kumovideo.training.config import TrainConfig
from kumovideo.training.data_sources import trains_on
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.paths import check_output_folder

# What a run writes at its end: a DiT or Turbo pipeline, a VAE, a LoRA adapter.
EXPORT_FOLDERS = ("pipeline", "vae", "lora")


def check_output_dir(config: TrainConfig, resume: bool) -> None:
    """The run's output_dir: a folder, and one holding a run's checkpoints only with --resume
    (a run started over would overwrite them and its loss log)."""
    out = check_output_folder(config.output_dir, "output_dir")
    found = list_checkpoints(out)
    if found and not resume:
        raise KumoInputError(
            f"output_dir {out} already holds a run's checkpoints (newest {found[-1].name}); "
            "pass --resume to continue that run, or choose another output_dir"
        )
    if not found:
        # A finished run whose checkpoints were deleted still has its export, and a folder of an
        # export's name may hold the user's own files: a new run would replace either.
        taken = [out / name for name in EXPORT_FOLDERS if (out / name).is_dir() and any((out / name).iterdir())]
        if taken:
            raise KumoInputError(
                f"output_dir {out} already holds {taken[0].name}/ (a finished run's export, or other files) that "
                "a new run would replace; choose another output_dir (or move that folder away)"
            )
        log = out / "loss_log.csv"
        if log.is_file() and _first_field(log) not in ("", "step"):  # ours: a run cut off before a checkpoint
            raise KumoInputError(
                f"output_dir {out} holds a loss_log.csv that no run of kumo train wrote; "
                "choose another output_dir (or move that file away)"
            )
    if found:
        kind = checkpoint_kind(found[-1])
        if kind and kind != config.kind:
            raise not_this_run(found[-1], f"a {kind} run, and this is a {config.kind} config")


def _first_field(csv_file: Path) -> str:
    with open(csv_file, errors="replace") as f:
        return f.readline().split(",", 1)[0].strip()


def check_pipeline_folder(config: TrainConfig, key: str) -> None:
    """A pipeline folder the config names (`teacher`, `init_from`) exists and is complete."""
    from kumovideo.pipelines.loading import check_checkpoint_folder

    folder = getattr(config, key)
    if not Path(folder).is_dir():
        raise KumoInputError(
            f"{key}: {folder} is not a folder; set `{key}:` in the config to a trained "
            "pipeline folder (e.g. a DiT run's output_dir/pipeline)"
        )
    check_checkpoint_folder(folder)


def check_model_folders(config: TrainConfig) -> None:
    """The folders a run's models start from: a Turbo run's teacher, a DiT's init_from
    pipeline or (from scratch) its `vae:`, a VAE run's init_from."""
    from kumovideo.pipelines.loading import check_safetensors_complete, check_vae_folder

    if config.kind == "turbo":
        check_pipeline_folder(config, "teacher")
    elif config.kind == "v2a":
        if config.init_from:
            from kumovideo.pipelines.pipeline_kumo_v2a import check_v2a_folder

            check_v2a_folder(config.init_from)
    elif config.kind == "dit" and config.init_from:
        check_pipeline_folder(config, "init_from")
    else:
        key = "init_from" if config.kind == "vae" else "vae"
        if getattr(config, key):
            for file in sorted(check_vae_folder(getattr(config, key), key).glob("*.safetensors")):
                check_safetensors_complete(file)  # whole weights: an interrupted copy fails here, not mid-load


def check_latent_caches(config: TrainConfig) -> None:
    """Every stage's `latents:` index exists, parses, and holds clips the stage can train on."""
    from kumovideo.data.pipeline.encode import INDEX_FORMAT

    for i, stage in enumerate(config.stages):
        if not stage.latents:
            continue
        where = f"stage {i} ({stage.name}) latents"
        path = Path(stage.latents)
        if path.is_dir():
            path = path / "index.json"
        if not path.is_file():
            raise KumoInputError(
                f"{where}: {path} not found; run `kumo train cache-latents` (or `kumo data encode`) "
                "first, or fix the path in the config"
            )
        try:
            index = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KumoInputError(
                f"{where}: {path} does not parse ({str(exc).splitlines()[0]}); "
                "write the cache again with `kumo train cache-latents`"
            ) from None
        if not (
            isinstance(index, dict) and index.get("format") == INDEX_FORMAT and isinstance(index.get("clips"), list)
        ):
            raise KumoInputError(
                f"{where}: {path} is not a kumovideo latent index; "
                "pass the index.json that `kumo train cache-latents` wrote"
            )
        usable = [clip for clip in index["clips"] if trains_on(config, clip.get("caption", ""))]
        if not usable:
            raise KumoInputError(
                f"{where}: {path} holds no clip to train on"
                + (" outside the held-out captions" if config.holdout_captions else "")
            )
        # Latent clips are (C, F, h, w): the frames through the temporal compression of the VAE that wrote them.
        vae = index.get("vae") or {}
        geometry = ClipGeometry(temporal=int(vae.get("temporal_compression", DEFAULT_GEOMETRY.temporal)))
        needed = geometry.latent_frames(stage.num_frames)
        shortest = min(clip.get("shape", [0, 0])[1] for clip in usable)
        if shortest < needed:
            raise KumoInputError(
                f"{where}: num_frames={stage.num_frames} needs {needed} latent frames, but {path} "
                f"holds clips of {shortest}; lower num_frames or re-encode longer clips"
            )


def check_clips_folder(config: TrainConfig) -> None:
    """A V2A run's `clips:` is a folder (its files are probed when training starts)."""
    if config.clips and not Path(config.clips).is_dir():
        raise KumoInputError(
            f"clips: {config.clips} is not a folder; point it at clips with audio (e.g. `kumo data cut`'s output)"
        )


def check_run_inputs(config: TrainConfig, resume: bool) -> None:
    """All `kumo train vae|dit|turbo|v2a` checks on disk, before anything is built or written."""
    check_output_dir(config, resume)
    check_model_folders(config)
    if config.kind in ("dit", "turbo"):
        check_latent_caches(config)
    if config.kind == "v2a":
        check_clips_folder(config)


def check_export_target(target: str | Path, overwrite: bool) -> Path:
    """`kumo train export --out`: a new or empty folder, or with --overwrite an existing
    folder (never a file: replacing a user's file by a folder is never what was meant)."""
    target = check_output_folder(target, "--out")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise KumoInputError(
            f"--out {target} already exists and is not empty; pass --overwrite to replace it, or choose another folder"
        )
    return target


def check_latent_shapes(config: TrainConfig, source, transformer_config, vae_config, ulysses: int = 1) -> None:
    """Once the models are built, before the first step: every cached clip fits them. Its
    latents come from this VAE (scaling factor and channels as the cache's index records
    them: another VAE's latents train without error into a model that decodes noise), and
    every bucket's latent sides divide by the transformer's patch (a clip encoded
    at its own size, 640x360, gives 45x80 latents that a patch of 2 cannot cut: the run
    would stop at whichever step first drew it), and with Ulysses degree `ulysses` > 1 every
    bucket's vision tokens (and a 1-frame image's, with image_prob) split evenly over the
    ranks. A batch larger than the cache is a warning."""
    import logging

    spatial = ClipGeometry.from_configs(vae_config).spatial
    patch = transformer_config.patch_size  # coarse scales train only where they divide (step_extras)
    for i, stage in enumerate(config.stages):
        if not stage.latents:
            continue
        where = f"stage {i} ({stage.name}) latents {stage.latents}"
        cache, usable = source.cache(stage.latents)
        recorded = cache.index.get("vae") or {}
        ours = {"scaling_factor": vae_config.scaling_factor, "latent_channels": vae_config.latent_channels}
        for key, value in ours.items():
            theirs = recorded.get(key)
            if theirs is not None and value is not None and abs(float(theirs) - float(value)) > 1e-6 * abs(value):
                raise KumoInputError(
                    f"{where}: encoded by a VAE with {key} {theirs:g} ({recorded.get('path', 'unrecorded')}), "
                    f"but this run's VAE has {value:g}; encode the clips again with the run's VAE "
                    "(kumo data encode --vae MODEL/vae)"
                )
        for shape, _ in source.buckets(stage.latents):
            h, w = shape[2], shape[3]
            if h % patch or w % patch:
                raise KumoInputError(
                    f"{where}: clips of {w * spatial}x{h * spatial} pixels ({w}x{h} latents) do not divide into "
                    f"the transformer's {patch}x{patch} patches; encode them at sides that are multiples of "
                    f"{patch * spatial} px (kumo data encode --size WxH, or --aspect-buckets)"
                )
            for frames in {shape[1], *((1,) if stage.image_prob > 0 else ())}:
                tokens = frames * (h // patch) * (w // patch)
                if tokens % ulysses:  # the run would stop in shard_tokens at the first such batch
                    raise KumoInputError(
                        f"{where}: {w * spatial}x{h * spatial} pixels x {frames} latent frame(s) give {tokens} "
                        f"vision tokens, which --ulysses {ulysses} does not split evenly; pick a degree that "
                        "divides it, or another size"
                    )
        if stage.batch_size > len(usable):
            logging.getLogger(__name__).warning(
                "%s: batch_size %d is more than its %d clips, so every batch repeats clips; "
                "a smaller batch trains as much in less time",
                where,
                stage.batch_size,
                len(usable),
            )
