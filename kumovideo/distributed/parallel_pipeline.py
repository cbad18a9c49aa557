"""KumoPipeline on several processes: guidance parallel x Ulysses sequence parallel.

    pipe = ParallelKumoPipeline.from_pretrained(folder, parallel="ulysses=2,cfg=2")
    video = pipe(prompt, num_frames=41).frames      # the video on rank 0, None elsewhere

Launched by torchrun (one process per GPU, or per CPU socket with gloo). The sampling
loop is KumoPipeline's own, run identically on every rank (same seed, same noise, same
scheduler steps); only the denoiser call, the text encoder and the VAE decode are
distributed:

* denoiser: the [negative; positive] guidance batch is split over the 'cfg' ranks, each
  rank runs MADiT with its vision tokens sharded over the 'ulysses' ranks
  (`kumovideo.distributed.ulysses`), the patch tokens are all-gathered over 'ulysses'
  and unpatchified, and the two v-predictions are all-gathered over 'cfg' so that every
  rank applies the guidance and the scheduler step to the same latents;
* T5 (`text_encoder_on`): 'all' runs it on every rank; 'rank0' runs it on rank 0 only and
  broadcasts the states (the other ranks keep it off the GPU);
* VAE (`vae_on`): 'rank0' decodes on rank 0 only (on CPU with the threads of the node's
  other ranks, idle by then); 'all' on every rank; 'split' deals the
  spatial tiles of a tiled decode round-robin to all ranks and gathers them on rank 0,
  giving exactly what `enable_vae_tiling()` gives in one process. (The causal VAE
  carries a convolution cache from each latent-frame chunk to the next, so splitting by
  time cannot be exact; the tiles are independent.)

Degrees are checked before any work: the process count, the head count and the number
of vision tokens of the requested clip (`check_inputs`).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from kumovideo.distributed.mesh import (
    ParallelConfig,
    ParallelContext,
    build_mesh,
    check_heads,
    is_forked_child,
    node_threads,
    parse_parallel,
    validate_parallel,
)
from kumovideo.distributed.ulysses import _record, all_gather_cat, sequence_parallel_forward
from kumovideo.geometry import vae_compression
from kumovideo.perf.fast_paths import usable_cores
from kumovideo.pipelines.checks import check_output_type
from kumovideo.utils.errors import KumoInputError

TEXT_ENCODER_PLACEMENTS = ("all", "rank0")
VAE_PLACEMENTS = ("rank0", "all", "split")


class _StandIn(nn.Module):
    """A module swapped into the pipeline for one call in place of one of its components;
    it reports the dtype and device of `_placed()` (the component, or a tensor where its
    outputs go), as the pipeline reads them."""

    def _placed(self):
        raise NotImplementedError

    @property
    def dtype(self):
        return self._placed().dtype

    @property
    def device(self):
        return self._placed().device


class ParallelTransformer(_StandIn):
    """Stands in for the pipeline's transformer: same call, distributed inside."""

    def __init__(self, transformer, ctx: ParallelContext):
        super().__init__()
        self.inner = transformer
        self.ctx = ctx

    @property
    def config(self):
        return self.inner.config

    def _placed(self):
        return self.inner

    def forward(self, hidden_states, encoder_hidden_states, timestep, return_dict: bool = False, **kwargs):
        ctx = self.ctx
        if ctx.config.cfg == 2:
            if hidden_states.shape[0] % 2:
                raise ValueError("guidance-parallel denoiser called without the [negative; positive] batch")
            half = ctx.cfg_rank
            hidden_states = hidden_states.chunk(2)[half]
            encoder_hidden_states = encoder_hidden_states.chunk(2)[half]
            if torch.is_tensor(timestep) and timestep.ndim and timestep.shape[0] > 1:
                timestep = timestep.chunk(2)[half]
        group = ctx.ulysses_group if ctx.config.ulysses > 1 else None
        out = sequence_parallel_forward(self.inner, hidden_states, encoder_hidden_states, timestep, group)
        if ctx.config.cfg == 2:
            out = all_gather_cat(out, 0, ctx.cfg_group, kind="all_gather_cfg")
        return (out,)


