"""Multi-process KumoVideo on torch.distributed: guidance-parallel and Ulysses
sequence-parallel inference, FSDP2 training, DCP checkpoints. See docs/distributed.md.

    torchrun --nproc-per-node 4 -m kumovideo.cli generate "..." -o out.mp4 --parallel ulysses=2,cfg=2

    from kumovideo.distributed import ParallelKumoPipeline
    pipe = ParallelKumoPipeline.from_pretrained(folder, parallel="ulysses=2,cfg=2")
"""

from kumovideo.distributed.mesh import ParallelConfig, ParallelContext, build_mesh, parse_parallel, validate_parallel


def __getattr__(name):  # the heavier parts load on first use
    if name in ("ParallelKumoPipeline", "split_tiled_decode"):
        from kumovideo.distributed import parallel_pipeline

        return getattr(parallel_pipeline, name)
    if name in ("shard_model", "save_sharded", "load_sharded", "training_mesh", "full_state_dict"):
        from kumovideo.distributed import fsdp

        return getattr(fsdp, name)
    if name in ("sequence_parallel_forward", "ulysses_attention", "count_comm"):
        from kumovideo.distributed import ulysses

        return getattr(ulysses, name)
    raise AttributeError(f"module 'kumovideo.distributed' has no attribute {name!r}")


__all__ = [
    "ParallelConfig",
    "ParallelContext",
    "ParallelKumoPipeline",
    "build_mesh",
    "count_comm",
    "full_state_dict",
    "load_sharded",
    "parse_parallel",
    "save_sharded",
    "sequence_parallel_forward",
    "shard_model",
    "training_mesh",
    "ulysses_attention",
    "validate_parallel",
]
