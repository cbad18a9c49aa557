"""What one denoising step costs per rank under guidance x Ulysses parallelism, counted
from the architecture.

    python -m kumovideo.distributed.scaling --preset kumo-2.6b --height 480 --width 720 --frames 41
    python -m kumovideo.distributed.scaling --preset kumo-2.6b --check     # formula vs torch's FLOP counter

FLOPs are the matmul / convolution / attention FLOPs (2 per multiply-add), the ones
`torch.utils.flop_counter.FlopCounterMode` counts; `--check` runs that counter over a
meta-device copy of the model (no memory, no compute) and asserts the formula matches.
Per rank, everything per-vision-token and all attention is divided by the Ulysses degree
U; the text stream, the patch embedding and the timestep/AdaLN MLPs are replicated on
every rank; guidance parallel halves the batch per rank.

Communication is the bytes each rank *sends* per step, per collective, with the
standard per-rank traffic of each algorithm (all-to-all: (U-1)/U of the buffer; ring
all-gather: (U-1) x the local piece; ring all-reduce: 2 (U-1)/U of the buffer) -- the
same rule `kumovideo.distributed.ulysses.CommCounter` applies in a real run, and the
tests compare the two.

The prediction for a parallel step is T1 x (FLOPs per rank / FLOPs of one process) +
bytes sent / link bandwidth (no overlap of compute and communication assumed: an upper
bound on the step time), where T1 is a measured single-GPU step time.
"""

from __future__ import annotations

import argparse
import functools
import math
from dataclasses import dataclass

from kumovideo.geometry import DEFAULT_GEOMETRY, ClipGeometry, config_value
from kumovideo.perf.flops import format_si


@dataclass(frozen=True)
class StepShape:
    """The sizes that set the cost of one MADiT call."""

    batch: int  # videos in one denoiser call of one process (2 x prompts with guidance)
    text_len: int  # L
    vision_len: int  # N
    dim: int  # D = heads x head_dim
    heads: int
    time_dim: int  # T
    text_dim: int  # T5 width
    in_channels: int
    out_channels: int
    patch: int
    layers: int

    @classmethod
    def from_config(
        cls, tconf, latent_frames: int, latent_height: int, latent_width: int, prompts: int = 1, guidance: bool = True
    ) -> StepShape:
        """From a transformer config (a dict or an object with attributes) and a latent size."""
        get = functools.partial(config_value, tconf)
        p = get("patch_size")
        return cls(
            batch=prompts * (2 if guidance else 1),
            text_len=get("max_text_seq_length"),
            vision_len=ClipGeometry(patch=p).latent_tokens(latent_frames, latent_height, latent_width),
            dim=get("num_attention_heads") * get("attention_head_dim"),
            heads=get("num_attention_heads"),
            time_dim=get("time_embed_dim"),
            text_dim=get("text_embed_dim"),
            in_channels=get("in_channels"),
            out_channels=get("out_channels") or get("in_channels"),
            patch=p,
            layers=get("num_layers"),
        )


def flops_per_rank(s: StepShape, ulysses: int = 1, cfg: int = 1) -> dict[str, float]:
    """FLOPs of one denoiser call on one rank, by part."""
    b = s.batch / cfg
    U = ulysses
    L, N, D, T = s.text_len, s.vision_len, s.dim, s.time_dim
    n = N / U  # local vision tokens
    pc_in = s.in_channels * s.patch**2
    pc_out = s.out_channels * s.patch**2
    per_layer = {
        "adaln (replicated)": 2 * (2 * b * T * 6 * D),
        "text-token linears (replicated)": 2 * b * L * D * (3 * D + D)  # attn1 qkv + out
        + 2 * b * L * 2 * D * D  # attn2_1 k, v from text
        + 2 * b * L * D * D * 2  # attn2_2 q, out
        + 2 * b * L * D * 4 * D * 2,  # feed-forward
        "vision-token linears": 2 * b * n * D * (3 * D + D)
        + 2 * b * n * D * D * 2  # attn2_1 q, out
        + 2 * b * n * 2 * D * D  # attn2_2 k, v from vision
        + 2 * b * n * D * 4 * D * 2,
        "joint attention": 4 * b * (L + N) ** 2 * D / U,
        "cross attention": 4 * b * n * L * D + 4 * b * L * n * D,
    }
    parts = {k: v * s.layers for k, v in per_layer.items()}
    parts["embed (replicated)"] = (
        2 * b * (D * T + T * T)  # timestep MLP
        + 2 * b * L * s.text_dim * D  # text projection
        + 2 * b * N * pc_in * D  # patch convolution, whole sequence on every rank
    )
    parts["head"] = 2 * b * T * 2 * D + 2 * b * n * D * pc_out
    return parts


