"""Composable Diffusion (Liu et al. 2022) on the built-in model's two-object captions: is a
two-object clip better guided by its two one-object clauses (each the model draws at 98-100%)
than by the whole caption? And, for a model that tells a caption from its attribute swaps
(`binding_contrast_weight`), guidance away from those swaps (docs/builtin-model.md, "Why two
objects fail").

Arms, each on the same noise per caption (seed 5000 + i), 50 DDIM steps, judged like `kumo eval
shapes` on the whole caption:
  standard       v_u + w (v_full - v_u)                       (the pipeline's guidance, w = 4)
  compose        v_u + w_c sum_k (v_clause_k - v_u)
  full+compose   v_u + w (v_full - v_u) + w_c sum_k (v_clause_k - v_u)
  swap           v_u + w (v_full - v_u) + h sum_s (v_full - v_swap_s)   (shapes_world.attribute_swaps)

    python scripts/composable_guidance_probe.py --arms standard,compose --clause-weight 4   # 18.8%, 0.0%
    python scripts/composable_guidance_probe.py --arms full+compose --clause-weight 2       # 0.0%
    python scripts/composable_guidance_probe.py --arms compose --clause-weight 2            # 0.0%
    python scripts/composable_guidance_probe.py --arms full+compose --clause-weight 1       # 3.1%
(2026-12-06, the shipped model, 32 captions each.) The clauses cancel: each one-object branch
pushes the other object out, and most composed clips show no object at all.

    python scripts/composable_guidance_probe.py --model runs/ablate-bound-t5-contrast-w005/pipeline \
        --arms standard,swap --swap-weight 5                                 # 21.9%, 25.0%
"""

from __future__ import annotations

import argparse
import time

import torch


def clause_caption(obj: dict, background: str) -> str:
    """One object of a parsed caption as a one-object caption on the same background."""
    words = ["a", *([obj["size"]] if obj["size"] else []), obj["colour"], obj["shape"], obj["motion"]]
    return " ".join([*words, "on", "a", background, "background"])


def main() -> None:
    from kumovideo.builtin import builtin_model_dir
    from kumovideo.cli.eval_common import eval_captions, seen_captions
    from kumovideo.data.shapes_world import attribute_swaps, parse_caption
    from kumovideo.evaluation.shapes_judge import judge_clip
    from kumovideo.pipelines import KumoPipeline
    from kumovideo.pipelines.pipeline_kumo import frames_to_uint8
    from kumovideo.schedulers.sampling import SAMPLERS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=32, help="two-object captions (of `kumo eval shapes --seed 9501`)")
    parser.add_argument("--guidance", type=float, default=4.0, help="w, the whole caption's weight")
    parser.add_argument("--clause-weight", type=float, default=4.0, help="w_c, each clause's weight")
    parser.add_argument("--swap-weight", type=float, default=5.0, help="h, each attribute swap's weight")
    parser.add_argument("--arms", default="standard,compose,full+compose")
    parser.add_argument("--model", default=None, help="pipeline folder (default: the built-in model)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    arms = {arm: [] for arm in args.arms.split(",")}

    folder = args.model or builtin_model_dir()
    pipe = KumoPipeline.from_pretrained(str(folder), torch_dtype=torch.float32)
    captions = eval_captions(2 * args.n, 9501, 128, 17, seen_captions(folder))
    captions = [c for c in captions if len(parse_caption(c)["objects"]) == 2][: args.n]
    run, cpu, start = SAMPLERS["scheduler"], torch.device("cpu"), time.perf_counter()
    for i, caption in enumerate(captions):
        parsed = parse_caption(caption)
        clauses = [clause_caption(obj, parsed["background"]) for obj in parsed["objects"]]
        swaps = attribute_swaps(caption)
        states = pipe.encode_prompt(["", caption, *clauses, *swaps])  # empty, whole, clause 1, clause 2, swaps
        arm_rows = {"standard": [0, 1], "compose": [0, 2, 3], "full+compose": [0, 1, 2, 3]}
        arm_rows["swap"] = [0, 1, *range(4, 4 + len(swaps))]
        for arm, verdicts in arms.items():
            rows = arm_rows[arm]

            def guided_v(x, t, rows=rows, arm=arm, states=states):
                model_input = pipe.scheduler.scale_model_input(torch.cat([x] * len(rows)), t)
                v = pipe.transformer(
                    hidden_states=model_input,
                    encoder_hidden_states=states[rows],
                    timestep=t.expand(len(rows)),
                    return_dict=False,
                )[0].float()
                v_u, conds = v[:1], v[1:]
                whole = args.guidance * (conds[:1] - v_u) if arm != "compose" else 0
                if arm == "swap":
                    return v_u + whole + args.swap_weight * (conds[:1] - conds[1:]).sum(0, keepdim=True)
                parts = 0 if arm == "standard" else args.clause_weight * (conds[-2:] - v_u).sum(0, keepdim=True)
                return v_u + whole + parts

            generator = torch.Generator().manual_seed(5000 + i)
            latents = pipe.prepare_latents(1, 17, 128, 128, torch.float32, cpu, generator, None)
            with torch.no_grad():
                latents = run.sample(
                    guided_v, latents, pipe.scheduler, run.timesteps(pipe.scheduler, 50, cpu), generator, None
                )
                video = pipe.video_processor.postprocess_video(pipe.decode_latents(latents), output_type="pt")
            verdicts.append(judge_clip(frames_to_uint8(video[0]), caption).match)
        print(i, caption, {arm: v[-1] for arm, v in arms.items()}, f"{time.perf_counter() - start:.0f} s", flush=True)
    print("two-object match:", {arm: f"{100 * sum(v) / len(v):.1f}% of {len(v)}" for arm, v in arms.items()})


if __name__ == "__main__":
    main()
