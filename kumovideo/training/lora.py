"""LoRA fine-tuning of MADiT (`lora:` in a DiT config; Hu et al. 2021, "LoRA: Low-Rank
Adaptation of Large Language Models").

The adapter is peft's, added through diffusers' `PeftAdapterMixin.add_adapter`: every
`target_modules` linear layer gets a trainable rank-r update scaled by alpha / r, the rest of
the transformer (and the text encoder) stays frozen. The run ends with a LoRA folder, not a
pipeline: diffusers' `pytorch_lora_weights.safetensors` (the layout `load_lora_weights`
reads), the captions it trained on beyond its base's and `kumo_lora.json` (the base it
adapts, rank, alpha, targets); with `vae:` also that VAE folder as `vae/`, for a concept the
base's decoder cannot draw (ShapesWorld's cyan). `kumo generate --lora FOLDER` /
`pipe.load_lora_weights(FOLDER)` apply it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from kumovideo.pipelines.lora import LORA_INFO_NAME, require_peft
from kumovideo.utils.atomic import atomic_directory
from kumovideo.utils.errors import KumoInputError


def add_lora_adapter(transformer: torch.nn.Module, settings: dict) -> int:
    """Freeze `transformer` and add a trainable LoRA adapter; returns its parameter count.
    Target names that match no layer are one line (peft's own error is a page)."""
    require_peft()
    from peft import LoraConfig

    linear_names = [n for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)]
    missing = [t for t in settings["target_modules"] if not any(n == t or n.endswith("." + t) for n in linear_names)]
    if missing:
        raise KumoInputError(
            f"lora.target_modules {', '.join(missing)} name no linear layer of this MADiT; "
            "use e.g. to_q, to_k, to_v, to_out.0, ff.net.0.proj, ff.net.2, text_proj"
        )
    transformer.requires_grad_(False)
    transformer.add_adapter(
        LoraConfig(
            r=settings["rank"],
            lora_alpha=settings["alpha"],
            lora_dropout=settings["dropout"],
            target_modules=settings["target_modules"],
            init_lora_weights=True,  # B = 0: the adapted model starts as the base
        )
    )
    return sum(p.numel() for p in transformer.parameters() if p.requires_grad)


def write_lora_folder(transformer: torch.nn.Module, config, target: Path, extra_files: dict[str, str]) -> Path:
    """The trained adapter (its current weights: the EMA ones at the end of a run) as a LoRA
    folder, written atomically."""
    from peft.utils import get_peft_model_state_dict

    from kumovideo.pipelines.pipeline_kumo import KumoPipeline

    settings = dict(config.lora)  # checked and completed when the config loaded (config.lora_settings)
    vae = settings.pop("vae", None)
    extra_files = {**extra_files, **_own_captions(extra_files, config.init_from)}
    layers = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in get_peft_model_state_dict(transformer).items()
    }
    with atomic_directory(Path(target)) as tmp:
        KumoPipeline.save_lora_weights(
            tmp,
            transformer_lora_layers=layers,
            safe_serialization=True,
            # rank and alpha ride along, so a loader scales the update by alpha / rank as trained
            transformer_lora_adapter_metadata=transformer.peft_config["default"].to_dict(),
        )
        info = {"base": config.init_from, **settings, "vae": "vae" if vae else None}
        (tmp / LORA_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
        if vae:  # the decoder the adapter's concept needs (a colour the base VAE cannot draw)
            shutil.copytree(vae, tmp / "vae")
        for name, text in extra_files.items():
            (tmp / name).write_text(text)
    print(f"LoRA saved to {target}")
    return Path(target)


def _own_captions(extra_files: dict[str, str], base: str | None) -> dict[str, str]:
    """The run's caption list less its base's (the loader adds them to the base's vocabulary,
    and `kumo eval shapes --lora` skips both lists): a LoRA folder stays small."""
    captions = extra_files.get("training_captions.txt")
    base_list = Path(base) / "training_captions.txt" if base else None
    if not captions or base_list is None or not base_list.is_file():
        return {}
    known = set(base_list.read_text(encoding="utf-8").splitlines())
    own = [c for c in captions.splitlines() if c and c not in known]
    return {"training_captions.txt": "\n".join(own) + "\n"} if own else {}
