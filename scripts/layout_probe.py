"""The probe behind docs/layout.md's table: ways of drawing each clause of a two-object
caption inside its own planned box (a throwaway kept for its commands; the recipe it found
lives in kumovideo/pipelines/layout.py).

On the built-in model's first 32 two-object captions of `kumo eval shapes --n 128 --seed
9501`, the noise of caption i seeded 5000 + i (as scripts/composable_guidance_probe.py: 18.8%
without a layout), the layout drawn by ShapesWorld's placement with seed 7000 + i; judged
like `kumo eval shapes` on the whole caption. Arms (2026-12-07, one thread each):

    python scripts/layout_probe.py --threads 1                               # masked attention: 12.5%
    python scripts/layout_probe.py --threads 1 --outside both                # 9.4%
    python scripts/layout_probe.py --threads 1 --arm multi                   # branches: 37.5%
    python scripts/layout_probe.py --threads 1 --arm multi --margin 10       # 37.5%
    python scripts/layout_probe.py --threads 1 --arm multi --until 500       # 28.1%
    python scripts/layout_probe.py --threads 1 --arm multi --outside both    # 31.2%
    python scripts/layout_probe.py --threads 1 --arm multi --outside both --hide                   # 50.0%
    python scripts/layout_probe.py --threads 1 --arm multi --outside both --hide --bootstrap 0.1   # 46.9%
    python scripts/layout_probe.py --threads 1 --arm multi --outside both --hide --name-size       # 40.6%
    python scripts/layout_probe.py --threads 1 --arm multi --outside both --hide --boot-fill 0.2   # 53.1%
        ... --boot-fill 0.4: 50.0%; --boot-fill 0.2 --guidance 6: 43.8%; --boot-fill 0.2 --margin 10: 43.8%
    python scripts/layout_probe.py --threads 1 --arm multi --outside both --hide --boot-fill 0.2 \
        --box-size large                                                                          # 71.9%
        ... --margin 0: 56.2%; --margin 8: 56.2%

masked: one forward, the clauses' T5 states beside the whole caption's, the vision tokens in
a box reading only their clause (attention masks), the others the whole caption (--outside
full) or every clause (both). multi: one branch per clause; each latent pixel in a box takes
its clause's prediction, outside the whole caption's (full) or the clauses' mean (both).
--hide: each branch sees the other box filled with the background (the median of the last
clean prediction outside the boxes, noised); --boot-fill F: the first F of the steps it sees
only its own box; --bootstrap F: MultiDiffusion's random-colour bootstrapping instead;
--box-size large: boxes placed and sized for large objects; --name-size: the clause names the
box's size.
"""

# ruff: noqa: B023 (each caption's sampling closure runs within its own loop iteration)
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from kumovideo.models.attention import MADiTAttnProcessor


def clause_caption(obj: dict, background: str) -> str:
    words = ["a", *([obj["size"]] if obj["size"] else []), obj["colour"], obj["shape"], obj["motion"]]
    return " ".join([*words, "on", "a", background, "background"])


def region_of_tokens(spec, frames: int, grid: int, pixels: int, margin: float) -> torch.Tensor:
    """(N,) region index per vision token: k for object k's box, -1 elsewhere."""
    from kumovideo.data.shapes_world import object_track

    lat_frames = (frames - 1) // 4 + 1
    cell = pixels / grid
    region = torch.full((lat_frames, grid, grid), -1, dtype=torch.long)
    dist = torch.full((lat_frames, grid, grid), float("inf"))
    centres = (torch.arange(grid) + 0.5) * cell
    for k, obj in enumerate(spec.objects):
        cx, cy, r = object_track(obj, pixels, frames)
        for f in range(lat_frames):
            idx = [0] if f == 0 else list(range(4 * f - 3, 4 * f + 1))
            x0, x1 = min(cx[idx] - r[idx]) - margin, max(cx[idx] + r[idx]) + margin
            y0, y1 = min(cy[idx] - r[idx]) - margin, max(cy[idx] + r[idx]) + margin
            lo = torch.arange(grid) * cell
            hi = lo + cell
            in_x = (hi > x0) & (lo < x1)
            in_y = (hi > y0) & (lo < y1)
            inside = in_y[:, None] & in_x[None, :]
            mx, my = float(np.mean(cx[idx])), float(np.mean(cy[idx]))
            d = (centres[None, :] - mx) ** 2 + (centres[:, None] - my) ** 2
            take = inside & (d < dist[f])
            region[f][take] = k
            dist[f][take] = d[take]
    return region.reshape(-1)


