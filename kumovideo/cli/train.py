"""`kumo train vae|dit|turbo|v2a|export|cache-latents|bind-text`: train KumoVideo models.

One process: `kumo train dit --config configs/builtin-dit.yaml`. Several GPUs or nodes:
`torchrun --nproc-per-node 8 -m kumovideo.cli train dit --config ...` (or
`accelerate launch -m kumovideo.cli ...`): each process trains on its own slice of the
data under DDP; rank 0 writes checkpoints, logs and samples. `kumo train dit --fsdp`
shards the transformer with FSDP2 instead (`--ulysses N` adds sequence parallelism) and
writes sharded checkpoints that resume on any number of processes.
"""

from __future__ import annotations

import json

from kumovideo.utils.errors import KumoInputError


def register(sub) -> None:
    p = sub.add_parser("train", help="train a VAE, a MADiT, a Turbo or a video-to-audio model", description=__doc__)
    tsub = p.add_subparsers(dest="train_command", metavar="WHAT")
    tsub.required = True
    for name, help_text in (
        ("vae", "train the 3D causal VAE"),
        ("dit", "train MADiT (+ the small T5) on cached or on-the-fly latents"),
        ("turbo", "consistency-distil a trained pipeline into a few-step Turbo model"),
        ("v2a", "train the video-to-audio model on ShapesWorld sound or your clips with audio"),
    ):
        q = tsub.add_parser(name, help=help_text)
        q.add_argument("--config", required=True, help="YAML or JSON training config (see configs/)")
        q.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
        q.add_argument("--output-dir", help="override the config's output_dir")
        q.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
        q.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=JSON",
            help="override a top-level config key, e.g. --set lr=1e-4",
        )
        q.add_argument(
            "--fsdp",
            action="store_true",
            help="dit: shard the transformer with FSDP2 (under torchrun, or in one process)",
        )
        q.add_argument(
            "--ulysses",
            type=int,
            default=1,
            metavar="N",
            help="dit --fsdp: Ulysses sequence parallelism over groups of N ranks (N divides the ranks)",
        )
        add_threads_arg(q)
        q.set_defaults(func=run_train, kind=name)
    e = tsub.add_parser("export", help="a pipeline folder from a DiT, Turbo or V2A run's checkpoint (EMA weights)")
    e.add_argument("--config", required=True, help="the run's dit or turbo config")
    e.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the newest in output_dir)")
    e.add_argument("--out", required=True, help="pipeline folder to write (a new or empty folder)")
    e.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out when it is an existing non-empty folder (its files are deleted)",
    )
    add_threads_arg(e)
    e.set_defaults(func=run_export)
    c = tsub.add_parser("cache-latents", help="encode ShapesWorld clips with a trained VAE, once")
    c.add_argument("--vae", required=True, help="VAE folder (e.g. runs/builtin-vae/vae)")
    c.add_argument("--out", required=True, help="output folder for the shards and index.json")
    c.add_argument("--num-clips", type=int, default=4096, help="how many ShapesWorld clips to encode (default 4096)")
    c.add_argument("--size", type=int, default=64, help="square side in pixels, a multiple of 16 (default 64)")
    c.add_argument("--frames", type=int, default=17, help="frames per clip, 8k+1 (default 17)")
    c.add_argument("--seed", type=int, default=1000, help="ShapesWorld stream seed (default 1000)")
    c.add_argument("--batch-size", type=int, default=16, help="clips rendered and encoded at once (default 16)")
    c.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    c.add_argument(
        "--frame-latents",
        action="store_true",
        help="also keep each even frame's image latent, which conditioned training (image-to-video, "
        "interpolation: docs/conditioning.md) reads",
    )
    c.add_argument(
        "--buckets",
        default=None,
        metavar="WxH,WxH,...",
        help="ShapesWorld v1.1 aspect buckets: render batch k at the k-th size in turn (every batch one "
        "shape; the training loop draws each batch from one bucket). Default: --size square",
    )
    c.add_argument(
        "--motion-range",
        default=None,
        metavar="LO,HI",
        help="ShapesWorld v1.1 motion amount m drawn per clip from [LO, HI] (within 0.5..1.5) and recorded "
        "with its motion score (20 m at 17 frames, 8 fps) for motion-conditioned training. Default: m = 1, no score",
    )
    c.add_argument(
        "--held-back-share",
        type=float,
        default=0.0,
        metavar="P",
        help="ShapesWorld's held-back colour: this share (0..1) of the clips shows cyan, which base training "
        "never sees: a cache for teaching a model the new colour (LoRA). Default 0: none",
    )
    add_threads_arg(c)
    c.set_defaults(func=run_cache)
    b = tsub.add_parser(
        "bind-text",
        help="a ShapesWorld pipeline's small T5 retrained to bind each object's words (docs/builtin-model.md)",
    )
    b.add_argument(
        "--model", required=True, help="pipeline folder with training_captions.txt (e.g. the built-in model)"
    )
    b.add_argument("--out", required=True, help="pipeline folder to write: --model with the new text encoder")
    b.add_argument("--steps", type=int, default=3000, help="training steps (default 3000)")
    b.add_argument("--batch-size", type=int, default=64, help="captions a step (default 64)")
    b.add_argument("--lr", type=float, default=1e-3, help="learning rate, cosine-decayed to a tenth (default 1e-3)")
    b.add_argument(
        "--keep-weight", type=float, default=1.0, help="weight of keeping the old states (the transformer reads them)"
    )
    b.add_argument("--seed", type=int, default=0, help="seed of the fresh T5 and its batches (default 0)")
    add_threads_arg(b)
    b.set_defaults(func=run_bind_text)