def comm_bytes_per_rank(s: StepShape, ulysses: int = 1, cfg: int = 1, elem: int = 4) -> dict[str, float]:
    """Bytes one rank sends in one denoiser call, by collective (keys as CommCounter's)."""
    b = s.batch / cfg
    U = ulysses
    L, N, D, H = s.text_len, s.vision_len, s.dim, s.heads
    hd = D // H
    n = N / U
    out: dict[str, float] = {}
    if U > 1:
        layers = s.layers
        a2a = (U - 1) / U
        ring = 2 * (U - 1) / U
        out["all_to_all"] = layers * elem * (3 * b * n * D * a2a + b * N * D / U * a2a)  # q,k,v in; out back
        out["all_gather_text"] = layers * elem * b * L * D / U * (U - 1)
        # the text->vision log-sum-exp merge is always float32
        out["all_reduce_lse_max"] = layers * 4 * ring * b * H * L
        out["all_reduce_cross"] = layers * 4 * ring * b * H * L * (hd + 1)
        out["all_gather_tokens"] = elem * b * n * s.patch**2 * s.out_channels * (U - 1)
    if cfg > 1:
        out["all_gather_cfg"] = elem * b * N * s.patch**2 * s.out_channels * (cfg - 1)
    return out


def total(parts: dict[str, float]) -> float:
    return float(sum(parts.values()))


