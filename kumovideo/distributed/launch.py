"""Glue for `kumo generate --parallel`: every check that can be made from the checkpoint's
config files is made before any weights are read, then the process groups are set up.

    torchrun --nproc-per-node 4 -m kumovideo.cli generate "..." -o out.mp4 --parallel ulysses=2,cfg=2
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist

from kumovideo.distributed.mesh import (
    ParallelContext,
    build_mesh,
    check_guidance,
    check_heads,
    check_tokens,
    check_world_size,
    default_device,
    parse_parallel,
    world_size_from_env,
)
from kumovideo.geometry import ClipGeometry
from kumovideo.utils.errors import KumoInputError


def _config(folder: Path, part: str) -> dict | None:
    path = folder / part / "config.json"
    if not path.exists():
        return None  # the loader names the missing part later
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def prepare_parallel(args, folder: Path, device: torch.device) -> ParallelContext:
    """Parse --parallel, check it against the process count and the model, start the groups.

    Raises KumoInputError (one line, exit status 2) for anything that cannot work."""
    config = parse_parallel(args.parallel)
    check_world_size(config, world_size_from_env())
    if getattr(args, "cpu_offload", False):
        raise KumoInputError("--cpu-offload does not combine with --parallel; each rank keeps its models on its GPU")
    if config.ulysses > 1 and getattr(args, "step_cache", None) is not None:
        # Each rank would decide to skip blocks on its own shard of the tokens, and the ranks disagree.
        raise KumoInputError("--step-cache does not combine with --parallel ulysses>1; drop one of them")
    if args.guidance is not None:
        check_guidance(config, args.guidance > 1.0)
    tconf, vconf = _config(folder, "transformer"), _config(folder, "vae")
    if tconf is not None:
        check_heads(config, tconf["num_attention_heads"])
        if vconf is not None:
            geometry = ClipGeometry.from_configs(vconf, tconf)
            frames, height, width = args.frames, args.height, args.width
            if not (frames and height and width):  # unset: the transformer's own clip size
                sample = geometry.sample_clip(tconf)
                frames, height, width = frames or sample[0], height or sample[1], width or sample[2]
            check_tokens(config, tconf["num_attention_heads"], geometry.tokens(frames, height, width))
    if device.type == "cuda":
        device = default_device()  # cuda:LOCAL_RANK
    return build_mesh(config, device)


def finish(ctx: ParallelContext | None) -> None:
    if ctx is not None and ctx.mesh is not None and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
