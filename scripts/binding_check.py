"""Can a model tell which colour and motion go with which shape? Three figures for a
ShapesWorld pipeline folder (docs/builtin-model.md, "Why two objects fail"):

1. text encoder: the states of a two-object caption against those of the caption with the two
   objects' shapes swapped, compared token for token after undoing the swap (0: the encoder
   gives each word the same state wherever it stands, a bag of words), and how peaked each
   layer's attention is on the caption;
2. transformer: how much its prediction moves when the caption's shapes swap (same latents,
   timesteps 900 and 500), relative to the prediction's size (0: the swap is invisible);
3. the best a model that cannot tell can do: the expected two-object match if it got every
   word right and paired shapes and motions at random (1/2 for each pair that differs), over
   the two-object captions of `kumo eval shapes` draws (--seeds);
4. with `--clips N`: the model as a classifier of captions (Li et al. 2023's diffusion
   classifier): N fresh two-object clips (ShapesWorld seed --clip-seed, encoded by the model's
   VAE), each noised at t = 300, 500, 700, 900, and the share of them whose v-loss under their
   caption is below the loss under the caption with two objects' shapes or motions swapped
   (`shapes_world.swapped_caption`; 50% for a model that reads a bag of words).

    python scripts/binding_check.py                                   # the built-in model
    python scripts/binding_check.py --model runs/ablate-textpos/pipeline --seeds 9301-9308
    python scripts/binding_check.py --model runs/bound-t5-cli --lora runs/ablate-bound-t5-lora/lora
    python scripts/binding_check.py --model runs/ablate-contrast/pipeline --clips 64
"""

from __future__ import annotations

import argparse

import torch

CAPTION = "a red triangle moves right and a green circle stays still on a forest background"
SWAPPED = "a red circle moves right and a green triangle stays still on a forest background"


def main() -> None:
    from kumovideo.builtin import builtin_model_dir
    from kumovideo.cli.eval_common import eval_captions, seen_captions
    from kumovideo.data.shapes_world import parse_caption
    from kumovideo.pipelines import KumoPipeline
    from kumovideo.training.text_binding import swapped_state_gap
    from kumovideo.utils.errors import KumoInputError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="pipeline folder (default: the built-in model)")
    parser.add_argument("--seeds", default="9301-9308", help="eval draws for the random-pairing bound, A-B")
    parser.add_argument("--lora", default=None, help="a LoRA folder (`kumo train dit` with `lora:`) to load first")
    parser.add_argument("--clips", type=int, default=0, help="two-object clips for the classifier figure (0: skip)")
    parser.add_argument("--clip-seed", type=int, default=9701, help="their ShapesWorld seed (never trained on)")
    args = parser.parse_args()
    folder = args.model or str(builtin_model_dir())
    pipe = KumoPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    if args.lora:
        pipe.load_lora_weights(args.lora)

    try:
        text_diff, states, ids = swapped_state_gap(pipe, CAPTION, SWAPPED)
    except KumoInputError as error:
        raise SystemExit(f"{folder}: {error}; this check needs it") from None
    largest = states.abs().max().item()
    print(f"text encoder: max |state - swapped state, unswapped| = {text_diff:.1e} (states up to {largest:.2f})")
    # How peaked its attention is: a row with ~1.0 on one token is saturated, and position-blind
    # when that token is chosen by content.
    pipe.text_encoder.set_attn_implementation("eager")  # sdpa returns no attention maps
    with torch.no_grad():
        maps = pipe.text_encoder(ids[:1], output_attentions=True).attentions  # per layer (1, heads, L, L)
    words = int((ids[0] != pipe.tokenizer.pad_token_id).sum())
    for layer, weights in enumerate(maps):
        peak = weights[0, :, :words].max(-1).values  # (heads, words): each row's largest weight
        print(
            f"text encoder layer {layer}: largest attention weight per head and token, mean {peak.mean().item():.2f}, "
            f"rows above 0.9 {100 * (peak > 0.9).float().mean().item():.0f}%"
        )

    torch.manual_seed(0)
    c = pipe.transformer.config
    x = torch.randn(
        1, (c.sample_frames - 1) // c.temporal_compression_ratio + 1, c.in_channels, c.sample_height, c.sample_width
    ).repeat(2, 1, 1, 1, 1)
    for t in (900, 500):
        with torch.no_grad():
            v = pipe.transformer(x, states, torch.tensor([t, t])).sample
        print(
            f"transformer at t={t}: mean |v(caption) - v(swapped)| / mean |v| = "
            f"{((v[0] - v[1]).abs().mean() / v.abs().mean()).item():.4f}"
        )

    first, last = (int(s) for s in args.seeds.split("-"))
    seen = seen_captions(folder)
    size = c.sample_height * pipe.vae_scale_factor_spatial
    bound, count = 0.0, 0
    for seed in range(first, last + 1):
        for caption in eval_captions(64, seed, size, c.sample_frames, seen, size, size):
            objects = parse_caption(caption)["objects"]
            if len(objects) == 2:
                one, two = objects
                bound += (0.5 if one["shape"] != two["shape"] else 1.0) * (
                    0.5 if one["motion"] != two["motion"] else 1.0
                )
                count += 1
    print(f"random pairing: at best {100 * bound / count:.1f}% of {count} two-object captions (draws {args.seeds})")
    if args.clips:
        classify_captions(pipe, args.clips, args.clip_seed, size)