def count_flops_with_torch(tconf: dict, latent_frames: int, latent_height: int, latent_width: int, batch: int) -> int:
    """FLOPs of one forward of the real module, counted by torch on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from kumovideo.models.transformer_kumo import KumoTransformer3DModel

    with torch.device("meta"):
        model = KumoTransformer3DModel(**tconf)
        x = torch.empty(batch, latent_frames, tconf["in_channels"], latent_height, latent_width)
        text = torch.empty(batch, tconf["max_text_seq_length"], tconf["text_embed_dim"])
        t = torch.zeros(batch, dtype=torch.long)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, text, t)
    return counter.get_total_flops()


def preset_config(name: str) -> dict:
    """The full transformer config of a size preset (defaults filled in), built on meta."""
    import torch

    from kumovideo.models.transformer_kumo import madit_from_preset

    with torch.device("meta"):
        model = madit_from_preset(name)
    return {k: v for k, v in dict(model.config).items() if not k.startswith("_")}


# ------------------------------------------------------------------------- the table


DEFAULT_LAYOUTS = [(1, 1), (1, 2), (1, 3), (1, 4), (1, 6), (1, 8), (2, 1), (2, 2), (2, 3), (2, 4)]  # (cfg, ulysses)


def table(
    tconf: dict,
    frames: int,
    height: int,
    width: int,
    step_time: float | None,
    bandwidth_gbs: float,
    elem: int,
    layouts=DEFAULT_LAYOUTS,
    geometry: ClipGeometry = DEFAULT_GEOMETRY,
) -> tuple[StepShape, list[dict]]:
    shape = StepShape.from_config(tconf, *geometry.latent_size(frames, height, width))
    single = total(flops_per_rank(shape))
    rows = []
    for cfg, u in layouts:
        fl = total(flops_per_rank(shape, u, cfg))
        comm = comm_bytes_per_rank(shape, u, cfg, elem)
        supported = shape.heads % u == 0 and shape.vision_len % u == 0
        row = dict(
            cfg=cfg, ulysses=u, gpus=cfg * u, flops=fl, fraction=fl / single, comm=total(comm), supported=supported
        )
        if step_time is not None:
            row["predicted_s"] = step_time * fl / single + total(comm) / (bandwidth_gbs * 1e9)
            row["speedup"] = step_time / row["predicted_s"]
        rows.append(row)
    return shape, rows


def format_table(shape: StepShape, rows: list[dict]) -> str:
    has_time = "predicted_s" in rows[0]
    head = "| cfg | ulysses | ranks | runs in kumo | FLOP/step/rank | of 1 rank | sent/step/rank |"
    sep = "|---|---|---|---|---|---|---|"
    if has_time:
        head += " predicted s/step | speedup |"
        sep += "---|---|"
    lines = [head, sep]
    for r in rows:
        why = (
            "yes"
            if r["supported"]
            else (f"no: {shape.heads} heads" if shape.heads % r["ulysses"] else f"no: {shape.vision_len} tokens")
        )
        line = (
            f"| {r['cfg']} | {r['ulysses']} | {r['gpus']} | {why} | {format_si(r['flops'], '')} | "
            f"{r['fraction']:.3f} | {format_si(r['comm'], 'B', 'GMk')} |"
        )
        if has_time:
            line += f" {r['predicted_s']:.3f} | {r['speedup']:.2f}x |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kumovideo.distributed.scaling", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="kumo-2.6b")
    ap.add_argument("--frames", type=int, default=41)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=720)
    ap.add_argument(
        "--step-time",
        type=float,
        default=None,
        help="measured seconds for one guided denoising step on one GPU (enables the prediction)",
    )
    ap.add_argument(
        "--bandwidth",
        type=float,
        default=150.0,
        help="achieved all-to-all / all-gather bandwidth per GPU in GB/s (assumption)",
    )
    ap.add_argument("--dtype-bytes", type=int, default=2, help="bytes per activation element (2 for bf16)")
    ap.add_argument(
        "--assume-mfu",
        type=float,
        default=None,
        help="no measured step time: assume this fraction of --peak-tflops is achieved (labelled as assumed)",
    )
    ap.add_argument(
        "--peak-tflops", type=float, default=989.0, help="accelerator peak for --assume-mfu (H100 SXM bf16 dense: 989)"
    )
    ap.add_argument(
        "--detail", default=None, metavar="ulysses=U,cfg=C", help="print the FLOPs and bytes of one layout by part"
    )
    ap.add_argument(
        "--check", action="store_true", help="check the FLOP formula against torch's counter (meta device)"
    )
    args = ap.parse_args(argv)

    tconf = preset_config(args.preset)
    step_time = args.step_time
    latent = DEFAULT_GEOMETRY.latent_size(args.frames, args.height, args.width)  # the published VAE's
    if step_time is None and args.assume_mfu:
        single = total(flops_per_rank(StepShape.from_config(tconf, *latent)))
        step_time = single / (args.assume_mfu * args.peak_tflops * 1e12)
        print(
            f"ASSUMED single-GPU step time (not measured): {single / 1e12:.2f} TFLOP at {args.assume_mfu:.0%} of "
            f"{args.peak_tflops:.0f} TFLOP/s = {step_time:.3f} s"
        )
    elif step_time is not None:
        print(f"measured single-device step time: {step_time:.4f} s")
    shape, rows = table(tconf, args.frames, args.height, args.width, step_time, args.bandwidth, args.dtype_bytes)
    print(
        f"{args.preset} at {args.height}x{args.width}x{args.frames}: {shape.layers} layers, D={shape.dim}, "
        f"{shape.heads} heads, L={shape.text_len} text + N={shape.vision_len} vision tokens, "
        f"batch {shape.batch} (guidance), {args.dtype_bytes}-byte activations"
    )
    print(f"one guided step on one process: {format_si(total(flops_per_rank(shape)), 'FLOP')}")
    if args.check:
        counted = count_flops_with_torch(tconf, *latent, shape.batch)
        formula = total(flops_per_rank(shape))
        print(f"torch FlopCounterMode on the meta-device model: {counted:.6e} FLOP; formula {formula:.6e}")
        if not math.isclose(counted, formula, rel_tol=1e-9):
            print("MISMATCH")
            return 1
    print(format_table(shape, rows))
    if step_time is not None:
        print(
            f"predicted s/step = T1 x (FLOPs per rank / FLOPs on 1) + bytes sent / {args.bandwidth:.0f} GB/s "
            f"(no compute/communication overlap); rows marked 'no' are what the layout would cost if it ran"
        )
    if args.detail:
        from kumovideo.distributed.mesh import parse_parallel

        layout = parse_parallel(args.detail)
        print(f"\n{layout}: per rank, one step")
        for name, value in flops_per_rank(shape, layout.ulysses, layout.cfg).items():
            print(f"  {name:34s} {format_si(value, ''):>12s}FLOP")
        for name, value in comm_bytes_per_rank(shape, layout.ulysses, layout.cfg, args.dtype_bytes).items():
            print(f"  sent by {name:26s} {format_si(value, 'B', 'GMk'):>14s}")
        if layout.ulysses > 1:
            u, b = layout.ulysses, shape.batch / layout.cfg
            kv = shape.layers * args.dtype_bytes * 2 * b * shape.vision_len / u * shape.dim * (u - 1)
            print(
                f"  (text->vision cross-attention by all-gathering the vision K/V instead of the log-sum-exp "
                f"merge would send {format_si(kv, 'B', 'GMk')})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
