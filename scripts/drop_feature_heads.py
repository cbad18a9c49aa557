"""Copy a pipeline folder with its MADiT's multi-scale heads and motion embedding removed.

    python scripts/drop_feature_heads.py runs/gpu-128/pipeline OUT

A fine-tune that starts from a model with those heads (`init_from` a Lumina-trained
model) but trains neither leaves them untrained for the new weights: `--multiscale` and
`--motion-score` on the result would run and give worse clips without a word. Removed,
the model refuses them in one line (docs/lumina.md). Without a motion score and at the
native patch size the transformer never touches those weights, so the clips are the
same bit for bit; this script checks that on one forward pass before it writes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kumovideo.models.transformer_kumo import KumoTransformer3DModel  # noqa: E402
from kumovideo.utils.atomic import atomic_directory  # noqa: E402

WEIGHTS = "diffusion_pytorch_model.safetensors"


def load_transformer(pipeline: Path) -> KumoTransformer3DModel:
    return KumoTransformer3DModel.from_pretrained(pipeline / "transformer").eval()


def same_native_output(a: KumoTransformer3DModel, b: KumoTransformer3DModel) -> bool:
    """Whether two transformers give the same output bit for bit on one random clip at the
    native patch size without a motion score (the models' own config size)."""
    c = a.config
    frames = (c.sample_frames - 1) // c.temporal_compression_ratio + 1
    torch.manual_seed(0)
    x = torch.randn(1, frames, c.in_channels, c.sample_height, c.sample_width, dtype=a.dtype)
    text = torch.randn(1, c.max_text_seq_length, c.text_embed_dim, dtype=a.dtype)
    t = torch.tensor([500])
    with torch.no_grad():
        return torch.equal(a(x, text, t, return_dict=False)[0], b(x, text, t, return_dict=False)[0])


def write_pipeline(source: Path, transformer: KumoTransformer3DModel, out: Path, extra: dict | None = None) -> None:
    """`source` with its transformer replaced, written atomically to `out`, in the dtype
    `source` stored its weights in (the exports are fp16); `extra`: {file name: path} copied in."""
    with safe_open(source / "transformer" / WEIGHTS, "pt") as f:
        stored_dtype = f.get_slice(next(iter(f.keys()))).get_dtype()  # "F16" or "F32"
    with atomic_directory(out) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("transformer"))
        if stored_dtype == "F16":
            torch.nn.Module.to(transformer, torch.float16)
        transformer.save_pretrained(tmp / "transformer")
        for name, path in (extra or {}).items():
            shutil.copy2(path, tmp / name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pipeline", type=Path, help="pipeline folder to read")
    ap.add_argument("out", type=Path, help="new pipeline folder (must not exist)")
    args = ap.parse_args(argv)
    if args.out.exists():
        ap.error(f"{args.out} exists; give a new folder")

    full = load_transformer(args.pipeline)
    config = {k: v for k, v in full.config.items() if not k.startswith("_")}
    config.update(multiscale_patch_sizes=None, motion_conditioning=False)
    plain = KumoTransformer3DModel.from_config(config).eval()
    missing, unexpected = plain.load_state_dict(full.state_dict(), strict=False)
    if missing:
        raise SystemExit(f"the plain model lacks weights the full one has no copy of: {missing[:3]}")
    print(f"dropped {len(unexpected)} tensors: {sorted({k.split('.')[0] for k in unexpected})}")
    if not same_native_output(full, plain):
        raise SystemExit("the plain model's output differs from the full one's; nothing written")
    write_pipeline(args.pipeline, plain, args.out)
    print(f"wrote {args.out} (same output without a motion score at the native patch size)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
