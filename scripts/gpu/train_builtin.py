"""The built-in model's training kit: its MADiT and small T5 at 128x128, 17 frames, trained
on one GPU in one device call, resumable by a second (issue 18; docs/gpu.md, "Training the
built-in model on a device").

    bash scripts/gpu/train_builtin.sh [--budget-s 500] [--resume-from DIR]   # on the device
    bash scripts/gpu/train_builtin.sh --tiny                                 # toy size, CPU
    bash scripts/gpu/train_builtin.sh --config configs/builtin-lumina-128-gpu.yaml   # issue 20's recipe

A recipe whose stage has `buckets` and `motion_range` (the Lumina one) gets a latent cache
per frame size, trains step k on bucket k at the bucket's token budget with the multi-scale
and motion settings of `kumo train dit`, and is judged at its widest bucket too.

Parts, each its own process with its own time budget (scripts/gpu/runner.py):

    env          GPU, packages, bf16 matmul and copy ceilings (parts.py env)     device only
    train        ShapesWorld clips rendered with torch and VAE-encoded on the GPU into
                 a latent cache kept there, then the recipe (configs/builtin-dit-128-gpu.yaml)
                 trained with torch.compile until its deadline; a checkpoint every minute,
                 packed into $OUT
    train-eager  only when `train` failed with compile on: resumes its newest checkpoint
                 without compile, to the same deadline
    finish       the pipeline folder (kumo-shapes layout) from the newest checkpoint, as
                 $OUT/pipeline.tgz, and the match rate on fresh captions (kumo eval
                 shapes' draw and judge, on the GPU), with the shipped model as baseline

What comes back in $OUT (the device returns at most 8 files of 16 MiB, 64 MiB in all):
results.json (every part's JSON, command, status, times), log.txt, the newest checkpoint
as ckpt-step<N>.part<i>of<n> (<= 16 MiB each; weights and EMA in fp16, Adam's second
moment in bf16: about 22 MB, small enough to be carried back beside the repository and
the diffusers wheel) and pipeline.tgz. A second call on the same (warm) machine resumes
its own full-precision checkpoint in the work folder; on a fresh machine, `--resume-from
DIR` continues from the newest complete set of parts in DIR (a previous $OUT, carried).

    python scripts/gpu/train_builtin.py part NAME [same options]   # one part (the driver runs these)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kit import header  # noqa: E402
from runner import Part, run_parts, select_parts, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "builtin-dit-128-gpu.yaml"

# What the device tool brings back from $OUT.
MAX_FILES, MAX_FILE_BYTES, MAX_TOTAL_BYTES = 8, 16 * 2**20, 64 * 2**20
RESERVED_BYTES = 2 * 2**20  # results.json and log.txt, written last

ENV_S = 30  # parts.py env: ~10 s
FINISH_S = {"device": 100, "tiny": 90}  # export + two evaluations; the train deadline leaves this much
STOP_MARGIN_S = 25  # the train part stops this long before its deadline: a last checkpoint and its packing
GRACE_S = 20  # the runner kills a part only this long after its own deadline

# Sizes of each mode; the recipe itself (model, lr, batch, ...) is the config file's.
MODES = {
    "device": dict(
        device="cuda",
        compile=True,
        cache_clips=98304,
        cache_s=75.0,
        checkpoint_every_s=60.0,
        eval_n=64,  # 256 could not be drawn unseen after 33k training captions (2026-12-04)
        eval_batch=64,
        eval_steps=None,  # the exported folder's kumo_defaults.json
        baseline=True,
        overrides={},
    ),
    # Toy size on the CPU: the same code, the shipped model at 32x32x9, a few steps.
    "tiny": dict(
        device="cpu",
        compile=False,
        cache_clips=12,
        cache_s=60.0,
        checkpoint_every_s=None,
        eval_n=4,
        eval_batch=4,
        eval_steps=2,
        baseline=False,
        overrides={
            "stages": [{"name": "clips", "steps": 8, "size": 32, "num_frames": 9, "batch_size": 2}],
            "warmup_steps": 2,
            "checkpoint_every": 2,
            "log_every": 1,
        },
    ),
}


TINY_BUCKETS = "32x32,64x32,32x64"  # a bucketed recipe's toy buckets: sides of whole coarse (4x4) patches

# ------------------------------------------------------------------------------ $OUT files

CKPT_PART = re.compile(r"^ckpt-step(\d{7})\.part(\d+)of(\d+)$")


def out_files(out: Path) -> dict[str, int]:
    """Every file under `out` (relative path -> bytes)."""
    return {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}


def over_limits(sizes: list[int]) -> str | None:
    """Why files of these sizes would not all come back from the device, or None."""
    if sizes and max(sizes) > MAX_FILE_BYTES:
        return f"a file of {max(sizes)} bytes is over the {MAX_FILE_BYTES} a file"
    if len(sizes) > MAX_FILES:
        return f"{len(sizes)} files would be over the {MAX_FILES} that come back"
    if sum(sizes) > MAX_TOTAL_BYTES:
        return f"{sum(sizes)} bytes would be over the {MAX_TOTAL_BYTES} that come back"
    return None


def room_left(out: Path, adding: list[int], replacing: set[str] = frozenset()) -> str | None:
    """Why files of sizes `adding` would not come back with what is in `out` (less
    `replacing`, and with results.json and log.txt still to come), or None if they would."""
    kept = [v for k, v in out_files(out).items() if k not in replacing | {"results.json", "log.txt"}]
    return over_limits(kept + adding + [RESERVED_BYTES // 2] * 2)


def split_bytes(data: bytes, size: int = MAX_FILE_BYTES) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def _tar_add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _recast_safetensors(data: bytes, dtype) -> bytes:
    import torch
    from safetensors.torch import load, save

    tensors = load(data)
    return save({k: v.to(dtype) if torch.is_floating_point(v) else v for k, v in tensors.items()})


def compact_optimizer(data: bytes) -> bytes:
    """optimizer.pt as it travels: Adam's second moment in bf16 (its range), the first
    moment left out (it restarts from zero on resume and refills within ~10 steps)."""
    import torch

    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    for slot in state["optimizer"]["state"].values():
        slot.pop("exp_avg", None)
        if "exp_avg_sq" in slot:
            slot["exp_avg_sq"] = slot["exp_avg_sq"].to(torch.bfloat16)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def expand_optimizer(data: bytes) -> bytes:
    """`compact_optimizer` undone: fp32 moments, the first one zero."""
    import torch

    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    for slot in state["optimizer"]["state"].values():
        if "exp_avg_sq" in slot:
            slot["exp_avg_sq"] = slot["exp_avg_sq"].float()
            slot.setdefault("exp_avg", torch.zeros_like(slot["exp_avg_sq"]))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def compact_file(path: Path) -> bytes:
    """A checkpoint file as it travels: weights and EMA in fp16 (the shipped model's
    precision; one rounding, far below one optimizer step's change), Adam's state compacted."""
    import torch

    data = path.read_bytes()
    if path.suffix == ".safetensors":
        return _recast_safetensors(data, torch.float16)
    if path.name == "optimizer.pt":
        return compact_optimizer(data)
    return data


def expand_checkpoint(step_dir: Path) -> None:
    """A carried checkpoint folder back in the loop's own precision (fp32 everywhere)."""
    import torch

    for path in step_dir.iterdir():
        if path.suffix == ".safetensors":
            path.write_bytes(_recast_safetensors(path.read_bytes(), torch.float32))
        elif path.name == "optimizer.pt":
            path.write_bytes(expand_optimizer(path.read_bytes()))


def pack_checkpoint(step_dir: Path, run_dir: Path, out: Path) -> dict:
    """Checkpoint folder `step_dir` (with the run's kit.json, cache captions and, for a run
    from scratch, tokenizer) compacted (`compact_file`) into one gzipped tar in parts of at
    most 16 MiB in `out`, small enough to be carried back to a fresh machine; older parts
    are removed once the new set is complete. Returns what was written."""
    step = int(step_dir.name.split("-")[1])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for path in sorted(step_dir.iterdir()):
            _tar_add_bytes(tar, f"checkpoints/{step_dir.name}/{path.name}", compact_file(path))
        for extra in ("tokenizer", "kit.json", "cache_captions.txt"):
            if (run_dir / extra).exists():
                tar.add(run_dir / extra, extra)
    pieces = split_bytes(buffer.getvalue())
    old = {name for name in out_files(out) if CKPT_PART.match(name)}
    why = room_left(out, [len(p) for p in pieces], replacing=old)
    if why:
        raise RuntimeError(f"checkpoint step {step} ({len(buffer.getvalue())} bytes) does not fit: {why}")
    names = [f"ckpt-step{step:07d}.part{i + 1}of{len(pieces)}" for i in range(len(pieces))]
    for name, piece in zip(names, pieces):
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(piece)
        os.replace(tmp, out / name)
    for name in old - set(names):
        (out / name).unlink(missing_ok=True)
    return {"step": step, "files": names, "bytes": len(buffer.getvalue())}


def newest_packed(folder: Path) -> tuple[int, list[Path]] | None:
    """The newest step whose parts are all in `folder`: (step, parts in order)."""
    sets: dict[tuple[int, int], dict[int, Path]] = {}
    for path in folder.iterdir() if folder.is_dir() else []:
        match = CKPT_PART.match(path.name)
        if match:
            step, i, n = map(int, match.groups())
            sets.setdefault((step, n), {})[i] = path
    complete = [(step, n) for (step, n), parts in sets.items() if set(parts) == set(range(1, n + 1))]
    if not complete:
        return None
    step, n = max(complete)
    return step, [sets[(step, n)][i] for i in range(1, n + 1)]


def unpack_checkpoint(folder: Path, run_dir: Path) -> int:
    """The newest complete packed checkpoint in `folder` unpacked into `run_dir`, back in
    fp32 (`expand_checkpoint`); its step."""
    found = newest_packed(folder)
    if found is None:
        raise SystemExit(f"--resume-from {folder}: no complete set of ckpt-step*.part*of* files there")
    step, parts = found
    data = b"".join(p.read_bytes() for p in parts)
    run_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(run_dir, filter="data")
    expand_checkpoint(run_dir / "checkpoints" / f"step-{step:07d}")
    return step


# ------------------------------------------------------------------------------ settings


def add_settings(p: argparse.ArgumentParser) -> None:
    """The options the driver and every part share."""
    p.add_argument("--tiny", action="store_true", help="toy size on the CPU (the test's rehearsal)")
    p.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "gpu-out" / "train"), help="results ($OUT)")
    p.add_argument("--work", default=None, help="work folder (run, checkpoints, export); default gpu-out/train-work")
    p.add_argument("--config", default=str(CONFIG), help="the recipe (default configs/builtin-dit-128-gpu.yaml)")
    p.add_argument("--resume-from", default=None, help="folder holding a previous $OUT's ckpt-step*.part* files")
    p.add_argument("--batch", type=int, default=None, help="batch size over the config's")
    p.add_argument("--cache-clips", type=int, default=None, help="clips rendered and encoded into the GPU cache")
    p.add_argument("--cache-s", type=float, default=None, help="the cache stops filling after this many seconds")
    p.add_argument("--checkpoint-every-s", type=float, default=None, help="checkpoint interval by wall time")
    p.add_argument("--no-compile", action="store_true", help="train without torch.compile")
    p.add_argument(
        "--compile", action="store_true", help="compile at --tiny too: the compiled path on the CPU (~1 min)"
    )
    p.add_argument("--stop-after", type=int, default=None, help="stop after this global step (rehearsals)")
    p.add_argument("--eval-n", type=int, default=None, help="captions the finish part judges (0: none)")
    p.add_argument("--eval-seed", type=int, default=2024, help="caption and noise seed of the evaluation")
    p.add_argument("--rehearse-crash", action="store_true", help="train: fail after the first checkpoint (tests)")