def plan_spec(text, rng):
    """clip_spec_from_caption, allowing sizes in two-object captions (box planning only)."""
    import re

    from kumovideo.data.shapes_world import _place_objects, clip_spec_from_caption

    sizes = re.findall(r"\ba (small|large) ", text)
    if not sizes:
        return clip_spec_from_caption(text, rng)
    bare = re.sub(r"\ba (small|large) ", "a ", text)
    from kumovideo.data.shapes_world import _spec, parse_caption

    parsed = parse_caption(bare)
    attrs = [dict(o, size=s) for o, s in zip(parsed["objects"], sizes)]
    for _ in range(100):
        objs = _place_objects(rng, attrs, (128, 128), 17)
        if objs is not None:
            return _spec(parsed["background"], objs, (128, 128), 17, False, 1.0)
    raise RuntimeError("no room")


def masks(region: torch.Tensor, text_len: int, n_texts: int, outside_text: int, vv_block: bool, text_sees: str):
    """Boolean masks (True = may attend): joint (T+N, T+N), v2t (N, T), t2v (T, N)."""
    n = region.numel()
    t = text_len * n_texts
    text_owner = torch.arange(t) // text_len  # which text each text token belongs to
    vis_owner = torch.where(region >= 0, region, torch.full_like(region, outside_text))
    v2t = vis_owner[:, None] == text_owner[None, :]  # (N, T)
    if text_sees == "own":
        t2v = v2t.T.clone()
    else:  # every text reads every vision token
        t2v = torch.ones(t, n, dtype=torch.bool)
    tt = text_owner[:, None] == text_owner[None, :]
    if vv_block:
        vv = ~((region[:, None] >= 0) & (region[None, :] >= 0) & (region[:, None] != region[None, :]))
    else:
        vv = torch.ones(n, n, dtype=torch.bool)
    joint = torch.cat([torch.cat([tt, t2v], 1), torch.cat([v2t, vv], 1)], 0)
    return joint, v2t, t2v


def masked_fn(mask):
    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    return fn


def regional_v(model, x, texts, t, procs_masked, procs_plain):
    """One masked forward: texts (1, K*L, Dt) already concatenated."""
    model.set_attn_processor(dict(procs_masked))
    try:
        L = model.config.max_text_seq_length
        t_emb = model.time_proj(t.reshape(-1)).to(x.dtype)
        temb = model.time_embedding(t_emb)
        tokens = model.patch_embed(texts[:, :L], x)
        vision = tokens[:, L:]
        text = model.patch_embed.text_proj(texts)
        vision, text = model.run_blocks(vision, text, temb)
        patches = model.head(vision, temb)
        _, f, _, h, w = x.shape
        return model.unpatchify(patches, f, h, w)
    finally:
        model.set_attn_processor(dict(procs_plain))


