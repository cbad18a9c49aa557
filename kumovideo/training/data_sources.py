"""What DiT and Turbo runs train on: latents from a cache or encoded on the fly, and the
captions a run may train on (and so lists in its export).

Batch `step` is a function of (seed, step, rank) only, as in `shapes_batches`: a resumed
run draws the same latents and noise as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kumovideo.data.shapes_world import DEFAULT_FPS, is_held_out, motion_score_of, parse_caption
from kumovideo.geometry import ClipGeometry
from kumovideo.training.config import TrainConfig, stage_frame_at, stage_motion_amounts
from kumovideo.training.loop import DataShard
from kumovideo.training.runtime import Runtime
from kumovideo.training.shapes_batches import shapes_batch_v11
from kumovideo.utils.errors import KumoInputError


def trains_on(config: TrainConfig, caption: str) -> bool:
    """Whether the run may train on a clip with this caption (`holdout_captions` skips the held-out split)."""
    return not (config.holdout_captions and is_held_out(caption))


def training_captions(config: TrainConfig) -> set[str]:
    """Captions of every cached clip the run trained on (on-the-fly stages draw from an
    unbounded stream and are not listed)."""
    seen: set[str] = set()
    for stage in config.stages:
        if stage.latents:  # the index.json or the folder holding it
            from kumovideo.data.pipeline.encode import LatentShardDataset

            clips = LatentShardDataset(stage.latents).clips
            seen.update(clip["caption"] for clip in clips if trains_on(config, clip["caption"]))
    # A fine-tune has also seen what its starting model was trained on, and a distilled
    # student what its teacher was (it learns the teacher's outputs on those captions).
    for earlier_model in (config.init_from, config.teacher):
        earlier = Path(earlier_model) / "training_captions.txt" if earlier_model else None
        if earlier is not None and earlier.exists():
            seen.update(line for line in earlier.read_text().splitlines() if line)
    return seen


def training_captions_file(config: TrainConfig) -> dict[str, str]:
    """`training_captions.txt` for an exported folder ({} when the run drew from an unbounded stream)."""
    seen = training_captions(config)
    return {"training_captions.txt": "\n".join(sorted(seen)) + "\n"} if seen else {}


@dataclass
class LatentBatch:
    """One step's training data. `latents` (B, F, C, h, w), scaled; `batch_size` the global
    batch (this process holds its share); `motion_scores` each clip's recorded motion score
    (None where the cache has none); `frame_latents` as `LatentSource.batch_with_frames`."""

    latents: torch.Tensor
    captions: list[str]
    frame_latents: list[torch.Tensor]
    motion_scores: list[float | None]
    batch_size: int


def bucket_batch_size(batch_size: int, reference_area: int, area: int, multiple: int = 1) -> int:
    """The batch of a bucket with `area` latent pixels per frame: `batch_size` scaled so every
    bucket's batch holds about the tokens of `batch_size` clips of `reference_area` (Lumina-Video
    and SDXL keep a token budget per batch), a multiple of the data-parallel ranks, at least one each."""
    scaled = round(batch_size * reference_area / area / multiple) * multiple
    return max(multiple, scaled)


def frame_batch_size(stage, frame: tuple[int, int], spatial: int, multiple: int = 1) -> int:
    """`bucket_batch_size` of a stage rendering (W, H) `frame`: the token budget of
    `batch_size` square clips of the stage's size, through the VAE's `spatial` stride."""
    reference = (stage.size // spatial) ** 2
    return bucket_batch_size(stage.batch_size, reference, (frame[0] // spatial) * (frame[1] // spatial), multiple)


class LatentSource:
    """Training latents (B, F, C, h, w), already scaled, for a step of a stage; F is the
    stage's frame count through the VAE's own temporal compression."""

    def __init__(self, config: TrainConfig, vae, runtime: Runtime, shard: DataShard | None = None):
        self.config, self.vae, self.runtime = config, vae, runtime
        self.shard = shard or DataShard(runtime.rank, runtime.world_size)
        self.geometry = ClipGeometry.from_configs(vae.config)
        self._caches = {}
        self._buckets = {}
        self._object_pools = {}

    def cache(self, path: str):
        """The cache at `path` and the indices of its clips this run may train on."""
        if path not in self._caches:
            from kumovideo.data.pipeline.encode import LatentShardDataset

            cache = LatentShardDataset(path)
            usable = [i for i, clip in enumerate(cache.clips) if trains_on(self.config, clip["caption"])]
            if not usable:
                raise KumoInputError(f"latent cache {path} holds no clip outside the held-out captions")
            self._caches[path] = (cache, usable)
        return self._caches[path]

    def buckets(self, path: str) -> list[tuple[tuple[int, ...], list[int]]]:
        """The usable clips of a cache grouped by latent shape (C, F, h, w) (its
        `indices_by_shape`), in a fixed order: one group for a one-size cache, one per aspect
        bucket for a bucketed one. Grouped once per cache, not per step."""
        if path not in self._buckets:
            cache, usable = self.cache(path)
            trained = set(usable)
            groups = (
                (shape, [i for i in members if i in trained]) for shape, members in cache.indices_by_shape().items()
            )
            self._buckets[path] = sorted((shape, members) for shape, members in groups if members)
        return self._buckets[path]

    def frames_cache(self, path: str):
        """The cache at `path`, refused in one line unless it keeps frame latents (conditioning)."""
        cache, _ = self.cache(path)
        if not cache.has_frame_latents():
            raise KumoInputError(
                f"latent cache {path} holds no frame latents, which conditioned training reads; write it with "
                "`kumo train cache-latents --frame-latents` (or `kumo data encode --frame-latents`)"
            )
        return cache

    def object_pools(self, path: str, shape: tuple[int, ...], usable: list[int]) -> tuple[list[int], list[int]]:
        """The one- and two-object clips among `usable`, the clips of the cache at `path` of
        latent shape `shape` (a bucket), read from their ShapesWorld captions once per bucket."""
        key = (path, shape)
        if key not in self._object_pools:
            cache, _ = self.cache(path)
            pools: tuple[list[int], list[int]] = ([], [])
            for i in usable:
                text = cache.clips[i]["caption"]
                try:
                    pools[len(parse_caption(text)["objects"]) - 1].append(i)
                except ValueError:
                    raise KumoInputError(
                        f"two_object_share: latent cache {path} holds a caption outside ShapesWorld's grammar "
                        f"({text!r}); the share is for ShapesWorld caches, leave it out for others"
                    ) from None
            self._object_pools[key] = pools
        return self._object_pools[key]

    def pick(self, stage, shape: tuple[int, ...], usable: list[int], rng: np.random.Generator, size: int) -> list[int]:
        """`size` clip indices drawn from `usable` (the bucket of latent shape `shape`), uniformly,
        or with the stage's `two_object_share` of them from its two-object clips, the rest from
        its one-object ones."""
        if stage.two_object_share is None:
            return [usable[int(j)] for j in rng.integers(0, len(usable), size)]
        share = stage.two_object_share
        pools = self.object_pools(stage.latents, shape, usable)
        for n, pool, needed in ((1, pools[0], share < 1), (2, pools[1], share > 0)):
            if needed and not pool:
                raise KumoInputError(
                    f"two_object_share {share}: latent cache {stage.latents} has no {'one' if n == 1 else 'two'}"
                    "-object clip to draw from (in this bucket)"
                )
        two = rng.random(size) < share
        return [pools[int(t)][int(rng.integers(len(pools[int(t)])))] for t in two]

    def batch(self, step: int, stage, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        drawn = self.draw(step, stage, generator, frames=False)
        return drawn.latents, drawn.captions

    def batch_with_frames(
        self, step: int, stage, generator: torch.Generator, frames: bool = True
    ) -> tuple[torch.Tensor, list[str], list[torch.Tensor]]:
        """`batch`, and (with `frames`) each clip's unscaled image latents of its frames 0, 2,
        4, ... (F_even, C, h, w) from a cache that keeps them (conditioning frames)."""
        drawn = self.draw(step, stage, generator, frames=frames)
        return drawn.latents, drawn.captions, drawn.frame_latents

    def draw(self, step: int, stage, generator: torch.Generator, frames: bool = False) -> LatentBatch:
        """Step `step`'s batch. From a cache with several latent shapes (aspect buckets) the
        step first picks one bucket, with probability proportional to its clips, and draws the
        whole batch from it at `bucket_batch_size` (every batch one shape)."""
        shard, size = self.shard, stage.batch_size
        frame_latents, motion_scores = [], []
        if stage.latents:
            cache, _ = self.cache(stage.latents)
            if frames:
                self.frames_cache(stage.latents)
            rng = np.random.default_rng([self.config.seed, step, shard.stream])
            buckets = self.buckets(stage.latents)
            if len(buckets) == 1:
                shape, usable = buckets[0]
            else:
                counts = np.array([len(members) for _, members in buckets], dtype=np.float64)
                shape, usable = buckets[int(rng.choice(len(buckets), p=counts / counts.sum()))]
                reference = (stage.size // self.geometry.spatial) ** 2
                size = bucket_batch_size(stage.batch_size, reference, shape[2] * shape[3], shard.size)
            first, local = shard.first(size), shard.local_size(size)
            latents, captions = [], []
            for k, i in enumerate(self.pick(stage, shape, usable, rng, size)):
                if first <= k < first + local:
                    item = cache[int(i)]
                    latents.append(cache.sample_latent(item, generator))  # (C, F, h, w)
                    captions.append(item["caption"])
                    motion_scores.append(cache.clips[int(i)].get("motion_score"))
                    if frames:
                        frame_latents.append(cache.frame_latents(int(i)))
                else:  # another rank's clip: draw its noise as one process would, unread
                    torch.randn(cache.clips[int(i)]["shape"], generator=generator, dtype=cache.dtype)
            latents = torch.stack(latents)  # (B, C, F, h, w)
        else:
            if frames:
                raise KumoInputError(
                    f"stage {stage.name!r} encodes clips on the fly; conditioned training reads frame latents from "
                    "a latent cache: give it 'latents:' (kumo train cache-latents --frame-latents)"
                )
            frame = stage_frame_at(stage, step)
            if frame is not None:  # an aspect bucket: the batch sized to the stage's token budget
                size = frame_batch_size(stage, frame, self.geometry.spatial, shard.size)
            first, local = shard.first(size), shard.local_size(size)
            amounts = stage_motion_amounts(stage)
            videos, captions, drawn_amounts = shapes_batch_v11(
                self.config.data_seed,
                step,
                local,
                shard.rank,
                shard.size,
                stage.size,
                stage.num_frames,
                frame,
                amounts,
                stage.held_back_share,
                stage.two_object_share,
            )
            with torch.no_grad():
                posterior = self.vae.encode(videos.to(self.runtime.device)).latent_dist
                shape = posterior.mean.shape[1:]
                noise = shard.draw(size, lambda n: torch.randn((n, *shape), generator=generator)).to(posterior.mean)
                latents = (posterior.mean + posterior.std * noise) * self.vae.config.scaling_factor
            # the world's own motion score of each clip's m (as `kumo train cache-latents` records it)
            motion_scores = [
                motion_score_of(m, stage.num_frames, DEFAULT_FPS) if amounts else None for m in drawn_amounts
            ]
        latents = latents.permute(0, 2, 1, 3, 4)  # (B, F, C, h, w): the transformer's layout
        needed = self.geometry.latent_frames(stage.num_frames)
        if latents.shape[1] < needed:
            raise KumoInputError(
                f"stage {stage.name!r} asks for {stage.num_frames} frames ({needed} latent frames), but the latent "
                f"cache {stage.latents} holds {latents.shape[1]}; lower num_frames or re-encode longer clips"
            )
        return LatentBatch(latents[:, :needed].contiguous(), captions, frame_latents, motion_scores, size)