def mode_of(args) -> dict:
    """The mode's sizes with the command line's over them."""
    mode = dict(MODES["tiny" if args.tiny else "device"])
    for key in ("cache_clips", "cache_s", "checkpoint_every_s", "eval_n"):
        if getattr(args, key) is not None:
            mode[key] = getattr(args, key)
    if args.compile:
        mode["compile"] = True
    if args.no_compile:
        mode["compile"] = False
    return mode


def settings_argv(args) -> list[str]:
    """`args` as options again, for the part processes."""
    argv = ["--out", args.out, "--work", args.work, "--config", args.config, "--eval-seed", str(args.eval_seed)]
    for flag in ("tiny", "compile", "no_compile", "rehearse_crash"):
        if getattr(args, flag):
            argv.append("--" + flag.replace("_", "-"))
    for key in ("resume_from", "batch", "cache_clips", "cache_s", "checkpoint_every_s", "stop_after", "eval_n"):
        if getattr(args, key) is not None:
            argv += ["--" + key.replace("_", "-"), str(getattr(args, key))]
    return argv


def kit_config(args, mode: dict):
    """The recipe, with the mode's sizes and the work folder as output_dir."""
    from kumovideo.training.config import load_config

    overrides = {**mode["overrides"], "output_dir": str(Path(args.work) / "run")}
    if args.tiny:  # the toy stage renders what the recipe's does: buckets, motion amounts, object mix, at toy size
        recipe = load_config(args.config).stages[0]
        tiny_stage = dict(overrides["stages"][0])
        if recipe.buckets:
            tiny_stage["buckets"] = TINY_BUCKETS
        if recipe.motion_range:
            tiny_stage["motion_range"] = recipe.motion_range
        if recipe.two_object_share is not None:
            tiny_stage["two_object_share"] = recipe.two_object_share
        overrides["stages"] = [tiny_stage]
    config = load_config(args.config, overrides)
    if args.batch:
        for stage in config.stages:
            stage.batch_size = args.batch
    if len({(s.size, s.num_frames) for s in config.stages}) != 1:
        raise SystemExit("the kit's latent cache is of one clip size: give every stage the same size and num_frames")
    return config


