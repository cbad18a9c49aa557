"""`kumo info DIR`: what a checkpoint folder holds: components, classes, sizes, parameters."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("info", help="describe a checkpoint folder", description=__doc__)
    p.add_argument("folder", help="pipeline folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _safetensors_stats(folder: Path) -> tuple[int, set[str]]:
    """Parameter count and dtypes from the safetensors headers, without loading weights."""
    from safetensors import safe_open

    count, dtypes = 0, set()
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                tensor = f.get_slice(key)
                n = 1
                for d in tensor.get_shape():
                    n *= d
                count += n
                dtypes.add(tensor.get_dtype())
    return count, dtypes


# Config keys shown for each component of a text-to-video folder ...
CONFIG_KEYS = {
    "transformer": (
        "num_layers",
        "num_attention_heads",
        "attention_head_dim",
        "text_embed_dim",
        "max_text_seq_length",
        "sample_frames",
        "sample_height",
        "sample_width",
    ),
    "vae": ("latent_channels", "block_out_channels", "temporal_compression_ratio", "scaling_factor"),
    "text_encoder": ("d_model", "num_layers", "num_heads", "vocab_size"),
    "scheduler": ("prediction_type", "snr_shift_scale", "original_inference_steps", "timestep_spacing"),
}
# ... and of a video-to-audio one.
V2A_CONFIG_KEYS = {
    "denoiser": (
        "sample_rate",
        "n_mels",
        "hop_length",
        "width",
        "kernel_size",
        "dilations",
        "frame_size",
        "context_layers",
        "text_embed_dim",
    ),
    "scheduler": ("prediction_type", "beta_schedule", "rescale_betas_zero_snr", "timestep_spacing"),
}


def check_folder(folder: Path) -> tuple[dict, dict[str, tuple[str, ...]]]:
    """The folder's model_index and its components (with the config keys to show), checked as
    the pipeline it names checks them: text-to-video, or video-to-audio."""
    from kumovideo.pipelines.loading import COMPONENTS, V2A_PIPELINE, check_checkpoint_folder, read_json

    index_path = folder / "model_index.json"
    index = read_json(index_path) if index_path.is_file() else None
    if isinstance(index, dict) and index.get("_class_name") == V2A_PIPELINE:
        from kumovideo.pipelines.pipeline_kumo_v2a import V2A_COMPONENTS, check_v2a_folder

        check_v2a_folder(folder)
        return index, {name: V2A_CONFIG_KEYS.get(name, ()) for name in V2A_COMPONENTS}
    return check_checkpoint_folder(folder), {name: CONFIG_KEYS.get(name, ()) for name in COMPONENTS}


def describe(folder: Path) -> dict:
    index, components = check_folder(folder)
    info = {"folder": str(folder), "pipeline": index.get("_class_name"), "components": {}}
    for name, keys in components.items():
        part = folder / name
        size = sum(p.stat().st_size for p in part.rglob("*") if p.is_file())
        params, dtypes = _safetensors_stats(part)
        entry = {"class": "/".join(index[name]), "bytes": size, "parameters": params, "dtypes": sorted(dtypes)}
        config_file = part / ("scheduler_config.json" if name == "scheduler" else "config.json")
        if config_file.exists():
            config = json.loads(config_file.read_text())
            entry["config"] = {k: config[k] for k in keys if k in config}
        info["components"][name] = entry
    info["total_bytes"] = sum(c["bytes"] for c in info["components"].values())
    info["total_parameters"] = sum(c["parameters"] for c in info["components"].values())
    return info


def _human(n: float, unit: str) -> str:
    for prefix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            # No trailing space for a bare count: it would shift the right-aligned column.
            return (f"{n:.1f} {prefix}{unit}" if prefix else f"{n:.0f} {unit}").rstrip()
        n /= 1000
    return f"{n:.1f} P{unit}"


def run(args) -> int:
    from kumovideo.utils.errors import KumoInputError

    folder = Path(args.folder)
    if not folder.exists():
        raise KumoInputError(f"checkpoint folder {folder} does not exist")
    info = describe(folder)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{folder}  ({info['pipeline']})")
    # Columns as wide as their longest entry (a user's own class paths can be long).
    name_w = max([len("component"), *map(len, info["components"])]) + 2
    class_w = max([len("class"), *(len(c["class"]) for c in info["components"].values())]) + 2
    print(f"{'component':<{name_w}}{'class':<{class_w}}{'size':>10}{'params':>12}  dtype")
    for name, c in info["components"].items():
        print(
            f"{name:<{name_w}}{c['class']:<{class_w}}{_human(c['bytes'], 'B'):>10}"
            f"{_human(c['parameters'], ''):>12}  {','.join(c['dtypes']) or '-'}"
        )
        for k, v in c.get("config", {}).items():
            print(f"{'':<{name_w + 2}}{k} = {v}")
    total = f"{_human(info['total_bytes'], 'B'):>10}{_human(info['total_parameters'], ''):>12}"
    print(f"{'total':<{name_w + class_w}}{total}")
    return 0
