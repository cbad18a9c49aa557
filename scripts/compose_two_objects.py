"""Composable-diffusion sampling of two-object ShapesWorld captions (an experiment, not a feature).

    python scripts/compose_two_objects.py --guidance 4 [--seed 7] [--n 64]

Splits each two-object caption "a A and a B on a C background" into the one-object
captions "a A on a C background" and "a B on a C background", and samples with their
conjunction (Liu et al. 2022, "Compositional Visual Generation with Composable Diffusion
Models", eq. 7): v = v_uncond + g * sum_i (v_i - v_uncond), on the built-in model's DDIM
schedule, 50 steps. Judges each clip against the full caption with `kumo eval shapes`'s
judge, on the two-object half of the captions `kumo eval shapes --n N --seed S` draws.
docs/builtin-model.md reports what it gave.
"""

from __future__ import annotations

import argparse
import re

import torch

from kumovideo.builtin import builtin_model_dir
from kumovideo.cli.eval import eval_captions
from kumovideo.evaluation.shapes_judge import judge_clip, summarise
from kumovideo.pipelines import KumoPipeline, frames_to_uint8

TWO_OBJECTS = re.compile(r"^(a .+?) and (a .+?) (on a \w+ background)$")


@torch.no_grad()
def composed_clip(pipe, parts: list[str], guidance: float, generator: torch.Generator) -> torch.Tensor:
    c = pipe.transformer.config
    size = c.sample_height * pipe.vae_scale_factor_spatial
    text = torch.cat([pipe.encode_prompt(p) for p in ["", *parts]])  # (1 + K, L, D)
    x = pipe.prepare_latents(1, c.sample_frames, size, size, torch.float32, torch.device("cpu"), generator)
    pipe.scheduler.set_timesteps(50)
    for t in pipe.scheduler.timesteps:
        v = pipe.transformer(torch.cat([x] * len(text)), text, t.expand(len(text)), return_dict=False)[0].float()
        v_uncond, v_parts = v[:1], v[1:]
        x = pipe.scheduler.step(
            v_uncond + guidance * (v_parts - v_uncond).sum(0, keepdim=True), t, x, return_dict=False
        )[0]
    return pipe.video_processor.postprocess_video(pipe.decode_latents(x), output_type="pt")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--n", type=int, default=64, help="captions drawn as by kumo eval shapes (half are two-object)")
    args = ap.parse_args()
    folder = builtin_model_dir(turbo=False)
    pipe = KumoPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    c = pipe.transformer.config
    seen = set((folder / "training_captions.txt").read_text().splitlines())
    captions = eval_captions(args.n, args.seed, c.sample_height * pipe.vae_scale_factor_spatial, c.sample_frames, seen)
    results = []
    for i, caption in enumerate(cap for cap in captions if " and " in cap):
        first, second, background = TWO_OBJECTS.match(caption).groups()
        parts = [f"{first} {background}", f"{second} {background}"]
        video = composed_clip(pipe, parts, args.guidance, torch.Generator().manual_seed(args.seed + i))
        results.append(judge_clip(frames_to_uint8(video), caption))
    s = summarise(results)
    attributes = ", ".join(f"{k} {100 * v:.0f}%" for k, v in s["attributes"].items() if v is not None)
    print(
        f"composed guidance {args.guidance}, seed {args.seed}: {100 * s['match_rate']:.1f}% of "
        f"{len(results)} two-object captions match ({attributes})"
    )


if __name__ == "__main__":
    main()