def fit_clip_size(transformer, vae, stage) -> None:
    """The transformer's default clip (what `pipe.default_clip()` and `kumo generate` use)
    becomes the stage's size, e.g. 128x128x17 for a model first trained at 64."""
    from kumovideo.geometry import ClipGeometry

    frames, h, w = ClipGeometry.from_configs(vae.config).latent_size(stage.num_frames, stage.size, stage.size)
    transformer.register_to_config(sample_height=h, sample_width=w, sample_frames=stage.num_frames)


# ------------------------------------------------------------------------------ the GPU data path


def _table_job(job):
    from kumovideo.data.shapes_torch import example_table

    seed, indices, size, frames, (width, height), motion_amounts, two_object_share = job
    return example_table(
        seed,
        indices,
        size,
        frames,
        width=width,
        height=height,
        motion_amounts=motion_amounts,
        two_object_share=two_object_share,
    )


def cache_plan(stage, clips: int) -> list[tuple[tuple[int, int], int]]:
    """(frame (W, H), clips) for each distinct frame the stage renders: its `buckets` weighted
    by how often the list names each (the batches train on them in turn), else size x size."""
    from kumovideo.training.config import stage_frames

    frames = stage_frames(stage) or [(stage.size, stage.size)]
    distinct = sorted(set(frames), key=frames.index)
    return [(frame, max(1, round(clips * frames.count(frame) / len(frames)))) for frame in distinct]


def spec_jobs(
    seed: int, plan, size: int, frames: int, motion_amounts, chunk: int, two_object_share: float | None = None
) -> list[tuple]:
    """The sampling jobs of every bucket, `chunk` examples each, interleaved so that the
    buckets fill at the same pace (a cache cut short by its time cap still holds them all).
    Bucket j takes the examples after bucket j-1's in the stream `seed`; `two_object_share`
    as the stage's (None: the stream's even mix)."""
    jobs, first = [], 0
    for frame, count in plan:
        starts = range(first, first + count, chunk)
        for k, a in enumerate(starts):
            job = (
                seed,
                range(a, min(a + chunk, first + count)),
                size,
                frames,
                frame,
                motion_amounts,
                two_object_share,
            )
            jobs.append(((k + 0.5) / len(starts), len(jobs), job))
        first += count
    return [job for _, _, job in sorted(jobs)]


def spec_tables(pool, jobs: list[tuple]):
    """(SpecTable, captions) of each job, in order; sampled by `pool` (CPU processes) while
    the GPU renders and encodes."""
    return pool.imap(_table_job, jobs) if pool is not None else map(_table_job, jobs)


class LatentCache:
    """ShapesWorld clips of one frame size rendered and VAE-encoded on the device once and
    kept there: the posterior mean and std (bf16, the transformer's (N, F, C, h, w) layout),
    the token ids of every clip's caption, and each clip's motion score (None: the stage
    renders m = 1). A training sample is mean + std * noise, scaled, as
    `LatentShardDataset.sample_latent` draws one from a cache on disk."""

    def __init__(self, mean, std, ids, empty_ids, captions: list[str], scaling: float, motion_scores=None):
        self.mean, self.std, self.ids, self.empty_ids = mean, std, ids, empty_ids
        self.captions, self.scaling, self.motion_scores = captions, scaling, motion_scores

    def __len__(self) -> int:
        return len(self.captions)

    def sample(self, rows, generator):
        import torch

        mean, std = self.mean[rows].float(), self.std[rows].float()
        return (mean + std * torch.randn(mean.shape, generator=generator, device=mean.device)) * self.scaling