class Rank0TextEncoder(_StandIn):
    """Stands in for T5 on every rank: rank 0 encodes, the states are broadcast."""

    def __init__(self, text_encoder, ctx: ParallelContext, device: torch.device):
        super().__init__()
        object.__setattr__(self, "encoder", text_encoder)  # not a submodule: stays where it is
        self.ctx = ctx
        self.register_buffer("anchor", torch.empty(0, device=device, dtype=text_encoder.dtype), persistent=False)

    def _placed(self):
        return self.anchor

    def forward(self, input_ids, *args, **kwargs):
        if self.ctx.is_main:
            states = self.encoder(input_ids.to(self.encoder.device), *args, **kwargs)[0].to(self.device)
        else:
            batch, length = input_ids.shape
            states = torch.empty(batch, length, self.encoder.config.d_model, dtype=self.dtype, device=self.device)
        if self.ctx.is_main:  # a tree broadcast sends (W - 1) copies in all; count them on the source
            _record("broadcast_text", states.numel() * states.element_size() * (self.ctx.world_size - 1))
        dist.broadcast(states, src=0)
        return (states,)


@contextlib.contextmanager
def _swapped(pipe, **components):
    saved = {name: getattr(pipe, name) for name in components}
    try:
        for name, value in components.items():
            object.__setattr__(pipe, name, value)  # not a config change
        yield
    finally:
        for name, value in saved.items():
            object.__setattr__(pipe, name, value)


class ParallelKumoPipeline:
    """A KumoPipeline run by several processes (see the module docstring)."""

    def __init__(
        self,
        pipe,
        parallel: str | ParallelConfig | ParallelContext | None = None,
        text_encoder_on: str = "all",
        vae_on: str = "rank0",
        device: torch.device | str | None = None,
    ):
        if text_encoder_on not in TEXT_ENCODER_PLACEMENTS:
            raise KumoInputError(
                f"text_encoder_on={text_encoder_on!r}; use one of {', '.join(TEXT_ENCODER_PLACEMENTS)}"
            )
        if vae_on not in VAE_PLACEMENTS:
            raise KumoInputError(f"vae_on={vae_on!r}; use one of {', '.join(VAE_PLACEMENTS)}")
        if isinstance(parallel, ParallelContext):
            self.ctx = parallel
        else:
            self.ctx = build_mesh(parse_parallel(parallel), torch.device(device) if device else None)
        self.pipe = pipe
        self.text_encoder_on = text_encoder_on
        self.vae_on = vae_on
        check_heads(self.ctx.config, pipe.transformer.config.num_attention_heads)
        if self.ctx.config.is_parallel and not self.ctx.is_main:
            pipe.set_progress_bar_config(disable=True)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        parallel: str | ParallelConfig | None = None,
        torch_dtype: torch.dtype | None = None,
        text_encoder_on: str = "all",
        vae_on: str = "rank0",
        device: torch.device | str | None = None,
        **kwargs,
    ) -> ParallelKumoPipeline:
        """Check the degrees against the folder's configs, start the process groups, then load."""
        from kumovideo.pipelines import KumoPipeline
        from kumovideo.pipelines.loading import read_json

        config = parse_parallel(parallel)
        folder = Path(folder)
        tconf = folder / "transformer" / "config.json"
        if tconf.exists():
            check_heads(config, read_json(tconf)["num_attention_heads"])
        ctx = build_mesh(config, torch.device(device) if device else None)
        pipe = KumoPipeline.from_pretrained(folder, torch_dtype=torch_dtype, **kwargs)
        return cls(pipe, ctx, text_encoder_on=text_encoder_on, vae_on=vae_on).to(ctx.device)

    def to(self, device: torch.device | str | None = None) -> ParallelKumoPipeline:
        """Put each model where it runs: the transformer everywhere, T5 and the VAE per placement."""
        device = torch.device(device) if device is not None else self.ctx.device
        self.ctx.device = device
        pipe = self.pipe
        pipe.transformer.to(device)
        if self.text_encoder_on == "all" or self.ctx.is_main:
            pipe.text_encoder.to(device)
        if self.vae_on != "rank0" or self.ctx.is_main:
            pipe.vae.to(device)
        return self

    # ------------------------------------------------------------------ checks

    def check_inputs(self, height: int, width: int, num_frames: int, guidance_scale: float, output_type: str) -> None:
        """What the distribution adds to KumoPipeline.check_inputs (which the wrapped call runs
        on the rest): the output type, then degrees that fit the clip (`validate_parallel`)."""
        check_output_type(output_type)
        tconf = self.pipe.transformer.config
        validate_parallel(
            self.ctx.config,
            world_size=self.ctx.world_size,
            num_heads=tconf.num_attention_heads,
            num_vision_tokens=self.pipe.geometry.tokens(num_frames, height, width),
            guidance=guidance_scale > 1.0,
        )

    # ------------------------------------------------------------------ call

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        guidance_scale: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        **kwargs: Any,
    ):
        """KumoPipeline's call, distributed. Returns the frames on the ranks that decode
        (rank 0; every rank with vae_on='all'; every rank for output_type='latent') and
        None elsewhere."""
        from kumovideo.pipelines.pipeline_kumo import KumoPipelineOutput

        size = self.pipe.resolve_call_defaults(
            height=height, width=width, num_frames=num_frames, guidance_scale=guidance_scale
        )  # None: KumoPipeline's defaults
        height, width, num_frames, guidance_scale = (
            size[k] for k in ("height", "width", "num_frames", "guidance_scale")
        )
        self.check_inputs(height, width, num_frames, guidance_scale, output_type)
        pipe, ctx = self.pipe, self.ctx
        swaps = {}
        if ctx.config.is_parallel:
            same_randomness_as_rank0(kwargs.get("generator"), ctx.device)
            swaps["transformer"] = ParallelTransformer(pipe.transformer, ctx)
            if self.text_encoder_on == "rank0" and ctx.world_size > 1:
                swaps["text_encoder"] = Rank0TextEncoder(pipe.text_encoder, ctx, ctx.device)
        with _swapped(pipe, **swaps):
            latents = pipe(
                prompt,
                height=height,
                width=width,
                num_frames=num_frames,
                guidance_scale=guidance_scale,
                output_type="latent",
                return_dict=False,
                **kwargs,
            )[0]
        if output_type == "latent":
            video = latents
        else:
            video = self.decode(latents)
            if video is not None:
                video = pipe.video_processor.postprocess_video(video, output_type=output_type)
        if not return_dict:
            return (video,)
        return KumoPipelineOutput(frames=video)

    # ------------------------------------------------------------------ decode

    def decode(self, latents: torch.Tensor) -> torch.Tensor | None:
        """(B, F_lat, C, h, w) -> (B, 3, F, H, W) in [-1, 1] on the ranks that hold it."""
        if self.vae_on == "all" or not self.ctx.config.is_parallel:
            return self.pipe.decode_latents(latents)
        if self.vae_on == "rank0":
            if not self.ctx.is_main:
                return None
            with rank0_takes_idle_cores(self.ctx):
                return self.pipe.decode_latents(latents)
        vae = self.pipe.vae
        z = latents.permute(0, 2, 1, 3, 4) / vae.config.scaling_factor
        return split_tiled_decode(vae, z.to(device=vae.device, dtype=vae.dtype), self.ctx)


