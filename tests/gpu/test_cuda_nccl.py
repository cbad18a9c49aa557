"""An NCCL process group of world size 1 runs the parallel pipeline's code path: the
device mesh, ParallelTransformer (sequence-parallel forward, guidance all-gather) and
ParallelKumoPipeline, with the latents of the plain pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from gpu_helpers import CALL, latents_of, need_cuda, tiny_pipe


def _worker(rank: int, world_size: int, out: str) -> None:
    import torch.distributed as dist

    from kumovideo.distributed.parallel_pipeline import ParallelKumoPipeline, ParallelTransformer
    from kumovideo.distributed.ulysses import all_gather_cat

    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    backend = dist.get_backend()
    plain = latents_of(tiny_pipe(device)).cpu()
    ppipe = ParallelKumoPipeline(tiny_pipe(device), parallel=None, device=device)
    kwargs = {k: v for k, v in CALL.items() if k != "prompt"}
    latents = ppipe(
        CALL["prompt"], **kwargs, generator=torch.Generator().manual_seed(0), output_type="latent"
    ).frames.cpu()
    transformer = ppipe.pipe.transformer
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, transformer.config.in_channels, 6, 8, generator=g).to(device)
    e = torch.randn(2, transformer.config.max_text_seq_length, transformer.config.text_embed_dim, generator=g)
    t = torch.tensor([500, 500], device=device)
    with torch.no_grad():
        ref = transformer(x, e.to(device), t, return_dict=False)[0]
        par = ParallelTransformer(transformer, ppipe.ctx)(x, e.to(device), t)[0]
        gathered = all_gather_cat(par, 0, ppipe.ctx.cfg_group, kind="all_gather_cfg")
    s = torch.ones(4, device=device)
    dist.all_reduce(s)
    Path(out).write_text(
        json.dumps(
            {
                "backend": backend,
                "world_size": dist.get_world_size(),
                "mesh": str(ppipe.ctx.mesh),
                "latents_max_abs_diff": float((latents - plain).abs().max()),
                "transformer_max_abs_diff": float((par - ref).abs().max()),
                "gather_equal": bool(torch.equal(gathered, par)),
                "all_reduce": s.tolist(),
            }
        )
    )


def test_nccl_world_size_1_runs_the_parallel_pipeline(tmp_path, record_property):
    need_cuda("NCCL")
    from kumovideo.distributed.spawn import run_workers

    out = tmp_path / "nccl.json"
    run_workers(_worker, 1, str(out), backend="nccl", start_method="spawn")
    result = json.loads(out.read_text())
    record_property("nccl", json.dumps(result))
    assert result["backend"] == "nccl" and result["world_size"] == 1
    assert result["mesh"] != "None"
    assert result["latents_max_abs_diff"] <= 1e-5
    assert result["transformer_max_abs_diff"] <= 1e-5
    assert result["gather_equal"] and result["all_reduce"] == [1.0] * 4