def add_threads_arg(parser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for this process (default: torch's). On a CPU shared with other jobs, "
        "1 thread per process avoids OpenMP oversubscription, which can slow training 10x or more",
    )


def check_at_least(flag: str, value: int, low: int) -> None:
    if value < low:
        raise KumoInputError(f"{flag} must be at least {low}, got {value}")


def check_threads(args) -> None:
    if args.threads is not None:
        check_at_least("--threads", args.threads, 1)


def apply_threads(args) -> None:
    if args.threads is None:
        return
    import torch

    torch.set_num_threads(args.threads)


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise KumoInputError(f"--set {pair!r} is not KEY=VALUE")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def check_train_args(args):
    """Every check of `kumo train vae|dit|turbo`, before anything is built or written: the
    config (loaded and validated), the flags, the device and everything on disk. Returns the config."""
    from kumovideo.cli.args import resolve_device
    from kumovideo.training.config import check_sharding, load_config
    from kumovideo.training.preflight import check_run_inputs

    overrides = _overrides(args.set)
    if args.output_dir is not None:
        overrides["output_dir"] = args.output_dir
    config = load_config(args.config, overrides)
    if config.kind != args.kind:
        raise KumoInputError(f"{args.config} is a {config.kind!r} config; run `kumo train {config.kind}` with it")
    check_sharding(args.kind, args.fsdp, args.ulysses)
    resolve_device(args.device)
    check_run_inputs(config, resume=args.resume)
    check_threads(args)
    return config


def run_train(args) -> int:
    from kumovideo.training.runtime import setup_runtime

    config = check_train_args(args)
    apply_threads(args)
    runtime = setup_runtime(args.device)
    if args.kind == "vae":
        from kumovideo.training.train_vae import train_vae

        train_vae(config, runtime, resume=args.resume)
    elif args.kind == "dit":
        from kumovideo.training.train_dit import train_dit

        train_dit(config, runtime, resume=args.resume, fsdp=args.fsdp, ulysses=args.ulysses)
    elif args.kind == "v2a":
        from kumovideo.training.train_v2a import train_v2a

        train_v2a(config, runtime, resume=args.resume)
    else:
        from kumovideo.training.train_turbo import train_turbo

        train_turbo(config, runtime, resume=args.resume)
    return 0


def check_cache_args(args) -> None:
    """Every check of `kumo train cache-latents`, before the VAE loads or --out is created."""
    from kumovideo.cli.args import resolve_device
    from kumovideo.data.shapes_world import parse_frame_sizes, parse_motion_range
    from kumovideo.geometry import DEFAULT_GEOMETRY
    from kumovideo.pipelines.loading import check_safetensors_complete, check_vae_folder
    from kumovideo.utils.numbers import check_real, check_seed
    from kumovideo.utils.paths import check_output_folder

    for flag, value, low in (
        ("--num-clips", args.num_clips, 1),
        ("--batch-size", args.batch_size, 1),
        ("--seed", args.seed, 0),
        ("--size", args.size, 32),
        ("--frames", args.frames, 1),
    ):
        check_at_least(flag, value, low)
    check_seed(args.seed, "--seed")
    geometry = DEFAULT_GEOMETRY  # no VAE loaded yet: the published compression (8x, 4x), as the built-in VAE has
    if not geometry.is_valid_frames(args.frames) or args.size % geometry.side_multiple:
        raise KumoInputError(
            f"--frames must be {geometry.frame_step}k+1 and --size a multiple of {geometry.side_multiple} "
            f"(got {args.frames}, {args.size})"
        )
    for width, height in parse_frame_sizes(args.buckets) or []:
        if width % geometry.side_multiple or height % geometry.side_multiple:
            raise KumoInputError(f"--buckets {width}x{height}: sides must be multiples of {geometry.side_multiple}")
    parse_motion_range(args.motion_range)
    share = "{name} {value}: pass a share of the clips from 0 (none) to 1 (all)"
    check_real(args.held_back_share, "--held-back-share", low=0, high=1, above_low=False, too_small=share)
    check_threads(args)
    resolve_device(args.device)
    check_output_folder(args.out, "--out")
    for file in sorted(check_vae_folder(args.vae, "--vae").glob("*.safetensors")):
        check_safetensors_complete(file)  # whole weights: an interrupted copy fails here, not mid-load


def run_cache(args) -> int:
    from kumovideo.data.shapes_world import parse_frame_sizes, parse_motion_range
    from kumovideo.pipelines.loading import load_vae
    from kumovideo.training.latent_cache import cache_shapes_latents

    check_cache_args(args)
    apply_threads(args)
    vae = load_vae(args.vae)
    cache_shapes_latents(
        vae,
        args.vae,
        args.out,
        args.num_clips,
        args.size,
        args.frames,
        args.seed,
        batch_size=args.batch_size,
        device=args.device,
        frame_latents=args.frame_latents,
        buckets=parse_frame_sizes(args.buckets),
        motion_amounts=parse_motion_range(args.motion_range),
        held_back_share=args.held_back_share,
    )
    return 0


def check_export_args(args):
    """Every check of `kumo train export`, before anything loads: (config, checkpoint folder, --out)."""
    from kumovideo.training.config import load_config
    from kumovideo.training.export import check_export

    config = load_config(args.config)
    check_threads(args)
    return (config, *check_export(config, args.checkpoint, args.out, overwrite=args.overwrite))


def run_export(args) -> int:
    from kumovideo.training.export import write_export

    config, checkpoint, out = check_export_args(args)
    apply_threads(args)
    write_export(config, checkpoint, out)
    return 0


def check_bind_text_args(args) -> None:
    """Every check of `kumo train bind-text`, before the model loads."""
    from kumovideo.pipelines.loading import check_checkpoint_folder
    from kumovideo.training.text_binding import check_binding_source
    from kumovideo.utils.numbers import check_real, check_seed
    from kumovideo.utils.paths import check_output_folder

    check_at_least("--steps", args.steps, 1)
    check_at_least("--batch-size", args.batch_size, 1)
    check_real(args.lr, "--lr", low=0, high=1.0)
    check_real(args.keep_weight, "--keep-weight", low=0, high=1e3, above_low=False)
    check_seed(args.seed, "--seed")
    check_threads(args)
    check_checkpoint_folder(args.model)
    check_binding_source(args.model)
    check_output_folder(args.out, "--out")


def run_bind_text(args) -> int:
    from kumovideo.training.text_binding import bind_text_encoder

    check_bind_text_args(args)
    apply_threads(args)
    figures = bind_text_encoder(
        args.model, args.out, args.steps, args.batch_size, args.lr, args.keep_weight, args.seed
    )
    print(json.dumps(figures))
    print(f"wrote {args.out}")
    return 0