def main() -> None:
    from kumovideo.builtin import builtin_model_dir
    from kumovideo.cli.eval_common import eval_captions, seen_captions
    from kumovideo.data.shapes_world import parse_caption
    from kumovideo.evaluation.shapes_judge import judge_clip
    from kumovideo.pipelines import KumoPipeline
    from kumovideo.pipelines.pipeline_kumo import frames_to_uint8
    from kumovideo.pipelines.video_to_video import encode_video
    from kumovideo.schedulers.sampling import SAMPLERS

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--skip", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--margin", type=float, default=4.0)
    ap.add_argument("--outside", default="full", choices=["full", "both"])
    ap.add_argument("--vv-block", action="store_true")
    ap.add_argument("--text-sees", default="own", choices=["own", "all"])
    ap.add_argument("--arm", default="masked", choices=["masked", "multi"])
    ap.add_argument("--bootstrap", type=float, default=0.0, help="fraction of steps with bootstrapped branches")
    ap.add_argument("--hide", action="store_true")
    ap.add_argument("--box-size", default=None)
    ap.add_argument("--boot-fill", type=float, default=0.0)
    ap.add_argument("--name-size", action="store_true")
    ap.add_argument("--until", type=int, default=0, help="masked only for t >= this")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = args.model or builtin_model_dir()
    pipe = KumoPipeline.from_pretrained(str(folder), torch_dtype=torch.float32)
    model = pipe.transformer
    plain = dict(model.attn_processors)
    captions = eval_captions(2 * (args.n + args.skip), 9501, 128, 17, seen_captions(folder))
    captions = [c for c in captions if len(parse_caption(c)["objects"]) == 2][args.skip : args.skip + args.n]
    run, cpu, start = SAMPLERS["scheduler"], torch.device("cpu"), time.perf_counter()
    L = model.config.max_text_seq_length
    grid = model.config.sample_height // model.config.patch_size
    wins = []
    for i, caption in enumerate(captions):
        parsed = parse_caption(caption)
        plan = caption
        if args.box_size:
            plan = caption.replace(" and a ", f" and a {args.box_size} ")
            plan = f"a {args.box_size} " + plan[2:]
        spec = plan_spec(plan, np.random.default_rng(7000 + i))
        if args.name_size:
            for obj, placed in zip(parsed["objects"], spec.objects):
                obj["size"] = placed.size
        clauses = [clause_caption(obj, parsed["background"]) for obj in parsed["objects"]]
        region = region_of_tokens(spec, 17, grid, 128, args.margin)
        if args.outside == "full":
            texts_list, outside = [*clauses, caption], 2
        else:
            texts_list, outside = clauses, -2
        states = pipe.encode_prompt(["", caption, *texts_list])
        texts = states[2:].reshape(1, -1, states.shape[-1])
        joint, v2t, t2v = masks(region, L, len(texts_list), outside, args.vv_block, args.text_sees)
        if args.outside == "both":  # outside tokens read every clause
            out = region < 0
            v2t[out] = True
            joint[len(texts_list) * L :][out, : len(texts_list) * L] = True
        procs = {}
        for name in plain:
            m = joint if ".attn1." in name else v2t if ".attn2_1." in name else t2v
            procs[name] = MADiTAttnProcessor(attention_fn=masked_fn(m))

        # (1, F_lat, 1, H, W) region per latent pixel, from the token regions (2x2 latent px each)
        p = model.config.patch_size
        lat_region = region.reshape(-1, grid, grid).repeat_interleave(p, 1).repeat_interleave(p, 2)[None, :, None]
        states = pipe.encode_prompt(["", caption, *clauses])

        last_bg = [None]

        def guided_v(x, t, states=states, texts=texts, procs=procs, lat_region=lat_region, last_bg=last_bg):
            x = pipe.scheduler.scale_model_input(x, t)
            v_u = model(x, states[:1], t.expand(1), return_dict=False)[0].float()
            if args.arm == "multi" and int(t) >= args.until:
                xs = x.expand(3, -1, -1, -1, -1)
                inside = torch.stack([lat_region[0] == 0, lat_region[0] == 1])  # (2, F, 1, h, w)
                booting = int(t) >= boot_t
                if booting:
                    bg = pipe.scheduler.add_noise(bg_x0, bg_eps, t.reshape(1))  # (2, F, C, h, w)
                    xs = torch.cat([x, torch.where(inside, x, bg)])
                elif args.hide and last_bg[0] is not None:
                    fill = pipe.scheduler.add_noise(last_bg[0].expand(2, -1, -1, -1, -1), bg_eps, t.reshape(1))
                    others = torch.stack([lat_region[0] == 1, lat_region[0] == 0])
                    if int(t) >= fill_t:
                        others = ~inside
                    xs = torch.cat([x, torch.where(others, fill, x)])
                v = model(xs, states[1:4], t.expand(3), return_dict=False)[0].float()
                v_full, v_a, v_b = v[0:1], v[1:2], v[2:3]
                if args.outside == "full" or (booting and args.hide):
                    outside = v_full
                else:
                    outside = 0.5 * (v_a + v_b)
                v_c = torch.where(lat_region == 0, v_a, torch.where(lat_region == 1, v_b, outside))
                if args.hide:  # background estimate: per frame and channel median of x0 outside the regions
                    a = pipe.scheduler.alphas_cumprod[int(t)]
                    x0 = a.sqrt() * x - (1 - a).sqrt() * v_c
                    out_mask = (lat_region < 0).expand_as(x0)
                    med = torch.stack(
                        [
                            torch.stack([x0[0, f, c][out_mask[0, f, c]].median() for c in range(x0.shape[2])])
                            for f in range(x0.shape[1])
                        ]
                    )  # (F, C)
                    last_bg[0] = med[None, :, :, None, None].expand_as(x0)
            elif int(t) >= args.until:
                v_c = regional_v(model, x, texts, t, procs, plain).float()
            else:
                v_c = model(x, states[1:2], t.expand(1), return_dict=False)[0].float()
            return v_u + args.guidance * (v_c - v_u)

        generator = torch.Generator().manual_seed(5000 + i)
        boot_gen = torch.Generator().manual_seed(9000 + i)
        colours = torch.rand(2, 3, 1, 1, 1, generator=boot_gen) * 2 - 1
        solid = colours.expand(2, 3, 17, 16, 16)
        with torch.no_grad():
            bg_x0 = torch.cat([encode_video(pipe.vae, solid[k : k + 1]) for k in range(2)])
        bg_x0 = bg_x0.mean((-1, -2), keepdim=True).expand(-1, -1, -1, grid * 2, grid * 2)
        bg_eps = torch.randn(bg_x0.shape, generator=boot_gen)
        steps = run.timesteps(pipe.scheduler, 50, cpu)
        n_boot = round(args.bootstrap * len(steps))
        boot_t = int(steps[n_boot - 1]) if n_boot else 10**9
        n_fill = round(args.boot_fill * len(steps))
        fill_t = int(steps[n_fill - 1]) if n_fill else 10**9
        latents = pipe.prepare_latents(1, 17, 128, 128, torch.float32, cpu, generator, None)
        with torch.no_grad():
            latents = run.sample(
                guided_v, latents, pipe.scheduler, run.timesteps(pipe.scheduler, 50, cpu), generator, None
            )
            video = pipe.video_processor.postprocess_video(pipe.decode_latents(latents), output_type="pt")
        frames = frames_to_uint8(video[0])
        verdict = judge_clip(frames, caption)
        wins.append(verdict.match)
        if args.save:
            from PIL import Image

            arr = frames.numpy() if torch.is_tensor(frames) else frames
            strip = np.concatenate([arr[k] for k in (0, 4, 8, 12, 16)], axis=1)
            reg = region.reshape(-1, grid, grid)[[0, 1, 2, 3, 4]].numpy()
            cells = np.kron(reg + 1, np.ones((16, 16), dtype=int))
            overlay = np.concatenate(list(cells), axis=1)
            tint = np.stack([(overlay == 1) * 255, (overlay == 2) * 255, np.zeros_like(overlay)], -1)
            Image.fromarray(np.concatenate([strip, (0.5 * strip + 0.5 * tint).astype(np.uint8)], 0)).save(
                f"{args.save}-{i}.png"
            )
        objs = " ".join(f"{o.colour_ok:d}{o.shape_ok:d}{o.motion_ok:d}" for o in verdict.objects)
        print(i, caption, verdict.match, objs, f"{time.perf_counter() - start:.0f} s", flush=True)
    print(f"two-object match: {100 * sum(wins) / len(wins):.1f}% of {len(wins)}", vars(args))


if __name__ == "__main__":
    main()