def same_randomness_as_rank0(generator, device: torch.device) -> None:
    """Give every rank rank 0's random state: its generator(s), or torch's global RNG when
    the call has none. Every rank runs the whole sampling loop on its own copy of the latents
    and only the denoiser's outputs are exchanged, so ranks drawing other noise (a generator
    seeded per rank, as multi-GPU scripts often do) would each step their own latents and
    rank 0 would decode a mix, silently. With the state copied, rank 0's clip is the
    single-process clip of rank 0's generator."""
    if generator is None:
        states = [(torch.get_rng_state(), torch.set_rng_state)]
        if device.type == "cuda":  # randn on a CUDA device with no generator draws from CUDA's
            states.append((torch.cuda.get_rng_state(device), lambda s: torch.cuda.set_rng_state(s, device)))
    else:
        generators = generator if isinstance(generator, list) else [generator]
        states = [(g.get_state(), g.set_state) for g in generators]
    # The states are CPU byte tensors; NCCL broadcasts on the GPU.
    where = device if dist.get_backend() == "nccl" else torch.device("cpu")
    for state, set_state in states:
        buffer = state.to(where)
        dist.broadcast(buffer, src=0)
        set_state(buffer.cpu())


@contextlib.contextmanager
def rank0_takes_idle_cores(ctx: ParallelContext):
    """On CPU, let rank 0 use the intra-op threads of the other ranks of its node while
    they wait for it (they block in a collective or have exited: no CPU used).

    The VAE decode with vae_on='rank0' runs on rank 0 alone after the denoising; with one
    thread per process, as torchrun starts CPU workers, it would leave the other cores
    idle. The node's rank count comes from LOCAL_WORLD_SIZE (set by torchrun); without it,
    or in a forked worker (OpenMP would hang), nothing changes."""
    threads = torch.get_num_threads()
    wanted = min(node_threads(), usable_cores())
    if ctx.device.type != "cpu" or wanted <= threads or is_forked_child():  # see is_forked_child
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------
# VAE tiled decode with the tiles dealt out over ranks. Mirrors diffusers'
# AutoencoderKLCogVideoX.tiled_decode step for step, so rank 0's result equals it.
# ---------------------------------------------------------------------------------------


