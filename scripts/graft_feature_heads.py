"""Copy a base pipeline with a Lumina-trained model's coarse-scale heads and motion embedding
added, as the start of a Lumina fine-tune on that base.

    python scripts/graft_feature_heads.py BASE DONOR OUT

The inverse of `drop_feature_heads.py`. A new base (trained further, at another size) has
lost the modules its Lumina fine-tune learned; `expand_for_multiscale` would add them fresh
(coarse = the native patch tiled, motion embedding zero). Taking the donor's trained ones
instead gives the fine-tune a warm start for the modules the base never trained. Everything
else is BASE's; the transformer config gains the donor's scales and motion conditioning, and
`kumo_defaults.json` is the donor's. Without a motion score and at the native patch size the
result is BASE bit for bit (checked on one forward pass before writing). The graft is a start,
not a model: the trunk moved since the donor's heads were trained (docs/lumina.md).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kumovideo.models.transformer_kumo import KumoTransformer3DModel, expand_for_multiscale  # noqa: E402
from kumovideo.utils.atomic import atomic_directory  # noqa: E402

WEIGHTS = "diffusion_pytorch_model.safetensors"


def graft(base: KumoTransformer3DModel, donor: KumoTransformer3DModel) -> KumoTransformer3DModel:
    """`base` with the donor's coarse scales and motion embedding (its weights for them)."""
    scales = list(donor.config.multiscale_patch_sizes or [])
    if base.config.multiscale_patch_sizes or base.config.motion_conditioning:
        raise SystemExit("the base already has coarse scales or motion conditioning; drop them first")
    if not scales and not donor.config.motion_conditioning:
        raise SystemExit("the donor has neither coarse scales nor motion conditioning: nothing to graft")
    grafted = expand_for_multiscale(base, scales, bool(donor.config.motion_conditioning))
    own = base.state_dict()
    state = grafted.state_dict()
    for name, weight in donor.state_dict().items():
        if name in own:
            continue  # the trunk and native scale stay the base's
        if state[name].shape != weight.shape:
            raise SystemExit(f"{name}: donor {tuple(weight.shape)} vs base {tuple(state[name].shape)}: other widths")
        state[name] = weight.to(state[name].dtype)
    grafted.load_state_dict(state)
    return grafted


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base", type=Path, help="pipeline folder without the heads (the new base)")
    ap.add_argument("donor", type=Path, help="a Lumina-trained pipeline folder (kumo-shapes-lumina)")
    ap.add_argument("out", type=Path, help="new pipeline folder (must not exist)")
    args = ap.parse_args(argv)
    if args.out.exists():
        ap.error(f"{args.out} exists; give a new folder")
    with safe_open(args.base / "transformer" / WEIGHTS, "pt") as f:
        stored_dtype = f.get_slice(next(iter(f.keys()))).get_dtype()  # "F16" or "F32"
    base = KumoTransformer3DModel.from_pretrained(args.base / "transformer").eval()
    donor = KumoTransformer3DModel.from_pretrained(args.donor / "transformer").eval()
    grafted = graft(base, donor).eval()

    c = base.config
    frames = (c.sample_frames - 1) // c.temporal_compression_ratio + 1
    torch.manual_seed(0)
    x = torch.randn(1, frames, c.in_channels, c.sample_height, c.sample_width, dtype=base.dtype)
    text = torch.randn(1, c.max_text_seq_length, c.text_embed_dim, dtype=base.dtype)
    t = torch.tensor([500])
    with torch.no_grad():
        same = torch.equal(base(x, text, t, return_dict=False)[0], grafted(x, text, t, return_dict=False)[0])
    if not same:
        raise SystemExit("the grafted model's native output differs from the base's; nothing written")

    with atomic_directory(args.out) as tmp:
        shutil.copytree(args.base, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("transformer"))
        if stored_dtype == "F16":  # stored as the base came (the exports are fp16)
            torch.nn.Module.to(grafted, torch.float16)
        grafted.save_pretrained(tmp / "transformer")
        if (args.donor / "kumo_defaults.json").exists():
            shutil.copy2(args.donor / "kumo_defaults.json", tmp / "kumo_defaults.json")
    added = sorted({k.split(".")[0] for k in grafted.state_dict()} - {k.split(".")[0] for k in base.state_dict()})
    print(f"wrote {args.out}: the base with the donor's {', '.join(added)} (native output unchanged)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