def tokenize(tokenizer, captions: list[str], max_len: int, device):
    """Token ids (N, L) of `captions` (each distinct caption tokenized once)."""
    distinct = sorted(set(captions))
    ids = tokenizer(distinct, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
    row = {text: i for i, text in enumerate(distinct)}
    return ids.input_ids[[row[c] for c in captions]].to(device)


def build_cache(pool, vae, tokenizer, config, mode: dict, max_len: int, device, rep) -> dict:
    """Render (torch, on `device`) and encode (the frozen VAE) the run's clips, one
    `LatentCache` per frame size ((W, H) -> cache); held-out captions are left out, so `kumo
    eval shapes` can still find captions never trained on. Stops filling after `cache_s`
    seconds, recording how far it got."""
    import torch

    from kumovideo.data.shapes_torch import render_table, to_vae_input
    from kumovideo.data.shapes_world import DEFAULT_FPS, is_held_out, motion_score_of
    from kumovideo.training.config import stage_motion_amounts

    stage = config.stages[0]
    amounts = stage_motion_amounts(stage)
    plan = cache_plan(stage, mode["cache_clips"])
    chunk = 256 if device.type == "cuda" else 4
    jobs = spec_jobs(config.data_seed, plan, stage.size, stage.num_frames, amounts, chunk, stage.two_object_share)
    parts = {frame: {"mean": [], "std": [], "captions": [], "m": []} for frame, _ in plan}
    drawn = 0
    timing = {"sample_wait_s": 0.0, "render_s": 0.0, "encode_s": 0.0}
    start = time.perf_counter()
    complete = True
    for (_, _, _, _, frame, _, _), (table, texts) in zip(jobs, spec_tables(pool, jobs)):
        keep = [i for i, text in enumerate(texts) if not is_held_out(text)]
        drawn += len(texts)
        if not keep:
            continue
        table = table.select(keep)
        t1 = time.perf_counter()
        frames = render_table(table, device)
        _sync(device)
        t2 = time.perf_counter()
        with torch.no_grad():
            posterior = vae.encode(to_vae_input(frames)).latent_dist
            bucket = parts[frame]
            bucket["mean"].append(posterior.mean.permute(0, 2, 1, 3, 4).to(torch.bfloat16))
            bucket["std"].append(posterior.std.permute(0, 2, 1, 3, 4).to(torch.bfloat16))
        _sync(device)
        t3 = time.perf_counter()
        timing["render_s"] += t2 - t1
        timing["encode_s"] += t3 - t2
        bucket["captions"] += [texts[i] for i in keep]
        bucket["m"] += [float(m) for m in table.motion_amount]
        if time.perf_counter() - start > mode["cache_s"]:
            complete = drawn == sum(count for _, count in plan)
            break
    wall = time.perf_counter() - start
    timing["sample_wait_s"] = wall - timing["render_s"] - timing["encode_s"]
    empty = tokenize(tokenizer, [""], max_len, device)[0]
    caches = {}
    for frame, got in parts.items():
        if not got["captions"]:
            continue
        scores = None
        if amounts is not None:
            scores = torch.tensor([motion_score_of(m, stage.num_frames, DEFAULT_FPS) for m in got["m"]], device=device)
        ids = tokenize(tokenizer, got["captions"], max_len, device)
        mean, std = torch.cat(got["mean"]), torch.cat(got["std"])
        caches[frame] = LatentCache(mean, std, ids, empty, got["captions"], vae.config.scaling_factor, scores)
    n = sum(len(cache) for cache in caches.values())
    rep["data"] = {
        "clips": n,
        "drawn": drawn,
        "held_out_left_out": drawn - n,
        "complete": complete,
        "asked": mode["cache_clips"],
        "data_seed": config.data_seed,
        "size": stage.size,
        "num_frames": stage.num_frames,
        "buckets": {
            f"{w}x{h}": {"clips": len(c), "latent_shape": list(c.mean.shape[1:])} for (w, h), c in caches.items()
        },
        "motion_amounts": list(amounts) if amounts else None,
        "latent_shape": list(next(iter(caches.values())).mean.shape[1:]) if caches else None,
        "cache_bytes": sum(2 * c.mean.numel() * c.mean.element_size() for c in caches.values()),
        "wall_s": round(wall, 2),
        "clips_per_s": round(n / wall, 1),
        "render_clips_per_s": round(n / max(timing["render_s"], 1e-9), 1),
        "encode_clips_per_s": round(n / max(timing["encode_s"], 1e-9), 1),
        **{k: round(v, 2) for k, v in timing.items()},
        "what": "specs sampled by CPU processes (sample_example), rendered with torch on the device "
        "(kumovideo/data/shapes_torch.py), VAE-encoded (fp32 weights; cuDNN may use TF32) into bf16 mean and std; "
        "sample_wait_s is time spent waiting for specs",
    }
    if not caches:
        raise SystemExit("the latent cache is empty: every drawn caption was held out, or cache_s ran out first")
    return caches


def widest_frame(stage) -> tuple[int, int] | None:
    """The stage's bucket farthest from square (W, H), the first of a tie (None: no buckets)."""
    from kumovideo.training.config import stage_frames

    frames = stage_frames(stage)
    return max(frames, key=lambda f: max(f) / min(f)) if frames else None


def renderer_check(device, stage, n: int = 32) -> dict:
    """The torch renderer on `device` against the numpy one, on the same clips: at the stage's
    size, and for a bucketed stage at its widest bucket with its motion amounts too."""
    import numpy as np

    from kumovideo.data.shapes_torch import example_table, render_table
    from kumovideo.data.shapes_world import render_clip, sample_example
    from kumovideo.training.config import stage_motion_amounts

    checks = [(stage.size, stage.size, None)]
    wide = widest_frame(stage)
    if wide:
        checks.append((*wide, stage_motion_amounts(stage)))
    report = []
    for width, height, amounts in checks:
        frame = {"width": width, "height": height, "motion_amounts": amounts}
        table, _ = example_table(99, range(n), stage.size, stage.num_frames, **frame)
        got = render_table(table, device).cpu().numpy().astype(np.int16)
        specs = [sample_example(99, i, stage.size, stage.num_frames, **frame)[0] for i in range(n)]
        want = np.stack([render_clip(spec) for spec in specs]).astype(np.int16)
        diff = np.abs(got - want)
        report.append(
            {
                "clips": n,
                "frame": f"{width}x{height}",
                "motion_amounts": list(amounts) if amounts else None,
                "values_differing": int((diff > 0).sum()),
                "max_level_difference": int(diff.max()),
            }
        )
    return {"checks": report}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------ part: train


def make_loss_fn(config, caches: dict, state, text_encoder, scheduler, runtime, transformer_config, spatial: int):
    """train_dit's v-prediction loss with every large draw made on the device (cache rows,
    posterior noise, diffusion noise, caption dropout): a step's randomness is still a
    function of (seed, step) alone, so a resumed run draws what an uninterrupted one would.
    A bucketed stage trains step k on its k-th bucket at the bucket's token-budget batch, as
    `kumo train dit` renders such a stage; multi-scale and motion settings as train_dit's
    (`step_extras`: a coarse patch on a share of the steps, its timesteps shifted toward noise)."""
    import torch

    from kumovideo.training.config import stage_frame_at
    from kumovideo.training.data_sources import frame_batch_size
    from kumovideo.training.objectives import diffuse, sample_timesteps, shift_timesteps, v_prediction_loss
    from kumovideo.training.runtime import autocast_context, step_generator
    from kumovideo.training.shapes_batches import is_image_step
    from kumovideo.training.train_dit import step_extras

    device = runtime.device
    alphas_cumprod = scheduler.alphas_cumprod.to(torch.float32).to(device)
    num_timesteps = scheduler.config.num_train_timesteps

    def loss_fn(step: int):
        stage, _ = config.stage_at(step)
        on_cpu = step_generator(config.seed, step, 0)
        g = torch.Generator(device=device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=on_cpu)))
        frame = stage_frame_at(stage, step) or (stage.size, stage.size)
        cache = caches[frame]
        n = frame_batch_size(stage, frame, spatial)  # as `kumo train dit` sizes a bucket's batch
        rows = torch.randint(0, len(cache), (n,), generator=g, device=device)
        latents = cache.sample(rows, g)
        if is_image_step(config.data_seed, step, stage.image_prob):
            latents = latents[:, :1]  # the first latent frame is the still image's latent
        drop = torch.rand(n, generator=g, device=device) < config.caption_dropout
        ids = torch.where(drop[:, None], cache.empty_ids, cache.ids[rows])
        scores = cache.motion_scores[rows].tolist() if cache.motion_scores is not None else []
        extras, patch_size = step_extras(config, transformer_config, step, latents.shape[1:], scores)
        extras = {k: v.to(device) if torch.is_tensor(v) else v for k, v in extras.items()}
        t = sample_timesteps(n, num_timesteps, stage.timestep_sampling, on_cpu)
        if patch_size is not None:  # a coarse patch trains where sampling runs it: noisy steps
            t = shift_timesteps(t, num_timesteps, config.multiscale_time_shift)
        t = t.to(device)
        noise = torch.randn(latents.shape, generator=g, device=device)
        x_t, v_target = diffuse(latents, noise, alphas_cumprod[t])
        with autocast_context(runtime, config.mixed_precision):
            text = state.wrapped.get("text_encoder", text_encoder)(ids)[0]
            v_pred = state.wrapped["transformer"](x_t, text, t, return_dict=False, **extras)[0]
        info = {"frames": int(latents.shape[1]), "tokens": int(latents.shape[-1] * latents.shape[-2])}
        loss = v_prediction_loss(v_pred, v_target, alphas_cumprod[t], config.snr_gamma)
        return loss, {**info, "patch": patch_size or 0}

    return loss_fn


