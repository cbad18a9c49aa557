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
   the two-object captions of `kumo eval shapes` draws (--seeds).

    python scripts/binding_check.py                                   # the built-in model
    python scripts/binding_check.py --model runs/ablate-textpos/pipeline --seeds 9301-9308
    python scripts/binding_check.py --model runs/bound-t5-cli --lora runs/ablate-bound-t5-lora/lora
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


if __name__ == "__main__":
    main()
