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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drop_feature_heads import load_transformer, same_native_output, write_pipeline  # noqa: E402

from kumovideo.models.transformer_kumo import KumoTransformer3DModel, expand_for_multiscale  # noqa: E402


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
    base = load_transformer(args.base)
    grafted = graft(base, load_transformer(args.donor)).eval()
    if not same_native_output(base, grafted):
        raise SystemExit("the grafted model's native output differs from the base's; nothing written")
    added = sorted({k.split(".")[0] for k in grafted.state_dict()} - {k.split(".")[0] for k in base.state_dict()})
    defaults = args.donor / "kumo_defaults.json"
    write_pipeline(args.base, grafted, args.out, {defaults.name: defaults} if defaults.exists() else None)
    print(f"wrote {args.out}: the base with the donor's {', '.join(added)} (native output unchanged)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