class TrainLog:
    """The loss log and the throughput, per log interval, in the part's JSON."""

    def __init__(self, rep, train_flops_per_step: int, batch: int, device, peak_tflops: float | None):
        self.rep, self.flops, self.batch = rep, train_flops_per_step, batch
        self.device, self.peak = device, peak_tflops
        self.start = time.perf_counter()
        self.last: tuple[int, float] | None = None
        self.rows: list[dict] = []

    def __call__(self, step: int, metrics: dict) -> None:
        import torch

        now = time.perf_counter()
        row = {"step": step, "loss": round(metrics["loss"], 5), "grad_norm": round(metrics["grad_norm"], 4)}
        row["s"] = round(now - self.start, 2)
        if self.last is not None and step > self.last[0]:
            steps_per_s = (step - self.last[0]) / (now - self.last[1])
            row["steps_per_s"] = round(steps_per_s, 3)
            row["samples_per_s"] = round(steps_per_s * self.batch, 1)
            row["tflops"] = round(steps_per_s * self.flops / 1e12, 2)
            if self.peak:
                row["mfu_bf16"] = round(row["tflops"] / self.peak, 4)
        self.last = (step, now)
        self.rows.append(row)
        rates = [r for r in self.rows if "samples_per_s" in r]
        summary = {"first_log_s": self.rows[0]["s"], "steps": step, "rows": self.rows[-300:]}
        if rates:
            best = max(rates, key=lambda r: r["samples_per_s"])
            summary["best_interval"] = {k: best[k] for k in ("step", "samples_per_s", "tflops") if k in best}
            summary["last_interval"] = rates[-1]
        if self.device.type == "cuda":
            summary["peak_memory_bytes"] = torch.cuda.max_memory_allocated(self.device)
        self.rep["train"] = summary


def sizing(transformer, vae, stage, text_encoder) -> dict:
    """FLOPs of one training step from the architecture (kumovideo/perf/flops.py)."""
    from kumovideo.geometry import ClipGeometry
    from kumovideo.models.transformer_kumo import count_parameters
    from kumovideo.perf.flops import madit_flops

    frames, h, w = ClipGeometry.from_configs(vae.config).latent_size(stage.num_frames, stage.size, stage.size)
    forward = madit_flops(transformer.config, frames, h, w, batch=stage.batch_size)
    return {
        "batch": stage.batch_size,
        "latent": [frames, h, w],
        "tokens_per_sample": forward.tokens,
        "tokens_per_step": forward.tokens * stage.batch_size,
        "madit_params": count_parameters(transformer),
        "text_encoder_params": count_parameters(text_encoder),
        "forward_flops_per_step": forward.total,
        "train_flops_per_step": 3 * forward.total,
        "how": "madit_flops (matmuls and attention, a multiply-add = 2 FLOPs); training = 3x the forward; "
        "the T5 (2 layers, width 128, 24 tokens) is left out",
    }


def compiled_or_eager(transformer, loss_fn, step: int) -> dict:
    """torch.compile each block (regional) and run one forward and backward, where the
    compiling happens; if that fails, take the compile off and train eager, saying why,
    rather than lose the latent cache with the process."""
    import torch
    from diffusers.hooks import HookRegistry

    from kumovideo.perf.fast_paths import compile_transformer
    from kumovideo.perf.order import COMPILE_HOOK

    start = time.perf_counter()
    compile_transformer(transformer, "regional")
    try:
        loss, _ = loss_fn(step)
        loss.backward()
        report = {"mode": "regional (each block)", "first_step_s": round(time.perf_counter() - start, 2)}
    except Exception as exc:  # an inductor or dynamo failure: train without it
        for block in transformer.transformer_blocks:
            HookRegistry.check_if_exists_or_initialize(block).remove_hook(COMPILE_HOOK, recurse=False)
        torch._dynamo.reset()
        report = {"mode": "off", "failed": repr(exc)[-2000:], "after_s": round(time.perf_counter() - start, 2)}
    transformer.zero_grad(set_to_none=True)  # the loop's first step starts from no gradients anyway
    return report


