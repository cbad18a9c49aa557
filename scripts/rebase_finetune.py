"""Carry a fine-tune over to a new base model: task arithmetic on the MADiT's weights.

    python scripts/rebase_finetune.py OLD_BASE NEW_BASE FINETUNE OUT

A fine-tune (the conditioned `kumo-shapes-frames`, say) was trained from OLD_BASE; the base has
since been trained further (NEW_BASE, which started from OLD_BASE). Instead of fine-tuning
NEW_BASE from scratch again, add what the fine-tune learned to it (Ilharco et al. 2023,
"Editing Models with Task Arithmetic"):

    transformer = NEW_BASE + (FINETUNE - OLD_BASE)      for every tensor the bases share

Tensors the fine-tune widened (the patch embedding's conditioning channels, see
`expand_for_frame_conditioning`) take the rule on the base's channels and the fine-tune's
own weights on the new ones. Everything else (text encoder, VAE, tokenizer, scheduler) is
NEW_BASE's; the transformer config and `kumo_defaults.json` are FINETUNE's. The result is a
start, not a finished model: measure it (`kumo eval i2v`), and fine-tune it briefly with
`init_from: OUT` where it falls short (docs/conditioning.md).

`--scale A` adds A times the fine-tune's change instead, NEW + A (FINETUNE - OLD). With
OLD = NEW = the fine-tune's own start this is WiSE-FT (Wortsman et al. 2022, "Robust
fine-tuning of zero-shot models"): a point on the line between a model and its fine-tune,
which gives back some of what the fine-tune cost on the base's task (docs/lumina.md).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kumovideo.utils.atomic import atomic_directory  # noqa: E402

WEIGHTS = "diffusion_pytorch_model.safetensors"


def rebase_state(old: dict, new: dict, finetune: dict, scale: float = 1.0) -> dict:
    """NEW + scale (FINETUNE - OLD) per tensor, in fp32, stored in the fine-tune's dtype; a
    tensor the fine-tune widened along a dimension keeps its own values past the base's size."""
    if old.keys() != new.keys() or old.keys() != finetune.keys():
        raise SystemExit("the three transformers have different tensors: not a base and its fine-tune")
    out = {}
    for name, ft in finetune.items():
        o, n = old[name].float(), new[name].float()
        if o.shape != n.shape:
            raise SystemExit(f"{name}: the bases differ in shape ({tuple(o.shape)} vs {tuple(n.shape)})")
        merged = ft.float().clone()
        base_part = tuple(slice(0, s) for s in o.shape)  # the base's block of a widened tensor
        merged[base_part] = n + scale * (merged[base_part] - o)
        out[name] = merged.to(ft.dtype).contiguous()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old_base", type=Path, help="the pipeline folder the fine-tune started from")
    ap.add_argument("new_base", type=Path, help="the base trained further from old_base")
    ap.add_argument("finetune", type=Path, help="the fine-tuned pipeline folder")
    ap.add_argument("out", type=Path, help="new pipeline folder (must not exist)")
    ap.add_argument("--scale", type=float, default=1.0, help="how much of FINETUNE - OLD to add (default 1)")
    args = ap.parse_args(argv)
    if not 0 < args.scale <= 1:
        ap.error(f"--scale {args.scale} must be in (0, 1]")
    if args.out.exists():
        ap.error(f"{args.out} exists; give a new folder")
    folders = (args.old_base, args.new_base, args.finetune)
    old, new, finetune = (load_file(d / "transformer" / WEIGHTS) for d in folders)
    state = rebase_state(old, new, finetune, args.scale)
    with atomic_directory(args.out) as tmp:
        shutil.copytree(args.new_base, tmp, dirs_exist_ok=True)
        shutil.copy2(args.finetune / "transformer" / "config.json", tmp / "transformer" / "config.json")
        if (args.finetune / "kumo_defaults.json").exists():
            shutil.copy2(args.finetune / "kumo_defaults.json", tmp / "kumo_defaults.json")
        save_file(state, tmp / "transformer" / WEIGHTS)
    moved = sum((state[k].float() - finetune[k].float()).norm() for k in state)
    print(f"wrote {args.out}: {len(state)} tensors (summed distance from the fine-tune {moved:.2f})")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    raise SystemExit(main())
