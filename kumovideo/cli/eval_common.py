"""What the `kumo eval` commands share: the model folder and its clip, the captions a model
was trained on, the evaluation captions drawn from ShapesWorld, and rendered references."""

from __future__ import annotations

from pathlib import Path

from kumovideo.utils.errors import KumoInputError


def add_output_args(q, default_out: str) -> None:
    """--batch-size, --out, --json and --device: how every `kumo eval` command runs and reports."""
    q.add_argument("--batch-size", type=int, default=8, help="clips generated per pipeline call")
    q.add_argument("--out", default=default_out, help="folder for contact_sheet.png and results.json")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")


def resolve_model(args) -> Path:
    """The pipeline folder of --model (default: the built-in model, its Turbo with --turbo, or
    its Lumina model for what only that one was trained for: `args.lumina` or the flags)."""
    from kumovideo.builtin import builtin_model_dir, lumina_request

    if args.model:
        return Path(args.model)
    lumina = getattr(args, "lumina", None) or lumina_request(
        getattr(args, "multiscale", False),
        getattr(args, "motion_score", None),
        getattr(args, "width", None),
        getattr(args, "height", None),
    )
    return builtin_model_dir(turbo=getattr(args, "turbo", False), lumina=lumina)


def check_motion_conditioning(folder: Path, what: str) -> None:
    """Refuse a model whose transformer config lacks `motion_conditioning: true`."""
    from kumovideo.pipelines.checks import read_folder_config

    if not read_folder_config(folder).get("motion_conditioning"):
        raise KumoInputError(
            f"{what}: the model {folder} is not motion-conditioned (its transformer config lacks "
            "motion_conditioning: true); pass --model a model trained with it (configs/builtin-lumina.yaml)"
        )


def seen_captions(folder: Path) -> set[str]:
    """The captions the model was trained on as-is (its training_captions.txt; empty if none)."""
    seen_file = Path(folder) / "training_captions.txt"
    return set(seen_file.read_text().splitlines()) if seen_file.exists() else set()


def eval_captions(
    n: int,
    seed: int,
    size: int,
    num_frames: int,
    exclude: set[str],
    width: int | None = None,
    height: int | None = None,
    one_object: bool = False,
    keep=None,
    include: str | None = None,
) -> list[str]:
    """n captions, alternating one- and two-object (only one-object with `one_object`), none
    of them in `exclude`, each one `keep(caption)` accepts (when given), drawn in a W x H
    frame (default S x S); with `include` (the held-back cyan), every caption names that
    colour (`sample_clip_spec`). Without it the draw is the same for a seed as ever."""
    import numpy as np

    from kumovideo.data.shapes_world import caption, sample_clip_spec

    rng = np.random.default_rng([seed, 4242])
    captions: list[str] = []
    tries = 0
    while len(captions) < n:
        tries += 1
        if tries > 100 * n:
            raise KumoInputError("could not draw enough captions unseen in training; lower --n")
        objects = 1 if one_object else 1 + len(captions) % 2
        spec = sample_clip_spec(
            rng, size=size, num_frames=num_frames, num_objects=objects, width=width, height=height, include=include
        )
        text = caption(spec)
        if text not in exclude and text not in captions and (keep is None or keep(text)):
            captions.append(text)
    return captions


def reference_clips(
    pipe,
    captions: list[str],
    size: int,
    num_frames: int,
    seed: int,
    through_vae: bool,
    width: int | None = None,
    height: int | None = None,
    motion_amount: float = 1.0,
):
    """Rendered clips of `captions` as video in [0, 1], (B, F, 3, H, W): straight, or
    encoded (posterior mode) and decoded by the pipeline's VAE (unused when not). In a W x H
    frame (default S x S), at motion amount m; one-object captions draw the same sizes and
    places (relative to their room) at every m for a seed."""
    import numpy as np
    import torch

    from kumovideo.data.shapes_world import clip_spec_from_caption, frames_to_tensor, render_clip

    rng = np.random.default_rng([seed, 77])
    specs = [clip_spec_from_caption(c, rng, size, num_frames, width, height, motion_amount) for c in captions]
    video = torch.stack([frames_to_tensor(render_clip(spec)) for spec in specs])
    if through_vae:
        video = vae_round_trip(pipe.vae, video)
    return ((video + 1) / 2).clamp(0, 1)


def vae_round_trip(vae, video):
    """Video (B, F, 3, H, W) in [-1, 1] encoded whole by the VAE (posterior mode) and decoded,
    on the CPU in float32: what a latent model with this VAE can give back at best."""
    import torch

    with torch.no_grad():  # (B, F, 3, H, W) -> the VAE's (B, 3, F, H, W) and back
        z = vae.encode(video.permute(0, 2, 1, 3, 4).to(vae.device, vae.dtype)).latent_dist.mode()
        return vae.decode(z).sample.permute(0, 2, 1, 3, 4).float().cpu()


def generate_clips(pipe, captions: list[str], first_seed: int, num_frames: int, height: int, width: int, **call):
    """The pipeline's clips of `captions` as video in [0, 1], (B, F, 3, H, W): caption j with
    the seed `first_seed + j`; `call` holds the sampling settings (steps, guidance, sampler,
    Lumina-Video's switches), passed to the pipeline as they are."""
    import torch

    generators = [torch.Generator().manual_seed(first_seed + j) for j in range(len(captions))]
    return pipe(
        captions, num_frames=num_frames, height=height, width=width, generator=generators, output_type="pt", **call
    ).frames