def _spec_pool(mode: dict):
    """CPU processes that sample clip specs, started before CUDA is (they never touch it)."""
    if mode["device"] == "cpu":
        return None
    import multiprocessing

    workers = max(1, min(15, (os.cpu_count() or 2) - 1))
    return multiprocessing.get_context("fork").Pool(workers)


def load_models(config, stage, device) -> dict:
    """The run's models (`build_components`, as `kumo train dit` builds them) on `device`,
    the transformer's default clip set to the stage's."""
    from kumovideo.training.components import build_components

    components = build_components(config)
    vae, transformer, text_encoder = components["vae"], components["transformer"], components["text_encoder"]
    fit_clip_size(transformer, vae, stage)
    vae.requires_grad_(False).eval().to(device)
    transformer.to(device).train()
    text_encoder.to(device).train(config.train_text_encoder)
    text_encoder.requires_grad_(config.train_text_encoder)
    return components


def train_state(config, transformer, text_encoder):
    """What the loop trains, as `train_dit` sets it up: the transformer, and the text
    encoder at its own learning rate when it is trained."""
    from kumovideo.training.loop import TrainState

    modules = {"transformer": transformer}
    groups = [{"params": [p for p in transformer.parameters() if p.requires_grad]}]
    if config.train_text_encoder:
        modules["text_encoder"] = text_encoder
        groups.append({"params": list(text_encoder.parameters()), "lr": config.text_lr or config.lr})
    return TrainState(modules=modules, param_groups=groups)


def remember_cache(run_dir: Path, caches: dict, rep, tiny: bool) -> None:
    """Every caption the run has trained on, over all its calls (a resumed call's cache
    may be cut shorter), and the kit's settings, beside the checkpoints (both are packed)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    listed = run_dir / "cache_captions.txt"
    earlier = set(listed.read_text().splitlines()) if listed.exists() else set()
    captions = {text for cache in caches.values() for text in cache.captions}
    listed.write_text("\n".join(sorted((earlier | captions) - {""})) + "\n")
    kit_state = {"config": rep.data["recipe"]["config"], "data": rep.data["data"], "tiny": tiny}
    (run_dir / "kit.json").write_text(json.dumps(kit_state, indent=2))


def part_train(args, rep) -> None:
    mode = mode_of(args)
    pool = _spec_pool(mode)
    import torch

    from kumovideo.geometry import ClipGeometry
    from kumovideo.perf.flops import gpu_peak_tflops
    from kumovideo.training.checkpointing import list_checkpoints
    from kumovideo.training.config import stage_frames
    from kumovideo.training.loop import WallClock, train
    from kumovideo.training.runtime import Runtime

    device = torch.device(mode["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("this part needs a CUDA GPU (or --tiny)")
    if device.type == "cpu":
        torch.set_num_threads(1)
    run_dir, out = Path(args.work) / "run", Path(args.out)
    config = kit_config(args, mode)
    stage = config.stages[0]
    rep["recipe"] = {"config": os.path.relpath(args.config, REPO), "batch": stage.batch_size, "mode": mode}
    if not list_checkpoints(run_dir) and args.resume_from:
        rep["resumed_from"] = {"folder": args.resume_from, "step": unpack_checkpoint(Path(args.resume_from), run_dir)}
    components = load_models(config, stage, device)
    transformer, text_encoder, vae = components["transformer"], components["text_encoder"], components["vae"]
    if device.type == "cuda":
        rep["gpu"] = torch.cuda.get_device_name(device)
        rep["renderer_check"] = renderer_check(device, stage)

    max_len = transformer.config.max_text_seq_length
    caches = build_cache(pool, vae, components["tokenizer"], config, mode, max_len, device, rep)
    if pool is not None:
        pool.terminate()  # a cache cut short by its time cap leaves specs nobody will read
    remember_cache(run_dir, caches, rep, args.tiny)

    state = train_state(config, transformer, text_encoder)
    rep["sizing"] = sizing(transformer, vae, stage, text_encoder)
    peak = gpu_peak_tflops(rep.data.get("gpu", ""), "bf16") if device.type == "cuda" else None
    log = TrainLog(rep, rep.data["sizing"]["train_flops_per_step"], stage.batch_size, device, peak)
    out.mkdir(parents=True, exist_ok=True)

    def on_checkpoint(step: int, path: Path) -> None:
        start = time.perf_counter()
        packed = pack_checkpoint(path, run_dir, out)
        packed.update(pack_s=round(time.perf_counter() - start, 2), at_s=round(time.perf_counter() - log.start, 1))
        rep.data.setdefault("checkpoints", []).append(packed)
        rep.flush()
        if args.rehearse_crash:
            raise RuntimeError(f"rehearsed crash after the checkpoint of step {step} (--rehearse-crash)")

    clock = WallClock(args.deadline - STOP_MARGIN_S, mode["checkpoint_every_s"], on_checkpoint)
    found = list_checkpoints(run_dir)
    start_step = rep["start_step"] = int(found[-1].name.split("-")[1]) if found else 0
    runtime = Runtime(rank=0, world_size=1, local_rank=0, device=device)
    spatial = ClipGeometry.from_configs(vae.config).spatial
    loss_fn = make_loss_fn(
        config, caches, state, text_encoder, components["scheduler"], runtime, transformer.config, spatial
    )
    shapes = len(set(stage_frames(stage) or [None])) * (
        1 + len(transformer.config.get("multiscale_patch_sizes") or [])
    )
    if not mode["compile"]:
        rep["compile"] = "off"
    elif shapes > 1 and not args.compile:  # dynamo recompiles per token shape (and gives up after 8)
        rep["compile"] = (
            f"off: the stage trains {shapes} token shapes (aspect buckets x patch sizes); --compile forces it"
        )
    else:
        rep["compile"] = compiled_or_eager(transformer, loss_fn, start_step)
    metrics = train(config, runtime, state, loss_fn, resume=True, on_log=log, stop_after=args.stop_after, clock=clock)
    step = metrics.get("step", start_step)
    rep["stopped"] = {
        "step": step,
        "why": "deadline" if clock.out_of_time() else "--stop-after" if args.stop_after else "the config's last step",
        "samples_this_call": (step - start_step) * stage.batch_size,
        "samples_per_cached_clip": round(step * stage.batch_size / max(1, sum(map(len, caches.values()))), 2),
    }


# ------------------------------------------------------------------------------ part: finish


def match_rate(
    folder, captions: list[str], seed: int, batch: int, steps: int | None, device, deadline: float, frame=None
) -> dict:
    """`kumo eval shapes` on `device`: the same draw of captions and seeds, the same judge
    (kumovideo/evaluation/shapes_judge.py), the folder's own sampling defaults, at its default
    clip or the (W, H) `frame`. Stops early at `deadline`, saying how many captions it judged."""
    import torch

    from kumovideo.evaluation.shapes_judge import judge_clip, summarise
    from kumovideo.pipelines import KumoPipeline, frames_to_uint8

    torch.backends.cudnn.allow_tf32 = False  # fp32 as on the CPU the figures are compared with
    pipe = KumoPipeline.from_pretrained(folder, torch_dtype=torch.float32).to(device)
    pipe.set_progress_bar_config(disable=True)
    recommended = pipe.default_sampling()
    clip = pipe.default_clip()
    if frame is not None:
        clip = {**clip, "width": frame[0], "height": frame[1]}
    steps = steps or recommended["num_inference_steps"]
    results, start = [], time.perf_counter()
    for i in range(0, len(captions), batch):
        if time.time() > deadline:
            break
        texts = captions[i : i + batch]
        generators = [torch.Generator().manual_seed(seed + i + j) for j in range(len(texts))]
        video = pipe(
            texts,
            num_frames=clip["num_frames"],
            height=clip["height"],
            width=clip["width"],
            num_inference_steps=steps,
            guidance_scale=recommended["guidance_scale"],
            guidance_rescale=recommended["guidance_rescale"],
            generator=generators,
            output_type="pt",
        ).frames
        results += [judge_clip(frames_to_uint8(v), text) for v, text in zip(video, texts)]
    summary = summarise(results) if results else {"n": 0}
    summary.update(
        model=str(folder),
        clip=clip,
        steps=steps,
        guidance=recommended["guidance_scale"],
        seed=seed,
        asked=len(captions),
        seconds=round(time.perf_counter() - start, 2),
    )
    return summary


def pack_pipeline(folder: Path, out: Path) -> dict:
    """The exported folder as $OUT/pipeline.tgz (unpacks to pipeline/), if it fits."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, "pipeline")
    data = buffer.getvalue()
    why = room_left(out, [len(data)], replacing={"pipeline.tgz"})
    if why:
        return {"left_out": f"pipeline.tgz ({len(data)} bytes) left out: {why}; export the checkpoint here instead"}
    tmp = out / ".pipeline.tgz.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, out / "pipeline.tgz")
    return {"file": "pipeline.tgz", "bytes": len(data)}