def _decode_tile(vae, z: torch.Tensor, i: int, j: int) -> torch.Tensor:
    num_frames = z.shape[2]
    frame_batch_size = vae.num_latent_frames_batch_size
    num_batches = max(num_frames // frame_batch_size, 1)
    conv_cache = None
    time = []
    for k in range(num_batches):
        remaining_frames = num_frames % frame_batch_size
        start_frame = frame_batch_size * k + (0 if k == 0 else remaining_frames)
        end_frame = frame_batch_size * (k + 1) + remaining_frames
        tile = z[:, :, start_frame:end_frame, i : i + vae.tile_latent_min_height, j : j + vae.tile_latent_min_width]
        if vae.post_quant_conv is not None:
            tile = vae.post_quant_conv(tile)
        tile, conv_cache = vae.decoder(tile, conv_cache=conv_cache)
        time.append(tile)
    return torch.cat(time, dim=2)


def split_tiled_decode(vae, z: torch.Tensor, ctx: ParallelContext) -> torch.Tensor | None:
    """Tiled decode of z (B, C, F, h, w), tiles round-robin over all ranks, result on rank 0."""
    _, _, _, height, width = z.shape
    overlap_height = int(vae.tile_latent_min_height * (1 - vae.tile_overlap_factor_height))
    overlap_width = int(vae.tile_latent_min_width * (1 - vae.tile_overlap_factor_width))
    blend_extent_height = int(vae.tile_sample_min_height * vae.tile_overlap_factor_height)
    blend_extent_width = int(vae.tile_sample_min_width * vae.tile_overlap_factor_width)
    row_limit_height = vae.tile_sample_min_height - blend_extent_height
    row_limit_width = vae.tile_sample_min_width - blend_extent_width

    starts = [(i, j) for i in range(0, height, overlap_height) for j in range(0, width, overlap_width)]
    world, rank = ctx.world_size, ctx.rank
    mine = {t: _decode_tile(vae, z, *starts[t]) for t in range(rank, len(starts), world)}

    # Pad every tile to one shape so a single tensor gather moves them all.
    scale = vae_compression(vae.config)[0]
    per_rank = math.ceil(len(starts) / world)
    frames = torch.tensor([max([t.shape[2] for t in mine.values()], default=0)], device=z.device)
    dist.all_reduce(frames, op=dist.ReduceOp.MAX)
    shape = (
        z.shape[0],
        vae.config.out_channels,
        int(frames),
        vae.tile_latent_min_height * scale,
        vae.tile_latent_min_width * scale,
    )

    def tile_size(t: int) -> tuple[int, int]:
        return (
            min(vae.tile_latent_min_height, height - starts[t][0]) * scale,
            min(vae.tile_latent_min_width, width - starts[t][1]) * scale,
        )

    buffer = torch.zeros((per_rank, *shape), dtype=z.dtype, device=z.device)
    for slot, (_, tile) in enumerate(sorted(mine.items())):
        buffer[slot, :, :, :, : tile.shape[3], : tile.shape[4]] = tile
    gathered = [torch.empty_like(buffer) for _ in range(world)] if rank == 0 else None
    if rank != 0:
        _record("gather_vae_tiles", buffer.numel() * buffer.element_size())
    dist.gather(buffer, gathered, dst=0)
    if rank != 0:
        return None

    tiles = {}
    for t in range(len(starts)):
        src, slot = t % world, t // world
        h, w = tile_size(t)
        tiles[t] = gathered[src][slot, :, :, :, :h, :w]
    rows, index = [], 0
    for _ in range(0, height, overlap_height):
        row = []
        for _ in range(0, width, overlap_width):
            row.append(tiles[index].clone())
            index += 1
        rows.append(row)
    result_rows = []
    for i, row in enumerate(rows):
        result_row = []
        for j, tile in enumerate(row):
            if i > 0:
                tile = vae.blend_v(rows[i - 1][j], tile, blend_extent_height)
            if j > 0:
                tile = vae.blend_h(row[j - 1], tile, blend_extent_width)
            result_row.append(tile[:, :, :, :row_limit_height, :row_limit_width])
        result_rows.append(torch.cat(result_row, dim=4))
    return torch.cat(result_rows, dim=3)