def classify_captions(pipe, num_clips: int, seed: int, size: int, timesteps=(300, 500, 700, 900)) -> None:
    """Figure 4: how often the v-loss prefers each clip's caption to its swapped negative."""
    import numpy as np

    from kumovideo.data.shapes_world import frames_to_tensor, render_clip, sample_example, swapped_caption
    from kumovideo.training.objectives import binding_contrast_loss, diffuse

    c = pipe.transformer.config
    rng = np.random.default_rng(seed)
    wins = {t: [] for t in timesteps}
    gaps = {t: [] for t in timesteps}
    index = 0
    while len(wins[timesteps[0]]) < num_clips:
        spec, caption = sample_example(seed, index, size=size, num_frames=c.sample_frames, two_object_share=1.0)
        index += 1
        swapped = swapped_caption(caption, rng)
        if swapped is None:  # two objects alike in shape and motion: nothing to swap
            continue
        video = frames_to_tensor(render_clip(spec)).permute(1, 0, 2, 3).unsqueeze(0)  # (1, C, F, H, W) in [-1, 1]
        with torch.no_grad():
            latents = pipe.vae.encode(video).latent_dist.mean * pipe.vae.config.scaling_factor
            latents = latents.permute(0, 2, 1, 3, 4)  # (1, F, C, h, w)
            states = pipe.encode_prompt([caption, swapped])
            generator = torch.Generator().manual_seed(index)
            noise = torch.randn(latents.shape, generator=generator)
            for t in timesteps:
                alpha_bar = pipe.scheduler.alphas_cumprod[t].float().view(1)
                x_t, v = diffuse(latents, noise, alpha_bar)
                pred = pipe.transformer(x_t.repeat(2, 1, 1, 1, 1), states, torch.tensor([t, t])).sample
                _, win, gap = binding_contrast_loss(pred[:1], pred[1:], v, temperature=1.0)
                wins[t].append(win.item())
                gaps[t].append(gap.item())
    for t in timesteps:
        share = 100 * sum(wins[t]) / len(wins[t])
        print(
            f"caption vs swapped at t={t}: its own caption's v-loss lower on {share:.1f}% of {len(wins[t])} clips, "
            f"mean gap {sum(gaps[t]) / len(gaps[t]):.2e} (seed {seed})"
        )


if __name__ == "__main__":
    main()