def part_finish(args, rep) -> None:
    mode = mode_of(args)
    import shutil

    import torch

    from kumovideo.cli.eval import eval_captions
    from kumovideo.pipelines.pipeline_kumo import KumoPipeline
    from kumovideo.training.checkpointing import list_checkpoints
    from kumovideo.training.components import build_components
    from kumovideo.training.data_sources import training_captions
    from kumovideo.training.export import load_checkpoint_weights
    from kumovideo.training.pipeline_folder import save_trained_pipeline

    device = torch.device(mode["device"])
    if device.type == "cpu":
        torch.set_num_threads(1)
    work, out = Path(args.work), Path(args.out)
    run_dir = work / "run"
    config = kit_config(args, mode)
    if not list_checkpoints(run_dir) and args.resume_from:  # finishing a carried checkpoint alone
        rep["resumed_from"] = {"folder": args.resume_from, "step": unpack_checkpoint(Path(args.resume_from), run_dir)}
    found = list_checkpoints(run_dir)
    if not found:
        rep["skipped"] = "no checkpoint to export"
        return
    components = build_components(config)
    fit_clip_size(components["transformer"], components["vae"], config.stages[0])
    load_checkpoint_weights(found[-1], {k: components[k] for k in ("transformer", "text_encoder")})
    seen = training_captions(config)  # the starting model's captions (init_from)
    cached = run_dir / "cache_captions.txt"
    seen |= set(cached.read_text().splitlines()) - {""} if cached.exists() else set()
    target = work / "pipeline"
    shutil.rmtree(target, ignore_errors=True)
    captions_file = {"training_captions.txt": "\n".join(sorted(seen)) + "\n"}
    save_trained_pipeline(KumoPipeline(**components), config, captions_file, target)
    rep["export"] = {"checkpoint": found[-1].name, "training_captions": len(seen), **pack_pipeline(target, out)}
    if not mode["eval_n"]:
        return
    deadline = args.deadline - 5
    stage = config.stages[0]  # the exported model's default clip
    captions = eval_captions(mode["eval_n"], args.eval_seed, stage.size, stage.num_frames, seen)
    rep["eval"] = match_rate(
        target, captions, args.eval_seed, mode["eval_batch"], mode["eval_steps"], device, deadline
    )
    if mode["baseline"] and config.init_from:
        judged = captions[: rep.data["eval"]["n"]]  # the same captions and seeds, at its own default size
        baseline = match_rate(
            config.init_from, judged, args.eval_seed, mode["eval_batch"], mode["eval_steps"], device, deadline
        )
        rep["eval_baseline"] = {**baseline, "what": "the model it started from, on the same captions"}
    wide = widest_frame(stage)
    if wide:  # a bucketed recipe: its widest bucket too, the aspect the square says least about
        captions = eval_captions(mode["eval_n"], args.eval_seed, stage.size, stage.num_frames, seen, *wide)
        settings = (args.eval_seed, mode["eval_batch"], mode["eval_steps"], device, deadline)
        rep["eval_wide"] = match_rate(target, captions, *settings, frame=wide)
        if mode["baseline"] and config.init_from:
            judged = captions[: rep.data["eval_wide"]["n"]]
            baseline = match_rate(config.init_from, judged, *settings, frame=wide)
            rep["eval_wide_baseline"] = {**baseline, "what": "the model it started from, on the same captions"}


# ------------------------------------------------------------------------------ driver

PARTS = {"train": part_train, "finish": part_finish}


def part_main(argv: list[str]) -> int:
    from parts import Report

    p = argparse.ArgumentParser(prog="train_builtin.py part")
    p.add_argument("part", choices=sorted(PARTS))
    add_settings(p)
    p.add_argument("--deadline", type=float, default=None, help="time.time() by which the part ends")
    args = p.parse_args(argv)
    args.work = args.work or default_work(args.tiny)
    args.deadline = args.deadline or time.time() + 300
    os.chdir(REPO)
    rep = Report(args.part, args.tiny)
    rep["command"] = " ".join(["scripts/gpu/train_builtin.py part", *argv])
    PARTS[args.part](args, rep)
    rep["done"] = True
    return 0


def default_work(tiny: bool) -> str:
    """An ignored folder of the checkout: on a warm device it is still there at the next
    call, whose train part then resumes the run's own full-precision checkpoint."""
    return str(REPO / "gpu-out" / ("train-work-tiny" if tiny else "train-work"))


def build_parts(args, start: float) -> list[Part]:
    py, me = sys.executable, str(Path(__file__).resolve())
    mode = mode_of(args)
    finish_s = FINISH_S["tiny" if args.tiny else "device"]
    train_deadline = start + args.budget_s - finish_s
    common = settings_argv(args)

    def train_argv(*extra: str) -> list[str]:
        return [py, me, "part", "train", *common, "--deadline", f"{train_deadline:.1f}", *extra]

    def until_deadline(part: Part):
        """A `when` that gives the part what is left to the train deadline (and a grace)."""

        def when(results: dict) -> str | None:
            part.budget_s = max(0.0, train_deadline - time.time()) + GRACE_S
            return None

        return when

    def eager_when(results: dict) -> str | None:
        if not mode["compile"]:
            return "train ran without compile: nothing to fall back to"
        if results["parts"].get("train", {}).get("status") not in ("failed", "timeout"):
            return "train did not fail"
        return until_deadline(eager)(results)

    env = Part("env", [py, "scripts/gpu/parts.py", "env"], ENV_S, what="GPU, packages, ceilings")
    if args.tiny:
        env.skip = "CUDA only: the ceilings need a GPU (--tiny)"
    train = Part("train", train_argv(), args.budget_s, what="GPU latent cache, then training to the deadline")
    train.when = until_deadline(train)
    eager = Part("train-eager", train_argv("--no-compile"), 0.0, what="resume without compile after a failed train")
    eager.when = eager_when
    finish = Part(
        "finish",
        [py, me, "part", "finish", *common, "--deadline", f"{start + args.budget_s - 5:.1f}"],
        finish_s,
        what="pipeline export (pipeline.tgz) and match rate on fresh captions",
    )
    for part in (env, train, eager, finish):
        part.shown = part.command.replace(py, "python3").replace(me, "scripts/gpu/train_builtin.py")
    return [env, train, eager, finish]


def summary_lines(results: dict) -> list[str]:
    """What a session reads in the reply's output_tail."""
    lines = [f"train_builtin {results['label']} - {results['started']}"]
    for name, e in results["parts"].items():
        lines.append(f"  {name:<12}{e['status']:<9}{e.get('wall_s', '-')!s:>8} s  {e.get('reason', '')}".rstrip())
    train = {}
    for name in ("train-eager", "train"):
        train = results["parts"].get(name, {}).get("result") or train
        if train:
            break
    if isinstance(train, dict):
        data, log, stop = train.get("data", {}), train.get("train", {}), train.get("stopped", {})
        if data:
            lines.append(f"  cache: {data['clips']} clips in {data['wall_s']} s ({data['clips_per_s']} clips/s)")
        if log.get("last_interval"):
            last = log["last_interval"]
            lines.append(
                f"  train: step {log['steps']}, {last.get('samples_per_s')} samples/s, {last.get('tflops')} TFLOP/s"
            )
        if stop:
            lines.append(f"  stopped at step {stop['step']} ({stop['why']})")
    finish = results["parts"].get("finish", {}).get("result") or {}
    for key in ("eval", "eval_baseline", "eval_wide", "eval_wide_baseline"):
        if isinstance(finish, dict) and finish.get(key, {}).get("n"):
            e = finish[key]
            lines.append(
                f"  {key}: match {e['match_rate']:.3f}, one object {e['one_object']['match_rate']}, "
                f"two {e['two_objects']['match_rate']} (n={e['n']}, {e['clip']['width']}x{e['clip']['height']})"
            )
    lines.append(f"  files: {results['out_files']}")
    if results.get("out_limits"):
        lines.append(f"  OVER THE DEVICE LIMITS: {results['out_limits']}")
    return lines


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "part":
        return part_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings(p)
    p.add_argument("--budget-s", type=float, default=None, help="seconds for all parts (default 500; --tiny 240)")
    p.add_argument("--only", default=None, help="comma-separated parts to run (the others are recorded as skipped)")
    p.add_argument("--skip", default=None, help="comma-separated parts to skip")
    args = p.parse_args(argv)
    start = time.time()
    args.budget_s = args.budget_s or (240.0 if args.tiny else 500.0)
    args.work = args.work or default_work(args.tiny)
    os.chdir(REPO)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = build_parts(args, start)
    select_parts(parts, args.only, args.skip, p.error)
    info = header(args.tiny, [str(a) for a in sys.argv])
    info.update(
        kit="scripts/gpu/train_builtin.py",
        label="CPU rehearsal at toy size (--tiny): not GPU measurements" if args.tiny else "GPU training run",
        work=args.work,
    )
    elapsed = time.time() - start
    results = run_parts(parts, out, args.budget_s - elapsed, header=info, work_root=Path(args.work) / "parts")
    for leftover in out.glob(".*.tmp"):  # a part killed while writing
        leftover.unlink()
    write_json(out / "results.json", results)
    results["out_files"] = out_files(out)
    results["out_limits"] = over_limits(list(results["out_files"].values()))  # None: everything comes back
    write_json(out / "results.json", results)
    print("\n".join(summary_lines(results)), flush=True)
    trained = any(results["parts"][n]["status"] == "ok" for n in ("train", "train-eager"))
    return 0 if trained and results["parts"]["finish"]["status"] in ("ok", "skipped") else 1


if __name__ == "__main__":
    sys.exit(main())
